//! Convolution and pooling helpers on the CPU: im2col / col2im, axis swaps, max and average
//! pooling. Images are channels-major, `[c, n, h, w]`; pooling works plane by plane. Each computes, per output row, the range of positions whose window lies inside the
//! image, so the inner loops are branch-free (contiguous copies when the stride is 1). Parallel
//! over rows (im2col) or planes (col2im, pooling) on the CPU team.

use super::simd::with_simd;
use super::team::{self, SyncPtr};
use crate::device::Window;

/// The output columns `ox` whose input column `ox·s + k - p` lies in `0..w`: `lo..hi`.
#[inline]
pub(crate) fn valid_range(out: usize, w: usize, s: usize, k: usize, p: usize) -> (usize, usize) {
    // ox·s + k >= p  and  ox·s + k - p < w
    let lo = if k >= p { 0 } else { (p - k).div_ceil(s) };
    let hi = if w + p > k { ((w + p - k - 1) / s + 1).min(out) } else { 0 };
    (lo.min(hi), hi)
}

pub(crate) fn im2col(x: &[f32], w: &Window, cols: &mut [f32]) {
    let ncols = w.n * w.oh * w.ow;
    let rows = w.c * w.kh * w.kw;
    team::chunks_mut(&mut cols[..rows * ncols], ncols, |r, row| im2col_row(x, w, r, 0..w.n, row));
}

/// Row `r` (one `(channel, ki, kj)` tap) of the unfolded images `images` of the batch `x`
/// (`[c, n, h, w]`): `row[(i - images.start)·oh·ow + oy·ow + ox]`, zero where the tap falls in
/// the padding.
pub(crate) fn im2col_row(x: &[f32], w: &Window, r: usize, images: std::ops::Range<usize>, row: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    let kj = r % w.kw;
    let ki = (r / w.kw) % w.kh;
    let ci = r / (w.kw * w.kh);
    let (xlo, xhi) = valid_range(w.ow, w.w, w.sw, kj, w.pw);
    for (j, ni) in images.enumerate() {
        let plane = &x[(ci * w.n + ni) * hw..(ci * w.n + ni + 1) * hw];
        let out = &mut row[j * ohw..(j + 1) * ohw];
        for oy in 0..w.oh {
            let orow = &mut out[oy * w.ow..(oy + 1) * w.ow];
            let iy = (oy * w.sh + ki) as isize - w.ph as isize;
            if iy < 0 || iy >= w.h as isize || xlo >= xhi {
                orow.fill(0.0);
                continue;
            }
            let src = &plane[iy as usize * w.w..(iy as usize + 1) * w.w];
            orow[..xlo].fill(0.0);
            orow[xhi..].fill(0.0);
            let x0 = xlo * w.sw + kj - w.pw;
            if w.sw == 1 {
                orow[xlo..xhi].copy_from_slice(&src[x0..x0 + (xhi - xlo)]);
            } else {
                for (o, ix) in orow[xlo..xhi].iter_mut().zip((x0..).step_by(w.sw)) {
                    *o = src[ix];
                }
            }
        }
    }
}

pub(crate) fn col2im(cols: &[f32], w: &Window, dx: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    let ncols = w.n * ohw;
    team::chunks_mut(&mut dx[..w.n * w.c * hw], hw, |p, plane| {
        let (ci, ni) = (p / w.n, p % w.n);
        col2im_plane(cols, ncols, ni * ohw, w, ci, plane);
    });
}

/// Sums the unfolded columns of one image into its channel `ci` plane (`[h, w]`, overwritten):
/// tap row `r` of `cols` starts at `r·ld`, and the image's columns at `col0` within it.
pub(crate) fn col2im_plane(cols: &[f32], ld: usize, col0: usize, w: &Window, ci: usize, plane: &mut [f32]) {
    let ohw = w.oh * w.ow;
    plane.fill(0.0);
    for ki in 0..w.kh {
        for kj in 0..w.kw {
            let (xlo, xhi) = valid_range(w.ow, w.w, w.sw, kj, w.pw);
            if xlo >= xhi {
                continue;
            }
            let r = (ci * w.kh + ki) * w.kw + kj;
            let src = &cols[r * ld + col0..r * ld + col0 + ohw];
            for oy in 0..w.oh {
                let iy = (oy * w.sh + ki) as isize - w.ph as isize;
                if iy < 0 || iy >= w.h as isize {
                    continue;
                }
                let prow = &mut plane[iy as usize * w.w..(iy as usize + 1) * w.w];
                let srow = &src[oy * w.ow + xlo..oy * w.ow + xhi];
                let x0 = xlo * w.sw + kj - w.pw;
                if w.sw == 1 {
                    for (d, &s) in prow[x0..x0 + srow.len()].iter_mut().zip(srow) {
                        *d += s;
                    }
                } else {
                    for (&s, ix) in srow.iter().zip((x0..).step_by(w.sw)) {
                        prow[ix] += s;
                    }
                }
            }
        }
    }
}

