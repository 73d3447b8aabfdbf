//! Convolutional recipes on the real MNIST files (issue: past 99%, and 99% fast).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use nn_core::Model;
use nn_train::recipes::{recipe, RecipeValidation};
use nn_train::{FitConfig, Trainer, Validation, Verbosity};

fn train(name: &str, epochs: usize, seed: u64) -> f64 {
    let data = mnist_data::Mnist::load(common::data_dir("mnist")).unwrap();
    let r = recipe(name).unwrap();
    let test = Arc::new(data.test);
    let validation = match r.validation {
        RecipeValidation::Test => Validation::Data(test.clone()),
        RecipeValidation::Split(f) => Validation::Split(f),
        RecipeValidation::None => Validation::None,
    };
    let mut t = Trainer::new(Model::new(&r.spec, seed).unwrap(), r.compile);
    let cfg = FitConfig {
        epochs,
        batch_size: r.batch_size,
        validation,
        seed,
        verbosity: Verbosity::Lines,
        ..Default::default()
    };
    t.fit(Arc::new(data.train), cfg).unwrap();
    let acc = t.evaluate(&test).unwrap().accuracy;
    println!("{name}, {epochs} epochs: test accuracy {acc:.4}");
    acc
}

#[test]
fn keras_simple_convnet_passes_98_5_after_3_epochs() {
    let acc = train("convnet", 3, 2);
    assert!(acc >= 0.985, "test accuracy {acc}");
}

#[test]
fn fast_cnn_passes_99_percent() {
    let r = recipe("fast-cnn").unwrap();
    let acc = train("fast-cnn", r.epochs, 1);
    assert!(acc >= 0.990, "test accuracy {acc}");
}
