//! Layers as they run: forward and backward written once against [`Device`] primitives, with
//! their parameters and scratch buffers on that device. The architecture they are built from is
//! [`crate::spec::LayerSpec`].

mod batch_norm;
mod conv2d;
mod conv_pool;
mod dense;
mod dropout;
mod pool;
mod reshape;

pub(crate) use reshape::Identity as Passthrough;

use mnist_data::Rng;

use crate::device::Device;
use crate::error::Result;
use crate::spec::{LayerSpec, Regularizer, ResolvedLayer};

/// Per-call facts a layer may need.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ctx {
    /// Training mode (dropout active, batch statistics).
    pub training: bool,
    /// Seed of this step's random draws (dropout masks).
    pub seed: u64,
    /// This layer is the head and the loss takes its logits: skip its softmax.
    pub logits_head: bool,
    /// The network's inputs are integers divided by this (see
    /// [`crate::Runtime::set_input_levels`]): a dense layer reading them tells its products
    /// ([`crate::device::Gemm::a_levels`]).
    pub input_levels: Option<f32>,
}

impl Ctx {
    /// The activation a layer applies: its own, except that the head's softmax is skipped when
    /// the loss takes its logits (the fused softmax + cross-entropy).
    pub fn activation(&self, own: crate::activation::Activation) -> crate::activation::Activation {
        if self.logits_head && own == crate::activation::Activation::Softmax {
            crate::activation::Activation::Linear
        } else {
            own
        }
    }
}

/// A parameter tensor with its gradient and optimiser state, all on the device.
pub struct Param<D: Device> {
    /// Full name, e.g. `dense_1.kernel`.
    pub name: String,
    /// Shape, e.g. `[784, 128]`.
    pub shape: Vec<usize>,
    /// The values.
    pub value: D::Buf,
    /// The gradient (`None` for non-trainable state such as moving averages).
    pub grad: Option<D::Buf>,
    /// Optimiser state slots (allocated on the first update).
    pub slots: Vec<D::Buf>,
    /// Kernel penalty.
    pub reg: Option<Regularizer>,
}

impl<D: Device> Param<D> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True for an empty tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A layer's forward and backward pass on device `D`.
pub trait Layer<D: Device>: Send {
    /// True when the output is the input itself (Flatten, Reshape): no buffer, no work.
    fn is_identity(&self) -> bool {
        false
    }
    /// Computes `y` from `x` for a batch of `n` examples: features row-major (`[n, in]` →
    /// `[n, out]`), images channels-major (`[c, n, h, w]`; see `reshape.rs`).
    ///
    /// # Errors
    /// Device failures, and [`crate::NnError::Device`] for a layer with scratch buffers run before
    /// [`Layer::reserve`].
    fn forward(&mut self, dev: &D, x: &D::Buf, y: &mut D::Buf, n: usize, ctx: &Ctx) -> Result<()>;
    /// Given `dy` (may be overwritten), writes parameter gradients and, when asked, `dx`.
    ///
    /// # Errors
    /// As [`Layer::forward`], and a batch-norm or fused conv + pooling layer whose trainable parameters
    /// have no gradient buffers.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        dev: &D,
        x: &D::Buf,
        y: &D::Buf,
        dy: &mut D::Buf,
        dx: Option<&mut D::Buf>,
        n: usize,
        ctx: &Ctx,
    ) -> Result<()>;
    /// The parameters.
    fn params(&self) -> &[Param<D>] {
        &[]
    }
    /// The parameters, mutable.
    fn params_mut(&mut self) -> &mut [Param<D>] {
        &mut []
    }
    /// Makes sure scratch buffers hold batches of `cap` examples.
    ///
    /// # Errors
    /// Device allocation failures.
    fn reserve(&mut self, _dev: &D, _cap: usize) -> Result<()> {
        Ok(())
    }
    /// How many floats of scratch [`Layer::reserve`] allocates for batches of `cap` examples
    /// (saturating: a size past `usize` reads as `usize::MAX`); the network adds them up to
    /// refuse a batch the device's memory cannot hold before allocating any of it.
    fn scratch_floats(&self, _dev: &D, _cap: usize) -> usize {
        0
    }
    /// For a fused conv + pooling layer: its conv window, pooling window and filters.
    fn conv_pool_shape(&self) -> Option<(crate::device::Window, crate::device::Window, usize)> {
        None
    }
    /// Has a fused conv + pooling layer read its input or write its output pixel-major (see
    /// [`crate::device::PixelMajor`]); other layers have no such choice and ignore it.
    fn set_pixel_major(&mut self, _pm: crate::device::PixelMajor) {}
    /// Tells a layer that it reads the network's input (the data, perhaps reshaped), whose
    /// scaled pixels are mostly zeros: a dense layer then marks its products' `x` as likely
    /// sparse ([`crate::device::Gemm::sparse_a`]). Other layers ignore it.
    fn set_reads_network_input(&mut self) {}
}

