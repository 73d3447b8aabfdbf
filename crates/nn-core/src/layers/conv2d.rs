//! `Conv2D` on channels-major images. Where the device has a direct convolution
//! (`Device::direct_conv`: the CPU with AVX-512, a few images at a time) it runs that;
//! otherwise im2col and one large GEMM per pass:
//! `cols [c·kh·kw, n·oh·ow] = im2col(x [c, n, h, w])`, `y [f, n·oh·ow] = W [f, c·kh·kw] · cols`,
//! then bias and activation in place. Backward: `dW = dy · colsᵀ`, `dcols = Wᵀ · dy`, col2im.

use super::{Ctx, Layer, Param};
use crate::activation::Activation;
use crate::device::{Channels, Device, Gemm, Window};
use crate::error::{NnError, Result};
use crate::spec::{window_out, Conv2D, ResolvedLayer};

pub(crate) struct Conv2DLayer<D: Device> {
    pub(crate) win: Window,
    pub(crate) filters: usize,
    pub(crate) act: Activation,
    pub(crate) params: Vec<Param<D>>,
    cols: Option<D::Buf>,
    cap: usize,
}

impl<D: Device> Conv2DLayer<D> {
    pub(crate) fn new(c: &Conv2D, l: &ResolvedLayer, params: Vec<Param<D>>) -> Self {
        let (h, w) = (l.input[1], l.input[2]);
        let (oh, ph) = window_out(h, c.kernel_size[0], c.strides[0], c.padding);
        let (ow, pw) = window_out(w, c.kernel_size[1], c.strides[1], c.padding);
        let win = Window {
            n: 0,
            c: l.input[0],
            h,
            w,
            kh: c.kernel_size[0],
            kw: c.kernel_size[1],
            sh: c.strides[0],
            sw: c.strides[1],
            ph,
            pw,
            oh,
            ow,
        };
        Conv2DLayer { win, filters: c.filters, act: c.activation, params, cols: None, cap: 0 }
    }
    fn ckk(&self) -> usize {
        self.win.c * self.win.kh * self.win.kw
    }
    fn ohw(&self) -> usize {
        self.win.oh * self.win.ow
    }
}

impl<D: Device> Layer<D> for Conv2DLayer<D> {
    fn reserve(&mut self, dev: &D, cap: usize) -> Result<()> {
        let len = self.scratch_floats(dev, cap);
        if len > 0 && cap > self.cap {
            self.cols = Some(dev.alloc(len)?);
            self.cap = cap;
        }
        Ok(())
    }
    /// The im2col columns, none where the device convolves directly.
    fn scratch_floats(&self, dev: &D, cap: usize) -> usize {
        if dev.direct_conv(&Window { n: cap, ..self.win }, self.filters) {
            0
        } else {
            self.ckk().saturating_mul(cap).saturating_mul(self.ohw())
        }
    }

    fn forward(&mut self, dev: &D, x: &D::Buf, y: &mut D::Buf, n: usize, ctx: &Ctx) -> Result<()> {
        let win = Window { n, ..self.win };
        let (ckk, ohw, f) = (self.ckk(), self.ohw(), self.filters);
        let (w, b) = (&self.params[0].value, self.params.get(1).map(|p| &p.value));
        if dev.direct_conv(&win, f) {
            return dev.conv2d(x, w, b, ctx.activation(self.act), &win, f, y);
        }
        let cols = self.cols.as_mut().ok_or_else(|| NnError::Device("conv2d used before reserve".into()))?;
        dev.im2col(x, &win, cols)?;
        dev.gemm(&Gemm::new(false, false, f, n * ohw, ckk), w, cols, y)?;
        let shape = Channels { outer: 1, channels: f, inner: n * ohw };
        dev.bias_act(y, b, ctx.activation(self.act), shape)
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
        let win = Window { n, ..self.win };
        let (ckk, ohw, f) = (self.ckk(), self.ohw(), self.filters);
        let shape = Channels { outer: 1, channels: f, inner: n * ohw };
        dev.act_backward(y, dy, ctx.activation(self.act), shape)?;
        let (kernel, rest) = self.params.split_at_mut(1);
        if let Some(gb) = rest.first_mut().and_then(|b| b.grad.as_mut()) {
            dev.channel_sums(dy, shape, 0.0, gb)?;
        }
        let k = &mut kernel[0];
        if dev.direct_conv(&win, f) {
            dev.conv2d_backward(x, dy, &k.value, &win, f, k.grad.as_mut(), dx)?;
            if let (Some(gw), Some(r)) = (k.grad.as_mut(), k.reg) {
                dev.regularizer_grad(&k.value, gw, r.l1, r.l2, f * ckk)?;
            }
            return Ok(());
        }
        let cols = self.cols.as_mut().ok_or_else(|| NnError::Device("conv2d used before reserve".into()))?;
        if let Some(gw) = k.grad.as_mut() {
            // dW [f, ckk] = dy [f, n·ohw] · colsᵀ
            dev.gemm(&Gemm::new(false, true, f, ckk, n * ohw), dy, cols, gw)?;
            if let Some(r) = k.reg {
                dev.regularizer_grad(&k.value, gw, r.l1, r.l2, f * ckk)?;
            }
        }
        if let Some(dx) = dx {
            // dcols [ckk, n·ohw] = Wᵀ · dy (reusing the cols buffer), then scatter back.
            dev.gemm(&Gemm::new(true, false, ckk, n * ohw, f), &k.value, dy, cols)?;
            dev.col2im(cols, &win, dx)?;
        }
        Ok(())
    }

    fn params(&self) -> &[Param<D>] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [Param<D>] {
        &mut self.params
    }
}
