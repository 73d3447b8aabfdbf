//! The `mnist` binary end to end, on the real MNIST files.
//!
//! The data is found as `common` says (the real files, or a failure). Training runs with the workspace's `[profile.test]` (opt-level 3), which also builds the
//! binary these tests run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{data_root, fails, fails_both, mnist, ok, ok_both};
use image::{GrayImage, Rgb, RgbImage};

/// Decodes a PNG and checks its size and that it is not blank (it has both dark and light
/// pixels); returns `(width, height)`.
fn check_png(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_luma8();
    let (dark, light) =
        img.pixels().fold((0, 0), |(d, l), p| (d + usize::from(p.0[0] < 100), l + usize::from(p.0[0] > 200)));
    assert!(dark > 50 && light > 50, "{} looks blank ({dark} dark, {light} light pixels)", path.display());
    img.dimensions()
}

/// A deterministic noise source: uniform and normal numbers.
struct Noise(u64);
impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// A 300×300 "photo" of an MNIST digit (`pixels`, 28×28, bright on black): 7× larger (bilinear),
/// drawn in dark ink on tinted paper with noise σ = 8, its frame's corner at `(ox, oy)`.
fn photo(pixels: &[u8], (ox, oy): (u32, u32), seed: u64) -> RgbImage {
    let small = GrayImage::from_raw(28, 28, pixels.to_vec()).expect("28×28");
    let big = image::imageops::resize(&small, 196, 196, image::imageops::FilterType::Triangle);
    let paper = [235.0, 225.0, 200.0];
    let ink = [35.0, 30.0, 50.0];
    let mut noise = Noise(seed);
    RgbImage::from_fn(300, 300, |x, y| {
        let c = if (ox..ox + 196).contains(&x) && (oy..oy + 196).contains(&y) {
            f64::from(big.get_pixel(x - ox, y - oy).0[0]) / 255.0
        } else {
            0.0
        };
        let n = 8.0 * noise.normal();
        let ch = |k: usize| (paper[k] * (1.0 - c) + ink[k] * c + n).round().clamp(0.0, 255.0) as u8;
        Rgb([ch(0), ch(1), ch(2)])
    })
}

fn mnist_test_set() -> mnist_data::Dataset {
    mnist_data::Mnist::load(data_root().join("mnist")).expect("MNIST loads").test
}

#[test]
fn every_command_has_help_with_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let top = ok(&mnist(tmp.path(), &["--help"]));
    for cmd in ["fetch", "info", "show", "summary", "train", "evaluate", "predict", "diagram", "tune"] {
        assert!(top.contains(cmd), "{top}");
        let help = ok(&mnist(tmp.path(), &[cmd, "--help"]));
        assert!(help.contains("Examples:") && help.contains(&format!("mnist {cmd}")), "{cmd}:\n{help}");
    }
}

#[test]
fn info_prints_shapes_statistics_and_class_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(&mnist(tmp.path(), &["info"]));
    assert!(out.contains("(60000, 28, 28)") && out.contains("(10000, 28, 28)"), "{out}");
    assert!(out.contains("      0  0        5923      980"), "{out}");
    assert!(out.contains("      9  9        5949     1009"), "{out}");
    assert!(out.contains("0.1307"), "{out}");
    assert!(out.contains("loaded in"), "{out}");
}

#[test]
fn show_draws_a_grid_and_one_enlarged_digit() {
    let tmp = tempfile::tempdir().unwrap();
    ok(&mnist(tmp.path(), &["show", "--count", "10", "--out", "grid.png"]));
    let (w, h) = check_png(&tmp.path().join("grid.png"));
    assert!(w >= 5 * 28 * 3 && h >= 2 * 28 * 3, "{w}×{h}");
    let out = ok(&mnist(tmp.path(), &["show", "--index", "0", "--split", "test", "--out", "one/seven.png"]));
    assert!(out.contains("label 7"), "{out}");
    let (w, h) = check_png(&tmp.path().join("one/seven.png"));
    assert!(w >= 28 * 12 && h >= 28 * 12, "{w}×{h}");
}

#[test]
fn summary_of_the_tutorial_mlp_counts_94494_parameters() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(&mnist(tmp.path(), &["summary", "--model", "mlp-sigmoid-100-144", "--save-spec", "mlp.json"]));
    assert!(out.contains("Total params: 94,494"), "{out}");
    assert!(out.contains("dense_1 (Dense)") && out.contains("(None, 144)"), "{out}");
    let again = ok(&mnist(tmp.path(), &["summary", "--model", "mlp.json"]));
    assert!(again.contains("Total params: 94,494"), "{again}");
    // An architecture file is known by its contents whatever its name.
    std::fs::copy(tmp.path().join("mlp.json"), tmp.path().join("mlp.txt")).unwrap();
    let txt = ok(&mnist(tmp.path(), &["summary", "--model", "mlp.txt"]));
    assert!(txt.contains("Total params: 94,494"), "{txt}");
}

