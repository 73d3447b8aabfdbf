//! Confusion matrices as heat maps: true classes down, predicted classes across, the count in
//! every cell.

use std::path::Path;

use crate::canvas::{Canvas, Drawn, Fail};
use crate::error::Result;
use crate::text::{width as text_width, Anchor, H, V};

const BLACK: [u8; 3] = [0, 0, 0];
const WHITE: [u8; 3] = [255, 255, 255];
const GREY: [u8; 3] = [80, 80, 80];

/// Matplotlib's "Blues" colour map, sampled at 9 evenly spaced points from 0 to 1.
const BLUES: [[u8; 3]; 9] = [
    [247, 251, 255],
    [222, 235, 247],
    [198, 219, 239],
    [158, 202, 225],
    [107, 174, 214],
    [66, 146, 198],
    [33, 113, 181],
    [8, 81, 156],
    [8, 48, 107],
];

/// The "Blues" colour of `t` in `0..=1` (linear between samples).
fn blues(t: f64) -> [u8; 3] {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 } * (BLUES.len() - 1) as f64;
    let i = (t.floor() as usize).min(BLUES.len() - 2);
    let f = t - i as f64;
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * f).round() as u8;
    let (a, b) = (BLUES[i], BLUES[i + 1]);
    [mix(a[0], b[0]), mix(a[1], b[1]), mix(a[2], b[2])]
}

/// True when text on `c` should be white rather than black.
fn is_dark(c: [u8; 3]) -> bool {
    0.299 * f64::from(c[0]) + 0.587 * f64::from(c[1]) + 0.114 * f64::from(c[2]) < 140.0
}

const TITLE_PX: f64 = 22.0;
const AXIS_PX: f64 = 17.0;
const TICK_PX: f64 = 15.0;
const PAD: i64 = 14;

/// Writes the confusion matrix `matrix` (`matrix[true][predicted]` = count) as a PNG heat map at
/// `path`: true classes down the left ("True"), predicted classes along the bottom ("Predicted"),
/// `class_names` on the ticks, the count written in each cell (white on dark cells), `title` above
/// (empty for none), and a colour bar.
///
/// Cells are coloured by their share of the row (of the examples of that true class), so classes
/// of different sizes compare fairly; the numbers are the raw counts. Long class names (e.g.
/// Fashion-MNIST's "T-shirt/top") are written upwards under the columns.
///
/// # Errors
/// [`VizError::Invalid`](crate::VizError::Invalid) when the matrix is empty or not square, or the
/// number of class names differs from its size; [`VizError::Draw`](crate::VizError::Draw) or
/// [`VizError::Io`](crate::VizError::Io) when drawing or writing fails.
pub fn confusion_png<R, S>(path: impl AsRef<Path>, matrix: &[R], class_names: &[S], title: &str) -> Result<()>
where
    R: AsRef<[u64]>,
    S: AsRef<str>,
{
    let path = path.as_ref();
    let rows: Vec<&[u64]> = matrix.iter().map(AsRef::as_ref).collect();
    let names: Vec<&str> = class_names.iter().map(AsRef::as_ref).collect();
    render(&rows, &names, title).map_err(|f| f.at(path))?.save(path)
}

