//! Turning a photo or drawing of a digit into an MNIST-style 28×28 image, the way MNIST's makers
//! normalised NIST's scans: the digit bright on black, cropped to its bounding box, scaled so its
//! larger side is 20 pixels (keeping the aspect ratio, anti-aliased by area averaging), and placed
//! in a 28×28 frame so that its centre of mass sits at the centre.
//!
//! Steps, on the grey levels (colour is converted to luma; transparent pixels count as white
//! paper):
//!
//! 1. very large pictures are first shrunk by box averaging to at most 1024 pixels a side, and
//!    pictures of 64 pixels a side or more are lightly blurred against sensor noise;
//! 2. the background is modelled as a plane (a + b·x + c·y) fitted robustly to the pixels of the
//!    border, which absorbs tinted paper and a lighting gradient; its residual noise σ is
//!    measured there too;
//! 3. polarity: the digit is whichever side of the background carries the strong deviations, so a
//!    dark digit on light paper is inverted to MNIST's light digit on black;
//! 4. the ink is told from the background by Otsu's threshold (at least 3σ above it); only the
//!    largest connected blob of ink and the blobs near it of at least 5 % of its ink are kept, so
//!    isolated specks and dirt at the edges are dropped (a picture whose largest blob is under 4 %
//!    of its smaller side across holds only specks: no digit);
//! 5. kept ink (and a 1-pixel fringe, for anti-aliased edges) is stretched to `0..=1`, the
//!    background set to 0;
//! 6. the bounding box of the ink is scaled to 20 pixels on its larger side (area averaging when
//!    shrinking, linear interpolation when enlarging) and pasted into 28×28 with its centre of
//!    mass, in row and column indices, at (14, 14) (shifted by whole pixels, kept inside the
//!    frame).

use std::io::Cursor;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::error::{DigitizeError, Result, VizError};

/// Side of an MNIST image in pixels.
pub const MNIST_SIDE: usize = 28;
/// Pixels of an MNIST image (28 × 28).
pub const MNIST_PIXELS: usize = MNIST_SIDE * MNIST_SIDE;
/// Side of the box the digit is scaled into before centring (MNIST: 20).
pub const DIGIT_BOX: usize = 20;

/// Pictures are shrunk to at most this many pixels a side before the analysis.
const MAX_WORK_SIDE: usize = 1024;

/// Reads the image file at `path` (PNG, JPEG or BMP; JPEG orientation tags are applied) and turns
/// it into an MNIST-style 28×28 digit: row-major, 0 = background, 255 = ink.
///
/// # Errors
/// [`VizError::Io`] when the file cannot be read, [`VizError::Decode`] when it is not a PNG, JPEG
/// or BMP image or is damaged, and [`VizError::Digitize`] when no digit stands out in it.
pub fn digitize_path(path: impl AsRef<Path>) -> Result<[u8; MNIST_PIXELS]> {
    let path = path.as_ref();
    let io = |source| VizError::Io { path: path.to_path_buf(), source };
    // Not read whole before it is known to be a file of a readable size (`/dev/zero` grew
    // without end, a named pipe waited for ever).
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(VizError::Decode { path: path.to_path_buf(), message: "not a regular file".into() });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(VizError::Decode {
            path: path.to_path_buf(),
            message: format!("{} MB: larger than the {} MB read here", meta.len() >> 20, MAX_FILE_BYTES >> 20),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let image = decode(path, &bytes)?;
    digitize_image(&image).map_err(|source| VizError::Digitize { path: path.to_path_buf(), source })
}

/// The largest image file [`digitize_path`] reads: an uncompressed 64-megapixel BMP of four
/// channels takes 256 MB.
const MAX_FILE_BYTES: u64 = 512 << 20;

/// The largest picture [`decode`] reads: a 64-megapixel photo takes about 0.5 GB on its way to
/// 28×28 (decoded, as RGBA, as grey floats), about 1 GB at 16 bits a channel.
const MAX_PIXELS: u64 = 64_000_000;

/// Decodes an image, applying its orientation tag.
fn decode(path: &Path, bytes: &[u8]) -> Result<DynamicImage> {
    let fail = |message: String| VizError::Decode { path: path.to_path_buf(), message };
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| fail(e.to_string()))?;
    if reader.format().is_none() {
        let head = &bytes[..bytes.len().min(8)];
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        // Text files are common mistakes: their first characters say more than hex does.
        let text = if !head.is_empty() && head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            format!(", text \"{}\"", String::from_utf8_lossy(head))
        } else {
            String::new()
        };
        return Err(fail(format!(
            "not a PNG, JPEG or BMP image ({} bytes starting with hex {}{text})",
            bytes.len(),
            hex.join(" ")
        )));
    }
    let mut decoder = reader.into_decoder().map_err(|e| fail(format!("cannot decode the image: {e}")))?;
    // Checked before decoding: a small file can declare a picture that takes gigabytes (a
    // 557 KB one-bit PNG of 60000×60000 asked for 14 GB), and decoding this way sets no limit.
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(fail(format!(
            "{width}×{height} pixels: larger than the {} megapixels read here; scale it down first",
            MAX_PIXELS / 1_000_000
        )));
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| fail(format!("cannot decode the image: {e}")))?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// Turns a decoded picture of a digit into an MNIST-style 28×28 digit (see the [module
/// documentation](self) for the steps). Transparent pixels count as white paper.
///
/// # Errors
/// [`DigitizeError::NoDigit`] when nothing stands out from the background.
pub fn digitize_image(image: &DynamicImage) -> std::result::Result<[u8; MNIST_PIXELS], DigitizeError> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let grey: Vec<f32> = if image.color().has_alpha() {
        image
            .to_rgba8()
            .pixels()
            .map(|p| {
                let [r, g, b, a] = p.0.map(f32::from);
                let luma = 0.2126 * r + 0.7152 * g + 0.0722 * b;
                let alpha = a / 255.0;
                luma * alpha + 255.0 * (1.0 - alpha)
            })
            .collect()
    } else {
        image.to_luma8().into_raw().into_iter().map(f32::from).collect()
    };
    normalise(w, h, grey)
}

