//! Pictures of a network's structure, like the classic drawing of a fully connected network:
//! a column of circles (neurons) per layer with lines between neighbouring layers. Wide layers show
//! a few neurons, three dots, and a few more, with the true width written below; layers that are
//! not dense (convolutions, pooling, flattening, dropout) are drawn as labelled blocks.

use std::path::Path;

use plotters::prelude::{Circle, PathElement, Polygon, Rectangle};
use plotters::style::{Color, RGBColor, ShapeStyle};

const BLACK: [u8; 3] = [0, 0, 0];

use crate::canvas::{Area, Canvas, Drawn, Fail};
use crate::error::Result;
use crate::text::{width as text_width, Anchor};

/// How a layer is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayerKind {
    /// A column of neurons (input, dense and output layers).
    #[default]
    Dense,
    /// A labelled block (convolution, pooling, flatten, dropout, ...).
    Block,
}

/// One layer of a network diagram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiagramLayer {
    /// Written above the column (e.g. "Input", "Dense", "Conv2D").
    pub name: String,
    /// Number of neurons of a [`LayerKind::Dense`] layer (how many circles); ignored for blocks.
    pub units: usize,
    /// Dense layers: written below the column, e.g. "128 relu" (empty: the number of units).
    /// Blocks: written inside the block, one line per `'\n'` (e.g. "32 filters 3×3\nrelu").
    pub label: String,
    /// Column of neurons or block.
    pub kind: LayerKind,
}

impl DiagramLayer {
    /// A dense layer of `units` neurons; the label below reads "{units} {activation}" (just the
    /// units when `activation` is empty).
    pub fn dense(name: impl Into<String>, units: usize, activation: &str) -> Self {
        let label = if activation.is_empty() { units.to_string() } else { format!("{units} {activation}") };
        DiagramLayer { name: name.into(), units, label, kind: LayerKind::Dense }
    }

    /// A block named `name` with `label` inside (lines separated by `'\n'`).
    pub fn block(name: impl Into<String>, label: impl Into<String>) -> Self {
        DiagramLayer { name: name.into(), units: 0, label: label.into(), kind: LayerKind::Block }
    }
}

/// Drawing is done at twice the size and halved at the end, for anti-aliased circles and lines.
const S: i64 = 2;
/// Most neurons drawn in a column; wider layers show `EDGE` at each end with dots between.
const MAX_SHOWN: usize = 10;
const EDGE: usize = 4;
const SPACING: i64 = 40 * S;
const RADIUS: i64 = 14 * S;
const MIN_COL_W: i64 = 150 * S;
const MARGIN: i64 = 24 * S;
const TITLE_PX: f64 = 22.0 * S as f64;
const NAME_PX: f64 = 17.0 * S as f64;
const LABEL_PX: f64 = 15.0 * S as f64;
const BLOCK_PX: f64 = 15.0 * S as f64;
const LINE: RGBColor = RGBColor(165, 165, 165);
const DOTS: RGBColor = RGBColor(90, 90, 90);

/// Fill and outline colours of input, hidden and output columns, and of blocks.
const INPUT: (RGBColor, RGBColor) = (RGBColor(166, 206, 227), RGBColor(31, 120, 180));
const HIDDEN: (RGBColor, RGBColor) = (RGBColor(178, 223, 138), RGBColor(51, 160, 44));
const OUTPUT: (RGBColor, RGBColor) = (RGBColor(253, 191, 111), RGBColor(230, 110, 0));
const BLOCK: (RGBColor, RGBColor) = (RGBColor(218, 214, 235), RGBColor(106, 81, 163));

/// Where a column's elements lie.
enum Column {
    /// Neuron centres (y), and the y of the dots when some neurons are left out.
    Neurons { ys: Vec<i64>, dots: Option<i64> },
    /// A block: top-left corner and size.
    Block { x0: i64, y0: i64, w: i64, h: i64 },
}