fn render(m: &[&[u64]], names: &[&str], title: &str) -> Drawn<Canvas> {
    let n = m.len();
    if n == 0 {
        return Err(Fail::Invalid("the confusion matrix is empty".into()));
    }
    if let Some((i, r)) = m.iter().enumerate().find(|(_, r)| r.len() != n) {
        return Err(Fail::Invalid(format!("the confusion matrix has {n} rows but row {i} has {} columns", r.len())));
    }
    if names.len() != n {
        return Err(Fail::Invalid(format!("{} class names for a {n}×{n} confusion matrix", names.len())));
    }

    let max_count = m.iter().flat_map(|r| r.iter()).copied().max().unwrap_or(0);
    let value_px = if n <= 12 {
        15.0
    } else if n <= 20 {
        12.0
    } else {
        10.0
    };
    let count_w = text_width(&max_count.to_string(), value_px);
    let cell = (if n <= 12 {
        56
    } else if n <= 20 {
        40
    } else {
        28
    })
    .max(count_w + 8);
    let name_w = names.iter().map(|s| text_width(s, TICK_PX)).max().unwrap_or(0);
    let upright = name_w + 6 > cell; // column names written upwards
    let heading = if title.trim().is_empty() { PAD } else { 52 };
    let left = PAD + 26 + 8 + name_w + 10;
    let grid = cell * n as i64;
    let col_names_h = if upright { name_w + 12 } else { 26 };
    let bottom = col_names_h + 34 + PAD;
    let bar_w = 16;
    let bar_label_w = text_width("100%", TICK_PX);
    let right = 24 + bar_w + 8 + bar_label_w + PAD + 26;
    let title_w = text_width(title.trim(), TITLE_PX) + 2 * PAD;
    let width = (left + grid + right).max(title_w);
    let height = heading + grid + bottom;
    let dims = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    let mut canvas = Canvas::new(dims(width), dims(height))?;

    let (gx, gy) = (left, heading);
    let mut cells = Vec::with_capacity(n * n);
    for (i, row) in m.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (j, &count) in row.iter().enumerate() {
            let share = if total == 0 { 0.0 } else { count as f64 / total as f64 };
            let color = blues(share);
            canvas.fill(gx + j as i64 * cell, gy + i as i64 * cell, cell, cell, color);
            cells.push((i, j, count, is_dark(color)));
        }
    }
    canvas.frame(gx, gy, grid, grid, GREY);
    for i in 0..n as i64 {
        canvas.fill(gx - 6, gy + i * cell + cell / 2, 5, 1, GREY);
        canvas.fill(gx + i * cell + cell / 2, gy + grid + 1, 1, 5, GREY);
    }
    // Colour bar: share of the true class, 0 at the bottom, 1 at the top.
    let bx = gx + grid + 24;
    for y in 0..grid {
        let t = 1.0 - (y as f64 + 0.5) / grid as f64;
        canvas.fill(bx, gy + y, bar_w, 1, blues(t));
    }
    canvas.frame(bx, gy, bar_w, grid, GREY);
    for k in 0..=4 {
        canvas.fill(bx + bar_w + 1, gy + (grid - 1) * k / 4, 4, 1, GREY);
    }

    if !title.trim().is_empty() {
        canvas.text(title.trim(), (width / 2, 18), TITLE_PX, BLACK, Anchor::TOP)?;
    }
    for &(i, j, count, dark) in &cells {
        let (x, y) = (gx + j as i64 * cell + cell / 2, gy + i as i64 * cell + cell / 2);
        canvas.text(&count.to_string(), (x, y), value_px, if dark { WHITE } else { BLACK }, Anchor::CENTER)?;
    }
    for (k, name) in names.iter().enumerate() {
        let c = k as i64 * cell + cell / 2;
        canvas.text(name, (gx - 12, gy + c), TICK_PX, BLACK, Anchor::RIGHT)?;
        if upright {
            // Reading upwards, ending just under the column.
            canvas.text_up(name, (gx + c, gy + grid + 10), TICK_PX, BLACK, Anchor::RIGHT)?;
        } else {
            canvas.text(name, (gx + c, gy + grid + 12), TICK_PX, BLACK, Anchor::TOP)?;
        }
    }
    canvas.text("Predicted", (gx + grid / 2, gy + grid + col_names_h + 14), AXIS_PX, BLACK, Anchor::TOP)?;
    canvas.text_up("True", (PAD + 13, gy + grid / 2), AXIS_PX, BLACK, Anchor::CENTER)?;
    for k in 0..=4 {
        let y = gy + (grid - 1) * k / 4;
        canvas.text(&format!("{}%", 100 - 25 * k), (bx + bar_w + 8, y), TICK_PX, BLACK, Anchor::LEFT)?;
    }
    let bar_label_x = bx + bar_w + 8 + bar_label_w + 16;
    canvas.text_up(
        "share of true class",
        (bar_label_x, gy + grid / 2),
        TICK_PX,
        [60, 60, 60],
        Anchor(H::Center, V::Center),
    )?;
    Ok(canvas)
}
