//! Exploring a data set: shape, pixel range, mean and standard deviation, class counts.

use std::fmt;

use crate::dataset::Dataset;

/// The numbers a tutorial prints before training (`x_train.shape`, `min/max`, `np.bincount`).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Number of images.
    pub len: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// Smallest pixel value (0..=255).
    pub min: u8,
    /// Largest pixel value (0..=255).
    pub max: u8,
    /// Mean pixel value on the 0..=255 scale.
    pub mean: f64,
    /// Standard deviation of the pixels on the 0..=255 scale.
    pub std: f64,
    /// Examples per class, indexed by label.
    pub class_counts: Vec<usize>,
}

impl Summary {
    /// Computes the summary in one pass over the pixels.
    pub fn of(ds: &Dataset) -> Summary {
        let mut hist = [0u64; 256];
        for &p in ds.images() {
            hist[p as usize] += 1;
        }
        let n: u64 = hist.iter().sum();
        let min = hist.iter().position(|&c| c > 0).unwrap_or(0) as u8;
        let max = hist.iter().rposition(|&c| c > 0).unwrap_or(0) as u8;
        let (mut s, mut s2) = (0f64, 0f64);
        for (v, &c) in hist.iter().enumerate() {
            s += v as f64 * c as f64;
            s2 += (v * v) as f64 * c as f64;
        }
        let mean = if n > 0 { s / n as f64 } else { 0.0 };
        let std = if n > 0 { (s2 / n as f64 - mean * mean).max(0.0).sqrt() } else { 0.0 };
        let mut class_counts = vec![0usize; ds.classes()];
        for &l in ds.labels() {
            class_counts[l as usize] += 1;
        }
        Summary { len: ds.len(), rows: ds.rows(), cols: ds.cols(), min, max, mean, std, class_counts }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "shape: ({}, {}, {})", self.len, self.rows, self.cols)?;
        writeln!(
            f,
            "pixels: {}..={}, mean {:.2} ({:.4} scaled), std {:.2} ({:.4} scaled)",
            self.min,
            self.max,
            self.mean,
            self.mean / 255.0,
            self.std,
            self.std / 255.0
        )?;
        let counts: Vec<String> = self.class_counts.iter().map(|c| c.to_string()).collect();
        write!(f, "class counts: {}", counts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_tiny_set() {
        let ds = Dataset::new(vec![0, 255, 0, 255, 10, 10, 10, 10], vec![1, 1], 2, 2, 3).unwrap();
        let s = Summary::of(&ds);
        assert_eq!((s.len, s.rows, s.cols, s.min, s.max), (2, 2, 2, 0, 255));
        assert!((s.mean - 68.75).abs() < 1e-9);
        assert_eq!(s.class_counts, vec![0, 2, 0]);
        assert!(s.to_string().contains("shape: (2, 2, 2)"));
    }
}
