//! The sparse first-layer products of `sparse_gemm.rs` for CPUs with AVX2 and FMA but no
//! AVX-512 (most laptops), where the dense products run in matrixmultiply.
//!
//! The same idea with its own register tile: six rows by sixteen columns (two 8-lane vectors,
//! twelve accumulators), each tile's steps cut down to the ones where one of its rows of `A` has
//! a nonzero (for the forward product, the pixels lit in one of its six images; for the weight
//! gradient, the images in which one of its six pixels is lit). Each output is the sequential
//! sum of fused multiply-adds over its tile's steps, in order (tested against that sum written
//! with `f32::mul_add`); matrixmultiply sums in another order, so the sparse and dense results
//! differ in the last bits, as any two GEMMs may.

use std::cell::RefCell;
use std::ops::Range;

use super::high_water::HighWater;
use super::sparse_gemm::{top_up_lists, Lists, SparseA, MAX_KEPT, MAX_LIT, PEEK_IMAGES};

/// Rows of a tile.
const MR: usize = 6;

/// Columns of a tile: two vectors of eight.
const NR: usize = 16;

/// Per-thread lists, kept from call to call: which pixels of each image are lit (the weight
/// gradient's, eight per byte) and one tile's steps.
type Scratch = Lists<u8>;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// The longest step lists and masks any thread's scratch has needed.
static OFFSETS: HighWater = HighWater::new();
static MASKS: HighWater = HighWater::new();

/// Grows this thread's lists to the longest any thread has needed (skipped while in use).
pub(crate) fn top_up() {
    top_up_lists(&SCRATCH, &OFFSETS, &MASKS);
}

/// Whether this CPU has AVX2 and FMA.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// As `sparse_gemm::part`, with AVX2 tiles: `C[rows, :] = op(A)[rows, ks]·B[ks, :]` (added to
/// `C` when `add`); false, having written nothing, where `A` turns out not to be mostly zeros
/// or the CPU lacks AVX2 and FMA. The caller has checked the operands' sizes (as `part` does).
///
/// # Safety
/// `c` is the matrix `C` (or a partial sum), rows of `n` floats, and no other thread touches
/// its rows `rows` during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn part(
    s: &SparseA,
    a: &[f32],
    rows: Range<usize>,
    ks: Range<usize>,
    b: &[f32],
    n: usize,
    c: *mut f32,
    add: bool,
) -> bool {
    if !available() {
        return false;
    }
    let (trans, lda, k) = s.layout();
    SCRATCH.with(|scratch| {
        let sc = &mut *scratch.borrow_mut();
        let room = ks.len().max(k);
        OFFSETS.grow(&mut sc.a_offs, room, 0);
        OFFSETS.grow(&mut sc.b_offs, room, 0);
        // SAFETY (all calls below): the CPU has AVX2 and FMA (checked above); the lists have
        // room for every step; the masks are made for these rows; rows r0..r1 of `c` are ours.
        if trans && !unsafe { pixel_masks(a, lda, k, rows.clone(), &mut sc.masks) } {
            return false;
        }
        let chunks = rows.len().div_ceil(8) + 1;
        for r0 in rows.clone().step_by(MR) {
            let r1 = (r0 + MR).min(rows.end);
            let kept = if trans {
                images_lit(&sc.masks, chunks, k, r0 - rows.start, r1 - r0, lda, n, &mut sc.a_offs, &mut sc.b_offs)
            } else {
                unsafe { pixels_lit(a, lda, r0..r1, ks.clone(), n, &mut sc.a_offs, &mut sc.b_offs) }
            };
            if r0 == rows.start && kept as f64 > MAX_KEPT * ks.len() as f64 {
                return false;
            }
            let row_offs: [usize; MR] =
                std::array::from_fn(|j| if trans { (r0 + j).min(r1 - 1) } else { (r0 + j).min(r1 - 1) * lda });
            let tile = Tile {
                a: a.as_ptr(),
                row_offs,
                rows: r1 - r0,
                a_offs: &sc.a_offs[..kept],
                b_offs: &sc.b_offs[..kept],
                add,
            };
            for c0 in (0..n).step_by(NR) {
                let width = (n - c0).min(NR);
                unsafe { tile.run(b.as_ptr().add(c0), width, c.add(r0 * n + c0), n) };
            }
        }
        super::sparse_gemm::count_part();
        true
    })
}

