//! The compute device: where a model's numbers live and the primitive operations layers are
//! written against. The CPU device is [`crate::cpu::Cpu`]; `nn-cuda` provides the NVIDIA one.
//!
//! Every buffer is a flat `f32` array; shapes are passed with each call and are row-major.
//! Operations may be asynchronous on a GPU: only [`Device::download`] (and
//! [`Device::read_scalars`]) wait for the results.

use crate::activation::Activation;
use crate::error::Result;
use crate::loss::XentArgs;
use crate::optim::{StepParams, UpdateRule};

/// A (possibly strided-batched) matrix product `C = α·op(A)·op(B) + β·C`, row-major, where
/// `op(A)` is `[m, k]`, `op(B)` is `[k, n]` and `C` is `[m, n]`. With `batch > 1`, matrix `i`
/// of each operand starts `i * stride` elements in (a stride of 0 broadcasts one matrix).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gemm {
    /// `A` is stored `[k, m]` and used transposed.
    pub trans_a: bool,
    /// `B` is stored `[n, k]` and used transposed.
    pub trans_b: bool,
    /// Rows of `C`.
    pub m: usize,
    /// Columns of `C`.
    pub n: usize,
    /// The shared dimension.
    pub k: usize,
    /// α.
    pub alpha: f32,
    /// β (0 overwrites `C`, 1 accumulates).
    pub beta: f32,
    /// Number of products.
    pub batch: usize,
    /// Elements between consecutive `A` matrices.
    pub stride_a: usize,
    /// Elements between consecutive `B` matrices.
    pub stride_b: usize,
    /// Elements between consecutive `C` matrices.
    pub stride_c: usize,
    /// `A` is likely mostly zeros (the scaled pixels a first layer reads): a device may
    /// multiply by its nonzeros alone. The result is the same sums less terms `0·b` (which add
    /// nothing to a sum but for the sign of a zero one, for a finite `b`).
    pub sparse_a: bool,
    /// `A`'s values are likely integers of at most 256 in magnitude divided by this (the pixels
    /// a first layer reads, scaled by 1/255: `Some(255.0)`): a device may multiply those
    /// integers, exact in fewer bits than f32's, and divide the sums. A device that does checks
    /// every value and takes the plain product where one is not such an integer.
    pub a_levels: Option<f32>,
}

impl Gemm {
    /// A single product `C = op(A)·op(B)` (α = 1, β = 0).
    pub fn new(trans_a: bool, trans_b: bool, m: usize, n: usize, k: usize) -> Gemm {
        Gemm {
            trans_a,
            trans_b,
            m,
            n,
            k,
            alpha: 1.0,
            beta: 0.0,
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
            sparse_a: false,
            a_levels: None,
        }
    }
    /// Sets β (1 to accumulate into `C`).
    pub fn beta(mut self, beta: f32) -> Gemm {
        self.beta = beta;
        self
    }
    /// Says whether `A` is likely mostly zeros (the field of this name).
    pub fn sparse_a(mut self, sparse: bool) -> Gemm {
        self.sparse_a = sparse;
        self
    }
    /// Says that `A`'s values are likely integers divided by `divisor` (the field `a_levels`).
    pub fn a_levels(mut self, divisor: Option<f32>) -> Gemm {
        self.a_levels = divisor;
        self
    }
    /// Makes it a strided batch of `batch` products.
    pub fn batched(mut self, batch: usize, stride_a: usize, stride_b: usize, stride_c: usize) -> Gemm {
        self.batch = batch;
        self.stride_a = stride_a;
        self.stride_b = stride_b;
        self.stride_c = stride_c;
        self
    }
}

/// Which image tensors of a fused conv + pooling pass ([`Device::conv_pool`]) are pixel-major,
/// `[n, h, w, c]` (a pixel's channels side by side), instead of the network's channels-major
/// `[c, n, h, w]`. Used between two fused passes whose kernels both work on pixels (see
/// [`Device::pixel_major_between`]): the first then stores its output as its kernel computes it
/// and the second reads it as its kernel wants it, with no transposes in between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PixelMajor {
    /// The input `x` and its gradient `dx`.
    pub input: bool,
    /// The pooled output `y`, its winners `arg` and its gradient `dy`.
    pub output: bool,
}