/// Turns a grey picture (`width × height` luma bytes, row-major, either polarity) into an
/// MNIST-style 28×28 digit; what [`digitize_image`] does after converting to grey.
///
/// # Errors
/// [`DigitizeError::BadBuffer`] when `luma` does not hold `width × height` bytes or a side is 0,
/// and [`DigitizeError::NoDigit`] when nothing stands out from the background.
pub fn mnist_style_from_luma(
    width: usize,
    height: usize,
    luma: &[u8],
) -> std::result::Result<[u8; MNIST_PIXELS], DigitizeError> {
    if width == 0 || height == 0 || width.checked_mul(height) != Some(luma.len()) {
        return Err(DigitizeError::BadBuffer(format!(
            "{} bytes for a {width}×{height} picture (expected {})",
            luma.len(),
            width.saturating_mul(height)
        )));
    }
    normalise(width, height, luma.iter().map(|&v| f32::from(v)).collect())
}

/// A grey picture being worked on.
struct Plane {
    w: usize,
    h: usize,
    v: Vec<f32>,
}

fn normalise(w: usize, h: usize, grey: Vec<f32>) -> std::result::Result<[u8; MNIST_PIXELS], DigitizeError> {
    if w == 0 || h == 0 || grey.len() != w * h {
        return Err(DigitizeError::BadBuffer(format!("{} pixels for a {w}×{h} picture", grey.len())));
    }
    let mut img = shrink(Plane { w, h, v: grey });
    if img.w.min(img.h) >= 64 {
        blur(&mut img);
    }
    // A border that is no even background (a dark frame, the edge of a scan): read the
    // background a little further in, once.
    let mut fit = background(&img);
    if uneven_border(fit.1) {
        let inset = (img.w.min(img.h) as f64 * 0.06).ceil() as usize;
        if img.w > 2 * inset + 16 && img.h > 2 * inset + 16 {
            img = crop(&img, (inset, inset, img.w - 1 - inset, img.h - 1 - inset));
            fit = background(&img);
        }
    }
    let mut ink = ink(&img, fit)?;
    // A light sheet on a darker table reads as one solid blob of "ink": the digit is on the
    // sheet, so look again inside it (once), a little in from its edges.
    if let Some((x0, y0, x1, y1)) = ink.sheet {
        let inset = ((x1 - x0).min(y1 - y0) as f64 * 0.04).ceil() as usize + 1;
        let (cx0, cy0, cx1, cy1) = (x0 + inset, y0 + inset, x1.saturating_sub(inset), y1.saturating_sub(inset));
        if cx1 > cx0 + 8 && cy1 > cy0 + 8 {
            // Nothing on it: the blob was the digit after all (a thick stroke), as first read.
            let sheet = crop(&img, (cx0, cy0, cx1, cy1));
            if let Ok(on_sheet) = self::ink(&sheet, background(&sheet)) {
                ink = on_sheet;
            }
        }
    }
    let patch = scale_to_box(&ink);
    Ok(centre(&patch))
}

