//! The embedded font: plotters' `ab_glyph` backend draws text only with fonts registered by hand,
//! so this crate carries DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`)
//! and registers it once, under the family name [`FONT_FAMILY`].

use std::sync::OnceLock;

use plotters::style::FontStyle;

/// The family name the embedded font is registered under, plotters' default family: text styles
/// built with `("sans-serif", size)` or plotters' defaults use it.
pub const FONT_FAMILY: &str = "sans-serif";

/// DejaVu Sans Book, 2.37 (760 kB).
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the embedded font with plotters under [`FONT_FAMILY`] (normal style; bold and italic
/// fall back to it). Idempotent and cheap after the first call; every drawing function of this
/// crate calls it, so callers need it only to draw their own plotters charts.
///
/// # Errors
/// A message when the embedded font data cannot be parsed (which would be a build defect).
pub fn register_fonts() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font could not be parsed".to_string())
    }
}
