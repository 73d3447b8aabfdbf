//! GEMMs cut into the AVX-512 tiles of `tile.rs`: the tiling shared by the implicit-GEMM
//! convolution, and a plain `C = op(A)·op(B)` for the dense layers.
//!
//! A tile's rows gather their operand through offset tables, so `A` is read where it lies,
//! transposed or not; its columns are vectors of `B`'s rows, read in place too (a transposed
//! `B` is copied into panels first). matrixmultiply copies (packs) both operands into its own
//! layout, in a buffer it allocates, on every call.

use std::cell::RefCell;
use std::ops::Range;

use super::scatter::transpose;
use super::shares;
use super::sparse_gemm;
use super::team::{self, SyncPtr};
use super::tile::{rows_for, tile_fn, Rows, Steps, TileArgs, TileFn, TileOut, LANES, MAX_NV, MAX_ROWS};
use crate::device::Gemm;

/// The vectors per tile for an output of `rows × cols`: the least padded work, weighed
/// against narrow tiles (fewer accumulators: more loads per multiply-add); wider on ties.
pub(crate) fn pick_nv(rows: usize, cols: usize) -> usize {
    let cost = |nv: usize| {
        let (mr, w) = (rows_for(nv), nv * LANES);
        let work = rows.div_ceil(mr) * mr * cols.div_ceil(w) * w;
        work as f64 * [1.4, 1.1, 1.0, 1.0][nv - 1]
    };
    (1..=MAX_NV).rev().min_by(|&a, &b| cost(a).total_cmp(&cost(b))).unwrap_or(MAX_NV)
}

/// [`pick_nv`] for [`gemm`], whose last partial block of columns (at least a vector wide) is
/// only as wide as it needs: 784×100 runs in two blocks of 48 and one of 16 columns, where
/// padded blocks would be 4×32.
pub(crate) fn dense_nv(rows: usize, cols: usize) -> usize {
    if cols < LANES {
        return 1;
    }
    let weight = |nv: usize| [1.4, 1.1, 1.0, 1.0][nv - 1];
    let cost = |nv: usize| {
        let w = nv * LANES;
        if cols < w {
            return f64::INFINITY;
        }
        let (full, edge) = (cols / w * w, (cols % w).div_ceil(LANES));
        let rows = |nv: usize| rows.div_ceil(rows_for(nv)) * rows_for(nv);
        let edge_cost = if edge == 0 { 0.0 } else { (rows(edge) * edge * LANES) as f64 * weight(edge) };
        (rows(nv) * full) as f64 * weight(nv) + edge_cost
    };
    (1..=MAX_NV).rev().min_by(|&a, &b| cost(a).total_cmp(&cost(b))).unwrap_or(1)
}

/// The operands of one GEMM cut into tiles: output rows `0..rows` gather their operand from
/// `a` at `row_offs[r] + steps[k]`; output columns `0..cols` are vectors of `b` (row `k` at
/// `k·ldb`, with room for a whole tile past `cols`).
pub(crate) struct Tiled<'a> {
    pub(crate) tile: TileFn,
    pub(crate) nv: usize,
    pub(crate) a: &'a [f32],
    pub(crate) row_offs: &'a [u32],
    pub(crate) steps: &'a Steps<'a>,
    pub(crate) b: &'a [f32],
    pub(crate) ldb: usize,
    pub(crate) cols: usize,
}

