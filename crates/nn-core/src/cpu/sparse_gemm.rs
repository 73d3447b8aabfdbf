//! Products whose left operand is mostly zeros: a first dense layer reading scaled pixels.
//! An MNIST digit is 81% zeros, and a zero pixel adds nothing to `x·W` nor to `xᵀ·dy`.
//!
//! The tiles stay those of the dense products (`tile_gemm.rs`), and each tile's steps are cut
//! down to the ones where one of its rows of `A` has a nonzero: for the forward product, the
//! pixels lit in one of the tile's images (43% of them for six MNIST images); for the weight
//! gradient, the images where one of the tile's pixels is lit (34% for six neighbouring
//! pixels). The nonzeros are found sixteen at a time (AVX-512 compares) and listed by
//! compressing their indices. A step left out adds `0·b` to each of the tile's sums, which
//! changes no sum, so every output has the bits of the dense tile's, with two exceptions: a
//! sum that is `-0` (every product so far a negative number too small for `f32`) stays `-0`
//! where the dense tile's `+0·b` makes it `+0`; and an infinite or NaN `b` (a weight, or a
//! gradient) in a row that only zeros reach is not read, where the dense tile's `0·∞` makes a
//! NaN. Where the data are not mostly zeros (random pixels, standardised ones), the first
//! tile's rows show it and the part is left to the dense kernels, having cost a look at a few
//! rows.

// Elsewhere than x86-64 there is no AVX-512: `part` says no, and the rest goes unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::high_water::HighWater;
use super::tile::{rows_for, Steps, LANES};
use super::tile_gemm::run_tiles;
use crate::device::Gemm;

/// The largest fraction of its steps a tile may keep for a part to be computed this way: the
/// first tile of a part with more goes dense (the kept steps cost as much as any, and the
/// lists cost a little).
pub(crate) const MAX_KEPT: f64 = 0.75;

/// The largest fraction of lit values in a weight gradient's first images for its part to be
/// computed this way (its first tile, a corner of the images, says nothing).
pub(crate) const MAX_LIT: f64 = 0.4;

/// The images of a weight gradient's batch looked at before judging whether they are mostly
/// zeros (eight digits' worth of a share is some 3 000 pixels: enough to tell).
pub(crate) const PEEK_IMAGES: usize = 8;

/// How a product's mostly-zero `A` is stored: `[m, lda]`, or `[k, lda]` when it is used
/// transposed (a weight gradient `xᵀ·dy`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SparseA {
    trans: bool,
    lda: usize,
    k: usize,
}

impl SparseA {
    /// The layout of `g`'s `A`.
    pub(crate) fn of(g: &Gemm) -> SparseA {
        SparseA { trans: g.trans_a, lda: if g.trans_a { g.m } else { g.k }, k: g.k }
    }
    /// Whether `A` is used transposed, its row length, and the shared dimension.
    pub(crate) fn layout(&self) -> (bool, usize, usize) {
        (self.trans, self.lda, self.k)
    }
}

/// A thread's lists for the sparse products, kept from call to call: which values of `A` are
/// nonzero (the weight gradient's, in mask words `M`), and one tile's steps (offsets into `A`
/// and into `B`).
#[derive(Default)]
pub(crate) struct Lists<M> {
    pub(crate) masks: Vec<M>,
    pub(crate) a_offs: Vec<u32>,
    pub(crate) b_offs: Vec<u32>,
}

/// Grows this thread's lists in `key` to the longest any thread has needed (`offsets` for the
/// step lists, `masks` for the masks); skipped while they are in use.
pub(crate) fn top_up_lists<M: Clone + Default + 'static>(
    key: &'static std::thread::LocalKey<RefCell<Lists<M>>>,
    offsets: &HighWater,
    masks: &HighWater,
) {
    let _ = key.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            offsets.grow(&mut s.a_offs, 0, 0);
            offsets.grow(&mut s.b_offs, 0, 0);
            masks.grow(&mut s.masks, 0, M::default());
        }
    });
}

