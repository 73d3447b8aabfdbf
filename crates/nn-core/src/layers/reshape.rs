//! Flatten and Reshape. Images live channels-major (`[c, n, h, w]`), features row-major
//! (`[n, f]`); where a reshape crosses between the two with more than one channel, the data are
//! reordered (an axis swap), otherwise the layer is free: the network aliases its buffers.

use super::{Ctx, Layer};
use crate::device::Device;
use crate::error::{NnError, Result};
use crate::spec::ResolvedLayer;

/// `(channels, elements per channel and example)` when `shape` is an image stored channels-major
/// with more than one channel (so its memory order differs from row-major).
fn channels_major(shape: &[usize]) -> Option<(usize, usize)> {
    match shape {
        [c, h, w] if *c > 1 => Some((*c, h * w)),
        _ => None,
    }
}

/// Whether a reshape from `input` to `output` needs no data movement.
pub(crate) fn is_free(input: &[usize], output: &[usize]) -> bool {
    channels_major(input).is_none() && channels_major(output).is_none()
}

/// A reshape that reorders between channels-major images and row-major features.
pub(crate) struct Relayout<D: Device> {
    from: Option<(usize, usize)>,
    to: Option<(usize, usize)>,
    width: usize,
    scratch: Option<D::Buf>,
    cap: usize,
}

impl<D: Device> Relayout<D> {
    pub(crate) fn new(l: &ResolvedLayer) -> Self {
        Relayout {
            from: channels_major(&l.input),
            to: channels_major(&l.output),
            width: l.input.iter().product(),
            scratch: None,
            cap: 0,
        }
    }

    /// Reorders `src` into `dst`: from `a` (channels-major `[c, n, r]` when `Some`) to row-major,
    /// then to `b` (channels-major when `Some`).
    fn convert(
        &mut self,
        dev: &D,
        src: &D::Buf,
        dst: &mut D::Buf,
        n: usize,
        a: Option<(usize, usize)>,
        b: Option<(usize, usize)>,
    ) -> Result<()> {
        match (a, b) {
            (Some((c, r)), None) => dev.swap_axes01(src, c, n, r, dst),
            (None, Some((c, r))) => dev.swap_axes01(src, n, c, r, dst),
            (Some((c1, r1)), Some((c2, r2))) => {
                let t = self.scratch.as_mut().ok_or_else(|| NnError::Device("reshape used before reserve".into()))?;
                dev.swap_axes01(src, c1, n, r1, t)?;
                dev.swap_axes01(t, n, c2, r2, dst)
            }
            (None, None) => dev.copy(src, dst, n * self.width),
        }
    }
}

impl<D: Device> Layer<D> for Relayout<D> {
    fn reserve(&mut self, dev: &D, cap: usize) -> Result<()> {
        let len = self.scratch_floats(dev, cap);
        if len > 0 && cap > self.cap {
            self.scratch = Some(dev.alloc(len)?);
            self.cap = cap;
        }
        Ok(())
    }
    /// A batch in between layouts, when converting from one pixel-major layout to another.
    fn scratch_floats(&self, _dev: &D, cap: usize) -> usize {
        if self.from.is_some() && self.to.is_some() {
            cap.saturating_mul(self.width)
        } else {
            0
        }
    }
    fn forward(&mut self, dev: &D, x: &D::Buf, y: &mut D::Buf, n: usize, _: &Ctx) -> Result<()> {
        let (a, b) = (self.from, self.to);
        self.convert(dev, x, y, n, a, b)
    }
    fn backward(
        &mut self,
        dev: &D,
        _: &D::Buf,
        _: &D::Buf,
        dy: &mut D::Buf,
        dx: Option<&mut D::Buf>,
        n: usize,
        _: &Ctx,
    ) -> Result<()> {
        match dx {
            Some(dx) => {
                let (a, b) = (self.to, self.from);
                self.convert(dev, dy, dx, n, a, b)
            }
            None => Ok(()),
        }
    }
}

/// A layer whose output is its input (the network aliases the buffers).
pub(crate) struct Identity;

impl<D: Device> Layer<D> for Identity {
    fn is_identity(&self) -> bool {
        true
    }
    fn forward(&mut self, _: &D, _: &D::Buf, _: &mut D::Buf, _: usize, _: &Ctx) -> Result<()> {
        Ok(())
    }
    fn backward(
        &mut self,
        _: &D,
        _: &D::Buf,
        _: &D::Buf,
        _: &mut D::Buf,
        _: Option<&mut D::Buf>,
        _: usize,
        _: &Ctx,
    ) -> Result<()> {
        Ok(())
    }
}
