//! The model file: weights as safetensors (readable from PyTorch with
//! `safetensors.torch.load_file`, or NumPy), with the architecture, training configuration and
//! history as JSON strings in the safetensors metadata.
//!
//! Keys are `<layer>.<param>` (`dense.kernel [784, 128]`, `dense.bias [128]`, `conv2d.kernel
//! [32, 1, 3, 3]`, ...). Metadata keys: `format` = `mnist-rs/1`, `architecture` (the
//! [`ModelSpec`] JSON), `normalization` (how its inputs are made from pixel bytes: see
//! [`ModelFile::normalization`]), and whatever else the trainer adds (`training_config`,
//! `history`, ...).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensorError, SafeTensors};

use mnist_data::Normalization;

use crate::error::{NnError, Result};
use crate::spec::ModelSpec;
use crate::tensor::Tensor;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "mnist-rs/1";

/// Metadata key of the input normalisation the model was trained with.
pub const NORMALIZATION_KEY: &str = "normalization";

/// The name prefixes a tensor beside the weights ([`ModelFile::extra`]) must have:
/// `optimizer.` for optimiser state (`optimizer.dense.kernel.slot0`) and `kept.` for what a
/// training loop keeps in its checkpoints (`kept.early_stopping.dense.kernel`). Any other
/// tensor is refused, as PyTorch's strict `load_state_dict` refuses unexpected keys: a
/// parameter of a layer the architecture does not have means the file and its architecture
/// disagree.
pub const EXTRA_PREFIXES: [&str; 2] = ["optimizer.", "kept."];

/// The `normalization` metadata value of `n`, as JSON: `{"kind":"scale"}` (`x / 255`) or
/// `{"kind":"standardize","mean":0.1307,"std":0.3081}` (`(x / 255 - mean) / std`).
pub fn normalization_json(n: Normalization) -> String {
    match n {
        Normalization::Scale => r#"{"kind":"scale"}"#.into(),
        Normalization::Standardize { mean, std } => {
            format!(r#"{{"kind":"standardize","mean":{},"std":{}}}"#, json_f32(mean), json_f32(std))
        }
    }
}

/// An `f32` as a JSON number that reads back to the same `f32`.
fn json_f32(v: f32) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| "null".into())
}

/// Reads a `normalization` metadata value: the JSON of [`normalization_json`], or the plain
/// text of files written before it (`scale`, `standardize MEAN STD`).
///
/// # Errors
/// Anything else, in words: a model's inputs would otherwise be prepared wrongly without a word.
pub fn parse_normalization(s: &str) -> std::result::Result<Normalization, String> {
    // Checked as the f32s they become: a deviation of 1e-300 is positive as an f64 and 0 as
    // an f32 (every input then infinite), a mean of 1e300 infinite. A subnormal deviation is
    // refused too: the CPU's arithmetic flushes it to 0.
    let standardize = |mean: Option<f64>, std: Option<f64>| match (mean.map(|m| m as f32), std.map(|d| d as f32)) {
        (Some(mean), Some(std)) if mean.is_finite() && std.is_finite() && std >= f32::MIN_POSITIVE => {
            Ok(Normalization::Standardize { mean, std })
        }
        _ => Err(format!(
            "normalization {s:?}: the mean must be a number and the deviation a positive one (as 32-bit floats, \
             at least 1.2e-38)"
        )),
    };
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(s) {
        return match v.get("kind").and_then(serde_json::Value::as_str) {
            Some("scale") => Ok(Normalization::Scale),
            Some("standardize") => {
                let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
                standardize(num("mean"), num("std"))
            }
            _ => Err(format!(
                r#"normalization {s:?}: expected {{"kind":"scale"}} or {{"kind":"standardize","mean":M,"std":S}}"#
            )),
        };
    }
    let parts: Vec<&str> = s.split_whitespace().collect();
    match parts.as_slice() {
        ["scale"] => Ok(Normalization::Scale),
        ["standardize", mean, std] => standardize(mean.parse().ok(), std.parse().ok()),
        _ => Err(format!(
            r#"normalization {s:?}: expected {{"kind":"scale"}} or {{"kind":"standardize","mean":M,"std":S}}"#
        )),
    }
}

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
    /// Tensors beside the weights, by name, each under one of [`EXTRA_PREFIXES`]: a
    /// checkpoint's optimiser state and a training loop's kept tensors.
    pub extra: Vec<Tensor>,
}

