//! [`Model`]: a Sequential architecture with its weights on some device, behind one type.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array2;

use crate::activation::Activation;
use crate::cpu::Cpu;
use crate::device::Device;
use crate::error::{NnError, Result};
use crate::model_file::ModelFile;
use crate::network::{Network, Runtime};
use crate::spec::{LayerSpec, ModelSpec};
use crate::tensor::Tensor;

/// Examples per forward pass in [`Model::predict`]: large for dense networks (fewer, larger
/// GEMMs, each kernel packed fewer times: 10k M3 predictions in bfloat16 took 11.3 ms by 1024,
/// 10.3 by 2048), small for convolutional ones, whose im2col buffers grow by ~0.5 MB per
/// example; and fewer for models so wide or deep that a batch's buffers (every layer's outputs
/// and their gradients) would pass [`PREDICT_BUFFERS`] bytes.
pub fn predict_batch_size(spec: &ModelSpec) -> usize {
    let most = if spec.layers.iter().any(|l| matches!(l, LayerSpec::Conv2D(_))) { 128 } else { 2048 };
    let outputs = spec.resolve().map_or(0, |layers| {
        layers.iter().fold(spec.input_shape.iter().product::<usize>(), |a, l| {
            a.saturating_add(l.output.iter().fold(1usize, |p, &d| p.saturating_mul(d)))
        })
    });
    (PREDICT_BUFFERS / outputs.saturating_mul(8).max(1)).clamp(1, most)
}

/// The most bytes [`predict_batch_size`] lets a batch's layer buffers take: 256 MiB.
pub const PREDICT_BUFFERS: usize = 256 << 20;

/// A model: its architecture and its numbers on a device (the CPU unless built with
/// [`Model::on`] or [`Model::from_runtime`]).
///
/// ```
/// use nn_core::{Activation::*, Dense, Flatten, Model, ModelSpec};
/// let spec = ModelSpec::new(&[28, 28]).add(Flatten::new()).add(Dense::new(128).activation(Relu)).add(Dense::new(10));
/// let mut model = Model::new(&spec, 42)?;
/// let probs = model.predict_proba(&vec![0.0; 2 * 784], 2)?; // [2, 10]
/// assert_eq!(probs.shape(), &[2, 10]);
/// # Ok::<(), nn_core::NnError>(())
/// ```
pub struct Model {
    rt: Box<dyn Runtime>,
}

/// The architecture's layers and the device (the weights are on it; [`Model::weights`] reads them).
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("input_shape", &self.spec().input_shape)
            .field("layers", &self.spec().layers.iter().map(LayerSpec::type_name).collect::<Vec<_>>())
            .field("device", &self.device())
            .finish()
    }
}

impl Model {
    /// Builds `spec` on the CPU with weights initialised from `seed`.
    ///
    /// # Errors
    /// The architecture's errors ([`ModelSpec::resolve`]).
    pub fn new(spec: &ModelSpec, seed: u64) -> Result<Model> {
        Model::on(Cpu, spec, seed)
    }

    /// Builds `spec` on device `dev`.
    ///
    /// # Errors
    /// The architecture's errors and device allocation failures.
    pub fn on<D: Device>(dev: D, spec: &ModelSpec, seed: u64) -> Result<Model> {
        Ok(Model { rt: Box::new(Network::new(dev, spec, seed)?) })
    }

    /// Wraps a runtime built elsewhere (e.g. by `nn-cuda`).
    pub fn from_runtime(rt: Box<dyn Runtime>) -> Model {
        Model { rt }
    }

    /// Rebuilds this model on another device, with the same weights (not the optimiser's
    /// state). It is also how to copy a model, as it is not `Clone` (its numbers may live on a
    /// GPU): `model.to_device(nn_core::cpu::Cpu)?`, e.g. one copy a thread to predict in
    /// parallel.
    ///
    /// # Errors
    /// Device failures.
    pub fn to_device<D: Device>(&self, dev: D) -> Result<Model> {
        let mut m = Model::on(dev, self.spec(), 0)?;
        m.set_weights(&self.weights()?)?;
        Ok(m)
    }

    /// The runtime (for the training loop).
    pub fn runtime(&mut self) -> &mut dyn Runtime {
        self.rt.as_mut()
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        self.rt.spec()
    }

    /// The device, in words.
    pub fn device(&self) -> String {
        self.rt.device()
    }

    /// Keras's summary table.
    pub fn summary(&self) -> String {
        crate::summary::summary(self.spec(), "sequential").unwrap_or_else(|e| e.to_string())
    }

    /// Per-example input width (e.g. 784).
    pub fn input_len(&self) -> usize {
        self.spec().input_shape.iter().product()
    }

    /// Per-example output width (e.g. 10).
    pub fn output_len(&self) -> usize {
        self.spec().output_shape().map(|s| s.iter().product()).unwrap_or(0)
    }