/// This module's lists: 16 pixels per mask word.
type Scratch = Lists<u16>;

/// How many parts of products this process has computed from their nonzeros.
static PARTS: AtomicUsize = AtomicUsize::new(0);

/// How many parts of products this process has computed from the nonzeros of `A` alone.
pub(crate) fn parts_run() -> usize {
    PARTS.load(Ordering::Relaxed)
}

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

/// `C[rows, :] = op(A)[rows, ks]·B[ks, :]` (added to `C` when `add`), in tiles of `nv`
/// vectors, each tile over the steps where its rows of `A` are not all zero; false, having
/// written nothing, where `A` turns out not to be mostly zeros, the CPU lacks AVX-512, `C` is
/// narrower than a vector, or (transposed) `ks` is not the whole shared dimension.
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
    nv: usize,
    c: *mut f32,
    add: bool,
) -> bool {
    if !super::sparse_inputs()
        || rows.is_empty()
        || ks.is_empty()
        || (s.trans && ks != (0..s.k))
        // Offsets into the operands are u32, as in the tile's tables.
        || a.len() >= u32::MAX as usize
        || b.len() >= u32::MAX as usize
    {
        return false;
    }
    let (lda, k) = (s.lda, s.k);
    assert!(a.len() >= if s.trans { k * lda } else { rows.end * lda }, "sparse GEMM: A too small");
    assert!(b.len() >= k * n, "sparse GEMM: B too small");
    if !avx512() {
        // SAFETY: the caller's contract, and the checks above.
        #[cfg(target_arch = "x86_64")]
        return unsafe { super::sparse_avx2::part(s, a, rows, ks, b, n, c, add) };
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }
    if n < LANES {
        return false;
    }
    assert!(nv * LANES <= n, "sparse GEMM: tiles wider than C");
    #[cfg(not(target_arch = "x86_64"))]
    let done = false;
    // SAFETY: the caller's contract, and the checks above.
    #[cfg(target_arch = "x86_64")]
    let done = unsafe { tiles(s, a, rows, ks, b, n, nv, c, add) };
    done
}

#[cfg(test)]
thread_local! {
    /// Has this thread's sparse parts take the AVX2 tiles even where the CPU has AVX-512, so
    /// that a test can run that path here.
    pub(crate) static PRETEND_AVX2: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the sparse parts run the AVX-512 tiles (else the AVX2 ones of `sparse_avx2.rs`).
fn avx512() -> bool {
    #[cfg(test)]
    if PRETEND_AVX2.with(std::cell::Cell::get) {
        return false;
    }
    super::simd::has_avx512()
}

/// Counts a part computed from the nonzeros of `A` alone (see [`parts_run`]).
pub(crate) fn count_part() {
    PARTS.fetch_add(1, Ordering::Relaxed);
}

/// [`part`] past its checks: the CPU has AVX-512F, and the operands are large enough.
///
/// # Safety
/// As [`part`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles(
    s: &SparseA,
    a: &[f32],
    rows: Range<usize>,
    ks: Range<usize>,
    b: &[f32],
    n: usize,
    nv: usize,
    c: *mut f32,
    add: bool,
) -> bool {
    let (lda, k, mr) = (s.lda, s.k, rows_for(nv));
    SCRATCH.with(|scratch| {
        let sc = &mut *scratch.borrow_mut();
        let room = ks.len() + LANES;
        OFFSETS.grow(&mut sc.a_offs, room, 0);
        OFFSETS.grow(&mut sc.b_offs, room, 0);
        if s.trans {
            // SAFETY: the CPU has AVX-512F (checked above).
            if !unsafe { pixel_masks(a, lda, k, rows.clone(), &mut sc.masks) } {
                return false;
            }
        }
        for r0 in rows.clone().step_by(mr) {
            let r1 = (r0 + mr).min(rows.end);
            let mut row_offs = [0u32; 8];
            // SAFETY (both arms): the CPU has AVX-512F; the lists have room for all steps
            // plus a vector (grown above; the masks were made for these rows).
            let kept = unsafe {
                if s.trans {
                    (r0..r1).for_each(|r| row_offs[r - r0] = r as u32);
                    images_lit(&sc.masks, k, r0 - rows.start, r1 - r0, lda, n, &mut sc.a_offs, &mut sc.b_offs)
                } else {
                    (r0..r1).for_each(|r| row_offs[r - r0] = (r * lda) as u32);
                    pixels_lit(a, lda, r0..r1, ks.clone(), n, &mut sc.a_offs, &mut sc.b_offs)
                }
            };
            if r0 == rows.start && kept as f64 > MAX_KEPT * ks.len() as f64 {
                return false;
            }
            let steps = Steps::indexed(&sc.a_offs[..kept], &sc.b_offs[..kept]);
            // SAFETY: rows r0..r1 of `c` are ours (the caller's contract).
            unsafe { run_tiles(nv, a, &row_offs[..r1 - r0], &steps, b, &[], n, c.add(r0 * n), add) };
        }
        count_part();
        true
    })
}

