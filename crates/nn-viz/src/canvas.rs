//! The drawing surface shared by every picture: an RGB buffer that is written pixel by pixel
//! (digits, heat-map cells) and handed to plotters for text, lines and charts, then saved as PNG.

use std::path::Path;

use plotters::backend::{BitMapBackend, RGBPixel};
use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, IntoDrawingArea};

use crate::error::{Result, VizError};
use crate::font::register_fonts;
use crate::text::{self, Anchor};

/// The largest side of a picture, in pixels: guards against absurd sizes from bad arguments.
const MAX_SIDE: u32 = 16_384;
/// The largest picture, in pixels (64 M, 192 MB of RGB).
const MAX_PIXELS: u64 = 64 << 20;

/// Why a picture could not be made, before the path is known to the message.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The caller's data is inconsistent.
    Invalid(String),
    /// Drawing failed.
    Draw(String),
}

impl<E: std::error::Error> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail::Draw(e.to_string())
    }
}

impl Fail {
    /// The crate error for the picture at `path`.
    pub(crate) fn at(self, path: &Path) -> VizError {
        match self {
            Fail::Invalid(m) => VizError::invalid(path, m),
            Fail::Draw(m) => VizError::draw(path, m),
        }
    }
}

/// Result of the drawing steps.
pub(crate) type Drawn<T = ()> = std::result::Result<T, Fail>;

/// The plotters drawing area over a canvas.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a, RGBPixel>, Shift>;

/// An RGB picture being drawn, white when created.
pub(crate) struct Canvas {
    width: u32,
    height: u32,
    buf: Vec<u8>,
}

impl Canvas {
    /// A white canvas of `width × height` pixels.
    pub(crate) fn new(width: u32, height: u32) -> Drawn<Canvas> {
        if width == 0
            || height == 0
            || width > MAX_SIDE
            || height > MAX_SIDE
            || u64::from(width) * u64::from(height) > MAX_PIXELS
        {
            return Err(Fail::Invalid(format!(
                "the picture would be {width}×{height} pixels; each side must be 1..={MAX_SIDE} and the area at most {MAX_PIXELS} pixels (lower the scale or the number of images)"
            )));
        }
        register_fonts().map_err(Fail::Draw)?;
        Ok(Canvas { width, height, buf: vec![255; width as usize * height as usize * 3] })
    }

    /// Sets one pixel; coordinates outside the canvas are ignored.
    pub(crate) fn put(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x < 0 || y < 0 || x >= i64::from(self.width) || y >= i64::from(self.height) {
            return;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        self.buf[i..i + 3].copy_from_slice(&rgb);
    }

    /// Mixes `rgb` into one pixel with weight `alpha` in `0..=1`; outside the canvas is ignored.
    pub(crate) fn blend(&mut self, x: i64, y: i64, rgb: [u8; 3], alpha: f32) {
        if x < 0 || y < 0 || x >= i64::from(self.width) || y >= i64::from(self.height) {
            return;
        }
        let a = alpha.clamp(0.0, 1.0);
        let i = (y as usize * self.width as usize + x as usize) * 3;
        for (dst, &src) in self.buf[i..i + 3].iter_mut().zip(&rgb) {
            *dst = (f32::from(*dst) * (1.0 - a) + f32::from(src) * a).round() as u8;
        }
    }

    /// Writes `text` at `(x, y)`, `size` pixels high, placed by `anchor`.
    pub(crate) fn text(&mut self, text: &str, at: (i64, i64), size: f64, rgb: [u8; 3], anchor: Anchor) -> Drawn {
        text::draw(self, text, at, size, rgb, anchor, false)
    }

    /// Writes `text` reading upwards (rotated a quarter turn anticlockwise about the anchor).
    pub(crate) fn text_up(&mut self, text: &str, at: (i64, i64), size: f64, rgb: [u8; 3], anchor: Anchor) -> Drawn {
        text::draw(self, text, at, size, rgb, anchor, true)
    }

    /// Fills the rectangle of `w × h` pixels whose top-left corner is `(x, y)` (clipped).
    pub(crate) fn fill(&mut self, x: i64, y: i64, w: i64, h: i64, rgb: [u8; 3]) {
        let (x0, y0) = (x.max(0), y.max(0));
        let (x1, y1) = ((x + w).min(i64::from(self.width)), (y + h).min(i64::from(self.height)));
        for yy in y0..y1 {
            for xx in x0..x1 {
                self.put(xx, yy, rgb);
            }
        }
    }

    /// Draws a 1-pixel rectangle outline around the `w × h` box at `(x, y)` (the line lies just
    /// outside the box).
    pub(crate) fn frame(&mut self, x: i64, y: i64, w: i64, h: i64, rgb: [u8; 3]) {
        self.fill(x - 1, y - 1, w + 2, 1, rgb);
        self.fill(x - 1, y + h, w + 2, 1, rgb);
        self.fill(x - 1, y, 1, h, rgb);
        self.fill(x + w, y, 1, h, rgb);
    }

    /// Runs plotters drawing code (lines, circles, polygons) over the canvas.
    pub(crate) fn draw<F>(&mut self, f: F) -> Drawn
    where
        F: FnOnce(&Area<'_>) -> Drawn,
    {
        let backend = BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut self.buf, (self.width, self.height))?;
        let root = backend.into_drawing_area();
        f(&root)?;
        root.present()?;
        Ok(())
    }

    /// Halves the canvas in both directions, averaging 2×2 blocks: pictures drawn at twice their
    /// size come out anti-aliased (plotters' bitmap backend fills shapes without anti-aliasing).
    pub(crate) fn downsample2(self) -> Canvas {
        let (w, h) = ((self.width / 2).max(1), (self.height / 2).max(1));
        let mut buf = vec![255; w as usize * h as usize * 3];
        let src_w = self.width as usize;
        for y in 0..h as usize {
            for x in 0..w as usize {
                for ch in 0..3 {
                    let mut sum = 0u32;
                    let mut k = 0u32;
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let (sx, sy) = (2 * x + dx, 2 * y + dy);
                        if sx < src_w && sy < self.height as usize {
                            sum += u32::from(self.buf[(sy * src_w + sx) * 3 + ch]);
                            k += 1;
                        }
                    }
                    buf[(y * w as usize + x) * 3 + ch] = ((sum + k / 2) / k.max(1)) as u8;
                }
            }
        }
        Canvas { width: w, height: h, buf }
    }

