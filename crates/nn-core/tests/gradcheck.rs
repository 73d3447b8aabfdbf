//! Finite-difference gradient checks of every layer and loss, through whole small networks on
//! the CPU device: each parameter's analytic gradient must match the central difference of the
//! training-mode loss.
#![allow(clippy::unwrap_used)]

use mnist_data::Rng;
use nn_core::cpu::Cpu;
use nn_core::{
    Activation::*, BatchNorm, Conv2D, Dense, Dropout, Flatten, LayerSpec, Loss, ModelSpec, Network, Padding, Pool2D,
    Regularizer, Reshape, Runtime,
};

fn check(spec: ModelSpec, loss: Loss, n: usize, seed: u64) {
    let mut net = Network::new(Cpu, &spec, seed).unwrap();
    let inputs: usize = spec.input_shape.iter().product();
    let classes: usize = spec.output_shape().unwrap().iter().product();
    let mut rng = Rng::new(seed + 1);
    let x: Vec<f32> = (0..n * inputs).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let labels: Vec<usize> = (0..n).map(|_| rng.below(classes)).collect();
    let targets: Vec<f32> = if loss.sparse() {
        labels.iter().map(|&l| l as f32).collect()
    } else {
        let mut t = vec![0f32; n * classes];
        for (i, &l) in labels.iter().enumerate() {
            t[i * classes + l] = 1.0;
        }
        t
    };
    // Biases start at zero; give every parameter a random value so that no ReLU sits at its kink
    // by construction and every term of the gradient is exercised. Moving statistics too (a
    // frozen batch norm divides by them), the variances kept positive.
    let mut w = net.weights().unwrap();
    for t in &mut w {
        let (lo, hi) = if t.name.ends_with("moving_variance") { (0.3, 2.0) } else { (-0.1, 0.1) };
        for v in &mut t.data {
            *v += rng.uniform(lo, hi);
        }
    }
    net.set_weights(&w).unwrap();
    let step_seed = 99;
    let (_, grads) = net.loss_and_gradients(&x, &targets, n, loss, step_seed).unwrap();
    let eps = 2e-3f32;
    let mut checked = 0;
    for g in &grads {
        let idx = w.iter().position(|t| t.name == g.name).unwrap();
        // Check a spread of entries of each tensor.
        let count = g.data.len().min(12);
        for k in 0..count {
            let j = (k * 7919) % g.data.len();
            let orig = w[idx].data[j];
            w[idx].data[j] = orig + eps;
            net.set_weights(&w).unwrap();
            let (lp, _) = net.loss_and_gradients(&x, &targets, n, loss, step_seed).unwrap();
            w[idx].data[j] = orig - eps;
            net.set_weights(&w).unwrap();
            let (lm, _) = net.loss_and_gradients(&x, &targets, n, loss, step_seed).unwrap();
            w[idx].data[j] = orig;
            net.set_weights(&w).unwrap();
            let (l0, _) = net.loss_and_gradients(&x, &targets, n, loss, step_seed).unwrap();
            let numeric = (lp - lm) / (2.0 * eps as f64);
            let analytic = g.data[j] as f64;
            let err = (numeric - analytic).abs() / (numeric.abs() + analytic.abs()).max(1e-2);
            // A ReLU or max-pool kink inside [w-eps, w+eps] makes the one-sided slopes differ:
            // the function is not differentiable there, so that entry says nothing.
            let (right, left) = ((lp - l0) / eps as f64, (l0 - lm) / eps as f64);
            let kink = (right - left).abs() > 0.05 * (right.abs() + left.abs()).max(1e-2);
            if kink {
                continue;
            }
            assert!(err < 2e-2, "{}[{j}]: analytic {analytic:.6} vs numeric {numeric:.6} ({spec:?})", g.name);
            checked += 1;
        }
        net.set_weights(&w).unwrap();
    }
    assert!(!grads.is_empty());
    assert!(checked >= grads.len() * 4, "only {checked} entries were away from kinks");
}

fn mlp(hidden: nn_core::Activation, head: nn_core::Activation) -> ModelSpec {
    ModelSpec::new(&[3, 4])
        .add(Flatten::new())
        .add(Dense::new(6).activation(hidden))
        .add(Dense::new(5).activation(head))
}

#[test]
fn dense_with_every_activation_and_every_loss() {
    for act in [Relu, Sigmoid, Tanh, Linear] {
        check(mlp(act, Softmax), Loss::CategoricalCrossentropy { from_logits: false }, 4, 1);
        check(mlp(act, Softmax), Loss::SparseCategoricalCrossentropy { from_logits: false }, 4, 2);
        check(mlp(act, Linear), Loss::SparseCategoricalCrossentropy { from_logits: true }, 4, 3);
        check(mlp(act, Linear), Loss::CategoricalCrossentropy { from_logits: true }, 4, 4);
    }
}

