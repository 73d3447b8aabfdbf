//! `ReduceLROnPlateau`: lowers the learning rate when the monitored metric stops improving,
//! as Keras's callback of that name.

use nn_core::Tensor;

use crate::callbacks::{check_reported, improves, Callback, Control};
use crate::error::{Result, TrainError};
use crate::history::EpochLog;
use crate::trainer::Trainer;

/// Multiplies the learning rate by `factor` once the monitored metric has not improved by
/// `min_delta` for `patience` epochs, then waits `cooldown` epochs before counting again, and
/// never goes below `min_lr` (Keras defaults: `val_loss`, factor 0.1, patience 10, min_delta
/// 1e-4, cooldown 0, min_lr 0), nor below the smallest normal `f32` (where Keras's would reach
/// 0). It sets the trainer's base rate ([`Trainer::set_learning_rate`]): under a schedule
/// (which Keras refuses here) it scales the schedule's rates, and `min_lr` bounds the base
/// rate, not the schedule's.
///
/// ```
/// use nn_train::ReduceLROnPlateau;
/// let cb = ReduceLROnPlateau::new("val_loss").factor(0.5).patience(2).min_lr(1e-5);
/// # let _ = cb;
/// ```
#[derive(Clone, Debug)]
pub struct ReduceLROnPlateau {
    /// Metric to watch (`val_loss`, `val_accuracy`, `loss`, `accuracy`); accuracies improve
    /// upwards.
    pub monitor: String,
    /// What the rate is multiplied by, in (0, 1).
    pub factor: f32,
    /// Epochs without improvement before lowering the rate.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
    /// Epochs after a reduction before epochs without improvement count again.
    pub cooldown: usize,
    /// The rate is never lowered below this.
    pub min_lr: f32,
    best: Option<f64>,
    wait: usize,
    cooldown_left: usize,
    /// The first epoch (index into the history) this callback watched: a resumed run finds
    /// its best among the epochs from there, not among those trained before it was added.
    since: usize,
}

impl Default for ReduceLROnPlateau {
    fn default() -> Self {
        ReduceLROnPlateau::new("val_loss")
    }
}

impl ReduceLROnPlateau {
    /// Watches `monitor` with Keras's defaults.
    pub fn new(monitor: &str) -> ReduceLROnPlateau {
        ReduceLROnPlateau {
            monitor: monitor.into(),
            factor: 0.1,
            patience: 10,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            best: None,
            wait: 0,
            cooldown_left: 0,
            since: 0,
        }
    }
    /// Sets the factor.
    pub fn factor(mut self, f: f32) -> Self {
        self.factor = f;
        self
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
    /// Sets the cooldown.
    pub fn cooldown(mut self, c: usize) -> Self {
        self.cooldown = c;
        self
    }
    /// Sets the lowest rate.
    pub fn min_lr(mut self, lr: f32) -> Self {
        self.min_lr = lr;
        self
    }

    /// Where its counts are kept in checkpoints ([`Trainer::keep_tensors`]).
    fn kept_key(&self) -> String {
        format!("reduce_lr_on_plateau.{}", self.monitor)
    }

    /// Whether `v` improves on the best by more than `min_delta` (Keras's `monitor_op`).
    fn improves(&self, v: f64) -> bool {
        improves(&self.monitor, self.best, v, self.min_delta)
    }
}

impl Callback for ReduceLROnPlateau {
    /// Checks the settings; continues the counts of a resumed run from the checkpoint (the
    /// best value from the history, the wait and cooldown from the tensors the checkpoint
    /// kept), else starts afresh, as Keras does.
    fn on_train_begin(&mut self, trainer: &Trainer) -> Result<Control> {
        check_reported("ReduceLROnPlateau", &self.monitor, trainer)?;
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(TrainError::Config(format!(
                "ReduceLROnPlateau: factor {} must be between 0 and 1 (it multiplies the rate)",
                self.factor
            )));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0) {
            return Err(TrainError::Config(format!("ReduceLROnPlateau: min_lr {} must be 0 or more", self.min_lr)));
        }
        let epochs = &trainer.history().epochs;
        (self.best, self.wait, self.cooldown_left, self.since) = (None, 0, 0, epochs.len());
        if let [t] = &trainer.kept_tensors(&self.kept_key())[..] {
            // Checkpoints written before `since` was kept hold only the two counts.
            let (wait, cooldown, since) = match t.data[..] {
                [wait, cooldown] => (wait, cooldown, 0.0),
                [wait, cooldown, since] => (wait, cooldown, since),
                _ => return Ok(Control::Continue),
            };
            self.since = (since as usize).min(epochs.len());
            for v in epochs[self.since..].iter().filter_map(|log| log.get(&self.monitor)) {
                if self.improves(v) {
                    self.best = Some(v);
                }
            }
            (self.wait, self.cooldown_left) = (wait as usize, cooldown as usize);
        }
        Ok(Control::Continue)
    }