/// The pixels of `img` in the box `(x0, y0, x1, y1)`, corners included.
fn crop(img: &Plane, (x0, y0, x1, y1): (usize, usize, usize, usize)) -> Plane {
    let w = x1 - x0 + 1;
    let v = (y0..=y1).flat_map(|y| img.v[y * img.w + x0..y * img.w + x0 + w].iter().copied()).collect();
    Plane { w, h: y1 - y0 + 1, v }
}

/// The contrast ink must reach over a background whose border varies by `sigma`.
fn needed_contrast(sigma: f32) -> f32 {
    (4.0 * sigma + 12.0).max(24.0)
}

/// Whether the border, where the background is read, varies so much (by `sigma`) that hardly
/// any ink could stand out from it.
fn uneven_border(sigma: f32) -> bool {
    needed_contrast(sigma) > 200.0
}

/// Shrinks by an integer factor (box average) so that no side exceeds [`MAX_WORK_SIDE`].
fn shrink(img: Plane) -> Plane {
    let k = img.w.max(img.h).div_ceil(MAX_WORK_SIDE);
    if k <= 1 {
        return img;
    }
    let (w, h) = (img.w.div_ceil(k), img.h.div_ceil(k));
    let mut sum = vec![0f32; w * h];
    let mut count = vec![0f32; w * h];
    for y in 0..img.h {
        for x in 0..img.w {
            let i = (y / k) * w + x / k;
            sum[i] += img.v[y * img.w + x];
            count[i] += 1.0;
        }
    }
    Plane { w, h, v: sum.iter().zip(&count).map(|(s, c)| s / c.max(1.0)).collect() }
}

/// One pass of a separable [1, 2, 1] / 4 blur, edges replicated.
fn blur(img: &mut Plane) {
    let (w, h) = (img.w, img.h);
    let mut tmp = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let at = |xx: usize| img.v[y * w + xx];
            tmp[y * w + x] = 0.25 * at(x.saturating_sub(1)) + 0.5 * at(x) + 0.25 * at((x + 1).min(w - 1));
        }
    }
    for y in 0..h {
        for x in 0..w {
            let at = |yy: usize| tmp[yy * w + x];
            img.v[y * w + x] = 0.25 * at(y.saturating_sub(1)) + 0.5 * at(y) + 0.25 * at((y + 1).min(h - 1));
        }
    }
}

/// The median of `v` (reordered); 0 when empty.
fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f32::total_cmp);
    *m
}

/// A background plane a + b·x + c·y.
#[derive(Clone, Copy)]
struct Background {
    a: f64,
    b: f64,
    c: f64,
}

impl Background {
    fn at(&self, x: usize, y: usize) -> f32 {
        (self.a + self.b * x as f64 + self.c * y as f64) as f32
    }

    /// Least-squares plane through `points` (x, y, value); a flat one at their mean when the
    /// system is singular.
    fn fit(points: &[(usize, usize, f32)]) -> Background {
        let n = points.len().max(1) as f64;
        let (mut sx, mut sy, mut sv, mut sxx, mut syy, mut sxy, mut sxv, mut syv) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for &(x, y, v) in points {
            let (x, y, v) = (x as f64, y as f64, f64::from(v));
            sx += x;
            sy += y;
            sv += v;
            sxx += x * x;
            syy += y * y;
            sxy += x * y;
            sxv += x * v;
            syv += y * v;
        }
        let flat = Background { a: sv / n, b: 0.0, c: 0.0 };
        // Centred normal equations for b and c.
        let (mx, my, mv) = (sx / n, sy / n, sv / n);
        let (cxx, cyy, cxy) = (sxx / n - mx * mx, syy / n - my * my, sxy / n - mx * my);
        let (cxv, cyv) = (sxv / n - mx * mv, syv / n - my * mv);
        let det = cxx * cyy - cxy * cxy;
        if det.abs() < 1e-9 || !det.is_finite() {
            return flat;
        }
        let b = (cxv * cyy - cyv * cxy) / det;
        let c = (cyv * cxx - cxv * cxy) / det;
        Background { a: mv - b * mx - c * my, b, c }
    }
}