/// The geometry of a 2-D convolution or pooling window over `n` images of `c` channels.
///
/// Inside a network, image tensors are stored channels-major, `[c, n, h, w]`: a conv layer's
/// GEMM then writes its output in place and each channel is one contiguous block. Layers that
/// change rank (Flatten, global pooling, Reshape) convert to and from row-major `[n, features]`.
/// (Between two fused conv + pooling passes of the CPU they may be pixel-major instead: see
/// [`PixelMajor`].)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Zero rows added above (`same` padding).
    pub ph: usize,
    /// Zero columns added on the left (`same` padding).
    pub pw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// Shape of a per-channel operation over `[outer, channels, inner]` (a `Dense` output is
/// `[batch, units, 1]`, a conv output `[batch, filters, h*w]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channels {
    /// Leading extent (batch).
    pub outer: usize,
    /// Channels (units or filters).
    pub channels: usize,
    /// Trailing extent (spatial positions, 1 for dense).
    pub inner: usize,
}

impl Channels {
    /// Total elements.
    pub fn len(&self) -> usize {
        self.outer * self.channels * self.inner
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Batch-normalisation settings for one call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormArgs {
    /// Shape of the normalised tensor.
    pub shape: Channels,
    /// Moving-average momentum (Keras 0.99).
    pub momentum: f32,
    /// ε added to the variance (Keras 1e-3).
    pub epsilon: f32,
}

/// The primitives a device offers. Layers, losses and optimisers are written once against these.
///
/// Methods return `Err` only for device failures (out of memory, kernel failures); shapes are
/// validated by the layers before calling.
pub trait Device: Send + Sync + 'static {
    /// A flat `f32` buffer living on the device.
    type Buf: Send + Sync;

    /// A short description (e.g. `cpu (2 threads)` or `cuda: NVIDIA H100`).
    fn describe(&self) -> String;
    /// A zero-filled buffer of `len` elements.
    ///
    /// # Errors
    /// Out of memory: the host cannot reserve `len` floats (CPU), or the GPU allocation fails.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    /// Bytes this device could still allocate, where it can tell (the CPU: the operating
    /// system's estimate of available memory); `None` when it cannot (the default). Checked
    /// before a batch's buffers are allocated, so that a model too large for the machine is
    /// refused with a message rather than killed by the system part-way through.
    fn free_memory(&self) -> Option<u64> {
        None
    }
    /// Copies `src` into the first `src.len()` elements of `dst`.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, `dst` shorter than `src` or a failed copy.
    fn upload(&self, src: &[f32], dst: &mut Self::Buf) -> Result<()>;
    /// Copies the first `dst.len()` elements of `src` to the host, waiting for pending work.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, `src` shorter than `dst`, a failed copy, or a failure of any queued
    /// operation (reported here, since this call waits for them).
    fn download(&self, src: &Self::Buf, dst: &mut [f32]) -> Result<()>;
    /// Copies `len` elements from `src` to `dst`.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a buffer shorter than `len` or a failed copy.
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf, len: usize) -> Result<()>;
    /// Sets the first `len` elements to `value`.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, `buf` shorter than `len` or a failed launch.
    fn fill(&self, buf: &mut Self::Buf, value: f32, len: usize) -> Result<()>;
    /// Gathers rows by number: `dst[i, :] = src[rows[i], :]` for `i < n`, rows of `width`
    /// values; `rows` holds the row numbers as `f32` (exact below 2²⁴), each a row of `src`
    /// (the caller checks them). How a data set kept on the device gives each step its batch.
    ///
    /// # Errors
    /// A buffer too short for `n` rows of `width`, or (CPU) a row number past `src`'s end; on a
    /// GPU, a failed launch.
    fn gather_rows(&self, src: &Self::Buf, width: usize, rows: &Self::Buf, n: usize, dst: &mut Self::Buf)
        -> Result<()>;
    /// Reads a few numbers (running loss sums and the like) to the host.
    ///
    /// # Errors
    /// Those of [`Device::download`]: none on the CPU; on a GPU, `buf` shorter than `n`, a failed copy
    /// or a failed queued operation.
    fn read_scalars(&self, buf: &Self::Buf, n: usize) -> Result<Vec<f32>> {
        let mut out = vec![0.0; n];
        self.download(buf, &mut out)?;
        Ok(out)
    }

