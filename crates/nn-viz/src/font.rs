//! The embedded font: plotters' `ab_glyph` backend draws text only with fonts registered by hand,
//! so this crate carries DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`),
//! registers it with plotters once under the family name [`FONT_FAMILY`], and writes the text of
//! its own pictures with it.

use std::sync::OnceLock;

use plotters::style::FontStyle;

/// The family name the embedded font is registered under, plotters' default family: text styles
/// built with `("sans-serif", size)` or plotters' defaults use it.
pub const FONT_FAMILY: &str = "sans-serif";

/// DejaVu Sans Book, 2.37 (760 kB).
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The embedded font, parsed once for this crate's own text layout; `None` if it does not parse.
pub(crate) fn face() -> Option<&'static ab_glyph::FontRef<'static>> {
    static FACE: OnceLock<Option<ab_glyph::FontRef<'static>>> = OnceLock::new();
    FACE.get_or_init(|| ab_glyph::FontRef::try_from_slice(DEJAVU_SANS).ok()).as_ref()
}

/// Registers the embedded font with plotters under [`FONT_FAMILY`] (normal style; bold and italic
/// fall back to it), for callers who draw their own plotters charts; idempotent and cheap after the
/// first call.
///
/// This crate lays its own text out with `ab_glyph` directly: plotters 0.3.7's `ab_glyph` text
/// path places each glyph without its left side bearing, which spaces letters unevenly
/// ("Tr ouser"), so the pictures here do not use plotters for text.
///
/// # Errors
/// A message when the embedded font data cannot be parsed (which would be a build defect).
pub fn register_fonts() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font could not be parsed".to_string())
    }
}
