//! A named host tensor: what weights, gradients and optimiser state look like outside a device.

use ndarray::{ArrayD, IxDyn};

/// A named `f32` tensor on the host, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Name, e.g. `dense.kernel`.
    pub name: String,
    /// Shape, e.g. `[784, 128]`.
    pub shape: Vec<usize>,
    /// Values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl Tensor {
    /// As an `ndarray` array of its shape.
    pub fn to_array(&self) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.data.clone()).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&[0])))
    }
}

/// `len` zeros, or an error when the memory cannot be had (instead of aborting the process).
///
/// # Errors
/// [`crate::NnError::Device`] naming the size that could not be allocated.
pub fn try_zeros(len: usize) -> crate::Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| out_of_host_memory(len, None))?;
    v.resize(len, 0.0);
    Ok(v)
}

/// The error for `len` floats that host memory could not hold, with the `free` bytes the system
/// had left when known.
pub(crate) fn out_of_host_memory(len: usize, free: Option<u64>) -> crate::NnError {
    const GIB: f64 = (1u64 << 30) as f64;
    let mut m = format!("cannot allocate {len} floats ({:.1} GiB) in host memory", len as f64 * 4.0 / GIB);
    if let Some(free) = free {
        m += &format!(": {:.1} GiB is free (a smaller batch, or fewer or narrower layers?)", free as f64 / GIB);
    }
    crate::NnError::Device(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_allocation_is_an_error_not_an_abort() {
        let err = try_zeros(usize::MAX / 8).unwrap_err().to_string();
        assert!(err.contains("cannot allocate"), "{err}");
        assert_eq!(try_zeros(3).ok(), Some(vec![0.0; 3]));
    }
}