/// The pixels `ks` of `A` (stored `[m, lda]`) lit in one of the images `rows`, listed as
/// steps: `a_offs` the pixel (its offset in an image), `b_offs` the offset of its row of `B`
/// (`n` wide). Returns how many.
///
/// # Safety
/// The CPU has AVX-512F; the lists have room for `ks.len() + 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
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
    assert!(
        rows.end * lda <= a.len()
            && ks.end <= lda
            && a_offs.len() >= ks.len() + LANES
            && b_offs.len() >= ks.len() + LANES
    );
    let mut kept = 0;
    for j in ks.clone().step_by(LANES) {
        let lanes = lane_mask(ks.end - j);
        let mut lit: __mmask16 = 0;
        for r in rows.clone() {
            // SAFETY: lanes inside row r's pixels `ks` (asserted above).
            let v = unsafe { _mm512_maskz_loadu_ps(lanes, a.as_ptr().add(r * lda + j)) };
            lit |= _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(lanes, v, _mm512_setzero_ps());
        }
        // SAFETY: `kept ≤ j - ks.start`, so 16 steps from `kept` fit (asserted above).
        kept = unsafe { keep(lit, j, (1, n), a_offs, b_offs, kept) };
    }
    kept
}

/// For a weight gradient (`A` stored `[k, lda]`, used transposed), per block of 16 of the
/// pixels `rows` and per image, which of them are lit: `masks[block·kp + i]`, `kp` = `k`
/// rounded up to 16, with one block of zeros past the last. False, with the masks unfinished,
/// where the first images are not mostly zeros.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pixel_masks(a: &[f32], lda: usize, k: usize, rows: Range<usize>, masks: &mut Vec<u16>) -> bool {
    use std::arch::x86_64::*;
    assert!(k * lda <= a.len() && rows.end <= lda);
    let (blocks, kp) = (rows.len().div_ceil(LANES), k.div_ceil(LANES) * LANES);
    masks.clear();
    MASKS.grow(masks, (blocks + 1) * kp, 0);
    let peek = k.min(PEEK_IMAGES);
    let mut lit = 0;
    for i in 0..k {
        for (blk, j) in rows.clone().step_by(LANES).enumerate() {
            let lanes = lane_mask(rows.end - j);
            // SAFETY: lanes inside image i's pixels `rows` (asserted above).
            let v = unsafe { _mm512_maskz_loadu_ps(lanes, a.as_ptr().add(i * lda + j)) };
            let m = _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(lanes, v, _mm512_setzero_ps());
            masks[blk * kp + i] = m;
            lit += m.count_ones() as usize;
        }
        if i + 1 == peek && lit as f64 > MAX_LIT * (peek * rows.len()) as f64 {
            return false;
        }
    }
    true
}

