//! A Sequential network running on one device: the layers, the activation and gradient buffers
//! sized for a batch capacity, and the one training step (forward, loss, backward, update).
//!
//! [`Network<D>`] is generic over the device; users hold it as `Box<dyn Runtime>` (inside
//! [`crate::Model`]), so no backend type parameter reaches their signatures.

use std::ops::Range;

use mnist_data::Rng;

use crate::activation::Activation;
use crate::cpu::team::SyncPtr;
use crate::device::{Device, PixelMajor};
use crate::error::{NnError, Result};
use crate::layers::{self, Ctx, Layer};
use crate::loss::{Loss, XentArgs};
use crate::optim::{StepParams, UpdateRule};
use crate::spec::{LayerSpec, ModelSpec, ResolvedLayer};
use crate::tensor::Tensor;

/// Running sums a device keeps between host reads: `[Σ loss, Σ correct, ...]`.
pub const STATS_LEN: usize = 4;

/// What the training loop needs from a network, whatever device it runs on.
pub trait Runtime: Send {
    /// The device, in words.
    fn device(&self) -> String;
    /// The architecture.
    fn spec(&self) -> &ModelSpec;
    /// One training step on a batch: `x [n, in]`, `targets` (`[n]` labels as `f32` for a sparse
    /// loss, `[n, classes]` rows otherwise); `seed` drives this step's dropout masks. Adds the
    /// batch's loss and correct count to the running statistics ([`Runtime::take_stats`]).
    ///
    /// # Errors
    /// [`NnError::Shape`] when `x` holds fewer than `n` examples or `targets` does not fit `n` and `loss`,
    /// [`NnError::Spec`] for a sparse label that is not a class, for `n` = 0 and for step `sp.t`
    /// = 0 (all checked before anything runs); device failures.
    #[allow(clippy::too_many_arguments)]
    fn train_batch(
        &mut self,
        x: &[f32],
        targets: &[f32],
        n: usize,
        loss: Loss,
        rule: &UpdateRule,
        sp: StepParams,
        seed: u64,
    ) -> Result<()>;
    /// [`Runtime::train_batch`] on `batch`, whose inputs its `fill` writes (as in
    /// [`Runtime::predict_filled`]: in parallel row ranges, straight into the network's input
    /// buffer when [`Runtime::host_inputs`]).
    ///
    /// `next`, when given, is the batch the following call will train on: where this step
    /// leaves cores idle (on the CPU, while a small tail of layers after the first runs on one
    /// thread) the network gathers it there, into a second input buffer, and the following
    /// call, if its batch has the same key, trains on those inputs instead of calling its
    /// `fill`. Keys name batches: never give two different batches the same key.
    ///
    /// # Errors
    /// As [`Runtime::train_batch`], less the check of `x`: [`NnError::Shape`] or [`NnError::Spec`] for
    /// `targets` that do not fit `n` and `loss`; device failures.
    #[allow(clippy::too_many_arguments)]
    fn train_filled(
        &mut self,
        batch: FilledBatch<'_>,
        next: Option<FilledBatch<'_>>,
        targets: &[f32],
        loss: Loss,
        rule: &UpdateRule,
        sp: StepParams,
        seed: u64,
    ) -> Result<()>;
    /// Keeps a training set in the device's memory for [`Runtime::train_rows`], replacing one
    /// kept before: `images [rows, in]`, normalised, and `targets` (`[rows]` labels for a
    /// sparse `loss`, `[rows, classes]` rows otherwise). Then each step uploads only its row
    /// numbers and gathers its batch on the device: for a GPU (on the CPU, whose memory is the
    /// host's, [`Runtime::train_filled`] gathers in place without a copy of the set). Returns
    /// false, keeping nothing, where the set has 2²⁴ rows or more (row numbers travel as `f32`).
    ///
    /// # Errors
    /// [`NnError::Shape`] for `images` that are not `rows` inputs, [`NnError::Shape`] or
    /// [`NnError::Spec`] for `targets` that do not fit (as in [`Runtime::train_batch`]); device
    /// failures (an allocation larger than the device's free memory among them).
    fn keep_training_set(&mut self, images: &[f32], targets: &[f32], rows: usize, loss: Loss) -> Result<bool>;
    /// Frees the training set kept by [`Runtime::keep_training_set`], if any.
    fn drop_training_set(&mut self);
    /// [`Runtime::train_batch`] on the rows `rows` of the kept training set, gathered on the
    /// device (inputs and targets).
    ///
    /// # Errors
    /// [`NnError::Spec`] when no set is kept, it was kept for a loss of the other kind (labels
    /// against rows of targets), or a row number is past its end (all checked before anything
    /// runs); device failures.
    fn train_rows(&mut self, rows: &[u32], loss: Loss, rule: &UpdateRule, sp: StepParams, seed: u64) -> Result<()>;
    /// Forward and loss in inference mode, adding to the running statistics (`n` = 0: nothing).
    ///
    /// # Errors
    /// As [`Runtime::train_batch`]: [`NnError::Shape`] for a short `x` or `targets` that do not fit,
    /// [`NnError::Spec`] for a sparse label that is not a class; device failures.
    fn eval_batch(&mut self, x: &[f32], targets: &[f32], n: usize, loss: Loss) -> Result<()>;
    /// [`Runtime::eval_batch`] with the inputs written by `fill`.
    ///
    /// # Errors
    /// [`NnError::Shape`] or [`NnError::Spec`] for `targets` that do not fit `n` and `loss`; device failures.
    fn eval_filled(&mut self, n: usize, fill: &Fill<'_>, targets: &[f32], loss: Loss) -> Result<()>;
    /// True when the network's input buffer is host memory (the CPU): the `*_filled` calls then
    /// write inputs in place, in parallel, so gathering a batch there beats preparing it on
    /// another thread and copying it in.
    fn host_inputs(&mut self) -> bool;
    /// Declares that the inputs of the calls that follow, but for the slices given to the
    /// `*_batch` calls, are integers of at most 256 in magnitude divided by `divisor` (`None`
    /// until said: nothing declared): those the `*_filled` calls' fills write, those gathered
    /// ahead, and a kept training set. Bytes scaled by 1/255 are (`Some(255.0)`). A device may
    /// then multiply the first dense layer's integers exactly and divide the sums: the CPU
    /// does, on AMX (see `cpu::use_level_products`), and checks every value, taking f32
    /// products where one is not such an integer; a false declaration costs time, not
    /// accuracy.
    fn set_input_levels(&mut self, divisor: Option<f32>);
    /// Returns `(Σ loss, Σ correct)` since the last call and resets them.
    ///
    /// # Errors
    /// Device failures, including on a GPU those of earlier queued work (reading the sums waits for it).
    fn take_stats(&mut self) -> Result<(f64, f64)>;
    /// The model's outputs for `x [n, in]` into `out [n, outputs]` (inference mode). Only the
    /// first `n` rows of each are used; either one holding fewer is an [`NnError::Shape`]
    /// error. `n` = 0 does nothing.
    ///
    /// # Errors
    /// [`NnError::Shape`] when `x` or `out` holds fewer than `n` rows; device failures.
    fn predict_batch(&mut self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()>;
    /// Like [`Runtime::predict_batch`], with the inputs written by `fill(rows, x)`, which
    /// gets the examples `rows` and their `[rows.len(), in]` slice of the input, for several
    /// ranges in parallel: straight into the network's input buffer when the device's memory is
    /// the host's (no copy), otherwise into a staging buffer that is then uploaded.
    ///
    /// # Errors
    /// [`NnError::Shape`] when `out` holds fewer than `n` rows; device failures.
    fn predict_filled(&mut self, n: usize, fill: &Fill<'_>, out: &mut [f32]) -> Result<()>;
    /// All parameters (trainable and not), in layer order.
    ///
    /// # Errors
    /// Device failures (copying the values to the host).
    fn weights(&self) -> Result<Vec<Tensor>>;
    /// Replaces parameters by name; every parameter must be given with its exact shape.
    ///
    /// # Errors
    /// [`NnError::Spec`] for a parameter missing from `w`, [`NnError::Shape`] for one of another shape;
    /// device failures. Parameters before the failing one are already replaced.
    fn set_weights(&mut self, w: &[Tensor]) -> Result<()>;
    /// Optimiser state slots, named `<param>.slot<k>`.
    ///
    /// # Errors
    /// Device failures (copying the slots to the host).
    fn optimizer_state(&self) -> Result<Vec<Tensor>>;
    /// Restores optimiser state slots saved by [`Runtime::optimizer_state`].
    ///
    /// # Errors
    /// [`NnError::Shape`] for a slot whose size differs from its parameter's; device failures
    /// (allocation, upload).
    fn set_optimizer_state(&mut self, s: &[Tensor]) -> Result<()>;
    /// The current regularisation penalty `Σ l1·|w| + l2·w²`.
    ///
    /// # Errors
    /// Device failures.
    fn regularization_penalty(&mut self) -> Result<f32>;
}

/// Writes the inputs of examples `rows` into their `[rows.len(), in]` slice (see
/// [`Runtime::predict_filled`]); called for several ranges at once.
pub type Fill<'a> = dyn Fn(std::ops::Range<usize>, &mut [f32]) + Sync + 'a;

/// A batch of `n` examples whose inputs `fill` writes, named by `key` (see
/// [`Runtime::train_filled`]).
#[derive(Clone, Copy)]
pub struct FilledBatch<'a> {
    /// Number of examples.
    pub n: usize,
    /// Writes the inputs.
    pub fill: &'a Fill<'a>,
    /// Names this batch among those a training run gathers ahead.
    pub key: u64,
}

/// Where a step's inputs come from.
#[derive(Clone, Copy)]
enum Input<'a> {
    /// `[n, in]` on the host, uploaded (copied) into the input buffer.
    Slice(&'a [f32]),
    /// Written in place by the caller (see [`Fill`]).
    Filled(&'a Fill<'a>),
    /// Already in the input buffer (gathered during the previous step).
    Ready,
}

/// Rows per part when inputs are gathered beside other work.
const GATHER_ROWS: usize = 8;

/// A network on device `D`.
pub struct Network<D: Device> {
    dev: D,
    spec: ModelSpec,
    resolved: Vec<ResolvedLayer>,
    layers: Vec<Box<dyn Layer<D>>>,
    /// Buffer slot of each layer's input and output (identity layers share their input's).
    slot_in: Vec<usize>,
    slot_out: Vec<usize>,
    /// Per-example element count of each slot (slot 0 is the network's input).
    slot_width: Vec<usize>,
    vals: Vec<D::Buf>,
    grads: Vec<D::Buf>,
    targets: Option<D::Buf>,
    stats: D::Buf,
    cap: usize,
    head_softmax: bool,
    /// Host copy of the inputs for devices whose memory is not the host's.
    staging: Vec<f32>,
    /// A second input buffer, gathered during the previous step (see
    /// [`Runtime::train_filled`]), with the key and size of the batch it holds.
    ahead: Option<D::Buf>,
    ahead_key: Option<(u64, usize)>,
    /// Where the layers after the first that computes begin, when they are all small dense
    /// layers (or layers without arithmetic) whose work may run on one thread beside the
    /// next batch's gathering; with their multiply-adds and outputs per example.
    tail: Option<Tail>,
    /// A training set kept in the device's memory ([`Runtime::keep_training_set`]).
    kept: Option<Kept<D::Buf>>,
    /// What the inputs but the slices of `*_batch` calls are: integers divided by this
    /// ([`Runtime::set_input_levels`]).
    input_levels: Option<f32>,
    /// The lowest layer with trainable parameters (the number of layers when none has): the
    /// backward pass stops there, computing no input gradient for it (the layers below are
    /// frozen or have no weights).
    trained_from: usize,
}

/// A training set kept in a device's memory, from which each step gathers its batch by row
/// number ([`Runtime::train_rows`]).
struct Kept<B> {
    /// `[rows, in]`, normalised.
    images: B,
    /// `[rows]` labels (a sparse loss) or `[rows, classes]`.
    targets: B,
    rows: usize,
    /// Whether the targets are labels (for a sparse loss).
    sparse: bool,
    /// The step's row numbers on the device (room for `picked_cap`), and on the host as `f32`
    /// (both reused).
    picked: B,
    picked_cap: usize,
    picked_host: Vec<f32>,
}

/// The targets of a step: on the host (uploaded by the loss pass), or already gathered into
/// the targets buffer.
#[derive(Clone, Copy)]
enum Targets<'a> {
    Host(&'a [f32]),
    Gathered,
}

/// The layers after a network's first computing layer, when they are all dense, dropout or
/// reshaping layers: where they start and their work per example.
#[derive(Clone, Copy, Debug)]
struct Tail {
    /// The first layer of the tail.
    start: usize,
    /// Multiply-adds of the tail's forward products, per example.
    macs: usize,
    /// Values the tail's layers output, per example.
    values: usize,
}

impl<D: Device> Network<D> {
    /// Builds the network of `spec` on `dev`, initialising the weights from `seed`.
    ///
    /// # Errors
    /// Errors of [`ModelSpec::resolve`] and device allocation failures.
    pub fn new(dev: D, spec: &ModelSpec, seed: u64) -> Result<Self> {
        Self::build(dev, spec, seed, true)
    }

    /// Like [`Network::new`], but every layer runs on its own even where the device has a fused
    /// pass for a pair of them: the reference the fused passes are tested against.
    ///
    /// # Errors
    /// As [`Network::new`].
    pub fn new_unfused(dev: D, spec: &ModelSpec, seed: u64) -> Result<Self> {
        Self::build(dev, spec, seed, false)
    }

    fn build(dev: D, spec: &ModelSpec, seed: u64, fuse: bool) -> Result<Self> {
        // Host arithmetic (and the thread pools started from here) flushes subnormals to zero.
        crate::cpu::flush_denormals_to_zero();
        let resolved = spec.resolve()?;
        let mut rng = Rng::derive(seed, 0x1417);
        let mut layers = Vec::with_capacity(resolved.len());
        let mut slot_in = Vec::new();
        let mut slot_out = Vec::new();
        let mut slot_width = vec![spec.input_shape.iter().product()];
        let mut i = 0;
        while i < resolved.len() {
            let l = &resolved[i];
            // A conv followed by max pooling may run fused: one layer with the pooling's
            // output, and the pooling an identity passing it on.
            let pair = match resolved.get(i + 1) {
                Some(next) if fuse => layers::build_pair(&dev, l, next, &mut rng)?,
                _ => None,
            };
            let built: Vec<(Box<dyn Layer<D>>, &ResolvedLayer)> = match pair {
                Some(layers::Pair::Fused(f)) => {
                    let next = &resolved[i + 1];
                    vec![(f, next), (Box::new(layers::Passthrough) as Box<dyn Layer<D>>, next)]
                }
                Some(layers::Pair::Separate(a, b)) => vec![(a, l), (b, &resolved[i + 1])],
                None => vec![(layers::build(&dev, l, &mut rng)?, l)],
            };
            i += built.len();
            for (layer, shape_of) in built {
                let input = *slot_out.last().unwrap_or(&0);
                slot_in.push(input);
                if layer.is_identity() {
                    slot_out.push(input);
                } else {
                    slot_width.push(shape_of.output.iter().product());
                    slot_out.push(slot_width.len() - 1);
                }
                layers.push(layer);
            }
        }
        Self::pixel_major_edges(&dev, &mut layers, &slot_in);
        for (layer, &slot) in layers.iter_mut().zip(&slot_in) {
            if slot == 0 {
                layer.set_reads_network_input();
            }
        }
        let head_softmax = matches!(
            resolved.last().map(|l| &l.spec),
            Some(LayerSpec::Dense(d)) if d.activation == Activation::Softmax
        );
        let stats = dev.alloc(STATS_LEN)?;
        let tail = Self::tail_of(&layers, &resolved);
        let trained_from =
            layers.iter().position(|l| l.params().iter().any(|p| p.grad.is_some())).unwrap_or(layers.len());
        Ok(Network {
            dev,
            spec: spec.clone(),
            resolved,
            layers,
            slot_in,
            slot_out,
            slot_width,
            vals: Vec::new(),
            grads: Vec::new(),
            targets: None,
            stats,
            cap: 0,
            head_softmax,
            staging: Vec::new(),
            ahead: None,
            ahead_key: None,
            tail,
            kept: None,
            input_levels: None,
            trained_from,
        })
    }

    /// Two fused conv + pooling layers in a row, the first reading the network's input (so it
    /// computes no input gradient): where the device takes it, the first writes its output
    /// pixel-major and the second reads it so ([`crate::device::PixelMajor`]).
    fn pixel_major_edges(dev: &D, layers: &mut [Box<dyn Layer<D>>], slot_in: &[usize]) {
        for i in 0..layers.len() {
            let Some(a) = layers[i].conv_pool_shape() else { continue };
            let Some(j) = (i + 1..layers.len()).find(|&j| !layers[j].is_identity()) else { continue };
            let Some(b) = layers[j].conv_pool_shape() else { continue };
            if slot_in[i] == 0 && dev.pixel_major_between((&a.0, &a.1, a.2), (&b.0, &b.1, b.2)) {
                layers[i].set_pixel_major(PixelMajor { input: false, output: true });
                layers[j].set_pixel_major(PixelMajor { input: true, output: false });
            }
        }
    }

    /// The tail of layers after the first computing one, when every layer of it is dense,
    /// dropout or reshaping (and the layers were built one per resolved layer).
    fn tail_of(layers: &[Box<dyn Layer<D>>], resolved: &[ResolvedLayer]) -> Option<Tail> {
        let first = layers.iter().position(|l| !l.is_identity())?;
        let (mut macs, mut values) = (0, 0);
        for l in resolved.get(first + 1..)? {
            let out: usize = l.output.iter().product();
            match &l.spec {
                LayerSpec::Dense(_) => macs += l.input.iter().product::<usize>() * out,
                LayerSpec::Dropout(_) | LayerSpec::Flatten(_) | LayerSpec::Reshape(_) => {}
                _ => return None,
            }
            values += out;
        }
        (layers.len() == resolved.len() && first + 1 < layers.len()).then_some(Tail { start: first + 1, macs, values })
    }

    /// The device.
    pub fn dev(&self) -> &D {
        &self.dev
    }

    /// The resolved layers (names and shapes).
    pub fn layers(&self) -> &[ResolvedLayer] {
        &self.resolved
    }

    /// How many conv + max-pooling pairs run as one fused layer on this device (none with
    /// [`Network::new_unfused`]).
    pub fn fused_pairs(&self) -> usize {
        self.layers.iter().filter(|l| l.conv_pool_shape().is_some()).count()
    }

    /// The bytes [`Network::reserve`] allocates for batches of `cap` examples: each slot's
    /// values and gradients, and the layers' scratch (im2col columns, masks, ...). Saturating.
    pub(crate) fn batch_bytes(&self, cap: usize) -> u64 {
        let slots = self.slot_width.iter().fold(0usize, |a, &w| a.saturating_add(w)).saturating_mul(2);
        let scratch = self.layers.iter().fold(0usize, |a, l| a.saturating_add(l.scratch_floats(&self.dev, cap)));
        (slots as u64).saturating_mul(cap as u64).saturating_add(scratch as u64).saturating_mul(4)
    }

    /// Makes room for batches of `n` examples (buffers for every slot's values and gradients,
    /// and the layers' own).
    ///
    /// # Errors
    /// A batch whose buffers cannot fit in the device's free memory; allocation failures.
    pub(crate) fn reserve(&mut self, n: usize) -> Result<()> {
        if n <= self.cap {
            return Ok(());
        }
        let cap = n.max(1);
        let need = self.batch_bytes(cap);
        if let Some(free) = self.dev.free_memory().filter(|&free| need > free) {
            let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
            return Err(NnError::Device(format!(
                "a batch of {cap} examples needs at least {:.1} GiB for the outputs of the model's {} layers, \
                 their gradients and scratch, and {:.1} GiB of memory is free: use a smaller batch, or fewer or \
                 narrower layers",
                gib(need),
                self.layers.len(),
                gib(free)
            )));
        }
        self.vals = self.slot_width.iter().map(|w| self.dev.alloc(cap * w)).collect::<Result<_>>()?;
        self.grads = self.slot_width.iter().map(|w| self.dev.alloc(cap * w)).collect::<Result<_>>()?;
        let out_w = *self.slot_width.last().unwrap_or(&1);
        self.targets = Some(self.dev.alloc(cap * out_w)?);
        for l in &mut self.layers {
            l.reserve(&self.dev, cap)?;
        }
        self.ahead = None;
        self.ahead_key = None;
        self.cap = cap;
        Ok(())
    }

    /// The declared levels of `input` ([`Runtime::set_input_levels`]): none for a caller's
    /// slice.
    fn levels_of(&self, input: Input<'_>) -> Option<f32> {
        match input {
            Input::Slice(_) => None,
            Input::Filled(_) | Input::Ready => self.input_levels,
        }
    }

    fn forward(&mut self, input: Input<'_>, n: usize, ctx: Ctx) -> Result<()> {
        self.load_input(input, n)?;
        self.forward_layers(n, ctx)
    }

    /// The first `n` rows of a caller's output buffer, or an error naming both shapes when it
    /// is shorter.
    fn output_rows<'a>(&self, out: &'a mut [f32], n: usize) -> Result<&'a mut [f32]> {
        let w = *self.slot_width.last().unwrap_or(&1);
        if out.len() < n * w {
            return Err(NnError::Shape { layer: "output buffer".into(), expected: vec![n, w], found: vec![out.len()] });
        }
        Ok(&mut out[..n * w])
    }

