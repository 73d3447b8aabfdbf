//! The first layer's exact products of scaled pixels on AMX (`nn_core::cpu::use_level_products`,
//! on by default): the trainer declares what its normalisation makes
//! (`Runtime::set_input_levels`), the first dense layer tells its products, and the CPU runs
//! them on AMX where it has it. The switch is process-wide, so this file's one test runs
//! everything in order. On a CPU without AMX the test checks that nothing changes.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::data_dir;
use mnist_data::{Augmentation, Normalization};
use nn_core::cpu::{bf16_products_available, level_products_run, use_level_products};
use nn_core::Model;
use nn_train::recipes::recipe;
use nn_train::{FitConfig, Trainer, Verbosity};

/// One epoch of mlp-128 on the first 6,000 training images, then the test set's accuracy:
/// the weights, the accuracy, and how many level products the training ran.
fn short_run(norm: Normalization, augment: bool) -> (Vec<f32>, f64, usize) {
    let data = mnist_data::Mnist::load(data_dir("mnist")).unwrap();
    let r = recipe("mlp-128").unwrap();
    let mut t = Trainer::new(Model::new(&r.spec, 5).unwrap(), r.compile);
    let cfg = FitConfig {
        epochs: 1,
        batch_size: r.batch_size,
        seed: 5,
        verbosity: Verbosity::Silent,
        normalization: Some(norm),
        augmentation: augment.then(|| Augmentation::new().rotation(5.0)),
        ..Default::default()
    };
    let before = level_products_run();
    t.fit(Arc::new(data.train.slice(0..6_000)), cfg).unwrap();
    let runs = level_products_run() - before;
    let acc = t.evaluate(&data.test).unwrap().accuracy;
    let weights = t.model().weights().unwrap().into_iter().flat_map(|w| w.data).collect();
    (weights, acc, runs)
}

#[test]
fn scaled_pixels_take_exact_products_that_train_as_f32_does() {
    let (on, acc_on, runs) = short_run(Normalization::Scale, false);
    use_level_products(false);
    let (off, acc_off, none) = short_run(Normalization::Scale, false);
    use_level_products(true);
    assert_eq!(none, 0, "switched off, no product ran on levels");
    if !bf16_products_available() {
        eprintln!("this CPU has no AMX bfloat16 products: nothing may change");
        assert_eq!((runs, &on), (0, &off));
        return;
    }
    // 47 steps of a forward product and a weight gradient.
    assert!(runs >= 2 * 47, "{runs} products on levels");
    // As near f32 as f32's own rounding takes two runs that sum in different orders: after
    // 47 Adam steps the weights agree to ~1e-9 on average (measured 1.3e-9, the largest
    // distance 3e-7).
    let mean = on.iter().zip(&off).map(|(a, b)| f64::from((a - b).abs())).sum::<f64>() / on.len() as f64;
    let worst = on.iter().zip(&off).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("levels against f32 products: mean distance {mean:e}, largest {worst:e}; accuracy {acc_on} / {acc_off}");
    assert!(on != off, "the products did not change at all");
    assert!(mean < 1e-7 && worst < 1e-5, "mean distance {mean}, largest {worst}");
    assert!((acc_on - acc_off).abs() < 0.002, "accuracy {acc_on} against {acc_off}");
    // The same seed, the same weights.
    assert_eq!(short_run(Normalization::Scale, false).0, on);
    // Standardised inputs are not levels, and augmented batches are not declared: f32.
    assert_eq!(short_run(Normalization::MNIST_STANDARD, false).2, 0);
    assert_eq!(short_run(Normalization::Scale, true).2, 0);
}
