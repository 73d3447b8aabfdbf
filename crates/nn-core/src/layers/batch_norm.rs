//! `BatchNormalization` over the channel axis, the first of each example's axes (channels
//! first, as PyTorch's `BatchNorm1d`/`2d`): images `[c, n, h, w]` (stored channels-major; per
//! channel over `n·h·w`), features `[n, f]` (per feature over `n`), or any other per-example
//! shape `[c, ...]`, stored `[n, c, ...]` (per channel over `n` and the other axes).
//! Parameters: `gamma`, `beta` (trainable), `moving_mean`, `moving_variance` (not trainable).
//!
//! A frozen layer (`trainable: false`) runs in inference mode in training too, as Keras's
//! does: `y = γ·(x − mean)/√(var + ε) + β` with the moving statistics, which stay as they
//! are, so its backward pass is the per-channel scale `dx = dy·γ/√(var + ε)`.

use super::{Ctx, Layer, Param};
use crate::device::{BatchNormArgs, Channels, Device};
use crate::error::{NnError, Result};
use crate::spec::{BatchNorm, ResolvedLayer};

pub(crate) struct BatchNormLayer<D: Device> {
    channels: usize,
    /// Elements per channel and example (`h·w` for images, 1 for features).
    inner: usize,
    image: bool,
    momentum: f32,
    epsilon: f32,
    /// False when frozen: inference mode in training too.
    trainable: bool,
    params: Vec<Param<D>>,
    saved: Option<D::Buf>,
    /// Where `dx` goes when the layer is first and nobody needs it (kept between steps).
    scratch: Option<D::Buf>,
    cap: usize,
}

impl<D: Device> BatchNormLayer<D> {
    pub(crate) fn new(b: &BatchNorm, l: &ResolvedLayer, params: Vec<Param<D>>) -> Self {
        let channels = l.input[0];
        let inner = l.input[1..].iter().product::<usize>().max(1);
        let image = l.input.len() == 3;
        BatchNormLayer {
            channels,
            inner,
            image,
            momentum: b.momentum,
            epsilon: b.epsilon,
            trainable: b.trainable,
            params,
            saved: None,
            scratch: None,
            cap: 0,
        }
    }
    fn args(&self, n: usize) -> BatchNormArgs {
        BatchNormArgs {
            shape: if self.image {
                Channels { outer: 1, channels: self.channels, inner: n * self.inner }
            } else {
                Channels { outer: n, channels: self.channels, inner: self.inner }
            },
            momentum: self.momentum,
            epsilon: self.epsilon,
        }
    }
}

impl<D: Device> Layer<D> for BatchNormLayer<D> {
    fn reserve(&mut self, dev: &D, cap: usize) -> Result<()> {
        if self.saved.is_none() {
            // Trained: the batch's mean and 1/√(var+ε). Frozen: zeros, the mean and shift of
            // the backward pass's inference-mode scaling.
            self.saved = Some(dev.alloc(2 * self.channels)?);
        }
        if cap > self.cap {
            self.cap = cap;
            self.scratch = None; // reallocated at the new size when first needed
        }
        Ok(())
    }
    /// The saved statistics, and the input gradient a first layer's backward writes nowhere
    /// else (allocated when first needed).
    fn scratch_floats(&self, _dev: &D, cap: usize) -> usize {
        cap.saturating_mul(self.channels).saturating_mul(self.inner).saturating_add(2 * self.channels)
    }

    fn forward(&mut self, dev: &D, x: &D::Buf, y: &mut D::Buf, n: usize, ctx: &Ctx) -> Result<()> {
        let args = self.args(n);
        let [g, b, mm, mv] = &mut self.params[..] else {
            return Err(NnError::Device("batch normalisation without its four tensors".into()));
        };
        if ctx.training && self.trainable {
            let saved = self.saved.as_mut().ok_or_else(|| NnError::Device("batch norm used before reserve".into()))?;
            dev.batch_norm_train(&args, x, &g.value, &b.value, &mut mm.value, &mut mv.value, saved, y)
        } else {
            dev.batch_norm_infer(&args, x, &g.value, &b.value, &mm.value, &mv.value, y)
        }
    }

    fn backward(
        &mut self,
        dev: &D,
        x: &D::Buf,
        _y: &D::Buf,
        dy: &mut D::Buf,
        dx: Option<&mut D::Buf>,
        n: usize,
        _ctx: &Ctx,
    ) -> Result<()> {
        let args = self.args(n);
        let saved = self.saved.as_ref().ok_or_else(|| NnError::Device("batch norm used before reserve".into()))?;
        if !self.trainable {
            // `dx = dy·γ/√(var+ε)`: the inference-mode pass over `dy` with a zero mean and shift
            // (`saved`, never written when frozen). No parameter gradients; no `dx`, no work.
            let [g, _, _, mv] = &self.params[..] else {
                return Err(NnError::Device("batch normalisation without its four tensors".into()));
            };
            return match dx {
                Some(dx) => dev.batch_norm_infer(&args, dy, &g.value, saved, saved, &mv.value, dx),
                None => Ok(()),
            };
        }
        let (gb, _) = self.params.split_at_mut(2);
        let (g, b) = gb.split_at_mut(1);
        let (g, b) = (&mut g[0], &mut b[0]);
        let (Some(dg), Some(db)) = (g.grad.as_mut(), b.grad.as_mut()) else {
            return Err(NnError::Device("batch norm gamma/beta without gradients".into()));
        };
        // dx is always needed to compute dγ, dβ in one kernel; use a scratch when the caller has none.
        match dx {
            Some(dx) => dev.batch_norm_backward(&args, x, dy, &g.value, saved, dx, dg, db),
            None => {
                if self.scratch.is_none() {
                    self.scratch = Some(dev.alloc(self.cap * self.channels * self.inner)?);
                }
                let scratch = self.scratch.as_mut().ok_or_else(|| NnError::Device("batch norm scratch".into()))?;
                dev.batch_norm_backward(&args, x, dy, &g.value, saved, scratch, dg, db)
            }
        }
    }

    fn params(&self) -> &[Param<D>] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [Param<D>] {
        &mut self.params
    }
}
