//! `--device cpu|cuda|cuda:N|auto`: where `mnist train`, `evaluate` and `predict` build their
//! model, through
//! `nn_train::device`. The GPU needs a binary built with the `cuda` feature
//! (`cargo build --release -p mnist --features cuda`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use nn_core::{Model, ModelSpec, NnError};
use nn_train::{DeviceChoice, TrainError, Trainer};

/// Fails early, with the command to rebuild, when the GPU is asked for in a build without it.
///
/// # Errors
/// `--device cuda` in a build without the `cuda` feature.
pub fn check_build(choice: DeviceChoice) -> Result<()> {
    if matches!(choice, DeviceChoice::Cuda(_)) && !cfg!(feature = "cuda") {
        bail!(
            "--device: the GPU ({choice}) needs CUDA support, and this mnist was built without it; rebuild with --features cuda \
             (`cargo build --release -p mnist --features cuda`, or `cargo xtask train --features cuda ...`), \
             or use --device cpu"
        );
    }
    Ok(())
}

fn note(n: Option<String>) {
    if let Some(n) = n {
        eprintln!("note: {n}");
    }
}

/// Builds `spec` with fresh weights from `seed` on the chosen device (`auto` falls back to the
/// CPU, saying so on stderr).
///
/// # Errors
/// A device that cannot be opened; the architecture's errors.
pub fn new_model(choice: DeviceChoice, spec: &ModelSpec, seed: u64) -> Result<Model> {
    check_build(choice)?;
    let (model, n) = nn_train::build_model(choice, spec, seed).with_context(|| format!("--device {choice}"))?;
    note(n);
    Ok(model)
}

/// Rebuilds a model from its file on the chosen device.
///
/// # Errors
/// A device that cannot be opened; a file whose tensors do not fit its architecture.
pub fn from_file(choice: DeviceChoice, file: &nn_core::ModelFile) -> Result<Model> {
    check_build(choice)?;
    let (model, n) = nn_train::model_from_file(choice, file).with_context(|| format!("--device {choice}"))?;
    note(n);
    Ok(model)
}

/// Rebuilds a trainer from a checkpoint (or model file) on the chosen device.
///
/// # Errors
/// A device that cannot be opened; unreadable or invalid files, naming them.
pub fn resume(choice: DeviceChoice, path: &Path) -> Result<Trainer> {
    check_build(choice)?;
    let mut fell_back = None;
    let trainer = Trainer::resume_with(path, |f| {
        let (model, n) = nn_train::model_from_file(choice, f).map_err(|e| match e {
            TrainError::Nn(e) => e,
            other => NnError::Device(other.to_string()),
        })?;
        fell_back = n;
        Ok(model)
    })?;
    note(fell_back);
    Ok(trainer)
}