/// The images in which one of the `len ≤ 8` pixels from `at` (counted from the first of the
/// masks' pixels) is lit, listed as steps: `a_offs` the image's offset in `A` (`i·lda`),
/// `b_offs` the offset of its row of `B` (`i·n`). Returns how many.
///
/// # Safety
/// The CPU has AVX-512F; `masks` as [`pixel_masks`] made them for `k` images and pixels past
/// `at + len`; the lists have room for `k + 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn images_lit(
    masks: &[u16],
    k: usize,
    at: usize,
    len: usize,
    lda: usize,
    n: usize,
    a_offs: &mut [u32],
    b_offs: &mut [u32],
) -> usize {
    use std::arch::x86_64::*;
    let kp = k.div_ceil(LANES) * LANES;
    let (blk, shift) = (at / LANES, at % LANES);
    assert!(len <= 8 && (blk + 2) * kp <= masks.len() && a_offs.len() >= k + LANES && b_offs.len() >= k + LANES);
    // The tile's pixels among the 32 of this block of masks and the next.
    let want = _mm512_set1_epi32((((1u32 << len) - 1) << shift) as i32);
    let mut kept = 0;
    for i in (0..k).step_by(LANES) {
        // SAFETY: 16 masks from `i < kp` in each of two blocks (asserted above).
        let (lo, hi) = unsafe {
            (
                _mm512_cvtepu16_epi32(_mm256_loadu_si256(masks.as_ptr().add(blk * kp + i).cast())),
                _mm512_cvtepu16_epi32(_mm256_loadu_si256(masks.as_ptr().add((blk + 1) * kp + i).cast())),
            )
        };
        let both = _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi));
        let lit = _mm512_mask_test_epi32_mask(lane_mask(k - i), both, want);
        // SAFETY: `kept ≤ i`, so 16 steps from `kept` fit (asserted above).
        kept = unsafe { keep(lit, i, (lda, n), a_offs, b_offs, kept) };
    }
    kept
}

/// Appends the steps `first + l` for the lanes `l` set in `lit` to the lists, from entry
/// `kept`: in `a_offs` the step times `scale.0`, in `b_offs` times `scale.1`. Returns the new
/// length.
///
/// # Safety
/// The CPU has AVX-512F; both lists have room for 16 entries from `kept`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn keep(
    lit: u16,
    first: usize,
    scale: (usize, usize),
    a_offs: &mut [u32],
    b_offs: &mut [u32],
    kept: usize,
) -> usize {
    use std::arch::x86_64::*;
    if lit == 0 {
        return kept;
    }
    debug_assert!(a_offs.len() >= kept + LANES && b_offs.len() >= kept + LANES);
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let step = _mm512_add_epi32(iota, _mm512_set1_epi32(first as i32));
    let a_at = _mm512_mullo_epi32(step, _mm512_set1_epi32(scale.0 as i32));
    let b_at = _mm512_mullo_epi32(step, _mm512_set1_epi32(scale.1 as i32));
    // SAFETY: 16 entries from `kept` lie inside both lists (the caller's contract).
    unsafe {
        _mm512_storeu_si512(a_offs.as_mut_ptr().add(kept).cast(), _mm512_maskz_compress_epi32(lit, a_at));
        _mm512_storeu_si512(b_offs.as_mut_ptr().add(kept).cast(), _mm512_maskz_compress_epi32(lit, b_at));
    }
    kept + lit.count_ones() as usize
}

/// The lanes of a vector whose values lie among the `left` still to go.
#[cfg(target_arch = "x86_64")]
fn lane_mask(left: usize) -> u16 {
    if left >= LANES {
        0xffff
    } else {
        ((1u32 << left) - 1) as u16
    }
}

/// What the sparse products' tests share: a generator, and random products to run.
#[cfg(test)]
pub(crate) mod testing {
    use std::ops::Range;

    use super::SparseA;
    use crate::device::Gemm;

