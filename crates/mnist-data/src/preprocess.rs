//! Turning bytes into the arrays a network eats: scaling, standardisation, flattening or
//! `[N, 1, H, W]`, one-hot and sparse labels.

use ndarray::{Array2, Array4};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// How raw pixel bytes become `f32` inputs.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Normalization {
    /// `x / 255`, into `[0, 1]` (the tutorials' default).
    #[default]
    Scale,
    /// `(x / 255 - mean) / std`, e.g. MNIST's `0.1307, 0.3081`.
    Standardize {
        /// Mean of the scaled pixels.
        mean: f32,
        /// Standard deviation of the scaled pixels.
        std: f32,
    },
}

impl Normalization {
    /// The standardisation PyTorch's MNIST examples use.
    pub const MNIST_STANDARD: Normalization = Normalization::Standardize { mean: 0.1307, std: 0.3081 };

    /// What every value this normalisation makes is: an integer divided by the returned
    /// divisor (`Some(255.0)` for [`Normalization::Scale`], bytes divided by 255); `None` for
    /// standardisation. A network told so may multiply the integers exactly (see
    /// `nn_core::Runtime::set_input_levels`).
    pub fn levels(self) -> Option<f32> {
        match self {
            Normalization::Scale => Some(255.0),
            Normalization::Standardize { .. } => None,
        }
    }

    /// The `f32` value of each of the 256 byte values (`x / 255.0` exactly as Keras computes it).
    pub fn table(self) -> [f32; 256] {
        let mut t = [0f32; 256];
        for (v, out) in t.iter_mut().enumerate() {
            let x = v as f32 / 255.0;
            *out = match self {
                Normalization::Scale => x,
                Normalization::Standardize { mean, std } => (x - mean) / std,
            };
        }
        t
    }

    /// Converts bytes into `out` (same length), reusing the caller's buffer. The same
    /// arithmetic as [`Normalization::table`], vectorised: with AVX-512 or AVX2 when the CPU has
    /// them (checked at run time; IEEE division, so every width gives the same values).
    ///
    /// Called once per image of every batch, so a length mismatch (a bug of the caller) is
    /// checked by one comparison rather than reported as an error.
    ///
    /// # Panics
    /// When `bytes.len() != out.len()`, with a message giving both lengths.
    #[inline]
    pub fn apply(self, bytes: &[u8], out: &mut [f32]) {
        assert_eq!(
            bytes.len(),
            out.len(),
            "Normalization::apply: {} bytes in, but an output of {} values",
            bytes.len(),
            out.len()
        );
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked just above).
                return unsafe { self.apply_avx512(bytes, out) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2 (checked just above).
                return unsafe { self.apply_avx2(bytes, out) };
            }
        }
        self.apply_portable(bytes, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn apply_avx512(self, bytes: &[u8], out: &mut [f32]) {
        self.apply_fma(bytes, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn apply_avx2(self, bytes: &[u8], out: &mut [f32]) {
        self.apply_fma(bytes, out);
    }

    /// [`Normalization::apply_portable`] with `x / 255` as a multiplication and one fused
    /// correction step (exact for every byte, see the test): several times faster than a
    /// division where the CPU has FMA.
    #[inline(always)]
    fn apply_fma(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            Normalization::Scale => {
                for (o, &p) in out.iter_mut().zip(bytes) {
                    *o = div255(p);
                }
            }
            Normalization::Standardize { .. } => self.apply_portable(bytes, out),
        }
    }

    #[inline(always)]
    fn apply_portable(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            Normalization::Scale => {
                for (o, &p) in out.iter_mut().zip(bytes) {
                    *o = p as f32 / 255.0;
                }
            }
            Normalization::Standardize { mean, std } => {
                for (o, &p) in out.iter_mut().zip(bytes) {
                    *o = (p as f32 / 255.0 - mean) / std;
                }
            }
        }
    }
}

/// `p / 255` correctly rounded, without a division: `q = p·(1/255)` is within an ulp, the
/// residual `p - 255·q` is exact in one fused multiply-add, and one more corrects `q`.
#[inline(always)]
fn div255(p: u8) -> f32 {
    const R: f32 = 1.0 / 255.0;
    let x = p as f32;
    let q = x * R;
    let r = (-q).mul_add(255.0, x);
    r.mul_add(R, q)
}

/// Converts bytes through a [`Normalization::table`] into `out` (same length).
///
/// # Panics
/// When `bytes.len() != out.len()`, with a message giving both lengths.
#[inline]
pub fn apply_table(table: &[f32; 256], bytes: &[u8], out: &mut [f32]) {
    assert_eq!(bytes.len(), out.len(), "apply_table: {} bytes in, but an output of {} values", bytes.len(), out.len());
    for (o, &p) in out.iter_mut().zip(bytes) {
        *o = table[p as usize];
    }
}

/// All images as `[N, rows*cols]` `f32`, normalised (Keras's `reshape(-1, 784) / 255`).
pub fn flatten(ds: &Dataset, norm: Normalization) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((ds.len(), ds.pixels()));
    if let Some(slice) = out.as_slice_mut() {
        norm.apply(ds.images(), slice);
    }
    out
}