/// The pixels of the border frame, `t` pixels thick.
fn border(img: &Plane, t: usize) -> Vec<(usize, usize, f32)> {
    let mut out = Vec::with_capacity(2 * t * (img.w + img.h));
    for y in 0..img.h {
        for x in 0..img.w {
            if x < t || y < t || x + t >= img.w || y + t >= img.h {
                out.push((x, y, img.v[y * img.w + x]));
            }
        }
    }
    out
}

/// Fits the background plane to the border, once more without the outliers of the first fit
/// (ink touching the edge), and returns it with the noise σ of the border around it.
fn background(img: &Plane) -> (Background, f32) {
    let t = (img.w.min(img.h) / 32).max(1);
    let mut pts = border(img, t);
    let mut bg = Background::fit(&pts);
    let mut sigma = 0.0;
    for _ in 0..2 {
        let mut res: Vec<f32> = pts.iter().map(|&(x, y, v)| v - bg.at(x, y)).collect();
        let med = median(&mut res.clone());
        let mut dev: Vec<f32> = res.iter().map(|r| (r - med).abs()).collect();
        sigma = 1.4826 * median(&mut dev);
        let keep = 3.0 * sigma + 2.0;
        res = pts.iter().map(|&(x, y, v)| v - bg.at(x, y) - med).collect();
        let kept: Vec<_> = pts.iter().zip(&res).filter(|(_, r)| r.abs() <= keep).map(|(p, _)| *p).collect();
        if kept.len() * 2 < pts.len() {
            break;
        }
        pts = kept;
        bg = Background::fit(&pts);
    }
    (bg, sigma)
}

/// Otsu's threshold of values in `0..=255`.
fn otsu(values: &[f32]) -> f32 {
    let mut hist = [0f64; 256];
    for &v in values {
        hist[v.clamp(0.0, 255.0) as usize] += 1.0;
    }
    let total: f64 = hist.iter().sum();
    let sum_all: f64 = hist.iter().enumerate().map(|(i, &c)| i as f64 * c).sum();
    let (mut w0, mut sum0, mut best, mut best_t) = (0.0, 0.0, -1.0, 0usize);
    for (t, &c) in hist.iter().enumerate() {
        w0 += c;
        sum0 += t as f64 * c;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            best_t = t;
        }
    }
    best_t as f32 + 0.5
}

/// Connected blobs (8-neighbourhood) of `mask`: a label per pixel (0 = none) and the count.
fn blobs(mask: &[bool], w: usize, h: usize) -> (Vec<u32>, usize) {
    let mut label = vec![0u32; mask.len()];
    let mut n = 0u32;
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || label[start] != 0 {
            continue;
        }
        n += 1;
        label[start] = n;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let j = ny * w + nx;
                    if mask[j] && label[j] == 0 {
                        label[j] = n;
                        stack.push(j);
                    }
                }
            }
        }
    }
    (label, n as usize)
}

/// The ink of a picture: coverage in `0..=1` per pixel and its bounding box (inclusive).
struct Ink {
    w: usize,
    v: Vec<f32>,
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
    /// The box of the main blob when it may be a solid sheet (fills 80% of its box, and its box
    /// 30% of the picture) rather than strokes: a sheet of paper on a table.
    sheet: Option<(usize, usize, usize, usize)>,
}