impl Tiled<'_> {
    /// Runs every tile: `emit(r0, rows, c0, w, tile)` receives each (`tile[j·w + l]` for
    /// output `(r0 + j, c0 + l)`, `j < rows`), computed into `scratch`.
    pub(crate) fn emit(&self, scratch: &mut [f32], mut emit: impl FnMut(usize, usize, usize, usize, &[f32])) {
        let (mr, w) = (rows_for(self.nv), self.nv * LANES);
        let rows = self.row_offs.len();
        for c0 in (0..self.cols).step_by(w) {
            for r0 in (0..rows).step_by(mr) {
                let valid = mr.min(rows - r0);
                (self.tile)(&self.args(r0, valid, c0), TileOut::new(scratch, w, false));
                emit(r0, valid, c0, w, &scratch[..mr * w]);
            }
        }
    }

    /// Runs every tile straight into `c` (row stride `ldc`, at least the columns rounded up
    /// to whole tiles), overwriting or adding; a last partial block of rows goes through
    /// `scratch`.
    pub(crate) fn store(&self, c: &mut [f32], ldc: usize, add: bool, scratch: &mut [f32]) {
        // SAFETY: `c` is ours alone for the call.
        unsafe { self.store_raw(c.as_mut_ptr(), c.len(), ldc, add, scratch) }
    }

    /// [`Tiled::store`] into the `len` floats from `c`, which may be a block of columns of a
    /// matrix other threads write other columns of.
    ///
    /// # Safety
    /// The `len` floats from `c` must be valid for writes, and no other thread may touch the
    /// ones this writes: columns `0..self.cols` (rounded up to whole tiles) of every row.
    pub(crate) unsafe fn store_raw(&self, c: *mut f32, len: usize, ldc: usize, add: bool, scratch: &mut [f32]) {
        let (mr, w) = (rows_for(self.nv), self.nv * LANES);
        assert!(self.cols.div_ceil(w) * w <= ldc, "GEMM tiles wider than their destination");
        let rows = self.row_offs.len();
        assert!(rows == 0 || (rows - 1) * ldc + self.cols.div_ceil(w) * w <= len, "GEMM destination too short");
        for c0 in (0..self.cols).step_by(w) {
            for r0 in (0..rows).step_by(mr) {
                let valid = mr.min(rows - r0);
                let args = self.args(r0, valid, c0);
                if valid == mr {
                    let at = r0 * ldc + c0;
                    // SAFETY: the tile's rows lie inside the destination (checked above) and
                    // inside the columns the caller gave this call.
                    (self.tile)(&args, unsafe { TileOut::raw(c.add(at), len - at, ldc, add) });
                    continue;
                }
                (self.tile)(&args, TileOut::new(scratch, w, false));
                for j in 0..valid {
                    // SAFETY: as above, one row of the tile.
                    let dst = unsafe { std::slice::from_raw_parts_mut(c.add((r0 + j) * ldc + c0), w) };
                    let src = &scratch[j * w..(j + 1) * w];
                    if add {
                        dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                    } else {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
    }

    /// The operands of the tile at `(r0, c0)` (rows past the last repeat it: computed, never
    /// stored).
    fn args(&self, r0: usize, valid: usize, c0: usize) -> TileArgs<'_> {
        let mr = rows_for(self.nv);
        let rows = Rows::new(mr, |j| self.row_offs[r0 + j.min(valid - 1)]);
        TileArgs { a: self.a, rows, cols: self.steps, b: &self.b[c0..], ldb: self.ldb }
    }
}

thread_local! {
    static TABLES: RefCell<(Vec<u32>, Vec<u32>)> = RefCell::default();
}

/// The widest `B` [`gemm`] takes. Wider rows put the rows of a tile's column block so far
/// apart that they collide in the caches (a 1024-wide `B` ran at half matrixmultiply's
/// speed, a 512-wide one 10–30% slower), where matrixmultiply's packing keeps them together.
const MAX_N: usize = 256;

/// The longest shared dimension [`gemm`] takes with `B` transposed: a layer's input gradient
/// through a logits layer (`k` = its 10 units) ran as fast as matrixmultiply's; through wider
/// layers (144, 512 units) 5% slower in training.
const MAX_K_TRANSPOSED: usize = 32;

/// Whether [`gemm`] computes this product: a CPU with AVX-512, one product, `B` transposed
/// with `k` at most [`MAX_K_TRANSPOSED`] (copied into panels first, as matrixmultiply does)
/// or not transposed and at most [`MAX_N`] wide, `α = 1`, `β` 0 or 1, and offsets that fit
/// the tile's tables. These are the forward passes and weight gradients of dense layers up to
/// 256 units, where matrixmultiply spends much of its time packing (784×128 at batch 128 runs
/// 1.6× faster, and 784-128-10 trains 10% faster: 0.139 → 0.122 s/epoch), and the input
/// gradients through logits layers.
pub(crate) fn handles(g: &Gemm) -> bool {
    super::own_kernels()
        && g.batch <= 1
        && if g.trans_b { g.k <= MAX_K_TRANSPOSED } else { g.n <= MAX_N }
        && g.alpha == 1.0
        && (g.beta == 0.0 || g.beta == 1.0)
        && g.m > 0
        && g.n > 0
        && g.k > 0
        && g.m * g.k < u32::MAX as usize / 2
}

/// `C [m, n] = op(A) · op(B) (+ C if β = 1)` with `A` stored `[m, k]` (or `[k, m]`
/// transposed) and `B` `[k, n]` (or `[n, k]` transposed), over the CPU team (by blocks of
/// rows). Only for products [`handles`] accepts; `parallel` says whether to split it at all.
pub(crate) fn gemm(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32], parallel: bool) {
    let (m, n, k) = (g.m, g.n, g.k);
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm operand too small");
    let nv = dense_nv(m, n);
    let (tile, mr, w) = (tile_fn(nv), rows_for(nv), nv * LANES);
    // The tables are taken out of their thread-local for the call, so a nested call on this
    // thread finds empty ones instead of a borrowed cell.
    let (mut rows, mut steps) = TABLES.with(|t| std::mem::take(&mut *t.borrow_mut()));
    rows.clear();
    steps.clear();
    if g.trans_a {
        rows.extend(0..m as u32);
        steps.extend((0..k).map(|kk| (kk * m) as u32));
    } else {
        rows.extend((0..m).map(|i| (i * k) as u32));
        steps.extend(0..k as u32);
    }
    let row_tiles = m.div_ceil(mr);
    let parts = if parallel { team::threads().min(row_tiles) } else { 1 };
    let per = row_tiles.div_ceil(parts.max(1)) * mr;
    if g.trans_b {
        let st = Steps::new(&steps);
        transposed_b(g, a, b, c, (tile, nv, w), &rows, &st, parallel.then_some(per));
        TABLES.with(|t| *t.borrow_mut() = (rows, steps));
        return;
    }
    let add = g.beta == 1.0;
    // B narrower than a tile is copied into a zero-padded panel first (so no read runs past B).
    let mut edge = EDGE.lock().unwrap_or_else(|e| e.into_inner());
    let panel: &[f32] = if n < w {
        let panel = edge.grown(k * w);
        pad_rows(&b[..k * n], n, panel, w);
        panel
    } else {
        &[]
    };
    let sparse = g.sparse_a.then(|| sparse_gemm::SparseA::of(g));
    let block = Block { a, rows: &rows, steps: &steps, b, panel, n, sparse };
    let cs = SyncPtr::new(&mut c[..m * n]);
    if parallel && !g.trans_a && shares::splits(k) && m * n <= MAX_PARTIAL {
        // A layer's forward product: each thread multiplies by its share of the kernel's rows
        // (`shares.rs`), into C or into its partial sum, and the partial sums are added last.
        let parts = team::threads();
        let mut partials = PARTIALS.lock().unwrap_or_else(|e| e.into_inner());
        let ps = SyncPtr::new(grow(&mut partials, (parts - 1) * m * n));
        team::for_each_pinned(|p| {
            let ks = shares::share(k, p);
            // SAFETY: part 0 alone writes C, part p > 0 alone its own partial sum.
            unsafe {
                match p {
                    0 => block.run(0..m, ks, cs.raw().0, add),
                    _ => block.run(0..m, ks, ps.raw().0.add((p - 1) * m * n), false),
                }
            }
        });
        add_partials(&mut c[..m * n], &partials[..(parts - 1) * m * n]);
    } else if parallel && g.trans_a && shares::splits(m) {
        // A kernel's gradient: each thread its share of the kernel's rows.
        team::for_each_pinned(|p| {
            // SAFETY: this part alone writes these rows of C.
            unsafe { block.run(shares::share(m, p), 0..k, cs.raw().0, add) };
        });
    } else {
        team::for_each(m.div_ceil(per), |p| {
            let (lo, hi) = (p * per, ((p + 1) * per).min(m));
            // SAFETY: this part alone writes rows lo..hi of C.
            unsafe { block.run(lo..hi, 0..k, cs.raw().0, add) };
        });
    }
    drop(edge);
    TABLES.with(|t| *t.borrow_mut() = (rows, steps));
}

/// A non-transposed [`gemm`]'s operands, from which each thread computes a block.
struct Block<'a> {
    a: &'a [f32],
    /// The offset of each row of `op(A)` in `a`.
    rows: &'a [u32],
    /// The offset of each step `k` of `op(A)` in `a` (added to the row's).
    steps: &'a [u32],
    b: &'a [f32],
    /// `B` copied into one zero-padded tile when narrower than a vector, else empty.
    panel: &'a [f32],
    n: usize,
    /// Where `A` is likely mostly zeros, how it is stored: each part tries the sparse kernels
    /// first (`sparse_gemm.rs`, the same bits).
    sparse: Option<sparse_gemm::SparseA>,
}