    /// Puts the `[n, in]` inputs into the input buffer `vals[0]`.
    fn load_input(&mut self, input: Input<'_>, n: usize) -> Result<()> {
        let w = self.slot_width[0];
        match input {
            Input::Slice(x) => {
                if x.len() < n * w {
                    return Err(NnError::Shape {
                        layer: "input".into(),
                        expected: [vec![n], self.spec.input_shape.clone()].concat(),
                        found: vec![x.len()],
                    });
                }
                self.reserve(n)?;
                self.dev.upload(&x[..n * w], &mut self.vals[0])
            }
            Input::Ready => self.reserve(n),
            Input::Filled(fill) => {
                self.reserve(n)?;
                let rows = n.div_ceil(4 * crate::cpu::team::threads()).max(1);
                let fill_rows = |x: &mut [f32]| {
                    crate::cpu::team::chunks_mut(x, rows * w.max(1), |i, part| {
                        fill(i * rows..i * rows + part.len() / w.max(1), part)
                    })
                };
                match self.dev.host_mut(&mut self.vals[0]) {
                    Some(host) => {
                        fill_rows(&mut host[..n * w]);
                        Ok(())
                    }
                    None => {
                        let mut staging = std::mem::take(&mut self.staging);
                        staging.resize(n * w, 0.0);
                        fill_rows(&mut staging);
                        let uploaded = self.dev.upload(&staging, &mut self.vals[0]);
                        self.staging = staging;
                        uploaded
                    }
                }
            }
        }
    }

