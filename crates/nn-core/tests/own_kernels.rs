//! The CPU device's own AVX-512 kernels (tile GEMM, implicit-GEMM convolution, fused
//! multi-channel conv + pooling) against the generic path that CPUs without AVX-512 take
//! (matrixmultiply and im2col): the same predictions, losses and gradients, up to the order of
//! the sums. One test in its own binary: it flips a process-wide switch.
#![allow(clippy::unwrap_used)]

use mnist_data::Rng;
use nn_core::cpu::{use_own_kernels, Cpu};
use nn_core::{preset, Loss, Network, Runtime};

#[test]
fn own_kernels_match_the_generic_path() {
    for name in ["mlp-128", "mlp-sigmoid-100-144", "convnet", "fast-cnn"] {
        let spec = preset(name).unwrap();
        let n = 45;
        let mut rng = Rng::new(11);
        let x: Vec<f32> = (0..n * 784).map(|_| rng.uniform(0.0, 1.0)).collect();
        let labels: Vec<f32> = (0..n).map(|i| (i % 10) as f32).collect();
        let loss = Loss::SparseCategoricalCrossentropy { from_logits: name == "mlp-128" };
        let run = |own: bool| {
            use_own_kernels(own);
            let mut net = Network::new(Cpu, &spec, 5).unwrap();
            let mut p = vec![0f32; n * 10];
            net.predict_batch(&x, n, &mut p).unwrap();
            let (l, g) = net.loss_and_gradients(&x, &labels, n, loss, 3).unwrap();
            (p, l, g)
        };
        let (pa, la, ga) = run(true);
        let (pb, lb, gb) = run(false);
        use_own_kernels(true);
        for (p, q) in pa.iter().zip(&pb) {
            assert!((p - q).abs() < 1e-4, "{name}: prediction {p} vs {q}");
        }
        assert!((la - lb).abs() < 1e-4 * lb.abs().max(1.0), "{name}: loss {la} vs {lb}");
        for (g, h) in ga.iter().zip(&gb) {
            assert_eq!(g.name, h.name);
            let scale = h.data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
            for (p, q) in g.data.iter().zip(&h.data) {
                assert!((p - q).abs() <= 2e-4 * scale, "{name} {}: {p} vs {q}", g.name);
            }
        }
    }
}