impl Block<'_> {
    /// `C[rows, :] = op(A)[rows, ks]·B[ks, :]` (or `+=` when `add`), in tiles of the vectors
    /// [`dense_nv`] picks; where `A` is likely mostly zeros, by its nonzeros first
    /// (`sparse_gemm.rs`, the same bits).
    ///
    /// # Safety
    /// `c` is a `[m, n]` matrix (`C` or a partial sum), and no other thread touches its rows
    /// `rows` during the call.
    unsafe fn run(&self, rows: Range<usize>, ks: Range<usize>, c: *mut f32, add: bool) {
        let n = self.n;
        if rows.is_empty() {
            return;
        }
        let nv = dense_nv(rows.len(), n);
        if let Some(s) = self.sparse {
            // SAFETY: these rows of `c` are ours (the caller's contract).
            if unsafe { sparse_gemm::part(&s, self.a, rows.clone(), ks.clone(), self.b, n, nv, c, add) } {
                return;
            }
        }
        let steps = Steps::new(&self.steps[ks.clone()]);
        let panel = if n < nv * LANES { &self.panel[ks.start * nv * LANES..] } else { &[] };
        let b = &self.b[ks.start * n..];
        // SAFETY: these rows are ours (the caller's contract).
        unsafe { run_tiles(nv, self.a, &self.rows[rows.clone()], &steps, b, panel, n, c.add(rows.start * n), add) };
    }
}

