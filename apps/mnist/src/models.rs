//! `--model PRESET|spec.json|model.safetensors`: what the argument names, and the small changes
//! to an architecture the command line can ask for (`--dropout`, `--l2`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nn_core::presets::PRESETS;
use nn_core::{Activation, Dropout, LayerSpec, Loss, ModelFile, ModelSpec};
use nn_train::Trainer;

/// The model metadata key holding the data set a model was trained on (`mnist`, `fashion`, or a
/// folder's path).
pub const DATASET_KEY: &str = "dataset";

/// What a `--model` argument names.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    /// A preset architecture (with its recipe), by name.
    Preset(String),
    /// An architecture in a JSON file.
    SpecFile(PathBuf),
    /// A trained model (safetensors written by `mnist train`).
    ModelFile(PathBuf),
}

/// Whether a file not named `.safetensors` is an architecture (JSON) file: it begins, after
/// blanks, with `{`. A safetensors file begins with its header's 8-byte length (one that fits
/// in the file, which eight blanks never are), then the header's `{`.
fn starts_like_json(path: &Path) -> bool {
    use std::io::Read;
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors")) {
        return false;
    }
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    // A safetensors header: its length (little-endian) fits in the file, and it opens with `{`.
    let declared = u64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
    let safetensors_header = n > 8 && head[8] == b'{' && declared.saturating_add(8) <= len;
    !safetensors_header && head[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The presets with a line each, for help texts and errors.
pub fn preset_list() -> String {
    PRESETS.iter().map(|(n, d)| format!("  {n:<20} {d}")).collect::<Vec<_>>().join("\n")
}

impl ModelSource {
    /// Classifies `arg`: a preset name, an existing `.json` file (architecture), another
    /// existing file (model), or a run folder holding `model.safetensors` (or `best.safetensors`).
    ///
    /// # Errors
    /// When it is none of these: an unknown name (listing the presets) or a missing file.
    pub fn parse(arg: &str) -> Result<ModelSource> {
        if nn_core::preset(arg).is_some() {
            return Ok(ModelSource::Preset(arg.to_string()));
        }
        let path = PathBuf::from(arg);
        if path.is_file() {
            let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) || starts_like_json(&path);
            return Ok(if is_json { ModelSource::SpecFile(path) } else { ModelSource::ModelFile(path) });
        }
        if path.is_dir() {
            // A run folder of `mnist train` or `mnist tune`: its model.
            if let Some(model) =
                ["model.safetensors", "best.safetensors"].iter().map(|f| path.join(f)).find(|p| p.is_file())
            {
                return Ok(ModelSource::ModelFile(model));
            }
            bail!("{arg}: a folder without model.safetensors; give a preset name, a spec .json file or a model .safetensors file");
        }
        if path.exists() {
            bail!("{arg}: not a regular file (a device or a pipe?); give a preset name, a spec .json file or a model .safetensors file");
        }
        let looks_like_path = arg.contains('/') || arg.contains('\\') || path.extension().is_some();
        if looks_like_path {
            bail!("{arg}: no such file");
        }
        bail!("unknown model '{arg}': not a preset nor an existing file. The presets are:\n{}", preset_list())
    }

    /// The architecture: the preset's, the spec file's, or the model file's.
    ///
    /// # Errors
    /// Unreadable or invalid files, naming them; architectures that do not fit together.
    pub fn spec(&self) -> Result<ModelSpec> {
        match self {
            ModelSource::Preset(name) => nn_core::preset(name).ok_or_else(|| anyhow!("unknown preset {name}")),
            ModelSource::SpecFile(path) => load_spec(path),
            ModelSource::ModelFile(path) => Ok(ModelFile::load(path)?.spec),
        }
    }

    /// A short name for titles and run folders: the preset, or the file's stem.
    pub fn name(&self) -> String {
        match self {
            ModelSource::Preset(name) => name.clone(),
            ModelSource::SpecFile(p) => {
                p.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
            }
            // runs/mlp-128-20250101-120000/model.safetensors is best named by its run folder.
            ModelSource::ModelFile(p) => {
                let folder = p.parent().and_then(|d| d.file_name());
                folder.or(p.file_stem()).map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
            }
        }
    }
}