#[test]
fn train_then_evaluate_predict_and_draw() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = ok(&mnist(dir, &["train", "--model", "mlp-128", "--epochs", "1", "--run-dir", "run", "--device", "cpu"]));
    assert!(out.contains("Epoch 1/1") && out.contains("Written to run"), "{out}");
    // Off a terminal, one plain line per epoch, Keras's numbers on it.
    let epoch = out.lines().find(|l| l.starts_with("Epoch 1/1")).unwrap();
    assert!(epoch.contains(" - 469/469 - ") && epoch.contains("val_accuracy: "), "{epoch}");
    let run = dir.join("run");
    for f in ["model.safetensors", "history.csv", "history.png", "predictions.png", "confusion.png", "report.txt"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    for png in ["history.png", "predictions.png", "confusion.png"] {
        check_png(&run.join(png));
    }
    let history = std::fs::read_to_string(run.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 2, "{history}");
    let report = std::fs::read_to_string(run.join("report.txt")).unwrap();
    let accuracy: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("test accuracy:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no test accuracy in the report:\n{report}"));
    assert!(accuracy > 0.9, "one epoch of mlp-128 reaches {accuracy}");
    assert!(report.contains("precision") && report.contains("seconds/epoch") && report.contains("device:"), "{report}");
    let model = "run/model.safetensors";

    let out = ok(&mnist(dir, &["evaluate", "--model", model, "--out-dir", "eval"]));
    assert!(out.contains("accuracy:") && out.contains("f1-score") && out.contains("true\\pred"), "{out}");
    check_png(&dir.join("eval/confusion.png"));
    check_png(&dir.join("eval/errors.png"));

    if !cfg!(feature = "cuda") {
        fails(&mnist(dir, &["evaluate", "--model", model, "--device", "cuda"]), &["--features cuda", "--device cpu"]);
    }

    let out =
        ok(&mnist(dir, &["predict", "--model", model, "--device", "cpu", "--index", "0", "1", "--out", "pred.png"]));
    assert!(out.contains("test[0]: predicted 7"), "{out}");
    assert!(out.contains("test[1]: predicted 2"), "{out}");
    check_png(&dir.join("pred.png"));

    // A photo of test digit 0 (a 7), as a phone would take it.
    let test = mnist_test_set();
    photo(test.image(0), (30, 60), 1).save(dir.join("seven.png")).unwrap();
    let out = ok(&mnist(dir, &["predict", "--model", model, "seven.png", "--out", "photo.png"]));
    assert!(out.contains("seven.png: predicted 7"), "{out}");
    check_png(&dir.join("photo.png"));
    // The same photo as JPEG and BMP, and the model named by its run folder.
    let seven = image::open(dir.join("seven.png")).unwrap();
    seven.save(dir.join("seven.jpg")).unwrap();
    seven.save(dir.join("seven.bmp")).unwrap();
    let out = ok(&mnist(dir, &["predict", "--model", "run", "seven.jpg", "seven.bmp"]));
    assert!(out.contains("seven.jpg: predicted 7") && out.contains("seven.bmp: predicted 7"), "{out}");
    let out = ok(&mnist(dir, &["evaluate", "--model", "run"]));
    assert!(out.contains("run/model.safetensors on the MNIST test set"), "{out}");

    ok(&mnist(dir, &["diagram", "--model", model, "--out", "net.png"]));
    check_png(&dir.join("net.png"));
    let out = ok(&mnist(dir, &["summary", "--model", model]));
    assert!(out.contains("Total params: 101,770"), "{out}");

    // Resuming needs a checkpoint with optimiser state: write one, then continue it. The
    // checkpoint keeps the run's settings (images, batch size, validation), so only the new
    // total of epochs is given; a flag that changes one is used, with a note.
    let settings = [
        "--limit",
        "2000",
        "--batch-size",
        "100",
        "--validation",
        "split:0.1",
        "--reduce-lr",
        "3",
        "-q",
        "--device",
        "cpu",
    ];
    let run = |epochs: &str, more: &[&str]| {
        let args: Vec<&str> = ["train", "--epochs", epochs].iter().chain(&settings).chain(more).copied().collect();
        ok(&mnist(dir, &args))
    };
    run("1", &["--checkpoint", "ckpt.safetensors", "--run-dir", "r1"]);
    // The resumed run writes its checkpoints on to the file: the epoch-1 one, kept for later.
    std::fs::copy(dir.join("ckpt.safetensors"), dir.join("epoch1.safetensors")).unwrap();
    let resumed = mnist(
        dir,
        &["train", "--resume", "ckpt.safetensors", "--epochs", "2", "--run-dir", "r2", "-q", "--device", "cpu"],
    );
    let out = ok(&resumed);
    assert!(out.contains("resuming after epoch 1"), "{out}");
    assert!(out.contains("2000 training images") && out.contains("of batch 100"), "{out}");
    assert!(out.contains("the last 10% of the training images"), "{out}");
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(std::fs::read_to_string(dir.join("r2/history.csv")).unwrap().lines().count(), 3);
    let report = std::fs::read_to_string(dir.join("r2/report.txt")).unwrap();
    assert!(report.contains("reduce lr:      ÷10 after 3 epochs without improvement"), "{report}");
    // The resumed run ends with the weights of the same run left uninterrupted.
    run("2", &["--run-dir", "r0"]);
    let weights = |run: &str| nn_core::ModelFile::load(&dir.join(run).join("model.safetensors")).unwrap().weights;
    assert_eq!(weights("r2"), weights("r0"));
    let changed = mnist(
        dir,
        &[
            "train",
            "--resume",
            "epoch1.safetensors",
            "--epochs",
            "2",
            "--batch-size",
            "50",
            "--run-dir",
            "r3",
            "-q",
            "--device",
            "cpu",
        ],
    );
    ok(&changed);
    let note = String::from_utf8_lossy(&changed.stderr);
    assert!(note.contains("--batch-size 50 differs from the checkpoint's 100"), "{note}");
}

