//! Shared helpers of the integration tests: the real MNIST files.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

/// The folder of a data set: `<workspace>/data/<name>` (CI links the real files there), else
/// `../shared/data/<name>` beside the workspace. Panics with a clear message when neither exists.
pub fn data_dir(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for dir in [root.join("data").join(name), root.join("../shared/data").join(name)] {
        if dir.join("train-labels-idx1-ubyte.gz").exists() || dir.join("train-labels-idx1-ubyte").exists() {
            return dir;
        }
    }
    panic!("the real {name} files are needed: put them in data/{name} (see data/README.md)");
}
