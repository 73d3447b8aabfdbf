//! A training set kept on the device (`Runtime::keep_training_set`) and trained on by row
//! numbers (`Runtime::train_rows`) gives the same weights, bit for bit, as the same batches
//! passed as slices; and row numbers or targets that do not fit are refused before anything
//! runs. (On the CPU the trainer gathers in place instead; this checks the path a GPU takes,
//! whose kernel `nn-cuda/tests/parity.rs` compares with the CPU's gather.)
#![allow(clippy::unwrap_used)]

use mnist_data::Rng;
use nn_core::cpu::Cpu;
use nn_core::{preset, Loss, Network, NnError, Runtime, StepParams, UpdateRule};

#[test]
fn rows_of_a_kept_set_train_like_the_same_batches_as_slices() {
    let rows = 100;
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..rows * 784).map(|_| rng.uniform(0.0, 1.0)).collect();
    let labels: Vec<f32> = (0..rows).map(|i| ((i * 7) % 10) as f32).collect();
    let one_hot: Vec<f32> = (0..rows * 10).map(|i| if i % 10 == (i / 10 * 7) % 10 { 1.0 } else { 0.0 }).collect();
    let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
    let batches: [&[u32]; 3] = [&[3, 99, 0, 41, 41, 7, 12, 55], &[1, 2, 3, 4, 5, 6, 7, 8], &[98, 97, 10]];
    for (name, loss, targets, width) in [
        ("mlp-128", Loss::SparseCategoricalCrossentropy { from_logits: true }, &labels, 1),
        ("convnet", Loss::CategoricalCrossentropy { from_logits: false }, &one_hot, 10),
    ] {
        let spec = preset(name).unwrap();
        let (mut a, mut b) = (Network::new(Cpu, &spec, 9).unwrap(), Network::new(Cpu, &spec, 9).unwrap());
        assert!(b.keep_training_set(&x, targets, rows, loss).unwrap());
        for (t, picked) in batches.iter().enumerate() {
            let sp = StepParams { lr: 1e-3, t: t as u64 + 1 };
            let xs: Vec<f32> = picked.iter().flat_map(|&r| x[r as usize * 784..][..784].iter().copied()).collect();
            let ys: Vec<f32> =
                picked.iter().flat_map(|&r| targets[r as usize * width..][..width].iter().copied()).collect();
            a.train_batch(&xs, &ys, picked.len(), loss, &rule, sp, t as u64).unwrap();
            b.train_rows(picked, loss, &rule, sp, t as u64).unwrap();
        }
        assert_eq!(a.take_stats().unwrap(), b.take_stats().unwrap(), "{name}");
        for (p, q) in a.weights().unwrap().iter().zip(&b.weights().unwrap()) {
            assert!(p.data.iter().zip(&q.data).all(|(u, v)| u.to_bits() == v.to_bits()), "{name} {}", p.name);
        }
    }
}

#[test]
fn bad_rows_and_sets_are_refused_before_anything_runs() {
    let spec = preset("mlp-128").unwrap();
    let mut net = Network::new(Cpu, &spec, 1).unwrap();
    let sparse = Loss::SparseCategoricalCrossentropy { from_logits: true };
    let rule = UpdateRule::Sgd { momentum: 0.0, nesterov: false };
    let sp = StepParams { lr: 0.1, t: 1 };
    let before = net.weights().unwrap();
    let refused = |r: nn_core::Result<()>, says: &str| match r {
        Err(NnError::Spec(m)) => assert!(m.contains(says), "{m}"),
        other => panic!("expected a refusal saying {says:?}, got {other:?}"),
    };
    refused(net.train_rows(&[0], sparse, &rule, sp, 0), "no training set is kept");
    let x = vec![0.5f32; 4 * 784];
    // Images that are not whole inputs; a label that is not a class.
    assert!(matches!(net.keep_training_set(&x[..784 * 3 + 1], &[0.0; 3], 3, sparse), Err(NnError::Shape { .. })));
    assert!(matches!(net.keep_training_set(&x, &[0.0, 1.0, 10.0, 2.0], 4, sparse), Err(NnError::Spec(_))));
    assert!(net.keep_training_set(&x, &[0.0, 1.0, 9.0, 2.0], 4, sparse).unwrap());
    refused(net.train_rows(&[0, 4], sparse, &rule, sp, 0), "row 4 of a kept training set of 4 rows");
    refused(net.train_rows(&[0], Loss::CategoricalCrossentropy { from_logits: true }, &rule, sp, 0), "labels");
    let after = net.weights().unwrap();
    assert!(before.iter().zip(&after).all(|(p, q)| p.data == q.data), "a refused step changed the weights");
    net.drop_training_set();
    refused(net.train_rows(&[0], sparse, &rule, sp, 0), "no training set is kept");
}
