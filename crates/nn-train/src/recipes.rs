//! The recipes of the Keras MNIST tutorials: architecture, compile settings and fit settings
//! under one name, so `mnist train --model mlp-128` reproduces a tutorial.

use mnist_data::Augmentation;
use nn_core::{preset, Loss, ModelSpec};

use crate::optimizer::Optimizer;
use crate::schedule::Schedule;
use crate::trainer::Compile;

/// Where a recipe validates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RecipeValidation {
    /// On the test set after each epoch (as the TFDS Keras MNIST example does).
    Test,
    /// On the last fraction of the training set.
    Split(f64),
    /// Not at all.
    None,
}

/// A complete training recipe.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// Name (also the preset architecture's name).
    pub name: &'static str,
    /// The architecture.
    pub spec: ModelSpec,
    /// Optimiser, loss and schedule.
    pub compile: Compile,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Validation.
    pub validation: RecipeValidation,
    /// Augmentation of training batches.
    pub augmentation: Option<Augmentation>,
}

impl Recipe {
    /// The trainer's validation setting for this recipe, given the test set.
    pub fn validation(&self, test: &std::sync::Arc<mnist_data::Dataset>) -> crate::trainer::Validation {
        match self.validation {
            RecipeValidation::Test => crate::trainer::Validation::Data(test.clone()),
            RecipeValidation::Split(f) => crate::trainer::Validation::Split(f),
            RecipeValidation::None => crate::trainer::Validation::None,
        }
    }
}

/// The recipe of a preset name (see [`nn_core::presets::PRESETS`]).
pub fn recipe(name: &str) -> Option<Recipe> {
    let spec = preset(name)?;
    let cce = Loss::CategoricalCrossentropy { from_logits: false };
    let adam = Compile { optimizer: Optimizer::adam(), loss: cce, schedule: Schedule::Constant };
    let (name, compile, epochs, batch_size, validation) = match name {
        "mlp-128" => (
            "mlp-128",
            Compile { loss: Loss::SparseCategoricalCrossentropy { from_logits: true }, ..adam },
            6,
            128,
            RecipeValidation::Test,
        ),
        "mlp-sigmoid-100-144" => ("mlp-sigmoid-100-144", adam, 10, 32, RecipeValidation::Test),
        "mlp-128-128" => ("mlp-128-128", adam, 10, 128, RecipeValidation::Split(0.2)),
        "mlp-512-512" => ("mlp-512-512", adam, 8, 128, RecipeValidation::Test),
        "convnet" => ("convnet", adam, 15, 128, RecipeValidation::Split(0.1)),
        "fast-cnn" => (
            "fast-cnn",
            Compile {
                optimizer: Optimizer::adam().learning_rate(1e-2),
                loss: cce,
                schedule: Schedule::OneCycle { total_steps: 0, warmup: 0.25, div: 10.0, final_div: 100.0 },
            },
            3,
            128,
            // Judged on the test set once, at the end: validating every epoch would cost time.
            RecipeValidation::None,
        ),
        _ => return None,
    };
    Some(Recipe { name, spec, compile, epochs, batch_size, validation, augmentation: None })
}
