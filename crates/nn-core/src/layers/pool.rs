//! `MaxPooling2D`, `AveragePooling2D` and `GlobalAveragePooling2D` on channels-major images
//! `[c, n, h, w]` (pooling works plane by plane). Global pooling ends the image part of a
//! network: its output is row-major `[n, c]`.

use super::{Ctx, Layer};
use crate::device::{Device, Window};
use crate::error::Result;
use crate::spec::{window_out, Pool2D, ResolvedLayer};

pub(crate) struct PoolLayer<D: Device> {
    pub(crate) win: Window,
    pub(crate) max: bool,
    /// Global pooling: the `[c, n]` result is turned into row-major `[n, c]` through `arg`.
    pub(crate) global: bool,
    arg: Option<D::Buf>,
    cap: usize,
}

impl<D: Device> PoolLayer<D> {
    pub(crate) fn new(p: &Pool2D, l: &ResolvedLayer, max: bool) -> Self {
        let [kh, kw] = p.pool_size;
        let [sh, sw] = p.strides.unwrap_or(p.pool_size);
        let (c, h, w) = (l.input[0], l.input[1], l.input[2]);
        let (oh, ph) = window_out(h, kh, sh, p.padding);
        let (ow, pw) = window_out(w, kw, sw, p.padding);
        PoolLayer {
            win: Window { n: 0, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow },
            max,
            global: false,
            arg: None,
            cap: 0,
        }
    }
    pub(crate) fn global(l: &ResolvedLayer) -> Self {
        let (c, h, w) = (l.input[0], l.input[1], l.input[2]);
        let win = Window { n: 0, c, h, w, kh: h, kw: w, sh: h, sw: w, ph: 0, pw: 0, oh: 1, ow: 1 };
        PoolLayer { win, max: false, global: true, arg: None, cap: 0 }
    }
}

impl<D: Device> Layer<D> for PoolLayer<D> {
    fn reserve(&mut self, dev: &D, cap: usize) -> Result<()> {
        let len = self.scratch_floats(dev, cap);
        if len > 0 && cap > self.cap {
            self.arg = Some(dev.alloc(len)?);
            self.cap = cap;
        }
        Ok(())
    }
    /// Where each maximum came from (max and global pooling; average pooling keeps none).
    fn scratch_floats(&self, _dev: &D, cap: usize) -> usize {
        if self.max || self.global {
            [self.win.c, self.win.oh, self.win.ow].iter().fold(cap, |a, &d| a.saturating_mul(d))
        } else {
            0
        }
    }

    fn forward(&mut self, dev: &D, x: &D::Buf, y: &mut D::Buf, n: usize, _ctx: &Ctx) -> Result<()> {
        let win = Window { n, ..self.win };
        if self.global {
            let t =
                self.arg.as_mut().ok_or_else(|| crate::error::NnError::Device("pooling used before reserve".into()))?;
            dev.avg_pool(x, &win, t)?;
            return dev.swap_axes01(t, win.c, n, 1, y);
        }
        match (self.max, self.arg.as_mut()) {
            (true, Some(arg)) => dev.max_pool(x, &win, y, arg),
            (true, None) => Err(crate::error::NnError::Device("max pooling used before reserve".into())),
            (false, _) => dev.avg_pool(x, &win, y),
        }
    }

    fn backward(
        &mut self,
        dev: &D,
        _x: &D::Buf,
        _y: &D::Buf,
        dy: &mut D::Buf,
        dx: Option<&mut D::Buf>,
        n: usize,
        _ctx: &Ctx,
    ) -> Result<()> {
        let Some(dx) = dx else { return Ok(()) };
        let win = Window { n, ..self.win };
        if self.global {
            let t =
                self.arg.as_mut().ok_or_else(|| crate::error::NnError::Device("pooling used before reserve".into()))?;
            dev.swap_axes01(dy, n, win.c, 1, t)?;
            return dev.avg_pool_backward(t, &win, dx);
        }
        match (self.max, self.arg.as_ref()) {
            (true, Some(arg)) => dev.max_pool_backward(dy, arg, &win, dx),
            (true, None) => Err(crate::error::NnError::Device("max pooling used before reserve".into())),
            (false, _) => dev.avg_pool_backward(dy, &win, dx),
        }
    }
}