    /// Matrix product, see [`Gemm`].
    ///
    /// # Errors
    /// None on the CPU; on a GPU, an operand too short for `g`, sizes beyond cuBLAS's 32-bit dimensions, or
    /// a cuBLAS failure.
    fn gemm(&self, g: &Gemm, a: &Self::Buf, b: &Self::Buf, c: &mut Self::Buf) -> Result<()>;
    /// A dense layer's forward pass: `y [m, n] = act(x·W + bias)` for the product `g` (not
    /// transposed, `batch` 1), `bias` of `n`; the same as [`Device::gemm`] then
    /// [`Device::bias_act`] with `Channels { outer: m, channels: n, inner: 1 }`, which is what
    /// it does unless the device fuses the two.
    ///
    /// # Errors
    /// As [`Device::gemm`] and [`Device::bias_act`].
    fn dense_forward(
        &self,
        g: &Gemm,
        x: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
        act: Activation,
        y: &mut Self::Buf,
    ) -> Result<()> {
        self.gemm(g, x, w, y)?;
        self.bias_act(y, bias, act, Channels { outer: g.m, channels: g.n, inner: 1 })
    }
    /// The buffer as host memory, when the device's memory is the host's (the CPU): callers may
    /// then write inputs in place instead of uploading a copy. `None` (the default) otherwise.
    fn host_mut<'a>(&self, buf: &'a mut Self::Buf) -> Option<&'a mut [f32]> {
        let _ = buf;
        None
    }
    /// In place `y = act(y + bias[channel])` over `[outer, channels, inner]`; softmax is over
    /// the channels of each row (with `inner == 1`).
    ///
    /// # Errors
    /// None on the CPU; on a GPU, `y` or `bias` shorter than `shape` needs, sizes beyond 32-bit indexing,
    /// or a failed launch.
    fn bias_act(&self, y: &mut Self::Buf, bias: Option<&Self::Buf>, act: Activation, shape: Channels) -> Result<()>;
    /// In place `dy *= act'(y)` given the activation's output `y` (softmax: the row-wise
    /// Jacobian-vector product).
    ///
    /// # Errors
    /// None on the CPU; on a GPU, `y` or `dy` shorter than `shape` needs, sizes beyond 32-bit indexing,
    /// or a failed launch.
    fn act_backward(&self, y: &Self::Buf, dy: &mut Self::Buf, act: Activation, shape: Channels) -> Result<()>;
    /// `out[c] = β·out[c] + Σ_{outer, inner} dy[outer, c, inner]` (the bias gradient).
    ///
    /// # Errors
    /// None on the CPU; on a GPU, `dy` or `out` shorter than `shape` needs, sizes beyond 32-bit
    /// indexing, or a failed launch.
    fn channel_sums(&self, dy: &Self::Buf, shape: Channels, beta: f32, out: &mut Self::Buf) -> Result<()>;
    /// Cross-entropy of `out` against `targets` for one batch: writes the gradient with respect
    /// to `out` into `grad` and adds `[Σ loss, Σ correct]` of the batch to `stats[0..2]`.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a buffer shorter than `args` needs (`stats`: 2 elements), sizes beyond
    /// 32-bit indexing, or a failed launch.
    fn cross_entropy(
        &self,
        args: &XentArgs,
        out: &Self::Buf,
        targets: &Self::Buf,
        grad: &mut Self::Buf,
        stats: &mut Self::Buf,
    ) -> Result<()>;
    /// Inverted dropout: draws a mask of `0` or `1/(1-rate)` from `(seed, index)` with a
    /// counter-based hash (identical on every device), stores it and writes `y = x · mask`
    /// (the first `len` elements of each).
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a buffer shorter than `len`, `len` beyond 32-bit indexing, or a failed
    /// copy or launch.
    fn dropout(
        &self,
        x: &Self::Buf,
        y: &mut Self::Buf,
        mask: &mut Self::Buf,
        rate: f32,
        seed: u64,
        len: usize,
    ) -> Result<()>;
    /// `y[i] = x[i] · m[i]` for the first `len` elements.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a buffer shorter than `len`, `len` beyond 32-bit indexing, or a failed
    /// copy or launch.
    fn mul(&self, x: &Self::Buf, m: &Self::Buf, y: &mut Self::Buf, len: usize) -> Result<()>;
    /// Adds the gradient of `l1·Σ|w| + l2·Σw²` to `dw`.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, `w` or `dw` shorter than `len`, `len` beyond 32-bit indexing, or a
    /// failed launch.
    fn regularizer_grad(&self, w: &Self::Buf, dw: &mut Self::Buf, l1: f32, l2: f32, len: usize) -> Result<()>;
    /// Adds `l1·Σ|w| + l2·Σw²` to `acc[0]` (kept on the device).
    ///
    /// # Errors
    /// None on the CPU; on a GPU, `w` shorter than `len`, an empty `acc`, `len` beyond 32-bit
    /// indexing, or a failed launch.
    fn regularizer_penalty(&self, w: &Self::Buf, l1: f32, l2: f32, len: usize, acc: &mut Self::Buf) -> Result<()>;
    /// One optimiser update of a parameter tensor of `len` elements with its gradient and
    /// state slots. `cols` is the length of the tensor's rows (its last dimension, a dense
    /// kernel's units): a device that splits a kernel's products between threads by rows
    /// splits its update the same way, so each share stays where it is used.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, fewer `slots` than `rule` needs, a buffer shorter than `len`, `len`
    /// beyond 32-bit indexing, or a failed launch.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        rule: &UpdateRule,
        sp: StepParams,
        w: &mut Self::Buf,
        g: &Self::Buf,
        slots: &mut [Self::Buf],
        len: usize,
        cols: usize,
    ) -> Result<()>;

    /// `[c, n, h, w]` images into columns `[c·kh·kw, n·oh·ow]` (zero padding).
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a window with an empty kernel or a zero stride, a buffer smaller than
    /// `win` implies, sizes beyond 32-bit indexing, or a failed launch.
    fn im2col(&self, x: &Self::Buf, win: &Window, cols: &mut Self::Buf) -> Result<()>;
    /// Adds columns `[c·kh·kw, n·oh·ow]` back into images `dx` `[c, n, h, w]` (overwriting `dx`).
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a window with an empty kernel or a zero stride, a buffer smaller than
    /// `win` implies, sizes beyond 32-bit indexing, or a failed launch.
    fn col2im(&self, cols: &Self::Buf, win: &Window, dx: &mut Self::Buf) -> Result<()>;
    /// Swaps the first two axes: `src [a, b, r]` into `dst [b, a, r]`.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, `src` or `dst` shorter than `a·b·r`, sizes beyond 32-bit indexing,
    /// or a failed launch.
    fn swap_axes01(&self, src: &Self::Buf, a: usize, b: usize, r: usize, dst: &mut Self::Buf) -> Result<()>;
    /// Max pooling of the `n·c` planes `[h, w]` into planes `[oh, ow]` (in the same order),
    /// remembering each winner's offset in its input plane in `arg`.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a window with an empty kernel or a zero stride, a buffer smaller than
    /// `win` implies, sizes beyond 32-bit indexing, or a failed launch.
    fn max_pool(&self, x: &Self::Buf, win: &Window, y: &mut Self::Buf, arg: &mut Self::Buf) -> Result<()>;
    /// Gradient of max pooling: `dx` (overwritten) receives `dy` at the winners.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a window with an empty kernel or a zero stride, a buffer smaller than
    /// `win` implies, sizes beyond 32-bit indexing, or a failed launch.
    fn max_pool_backward(&self, dy: &Self::Buf, arg: &Self::Buf, win: &Window, dx: &mut Self::Buf) -> Result<()>;
    /// Whether [`Device::conv_pool`] handles this pair: a `Conv2D` window `conv` followed by
    /// the non-overlapping max pooling `pool` (whose input is the conv output, `pool.c` its
    /// filters). Devices without the fused pass keep the default, `false`.
    fn fuses_conv_pool(&self, conv: &Window, pool: &Window) -> bool {
        let _ = (conv, pool);
        false
    }
    /// Whether two fused conv + pooling passes in a row, `first` and then `second` (each its
    /// conv window, pooling window and filters), can hand the first's output to the second
    /// pixel-major ([`PixelMajor`]) when the first computes no input gradient. Devices keep the
    /// default, `false`, unless their kernels gain from it.
    fn pixel_major_between(&self, first: (&Window, &Window, usize), second: (&Window, &Window, usize)) -> bool {
        let _ = (first, second);
        false
    }
    /// `y = act(maxpool(conv(x, w) + b))` in one pass: `x [c, n, h, w]`, kernel
    /// `w [filters, c, kh, kw]`, bias `b [filters]`, pooled output `y [filters, n, poh, pow]`;
    /// `arg` receives each window's winner as an offset in its conv output plane. Equal to the
    /// conv, the activation and the pooling one after the other, because a non-decreasing
    /// activation commutes with the maximum. Only for pairs [`Device::fuses_conv_pool`] accepts;
    /// `x`, `y` and `arg` pixel-major where `pm` says so.
    ///
    /// # Errors
    /// Always on a device without the fused pass (the default, e.g. the CUDA device); on the CPU, a
    /// pair it does not fuse, or a pixel-major layout `pm` that the pass it picks for this pair
    /// cannot read or write. (Buffers too short for the windows, or windows whose sizes overflow
    /// when multiplied out, are a panic.)
    #[allow(clippy::too_many_arguments)]
    fn conv_pool(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        b: Option<&Self::Buf>,
        act: Activation,
        conv: &Window,
        filters: usize,
        pool: &Window,
        pm: PixelMajor,
        y: &mut Self::Buf,
        arg: &mut Self::Buf,
    ) -> Result<()> {
        let _ = (x, w, b, act, conv, filters, pool, pm, y, arg);
        Err(crate::error::NnError::Device(format!("{} has no fused conv + pooling pass", self.describe())))
    }
    /// Gradients of [`Device::conv_pool`] from `dy` (shaped like `y`), with the kernel `w`:
    /// `dw [filters, c, kh, kw]`, `db [filters]` and, if asked, `dx [c, n, h, w]`, overwritten;
    /// the image tensors laid out as in the forward pass (`pm`).
    ///
    /// # Errors
    /// As [`Device::conv_pool`]: always on a device without the fused pass; on the CPU, a pair
    /// it does not fuse, or a pixel-major layout `pm` that the gradient pass it picks cannot
    /// read or write.
    #[allow(clippy::too_many_arguments)]
    fn conv_pool_backward(
        &self,
        x: &Self::Buf,
        dy: &Self::Buf,
        y: &Self::Buf,
        arg: &Self::Buf,
        act: Activation,
        conv: &Window,
        filters: usize,
        pool: &Window,
        pm: PixelMajor,
        w: &Self::Buf,
        dw: &mut Self::Buf,
        db: Option<&mut Self::Buf>,
        dx: Option<&mut Self::Buf>,
    ) -> Result<()> {
        let _ = (x, dy, y, arg, act, conv, filters, pool, pm, w, dw, db, dx);
        Err(crate::error::NnError::Device(format!("{} has no fused conv + pooling pass", self.describe())))
    }
    /// Whether [`Device::conv2d`] and [`Device::conv2d_backward`] compute this convolution
    /// (a faster way than [`Device::im2col`] and one [`Device::gemm`] over the whole batch).
    /// Devices without one keep the default, `false`.
    fn direct_conv(&self, win: &Window, filters: usize) -> bool {
        let _ = (win, filters);
        false
    }
    /// `y = act(conv(x, w) + b)`: `x [c, n, h, w]`, kernel `w [filters, c, kh, kw]`, bias
    /// `b [filters]`, `y [filters, n, oh, ow]` (the shapes of the im2col path). Only for
    /// windows [`Device::direct_conv`] accepts.
    ///
    /// # Errors
    /// Always on a device without direct convolution (the default, e.g. the CUDA device); on the
    /// CPU, a window [`Device::direct_conv`] does not accept. (Buffers too short for the window,
    /// or a window whose sizes overflow when multiplied out, are a panic.)
    #[allow(clippy::too_many_arguments)]
    fn conv2d(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        b: Option<&Self::Buf>,
        act: Activation,
        win: &Window,
        filters: usize,
        y: &mut Self::Buf,
    ) -> Result<()> {
        let _ = (x, w, b, act, win, filters, y);
        Err(crate::error::NnError::Device(format!("{} has no direct convolution", self.describe())))
    }
    /// Gradients of [`Device::conv2d`] from `dy [filters, n, oh, ow]` (the gradient after
    /// the activation's): each asked for is overwritten, `dw [filters, c, kh, kw]` and
    /// `dx [c, n, h, w]`. The bias gradient is the layer's (`channel_sums`).
    ///
    /// # Errors
    /// As [`Device::conv2d`]: always on a device without direct convolution; on the CPU, a
    /// window [`Device::direct_conv`] does not accept.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        &self,
        x: &Self::Buf,
        dy: &Self::Buf,
        w: &Self::Buf,
        win: &Window,
        filters: usize,
        dw: Option<&mut Self::Buf>,
        dx: Option<&mut Self::Buf>,
    ) -> Result<()> {
        let _ = (x, dy, w, win, filters, dw, dx);
        Err(crate::error::NnError::Device(format!("{} has no direct convolution", self.describe())))
    }
    /// Average pooling (padding cells are not counted).
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a window with an empty kernel or a zero stride, a buffer smaller than
    /// `win` implies, sizes beyond 32-bit indexing, or a failed launch.
    fn avg_pool(&self, x: &Self::Buf, win: &Window, y: &mut Self::Buf) -> Result<()>;
    /// Gradient of average pooling (`dx` overwritten).
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a window with an empty kernel or a zero stride, a buffer smaller than
    /// `win` implies, sizes beyond 32-bit indexing, or a failed launch.
    fn avg_pool_backward(&self, dy: &Self::Buf, win: &Window, dx: &mut Self::Buf) -> Result<()>;
    /// Batch normalisation in training: normalises `x` with the batch statistics of each channel
    /// into `y = γ·x̂ + β`, stores the batch mean and `1/√(var+ε)` in `saved [2, channels]`, and
    /// updates the moving statistics (`moving = m·moving + (1-m)·batch`, with the biased batch variance as Keras 3).
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a buffer shorter than `args.shape` needs (per element or per channel),
    /// sizes beyond 32-bit indexing, or a failed launch.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_train(
        &self,
        args: &BatchNormArgs,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        moving_mean: &mut Self::Buf,
        moving_var: &mut Self::Buf,
        saved: &mut Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// Batch normalisation at inference, with the moving statistics.
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a buffer shorter than `args.shape` needs (per element or per channel),
    /// sizes beyond 32-bit indexing, or a failed launch.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_infer(
        &self,
        args: &BatchNormArgs,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        moving_mean: &Self::Buf,
        moving_var: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// Gradient of training-mode batch normalisation: writes `dx` and `dγ`, `dβ` (overwritten).
    ///
    /// # Errors
    /// None on the CPU; on a GPU, a buffer shorter than `args.shape` needs (per element or per channel),
    /// sizes beyond 32-bit indexing, or a failed launch.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_backward(
        &self,
        args: &BatchNormArgs,
        x: &Self::Buf,
        dy: &Self::Buf,
        gamma: &Self::Buf,
        saved: &Self::Buf,
        dx: &mut Self::Buf,
        dgamma: &mut Self::Buf,
        dbeta: &mut Self::Buf,
    ) -> Result<()>;
}

/// The dropout mask hash shared by every device: a uniform number in `[0, 1)` from
/// `(seed, index)` (SplitMix64 finaliser, top 24 bits).
#[inline(always)]
pub fn dropout_uniform(seed: u64, index: u64) -> f32 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}
