//! The strided moves around the implicit-GEMM convolution's tiles (`implicit_conv.rs`), each
//! with an AVX-512 version (scatters, gathers and masked rows) and a portable one giving the
//! same bits.

use super::conv::valid_range;
use super::simd::has_avx512;
use super::team::SyncPtr;
use crate::device::Window;

/// Stores a tile of `rows` output positions × `lanes` filters (`o[j·tw + l]`) transposed:
/// `y[at + l·stride + j] = act(o[j·tw + l] + bias[l])`, with `act` ReLU or the identity.
/// `bias` has at least `lanes` entries (padded to a multiple of 16).
#[allow(clippy::too_many_arguments)]
pub(crate) fn store_transposed(
    o: &[f32],
    tw: usize,
    rows: usize,
    lanes: usize,
    bias: &[f32],
    relu: bool,
    y: &SyncPtr<f32>,
    at: usize,
    stride: usize,
) {
    let (ptr, len) = y.raw();
    assert!(
        rows > 0 && lanes > 0 && at + (lanes - 1) * stride + rows <= len && o.len() >= rows * tw && bias.len() >= lanes,
        "transposed tile outside its destination"
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx512() && (16 * tw.max(stride)) < i32::MAX as usize {
        // SAFETY: AVX-512F checked; every index is inside `y` (asserted above); each element
        // belongs to the caller's part.
        unsafe { store_transposed_avx512(o, tw, rows, lanes, bias, relu, ptr.add(at), stride) };
        return;
    }
    for l in 0..lanes {
        for j in 0..rows {
            let z = o[j * tw + l] + bias[l];
            // SAFETY: inside `y` (asserted above); the element belongs to the caller's part.
            unsafe { *ptr.add(at + l * stride + j) = if relu { z.max(0.0) } else { z } };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn store_transposed_avx512(
    o: &[f32],
    tw: usize,
    rows: usize,
    lanes: usize,
    bias: &[f32],
    relu: bool,
    y: *mut f32,
    stride: usize,
) {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    if rows < 12 {
        // Few positions: scatter each position's filters down the destination's rows.
        let idx = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(stride as i32),
        );
        for v in 0..lanes.div_ceil(16) {
            let k = (lanes - v * 16).min(16);
            let mask: __mmask16 = if k == 16 { 0xffff } else { (1u16 << k) - 1 };
            // SAFETY (loads and scatters): the tile's row j holds lanes v·16..v·16 + k, `bias`
            // holds `lanes` entries, and the scattered elements are inside the destination
            // (checked by the caller).
            let b = unsafe { _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(v * 16)) };
            for j in 0..rows {
                let mut z = _mm512_add_ps(unsafe { _mm512_maskz_loadu_ps(mask, o.as_ptr().add(j * tw + v * 16)) }, b);
                if relu {
                    z = _mm512_max_ps(z, zero);
                }
                unsafe { _mm512_mask_i32scatter_ps::<4>(y.add(j + v * 16 * stride).cast(), mask, idx, z) };
            }
        }
        return;
    }
    // Many positions: gather one filter's values for 16 positions at a time (read down the
    // tile) and store them contiguously, cheaper than scattering.
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(tw as i32),
    );
    for (l, &bl) in bias.iter().enumerate().take(lanes) {
        let b = _mm512_set1_ps(bl);
        for j0 in (0..rows).step_by(16) {
            let k = (rows - j0).min(16);
            let mask: __mmask16 = if k == 16 { 0xffff } else { (1u16 << k) - 1 };
            // SAFETY: tile rows j0..j0 + k hold lane l (checked by the caller); the masked
            // lanes of the destination row are inside it.
            unsafe {
                let v = _mm512_mask_i32gather_ps::<4>(zero, mask, idx, o.as_ptr().add(j0 * tw + l).cast());
                let mut z = _mm512_add_ps(v, b);
                if relu {
                    z = _mm512_max_ps(z, zero);
                }
                _mm512_mask_storeu_ps(y.add(l * stride + j0), mask, z);
            }
        }
    }
}

/// `dst[q·ldd + f] = src[f·lds + q]` for `f < rows`, `q < cols`.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, lds: usize, dst: &mut [f32], ldd: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * lds + cols && dst.len() >= (cols - 1) * ldd + rows, "transpose out of bounds");
    #[cfg(target_arch = "x86_64")]
    if has_avx512() && (lds * 16) < i32::MAX as usize {
        // SAFETY: AVX-512F checked; bounds asserted above.
        unsafe { transpose_avx512(src, rows, cols, lds, dst, ldd) };
        return;
    }
    for q in 0..cols {
        for f in 0..rows {
            dst[q * ldd + f] = src[f * lds + q];
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_avx512(src: &[f32], rows: usize, cols: usize, lds: usize, dst: &mut [f32], ldd: usize) {
    use std::arch::x86_64::*;
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(lds as i32),
    );
    for f0 in (0..rows).step_by(16) {
        let k = (rows - f0).min(16);
        let mask: __mmask16 = if k == 16 { 0xffff } else { (1u16 << k) - 1 };
        for q in 0..cols {
            // SAFETY: rows f0..f0 + k of column q, and row q of dst from f0: inside (asserted).
            unsafe {
                let v = _mm512_mask_i32gather_ps::<4>(
                    _mm512_setzero_ps(),
                    mask,
                    idx,
                    src.as_ptr().add(f0 * lds + q).cast(),
                );
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(q * ldd + f0), mask, v);
            }
        }
    }
}

/// [`super::conv::col2im_plane`] (same arguments, same bits), with each row's run of
/// stride-1 columns added as masked 16-lane vectors.
pub(crate) fn col2im_plane(cols: &[f32], ld: usize, col0: usize, w: &Window, ci: usize, plane: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() && w.sw == 1 && w.kw <= MAX_KW && w.w <= 16 * MAX_BLOCKS {
        let ohw = w.oh * w.ow;
        let last = ((ci + 1) * w.kh * w.kw - 1) * ld + col0 + ohw;
        assert!(cols.len() >= last && plane.len() >= w.h * w.w, "col2im out of bounds");
        // SAFETY: AVX-512F checked; every row read and written lies inside (asserted above,
        // and each run is clipped to the plane's row by `valid_range`).
        unsafe { col2im_plane_avx512(cols, ld, col0, w, ci, plane) };
        return;
    }
    super::conv::col2im_plane(cols, ld, col0, w, ci, plane)
}

/// Each plane row is summed in registers, 16 columns at a time, from every tap that reaches
/// it, then stored once (adding into memory run after overlapping run would stall on
/// store-to-load forwarding). Taps are added in the portable order, so the bits match. Each
/// horizontal tap's lanes and offset are worked out once per plane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn col2im_plane_avx512(cols: &[f32], ld: usize, col0: usize, w: &Window, ci: usize, plane: &mut [f32]) {
    use std::arch::x86_64::*;
    // Per 16-column block and horizontal tap: which lanes it reaches, and where lane 0 reads
    // relative to the start of its output row in the tap's columns.
    let mut taps = [[(0u16, 0isize); MAX_KW]; MAX_BLOCKS];
    for (b, block) in taps.iter_mut().enumerate().take(w.w.div_ceil(16)) {
        let (b0, bw) = (16 * b, (w.w - 16 * b).min(16));
        for (kj, t) in block.iter_mut().enumerate().take(w.kw) {
            let (xlo, xhi) = valid_range(w.ow, w.w, w.sw, kj, w.pw);
            if xlo >= xhi {
                continue;
            }
            let x0 = xlo + kj - w.pw;
            let (lo, hi) = (x0.max(b0), (x0 + xhi - xlo).min(b0 + bw));
            if lo < hi {
                let m = (((1u32 << (hi - b0)) - 1) & !((1u32 << (lo - b0)) - 1)) as u16;
                *t = (m, xlo as isize + b0 as isize - x0 as isize);
            }
        }
    }
    for iy in 0..w.h {
        for (b, block) in taps.iter().enumerate().take(w.w.div_ceil(16)) {
            let (b0, bw) = (16 * b, (w.w - 16 * b).min(16));
            let mut acc = _mm512_setzero_ps();
            for ki in 0..w.kh {
                // The output row whose window puts tap row ki on plane row iy.
                let t = iy + w.ph;
                if t < ki || !(t - ki).is_multiple_of(w.sh) || (t - ki) / w.sh >= w.oh {
                    continue;
                }
                let row = (((ci * w.kh + ki) * w.kw) * ld + col0 + (t - ki) / w.sh * w.ow) as isize;
                for (kj, &(m, off)) in block.iter().enumerate().take(w.kw) {
                    // SAFETY: only the lanes in `m` are read, and those lie in the tap's run
                    // inside `cols` (checked by the caller); the others are suppressed.
                    let v = unsafe {
                        _mm512_maskz_loadu_ps(m, cols.as_ptr().wrapping_offset(row + (kj * ld) as isize + off))
                    };
                    acc = _mm512_add_ps(acc, v);
                }
            }
            let m: __mmask16 = ((1u32 << bw) - 1) as u16;
            // SAFETY: columns b0..b0 + bw of row iy are inside the plane (checked by the caller).
            unsafe { _mm512_mask_storeu_ps(plane.as_mut_ptr().add(iy * w.w + b0), m, acc) };
        }
    }
}