#[test]
fn a_resumed_run_reports_the_rate_it_began_with_and_the_lowered_one() {
    // SGD at 1e-9 moves the validation loss by less than ReduceLROnPlateau's min_delta (1e-4),
    // so with patience 0 the second epoch lowers the rate, and the checkpoint keeps it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let common = ["--limit", "1000", "--validation", "split:0.2", "--device", "cpu"];
    let with_common = |args: &[&'static str]| -> Vec<&'static str> { args.iter().chain(&common).copied().collect() };
    let args = with_common(&[
        "train",
        "--epochs",
        "2",
        "--optimizer",
        "sgd",
        "--lr",
        "1e-9",
        "--reduce-lr",
        "0",
        "--checkpoint",
        "ckpt.safetensors",
        "--run-dir",
        "r1",
    ]);
    let out = ok(&mnist(dir, &args));
    assert!(out.contains("Epoch 2: learning rate 1.0000e-9 → 1.0000e-10"), "{out}");
    // The resumed run writes its checkpoints on to the file: the epoch-2 one, kept for later.
    std::fs::copy(dir.join("ckpt.safetensors"), dir.join("epoch2.safetensors")).unwrap();
    let args = with_common(&["train", "--resume", "ckpt.safetensors", "--epochs", "3", "--run-dir", "r2"]);
    let out = ok(&mnist(dir, &args));
    assert!(out.contains("sgd (learning rate 1e-10, lowered from 1e-9,"), "{out}");
    let report = std::fs::read_to_string(dir.join("r2/report.txt")).unwrap();
    assert!(report.contains("optimizer:      sgd, learning rate 1e-9,"), "{report}");
    // A checkpoint written before the rate was recorded (the annotation taken out), and one
    // whose run standardised its inputs (a library's): resumed as they were.
    let ckpt = dir.join("epoch2.safetensors");
    let mut file = nn_core::ModelFile::load(&ckpt).unwrap();
    file.metadata.remove("fit.learning_rate");
    let standardize = r#"{"kind":"standardize","mean":0.1307,"std":0.3081}"#;
    file.metadata.insert("normalization".into(), standardize.into());
    file.save(&ckpt).unwrap();
    let args = with_common(&["train", "--resume", "epoch2.safetensors", "--epochs", "3", "--run-dir", "r3"]);
    let out = ok(&mnist(dir, &args));
    assert!(out.contains("lowered from 1e-9,"), "{out}");
    let resumed = nn_core::ModelFile::load(&dir.join("r3/model.safetensors")).unwrap();
    assert_eq!(resumed.normalization().unwrap(), mnist_data::Normalization::MNIST_STANDARD);
    // A trained model's summary claims no recipe of an architecture file.
    let out = ok(&mnist(dir, &["summary", "--model", "r3/model.safetensors"]));
    assert!(!out.contains("Recipe"), "{out}");
    assert!(report.contains("base rate at the end 1.0000e-11 (the last epoch trained at 1.0000e-10)"), "{report}");
}

#[test]
fn a_run_that_early_stopping_ended_is_resumed_only_without_it() {
    // SGD at 1e-30 leaves every weight as it was (each step is below f32's resolution), so the
    // validation loss never improves and early stopping with patience 1 ends epoch 2.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let common = ["--limit", "1000", "--validation", "split:0.2", "--device", "cpu", "-q"];
    let run = |args: &[&str]| mnist(dir, &args.iter().chain(&common).copied().collect::<Vec<_>>());
    let args = ["train", "--epochs", "5", "--optimizer", "sgd", "--lr", "1e-30", "--early-stopping", "1"];
    ok(&run(&[&args[..], &["--checkpoint", "ckpt.safetensors", "--run-dir", "r1"]].concat()));
    let stopped = nn_core::ModelFile::load(&dir.join("ckpt.safetensors")).unwrap();
    assert!(stopped.metadata["history"].contains("\"epoch\":2"), "{:?}", stopped.metadata["history"]);
    // Resumed with it, it would stop before its first epoch: refused before any work, saying what to do.
    fails(
        &run(&["train", "--resume", "ckpt.safetensors", "--epochs", "5", "--run-dir", "r2"]),
        &[
            "would stop before its first epoch (early stopping: val_loss did not improve for 1 epoch",
            "--early-stopping none",
        ],
    );
    assert!(!dir.join("r2").exists());
    let out = ok(&run(&[
        "train",
        "--resume",
        "ckpt.safetensors",
        "--epochs",
        "3",
        "--early-stopping",
        "none",
        "--run-dir",
        "r3",
    ]));
    assert!(out.contains("1 epoch (after the checkpoint's 2)"), "{out}");
    fails(&run(&["train", "--early-stopping", "soon"]), &["`soon` is not a whole number (or `none`)"]);

    // A damaged fit setting is named, with its file, before any work: resumed or fine-tuned.
    for (key, value) in [
        ("fit.batch_size", "0"),
        ("fit.limit", "0"),
        ("fit.epochs", "many"),
        ("fit.validation", "split:2"),
        ("fit.early_stopping", "-1"),
        ("fit.learning_rate", "NaN"),
        ("fit.augment", "spin=3"),
    ] {
        for (flag, file) in [("--resume", "ckpt.safetensors"), ("--model", "r3/model.safetensors")] {
            let damaged = dir.join("damaged.safetensors");
            let mut f = nn_core::ModelFile::load(&dir.join(file)).unwrap();
            f.metadata.insert(key.into(), value.into());
            f.save(&damaged).unwrap();
            let said = format!("{flag} damaged.safetensors: its {key} is \"{value}\"");
            fails(
                &run(&["train", flag, "damaged.safetensors", "--epochs", "6", "--run-dir", "r4"]),
                &[&said, "damaged"],
            );
            assert!(!dir.join("r4").exists());
        }
    }
}

#[test]
fn a_trained_model_is_fine_tuned_with_its_frozen_layers_left_as_they_were() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let common = ["--limit", "1000", "--epochs", "1", "--device", "cpu", "-q"];
    let run = |args: &[&str]| mnist(dir, &args.iter().chain(&common).copied().collect::<Vec<_>>());
    ok(&run(&["train", "--model", "mlp-128-128", "--run-dir", "base"]));
    // A standardising library model: fine-tuned with its own normalisation.
    let base = dir.join("base/model.safetensors");
    let mut file = nn_core::ModelFile::load(&base).unwrap();
    let standardize = r#"{"kind":"standardize","mean":0.1307,"std":0.3081}"#;
    file.metadata.insert("normalization".into(), standardize.into());
    file.save(&base).unwrap();
    let out =
        ok(&run(&["train", "--model", "base/model.safetensors", "--freeze", "dense,dense_1", "--run-dir", "tuned"]));
    assert!(out.contains("frozen: dense, dense_1"), "{out}");
    let weights = |run: &str| nn_core::ModelFile::load(&dir.join(run).join("model.safetensors")).unwrap();
    let (before, after) = (weights("base"), weights("tuned"));
    assert_eq!(after.normalization().unwrap(), mnist_data::Normalization::MNIST_STANDARD);
    for (b, a) in before.weights.iter().zip(&after.weights) {
        let frozen = b.name.starts_with("dense.") || b.name.starts_with("dense_1.");
        assert_eq!(frozen, a.data == b.data, "{}: frozen {frozen}", b.name);
    }
    let report = std::fs::read_to_string(dir.join("tuned/report.txt")).unwrap();
    assert!(report.contains("frozen layers:  dense, dense_1"), "{report}");
    // The model file keeps them frozen (its summary counts them so).
    let out = ok(&mnist(dir, &["summary", "--model", "tuned/model.safetensors"]));
    assert!(out.contains("Trainable params: 1,290 "), "{out}");
    // Fine-tuning on, everything thawed.
    ok(&run(&["train", "--model", "tuned/model.safetensors", "--freeze", "none", "--lr", "1e-5", "--run-dir", "all"]));
    let out = ok(&mnist(dir, &["summary", "--model", "all/model.safetensors"]));
    assert!(out.contains("Non-trainable params: 0 "), "{out}");
    let thawed = weights("all");
    assert!(after.weights.iter().zip(&thawed.weights).all(|(a, t)| a.data != t.data), "a layer stayed frozen");
    fails(
        &run(&["train", "--freeze", "dense,dense_1", "--run-dir", "x"]),
        &["every layer with weights is frozen (dense, dense_1): training would change nothing"],
    );
    fails(
        &run(&["train", "--freeze", "dense_7", "--run-dir", "x"]),
        &["--freeze dense_7", "frozen are: dense, dense_1\n"],
    );
    fails(
        &run(&["train", "--model", "convnet", "--freeze", "max_pooling2d", "--run-dir", "x"]),
        &["max_pooling2d (MaxPooling2D): it has no weights to be frozen"],
    );
}

