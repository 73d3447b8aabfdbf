//! Writes IDX files with `write_idx` and reads them back with `read_idx` and `Mnist::load`.

use std::path::{Path, PathBuf};

/// A fresh folder under the system's temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("mnist-consumer-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary folder");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn write_idx_then_read_idx() {
    let tmp = TempDir::new("idx");
    let data: Vec<u8> = (0..2 * 3 * 5).map(|i| i as u8 * 8).collect();
    for gzip in [false, true] {
        let path = tmp.path().join(format!("cube-{gzip}.idx"));
        mnist_data::write_idx(&path, &[2, 3, 5], &data, gzip).expect("write_idx");
        let idx = mnist_data::read_idx(&path).expect("read_idx");
        assert_eq!(idx.dims, vec![2, 3, 5]);
        assert_eq!(idx.data, data);
    }
}

#[test]
fn load_a_synthesized_four_file_data_set() {
    let tmp = TempDir::new("mnist");
    let dir = tmp.path();
    let (train, test) = (8usize, 4usize);
    let pixels = |n: usize| (0..n * 28 * 28).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    let labels = |n: usize| (0..n).map(|i| (i % 10) as u8).collect::<Vec<u8>>();
    mnist_data::write_idx(dir.join("train-images-idx3-ubyte.gz"), &[train, 28, 28], &pixels(train), true)
        .expect("write");
    mnist_data::write_idx(dir.join("train-labels-idx1-ubyte.gz"), &[train], &labels(train), true).expect("write");
    mnist_data::write_idx(dir.join("t10k-images-idx3-ubyte"), &[test, 28, 28], &pixels(test), false).expect("write");
    mnist_data::write_idx(dir.join("t10k-labels-idx1-ubyte"), &[test], &labels(test), false).expect("write");

    let splits = mnist_data::Mnist::load(dir).expect("Mnist::load");
    assert_eq!((splits.train.len(), splits.test.len()), (train, test));
    assert_eq!((splits.train.rows(), splits.train.cols()), (28, 28));
    assert_eq!(splits.train.labels(), labels(train).as_slice());
    assert_eq!(splits.test.image(1), &pixels(test)[784..2 * 784]);
    let summary = mnist_data::Summary::of(&splits.train);
    assert_eq!(summary.class_counts, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
}
