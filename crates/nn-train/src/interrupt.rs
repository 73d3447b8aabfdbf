//! A request, from any thread, to stop a `fit` under way: what a Ctrl-C handler sets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How [`crate::History::stopped`] begins after a `fit` stopped by an [`Interrupt`].
pub const INTERRUPTED: &str = "interrupted in epoch";

/// A handle that stops a [`crate::Trainer::fit`] under way, from any thread (a Ctrl-C handler,
/// a user interface): Keras's `model.stop_training = True`, except that the unfinished epoch is
/// undone.
///
/// `fit` looks at it after every batch (one atomic load: no device read on a GPU). Once it is
/// requested, `fit` stops after the batch under way and puts back the weights, optimiser state
/// and progress of the last completed epoch (or of the start), so that its history and the last
/// checkpoint agree and resuming that checkpoint ends with the same weights as a run never
/// interrupted. Then training ends as any end does: the callbacks' `on_train_end` run
/// ([`crate::EarlyStopping`] with `restore_at_end` puts back its best epoch's weights; one
/// with only `restore_best_weights` does so only when it stopped the run).
/// [`crate::History::stopped`] says where it stopped; [`crate::History::interrupted`] tells.
///
/// Get one with [`crate::Trainer::interrupt`]; clones share the request. A request made before
/// `fit` starts (a Ctrl-C while the data loads) is kept, and stops it after its first batch;
/// `fit` clears the request when it stops for it, so the next `fit` runs.
///
/// ```no_run
/// # fn demo(mut t: nn_train::Trainer, train: std::sync::Arc<nn_train::mnist_data::Dataset>) -> nn_train::Result<()> {
/// let stop = t.interrupt();
/// // From a Ctrl-C handler, a user interface, a timer: here, after ten seconds.
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(10));
///     stop.request();
/// });
/// let history = t.fit(train, nn_train::FitConfig { epochs: 100, ..Default::default() })?;
/// if history.interrupted() {
///     println!("{}", history.stopped.unwrap_or_default()); // "interrupted in epoch 7 after ..."
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<AtomicBool>);

/// Two handles are equal when they share their request (clones of one another).
impl PartialEq for Interrupt {
    fn eq(&self, other: &Interrupt) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Interrupt {
    /// A handle with nothing requested.
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    /// Asks the `fit` under way (or the next) to stop after its current batch. Safe from any
    /// thread.
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was requested and no `fit` has stopped for it yet.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Withdraws a request (what `fit` does when it stops for it).
    pub fn clear(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::Interrupt;

    #[test]
    fn clones_share_the_request() {
        let a = Interrupt::new();
        let b = a.clone();
        assert!(!b.is_requested());
        assert_eq!(a, b);
        assert_ne!(a, Interrupt::new());
        a.request();
        assert!(b.is_requested());
        let from_thread = b.clone();
        std::thread::spawn(move || from_thread.clear()).join().unwrap();
        assert!(!a.is_requested());
    }
}
