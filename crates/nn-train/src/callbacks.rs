//! Callbacks: code that runs at the end of each epoch (or batch) and may stop training.
//! `EarlyStopping`, `ModelCheckpoint` and `TerminateOnNaN` behave as Keras's (and
//! `ReduceLROnPlateau`, in `lr_plateau.rs`).

use std::path::PathBuf;

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
///
/// ```
/// use std::io::Write;
/// use nn_train::{Callback, Control, EpochLog, TrainError, Trainer};
///
/// /// Writes each epoch's loss to a file; stops once the validation accuracy passes 98%.
/// struct LogTo(std::fs::File);
///
/// impl Callback for LogTo {
///     fn on_epoch_end(&mut self, log: &EpochLog, _t: &mut Trainer) -> nn_train::Result<Control> {
///         writeln!(self.0, "{} {:.4}", log.epoch, log.loss).map_err(|e| TrainError::Callback(e.into()))?;
///         Ok(if log.val_accuracy > Some(0.98) { Control::Stop("good enough".into()) } else { Control::Continue })
///     }
/// }
/// ```
pub trait Callback: Send {
    /// Whether [`Callback::on_batch_end`] should see every batch's loss (costs a device read per
    /// step on a GPU).
    fn wants_batch_losses(&self) -> bool {
        false
    }
    /// Once, when [`Trainer::fit`] starts, with the trainer: its history so far (the epochs of
    /// a resumed run, or of an earlier `fit` on the same trainer) and the tensors kept by its
    /// checkpoint ([`Trainer::kept_tensors`]), so that a callback's own state (a best value, a
    /// patience count, best weights) continues from them.
    ///
    /// [`Control::Stop`] ends training before its first epoch (a resumed run the callback
    /// would already have stopped).
    ///
    /// # Errors
    /// A callback that cannot work with this run (e.g. a metric it watches is missing).
    fn on_train_begin(&mut self, _trainer: &Trainer) -> Result<Control> {
        Ok(Control::Continue)
    }
    /// After a batch, with its mean loss; only called when some callback's
    /// [`Callback::wants_batch_losses`] is true. [`Control::Stop`] ends the epoch after this
    /// batch (the epoch's log covers the batches run) and then training, as Keras's
    /// `stop_training` set in `on_train_batch_end`.
    fn on_batch_end(&mut self, _batch_loss: f64) -> Control {
        Control::Continue
    }
    /// After each epoch, with its log and the trainer (model, history, checkpoints).
    ///
    /// # Errors
    /// Whatever the callback's own work fails with (e.g. writing a file).
    fn on_epoch_end(&mut self, log: &EpochLog, trainer: &mut Trainer) -> Result<Control>;
    /// After every callback's [`Callback::on_epoch_end`] of an epoch (not after a stop in the
    /// middle of one): the place to save the trainer's state, which then holds every callback's
    /// state of this epoch, whatever their order ([`ModelCheckpoint`] saves here).
    ///
    /// # Errors
    /// Whatever the callback's own work fails with (e.g. writing a file).
    fn on_epoch_committed(&mut self, _trainer: &mut Trainer) -> Result<()> {
        Ok(())
    }
    /// Once, when training ends (normally or stopped).
    ///
    /// # Errors
    /// Whatever the callback's own work fails with.
    fn on_train_end(&mut self, _trainer: &mut Trainer) -> Result<()> {
        Ok(())
    }
}

/// An error for a metric no epoch reports, before the first epoch trains.
pub(crate) fn check_monitor(callback: &str, monitor: &str) -> Result<()> {
    if EpochLog::METRICS.contains(&monitor) {
        return Ok(());
    }
    Err(crate::error::TrainError::Config(format!(
        "{callback} monitors {monitor}, which is not a metric; use one of {}",
        EpochLog::METRICS.join(", ")
    )))
}

/// Refuses a `val_*` monitor in a fit without validation data, before any epoch's work: for
/// callbacks that have nothing to fall back on (ModelCheckpoint falls back on the training
/// metric, as Keras's does not).
pub(crate) fn check_reported(callback: &str, monitor: &str, trainer: &Trainer) -> Result<()> {
    check_monitor(callback, monitor)?;
    if monitor.starts_with("val_") && !trainer.validates() {
        return Err(crate::error::TrainError::Config(format!(
            "{callback} monitors {monitor}, but this fit has no validation data: give \
             `validation` (Validation::Data or Validation::Split) or monitor {}",
            &monitor[4..]
        )));
    }
    Ok(())
}

