//! Frozen layers (Keras's `layer.trainable = False`): training leaves their weights as they
//! are, the layers above learn as they would, the summary counts them as non-trainable, and
//! the architecture's JSON says so.
#![allow(clippy::unwrap_used)]

use nn_core::cpu::Cpu;
use nn_core::{preset, Loss, ModelSpec, Network, Runtime, StepParams, UpdateRule};

/// Inputs and labels of `n` examples, deterministic.
fn batch(n: usize, width: usize) -> (Vec<f32>, Vec<f32>) {
    let x = (0..n * width).map(|i| ((i * 37) % 256) as f32 / 255.0).collect();
    let y = (0..n).map(|i| (i % 10) as f32).collect();
    (x, y)
}

fn frozen(name: &str, layers: &[&str]) -> ModelSpec {
    let mut spec = preset(name).unwrap();
    for l in layers {
        spec.set_trainable(l, false).unwrap();
    }
    spec
}

#[test]
fn frozen_weights_stay_and_the_others_learn_as_without_freezing() {
    for (name, freeze, exact) in
        [("mlp-128-128", &["dense"][..], true), ("convnet", &["conv2d", "conv2d_1"][..], false)]
    {
        let spec = frozen(name, freeze);
        let mut net = Network::new(Cpu, &spec, 7).unwrap();
        let mut free = Network::new(Cpu, &preset(name).unwrap(), 7).unwrap();
        // The same initial weights either way.
        assert_eq!(net.weights().unwrap(), free.weights().unwrap(), "{name}");
        let (x, y) = batch(16, 784);
        let loss = Loss::SparseCategoricalCrossentropy { from_logits: false };
        // Only the trainable parameters have gradients, and theirs are the unfrozen network's.
        let (l1, g1) = net.loss_and_gradients(&x, &y, 16, loss, 3).unwrap();
        let (l2, g2) = free.loss_and_gradients(&x, &y, 16, loss, 3).unwrap();
        assert!((l1 - l2).abs() < 1e-5, "{name}: loss {l1} against {l2}");
        let frozen_param = |p: &str| freeze.iter().any(|f| p.split('.').next() == Some(*f));
        assert!(g1.iter().all(|g| !frozen_param(&g.name)), "{name}: a frozen layer has a gradient");
        let unfrozen: Vec<_> = g2.iter().filter(|g| !frozen_param(&g.name)).collect();
        assert_eq!(g1.len(), unfrozen.len(), "{name}");
        for (a, b) in g1.iter().zip(unfrozen) {
            assert_eq!(a.name, b.name);
            let worst = a.data.iter().zip(&b.data).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
            assert!(if exact { worst == 0.0 } else { worst < 1e-4 }, "{name} {}: differs by {worst}", a.name);
        }
        let before = net.weights().unwrap();
        let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
        for t in 1..=3 {
            net.train_batch(&x, &y, 16, loss, &rule, StepParams { lr: 1e-2, t }, t).unwrap();
        }
        for (b, a) in before.iter().zip(&net.weights().unwrap()) {
            assert_eq!(
                frozen_param(&b.name),
                b.data == a.data,
                "{name}: {} frozen but changed, or free but not",
                b.name
            );
        }
        // No optimiser state for frozen weights.
        let slots = net.optimizer_state().unwrap();
        assert!(slots.iter().all(|s| !frozen_param(&s.name)) && !slots.is_empty(), "{name}");
    }
}

#[test]
fn the_summary_counts_frozen_weights_as_non_trainable_and_the_json_keeps_them_frozen() {
    let spec = frozen("mlp-128", &["dense"]);
    let table = nn_core::summary(&spec, "sequential").unwrap();
    assert!(table.contains("Trainable params: 1,290 "), "{table}");
    assert!(table.contains("Non-trainable params: 100,480 "), "{table}");
    let json = spec.to_json();
    assert_eq!(json.matches("\"trainable\": false").count(), 1, "{json}");
    assert_eq!(ModelSpec::from_json(&json).unwrap(), spec);
    // Files written before the flag existed (and unfrozen layers) read as trainable.
    let plain = preset("mlp-128").unwrap();
    assert!(!plain.to_json().contains("trainable"));
    assert!(ModelSpec::from_json(&plain.to_json()).unwrap().layers.iter().all(|l| l.trainable() != Some(false)));
}