/// The widest kernel and plane [`col2im_plane`] vectorises (wider ones take the portable way).
const MAX_KW: usize = 16;
const MAX_BLOCKS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn col2im_planes_match_the_portable_ones() {
        for (h, k, s, p) in [(13, 3, 1, 0), (7, 3, 1, 1), (9, 5, 1, 2), (8, 2, 2, 0)] {
            let oh = (h + 2 * p - k) / s + 1;
            let w = Window { n: 3, c: 2, h, w: h, kh: k, kw: k, sh: s, sw: s, ph: p, pw: p, oh, ow: oh };
            let ld = 3 * oh * oh + 7;
            let cols: Vec<f32> = (0..2 * k * k * ld).map(|i| (i % 13) as f32 * 0.25 - 1.0).collect();
            for ci in 0..2 {
                let (mut a, mut b) = (vec![f32::NAN; h * h], vec![f32::NAN; h * h]);
                col2im_plane(&cols, ld, oh * oh, &w, ci, &mut a);
                super::super::conv::col2im_plane(&cols, ld, oh * oh, &w, ci, &mut b);
                assert_eq!(a, b, "h{h} k{k} s{s} p{p}");
            }
        }
    }

    #[test]
    fn transpose_moves_every_element() {
        for (rows, cols) in [(64, 484), (5, 7), (17, 33), (1, 1)] {
            let (lds, ldd) = (cols + 3, rows + 5);
            let src: Vec<f32> = (0..rows * lds).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; cols * ldd];
            transpose(&src, rows, cols, lds, &mut dst, ldd);
            for q in 0..cols {
                for f in 0..rows {
                    assert_eq!(dst[q * ldd + f], src[f * lds + q]);
                }
            }
        }
    }

    #[test]
    fn transposed_tiles_land_where_they_belong() {
        for (rows, lanes, tw) in [(6, 64, 64), (3, 20, 32), (8, 5, 16), (40, 20, 32), (13, 16, 16)] {
            let stride = 57;
            let o: Vec<f32> = (0..rows * tw).map(|i| i as f32 - 100.0).collect();
            let bias: Vec<f32> = (0..tw).map(|l| l as f32 * 0.5).collect();
            let mut y = vec![f32::NAN; 3 + lanes * stride];
            let ptr = SyncPtr::new(&mut y);
            store_transposed(&o, tw, rows, lanes, &bias, true, &ptr, 3, stride);
            for l in 0..lanes {
                for j in 0..rows {
                    assert_eq!(y[3 + l * stride + j], (o[j * tw + l] + bias[l]).max(0.0));
                }
                assert!(y[3 + l * stride + rows..3 + (l + 1) * stride].iter().all(|v| v.is_nan()));
            }
        }
    }
}