fn lower_is_better(monitor: &str) -> bool {
    !monitor.contains("acc")
}

/// Whether `v` of `monitor` improves on `best` by more than `min_delta` (losses downwards,
/// accuracies upwards; anything improves on no best yet): Keras's `monitor_op`.
pub(crate) fn improves(monitor: &str, best: Option<f64>, v: f64, min_delta: f64) -> bool {
    match best {
        None => true,
        Some(b) if lower_is_better(monitor) => v < b - min_delta,
        Some(b) => v > b + min_delta,
    }
}

/// Stops when the monitored metric has not improved by `min_delta` for `patience` epochs
/// (Keras defaults: monitor `val_loss`, patience 0, min_delta 0, no restore). With
/// `restore_best_weights`, a run it stops ends with its best epoch's weights, as in Keras; a
/// run that trains every epoch (or is interrupted) keeps its last epoch's, unless
/// `restore_at_end` asks for the best epoch's whenever training ends.
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    /// Metric to watch (`val_loss`, `val_accuracy`, `loss`, `accuracy`).
    pub monitor: String,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
    /// Put back the best epoch's weights when this callback stops training (Keras's
    /// `restore_best_weights`).
    pub restore_best_weights: bool,
    /// Put back the best epoch's weights whenever training ends, also after its last epoch
    /// or an interrupt (what Keras Tuner keeps of a trial; Keras users subclass
    /// `EarlyStopping` for it). Needs `restore_best_weights`.
    pub restore_at_end: bool,
    best: Option<f64>,
    /// The epoch of `best`.
    best_epoch: usize,
    wait: usize,
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
            restore_at_end: false,
            best: None,
            best_epoch: 0,
            wait: 0,
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
    /// Restores the best epoch's weights when it stops training (Keras's
    /// `restore_best_weights`).
    pub fn restore_best_weights(mut self, on: bool) -> Self {
        self.restore_best_weights = on;
        self
    }
    /// Restores the best epoch's weights whenever training ends, stopped or not (and sets
    /// `restore_best_weights` to the same).
    pub fn restore_at_end(mut self, on: bool) -> Self {
        self.restore_at_end = on;
        self.restore_best_weights = on;
        self
    }
}

impl EarlyStopping {
    /// The monitored value of `log`, or an error naming the missing metric.
    fn value(&self, log: &EpochLog) -> Result<f64> {
        log.get(&self.monitor).ok_or_else(|| {
            crate::error::TrainError::Config(format!(
                "EarlyStopping monitors {}, which this run does not report (no validation data?)",
                self.monitor
            ))
        })
    }

    /// Why it stops.
    fn stop_message(&self) -> String {
        format!(
            "early stopping: {} did not improve for {} (best {:.4} at epoch {}){}",
            self.monitor,
            if self.wait == 1 { "1 epoch".to_string() } else { format!("{} epochs", self.wait) },
            self.best.unwrap_or(f64::NAN),
            self.best_epoch,
            if self.restore_best_weights {
                format!("; restoring the weights of epoch {}", self.best_epoch)
            } else {
                String::new()
            }
        )
    }

    /// Why this callback would stop a `fit` of `trainer` before its first epoch: the epochs its
    /// history holds (a resumed checkpoint's) have already spent the patience. `None` when it
    /// would train. Lets a program say so before it starts a run that does nothing.
    #[must_use]
    pub fn stops_at_once(&self, trainer: &Trainer) -> Option<String> {
        match self.clone().recover(trainer) {
            Control::Stop(why) | Control::StopAndRestore(why) => Some(why),
            Control::Continue => None,
        }
    }

