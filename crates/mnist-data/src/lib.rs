//! # mnist-data
//!
//! Everything between the MNIST files on disk and the `f32` batches a network trains on:
//!
//! - [`idx`]: the IDX format, raw or gzip, checked against the file length before allocating;
//! - [`dataset`]: [`Dataset`] (resident `u8` images and labels) and [`Mnist::load`] /
//!   [`FashionMnist::load`];
//! - [`stats`]: shape, pixel range, mean/std and class counts;
//! - [`preprocess`]: scaling, standardisation, `[N, 784]` or `[N, 1, 28, 28]`, one-hot;
//! - [`split`]: Keras's `validation_split`;
//! - [`batches`]: seeded shuffled batches with background prefetch and reused buffers;

//! - [`fetch`] (feature `fetch`): downloads with SHA-256 verification and atomic writes.
//!
//! ```no_run
//! let mnist = mnist_data::Mnist::load("data/mnist")?;
//! assert_eq!(mnist.train.len(), 60_000);
//! println!("{}", mnist_data::Summary::of(&mnist.train));
//! # Ok::<(), mnist_data::DataError>(())
//! ```

pub mod atomic;
pub mod augment;
pub mod batches;
pub mod dataset;
pub mod error;
#[cfg(feature = "fetch")]
pub mod fetch;
pub mod idx;
pub mod preprocess;
pub mod rng;
pub mod split;
pub mod stats;

pub use augment::Augmentation;
pub use batches::{Batch, BatchConfig, BatchTransform, Batcher, Epoch};
pub use dataset::{load_dir, Dataset, DatasetKind, FashionMnist, Mnist, Splits};
pub use error::{DataError, Result};
pub use idx::{read_idx, read_idx_dims, write_idx, Idx};
pub use preprocess::{flatten, one_hot, sparse_labels, to_nchw, Normalization};
pub use rng::Rng;
pub use split::{validation_len, validation_split};
pub use stats::Summary;

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    /// The message of the panic `f` makes (it must panic).
    pub(crate) fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let payload = std::panic::catch_unwind(f).expect_err("expected a panic");
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }
}