    /// The layers' forward pass on the input already in `vals[0]`.
    fn forward_layers(&mut self, n: usize, ctx: Ctx) -> Result<()> {
        self.forward_range(0..self.layers.len(), n, ctx)
    }

    /// The forward pass of layers `range`.
    fn forward_range(&mut self, range: Range<usize>, n: usize, ctx: Ctx) -> Result<()> {
        let last = self.layers.len() - 1;
        for i in range {
            let layer = &mut self.layers[i];
            if layer.is_identity() {
                continue;
            }
            let (si, so) = (self.slot_in[i], self.slot_out[i]);
            let (lo, hi) = self.vals.split_at_mut(so);
            let c = Ctx { logits_head: ctx.logits_head && i == last, seed: layer_seed(ctx.seed, i), ..ctx };
            layer.forward(&self.dev, &lo[si], &mut hi[0], n, &c)?;
        }
        Ok(())
    }

    /// The backward pass of layers `range`, last first; with an `update`, each layer's
    /// parameters are updated as soon as its backward pass is done (its input gradient is
    /// computed by then, so the bits are those of updating after the whole pass), while its
    /// weights and their gradients are still in the caches.
    fn backward_range(&mut self, range: Range<usize>, n: usize, ctx: Ctx, update: Option<Update<'_>>) -> Result<()> {
        let last = self.layers.len() - 1;
        // Below the lowest trainable layer nothing needs a gradient.
        for i in range.rev().take_while(|&i| i >= self.trained_from) {
            let layer = &mut self.layers[i];
            if layer.is_identity() {
                continue;
            }
            let (si, so) = (self.slot_in[i], self.slot_out[i]);
            let c = Ctx { logits_head: ctx.logits_head && i == last, seed: layer_seed(ctx.seed, i), ..ctx };
            let (glo, ghi) = self.grads.split_at_mut(so);
            let dx = if si == 0 || i == self.trained_from { None } else { Some(&mut glo[si]) };
            layer.backward(&self.dev, &self.vals[si], &self.vals[so], &mut ghi[0], dx, n, &c)?;
            if let Some((rule, sp)) = update {
                for p in layer.params_mut() {
                    let Some(g) = p.grad.as_ref() else { continue };
                    let len = p.shape.iter().product();
                    let cols = p.shape.last().copied().unwrap_or(1);
                    while p.slots.len() < rule.slots() {
                        p.slots.push(self.dev.alloc(len)?);
                    }
                    self.dev.update(rule, sp, &mut p.value, g, &mut p.slots[..rule.slots()], len, cols)?;
                }
            }
        }
        Ok(())
    }

