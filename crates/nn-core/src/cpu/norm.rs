//! Batch normalisation on the CPU over `[outer, channels, inner]`.

use crate::device::BatchNormArgs;

fn for_channel(a: &BatchNormArgs, c: usize, mut f: impl FnMut(usize)) {
    let s = a.shape;
    for o in 0..s.outer {
        let base = (o * s.channels + c) * s.inner;
        for i in base..base + s.inner {
            f(i);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn train(
    a: &BatchNormArgs,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mm: &mut [f32],
    mv: &mut [f32],
    saved: &mut [f32],
    y: &mut [f32],
) {
    let s = a.shape;
    let count = (s.outer * s.inner) as f64;
    for c in 0..s.channels {
        let (mut sum, mut sq) = (0f64, 0f64);
        for_channel(a, c, |i| {
            sum += x[i] as f64;
            sq += (x[i] as f64) * (x[i] as f64);
        });
        let mean = sum / count;
        let var = (sq / count - mean * mean).max(0.0);
        let inv = 1.0 / (var + a.epsilon as f64).sqrt();
        saved[c] = mean as f32;
        saved[s.channels + c] = inv as f32;
        let (g, b, m, inv) = (gamma[c], beta[c], mean as f32, inv as f32);
        for_channel(a, c, |i| y[i] = g * (x[i] - m) * inv + b);
        // Keras 3 updates the moving variance with the batch's biased variance.
        mm[c] = a.momentum * mm[c] + (1.0 - a.momentum) * mean as f32;
        mv[c] = a.momentum * mv[c] + (1.0 - a.momentum) * var as f32;
    }
}

pub(crate) fn infer(
    a: &BatchNormArgs,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mm: &[f32],
    mv: &[f32],
    y: &mut [f32],
) {
    for c in 0..a.shape.channels {
        let inv = 1.0 / (mv[c] + a.epsilon).sqrt();
        let (g, b, m) = (gamma[c], beta[c], mm[c]);
        for_channel(a, c, |i| y[i] = g * (x[i] - m) * inv + b);
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    a: &BatchNormArgs,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    saved: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let s = a.shape;
    let count = (s.outer * s.inner) as f32;
    for c in 0..s.channels {
        let (mean, inv) = (saved[c], saved[s.channels + c]);
        let (mut sdy, mut sdyx) = (0f64, 0f64);
        for_channel(a, c, |i| {
            sdy += dy[i] as f64;
            sdyx += (dy[i] * (x[i] - mean) * inv) as f64;
        });
        dbeta[c] = sdy as f32;
        dgamma[c] = sdyx as f32;
        let k = gamma[c] * inv / count;
        let (sdy, sdyx) = (sdy as f32, sdyx as f32);
        for_channel(a, c, |i| {
            let xhat = (x[i] - mean) * inv;
            dx[i] = k * (count * dy[i] - sdy - xhat * sdyx);
        });
    }
}
