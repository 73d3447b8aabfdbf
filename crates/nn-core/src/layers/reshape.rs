//! Flatten and Reshape: the data stay where they are; only the shape the next layer sees changes.

use super::{Ctx, Layer};
use crate::device::Device;
use crate::error::Result;

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
