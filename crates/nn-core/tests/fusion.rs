//! The fused passes against the same layers run one by one: equal outputs and gradients.
#![allow(clippy::unwrap_used)]

use mnist_data::Rng;
use nn_core::cpu::Cpu;
use nn_core::{
    Activation::*, Conv2D, Dense, Flatten, LayerSpec, Loss, ModelSpec, Network, Padding, Pool2D, Reshape, Runtime,
};

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[test]
fn fused_conv_pooling_matches_the_separate_layers() {
    // The first pair reads one channel (the single-channel pass, no input gradient); the
    // second many (the implicit-GEMM pass, which also gives the input gradient; with 16
    // channels into 32 filters, valid, Winograd's transform on a CPU with AVX-512).
    for (filters, second, pad, act) in [
        (32, 37, Padding::Valid, Relu),
        (7, 12, Padding::Same, Linear),
        (16, 21, Padding::Valid, Tanh),
        (16, 32, Padding::Valid, Relu),
    ] {
        let spec = ModelSpec::new(&[784])
            .add(Reshape { target_shape: vec![1, 28, 28] })
            .add(Conv2D::new(filters, 3).padding(pad).activation(act))
            .add(LayerSpec::MaxPooling2D(Pool2D::new(2)))
            .add(Conv2D::new(second, 3).padding(pad).activation(act))
            .add(LayerSpec::MaxPooling2D(Pool2D::new(2)))
            .add(Flatten::new())
            .add(Dense::new(10).activation(Softmax));
        let mut fused = Network::new(Cpu, &spec, 5).unwrap();
        let mut plain = Network::new_unfused(Cpu, &spec, 5).unwrap();
        // Both pairs fuse: the first on any CPU, the second where the CPU has AVX-512.
        assert_eq!(fused.fused_pairs(), if avx512() { 2 } else { 1 }, "{filters} {act:?}");
        assert_eq!(plain.fused_pairs(), 0);
        let n = 19;
        let mut rng = Rng::new(3);
        let x: Vec<f32> = (0..n * 784).map(|_| rng.uniform(0.0, 1.0)).collect();
        let labels: Vec<f32> = (0..n).map(|i| (i % 10) as f32).collect();
        let (mut a, mut b) = (vec![0f32; n * 10], vec![0f32; n * 10]);
        fused.predict_batch(&x, n, &mut a).unwrap();
        plain.predict_batch(&x, n, &mut b).unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5, "{filters} {act:?}: prediction {p} vs {q}");
        }
        let loss = Loss::SparseCategoricalCrossentropy { from_logits: false };
        let (la, ga) = fused.loss_and_gradients(&x, &labels, n, loss, 1).unwrap();
        let (lb, gb) = plain.loss_and_gradients(&x, &labels, n, loss, 1).unwrap();
        assert!((la - lb).abs() < 1e-5 * lb.abs().max(1.0));
        for (g, h) in ga.iter().zip(&gb) {
            assert_eq!(g.name, h.name);
            let scale = h.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
            for (p, q) in g.data.iter().zip(&h.data) {
                assert!((p - q).abs() <= 1e-4 * scale, "{filters} {act:?} {}: {p} vs {q}", g.name);
            }
        }
    }
}

/// A frozen conv is fused with its pooling too. With a trainable conv below it, its fused
/// backward pass still gives the input gradient that conv learns from (its own kernel gradient
/// thrown away): the trainable layers' gradients are the unfused network's.
#[test]
fn a_frozen_conv_is_fused_and_passes_the_gradient_on() {
    let spec = ModelSpec::new(&[784])
        .add(Reshape { target_shape: vec![1, 28, 28] })
        .add(Conv2D::new(16, 3))
        .add(LayerSpec::MaxPooling2D(Pool2D::new(2)))
        .add(Conv2D::new(32, 3).activation(Relu).trainable(false))
        .add(LayerSpec::MaxPooling2D(Pool2D::new(2)))
        .add(Flatten::new())
        .add(Dense::new(10).activation(Softmax));
    let mut fused = Network::new(Cpu, &spec, 8).unwrap();
    let mut plain = Network::new_unfused(Cpu, &spec, 8).unwrap();
    assert_eq!(fused.fused_pairs(), if avx512() { 2 } else { 1 });
    let n = 11;
    let mut rng = Rng::new(4);
    let x: Vec<f32> = (0..n * 784).map(|_| rng.uniform(0.0, 1.0)).collect();
    let labels: Vec<f32> = (0..n).map(|i| (i % 10) as f32).collect();
    let loss = Loss::SparseCategoricalCrossentropy { from_logits: false };
    let (la, ga) = fused.loss_and_gradients(&x, &labels, n, loss, 1).unwrap();
    let (lb, gb) = plain.loss_and_gradients(&x, &labels, n, loss, 1).unwrap();
    assert!((la - lb).abs() < 1e-5 * lb.abs().max(1.0));
    let names: Vec<&str> = ga.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["conv2d.kernel", "conv2d.bias", "dense.kernel", "dense.bias"]);
    for (g, h) in ga.iter().zip(&gb) {
        assert_eq!(g.name, h.name);
        let scale = h.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (p, q) in g.data.iter().zip(&h.data) {
            assert!((p - q).abs() <= 1e-4 * scale, "{}: {p} vs {q}", g.name);
        }
    }
}
