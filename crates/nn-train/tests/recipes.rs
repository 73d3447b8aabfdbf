//! The seed recipes of the Keras MNIST tutorials, trained on the real MNIST files and scored on
//! the real test set. Floors are the (Keras measured 97.4-97.8% on the same files).
#![allow(clippy::unwrap_used)]

mod common;

use common::run_recipe;

fn run(name: &str, seed: u64) -> (f64, nn_train::Trainer) {
    run_recipe(name, None, seed)
}

#[test]
fn mlp_128_relu_logits_adam_6_epochs() {
    let (acc, t) = run("mlp-128", 1);
    assert!(acc >= 0.972, "test accuracy {acc}");
    assert_eq!(t.history().epochs.len(), 6);
    assert!(t.history().epochs.iter().all(|e| e.val_accuracy.is_some()));
}

#[test]
fn mlp_sigmoid_100_144_categorical_batch_32_10_epochs() {
    let (acc, _) = run("mlp-sigmoid-100-144", 1);
    assert!(acc >= 0.972, "test accuracy {acc}");
}

#[test]
fn mlp_128_128_validation_split_10_epochs() {
    let (acc, t) = run("mlp-128-128", 1);
    assert!(acc >= 0.972, "test accuracy {acc}");
    // Validation on the last 20% of the training set, 12 000 examples.
    assert!(t.history().last().unwrap().val_accuracy.unwrap() > 0.96);
}

#[test]
fn mlp_512_512_8_epochs() {
    let (acc, t) = run("mlp-512-512", 1);
    assert!(acc >= 0.975, "test accuracy {acc}");
    assert!(t.history().last().unwrap().accuracy > 0.99, "train accuracy");
}
