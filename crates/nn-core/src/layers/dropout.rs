//! `Dropout(rate)`: inverted dropout in training, the identity otherwise.

use super::{Ctx, Layer};
use crate::device::Device;
use crate::error::{NnError, Result};
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
            (true, None) => Err(NnError::Device("dropout used before reserve".into())),
            (false, _) => dev.copy(x, y, len),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;
    use crate::spec::{Dropout, ModelSpec};

    #[test]
    fn training_before_reserve_is_an_error_not_a_copy() {
        let spec = ModelSpec::new(&[4]).add(Dropout::new(0.5));
        let resolved = spec.resolve().expect("spec");
        let dev = Cpu::new();
        let mut layer = DropoutLayer::<Cpu>::new(0.5, &resolved[0]);
        let mut x = dev.alloc(8).expect("x");
        dev.upload(&[1.0; 8], &mut x).expect("x");
        let mut y = dev.alloc(8).expect("y");
        let training = Ctx { training: true, ..Ctx::default() };
        let err = layer.forward(&dev, &x, &mut y, 2, &training).unwrap_err();
        assert!(err.to_string().contains("dropout used before reserve"), "{err}");
        // In inference it is the identity, reserved or not.
        layer.forward(&dev, &x, &mut y, 2, &Ctx::default()).expect("inference");
        layer.reserve(&dev, 2).expect("reserve");
        layer.forward(&dev, &x, &mut y, 2, &training).expect("training after reserve");
    }
}
