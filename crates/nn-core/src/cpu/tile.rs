//! The multiply-add tile at the heart of the implicit-GEMM convolution (`implicit_conv.rs`).
//!
//! A tile is `out [MR][NV·16] = Σ_k a[row_j + col_k] · b[k][..]`: `MR` scalars gathered
//! straight from an image through two offset tables (one per tile row, one per step `k`, so an
//! image never needs unfolding into columns) times one packed row of `b` per step. With
//! AVX-512 the tile lives in `MR·NV ≤ 24` registers: each step is `NV` vector loads, `MR`
//! broadcasts and `MR·NV` fused multiply-adds, enough independent work to keep both FMA units
//! busy. The portable version is the same sums in the same order, with separate multiply and
//! add (so it may differ from the AVX-512 one in the last bit, as any two GEMMs may).

// Register tiles read best as index loops.
#![allow(clippy::needless_range_loop)]

/// Lanes per vector.
pub(crate) const LANES: usize = 16;

/// The widest tile: four vectors of 16 columns.
pub(crate) const MAX_NV: usize = 4;

/// The most rows a tile has.
pub(crate) const MAX_ROWS: usize = 8;

/// The tile's rows for a given number of vectors: at most 24 accumulators, and at most 8
/// rows (one general register each: more, and the compiler spills).
pub(crate) const fn rows_for(nv: usize) -> usize {
    match nv {
        1..=3 => 8,
        _ => 6,
    }
}

/// Per step `k` of a tile, an offset into its gathered operand; made once per pass, with its
/// largest entry (so a tile checks its bounds without scanning the table). Step `k` reads row
/// `k` of `b`, or, for steps that are some of a product's only (its nonzeros, see
/// `sparse_gemm.rs`), the row at the step's own offset into `b`.
pub(crate) struct Steps<'a> {
    offs: &'a [u32],
    max: usize,
    /// Per step, where its row of `b` starts, with the largest; `None` for row `k` at `k·ldb`.
    b_offs: Option<(&'a [u32], usize)>,
}

impl<'a> Steps<'a> {
    /// Wraps a table of offsets.
    pub(crate) fn new(offs: &'a [u32]) -> Steps<'a> {
        Steps { offs, max: Self::largest(offs), b_offs: None }
    }
    /// Steps reading `a` at `offs` and `b`'s rows at `b_offs` (as many).
    pub(crate) fn indexed(offs: &'a [u32], b_offs: &'a [u32]) -> Steps<'a> {
        assert_eq!(offs.len(), b_offs.len(), "one row of b per step");
        Steps { offs, max: Self::largest(offs), b_offs: Some((b_offs, Self::largest(b_offs))) }
    }
    fn largest(offs: &[u32]) -> usize {
        offs.iter().max().map_or(0, |&m| m as usize)
    }
    /// The number of steps.
    pub(crate) fn len(&self) -> usize {
        self.offs.len()
    }
}

/// Per tile row, its offset in the gathered operand, with the largest (worked out as the rows
/// are set, so checking bounds does not reload them: a wide load of just-stored offsets
/// stalls on store forwarding).
#[derive(Clone, Copy)]
pub(crate) struct Rows {
    offs: [u32; MAX_ROWS],
    max: u32,
}

impl Rows {
    /// Rows `offset(0)`, …, `offset(mr - 1)`.
    #[inline(always)]
    pub(crate) fn new(mr: usize, offset: impl Fn(usize) -> u32) -> Rows {
        let mut r = Rows { offs: [0; MAX_ROWS], max: 0 };
        for j in 0..mr.min(MAX_ROWS) {
            let o = offset(j);
            r.offs[j] = o;
            r.max = r.max.max(o);
        }
        r
    }
}

/// Where one tile's operands are. Row `k` of `b` starts at `k·ldb` and has `nv·16` floats.
pub(crate) struct TileArgs<'a> {
    /// The gathered operand (an image, or a few images, zero-padded).
    pub a: &'a [f32],
    /// Per tile row `j < rows_for(nv)`, its offset in `a`.
    pub rows: Rows,
    /// Per step `k`, its offset in `a` (added to the row's).
    pub cols: &'a Steps<'a>,
    /// The vector operand, one row per step.
    pub b: &'a [f32],
    /// The distance between rows of `b`.
    pub ldb: usize,
}

