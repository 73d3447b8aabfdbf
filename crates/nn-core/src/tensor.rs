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
