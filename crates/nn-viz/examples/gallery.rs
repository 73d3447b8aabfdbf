//! Writes every picture of nn-viz, drawn from synthetic data, into a folder (by default
//! `runs/gallery`, which git ignores).
//!
//! ```text
//! cargo run -p nn-viz --example gallery -- /tmp/viz
//! ```

use std::path::{Path, PathBuf};

use nn_viz::{
    confusion_png, digit_grid, digitize_image, enlarged_digit, network_diagram, plot_history, DiagramLayer,
    GridOptions, HistoryCurves, Tile,
};

/// Strokes of the ten digits, as polylines in 28×28 coordinates (x right, y down).
fn strokes(digit: usize) -> Vec<Vec<(f64, f64)>> {
    let ellipse = |cx: f64, cy: f64, rx: f64, ry: f64, from: f64, to: f64| -> Vec<(f64, f64)> {
        (0..=32)
            .map(|k| {
                let a = (from + (to - from) * k as f64 / 32.0).to_radians();
                (cx + rx * a.cos(), cy + ry * a.sin())
            })
            .collect()
    };
    match digit {
        0 => vec![ellipse(14.0, 14.0, 6.0, 9.5, 0.0, 360.0)],
        1 => vec![vec![(11.0, 8.0), (15.5, 4.5), (13.5, 23.5)]],
        2 => vec![vec![
            (8.0, 9.0),
            (10.0, 5.8),
            (14.0, 4.8),
            (18.0, 6.0),
            (19.2, 9.0),
            (17.5, 13.0),
            (8.0, 23.0),
            (20.5, 23.0),
        ]],
        3 => vec![
            vec![(8.0, 6.5), (13.0, 4.8), (18.0, 6.5), (18.5, 10.0), (14.5, 13.0), (11.5, 13.5)],
            vec![(14.5, 13.0), (19.5, 16.5), (18.5, 21.5), (13.0, 23.3), (7.5, 21.0)],
        ],
        4 => vec![vec![(16.5, 4.5), (7.0, 17.5), (21.0, 17.5)], vec![(16.5, 4.5), (16.5, 23.5)]],
        5 => vec![vec![
            (19.5, 5.0),
            (10.5, 5.0),
            (9.5, 13.0),
            (15.0, 11.8),
            (19.0, 14.5),
            (19.0, 20.0),
            (15.0, 23.2),
            (8.0, 21.5),
        ]],
        6 => vec![vec![
            (17.5, 4.5),
            (11.5, 9.0),
            (9.0, 15.5),
            (9.8, 21.0),
            (14.0, 23.3),
            (18.3, 21.0),
            (19.0, 17.0),
            (16.0, 14.0),
            (11.5, 14.8),
            (9.3, 17.5),
        ]],
        7 => vec![vec![(7.0, 5.5), (20.5, 5.5), (12.0, 23.5)]],
        8 => vec![ellipse(14.0, 9.0, 4.5, 4.3, 0.0, 360.0), ellipse(14.0, 18.3, 5.5, 5.2, 0.0, 360.0)],
        _ => vec![ellipse(14.0, 10.0, 5.0, 5.2, 0.0, 360.0), vec![(19.0, 10.0), (17.5, 23.5)]],
    }
}

/// Distance from `p` to the segment `a`–`b`.
fn distance(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 { 0.0 } else { (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0) };
    let (qx, qy) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    (qx * qx + qy * qy).sqrt()
}

