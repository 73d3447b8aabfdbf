//! Targets (and buffers) that do not fit the model are errors that say what is wrong, never
//! panics, and a step refused for them changes nothing.
#![allow(clippy::unwrap_used)]

use nn_core::cpu::Cpu;
use nn_core::{preset, Loss, Network, NnError, Runtime, StepParams, UpdateRule};

#[test]
fn labels_that_are_not_classes_are_refused_before_anything_changes() {
    for name in ["mlp-128", "fast-cnn"] {
        refused_before_anything_changes(name);
    }
}

fn refused_before_anything_changes(name: &str) {
    let spec = preset(name).unwrap();
    let mut net = Network::new(Cpu, &spec, 1).unwrap();
    let before = net.weights().unwrap();
    let (n, x) = (3, vec![0.5f32; 3 * 784]);
    let loss = Loss::SparseCategoricalCrossentropy { from_logits: name == "mlp-128" };
    let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
    let sp = StepParams { lr: 1e-3, t: 1 };
    for (bad, shown) in [(10.0, "10"), (-1.0, "-1"), (2.5, "2.5"), (f32::NAN, "NaN")] {
        let y = [1.0, bad, 3.0];
        let err = net.train_batch(&x, &y, n, loss, &rule, sp, 1).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, NnError::Spec(_)), "{msg}");
        assert!(msg.contains("example 1") && msg.contains(shown) && msg.contains("0 to 9"), "{msg}");
        assert!(net.eval_batch(&x, &y, n, loss).is_err());
    }
    let wrong_length = net.train_batch(&x, &[1.0, 2.0], n, loss, &rule, sp, 1).unwrap_err();
    assert!(matches!(wrong_length, NnError::Shape { .. }), "{wrong_length}");
    for (p, q) in before.iter().zip(&net.weights().unwrap()) {
        assert_eq!(p.data, q.data, "{name}: {} changed", p.name);
    }
    net.train_batch(&x, &[1.0, 9.0, 0.0], n, loss, &rule, sp, 1).unwrap();
}

#[test]
fn buffers_too_short_for_the_batch_are_errors_naming_both_shapes() {
    let mut net = Network::new(Cpu, &preset("mlp-128").unwrap(), 1).unwrap();
    let x = vec![0.5f32; 3 * 784];
    let mut out = vec![0f32; 2 * 10];
    let err = net.predict_batch(&x, 3, &mut out).unwrap_err().to_string();
    assert!(err.contains("output") && err.contains("[3, 10]") && err.contains("[20]"), "{err}");
    let err = net.predict_batch(&x[..784], 3, &mut [0f32; 30]).unwrap_err().to_string();
    assert!(err.contains("input") && err.contains("[784]"), "{err}");
    let fill = |_: std::ops::Range<usize>, _: &mut [f32]| {};
    assert!(net.predict_filled(3, &fill, &mut out).is_err());
    assert!(net.predict_batch(&x, 3, &mut [0f32; 30]).is_ok());
}

#[test]
fn an_empty_batch_or_step_zero_is_refused_and_an_empty_prediction_is_nothing() {
    // On a new network, whose buffers are not yet sized (an empty batch panicked here), and on one
    // that has trained.
    for trained in [false, true] {
        let mut net = Network::new(Cpu, &preset("mlp-128").unwrap(), 1).unwrap();
        let loss = Loss::SparseCategoricalCrossentropy { from_logits: true };
        let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
        let x = vec![0.5f32; 2 * 784];
        if trained {
            net.train_batch(&x, &[1.0, 2.0], 2, loss, &rule, StepParams { lr: 1e-3, t: 1 }, 1).unwrap();
            net.take_stats().unwrap();
        }
        let before = net.weights().unwrap();
        let err = net.train_batch(&[], &[], 0, loss, &rule, StepParams { lr: 1e-3, t: 2 }, 2).unwrap_err();
        assert!(err.to_string().contains("0 examples"), "{err}");
        // Adam's bias correction at step 0 would divide by zero: every weight NaN.
        let err = net.train_batch(&x, &[1.0, 2.0], 2, loss, &rule, StepParams { lr: 1e-3, t: 0 }, 2).unwrap_err();
        assert!(err.to_string().contains("steps count from 1"), "{err}");
        assert_eq!(net.weights().unwrap(), before);
        net.eval_batch(&[], &[], 0, loss).unwrap();
        assert_eq!(net.take_stats().unwrap(), (0.0, 0.0));
        net.predict_batch(&[], 0, &mut []).unwrap();
        net.predict_filled(0, &|_, _| {}, &mut []).unwrap();
    }
}