    /// Picks up the best value, the patience count and the best weights from the epochs
    /// `trainer` has already run (see [`Callback::on_train_begin`]).
    fn recover(&mut self, trainer: &Trainer) -> Control {
        (self.best, self.wait, self.stopped_epoch) = (None, 0, None);
        let mut last = None;
        for log in &trainer.history().epochs {
            if let Some(v) = log.get(&self.monitor) {
                self.observe(v, log.epoch);
                last = Some(log.epoch);
            }
        }
        if self.restore_best_weights && self.best.is_some() && trainer.kept_tensors(&self.kept_key()).is_empty() {
            // The best epoch's weights were not kept (a checkpoint written without this
            // callback, or an earlier `fit` without it): start afresh, as Keras does, rather
            // than end claiming a best whose weights cannot be put back.
            (self.best, self.wait) = (None, 0);
            return Control::Continue;
        }
        match last {
            Some(epoch) if self.wait > 0 && self.wait >= self.patience => {
                self.stopped_epoch = Some(epoch);
                Control::Stop(self.stop_message())
            }
            _ => Control::Continue,
        }
    }

    /// Where its best weights are kept in checkpoints ([`Trainer::keep_tensors`]).
    fn kept_key(&self) -> String {
        format!("early_stopping.{}", self.monitor)
    }

    /// Takes in epoch value `v`: whether it improves on the best by more than `min_delta`
    /// (then it becomes the best and the wait starts again), else one more epoch of waiting.
    fn observe(&mut self, v: f64, epoch: usize) -> bool {
        let better = improves(&self.monitor, self.best, v, self.min_delta);
        if better {
            self.best = Some(v);
            self.best_epoch = epoch;
            self.wait = 0;
        } else {
            self.wait += 1;
        }
        better
    }
}

impl Callback for EarlyStopping {
    /// Recovers the best value and the patience count from the epochs already run, and with
    /// `restore_best_weights` the best epoch's weights from the tensors the checkpoint kept, so
    /// a resumed run stops, and ends, as the uninterrupted one would (Keras starts afresh).
    /// Epochs without the metric (run before validation data was given) do not count. A run
    /// that had already waited its patience stops at once, as it would have. With
    /// `restore_best_weights` but no kept weights for the best epoch, it starts afresh.
    ///
    /// # Errors
    /// A monitor this fit does not report; kept best weights that do not fit the model (an
    /// edited or damaged checkpoint), refused here rather than when they would be put back.
    fn on_train_begin(&mut self, trainer: &Trainer) -> Result<Control> {
        check_reported("EarlyStopping", &self.monitor, trainer)?;
        let kept = trainer.kept_tensors(&self.kept_key());
        if !kept.is_empty() {
            if let Some(why) = misfit(&kept, &trainer.model().weights()?) {
                return Err(crate::error::TrainError::Config(format!(
                    "EarlyStopping: the best weights the checkpoint kept (kept.{}.*) do not fit the model: {why}; \
                     the file was edited or is damaged",
                    self.kept_key()
                )));
            }
        }
        Ok(self.recover(trainer))
    }

    fn on_epoch_end(&mut self, log: &EpochLog, trainer: &mut Trainer) -> Result<Control> {
        let v = self.value(log)?;
        if self.observe(v, log.epoch) {
            if self.restore_best_weights {
                // Kept by the trainer, so that checkpoints carry them (from this epoch's on).
                let w = trainer.model().weights()?;
                trainer.keep_tensors(&self.kept_key(), w);
            }
            return Ok(Control::Continue);
        }
        // Keras: stop once `patience` epochs in a row have not improved.
        if self.wait >= self.patience {
            self.stopped_epoch = Some(log.epoch);
            return Ok(Control::Stop(self.stop_message()));
        }
        Ok(Control::Continue)
    }

    /// Puts back the best epoch's weights: with `restore_best_weights` when it stopped the
    /// run (this `fit`, or the run resumed), with `restore_at_end` whenever training ends.
    fn on_train_end(&mut self, trainer: &mut Trainer) -> Result<()> {
        let stopped = self.stopped_epoch.is_some();
        let best = trainer.kept_tensors(&self.kept_key());
        if self.restore_best_weights && (stopped || self.restore_at_end) && !best.is_empty() {
            trainer.model_mut().set_weights(&best)?;
        }
        Ok(())
    }
}

/// How `kept` fails to be a copy of `weights` (each name once, with its shape), if it does.
fn misfit(kept: &[nn_core::Tensor], weights: &[nn_core::Tensor]) -> Option<String> {
    for w in weights {
        match kept.iter().find(|k| k.name == w.name) {
            None => return Some(format!("{} is missing", w.name)),
            Some(k) if k.shape != w.shape => {
                return Some(format!("{} is {:?}, the model's {:?}", w.name, k.shape, w.shape))
            }
            Some(_) => {}
        }
    }
    kept.iter()
        .find(|k| !weights.iter().any(|w| w.name == k.name))
        .map(|k| format!("{} is no weight of the model", k.name))
        .or_else(|| (kept.len() != weights.len()).then(|| "a weight is kept twice".to_string()))
}

