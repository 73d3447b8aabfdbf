//! The per-epoch record of a run (Keras's `History.history`), as CSV or JSON.

use serde::{Deserialize, Serialize};

/// One epoch's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's examples (plus the regularisation penalty).
    pub loss: f64,
    /// Training accuracy over the epoch.
    pub accuracy: f64,
    /// Validation loss, when there is validation data.
    pub val_loss: Option<f64>,
    /// Validation accuracy.
    pub val_accuracy: Option<f64>,
    /// Wall time of the epoch (training and validation).
    pub seconds: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
}

impl EpochLog {
    /// The names [`EpochLog::get`] knows.
    pub const METRICS: [&'static str; 9] =
        ["loss", "accuracy", "acc", "val_loss", "val_accuracy", "val_acc", "lr", "learning_rate", "seconds"];

    /// A metric by Keras name (`loss`, `accuracy`, `val_loss`, `val_accuracy`; also `lr` and
    /// `seconds`).
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "loss" => Some(self.loss),
            "accuracy" | "acc" => Some(self.accuracy),
            "val_loss" => self.val_loss,
            "val_accuracy" | "val_acc" => self.val_accuracy,
            "lr" | "learning_rate" => Some(self.lr),
            "seconds" => Some(self.seconds),
            _ => None,
        }
    }
}

/// All epochs of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The epochs, in order.
    pub epochs: Vec<EpochLog>,
    /// Why the last `fit` stopped before its last epoch (early stopping, a NaN loss, …), in
    /// words; `None` when it ran every epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl History {
    /// The last epoch.
    pub fn last(&self) -> Option<&EpochLog> {
        self.epochs.last()
    }
    /// Whether the last `fit` was stopped by an [`crate::Interrupt`] (its unfinished epoch
    /// undone), rather than ending or being stopped by a callback.
    pub fn interrupted(&self) -> bool {
        self.stopped.as_deref().is_some_and(|why| why.starts_with(crate::interrupt::INTERRUPTED))
    }
    /// The series of one metric (missing values skipped).
    pub fn series(&self, name: &str) -> Vec<f64> {
        self.epochs.iter().filter_map(|e| e.get(name)).collect()
    }
    /// CSV with a header line: `epoch,loss,accuracy,val_loss,val_accuracy,seconds,lr`.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("epoch,loss,accuracy,val_loss,val_accuracy,seconds,lr\n");
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        for e in &self.epochs {
            s += &format!(
                "{},{:.6},{:.6},{},{},{:.3},{:.6e}\n",
                e.epoch,
                e.loss,
                e.accuracy,
                opt(e.val_loss),
                opt(e.val_accuracy),
                e.seconds,
                e.lr
            );
        }
        s
    }
    /// JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_metric_is_known_and_no_other() {
        let log = EpochLog {
            epoch: 1,
            loss: 0.5,
            accuracy: 0.9,
            val_loss: Some(0.6),
            val_accuracy: Some(0.8),
            seconds: 1.0,
            lr: 1e-3,
        };
        assert!(EpochLog::METRICS.iter().all(|m| log.get(m).is_some()));
        assert_eq!(log.get("val_los"), None);
    }
}