impl ModelFile {
    /// How the model's inputs are made from pixel bytes: the `normalization` metadata the
    /// trainer wrote, [`Normalization::Scale`] (`x / 255`, Keras's tutorials) when the file has
    /// none. A model trained on standardised pixels predicts wrongly on merely scaled ones:
    /// convert with `file.normalization()?.apply(bytes, inputs)` before [`crate::Model::predict`].
    ///
    /// # Errors
    /// [`NnError::Spec`] for a value that is not a normalisation.
    pub fn normalization(&self) -> Result<Normalization> {
        self.metadata
            .get(NORMALIZATION_KEY)
            .map_or(Ok(Normalization::Scale), |s| parse_normalization(s).map_err(NnError::Spec))
    }

    /// Encodes the file's bytes.
    ///
    /// # Errors
    /// [`NnError::Spec`] when safetensors rejects the data (e.g. a tensor whose length does not
    /// match its shape), or for an extra tensor outside [`EXTRA_PREFIXES`] (the file could not
    /// be read back).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        if let Some(t) = self.extra.iter().find(|t| !is_extra_name(&t.name)) {
            return Err(NnError::spec(format!(
                "tensor {} beside the weights must be named under one of {EXTRA_PREFIXES:?}",
                t.name
            )));
        }
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
    /// [`NnError::File`] naming `path` on I/O failure, or for a tensor holding a value that is
    /// not finite (a diverged run), which [`ModelFile::load`] would refuse: a file already at
    /// `path` (the last good checkpoint) is left as it was.
    pub fn save(&self, path: &Path) -> Result<()> {
        let broken = self.weights.iter().chain(&self.extra).find_map(|t| {
            let i = t.data.iter().position(|v| !v.is_finite())?;
            Some(format!(
                "not written: tensor {} holds a non-finite value ({} at index {i}), which a model file cannot \
                 (training diverged?)",
                t.name, t.data[i]
            ))
        });
        if let Some(why) = broken {
            return Err(NnError::file(path, why));
        }
        let bytes = self.to_bytes()?;
        mnist_data::atomic::write_atomic(path, &bytes).map_err(|e| NnError::file(path, e.to_string()))
    }

    /// Reads and checks a model file: it must be safetensors with an `architecture`, every
    /// parameter of that architecture must be present with its exact shape, and every other
    /// tensor must be optimiser or training state ([`EXTRA_PREFIXES`]).
    ///
    /// # Errors
    /// [`NnError::File`] naming `path`: unreadable, truncated or not safetensors, no
    /// architecture (not a model file), invalid architecture, missing tensor, wrong shape or
    /// type, a value that is not finite, or a tensor the architecture has no place for.
    pub fn load(path: &Path) -> Result<ModelFile> {
        use std::io::Read;
        let io = |e: std::io::Error| NnError::file(path, e.to_string());
        let mut file = std::fs::File::open(path).map_err(io)?;
        if !file.metadata().map_err(io)?.is_file() {
            return Err(NnError::file(path, "not a regular file (a model file is read whole)"));
        }
        // A file that does not start as safetensors (8 bytes of length, then `{`) is named from
        // its first bytes, not read whole first (a 3 GB one took 3 GB and 9 s to refuse).
        let mut bytes = Vec::new();
        (&mut file).take(64).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() > 8 && bytes[8] != b'{' {
            return Self::from_bytes(path, &bytes);
        }
        file.read_to_end(&mut bytes).map_err(io)?;
        Self::from_bytes(path, &bytes)
    }

    /// As [`ModelFile::load`], from bytes; `path` names the file in errors.
    ///
    /// # Errors
    /// As [`ModelFile::load`].
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<ModelFile> {
        // The header is parsed once (a header may list a million tensors); the tensors' bytes
        // are sliced from `data` by the offsets it gives, which `read_metadata` has checked.
        let (header_len, header) = SafeTensors::read_metadata(bytes).map_err(|e| unreadable(path, bytes, &e))?;
        let data = &bytes[8 + header_len..];
        let mut meta: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        let arch = meta.remove("architecture").ok_or_else(|| {
            NnError::file(path, "a safetensors file, but not a model file: no \"architecture\" in its metadata")
        })?;
        meta.remove("format");
        if let Some(n) = meta.get(NORMALIZATION_KEY) {
            parse_normalization(n).map_err(|e| NnError::file(path, e))?;
        }
        let spec = ModelSpec::from_json(&arch).map_err(|e| NnError::file(path, e.to_string()))?;
        let layers = spec.resolve().map_err(|e| NnError::file(path, format!("invalid architecture: {e}")))?;
        let bytes_of = |info: &safetensors::tensor::TensorInfo| &data[info.data_offsets.0..info.data_offsets.1];
        let mut weights = Vec::new();
        let mut expected = std::collections::HashSet::new();
        for l in &layers {
            for (suffix, shape, _) in l.spec.param_shapes(&l.input) {
                let name = format!("{}.{suffix}", l.name);
                let info = header.info(&name).ok_or_else(|| {
                    // The file's own names show a naming problem at once (PyTorch's `0.weight`).
                    let keys = header.offset_keys();
                    let shown: Vec<&str> = keys.iter().take(6).map(String::as_str).collect();
                    let more = if keys.len() > shown.len() { ", ..." } else { "" };
                    NnError::file(
                        path,
                        format!(
                            "tensor {name} of the architecture is missing (the file holds: {}{more}; the names are \
                             `mnist summary`'s layer names, then `.kernel`, `.bias`, ...)",
                            if shown.is_empty() { "no tensors".to_string() } else { shown.join(", ") }
                        ),
                    )
                })?;
                if info.dtype != Dtype::F32 {
                    return Err(NnError::file(path, format!("tensor {name} is {:?}, expected F32", info.dtype)));
                }
                if info.shape != shape {
                    return Err(NnError::file(
                        path,
                        format!("tensor {name} has shape {:?}, the architecture needs {shape:?}", info.shape),
                    ));
                }
                let data = finite_f32s(path, &name, bytes_of(info))?;
                weights.push(Tensor { name: name.clone(), shape, data });
                expected.insert(name);
            }
        }
        // Tensors beside the weights (a checkpoint's optimiser state, callbacks' kept tensors):
        // as finite as the weights must be, or a resumed run trains into NaNs.
        let mut extra = Vec::new();
        for name in header.offset_keys() {
            let Some(info) = header.info(&name).filter(|_| !expected.contains(&name)) else { continue };
            // An optimiser slot belongs to a parameter of the architecture (`optimizer.<param>.slot<k>`).
            let orphan_slot = name.strip_prefix("optimizer.").is_some_and(|rest| {
                !rest.rsplit_once(".slot").is_some_and(|(param, k)| expected.contains(param) && k.parse::<u8>().is_ok())
            });
            if !is_extra_name(&name) || orphan_slot {
                let params: Vec<&str> = weights.iter().map(|t| t.name.as_str()).collect();
                return Err(NnError::file(
                    path,
                    format!(
                        "tensor {name} has no place in the architecture (its parameters: {}; other tensors \
                         must be optimiser or training state, named {})",
                        params.join(", "),
                        EXTRA_PREFIXES.map(|p| format!("{p}*")).join(" or ")
                    ),
                ));
            }
            if info.dtype != Dtype::F32 {
                return Err(NnError::file(path, format!("tensor {name} is {:?}, expected F32", info.dtype)));
            }
            let data = finite_f32s(path, &name, bytes_of(info))?;
            extra.push(Tensor { name, shape: info.shape.clone(), data });
        }
        extra.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ModelFile { spec, weights, metadata: meta, extra })
    }
}