    /// Whether the last layer ends in a softmax (outputs are probabilities).
    pub fn outputs_probabilities(&self) -> bool {
        matches!(self.spec().layers.last(), Some(LayerSpec::Dense(d)) if d.activation == Activation::Softmax)
    }

    /// The model's raw outputs for `n` examples `x [n, input_len]` (Keras's `predict`):
    /// `[n, output_len]`.
    ///
    /// # Errors
    /// [`NnError::Shape`] when `x` does not hold `n` examples; device failures.
    pub fn predict(&mut self, x: &[f32], n: usize) -> Result<Array2<f32>> {
        let (iw, ow) = (self.input_len(), self.output_len());
        if x.len() != n * iw {
            return Err(NnError::Shape { layer: "predict input".into(), expected: vec![n, iw], found: vec![x.len()] });
        }
        let mut out = vec![0f32; n * ow];
        let mut start = 0;
        let batch = predict_batch_size(self.spec());
        while start < n {
            let b = batch.min(n - start);
            self.rt.predict_batch(&x[start * iw..(start + b) * iw], b, &mut out[start * ow..(start + b) * ow])?;
            start += b;
        }
        Array2::from_shape_vec((n, ow), out).map_err(|e| NnError::spec(e.to_string()))
    }

    /// Class probabilities `[n, classes]`: a softmax head's outputs as they are; any other
    /// head's read as logits, through a softmax (as `mnist train` trains such a head: a loss
    /// `from_logits`).
    ///
    /// # Errors
    /// As [`Model::predict`].
    pub fn predict_proba(&mut self, x: &[f32], n: usize) -> Result<Array2<f32>> {
        let mut out = self.predict(x, n)?;
        let cols = out.ncols();
        if let Some(all) = out.as_slice_mut() {
            self.to_probabilities(all, cols);
        }
        Ok(out)
    }

    /// Turns rows of `cols` outputs into class probabilities (see [`Model::predict_proba`]).
    fn to_probabilities(&self, out: &mut [f32], cols: usize) {
        if !self.outputs_probabilities() {
            crate::cpu::softmax_rows(out, cols);
        }
    }

    /// Class probabilities of `n` examples whose inputs `fill(rows, x)` writes (`x` is the
    /// `[rows.len(), input_len]` slice of examples `rows`; several ranges are filled in
    /// parallel), into `out [n, output_len]` (row-major). On the CPU the inputs go straight into
    /// the network's input buffer, without a copy. At most [`predict_batch_size`] examples per
    /// call keep the buffers small.
    ///
    /// # Errors
    /// [`NnError::Shape`] when `out` is not `n × output_len`; device failures.
    pub fn predict_proba_filled(&mut self, n: usize, fill: &crate::network::Fill<'_>, out: &mut [f32]) -> Result<()> {
        let ow = self.output_len();
        if out.len() != n * ow {
            return Err(NnError::Shape {
                layer: "predict output".into(),
                expected: vec![n, ow],
                found: vec![out.len()],
            });
        }
        self.rt.predict_filled(n, fill, out)?;
        self.to_probabilities(out, ow);
        Ok(())
    }

    /// All parameters, in layer order.
    ///
    /// # Errors
    /// Device failures.
    pub fn weights(&self) -> Result<Vec<Tensor>> {
        self.rt.weights()
    }

    /// Replaces all parameters (by name, exact shapes).
    ///
    /// # Errors
    /// [`NnError::Shape`] or [`NnError::Spec`] naming the parameter.
    pub fn set_weights(&mut self, w: &[Tensor]) -> Result<()> {
        self.rt.set_weights(w)
    }

    /// The model as a file's contents, with `metadata` (JSON strings) added.
    ///
    /// # Errors
    /// Device failures.
    pub fn to_file(&self, metadata: BTreeMap<String, String>) -> Result<ModelFile> {
        Ok(ModelFile { spec: self.spec().clone(), weights: self.weights()?, metadata, extra: Vec::new() })
    }

    /// Saves to `path` (safetensors; atomic).
    ///
    /// # Errors
    /// [`NnError::File`] on I/O failure.
    pub fn save(&self, path: impl AsRef<Path>, metadata: BTreeMap<String, String>) -> Result<()> {
        self.to_file(metadata)?.save(path.as_ref())
    }

    /// Loads a model file onto the CPU; returns the model and the file's metadata.
    ///
    /// # Errors
    /// As [`ModelFile::load`].
    pub fn load(path: impl AsRef<Path>) -> Result<(Model, ModelFile)> {
        let path = path.as_ref();
        let f = ModelFile::load(path)?;
        let m = Model::from_file(Cpu, &f).map_err(|e| match e {
            NnError::File { .. } => e,
            other => NnError::File { path: path.to_path_buf(), message: other.to_string() },
        })?;
        Ok((m, f))
    }