/// `C = A·B` over `steps` (or `+=` when `add`) for the rows of `A` at `row_offs`, in tiles of
/// `nv` vectors, into the rows of `n` floats from `c`. `b` holds `B`'s rows as the steps say;
/// `panel` holds them zero-padded to one tile when `n` is narrower than a tile, and is empty
/// otherwise. A last partial block of columns is computed as the block ending at column `n`,
/// which overlaps the one before it, and only its new columns are kept: each column is
/// computed exactly as in a block of its own, with nothing copied (a panel packed on every
/// call cost the other thread a transfer between caches: a 784×100 product ran 1.5× slower on
/// two threads than on one).
///
/// # Safety
/// `c` holds `row_offs.len()` rows of `n` floats, and no other thread touches them during the
/// call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn run_tiles(
    nv: usize,
    a: &[f32],
    row_offs: &[u32],
    steps: &Steps,
    b: &[f32],
    panel: &[f32],
    n: usize,
    c: *mut f32,
    add: bool,
) {
    let w = nv * LANES;
    let full = n / w * w;
    let mut out = [0f32; MAX_ROWS * MAX_NV * LANES];
    let len = row_offs.len() * n;
    let t = Tiled { tile: tile_fn(nv), nv, a, row_offs, steps, b, ldb: n, cols: full };
    // SAFETY: these rows are ours (the caller's contract).
    unsafe { t.store_raw(c, len, n, add, &mut out) };
    if full == n {
        return;
    }
    // The last block: as few vectors as its columns need, its first column, and where its
    // columns are read from.
    let (nv, w, c0, b, ldb) = if n < w {
        (nv, w, 0, panel, w)
    } else {
        let v = (n - full).div_ceil(LANES);
        (v, v * LANES, n - v * LANES, &b[n - v * LANES..], n)
    };
    let t = Tiled { tile: tile_fn(nv), nv, a, row_offs, steps, b, ldb, cols: w };
    t.emit(&mut out, |r0, nr, _, tw, o| {
        for j in 0..nr {
            // SAFETY: columns full..n of a row of ours.
            let dst = unsafe { std::slice::from_raw_parts_mut(c.add((r0 + j) * n + full), n - full) };
            let src = &o[j * tw + (full - c0)..j * tw + (n - c0)];
            if add {
                dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
            } else {
                dst.copy_from_slice(src);
            }
        }
    });
}

