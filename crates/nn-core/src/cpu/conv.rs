//! Convolution and pooling helpers on the CPU: im2col / col2im, axis swaps, max and average
//! pooling. Parallel over rows (im2col) or images (col2im, pooling) with rayon.

use rayon::prelude::*;

use crate::device::Window;

pub(crate) fn im2col(x: &[f32], w: &Window, cols: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    let ncols = w.n * ohw;
    let rows = w.c * w.kh * w.kw;
    cols[..rows * ncols]
        .par_chunks_mut(ncols)
        .enumerate()
        .for_each(|(r, row)| {
            let kj = r % w.kw;
            let ki = (r / w.kw) % w.kh;
            let ci = r / (w.kw * w.kh);
            for ni in 0..w.n {
                let plane = &x[(ni * w.c + ci) * hw..(ni * w.c + ci + 1) * hw];
                let out = &mut row[ni * ohw..(ni + 1) * ohw];
                for oy in 0..w.oh {
                    let iy = (oy * w.sh + ki) as isize - w.ph as isize;
                    let orow = &mut out[oy * w.ow..(oy + 1) * w.ow];
                    if iy < 0 || iy >= w.h as isize {
                        orow.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * w.w..(iy as usize + 1) * w.w];
                    for (ox, o) in orow.iter_mut().enumerate() {
                        let ix = (ox * w.sw + kj) as isize - w.pw as isize;
                        *o = if ix < 0 || ix >= w.w as isize {
                            0.0
                        } else {
                            src[ix as usize]
                        };
                    }
                }
            }
        });
}

pub(crate) fn col2im(cols: &[f32], w: &Window, dx: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    let ncols = w.n * ohw;
    dx[..w.n * w.c * hw]
        .par_chunks_mut(w.c * hw)
        .enumerate()
        .for_each(|(ni, img)| {
            img.fill(0.0);
            for ci in 0..w.c {
                let plane = &mut img[ci * hw..(ci + 1) * hw];
                for ki in 0..w.kh {
                    for kj in 0..w.kw {
                        let r = (ci * w.kh + ki) * w.kw + kj;
                        let src = &cols[r * ncols + ni * ohw..r * ncols + (ni + 1) * ohw];
                        for oy in 0..w.oh {
                            let iy = (oy * w.sh + ki) as isize - w.ph as isize;
                            if iy < 0 || iy >= w.h as isize {
                                continue;
                            }
                            let prow = &mut plane[iy as usize * w.w..(iy as usize + 1) * w.w];
                            for ox in 0..w.ow {
                                let ix = (ox * w.sw + kj) as isize - w.pw as isize;
                                if ix >= 0 && ix < w.w as isize {
                                    prow[ix as usize] += src[oy * w.ow + ox];
                                }
                            }
                        }
                    }
                }
            }
        });
}

pub(crate) fn swap_axes01(src: &[f32], a: usize, b: usize, r: usize, dst: &mut [f32]) {
    dst[..a * b * r]
        .par_chunks_mut(a * r)
        .enumerate()
        .for_each(|(j, out)| {
            for i in 0..a {
                out[i * r..(i + 1) * r].copy_from_slice(&src[(i * b + j) * r..(i * b + j + 1) * r]);
            }
        });
}

/// Calls `f(out_index, window cells as (input offset in plane))` for each output cell of a plane.
fn windows(w: &Window, mut f: impl FnMut(usize, &mut dyn Iterator<Item = usize>)) {
    for oy in 0..w.oh {
        for ox in 0..w.ow {
            let y0 = (oy * w.sh) as isize - w.ph as isize;
            let x0 = (ox * w.sw) as isize - w.pw as isize;
            let mut it = (0..w.kh)
                .flat_map(move |i| (0..w.kw).map(move |j| (y0 + i as isize, x0 + j as isize)))
                .filter_map(|(y, x)| {
                    if y >= 0 && x >= 0 && (y as usize) < w.h && (x as usize) < w.w {
                        Some(y as usize * w.w + x as usize)
                    } else {
                        None
                    }
                });
            f(oy * w.ow + ox, &mut it);
        }
    }
}

pub(crate) fn max_pool(x: &[f32], w: &Window, y: &mut [f32], arg: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    let planes = w.n * w.c;
    y[..planes * ohw]
        .par_chunks_mut(ohw)
        .zip(arg[..planes * ohw].par_chunks_mut(ohw))
        .enumerate()
        .for_each(|(p, (yp, ap))| {
            let xp = &x[p * hw..(p + 1) * hw];
            windows(w, |o, cells| {
                let mut best = f32::NEG_INFINITY;
                let mut at = 0usize;
                for i in cells {
                    if xp[i] > best {
                        best = xp[i];
                        at = i;
                    }
                }
                yp[o] = best;
                ap[o] = at as f32;
            });
        });
}

pub(crate) fn max_pool_backward(dy: &[f32], arg: &[f32], w: &Window, dx: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    dx[..w.n * w.c * hw]
        .par_chunks_mut(hw)
        .enumerate()
        .for_each(|(p, dxp)| {
            dxp.fill(0.0);
            for o in 0..ohw {
                dxp[arg[p * ohw + o] as usize] += dy[p * ohw + o];
            }
        });
}

pub(crate) fn avg_pool(x: &[f32], w: &Window, y: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    y[..w.n * w.c * ohw]
        .par_chunks_mut(ohw)
        .enumerate()
        .for_each(|(p, yp)| {
            let xp = &x[p * hw..(p + 1) * hw];
            windows(w, |o, cells| {
                let (mut s, mut k) = (0f32, 0usize);
                for i in cells {
                    s += xp[i];
                    k += 1;
                }
                yp[o] = if k > 0 { s / k as f32 } else { 0.0 };
            });
        });
}

pub(crate) fn avg_pool_backward(dy: &[f32], w: &Window, dx: &mut [f32]) {
    let (hw, ohw) = (w.h * w.w, w.oh * w.ow);
    dx[..w.n * w.c * hw]
        .par_chunks_mut(hw)
        .enumerate()
        .for_each(|(p, dxp)| {
            dxp.fill(0.0);
            let mut idx = Vec::with_capacity(w.kh * w.kw);
            windows(w, |o, cells| {
                idx.clear();
                idx.extend(cells);
                if !idx.is_empty() {
                    let g = dy[p * ohw + o] / idx.len() as f32;
                    for &i in &idx {
                        dxp[i] += g;
                    }
                }
            });
        });
}