    /// Builds the model of a loaded file on `dev`.
    ///
    /// # Errors
    /// Device failures and shape mismatches.
    pub fn from_file<D: Device>(dev: D, f: &ModelFile) -> Result<Model> {
        let mut m = Model::on(dev, &f.spec, 0)?;
        m.set_weights(&f.weights)?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::spec::Dense;

    #[test]
    fn prediction_batches_shrink_for_very_wide_or_deep_models() {
        use crate::spec::{Conv2D, Dropout, Flatten};
        let m3 =
            ModelSpec::new(&[28, 28]).add(Flatten::new()).add(Dense::new(512)).add(Dense::new(512)).add(Dense::new(10));
        assert_eq!(predict_batch_size(&m3), 2048);
        let conv = ModelSpec::new(&[1, 28, 28]).add(Conv2D::new(32, 3)).add(Flatten::new()).add(Dense::new(10));
        assert_eq!(predict_batch_size(&conv), 128);
        // 500,000 outputs a layer: 4 MB an example, so 67 fill the 256 MiB.
        let wide = ModelSpec::new(&[784]).add(Dense::new(1)).add(Dense::new(500_000)).add(Dense::new(10));
        assert_eq!(predict_batch_size(&wide), 67);
        // As deep as a model may be: 1,000 outputs of 784 values an example, 6.3 MB.
        let deep = (0..crate::spec::MAX_LAYERS - 1).fold(ModelSpec::new(&[784]), |s, _| s.add(Dropout::new(0.1)));
        assert_eq!(predict_batch_size(&deep), 42);
        // A spec that does not resolve is refused elsewhere; here it gets the largest batch.
        assert_eq!(predict_batch_size(&ModelSpec::new(&[784])), 2048);
    }

    #[test]
    fn a_batch_larger_than_the_free_memory_is_refused_before_its_buffers_are_allocated() {
        let spec = ModelSpec::new(&[784]).add(Dense::new(1024)).add(Dense::new(10));
        let mut net = Network::new(crate::cpu::Cpu, &spec, 1).unwrap();
        // 2³⁰ examples: 14,544 GiB of outputs and gradients.
        let err = net.reserve(1 << 30).unwrap_err().to_string();
        assert!(
            err.contains("a batch of 1073741824 examples needs at least 14544.0 GiB")
                && err.contains("GiB of memory is free"),
            "{err}"
        );
        net.reserve(64).unwrap();
        // The layers' own scratch counts too: a dropout layer's mask of 784 floats an example.
        let bytes = |spec: &ModelSpec| Network::new(crate::cpu::Cpu, spec, 1).unwrap().batch_bytes(128);
        let plain = ModelSpec::new(&[784]).add(Dense::new(10));
        let masked = ModelSpec::new(&[784]).add(crate::spec::Dropout::new(0.5)).add(Dense::new(10));
        let mask = 784 * 128 * 4;
        // (Its outputs and their gradients take two more masks' worth, where it has a slot.)
        let more = bytes(&masked) - bytes(&plain);
        assert!(more == mask || more == 3 * mask, "{more}");
    }

    /// Probabilities sum to 1 whatever the head, and keep the outputs' order.
    #[test]
    fn probabilities_from_every_kind_of_head() {
        let x: Vec<f32> = (0..2 * 6).map(|i| (i as f32 * 0.37).sin()).collect();
        for head in [Activation::Softmax, Activation::Sigmoid, Activation::Relu, Activation::Linear, Activation::Tanh] {
            let spec = ModelSpec::new(&[6]).add(Dense::new(4).activation(head));
            let mut m = Model::new(&spec, 3).unwrap();
            let raw = m.predict(&x, 2).unwrap();
            let p = m.predict_proba(&x, 2).unwrap();
            for (r, q) in raw.rows().into_iter().zip(p.rows()) {
                assert!((q.sum() - 1.0).abs() < 1e-5, "{head:?}: {q}");
                let argmax = |v: ndarray::ArrayView1<f32>| (0..4).max_by(|&a, &b| v[a].total_cmp(&v[b]));
                assert_eq!(argmax(r), argmax(q), "{head:?}");
                if head != Activation::Softmax {
                    let s: f32 = r.iter().map(|v| v.exp()).sum();
                    assert!(r.iter().zip(q.iter()).all(|(a, b)| (a.exp() / s - b).abs() < 1e-6), "{head:?}");
                }
            }
        }
    }

    #[test]
    fn weights_of_the_right_shape_but_too_few_values_are_named() {
        let mut m = Model::new(&ModelSpec::new(&[3]).add(Dense::new(2)), 1).unwrap();
        let mut w = m.weights().unwrap();
        w[0].data.pop();
        let err = m.set_weights(&w).unwrap_err().to_string();
        assert!(err.contains("dense.kernel: shape [3, 2] needs 6 values, the tensor holds 5"), "{err}");
    }
}