/// The ink of `img`, given its background fit ([`background`]).
fn ink(img: &Plane, (bg, sigma): (Background, f32)) -> std::result::Result<Ink, DigitizeError> {
    let (w, h) = (img.w, img.h);
    let res: Vec<f32> = (0..w * h).map(|i| img.v[i] - bg.at(i % w, i / w)).collect();

    // Polarity: the side with the strong deviations from the background is the ink.
    let k = 3.0 * sigma + 4.0;
    let (mut pos, mut neg) = (0f64, 0f64);
    for &r in &res {
        let (p, q) = (f64::from((r - k).max(0.0)), f64::from((-r - k).max(0.0)));
        pos += p * p;
        neg += q * q;
    }
    let sign = if neg > pos { -1.0 } else { 1.0 };
    let f: Vec<f32> = res.iter().map(|&r| (sign * r).max(0.0)).collect();

    let peak = f.iter().copied().fold(0.0, f32::max);
    let needed = needed_contrast(sigma);
    if peak < needed {
        // The background is read from the image's border: a border that varies (a frame, the
        // paper's edge on a table) sets the bar beyond any contrast.
        return Err(DigitizeError::NoDigit(if uneven_border(sigma) {
            // σ is a robust spread (1.48 × the median deviation), past 255 for a border of
            // black and white.
            let varies =
                if sigma >= 128.0 { "from black to white".to_string() } else { format!("by ±{sigma:.0} of 255") };
            format!(
                "the image's border is not an even background (it varies {varies}), so the digit cannot be told \
                 from it: crop the photo to the paper around the digit"
            )
        } else {
            format!("nothing stands out from the background (strongest contrast {peak:.0} of 255, needed {needed:.0})")
        }));
    }
    let mut t = otsu(&f).max(3.0 * sigma + 8.0);
    if t >= peak {
        t = peak / 2.0;
    }
    let mask: Vec<bool> = f.iter().map(|&v| v > t).collect();
    let (label, n) = blobs(&mask, w, h);
    // Ink mass, pixel count and bounding box of each blob.
    let mut mass = vec![0f64; n + 1];
    let mut count = vec![0usize; n + 1];
    let mut bbox = vec![(usize::MAX, usize::MAX, 0usize, 0usize); n + 1];
    for (i, &l) in label.iter().enumerate() {
        if l == 0 {
            continue;
        }
        let l = l as usize;
        let (x, y) = (i % w, i / w);
        mass[l] += f64::from(f[i] - t);
        count[l] += 1;
        let b = &mut bbox[l];
        *b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
    }
    let main = (1..=n).max_by(|&a, &b| mass[a].total_cmp(&mass[b])).unwrap_or(0);
    if main == 0 || count[main] < 4 {
        return Err(DigitizeError::NoDigit(format!(
            "only specks stand out from the background (largest blob {} pixels)",
            count.get(main).copied().unwrap_or(0)
        )));
    }
    let (mx0, my0, mx1, my1) = bbox[main];
    let extent = (mx1 - mx0).max(my1 - my0) + 1;
    let smallest = (w.min(h) as f64 * 0.04).max(3.0);
    if (extent as f64) < smallest {
        return Err(DigitizeError::NoDigit(format!(
            "only specks stand out from the background (largest blob {extent} pixels across, a digit needs at least {smallest:.0})"
        )));
    }
    let box_area = ((mx1 - mx0 + 1) * (my1 - my0 + 1)) as f64;
    let solid = count[main] as f64 / box_area > 0.8 && box_area > 0.3 * (w * h) as f64;
    let sheet = solid.then_some((mx0, my0, mx1, my1));
    let reach = ((mx1 - mx0).max(my1 - my0) + 1) as f64 * 0.5;
    let near = |b: (usize, usize, usize, usize)| {
        let (cx, cy) = ((b.0 + b.2) as f64 / 2.0, (b.1 + b.3) as f64 / 2.0);
        cx >= mx0 as f64 - reach && cx <= mx1 as f64 + reach && cy >= my0 as f64 - reach && cy <= my1 as f64 + reach
    };
    let kept: Vec<bool> =
        (0..=n).map(|l| l == main || (l > 0 && mass[l] >= 0.05 * mass[main] && near(bbox[l]))).collect();

    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    let mut levels = Vec::new();
    for (l, b) in bbox.iter().enumerate() {
        if kept[l] {
            (x0, y0, x1, y1) = (x0.min(b.0), y0.min(b.1), x1.max(b.2), y1.max(b.3));
        }
    }
    for (i, &l) in label.iter().enumerate() {
        if kept[l as usize] && l != 0 {
            levels.push(f[i]);
        }
    }
    // The level of solid ink: most kept pixels reach it.
    let white = {
        let at = (levels.len() as f32 * 0.8) as usize;
        let at = at.min(levels.len().saturating_sub(1));
        let (_, v, _) = levels.select_nth_unstable_by(at, f32::total_cmp);
        v.max(t + 1.0)
    };
    let floor = (2.0 * sigma + 4.0).min(t / 2.0);
    // Kept ink plus a 1-pixel fringe for anti-aliased edges.
    let mut v = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let in_kept = |xx: usize, yy: usize| {
                let l = label[yy * w + xx] as usize;
                l != 0 && kept[l]
            };
            let touched = (y.saturating_sub(1)..=(y + 1).min(h - 1))
                .any(|yy| (x.saturating_sub(1)..=(x + 1).min(w - 1)).any(|xx| in_kept(xx, yy)));
            if touched {
                v[y * w + x] = ((f[y * w + x] - floor) / (white - floor)).clamp(0.0, 1.0);
            }
        }
    }
    Ok(Ink { w, v, x0, y0, x1, y1, sheet })
}