/// Where a tile's results go: row `j` at `out[j·ldc..]`, `nv·16` floats, written (`add`
/// false) or added to what is there. Held as a pointer, so that threads can write disjoint
/// blocks of columns of one matrix (see [`TileOut::raw`]).
pub(crate) struct TileOut<'a> {
    out: *mut f32,
    len: usize,
    ldc: usize,
    add: bool,
    _dest: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> TileOut<'a> {
    /// Into `out`, rows `ldc` apart.
    pub(crate) fn new(out: &'a mut [f32], ldc: usize, add: bool) -> TileOut<'a> {
        TileOut { out: out.as_mut_ptr(), len: out.len(), ldc, add, _dest: std::marker::PhantomData }
    }

    /// Into the `len` floats from `out`, rows `ldc` apart.
    ///
    /// # Safety
    /// The `len` floats must be valid for writes while the tile runs, and no other thread may
    /// touch the ones the tile writes (`nv·16` from each row start).
    pub(crate) unsafe fn raw(out: *mut f32, len: usize, ldc: usize, add: bool) -> TileOut<'a> {
        TileOut { out, len, ldc, add, _dest: std::marker::PhantomData }
    }

    /// Row `j`'s `w` floats.
    fn row(&mut self, j: usize, w: usize) -> &mut [f32] {
        assert!(j * self.ldc + w <= self.len, "tile output row out of bounds");
        // SAFETY: in bounds (checked); these are floats the tile owns (`raw`'s contract).
        unsafe { std::slice::from_raw_parts_mut(self.out.add(j * self.ldc), w) }
    }
}

/// The function computing a tile for one vector count.
pub(crate) type TileFn = fn(&TileArgs, TileOut);

/// The tile for `nv` vectors (1..=4): AVX-512 when the CPU has it, else the portable loops.
pub(crate) fn tile_fn(nv: usize) -> TileFn {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return match nv {
            1 => avx512::<8, 1>,
            2 => avx512::<8, 2>,
            3 => avx512::<8, 3>,
            _ => avx512::<6, 4>,
        };
    }
    portable_fn(nv)
}

/// The portable tile for `nv` vectors.
pub(crate) fn portable_fn(nv: usize) -> TileFn {
    match nv {
        1 => portable::<8, 1>,
        2 => portable::<8, 2>,
        3 => portable::<8, 3>,
        _ => portable::<6, 4>,
    }
}

/// Checks the operands' lengths once per tile, so the loops below index without checks.
fn check<const MR: usize, const NV: usize>(t: &TileArgs, o: &TileOut) {
    let reach = t.rows.max as usize + t.cols.max;
    let b_reach = match t.cols.b_offs {
        Some((_, max)) => max,
        None => (t.cols.len().max(1) - 1) * t.ldb,
    };
    assert!(
        MR <= MAX_ROWS && (t.cols.len() == 0 || (reach < t.a.len() && t.b.len() >= b_reach + NV * LANES)),
        "tile operands out of bounds"
    );
    assert!(o.len >= (MR - 1) * o.ldc + NV * LANES, "tile output too short");
}