    /// A small deterministic generator.
    pub(crate) struct Lcg(pub(crate) u64);
    impl Lcg {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        pub(crate) fn unit(&mut self) -> f32 {
            (self.next() % 10_000) as f32 / 10_000.0
        }
    }

    /// A random product and part of it: `x` (images × inputs, with a random density of
    /// nonzeros, from none to all), used as `A` or transposed; `B`; a start for `C`; a range
    /// of rows not aligned to tiles and a share of `k`.
    pub(crate) struct Case {
        pub(crate) s: SparseA,
        pub(crate) x: Vec<f32>,
        pub(crate) b: Vec<f32>,
        pub(crate) start: Vec<f32>,
        pub(crate) n: usize,
        pub(crate) rows: Range<usize>,
        pub(crate) ks: Range<usize>,
        pub(crate) what: String,
    }

    /// Case `i` (even: forward, odd: transposed) with `C` one of `widths` wide.
    pub(crate) fn random_case(rng: &mut Lcg, i: usize, inputs: &[usize], widths: &[usize]) -> Case {
        let trans = i % 2 == 1;
        let pick = |rng: &mut Lcg, from: &[usize]| from[rng.next() as usize % from.len()];
        let inputs = pick(rng, inputs);
        let images = 1 + rng.next() as usize % 200;
        let n = pick(rng, widths);
        let density = [0.0, 0.02, 0.1, 0.2, 0.3, 0.6, 1.0][rng.next() as usize % 7];
        let x: Vec<f32> =
            (0..images * inputs).map(|_| if rng.unit() < density { 0.001 + rng.unit() } else { 0.0 }).collect();
        let (m, k) = if trans { (inputs, images) } else { (images, inputs) };
        let r0 = rng.next() as usize % m;
        let rows = r0..r0 + 1 + rng.next() as usize % (m - r0);
        let ks = if trans {
            0..k
        } else {
            let k0 = rng.next() as usize % k;
            k0..k0 + 1 + rng.next() as usize % (k - k0)
        };
        let b: Vec<f32> = (0..k * n).map(|_| rng.unit() - 0.5).collect();
        let start: Vec<f32> = (0..m * n).map(|_| rng.unit() - 0.25).collect();
        let what = format!("trans {trans} m {m} k {k} n {n} rows {rows:?} ks {ks:?}");
        Case { s: SparseA::of(&Gemm::new(trans, false, m, n, k)), x, b, start, n, rows, ks, what }
    }

