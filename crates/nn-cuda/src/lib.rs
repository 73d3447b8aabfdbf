//! # nn-cuda
//!
//! The NVIDIA GPU [`Device`](nn_core::Device) of nn-core: the same layers and training loop as
//! the CPU, with buffers in GPU memory, GEMMs in cuBLAS and every other primitive in a small
//! CUDA C kernel compiled by NVRTC when the device is created.
//!
//! ```no_run
//! use nn_core::{Activation::*, Dense, Flatten, Model, ModelSpec};
//! let spec = ModelSpec::new(&[28, 28]).add(Flatten::new()).add(Dense::new(128).activation(Relu)).add(Dense::new(10));
//! let model = Model::on(nn_cuda::Cuda::new(0)?, &spec, 42)?;
//! println!("{}", model.device());
//! # Ok::<(), nn_core::NnError>(())
//! ```
//!
//! The CUDA libraries (`libcuda`, `libnvrtc`, `libcublas`) are opened at run time, so the crate
//! builds without the CUDA toolkit. Without the `cuda` feature it builds without cudarc at all;
//! [`Cuda::new`] then returns an error and [`is_available`] is false.
//!
//! All work is queued on one CUDA stream; only [`Device::download`](nn_core::Device::download)
//! (and `read_scalars`, which uses it) waits for it.

pub mod error;
pub mod gemm;
pub mod kernels;
pub mod launch;

#[cfg(feature = "cuda")]
mod device;
#[cfg(not(feature = "cuda"))]
mod stub;

#[cfg(feature = "cuda")]
pub use device::{device_count, device_info, libraries, Cuda};
pub use error::CudaError;
#[cfg(not(feature = "cuda"))]
pub use stub::{device_count, device_info, libraries, Cuda, NoBuffer};

/// Which CUDA libraries could be opened (all false without the `cuda` feature).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Libraries {
    /// The driver, `libcuda.so`.
    pub driver: bool,
    /// The runtime compiler, `libnvrtc.so`.
    pub nvrtc: bool,
    /// cuBLAS, `libcublas.so`.
    pub cublas: bool,
}

/// A GPU's identity and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device ordinal.
    pub ordinal: usize,
    /// The marketing name (e.g. `NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Global memory in bytes.
    pub total_memory: usize,
    /// Compute capability `(major, minor)`, e.g. `(9, 0)`.
    pub compute_capability: (i32, i32),
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = self.total_memory as f64 / (1u64 << 30) as f64;
        let (major, minor) = self.compute_capability;
        write!(f, "cuda:{} {} (compute capability {major}.{minor}, {gib:.1} GiB)", self.ordinal, self.name)
    }
}

/// Whether a CUDA device can be used: the crate was built with the `cuda` feature, the driver,
/// NVRTC and cuBLAS libraries open, and the driver reports at least one GPU. Never panics.
pub fn is_available() -> bool {
    matches!(device_count(), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_info_reads_well() {
        let info = DeviceInfo {
            ordinal: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            total_memory: 85_031_714_816,
            compute_capability: (9, 0),
        };
        assert_eq!(info.to_string(), "cuda:0 NVIDIA H100 80GB HBM3 (compute capability 9.0, 79.2 GiB)");
    }

    #[test]
    fn errors_become_device_errors() {
        let e: nn_core::NnError = CudaError::NotBuilt.into();
        assert!(matches!(e, nn_core::NnError::Device(_)));
        assert!(e.to_string().contains("--features cuda"), "{e}");
        let e: nn_core::NnError = CudaError::NoDriver("x".into()).into();
        assert!(e.to_string().contains("no CUDA driver found (libcuda.so)"), "{e}");
    }
}
