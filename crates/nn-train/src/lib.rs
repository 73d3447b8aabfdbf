//! # nn-train
//!
//! Training for [`nn_core`] models, Keras-style and device-independent:
//! [`Trainer`] (compile, `fit`, `evaluate`, `predict`, model files and resumable checkpoints),
//! [`Optimizer`]s with Keras defaults, learning-rate [`Schedule`]s, [`History`], [`metrics`],
//! [`callbacks`] (`EarlyStopping`, `ModelCheckpoint`, `TerminateOnNaN`, [`ReduceLROnPlateau`]), an
//! [`Interrupt`] that stops a `fit` from another thread (a Ctrl-C handler), the tutorials'
//! [`recipes`], and random hyper-parameter search ([`tuner`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use nn_train::nn_core::{Model, preset, Loss};
//! use nn_train::{Trainer, Compile, FitConfig, Validation, Optimizer};
//! let mnist = nn_train::mnist_data::Mnist::load("data/mnist")?;
//! let model = Model::new(&preset("mlp-128").unwrap(), 42)?;
//! let mut t = Trainer::new(model, Compile { optimizer: Optimizer::adam(), loss: Loss::SparseCategoricalCrossentropy { from_logits: true }, ..Default::default() });
//! let test = Arc::new(mnist.test);
//! t.fit(Arc::new(mnist.train), FitConfig { epochs: 6, batch_size: 128, validation: Validation::Data(test.clone()), ..Default::default() })?;
//! println!("{:?}", t.evaluate(&test)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod callbacks;
pub mod device;
pub mod error;
pub mod history;
pub mod interrupt;
pub mod lr_plateau;
pub mod metrics;
pub mod optimizer;
pub mod path_template;
pub mod progress;
pub mod recipes;
pub mod schedule;
pub mod trainer;
pub mod tuner;

pub use callbacks::{Callback, Control, EarlyStopping, ModelCheckpoint, TerminateOnNaN};
pub use device::{build_model, model_from_file, settle, DeviceChoice};
pub use error::{Result, TrainError};
pub use history::{EpochLog, History};
pub use interrupt::Interrupt;
pub use lr_plateau::ReduceLROnPlateau;
pub use metrics::Confusion;
pub use optimizer::Optimizer;
pub use progress::Verbosity;
pub use schedule::Schedule;
pub use trainer::{
    check_input_shape, predict_bytes, predict_dataset, Compile, Evaluation, FitConfig, TrainState, Trainer, Validation,
};

/// The crates whose types nn-train's signatures use (data sets, models, arrays), re-exported
/// so that a user names them without depending on them, at the versions nn-train was built with.
pub use mnist_data;
pub use ndarray;
pub use nn_core;