/// Saves a resumable checkpoint (weights, optimiser state, progress, history) after each epoch,
/// or only when the monitored metric improves (Keras: monitor `val_loss`). Writes are atomic,
/// and a missing folder on the path is made first (as Keras's). As in Keras, the path may name the epoch and its metrics, one file per epoch:
/// `ck-{epoch:02d}-{val_loss:.4f}.safetensors` (`{epoch}`, `{epoch:02d}`, `{epoch:d}`, and
/// `{name}` or `{name:.Nf}` for any of [`EpochLog::METRICS`]).
#[derive(Clone, Debug)]
pub struct ModelCheckpoint {
    /// Where to write (a template: see above).
    pub path: PathBuf,
    /// Metric deciding "best".
    pub monitor: String,
    /// Save only improvements.
    pub save_best_only: bool,
    /// The best value so far, and whether it was the metric itself (see `value`).
    best: Option<(f64, bool)>,
    /// Where this epoch is to be saved, if it is (decided at its end, saved once every
    /// callback is done).
    pending: Option<PathBuf>,
}

impl ModelCheckpoint {
    /// Saves to `path` after every epoch.
    pub fn new(path: impl Into<PathBuf>) -> ModelCheckpoint {
        ModelCheckpoint {
            path: path.into(),
            monitor: "val_loss".into(),
            save_best_only: false,
            best: None,
            pending: None,
        }
    }
    /// Saves only when `monitor` improves.
    pub fn save_best_only(mut self, monitor: &str) -> ModelCheckpoint {
        self.save_best_only = true;
        self.monitor = monitor.into();
        self
    }
}

impl ModelCheckpoint {
    /// The monitored value of `log` and whether it is the metric itself: else, for a `val_`
    /// metric in an epoch without validation data, its training counterpart. An error names
    /// the metric when neither is reported.
    fn value(&self, log: &EpochLog) -> Result<(f64, bool)> {
        if let Some(v) = log.get(&self.monitor) {
            return Ok((v, true));
        }
        log.get(self.monitor.trim_start_matches("val_")).map(|v| (v, false)).ok_or_else(|| {
            crate::error::TrainError::Config(format!(
                "ModelCheckpoint monitors {}, which this run does not report",
                self.monitor
            ))
        })
    }

    /// Whether `(v, exact)` (see [`ModelCheckpoint::value`]) beats the best so far, and
    /// becomes it. A value of the other kind (validation against training) starts afresh.
    fn improves(&mut self, (v, exact): (f64, bool)) -> bool {
        let better = match self.best {
            Some((b, kind)) if kind == exact => {
                if lower_is_better(&self.monitor) {
                    v < b
                } else {
                    v > b
                }
            }
            _ => true,
        };
        if better {
            self.best = Some((v, exact));
        }
        better
    }
}

impl Callback for ModelCheckpoint {
    /// With `save_best_only`, the best value so far is taken from the epochs already run, so a
    /// resumed run does not overwrite a better checkpoint with a worse one.
    fn on_train_begin(&mut self, trainer: &Trainer) -> Result<Control> {
        if self.save_best_only {
            check_monitor("ModelCheckpoint", &self.monitor)?;
        }
        crate::path_template::check(&self.path).map_err(|e| crate::error::TrainError::Checkpoint {
            path: self.path.clone(),
            message: format!("the file name cannot be filled in: {e}"),
        })?;
        if !trainer.validates() && self.path.to_str().is_some_and(|p| p.contains("{val_")) {
            return Err(crate::error::TrainError::Config(format!(
                "ModelCheckpoint {}: names a validation metric, but this fit has no validation data",
                self.path.display()
            )));
        }
        self.best = None;
        if self.save_best_only {
            for log in &trainer.history().epochs {
                let v = self.value(log)?;
                self.improves(v);
            }
        }
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, log: &EpochLog, _trainer: &mut Trainer) -> Result<Control> {
        let save = !self.save_best_only || {
            let v = self.value(log)?;
            self.improves(v)
        };
        self.pending = if save {
            let path = crate::path_template::fill(&self.path, log)
                .map_err(|e| crate::error::TrainError::Checkpoint { path: self.path.clone(), message: e })?;
            Some(path)
        } else {
            None
        };
        Ok(Control::Continue)
    }

