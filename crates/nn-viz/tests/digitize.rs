//! Photos and drawings of digits turned into MNIST-style 28×28 images.
#![allow(clippy::unwrap_used)]

use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};
use nn_viz::{digitize_image, digitize_path, mnist_style_from_luma, DigitizeError, VizError};

/// A pen stroke from one point to another, in 28×28 coordinates.
type Segment = ((f64, f64), (f64, f64));

/// Strokes of a thick '7' in 28×28 coordinates: 20 pixels tall (y 4..24 with the pen's width).
const SEVEN: &[Segment] = &[((7.5, 5.5), (20.0, 5.5)), ((20.0, 5.5), (12.0, 22.5))];
/// A '1' with a flag: tall and narrow.
const ONE: &[Segment] = &[((11.5, 7.5), (14.5, 5.5)), ((14.5, 5.5), (14.5, 22.5))];
/// Half the width of the pen, in 28×28 pixels.
const PEN: f64 = 1.5;

fn distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
    (a.0 + t * dx - p.0).hypot(a.1 + t * dy - p.1)
}

/// Ink coverage (0..=1) of `shape` drawn `scale` times larger with its 28×28 frame's corner at
/// `(ox, oy)` of a `w × h` picture, 4×4 supersampled.
fn coverage(shape: &[Segment], scale: f64, (ox, oy): (f64, f64), w: usize, h: usize) -> Vec<f64> {
    let mut out = vec![0.0; w * h];
    for (i, c) in out.iter_mut().enumerate() {
        let (x, y) = ((i % w) as f64, (i / w) as f64);
        let mut hits = 0;
        for s in 0..16 {
            let p = ((x + (s % 4) as f64 / 4.0 + 0.125 - ox) / scale, (y + (s / 4) as f64 / 4.0 + 0.125 - oy) / scale);
            if shape.iter().any(|&(a, b)| distance(p, a, b) <= PEN) {
                hits += 1;
            }
        }
        *c = f64::from(hits) / 16.0;
    }
    out
}

/// The clean MNIST-style original: bright on black, 28×28.
fn original(shape: &[Segment]) -> Vec<u8> {
    coverage(shape, 1.0, (0.0, 0.0), 28, 28).iter().map(|c| (c * 255.0).round() as u8).collect()
}

/// A deterministic noise source.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A 300×300 "photo": the shape 7× larger, off-centre, in dark blue-black ink on beige paper with a
/// lighting gradient, noise and three specks of dirt.
fn photo(shape: &[Segment], paper: [f64; 3], ink: [f64; 3], noise: f64) -> RgbImage {
    let (w, h) = (300usize, 300usize);
    let cov = coverage(shape, 7.0, (110.0, 25.0), w, h);
    let mut rng = Lcg(42);
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let (xf, yf) = (f64::from(x), f64::from(y));
        let light = 0.88 + 0.12 * (xf + yf) / 600.0;
        let speck =
            [(30.0, 250.0), (280.0, 280.0), (40.0, 60.0)].iter().any(|&(sx, sy)| (xf - sx).hypot(yf - sy) < 2.5);
        let c = if speck { 0.9 } else { cov[y as usize * w + x as usize] };
        let n = (rng.next() - 0.5) * 2.0 * noise;
        let ch = |k: usize| (paper[k] * light * (1.0 - c) + ink[k] * c + n).clamp(0.0, 255.0) as u8;
        Rgb([ch(0), ch(1), ch(2)])
    })
}

const BEIGE: [f64; 3] = [240.0, 228.0, 200.0];
const INK: [f64; 3] = [45.0, 40.0, 70.0];

fn centre_of_mass(img: &[u8]) -> (f64, f64) {
    let (mut m, mut x, mut y) = (0.0, 0.0, 0.0);
    for (i, &v) in img.iter().enumerate() {
        let v = f64::from(v);
        m += v;
        x += v * (i % 28) as f64;
        y += v * (i / 28) as f64;
    }
    (x / m, y / m)
}

/// The image shifted by whole pixels so that its centre of mass is nearest (14, 14).
fn centred(img: &[u8]) -> Vec<u8> {
    let (cx, cy) = centre_of_mass(img);
    shifted(img, ((14.0 - cx).round() as i64, (14.0 - cy).round() as i64))
}

/// The image moved by `(dx, dy)` pixels.
fn shifted(img: &[u8], (dx, dy): (i64, i64)) -> Vec<u8> {
    let mut out = vec![0u8; 784];
    for (i, &v) in img.iter().enumerate() {
        let (x, y) = ((i % 28) as i64 + dx, (i / 28) as i64 + dy);
        if (0..28).contains(&x) && (0..28).contains(&y) {
            out[(y * 28 + x) as usize] = v;
        }
    }
    out
}