fn portable<const MR: usize, const NV: usize>(t: &TileArgs, mut o: TileOut) {
    check::<MR, NV>(t, &o);
    let w = NV * LANES;
    let mut acc = [[0f32; 64]; 8];
    for (k, &c) in t.cols.offs.iter().enumerate() {
        let at = t.cols.b_offs.map_or(k * t.ldb, |(offs, _)| offs[k] as usize);
        let b = &t.b[at..at + w];
        for j in 0..MR {
            let a = t.a[(t.rows.offs[j] + c) as usize];
            for (s, &bv) in acc[j][..w].iter_mut().zip(b) {
                *s += a * bv;
            }
        }
    }
    let add = o.add;
    for j in 0..MR {
        let dst = o.row(j, w);
        if add {
            dst.iter_mut().zip(&acc[j][..w]).for_each(|(d, &v)| *d += v);
        } else {
            dst.copy_from_slice(&acc[j][..w]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512<const MR: usize, const NV: usize>(t: &TileArgs, o: TileOut) {
    check::<MR, NV>(t, &o);
    // SAFETY: `tile_fn` hands this out only when the CPU has AVX-512F; bounds checked above.
    unsafe {
        match t.cols.b_offs {
            Some((offs, _)) => avx512_inner::<MR, NV, true>(t, offs, o),
            None => avx512_inner::<MR, NV, false>(t, &[], o),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_inner<const MR: usize, const NV: usize, const INDEXED: bool>(
    t: &TileArgs,
    b_offs: &[u32],
    o: TileOut,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let a = t.a.as_ptr();
    let rows: [*const f32; MR] = std::array::from_fn(|j| {
        // SAFETY: every row offset plus every column offset is inside `a` (checked).
        unsafe { a.add(t.rows.offs[j] as usize) }
    });
    let mut b = t.b.as_ptr();
    for (k, &c) in t.cols.offs.iter().enumerate() {
        if INDEXED {
            // SAFETY: one offset per step (checked by `Steps::indexed`).
            b = t.b.as_ptr().wrapping_add(unsafe { *b_offs.get_unchecked(k) } as usize);
        }
        // SAFETY: the step's row of `b` has NV·16 floats (checked).
        let bv: [__m512; NV] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(b.add(v * LANES)) });
        for j in 0..MR {
            // SAFETY: `rows[j] + c` is inside `a` (checked).
            let av = _mm512_set1_ps(unsafe { *rows[j].add(c as usize) });
            for v in 0..NV {
                acc[j][v] = _mm512_fmadd_ps(av, bv[v], acc[j][v]);
            }
        }
        if !INDEXED {
            // Wrapping: the last advance may point past `b`, and is never read.
            b = b.wrapping_add(t.ldb);
        }
    }
    for j in 0..MR {
        for v in 0..NV {
            // SAFETY: row j of the destination holds NV·16 floats from j·ldc (checked).
            unsafe {
                let p = o.out.add(j * o.ldc + v * LANES);
                let r = if o.add { _mm512_add_ps(_mm512_loadu_ps(p), acc[j][v]) } else { acc[j][v] };
                _mm512_storeu_ps(p, r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tile_width_matches_the_obvious_sums() {
        let a: Vec<f32> = (0..500).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        for nv in 1..=MAX_NV {
            let mr = rows_for(nv);
            let w = nv * LANES;
            let rows = Rows::new(mr, |j| j as u32 * 7 + 3);
            let cols: Vec<u32> = (0..37u32).map(|k| (k * 11) % 400).collect();
            let ldb = w + 5;
            let b: Vec<f32> = (0..cols.len() * ldb).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect();
            let steps = Steps::new(&cols);
            let args = TileArgs { a: &a, rows, cols: &steps, b: &b, ldb };
            let mut want = vec![0f32; mr * w];
            for j in 0..mr {
                for l in 0..w {
                    want[j * w + l] = cols
                        .iter()
                        .enumerate()
                        .map(|(k, &c)| a[(rows.offs[j] + c) as usize] * b[k * ldb + l])
                        .sum::<f32>();
                }
            }
            for f in [portable_fn(nv), tile_fn(nv)] {
                // Written with a row stride, then added once more.
                let ldc = w + 3;
                let mut out = vec![f32::NAN; mr * ldc];
                f(&args, TileOut::new(&mut out, ldc, false));
                f(&args, TileOut::new(&mut out, ldc, true));
                for j in 0..mr {
                    for l in 0..w {
                        let (o, e) = (out[j * ldc + l], 2.0 * want[j * w + l]);
                        assert!((o - e).abs() <= 1e-4 * (1.0 + e.abs()), "nv {nv}: {o} vs {e}");
                    }
                }
            }
        }
    }
}