    /// `(fused, logits)`: whether the head's softmax is fused into the loss, and whether the
    /// loss reads logits.
    fn logits(&self, loss: Loss) -> (bool, bool) {
        let fused = self.head_softmax && !loss.from_logits();
        (fused, fused || loss.from_logits())
    }

    /// Checks that `targets` fit `n` examples of this model under `loss`: `[n]` labels, each
    /// an integer below the classes, or `[n, classes]` rows. Called before anything runs, so a
    /// step refused for its targets changes nothing.
    fn check_targets(&self, targets: &[f32], n: usize, loss: Loss) -> Result<()> {
        let classes = *self.slot_width.last().unwrap_or(&1);
        let expected = if loss.sparse() { n } else { n * classes };
        if targets.len() != expected {
            return Err(NnError::Shape {
                layer: format!("targets of {}", loss.name()),
                expected: if loss.sparse() { vec![n] } else { vec![n, classes] },
                found: vec![targets.len()],
            });
        }
        if loss.sparse() {
            let not_a_class = |&(_, &l): &(usize, &f32)| !(l >= 0.0 && l < classes as f32 && l.fract() == 0.0);
            if let Some((i, l)) = targets.iter().enumerate().find(not_a_class) {
                return Err(NnError::spec(format!(
                    "{}: the label of example {i} is {l}, not a class (an integer from 0 to {})",
                    loss.name(),
                    classes - 1
                )));
            }
        }
        Ok(())
    }

