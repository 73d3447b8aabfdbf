//! Validation splits.

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// Keras's `validation_split`: the *last* `fraction` of the examples (taken before any
/// shuffling) become the validation set. Returns `(train, validation)`; the training part holds
/// `floor(n * (1 - fraction))` examples, as in Keras.
///
/// # Errors
/// [`DataError::Config`] when `fraction` is not in `(0, 1)` or leaves either part empty.
pub fn validation_split(ds: &Dataset, fraction: f64) -> Result<(Dataset, Dataset)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(DataError::Config(format!("validation split must be between 0 and 1 (exclusive), got {fraction}")));
    }
    let split_at = ds.len() - validation_len(ds.len(), fraction);
    if split_at == 0 || split_at == ds.len() {
        return Err(DataError::Config(format!(
            "validation split {fraction} of {} examples leaves an empty part",
            ds.len()
        )));
    }
    Ok((ds.slice(0..split_at), ds.slice(split_at..ds.len())))
}

/// How many of `n` examples [`validation_split`] gives the validation part: `n` less
/// `floor(n * (1 - fraction))`.
pub fn validation_len(n: usize, fraction: f64) -> usize {
    n - (n as f64 * (1.0 - fraction)).floor() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_last_fraction() {
        let ds = Dataset::new((0..10).collect(), (0..10).map(|i| i % 3).collect(), 1, 1, 3).unwrap();
        let (t, v) = validation_split(&ds, 0.2).unwrap();
        assert_eq!(t.len(), 8);
        assert_eq!(v.images(), &[8, 9]);
        let err = validation_split(&ds, 1.5).unwrap_err().to_string();
        assert!(err.contains("between 0 and 1"), "{err}");
        let err = validation_split(&ds, 0.95).unwrap_err().to_string();
        assert!(err.contains("empty part"), "{err}");
    }
}
