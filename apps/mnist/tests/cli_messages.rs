//! What the `mnist` binary says when a run goes wrong or is not what it seems: diverged tuning
//! trials, folders holding earlier results, models used on another data set, empty or short
//! data sets, missing files, URLs the downloader cannot read, pictures too large.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{data_root, fails_both, mnist, mnist_bare, ok_both};
use nn_core::{Dense, Flatten, Model, ModelSpec};

/// An untrained 28×28 → `outputs` model file, its metadata recording `dataset` when given.
fn model_file(path: &Path, outputs: usize, dataset: Option<&str>) {
    let spec = ModelSpec::new(&[28, 28]).add(Flatten::new()).add(Dense::new(outputs));
    let model = Model::new(&spec, 7).unwrap();
    let metadata: BTreeMap<String, String> =
        dataset.map(|d| ("dataset".to_string(), d.to_string())).into_iter().collect();
    model.save(path, metadata).unwrap();
}

/// A 60×60 PNG of a light stroke on black.
fn photo(path: &Path) {
    let img =
        image::GrayImage::from_fn(60, 60, |x, y| image::Luma([if (20..40).contains(&x) && y > 10 { 255 } else { 0 }]));
    img.save(path).unwrap();
}

/// `trials.csv` as rows of named fields.
fn csv_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines.map(|l| header.iter().map(|h| h.to_string()).zip(l.split(',').map(str::to_string)).collect()).collect()
}

#[test]
fn tune_marks_diverged_trials_and_never_keeps_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let search = |lr: &str, out: &str| {
        let args = ["tune", "--max-trials", "3", "--epochs", "1", "--limit", "3000", "--lr", lr, "--optimizer", "sgd"];
        mnist(dir, &[&args[..], &["--out-dir", out, "--device", "cpu"]].concat())
    };
    // A rate of 100 makes some trials' loss NaN, not others'.
    let (stdout, _) = ok_both(&search("100", "some"));
    let csv = std::fs::read_to_string(dir.join("some/trials.csv")).unwrap();
    let rows = csv_rows(&csv);
    assert_eq!(rows.len(), 3, "{csv}");
    let diverged: Vec<&String> = rows.iter().filter(|r| r["status"] == "diverged").map(|r| &r["trial"]).collect();
    assert!(!diverged.is_empty() && diverged.len() < 3, "{csv}");
    assert!(rows.iter().filter(|r| r["status"] == "diverged").all(|r| r["val_accuracy"].is_empty()), "{csv}");
    assert!(stdout.contains("diverged"), "{stdout}");
    let best = stdout.lines().find_map(|l| l.strip_prefix("Best: trial ")).unwrap();
    let best = best.split_whitespace().next().unwrap().to_string();
    assert!(!diverged.contains(&&best), "trial {best} diverged but was kept:\n{stdout}\n{csv}");
    ok_both(&mnist(dir, &["evaluate", "--model", "some/best.safetensors", "--device", "cpu"]));

    // A rate of a million makes every trial diverge: say so, write the trials, and no model.
    let (stdout, stderr) = fails_both(&search("1e6", "all"), &["every trial diverged", "--lr"]);
    assert_eq!(stdout.matches("diverged").count(), 3, "{stdout}");
    assert!(!stderr.contains("non-finite value"), "{stderr}");
    let csv = std::fs::read_to_string(dir.join("all/trials.csv")).unwrap();
    assert!(csv_rows(&csv).iter().all(|r| r["status"] == "diverged"), "{csv}");
    assert!(!dir.join("all/best.safetensors").exists());
}

#[test]
fn tune_refuses_a_folder_holding_an_earlier_search() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for file in ["trials.csv", "best.safetensors"] {
        let out_dir = dir.join(format!("earlier-{file}"));
        std::fs::create_dir_all(&out_dir).unwrap();
        std::fs::write(out_dir.join(file), "earlier results").unwrap();
        let out_arg = out_dir.display().to_string();
        let out = mnist(dir, &["tune", "--max-trials", "1", "--epochs", "1", "--limit", "500", "--out-dir", &out_arg]);
        let (stdout, _) = fails_both(&out, &[&out_arg, file, "another folder", "remove"]);
        assert!(!stdout.contains("trial"), "no trial should run:\n{stdout}");
        assert_eq!(std::fs::read_to_string(out_dir.join(file)).unwrap(), "earlier results");
    }
}

