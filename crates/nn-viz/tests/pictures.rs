//! Every picture is written, decoded back and checked for size and content.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;

use image::RgbImage;
use nn_viz::{
    confusion_png, digit_grid, enlarged_digit, network_diagram, plot_history, DiagramLayer, GridOptions, HistoryCurves,
    Tile, VizError,
};

fn load(path: &Path) -> RgbImage {
    image::open(path).unwrap().to_rgb8()
}

fn distinct_colours(img: &RgbImage) -> usize {
    img.pixels().map(|p| p.0).collect::<HashSet<_>>().len()
}

/// Pixels for which `pred` holds.
fn count(img: &RgbImage, pred: impl Fn([u8; 3]) -> bool) -> usize {
    img.pixels().filter(|p| pred(p.0)).count()
}

fn non_white(c: [u8; 3]) -> bool {
    c.iter().any(|&v| v < 245)
}
fn greenish(c: [u8; 3]) -> bool {
    let [r, g, b] = c.map(i32::from);
    g >= 90 && g - r >= 50 && g - b >= 50
}
fn reddish(c: [u8; 3]) -> bool {
    let [r, g, b] = c.map(i32::from);
    r >= 150 && r - g >= 80 && r - b >= 80
}
fn dark(c: [u8; 3]) -> bool {
    c.iter().all(|&v| v < 60)
}

/// A bright-on-black 28×28 "digit": a ring, or a bar when `bar`.
fn digit(bar: bool) -> Vec<u8> {
    (0..784)
        .map(|i| {
            let (x, y) = ((i % 28) as f64 - 13.5, (i / 28) as f64 - 13.5);
            let on = if bar {
                x.abs() < 2.0 && y.abs() < 10.0
            } else {
                (((x / 6.0).powi(2) + (y / 9.0).powi(2)).sqrt() - 1.0).abs() < 0.25
            };
            if on {
                255
            } else {
                0
            }
        })
        .collect()
}

fn history() -> HistoryCurves {
    HistoryCurves {
        title: "MLP on MNIST".into(),
        loss: vec![0.30, 0.14, 0.10, 0.08, 0.06],
        val_loss: vec![0.16, 0.11, 0.09, 0.085, 0.09],
        accuracy: vec![0.91, 0.96, 0.97, 0.976, 0.982],
        val_accuracy: vec![0.95, 0.965, 0.972, 0.975, 0.974],
    }
}

#[test]
fn history_has_two_panels_with_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.png");
    plot_history(&path, &history()).unwrap();
    let img = load(&path);
    assert_eq!(img.dimensions(), (1000, 494));
    assert!(distinct_colours(&img) > 100, "{} colours", distinct_colours(&img));
    // Blue (train) and orange (validation) lines in both panels.
    for (x0, x1) in [(0, 500), (500, 1000)] {
        let half = |pred: &dyn Fn([u8; 3]) -> bool| {
            img.enumerate_pixels().filter(|(x, _, p)| (x0..x1).contains(x) && pred(p.0)).count()
        };
        let blue = half(&|[r, g, b]| b > 150 && r < 80 && g < 150);
        let orange = half(&|[r, g, b]| r > 220 && (100..180).contains(&g) && b < 80);
        assert!(blue > 200 && orange > 200, "panel {x0}..{x1}: {blue} blue, {orange} orange pixels");
    }
    // Text (titles, ticks, axis names) is dark.
    assert!(count(&img, dark) > 1500);
}

#[test]
fn history_without_accuracy_or_validation_is_one_panel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    let curves = HistoryCurves { loss: vec![2.3, 1.1, f64::NAN, 0.4], ..Default::default() };
    plot_history(&path, &curves).unwrap();
    let img = load(&path);
    assert_eq!(img.dimensions(), (500, 450));
    assert_eq!(count(&img, |[r, g, b]| r > 220 && (100..180).contains(&g) && b < 80), 0, "no validation line");

    let one_epoch = HistoryCurves { accuracy: vec![0.9], val_accuracy: vec![0.92], ..Default::default() };
    plot_history(dir.path().join("one.png"), &one_epoch).unwrap();
    assert_eq!(load(&dir.path().join("one.png")).dimensions(), (500, 450));

    let err = plot_history(dir.path().join("empty.png"), &HistoryCurves::default()).unwrap_err();
    assert!(matches!(err, VizError::Invalid { .. }) && err.to_string().contains("empty.png"), "{err}");
}