/// Creates the parameters of a layer, initialised from `rng` on the host and uploaded.
pub(crate) fn make_params<D: Device>(dev: &D, l: &ResolvedLayer, rng: &mut Rng) -> Result<Vec<Param<D>>> {
    let mut out = Vec::new();
    for (suffix, shape, trainable) in l.spec.param_shapes(&l.input) {
        let len: usize = shape.iter().product();
        let mut host = crate::tensor::try_zeros(len)?;
        let (init, reg) = match (&l.spec, suffix) {
            (LayerSpec::Dense(d), "kernel") => (d.kernel_initializer, d.kernel_regularizer),
            (LayerSpec::Dense(d), _) => (d.bias_initializer, None),
            (LayerSpec::Conv2D(c), "kernel") => (c.kernel_initializer, c.kernel_regularizer),
            (_, "gamma" | "moving_variance") => (crate::init::Initializer::Ones, None),
            _ => (crate::init::Initializer::Zeros, None),
        };
        let (fan_in, fan_out) = match shape.as_slice() {
            [i, o] => (*i, *o),
            [f, c, kh, kw] => (c * kh * kw, f * kh * kw),
            _ => (len, len),
        };
        init.fill(&mut host, fan_in, fan_out, rng);
        let mut value = dev.alloc(len)?;
        dev.upload(&host, &mut value)?;
        let grad = if trainable { Some(dev.alloc(len)?) } else { None };
        out.push(Param { name: format!("{}.{suffix}", l.name), shape, value, grad, slots: Vec::new(), reg });
    }
    Ok(out)
}

/// Builds the runtime layer for a resolved spec.
pub(crate) fn build<D: Device>(dev: &D, l: &ResolvedLayer, rng: &mut Rng) -> Result<Box<dyn Layer<D>>> {
    let params = make_params(dev, l, rng)?;
    Ok(match &l.spec {
        LayerSpec::Flatten(_) | LayerSpec::Reshape(_) if reshape::is_free(&l.input, &l.output) => {
            Box::new(reshape::Identity)
        }
        LayerSpec::Flatten(_) | LayerSpec::Reshape(_) => Box::new(reshape::Relayout::new(l)),
        LayerSpec::Dense(d) => Box::new(dense::DenseLayer::new(d, l, params)),
        LayerSpec::Dropout(d) => Box::new(dropout::DropoutLayer::new(d.rate, l)),
        LayerSpec::Conv2D(c) => Box::new(conv2d::Conv2DLayer::new(c, l, params)),
        LayerSpec::MaxPooling2D(p) => Box::new(pool::PoolLayer::new(p, l, true)),
        LayerSpec::AveragePooling2D(p) => Box::new(pool::PoolLayer::new(p, l, false)),
        LayerSpec::GlobalAveragePooling2D {} => Box::new(pool::PoolLayer::global(l)),
        LayerSpec::BatchNormalization(b) => Box::new(batch_norm::BatchNormLayer::new(b, l, params)),
    })
}

/// What [`build_pair`] made of a `Conv2D` followed by `MaxPooling2D`.
pub(crate) enum Pair<D: Device> {
    /// One fused layer (its output is the pooling's; the pooling becomes an identity).
    Fused(Box<dyn Layer<D>>),
    /// The two layers as [`build`] makes them.
    Separate(Box<dyn Layer<D>>, Box<dyn Layer<D>>),
}

/// Builds a `Conv2D` and the `MaxPooling2D` after it, fused into one layer when the device has
/// a fused pass for them (see [`Device::conv_pool`]); `None` when the two are not such a pair.
/// Draws the same initial weights as building them one by one.
pub(crate) fn build_pair<D: Device>(
    dev: &D,
    conv: &ResolvedLayer,
    pool: &ResolvedLayer,
    rng: &mut Rng,
) -> Result<Option<Pair<D>>> {
    let (LayerSpec::Conv2D(c), LayerSpec::MaxPooling2D(p)) = (&conv.spec, &pool.spec) else {
        return Ok(None);
    };
    let conv_layer = conv2d::Conv2DLayer::new(c, conv, make_params(dev, conv, rng)?);
    let pool_layer = pool::PoolLayer::new(p, pool, true);
    Ok(Some(match conv_pool::ConvPoolLayer::fuse(dev, conv_layer, pool_layer) {
        Ok(fused) => Pair::Fused(Box::new(fused)),
        Err((c, p)) => Pair::Separate(Box::new(c), Box::new(p)),
    }))
}