#[test]
fn a_model_of_another_data_set_gets_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    model_file(&dir.join("fash.safetensors"), 10, Some("fashion"));
    model_file(&dir.join("digits.safetensors"), 10, Some("mnist"));
    photo(&dir.join("photo.png"));
    let note = "note: the model was trained on fashion";

    let (_, stderr) = ok_both(&mnist(dir, &["--dataset", "mnist", "evaluate", "--model", "fash.safetensors"]));
    assert!(stderr.contains(note) && stderr.contains("not on mnist"), "{stderr}");
    let (_, stderr) =
        ok_both(&mnist(dir, &["--dataset", "mnist", "predict", "--model", "fash.safetensors", "--index", "0"]));
    assert!(stderr.contains(note) && stderr.contains("not on mnist"), "{stderr}");
    // Photos are digitised as digits.
    let (_, stderr) = ok_both(&mnist(dir, &["predict", "--model", "fash.safetensors", "photo.png"]));
    assert!(stderr.contains(note) && stderr.contains("digits"), "{stderr}");
    // No note when the data set is the model's.
    let (_, stderr) = ok_both(&mnist(dir, &["--dataset", "mnist", "evaluate", "--model", "digits.safetensors"]));
    assert!(!stderr.contains("note:"), "{stderr}");
    let (_, stderr) = ok_both(&mnist(dir, &["predict", "--model", "digits.safetensors", "photo.png", "--index", "0"]));
    assert!(!stderr.contains("note:"), "{stderr}");
}

#[test]
fn predict_and_evaluate_refuse_a_model_of_fewer_outputs_than_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    model_file(&dir.join("five.safetensors"), 5, None);
    // Test image 0 is a 7.
    // A model of 5 outputs is no classifier of MNIST's 10 classes: refused before predicting.
    let (stdout, _) = fails_both(
        &mnist(dir, &["predict", "--model", "five.safetensors", "--index", "0"]),
        &["five.safetensors", "an output of [5]", "10 classes"],
    );
    assert!(!stdout.contains("WRONG"), "{stdout}");
    // As evaluate says.
    fails_both(&mnist(dir, &["evaluate", "--model", "five.safetensors"]), &["an output of [5]", "10 classes"]);
}

#[test]
fn the_settings_line_names_the_momentum() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "train",
        "--optimizer",
        "sgd",
        "--momentum",
        "0.9",
        "--limit",
        "256",
        "--epochs",
        "1",
        "--validation",
        "none",
        "--run-dir",
        "run",
        "-q",
    ];
    let (stdout, _) = ok_both(&mnist(tmp.path(), &args));
    assert!(stdout.contains("sgd (learning rate 0.01, momentum 0.9, schedule constant)"), "{stdout}");
}

#[test]
fn a_trained_model_trains_on_with_its_own_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let first = [
        "train",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--batch-size",
        "64",
        "--validation",
        "none",
        "--epochs",
        "1",
        "--limit",
        "512",
        "--schedule",
        "cosine",
        "--run-dir",
        "first",
        "-q",
    ];
    ok_both(&mnist(dir, &first));
    let (stdout, stderr) =
        ok_both(&mnist(dir, &["train", "--model", "first/model.safetensors", "--run-dir", "again", "-q"]));
    assert!(stderr.contains("trains on with the settings it was trained with"), "{stderr}");
    // Its optimiser, rate and batch; the cosine over the new run (60000 images: no --limit); 1
    // epoch, no validation.
    assert!(stdout.contains("sgd (learning rate 0.05, schedule cosine over 938 steps"), "{stdout}");
    assert!(stdout.contains("1 epoch of batch 64, no validation"), "{stdout}");
    // Flags change them.
    let args = ["train", "--model", "first/model.safetensors", "--lr", "0.01", "--epochs", "2", "--run-dir", "b", "-q"];
    let (stdout, _) = ok_both(&mnist(dir, &args));
    assert!(stdout.contains("sgd (learning rate 0.01,") && stdout.contains("2 epochs of batch 64"), "{stdout}");
}