    /// The loss of the outputs against `targets` (checked by [`Network::check_targets`]),
    /// added to the statistics, and its gradient.
    fn loss_pass(&mut self, targets: Targets<'_>, n: usize, loss: Loss, logits: bool) -> Result<()> {
        let classes = *self.slot_width.last().unwrap_or(&1);
        let t = self.targets.as_mut().ok_or_else(|| NnError::Device("targets buffer missing".into()))?;
        if let Targets::Host(targets) = targets {
            self.dev.upload(targets, t)?;
        }
        let args = XentArgs { rows: n, cols: classes, logits, sparse: loss.sparse(), grad_scale: 1.0 / n as f32 };
        let out = self.vals.len() - 1;
        self.dev.cross_entropy(&args, &self.vals[out], t, &mut self.grads[out], &mut self.stats)
    }

    fn forward_backward(&mut self, x: Input<'_>, targets: &[f32], n: usize, loss: Loss, seed: u64) -> Result<()> {
        self.forward_backward_ahead(x, None, Targets::Host(targets), n, loss, seed, None)
    }

    /// [`Network::forward_backward`], gathering the `next` batch beside the tail of small
    /// layers where there is one (see [`Runtime::train_filled`]), and applying `update` to
    /// each layer's parameters as soon as their gradients are ready.
    #[allow(clippy::too_many_arguments)]
    fn forward_backward_ahead(
        &mut self,
        x: Input<'_>,
        next: Option<FilledBatch<'_>>,
        targets: Targets<'_>,
        n: usize,
        loss: Loss,
        seed: u64,
        update: Option<Update<'_>>,
    ) -> Result<()> {
        if let Targets::Host(t) = targets {
            self.check_targets(t, n, loss)?;
        }
        check_step(n, update)?;
        let (fused, logits) = self.logits(loss);
        let ctx = Ctx { training: true, seed, logits_head: fused, input_levels: self.levels_of(x) };
        let all = 0..self.layers.len();
        self.load_input(x, n)?;
        let Some((tail, next)) = self.gathers_beside(n, next) else {
            self.forward_range(all.clone(), n, ctx)?;
            self.loss_pass(targets, n, loss, logits)?;
            return self.backward_range(all, n, ctx, update);
        };
        // The first layer on every thread; its tail on this one while the others gather the
        // next batch into the second input buffer; then the first layer's backward.
        self.forward_range(0..tail, n, ctx)?;
        let w = self.slot_width[0];
        let mut ahead = match self.ahead.take() {
            Some(b) => b,
            None => self.dev.alloc(self.cap * w)?,
        };
        let into = self.dev.host_mut(&mut ahead).map(|h| SyncPtr::new(&mut h[..next.n * w]));
        let rows = GATHER_ROWS;
        let side = |p: usize| {
            let r = p * rows..((p + 1) * rows).min(next.n);
            if let Some(into) = &into {
                // SAFETY: part p alone writes rows `r` of the buffer.
                (next.fill)(r.clone(), unsafe { into.range(r.start * w, r.end * w) });
            }
        };
        let parts = if into.is_some() { next.n.div_ceil(rows) } else { 0 };
        let done = crate::cpu::team::beside(parts, &side, || -> Result<()> {
            self.forward_range(tail..all.end, n, ctx)?;
            self.loss_pass(targets, n, loss, logits)?;
            self.backward_range(tail..all.end, n, ctx, update)
        });
        self.ahead = Some(ahead);
        done?;
        if parts > 0 {
            self.ahead_key = Some((next.key, next.n));
        }
        self.backward_range(0..tail, n, ctx, update)
    }