/// Reads an architecture from a JSON file and checks that its layers fit together.
///
/// # Errors
/// Unreadable file, invalid JSON (with line and column), layers that do not fit; all naming the
/// file.
pub fn load_spec(path: &Path) -> Result<ModelSpec> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read the architecture", path.display()))?;
    let Ok(text) = std::str::from_utf8(&bytes) else {
        bail!(
            "{}: not an architecture: a .json spec is text, this file is binary (a model file? those are named .safetensors)",
            path.display()
        );
    };
    // Editors on Windows may start a UTF-8 file with a byte-order mark, which JSON does not allow.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let spec = ModelSpec::from_json(text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    spec.resolve().map_err(|e| anyhow!("{}: invalid architecture: {e}", path.display()))?;
    Ok(spec)
}

/// Refuses a model that does not give one score per class of the data set (an output of
/// `[classes]`): its predictions outside the classes would count in no report's row, and an
/// output of another shape is no classifier's. `model` names it in the message.
///
/// # Errors
/// The model's output shape, and what a classifier of `classes` classes ends with.
pub fn check_classes(spec: &ModelSpec, classes: usize, model: &str) -> Result<()> {
    let out = spec.output_shape().map_err(|e| anyhow!("{model}: {e}"))?;
    if out != [classes] {
        bail!(
            "{model}: the model gives an output of {out:?} per image; a classifier of the data set's {classes} \
             classes gives {classes} scores (end it with a Dense layer of {classes} units)"
        );
    }
    Ok(())
}

/// Whether the architecture ends in a softmax (its outputs are probabilities, not logits).
pub fn ends_in_softmax(spec: &ModelSpec) -> bool {
    matches!(spec.layers.last(), Some(LayerSpec::Dense(d)) if d.activation == Activation::Softmax)
}

/// The loss of an architecture without a recipe: sparse categorical cross-entropy, on logits
/// unless the model ends in a softmax.
pub fn default_loss(spec: &ModelSpec) -> Loss {
    Loss::SparseCategoricalCrossentropy { from_logits: !ends_in_softmax(spec) }
}

/// The recipe an architecture file trains with when flags say nothing else (it has no tutorial
/// of its own): Adam at 1e-3, sparse categorical cross-entropy (from logits unless the model
/// ends in softmax), 5 epochs of batch 128, validation on the test set.
pub fn spec_recipe(spec: &ModelSpec) -> nn_train::recipes::Recipe {
    nn_train::recipes::Recipe {
        name: "architecture file",
        spec: spec.clone(),
        compile: nn_train::Compile { loss: default_loss(spec), ..Default::default() },
        epochs: 5,
        batch_size: 128,
        validation: nn_train::recipes::RecipeValidation::Test,
        augmentation: None,
    }
}

/// `--dropout RATE`: a `Dropout(rate)` just before the last `Dense` layer (the rate of the
/// Dropout already there, if there is one).
///
/// # Errors
/// A rate outside `[0, 1)` or an architecture without a `Dense` layer.
pub fn insert_dropout(spec: &mut ModelSpec, rate: f32) -> Result<()> {
    if !(0.0..1.0).contains(&rate) {
        bail!("--dropout {rate}: the rate must be at least 0 and below 1");
    }
    let last_dense = spec
        .layers
        .iter()
        .rposition(|l| matches!(l, LayerSpec::Dense(_)))
        .ok_or_else(|| anyhow!("--dropout: the architecture has no Dense layer to put a Dropout before"))?;
    // A Dropout already there (the convnet's) takes the new rate: two in a row would drop
    // both rates' share.
    match last_dense.checked_sub(1).map(|i| &mut spec.layers[i]) {
        Some(LayerSpec::Dropout(d)) => {
            eprintln!("note: --dropout {rate} replaces the architecture's Dropout({})", d.rate);
            d.rate = rate;
        }
        _ if rate == 0.0 => {}
        _ => spec.layers.insert(last_dense, LayerSpec::Dropout(Dropout::new(rate))),
    }
    Ok(())
}

/// `--l2 F`: an L2 penalty `F·Σw²` on the kernel of every `Dense` layer.
///
/// # Errors
/// A negative or non-finite factor.
pub fn add_l2(spec: &mut ModelSpec, l2: f32) -> Result<()> {
    if !(l2.is_finite() && l2 >= 0.0) {
        bail!("--l2 {l2}: the factor must be a number of at least 0");
    }
    for l in &mut spec.layers {
        if let LayerSpec::Dense(d) = l {
            *d = d.clone().l2(l2);
        }
    }
    Ok(())
}