#[test]
fn a_model_of_flat_inputs_predicts_photos_and_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Keras's MLP on flattened pixels: input [784], no Flatten layer.
    let spec = ModelSpec::new(&[784]).add(Dense::new(10));
    Model::new(&spec, 7).unwrap().save(dir.join("flat.safetensors"), BTreeMap::new()).unwrap();
    photo(&dir.join("photo.png"));
    let (stdout, _) = ok_both(&mnist(dir, &["predict", "--model", "flat.safetensors", "photo.png", "--index", "0"]));
    assert!(stdout.contains("photo.png") && stdout.contains("test[0]"), "{stdout}");
    // Not a square: no photo, said.
    let odd = ModelSpec::new(&[780]).add(Dense::new(10));
    Model::new(&odd, 7).unwrap().save(dir.join("odd.safetensors"), BTreeMap::new()).unwrap();
    fails_both(&mnist(dir, &["predict", "--model", "odd.safetensors", "photo.png"]), &["[780]", "not images"]);
}

#[test]
fn show_and_predict_say_when_a_set_is_empty_or_ends_early() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A data set whose test set holds no image.
    let ds = dir.join("tiny");
    std::fs::create_dir_all(&ds).unwrap();
    let one = mnist_data::Mnist::load(data_root().join("mnist")).unwrap().train.slice(0..1);
    mnist_data::write_idx(ds.join("train-images-idx3-ubyte"), &[1, 28, 28], one.image(0), false).unwrap();
    mnist_data::write_idx(ds.join("train-labels-idx1-ubyte"), &[1], &[one.label(0)], false).unwrap();
    mnist_data::write_idx(ds.join("t10k-images-idx3-ubyte"), &[0, 28, 28], &[], false).unwrap();
    mnist_data::write_idx(ds.join("t10k-labels-idx1-ubyte"), &[0], &[], false).unwrap();
    let (_, stderr) = fails_both(
        &mnist(dir, &["--dataset", "tiny", "show", "--split", "test", "--index", "0"]),
        &["--index 0", "empty"],
    );
    assert!(!stderr.contains("indices 0 to 0"), "{stderr}");
    let (_, stderr) = fails_both(&mnist(dir, &["--dataset", "tiny", "show", "--split", "test"]), &["empty"]);
    assert!(!stderr.contains("--index"), "{stderr}");
    model_file(&dir.join("m.safetensors"), 10, None);
    fails_both(&mnist(dir, &["--dataset", "tiny", "predict", "--model", "m.safetensors", "--index", "0"]), &["empty"]);

    // A grid running past the end says how many it shows.
    let (stdout, stderr) = ok_both(&mnist(dir, &["show", "--index", "59999", "--count", "5", "--out", "end.png"]));
    assert!(stderr.contains("note:") && stderr.contains("showing 1 of the 5"), "{stderr}");
    assert!(stdout.contains("1 train image (59999) written"), "{stdout}");

    // An image after the indices is read as one: say where images go, and that works.
    photo(&dir.join("img.png"));
    fails_both(
        &mnist(dir, &["predict", "--model", "m.safetensors", "--index", "0", "1", "img.png"]),
        &["img.png", "before --index", "--"],
    );
    let (stdout, _) =
        ok_both(&mnist(dir, &["predict", "--model", "m.safetensors", "--index", "0", "1", "--", "img.png"]));
    assert!(stdout.contains("img.png: predicted") && stdout.contains("test[1]: predicted"), "{stdout}");
}

#[test]
fn a_missing_data_set_names_the_right_fetch_once_and_folders_are_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, stderr) = fails_both(&mnist_bare(dir, &["--dataset", "fashion", "--data-dir", "ds", "info"]), &["fashion"]);
    assert_eq!(stderr.matches("mnist fetch").count(), 1, "{stderr}");
    assert!(stderr.contains("mnist fetch --dataset fashion --data-dir ds"), "{stderr}");
    // A folder where a data file should be.
    std::fs::create_dir_all(dir.join("odd/mnist/train-images-idx3-ubyte.gz")).unwrap();
    let (_, stderr) =
        fails_both(&mnist_bare(dir, &["--data-dir", "odd", "info"]), &["train-images-idx3-ubyte.gz", "is a folder"]);
    assert!(!stderr.contains("no training images file"), "{stderr}");
    // `--data-dir` at the data set's own folder, or at a file.
    std::fs::create_dir_all(dir.join("flat")).unwrap();
    std::fs::write(dir.join("flat/train-images-idx3-ubyte.gz"), b"").unwrap();
    fails_both(&mnist_bare(dir, &["--data-dir", "flat", "info"]), &["--data-dir flat holds a data set's files itself"]);
    std::fs::write(dir.join("a-file"), b"").unwrap();
    fails_both(&mnist_bare(dir, &["--data-dir", "a-file", "info"]), &["--data-dir a-file: a file, not a folder"]);
}

