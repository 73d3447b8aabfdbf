//! Image tensors are stored channels-major inside a network; what a user sees (inputs, flattened
//! features, weights) must be the usual NCHW order. Checked against a direct convolution.
#![allow(clippy::unwrap_used, clippy::too_many_arguments)]

use mnist_data::Rng;
use nn_core::{Conv2D, Flatten, LayerSpec, Model, ModelSpec, Padding, Reshape};

/// Direct convolution of `x [n, c, h, w]` with `k [f, c, 3, 3]`, same padding, plus bias.
fn conv_nchw(x: &[f32], k: &[f32], b: &[f32], n: usize, c: usize, h: usize, w: usize, f: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * f * h * w];
    for ni in 0..n {
        for fi in 0..f {
            for oy in 0..h {
                for ox in 0..w {
                    let mut s = b[fi];
                    for ci in 0..c {
                        for ki in 0..3 {
                            for kj in 0..3 {
                                let (iy, ix) = (oy as isize + ki as isize - 1, ox as isize + kj as isize - 1);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    s += x[((ni * c + ci) * h + iy as usize) * w + ix as usize]
                                        * k[((fi * c + ci) * 3 + ki) * 3 + kj];
                                }
                            }
                        }
                    }
                    y[((ni * f + fi) * h + oy) * w + ox] = s;
                }
            }
        }
    }
    y
}

#[test]
fn flattened_conv_output_is_nchw_order() {
    let (n, c, h, w, f) = (3, 2, 5, 4, 3);
    let spec = ModelSpec::new(&[c * h * w])
        .add(Reshape { target_shape: vec![c, h, w] })
        .add(Conv2D::new(f, 3).padding(Padding::Same))
        .add(Flatten::new());
    let mut model = Model::new(&spec, 1).unwrap();
    let mut weights = model.weights().unwrap();
    let mut rng = Rng::new(2);
    for t in &mut weights {
        t.data.iter_mut().for_each(|v| *v = rng.uniform(-1.0, 1.0));
    }
    model.set_weights(&weights).unwrap();
    let x: Vec<f32> = (0..n * c * h * w).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let got = model.predict(&x, n).unwrap();
    let want = conv_nchw(&x, &weights[0].data, &weights[1].data, n, c, h, w, f);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{g} vs {w}");
    }
    // Global average pooling hands [n, f] rows to what follows.
    let spec = ModelSpec::new(&[c * h * w])
        .add(Reshape { target_shape: vec![c, h, w] })
        .add(Conv2D::new(f, 3).padding(Padding::Same))
        .add(LayerSpec::GlobalAveragePooling2D {});
    let mut gap = Model::new(&spec, 1).unwrap();
    gap.set_weights(&weights).unwrap();
    let pooled = gap.predict(&x, n).unwrap();
    for ni in 0..n {
        for fi in 0..f {
            let plane = &want[(ni * f + fi) * h * w..(ni * f + fi + 1) * h * w];
            let mean = plane.iter().sum::<f32>() / (h * w) as f32;
            assert!((pooled[[ni, fi]] - mean).abs() < 1e-4);
        }
    }
}

#[test]
fn multi_channel_inputs_ask_for_a_reshape() {
    let spec = ModelSpec::new(&[3, 8, 8]).add(Flatten::new());
    let err = Model::new(&spec, 0).err().unwrap().to_string();
    assert!(err.contains("Reshape") && err.contains("[192]"), "{err}");
    // Refused by the architecture itself, so a summary does not show what cannot be built.
    assert_eq!(spec.resolve().err().map(|e| e.to_string()), Some(err));
    assert!(nn_core::summary::summary(&spec, "sequential").is_err());
    // With the Reshape it asks for, it builds.
    let reshaped = ModelSpec::new(&[192]).add(nn_core::Reshape { target_shape: vec![3, 8, 8] }).add(Flatten::new());
    assert!(Model::new(&reshaped, 0).is_ok());
    // Keras's channels-last shape is named as such, with the shape to write here.
    let err = Model::new(&ModelSpec::new(&[28, 28, 1]).add(Flatten::new()), 0).err().unwrap().to_string();
    assert!(err.contains("channels come first") && err.contains("[1, 28, 28]"), "{err}");
}

/// Batch normalisation normalises each channel, the first axis of an example, over every other
/// axis, whatever the rank (channels first, as PyTorch's `BatchNorm1d` on `[N, C, L]`): a fresh
/// layer in inference mode (moving mean 0, variance 1) scales every value by `1/√(1+ε)`.
#[test]
fn batch_norm_covers_every_value_of_a_rank_two_example() {
    let spec = ModelSpec::new(&[4, 5]).add(nn_core::BatchNorm::default()).add(Flatten::new());
    let mut m = Model::new(&spec, 0).unwrap();
    let n = 3;
    let x: Vec<f32> = (0..n * 20).map(|i| i as f32 * 0.25 - 7.0).collect();
    let y = m.predict(&x, n).unwrap();
    let scale = 1.0 / (1.0f32 + nn_core::BatchNorm::default().epsilon).sqrt();
    for (i, (&got, &xv)) in y.iter().zip(&x).enumerate() {
        assert!((got - xv * scale).abs() < 1e-5, "value {i}: {got} vs {}", xv * scale);
    }
}
