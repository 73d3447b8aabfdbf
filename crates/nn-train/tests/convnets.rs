//! Convolutional recipes on the real MNIST files (issue: past 99%, and 99% fast).
#![allow(clippy::unwrap_used)]

mod common;

use common::run_recipe;

#[test]
fn keras_simple_convnet_passes_98_5_after_3_epochs() {
    let (acc, _) = run_recipe("convnet", Some(3), 2);
    assert!(acc >= 0.985, "test accuracy {acc}");
}

#[test]
fn fast_cnn_passes_99_percent() {
    let (acc, _) = run_recipe("fast-cnn", None, 1);
    assert!(acc >= 0.990, "test accuracy {acc}");
}
