//! Cross-entropy on the CPU: the loss, the correct predictions and the gradient of a batch.
//!
//! Outputs that are logits (the fused softmax + cross-entropy, every Keras MNIST head) with at
//! most [`LANES`] classes go through blocks of rows, one row per vector lane (`softmax.rs`):
//! each row's maximum, exponentials, sum, loss and gradient are computed by the same operations
//! in the same order as row by row, so they have the same bits, at a quarter of the time.
//! Probabilities, and wider rows, go row by row.

use super::softmax::{max_exp_sum, turn, Turned, LANES};
use crate::fastmath::exp;
use crate::loss::{XentArgs, EPSILON};

/// Returns `(Σ loss, Σ correct)` over the batch and writes the gradient.
///
/// `out` and `grad` are `[rows, cols]`; `targets` is `[rows]` labels (as `f32`, each below
/// `cols`) when `a.sparse`, else `[rows, cols]`.
pub(crate) fn cross_entropy(a: &XentArgs, out: &[f32], targets: &[f32], grad: &mut [f32]) -> (f32, f32) {
    super::simd::with_simd(
        #[inline(always)]
        || {
            if a.logits && a.cols <= LANES {
                in_blocks(a, out, targets, grad)
            } else {
                row_by_row(a, out, targets, grad)
            }
        },
    )
}

/// The index of the first largest element (0 when there is none, or only NaNs).
fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// [`cross_entropy`] row by row: the reference the blocked path matches.
#[inline(always)]
fn row_by_row(a: &XentArgs, out: &[f32], targets: &[f32], grad: &mut [f32]) -> (f32, f32) {
    let (rows, cols) = (a.rows, a.cols);
    let mut loss = 0f64;
    let mut correct = 0usize;
    for r in 0..rows {
        let o = &out[r * cols..(r + 1) * cols];
        let g = &mut grad[r * cols..(r + 1) * cols];
        let (label, t): (usize, Option<&[f32]>) = if a.sparse {
            (targets[r] as usize, None)
        } else {
            let t = &targets[r * cols..(r + 1) * cols];
            (argmax(t), Some(t))
        };
        if argmax(o) == label {
            correct += 1;
        }
        if a.logits {
            let m = o.iter().fold(f32::NEG_INFINITY, |x, &y| x.max(y));
            let mut s = 0f32;
            for (gj, &z) in g.iter_mut().zip(o) {
                *gj = exp(z - m);
                s += *gj;
            }
            let lse = m + s.ln();
            let inv = 1.0 / s;
            match t {
                None => {
                    loss += (lse - o[label]) as f64;
                    for gj in g.iter_mut() {
                        *gj *= inv * a.grad_scale;
                    }
                    g[label] -= a.grad_scale;
                }
                Some(t) => {
                    let tsum: f32 = t.iter().sum();
                    for ((gj, &z), &tj) in g.iter_mut().zip(o).zip(t) {
                        loss += (tj * (lse - z)) as f64;
                        *gj = (*gj * inv * tsum - tj) * a.grad_scale;
                    }
                }
            }
        } else {
            let psum: f32 = o.iter().sum::<f32>().max(f32::MIN_POSITIVE);
            let tsum = t.map_or(1.0, |t| t.iter().sum());
            for (j, (gj, &p)) in g.iter_mut().zip(o).enumerate() {
                let tj = t.map_or(if j == label { 1.0 } else { 0.0 }, |t| t[j]);
                let q = p / psum;
                let clipped = !(EPSILON..=1.0 - EPSILON).contains(&q);
                loss -= (tj * q.clamp(EPSILON, 1.0 - EPSILON).ln()) as f64;
                let direct = if clipped || tj == 0.0 { 0.0 } else { -tj / p };
                *gj = (direct + tsum / psum) * a.grad_scale;
            }
        }
    }
    (loss as f32, correct as f32)
}

/// The lane-wise index of the first largest of `cols` vectors (as [`argmax`] row by row).
#[inline(always)]
fn argmax_lanes(v: &Turned, cols: usize) -> [usize; LANES] {
    let (mut best, mut at) = (v[0], [0usize; LANES]);
    for (j, vj) in v.iter().enumerate().take(cols).skip(1) {
        for l in 0..LANES {
            if vj[l] > best[l] {
                best[l] = vj[l];
                at[l] = j;
            }
        }
    }
    at
}

