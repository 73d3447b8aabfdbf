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

/// How a tile's f32 values become bfloat16: the tiles [`pack`] makes for each 16 × 32 values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Form {
    /// Each value rounded to bfloat16: one tile.
    Round,
    /// Split in two, `x ≈ hi + lo`: `hi` the value rounded, `lo` what that left, rounded. 16 of
    /// `x`'s 24 significant bits; as PyTorch's matmul precision "high" splits its operands on
    /// CPUs without TF32. Two tiles, `hi` first.
    Split,
    /// Split in three, `x = hi + mid + lo`: `hi` the top 8 significant bits of `x` (cut, not
    /// rounded), `mid` the top 8 of what that left, `lo` the rest. All of `x`'s 24 bits, but
    /// for values so small that a part falls below bfloat16's normal range (about 10⁻³⁸, which
    /// AMX flushes to zero). Three tiles, `hi` first.
    Split3,
    /// Integers: each value times the divisor `d`, which must give an integer of at most 256
    /// in magnitude (within two units in its last place, as `q / d` rounded to f32 gives
    /// back): one tile of those integers, exact in bfloat16. [`pack`] says whether every value
    /// was one (a NaN counts as one and stays a NaN).
    Levels(f32),
}

impl Form {
    /// Tiles per 16 × 32 values.
    pub(crate) const fn tiles(self) -> usize {
        match self {
            Form::Round | Form::Levels(_) => 1,
            Form::Split => 2,
            Form::Split3 => 3,
        }
    }
}

/// Packs 16 rows (or columns) by 32 steps from `src` (its first element) into `tiles` (as many
/// as `form` makes, in its order): `A`'s (`of_a`: rows by steps) or `B`'s (pairs of steps by
/// columns). The operand gives 16 vectors one per row (or column) where its steps are
/// contiguous, one per pair of steps where its rows (or columns) are; `A`'s tile wants the
/// first, `B`'s the second, and the other way round takes a transpose. Where none is needed
/// each vector is stored into the tile as it is made; otherwise the 16 are made, then
/// transposed and stored. (Made and stored after, through the stack, took 41–53 ns a tile in
/// cache, 47–83 split; stored as made, 35–45 and 43–57. An early version had found storing
/// as made twice as slow, its stores aliasing loads 4 KiB apart in a row-major `B`: not so
/// now, 81 ns against 84 with rows of 1024 floats.)
///
/// Returns false where the form is [`Form::Levels`] and a value is not one of its integers
/// (the tile then holds the wrong numbers); true otherwise.
///
/// # Safety
/// The CPU has AVX-512F, BW, DQ and BF16; every element `(o, s)` named by `at` lies in `src`'s
/// allocation; `tiles` holds `form.tiles()` tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
pub(crate) unsafe fn pack(src: *const f32, at: Source, tiles: &mut [Tile], form: Form, of_a: bool) -> bool {
    let parts = form.tiles();
    assert!(tiles.len() == parts, "{form:?} makes {parts} tiles");
    let mut ok = 0xffff;
    if (at.s_stride == 1) == of_a {
        // SAFETY: a tile is 1 KiB aligned to 64 bytes, as 16 vectors of 64 bytes are; every bit
        // pattern is valid for both.
        let rows = unsafe { std::slice::from_raw_parts_mut(tiles.as_mut_ptr().cast::<[__m512i; 16]>(), parts) };
        // SAFETY: the function's contract.
        unsafe { vectors(src, at, form, rows, &mut ok) };
        let made = if at.s_stride == 1 { at.outer.min(16) } else { at.steps.div_ceil(2).min(16) };
        for v in rows {
            v[made..].fill(_mm512_setzero_si512());
        }
    } else {
        let mut v = [[_mm512_setzero_si512(); 16]; 3];
        // SAFETY: the function's contract.
        unsafe { vectors(src, at, form, &mut v[..parts], &mut ok) };
        for (v, tile) in v.iter().zip(tiles) {
            for (v, row) in transpose(*v).iter().zip(tile.rows()) {
                *row = *v;
            }
        }
    }
    ok == 0xffff
}

/// The vectors of a tile's parts (see [`pack`]) as the operand lies, into `out[part]`; past
/// the operand's edge they are left as they are. Clears the lanes of `ok` that saw a value
/// [`Form::Levels`] does not take.
///
/// # Safety
/// As [`pack`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
#[inline]
unsafe fn vectors(src: *const f32, at: Source, form: Form, out: &mut [[__m512i; 16]], ok: &mut __mmask16) {
    // SAFETY: the caller's contract.
    unsafe {
        if at.s_stride == 1 {
            by_outer(src, at, form, out, ok);
        } else {
            by_pair(src, at, form, out, ok);
        }
    }
}

