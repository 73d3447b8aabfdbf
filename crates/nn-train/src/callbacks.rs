//! Callbacks: code that runs at the end of each epoch (or batch) and may stop training.
//! `EarlyStopping`, `ModelCheckpoint` and `TerminateOnNaN` behave as Keras's.

use std::path::PathBuf;

use nn_core::Tensor;

use crate::error::Result;
use crate::history::EpochLog;
use crate::trainer::Trainer;

/// What a callback asks of the training loop.
#[derive(Clone, Debug, PartialEq)]
pub enum Control {
    /// Keep going.
    Continue,
    /// Stop after this epoch (or batch), saying why.
    Stop(String),
    /// Stop at once and put back the weights of the last completed epoch (a NaN loss).
    StopAndRestore(String),
}

/// Hooks into [`Trainer::fit`].
pub trait Callback: Send {
    /// Whether [`Callback::on_batch_end`] should see every batch's loss (costs a device read per
    /// step on a GPU).
    fn wants_batch_losses(&self) -> bool {
        false
    }
    /// After a batch, with its mean loss.
    fn on_batch_end(&mut self, _batch_loss: f64) -> Control {
        Control::Continue
    }
    /// After each epoch, with its log and the trainer (model, history, checkpoints).
    ///
    /// # Errors
    /// Whatever the callback's own work fails with (e.g. writing a file).
    fn on_epoch_end(&mut self, log: &EpochLog, trainer: &mut Trainer) -> Result<Control>;
    /// Once, when training ends (normally or stopped).
    ///
    /// # Errors
    /// Whatever the callback's own work fails with.
    fn on_train_end(&mut self, _trainer: &mut Trainer) -> Result<()> {
        Ok(())
    }
}

fn lower_is_better(monitor: &str) -> bool {
    !monitor.contains("acc")
}

/// Stops when the monitored metric has not improved by `min_delta` for `patience` epochs
/// (Keras defaults: monitor `val_loss`, patience 0, min_delta 0, no restore).
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    /// Metric to watch (`val_loss`, `val_accuracy`, `loss`, `accuracy`).
    pub monitor: String,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
    /// Put back the best epoch's weights when training ends.
    pub restore_best_weights: bool,
    best: Option<f64>,
    wait: usize,
    best_weights: Option<Vec<Tensor>>,
    /// The epoch at which training was stopped, if it was.
    pub stopped_epoch: Option<usize>,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping::new("val_loss")
    }
}

impl EarlyStopping {
    /// Watches `monitor` with Keras's defaults.
    pub fn new(monitor: &str) -> EarlyStopping {
        EarlyStopping {
            monitor: monitor.into(),
            patience: 0,
            min_delta: 0.0,
            restore_best_weights: false,
            best: None,
            wait: 0,
            best_weights: None,
            stopped_epoch: None,
        }
    }
    /// Sets the patience.
    pub fn patience(mut self, p: usize) -> Self {
        self.patience = p;
        self
    }
    /// Sets the minimum improvement.
    pub fn min_delta(mut self, d: f64) -> Self {
        self.min_delta = d.abs();
        self
    }
    /// Restores the best weights at the end.
    pub fn restore_best_weights(mut self, on: bool) -> Self {
        self.restore_best_weights = on;
        self
    }
}

impl Callback for EarlyStopping {
    fn on_epoch_end(&mut self, log: &EpochLog, trainer: &mut Trainer) -> Result<Control> {
        let Some(v) = log.get(&self.monitor) else {
            return Err(crate::error::TrainError::Config(format!(
                "EarlyStopping monitors {}, which this run does not report (no validation data?)",
                self.monitor
            )));
        };
        let better = match self.best {
            None => true,
            Some(b) if lower_is_better(&self.monitor) => v < b - self.min_delta,
            Some(b) => v > b + self.min_delta,
        };
        if better {
            self.best = Some(v);
            self.wait = 0;
            if self.restore_best_weights {
                self.best_weights = Some(trainer.model().weights()?);
            }
            return Ok(Control::Continue);
        }
        self.wait += 1;
        if self.wait > self.patience {
            self.stopped_epoch = Some(log.epoch);
            return Ok(Control::Stop(format!(
                "early stopping: {} did not improve for {} epoch(s) (best {:.4})",
                self.monitor,
                self.wait,
                self.best.unwrap_or(v)
            )));
        }
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, trainer: &mut Trainer) -> Result<()> {
        if let Some(w) = self.best_weights.take() {
            trainer.model_mut().set_weights(&w)?;
        }
        Ok(())
    }
}

/// Saves a resumable checkpoint (weights, optimiser state, progress, history) after each epoch,
/// or only when the monitored metric improves (Keras: monitor `val_loss`). Writes are atomic.
#[derive(Clone, Debug)]
pub struct ModelCheckpoint {
    /// Where to write.
    pub path: PathBuf,
    /// Metric deciding "best".
    pub monitor: String,
    /// Save only improvements.
    pub save_best_only: bool,
    best: Option<f64>,
}

impl ModelCheckpoint {
    /// Saves to `path` after every epoch.
    pub fn new(path: impl Into<PathBuf>) -> ModelCheckpoint {
        ModelCheckpoint { path: path.into(), monitor: "val_loss".into(), save_best_only: false, best: None }
    }
    /// Saves only when `monitor` improves.
    pub fn save_best_only(mut self, monitor: &str) -> ModelCheckpoint {
        self.save_best_only = true;
        self.monitor = monitor.into();
        self
    }
}

impl Callback for ModelCheckpoint {
    fn on_epoch_end(&mut self, log: &EpochLog, trainer: &mut Trainer) -> Result<Control> {
        if self.save_best_only {
            let v = log.get(&self.monitor).or_else(|| log.get(self.monitor.trim_start_matches("val_")));
            let Some(v) = v else {
                return Ok(Control::Continue);
            };
            let better = match self.best {
                None => true,
                Some(b) if lower_is_better(&self.monitor) => v < b,
                Some(b) => v > b,
            };
            if !better {
                return Ok(Control::Continue);
            }
            self.best = Some(v);
        }
        trainer.save_checkpoint(&self.path)?;
        Ok(Control::Continue)
    }
}

/// Stops as soon as a batch's loss is NaN or infinite, and puts back the weights of the last
/// completed epoch.
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminateOnNaN;

impl Callback for TerminateOnNaN {
    fn wants_batch_losses(&self) -> bool {
        true
    }
    fn on_batch_end(&mut self, batch_loss: f64) -> Control {
        if batch_loss.is_finite() {
            Control::Continue
        } else {
            Control::StopAndRestore(format!(
                "the loss became {batch_loss}: training stopped, the weights of the last completed epoch were kept"
            ))
        }
    }
    fn on_epoch_end(&mut self, log: &EpochLog, _trainer: &mut Trainer) -> Result<Control> {
        Ok(if log.loss.is_finite() { Control::Continue } else { self.on_batch_end(log.loss) })
    }
}
