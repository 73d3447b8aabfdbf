//! Element-wise and row-wise CPU kernels: bias + activation, their gradients, dropout.

use super::team;
use super::PAR_MIN;
use crate::activation::Activation;
use crate::device::{dropout_uniform, Channels};

fn bias_act_block(y: &mut [f32], bias: Option<&[f32]>, act: Activation, s: Channels) {
    super::simd::with_simd(
        #[inline(always)]
        || bias_act_inline(y, bias, act, s),
    )
}

#[inline(always)]
fn bias_act_inline(y: &mut [f32], bias: Option<&[f32]>, act: Activation, s: Channels) {
    if let Some(b) = bias {
        for block in y.chunks_mut(s.channels * s.inner) {
            if s.inner == 1 {
                for (v, &b) in block.iter_mut().zip(b) {
                    *v += b;
                }
            } else {
                for (plane, &b) in block.chunks_mut(s.inner).zip(b) {
                    plane.iter_mut().for_each(|v| *v += b);
                }
            }
        }
    }
    match act {
        Activation::Linear => {}
        Activation::Softmax => super::softmax::softmax_rows_inline(y, s.channels),
        Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Sigmoid => y.iter_mut().for_each(|v| *v = crate::fastmath::sigmoid(*v)),
        _ => y.iter_mut().for_each(|v| *v = act.apply(*v)),
    }
}

pub(crate) fn bias_act(y: &mut [f32], bias: Option<&[f32]>, act: Activation, s: Channels) {
    let row = s.channels * s.inner;
    if y.len() >= PAR_MIN && s.outer > 1 {
        let rows_per = s.outer.div_ceil(team::threads()).max(1);
        team::chunks_mut(y, rows_per * row, |_, part| {
            let sub = Channels { outer: part.len() / row, ..s };
            bias_act_block(part, bias, act, sub);
        });
    } else {
        bias_act_block(y, bias, act, s);
    }
}

pub(crate) fn act_backward(y: &[f32], dy: &mut [f32], act: Activation, s: Channels) {
    if act != Activation::Softmax && y.len() >= PAR_MIN {
        const CHUNK: usize = 1 << 14;
        team::chunks_mut(dy, CHUNK, |i, d| {
            let y = &y[i * CHUNK..i * CHUNK + d.len()];
            act_backward_serial(y, d, act, s);
        });
    } else {
        act_backward_serial(y, dy, act, s);
    }
}

fn act_backward_serial(y: &[f32], dy: &mut [f32], act: Activation, s: Channels) {
    super::simd::with_simd(
        #[inline(always)]
        || act_backward_inline(y, dy, act, s),
    )
}

#[inline(always)]
fn act_backward_inline(y: &[f32], dy: &mut [f32], act: Activation, s: Channels) {
    match act {
        Activation::Linear => {}
        Activation::Relu => {
            // A select, not a branch: the sign of y is unpredictable.
            for (d, &y) in dy.iter_mut().zip(y) {
                *d = if y > 0.0 { *d } else { 0.0 };
            }
        }
        Activation::Softmax => {
            for (dr, yr) in dy.chunks_mut(s.channels).zip(y.chunks(s.channels)) {
                let dot: f32 = dr.iter().zip(yr).map(|(d, y)| d * y).sum();
                for (d, &y) in dr.iter_mut().zip(yr) {
                    *d = y * (*d - dot);
                }
            }
        }
        _ => {
            for (d, &y) in dy.iter_mut().zip(y) {
                *d *= act.derivative_from_output(y);
            }
        }
    }
}

/// `Σ x` in a fixed order of 16 interleaved partial sums, which vectorises at any SIMD width
/// and gives the same bits at every width.
#[inline(always)]
pub(crate) fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut s = chunks.remainder().iter().sum::<f32>();
    for a in acc {
        s += a;
    }
    s
}

pub(crate) fn channel_sums(dy: &[f32], s: Channels, beta: f32, out: &mut [f32]) {
    if s.inner > 1 && dy.len() >= PAR_MIN {
        // One task per channel, summing its plane in every example.
        team::chunks_mut(out, 1, |c, o| {
            let o = &mut o[0];
            let mut acc = 0f32;
            for b in 0..s.outer {
                let start = (b * s.channels + c) * s.inner;
                acc += super::simd::with_simd(|| lane_sum(&dy[start..start + s.inner]));
            }
            *o = if beta == 0.0 { acc } else { beta * *o + acc };
        });
        return;
    }
    if beta == 0.0 {
        out.fill(0.0);
    } else if beta != 1.0 {
        out.iter_mut().for_each(|v| *v *= beta);
    }
    for block in dy.chunks(s.channels * s.inner) {
        if s.inner == 1 {
            for (o, &d) in out.iter_mut().zip(block) {
                *o += d;
            }
        } else {
            for (o, plane) in out.iter_mut().zip(block.chunks(s.inner)) {
                *o += plane.iter().sum::<f32>();
            }
        }
    }
}

/// Elements per part of the element-wise passes below.
const CHUNK: usize = 1 << 14;

/// Inverted dropout: `mask[i]` is 0 (dropped) or `1 / (1 - rate)`, `y[i] = x[i] · mask[i]`;
/// vectorised, in parallel for large tensors (the mask of element `i` depends only on `seed`
/// and `i`).
pub(crate) fn dropout(x: &[f32], y: &mut [f32], mask: &mut [f32], rate: f32, seed: u64) {
    let keep = 1.0 / (1.0 - rate);
    let block = |start: usize, x: &[f32], y: &mut [f32], mask: &mut [f32]| {
        super::simd::with_simd(
            #[inline(always)]
            || {
                for (i, ((y, &x), m)) in y.iter_mut().zip(x).zip(mask.iter_mut()).enumerate() {
                    *m = if dropout_uniform(seed, (start + i) as u64) < rate { 0.0 } else { keep };
                    *y = x * *m;
                }
            },
        )
    };
    if y.len() < PAR_MIN {
        return block(0, x, y, mask);
    }
    let ms = team::SyncPtr::new(mask);
    team::chunks_mut(y, CHUNK, |i, y| {
        let at = i * CHUNK;
        // SAFETY: the same chunk of the mask as of `y`, which this part alone has.
        let mask = unsafe { ms.range(at, at + y.len()) };
        block(at, &x[at..at + y.len()], y, mask);
    });
}

/// `y[i] = x[i] · m[i]`, vectorised, in parallel for large tensors.
pub(crate) fn mul(x: &[f32], m: &[f32], y: &mut [f32]) {
    let block = |x: &[f32], m: &[f32], y: &mut [f32]| {
        super::simd::with_simd(
            #[inline(always)]
            || y.iter_mut().zip(x).zip(m).for_each(|((y, &x), &m)| *y = x * m),
        )
    };
    if y.len() < PAR_MIN {
        return block(x, m, y);
    }
    team::chunks_mut(y, CHUNK, |i, y| {
        let at = i * CHUNK;
        block(&x[at..at + y.len()], &m[at..at + y.len()], y)
    });
}

/// `dst = src`, in parallel for large tensors.
pub(crate) fn copy(src: &[f32], dst: &mut [f32]) {
    if dst.len() < PAR_MIN {
        return dst.copy_from_slice(src);
    }
    team::chunks_mut(dst, CHUNK, |i, d| d.copy_from_slice(&src[i * CHUNK..i * CHUNK + d.len()]));
}