/// The largest `C` (in floats) whose forward product is split by the kernel's rows, each
/// thread summing into a partial `C` of its own (128×512 for a 512-unit layer at batch 128).
pub(crate) const MAX_PARTIAL: usize = 1 << 16;

/// The partial sums of a forward product split by the kernel's rows, reused from call to call.
pub(crate) static PARTIALS: std::sync::Mutex<Vec<f32>> = std::sync::Mutex::new(Vec::new());

/// From this many outputs [`add_partials`] shares the sums out over the team.
const ADD_PAR_MIN: usize = 1 << 15;

/// `c += Σ partials`, the partial sums (each `c.len()` long) added in order; large sums split
/// between the team's threads, each adding its own range of `c` (one thread added M3's 256 KB
/// sums while the other waited: at precision "high" M3 0.526–0.548 → 0.505–0.516 s an epoch).
pub(crate) fn add_partials(c: &mut [f32], partials: &[f32]) {
    let len = c.len();
    let add = |c: &mut [f32], from: usize| {
        super::simd::with_simd(
            #[inline(always)]
            || {
                for part in partials.chunks_exact(len) {
                    c.iter_mut().zip(&part[from..]).for_each(|(c, &v)| *c += v);
                }
            },
        )
    };
    let parts = team::threads();
    if len < ADD_PAR_MIN || parts < 2 {
        add(c, 0);
        return;
    }
    let cs = SyncPtr::new(c);
    team::for_each_pinned(|p| {
        // Whole lines (16 floats) each, the last part to the end.
        let (lo, hi) = (p * len / parts / 16 * 16, if p + 1 == parts { len } else { (p + 1) * len / parts / 16 * 16 });
        // SAFETY: each part adds into its own range of C.
        add(unsafe { cs.range(lo, hi) }, lo);
    });
}

/// Copies the rows of `n` floats in `src` into the rows of `w ≥ n` floats of `dst`, zeros
/// after each: `B` narrower than one tile, made one. With AVX-512, a masked load and a store
/// per vector (a logits layer's `B` is 128 rows of 10: a copy and a fill per row took 1.1 µs
/// of a 1.9 µs product).
fn pad_rows(src: &[f32], n: usize, dst: &mut [f32], w: usize) {
    let rows = dst.len() / w;
    assert!(n <= w && src.len() >= rows * n, "pad_rows: {rows} rows of {n} into rows of {w}");
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx512() && w.is_multiple_of(LANES) {
        // SAFETY: the CPU has AVX-512F (checked); the sizes were checked above.
        unsafe { pad_rows_avx512(src, n, dst, w) };
        return;
    }
    for (r, row) in dst.chunks_exact_mut(w).enumerate() {
        row[..n].copy_from_slice(&src[r * n..(r + 1) * n]);
        row[n..].fill(0.0);
    }
}

/// [`pad_rows`] on AVX-512.
///
/// # Safety
/// The CPU has AVX-512F; `n <= w`, `w` is a multiple of 16 and `src` holds `n` floats per row
/// of `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pad_rows_avx512(src: &[f32], n: usize, dst: &mut [f32], w: usize) {
    use std::arch::x86_64::*;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for r in 0..dst.len() / w {
        for lo in (0..w).step_by(LANES) {
            let left = n.saturating_sub(lo).min(LANES);
            let mask = ((1u32 << left) - 1) as u16;
            // SAFETY: the load reads only the `left` floats of the row still to copy (a
            // masked-off lane reads nothing); the store writes inside row r of `dst`.
            unsafe {
                let x = _mm512_maskz_loadu_ps(mask, s.wrapping_add(r * n + lo));
                _mm512_storeu_ps(d.add(r * w + lo), x);
            }
        }
    }
}

/// `B` narrower than one tile, copied into a zero-padded panel by [`gemm`], reused from call
/// to call.
static EDGE: std::sync::Mutex<super::HostBuf> = std::sync::Mutex::new(super::HostBuf::new());

