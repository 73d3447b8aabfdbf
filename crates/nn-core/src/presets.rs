//! Named architectures of the Keras MNIST tutorials (input `[28, 28]`, 10 classes).

use crate::activation::Activation::*;
use crate::spec::{BatchNorm, Conv2D, Dense, Dropout, Flatten, LayerSpec, ModelSpec, Pool2D, Reshape};

/// The names [`preset`] knows, with a line each.
pub const PRESETS: [(&str, &str); 6] = [
    ("mlp-128", "Flatten → Dense(128, relu) → Dense(10) logits (the TFDS Keras MNIST example)"),
    ("mlp-sigmoid-100-144", "Flatten → Dense(100, sigmoid) → Dense(144, sigmoid) → Dense(10, softmax)"),
    ("mlp-128-128", "Flatten → Dense(128, relu) → Dense(128, relu) → Dense(10, softmax)"),
    ("mlp-512-512", "Flatten → Dense(512, relu) → Dense(512, relu) → Dense(10, softmax)"),
    ("convnet", "Keras's simple MNIST convnet: Conv(32,3) → MaxPool → Conv(64,3) → MaxPool → Flatten → Dropout(0.5) → Dense(10, softmax)"),
    (
        "fast-cnn",
        "Conv(16,3,relu) → MaxPool → BN → Conv(32,3,relu) → MaxPool → BN → Flatten → Dense(10, softmax): 99% in 3 one-cycle epochs",
    ),
];

/// The architecture of a preset name, or `None`.
pub fn preset(name: &str) -> Option<ModelSpec> {
    let mlp = |widths: &[usize], act, head| {
        let mut s = ModelSpec::new(&[28, 28]).add(Flatten::new());
        for &w in widths {
            s = s.add(Dense::new(w).activation(act));
        }
        s.add(Dense::new(10).activation(head))
    };
    let image = || ModelSpec::new(&[28, 28]).add(Reshape { target_shape: vec![1, 28, 28] });
    Some(match name {
        "mlp-128" => mlp(&[128], Relu, Linear),
        "mlp-sigmoid-100-144" => mlp(&[100, 144], Sigmoid, Softmax),
        "mlp-128-128" => mlp(&[128, 128], Relu, Softmax),
        "mlp-512-512" => mlp(&[512, 512], Relu, Softmax),
        "convnet" => image()
            .add(Conv2D::new(32, 3).activation(Relu))
            .add(LayerSpec::MaxPooling2D(Pool2D::new(2)))
            .add(Conv2D::new(64, 3).activation(Relu))
            .add(LayerSpec::MaxPooling2D(Pool2D::new(2)))
            .add(Flatten::new())
            .add(Dropout::new(0.5))
            .add(Dense::new(10).activation(Softmax)),
        // Small and quick: batch norm after the pooling works on a quarter of the values, and
        // the first conv + pooling pair runs fused on the CPU.
        "fast-cnn" => image()
            .add(Conv2D::new(16, 3).activation(Relu))
            .add(LayerSpec::MaxPooling2D(Pool2D::new(2)))
            .add(BatchNorm::default())
            .add(Conv2D::new(32, 3).activation(Relu))
            .add(LayerSpec::MaxPooling2D(Pool2D::new(2)))
            .add(BatchNorm::default())
            .add(Flatten::new())
            .add(Dense::new(10).activation(Softmax)),
        _ => return None,
    })
}
