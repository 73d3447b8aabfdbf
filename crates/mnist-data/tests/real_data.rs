//! Integration tests on the real MNIST and Fashion-MNIST files.
//!
//! The data is looked for in `<workspace>/data/<name>`, then in `<workspace>/../shared/data/<name>`
//! (where CI keeps it). These tests fail, rather than skip, when neither exists: CI always has
//! the data, and a silently skipped test would hide a broken setup.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use mnist_data::dataset::find_file;
use mnist_data::{DataError, Dataset, FashionMnist, Mnist, Splits, Summary};

/// The folder holding data set `name` (`mnist` or `fashion`); panics with the places looked at
/// when there is none.
fn data_dir(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    let root = root.canonicalize().unwrap_or(root);
    let candidates = [root.join("data").join(name), root.join("..").join("shared").join("data").join(name)];
    for dir in &candidates {
        if dir.is_dir() && find_file(dir, 0).is_ok() {
            return dir.clone();
        }
    }
    panic!(
        "the {name} data set is needed by these tests but was found in neither {} nor {}; run `mnist fetch {name}` \
         or copy (or link) its four .gz files into {}",
        candidates[0].display(),
        candidates[1].display(),
        candidates[0].display()
    );
}

fn load_mnist() -> Splits {
    let dir = data_dir("mnist");
    Mnist::load(&dir).unwrap_or_else(|e| panic!("loading MNIST from {}: {e}", dir.display()))
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

fn class_counts(ds: &Dataset) -> Vec<usize> {
    let mut counts = vec![0; ds.classes()];
    for &l in ds.labels() {
        counts[l as usize] += 1;
    }
    counts
}

#[test]
fn mnist_has_the_published_shape_labels_and_pixels() {
    let m = load_mnist();
    for (ds, n) in [(&m.train, 60_000), (&m.test, 10_000)] {
        assert_eq!((ds.len(), ds.rows(), ds.cols(), ds.classes()), (n, 28, 28, 10));
        assert_eq!(ds.images().len(), n * 784);
        let s = Summary::of(ds);
        assert_eq!((s.min, s.max), (0, 255), "pixel range");
    }
    assert_eq!(class_counts(&m.train), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    assert_eq!(Summary::of(&m.train).class_counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    assert_eq!(class_counts(&m.test).iter().sum::<usize>(), 10_000);
    assert_eq!(m.train.label(0), 5, "the first training digit is a 5");
    assert_eq!(m.test.label(0), 7, "the first test digit is a 7");
}

#[test]
fn fashion_mnist_is_balanced() {
    let dir = data_dir("fashion");
    let f = FashionMnist::load(&dir).unwrap_or_else(|e| panic!("loading Fashion-MNIST from {}: {e}", dir.display()));
    assert_eq!((f.train.len(), f.train.rows(), f.train.cols()), (60_000, 28, 28));
    assert_eq!((f.test.len(), f.test.rows(), f.test.cols()), (10_000, 28, 28));
    assert_eq!(class_counts(&f.train), [6000; 10]);
    assert_eq!(class_counts(&f.test), [1000; 10]);
    let s = Summary::of(&f.train);
    assert_eq!((s.min, s.max), (0, 255));
}

#[test]
fn both_spellings_and_raw_copies_load_the_same() {
    let src = data_dir("mnist");
    let original = load_mnist();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Dotted and gzip.
    std::fs::copy(src.join("train-images-idx3-ubyte.gz"), dir.join("train-images.idx3-ubyte.gz")).unwrap();
    // Dotted and raw.
    std::fs::write(dir.join("train-labels.idx1-ubyte"), gunzip(&src.join("train-labels-idx1-ubyte.gz"))).unwrap();
    // Dashed and raw.
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), gunzip(&src.join("t10k-images-idx3-ubyte.gz"))).unwrap();
    std::fs::write(dir.join("t10k-labels.idx1-ubyte"), gunzip(&src.join("t10k-labels-idx1-ubyte.gz"))).unwrap();

    let mixed = Mnist::load(dir).unwrap();
    assert_eq!(mixed.train, original.train);
    assert_eq!(mixed.test, original.test);

    // All four raw, official (dashed) names.
    let raw = tempfile::tempdir().unwrap();
    for name in
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    {
        std::fs::write(raw.path().join(name), gunzip(&src.join(format!("{name}.gz")))).unwrap();
    }
    let all_raw = Mnist::load(raw.path()).unwrap();
    assert_eq!(all_raw.train, original.train);
    assert_eq!(all_raw.test, original.test);
}

#[test]
fn image_and_label_counts_must_agree() {
    let src = data_dir("mnist");
    let tmp = tempfile::tempdir().unwrap();
    let images = src.join("t10k-images-idx3-ubyte.gz");
    let labels = tmp.path().join("t10k-labels-idx1-ubyte.gz");
    let real = mnist_data::read_idx(src.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    mnist_data::write_idx(&labels, &[9_999], &real.data[..9_999], true).unwrap();

    let err = Dataset::from_idx_files(&images, &labels, 10).unwrap_err();
    match &err {
        DataError::Invalid { path, .. } => assert_eq!(path, &labels),
        other => panic!("expected DataError::Invalid, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!("{}: 9999 labels, but {} holds 10000 images", labels.display(), images.display())
    );

    // The same through the folder loader.
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"] {
        std::fs::copy(src.join(name), tmp.path().join(name)).unwrap();
    }
    let err = Mnist::load(tmp.path()).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: 9999 labels, but ", labels.display())), "{err}");
}

#[test]
fn a_missing_file_names_what_was_looked_for() {
    let src = data_dir("mnist");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("train-images-idx3-ubyte.gz"), tmp.path().join("train-images-idx3-ubyte.gz")).unwrap();
    let err = Mnist::load(tmp.path()).unwrap_err();
    match &err {
        DataError::Missing { dir, what, looked_for } => {
            assert_eq!(dir, tmp.path());
            assert_eq!(*what, "training labels");
            assert_eq!(
                looked_for,
                concat!(
                    "train-labels-idx1-ubyte.gz, train-labels-idx1-ubyte, ",
                    "train-labels.idx1-ubyte.gz, train-labels.idx1-ubyte"
                )
            );
        }
        other => panic!("expected DataError::Missing, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.starts_with(&format!("{}: no training labels file (looked for ", tmp.path().display())), "{text}");

    let empty = tempfile::tempdir().unwrap();
    let text = Mnist::load(empty.path()).unwrap_err().to_string();
    assert!(text.contains("no training images file (looked for train-images-idx3-ubyte.gz, "), "{text}");
}

#[cfg(feature = "fetch")]
#[test]
fn builtin_checksums_match_the_real_files() {
    use mnist_data::fetch::verify;
    use mnist_data::DatasetKind;
    for kind in [DatasetKind::Mnist, DatasetKind::Fashion] {
        let dir = data_dir(kind.name());
        let checks = verify(kind, &dir).unwrap();
        assert_eq!(checks.len(), 4);
        for check in &checks {
            assert!(check.is_ok(), "{check}");
        }
    }
}