/// One tile's operands: up to six rows of `A` (offsets, the last repeated past `rows`) and the
/// kept steps (their offsets into `A`, added to a row's, and into `B`).
struct Tile<'a> {
    a: *const f32,
    row_offs: [usize; MR],
    rows: usize,
    a_offs: &'a [u32],
    b_offs: &'a [u32],
    add: bool,
}

impl Tile<'_> {
    /// `C[r, 0..width] (+)= Σ_steps A[row r, step]·B[step, 0..width]` for the tile's rows,
    /// from `b` (column 0 of the block) into `c` (its first row, `ldc` apart).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; every row offset plus every step's offset lies inside `A`;
    /// every step's row of `B` holds `width` floats from `b`; `c` holds the tile's rows.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run(&self, b: *const f32, width: usize, c: *mut f32, ldc: usize) {
        use std::arch::x86_64::*;
        // Lanes of the two vectors inside the block's columns.
        let lanes = |from: usize| {
            let on = |l: usize| if from + l < width { -1 } else { 0 };
            _mm256_setr_epi32(on(0), on(1), on(2), on(3), on(4), on(5), on(6), on(7))
        };
        let (m0, m1) = (lanes(0), lanes(8));
        let full = width == NR;
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for (&ao, &bo) in self.a_offs.iter().zip(self.b_offs) {
            // SAFETY: the step's row of `B` holds the block's columns (the contract); the
            // masked loads read only those.
            let (b0, b1) = unsafe {
                let row = b.add(bo as usize);
                if full {
                    (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)))
                } else {
                    (_mm256_maskload_ps(row, m0), _mm256_maskload_ps(row.add(8), m1))
                }
            };
            for (acc, &row) in acc.iter_mut().zip(&self.row_offs) {
                // SAFETY: a row offset plus a step's offset lies inside `A` (the contract).
                let av = _mm256_set1_ps(unsafe { *self.a.add(row + ao as usize) });
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
        }
        for (j, acc) in acc.iter().enumerate().take(self.rows) {
            // SAFETY: row j of the tile holds the block's columns of `c` (the contract); the
            // masked loads and stores touch only those.
            unsafe {
                let p = c.add(j * ldc);
                for (v, (&sum, &m)) in acc.iter().zip(&[m0, m1]).enumerate() {
                    let q = p.add(v * 8);
                    let out = if self.add { _mm256_add_ps(_mm256_maskload_ps(q, m), sum) } else { sum };
                    _mm256_maskstore_ps(q, m, out);
                }
            }
        }
    }
}

/// The pixels `ks` of `A` (stored `[m, lda]`) lit in one of the images `rows`, listed as
/// steps: `a_offs` the pixel, `b_offs` the offset of its row of `B` (`n` wide). Returns how
/// many.
///
/// # Safety
/// The CPU has AVX2; the lists have room for `ks.len()`.
#[target_feature(enable = "avx2")]
unsafe fn pixels_lit(
    a: &[f32],
    lda: usize,
    rows: Range<usize>,
    ks: Range<usize>,
    n: usize,
    a_offs: &mut [u32],
    b_offs: &mut [u32],
) -> usize {
    use std::arch::x86_64::*;
    assert!(rows.end * lda <= a.len() && ks.end <= lda && a_offs.len() >= ks.len() && b_offs.len() >= ks.len());
    let mut kept = 0;
    for j in ks.clone().step_by(8) {
        let lanes = lanes8(ks.end - j);
        let mut lit = 0u32;
        for r in rows.clone() {
            // SAFETY: the masked load reads only lanes inside row r's pixels `ks` (asserted).
            let v = unsafe { _mm256_maskload_ps(a.as_ptr().add(r * lda + j), lanes) };
            let nz = _mm256_cmp_ps::<_CMP_NEQ_UQ>(v, _mm256_setzero_ps());
            lit |= _mm256_movemask_ps(_mm256_and_ps(nz, _mm256_castsi256_ps(lanes))) as u32;
        }
        while lit != 0 {
            let p = j + lit.trailing_zeros() as usize;
            (a_offs[kept], b_offs[kept]) = (p as u32, (p * n) as u32);
            kept += 1;
            lit &= lit - 1;
        }
    }
    kept
}