/// A tiny deterministic generator for the synthetic variations.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws `digit`, slanted and shifted a little at random, as an MNIST-like 28×28 image (4×4
/// supersampled, stroke about 2.6 pixels wide, bright on black).
fn synthetic_digit(digit: usize, rng: &mut Lcg) -> Vec<u8> {
    let slant = (rng.next() - 0.5) * 0.35;
    let (sx, sy) = ((rng.next() - 0.5) * 2.0, (rng.next() - 0.5) * 2.0);
    let width = 1.2 + rng.next() * 0.4;
    let lines: Vec<Vec<(f64, f64)>> = strokes(digit)
        .into_iter()
        .map(|l| l.into_iter().map(|(x, y)| (x + slant * (14.0 - y) + sx, y + sy)).collect())
        .collect();
    let mut out = vec![0u8; 784];
    for (i, px) in out.iter_mut().enumerate() {
        let (x, y) = ((i % 28) as f64, (i / 28) as f64);
        let mut hits = 0;
        for sub in 0..16 {
            let p = (x + (sub % 4) as f64 / 4.0 + 0.125, y + (sub / 4) as f64 / 4.0 + 0.125);
            if lines.iter().any(|l| l.windows(2).any(|w| distance(p, w[0], w[1]) <= width)) {
                hits += 1;
            }
        }
        *px = (hits * 255 / 16) as u8;
    }
    out
}

