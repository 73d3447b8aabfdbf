//! In-memory data sets of small grey images with integer labels, and the loaders of MNIST and
//! Fashion-MNIST.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::idx::read_idx;

/// Images stored as resident `u8` pixels (`[N, rows, cols]`, row-major) with one label each.
///
/// Kept as bytes (47 MB for MNIST's training set, not 188 MB of `f32`); batches are converted to
/// `f32` on the fly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
    classes: usize,
}

impl Dataset {
    /// Builds a data set from raw pixels `[n, rows, cols]` and `n` labels in `0..classes`.
    ///
    /// # Errors
    /// [`DataError::Config`] when the lengths disagree or a label is out of range.
    pub fn new(images: Vec<u8>, labels: Vec<u8>, rows: usize, cols: usize, classes: usize) -> Result<Self> {
        let px = rows * cols;
        if px == 0 || images.len() != labels.len() * px {
            return Err(DataError::Config(format!(
                "{} labels need {} pixels of {rows}×{cols} images, found {}",
                labels.len(),
                labels.len() * px,
                images.len()
            )));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(DataError::Config(format!("label {l} at index {i} is not below {classes} classes")));
        }
        Ok(Dataset { images, labels, rows, cols, classes })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Image height.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Image width.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Pixels per image (`rows * cols`, 784 for MNIST).
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }
    /// Number of classes (10 for MNIST).
    pub fn classes(&self) -> usize {
        self.classes
    }
    /// All pixels, `[N, rows, cols]` row-major.
    pub fn images(&self) -> &[u8] {
        &self.images
    }
    /// All labels, `[N]`.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
    /// The pixels of image `i`, `[rows, cols]` row-major. Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let px = self.pixels();
        &self.images[i * px..(i + 1) * px]
    }
    /// The label of example `i`. Panics if `i >= len()`.
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }
    /// A new data set of the examples in `range` (used for validation splits).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        let px = self.pixels();
        Dataset {
            images: self.images[range.start * px..range.end * px].to_vec(),
            labels: self.labels[range].to_vec(),
            rows: self.rows,
            cols: self.cols,
            classes: self.classes,
        }
    }
    /// A new data set of the examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * self.pixels());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            rows: self.rows,
            cols: self.cols,
            classes: self.classes,
        }
    }

    /// Loads one images file and one labels file (IDX, raw or gzip) as a data set.
    ///
    /// # Errors
    /// Any error of [`read_idx`], and [`DataError::Invalid`] when the images are not
    /// `[N, rows, cols]`, the labels not `[N]`, or the counts disagree.
    pub fn from_idx_files(images: &Path, labels: &Path, classes: usize) -> Result<Dataset> {
        let (img, lab) = std::thread::scope(|s| {
            let img = s.spawn(|| read_idx(images));
            let lab = read_idx(labels);
            (img.join().unwrap_or_else(|_| Err(DataError::invalid(images, "reader thread panicked"))), lab)
        });
        let (img, lab) = (img?, lab?);
        if img.dims.len() != 3 {
            return Err(DataError::invalid(
                images,
                format!("expected images of 3 dimensions [N, rows, cols], found {:?}", img.dims),
            ));
        }
        if lab.dims.len() != 1 {
            return Err(DataError::invalid(
                labels,
                format!("expected labels of 1 dimension [N], found {:?}", lab.dims),
            ));
        }
        if img.dims[0] != lab.dims[0] {
            return Err(DataError::invalid(
                labels,
                format!("{} labels, but {} holds {} images", lab.dims[0], images.display(), img.dims[0]),
            ));
        }
        if let Some((i, &l)) = lab.data.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(DataError::invalid(labels, format!("label {l} at index {i} is not below {classes} classes")));
        }
        Ok(Dataset { images: img.data, labels: lab.data, rows: img.dims[1], cols: img.dims[2], classes })
    }
}

/// A data set split as published: training and test examples.
#[derive(Clone, Debug)]
pub struct Splits {
    /// The training examples (60 000 for MNIST).
    pub train: Dataset,
    /// The test examples (10 000 for MNIST).
    pub test: Dataset,
}