#[test]
fn only_layers_with_weights_can_be_frozen_and_unknown_names_list_those_that_can() {
    let mut spec = preset("fast-cnn").unwrap();
    let err = spec.set_trainable("dense_9", false).unwrap_err().to_string();
    assert!(
        err.contains("dense_9") && err.contains("conv2d, batch_normalization, conv2d_1, batch_normalization_1, dense"),
        "{err}"
    );
    let err = spec.set_trainable("flatten", false).unwrap_err().to_string();
    assert!(err.contains("flatten (Flatten): it has no weights to be frozen"), "{err}");
    assert_eq!(spec, preset("fast-cnn").unwrap(), "a refused freeze changed the architecture");
    for layer in ["conv2d", "batch_normalization"] {
        spec.set_trainable(layer, false).unwrap();
        spec.set_trainable(layer, true).unwrap();
    }
    assert_eq!(spec, preset("fast-cnn").unwrap());
}

/// Keras's fine-tuning of a model with batch norm: a frozen batch norm runs in inference mode
/// in training too. Its moving statistics and `gamma`, `beta` stay as they are, its training
/// output is its inference output, and the layers around it learn.
#[test]
fn a_frozen_batch_norm_keeps_its_statistics_and_normalises_with_them_in_training() {
    let spec = frozen("fast-cnn", &["conv2d", "batch_normalization"]);
    let table = nn_core::summary(&spec, "sequential").unwrap();
    // conv2d's 160 and the batch norm's 64, with the other batch norm's 64 moving statistics.
    assert!(table.contains("Non-trainable params: 288 "), "{table}");
    let mut net = Network::new(Cpu, &spec, 3).unwrap();
    // Moving statistics that are not the initial zeros and ones, so that using them shows.
    let mut w = net.weights().unwrap();
    for t in &mut w {
        for (i, v) in t.data.iter_mut().enumerate() {
            if t.name.ends_with("moving_mean") {
                *v = 0.05 * (i % 7) as f32;
            } else if t.name.ends_with("moving_variance") {
                *v = 0.5 + 0.1 * (i % 5) as f32;
            }
        }
    }
    net.set_weights(&w).unwrap();
    let (x, y) = batch(16, 784);
    let loss = Loss::SparseCategoricalCrossentropy { from_logits: false };
    let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
    for t in 1..=3 {
        net.train_batch(&x, &y, 16, loss, &rule, StepParams { lr: 1e-2, t }, t).unwrap();
    }
    let after = net.weights().unwrap();
    for (b, a) in w.iter().zip(&after) {
        let fixed = b.name.starts_with("conv2d.") || b.name.starts_with("batch_normalization.");
        assert_eq!(fixed, b.data == a.data, "{} fixed {fixed} but changed, or free but not", b.name);
    }
    // Its training-mode output is its inference output: a network of the frozen layers alone
    // gives the same outputs in both modes.
    let head = ModelSpec::new(&[784])
        .add(nn_core::Reshape { target_shape: vec![1, 28, 28] })
        .add(nn_core::Conv2D::new(2, 3).trainable(false))
        .add(nn_core::BatchNorm::new().trainable(false))
        .add(nn_core::Flatten::new())
        .add(nn_core::Dense::new(10).activation(nn_core::Activation::Softmax).trainable(false));
    let mut net = Network::new(Cpu, &head, 5).unwrap();
    let mut w = net.weights().unwrap();
    for t in w.iter_mut().filter(|t| t.name.contains("moving")) {
        t.data.iter_mut().enumerate().for_each(|(i, v)| *v = 0.5 + 0.25 * i as f32);
    }
    net.set_weights(&w).unwrap();
    let mut inference = vec![0f32; 16 * 10];
    net.predict_batch(&x, 16, &mut inference).unwrap();
    let (training_loss, _) = net.loss_and_gradients(&x, &y, 16, loss, 1).unwrap();
    let expected: f64 = (0..16).map(|i| -f64::from(inference[i * 10 + (i % 10)]).ln()).sum::<f64>() / 16.0;
    assert!((training_loss - expected).abs() < 1e-5, "training {training_loss}, inference {expected}");
    assert_eq!(net.weights().unwrap(), w, "training mode moved a frozen batch norm's statistics");
}

#[test]
fn a_network_with_every_layer_frozen_trains_nothing_without_failing() {
    let spec = frozen("mlp-128", &["dense", "dense_1"]);
    let mut net = Network::new(Cpu, &spec, 1).unwrap();
    let before = net.weights().unwrap();
    let (x, y) = batch(8, 784);
    let loss = Loss::SparseCategoricalCrossentropy { from_logits: true };
    let rule = UpdateRule::Sgd { momentum: 0.0, nesterov: false };
    net.train_batch(&x, &y, 8, loss, &rule, StepParams { lr: 0.1, t: 1 }, 1).unwrap();
    assert_eq!(net.weights().unwrap(), before);
    let (sum, _) = net.take_stats().unwrap();
    assert!(sum.is_finite() && sum > 0.0, "the loss is still measured: {sum}");
}
