//! `Dropout(rate)`: inverted dropout in training, the identity otherwise.

use super::{Ctx, Layer};
use crate::device::Device;
use crate::error::Result;
use crate::spec::ResolvedLayer;

pub(crate) struct DropoutLayer<D: Device> {
    rate: f32,
    width: usize,
    mask: Option<D::Buf>,
    cap: usize,
    active: bool,
}

impl<D: Device> DropoutLayer<D> {
    pub(crate) fn new(rate: f32, l: &ResolvedLayer) -> Self {
        DropoutLayer { rate, width: l.input.iter().product(), mask: None, cap: 0, active: false }
    }
}

impl<D: Device> Layer<D> for DropoutLayer<D> {
    fn reserve(&mut self, dev: &D, cap: usize) -> Result<()> {
        if cap > self.cap {
            self.mask = Some(dev.alloc(self.scratch_floats(dev, cap))?);
            self.cap = cap;
        }
        Ok(())
    }
    /// The mask.
    fn scratch_floats(&self, _dev: &D, cap: usize) -> usize {
        cap.saturating_mul(self.width)
    }

    fn forward(&mut self, dev: &D, x: &D::Buf, y: &mut D::Buf, n: usize, ctx: &Ctx) -> Result<()> {
        let len = n * self.width;
        self.active = ctx.training && self.rate > 0.0;
        match (self.active, self.mask.as_mut()) {
            (true, Some(mask)) => dev.dropout(x, y, mask, self.rate, ctx.seed, len),
            _ => dev.copy(x, y, len),
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
        let len = n * self.width;
        match (self.active, self.mask.as_ref()) {
            (true, Some(mask)) => dev.mul(dy, mask, dx, len),
            _ => dev.copy(dy, dx, len),
        }
    }
}
