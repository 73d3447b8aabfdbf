//! The model file: weights as safetensors (readable from PyTorch with
//! `safetensors.torch.load_file`, or NumPy), with the architecture, training configuration and
//! history as JSON strings in the safetensors metadata.
//!
//! Keys are `<layer>.<param>` (`dense.kernel [784, 128]`, `dense.bias [128]`, `conv2d.kernel
//! [32, 1, 3, 3]`, ...). Metadata keys: `format` = `mnist-rs/1`, `architecture` (the
//! [`ModelSpec`] JSON), and whatever else the trainer adds (`training_config`, `history`, ...).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{NnError, Result};
use crate::spec::ModelSpec;
use crate::tensor::Tensor;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "mnist-rs/1";

/// A model file's contents on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    /// The architecture.
    pub spec: ModelSpec,
    /// Parameters in layer order.
    pub weights: Vec<Tensor>,
    /// Further metadata (JSON strings), e.g. `training_config`, `history`, optimiser state is
    /// stored as tensors named `optimizer.<param>.slot<k>` instead.
    pub metadata: BTreeMap<String, String>,
    /// Extra tensors (optimiser state in checkpoints), by name.
    pub extra: Vec<Tensor>,
}

impl ModelFile {
    /// Encodes the file's bytes.
    ///
    /// # Errors
    /// [`NnError::Spec`] when safetensors rejects the data (e.g. a tensor whose length does not
    /// match its shape).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        meta.insert("format".into(), FORMAT.into());
        meta.insert(
            "architecture".into(),
            serde_json::to_string(&self.spec).map_err(|e| NnError::spec(e.to_string()))?,
        );
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .weights
            .iter()
            .chain(&self.extra)
            .map(|t| (t.name.clone(), t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let views = raw
            .iter()
            .map(|(n, s, b)| {
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| NnError::spec(format!("tensor {n}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(meta)).map_err(|e| NnError::spec(format!("cannot encode the model: {e}")))
    }

    /// Writes the file atomically (temporary file, then rename).
    ///
    /// # Errors
    /// [`NnError::File`] naming `path` on I/O failure.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        mnist_data::atomic::write_atomic(path, &bytes).map_err(|e| NnError::file(path, e.to_string()))
    }

    /// Reads and checks a model file: it must be safetensors with an `architecture`, and every
    /// parameter of that architecture must be present with its exact shape.
    ///
    /// # Errors
    /// [`NnError::File`] naming `path`: unreadable, truncated or not safetensors, no
    /// architecture (not a model file), invalid architecture, missing tensor or wrong shape.
    pub fn load(path: &Path) -> Result<ModelFile> {
        let bytes = std::fs::read(path).map_err(|e| NnError::file(path, e.to_string()))?;
        Self::from_bytes(path, &bytes)
    }

    /// As [`ModelFile::load`], from bytes; `path` names the file in errors.
    ///
    /// # Errors
    /// As [`ModelFile::load`].
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<ModelFile> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            NnError::file(path, format!("not a model file (safetensors could not read it: {e}); is it truncated?"))
        })?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| NnError::file(path, e.to_string()))?;
        let mut meta: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        let arch = meta.remove("architecture").ok_or_else(|| {
            NnError::file(path, "a safetensors file, but not a model file: no \"architecture\" in its metadata")
        })?;
        meta.remove("format");
        let spec = ModelSpec::from_json(&arch).map_err(|e| NnError::file(path, e.to_string()))?;
        let layers = spec.resolve().map_err(|e| NnError::file(path, format!("invalid architecture: {e}")))?;
        let mut weights = Vec::new();
        let mut expected = std::collections::HashSet::new();
        for l in &layers {
            for (suffix, shape, _) in l.spec.param_shapes(&l.input) {
                let name = format!("{}.{suffix}", l.name);
                let view = st
                    .tensor(&name)
                    .map_err(|_| NnError::file(path, format!("tensor {name} of the architecture is missing")))?;
                if view.dtype() != Dtype::F32 {
                    return Err(NnError::file(path, format!("tensor {name} is {:?}, expected F32", view.dtype())));
                }
                if view.shape() != shape.as_slice() {
                    return Err(NnError::file(
                        path,
                        format!("tensor {name} has shape {:?}, the architecture needs {shape:?}", view.shape()),
                    ));
                }
                let data = f32s(view.data());
                if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                    return Err(NnError::file(
                        path,
                        format!(
                            "tensor {name} holds a non-finite value ({} at index {i}): the model is broken",
                            data[i]
                        ),
                    ));
                }
                weights.push(Tensor { name: name.clone(), shape, data });
                expected.insert(name);
            }
        }
        let mut extra = Vec::new();
        for (name, view) in st.tensors() {
            if !expected.contains(&name) && view.dtype() == Dtype::F32 {
                extra.push(Tensor { name, shape: view.shape().to_vec(), data: f32s(view.data()) });
            }
        }
        extra.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ModelFile { spec, weights, metadata: meta, extra })
    }
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A safetensors file written by someone else (PyTorch's `save_file` without metadata) is
    /// named as such, not as a broken model.
    #[test]
    fn a_safetensors_file_without_an_architecture_is_not_a_model_file() {
        let data: Vec<u8> = [1f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2, 2], &data).unwrap();
        let bytes = safetensors::serialize(vec![("weight", view)], None).unwrap();
        let err = ModelFile::from_bytes(Path::new("torch.safetensors"), &bytes).unwrap_err().to_string();
        assert!(err.starts_with("torch.safetensors: ") && err.contains("no \"architecture\""), "{err}");
    }

    #[test]
    fn weights_that_are_not_numbers_are_refused() {
        let spec = ModelSpec::new(&[3]).add(crate::Dense::new(2));
        let mut kernel = Tensor { name: "dense.kernel".into(), shape: vec![3, 2], data: vec![0.5; 6] };
        kernel.data[4] = f32::NAN;
        let bias = Tensor { name: "dense.bias".into(), shape: vec![2], data: vec![0.0; 2] };
        let f = ModelFile { spec, weights: vec![kernel, bias], metadata: BTreeMap::new(), extra: Vec::new() };
        let err = ModelFile::from_bytes(Path::new("nan.safetensors"), &f.to_bytes().unwrap()).unwrap_err().to_string();
        assert!(err.contains("nan.safetensors") && err.contains("dense.kernel") && err.contains("index 4"), "{err}");
    }
}