/// Writes a diagram of `layers` (input first) as a PNG at `path`, with `title` above (empty for
/// none).
///
/// Each layer is a column: its name above; dense layers as up to 10 circles (wider ones as 4,
/// three dots, 4) with the label below ("784", "128 relu", "10 softmax"), every circle joined to
/// every circle of the neighbouring dense columns; blocks as labelled boxes joined by arrows.
/// The first column is blue, the last orange (when there are two or more), the others green,
/// blocks purple.
///
/// # Errors
/// [`VizError::Invalid`](crate::VizError::Invalid) when `layers` is empty;
/// [`VizError::Draw`](crate::VizError::Draw) or [`VizError::Io`](crate::VizError::Io) when drawing
/// or writing fails.
pub fn network_diagram(path: impl AsRef<Path>, layers: &[DiagramLayer], title: &str) -> Result<()> {
    let path = path.as_ref();
    render(layers, title).map_err(|f| f.at(path))?.downsample2().save(path)
}

fn render(layers: &[DiagramLayer], title: &str) -> Drawn<Canvas> {
    if layers.is_empty() {
        return Err(Fail::Invalid("a network diagram needs at least one layer".into()));
    }
    let text_w = text_width;
    let block_lines: Vec<Vec<&str>> = layers.iter().map(|l| l.label.lines().collect()).collect();
    let widest = layers
        .iter()
        .zip(&block_lines)
        .map(|(l, lines)| {
            let inner = lines.iter().map(|s| text_w(s, BLOCK_PX) + 28 * S).max().unwrap_or(0);
            text_w(&l.name, NAME_PX).max(text_w(&l.label, LABEL_PX)).max(inner)
        })
        .max()
        .unwrap_or(0);
    let col_w = MIN_COL_W.max(widest + 24 * S);
    let heading = if title.trim().is_empty() { 0 } else { 50 * S };
    let names_h = 36 * S;
    // As tall as the tallest column: its neurons, or a block's lines of text.
    let slots = |l: &DiagramLayer| {
        if l.units <= MAX_SHOWN {
            l.units
        } else {
            2 * EDGE + 1
        }
    };
    let block_min_h = |lines: &Vec<&str>| lines.len() as i64 * 26 * S + 24 * S;
    let body_h = layers
        .iter()
        .zip(&block_lines)
        .map(|(l, lines)| match l.kind {
            LayerKind::Dense => slots(l) as i64 * SPACING,
            LayerKind::Block => block_min_h(lines) + SPACING,
        })
        .max()
        .unwrap_or(0)
        .max(4 * SPACING);
    let labels_h = 44 * S;
    let width = (2 * MARGIN + col_w * layers.len() as i64).max(text_w(title.trim(), TITLE_PX) + 2 * MARGIN);
    let height = heading + names_h + body_h + labels_h;
    let left = (width - col_w * layers.len() as i64) / 2;
    let cy = heading + names_h + body_h / 2;
    let xs: Vec<i64> = (0..layers.len() as i64).map(|i| left + i * col_w + col_w / 2).collect();

    let columns: Vec<Column> = layers
        .iter()
        .zip(&block_lines)
        .map(|(l, lines)| match l.kind {
            LayerKind::Dense => {
                let (slots, dots) = (slots(l), (l.units > MAX_SHOWN).then_some(EDGE));
                let y_of = |k: usize| cy + (2 * k as i64 + 1 - slots as i64) * SPACING / 2;
                let ys = (0..slots).filter(|&k| Some(k) != dots).map(y_of).collect();
                Column::Neurons { ys, dots: dots.map(y_of) }
            }
            LayerKind::Block => {
                let inner = lines.iter().map(|s| text_w(s, BLOCK_PX)).max().unwrap_or(0);
                let w = (inner + 28 * S).max(96 * S).min(col_w - 16 * S);
                let h = (body_h * 3 / 5).max(block_min_h(lines));
                Column::Block { x0: -w / 2, y0: cy - h / 2, w, h }
            }
        })
        .collect();

    let dims = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    // Past a picture's size limit: say what makes it so large (not the canvas's own hint about
    // scales and numbers of images, which a diagram has not).
    let mut canvas = Canvas::new(dims(width), dims(height)).map_err(|_| {
        Fail::Invalid(format!(
            "a diagram of these {} layers would be {width}×{height} pixels, past what a picture may be: \
             draw a model of fewer layers (or shorter shapes)",
            layers.len()
        ))
    })?;
    canvas.draw(|root| {
        let at = |x: i64, y: i64| (x as i32, y as i32);
        // Connections first, so that neurons and blocks cover their ends.
        for i in 1..layers.len() {
            connect(root, (&columns[i - 1], xs[i - 1]), (&columns[i], xs[i]), cy)?;
        }
        let last = layers.len() - 1;
        for (i, (column, &x)) in columns.iter().zip(&xs).enumerate() {
            match column {
                Column::Neurons { ys, dots } => {
                    let (fill, edge) = if i == 0 {
                        INPUT
                    } else if i == last {
                        OUTPUT
                    } else {
                        HIDDEN
                    };
                    for &y in ys {
                        root.draw(&Circle::new(at(x, y), RADIUS as i32, fill.filled()))?;
                        root.draw(&Circle::new(
                            at(x, y),
                            RADIUS as i32,
                            ShapeStyle::from(edge).stroke_width(2 * S as u32),
                        ))?;
                    }
                    if let Some(y) = dots {
                        for d in [-1, 0, 1] {
                            root.draw(&Circle::new(at(x, y + d * 9 * S), (3 * S) as i32, DOTS.filled()))?;
                        }
                    }
                }
                Column::Block { x0, y0, w, h } => {
                    let (fill, edge) = BLOCK;
                    let (a, b) = (at(x + x0, *y0), at(x + x0 + w, y0 + h));
                    root.draw(&Rectangle::new([a, b], fill.filled()))?;
                    root.draw(&Rectangle::new([a, b], ShapeStyle::from(edge).stroke_width(2 * S as u32)))?;
                }
            }
        }
        Ok(())
    })?;
    if heading > 0 {
        canvas.text(title.trim(), (width / 2, 18 * S), TITLE_PX, BLACK, Anchor::TOP)?;
    }
    for ((layer, column), &x) in layers.iter().zip(&columns).zip(&xs) {
        canvas.text(&layer.name, (x, heading + 10 * S), NAME_PX, BLACK, Anchor::TOP)?;
        match column {
            Column::Neurons { .. } => {
                let text = if layer.label.is_empty() { layer.units.to_string() } else { layer.label.clone() };
                canvas.text(&text, (x, cy + body_h / 2 + 10 * S), LABEL_PX, BLACK, Anchor::TOP)?;
            }
            Column::Block { .. } => {
                let lines: Vec<&str> = layer.label.lines().collect();
                let line_h = 26 * S;
                let top = cy - (lines.len() as i64 * line_h) / 2 + line_h / 2;
                for (k, line) in lines.iter().enumerate() {
                    canvas.text(line, (x, top + k as i64 * line_h), BLOCK_PX, BLACK, Anchor::CENTER)?;
                }
            }
        }
    }
    Ok(canvas)
}