#[test]
fn prediction_grid_colours_right_green_and_wrong_red() {
    let dir = tempfile::tempdir().unwrap();
    let (ring, bar) = (digit(false), digit(true));
    let tiles = vec![
        Tile::prediction(&ring, "0", "0"),
        Tile::prediction(&bar, "1", "1"),
        Tile::prediction(&bar, "7", "1"),
        Tile::prediction(&ring, "0", "0"),
        Tile::prediction(&ring, "6", "0"),
    ];
    let options = GridOptions { columns: 3, scale: 3, title: "Test predictions".into(), ..Default::default() };
    let path = dir.path().join("grid.png");
    digit_grid(&path, &tiles, &options).unwrap();
    let img = load(&path);
    let (w, h) = img.dimensions();
    assert!(w >= 3 * 84 && h >= 2 * 84 + 44, "{w}×{h}");
    assert!(count(&img, greenish) > 100, "green captions");
    assert!(count(&img, reddish) > 60, "red captions");
    // The digits: dark on white, 3×3 pixels per image pixel.
    let ink = ring.iter().filter(|&&v| v > 0).count() * 3 + bar.iter().filter(|&&v| v > 0).count() * 2;
    assert!(count(&img, |c| c == [0, 0, 0]) >= ink * 9, "digits are drawn dark");

    // Neutral captions: no green, no red.
    let labelled: Vec<Tile<'_>> = (0..4).map(|i| Tile::labelled(&ring, format!("Label: {i}"))).collect();
    let path = dir.path().join("labels.png");
    digit_grid(&path, &labelled, &GridOptions { columns: 10, scale: 2, ..Default::default() }).unwrap();
    let img = load(&path);
    assert_eq!(count(&img, greenish) + count(&img, reddish), 0);
    assert!(img.height() < 2 * 56 + 60, "one row");
}

#[test]
fn grid_refuses_inconsistent_input() {
    let dir = tempfile::tempdir().unwrap();
    let ring = digit(false);
    let short = vec![0u8; 700];
    let tiles = [Tile::labelled(&ring, "a"), Tile::labelled(&short, "b")];
    let err = digit_grid(dir.path().join("bad.png"), &tiles, &GridOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bad.png") && msg.contains("image 1 holds 700 pixels"), "{msg}");
    assert!(!dir.path().join("bad.png").exists());
    let err = digit_grid(dir.path().join("none.png"), &[], &GridOptions::default()).unwrap_err();
    assert!(matches!(err, VizError::Invalid { .. }));
    let zero = GridOptions { scale: 0, ..Default::default() };
    assert!(digit_grid(dir.path().join("zero.png"), &tiles[..1], &zero).is_err());
}

#[test]
fn enlarged_digit_is_big_and_dark_on_white() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/folder/seven.png");
    enlarged_digit(&path, &digit(true), 28, 28, "Training image 0, label 1", 12).unwrap();
    let img = load(&path);
    let (w, h) = img.dimensions();
    assert!(w >= 28 * 12 + 40 && h >= 28 * 12 + 60, "{w}×{h}");
    let bar = digit(true).iter().filter(|&&v| v > 0).count();
    assert!(count(&img, |c| c == [0, 0, 0]) >= bar * 144);
    assert!(count(&img, |c| c == [255, 255, 255]) > (w * h / 2) as usize, "white background");
    let err = enlarged_digit(dir.path().join("x.png"), &[0; 10], 28, 28, "", 4).unwrap_err();
    assert!(err.to_string().contains("10 pixels"), "{err}");
}