/// For a weight gradient (`A` stored `[k, lda]`, used transposed): per image, which of the
/// pixels `rows` are lit, eight to a byte, `rows.len() / 8 + 2` bytes an image (the last zero).
/// False, with the masks unfinished, where the first images are not mostly zeros.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn pixel_masks(a: &[f32], lda: usize, k: usize, rows: Range<usize>, masks: &mut Vec<u8>) -> bool {
    use std::arch::x86_64::*;
    assert!(k * lda <= a.len() && rows.end <= lda);
    let chunks = rows.len().div_ceil(8) + 1;
    masks.clear();
    MASKS.grow(masks, k * chunks, 0);
    let peek = k.min(PEEK_IMAGES);
    let mut lit = 0;
    for i in 0..k {
        for (ch, j) in rows.clone().step_by(8).enumerate() {
            let lanes = lanes8(rows.end - j);
            // SAFETY: the masked load reads only lanes inside image i's pixels `rows`.
            let v = unsafe { _mm256_maskload_ps(a.as_ptr().add(i * lda + j), lanes) };
            let nz = _mm256_and_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(v, _mm256_setzero_ps()), _mm256_castsi256_ps(lanes));
            let m = _mm256_movemask_ps(nz) as u8;
            masks[i * chunks + ch] = m;
            lit += m.count_ones() as usize;
        }
        if i + 1 == peek && lit as f64 > MAX_LIT * (peek * rows.len()) as f64 {
            return false;
        }
    }
    true
}

/// The images in which one of the `len ≤ 6` pixels from `at` (counted from the first of the
/// masks' pixels) is lit, listed as steps: `a_offs` the image's offset in `A` (`i·lda`),
/// `b_offs` its row of `B` (`i·n`). Returns how many.
#[allow(clippy::too_many_arguments)]
fn images_lit(
    masks: &[u8],
    chunks: usize,
    k: usize,
    at: usize,
    len: usize,
    lda: usize,
    n: usize,
    a_offs: &mut [u32],
    b_offs: &mut [u32],
) -> usize {
    let (ch, shift) = (at / 8, at % 8);
    let want = ((1u32 << len) - 1) << shift;
    let mut kept = 0;
    for (i, m) in masks.chunks_exact(chunks).take(k).enumerate() {
        let both = m[ch] as u32 | (m[ch + 1] as u32) << 8;
        if both & want != 0 {
            (a_offs[kept], b_offs[kept]) = ((i * lda) as u32, (i * n) as u32);
            kept += 1;
        }
    }
    kept
}

