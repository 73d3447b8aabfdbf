//! `mnist summary`: Keras's `model.summary()`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use mnist_data::atomic::write_atomic;
use nn_train::recipes::{recipe, RecipeValidation};

use crate::commands::create_parent;
use crate::models::ModelSource;
use crate::Global;

const EXAMPLES: &str = "\
Examples:
  mnist summary --model mlp-sigmoid-100-144     94,494 parameters
  mnist summary --model convnet --save-spec my-cnn.json   then edit my-cnn.json and
  mnist train --model my-cnn.json                          train it
  mnist summary --model runs/mlp-128-20250101-120000/model.safetensors";

fn after_help() -> String {
    format!("{EXAMPLES}\n\nPresets (each with the recipe of its tutorial):\n{}", crate::models::preset_list())
}

/// Arguments of `mnist summary`.
#[derive(Args, Debug)]
#[command(after_help = after_help())]
pub struct SummaryArgs {
    /// A preset name (see below), an architecture file (.json) or a trained model
    /// (.safetensors).
    #[arg(long, short, value_name = "PRESET|SPEC.json|MODEL.safetensors")]
    pub model: String,
    /// Also write the architecture as JSON to this file (a starting point for your own).
    #[arg(long, value_name = "FILE.json")]
    pub save_spec: Option<PathBuf>,
}

/// Runs `mnist summary`.
///
/// # Errors
/// An unknown preset, a missing or invalid file.
pub fn run(args: SummaryArgs, _global: &Global) -> Result<()> {
    let source = ModelSource::parse(&args.model)?;
    let spec = source.spec()?;
    print!(
        "{}",
        nn_core::summary(&spec, "sequential").with_context(|| format!("{}: invalid architecture", args.model))?
    );
    let r = match &source {
        ModelSource::Preset(name) => recipe(name),
        ModelSource::SpecFile(_) => Some(crate::models::spec_recipe(&spec)),
        // A trained model's settings are its file's (`mnist evaluate` and report.txt show them).
        ModelSource::ModelFile(_) => None,
    };
    if let Some(r) = r {
        let validation = match r.validation {
            RecipeValidation::Test => "validation on the test set".to_string(),
            RecipeValidation::Split(f) => format!("validation on the last {:.0}% of the training set", f * 100.0),
            RecipeValidation::None => "no validation".to_string(),
        };
        println!(
            "Recipe{}: {} (learning rate {}, schedule {}), {}{}, {} epochs of batch {}, {validation}",
            if matches!(source, ModelSource::Preset(_)) { "" } else { " (an architecture file's default)" },
            r.compile.optimizer.name(),
            r.compile.optimizer.lr(),
            super::train::schedule_text(&r.compile.schedule),
            r.compile.loss.name(),
            if r.compile.loss.from_logits() { " from logits" } else { "" },
            r.epochs,
            r.batch_size
        );
    }
    if let Some(path) = args.save_spec {
        create_parent(&path)?;
        write_atomic(&path, (spec.to_json() + "\n").as_bytes())?;
        println!("Architecture written to {}", path.display());
    }
    Ok(())
}