#[test]
fn cross_entropy_on_probabilities_of_a_non_softmax_head() {
    // Sigmoid outputs read as (unnormalised) probabilities: Keras normalises them by their sum.
    check(mlp(Tanh, Sigmoid), Loss::CategoricalCrossentropy { from_logits: false }, 4, 5);
    check(mlp(Relu, Sigmoid), Loss::SparseCategoricalCrossentropy { from_logits: false }, 4, 6);
}

#[test]
fn softmax_in_a_hidden_layer_uses_its_jacobian() {
    let spec = ModelSpec::new(&[4]).add(Dense::new(6).activation(Softmax)).add(Dense::new(3));
    check(spec, Loss::SparseCategoricalCrossentropy { from_logits: true }, 3, 7);
}

#[test]
fn dense_without_bias_and_with_l1_l2() {
    let spec = ModelSpec::new(&[5])
        .add(Dense::new(4).activation(Tanh).use_bias(false).l2(0.01).l1(0.003))
        .add(Dense::new(3).activation(Softmax).l2(0.02));
    check(spec, Loss::SparseCategoricalCrossentropy { from_logits: false }, 3, 8);
}

#[test]
fn dropout_with_a_fixed_mask() {
    let spec = ModelSpec::new(&[6])
        .add(Dense::new(8).activation(Relu))
        .add(Dropout::new(0.4))
        .add(Dense::new(3).activation(Softmax));
    check(spec, Loss::SparseCategoricalCrossentropy { from_logits: false }, 5, 9);
}

fn image(c: usize, h: usize, w: usize) -> ModelSpec {
    ModelSpec::new(&[c * h * w]).add(Reshape { target_shape: vec![c, h, w] })
}

#[test]
fn conv2d_valid_same_strides_and_odd_sizes() {
    for (k, s, pad) in [
        (3, 1, Padding::Valid),
        (3, 2, Padding::Same),
        (2, 2, Padding::Valid),
        (3, 1, Padding::Same),
        (5, 3, Padding::Same),
    ] {
        let spec = image(2, 7, 5)
            .add(Conv2D::new(3, 1).activation(Tanh)) // gives the next conv a dx to check
            .add(
                Conv2D { kernel_size: [k, k.min(4)], strides: [s, s], padding: pad, ..Conv2D::new(4, k) }
                    .activation(Sigmoid),
            )
            .add(Flatten::new())
            .add(Dense::new(3).activation(Softmax));
        check(spec, Loss::SparseCategoricalCrossentropy { from_logits: false }, 2, 10 + k as u64);
    }
}

#[test]
fn max_and_average_pooling_including_padding_and_odd_sizes() {
    for (size, stride, pad) in
        [(2, 2, Padding::Valid), (3, 2, Padding::Same), (2, 1, Padding::Valid), (3, 3, Padding::Same)]
    {
        for max in [true, false] {
            let pool = Pool2D { pool_size: [size, size], strides: Some([stride, stride]), padding: pad };
            let spec = image(2, 7, 5)
                .add(Conv2D::new(3, 2).activation(Tanh))
                .add(if max { LayerSpec::MaxPooling2D(pool) } else { LayerSpec::AveragePooling2D(pool) })
                .add(Flatten::new())
                .add(Dense::new(3));
            check(spec, Loss::SparseCategoricalCrossentropy { from_logits: true }, 2, 20 + size as u64);
        }
    }
}

#[test]
fn a_2x2_max_pool_with_same_padding_of_odd_sides_fused_or_not() {
    // 9×8 → 7×6 after the conv: "same" pooling gives 4×3, its last row of windows half outside
    // (the fast 2×2 path once read past the plane). First conv: fused with the pool on the CPU.
    let same = Pool2D { pool_size: [2, 2], strides: None, padding: Padding::Same };
    for channels in [1, 2] {
        let spec = image(channels, 9, 8)
            .add(Conv2D::new(3, 3).activation(Tanh))
            .add(LayerSpec::MaxPooling2D(same.clone()))
            .add(Flatten::new())
            .add(Dense::new(3));
        check(spec, Loss::SparseCategoricalCrossentropy { from_logits: true }, 2, 70 + channels as u64);
    }
}

#[test]
fn global_average_pooling() {
    let spec = image(1, 5, 6)
        .add(Conv2D::new(4, 3).activation(Relu))
        .add(LayerSpec::GlobalAveragePooling2D {})
        .add(Dense::new(3));
    check(spec, Loss::SparseCategoricalCrossentropy { from_logits: true }, 3, 30);
}

#[test]
fn batch_normalization_after_conv_and_after_dense() {
    let spec = image(2, 5, 5)
        .add(Conv2D::new(3, 3).use_bias(false))
        .add(BatchNorm::default())
        .add(Flatten::new())
        .add(Dense::new(4).activation(Tanh))
        .add(BatchNorm::default())
        .add(Dense::new(3).activation(Softmax));
    check(spec, Loss::CategoricalCrossentropy { from_logits: false }, 6, 31);
}

