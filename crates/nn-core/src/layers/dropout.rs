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
            self.mask = Some(dev.alloc(cap * self.width)?);
            self.cap = cap;
        }
        Ok(())
    }

    fn forward(&mut self, dev: &D, x: &D::Buf, y: &mut D::Buf, n: usize, ctx: &Ctx) -> Result<()> {
        let len = n * self.width;
        dev.copy(x, y, len)?;
        self.active = ctx.training && self.rate > 0.0;
        if let (true, Some(mask)) = (self.active, self.mask.as_mut()) {
            dev.dropout(y, mask, self.rate, ctx.seed, len)?;
        }
        Ok(())
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
        if let Some(dx) = dx {
            let len = n * self.width;
            dev.copy(dy, dx, len)?;
            if let (true, Some(mask)) = (self.active, self.mask.as_ref()) {
                dev.mul(dx, mask, len)?;
            }
        }
        Ok(())
    }
}