/// Draws the connections between column `a` at x `xa` and column `b` at x `xb`.
fn connect(root: &Area<'_>, (a, xa): (&Column, i64), (b, xb): (&Column, i64), cy: i64) -> Drawn {
    let at = |x: i64, y: i64| (x as i32, y as i32);
    let line = ShapeStyle::from(LINE).stroke_width(S as u32);
    match (a, b) {
        (Column::Neurons { ys: ya, .. }, Column::Neurons { ys: yb, .. }) => {
            for &y0 in ya {
                for &y1 in yb {
                    root.draw(&PathElement::new(vec![at(xa, y0), at(xb, y1)], line))?;
                }
            }
        }
        (Column::Neurons { ys, .. }, Column::Block { x0, .. }) => {
            for &y in ys {
                root.draw(&PathElement::new(vec![at(xa, y), at(xb + x0, cy)], line))?;
            }
        }
        (Column::Block { x0, w, .. }, Column::Neurons { ys, .. }) => {
            for &y in ys {
                root.draw(&PathElement::new(vec![at(xa + x0 + w, cy), at(xb, y)], line))?;
            }
        }
        (Column::Block { x0: x0a, w: wa, .. }, Column::Block { x0: x0b, .. }) => {
            let (from, to) = (xa + x0a + wa, xb + x0b);
            let arrow = ShapeStyle::from(DOTS).stroke_width(2 * S as u32);
            root.draw(&PathElement::new(vec![at(from, cy), at(to - 10 * S, cy)], arrow))?;
            let head = vec![at(to, cy), at(to - 12 * S, cy - 7 * S), at(to - 12 * S, cy + 7 * S)];
            root.draw(&Polygon::new(head, DOTS.filled()))?;
        }
    }
    Ok(())
}
