//! Batch normalisation on the CPU over `[outer, channels, inner]`, parallel over channels.
//! Each channel's values are the `outer` contiguous planes of `inner` elements.

use super::team::{self, SyncPtr};
use crate::device::BatchNormArgs;

/// Calls `f(plane)` for each of channel `c`'s planes of `x`.
#[inline]
fn planes<'a>(a: &BatchNormArgs, x: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
    let s = a.shape;
    (0..s.outer).map(move |o| {
        let base = (o * s.channels + c) * s.inner;
        &x[base..base + s.inner]
    })
}

/// Applies `f(c, plane_out, plane_in, [plane_dy])` to every channel in parallel, writing `out`.
fn per_channel_write(a: &BatchNormArgs, out: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    let s = a.shape;
    let shared = SyncPtr::new(out);
    team::for_each(s.channels, |c| {
        for o in 0..s.outer {
            let base = (o * s.channels + c) * s.inner;
            // SAFETY: channel c's planes are disjoint from every other channel's.
            let plane = unsafe { shared.range(base, base + s.inner) };
            f(c, base, plane);
        }
    });
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
    // Batch mean into saved[..c], batch variance (for now) into saved[c..]: no allocation.
    let (means, vars) = saved.split_at_mut(s.channels);
    let var_ptr = SyncPtr::new(vars);
    team::chunks_mut(means, 1, |c, mean_out| {
        // SAFETY: channel c's variance belongs to the part computing channel c.
        let var_out = unsafe { &mut var_ptr.range(c, c + 1)[0] };
        let mean_out = &mut mean_out[0];
        let (mut sum, mut sq) = (0f64, 0f64);
        for p in planes(a, x, c) {
            let (ps, pq) = p.iter().fold((0f32, 0f32), |(s, q), &v| (s + v, q + v * v));
            sum += ps as f64;
            sq += pq as f64;
        }
        let mean = sum / count;
        *mean_out = mean as f32;
        *var_out = (sq / count - mean * mean).max(0.0) as f32;
    });
    for c in 0..s.channels {
        let (mean, var) = (saved[c], saved[s.channels + c]);
        saved[s.channels + c] = 1.0 / (var + a.epsilon).sqrt();
        // Keras 3 updates the moving variance with the batch's biased variance.
        mm[c] = a.momentum * mm[c] + (1.0 - a.momentum) * mean;
        mv[c] = a.momentum * mv[c] + (1.0 - a.momentum) * var;
    }
    let saved = &*saved;
    per_channel_write(a, y, |c, base, out| {
        let (g, b, m, inv) = (gamma[c], beta[c], saved[c], saved[s.channels + c]);
        for (o, &v) in out.iter_mut().zip(&x[base..base + s.inner]) {
            *o = g * (v - m) * inv + b;
        }
    });
}

pub(crate) fn infer(a: &BatchNormArgs, x: &[f32], gamma: &[f32], beta: &[f32], mm: &[f32], mv: &[f32], y: &mut [f32]) {
    let inner = a.shape.inner;
    per_channel_write(a, y, |c, base, out| {
        let inv = 1.0 / (mv[c] + a.epsilon).sqrt();
        let (g, b, m) = (gamma[c], beta[c], mm[c]);
        for (o, &v) in out.iter_mut().zip(&x[base..base + inner]) {
            *o = g * (v - m) * inv + b;
        }
    });
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
    let dg_ptr = SyncPtr::new(&mut dgamma[..s.channels]);
    team::chunks_mut(&mut dbeta[..s.channels], 1, |c, db| {
        // SAFETY: channel c's gamma gradient belongs to the part computing channel c.
        let dg = unsafe { &mut dg_ptr.range(c, c + 1)[0] };
        let db = &mut db[0];
        {
            let (mean, inv) = (saved[c], saved[s.channels + c]);
            let (mut sdy, mut sdyx) = (0f64, 0f64);
            for (px, pdy) in planes(a, x, c).zip(planes(a, dy, c)) {
                let (a1, a2) =
                    px.iter().zip(pdy).fold((0f32, 0f32), |(s1, s2), (&xv, &d)| (s1 + d, s2 + d * (xv - mean)));
                sdy += a1 as f64;
                sdyx += a2 as f64 * inv as f64;
            }
            *db = sdy as f32;
            *dg = sdyx as f32;
        }
    });
    let (dbeta, dgamma) = (&*dbeta, &*dgamma);
    per_channel_write(a, dx, |c, base, out| {
        let (mean, inv) = (saved[c], saved[s.channels + c]);
        let (sdy, sdyx) = (dbeta[c], dgamma[c]);
        let k = gamma[c] * inv / count;
        for ((o, &xv), &d) in out.iter_mut().zip(&x[base..base + s.inner]).zip(&dy[base..base + s.inner]) {
            let xhat = (xv - mean) * inv;
            *o = k * (count * d - sdy - xhat * sdyx);
        }
    });
}
