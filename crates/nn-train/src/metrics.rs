//! Evaluation results: loss, accuracy, confusion matrix, per-class precision / recall / F1.

use std::fmt;

/// A `classes × classes` confusion matrix: `counts[true][predicted]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Confusion {
    /// Counts, rows are true classes, columns predicted classes.
    pub counts: Vec<Vec<u64>>,
}

/// Precision, recall, F1 and support of one class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassReport {
    /// Of the examples predicted as this class, the fraction that are.
    pub precision: f64,
    /// Of the examples of this class, the fraction predicted so.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Examples of this class.
    pub support: u64,
}

impl Confusion {
    /// An empty matrix.
    pub fn new(classes: usize) -> Confusion {
        Confusion { counts: vec![vec![0; classes]; classes] }
    }
    /// From true labels and predicted classes, pair by pair (as scikit-learn's
    /// `confusion_matrix(labels=range(classes))`: a pair whose label or prediction is not one of
    /// the `classes` is not counted, nor are the pairs past the shorter slice).
    pub fn from_predictions(truth: &[u8], predicted: &[usize], classes: usize) -> Confusion {
        let mut c = Confusion::new(classes);
        for (&t, &p) in truth.iter().zip(predicted) {
            if (t as usize) < classes && p < classes {
                c.counts[t as usize][p] += 1;
            }
        }
        c
    }
    /// Total examples.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }
    /// Fraction on the diagonal.
    pub fn accuracy(&self) -> f64 {
        let right: u64 = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        right as f64 / self.total().max(1) as f64
    }
    /// Per-class precision, recall, F1.
    pub fn per_class(&self) -> Vec<ClassReport> {
        let k = self.counts.len();
        (0..k)
            .map(|i| {
                let tp = self.counts[i][i] as f64;
                let support: u64 = self.counts[i].iter().sum();
                let predicted: u64 = (0..k).map(|r| self.counts[r][i]).sum();
                let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
                let recall = if support > 0 { tp / support as f64 } else { 0.0 };
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassReport { precision, recall, f1, support }
            })
            .collect()
    }
}

impl fmt::Display for Confusion {
    /// The matrix as a text table (rows true, columns predicted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.counts.len();
        write!(f, "true\\pred")?;
        for j in 0..k {
            write!(f, "{j:>6}")?;
        }
        writeln!(f)?;
        for (i, row) in self.counts.iter().enumerate() {
            write!(f, "{i:>9}")?;
            for v in row {
                write!(f, "{v:>6}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// The index of the largest value of each row of `probs [n, classes]`.
pub fn argmax_rows(probs: &[f32], classes: usize) -> Vec<usize> {
    probs
        .chunks(classes.max(1))
        .map(|r| r.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_and_reports() {
        let c = Confusion::from_predictions(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0], 3);
        assert_eq!(c.counts, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]);
        assert!((c.accuracy() - 0.6).abs() < 1e-12);
        let r = c.per_class();
        assert!((r[1].precision - 2.0 / 3.0).abs() < 1e-12 && r[1].recall == 1.0 && r[1].support == 2);
        assert_eq!(r[2].f1, 0.0);
        assert_eq!(argmax_rows(&[0.1, 0.7, 0.2, 0.9, 0.05, 0.05], 3), vec![1, 0]);
    }
}