    /// Encodes the canvas in the format `path`'s extension names (PNG without one; also JPEG
    /// and BMP) and writes it there, creating missing parent folders.
    pub(crate) fn save(self, path: &Path) -> Result<()> {
        use image::ImageFormat;
        let format = match path.extension() {
            None => ImageFormat::Png,
            Some(_) => match ImageFormat::from_path(path) {
                Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp)) => f,
                _ => return Err(VizError::invalid(path, "unknown picture format: give a .png, .jpg or .bmp file")),
            },
        };
        let mut png = std::io::Cursor::new(Vec::new());
        image::write_buffer_with_format(
            &mut png,
            &self.buf,
            self.width,
            self.height,
            image::ExtendedColorType::Rgb8,
            format,
        )
        .map_err(|e| VizError::draw(path, format!("{format:?} encoding: {e}")))?;
        let png = png.into_inner();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| VizError::Io { path: dir.to_path_buf(), source })?;
        }
        // Atomic: a crash or Ctrl-C midway leaves the old file or none, never half a picture.
        mnist_data::atomic::write_atomic(path, &png).map_err(|e| match e {
            mnist_data::DataError::Io { source, .. } => VizError::Io { path: path.to_path_buf(), source },
            other => VizError::draw(path, other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_picture_is_written_in_the_format_its_name_says() {
        let dir = tempfile::tempdir().unwrap();
        for (name, format) in [
            ("a.png", image::ImageFormat::Png),
            ("b.jpg", image::ImageFormat::Jpeg),
            ("c.bmp", image::ImageFormat::Bmp),
            ("d", image::ImageFormat::Png),
        ] {
            let path = dir.path().join(name);
            Canvas::new(8, 4).unwrap().save(&path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(image::guess_format(&bytes).unwrap(), format, "{name}");
        }
        let err = Canvas::new(8, 4).unwrap().save(&dir.path().join("e.gif")).unwrap_err().to_string();
        assert!(err.contains("e.gif") && err.contains(".png"), "{err}");
        // Over an old picture; onto a folder (an error naming it). No temporaries are left.
        Canvas::new(4, 4).unwrap().save(&dir.path().join("a.png")).unwrap();
        std::fs::create_dir(dir.path().join("f.png")).unwrap();
        let err = Canvas::new(8, 4).unwrap().save(&dir.path().join("f.png")).unwrap_err().to_string();
        assert!(err.contains("f.png"), "{err}");
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        assert_eq!(names, ["a.png", "b.jpg", "c.bmp", "d", "f.png"]);
    }
}
