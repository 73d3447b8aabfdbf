//! `Dense`: `y = act(x·W + b)`, `x: [n, in]`, `W: [in, units]`, `b: [units]`, `y: [n, units]`.

use super::{Ctx, Layer, Param};
use crate::activation::Activation;
use crate::device::{Channels, Device, Gemm};
use crate::error::Result;
use crate::spec::{Dense, ResolvedLayer};

pub(crate) struct DenseLayer<D: Device> {
    inputs: usize,
    units: usize,
    act: Activation,
    params: Vec<Param<D>>,
    /// Whether `x` is the network's input (mostly zeros where it is scaled pixels).
    reads_input: bool,
}

impl<D: Device> DenseLayer<D> {
    pub(crate) fn new(d: &Dense, l: &ResolvedLayer, params: Vec<Param<D>>) -> Self {
        DenseLayer { inputs: l.input.iter().product(), units: d.units, act: d.activation, params, reads_input: false }
    }

    /// What `x` holds, for its products: integers divided by this, where it is the network's
    /// input and that is declared so.
    fn levels(&self, ctx: &Ctx) -> Option<f32> {
        ctx.input_levels.filter(|_| self.reads_input)
    }
}

impl<D: Device> Layer<D> for DenseLayer<D> {
    fn forward(&mut self, dev: &D, x: &D::Buf, y: &mut D::Buf, n: usize, ctx: &Ctx) -> Result<()> {
        let g =
            Gemm::new(false, false, n, self.units, self.inputs).sparse_a(self.reads_input).a_levels(self.levels(ctx));
        let bias = self.params.get(1).map(|p| &p.value);
        dev.dense_forward(&g, x, &self.params[0].value, bias, ctx.activation(self.act), y)
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
        let shape = Channels { outer: n, channels: self.units, inner: 1 };
        dev.act_backward(y, dy, ctx.activation(self.act), shape)?;
        let levels = self.levels(ctx);
        let (kernel, rest) = self.params.split_at_mut(1);
        let k = &mut kernel[0];
        if let Some(gw) = k.grad.as_mut() {
            // dW = xᵀ·dy : [in, units]
            let g = Gemm::new(true, false, self.inputs, self.units, n).sparse_a(self.reads_input).a_levels(levels);
            dev.gemm(&g, x, dy, gw)?;
            if let Some(r) = k.reg {
                dev.regularizer_grad(&k.value, gw, r.l1, r.l2, self.inputs * self.units)?;
            }
        }
        if let Some(gb) = rest.first_mut().and_then(|b| b.grad.as_mut()) {
            dev.channel_sums(dy, shape, 0.0, gb)?;
        }
        if let Some(dx) = dx {
            // dx = dy·Wᵀ : [n, in]
            dev.gemm(&Gemm::new(false, true, n, self.inputs, self.units), dy, &k.value, dx)?;
        }
        Ok(())
    }

    fn set_reads_network_input(&mut self) {
        self.reads_input = true;
    }

    fn params(&self) -> &[Param<D>] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [Param<D>] {
        &mut self.params
    }
}