    /// Where the layers to run beside the gathering of `next` start, when there is a batch to
    /// gather, a tail small enough to run on one thread (at `n` examples) and host inputs.
    fn gathers_beside<'b>(&mut self, n: usize, next: Option<FilledBatch<'b>>) -> Option<(usize, FilledBatch<'b>)> {
        let (tail, next) = (self.tail?, next?);
        let small = crate::cpu::runs_serially(n * tail.macs, n * tail.values) && crate::cpu::team::threads() > 1;
        (small && next.n <= self.cap && self.host_inputs()).then_some((tail.start, next))
    }

    /// The training-mode mean loss of one batch (with the regularisation penalty) and the
    /// gradient of every trainable parameter, without updating anything. For gradient checks
    /// and for tools that inspect gradients.
    ///
    /// # Errors
    /// Shape errors and device failures.
    pub fn loss_and_gradients(
        &mut self,
        x: &[f32],
        targets: &[f32],
        n: usize,
        loss: Loss,
        seed: u64,
    ) -> Result<(f64, Vec<Tensor>)> {
        self.take_stats()?;
        self.forward_backward(Input::Slice(x), targets, n, loss, seed)?;
        let (sum, _) = self.take_stats()?;
        let penalty = self.regularization_penalty()? as f64;
        let mut grads = Vec::new();
        for l in &self.layers {
            for p in l.params() {
                if let Some(g) = &p.grad {
                    let mut data = vec![0f32; p.len()];
                    self.dev.download(g, &mut data)?;
                    grads.push(Tensor { name: p.name.clone(), shape: p.shape.clone(), data });
                }
            }
        }
        Ok((sum / n as f64 + penalty, grads))
    }
}

impl<D: Device> Network<D> {
    /// One training step: forward, loss, backward, and every parameter's update.
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &mut self,
        x: Input<'_>,
        targets: &[f32],
        n: usize,
        loss: Loss,
        rule: &UpdateRule,
        sp: StepParams,
        seed: u64,
        next: Option<FilledBatch<'_>>,
    ) -> Result<()> {
        self.forward_backward_ahead(x, next, Targets::Host(targets), n, loss, seed, Some((rule, sp)))
    }
}