#[test]
fn a_frozen_batch_norm_is_thawed_by_freeze_none_and_checkpoint_names_are_filled_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let common = ["--limit", "1000", "--epochs", "1", "--device", "cpu", "-q"];
    let run = |args: &[&str]| mnist(dir, &args.iter().chain(&common).copied().collect::<Vec<_>>());
    let out = ok(&run(&[
        "train",
        "--model",
        "fast-cnn",
        "--freeze",
        "batch_normalization",
        "--checkpoint",
        "ck-{epoch:02d}.safetensors",
        "--run-dir",
        "bn",
    ]));
    assert!(out.contains("frozen: batch_normalization") && out.contains("checkpoint: ck-01.safetensors"), "{out}");
    assert!(dir.join("ck-01.safetensors").is_file());
    // Resumed, the run goes on writing one file an epoch, said as it is not the file resumed.
    let args = ["train", "--resume", "ck-01.safetensors", "--epochs", "2", "--limit", "1000", "--run-dir", "bn2", "-q"];
    let (_, stderr) = ok_both(&mnist(dir, &args));
    assert!(stderr.contains("note: checkpoints go on to") && stderr.contains("ck-{epoch:02d}.safetensors"), "{stderr}");
    assert!(dir.join("ck-02.safetensors").is_file());
    let frozen = |run: &str| {
        let out = ok(&mnist(dir, &["summary", "--model", &format!("{run}/model.safetensors")]));
        out.lines().find(|l| l.contains("Non-trainable params")).unwrap().to_string()
    };
    // 64 of the frozen batch norm, 64 moving statistics of the other.
    assert!(frozen("bn").contains("Non-trainable params: 128 "), "{}", frozen("bn"));
    ok(&run(&["train", "--model", "bn/model.safetensors", "--freeze", "none", "--run-dir", "thawed"]));
    assert!(frozen("thawed").contains("Non-trainable params: 96 "), "{}", frozen("thawed"));
}

