//! Confusion matrices as heat maps: true classes down, predicted classes across, the count in
//! every cell.

use std::path::Path;

use plotters::style::{RGBColor, BLACK, WHITE};

use crate::canvas::{label, label_up, text_size, Anchor, Canvas, Drawn, Fail};
use crate::error::Result;

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
    render(&rows, &names, title).map_err(|f| f.at(path))?.save_png(path)
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
    let value_px = if n <= 12 { 15.0 } else if n <= 20 { 12.0 } else { 10.0 };
    let count_w = i64::from(text_size(&max_count.to_string(), value_px).0);
    let cell = (if n <= 12 { 56 } else if n <= 20 { 40 } else { 28 }).max(count_w + 8);
    let name_w = names.iter().map(|s| i64::from(text_size(s, TICK_PX).0)).max().unwrap_or(0);
    let upright = name_w + 6 > cell; // column names written upwards
    let heading = if title.trim().is_empty() { PAD } else { 52 };
    let left = PAD + 26 + 8 + name_w + 10;
    let grid = cell * n as i64;
    let col_names_h = if upright { name_w + 12 } else { 26 };
    let bottom = col_names_h + 34 + PAD;
    let bar_w = 16;
    let bar_label_w = i64::from(text_size("100%", TICK_PX).0);
    let right = 24 + bar_w + 8 + bar_label_w + PAD + 26;
    let title_w = i64::from(text_size(title.trim(), TITLE_PX).0) + 2 * PAD;
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
    canvas.frame(gx, gy, grid, grid, [80, 80, 80]);
    for i in 0..n as i64 {
        canvas.fill(gx - 6, gy + i * cell + cell / 2, 5, 1, [80, 80, 80]);
        canvas.fill(gx + i * cell + cell / 2, gy + grid + 1, 1, 5, [80, 80, 80]);
    }
    // Colour bar: share of the true class, 0 at the bottom, 1 at the top.
    let bx = gx + grid + 24;
    for y in 0..grid {
        let t = 1.0 - (y as f64 + 0.5) / grid as f64;
        canvas.fill(bx, gy + y, bar_w, 1, blues(t));
    }
    canvas.frame(bx, gy, bar_w, grid, [80, 80, 80]);
    for k in 0..=4 {
        canvas.fill(bx + bar_w + 1, gy + (grid - 1) * k / 4, 4, 1, [80, 80, 80]);
    }

    canvas.draw(|root| {
        let at = |x: i64, y: i64| (x as i32, y as i32);
        if !title.trim().is_empty() {
            label(root, title.trim(), at(width / 2, 16), TITLE_PX, BLACK, Anchor::TOP)?;
        }
        for &(i, j, count, dark) in &cells {
            let (x, y) = (gx + j as i64 * cell + cell / 2, gy + i as i64 * cell + cell / 2);
            label(root, &count.to_string(), at(x, y), value_px, if dark { WHITE } else { BLACK }, Anchor::CENTER)?;
        }
        for (k, name) in names.iter().enumerate() {
            let c = k as i64 * cell + cell / 2;
            label(root, name, at(gx - 10, gy + c), TICK_PX, BLACK, Anchor::RIGHT)?;
            if upright {
                let w = i64::from(text_size(name, TICK_PX).0);
                label_up(root, name, at(gx + c, gy + grid + 10 + w / 2), TICK_PX, BLACK)?;
            } else {
                label(root, name, at(gx + c, gy + grid + 10), TICK_PX, BLACK, Anchor::TOP)?;
            }
        }
        label(root, "Predicted", at(gx + grid / 2, gy + grid + col_names_h + 12), AXIS_PX, BLACK, Anchor::TOP)?;
        label_up(root, "True", at(PAD + 13, gy + grid / 2), AXIS_PX, BLACK)?;
        for k in 0..=4 {
            let y = gy + (grid - 1) * k / 4;
            let pct = format!("{}%", 100 - 25 * k);
            label(root, &pct, at(bx + bar_w + 8, y), TICK_PX, BLACK, Anchor::LEFT)?;
        }
        label_up(root, "share of true class", at(bx + bar_w + 8 + bar_label_w + 16, gy + grid / 2), TICK_PX, RGBColor(60, 60, 60))?;
        Ok(())
    })?;
    Ok(canvas)
}