/// The members of the MNIST family this crate knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// Handwritten digits 0-9 (LeCun, Cortes, Burges).
    Mnist,
    /// Zalando's Fashion-MNIST: 10 kinds of clothing, same format.
    Fashion,
}

/// The four files of a data set, in the order train images, train labels, test images, test labels.
pub const FILE_STEMS: [(&str, &str); 4] = [
    ("train-images", "idx3-ubyte"),
    ("train-labels", "idx1-ubyte"),
    ("t10k-images", "idx3-ubyte"),
    ("t10k-labels", "idx1-ubyte"),
];

const FILE_WHAT: [&str; 4] = ["training images", "training labels", "test images", "test labels"];

impl DatasetKind {
    /// The short name used on the command line and as the folder under `data/`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::Fashion => "fashion",
        }
    }
    /// Parses `mnist` or `fashion` (also `fashion-mnist`, `fashion_mnist`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "mnist" | "digits" => Some(DatasetKind::Mnist),
            "fashion" | "fashion-mnist" | "fashion_mnist" => Some(DatasetKind::Fashion),
            _ => None,
        }
    }
    /// Human names of the ten classes.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            DatasetKind::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetKind::Fashion => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        }
    }
    /// Loads the data set from `dir` (see [`load_dir`]).
    ///
    /// # Errors
    /// As [`load_dir`].
    pub fn load(self, dir: impl AsRef<Path>) -> Result<Splits> {
        load_dir(dir)
    }
}

/// The MNIST handwritten digits.
pub struct Mnist;
impl Mnist {
    /// Loads MNIST's four files from `dir` (see [`load_dir`]).
    ///
    /// # Errors
    /// As [`load_dir`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Splits> {
        load_dir(dir)
    }
}

/// Zalando's Fashion-MNIST.
pub struct FashionMnist;
impl FashionMnist {
    /// Loads Fashion-MNIST's four files from `dir` (see [`load_dir`]).
    ///
    /// # Errors
    /// As [`load_dir`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Splits> {
        load_dir(dir)
    }
}

/// Finds one of the four files in `dir`, accepting `train-images-idx3-ubyte` and
/// `train-images.idx3-ubyte`, each with or without `.gz`.
///
/// # Errors
/// [`DataError::Missing`] listing the names tried.
pub fn find_file(dir: &Path, which: usize) -> Result<PathBuf> {
    let (stem, kind) = FILE_STEMS[which];
    let names: Vec<String> =
        [format!("{stem}-{kind}"), format!("{stem}.{kind}")].into_iter().flat_map(|n| [format!("{n}.gz"), n]).collect();
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file()).ok_or_else(|| DataError::Missing {
        dir: dir.to_path_buf(),
        what: FILE_WHAT[which],
        looked_for: names.join(", "),
    })
}

/// Loads a data set of the MNIST family from the four IDX files in `dir` (train and `t10k`
/// images and labels, raw or gzip, either spelling of the names). The four files are read in
/// parallel.
///
/// # Errors
/// [`DataError::Missing`] when a file is absent, and any error of [`Dataset::from_idx_files`].
pub fn load_dir(dir: impl AsRef<Path>) -> Result<Splits> {
    let dir = dir.as_ref();
    let files: Vec<PathBuf> = (0..4).map(|i| find_file(dir, i)).collect::<Result<_>>()?;
    let (train, test) = std::thread::scope(|s| {
        let train = s.spawn(|| Dataset::from_idx_files(&files[0], &files[1], 10));
        let test = Dataset::from_idx_files(&files[2], &files[3], 10);
        (train.join().unwrap_or_else(|_| Err(DataError::invalid(&files[0], "reader thread panicked"))), test)
    });
    let (train, test) = (train?, test?);
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(DataError::invalid(
            &files[2],
            format!("test images are {}×{}, training images {}×{}", test.rows, test.cols, train.rows, train.cols),
        ));
    }
    Ok(Splits { train, test })
}
