//! What can go wrong on the CUDA side; converted into [`nn_core::NnError::Device`].

use nn_core::NnError;

/// A failure of the CUDA device.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The crate was built without the `cuda` feature.
    #[error("built without the `cuda` feature; rebuild with --features cuda")]
    NotBuilt,
    /// The driver library could not be opened.
    #[error("no CUDA driver found (libcuda.so): {0}")]
    NoDriver(String),
    /// Another CUDA library could not be opened.
    #[error("CUDA library {lib} not found: {hint}")]
    MissingLibrary {
        /// The library (e.g. `libnvrtc.so`).
        lib: &'static str,
        /// How to get it.
        hint: &'static str,
    },
    /// A CUDA driver call failed (no device, out of memory, launch failure, ...).
    #[error("CUDA driver: {0}")]
    Driver(String),
    /// A cuBLAS call failed.
    #[error("cuBLAS: {0}")]
    Blas(String),
    /// NVRTC could not compile a kernel source.
    #[error("NVRTC (CUDA runtime compiler) failed on {file}: {log}")]
    Compile {
        /// The `.cu` file.
        file: &'static str,
        /// The compiler's log.
        log: String,
    },
    /// An argument the kernels cannot handle (buffer too small, sizes beyond 32 bits).
    #[error("CUDA device: {0}")]
    Invalid(String),
    /// The CUDA libraries panicked (e.g. a symbol missing from an old driver).
    #[error("the CUDA libraries failed: {0}")]
    Panic(String),
}

impl From<CudaError> for NnError {
    fn from(e: CudaError) -> NnError {
        NnError::Device(e.to_string())
    }
}