/// `x0` and `x1` in `form`, side by side (`x0`'s in the low 16 words of each part); parts the
/// form does not make are zeros. Clears the lanes of `ok` where [`Form::Levels`] meets a value
/// that is not one of its integers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
#[inline]
fn convert_pair(x1: __m512, x0: __m512, form: Form, ok: &mut __mmask16) -> [__m512i; 3] {
    // SAFETY (the transmutes): reinterpret 512 bits.
    let round = |x1, x0| unsafe { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(x1, x0)) };
    // The rounded values back in f32: a bfloat16 is the high half of an f32.
    let widen = |words: __m256i| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(words)));
    // `x - h`, but 0 where `x` is infinite (`inf - inf` would make a NaN of an infinite
    // operand, where f32 products give ±inf); a NaN stays a NaN.
    let less = |x: __m512, h: __m512| _mm512_maskz_sub_ps(!_mm512_fpclass_ps_mask::<0x18>(x), x, h);
    let rest = |x1, x0, r: __m512i| {
        let (h0, h1) = (widen(_mm512_castsi512_si256(r)), widen(_mm512_extracti64x4_epi64::<1>(r)));
        (less(x1, h1), less(x0, h0))
    };
    let zero = _mm512_setzero_si512();
    match form {
        Form::Round => [round(x1, x0), zero, zero],
        Form::Split => {
            let hi = round(x1, x0);
            let (r1, r0) = rest(x1, x0, hi);
            [hi, round(r1, r0), zero]
        }
        Form::Split3 => {
            // Cut, not rounded: each part keeps the top 8 significant bits of what the ones
            // before left (an `and`), and the last holds the remaining 8 or fewer, so every
            // conversion is exact and the three hold all 24 bits (rounded parts carry no more
            // here, and cost two widenings and a conversion more).
            let top = _mm512_set1_epi32(0xffff_0000_u32 as i32);
            let cut = |x: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), top));
            let (h1, h0) = (cut(x1), cut(x0));
            let (r1, r0) = (less(x1, h1), less(x0, h0));
            let (m1, m0) = (cut(r1), cut(r0));
            [round(h1, h0), round(m1, m0), round(_mm512_sub_ps(r1, m1), _mm512_sub_ps(r0, m0))]
        }
        Form::Levels(d) => {
            let (d, limit, two) = (_mm512_set1_ps(d), _mm512_set1_ps(256.0), _mm512_set1_epi32(2));
            let mut level = |x| {
                let t = _mm512_mul_ps(x, d);
                // The nearest integer, its magnitude cut to 256 (`vrangeps`: the smaller
                // magnitude, `t`'s sign).
                let q = _mm512_range_ps::<0b0010>(
                    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t),
                    limit,
                );
                // `t` within two units in the last place of `q` (their bits as integers two
                // apart at most): past 256, infinite or not near an integer, further. A NaN
                // stays a NaN (and makes the sums NaN, as in f32).
                let off = _mm512_abs_epi32(_mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(q)));
                *ok = _mm512_mask_cmple_epu32_mask(*ok, off, two);
                q
            };
            let (q1, q0) = (level(x1), level(x0));
            [round(q1, q0), zero, zero]
        }
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

/// Vector `o` of each part = the 32 steps of row (or column) `o` in `form`, paired: lane `p`
/// holds steps `2p` (low half) and `2p + 1`. Needs `s_stride == 1`; vectors past `at.outer`
/// are left as they are.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
unsafe fn by_outer(src: *const f32, at: Source, form: Form, out: &mut [[__m512i; 16]], ok: &mut __mmask16) {
    let (first, second) = (lanes(at.steps), lanes(at.steps.saturating_sub(16)));
    for o in 0..at.outer.min(16) {
        // SAFETY: row o is present; the masks load only the steps present (masked lanes do
        // not fault), and the second half is only addressed when it has some.
        let (x0, x1) = unsafe {
            let row = src.add(o * at.o_stride);
            let x0 = _mm512_maskz_loadu_ps(first, row);
            (x0, if at.steps > 16 { _mm512_maskz_loadu_ps(second, row.add(16)) } else { _mm512_setzero_ps() })
        };
        let parts = convert_pair(x1, x0, form, ok);
        for (v, part) in out.iter_mut().zip(parts) {
            v[o] = part;
        }
    }
}