/// A frozen batch norm (Keras's `trainable = False`) runs in inference mode in training too:
/// its backward pass scales the gradient by `γ/√(moving_variance + ε)`, which the layers below
/// see in their own gradients.
#[test]
fn frozen_batch_normalization_after_conv_and_after_dense() {
    let spec = image(2, 5, 5)
        .add(Conv2D::new(3, 3).activation(Tanh))
        .add(BatchNorm::default().trainable(false))
        .add(Flatten::new())
        .add(Dense::new(4).activation(Tanh))
        .add(BatchNorm::default().trainable(false))
        .add(Dense::new(3).activation(Softmax));
    check(spec, Loss::CategoricalCrossentropy { from_logits: false }, 6, 35);
}

#[test]
fn conv_kernel_penalties_and_a_reshape_between_images() {
    let reg = Some(Regularizer { l1: 1e-2, l2: 5e-2 });
    // A penalised conv on the im2col path (strided), one fused with its max pooling (one input
    // channel), one on many channels (the implicit GEMM on AVX-512), and a reshape from one
    // image shape to another between them.
    let spec = image(1, 10, 10)
        .add(Conv2D { kernel_regularizer: reg, ..Conv2D::new(4, 3) }.activation(Tanh))
        .add(LayerSpec::MaxPooling2D(Pool2D::new(2)))
        .add(Reshape { target_shape: vec![8, 2, 4] })
        .add(Conv2D { kernel_regularizer: reg, ..Conv2D::new(5, 2) }.activation(Tanh))
        .add(Conv2D { kernel_regularizer: reg, ..Conv2D::new(3, 1).strides(2) }.activation(Tanh))
        .add(Flatten::new())
        .add(Dense::new(3).activation(Softmax));
    check(spec, Loss::SparseCategoricalCrossentropy { from_logits: false }, 4, 34);
}

#[test]
fn batch_normalization_of_a_rank_two_example() {
    // Channels are the example's first axis ([4, 5]: 4 channels of 5 values each).
    let spec =
        ModelSpec::new(&[4, 5]).add(BatchNorm::default()).add(Flatten::new()).add(Dense::new(3).activation(Softmax));
    check(spec, Loss::CategoricalCrossentropy { from_logits: false }, 5, 33);
}

#[test]
fn fused_first_conv_and_max_pooling() {
    // A conv on the single-channel input followed by max pooling runs as one fused layer on the
    // CPU; 20 filters span a full and a partial block of 16. (tests/fusion.rs compares it with
    // the two layers run one by one.)
    for (k, s, pad, p, act) in [
        (3, 1, Padding::Valid, 2, Relu),
        (3, 1, Padding::Same, 2, Tanh),
        (3, 2, Padding::Same, 2, Relu),
        (2, 1, Padding::Valid, 3, Sigmoid),
    ] {
        let spec = image(1, 9, 8)
            .add(Conv2D { kernel_size: [k, k], strides: [s, s], padding: pad, ..Conv2D::new(20, k) }.activation(act))
            .add(LayerSpec::MaxPooling2D(Pool2D::new(p)))
            .add(Flatten::new())
            .add(Dense::new(3).activation(Softmax));
        check(spec, Loss::SparseCategoricalCrossentropy { from_logits: false }, 3, 60 + k as u64 + p as u64);
    }
}

#[test]
fn winograd_conv_and_max_pooling() {
    // A 3×3 conv with 16 channels and 16 filters under a 2×2 pooling runs by Winograd's
    // transform on a CPU with AVX-512 (forward, input and weight gradients); 7×7 outputs leave
    // a row and a column out of the pooling. The conv before it checks the input gradient.
    for (act, seed) in [(Relu, 91), (Tanh, 92)] {
        let spec = image(2, 8, 8)
            .add(Conv2D::new(16, 2).activation(Tanh))
            .add(Conv2D::new(16, 3).activation(act))
            .add(LayerSpec::MaxPooling2D(Pool2D::new(2)))
            .add(Flatten::new())
            .add(Dense::new(3).activation(Softmax));
        check(spec, Loss::SparseCategoricalCrossentropy { from_logits: false }, 3, seed);
    }
}

#[test]
fn fused_conv_and_max_pooling_inside_a_network() {
    // A conv on many channels followed by max pooling also runs fused on the CPU (with
    // AVX-512), and passes its input gradient on; 7×7 outputs leave a row and a column out of
    // the 2×2 pooling, 6×6 ones none with 3×3.
    for (k, pad, p, act, filters) in
        [(3, Padding::Valid, 2, Relu, 6), (3, Padding::Same, 2, Tanh, 17), (2, Padding::Valid, 3, Linear, 4)]
    {
        let spec = image(3, 8, 8)
            .add(Conv2D::new(5, 2).activation(Relu))
            .add(Conv2D { padding: pad, ..Conv2D::new(filters, k) }.activation(act))
            .add(LayerSpec::MaxPooling2D(Pool2D::new(p)))
            .add(Flatten::new())
            .add(Dense::new(3).activation(Softmax));
        check(spec, Loss::SparseCategoricalCrossentropy { from_logits: false }, 3, 81 + k as u64 + p as u64);
    }
}