#[test]
fn a_run_that_diverges_at_once_says_so_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "train",
        "--model",
        "mlp-512-512",
        "--optimizer",
        "sgd",
        "--lr",
        "1000",
        "--epochs",
        "2",
        "--limit",
        "3000",
        "--run-dir",
        "r",
        "--checkpoint",
        "c.safetensors",
        "-q",
        "--device",
        "cpu",
    ];
    fails(&mnist(tmp.path(), &args), &["training diverged in its first epoch", "try a lower --lr (now 1000)"]);
    assert!(!tmp.path().join("r").exists() && !tmp.path().join("c.safetensors").exists());
    // An epoch whose last update broke the weights (its loss, read before, was a number): 30
    // batch normalisations of raw pixels, one batch, no validation to show it.
    let bn: Vec<String> = std::iter::repeat_n("{\"type\": \"BatchNormalization\"}".to_string(), 30).collect();
    let spec = format!(
        "{{\"input_shape\": [28, 28], \"layers\": [{{\"type\": \"Flatten\"}}, {}, {{\"type\": \"Dense\", \"units\": 10}}]}}",
        bn.join(", ")
    );
    std::fs::write(tmp.path().join("bn30.json"), spec).unwrap();
    let args = ["train", "--model", "bn30.json", "--limit", "50", "--epochs", "1", "--validation", "none", "-q"];
    fails(&mnist(tmp.path(), &args), &["training diverged in its first epoch"]);
    // A weight penalty that diverges is named beside the rate.
    let args = ["train", "--l2", "1e30", "--epochs", "1", "--limit", "1000", "-q", "--device", "cpu"];
    fails(&mnist(tmp.path(), &args), &["diverged", "try a lower --lr (now 0.001) or smaller weight penalties", "L2 1"]);
    // A JSON architecture states the recipe it trains with.
    ok(&mnist(tmp.path(), &["summary", "--model", "mlp-128", "--save-spec", "a.json"]));
    let out = ok(&mnist(tmp.path(), &["summary", "--model", "a.json"]));
    assert!(
        out.contains("Recipe (an architecture file's default): adam") && out.contains("5 epochs of batch 128"),
        "{out}"
    );
}

#[test]
fn tune_runs_two_tiny_trials_and_keeps_the_best() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, err) = ok_both(&mnist(
        tmp.path(),
        &[
            "tune",
            "--max-trials",
            "2",
            "--epochs",
            "1",
            "--limit",
            "3000",
            "--units",
            "32..64:32",
            "--lr",
            "1e-3",
            "--out-dir",
            "tune",
        ],
    ));
    assert!(out.contains("val_accuracy") && out.contains("Best: trial"), "{out}");
    // 600 validation images, each worth a sixth of a point: said.
    assert!(out.contains("3000 training images; the last 20%, 600 images, validate"), "{out}");
    assert!(err.contains("note: 600 validation images score each trial in steps of 0.17 points"), "{err}");
    let csv = std::fs::read_to_string(tmp.path().join("tune/trials.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("trial,conv_blocks,filters,layers,units,learning_rate"), "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.split(',').nth(1) == Some("0")), "no convolution by default: {csv}");
    let out = ok(&mnist(tmp.path(), &["evaluate", "--model", "tune/best.safetensors"]));
    assert!(out.contains("accuracy:"), "{out}");
}

#[test]
fn tune_searches_convnets_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let search = |blocks: &str, out_dir: &str| {
        let args = [
            "tune",
            "--max-trials",
            "2",
            "--epochs",
            "1",
            "--limit",
            "3000",
            "--conv-blocks",
            blocks,
            "--filters",
            "8..16:8",
            "--layers",
            "0",
            "--lr",
            "1e-2",
            "--optimizer",
            "adam",
            "--out-dir",
            out_dir,
        ];
        mnist(tmp.path(), &args)
    };
    let out = ok(&search("1..2", "conv"));
    assert!(out.contains("Space: conv blocks 1..2, filters 8..16:8, layers 0,"), "{out}");
    assert!(out.contains("blocks  filters") && out.contains("Best: trial"), "{out}");
    let csv = std::fs::read_to_string(tmp.path().join("conv/trials.csv")).unwrap();
    assert!(csv.lines().skip(1).all(|l| l.contains(",0,,0.01,")), "{csv}");
    let summary = ok(&mnist(tmp.path(), &["summary", "--model", "conv/best.safetensors"]));
    assert!(summary.contains("Conv2D") && summary.contains("MaxPooling2D"), "{summary}");
    // Four blocks leave nothing of a 28×28 image.
    fails(&search("4", "deep"), &["--conv-blocks: 4 blocks", "at most 3"]);
    // No hidden layer and no convolution: nothing to learn with.
    fails(&search("0..1", "bare"), &["--layers: at least 1 hidden layer", "conv_blocks from 1"]);
    // A range of units too wide to list (it used to allocate it, and panic) and a model too
    // large to build: refused before the search starts.
    let huge =
        mnist(tmp.path(), &["tune", "--units", "1..18446744073709551615:1", "--limit", "500", "--out-dir", "huge"]);
    fails(&huge, &["the space's largest model (layers=2 units=[18446744073709551615", "cannot be built"]);
    let units = mnist(tmp.path(), &["tune", "--units", "0..10:5", "--out-dir", "units"]);
    fails(&units, &["--units: at least 1 unit per layer"]);
    // Too few images for the split: said before the table.
    let one = mnist(tmp.path(), &["tune", "--limit", "1", "--out-dir", "one"]);
    fails(&one, &["1 training images cannot be split", "give a larger --limit"]);
    assert!(!String::from_utf8_lossy(&one.stdout).contains("val_accuracy"));
}

