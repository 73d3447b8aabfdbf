//! Digit pictures: grids of small images with a caption over each ("Pred: 7, True: 7" in green,
//! or red when wrong), and one digit enlarged with its pixel coordinates.
//!
//! Digits are drawn dark on white (matplotlib's `gray_r`): pixel value 0 is white, 255 black.

use std::path::Path;

use crate::canvas::{Canvas, Drawn, Fail};
use crate::error::Result;
use crate::text::{width as text_width, Anchor};

const BLACK: [u8; 3] = [0, 0, 0];

/// The colour of a caption.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tone {
    /// Black: a plain caption.
    #[default]
    Neutral,
    /// Green: a right prediction.
    Right,
    /// Red: a wrong prediction.
    Wrong,
}

impl Tone {
    /// The caption colour of this tone.
    pub fn color(self) -> [u8; 3] {
        match self {
            Tone::Neutral => [0, 0, 0],
            Tone::Right => [0, 128, 0],
            Tone::Wrong => [214, 0, 0],
        }
    }
}

/// One image of a grid with its caption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tile<'a> {
    /// Grey pixels, row-major, `image_rows × image_cols` of the grid (0 = background).
    pub pixels: &'a [u8],
    /// Text above the image (may be empty).
    pub caption: String,
    /// Colour of the caption.
    pub tone: Tone,
}

impl<'a> Tile<'a> {
    /// An image with a black caption (e.g. its label, "5" or "Sneaker").
    pub fn labelled(pixels: &'a [u8], caption: impl Into<String>) -> Self {
        Tile { pixels, caption: caption.into(), tone: Tone::Neutral }
    }

    /// An image with the caption "Pred: {predicted}, True: {truth}", green when they are equal and
    /// red otherwise.
    pub fn prediction(pixels: &'a [u8], predicted: &str, truth: &str) -> Self {
        let tone = if predicted == truth { Tone::Right } else { Tone::Wrong };
        Tile { pixels, caption: format!("Pred: {predicted}, True: {truth}"), tone }
    }
}

/// How a grid is laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GridOptions {
    /// Height of every image in pixels (28 for MNIST).
    pub image_rows: usize,
    /// Width of every image in pixels (28 for MNIST).
    pub image_cols: usize,
    /// Images per row of the grid (fewer when there are fewer images).
    pub columns: usize,
    /// Each image pixel becomes `scale × scale` picture pixels (nearest neighbour).
    pub scale: u32,
    /// A heading over the grid; empty for none.
    pub title: String,
}

impl Default for GridOptions {
    /// 28×28 images, 5 per row, 3× enlarged, no heading.
    fn default() -> Self {
        GridOptions { image_rows: 28, image_cols: 28, columns: 5, scale: 3, title: String::new() }
    }
}

/// Caption size and spacing of grids.
const CAPTION_PX: f64 = 15.0;
const CAPTION_H: i64 = 22;
const PAD: i64 = 12;
const TITLE_PX: f64 = 22.0;
const TITLE_H: i64 = 44;
/// Thin frame around each image so white digit backgrounds stand out from the page.
const FRAME: [u8; 3] = [190, 190, 190];