fn cosine(a: &[u8], b: &[u8]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    let norm = |v: &[u8]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Cosine similarity of `result` with the original of `shape` after both are centred by centre of
/// mass: centring shifts by whole pixels, so two centred images of one digit can differ by a
/// pixel of rounding; the best of the original's placements within one pixel counts.
fn similarity(result: &[u8], shape: &[Segment]) -> f64 {
    let reference = centred(&original(shape));
    let mut best = 0.0f64;
    for dy in -1..=1 {
        for dx in -1..=1 {
            best = best.max(cosine(result, &shifted(&reference, (dx, dy))));
        }
    }
    best
}

/// (width, height) of the bounding box of the pixels of at least `level`.
fn bbox(img: &[u8], level: u8) -> (usize, usize) {
    let (mut x0, mut y0, mut x1, mut y1) = (28, 28, 0, 0);
    for (i, &v) in img.iter().enumerate() {
        if v >= level {
            let (x, y) = (i % 28, i / 28);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    (x1 + 1 - x0, y1 + 1 - y0)
}

/// The checks every digitized picture of `shape` must pass.
fn check_like(result: &[u8], shape: &[Segment], what: &str) {
    let (cx, cy) = centre_of_mass(result);
    assert!((cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0, "{what}: centre of mass ({cx:.2}, {cy:.2})");
    let (bw, bh) = bbox(result, 64);
    assert!((19..=21).contains(&bw.max(bh)), "{what}: bounding box {bw}×{bh}");
    let sim = similarity(result, shape);
    assert!(sim > 0.8, "{what}: cosine similarity {sim:.3}");
    assert!(result.iter().filter(|&&v| v >= 200).count() >= 20, "{what}: hardly any solid ink");
    eprintln!("{what}: cosine {sim:.3}, centre of mass ({cx:.2}, {cy:.2}), box {bw}×{bh}");
    let corners = [0, 27, 27 * 28, 783];
    assert!(corners.iter().all(|&i| result[i] == 0), "{what}: background is not black");
}

#[test]
fn beige_noisy_photo_becomes_an_mnist_seven() {
    let img = DynamicImage::ImageRgb8(photo(SEVEN, BEIGE, INK, 14.0));
    let result = digitize_image(&img).unwrap();
    check_like(&result, SEVEN, "beige photo");
    let sim = similarity(&result, SEVEN);
    assert!(sim > 0.9, "cosine similarity {sim:.3}");
    // Without the allowance for rounding, as the centred images come.
    let plain = cosine(&result, &centred(&original(SEVEN)));
    assert!(plain > 0.8, "cosine similarity without realignment {plain:.3}");
}

#[test]
fn tall_one_keeps_its_aspect_ratio() {
    let img = DynamicImage::ImageRgb8(photo(ONE, BEIGE, INK, 10.0));
    let result = digitize_image(&img).unwrap();
    check_like(&result, ONE, "one");
    let (bw, bh) = bbox(&result, 64);
    assert!((19..=21).contains(&bh) && bw <= 9, "bounding box {bw}×{bh}");
}

#[test]
fn dim_grey_photo_is_still_read_as_dark_ink() {
    // Grey paper darker than mid-grey: polarity must come from where the strong deviations are.
    let img = DynamicImage::ImageRgb8(photo(SEVEN, [115.0, 110.0, 105.0], [25.0, 25.0, 30.0], 6.0));
    check_like(&digitize_image(&img).unwrap(), SEVEN, "dim photo");
}

#[test]
fn vignetted_photo_with_a_dark_centre_or_dark_corners() {
    for (what, strength) in [("dark corners", -0.35), ("dark centre", 0.25)] {
        let mut img = photo(SEVEN, BEIGE, INK, 10.0);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let r2 = ((f64::from(x) - 150.0).powi(2) + (f64::from(y) - 150.0).powi(2)) / (150.0f64 * 150.0 * 2.0);
            let factor = if strength < 0.0 { 1.0 + strength * r2 } else { 1.0 - strength * (1.0 - r2) };
            p.0 = p.0.map(|c| (f64::from(c) * factor) as u8);
        }
        check_like(&digitize_image(&DynamicImage::ImageRgb8(img)).unwrap(), SEVEN, what);
    }
}

#[test]
fn light_digit_on_black_is_kept_and_mnist_input_passes_through() {
    let clean = centred(&original(SEVEN));
    let result = mnist_style_from_luma(28, 28, &clean).unwrap();
    let sim = cosine(&result, &clean);
    assert!(sim > 0.95, "cosine similarity {sim:.3}");
    check_like(&result, SEVEN, "MNIST input");
}

#[test]
fn transparent_drawing_counts_as_white_paper() {
    let cov = coverage(SEVEN, 5.0, (30.0, 10.0), 200, 160);
    let img = RgbaImage::from_fn(200, 160, |x, y| Rgba([0, 0, 0, (cov[y as usize * 200 + x as usize] * 255.0) as u8]));
    check_like(&digitize_image(&DynamicImage::ImageRgba8(img)).unwrap(), SEVEN, "transparent drawing");
}

#[test]
fn jpeg_and_png_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let img = photo(SEVEN, BEIGE, INK, 14.0);
    for name in ["seven.jpg", "seven.png", "seven.bmp"] {
        let path = dir.path().join(name);
        img.save(&path).unwrap();
        check_like(&digitize_path(&path).unwrap(), SEVEN, name);
    }
}

#[test]
fn blank_pictures_have_no_digit() {
    let white = DynamicImage::ImageRgb8(RgbImage::from_pixel(300, 300, Rgb([255, 255, 255])));
    assert!(matches!(digitize_image(&white), Err(DigitizeError::NoDigit(_))));
    // Paper with noise, a lighting gradient and three specks of dirt: nothing digit-like.
    let specks = DynamicImage::ImageRgb8(photo(&[], BEIGE, INK, 14.0));
    assert!(matches!(digitize_image(&specks), Err(DigitizeError::NoDigit(_))));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blank-page.png");
    RgbImage::from_pixel(120, 80, Rgb([255, 255, 255])).save(&path).unwrap();
    let err = digitize_path(&path).unwrap_err();
    assert!(matches!(err, VizError::Digitize { source: DigitizeError::NoDigit(_), .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("blank-page.png") && msg.contains("no digit found"), "{msg}");
}

#[test]
fn unreadable_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.png");
    std::fs::write(&text, "this is not a picture of a digit").unwrap();
    let err = digitize_path(&text).unwrap_err();
    assert!(matches!(err, VizError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("notes.png"), "{err}");

    let truncated = dir.path().join("cut.png");
    let mut bytes = Vec::new();
    photo(SEVEN, BEIGE, INK, 4.0).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let err = digitize_path(&truncated).unwrap_err();
    assert!(matches!(err, VizError::Decode { .. }) && err.to_string().contains("cut.png"), "{err:?}");

    let missing = dir.path().join("missing.jpg");
    let err = digitize_path(&missing).unwrap_err();
    assert!(matches!(err, VizError::Io { .. }) && err.to_string().contains("missing.jpg"), "{err:?}");
}

#[test]
fn bad_buffers_are_refused() {
    assert!(matches!(mnist_style_from_luma(28, 28, &[0; 100]), Err(DigitizeError::BadBuffer(_))));
    assert!(matches!(mnist_style_from_luma(0, 0, &[]), Err(DigitizeError::BadBuffer(_))));
    assert!(matches!(mnist_style_from_luma(28, 28, &[0; 784]), Err(DigitizeError::NoDigit(_))));
}

#[test]
fn a_dark_frame_round_the_photo_is_looked_past() {
    // The beige photo of a seven with a black frame 4 pixels wide (a scan's edge): the border,
    // where the background is read, is half frame.
    let framed = RgbImage::from_fn(300, 300, {
        let sheet = photo(SEVEN, BEIGE, INK, 10.0);
        move |x, y| if x < 4 || y < 4 || x >= 296 || y >= 296 { Rgb([0, 0, 0]) } else { *sheet.get_pixel(x, y) }
    });
    let result = digitize_image(&DynamicImage::ImageRgb8(framed)).unwrap();
    check_like(&result, SEVEN, "framed photo");
}

#[test]
fn a_sheet_of_paper_on_a_darker_table_is_looked_inside() {
    // The beige photo of a seven, lying on a brown table that frames it on every side.
    let sheet = photo(SEVEN, BEIGE, INK, 10.0);
    let table = RgbImage::from_fn(400, 400, |x, y| {
        let on_sheet = (50..350).contains(&x) && (60..360).contains(&y);
        if on_sheet {
            *sheet.get_pixel(x - 50, y - 60)
        } else {
            Rgb([90, 60, 40])
        }
    });
    let result = digitize_image(&DynamicImage::ImageRgb8(table)).unwrap();
    check_like(&result, SEVEN, "sheet on a table");
}

#[test]
fn a_large_solid_blob_with_nothing_on_it_is_read_as_it_is() {
    // Sheet-like (fills its box, half the picture) but blank: the blob itself is what there is.
    let luma: Vec<u8> = (0..100 * 100)
        .map(|i| if (15..85).contains(&(i % 100)) && (15..85).contains(&(i / 100)) { 255 } else { 0 })
        .collect();
    let result = mnist_style_from_luma(100, 100, &luma).unwrap();
    assert!(result.iter().filter(|&&v| v >= 200).count() > 200, "the block is drawn");
}

#[test]
fn only_a_regular_file_is_read() {
    // A folder here; `/dev/zero` was read without end and a named pipe waited for ever.
    let dir = tempfile::tempdir().unwrap();
    let err = nn_viz::digitize_path(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
}
