//! Shared helpers of the integration tests: the real MNIST files and recipe runs.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use nn_core::Model;
use nn_train::recipes::recipe;
use nn_train::{FitConfig, Trainer, Verbosity};

/// The folder of a data set: `$NN_DATA_DIR/<name>` when that variable is set (a test binary
/// run elsewhere than where it was built, as on the GPU machine), else `<workspace>/data/<name>`
/// (CI links the real files there), else `../shared/data/<name>` beside the workspace. Panics
/// with a clear message when none holds the files.
pub fn data_dir(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let given = std::env::var_os("NN_DATA_DIR").map(|d| PathBuf::from(d).join(name));
    for dir in given.into_iter().chain([root.join("data").join(name), root.join("../shared/data").join(name)]) {
        if dir.join("train-labels-idx1-ubyte.gz").exists() || dir.join("train-labels-idx1-ubyte").exists() {
            return dir;
        }
    }
    panic!("the real {name} files are needed: put them in data/{name} (see data/README.md)");
}

/// Trains the recipe `name` for `epochs` (its own when `None`) from `seed` on MNIST; returns
/// the test accuracy and the trainer.
pub fn run_recipe(name: &str, epochs: Option<usize>, seed: u64) -> (f64, Trainer) {
    let data = mnist_data::Mnist::load(data_dir("mnist")).unwrap();
    let r = recipe(name).unwrap();
    let test = Arc::new(data.test);
    let mut t = Trainer::new(Model::new(&r.spec, seed).unwrap(), r.compile);
    let cfg = FitConfig {
        epochs: epochs.unwrap_or(r.epochs),
        batch_size: r.batch_size,
        validation: r.validation(&test),
        seed,
        verbosity: Verbosity::Lines,
        ..Default::default()
    };
    t.fit(Arc::new(data.train), cfg).unwrap();
    let acc = t.evaluate(&test).unwrap().accuracy;
    println!("{name}, seed {seed}: test accuracy {acc:.4}");
    (acc, t)
}