/// A small grey patch, coverage in `0..=1`.
struct Patch {
    w: usize,
    h: usize,
    v: Vec<f32>,
}

/// The weights of 1-D resampling: output pixel `j` covers source `[origin + j·s, origin +
/// (j+1)·s)`; area averaging when `s ≥ 1`, linear interpolation at the centre otherwise. Returns
/// (source index, weight) lists; sources outside `0..len` are dropped (they are background).
fn weights(origin: f64, s: f64, out: usize, len: usize) -> Vec<Vec<(usize, f32)>> {
    (0..out)
        .map(|j| {
            let mut list = Vec::new();
            if s >= 1.0 {
                let (a, b) = (origin + j as f64 * s, origin + (j + 1) as f64 * s);
                let first = a.floor().max(0.0) as usize;
                let last = (b.ceil().max(0.0) as usize).min(len);
                for k in first..last {
                    let overlap = (b.min(k as f64 + 1.0) - a.max(k as f64)).max(0.0);
                    if overlap > 0.0 {
                        list.push((k, (overlap / s) as f32));
                    }
                }
            } else {
                let c = origin + (j as f64 + 0.5) * s - 0.5;
                let k = c.floor();
                let frac = c - k;
                for (kk, wgt) in [(k, 1.0 - frac), (k + 1.0, frac)] {
                    if kk >= 0.0 && (kk as usize) < len && wgt > 0.0 {
                        list.push((kk as usize, wgt as f32));
                    }
                }
            }
            list
        })
        .collect()
}

/// Scales the ink's bounding box so that its larger side is [`DIGIT_BOX`] pixels, with one pixel
/// of margin around it for the anti-aliased fringe.
fn scale_to_box(ink: &Ink) -> Patch {
    let (bw, bh) = ((ink.x1 - ink.x0 + 1) as f64, (ink.y1 - ink.y0 + 1) as f64);
    let s = bw.max(bh) / DIGIT_BOX as f64;
    let out_w = (bw / s - 1e-9).ceil() as usize + 2;
    let out_h = (bh / s - 1e-9).ceil() as usize + 2;
    let h = ink.v.len() / ink.w.max(1);
    let wx = weights(ink.x0 as f64 - s, s, out_w, ink.w);
    let wy = weights(ink.y0 as f64 - s, s, out_h, h);
    // Horizontal pass over the rows that matter, then vertical.
    let rows: Vec<usize> = {
        let mut r: Vec<usize> = wy.iter().flatten().map(|&(k, _)| k).collect();
        r.sort_unstable();
        r.dedup();
        r
    };
    let mut tmp = vec![0f32; h * out_w];
    for &y in &rows {
        for (j, list) in wx.iter().enumerate() {
            tmp[y * out_w + j] = list.iter().map(|&(k, wgt)| ink.v[y * ink.w + k] * wgt).sum();
        }
    }
    let mut v = vec![0f32; out_w * out_h];
    for (i, list) in wy.iter().enumerate() {
        for j in 0..out_w {
            v[i * out_w + j] = list.iter().map(|&(k, wgt)| tmp[k * out_w + j] * wgt).sum::<f32>().clamp(0.0, 1.0);
        }
    }
    Patch { w: out_w, h: out_h, v }
}

