//! Operands of a bfloat16 product rounded from f32 and laid out as AMX tiles (`amx.rs`).
//!
//! A tile is 16 rows of 64 bytes. `A`'s tiles hold 16 rows of `op(A)` by 32 steps of `k`
//! (row `r` = 32 bf16 values in `k`'s order); `B`'s hold 16 pairs of steps by 16 columns of
//! `op(B)`, each column's two values side by side (row `p` = for each column `j` the values at
//! steps `2p` and `2p + 1`: the layout AMX's `tdpbf16ps` reads). Both are made from 16 vectors
//! of sixteen 32-bit pairs, one vector per row of `op(A)` (or column of `op(B)`) or one per
//! pair of steps, as the operand lies in memory; a 16×16 transpose turns one into the other.
//! Values past the operand's edge are zeros, so padded steps add nothing.
//!
//! Rounding is to nearest, ties to even (`vcvtne2ps2bf16`), as PyTorch's `.to(bfloat16)`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// One AMX tile: 16 rows of sixteen bf16 pairs (1 KiB), aligned as `tileloadd` likes it.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Tile(pub(crate) [u32; 256]);

impl Tile {
    /// A tile of zeros.
    pub(crate) const ZERO: Tile = Tile([0; 256]);
}

/// Where one tile's values lie: element `(o, s)` (row or column `o` of the tile's 16, step `s`
/// of its 32) at `src[o·o_stride + s·s_stride]`, for `o < outer` and `s < steps` (zeros past).
/// One of the two strides is 1.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Source {
    /// Elements between consecutive rows (of `A`) or columns (of `B`).
    pub(crate) o_stride: usize,
    /// Elements between consecutive steps of `k`.
    pub(crate) s_stride: usize,
    /// Rows or columns present (at most 16).
    pub(crate) outer: usize,
    /// Steps present (at most 32).
    pub(crate) steps: usize,
}

/// Packs one tile from `src` (its first element): `A`'s (`of_a`: rows by steps) or `B`'s
/// (pairs of steps by columns). The operand gives 16 vectors one per row (or column) where its
/// steps are contiguous, one per pair of steps where its rows (or columns) are; `A`'s tile
/// wants the first, `B`'s the second, and the other way round takes a transpose. Where none is
/// needed each vector is stored into the tile as it is made; otherwise the 16 are made, then
/// transposed and stored. (Made and stored after, through the stack, took 41–53 ns a tile in
/// cache, 47–83 split; stored as made, 35–45 and 43–57. An early version had found storing
/// as made twice as slow, its stores aliasing loads 4 KiB apart in a row-major `B`: not so
/// now, 81 ns against 84 with rows of 1024 floats.)
///
/// # Safety
/// The CPU has AVX-512F, BW and BF16; every element `(o, s)` named by `at` lies in `src`'s
/// allocation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn pack(src: *const f32, at: Source, tile: &mut Tile, of_a: bool) {
    if (at.s_stride == 1) == of_a {
        // SAFETY: the function's contract.
        unsafe { straight(src, at, tile.rows(), None) };
        return;
    }
    // SAFETY: the function's contract.
    let (v, _) = unsafe { vectors(src, at, false) };
    store(&transpose(v), tile);
}

/// Packs the tile of [`pack`] split in two: `hi` holds each value rounded to bfloat16 (as
/// [`pack`]'s tile), `lo` what that rounding left, `x − hi`, rounded too. `hi + lo` carries 16
/// of `x`'s 24 significant bits (and the sum of the three products `hi·hi' + hi·lo' + lo·hi'`
/// about as many of `x·x'`), as PyTorch's matmul precision "high" splits its operands on CPUs
/// without TF32. An infinite `x` leaves a NaN in `lo`.
///
/// # Safety
/// As [`pack`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn pack_split(src: *const f32, at: Source, hi: &mut Tile, lo: &mut Tile, of_a: bool) {
    if (at.s_stride == 1) == of_a {
        // SAFETY: the function's contract.
        unsafe { straight(src, at, hi.rows(), Some(lo.rows())) };
        return;
    }
    // SAFETY: the function's contract.
    let (h, l) = unsafe { vectors(src, at, true) };
    store(&transpose(h), hi);
    store(&transpose(l), lo);
}

/// Writes a tile (and, with `rest`, its split's second tile) whose operand lies as the tile
/// wants it, each row as it is made, zeros past the operand's edge.
///
/// # Safety
/// As [`pack`]; `(at.s_stride == 1) == of_a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn straight(src: *const f32, at: Source, v: &mut [__m512i; 16], mut rest: Option<&mut [__m512i; 16]>) {
    // SAFETY: the caller's contract.
    let made = unsafe {
        if at.s_stride == 1 {
            by_outer(src, at, v, rest.as_deref_mut());
            at.outer.min(16)
        } else {
            by_pair(src, at, v, rest.as_deref_mut());
            at.steps.div_ceil(2).min(16)
        }
    };
    for r in made..16 {
        v[r] = _mm512_setzero_si512();
        if let Some(rest) = rest.as_deref_mut() {
            rest[r] = _mm512_setzero_si512();
        }
    }
}