/// Whether `name` may be the name of a tensor beside the weights ([`EXTRA_PREFIXES`]).
fn is_extra_name(name: &str) -> bool {
    EXTRA_PREFIXES.iter().any(|p| name.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
}

/// Why safetensors could not read `bytes`, in words that tell a cut or damaged model file from
/// another kind of file.
fn unreadable(path: &Path, bytes: &[u8], e: &SafeTensorError) -> NnError {
    // A safetensors file starts with its JSON header's length, then the header.
    let declared = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let json_start = bytes.get(8) == Some(&b'{');
    let after_header = declared.and_then(|n| bytes.len().checked_sub(8)?.checked_sub(usize::try_from(n).ok()?));
    let why = match e {
        SafeTensorError::InvalidHeaderLength if json_start => format!(
            "truncated: its header alone should take {} bytes, the file has {}",
            declared.unwrap_or(0),
            bytes.len().saturating_sub(8)
        ),
        SafeTensorError::MetadataIncompleteBuffer => {
            let header = declared.and_then(|n| bytes.get(8..8usize.checked_add(usize::try_from(n).ok()?)?));
            match (header.and_then(tensor_data_len), after_header) {
                (Some(wanted), Some(held)) if held < wanted => {
                    format!("truncated: its header lists {wanted} bytes of tensors, the file holds {held}")
                }
                (Some(wanted), Some(held)) => {
                    format!("{} bytes follow the {wanted} bytes of tensors its header lists", held - wanted)
                }
                _ => format!("the tensors its header lists do not fill the file ({e})"),
            }
        }
        _ if json_start && after_header.is_some() => format!("its header is damaged ({e})"),
        _ => {
            let what = kind_of(bytes).map_or_else(
                || "it does not start as a safetensors file does (the length of a JSON header, then the header)".into(),
                |kind| format!("it is {kind}"),
            );
            format!(
                "{what}; give a .safetensors model (written by `mnist train`, `Trainer::save_model` or `Model::save`)"
            )
        }
    };
    NnError::file(path, format!("not a model file: {why}"))
}

/// What kind of file `bytes` begin as, for the kinds a model file is mistaken for.
fn kind_of(bytes: &[u8]) -> Option<&'static str> {
    const KINDS: [(&[u8], &str); 7] = [
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"BM", "a BMP image"),
        (b"\x1f\x8b", "a gzip file (a data set?)"),
        (b"PK\x03\x04", "a zip archive (a PyTorch .pt checkpoint? save it with safetensors instead)"),
        (b"\x80", "a Python pickle (a PyTorch checkpoint? save it with safetensors instead)"),
        (b"\x89HDF", "an HDF5 file (a Keras .h5 model?)"),
    ];
    if bytes.len() >= 4 && bytes[..2] == [0, 0] && bytes[2] == 0x08 {
        return Some("an IDX data file (images or labels)");
    }
    if bytes.trim_ascii_start().starts_with(b"{") {
        return Some("JSON text (a model spec? give it where a spec is asked for)");
    }
    KINDS.iter().find(|(magic, _)| bytes.starts_with(magic)).map(|&(_, kind)| kind)
}