/// [`gemm`] with `B` stored `[n, k]` and used transposed: `Bᵀ` is first copied into panels of
/// `w` columns (`[k][w]` each, zero past `n`), in parallel, then each part (rows `per` at a
/// time, or all at once) multiplies its rows by every panel.
#[allow(clippy::too_many_arguments)]
fn transposed_b(
    g: &Gemm,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    (tile, nv, w): (TileFn, usize, usize),
    rows: &[u32],
    steps: &Steps,
    per: Option<usize>,
) {
    let (m, n, k) = (g.m, g.n, g.k);
    let panels = n.div_ceil(w);
    let mut packed = PACKED.lock().unwrap_or_else(|e| e.into_inner());
    let packed = packed.grown(panels * k * w);
    team::chunks_mut(packed, k * w, |t, panel| {
        let (c0, cw) = (t * w, w.min(n - t * w));
        transpose(&b[c0 * k..], cw, k, k, panel, w);
        if cw < w {
            panel.chunks_exact_mut(w).for_each(|row| row[cw..].fill(0.0));
        }
    });
    let packed = &*packed;
    let add = g.beta == 1.0;
    let per = per.unwrap_or(m).max(1);
    let cs = SyncPtr::new(&mut c[..m * n]);
    team::for_each(m.div_ceil(per), |p| {
        let (lo, hi) = (p * per, ((p + 1) * per).min(m));
        // SAFETY: rows lo..hi of C belong to this part alone.
        let c = unsafe { cs.range(lo * n, hi * n) };
        let mut out = [0f32; MAX_ROWS * MAX_NV * LANES];
        for t in 0..panels {
            let (c0, cw) = (t * w, w.min(n - t * w));
            let panel = &packed[t * k * w..(t + 1) * k * w];
            let tl = Tiled { tile, nv, a, row_offs: &rows[lo..hi], steps, b: panel, ldb: w, cols: w };
            if cw == w {
                tl.store(&mut c[c0..], n, add, &mut out);
                continue;
            }
            tl.emit(&mut out, |r0, nr, _, tw, o| {
                for j in 0..nr {
                    let dst = &mut c[(r0 + j) * n + c0..(r0 + j) * n + c0 + cw];
                    let src = &o[j * tw..j * tw + cw];
                    if add {
                        dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                    } else {
                        dst.copy_from_slice(src);
                    }
                }
            });
        }
    });
}

/// `Bᵀ` packed by [`transposed_b`], reused from call to call.
static PACKED: std::sync::Mutex<super::HostBuf> = std::sync::Mutex::new(super::HostBuf::new());

/// `v[..len]`, grown (with zeros) if shorter. (The buffers a tile reads as its `B` are
/// [`HostBuf`](super::HostBuf)s instead, whose rows of 16·j floats start on cache lines.)
pub(crate) fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_the_obvious_sums() {
        for (m, n, k, ta, tb, beta) in [
            (128, 128, 784, false, false, 0.0),
            (32, 100, 784, false, false, 0.0),
            (784, 144, 32, true, false, 1.0),
            (7, 10, 5, true, false, 0.0),
            (6, 3, 40, false, false, 0.0),
            (13, 64, 9, false, false, 1.0),
            (20, 37, 11, false, false, 1.0),
            (9, 200, 13, true, false, 0.0),
            (17, 16, 3, false, false, 1.0),
            (128, 1600, 10, false, true, 0.0),
            (32, 144, 10, false, true, 0.0),
            (50, 70, 30, true, true, 1.0),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 31) as f32 - 15.0) / 16.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 11 % 29) as f32 - 14.0) / 8.0).collect();
            let c0: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32).collect();
            let g = Gemm::new(ta, tb, m, n, k).beta(beta);
            if !handles(&g) {
                continue;
            }
            for parallel in [false, true] {
                let mut c = c0.clone();
                gemm(&g, &a, &b, &mut c, parallel);
                for i in 0..m {
                    for j in 0..n {
                        let av = |kk: usize| if ta { a[kk * m + i] } else { a[i * k + kk] };
                        let bv = |kk: usize| if tb { b[j * k + kk] } else { b[kk * n + j] };
                        let want = beta * c0[i * n + j] + (0..k).map(|kk| av(kk) * bv(kk)).sum::<f32>();
                        let got = c[i * n + j];
                        assert!(
                            (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                            "{m}x{n}x{k} ({i},{j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