/// A 300×240 colour "photo" of `digit`: dark ink on beige paper with a lighting gradient, noise
/// and a few specks, off-centre.
fn synthetic_photo(digit: &[u8], rng: &mut Lcg) -> image::RgbImage {
    let (w, h, scale, ox, oy) = (300u32, 240u32, 6.5, 120.0, 20.0);
    image::RgbImage::from_fn(w, h, |x, y| {
        let (xf, yf) = (f64::from(x), f64::from(y));
        let light = 0.85 + 0.15 * xf / f64::from(w);
        let paper = [238.0 * light, 226.0 * light, 200.0 * light];
        let (u, v) = ((xf - ox) / scale, (yf - oy) / scale);
        let ink = if (0.0..27.0).contains(&u) && (0.0..27.0).contains(&v) {
            // Bilinear sample of the digit.
            let (i, j) = (u.floor() as usize, v.floor() as usize);
            let (fu, fv) = (u - i as f64, v - j as f64);
            let at = |a: usize, b: usize| f64::from(digit[b.min(27) * 28 + a.min(27)]) / 255.0;
            at(i, j) * (1.0 - fu) * (1.0 - fv)
                + at(i + 1, j) * fu * (1.0 - fv)
                + at(i, j + 1) * (1.0 - fu) * fv
                + at(i + 1, j + 1) * fu * fv
        } else {
            0.0
        };
        let speck = [(30.0, 200.0), (270.0, 40.0), (40.0, 40.0)].iter().any(|&(sx, sy)| (xf - sx).hypot(yf - sy) < 2.0);
        let ink = if speck { 0.8 } else { ink };
        let noise = (rng.next() - 0.5) * 24.0;
        let pen = [40.0, 40.0, 70.0];
        let c = |k: usize| (paper[k] * (1.0 - ink) + pen[k] * ink + noise).clamp(0.0, 255.0) as u8;
        image::Rgb([c(0), c(1), c(2)])
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "runs/gallery".to_string()));
    std::fs::create_dir_all(&dir)?;
    let out = |name: &str| -> PathBuf { dir.join(name) };
    let mut rng = Lcg(7);

    // Training curves of a plausible 12-epoch run.
    let epochs = 12;
    let decay = |start: f64, end: f64, rate: f64| -> Vec<f64> {
        (0..epochs).map(|e| end + (start - end) * (-(e as f64) * rate).exp()).collect()
    };
    let curves = HistoryCurves {
        title: "MLP 784-128-10 on MNIST".to_string(),
        loss: decay(0.29, 0.02, 0.35),
        val_loss: decay(0.15, 0.075, 0.5).iter().enumerate().map(|(e, v)| v + 0.002 * e as f64).collect(),
        accuracy: decay(0.915, 0.995, 0.35),
        val_accuracy: decay(0.955, 0.979, 0.5),
    };
    plot_history(out("history.png"), &curves)?;
    let loss_only =
        HistoryCurves { loss: decay(0.07, 0.01, 0.3), val_loss: decay(0.065, 0.012, 0.3), ..Default::default() };
    plot_history(out("history_loss_only.png"), &loss_only)?;

    // Digits and predictions.
    let digits: Vec<Vec<u8>> = (0..20).map(|i| synthetic_digit(i % 10, &mut rng)).collect();
    let wrong = [(3, 5), (7, 1), (14, 9)];
    let tiles: Vec<Tile<'_>> = digits
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let truth = i % 10;
            let pred = wrong.iter().find(|w| w.0 == i).map_or(truth, |w| w.1);
            Tile::prediction(d, &pred.to_string(), &truth.to_string())
        })
        .collect();
    let options =
        GridOptions { columns: 5, scale: 3, title: "Predictions on test digits".to_string(), ..Default::default() };
    digit_grid(out("grid_predictions.png"), &tiles, &options)?;
    let labelled: Vec<Tile<'_>> =
        digits.iter().take(10).enumerate().map(|(i, d)| Tile::labelled(d, format!("Label: {i}"))).collect();
    digit_grid(out("grid_labels.png"), &labelled, &GridOptions { columns: 10, scale: 2, ..Default::default() })?;
    enlarged_digit(out("enlarged.png"), &digits[7], 28, 28, "Training image 0, label 7", 14)?;

    // Confusion matrices.
    let mut matrix = [[0u64; 10]; 10];
    for (t, row) in matrix.iter_mut().enumerate() {
        for (p, cell) in row.iter_mut().enumerate() {
            *cell = if t == p { 960 + (t as u64 * 17) % 170 } else { ((t * 7 + p * 3) % 11) as u64 / 3 };
        }
    }
    matrix[4][9] = 21;
    matrix[7][2] = 14;
    matrix[5][3] = 11;
    let names: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    confusion_png(out("confusion.png"), &matrix, &names, "Confusion matrix, MLP on MNIST test set (accuracy 97.9%)")?;
    let fashion =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
    let mut fm = matrix;
    fm[6][0] = 120;
    fm[6][2] = 95;
    fm[6][4] = 80;
    fm[6][6] = 690;
    confusion_png(out("confusion_fashion.png"), &fm, &fashion, "Fashion-MNIST, CNN")?;

    // Network diagrams.
    let mlp = [
        DiagramLayer::dense("Input", 784, ""),
        DiagramLayer::dense("Dense", 128, "relu"),
        DiagramLayer::dense("Output", 10, "softmax"),
    ];
    network_diagram(out("diagram_mlp.png"), &mlp, "Multilayer perceptron 784-128-10")?;
    let small = [
        DiagramLayer::dense("Input", 4, ""),
        DiagramLayer::dense("Hidden", 6, "tanh"),
        DiagramLayer::dense("Output", 3, "softmax"),
    ];
    network_diagram(out("diagram_small.png"), &small, "")?;
    let cnn = [
        DiagramLayer::block("Input", "1 @ 28×28"),
        DiagramLayer::block("Conv2D", "32 filters 3×3\nrelu\n32 @ 26×26"),
        DiagramLayer::block("MaxPooling2D", "2×2\n32 @ 13×13"),
        DiagramLayer::block("Flatten", "5408"),
        DiagramLayer::dense("Dense", 128, "relu"),
        DiagramLayer::dense("Output", 10, "softmax"),
    ];
    network_diagram(out("diagram_cnn.png"), &cnn, "Convolutional network")?;

    // A photo of a digit, and what digitize makes of it.
    let photo = synthetic_photo(&digits[3], &mut rng);
    photo.save(out("photo.png"))?;
    let digitized = digitize_image(&image::DynamicImage::ImageRgb8(photo))?;
    let pair = [Tile::labelled(&digits[3], "original"), Tile::labelled(&digitized, "digitized photo")];
    digit_grid(out("digitized.png"), &pair, &GridOptions { columns: 2, scale: 6, ..Default::default() })?;

    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "png") {
            println!("{}", Path::new(&path).display());
        }
    }
    Ok(())
}