    /// Saves, making the file's folder first if it is missing (as Keras's does).
    fn on_epoch_committed(&mut self, trainer: &mut Trainer) -> Result<()> {
        if let Some(path) = self.pending.take() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
                std::fs::create_dir_all(dir).map_err(|e| crate::error::TrainError::Checkpoint {
                    path: dir.to_path_buf(),
                    message: format!("cannot create the folder: {e}"),
                })?;
            }
            trainer.save_checkpoint(&path)?;
        }
        Ok(())
    }
}

/// Stops as soon as a batch's loss is NaN or infinite, and puts back the weights, optimiser
/// state and progress of the last completed epoch (Keras only stops), so that saving or
/// training on afterwards starts from good numbers.
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

/// What the callbacks' unit tests share: a small trainer and an epoch's log.
#[cfg(test)]
pub(crate) mod testing {
    #![allow(clippy::unwrap_used)]
    use crate::history::EpochLog;
    use crate::{Compile, Trainer};
    use nn_core::{Dense, Model, ModelSpec};

    /// A trainer of a 4-input, 2-unit dense model with the default compile (Adam at 1e-3), as
    /// in a fit with validation data (so `val_*` monitors pass their check).
    pub(crate) fn trainer() -> Trainer {
        let mut t = Trainer::new(Model::new(&ModelSpec::new(&[4]).add(Dense::new(2)), 1).unwrap(), Compile::default());
        t.validating = true;
        t
    }