/// The lanes of an 8-lane vector whose values lie among the `left` still to go, as a load mask.
#[target_feature(enable = "avx2")]
fn lanes8(left: usize) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let on = |l: usize| if l < left { -1 } else { 0 };
    _mm256_setr_epi32(on(0), on(1), on(2), on(3), on(4), on(5), on(6), on(7))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::sparse_gemm::testing::{check, random_case, Lcg};
    use crate::device::Gemm;

    /// The tile's sum, written out: over the steps where one of the tile's rows of A (the
    /// rows of C grouped by six from `rows.start`) is nonzero, in order, fused multiply-adds.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        s: &SparseA,
        a: &[f32],
        rows: Range<usize>,
        ks: Range<usize>,
        b: &[f32],
        n: usize,
        c: &mut [f32],
        add: bool,
    ) {
        let (trans, lda, _) = s.layout();
        let at = |r: usize, kk: usize| if trans { a[kk * lda + r] } else { a[r * lda + kk] };
        for r0 in rows.clone().step_by(MR) {
            let group = r0..(r0 + MR).min(rows.end);
            let steps: Vec<usize> = ks.clone().filter(|&kk| group.clone().any(|r| at(r, kk) != 0.0)).collect();
            for r in group {
                for col in 0..n {
                    let sum = steps.iter().fold(0f32, |acc, &kk| at(r, kk).mul_add(b[kk * n + col], acc));
                    c[r * n + col] = if add { c[r * n + col] + sum } else { sum };
                }
            }
        }
    }

    #[test]
    fn the_sparse_parts_take_these_tiles_without_avx512() {
        if !available() {
            return;
        }
        // Through the dispatcher, as on a CPU without AVX-512 (this thread only).
        crate::cpu::sparse_gemm::PRETEND_AVX2.with(|p| p.set(true));
        let mut rng = Lcg(5);
        let (images, inputs, n) = (20, 784, 40);
        let x: Vec<f32> = (0..images * inputs).map(|_| if rng.unit() < 0.1 { rng.unit() } else { 0.0 }).collect();
        let b: Vec<f32> = (0..inputs * n).map(|_| rng.unit() - 0.5).collect();
        for trans in [false, true] {
            let (m, k) = if trans { (inputs, images) } else { (images, inputs) };
            let s = SparseA::of(&Gemm::new(trans, false, m, n, k));
            let (mut want, mut got) = (vec![0f32; m * n], vec![0f32; m * n]);
            reference(&s, &x, 0..m, 0..k, &b, n, &mut want, false);
            // SAFETY: `got` is the whole output.
            assert!(unsafe { crate::cpu::sparse_gemm::part(&s, &x, 0..m, 0..k, &b, n, 1, got.as_mut_ptr(), false) });
            assert!(want.iter().zip(&got).all(|(w, g)| w.to_bits() == g.to_bits()), "trans {trans}");
            // Narrower than the AVX-512 tiles: still taken.
            let (mut want, mut got) = (vec![0f32; m * 10], vec![0f32; m * 10]);
            reference(&s, &x, 0..m, 0..k, &b, 10, &mut want, false);
            // SAFETY: as above.
            assert!(unsafe { crate::cpu::sparse_gemm::part(&s, &x, 0..m, 0..k, &b, 10, 1, got.as_mut_ptr(), false) });
            assert!(want.iter().zip(&got).all(|(w, g)| w.to_bits() == g.to_bits()), "trans {trans}, 10 wide");
        }
        crate::cpu::sparse_gemm::PRETEND_AVX2.with(|p| p.set(false));
    }

    #[test]
    fn avx2_parts_are_the_fused_sums_over_their_tiles_steps() {
        if !available() {
            return;
        }
        let mut rng = Lcg(99);
        let (mut ran, mut declined) = (0, 0);
        for i in 0..300 {
            let case = random_case(&mut rng, i, &[1, 9, 16, 33, 100, 784], &[1, 7, 8, 10, 16, 17, 33, 100, 128]);
            let (s, n, rows, ks) = (&case.s, case.n, case.rows.clone(), case.ks.clone());
            for add in [false, true] {
                let (mut want, mut got) = (case.start.clone(), case.start.clone());
                reference(s, &case.x, rows.clone(), ks.clone(), &case.b, n, &mut want, add);
                // SAFETY: `got` is the whole `[m, n]` output.
                let done = unsafe { part(s, &case.x, rows.clone(), ks.clone(), &case.b, n, got.as_mut_ptr(), add) };
                if check(&case, done, &want, &got, &format!("add {add}")) {
                    ran += 1;
                } else {
                    declined += 1;
                }
            }
        }
        assert!(ran > 100 && declined > 50, "ran {ran}, declined {declined}");
    }
}