#[test]
fn a_path_to_a_known_data_set_is_that_data_set() {
    let tmp = tempfile::tempdir().unwrap();
    let fashion = data_root().join("fashion");
    if !fashion.is_dir() {
        eprintln!("skipped: no Fashion-MNIST in {}", data_root().display());
        return;
    }
    let (stdout, _) = ok_both(&mnist(tmp.path(), &["--dataset", fashion.to_str().unwrap(), "info"]));
    assert!(stdout.contains("Fashion-MNIST") && stdout.contains("Ankle boot"), "{stdout}");
}

#[test]
fn fetch_accepts_only_http_urls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for url in ["file:///tmp/mnist/", "notaurl", "ftp://example.org/mnist/"] {
        let (_, stderr) = fails_both(
            &mnist_bare(dir, &["--data-dir", "d", "fetch", "--base-url", url]),
            &[url, "only http:// and https://", "copy"],
        );
        assert!(!stderr.contains("invalid format"), "{stderr}");
    }
    fails_both(&mnist_bare(dir, &["--data-dir", "d", "fetch", "--base-url", "https://"]), &["no host"]);
    assert!(!dir.join("d").exists(), "nothing is created before the URL is checked");
}

#[test]
fn predict_caps_its_picture_and_reports_the_accuracy_of_many_indices() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    model_file(&dir.join("m.safetensors"), 10, None);
    let many: Vec<String> = (0..2501).map(|i| i.to_string()).collect();
    let args: Vec<&str> = ["predict", "--model", "m.safetensors", "--out", "big.png", "--index"]
        .into_iter()
        .chain(many.iter().map(String::as_str))
        .collect();
    fails_both(&mnist(dir, &args), &["--out big.png", "2501", "at most 2500"]);
    assert!(!dir.join("big.png").exists());
    let some: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    let args: Vec<&str> =
        ["predict", "--model", "m.safetensors", "--index"].into_iter().chain(some.iter().map(String::as_str)).collect();
    let (stdout, _) = ok_both(&mnist(dir, &args));
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("accuracy on the 20 test images:") && last.contains("of 20 right"), "{stdout}");
}

#[test]
fn precision_bf16_trains_on_amx_or_says_what_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // `high` is PyTorch's name for the split products, an alias of `bf16x3`.
    for (precision, name) in [("bf16", "bf16"), ("bf16x3", "bf16x3"), ("high", "bf16x3")] {
        let args = ["--precision", precision, "train", "--model", "mlp-128", "--epochs", "1", "--limit", "3000", "-q"];
        let run = format!("run-{precision}");
        let out = mnist(dir, &[&args[..], &["--run-dir", &run]].concat());
        let says = format!("{name} products");
        if nn_core::cpu::bf16_products_available() {
            let (stdout, _) = ok_both(&out);
            assert!(stdout.contains("cpu (") && stdout.contains(&says), "{stdout}");
            let report = std::fs::read_to_string(dir.join(&run).join("report.txt")).unwrap();
            assert!(report.contains(&says), "{report}");
        } else {
            let (_, stderr) = fails_both(&out, &[&format!("--precision {name}"), "AMX", "--precision f32"]);
            assert!(!dir.join(&run).exists(), "{stderr}");
        }
    }
    // The default is f32, and says nothing of bf16.
    let out =
        mnist(dir, &["train", "--model", "mlp-128", "--epochs", "1", "--limit", "3000", "-q", "--run-dir", "f32"]);
    let (stdout, _) = ok_both(&out);
    assert!(!stdout.contains("bf16"), "{stdout}");
}

#[test]
fn predict_index_refuses_a_data_set_of_another_image_size() {
    // A model of 14×56 inputs (as many values as 28×28) would read MNIST's images as if they
    // were its own shape, and predict something.
    let tmp = tempfile::tempdir().unwrap();
    let spec = ModelSpec::new(&[14, 56]).add(Flatten::new()).add(Dense::new(10));
    Model::new(&spec, 7).unwrap().save(tmp.path().join("wide.safetensors"), BTreeMap::new()).unwrap();
    fails_both(
        &mnist(tmp.path(), &["predict", "--model", "wide.safetensors", "--index", "0", "--device", "cpu"]),
        &["holds 28×28 images", "wide.safetensors takes 14×56"],
    );
}