/// Pastes the patch into 28×28 with its centre of mass at (14, 14), shifted by whole pixels and
/// kept inside the frame.
fn centre(p: &Patch) -> [u8; MNIST_PIXELS] {
    let (mut m, mut mx, mut my) = (0f64, 0f64, 0f64);
    let (mut x0, mut y0, mut x1, mut y1) = (p.w, p.h, 0, 0);
    for y in 0..p.h {
        for x in 0..p.w {
            let v = f64::from(p.v[y * p.w + x]);
            if v > 0.0 {
                m += v;
                mx += v * x as f64;
                my += v * y as f64;
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    let mut out = [0u8; MNIST_PIXELS];
    if m <= 0.0 {
        return out;
    }
    let side = MNIST_SIDE as i64;
    let half = side as f64 / 2.0;
    let place = |com: f64, lo: usize, hi: usize| {
        let shift = (half - com).round() as i64;
        // Keep the ink's extent [lo, hi] inside 0..side; the patch is at most DIGIT_BOX + 2 = 22
        // pixels across, so the bounds are in order.
        shift.clamp(-(lo as i64), side - 1 - hi as i64)
    };
    let (dx, dy) = (place(mx / m, x0, x1), place(my / m, y0, y1));
    for y in 0..p.h {
        for x in 0..p.w {
            let (tx, ty) = (x as i64 + dx, y as i64 + dy);
            if (0..side).contains(&tx) && (0..side).contains(&ty) {
                out[(ty * side + tx) as usize] = (p.v[y * p.w + x] * 255.0).round() as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_too_large_to_read_is_refused_before_decoding() {
        // A BMP header declaring 20000×20000 one-bit pixels (400 megapixels), no pixels after it.
        let (w, h) = (20_000i32, 20_000i32);
        let mut bmp = b"BM".to_vec();
        bmp.extend(70u32.to_le_bytes()); // file size (as written: the header alone)
        bmp.extend([0u8; 4]);
        bmp.extend(62u32.to_le_bytes()); // pixels start after the headers and palette
        bmp.extend(40u32.to_le_bytes()); // BITMAPINFOHEADER
        bmp.extend(w.to_le_bytes());
        bmp.extend(h.to_le_bytes());
        bmp.extend(1u16.to_le_bytes()); // planes
        bmp.extend(1u16.to_le_bytes()); // bits per pixel
        bmp.extend([0u8; 16]); // no compression, image size, resolution
        bmp.extend(2u32.to_le_bytes()); // colours
        bmp.extend(0u32.to_le_bytes());
        bmp.extend([0, 0, 0, 0, 255, 255, 255, 0]); // black and white
        let e = decode(Path::new("huge.bmp"), &bmp).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("huge.bmp") && e.contains("20000×20000 pixels: larger than the 64 megapixels"), "{e}");
    }

    #[test]
    fn a_file_of_no_image_is_named_with_its_first_bytes() {
        let e = decode(Path::new("notes.png"), b"Data, not pixels").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("notes.png") && e.contains("16 bytes starting with hex 44 61 74 61 2c 20 6e 6f"), "{e}");
        assert!(e.contains("text \"Data, no\""), "{e}");
        let e = decode(Path::new("x.png"), &[0, 1, 2]).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("hex 00 01 02)"), "{e}");
    }

    #[test]
    fn a_border_that_is_no_background_is_named() {
        // A light picture framed by a dark edge 4 pixels wide, a dark stroke in the middle: read
        // from the border as it is (no look further in), nothing can stand out.
        let (w, h) = (300, 300);
        let v = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                let stroke = (140..160).contains(&x) && (60..240).contains(&y);
                let frame = x < 4 || y < 4 || x >= w - 4 || y >= h - 4;
                if frame || stroke {
                    0.0
                } else {
                    255.0
                }
            })
            .collect();
        // As `normalise` prepares it.
        let mut img = shrink(Plane { w, h, v });
        blur(&mut img);
        let fit = background(&img);
        assert!(uneven_border(fit.1));
        match ink(&img, fit) {
            Err(DigitizeError::NoDigit(m)) => assert!(m.contains("border is not an even background"), "{m}"),
            _ => panic!("expected no digit"),
        }
        // A border of black and white squares: its spread is no number of grey levels.
        let v = (0..w * h).map(|i| if ((i % w) / 8 + (i / w) / 8) % 2 == 0 { 0.0 } else { 255.0 }).collect();
        let mut img = shrink(Plane { w, h, v });
        blur(&mut img);
        let fit = background(&img);
        match ink(&img, fit) {
            Err(DigitizeError::NoDigit(m)) => assert!(m.contains("varies from black to white"), "{m}"),
            _ => panic!("expected no digit"),
        }
    }
}
