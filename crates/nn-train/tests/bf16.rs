//! The CPU's products below f32 on AMX (`nn_core::cpu::set_matmul_precision`): in bfloat16
//! ("medium") and in split bfloat16 ("high"). The setting is process-wide, so this file's one
//! test runs everything in order. On a CPU without AMX the test says so and checks only that
//! the setting changes nothing there.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{data_dir, run_recipe};
use nn_core::cpu::{matmul_precision, set_matmul_precision, MatmulPrecision};
use nn_core::Model;
use nn_train::recipes::recipe;
use nn_train::{FitConfig, Trainer, Verbosity};

/// One epoch of mlp-512-512 on the first 6,000 training images: its weights.
fn short_run() -> Vec<f32> {
    let data = mnist_data::Mnist::load(data_dir("mnist")).unwrap();
    let r = recipe("mlp-512-512").unwrap();
    let mut t = Trainer::new(Model::new(&r.spec, 3).unwrap(), r.compile);
    let cfg =
        FitConfig { epochs: 1, batch_size: r.batch_size, seed: 3, verbosity: Verbosity::Silent, ..Default::default() };
    t.fit(Arc::new(data.train.slice(0..6_000)), cfg).unwrap();
    t.model().weights().unwrap().into_iter().flat_map(|w| w.data).collect()
}

/// The mean and the largest distance between two runs' weights.
fn distance(a: &[f32], b: &[f32]) -> (f64, f32) {
    let mean = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).sum::<f64>() / a.len() as f64;
    (mean, a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max))
}

#[test]
fn lower_precisions_train_the_widest_recipe_to_its_floor_reproducibly() {
    let f32_weights = short_run();
    set_matmul_precision(MatmulPrecision::Medium);
    if !nn_core::cpu::bf16_products_available() {
        eprintln!("this CPU has no AMX bfloat16 products: the setting must change nothing");
        assert_eq!(matmul_precision(), MatmulPrecision::Highest);
        assert_eq!(short_run(), f32_weights);
        set_matmul_precision(MatmulPrecision::Highest);
        return;
    }
    let mut medium = None;
    for precision in [MatmulPrecision::Medium, MatmulPrecision::High] {
        set_matmul_precision(precision);
        assert_eq!(matmul_precision(), precision);
        let (first, second) = (short_run(), short_run());
        assert_eq!(first, second, "{precision:?}: the same seed gives the same weights");
        // The products did run on AMX: the weights moved off the f32 run's, but not far.
        let differ = first.iter().zip(&f32_weights).filter(|(a, b)| a != b).count();
        assert!(differ > first.len() / 2, "{precision:?}: only {differ} of {} weights differ from f32's", first.len());
        let (mean, worst) = distance(&first, &f32_weights);
        eprintln!("{precision:?}: mean distance from f32 {mean:e}, largest {worst:e}");
        assert!(worst < 0.05, "{precision:?}: a weight moved {worst} from f32's in one epoch");
        // Split, the products carry about 16 bits, not 8: the weights stay much nearer f32's.
        match medium {
            None => medium = Some(mean),
            Some(medium) => assert!(mean * 4.0 < medium, "mean distance from f32: high {mean}, medium {medium}"),
        }
        // The floor for this recipe (f32 reaches 97.95% with seed 1; bf16 98.09%).
        let (acc, t) = run_recipe("mlp-512-512", None, 1);
        assert!(acc >= 0.975, "{precision:?}: test accuracy {acc}");
        assert!(t.history().last().unwrap().accuracy > 0.99, "{precision:?}: train accuracy");
    }
    set_matmul_precision(MatmulPrecision::Highest);
}
