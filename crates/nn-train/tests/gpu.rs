//! The GPU against the CPU on the real data: a seeded run of a recipe reaches the CPU's test
//! accuracy within 0.3 points, and a model file trained on the GPU predicts the same on the
//! CPU, and back. Without a usable GPU (no `cuda` feature, no driver, no device) each test
//! prints `skipping: ...` and passes, unless `NN_REQUIRE_GPU=1` (set it on a GPU machine):
//! `cargo test --release -p nn-train --features cuda --test gpu`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::data_dir;
use mnist_data::Normalization;
use nn_core::ModelFile;
use nn_train::recipes::recipe;
use nn_train::{build_model, model_from_file, predict_dataset, DeviceChoice, FitConfig, Trainer, Verbosity};

/// Whether the GPU opens; otherwise says why (and fails if `NN_REQUIRE_GPU=1`).
fn gpu() -> bool {
    match nn_cuda::Cuda::new(0) {
        Ok(_) => true,
        Err(e) => {
            assert!(std::env::var("NN_REQUIRE_GPU").as_deref() != Ok("1"), "NN_REQUIRE_GPU=1, but: {e}");
            println!("skipping: no CUDA device: {e}");
            false
        }
    }
}

/// Trains recipe `name` for `epochs` from `seed` on `device`; returns the test accuracy and
/// the trainer.
fn run(device: DeviceChoice, name: &str, epochs: usize, seed: u64) -> (f64, Trainer) {
    let data = mnist_data::Mnist::load(data_dir("mnist")).unwrap();
    let r = recipe(name).unwrap();
    let (model, _) = build_model(device, &r.spec, seed).unwrap();
    let mut t = Trainer::new(model, r.compile);
    let cfg = FitConfig { epochs, batch_size: r.batch_size, seed, verbosity: Verbosity::Silent, ..Default::default() };
    t.fit(Arc::new(data.train), cfg).unwrap();
    let acc = t.evaluate(&Arc::new(data.test)).unwrap().accuracy;
    println!("{name}, seed {seed}, {epochs} epochs on {device}: test accuracy {acc:.4}");
    (acc, t)
}

#[test]
fn a_seeded_run_on_the_gpu_reaches_the_cpus_accuracy() {
    if !gpu() {
        return;
    }
    for (name, epochs) in [("mlp-128", 6), ("convnet", 2)] {
        let (cpu, _) = run(DeviceChoice::Cpu, name, epochs, 0);
        let (gpu, _) = run(DeviceChoice::Cuda(0), name, epochs, 0);
        assert!((cpu - gpu).abs() <= 0.003, "{name}: {gpu:.4} on the GPU against {cpu:.4} on the CPU");
    }
}

#[test]
fn a_model_file_trained_on_one_device_predicts_the_same_on_the_other() {
    if !gpu() {
        return;
    }
    let test = mnist_data::Mnist::load(data_dir("mnist")).unwrap().test;
    let (_, mut t) = run(DeviceChoice::Cuda(0), "mlp-128", 1, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpu.safetensors");
    t.model().save(&path, BTreeMap::new()).unwrap();
    let on_gpu = predict_dataset(t.model_mut(), &test, Normalization::Scale).unwrap();
    let file = ModelFile::load(&path).unwrap();
    let (mut cpu_model, _) = model_from_file(DeviceChoice::Cpu, &file).unwrap();
    let on_cpu = predict_dataset(&mut cpu_model, &test, Normalization::Scale).unwrap();
    let worst = on_gpu.iter().zip(&on_cpu).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "GPU-trained model: probabilities differ by {worst} on the CPU");
    // And back: the CPU's copy saved, loaded on the GPU.
    let back = dir.path().join("cpu.safetensors");
    cpu_model.save(&back, BTreeMap::new()).unwrap();
    let (mut gpu_again, _) = model_from_file(DeviceChoice::Cuda(0), &ModelFile::load(&back).unwrap()).unwrap();
    let again = predict_dataset(&mut gpu_again, &test, Normalization::Scale).unwrap();
    assert_eq!(again, on_gpu, "the same weights give the same GPU predictions");
}