/// The 16 vectors of a tile (see [`pack`]) as the operand lies: rounded, and with `split` what
/// the rounding left, rounded (zeros otherwise).
///
/// # Safety
/// As [`pack`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
unsafe fn vectors(src: *const f32, at: Source, split: bool) -> ([__m512i; 16], [__m512i; 16]) {
    let mut hi = [_mm512_setzero_si512(); 16];
    let mut lo = [_mm512_setzero_si512(); 16];
    // SAFETY: the caller's contract.
    unsafe {
        if at.s_stride == 1 {
            by_outer(src, at, &mut hi, split.then_some(&mut lo));
        } else {
            by_pair(src, at, &mut hi, split.then_some(&mut lo));
        }
    }
    (hi, lo)
}

/// `x0` and `x1` rounded to bfloat16, side by side (`x0`'s in the low 16 words), and with
/// `split` what each rounding left (`x − round(x)`), rounded, laid out the same way.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[inline]
fn round_pair(x1: __m512, x0: __m512, split: bool) -> (__m512i, __m512i) {
    // SAFETY (both transmutes): reinterpret 512 bits.
    let hi = unsafe { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(x1, x0)) };
    if !split {
        return (hi, _mm512_setzero_si512());
    }
    // The rounded values back in f32: a bfloat16 is the high half of an f32.
    let widen = |words: __m256i| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(words)));
    let h0 = widen(_mm512_castsi512_si256(hi));
    let h1 = widen(_mm512_extracti64x4_epi64::<1>(hi));
    // SAFETY: as above.
    let lo = unsafe {
        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(_mm512_sub_ps(x1, h1), _mm512_sub_ps(x0, h0)))
    };
    (hi, lo)
}

/// Writes the 16 vectors as the tile's rows (vector stores; a plain copy of the array became
/// a call to `memcpy`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn store(v: &[__m512i; 16], tile: &mut Tile) {
    for (v, row) in v.iter().zip(tile.rows()) {
        *row = *v;
    }
}

#[cfg(target_arch = "x86_64")]
impl Tile {
    /// The tile's 16 rows as vectors.
    fn rows(&mut self) -> &mut [__m512i; 16] {
        // SAFETY: a tile is 1 KiB aligned to 64 bytes, as 16 vectors of 64 bytes are; every bit
        // pattern is valid for both.
        unsafe { &mut *(self as *mut Tile).cast::<[__m512i; 16]>() }
    }
}

/// The lanes below `n` (at most 16).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Vector `o` = the 32 steps of row (or column) `o`, rounded and paired: lane `p` holds steps
/// `2p` (low half) and `2p + 1`; in `rest` (when asked for) the same of what the rounding
/// left. Needs `s_stride == 1`; vectors past `at.outer` are left as they are (zeros).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn by_outer(src: *const f32, at: Source, v: &mut [__m512i; 16], mut rest: Option<&mut [__m512i; 16]>) {
    let (first, second) = (lanes(at.steps), lanes(at.steps.saturating_sub(16)));
    for o in 0..at.outer.min(16) {
        // SAFETY: row o is present; the masks load only the steps present (masked lanes do
        // not fault), and the second half is only addressed when it has some.
        let (x0, x1) = unsafe {
            let row = src.add(o * at.o_stride);
            let x0 = _mm512_maskz_loadu_ps(first, row);
            (x0, if at.steps > 16 { _mm512_maskz_loadu_ps(second, row.add(16)) } else { _mm512_setzero_ps() })
        };
        let (h, l) = round_pair(x1, x0, rest.is_some());
        v[o] = h;
        if let Some(rest) = rest.as_deref_mut() {
            rest[o] = l;
        }
    }
}

/// Vector `p` = steps `2p` and `2p + 1` of the 16 rows (or columns), rounded and paired: lane
/// `o` holds row `o`'s step `2p` (low half) and `2p + 1`; in `rest` (when asked for) the same
/// of what the rounding left. Needs `o_stride == 1`; vectors past the steps are left as they
/// are (zeros).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn by_pair(src: *const f32, at: Source, v: &mut [__m512i; 16], mut rest: Option<&mut [__m512i; 16]>) {
    let m = lanes(at.outer);
    // Word 2o takes the first step's value o, word 2o + 1 the second's (at 16 + o).
    let interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
        16, 0,
    );
    let load = |s: usize| {
        if s < at.steps {
            // SAFETY: step s is present; the mask loads only the rows present.
            unsafe { _mm512_maskz_loadu_ps(m, src.add(s * at.s_stride)) }
        } else {
            _mm512_setzero_ps()
        }
    };
    for p in 0..at.steps.div_ceil(2).min(16) {
        let (h, l) = round_pair(load(2 * p + 1), load(2 * p), rest.is_some());
        v[p] = _mm512_permutexvar_epi16(interleave, h);
        if let Some(rest) = rest.as_deref_mut() {
            rest[p] = _mm512_permutexvar_epi16(interleave, l);
        }
    }
}

