//! Inputs written in place by a fill callback (in parallel row ranges) give the same results,
//! bit for bit, as inputs passed as a slice and copied in.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use mnist_data::Rng;
use nn_core::cpu::Cpu;
use nn_core::{preset, FilledBatch, Loss, Network, Runtime, StepParams, UpdateRule};

#[test]
fn filled_inputs_train_evaluate_and_predict_like_slices() {
    for name in ["mlp-128", "fast-cnn"] {
        let spec = preset(name).unwrap();
        let mut a = Network::new(Cpu, &spec, 7).unwrap();
        let mut b = Network::new(Cpu, &spec, 7).unwrap();
        assert!(b.host_inputs());
        let n = 37;
        let mut rng = Rng::new(1);
        let x: Vec<f32> = (0..n * 784).map(|_| rng.uniform(0.0, 1.0)).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 10) as f32).collect();
        let fill = |rows: std::ops::Range<usize>, dst: &mut [f32]| {
            dst.copy_from_slice(&x[rows.start * 784..rows.end * 784]);
        };
        let loss = Loss::SparseCategoricalCrossentropy { from_logits: name == "mlp-128" };
        let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
        for t in 1..=3 {
            let sp = StepParams { lr: 1e-3, t };
            a.train_batch(&x, &y, n, loss, &rule, sp, t).unwrap();
            b.train_filled(FilledBatch { n, fill: &fill, key: t }, None, &y, loss, &rule, sp, t).unwrap();
        }
        a.eval_batch(&x, &y, n, loss).unwrap();
        b.eval_filled(n, &fill, &y, loss).unwrap();
        assert_eq!(a.take_stats().unwrap(), b.take_stats().unwrap(), "{name}");
        for (p, q) in a.weights().unwrap().iter().zip(&b.weights().unwrap()) {
            assert!(p.data.iter().zip(&q.data).all(|(u, v)| u.to_bits() == v.to_bits()), "{name} {}", p.name);
        }
        let (mut pa, mut pb) = (vec![0f32; n * 10], vec![0f32; n * 10]);
        a.predict_batch(&x, n, &mut pa).unwrap();
        b.predict_filled(n, &fill, &mut pb).unwrap();
        assert_eq!(pa, pb, "{name}");
    }
}

/// Training on a sequence of batches, each announced to the step before it (which may gather
/// it ahead), gives the same weights as training on slices; a batch whose key does not match
/// the one announced is gathered by its own fill.
#[test]
fn batches_gathered_ahead_train_like_slices() {
    for name in ["mlp-128", "mlp-sigmoid-100-144", "mlp-512-512", "fast-cnn"] {
        let spec = preset(name).unwrap();
        let mut a = Network::new(Cpu, &spec, 3).unwrap();
        let mut b = Network::new(Cpu, &spec, 3).unwrap();
        let sizes = [37, 37, 37, 20, 37];
        let mut rng = Rng::new(2);
        let xs: Vec<Vec<f32>> = sizes.iter().map(|&n| (0..n * 784).map(|_| rng.uniform(0.0, 1.0)).collect()).collect();
        let ys: Vec<Vec<f32>> = sizes.iter().map(|&n| (0..n).map(|i| ((i * 7 + n) % 10) as f32).collect()).collect();
        let rows: Vec<AtomicUsize> = sizes.iter().map(|_| AtomicUsize::new(0)).collect();
        let fills: Vec<_> = (0..sizes.len())
            .map(|t| {
                let (x, rows) = (&xs[t], &rows[t]);
                move |r: std::ops::Range<usize>, dst: &mut [f32]| {
                    rows.fetch_add(r.len(), Ordering::Relaxed);
                    dst.copy_from_slice(&x[r.start * 784..r.end * 784]);
                }
            })
            .collect();
        // Batch 2 is announced under key 102 and then trained under key 99.
        let key = |t: usize, announced: bool| if t == 2 && !announced { 99 } else { 100 + t as u64 };
        let loss = Loss::SparseCategoricalCrossentropy { from_logits: name == "mlp-128" };
        let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
        for t in 0..sizes.len() {
            let sp = StepParams { lr: 1e-3, t: t as u64 + 1 };
            a.train_batch(&xs[t], &ys[t], sizes[t], loss, &rule, sp, t as u64).unwrap();
            let batch = FilledBatch { n: sizes[t], fill: &fills[t], key: key(t, false) };
            let next = (t + 1 < sizes.len()).then(|| FilledBatch {
                n: sizes[t + 1],
                fill: &fills[t + 1],
                key: key(t + 1, true),
            });
            b.train_filled(batch, next, &ys[t], loss, &rule, sp, t as u64).unwrap();
        }
        assert_eq!(a.take_stats().unwrap(), b.take_stats().unwrap(), "{name}");
        for (p, q) in a.weights().unwrap().iter().zip(&b.weights().unwrap()) {
            assert!(p.data.iter().zip(&q.data).all(|(u, v)| u.to_bits() == v.to_bits()), "{name} {}", p.name);
        }
        // The small-tailed MLPs on several threads gather each batch once, ahead (batch 2
        // twice: its key changed); the others gather each batch in its own step.
        let written: Vec<usize> = rows.iter().map(|r| r.load(Ordering::Relaxed)).collect();
        let ahead = rayon::current_num_threads() > 1 && name.starts_with("mlp-") && name != "mlp-512-512";
        let expected: Vec<usize> =
            sizes.iter().enumerate().map(|(t, &n)| if ahead && t == 2 { 2 * n } else { n }).collect();
        assert_eq!(written, expected, "{name}");
    }
}