/// The end of the last tensor's bytes a safetensors JSON header lists (`data_offsets`).
fn tensor_data_len(header: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(header).ok()?;
    v.as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64().and_then(|e| usize::try_from(e).ok()))
        .try_fold(0usize, |end, e| Some(end.max(e?)))
}

/// Tensor `name`'s little-endian f32s, each finite, or an error naming the file, the tensor and
/// the first value that is not.
fn finite_f32s(path: &Path, name: &str, b: &[u8]) -> Result<Vec<f32>> {
    let data = f32s(b);
    match data.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(NnError::file(
            path,
            format!("tensor {name} holds a non-finite value ({} at index {i}): the model is broken", data[i]),
        )),
        None => Ok(data),
    }
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn normalization_metadata_round_trips_and_old_files_read() {
        for n in
            [Normalization::Scale, Normalization::MNIST_STANDARD, Normalization::Standardize { mean: 0.1, std: 3e-7 }]
        {
            assert_eq!(parse_normalization(&normalization_json(n)), Ok(n));
        }
        assert_eq!(parse_normalization("scale"), Ok(Normalization::Scale));
        let old = parse_normalization("standardize 0.1307 0.3081");
        assert_eq!(old, Ok(Normalization::MNIST_STANDARD));
        for bad in [
            "garbage",
            "standardize 0.13",
            "standardize 0.1 0",
            "standardize x 1",
            "scale 2",
            r#"{"kind":"standardize","mean":0.1,"std":-1}"#,
            r#"{"kind":"standardize","mean":0.1}"#,
            // Fine as f64s, not as the f32s they become: a deviation of 0, an infinite mean.
            r#"{"kind":"standardize","mean":0,"std":1e-300}"#,
            // Subnormal: flushed to 0 by the CPU's arithmetic.
            r#"{"kind":"standardize","mean":0,"std":1e-40}"#,
            r#"{"kind":"standardize","mean":1e300,"std":1}"#,
            r#"{"kind":"whiten"}"#,
            "[1, 2]",
        ] {
            let err = parse_normalization(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    /// A safetensors file written by someone else (PyTorch's `save_file` without metadata) is
    /// named as such, not as a broken model.
    #[test]
    fn a_safetensors_file_without_an_architecture_is_not_a_model_file() {
        let data: Vec<u8> = [1f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2, 2], &data).unwrap();
        let bytes = safetensors::serialize(vec![("weight", view)], None).unwrap();
        let err = ModelFile::from_bytes(Path::new("torch.safetensors"), &bytes).unwrap_err().to_string();
        assert!(err.starts_with("torch.safetensors: ") && err.contains("no \"architecture\""), "{err}");
        // With an architecture but PyTorch's names: the message shows the file's own.
        let arch = ModelSpec::new(&[2]).add(crate::Dense::new(2)).to_json();
        let meta = std::collections::HashMap::from([("architecture".to_string(), arch)]);
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2, 2], &data).unwrap();
        let bytes = safetensors::serialize(vec![("0.weight", view)], Some(meta)).unwrap();
        let err = ModelFile::from_bytes(Path::new("torch.safetensors"), &bytes).unwrap_err().to_string();
        assert!(err.contains("tensor dense.kernel of the architecture is missing (the file holds: 0.weight;"), "{err}");
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
        // Nor is such a file written: one already there stays.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last-good.safetensors");
        std::fs::write(&path, b"the last good checkpoint").unwrap();
        let err = f.save(&path).unwrap_err().to_string();
        assert!(err.contains("not written: tensor dense.kernel holds a non-finite value (NaN at index 4)"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"the last good checkpoint");
        // The same in a tensor beside the weights (a checkpoint's optimiser state).
        let (kernel, bias) = (f.weights[0].clone(), f.weights[1].clone());
        let mut kernel = kernel;
        kernel.data[4] = 0.5;
        let slot = Tensor { name: "optimizer.dense.bias.slot1".into(), shape: vec![2], data: vec![0.0, f32::INFINITY] };
        let f = ModelFile { weights: vec![kernel, bias], extra: vec![slot], ..f };
        let err = ModelFile::from_bytes(Path::new("inf.safetensors"), &f.to_bytes().unwrap()).unwrap_err().to_string();
        assert!(
            err.contains("inf.safetensors") && err.contains("optimizer.dense.bias.slot1") && err.contains("index 1"),
            "{err}"
        );
    }

    /// A tensor the architecture has no place for (a layer taken out of the architecture but
    /// not its weights, another model's file) is refused, naming it; optimiser and training
    /// state are read beside the weights.
    #[test]
    fn tensors_outside_the_architecture_are_refused() {
        let spec = ModelSpec::new(&[3]).add(crate::Dense::new(2));
        let kernel = Tensor { name: "dense.kernel".into(), shape: vec![3, 2], data: vec![0.5; 6] };
        let bias = Tensor { name: "dense.bias".into(), shape: vec![2], data: vec![0.0; 2] };
        let slot = Tensor { name: "optimizer.dense.bias.slot0".into(), shape: vec![2], data: vec![0.1; 2] };
        let kept = Tensor { name: "kept.best.dense.bias".into(), shape: vec![2], data: vec![0.2; 2] };
        let f = ModelFile {
            spec,
            weights: vec![kernel, bias],
            metadata: BTreeMap::new(),
            extra: vec![kept.clone(), slot.clone()],
        };
        let read = ModelFile::from_bytes(Path::new("ok.safetensors"), &f.to_bytes().unwrap()).unwrap();
        assert_eq!(read.extra, vec![kept, slot]);
        // Written by hand (to_bytes refuses it): a second layer's weights.
        let data: Vec<u8> = [0f32; 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = Vec::new();
        let good = f.to_bytes().unwrap();
        let st = SafeTensors::deserialize(&good).unwrap();
        for (n, v) in st.tensors() {
            views.push((n, v));
        }
        views.push(("dense_1.bias".into(), safetensors::tensor::TensorView::new(Dtype::F32, vec![2], &data).unwrap()));
        let (_, header) = SafeTensors::read_metadata(&good).unwrap();
        let meta = header.metadata().clone();
        let bytes = safetensors::serialize(views, meta).unwrap();
        let err = ModelFile::from_bytes(Path::new("odd.safetensors"), &bytes).unwrap_err().to_string();
        assert!(
            err.contains("odd.safetensors")
                && err.contains("tensor dense_1.bias has no place in the architecture")
                && err.contains("dense.kernel, dense.bias"),
            "{err}"
        );
        // An optimiser slot of a parameter the architecture does not have.
        let orphan = Tensor { name: "optimizer.dense_9.kernel.slot0".into(), shape: vec![1], data: vec![1.0] };
        let bytes = ModelFile { extra: vec![orphan], ..f.clone() }.to_bytes().unwrap();
        let err = ModelFile::from_bytes(Path::new("o.safetensors"), &bytes).unwrap_err().to_string();
        assert!(err.contains("tensor optimizer.dense_9.kernel.slot0 has no place in the architecture"), "{err}");
        let stray = Tensor { name: "notes".into(), shape: vec![1], data: vec![1.0] };
        let err = ModelFile { extra: vec![stray], ..f }.to_bytes().unwrap_err().to_string();
        assert!(err.contains("tensor notes beside the weights"), "{err}");
    }

    #[test]
    fn a_normalization_that_is_not_one_is_refused_at_load() {
        let spec = ModelSpec::new(&[3]).add(crate::Dense::new(2));
        let kernel = Tensor { name: "dense.kernel".into(), shape: vec![3, 2], data: vec![0.5; 6] };
        let bias = Tensor { name: "dense.bias".into(), shape: vec![2], data: vec![0.0; 2] };
        let metadata = BTreeMap::from([(NORMALIZATION_KEY.to_string(), "whiten".to_string())]);
        let f = ModelFile { spec, weights: vec![kernel, bias], metadata, extra: Vec::new() };
        let err = ModelFile::from_bytes(Path::new("odd.safetensors"), &f.to_bytes().unwrap()).unwrap_err().to_string();
        assert!(err.contains("odd.safetensors") && err.contains("\"whiten\""), "{err}");
        assert!(f.normalization().is_err());
    }

    #[test]
    fn load_names_what_is_no_file_and_refuses_another_kind_from_its_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFile::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        // 1 MB of text: refused from its first 64 bytes, with the message the whole gives.
        let notes = dir.path().join("notes.safetensors");
        std::fs::write(&notes, "some notes, not a model. ".repeat(40_000)).unwrap();
        let err = ModelFile::load(&notes).unwrap_err().to_string();
        assert!(err.contains("notes.safetensors: not a model file: it does not start as a safetensors file"), "{err}");
    }

    #[test]
    fn another_kind_of_file_and_a_cut_model_are_told_apart() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR and more of a picture";
        let err = ModelFile::from_bytes(Path::new("a.png"), png).unwrap_err().to_string();
        assert!(err.contains("a.png: not a model file: it is a PNG image; give a .safetensors model"), "{err}");
        let err = ModelFile::from_bytes(Path::new("notes.txt"), b"some notes, not a model").unwrap_err().to_string();
        assert!(err.contains("notes.txt") && err.contains("does not start as a safetensors file"), "{err}");
        let idx = [0u8, 0, 8, 1, 0, 0, 0, 2, 7, 3];
        let err = ModelFile::from_bytes(Path::new("labels"), &idx).unwrap_err().to_string();
        assert!(err.contains("an IDX data file"), "{err}");
        let spec = ModelSpec::new(&[3]).add(crate::Dense::new(2));
        let kernel = Tensor { name: "dense.kernel".into(), shape: vec![3, 2], data: vec![0.5; 6] };
        let bias = Tensor { name: "dense.bias".into(), shape: vec![2], data: vec![0.0; 2] };
        let f = ModelFile { spec, weights: vec![kernel, bias], metadata: BTreeMap::new(), extra: Vec::new() };
        let bytes = f.to_bytes().unwrap();
        let read = |b: &[u8]| ModelFile::from_bytes(Path::new("m.safetensors"), b).unwrap_err().to_string();
        // 32 bytes of tensors (6 + 2 f32s): cut within them, within the header, or added to.
        let err = read(&bytes[..bytes.len() - 4]);
        assert!(err.contains("truncated: its header lists 32 bytes of tensors, the file holds 28"), "{err}");
        let err = read(&bytes[..20]);
        assert!(err.contains("truncated: its header alone should take"), "{err}");
        let err = read(&[&bytes[..], &[0u8; 3][..]].concat());
        assert!(err.contains("3 bytes follow the 32 bytes of tensors its header lists"), "{err}");
        let mut damaged = bytes.clone();
        damaged[9] = b'#';
        let err = read(&damaged);
        assert!(err.contains("m.safetensors") && err.contains("its header is damaged"), "{err}");
    }
}