pub(crate) fn swap_axes01(src: &[f32], a: usize, b: usize, r: usize, dst: &mut [f32]) {
    team::chunks_mut(&mut dst[..a * b * r], a * r, |j, out| {
        for i in 0..a {
            out[i * r..(i + 1) * r].copy_from_slice(&src[(i * b + j) * r..(i * b + j + 1) * r]);
        }
    });
}

/// Input rows `lo..hi` (clamped) of the window of output row `oy`.
#[inline]
fn rows_of(w: &Window, oy: usize) -> (usize, usize) {
    let y0 = (oy * w.sh) as isize - w.ph as isize;
    (y0.max(0) as usize, ((y0 + w.kh as isize).min(w.h as isize)).max(0) as usize)
}

#[inline]
fn cols_of(w: &Window, ox: usize) -> (usize, usize) {
    let x0 = (ox * w.sw) as isize - w.pw as isize;
    (x0.max(0) as usize, ((x0 + w.kw as isize).min(w.w as isize)).max(0) as usize)
}

pub(crate) fn max_pool(x: &[f32], w: &Window, y: &mut [f32], arg: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    let planes = w.n * w.c;
    let args = SyncPtr::new(&mut arg[..planes * ohw]);
    team::chunks_mut(&mut y[..planes * ohw], ohw, |p, yp| {
        // SAFETY: plane p of `arg` belongs to the part writing plane p of `y`.
        let ap = unsafe { args.range(p * ohw, (p + 1) * ohw) };
        let xp = &x[p * hw..(p + 1) * hw];
        with_simd(
            #[inline(always)]
            || max_pool_plane(xp, w, yp, ap),
        );
    });
}

/// Max pooling of one plane `xp` (`[h, w]`) into `yp` (`[oh, ow]`), each window's winner as an
/// offset in the plane into `ap`: the first maximum in row-major window order.
#[inline(always)]
pub(crate) fn max_pool_plane(xp: &[f32], w: &Window, yp: &mut [f32], ap: &mut [f32]) {
    // ("same" padding of an odd side adds a last window half outside the plane, with no
    // padding before it: that one is clipped below.)
    if (w.kh, w.kw, w.sh, w.sw, w.ph, w.pw) == (2, 2, 2, 2, 0, 0) && 2 * w.oh <= w.h && 2 * w.ow <= w.w {
        // The common 2×2 window, stride 2: no bounds to clip.
        for oy in 0..w.oh {
            let (r0, r1) = (2 * oy * w.w, (2 * oy + 1) * w.w);
            let (top, bottom) = (&xp[r0..r0 + 2 * w.ow], &xp[r1..r1 + 2 * w.ow]);
            let out = oy * w.ow;
            for ox in 0..w.ow {
                // Selects, not branches: the winner is data-dependent and unpredictable.
                let c = 2 * ox;
                let (a, b, d, e) = (top[c], top[c + 1], bottom[c], bottom[c + 1]);
                let (m1, i1) = if b > a { (b, r0 + c + 1) } else { (a, r0 + c) };
                let (m2, i2) = if e > d { (e, r1 + c + 1) } else { (d, r1 + c) };
                let (m, i) = if m2 > m1 { (m2, i2) } else { (m1, i1) };
                yp[out + ox] = m;
                ap[out + ox] = i as f32;
            }
        }
        return;
    }
    for oy in 0..w.oh {
        let (y0, y1) = rows_of(w, oy);
        for ox in 0..w.ow {
            let (x0, x1) = cols_of(w, ox);
            let (mut best, mut at) = (f32::NEG_INFINITY, y0 * w.w + x0);
            for iy in y0..y1 {
                for ix in x0..x1 {
                    let v = xp[iy * w.w + ix];
                    if v > best {
                        best = v;
                        at = iy * w.w + ix;
                    }
                }
            }
            yp[oy * w.ow + ox] = best;
            ap[oy * w.ow + ox] = at as f32;
        }
    }
}