    fn on_epoch_end(&mut self, log: &EpochLog, trainer: &mut Trainer) -> Result<Control> {
        let v = log.get(&self.monitor).ok_or_else(|| {
            TrainError::Config(format!(
                "ReduceLROnPlateau monitors {}, which this run does not report (no validation data?)",
                self.monitor
            ))
        })?;
        // Keras's order: the cooldown runs down first; an improvement resets the wait; else,
        // out of cooldown, one more epoch of waiting, and at the patience a lower rate.
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            self.wait = 0;
        }
        if self.improves(v) {
            self.best = Some(v);
            self.wait = 0;
        } else if self.cooldown_left == 0 {
            self.wait += 1;
            let old = trainer.learning_rate();
            // A rate too small for an f32 (Keras would go on at 0) stays where it is.
            let new = (old * self.factor).max(self.min_lr);
            if self.wait >= self.patience && old > self.min_lr && new >= f32::MIN_POSITIVE {
                trainer.set_learning_rate(new)?;
                self.cooldown_left = self.cooldown;
                self.wait = 0;
            }
        }
        // Counts below 2^24, exact in f32.
        let counts = vec![self.wait as f32, self.cooldown_left as f32, self.since as f32];
        trainer.keep_tensors(&self.kept_key(), vec![Tensor { name: "counts".into(), shape: vec![3], data: counts }]);
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::callbacks::testing::{log, trainer};

    /// The base rate after each epoch of `values`.
    fn rates(cb: &mut ReduceLROnPlateau, t: &mut Trainer, values: &[f64]) -> Vec<f32> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                assert_eq!(cb.on_epoch_end(&log(i + 1, v), t).unwrap(), Control::Continue);
                t.learning_rate()
            })
            .collect()
    }

    #[test]
    fn the_rate_drops_after_patience_epochs_without_improvement_as_keras() {
        // Keras 3's rule (ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=2e-4),
        // Adam at 1e-3) on these val_loss values, the rate after each epoch: the best is 0.9
        // (epoch 2); epochs 3-4 wait and lower it; epoch 5 is the cooldown's, which resets the
        // wait but, its counter run down, counts itself (as Keras's does); epochs 5-6 lower
        // it again; epochs 7-8 to the floor; epochs 9-11 wait at the floor.
        let values = [1.0, 0.9, 0.95, 0.95, 0.96, 0.97, 0.99, 0.98, 0.97, 0.99, 0.99];
        let mut cb = ReduceLROnPlateau::new("val_loss").factor(0.5).patience(2).cooldown(1).min_lr(2e-4);
        let mut t = trainer();
        let got = rates(&mut cb, &mut t, &values);
        let want = [1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2e-4, 2e-4, 2e-4, 2e-4];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?}");
        }
        // A gain below min_delta is no improvement; accuracy improves upwards.
        let mut cb = ReduceLROnPlateau::new("val_loss").patience(1).min_delta(0.1);
        let mut t = trainer();
        assert_eq!(rates(&mut cb, &mut t, &[1.0, 0.95]), [1e-3, 1e-3 * 0.1]);
        let mut cb = ReduceLROnPlateau::new("val_accuracy").patience(1);
        let mut t = trainer();
        let acc = |e: usize, a: f64| EpochLog { val_accuracy: Some(a), ..log(e, 1.0) };
        cb.on_epoch_end(&acc(1, 0.5), &mut t).unwrap();
        cb.on_epoch_end(&acc(2, 0.6), &mut t).unwrap();
        assert_eq!(t.learning_rate(), 1e-3);
        cb.on_epoch_end(&acc(3, 0.55), &mut t).unwrap();
        assert!((t.learning_rate() - 1e-4).abs() < 1e-10);
    }

    #[test]
    fn a_resumed_run_finds_its_best_among_the_epochs_it_watched() {
        // Added at epoch 3 of a run whose first epochs were better (0.5): the uninterrupted
        // run's best is epoch 3's 1.0, so epoch 4's 0.9 improves and keeps the rate.
        let history = |n: usize| crate::history::History {
            epochs: [0.5, 0.6, 1.0, 0.9][..n].iter().enumerate().map(|(i, &v)| log(i + 1, v)).collect(),
            ..Default::default()
        };
        let plateau = || ReduceLROnPlateau::new("val_loss").patience(1);
        let mut cb = plateau();
        let mut t = trainer().with_history(history(2));
        cb.on_train_begin(&t).unwrap();
        cb.on_epoch_end(&log(3, 1.0), &mut t).unwrap();
        let kept = t.kept_tensors(&cb.kept_key());
        cb.on_epoch_end(&log(4, 0.9), &mut t).unwrap();
        assert_eq!(t.learning_rate(), 1e-3);
        // Resumed after epoch 3, with what the checkpoint kept: the same.
        let mut t = trainer().with_history(history(3));
        t.keep_tensors(&cb.kept_key(), kept);
        let mut resumed = plateau();
        resumed.on_train_begin(&t).unwrap();
        resumed.on_epoch_end(&log(4, 0.9), &mut t).unwrap();
        assert_eq!(t.learning_rate(), 1e-3);
    }

    #[test]
    fn the_rate_stops_before_it_would_be_zero() {
        let mut cb = ReduceLROnPlateau::new("val_loss").patience(0).min_delta(1e9);
        let mut t = trainer();
        let rates = rates(&mut cb, &mut t, &[1.0; 60]);
        let last = *rates.last().unwrap();
        assert!(last > 0.0 && last.is_normal() && last * 0.1 < f32::MIN_POSITIVE, "{last}");
    }

    #[test]
    fn settings_and_monitors_are_checked_before_training() {
        let t = trainer();
        for cb in [ReduceLROnPlateau::new("val_los"), ReduceLROnPlateau::new("loss").factor(1.5)] {
            assert!(cb.clone().on_train_begin(&t).is_err(), "{cb:?}");
        }
        let mut t = trainer();
        assert!(t.set_learning_rate(0.0).is_err() && t.set_learning_rate(f32::NAN).is_err());
        t.set_learning_rate(0.25).unwrap();
        assert_eq!(t.learning_rate(), 0.25);
    }
}