/// The 16×16 transpose of 32-bit lanes: lane `j` of vector `i` goes to lane `i` of vector `j`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose(r: [__m512i; 16]) -> [__m512i; 16] {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_si512(); 16];
    for i in 0..4 {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for h in [0, 8] {
        for i in 0..4 {
            t[h + i] = _mm512_shuffle_i32x4::<0x88>(u[h + i], u[h + i + 4]);
            t[h + i + 4] = _mm512_shuffle_i32x4::<0xdd>(u[h + i], u[h + i + 4]);
        }
    }
    for i in 0..8 {
        u[i] = _mm512_shuffle_i32x4::<0x88>(t[i], t[i + 8]);
        u[i + 8] = _mm512_shuffle_i32x4::<0xdd>(t[i], t[i + 8]);
    }
    u
}

/// `x` rounded to bfloat16 (to nearest, ties to even; NaN stays NaN), as its 16 bits: the
/// reference the packers are tested against.
#[cfg(test)]
pub(crate) fn bf16_bits(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn has_bf16() -> bool {
        std::arch::is_x86_feature_detected!("avx512bf16") && std::arch::is_x86_feature_detected!("avx512bw")
    }

    /// The tile's value at row `r`, word `w` (of 32).
    fn word(t: &Tile, r: usize, w: usize) -> u16 {
        (t.0[16 * r + w / 2] >> (16 * (w % 2))) as u16
    }

    #[test]
    fn tiles_hold_the_rounded_values_and_their_rests_where_amx_reads_them_and_zeros_past_the_edges() {
        if !has_bf16() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        // Values that round differently: ties to even, carries into the exponent, negatives.
        let val = |i: usize| {
            (i as f32 * 0.37 - 40.0) * (1.0 + (i % 7) as f32 * 1.0e-3) + f32::from_bits(0x8000 * (i as u32 % 3))
        };
        let data: Vec<f32> = (0..64 * 64).map(val).collect();
        for (outer, steps) in [(16, 32), (5, 32), (16, 7), (3, 17), (1, 1), (0, 0)] {
            // Row-major storage, either way round: (o, s) at o·64 + s, or at s·64 + o.
            for (o_stride, s_stride) in [(64, 1), (1, 64)] {
                let at = Source { o_stride, s_stride, outer, steps };
                let (mut a, mut b) = (Tile::ZERO, Tile::ZERO);
                // SAFETY: the CPU has the features (checked); every (o, s) lies in `data`.
                unsafe {
                    pack(data.as_ptr(), at, &mut a, true);
                    pack(data.as_ptr(), at, &mut b, false);
                }
                // Split: the same rounded values, and what each rounding left, rounded.
                let (mut a_hi, mut a_lo, mut b_hi, mut b_lo) = (Tile::ZERO, Tile::ZERO, Tile::ZERO, Tile::ZERO);
                // SAFETY: as above.
                unsafe {
                    pack_split(data.as_ptr(), at, &mut a_hi, &mut a_lo, true);
                    pack_split(data.as_ptr(), at, &mut b_hi, &mut b_lo, false);
                }
                for o in 0..16 {
                    for s in 0..32 {
                        let x = (o < outer && s < steps).then(|| data[o * o_stride + s * s_stride]);
                        let want = x.map_or(0, bf16_bits);
                        let left = x.map_or(0, |x| bf16_bits(x - f32::from_bits(u32::from(bf16_bits(x)) << 16)));
                        assert_eq!(word(&a, o, s), want, "A, row {o}, step {s}, {at:?}");
                        assert_eq!(word(&b, s / 2, 2 * o + s % 2), want, "B, column {o}, step {s}, {at:?}");
                        assert_eq!(word(&a_hi, o, s), want, "split A, row {o}, step {s}, {at:?}");
                        assert_eq!(word(&b_hi, s / 2, 2 * o + s % 2), want, "split B, column {o}, step {s}, {at:?}");
                        assert_eq!(word(&a_lo, o, s), left, "split A's rest, row {o}, step {s}, {at:?}");
                        assert_eq!(word(&b_lo, s / 2, 2 * o + s % 2), left, "split B's rest, column {o}, step {s}");
                    }
                }
            }
        }
    }
}
