//! A first dense layer reading mostly-zero pixels multiplies by their nonzeros alone
//! (`cpu::use_sparse_inputs`): training with it must give the weights of training without
//! it, bit for bit where the dense products run in the own AVX-512 tile GEMM (up to 256
//! units), and up to the order of the sums beside matrixmultiply's (512 units, or any layer on
//! a CPU with AVX2 only). One test in its own binary:
//! it flips a process-wide switch.
#![allow(clippy::unwrap_used)]

use mnist_data::Rng;
use nn_core::cpu::{sparse_parts, use_sparse_inputs, Cpu};
use nn_core::{preset, Loss, Network, Runtime, StepParams, UpdateRule};

/// `count` digit-like images of 784 pixels in [0, 1]: six thick strokes on a zero
/// background, about a fifth of the pixels lit (as in MNIST).
fn digits(count: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x = vec![0f32; count * 784];
    for img in x.chunks_exact_mut(784) {
        for _ in 0..6 {
            let (mut r, mut c) = (rng.uniform(6.0, 22.0), rng.uniform(6.0, 22.0));
            let (dr, dc) = (rng.uniform(-0.75, 0.75), rng.uniform(-0.75, 0.75));
            for _ in 0..14 {
                for (or, oc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let (pr, pc) = (r as usize + or, c as usize + oc);
                    if pr < 28 && pc < 28 {
                        img[pr * 28 + pc] = rng.uniform(0.1, 1.0);
                    }
                }
                r = (r + dr).clamp(0.0, 27.0);
                c = (c + dc).clamp(0.0, 27.0);
            }
        }
    }
    x
}

#[test]
fn skipping_zero_pixels_changes_no_weight() {
    let mut rng = Rng::new(3);
    for (name, n, exact) in [
        ("mlp-128", 128, true),
        ("mlp-sigmoid-100-144", 32, true),
        ("mlp-128-128", 100, true),
        ("mlp-512-512", 128, false),
    ] {
        let spec = preset(name).unwrap();
        let x = digits(n, &mut rng);
        let lit = x.iter().filter(|&&v| v != 0.0).count() as f64 / x.len() as f64;
        assert!((0.08..0.35).contains(&lit), "{lit} of the test pixels lit");
        let y: Vec<f32> = (0..n).map(|i| ((i * 7) % 10) as f32).collect();
        let loss = Loss::SparseCategoricalCrossentropy { from_logits: name == "mlp-128" };
        let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
        let run = |sparse: bool| {
            use_sparse_inputs(sparse);
            let before = sparse_parts();
            let mut net = Network::new(Cpu, &spec, 5).unwrap();
            for t in 1..=3u64 {
                net.train_batch(&x, &y, n, loss, &rule, StepParams { lr: 1e-2, t }, t).unwrap();
            }
            let mut p = vec![0f32; n * 10];
            net.predict_batch(&x, n, &mut p).unwrap();
            (net.weights().unwrap(), p, sparse_parts() - before)
        };
        let (wd, pd, parts_dense) = run(false);
        let (ws, ps, parts_sparse) = run(true);
        assert_eq!(parts_dense, 0, "{name}: sparse products while turned off");
        if !has_avx2() {
            continue;
        }
        assert!(parts_sparse > 0, "{name}: the first layer never took the sparse products");
        // Without AVX-512 the dense products are matrixmultiply's, summed in another order.
        let exact = exact && has_avx512();
        for (a, b) in ws.iter().zip(&wd) {
            assert_eq!(a.name, b.name);
            for (p, q) in a.data.iter().zip(&b.data) {
                if exact {
                    assert_eq!(p.to_bits(), q.to_bits(), "{name} {}: {p} vs {q}", a.name);
                } else {
                    assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{name} {}: {p} vs {q}", a.name);
                }
            }
        }
        for (p, q) in ps.iter().zip(&pd) {
            assert!(
                if exact { p.to_bits() == q.to_bits() } else { (p - q).abs() < 1e-4 },
                "{name}: prediction {p} vs {q}"
            );
        }
    }
    use_sparse_inputs(true);
}

/// Whether the sparse products run the AVX-512 tiles, which the dense products share.
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the sparse products at all (AVX-512, or AVX2 with FMA).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