#[test]
fn confusion_matrix_has_dark_diagonal_with_white_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = vec![vec![2u64; 10]; 10];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 980;
    }
    let names: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    let path = dir.path().join("confusion.png");
    confusion_png(&path, &m, &names, "Confusion matrix").unwrap();
    let img = load(&path);
    let (w, h) = img.dimensions();
    assert!(w >= 560 && h >= 560, "{w}×{h}");
    let navy = |[r, g, b]: [u8; 3]| r < 20 && g < 60 && b > 90 && b < 120;
    assert!(count(&img, navy) > 9 * 50 * 50, "dark diagonal cells");
    // White digits inside the dark cells: white pixels surrounded by navy.
    let white_in_navy = img
        .enumerate_pixels()
        .filter(|(x, y, p)| {
            p.0.iter().all(|&v| v > 240)
                && *x > 3
                && *y > 0
                && navy(img.get_pixel(x - 4, *y).0)
                && navy(img.get_pixel(x + 4, *y).0)
        })
        .count();
    assert!(white_in_navy > 20, "{white_in_navy} white text pixels on dark cells");

    // Long names and arrays of arrays work too.
    let fashion = ["T-shirt/top", "Trouser", "Pullover"];
    confusion_png(dir.path().join("fashion.png"), &[[50u64, 1, 4], [0, 55, 0], [9, 0, 41]], &fashion, "").unwrap();
    assert!(count(&load(&dir.path().join("fashion.png")), non_white) > 1000);

    let err = confusion_png(dir.path().join("bad.png"), &m, &names[..9], "").unwrap_err();
    assert!(err.to_string().contains("9 class names for a 10×10"), "{err}");
    let ragged = vec![vec![1u64, 2], vec![3]];
    let err = confusion_png(dir.path().join("ragged.png"), &ragged, &["a", "b"], "").unwrap_err();
    assert!(err.to_string().contains("row 1 has 1 columns"), "{err}");
}

#[test]
fn network_diagram_draws_columns_of_neurons_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = [
        DiagramLayer::dense("Input", 784, ""),
        DiagramLayer::dense("Dense", 128, "relu"),
        DiagramLayer::dense("Output", 10, "softmax"),
    ];
    let path = dir.path().join("mlp.png");
    network_diagram(&path, &mlp, "MLP").unwrap();
    let img = load(&path);
    let (w, h) = img.dimensions();
    assert!(w >= 3 * 150 && h >= 450, "{w}×{h}");
    let blue = count(&img, |[r, g, b]| (150..=180).contains(&r) && (195..=215).contains(&g) && b > 215);
    let green = count(&img, |[r, g, b]| (165..=190).contains(&r) && g > 210 && (125..=150).contains(&b));
    let orange = count(&img, |[r, g, b]| r > 245 && (180..=200).contains(&g) && (100..=120).contains(&b));
    assert!(
        blue > 3000 && green > 3000 && orange > 4000,
        "neurons: {blue} blue, {green} green, {orange} orange pixels"
    );
    assert!(count(&img, |c| c.iter().all(|&v| (150..=180).contains(&v))) > 2000, "grey connections");

    let cnn = [
        DiagramLayer::block("Input", "1 @ 28×28"),
        DiagramLayer::block("Conv2D", "32 filters 3×3\nrelu"),
        DiagramLayer::block("Flatten", "5408"),
        DiagramLayer::dense("Output", 10, "softmax"),
    ];
    let path = dir.path().join("cnn.png");
    network_diagram(&path, &cnn, "").unwrap();
    let purple = count(&load(&path), |[r, g, b]| (205..=225).contains(&r) && (205..=220).contains(&g) && b > 225);
    assert!(purple > 3 * 4000, "{purple} block pixels");

    let err = network_diagram(dir.path().join("none.png"), &[], "").unwrap_err();
    assert!(matches!(err, VizError::Invalid { .. }));
    // Too many layers for one picture: said so, not "lower the scale or the number of images".
    let deep: Vec<DiagramLayer> = (0..200).map(|i| DiagramLayer::block(format!("Dropout {i}"), "784")).collect();
    let err = network_diagram(dir.path().join("deep.png"), &deep, "").unwrap_err().to_string();
    assert!(err.contains("a diagram of these 200 layers") && err.contains("fewer layers"), "{err}");
}

#[test]
fn unwritable_paths_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // A folder where the file should go.
    let err = plot_history(dir.path(), &history()).unwrap_err();
    assert!(matches!(err, VizError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
}