/// Vector `p` of each part = steps `2p` and `2p + 1` of the 16 rows (or columns) in `form`,
/// paired: lane `o` holds row `o`'s step `2p` (low half) and `2p + 1`. Needs `o_stride == 1`;
/// vectors past the steps are left as they are.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
unsafe fn by_pair(src: *const f32, at: Source, form: Form, out: &mut [[__m512i; 16]], ok: &mut __mmask16) {
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
        let parts = convert_pair(load(2 * p + 1), load(2 * p), form, ok);
        for (v, part) in out.iter_mut().zip(parts) {
            v[p] = _mm512_permutexvar_epi16(interleave, part);
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
        std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
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
                // Each form, as A's tiles and as B's.
                let packed = |form: Form, of_a: bool| {
                    let mut tiles = vec![Tile::ZERO; form.tiles()];
                    // SAFETY: the CPU has the features (checked); every (o, s) lies in `data`.
                    assert!(unsafe { pack(data.as_ptr(), at, &mut tiles, form, of_a) });
                    tiles
                };
                let bits = |x: f32| f32::from_bits(u32::from(bf16_bits(x)) << 16);
                let cut = |x: f32| f32::from_bits(x.to_bits() & 0xffff_0000);
                for form in [Form::Round, Form::Split, Form::Split3] {
                    let (a, b) = (packed(form, true), packed(form, false));
                    // Part t: the rounding (split in three: the cut) of what the parts before
                    // it left.
                    let part = |x: f32| if form == Form::Split3 { cut(x) } else { bits(x) };
                    for o in 0..16 {
                        for s in 0..32 {
                            let mut x = (o < outer && s < steps).then(|| data[o * o_stride + s * s_stride]);
                            for t in 0..form.tiles() {
                                let want = x.map(part).map_or(0, |p| (p.to_bits() >> 16) as u16);
                                assert_eq!(word(&a[t], o, s), want, "{form:?} A part {t}, row {o}, step {s}, {at:?}");
                                assert_eq!(
                                    word(&b[t], s / 2, 2 * o + s % 2),
                                    want,
                                    "{form:?} B part {t}, column {o}, step {s}, {at:?}"
                                );
                                x = x.map(|x| x - part(x));
                            }
                            // Three parts hold every bit.
                            if form == Form::Split3 {
                                assert_eq!(x.unwrap_or(0.0), 0.0, "{at:?}: row {o}, step {s} not exact");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn split_infinities_keep_their_sign_in_the_first_part_and_nans_stay_nans() {
        if !has_bf16() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        // A row of specials among ordinary values (an f32 product with them is ±inf or NaN; a
        // split's `inf - inf` made NaN of the infinities).
        let specials = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1.5, -0.0, 3.0e38];
        let data: Vec<f32> = (0..16 * 32).map(|i| specials[i % specials.len()]).collect();
        let at = Source { o_stride: 32, s_stride: 1, outer: 16, steps: 32 };
        for form in [Form::Split, Form::Split3] {
            let mut tiles = vec![Tile::ZERO; form.tiles()];
            // SAFETY: the CPU has the features (checked); every (o, s) lies in `data`.
            unsafe { pack(data.as_ptr(), at, &mut tiles, form, true) };
            for o in 0..16 {
                for s in 0..32 {
                    let x = data[o * 32 + s];
                    let parts: Vec<f32> =
                        tiles.iter().map(|t| f32::from_bits(u32::from(word(t, o, s)) << 16)).collect();
                    if x.is_nan() {
                        assert!(parts.iter().any(|p| p.is_nan()), "{form:?}: NaN lost at ({o}, {s}): {parts:?}");
                    } else if x.is_infinite() {
                        assert_eq!(parts[0], x, "{form:?} at ({o}, {s})");
                        assert!(parts[1..].iter().all(|&p| p == 0.0), "{form:?}: {x} split as {parts:?}");
                    } else {
                        assert!(parts.iter().all(|p| p.is_finite()), "{form:?}: {x} split as {parts:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn levels_are_the_integers_and_anything_else_is_refused() {
        if !has_bf16() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        // Pixels scaled as `Normalization::Scale` scales them: p / 255, rounded.
        let data: Vec<f32> = (0..64 * 64).map(|i| ((i * 37) % 256) as f32 / 255.0).collect();
        for (o_stride, s_stride) in [(64, 1), (1, 64)] {
            for (outer, steps) in [(16, 32), (5, 17)] {
                let at = Source { o_stride, s_stride, outer, steps };
                for of_a in [true, false] {
                    let mut tile = [Tile::ZERO];
                    // SAFETY: the CPU has the features (checked); every (o, s) lies in `data`.
                    assert!(unsafe { pack(data.as_ptr(), at, &mut tile, Form::Levels(255.0), of_a) });
                    for o in 0..16 {
                        for s in 0..32 {
                            let p =
                                (o < outer && s < steps).then(|| (((o * o_stride + s * s_stride) * 37) % 256) as f32);
                            let w = if of_a { word(&tile[0], o, s) } else { word(&tile[0], s / 2, 2 * o + s % 2) };
                            assert_eq!(w, bf16_bits(p.unwrap_or(0.0)), "{at:?} of_a {of_a}: ({o}, {s})");
                        }
                    }
                }
                // One value that is not a level, anywhere, spoils the tile: off by a little,
                // past 256, infinite. (A NaN passes, and stays a NaN.)
                for bad in [
                    0.5 / 255.0,
                    1.0 / 255.0 + 1e-6,
                    3.0 / 255.0 * (1.0 + 1e-6),
                    300.0 / 255.0,
                    f32::INFINITY,
                    -f32::INFINITY,
                    1e-30,
                    -1e-30,
                ] {
                    let mut spoiled = data.clone();
                    let (o, s) = (outer - 1, steps - 1);
                    spoiled[o * o_stride + s * s_stride] = bad;
                    let mut tile = [Tile::ZERO];
                    // SAFETY: as above.
                    let ok = unsafe { pack(spoiled.as_ptr(), at, &mut tile, Form::Levels(255.0), true) };
                    assert!(!ok, "{bad} taken for a level, {at:?}");
                }
            }
        }
    }
}