/// [`cross_entropy`] for logits, [`LANES`] rows at a time, each row computed as by [`row_by_row`].
#[inline(always)]
fn in_blocks(a: &XentArgs, out: &[f32], targets: &[f32], grad: &mut [f32]) -> (f32, f32) {
    let (rows, cols) = (a.rows, a.cols);
    let mut loss = 0f64;
    let mut correct = 0usize;
    let (mut z, mut t, mut e) = ([[0f32; LANES]; LANES], [[0f32; LANES]; LANES], [[0f32; LANES]; LANES]);
    for r0 in (0..rows).step_by(LANES) {
        let nb = LANES.min(rows - r0);
        turn(out, cols, r0, nb, &mut z);
        let labels: [usize; LANES] = if a.sparse {
            std::array::from_fn(|l| if l < nb { targets[r0 + l] as usize } else { 0 })
        } else {
            turn(targets, cols, r0, nb, &mut t);
            argmax_lanes(&t, cols)
        };
        let predicted = argmax_lanes(&z, cols);
        correct += (0..nb).filter(|&l| predicted[l] == labels[l]).count();
        let (m, s) = max_exp_sum(&z, cols, &mut e);
        let lse: [f32; LANES] = std::array::from_fn(|l| if l < nb { m[l] + s[l].ln() } else { 0.0 });
        let inv: [f32; LANES] = std::array::from_fn(|l| 1.0 / s[l]);
        if a.sparse {
            let scale: [f32; LANES] = std::array::from_fn(|l| inv[l] * a.grad_scale);
            for ej in &mut e[..cols] {
                for l in 0..LANES {
                    ej[l] *= scale[l];
                }
            }
            for l in 0..nb {
                loss += (lse[l] - z[labels[l]][l]) as f64;
            }
        } else {
            // Each row's sum exactly as `row_by_row` takes it (the same start, the same order).
            let tsum: [f32; LANES] = std::array::from_fn(|l| {
                if l < nb {
                    targets[(r0 + l) * cols..(r0 + l + 1) * cols].iter().sum()
                } else {
                    0.0
                }
            });
            for (ej, tj) in e[..cols].iter_mut().zip(&t[..cols]) {
                for l in 0..LANES {
                    ej[l] = (ej[l] * inv[l] * tsum[l] - tj[l]) * a.grad_scale;
                }
            }
            for l in 0..nb {
                for j in 0..cols {
                    loss += (t[j][l] * (lse[l] - z[j][l])) as f64;
                }
            }
        }
        for l in 0..nb {
            let g = &mut grad[(r0 + l) * cols..(r0 + l + 1) * cols];
            for (j, gj) in g.iter_mut().enumerate() {
                *gj = e[j][l];
            }
            if a.sparse {
                g[labels[l]] -= a.grad_scale;
            }
        }
    }
    (loss as f32, correct as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits with ties, large and tiny values, and rows of every length up to a block and past.
    fn logits(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| match i % 23 {
                0 => 30.0,
                1 => -90.0,
                2 | 3 => 1.5,
                k => ((i * 7919 + k) % 101) as f32 / 17.0 - 3.0,
            })
            .collect()
    }

    #[test]
    fn blocks_give_the_bits_of_rows() {
        for (rows, cols) in [(1, 1), (5, 2), (16, 10), (37, 10), (128, 10), (33, 16), (20, 3)] {
            let out = logits(rows, cols);
            let labels: Vec<f32> = (0..rows).map(|r| ((r * 5 + 1) % cols) as f32).collect();
            let onehot: Vec<f32> = (0..rows * cols)
                .map(|i| match (i / cols) % 3 {
                    0 => (i % cols == (i / cols * 3) % cols) as u8 as f32,
                    1 => 0.5 * (i % 2) as f32,
                    _ => 0.1,
                })
                .collect();
            for (sparse, targets) in [(true, &labels), (false, &onehot)] {
                let a = XentArgs { rows, cols, logits: true, sparse, grad_scale: 1.0 / rows as f32 };
                let (mut g1, mut g2) = (vec![0f32; rows * cols], vec![1f32; rows * cols]);
                let (l1, c1) = row_by_row(&a, &out, targets, &mut g1);
                let (l2, c2) = cross_entropy(&a, &out, targets, &mut g2);
                assert!(g1.iter().zip(&g2).all(|(x, y)| x.to_bits() == y.to_bits()), "{rows}x{cols} {sparse}");
                assert_eq!(c1, c2, "{rows}x{cols} {sparse}");
                assert_eq!(l1.to_bits(), l2.to_bits(), "{rows}x{cols} {sparse}: {l1} vs {l2}");
            }
        }
    }

    #[test]
    fn the_loss_is_the_mean_negative_log_likelihood() {
        // Two rows of two classes: p = softmax([0, ln 3]) = [1/4, 3/4].
        let out = [0.0, 3f32.ln(), 0.0, 3f32.ln()];
        let a = XentArgs { rows: 2, cols: 2, logits: true, sparse: true, grad_scale: 0.5 };
        let mut g = [0f32; 4];
        let (loss, correct) = cross_entropy(&a, &out, &[1.0, 0.0], &mut g);
        assert!((loss - (-(0.75f32).ln() - 0.25f32.ln())).abs() < 1e-6);
        assert_eq!(correct, 1.0);
        let expected = [0.125, -0.125, -0.375, 0.375];
        assert!(g.iter().zip(expected).all(|(x, y)| (x - y).abs() < 1e-6), "{g:?}");
    }
}
