//! Inputs written in place by a fill callback (in parallel row ranges) give the same results,
//! bit for bit, as inputs passed as a slice and copied in.
#![allow(clippy::unwrap_used)]

use mnist_data::Rng;
use nn_core::cpu::Cpu;
use nn_core::{preset, Loss, Network, Runtime, StepParams, UpdateRule};

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
            b.train_filled(n, &fill, &y, loss, &rule, sp, t).unwrap();
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
