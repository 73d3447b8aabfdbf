//! Text on a canvas, laid out with `ab_glyph`: kerned, anti-aliased, anchored, optionally
//! written upwards (rotated a quarter turn anticlockwise).

use ab_glyph::{point, Font, FontRef, GlyphId, PxScale, ScaleFont};

use crate::canvas::{Canvas, Drawn, Fail};
use crate::font::face;

/// Horizontal placement of text relative to its anchor point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum H {
    /// The text starts at the anchor.
    Left,
    /// The text is centred on the anchor.
    Center,
    /// The text ends at the anchor.
    Right,
}

/// Vertical placement of text relative to its anchor point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum V {
    /// The top of the capitals is at the anchor.
    Top,
    /// The capitals are centred on the anchor.
    Center,
}

/// Where a label goes relative to its anchor point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Anchor(pub H, pub V);

impl Anchor {
    /// Top centre.
    pub(crate) const TOP: Anchor = Anchor(H::Center, V::Top);
    /// Centre.
    pub(crate) const CENTER: Anchor = Anchor(H::Center, V::Center);
    /// Right end, vertically centred.
    pub(crate) const RIGHT: Anchor = Anchor(H::Right, V::Center);
    /// Left end, vertically centred.
    pub(crate) const LEFT: Anchor = Anchor(H::Left, V::Center);
}

fn font() -> Drawn<&'static FontRef<'static>> {
    face().ok_or_else(|| Fail::Draw("the embedded DejaVu Sans font could not be parsed".into()))
}

/// Pen positions of the glyphs of `text` (kerned), and the total advance.
fn layout(f: &FontRef<'static>, text: &str, size: f32) -> (Vec<(GlyphId, f32)>, f32) {
    let scaled = f.as_scaled(PxScale::from(size));
    let mut pen = 0.0;
    let mut prev: Option<GlyphId> = None;
    let mut glyphs = Vec::with_capacity(text.len());
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            pen += scaled.kern(p, id);
        }
        glyphs.push((id, pen));
        pen += scaled.h_advance(id);
        prev = Some(id);
    }
    (glyphs, pen)
}

/// Width of `text` at `size` pixels (the font's ascent minus descent is `size`).
pub(crate) fn width(text: &str, size: f64) -> i64 {
    face().map_or(0, |f| layout(f, text, size as f32).1.ceil() as i64)
}

/// Height of the capitals at `size` pixels.
fn cap_height(f: &FontRef<'static>, size: f32) -> f32 {
    let scaled = f.as_scaled(PxScale::from(size));
    let glyph = scaled.scaled_glyph('H');
    f.outline_glyph(glyph).map_or(size * 0.63, |o| -o.px_bounds().min.y)
}

/// Writes `text` at `(x, y)` in colour `rgb`; `upward` rotates it a quarter turn anticlockwise
/// about the anchor (it then reads from bottom to top).
pub(crate) fn draw(
    canvas: &mut Canvas,
    text: &str,
    (x, y): (i64, i64),
    size: f64,
    rgb: [u8; 3],
    anchor: Anchor,
    upward: bool,
) -> Drawn {
    if text.is_empty() {
        return Ok(());
    }
    let f = font()?;
    let size = size as f32;
    let (glyphs, advance) = layout(f, text, size);
    let dx = match anchor.0 {
        H::Left => 0.0,
        H::Center => -advance / 2.0,
        H::Right => -advance,
    };
    let baseline = match anchor.1 {
        V::Top => cap_height(f, size),
        V::Center => cap_height(f, size) / 2.0,
    };
    for (id, pen) in glyphs {
        let glyph = id.with_scale_and_position(PxScale::from(size), point(dx + pen, baseline));
        if let Some(outline) = f.outline_glyph(glyph) {
            let b = outline.px_bounds();
            let (bx, by) = (b.min.x as i64, b.min.y as i64);
            outline.draw(|gx, gy, coverage| {
                let (tx, ty) = (bx + i64::from(gx), by + i64::from(gy));
                let (cx, cy) = if upward { (x + ty, y - tx) } else { (x + tx, y + ty) };
                canvas.blend(cx, cy, rgb, coverage);
            });
        }
    }
    Ok(())
}
