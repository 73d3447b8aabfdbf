//! The device when the crate is built without the `cuda` feature: the same names, so code
//! using them compiles either way, but [`Cuda::new`] always fails and no value of [`Cuda`] can
//! exist.

use std::convert::Infallible;

use nn_core::activation::Activation;
use nn_core::device::{BatchNormArgs, Channels, Device, Gemm, Window};
use nn_core::loss::XentArgs;
use nn_core::optim::{StepParams, UpdateRule};
use nn_core::Result;

use crate::error::CudaError;
use crate::{DeviceInfo, Libraries};

/// The CUDA device (unavailable: built without the `cuda` feature).
#[derive(Debug)]
pub struct Cuda {
    never: Infallible,
}

/// The buffer type of the unavailable device (no value exists).
#[derive(Debug)]
pub enum NoBuffer {}

impl Cuda {
    /// Always fails: the crate was built without the `cuda` feature.
    ///
    /// # Errors
    /// Always, with a message saying how to rebuild.
    pub fn new(_ordinal: usize) -> Result<Cuda> {
        Err(CudaError::NotBuilt.into())
    }
    /// The device's identity.
    pub fn info(&self) -> &DeviceInfo {
        match self.never {}
    }
    /// Waits for all queued work.
    ///
    /// # Errors
    /// Never (no value exists).
    pub fn synchronize(&self) -> Result<()> {
        match self.never {}
    }
}

/// Always an error: built without the `cuda` feature.
///
/// # Errors
/// Always.
pub fn device_count() -> Result<usize> {
    Err(CudaError::NotBuilt.into())
}

/// Always an error: built without the `cuda` feature.
///
/// # Errors
/// Always.
pub fn device_info(_ordinal: usize) -> Result<DeviceInfo> {
    Err(CudaError::NotBuilt.into())
}

/// No library is looked for without the `cuda` feature.
pub fn libraries() -> Libraries {
    Libraries::default()
}

impl Device for Cuda {
    type Buf = NoBuffer;

    fn describe(&self) -> String {
        match self.never {}
    }
    fn alloc(&self, _len: usize) -> Result<NoBuffer> {
        match self.never {}
    }
    fn upload(&self, _src: &[f32], dst: &mut NoBuffer) -> Result<()> {
        match *dst {}
    }
    fn download(&self, src: &NoBuffer, _dst: &mut [f32]) -> Result<()> {
        match *src {}
    }
    fn copy(&self, src: &NoBuffer, _dst: &mut NoBuffer, _len: usize) -> Result<()> {
        match *src {}
    }
    fn fill(&self, buf: &mut NoBuffer, _value: f32, _len: usize) -> Result<()> {
        match *buf {}
    }
    fn gather_rows(&self, src: &NoBuffer, _w: usize, _rows: &NoBuffer, _n: usize, _dst: &mut NoBuffer) -> Result<()> {
        match *src {}
    }
    fn gemm(&self, _g: &Gemm, a: &NoBuffer, _b: &NoBuffer, _c: &mut NoBuffer) -> Result<()> {
        match *a {}
    }
    fn bias_act(&self, y: &mut NoBuffer, _bias: Option<&NoBuffer>, _act: Activation, _shape: Channels) -> Result<()> {
        match *y {}
    }
    fn act_backward(&self, y: &NoBuffer, _dy: &mut NoBuffer, _act: Activation, _shape: Channels) -> Result<()> {
        match *y {}
    }
    fn channel_sums(&self, dy: &NoBuffer, _shape: Channels, _beta: f32, _out: &mut NoBuffer) -> Result<()> {
        match *dy {}
    }
    fn cross_entropy(
        &self,
        _args: &XentArgs,
        out: &NoBuffer,
        _targets: &NoBuffer,
        _grad: &mut NoBuffer,
        _stats: &mut NoBuffer,
    ) -> Result<()> {
        match *out {}
    }
    fn dropout(
        &self,
        x: &NoBuffer,
        _y: &mut NoBuffer,
        _mask: &mut NoBuffer,
        _rate: f32,
        _seed: u64,
        _len: usize,
    ) -> Result<()> {
        match *x {}
    }
    fn mul(&self, x: &NoBuffer, _m: &NoBuffer, _y: &mut NoBuffer, _len: usize) -> Result<()> {
        match *x {}
    }
    fn regularizer_grad(&self, w: &NoBuffer, _dw: &mut NoBuffer, _l1: f32, _l2: f32, _len: usize) -> Result<()> {
        match *w {}
    }
    fn regularizer_penalty(&self, w: &NoBuffer, _l1: f32, _l2: f32, _len: usize, _acc: &mut NoBuffer) -> Result<()> {
        match *w {}
    }
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        _rule: &UpdateRule,
        _sp: StepParams,
        w: &mut NoBuffer,
        _g: &NoBuffer,
        _slots: &mut [NoBuffer],
        _len: usize,
        _cols: usize,
    ) -> Result<()> {
        match *w {}
    }
    fn im2col(&self, x: &NoBuffer, _win: &Window, _cols: &mut NoBuffer) -> Result<()> {
        match *x {}
    }
    fn col2im(&self, cols: &NoBuffer, _win: &Window, _dx: &mut NoBuffer) -> Result<()> {
        match *cols {}
    }
    fn swap_axes01(&self, src: &NoBuffer, _a: usize, _b: usize, _r: usize, _dst: &mut NoBuffer) -> Result<()> {
        match *src {}
    }
    fn max_pool(&self, x: &NoBuffer, _win: &Window, _y: &mut NoBuffer, _arg: &mut NoBuffer) -> Result<()> {
        match *x {}
    }
    fn max_pool_backward(&self, dy: &NoBuffer, _arg: &NoBuffer, _win: &Window, _dx: &mut NoBuffer) -> Result<()> {
        match *dy {}
    }
    fn avg_pool(&self, x: &NoBuffer, _win: &Window, _y: &mut NoBuffer) -> Result<()> {
        match *x {}
    }
    fn avg_pool_backward(&self, dy: &NoBuffer, _win: &Window, _dx: &mut NoBuffer) -> Result<()> {
        match *dy {}
    }
    fn batch_norm_train(
        &self,
        _args: &BatchNormArgs,
        x: &NoBuffer,
        _gamma: &NoBuffer,
        _beta: &NoBuffer,
        _moving_mean: &mut NoBuffer,
        _moving_var: &mut NoBuffer,
        _saved: &mut NoBuffer,
        _y: &mut NoBuffer,
    ) -> Result<()> {
        match *x {}
    }
    fn batch_norm_infer(
        &self,
        _args: &BatchNormArgs,
        x: &NoBuffer,
        _gamma: &NoBuffer,
        _beta: &NoBuffer,
        _moving_mean: &NoBuffer,
        _moving_var: &NoBuffer,
        _y: &mut NoBuffer,
    ) -> Result<()> {
        match *x {}
    }
    fn batch_norm_backward(
        &self,
        _args: &BatchNormArgs,
        x: &NoBuffer,
        _dy: &NoBuffer,
        _gamma: &NoBuffer,
        _saved: &NoBuffer,
        _dx: &mut NoBuffer,
        _dgamma: &mut NoBuffer,
        _dbeta: &mut NoBuffer,
    ) -> Result<()> {
        match *x {}
    }
}