/// All images as `[N, 1, rows, cols]` `f32`, normalised (channels first).
pub fn to_nchw(ds: &Dataset, norm: Normalization) -> Array4<f32> {
    let mut out = Array4::<f32>::zeros((ds.len(), 1, ds.rows(), ds.cols()));
    if let Some(slice) = out.as_slice_mut() {
        norm.apply(ds.images(), slice);
    }
    out
}

/// Keras's `to_categorical`: labels `[N]` as one-hot `[N, classes]` (row `i` is 1 at column
/// `labels[i]`, 0 elsewhere).
///
/// # Errors
/// [`DataError::Config`] when a label is not below `classes` (Keras raises too, rather than
/// leaving an all-zero row), naming the label and its index; or when `N × classes` is too
/// large for an array.
pub fn one_hot(labels: &[u8], classes: usize) -> Result<Array2<f32>> {
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
        return Err(DataError::Config(format!("one_hot: label {l} at index {i} is not below {classes} classes")));
    }
    if labels.len().checked_mul(classes).is_none_or(|n| n > isize::MAX as usize / std::mem::size_of::<f32>()) {
        return Err(DataError::Config(format!(
            "one_hot: {} labels × {classes} classes is too large for an array",
            labels.len()
        )));
    }
    let mut out = Array2::<f32>::zeros((labels.len(), classes));
    for (i, &l) in labels.iter().enumerate() {
        out[[i, l as usize]] = 1.0;
    }
    Ok(out)
}

/// Sparse labels `[N]` as `usize` class indices (for `sparse_categorical_crossentropy`).
pub fn sparse_labels(labels: &[u8]) -> Vec<usize> {
    labels.iter().map(|&l| l as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::panic_message;

    #[test]
    fn division_free_scaling_is_exact_for_every_byte() {
        for p in 0..=255u8 {
            assert_eq!(div255(p).to_bits(), (p as f32 / 255.0).to_bits(), "byte {p}");
        }
    }

    #[test]
    fn scaled_bytes_are_the_levels_they_are_declared_to_be() {
        // What `levels()` promises a network: each scaled value times the divisor is its byte,
        // to within a unit in the last place (the check on the other side allows two).
        let d = Normalization::Scale.levels().unwrap();
        for (p, v) in Normalization::Scale.table().into_iter().enumerate() {
            let t = v * d;
            assert_eq!(t.round(), p as f32, "byte {p}");
            assert!(t.to_bits().abs_diff((p as f32).to_bits()) <= 1, "byte {p}: {t}");
        }
        assert_eq!(Normalization::MNIST_STANDARD.levels(), None);
    }

    #[test]
    fn scaling_standardisation_and_one_hot() {
        let ds = Dataset::new(vec![0, 255, 51, 102], vec![2], 2, 2, 3).unwrap();
        let x = flatten(&ds, Normalization::Scale);
        assert_eq!(x.shape(), &[1, 4]);
        assert_eq!(x.as_slice().unwrap(), &[0.0, 1.0, 0.2, 0.4]);
        let s = flatten(&ds, Normalization::Standardize { mean: 0.5, std: 0.5 });
        assert!((s[[0, 0]] + 1.0).abs() < 1e-6 && (s[[0, 1]] - 1.0).abs() < 1e-6);
        assert_eq!(to_nchw(&ds, Normalization::Scale).shape(), &[1, 1, 2, 2]);
        let bytes: Vec<u8> = (0..=255).collect();
        for norm in [Normalization::Scale, Normalization::MNIST_STANDARD] {
            let mut a = vec![0f32; 256];
            norm.apply(&bytes, &mut a);
            assert_eq!(&a[..], &norm.table()[..]);
        }
        let y = one_hot(&[2, 0], 3).unwrap();
        assert_eq!(y.as_slice().unwrap(), &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(sparse_labels(&[2, 0]), vec![2, 0]);
    }

    #[test]
    fn one_hot_rejects_labels_outside_the_classes() {
        let err = one_hot(&[3, 12], 10).unwrap_err();
        assert!(
            matches!(&err, DataError::Config(m) if m.contains("label 12 at index 1") && m.contains("10 classes")),
            "{err}"
        );
        assert!(one_hot(&[0], 0).is_err());
        assert!(one_hot(&[0, 1], usize::MAX).is_err());
        assert_eq!(one_hot(&[], 10).unwrap().shape(), &[0, 10]);
        assert_eq!(one_hot(&[9], 10).unwrap().sum(), 1.0);
    }

    #[test]
    fn conversions_refuse_buffers_of_another_length() {
        for norm in [Normalization::Scale, Normalization::MNIST_STANDARD] {
            let m = panic_message(|| norm.apply(&[1, 2, 3], &mut [0.0; 2]));
            assert!(m.contains("Normalization::apply") && m.contains("3 bytes") && m.contains("2 values"), "{m}");
            let m = panic_message(|| norm.apply(&[1, 2], &mut [0.0; 3]));
            assert!(m.contains("2 bytes") && m.contains("3 values"), "{m}");
        }
        let table = Normalization::Scale.table();
        let m = panic_message(|| apply_table(&table, &[1, 2, 3], &mut [0.0; 4]));
        assert!(m.contains("apply_table") && m.contains("3 bytes") && m.contains("4 values"), "{m}");
        let mut out = [f32::NAN; 2];
        apply_table(&table, &[0, 255], &mut out);
        assert_eq!(out, [0.0, 1.0]);
    }
}