/// The preset whose architecture is `spec`, if any (to find a resumed run's recipe).
pub fn preset_of(spec: &ModelSpec) -> Option<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).find(|n| nn_core::preset(n).as_ref() == Some(spec))
}

/// A trained model ready for `evaluate` and `predict`, with the data set it was trained on.
pub struct Loaded {
    /// The model with its loss and input normalisation.
    pub trainer: Trainer,
    /// The `dataset` metadata of the file, when present.
    pub dataset: Option<String>,
    /// The model file.
    pub path: PathBuf,
}

impl Loaded {
    /// A short name for titles: the run folder's name, else the file's stem.
    pub fn name(&self) -> String {
        let folder = self.path.parent().and_then(|p| p.file_name());
        let stem = self.path.file_stem();
        folder.or(stem).map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    }
}

/// Loads a model file written by `mnist train` or `mnist tune` (or any model file: then the loss
/// is the architecture's default and pixels are scaled to `[0, 1]`).
///
/// # Errors
/// A missing, unreadable or invalid file, or a name that is not a model file; naming it.
pub fn load_trained(arg: &str, device: nn_train::DeviceChoice) -> Result<Loaded> {
    let path = match ModelSource::parse(arg) {
        Ok(ModelSource::ModelFile(p)) => p,
        Ok(ModelSource::Preset(_)) => bail!("--model {arg}: a preset has no trained weights; train it first (`mnist train --model {arg}`) and give the model.safetensors it writes"),
        Ok(ModelSource::SpecFile(_)) => bail!("--model {arg}: an architecture has no trained weights; train it first (`mnist train --model {arg}`) and give the model.safetensors it writes"),
        Err(e) => return Err(e),
    };
    let file = ModelFile::load(&path)?;
    let dataset = file.metadata.get(DATASET_KEY).cloned();
    let trainer = if file.metadata.contains_key("training_config") {
        crate::device::resume(device, &path)?
    } else {
        let loss = default_loss(&file.spec);
        let model =
            crate::device::from_file(device, &file).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
        let normalization = file.normalization().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Trainer::new(model, nn_train::Compile { loss, ..Default::default() }).with_normalization(normalization)?
    };
    Ok(Loaded { trainer, dataset, path })
}

/// Adds `key = value` to the metadata of the model file at `path` (rewritten atomically).
///
/// # Errors
/// I/O failures naming the file.
pub fn add_metadata(path: &Path, entries: &[(&str, String)]) -> Result<()> {
    let mut f = ModelFile::load(path)?;
    for (k, v) in entries {
        f.metadata.insert((*k).to_string(), v.clone());
    }
    f.save(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_goes_before_the_last_dense_and_l2_on_every_dense() {
        let mut spec = nn_core::preset("mlp-128-128").unwrap_or_else(|| ModelSpec::new(&[1]));
        insert_dropout(&mut spec, 0.2).expect("dropout");
        assert!(matches!(spec.layers[3], LayerSpec::Dropout(_)), "{:?}", spec.layers);
        assert!(matches!(spec.layers[4], LayerSpec::Dense(_)));
        add_l2(&mut spec, 1e-4).expect("l2");
        let dense: Vec<_> =
            spec.layers.iter().filter_map(|l| if let LayerSpec::Dense(d) = l { Some(d) } else { None }).collect();
        assert_eq!(dense.len(), 3);
        assert!(dense.iter().all(|d| d.kernel_regularizer.map(|r| r.l2) == Some(1e-4)));
        assert!(insert_dropout(&mut spec, 1.0).is_err());
        // A second --dropout, or one on the convnet's Dropout(0.5): its rate changes, no layer is added.
        let len = spec.layers.len();
        insert_dropout(&mut spec, 0.3).expect("dropout");
        assert_eq!(spec.layers.len(), len);
        assert!(matches!(&spec.layers[3], LayerSpec::Dropout(d) if d.rate == 0.3), "{:?}", spec.layers);
        assert_eq!(preset_of(&nn_core::preset("convnet").unwrap_or_else(|| ModelSpec::new(&[1]))), Some("convnet"));
    }

    #[test]
    fn model_arguments_are_classified() {
        assert_eq!(ModelSource::parse("mlp-128").ok(), Some(ModelSource::Preset("mlp-128".into())));
        let e = ModelSource::parse("mlp-999").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("unknown model") && e.contains("mlp-128"), "{e}");
        let e = ModelSource::parse("nowhere/model.safetensors").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("no such file"), "{e}");
    }
}