    /// The log of `epoch` with this validation loss (and made-up other numbers).
    pub(crate) fn log(epoch: usize, val_loss: f64) -> EpochLog {
        EpochLog {
            epoch,
            loss: 1.0,
            accuracy: 0.5,
            val_loss: Some(val_loss),
            val_accuracy: Some(0.5),
            seconds: 0.0,
            lr: 1e-3,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::testing::{log, trainer};
    use super::*;
    use crate::history::History;

    /// The epoch at which `es` stops on `values` (epochs 1, 2, …), if it does.
    fn stops_at(mut es: EarlyStopping, values: &[f64]) -> Option<usize> {
        let mut t = trainer();
        for (i, &v) in values.iter().enumerate() {
            if let Control::Stop(_) = es.on_epoch_end(&log(i + 1, v), &mut t).unwrap() {
                return Some(i + 1);
            }
        }
        None
    }

    #[test]
    fn early_stopping_stops_after_patience_epochs_without_improvement_as_keras() {
        // Best at epoch 2; epochs 3, 4 and 5 do not improve on it.
        let values = [1.0, 0.8, 0.9, 0.85, 0.95];
        // Keras counts the epoch that fails to improve before comparing with the patience, so
        // patience 0 and 1 both stop at the first such epoch.
        for (patience, want) in [(0, Some(3)), (1, Some(3)), (2, Some(4)), (3, Some(5)), (4, None)] {
            let got = stops_at(EarlyStopping::new("val_loss").patience(patience), &values);
            assert_eq!(got, want, "patience {patience}");
        }
        // A gain smaller than min_delta is no improvement.
        let es = EarlyStopping::new("val_loss").patience(1).min_delta(0.1);
        assert_eq!(stops_at(es, &[1.0, 0.95, 0.5]), Some(2));
        // Accuracy improves upwards.
        let mut es = EarlyStopping::new("val_accuracy").patience(1);
        let mut t = trainer();
        let acc = |e: usize, a: f64| EpochLog { val_accuracy: Some(a), ..log(e, 1.0) };
        assert_eq!(es.on_epoch_end(&acc(1, 0.5), &mut t).unwrap(), Control::Continue);
        assert_eq!(es.on_epoch_end(&acc(2, 0.6), &mut t).unwrap(), Control::Continue);
        assert!(matches!(es.on_epoch_end(&acc(3, 0.55), &mut t).unwrap(), Control::Stop(_)));
    }

    #[test]
    fn early_stopping_continues_its_count_from_the_history() {
        let mut history = History { epochs: vec![log(1, 1.0), log(2, 0.8), log(3, 0.9)], ..Default::default() };
        let mut es = EarlyStopping::new("val_loss").patience(2);
        let begin = es.on_train_begin(&trainer().with_history(history.clone())).unwrap();
        assert_eq!(begin, Control::Continue);
        // The uninterrupted run has waited one epoch already: the next bad one stops it.
        assert!(matches!(es.on_epoch_end(&log(4, 0.85), &mut trainer()).unwrap(), Control::Stop(_)));
        // A run that had waited its patience already (the checkpoint of the epoch it stopped
        // at) stops before training.
        history.epochs.push(log(4, 0.85));
        let begin = es.on_train_begin(&trainer().with_history(history.clone())).unwrap();
        assert!(
            matches!(begin, Control::Stop(ref why) if why.contains("val_loss did not improve for 2 epochs (best 0.8000 at epoch 2)")),
            "{begin:?}"
        );
        // Epochs run without validation data do not count; the current epoch must have it.
        let no_val = |e: usize| EpochLog { val_loss: None, ..log(e, 0.0) };
        let history = History { epochs: vec![no_val(1), no_val(2)], ..Default::default() };
        assert_eq!(es.on_train_begin(&trainer().with_history(history)).unwrap(), Control::Continue);
        assert_eq!(es.on_epoch_end(&log(3, 0.9), &mut trainer()).unwrap(), Control::Continue);
        let err = es.on_epoch_end(&no_val(4), &mut trainer()).unwrap_err().to_string();
        assert!(err.contains("val_loss"), "{err}");
    }

    #[test]
    fn checkpoint_best_only_keeps_the_best_across_a_resume_and_names_a_missing_metric() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("best.safetensors");
        let mut t = trainer();
        // An epoch's end, then the save once every callback is done.
        let end = |cp: &mut ModelCheckpoint, log: &EpochLog, t: &mut Trainer| {
            cp.on_epoch_end(log, t)?;
            cp.on_epoch_committed(t)
        };
        let history = History { epochs: vec![log(1, 0.5)], ..Default::default() };
        let mut cp = ModelCheckpoint::new(&path).save_best_only("val_loss");
        cp.on_train_begin(&trainer().with_history(history)).unwrap();
        end(&mut cp, &log(2, 0.6), &mut t).unwrap();
        assert!(!path.exists(), "a worse epoch after the resume overwrote the best checkpoint");
        end(&mut cp, &log(3, 0.4), &mut t).unwrap();
        assert!(path.exists(), "a better epoch was not saved");
        // Without validation, a val_ metric falls back to its training counterpart.
        let mut cp = ModelCheckpoint::new(dir.path().join("b.safetensors")).save_best_only("val_loss");
        let no_val = EpochLog { val_loss: None, ..log(1, 0.0) };
        end(&mut cp, &no_val, &mut t).unwrap();
        assert!(dir.path().join("b.safetensors").exists());
        // After a stretch without validation, the first validated epoch starts a new best
        // (a validation loss is not compared with a training loss).
        let mut cp = ModelCheckpoint::new(dir.path().join("v.safetensors")).save_best_only("val_loss");
        let trained = EpochLog { val_loss: None, loss: 0.1, ..log(1, 0.0) };
        cp.on_train_begin(&trainer().with_history(History { epochs: vec![trained], ..Default::default() })).unwrap();
        end(&mut cp, &log(2, 0.6), &mut t).unwrap();
        assert!(dir.path().join("v.safetensors").exists());
        // A metric the run does not report at all is an error naming it.
        let mut cp = ModelCheckpoint::new(dir.path().join("c.safetensors")).save_best_only("val_acuracy");
        let err = end(&mut cp, &log(1, 0.5), &mut t).unwrap_err().to_string();
        assert!(err.contains("val_acuracy"), "{err}");
        // Both callbacks name a misspelt metric before the first epoch trains.
        let err = cp.on_train_begin(&t).unwrap_err().to_string();
        assert!(err.contains("val_acuracy") && err.contains("val_accuracy"), "{err}");
        let err = EarlyStopping::new("val_los").on_train_begin(&t).unwrap_err().to_string();
        assert!(err.contains("val_los") && err.contains("val_loss"), "{err}");
    }
}
