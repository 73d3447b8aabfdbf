//! # nn-core
//!
//! The neural-network core, device-independent by construction:
//!
//! - *what a model is* — [`ModelSpec`], a list of [`LayerSpec`]s (plain serde data, Keras names
//!   and defaults), its [`summary()`] and its [`model_file`] (safetensors + JSON);
//! - *where its numbers live* — a [`Device`] offering a small set of primitives (GEMM, fused
//!   bias + activation, fused softmax + cross-entropy, dropout, im2col, pooling, batch norm,
//!   optimiser updates); [`cpu::Cpu`] here, the CUDA device in `nn-cuda`;
//! - *layers written once* against those primitives ([`layers`]), assembled into a
//!   [`Network<D>`](network::Network) and held by users as a [`Model`] (no type parameter).
//!
//! Shapes are per example in specs (`[28, 28]`) and `[batch, ...]` at run time, row-major,
//! channels first for images (`[batch, 1, 28, 28]`).

pub mod activation;
pub mod cpu;
pub mod device;
pub mod error;
pub mod fastmath;
pub mod init;
pub mod layers;
pub mod loss;
pub mod model;
pub mod model_file;
pub mod network;
pub mod optim;
pub mod presets;
pub mod spec;
pub mod summary;
pub mod tensor;

pub use activation::Activation;
pub use device::Device;
pub use error::{NnError, Result};
pub use init::Initializer;
pub use loss::Loss;
pub use model::Model;
pub use model_file::ModelFile;
pub use network::{Fill, FilledBatch, Network, Runtime};
pub use optim::{StepParams, UpdateRule};
pub use presets::preset;
pub use spec::{
    BatchNorm, Conv2D, Dense, Dropout, Flatten, LayerSpec, ModelSpec, Padding, Pool2D, Regularizer, Reshape,
};
pub use summary::summary;
pub use tensor::Tensor;

/// The crates whose types nn-core's signatures use (data sets, arrays), re-exported so that a
/// user names them without depending on them, at the versions nn-core was built with.
pub use mnist_data;
pub use ndarray;
