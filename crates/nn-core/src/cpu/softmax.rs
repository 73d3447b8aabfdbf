//! Softmax over short rows (the classes of a batch of examples), [`LANES`] rows at a time, one
//! row per vector lane: a row of 10 classes is too short to vectorise by itself, and its
//! scalar `exp`s cost ~80 ns a row. Each row goes through the same operations in the same
//! order as [`softmax_row`], so the results have the same bits.

use crate::fastmath::exp;

/// Rows per block (a vector of f32 on AVX-512), and the most classes a block takes.
pub(super) const LANES: usize = 16;

/// `[class][lane]`: a block of rows turned so that each class is a vector, one row per lane.
pub(super) type Turned = [[f32; LANES]; LANES];

/// Rows `r0..r0 + nb` of a `[rows, cols]` matrix into a [`Turned`] block (lanes past `nb`
/// left as they are).
#[inline(always)]
pub(super) fn turn(src: &[f32], cols: usize, r0: usize, nb: usize, dst: &mut Turned) {
    for l in 0..nb {
        let row = &src[(r0 + l) * cols..(r0 + l + 1) * cols];
        for (j, &v) in row.iter().enumerate() {
            dst[j][l] = v;
        }
    }
}

/// For each lane of `z` (its first `cols` classes): the maximum `m`, `e = exp(z - m)` and
/// `s = Σ e`, summed in class order from 0, as [`softmax_row`] computes them.
#[inline(always)]
pub(super) fn max_exp_sum(z: &Turned, cols: usize, e: &mut Turned) -> ([f32; LANES], [f32; LANES]) {
    let mut m = [f32::NEG_INFINITY; LANES];
    for zj in &z[..cols] {
        for l in 0..LANES {
            m[l] = m[l].max(zj[l]);
        }
    }
    let mut s = [0f32; LANES];
    for (ej, zj) in e[..cols].iter_mut().zip(&z[..cols]) {
        for l in 0..LANES {
            ej[l] = exp(zj[l] - m[l]);
            s[l] += ej[l];
        }
    }
    (m, s)
}

/// One row's softmax in place: the reference [`softmax_rows`] matches.
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32]) {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut s = 0.0;
    for v in row.iter_mut() {
        *v = exp(*v - m);
        s += *v;
    }
    let inv = 1.0 / s;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// The softmax of every row of `y` (`[rows, cols]`) in place.
pub(crate) fn softmax_rows(y: &mut [f32], cols: usize) {
    super::simd::with_simd(
        #[inline(always)]
        || softmax_rows_inline(y, cols),
    )
}

/// [`softmax_rows`], for callers already vectorised.
#[inline(always)]
pub(super) fn softmax_rows_inline(y: &mut [f32], cols: usize) {
    if cols == 0 {
        return;
    }
    if cols > LANES {
        y.chunks_mut(cols).for_each(softmax_row);
        return;
    }
    let rows = y.len() / cols;
    let (mut z, mut e) = ([[0f32; LANES]; LANES], [[0f32; LANES]; LANES]);
    for r0 in (0..rows).step_by(LANES) {
        let nb = LANES.min(rows - r0);
        turn(y, cols, r0, nb, &mut z);
        let (_, s) = max_exp_sum(&z, cols, &mut e);
        let inv: [f32; LANES] = std::array::from_fn(|l| 1.0 / s[l]);
        for l in 0..nb {
            for (j, v) in y[(r0 + l) * cols..(r0 + l + 1) * cols].iter_mut().enumerate() {
                *v = e[j][l] * inv[l];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_give_the_bits_of_rows() {
        for (rows, cols) in [(1, 1), (5, 2), (16, 10), (37, 10), (33, 16), (3, 17), (20, 3)] {
            let y: Vec<f32> = (0..rows * cols)
                .map(|i| match i % 23 {
                    0 => 30.0,
                    1 => -90.0,
                    2 | 3 => 1.5,
                    k => ((i * 7919 + k) % 101) as f32 / 17.0 - 3.0,
                })
                .collect();
            let mut by_rows = y.clone();
            by_rows.chunks_mut(cols).for_each(softmax_row);
            let mut blocked = y.clone();
            softmax_rows(&mut blocked, cols);
            assert!(by_rows.iter().zip(&blocked).all(|(a, b)| a.to_bits() == b.to_bits()), "{rows}x{cols}");
            for row in blocked.chunks(cols) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
            }
        }
    }
}
