//! A training step updates each layer's parameters as soon as that layer's backward pass is
//! done; the result must be, bit for bit, that of computing every gradient first and updating
//! afterwards (each layer's input gradient is computed before its weights change).
#![allow(clippy::unwrap_used)]

use mnist_data::Rng;
use nn_core::cpu::Cpu;
use nn_core::optim::update_host;
use nn_core::{preset, Loss, Network, Runtime, StepParams, UpdateRule};

#[test]
fn updating_during_the_backward_pass_equals_updating_after_it() {
    for name in ["mlp-sigmoid-100-144", "mlp-512-512", "convnet"] {
        let spec = preset(name).unwrap();
        let mut stepped = Network::new(Cpu, &spec, 5).unwrap();
        let mut reference = Network::new(Cpu, &spec, 5).unwrap();
        let n = 19;
        let mut rng = Rng::new(4);
        let x: Vec<f32> = (0..n * 784).map(|_| rng.uniform(0.0, 1.0)).collect();
        let y: Vec<f32> = (0..n).map(|i| ((i * 3) % 10) as f32).collect();
        let loss = Loss::SparseCategoricalCrossentropy { from_logits: false };
        let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
        // Adam's two slots for every trainable parameter of the reference, kept here.
        let mut slots: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
        for t in 1..=3u64 {
            let sp = StepParams { lr: 1e-2, t };
            stepped.train_batch(&x, &y, n, loss, &rule, sp, t).unwrap();
            let (_, grads) = reference.loss_and_gradients(&x, &y, n, loss, t).unwrap();
            if slots.is_empty() {
                slots = grads.iter().map(|g| (vec![0.0; g.data.len()], vec![0.0; g.data.len()])).collect();
            }
            let mut weights = reference.weights().unwrap();
            for (g, (m, v)) in grads.iter().zip(&mut slots) {
                let w = weights.iter_mut().find(|w| w.name == g.name).unwrap();
                update_host(&rule, sp, &mut w.data, &g.data, &mut [&mut m[..], &mut v[..]]);
            }
            reference.set_weights(&weights).unwrap();
        }
        for (p, q) in stepped.weights().unwrap().iter().zip(&reference.weights().unwrap()) {
            assert_eq!(p.name, q.name);
            assert!(p.data.iter().zip(&q.data).all(|(u, v)| u.to_bits() == v.to_bits()), "{name} {}", p.name);
        }
    }
}