#[test]
fn bad_arguments_and_files_fail_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("notes.safetensors"), "these are not weights").unwrap();
    std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    std::fs::write(dir.join("bad.json"), "{\"input_shape\": [28, 28], \"layers\": [{\"type\": \"Dense\"}]}").unwrap();
    std::fs::write(
        dir.join("unflat.json"),
        "{\"input_shape\": [28, 28], \"layers\": [{\"type\": \"Dense\", \"units\": 10}]}",
    )
    .unwrap();
    std::fs::write(dir.join("syntax.json"), "{\"input_shape\": [28, 28], \"layers\": [").unwrap();
    let wide =
        "{\"input_shape\": [28, 28], \"layers\": [{\"type\": \"Flatten\"}, {\"type\": \"Dense\", \"units\": 1000}]}";
    std::fs::write(dir.join("wide.json"), wide).unwrap();
    std::fs::write(dir.join("bom.json"), format!("\u{feff}{wide}")).unwrap();
    std::fs::write(dir.join("binary.json"), b"\x10\0\0\0\0\0\0\0{\xff\xfe}").unwrap();

    fails(&mnist(dir, &["evaluate", "--model", "missing.safetensors"]), &["missing.safetensors", "no such file"]);
    // A checkpoint where the run writes its own file (it would be overwritten when training ends).
    let clash = ["train", "--limit", "100", "--run-dir", "rc", "--checkpoint", "rc/model.safetensors"];
    fails(&mnist(dir, &clash), &["--checkpoint rc/model.safetensors", "its own model.safetensors"]);
    fails(&mnist(dir, &["predict", "--model", "missing.safetensors", "--index", "0"]), &["missing.safetensors"]);
    fails(&mnist(dir, &["evaluate", "--model", "notes.safetensors"]), &["notes.safetensors", "not a model file"]);
    fails(&mnist(dir, &["evaluate", "--model", "broken.png"]), &["broken.png", "not a model file"]);
    fails(&mnist(dir, &["summary", "--model", "mlp-999"]), &["unknown model 'mlp-999'", "mlp-128"]);
    fails(&mnist(dir, &["train", "--model", "mlp-999"]), &["unknown model 'mlp-999'"]);
    fails(&mnist(dir, &["summary", "--model", "bad.json"]), &["bad.json", "units"]);
    fails(&mnist(dir, &["train", "--model", "unflat.json"]), &["unflat.json", "Flatten"]);
    fails(&mnist(dir, &["diagram", "--model", "syntax.json"]), &["syntax.json", "line"]);
    // A model that is no classifier of the 10 classes (its predictions would fall outside the
    // report), a spec with a byte-order mark (read), a binary file named .json.
    fails(
        &mnist(dir, &["train", "--model", "wide.json", "--limit", "100"]),
        &["wide", "an output of [1000]", "10 units"],
    );
    ok(&mnist(dir, &["summary", "--model", "bom.json"]));
    // Input of another size than the data's images: refused before the model is built (this
    // one's 800 MB of weights are never allocated).
    let big_input = "{\"input_shape\": [100000000], \"layers\": [{\"type\": \"Dense\", \"units\": 2}]}";
    std::fs::write(dir.join("input.json"), big_input).unwrap();
    fails(&mnist(dir, &["train", "--model", "input.json", "--limit", "100"]), &["takes 100000000 inputs", "28×28"]);
    fails(&mnist(dir, &["summary", "--model", "binary.json"]), &["binary.json", "this file is binary"]);
    fails(&mnist(dir, &["train", "--lr", "1e39"]), &["1e39", "beyond what a 32-bit float holds"]);
    fails(&mnist(dir, &["train", "--lr", "1e-45"]), &["--lr 1.4013e-45", "smallest normal 32-bit float"]);
    let split = mnist(dir, &["train", "--validation", "split:0.9999", "--limit", "2000"]);
    let (stdout, _) = fails_both(&split, &["split:0.9999 of 2000 training images: leaves no image to train on"]);
    assert!(!stdout.contains("validation on"), "refused before the settings are printed: {stdout}");
    fails(&mnist(dir, &["evaluate", "--model", "mlp-128"]), &["no trained weights"]);
    fails(&mnist(dir, &["--dataset", "nowhere", "info"]), &["nowhere", "unknown data set"]);
    fails(&mnist(dir, &["train", "--augment", "spin=3"]), &["spin"]);
    fails(&mnist(dir, &["train", "--validation", "split:2"]), &["between 0 and 1"]);
    fails(&mnist(dir, &["train", "--epochs", "0"]), &["--epochs"]);
    fails(&mnist(dir, &["show", "--index", "60000"]), &["60000", "60000 images"]);
    fails(&mnist(dir, &["tune", "--units", "512..32"]), &["512..32"]);
    if !cfg!(feature = "cuda") {
        fails(&mnist(dir, &["train", "--device", "gpu"]), &["the GPU (cuda:0) needs CUDA support", "--features cuda"]);
        fails(&mnist(dir, &["tune", "--device", "cuda"]), &["--features cuda"]);
    }
    fails(&mnist(dir, &["tune", "--device", "tpu"]), &["tpu", "cpu, cuda"]);
    // Negative numbers reach the checks (not clap's "unexpected argument").
    fails(&mnist(dir, &["train", "--lr", "-1"]), &["--lr -1", "positive"]);
    fails(&mnist(dir, &["train", "--epochs", "-1"]), &["--epochs", "-1 is negative"]);
    fails(&mnist(dir, &["show", "--count", "two"]), &["--count", "`two` is not a whole number"]);
    fails(&mnist(dir, &["show", "--count", "-5"]), &["--count", "-5 is negative"]);
    fails(&mnist(dir, &["predict", "--model", "mlp-128", "--index", "-1"]), &["--index", "-1 is negative"]);
    // A misspelt option in an architecture file.
    std::fs::write(
        dir.join("typo.json"),
        r#"{"input_shape": [28, 28], "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 10, "activaton": "relu"}]}"#,
    )
    .unwrap();
    fails(&mnist(dir, &["summary", "--model", "typo.json"]), &["typo.json", "activaton"]);
    // A checkpoint path that cannot be written is refused before training, and the run
    // leaves no empty folder behind.
    std::fs::write(dir.join("afile"), "").unwrap();
    let args = ["train", "--checkpoint", "afile/ck.safetensors", "--run-dir", "r-ck", "--device", "cpu"];
    fails(&mnist(dir, &args), &["--checkpoint afile/ck.safetensors"]);
    assert!(!dir.join("r-ck").exists());
    std::fs::write(
        dir.join("wide.json"),
        r#"{"input_shape": [32, 32], "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 10}]}"#,
    )
    .unwrap();
    let args = ["train", "--model", "wide.json", "--run-dir", "r-bad", "--device", "cpu"];
    fails(&mnist(dir, &args), &["1024 inputs"]);
    assert!(!dir.join("r-bad").exists());
    // A run folder that cannot be made is refused before training.
    let args = ["train", "--run-dir", "afile/run", "--device", "cpu"];
    fails(&mnist(dir, &args), &["afile/run: cannot create the run folder", "afile is not a folder"]);
    // A run stopped during training (here killed, before its first epoch ends)
    // leaves no run folder: it is made, with its files, when training ends (and the
    // checkpoint's folder with the first checkpoint).
    let mut child = Command::new(env!("CARGO_BIN_EXE_mnist"))
        .current_dir(dir)
        .arg("--data-dir")
        .arg(data_root())
        .args(["train", "--run-dir", "r-killed/run", "--checkpoint", "r-killed/ck/c.safetensors"])
        .args(["--epochs", "50", "--device", "cpu"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let line = read_until(&mut stdout, "Run folder: r-killed/run");
    assert!(line.contains("written when training ends"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dir.join("r-killed").exists());
    // An empty data folder: say how to get the data.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mnist"))
        .current_dir(dir)
        .args(["--data-dir", "empty", "info"])
        .output()
        .unwrap();
    fails(&out, &["mnist fetch", "empty"]);

    // Images that cannot be read: the others are still classified, the exit code says so.
    ok(&mnist(dir, &["train", "--epochs", "1", "--limit", "1000", "--run-dir", "tiny", "-q", "--device", "cpu"]));
    photo(mnist_test_set().image(1), (50, 50), 2).save(dir.join("two.png")).unwrap();
    std::fs::write(dir.join("blank.png"), b"").unwrap();
    let out = mnist(dir, &["predict", "--model", "tiny/model.safetensors", "broken.png", "two.png", "nope.jpg"]);
    let stderr = fails(&out, &["broken.png", "nope.jpg", "2 of 3 image(s) gave no prediction"]);
    assert!(!stderr.contains("two.png:"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("two.png: predicted"));
    fails(&mnist(dir, &["predict", "--model", "tiny/model.safetensors", "blank.png"]), &["blank.png"]);
    fails(&mnist(dir, &["predict", "--model", "tiny/model.safetensors"]), &["nothing to predict"]);
    fails(&mnist(dir, &["predict", "--model", "tiny/model.safetensors", "--index", "10000"]), &["--index 10000"]);
}

/// Sends SIGINT (Ctrl-C) to a child process.
fn ctrl_c(child: &std::process::Child) {
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success(), "kill -INT failed");
}

/// Reads `stdout` until a line starting with `start`; returns it.
fn read_until(stdout: &mut impl BufRead, start: &str) -> String {
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 && !line.starts_with(start) {
        line.clear();
    }
    assert!(line.starts_with(start), "the output ended before a line starting {start:?}");
    line
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_training_or_a_search_and_saves_what_was_done() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mnist"))
            .current_dir(dir)
            .arg("--data-dir")
            .arg(data_root())
            .args(args)
            .args(["--device", "cpu"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Many short epochs: Ctrl-C once the second has ended.
    let mut child = spawn(&[
        "train",
        "--limit",
        "2000",
        "--validation",
        "none",
        "--epochs",
        "2000",
        "--run-dir",
        "run",
        "--checkpoint",
        "ck.safetensors",
    ]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    read_until(&mut stdout, "Epoch 2/2000");
    ctrl_c(&child);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stdout:\n{rest}\nstderr:\n{stderr}");
    assert!(rest.contains("interrupted in epoch") && rest.contains("unfinished epoch undone"), "{rest}");
    assert!(stderr.contains("Ctrl-C: stopping after this batch"), "{stderr}");
    assert!(stderr.contains("interrupted: after") && stderr.contains("of 2000 epochs"), "{stderr}");
    assert!(stderr.contains("continue it with: mnist train --resume ck.safetensors"), "{stderr}");
    // The run folder and the checkpoint hold the same last completed epoch.
    let model = nn_core::ModelFile::load(&dir.join("run/model.safetensors")).unwrap();
    let checkpoint = nn_core::ModelFile::load(&dir.join("ck.safetensors")).unwrap();
    assert_eq!(model.weights, checkpoint.weights);
    let epochs = std::fs::read_to_string(dir.join("run/history.csv")).unwrap().lines().count() - 1;
    assert!((2..2000).contains(&epochs), "{epochs} epochs");
    assert!(std::fs::read_to_string(dir.join("run/report.txt")).unwrap().contains("stopped:        interrupted"));
    // It goes on from there.
    let more = (epochs + 1).to_string();
    let args = ["train", "--resume", "ck.safetensors", "--epochs", &more, "--run-dir", "run2", "-q", "--device", "cpu"];
    ok(&mnist(dir, &args));
    // Its checkpoints go on to the same file (as Keras's BackupAndRestore keeps its folder).
    let resumed = nn_core::ModelFile::load(&dir.join("run2/model.safetensors")).unwrap();
    let checkpoint = nn_core::ModelFile::load(&dir.join("ck.safetensors")).unwrap();
    assert_eq!(resumed.weights, checkpoint.weights, "the checkpoint holds the resumed run's last epoch");
    // Done: said with the file's name.
    let args = ["train", "--resume", "ck.safetensors", "--epochs", &more, "--run-dir", "run4", "--device", "cpu"];
    fails(&mnist(dir, &args), &[&format!("already trained {more} epochs"), "mnist evaluate --model ck.safetensors"]);

    // Ctrl-C before an epoch has ended: nothing is saved, not even a run folder.
    let mut child = spawn(&["train", "--run-dir", "run3", "--checkpoint", "ck3/c.safetensors", "--epochs", "5"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    read_until(&mut stdout, "Run folder: run3");
    ctrl_c(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.join("run3").exists() && !dir.join("ck3").exists());

    // A search: Ctrl-C once a trial has finished; the search keeps what it found.
    let mut child = spawn(&["tune", "--max-trials", "50", "--epochs", "2", "--limit", "3000", "--out-dir", "tune"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    read_until(&mut stdout, "    1 ");
    ctrl_c(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("Ctrl-C: no further trial starts") && stderr.contains("of 50 trials"), "{stderr}");
    let trials = std::fs::read_to_string(dir.join("tune/trials.csv")).unwrap().lines().count() - 1;
    assert!((1..50).contains(&trials), "{trials} trials");
    nn_core::ModelFile::load(&dir.join("tune/best.safetensors")).unwrap();
}

/// The acceptance test of seed 000: photos of digits — MNIST test digits drawn dark on light,
/// tinted, noisy paper, 300×300 and off-centre — read by a model from `mnist train --model
/// mlp-128` (the 6-epoch recipe): at least 95 of 100 right.
#[test]
fn photos_of_digits_are_read_right() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(&mnist(dir, &["train", "--model", "mlp-128", "--run-dir", "run", "--quiet", "--device", "cpu"]));
    let test = mnist_test_set();
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let mut names = Vec::new();
    for i in 0..100 {
        // Off-centre: the 196-pixel digit frame anywhere but the middle of the 300-pixel photo.
        let ox = [4, 100, 20, 90, 60][i % 5] as u32;
        let oy = [96, 8, 80, 30, 100][(i / 5) % 5] as u32;
        let name = format!("photos/digit-{i:03}.png");
        photo(test.image(i), (ox, oy), i as u64 + 7).save(dir.join(&name)).unwrap();
        names.push(name);
    }
    let mut args = vec!["predict", "--model", "run/model.safetensors", "--out", "photos.png"];
    args.extend(names.iter().map(String::as_str));
    let out = ok(&mnist(dir, &args));
    let mut right = 0;
    let mut wrong = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let prefix = format!("{name}: predicted ");
        let line =
            out.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no prediction for {name}:\n{out}"));
        let digit: u8 = line[prefix.len()..].split_whitespace().next().and_then(|d| d.parse().ok()).expect("a digit");
        if digit == test.label(i) {
            right += 1;
        } else {
            wrong.push(format!("{name}: {digit} for {}", test.label(i)));
        }
    }
    println!("photos read right: {right}% ({right} of 100); wrong: {wrong:?}");
    check_png(&dir.join("photos.png"));
    // To look at the pictures: MNIST_CLI_KEEP=/some/dir cargo test -p mnist --test cli photos
    if let Some(keep) = std::env::var_os("MNIST_CLI_KEEP") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        for f in
            ["photos.png", "photos/digit-000.png", "photos/digit-008.png", "run/history.png", "run/predictions.png"]
        {
            std::fs::copy(dir.join(f), keep.join(f.replace('/', "-"))).unwrap();
        }
    }
    assert!(right >= 95, "only {right} of 100 photos read right: {wrong:?}");
}