/// An update rule and this step's parameters, applied to each layer's parameters during the
/// backward pass.
type Update<'a> = (&'a UpdateRule, StepParams);

/// Refuses a training step that cannot be one: on no examples (nothing to average a gradient
/// over), or numbered 0 (steps count from 1: Adam's bias correction divides by `1 - β^t`).
fn check_step(n: usize, update: Option<Update<'_>>) -> Result<()> {
    if n == 0 {
        return Err(NnError::spec("a training step on 0 examples: give a batch of at least 1"));
    }
    match update {
        Some((_, sp)) if sp.t == 0 => Err(NnError::spec("StepParams::t is 0: steps count from 1")),
        _ => Ok(()),
    }
}

/// The dropout seed of layer `i` in a step.
fn layer_seed(seed: u64, i: usize) -> u64 {
    seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl<D: Device> Runtime for Network<D> {
    fn device(&self) -> String {
        self.dev.describe()
    }

    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn train_batch(
        &mut self,
        x: &[f32],
        targets: &[f32],
        n: usize,
        loss: Loss,
        rule: &UpdateRule,
        sp: StepParams,
        seed: u64,
    ) -> Result<()> {
        self.train_step(Input::Slice(x), targets, n, loss, rule, sp, seed, None)
    }

    fn train_filled(
        &mut self,
        batch: FilledBatch<'_>,
        next: Option<FilledBatch<'_>>,
        targets: &[f32],
        loss: Loss,
        rule: &UpdateRule,
        sp: StepParams,
        seed: u64,
    ) -> Result<()> {
        let n = batch.n;
        let input = match (self.ahead_key.take(), self.ahead.as_mut()) {
            (Some(key), Some(ahead)) if key == (batch.key, n) && n <= self.cap => {
                // Gathered during the previous step: swap the buffers.
                std::mem::swap(&mut self.vals[0], ahead);
                Input::Ready
            }
            _ => Input::Filled(batch.fill),
        };
        self.train_step(input, targets, n, loss, rule, sp, seed, next)
    }

    fn keep_training_set(&mut self, images: &[f32], targets: &[f32], rows: usize, loss: Loss) -> Result<bool> {
        self.kept = None;
        if rows >= 1 << 24 {
            return Ok(false);
        }
        let w = self.slot_width[0];
        if images.len() != rows * w {
            return Err(NnError::Shape {
                layer: "kept training set".into(),
                expected: [vec![rows], self.spec.input_shape.clone()].concat(),
                found: vec![images.len()],
            });
        }
        self.check_targets(targets, rows, loss)?;
        let (mut on_dev, mut t) = (self.dev.alloc(images.len())?, self.dev.alloc(targets.len())?);
        self.dev.upload(images, &mut on_dev)?;
        self.dev.upload(targets, &mut t)?;
        let picked_cap = self.cap.max(1);
        let picked = self.dev.alloc(picked_cap)?;
        self.kept = Some(Kept {
            images: on_dev,
            targets: t,
            rows,
            sparse: loss.sparse(),
            picked,
            picked_cap,
            picked_host: Vec::new(),
        });
        Ok(true)
    }

    fn drop_training_set(&mut self) {
        self.kept = None;
    }

    fn train_rows(&mut self, rows: &[u32], loss: Loss, rule: &UpdateRule, sp: StepParams, seed: u64) -> Result<()> {
        let n = rows.len();
        let Some(kept) = self.kept.as_ref() else {
            return Err(NnError::spec("train_rows: no training set is kept on the device (see keep_training_set)"));
        };
        if kept.sparse != loss.sparse() {
            return Err(NnError::spec(format!(
                "train_rows: the kept training set's targets are {}, but {} reads {}",
                if kept.sparse { "labels" } else { "rows of class scores" },
                loss.name(),
                if loss.sparse() { "labels" } else { "rows" }
            )));
        }
        if let Some(r) = rows.iter().find(|&&r| r as usize >= kept.rows) {
            return Err(NnError::spec(format!("train_rows: row {r} of a kept training set of {} rows", kept.rows)));
        }
        check_step(n, Some((rule, sp)))?;
        self.reserve(n)?;
        let (w, classes) = (self.slot_width[0], *self.slot_width.last().unwrap_or(&1));
        let Some(kept) = self.kept.as_mut() else { return Ok(()) };
        if n > kept.picked_cap {
            kept.picked = self.dev.alloc(n)?;
            kept.picked_cap = n;
        }
        kept.picked_host.clear();
        kept.picked_host.extend(rows.iter().map(|&r| r as f32));
        let targets = self.targets.as_mut().ok_or_else(|| NnError::Device("targets buffer missing".into()))?;
        self.dev.upload(&kept.picked_host, &mut kept.picked)?;
        self.dev.gather_rows(&kept.images, w, &kept.picked, n, &mut self.vals[0])?;
        self.dev.gather_rows(&kept.targets, if kept.sparse { 1 } else { classes }, &kept.picked, n, targets)?;
        self.forward_backward_ahead(Input::Ready, None, Targets::Gathered, n, loss, seed, Some((rule, sp)))
    }

    fn eval_filled(&mut self, n: usize, fill: &Fill<'_>, targets: &[f32], loss: Loss) -> Result<()> {
        self.check_targets(targets, n, loss)?;
        if n == 0 {
            return Ok(());
        }
        let (fused, logits) = self.logits(loss);
        let ctx = Ctx { logits_head: fused, input_levels: self.input_levels, ..Ctx::default() };
        self.forward(Input::Filled(fill), n, ctx)?;
        self.loss_pass(Targets::Host(targets), n, loss, logits)
    }

    fn set_input_levels(&mut self, divisor: Option<f32>) {
        self.input_levels = divisor;
    }

    fn host_inputs(&mut self) -> bool {
        let _ = self.reserve(1);
        self.vals.first_mut().is_some_and(|b| self.dev.host_mut(b).is_some())
    }

    fn eval_batch(&mut self, x: &[f32], targets: &[f32], n: usize, loss: Loss) -> Result<()> {
        self.check_targets(targets, n, loss)?;
        if n == 0 {
            return Ok(());
        }
        let (fused, logits) = self.logits(loss);
        self.forward(Input::Slice(x), n, Ctx { logits_head: fused, ..Ctx::default() })?;
        self.loss_pass(Targets::Host(targets), n, loss, logits)
    }

    fn take_stats(&mut self) -> Result<(f64, f64)> {
        // Into an array, not `read_scalars`'s vector: with per-batch checks this runs every step.
        let mut s = [0f32; 2];
        self.dev.download(&self.stats, &mut s)?;
        self.dev.fill(&mut self.stats, 0.0, STATS_LEN)?;
        Ok((s[0] as f64, s[1] as f64))
    }

    fn predict_batch(&mut self, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        let out = self.output_rows(out, n)?;
        if n == 0 {
            return Ok(());
        }
        self.forward(Input::Slice(x), n, Ctx::default())?;
        let last = self.vals.len() - 1;
        self.dev.download(&self.vals[last], out)
    }

    fn predict_filled(&mut self, n: usize, fill: &Fill<'_>, out: &mut [f32]) -> Result<()> {
        let out = self.output_rows(out, n)?;
        if n == 0 {
            return Ok(());
        }
        self.load_input(Input::Filled(fill), n)?;
        self.forward_layers(n, Ctx { input_levels: self.input_levels, ..Ctx::default() })?;
        let last = self.vals.len() - 1;
        self.dev.download(&self.vals[last], out)
    }

    fn weights(&self) -> Result<Vec<Tensor>> {
        let mut out = Vec::new();
        for l in &self.layers {
            for p in l.params() {
                let mut data = vec![0f32; p.len()];
                self.dev.download(&p.value, &mut data)?;
                out.push(Tensor { name: p.name.clone(), shape: p.shape.clone(), data });
            }
        }
        Ok(out)
    }

    fn set_weights(&mut self, w: &[Tensor]) -> Result<()> {
        for l in &mut self.layers {
            for p in l.params_mut() {
                let t = w
                    .iter()
                    .find(|t| t.name == p.name)
                    .ok_or_else(|| NnError::spec(format!("no values for parameter {}", p.name)))?;
                if t.shape != p.shape {
                    return Err(NnError::Shape {
                        layer: p.name.clone(),
                        expected: p.shape.clone(),
                        found: t.shape.clone(),
                    });
                }
                if t.data.len() != p.len() {
                    return Err(NnError::spec(format!(
                        "{}: shape {:?} needs {} values, the tensor holds {}",
                        p.name,
                        p.shape,
                        p.len(),
                        t.data.len()
                    )));
                }
                self.dev.upload(&t.data, &mut p.value)?;
            }
        }
        Ok(())
    }

    fn optimizer_state(&self) -> Result<Vec<Tensor>> {
        let mut out = Vec::new();
        for l in &self.layers {
            for p in l.params() {
                for (k, s) in p.slots.iter().enumerate() {
                    let mut data = vec![0f32; p.len()];
                    self.dev.download(s, &mut data)?;
                    out.push(Tensor { name: format!("{}.slot{k}", p.name), shape: p.shape.clone(), data });
                }
            }
        }
        Ok(out)
    }

    fn set_optimizer_state(&mut self, s: &[Tensor]) -> Result<()> {
        // Every trained parameter has as many slots as the rule that wrote them: one with
        // fewer would start those afresh, silently, and the run would not continue as it was.
        let mut counts: Vec<(String, usize)> = Vec::new();
        for l in &mut self.layers {
            for p in l.params_mut() {
                p.slots.clear();
                for k in 0.. {
                    let name = format!("{}.slot{k}", p.name);
                    let Some(t) = s.iter().find(|t| t.name == name) else {
                        break;
                    };
                    if t.shape != p.shape || t.data.len() != p.len() {
                        return Err(NnError::Shape { layer: name, expected: p.shape.clone(), found: t.shape.clone() });
                    }
                    let mut b = self.dev.alloc(p.len())?;
                    self.dev.upload(&t.data, &mut b)?;
                    p.slots.push(b);
                }
                // (Parameters without gradients, batch norm's moving statistics, have none.)
                if p.grad.is_some() {
                    counts.push((p.name.clone(), p.slots.len()));
                }
            }
        }
        if let (Some(most), Some(least)) = (counts.iter().max_by_key(|c| c.1), counts.iter().min_by_key(|c| c.1)) {
            if most.1 != least.1 {
                return Err(NnError::spec(format!(
                    "slots missing: {} has {} of them, {} has {}",
                    most.0, most.1, least.0, least.1
                )));
            }
        }
        Ok(())
    }

    fn regularization_penalty(&mut self) -> Result<f32> {
        let mut acc = self.dev.alloc(1)?;
        for l in &self.layers {
            for p in l.params() {
                if let Some(r) = p.reg {
                    self.dev.regularizer_penalty(&p.value, r.l1, r.l2, p.len(), &mut acc)?;
                }
            }
        }
        Ok(self.dev.read_scalars(&acc, 1)?[0])
    }
}
