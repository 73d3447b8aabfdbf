//! Finding and loading the data set named on the command line.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mnist_data::{DataError, DatasetKind, Splits};

/// A data set chosen on the command line: a known one under `--data-dir`, or a folder.
#[derive(Clone, Debug)]
pub struct DataChoice {
    /// MNIST or Fashion-MNIST; `None` for a folder given by path.
    pub kind: Option<DatasetKind>,
    /// Where its four files are.
    pub dir: PathBuf,
    /// How to call it in messages, reports and model files (`mnist`, `fashion` or the path).
    pub label: String,
}

impl DataChoice {
    /// Resolves `--dataset` (`mnist`, `fashion` or a folder) against `--data-dir`.
    ///
    /// # Errors
    /// When the name is neither a known data set nor an existing folder.
    pub fn resolve(data_dir: &Path, dataset: &str) -> Result<DataChoice> {
        if let Some(kind) = DatasetKind::from_name(dataset) {
            return Ok(DataChoice {
                kind: Some(kind),
                dir: data_dir.join(kind.name()),
                label: kind.name().to_string(),
            });
        }
        let path = PathBuf::from(dataset);
        // A path to `<data-dir>/mnist` or `<data-dir>/fashion` is that data set, class names
        // and all.
        if let Ok(given) = path.canonicalize() {
            for kind in [DatasetKind::Mnist, DatasetKind::Fashion] {
                if data_dir.join(kind.name()).canonicalize().is_ok_and(|known| known == given) {
                    return DataChoice::resolve(data_dir, kind.name());
                }
            }
        }
        if path.is_dir() {
            // Recorded in model files: an absolute path still names it from another folder.
            let label = path.canonicalize().map_or_else(|_| dataset.to_string(), |p| p.display().to_string());
            return Ok(DataChoice { kind: None, dir: path, label });
        }
        if path.exists() {
            bail!("--dataset {dataset}: not a folder; give `mnist`, `fashion` or a folder holding the four IDX files");
        }
        bail!(
            "--dataset {dataset}: unknown data set and no such folder; give `mnist`, `fashion` or a folder holding \
             the four IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)"
        )
    }

    /// The names of the ten classes ("0".."9" for digits and unknown folders).
    pub fn class_names(&self) -> Vec<String> {
        self.kind.unwrap_or(DatasetKind::Mnist).class_names().iter().map(|s| s.to_string()).collect()
    }

    /// A title for pictures: "MNIST", "Fashion-MNIST" or the folder's name.
    pub fn title(&self) -> String {
        match self.kind {
            Some(DatasetKind::Mnist) => "MNIST".into(),
            Some(DatasetKind::Fashion) => "Fashion-MNIST".into(),
            None => self.dir.file_name().map_or_else(|| self.label.clone(), |n| n.to_string_lossy().into_owned()),
        }
    }

    /// Loads the training and test sets; returns them with the time it took.
    ///
    /// # Errors
    /// A missing data set (saying how to fetch it), unreadable or invalid files.
    pub fn load(&self) -> Result<(Splits, Duration)> {
        let started = Instant::now();
        match mnist_data::load_dir(&self.dir) {
            Ok(splits) => Ok((splits, started.elapsed())),
            Err(DataError::Missing { dir, what, looked_for }) => {
                // A folder where a data file should be: say so, not that the file is missing.
                if let Some(folder) = looked_for.split(", ").map(|n| dir.join(n)).find(|p| p.is_dir()) {
                    bail!(
                        "{} is a folder, not the {what} file: put the file itself there (IDX, `.gz` or not), or \
                         remove or rename the folder",
                        folder.display()
                    );
                }
                // The library's own message ends in a hint to run `mnist fetch` (MNIST); this
                // one names the right data set, once.
                let missing = format!("{}: no {what} file (looked for {looked_for})", dir.display());
                // `--data-dir data/mnist`: the folder given holds the files itself.
                let data_dir = self.dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                if data_dir.is_file() {
                    bail!(
                        "--data-dir {}: a file, not a folder; give the folder that holds the data sets' folders \
                         (`mnist/`, `fashion/`)",
                        data_dir.display()
                    );
                }
                if let (Some(kind), true) = (self.kind, holds_data_files(data_dir)) {
                    let above = data_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                    bail!(
                        "--data-dir {} holds a data set's files itself, where a `{}/` folder of them was looked for: \
                         give --data-dir {} (the folder above), or --dataset {} to read that folder as it is",
                        data_dir.display(),
                        kind.name(),
                        above.display(),
                        data_dir.display()
                    );
                }
                match self.kind {
                    Some(kind) => bail!(
                        "the {} data set is not in {}: download it with `mnist fetch{}{}`, or point --data-dir at \
                         the folder that holds `{}/` ({missing})",
                        kind.name(),
                        self.dir.display(),
                        if kind == DatasetKind::Mnist { String::new() } else { format!(" --dataset {}", kind.name()) },
                        data_dir_flag(&self.dir),
                        kind.name()
                    ),
                    None => bail!(
                        "{} does not hold a complete data set: {missing}; copy the four IDX files there",
                        self.dir.display()
                    ),
                }
            }
            Err(e) => Err(e).with_context(|| format!("cannot load the data set in {}", self.dir.display())),
        }
    }

    /// Whether `recorded` (a model file's data set: `mnist`, `fashion` or a folder's path)
    /// names this data set.
    pub fn is(&self, data_dir: &Path, recorded: &str) -> bool {
        if recorded == self.label {
            return true;
        }
        let Ok(other) = DataChoice::resolve(data_dir, recorded) else { return false };
        match (other.dir.canonicalize(), self.dir.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }

    /// A note for a model trained on `recorded` used on this data set, when they differ.
    pub fn mismatch_note(&self, data_dir: &Path, recorded: Option<&str>) -> Option<String> {
        let recorded = recorded.filter(|r| !self.is(data_dir, r))?;
        Some(format!(
            "the model was trained on {recorded} (recorded in its file), not on {}: its classes may mean other \
             things here and its scores little (leave out --dataset to use {recorded})",
            self.label
        ))
    }
}

/// ` --data-dir X` when the data set's folder is not under the default `data`.
/// Whether `dir` holds a training-images file of a data set (raw or `.gz`).
fn holds_data_files(dir: &Path) -> bool {
    ["train-images-idx3-ubyte", "train-images.idx3-ubyte"]
        .iter()
        .any(|n| dir.join(n).is_file() || dir.join(format!("{n}.gz")).is_file())
}

fn data_dir_flag(dir: &Path) -> String {
    match dir.parent() {
        Some(p) if p != Path::new("data") => format!(" --data-dir {}", p.display()),
        _ => String::new(),
    }
}

/// Which part of a data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// The training examples (60 000 for MNIST).
    Train,
    /// The test examples (10 000 for MNIST).
    Test,
}

impl Split {
    /// `train` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    /// This part of `splits`.
    pub fn of(self, splits: &Splits) -> &mnist_data::Dataset {
        match self {
            Split::Train => &splits.train,
            Split::Test => &splits.test,
        }
    }
}
