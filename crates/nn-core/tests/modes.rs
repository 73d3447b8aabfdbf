//! What differs between training and inference: dropout drops and rescales only while
//! training; batch normalisation normalises by the batch's statistics while training, moving its
//! averages as Keras does, and by those averages afterwards.
#![allow(clippy::unwrap_used)]

use nn_core::cpu::Cpu;
use nn_core::{BatchNorm, Device, Dropout, Loss, Model, ModelSpec, Network, Runtime, StepParams, UpdateRule};

#[test]
fn dropout_is_the_identity_in_inference_and_drops_its_rate_in_training() {
    let mut m = Model::new(&ModelSpec::new(&[500]).add(Dropout::new(0.3)), 1).unwrap();
    let x: Vec<f32> = (0..1000).map(|i| i as f32 * 0.01 - 3.0).collect();
    assert_eq!(m.predict(&x, 2).unwrap().as_slice().unwrap(), &x[..]);
    // In training (the device's pass): a fraction `rate` zeroed, the rest scaled by 1/(1-rate).
    let (dev, n) = (Cpu, 100_000);
    let big: nn_core::cpu::HostBuf = (0..n).map(|i| 1.0 + (i % 7) as f32).collect::<Vec<_>>()[..].into();
    let draw = |seed| {
        let (mut y, mut mask) = (dev.alloc(n).unwrap(), dev.alloc(n).unwrap());
        dev.dropout(&big, &mut y, &mut mask, 0.3, seed, n).unwrap();
        (y, mask)
    };
    let (y, mask) = draw(7);
    let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    assert!((dropped - 0.3).abs() < 0.01, "dropped {dropped}");
    let keep = 1.0 / (1.0 - 0.3f32);
    for ((&y, &m), &x) in y.iter().zip(&mask).zip(&big) {
        assert!(m == 0.0 && y == 0.0 || m == keep && y == x * keep, "{x} → {y} (mask {m})");
    }
    assert_eq!(draw(7).1, mask, "the same seed draws the same mask");
    assert_ne!(draw(8).1, mask, "another seed draws another mask");
}

#[test]
fn batch_norm_moves_its_averages_as_keras_and_predicts_with_them() {
    let spec = ModelSpec::new(&[3]).add(BatchNorm::default());
    let mut net = Network::new(Cpu, &spec, 1).unwrap();
    let x = [1.0f32, -2.0, 0.5, 3.0, 0.0, 0.5, 5.0, 2.0, 0.5, -1.0, 4.0, 0.5];
    let targets = [0.0f32, 1.0, 2.0, 0.0];
    // A learning rate of 0: only the moving averages change.
    let sgd = UpdateRule::Sgd { momentum: 0.0, nesterov: false };
    let loss = Loss::SparseCategoricalCrossentropy { from_logits: true };
    net.train_batch(&x, &targets, 4, loss, &sgd, StepParams { lr: 0.0, t: 1 }, 1).unwrap();
    let w = net.weights().unwrap();
    let get = |name: &str| w.iter().find(|t| t.name.ends_with(name)).unwrap().data.clone();
    let (mm, mv) = (get("moving_mean"), get("moving_variance"));
    for c in 0..3 {
        let col: Vec<f64> = (0..4).map(|r| x[r * 3 + c] as f64).collect();
        let mean = col.iter().sum::<f64>() / 4.0;
        // Keras: the batch's (biased) variance; momentum 0.99 from mean 0, variance 1.
        let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 4.0;
        assert!((mm[c] as f64 - 0.01 * mean).abs() < 1e-6, "moving mean {c}: {} vs {}", mm[c], 0.01 * mean);
        assert!((mv[c] as f64 - (0.99 + 0.01 * var)).abs() < 1e-6, "moving variance {c}: {}", mv[c]);
    }
    let mut y = vec![0f32; 12];
    net.predict_batch(&x, 4, &mut y).unwrap();
    for (i, (&y, &x)) in y.iter().zip(&x).enumerate() {
        let c = i % 3;
        let want = (x as f64 - mm[c] as f64) / (mv[c] as f64 + 1e-3).sqrt();
        assert!((y as f64 - want).abs() < 1e-5, "value {i}: {y} vs {want}");
    }
}
