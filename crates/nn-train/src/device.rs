//! Choosing where a model runs at run time: `--device cpu|cuda|cuda:N|auto`.

use std::fmt;
use std::str::FromStr;

use nn_core::cpu::Cpu;
use nn_core::{Model, ModelFile, ModelSpec};

use crate::error::{Result, TrainError};

/// The device asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU (always available).
    #[default]
    Cpu,
    /// NVIDIA GPU number `N` (needs the `cuda` feature, a driver and a device).
    Cuda(usize),
    /// The first GPU when there is one, else the CPU (saying so).
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            "auto" => Ok(DeviceChoice::Auto),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| TrainError::Config(format!("unknown device {s:?}: use cpu, cuda, cuda:N or auto"))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Auto => write!(f, "auto"),
        }
    }
}

/// A device resolved from a choice: the CPU or an opened GPU.
enum Resolved {
    Cpu,
    Cuda(Box<nn_cuda::Cuda>),
}

/// Opens the device; for `Auto` without a usable GPU, falls back to the CPU and returns a note
/// saying why (none in a build without the `cuda` feature, where the CPU is the only choice).
fn resolve(choice: DeviceChoice) -> Result<(Resolved, Option<String>)> {
    match choice {
        DeviceChoice::Cpu => Ok((Resolved::Cpu, None)),
        DeviceChoice::Cuda(n) => Ok((Resolved::Cuda(Box::new(nn_cuda::Cuda::new(n)?)), None)),
        // A build without CUDA has no GPU to look for: the CPU, without a note.
        DeviceChoice::Auto if !cfg!(feature = "cuda") => Ok((Resolved::Cpu, None)),
        DeviceChoice::Auto => match nn_cuda::Cuda::new(0) {
            Ok(c) => Ok((Resolved::Cuda(Box::new(c)), None)),
            Err(e) => Ok((Resolved::Cpu, Some(format!("no usable GPU ({e}); using the CPU")))),
        },
    }
}

/// Builds `spec` on the chosen device with weights from `seed`. Returns the model and, when
/// `Auto` fell back to the CPU, a note to show the user.
///
/// # Errors
/// [`TrainError::Nn`] when the device cannot be opened (e.g. `cuda` without a driver, or a
/// binary built without the `cuda` feature) or the architecture is invalid.
pub fn build_model(choice: DeviceChoice, spec: &ModelSpec, seed: u64) -> Result<(Model, Option<String>)> {
    let (dev, note) = resolve(choice)?;
    let m = match dev {
        Resolved::Cpu => Model::on(Cpu, spec, seed)?,
        Resolved::Cuda(c) => Model::on(*c, spec, seed)?,
    };
    Ok((m, note))
}

/// Settles `Auto` once, for work that builds many models (a hyper-parameter search): the
/// first GPU when it opens, else the CPU with a note saying why. Other choices are returned
/// as they are (a GPU that cannot be opened then fails when the first model is built).
pub fn settle(choice: DeviceChoice) -> (DeviceChoice, Option<String>) {
    if choice != DeviceChoice::Auto {
        return (choice, None);
    }
    match resolve(choice) {
        Ok((Resolved::Cuda(_), note)) => (DeviceChoice::Cuda(0), note),
        Ok((Resolved::Cpu, note)) => (DeviceChoice::Cpu, note),
        Err(e) => (DeviceChoice::Cpu, Some(format!("{e}; using the CPU"))),
    }
}

/// Builds the model of a loaded file on the chosen device.
///
/// # Errors
/// As [`build_model`].
pub fn model_from_file(choice: DeviceChoice, file: &ModelFile) -> Result<(Model, Option<String>)> {
    let (dev, note) = resolve(choice)?;
    let m = match dev {
        Resolved::Cpu => Model::from_file(Cpu, file)?,
        Resolved::Cuda(c) => Model::from_file(*c, file)?,
    };
    Ok((m, note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_cpu_fallback() {
        assert_eq!("cuda:1".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(1));
        assert_eq!("AUTO".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert!("tpu".parse::<DeviceChoice>().unwrap_err().to_string().contains("cpu, cuda"));
        assert_eq!(settle(DeviceChoice::Cpu), (DeviceChoice::Cpu, None));
        let spec = nn_core::preset("mlp-128").unwrap();
        if !nn_cuda::is_available() {
            // A note says why only where a GPU could have been used: in a build with CUDA.
            let says_why = |note: Option<String>| match cfg!(feature = "cuda") {
                true => note.is_some_and(|n| n.contains("using the CPU")),
                false => note.is_none(),
            };
            let (m, note) = build_model(DeviceChoice::Auto, &spec, 0).unwrap();
            assert!(m.device().starts_with("cpu"));
            assert!(says_why(note));
            let (settled, note) = settle(DeviceChoice::Auto);
            assert_eq!(settled, DeviceChoice::Cpu);
            assert!(says_why(note));
            let err = build_model(DeviceChoice::Cuda(0), &spec, 0).err().unwrap().to_string();
            assert!(err.to_lowercase().contains("cuda"), "{err}");
        }
    }
}
