//! A `Conv2D` and the `MaxPooling2D` right after it, run as one layer when the device fuses
//! them ([`Device::conv_pool`]): the full-size conv output never reaches memory. Parameters,
//! names and results are the two layers'; the pooling layer becomes an identity that passes
//! this layer's output on.

use super::conv2d::Conv2DLayer;
use super::pool::PoolLayer;
use super::{Ctx, Layer, Param};
use crate::device::{Device, PixelMajor, Window};
use crate::error::{NnError, Result};

pub(crate) struct ConvPoolLayer<D: Device> {
    conv: Conv2DLayer<D>,
    pool: Window,
    arg: Option<D::Buf>,
    cap: usize,
    /// Which of its image tensors are pixel-major (between two fused layers).
    pm: PixelMajor,
    /// A frozen conv's kernel gradient, which the fused backward pass writes and nobody reads:
    /// made the first time a trainable layer below needs this layer's input gradient.
    discarded_grad: Option<D::Buf>,
}

impl<D: Device> ConvPoolLayer<D> {
    /// Fuses `conv` and `pool` when `dev` can; otherwise gives them back.
    #[allow(clippy::type_complexity, clippy::result_large_err)]
    pub(crate) fn fuse(
        dev: &D,
        conv: Conv2DLayer<D>,
        pool: PoolLayer<D>,
    ) -> std::result::Result<Self, (Conv2DLayer<D>, PoolLayer<D>)> {
        let monotone = conv.act != crate::activation::Activation::Softmax;
        if pool.max && !pool.global && monotone && dev.fuses_conv_pool(&conv.win, &pool.win) {
            Ok(ConvPoolLayer {
                pool: pool.win,
                conv,
                arg: None,
                cap: 0,
                pm: PixelMajor::default(),
                discarded_grad: None,
            })
        } else {
            Err((conv, pool))
        }
    }
    fn plane_len(&self) -> usize {
        self.conv.filters * self.pool.oh * self.pool.ow
    }
}

impl<D: Device> Layer<D> for ConvPoolLayer<D> {
    fn reserve(&mut self, dev: &D, cap: usize) -> Result<()> {
        if cap > self.cap {
            self.arg = Some(dev.alloc(self.scratch_floats(dev, cap))?);
            self.cap = cap;
        }
        Ok(())
    }
    /// Where each pooled maximum came from.
    fn scratch_floats(&self, _dev: &D, cap: usize) -> usize {
        cap.saturating_mul(self.plane_len())
    }

    fn forward(&mut self, dev: &D, x: &D::Buf, y: &mut D::Buf, n: usize, ctx: &Ctx) -> Result<()> {
        let arg = self.arg.as_mut().ok_or_else(|| NnError::Device("conv + pooling used before reserve".into()))?;
        let (conv, pool) = (Window { n, ..self.conv.win }, Window { n, ..self.pool });
        let p = &self.conv.params;
        let act = ctx.activation(self.conv.act);
        dev.conv_pool(x, &p[0].value, p.get(1).map(|b| &b.value), act, &conv, self.conv.filters, &pool, self.pm, y, arg)
    }

    fn backward(
        &mut self,
        dev: &D,
        x: &D::Buf,
        y: &D::Buf,
        dy: &mut D::Buf,
        dx: Option<&mut D::Buf>,
        n: usize,
        ctx: &Ctx,
    ) -> Result<()> {
        let arg = self.arg.as_ref().ok_or_else(|| NnError::Device("conv + pooling used before reserve".into()))?;
        let (conv, pool) = (Window { n, ..self.conv.win }, Window { n, ..self.pool });
        let act = ctx.activation(self.conv.act);
        let (kernel, rest) = self.conv.params.split_at_mut(1);
        let k = &mut kernel[0];
        let len = k.len();
        let gb = rest.first_mut().and_then(|b| b.grad.as_mut());
        let (filters, pm) = (self.conv.filters, self.pm);
        match k.grad.as_mut() {
            Some(gw) => {
                dev.conv_pool_backward(x, dy, y, arg, act, &conv, filters, &pool, pm, &k.value, gw, gb, dx)?;
                if let Some(r) = k.reg {
                    dev.regularizer_grad(&k.value, gw, r.l1, r.l2, len)?;
                }
            }
            // Frozen: only the input gradient is wanted (and none when nothing below learns).
            None if dx.is_some() => {
                if self.discarded_grad.is_none() {
                    self.discarded_grad = Some(dev.alloc(len)?);
                }
                let gw =
                    self.discarded_grad.as_mut().ok_or_else(|| NnError::Device("conv + pooling scratch".into()))?;
                dev.conv_pool_backward(x, dy, y, arg, act, &conv, filters, &pool, pm, &k.value, gw, gb, dx)?;
            }
            None => {}
        }
        Ok(())
    }

    fn conv_pool_shape(&self) -> Option<(Window, Window, usize)> {
        Some((self.conv.win, self.pool, self.conv.filters))
    }
    fn set_pixel_major(&mut self, pm: PixelMajor) {
        self.pm = pm;
    }

    fn params(&self) -> &[Param<D>] {
        &self.conv.params
    }
    fn params_mut(&mut self) -> &mut [Param<D>] {
        &mut self.conv.params
    }
}
