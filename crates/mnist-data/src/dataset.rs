//! In-memory data sets of small grey images with integer labels, and the loaders of MNIST and
//! Fashion-MNIST.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::idx::{read_idx, read_idx_dims};

/// Images stored as resident `u8` pixels (`[N, rows, cols]`, row-major) with one label each.
///
/// Kept as bytes (47 MB for MNIST's training set, not 188 MB of `f32`); batches are converted to
/// `f32` on the fly.
#[derive(Clone, PartialEq, Eq)]
pub struct Dataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
    classes: usize,
}

/// Its size and shape, not its 47 million pixels: `Dataset { len: 60000, rows: 28, cols: 28,
/// classes: 10 }`.
impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.labels.len())
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("classes", &self.classes)
            .finish()
    }
}

impl Dataset {
    /// Builds a data set from raw pixels `[n, rows, cols]` and `n` labels in `0..classes`.
    ///
    /// # Errors
    /// [`DataError::Config`] when `rows` or `cols` is 0, `rows * cols` or `n * rows * cols`
    /// overflows `usize`, the lengths disagree, or a label is out of range.
    pub fn new(images: Vec<u8>, labels: Vec<u8>, rows: usize, cols: usize, classes: usize) -> Result<Self> {
        let px = rows
            .checked_mul(cols)
            .filter(|&px| px > 0)
            .ok_or_else(|| DataError::Config(format!("images of {rows}×{cols} pixels are not supported")))?;
        let needed = labels.len().checked_mul(px);
        if needed != Some(images.len()) {
            let needed = needed.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string());
            return Err(DataError::Config(format!(
                "{} labels need {needed} pixels of {rows}×{cols} images, found {}",
                labels.len(),
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
    /// The pixels of image `i`, `[rows, cols]` row-major.
    ///
    /// # Panics
    /// If `i >= len()`, with a message naming `i` and the length.
    pub fn image(&self, i: usize) -> &[u8] {
        assert!(i < self.len(), "Dataset::image: index {i} is out of range for a data set of {} examples", self.len());
        let px = self.pixels();
        &self.images[i * px..(i + 1) * px]
    }
    /// The label of example `i`.
    ///
    /// # Panics
    /// If `i >= len()`, with a message naming `i` and the length.
    pub fn label(&self, i: usize) -> u8 {
        assert!(i < self.len(), "Dataset::label: index {i} is out of range for a data set of {} examples", self.len());
        self.labels[i]
    }
    /// A new data set of the examples in `range` (`[range.len(), rows, cols]` images, same
    /// classes), copied; used for validation splits.
    ///
    /// # Panics
    /// If `range.start > range.end` or `range.end > len()`, with a message naming the range
    /// and the length (as slicing a `Vec` would, but clearer). An empty range gives an empty
    /// data set.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "Dataset::slice: range {range:?} is out of bounds for a data set of {} examples",
            self.len()
        );
        let px = self.pixels();
        Dataset {
            images: self.images[range.start * px..range.end * px].to_vec(),
            labels: self.labels[range].to_vec(),
            rows: self.rows,
            cols: self.cols,
            classes: self.classes,
        }
    }
    /// A new data set of the examples at `indices`, in that order (`[indices.len(), rows, cols]`
    /// images, same classes; an index may repeat).
    ///
    /// # Panics
    /// If an index is `>= len()`, with a message naming its position, its value and the length.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let px = self.pixels();
        let mut images = Vec::with_capacity(indices.len().saturating_mul(px));
        for (k, &i) in indices.iter().enumerate() {
            assert!(
                i < self.len(),
                "Dataset::select: indices[{k}] = {i} is out of range for a data set of {} examples",
                self.len()
            );
            images.extend_from_slice(&self.images[i * px..(i + 1) * px]);
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
    /// Any error of [`read_idx`], and [`DataError::Invalid`] naming the offending file when the
    /// images are not `[N, rows, cols]` with `rows` and `cols` at least 1, the labels not `[N]`,
    /// the counts disagree, or a label is not below `classes`.
    pub fn from_idx_files(images: impl AsRef<Path>, labels: impl AsRef<Path>, classes: usize) -> Result<Dataset> {
        let (images, labels) = (images.as_ref(), labels.as_ref());
        // The headers first: files that disagree are refused before either's data are read (a
        // 3.9 MB gzip claiming 4 GB of images beside 200 labels was decompressed whole first).
        check_idx_dims(images, &read_idx_dims(images)?, labels, &read_idx_dims(labels)?)?;
        let (img, lab) = std::thread::scope(|s| {
            let img = s.spawn(|| read_idx(images));
            let lab = read_idx(labels);
            (img.join().unwrap_or_else(|_| Err(DataError::invalid(images, "reader thread panicked"))), lab)
        });
        let (img, lab) = (img?, lab?);
        let (rows, cols) = check_idx_dims(images, &img.dims, labels, &lab.dims)?;
        if let Some((i, &l)) = lab.data.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(DataError::invalid(labels, format!("label {l} at index {i} is not below {classes} classes")));
        }
        Ok(Dataset { images: img.data, labels: lab.data, rows, cols, classes })
    }
}

/// Checks that `img_dims` (of the file `images`) are images `[N, rows, cols]` of at least one
/// pixel and `lab_dims` (of `labels`) labels `[N]` of the same `N`; returns `(rows, cols)`.
fn check_idx_dims(images: &Path, img_dims: &[usize], labels: &Path, lab_dims: &[usize]) -> Result<(usize, usize)> {
    let &[n, rows, cols] = img_dims else {
        return Err(DataError::invalid(
            images,
            format!("expected images of 3 dimensions [N, rows, cols], found {img_dims:?}"),
        ));
    };
    if rows == 0 || cols == 0 || rows.checked_mul(cols).is_none() {
        return Err(DataError::invalid(
            images,
            format!("images of {rows}×{cols} pixels (dimensions {img_dims:?}) are not supported"),
        ));
    }
    let &[labelled] = lab_dims else {
        return Err(DataError::invalid(labels, format!("expected labels of 1 dimension [N], found {lab_dims:?}")));
    };
    if n != labelled {
        return Err(DataError::invalid(
            labels,
            format!("{labelled} labels, but {} holds {n} images", images.display()),
        ));
    }
    Ok((rows, cols))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::write_idx;
    use crate::testing::panic_message;

    /// Three 2×2 images, pixel values `10 * example + pixel`, labels 0, 1, 2.
    fn three() -> Dataset {
        let images = (0..3u8).flat_map(|n| (0..4u8).map(move |p| 10 * n + p)).collect();
        Dataset::new(images, vec![0, 1, 2], 2, 2, 3).unwrap()
    }

    #[test]
    fn debug_shows_the_shape_not_the_pixels() {
        assert_eq!(format!("{:?}", three()), "Dataset { len: 3, rows: 2, cols: 2, classes: 3 }");
    }

    #[test]
    fn files_whose_headers_disagree_are_refused_before_their_data_are_read() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        // A gzip whose header claims 4 000 000 images of 1000×1 and holds none of them: beside
        // 200 labels, the counts are compared from the headers, before any body is read.
        let images = dir.path().join("images.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[0, 0, 8, 3]).unwrap();
        for d in [4_000_000u32, 1000, 1] {
            gz.write_all(&d.to_be_bytes()).unwrap();
        }
        std::fs::write(&images, gz.finish().unwrap()).unwrap();
        let labels = dir.path().join("labels");
        write_idx(&labels, &[200], &[0; 200], false).unwrap();
        assert_eq!(read_idx_dims(&images).unwrap(), [4_000_000, 1000, 1]);
        assert_eq!(read_idx_dims(&labels).unwrap(), [200]);
        let e = Dataset::from_idx_files(&images, &labels, 10).unwrap_err().to_string();
        assert!(e.contains("200 labels, but") && e.contains("holds 4000000 images"), "{e}");
    }

    #[test]
    fn slice_and_select_copy_the_examples_asked_for() {
        let ds = three();
        let s = ds.slice(1..3);
        assert_eq!((s.len(), s.labels()), (2, &[1u8, 2][..]));
        assert_eq!(s.image(0), &[10, 11, 12, 13]);
        assert!(ds.slice(3..3).is_empty());
        let s = ds.select(&[2, 0, 2]);
        assert_eq!(s.labels(), &[2, 0, 2]);
        assert_eq!(s.images(), &[20, 21, 22, 23, 0, 1, 2, 3, 20, 21, 22, 23]);
        assert!(ds.select(&[]).is_empty());
    }

    #[test]
    fn out_of_range_slices_and_indices_panic_with_a_clear_message() {
        let m = panic_message(|| {
            three().slice(2..5);
        });
        assert!(m.contains("Dataset::slice") && m.contains("2..5") && m.contains("3 examples"), "{m}");
        #[allow(clippy::reversed_empty_ranges)]
        let m = panic_message(|| {
            three().slice(2..1);
        });
        assert!(m.contains("Dataset::slice") && m.contains("2..1") && m.contains("3 examples"), "{m}");
        let m = panic_message(|| {
            three().select(&[0, 3]);
        });
        assert!(m.contains("Dataset::select") && m.contains("indices[1] = 3") && m.contains("3 examples"), "{m}");
        let m = panic_message(|| {
            three().image(7);
        });
        assert!(m.contains("Dataset::image") && m.contains("index 7") && m.contains("3 examples"), "{m}");
        let m = panic_message(|| {
            three().label(3);
        });
        assert!(m.contains("Dataset::label") && m.contains("index 3") && m.contains("3 examples"), "{m}");
    }

    #[test]
    fn new_rejects_sizes_that_overflow_or_are_zero() {
        let err = Dataset::new(vec![], vec![], usize::MAX, 2, 10).unwrap_err();
        assert!(matches!(&err, DataError::Config(m) if m.contains("not supported")), "{err}");
        let err = Dataset::new(vec![0; 4], vec![0, 0], usize::MAX / 2, 2, 10).unwrap_err();
        assert!(matches!(&err, DataError::Config(m) if m.contains("more than usize::MAX")), "{err}");
        assert!(Dataset::new(vec![], vec![], 0, 28, 10).is_err());
        assert!(Dataset::new(vec![], vec![], 28, 0, 10).is_err());
        assert!(Dataset::new(vec![0; 3], vec![0], 2, 2, 10).is_err());
        assert!(Dataset::new(vec![0; 4], vec![10], 2, 2, 10).is_err());
        assert!(Dataset::new(vec![], vec![], 28, 28, 10).is_ok_and(|d| d.is_empty()));
    }

    #[test]
    fn idx_images_with_a_zero_size_dimension_are_rejected_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("labels.idx");
        write_idx(&labels, &[5], &[0, 1, 2, 3, 4], false).unwrap();
        for dims in [[5, 0, 28], [5, 28, 0], [5, 0, 0]] {
            let images = dir.path().join("images.idx");
            write_idx(&images, &dims, &[], false).unwrap();
            let err = Dataset::from_idx_files(&images, &labels, 10).unwrap_err();
            assert!(
                matches!(&err, DataError::Invalid { path, .. } if path == &images),
                "{dims:?}: {err} should name the images file"
            );
            assert!(err.to_string().contains("not supported"), "{err}");
        }
        // A well-formed pair still loads, and an empty one ([0, rows, cols]) is an empty data set.
        let images = dir.path().join("images.idx");
        write_idx(&images, &[5, 2, 3], &[7; 30], false).unwrap();
        let ds = Dataset::from_idx_files(&images, &labels, 10).unwrap();
        assert_eq!((ds.len(), ds.rows(), ds.cols(), ds.pixels()), (5, 2, 3, 6));
        write_idx(&images, &[0, 28, 28], &[], false).unwrap();
        write_idx(&labels, &[0], &[], false).unwrap();
        assert!(Dataset::from_idx_files(&images, &labels, 10).unwrap().is_empty());
    }
}