    /// Checks a part's output `got` against `want` (a part that ran) or against the start (a
    /// part that declined); returns whether it ran.
    pub(crate) fn check(case: &Case, done: bool, want: &[f32], got: &[f32], what: &str) -> bool {
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        if done {
            assert!(same(want, got), "{} {what}: other bits", case.what);
        } else {
            assert!(same(&case.start, got), "{} {what}: declined but wrote", case.what);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{check, random_case, Lcg};
    use super::*;
    use crate::cpu::tile_gemm::dense_nv;

    /// `count` digit-like 28×28 images (rows of 784): a few thick strokes on a zero
    /// background, about a fifth of the pixels lit.
    fn digits(count: usize, rng: &mut Lcg) -> Vec<f32> {
        let mut x = vec![0f32; count * 784];
        for img in x.chunks_exact_mut(784) {
            for _ in 0..6 {
                let (mut r, mut c) = (6.0 + 16.0 * rng.unit(), 6.0 + 16.0 * rng.unit());
                let (dr, dc) = (rng.unit() - 0.5, rng.unit() - 0.5);
                for _ in 0..14 {
                    for (or, oc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let (pr, pc) = (r as usize + or, c as usize + oc);
                        if pr < 28 && pc < 28 {
                            img[pr * 28 + pc] = 0.1 + 0.9 * rng.unit();
                        }
                    }
                    r = (r + dr * 1.5).clamp(0.0, 27.0);
                    c = (c + dc * 1.5).clamp(0.0, 27.0);
                }
            }
        }
        x
    }

    /// The dense tiles' `C[rows] (+)= op(A)[rows, ks]·B[ks]`, as `tile_gemm` computes it.
    #[allow(clippy::too_many_arguments)]
    fn dense(
        s: &SparseA,
        a: &[f32],
        rows: Range<usize>,
        ks: Range<usize>,
        b: &[f32],
        n: usize,
        c: &mut [f32],
        add: bool,
    ) {
        let nv = dense_nv(rows.len(), n);
        let row_offs: Vec<u32> = rows.clone().map(|r| if s.trans { r } else { r * s.lda } as u32).collect();
        let offs: Vec<u32> = ks.clone().map(|k| if s.trans { k * s.lda } else { k } as u32).collect();
        // SAFETY: `c` holds these rows.
        unsafe {
            run_tiles(
                nv,
                a,
                &row_offs,
                &Steps::new(&offs),
                &b[ks.start * n..],
                &[],
                n,
                c.as_mut_ptr().add(rows.start * n),
                add,
            )
        };
    }

    #[test]
    fn sparse_parts_have_the_dense_tiles_bits() {
        if !(crate::cpu::sparse_inputs() && avx512()) {
            return;
        }
        let mut rng = Lcg(7);
        let images = 45;
        let x = digits(images, &mut rng);
        let lit = x.iter().filter(|&&v| v != 0.0).count() as f64 / x.len() as f64;
        assert!((0.08..0.35).contains(&lit), "test images {lit} lit");
        for n in [16, 20, 100, 128, 144, 512] {
            for (trans, rows, ks) in [
                (false, 0..images, 0..784),
                (false, 5..40, 384..784),
                (false, 0..images, 0..384),
                (true, 0..784, 0..images),
                (true, 384..784, 0..images),
                (true, 96..200, 0..images),
            ] {
                let (m, k) = if trans { (784, images) } else { (images, 784) };
                let s = SparseA::of(&Gemm::new(trans, false, m, n, k));
                let b: Vec<f32> = (0..k * n).map(|_| rng.unit() - 0.5).collect();
                let start: Vec<f32> = (0..m * n).map(|_| rng.unit()).collect();
                for add in [false, true] {
                    let (mut want, mut got) = (start.clone(), start.clone());
                    dense(&s, &x, rows.clone(), ks.clone(), &b, n, &mut want, add);
                    let nv = dense_nv(rows.len(), n);
                    // SAFETY: `got` is the whole `[m, n]` output.
                    let done = unsafe { part(&s, &x, rows.clone(), ks.clone(), &b, n, nv, got.as_mut_ptr(), add) };
                    assert!(done, "n {n} trans {trans} rows {rows:?} ks {ks:?}: left to the dense product");
                    let same = want.iter().zip(&got).all(|(w, g)| w.to_bits() == g.to_bits());
                    assert!(same, "n {n} trans {trans} rows {rows:?} ks {ks:?} add {add}: not the dense tiles' bits");
                }
            }
        }
    }

    #[test]
    fn random_parts_have_the_dense_tiles_bits_or_write_nothing() {
        if !(crate::cpu::sparse_inputs() && avx512()) {
            return;
        }
        // Shapes, row ranges not aligned to the tiles, shares of `k`, densities from none to
        // all, every tile width: each part either has the dense tiles' bits or declines and
        // leaves its output alone.
        let mut rng = Lcg(12345);
        let (mut ran, mut declined) = (0, 0);
        let widths = [16, 17, 20, 31, 32, 47, 64, 65, 100, 128, 200, 256, 257, 300];
        for i in 0..800 {
            let case = random_case(&mut rng, i, &[1, 15, 16, 17, 33, 100, 784, 1000], &widths);
            let (s, n, rows, ks) = (&case.s, case.n, case.rows.clone(), case.ks.clone());
            let (trans, lda, _) = s.layout();
            for nv in (1..=4).filter(|nv| nv * LANES <= n) {
                for add in [false, true] {
                    let (mut want, mut got) = (case.start.clone(), case.start.clone());
                    let row_offs: Vec<u32> = rows.clone().map(|r| if trans { r } else { r * lda } as u32).collect();
                    let offs: Vec<u32> = ks.clone().map(|kk| if trans { kk * lda } else { kk } as u32).collect();
                    let (x, b) = (&case.x, &case.b[ks.start * n..]);
                    let at = want[rows.start * n..].as_mut_ptr();
                    // SAFETY (both): the outputs are whole `[m, n]` matrices.
                    unsafe { run_tiles(nv, x, &row_offs, &Steps::new(&offs), b, &[], n, at, add) };
                    let done = unsafe { part(s, x, rows.clone(), ks.clone(), &case.b, n, nv, got.as_mut_ptr(), add) };
                    if check(&case, done, &want, &got, &format!("nv {nv} add {add}")) {
                        ran += 1;
                    } else {
                        declined += 1;
                    }
                }
            }
        }
        assert!(ran > 200 && declined > 200, "ran {ran}, declined {declined}");
    }

    #[test]
    fn dense_or_narrow_operands_are_left_to_the_dense_product() {
        let mut rng = Lcg(3);
        let (m, k, n) = (40, 784, 64);
        let b: Vec<f32> = (0..k * n).map(|_| rng.unit()).collect();
        // Random pixels (none zero) and standardised ones (no zeros either).
        let noise: Vec<f32> = (0..m * k).map(|_| 0.01 + rng.unit()).collect();
        let standardised: Vec<f32> = digits(m, &mut rng).iter().map(|v| (v - 0.1307) / 0.3081).collect();
        for x in [&noise, &standardised] {
            for trans in [false, true] {
                let (rows, kk) = if trans { (784, m) } else { (m, 784) };
                let s = SparseA::of(&Gemm::new(trans, false, rows, n, kk));
                let mut c = vec![7f32; rows * n];
                // SAFETY: `c` is the whole output.
                let done = unsafe { part(&s, x, 0..rows, 0..kk, &b, n, dense_nv(rows, n), c.as_mut_ptr(), false) };
                assert!(!done && c.iter().all(|&v| v == 7.0), "trans {trans}: a dense operand taken as sparse");
            }
        }
        // Narrower than a vector: the dense product's panel (the AVX2 tiles take it).
        if !avx512() {
            return;
        }
        let x = digits(m, &mut rng);
        let s = SparseA::of(&Gemm::new(false, false, m, 10, 784));
        let mut c = vec![0f32; m * 10];
        // SAFETY: `c` is the whole output.
        assert!(!unsafe { part(&s, &x, 0..m, 0..784, &b, 10, 1, c.as_mut_ptr(), false) });
    }

    #[test]
    fn a_nan_or_an_infinite_input_reaches_its_outputs() {
        if !(crate::cpu::sparse_inputs() && avx512()) {
            return;
        }
        let mut rng = Lcg(5);
        let (m, n) = (12, 32);
        let mut x = digits(m, &mut rng);
        x[3 * 784 + 2] = f32::NAN;
        x[5 * 784 + 780] = f32::INFINITY;
        let b: Vec<f32> = (0..784 * n).map(|_| rng.unit() + 0.5).collect();
        let s = SparseA::of(&Gemm::new(false, false, m, n, 784));
        let mut c = vec![0f32; m * n];
        // SAFETY: `c` is the whole output.
        assert!(unsafe { part(&s, &x, 0..m, 0..784, &b, n, dense_nv(m, n), c.as_mut_ptr(), false) });
        assert!(c[3 * n..4 * n].iter().all(|v| v.is_nan()));
        assert!(c[5 * n..6 * n].iter().all(|v| v.is_infinite()));
        assert!(c[..3 * n].iter().all(|v| v.is_finite()));
    }
}