/// Writes a grid of digits as a PNG at `path`: each image enlarged `scale` times (nearest
/// neighbour), dark on white, framed, with its caption above it in the tile's colour.
///
/// # Errors
/// [`VizError::Invalid`](crate::VizError::Invalid) when there are no tiles, a tile's pixel count is
/// not `image_rows × image_cols`, `columns` or `scale` is 0, or the picture would be huge;
/// [`VizError::Draw`](crate::VizError::Draw) or [`VizError::Io`](crate::VizError::Io) when drawing
/// or writing fails.
pub fn digit_grid(path: impl AsRef<Path>, tiles: &[Tile<'_>], options: &GridOptions) -> Result<()> {
    let path = path.as_ref();
    render_grid(tiles, options).map_err(|f| f.at(path))?.save(path)
}

/// Puts the grey image `pixels` (`rows × cols`) at `(x, y)` of the canvas, `scale` times larger,
/// dark on white.
fn blit(canvas: &mut Canvas, pixels: &[u8], cols: usize, (x, y): (i64, i64), scale: i64) {
    for (i, &v) in pixels.iter().enumerate() {
        let (r, c) = ((i / cols) as i64, (i % cols) as i64);
        let g = 255 - v;
        canvas.fill(x + c * scale, y + r * scale, scale, scale, [g, g, g]);
    }
}

fn render_grid(tiles: &[Tile<'_>], o: &GridOptions) -> Drawn<Canvas> {
    let px = o.image_rows * o.image_cols;
    if tiles.is_empty() {
        return Err(Fail::Invalid("no images to draw".into()));
    }
    if px == 0 || o.columns == 0 || o.scale == 0 {
        return Err(Fail::Invalid(format!(
            "images of {}×{} pixels, {} columns and scale {} leave nothing to draw; each must be at least 1",
            o.image_rows, o.image_cols, o.columns, o.scale
        )));
    }
    if let Some((i, t)) = tiles.iter().enumerate().find(|(_, t)| t.pixels.len() != px) {
        return Err(Fail::Invalid(format!(
            "image {i} holds {} pixels, expected {}×{} = {px}",
            t.pixels.len(),
            o.image_rows,
            o.image_cols
        )));
    }
    let scale = i64::from(o.scale);
    let (img_w, img_h) = (o.image_cols as i64 * scale, o.image_rows as i64 * scale);
    let caption_w = tiles.iter().map(|t| text_width(&t.caption, CAPTION_PX)).max().unwrap_or(0);
    let has_captions = tiles.iter().any(|t| !t.caption.is_empty());
    let cap_h = if has_captions { CAPTION_H } else { 0 };
    let cell_w = img_w.max(caption_w + 4) + PAD;
    let cell_h = cap_h + img_h + PAD;
    let columns = o.columns.min(tiles.len()) as i64;
    let rows = (tiles.len() as i64 + columns - 1) / columns;
    let heading = if o.title.trim().is_empty() { 0 } else { TITLE_H };
    let title_w = text_width(o.title.trim(), TITLE_PX) + 2 * PAD;
    let width = (columns * cell_w + PAD).max(title_w);
    let height = heading + rows * cell_h + PAD;
    let dims = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    let mut canvas = Canvas::new(dims(width), dims(height))?;

    // Centre the grid horizontally when the heading is wider than it.
    let left = (width - columns * cell_w - PAD) / 2 + PAD;
    let mut anchors = Vec::with_capacity(tiles.len());
    for (i, t) in tiles.iter().enumerate() {
        let (r, c) = (i as i64 / columns, i as i64 % columns);
        let cell_x = left + c * cell_w;
        let cell_y = heading + PAD + r * cell_h;
        let x = cell_x + (cell_w - PAD - img_w) / 2;
        let y = cell_y + cap_h;
        blit(&mut canvas, t.pixels, o.image_cols, (x, y), scale);
        canvas.frame(x, y, img_w, img_h, FRAME);
        anchors.push((cell_x + (cell_w - PAD) / 2, cell_y));
    }
    if heading > 0 {
        canvas.text(o.title.trim(), (width / 2, 16), TITLE_PX, BLACK, Anchor::TOP)?;
    }
    for (t, &(x, y)) in tiles.iter().zip(&anchors) {
        canvas.text(&t.caption, (x, y + 4), CAPTION_PX, t.tone.color(), Anchor::TOP)?;
    }
    Ok(canvas)
}

/// Margins of the enlarged digit: room for the title above and tick labels left and below.
const BIG_LEFT: i64 = 48;
const BIG_TOP: i64 = 56;
const BIG_RIGHT: i64 = 24;
const BIG_BOTTOM: i64 = 40;
const TICK_PX: f64 = 14.0;

/// Writes one digit enlarged `scale` times as a PNG at `path`, like matplotlib's `imshow` with
/// `cmap="gray_r"`: dark on white, framed, with pixel coordinates every 5 pixels on the left and
/// below, and `title` above (empty for none).
///
/// # Errors
/// [`VizError::Invalid`](crate::VizError::Invalid) when `pixels` does not hold `rows × cols` values
/// or a size is 0; [`VizError::Draw`](crate::VizError::Draw) or [`VizError::Io`](crate::VizError::Io)
/// when drawing or writing fails.
pub fn enlarged_digit(
    path: impl AsRef<Path>,
    pixels: &[u8],
    rows: usize,
    cols: usize,
    title: &str,
    scale: u32,
) -> Result<()> {
    let path = path.as_ref();
    render_enlarged(pixels, rows, cols, title, scale).map_err(|f| f.at(path))?.save(path)
}

fn render_enlarged(pixels: &[u8], rows: usize, cols: usize, title: &str, scale: u32) -> Drawn<Canvas> {
    if rows == 0 || cols == 0 || scale == 0 {
        return Err(Fail::Invalid(format!("an image of {rows}×{cols} pixels at scale {scale} leaves nothing to draw")));
    }
    if pixels.len() != rows * cols {
        return Err(Fail::Invalid(format!(
            "the image holds {} pixels, expected {rows}×{cols} = {}",
            pixels.len(),
            rows * cols
        )));
    }
    let scale = i64::from(scale);
    let (img_w, img_h) = (cols as i64 * scale, rows as i64 * scale);
    let title_w = text_width(title.trim(), TITLE_PX) + 2 * PAD;
    let width = (BIG_LEFT + img_w + BIG_RIGHT).max(title_w);
    let height = BIG_TOP + img_h + BIG_BOTTOM;
    let dims = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    let mut canvas = Canvas::new(dims(width), dims(height))?;
    let (x, y) = (BIG_LEFT + (width - BIG_LEFT - img_w - BIG_RIGHT) / 2, BIG_TOP);
    blit(&mut canvas, pixels, cols, (x, y), scale);
    canvas.frame(x, y, img_w, img_h, [60, 60, 60]);
    // Ticks every 5 pixels (every pixel for tiny images), pointing out of the frame.
    let step = if rows.max(cols) <= 10 { 1 } else { 5 };
    let tick = [60, 60, 60];
    for c in (0..cols).step_by(step) {
        canvas.fill(x + c as i64 * scale + scale / 2, y + img_h + 1, 1, 5, tick);
    }
    for r in (0..rows).step_by(step) {
        canvas.fill(x - 6, y + r as i64 * scale + scale / 2, 5, 1, tick);
    }
    if !title.trim().is_empty() {
        canvas.text(title.trim(), (width / 2, 18), TITLE_PX, BLACK, Anchor::TOP)?;
    }
    for c in (0..cols).step_by(step) {
        let cx = x + c as i64 * scale + scale / 2;
        canvas.text(&c.to_string(), (cx, y + img_h + 11), TICK_PX, BLACK, Anchor::TOP)?;
    }
    for r in (0..rows).step_by(step) {
        let cy = y + r as i64 * scale + scale / 2;
        canvas.text(&r.to_string(), (x - 10, cy), TICK_PX, BLACK, Anchor::RIGHT)?;
    }
    Ok(canvas)
}