pub(crate) fn max_pool_backward(dy: &[f32], arg: &[f32], w: &Window, dx: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    team::chunks_mut(&mut dx[..w.n * w.c * hw], hw, |p, dxp| {
        dxp.fill(0.0);
        for (&g, &a) in dy[p * ohw..(p + 1) * ohw].iter().zip(&arg[p * ohw..(p + 1) * ohw]) {
            dxp[a as usize] += g;
        }
    });
}

pub(crate) fn avg_pool(x: &[f32], w: &Window, y: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    team::chunks_mut(&mut y[..w.n * w.c * ohw], ohw, |p, yp| {
        let xp = &x[p * hw..(p + 1) * hw];
        for oy in 0..w.oh {
            let (y0, y1) = rows_of(w, oy);
            for ox in 0..w.ow {
                let (x0, x1) = cols_of(w, ox);
                let mut s = 0f32;
                for iy in y0..y1 {
                    s += xp[iy * w.w + x0..iy * w.w + x1].iter().sum::<f32>();
                }
                let k = (y1 - y0) * (x1 - x0);
                yp[oy * w.ow + ox] = if k > 0 { s / k as f32 } else { 0.0 };
            }
        }
    });
}

pub(crate) fn avg_pool_backward(dy: &[f32], w: &Window, dx: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    team::chunks_mut(&mut dx[..w.n * w.c * hw], hw, |p, dxp| {
        dxp.fill(0.0);
        for oy in 0..w.oh {
            let (y0, y1) = rows_of(w, oy);
            for ox in 0..w.ow {
                let (x0, x1) = cols_of(w, ox);
                let k = (y1 - y0) * (x1 - x0);
                if k == 0 {
                    continue;
                }
                let g = dy[p * ohw + oy * w.ow + ox] / k as f32;
                for iy in y0..y1 {
                    dxp[iy * w.w + x0..iy * w.w + x1].iter_mut().for_each(|d| *d += g);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious im2col, element by element.
    fn im2col_ref(x: &[f32], w: &Window) -> Vec<f32> {
        let ncols = w.n * w.oh * w.ow;
        let mut out = vec![0f32; w.c * w.kh * w.kw * ncols];
        for ci in 0..w.c {
            for ki in 0..w.kh {
                for kj in 0..w.kw {
                    let r = (ci * w.kh + ki) * w.kw + kj;
                    for ni in 0..w.n {
                        for oy in 0..w.oh {
                            for ox in 0..w.ow {
                                let iy = (oy * w.sh + ki) as isize - w.ph as isize;
                                let ix = (ox * w.sw + kj) as isize - w.pw as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < w.h && (ix as usize) < w.w {
                                    out[r * ncols + (ni * w.oh + oy) * w.ow + ox] =
                                        x[((ci * w.n + ni) * w.h + iy as usize) * w.w + ix as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn im2col_matches_the_reference_for_strides_and_padding() {
        for (k, s, p) in [(3, 1, 0), (3, 1, 1), (3, 2, 1), (2, 2, 0), (5, 3, 2), (1, 1, 0), (4, 3, 2)] {
            let (h, wd) = (7, 6);
            let oh = (h + 2 * p - k) / s + 1;
            let ow = (wd + 2 * p - k) / s + 1;
            let w = Window { n: 2, c: 3, h, w: wd, kh: k, kw: k, sh: s, sw: s, ph: p, pw: p, oh, ow };
            let x: Vec<f32> = (0..2 * 3 * h * wd).map(|i| i as f32).collect();
            let mut cols = vec![f32::NAN; 3 * k * k * 2 * oh * ow];
            im2col(&x, &w, &mut cols);
            assert_eq!(cols, im2col_ref(&x, &w), "k{k} s{s} p{p}");
        }
    }

    #[test]
    fn a_2x2_pool_of_an_odd_side_with_same_padding_clips_its_last_window() {
        // 3×3 → 2×2 ("same": the extra window row and column hang past the bottom and right;
        // the fast path read past the plane and panicked).
        let w = Window { n: 1, c: 1, h: 3, w: 3, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0, oh: 2, ow: 2 };
        let x: Vec<f32> = (0..9).map(|i| i as f32).collect();
        let (mut y, mut arg) = (vec![0.0; 4], vec![0.0; 4]);
        max_pool_plane(&x, &w, &mut y, &mut arg);
        assert_eq!(y, [4.0, 5.0, 7.0, 8.0]);
        assert_eq!(arg, [4.0, 5.0, 7.0, 8.0]);
    }
}
