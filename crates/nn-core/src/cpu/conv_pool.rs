//! A network's first convolution (one input channel) fused with the max pooling after it.
//!
//! With one input channel a 3×3 convolution is 9 multiply-adds per output: im2col and a GEMM
//! with `k = 9` spend their time moving memory, and the conv output (`[32, 128, 26, 26]`, 11 MB
//! in Keras's convnet) is written and re-read by the bias, activation, pooling and their
//! gradients. Here each image (zero-padded on the stack) is convolved 16 filters at a time, one
//! vector lane per filter, and every pooling window is reduced as soon as it is computed, so
//! only the pooled output (four times smaller) and the winners' offsets reach memory. The
//! backward pass adds each pooled gradient to the taps of its winning window alone.

use super::scatter::store_transposed;
use super::simd::{has_avx512, with_simd};
use super::team::{self, SyncPtr};
use crate::activation::Activation;
use crate::device::Window;

/// Filters computed together: one 16-lane vector per kernel tap.
const FB: usize = 16;
/// The largest zero-padded input plane the fused pass takes.
const MAX_PLANE: usize = 8192;
/// The largest kernel (`kh·kw`) the fused pass takes.
const MAX_KK: usize = 64;
/// The largest pooled plane (`poh·pow`) the fused pass takes.
const MAX_POOLED: usize = 256;

/// Per kernel tap, one value per filter of a block.
type Taps = [[f32; FB]; MAX_KK];
/// Per pooled position, a value and a winner offset per filter of a block.
type Pooled = ([[f32; FB]; MAX_POOLED], [[f32; FB]; MAX_POOLED]);
/// The weight gradient is summed in this many fixed groups of images (then in order), so the
/// result does not depend on the number of threads.
const GROUPS: usize = 8;

/// Whether the pair is one the fused pass computes (see `Device::fuses_conv_pool`).
pub(crate) fn supports(conv: &Window, pool: &Window) -> bool {
    let p = pool.kh;
    let (hp, wp) = padded(conv);
    conv.c == 1
        && conv.kh * conv.kw <= MAX_KK
        && hp * wp <= MAX_PLANE
        && pool.oh * pool.ow <= MAX_POOLED
        && p >= 1
        && (pool.kw, pool.sh, pool.sw, pool.ph, pool.pw) == (p, p, p, 0, 0)
        && (pool.h, pool.w) == (conv.oh, conv.ow)
        && pool.oh == conv.oh / p
        && pool.ow == conv.ow / p
}

/// Height and width of the zero-padded input plane (room for every window).
fn padded(c: &Window) -> (usize, usize) {
    ((c.oh - 1) * c.sh + c.kh, (c.ow - 1) * c.sw + c.kw)
}

/// Copies image `xi` into `xp` with the conv's zero padding, so windows need no bounds checks.
fn pad_image(xi: &[f32], c: &Window, xp: &mut [f32]) -> usize {
    let (hp, wp) = padded(c);
    xp[..hp * wp].fill(0.0);
    for iy in 0..c.h {
        let py = iy + c.ph;
        if py >= hp {
            break;
        }
        let n = c.w.min(wp.saturating_sub(c.pw));
        xp[py * wp + c.pw..py * wp + c.pw + n].copy_from_slice(&xi[iy * c.w..iy * c.w + n]);
    }
    wp
}

/// Kernel taps of filters `f0..f0 + FB` as `[kk][FB]` (zero past the last filter), and their
/// biases.
fn block_weights(w: &[f32], b: Option<&[f32]>, kk: usize, filters: usize, f0: usize) -> (Taps, [f32; FB]) {
    let mut wt = [[0f32; FB]; MAX_KK];
    let mut bias = [0f32; FB];
    for l in 0..FB.min(filters - f0) {
        for (k, row) in wt.iter_mut().enumerate().take(kk) {
            row[l] = w[(f0 + l) * kk + k];
        }
        bias[l] = b.map_or(0.0, |b| b[f0 + l]);
    }
    (wt, bias)
}

/// The pooled conv outputs of one image for one block of filters, and each window's winner
/// (an offset in the conv output plane), in pooled row-major order. Bias first, then the taps
/// in order, then the first maximum in row-major window order: the same bits with or without
/// AVX-512.
#[inline(always)]
fn pool_image_portable(
    xp: &[f32],
    wp: usize,
    c: &Window,
    pool: &Window,
    wt: &Taps,
    bias: &[f32; FB],
    out: &mut Pooled,
) {
    let p = pool.kh;
    for py in 0..pool.oh {
        for px in 0..pool.ow {
            let mut best = [f32::NEG_INFINITY; FB];
            let mut win = [0f32; FB];
            for r in 0..p {
                for q in 0..p {
                    let (oy, ox) = (py * p + r, px * p + q);
                    let at = oy * c.sh * wp + ox * c.sw;
                    let mut z = *bias;
                    for ki in 0..c.kh {
                        for kj in 0..c.kw {
                            let xv = xp[at + ki * wp + kj];
                            let wk = &wt[ki * c.kw + kj];
                            for l in 0..FB {
                                z[l] = wk[l].mul_add(xv, z[l]);
                            }
                        }
                    }
                    let pos = (oy * c.ow + ox) as f32;
                    for l in 0..FB {
                        let better = z[l] > best[l] || (r, q) == (0, 0);
                        best[l] = if better { z[l] } else { best[l] };
                        win[l] = if better { pos } else { win[l] };
                    }
                }
            }
            out.0[py * pool.ow + px] = best;
            out.1[py * pool.ow + px] = win;
        }
    }
}

/// [`pool_image_portable`] with one AVX-512 register per 16 filters (fused multiply-adds in
/// the same order as the portable `mul_add`s, so the bits match).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn pool_image_avx512(xp: &[f32], wp: usize, c: &Window, pool: &Window, wt: &Taps, bias: &[f32; FB], out: &mut Pooled) {
    use std::arch::x86_64::*;
    if pool.kh != 2 {
        return pool_image_portable(xp, wp, c, pool, wt, bias, out);
    }
    let kk = c.kh * c.kw;
    let off: [usize; MAX_KK] = std::array::from_fn(|k| if k < kk { (k / c.kw) * wp + k % c.kw } else { 0 });
    // SAFETY (all loads and stores below): 16-float rows of fixed-size arrays.
    let wv: [__m512; MAX_KK] = std::array::from_fn(|k| unsafe { _mm512_loadu_ps(wt[k].as_ptr()) });
    let b = unsafe { _mm512_loadu_ps(bias.as_ptr()) };
    for py in 0..pool.oh {
        for px in 0..pool.ow {
            // The four window positions as four independent sums (a 2×2 window).
            let (base, pos) = window2(c, wp, py, px);
            let mut z = [b; 4];
            for k in 0..kk {
                for j in 0..4 {
                    z[j] = _mm512_fmadd_ps(wv[k], _mm512_set1_ps(xp[base[j] + off[k]]), z[j]);
                }
            }
            let mut best = z[0];
            let mut win = _mm512_set1_ps(pos[0] as f32);
            for j in 1..4 {
                let better = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(z[j], best);
                best = _mm512_mask_blend_ps(better, best, z[j]);
                win = _mm512_mask_blend_ps(better, win, _mm512_set1_ps(pos[j] as f32));
            }
            let i = py * pool.ow + px;
            unsafe {
                _mm512_storeu_ps(out.0[i].as_mut_ptr(), best);
                _mm512_storeu_ps(out.1[i].as_mut_ptr(), win);
            }
        }
    }
}

/// Adds one image's weight and bias gradients for a block of filters: `grads` and `wins` per
/// pooled position (as [`Pooled`]), each gradient going to the taps of its winning window.
#[inline(always)]
fn grad_image_portable(
    xp: &[f32],
    wp: usize,
    c: &Window,
    pool: &Window,
    gp: &Pooled,
    gw: &mut Taps,
    gb: &mut [f32; FB],
) {
    let p = pool.kh;
    for py in 0..pool.oh {
        for px in 0..pool.ow {
            let (grad, win) = (&gp.0[py * pool.ow + px], &gp.1[py * pool.ow + px]);
            for l in 0..FB {
                gb[l] += grad[l];
            }
            for r in 0..p {
                for q in 0..p {
                    let (oy, ox) = (py * p + r, px * p + q);
                    let pos = (oy * c.ow + ox) as f32;
                    let mut gl = [0f32; FB];
                    for l in 0..FB {
                        gl[l] = if win[l] == pos { grad[l] } else { 0.0 };
                    }
                    let at = oy * c.sh * wp + ox * c.sw;
                    for ki in 0..c.kh {
                        for kj in 0..c.kw {
                            let xv = xp[at + ki * wp + kj];
                            let acc = &mut gw[ki * c.kw + kj];
                            for l in 0..FB {
                                acc[l] = gl[l].mul_add(xv, acc[l]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// [`grad_image_portable`] in AVX-512 registers (the same operations in the same order).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn grad_image_avx512(xp: &[f32], wp: usize, c: &Window, pool: &Window, gp: &Pooled, gw: &mut Taps, gb: &mut [f32; FB]) {
    use std::arch::x86_64::*;
    if pool.kh != 2 {
        return grad_image_portable(xp, wp, c, pool, gp, gw, gb);
    }
    let kk = c.kh * c.kw;
    let off: [usize; MAX_KK] = std::array::from_fn(|k| if k < kk { (k / c.kw) * wp + k % c.kw } else { 0 });
    // SAFETY (all loads and stores below): 16-float rows of fixed-size arrays.
    let mut acc: [__m512; MAX_KK] = std::array::from_fn(|k| unsafe { _mm512_loadu_ps(gw[k].as_ptr()) });
    let mut bacc = unsafe { _mm512_loadu_ps(gb.as_ptr()) };
    for py in 0..pool.oh {
        for px in 0..pool.ow {
            let i = py * pool.ow + px;
            let grad = unsafe { _mm512_loadu_ps(gp.0[i].as_ptr()) };
            let win = unsafe { _mm512_loadu_ps(gp.1[i].as_ptr()) };
            bacc = _mm512_add_ps(bacc, grad);
            let (base, pos) = window2(c, wp, py, px);
            let gl: [__m512; 4] = std::array::from_fn(|j| {
                _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(win, _mm512_set1_ps(pos[j] as f32)), grad)
            });
            for k in 0..kk {
                // One lane wins one position: the other three products are zeros and leave
                // the sum as it is; the same fused multiply-adds, in the same order, as the
                // portable version.
                for j in 0..4 {
                    acc[k] = _mm512_fmadd_ps(gl[j], _mm512_set1_ps(xp[base[j] + off[k]]), acc[k]);
                }
            }
        }
    }
    for k in 0..kk {
        unsafe { _mm512_storeu_ps(gw[k].as_mut_ptr(), acc[k]) };
    }
    unsafe { _mm512_storeu_ps(gb.as_mut_ptr(), bacc) };
}

/// For pooled position `(py, px)` of a 2×2 pooling: where each of its four conv windows starts
/// in the padded image (row width `wp`), and each one's offset in the conv output plane.
#[inline(always)]
fn window2(c: &Window, wp: usize, py: usize, px: usize) -> ([usize; 4], [usize; 4]) {
    let (oy, ox) = (2 * py, 2 * px);
    let at = |dy: usize, dx: usize| (oy + dy) * c.sh * wp + (ox + dx) * c.sw;
    let pos = |dy: usize, dx: usize| (oy + dy) * c.ow + ox + dx;
    ([at(0, 0), at(0, 1), at(1, 0), at(1, 1)], [pos(0, 0), pos(0, 1), pos(1, 0), pos(1, 1)])
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    act: Activation,
    c: &Window,
    filters: usize,
    pool: &Window,
    y: &mut [f32],
    arg: &mut [f32],
) {
    let (n, hw, kk) = (c.n, c.h * c.w, c.kh * c.kw);
    let plane = pool.oh * pool.ow;
    let ys = SyncPtr::new(&mut y[..filters * n * plane]);
    let args = SyncPtr::new(&mut arg[..filters * n * plane]);
    let avx512 = has_avx512();
    // Parts of a few images each, so the stack buffers are set up once per part.
    let per = n.div_ceil(4 * team::threads()).max(1);
    team::for_each(n.div_ceil(per), |part| {
        let mut xp = [0f32; MAX_PLANE];
        let mut out: Pooled = ([[0f32; FB]; MAX_POOLED], [[0f32; FB]; MAX_POOLED]);
        for img in part * per..((part + 1) * per).min(n) {
            let wp = pad_image(&x[img * hw..(img + 1) * hw], c, &mut xp);
            for f0 in (0..filters).step_by(FB) {
                let (wt, bias) = block_weights(w, b, kk, filters, f0);
                #[cfg(target_arch = "x86_64")]
                if avx512 {
                    // SAFETY: the CPU has AVX-512F (checked once above).
                    unsafe { pool_image_avx512(&xp, wp, c, pool, &wt, &bias, &mut out) };
                } else {
                    with_simd(|| pool_image_portable(&xp, wp, c, pool, &wt, &bias, &mut out));
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = avx512;
                    with_simd(|| pool_image_portable(&xp, wp, c, pool, &wt, &bias, &mut out));
                }
                let lanes = FB.min(filters - f0);
                if matches!(act, Activation::Relu | Activation::Linear) {
                    // Plane (f0 + l, img) is written by this image's part only.
                    let (flat, wins) = (out.0.as_flattened(), out.1.as_flattened());
                    let (at, stride, zero) = ((f0 * n + img) * plane, n * plane, [0f32; FB]);
                    let relu = act == Activation::Relu;
                    store_transposed(flat, FB, plane, lanes, &zero, relu, &ys, at, stride);
                    store_transposed(wins, FB, plane, lanes, &zero, false, &args, at, stride);
                    continue;
                }
                for l in 0..lanes {
                    let at = ((f0 + l) * n + img) * plane;
                    // SAFETY: plane (f0 + l, img) is written by this image's part only.
                    let (yp, ap) = unsafe { (ys.range(at, at + plane), args.range(at, at + plane)) };
                    for i in 0..plane {
                        yp[i] = act.apply(out.0[i][l]);
                        ap[i] = out.1[i][l];
                    }
                }
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    x: &[f32],
    dy: &[f32],
    y: &[f32],
    arg: &[f32],
    act: Activation,
    c: &Window,
    filters: usize,
    pool: &Window,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) {
    let (n, hw, kk) = (c.n, c.h * c.w, c.kh * c.kw);
    let plane = pool.oh * pool.ow;
    let width = filters * (kk + 1);
    let groups = GROUPS.min(n).max(1);
    let per = n.div_ceil(groups);
    let avx512 = has_avx512();
    let mut scratch = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    if scratch.len() < groups * width {
        scratch.resize(groups * width, 0.0);
    }
    team::chunks_mut(&mut scratch[..groups * width], width, |g, part| {
        let mut xp = [0f32; MAX_PLANE];
        let mut gp: Pooled = ([[0f32; FB]; MAX_POOLED], [[-1f32; FB]; MAX_POOLED]);
        let (dwp, dbp) = part.split_at_mut(filters * kk);
        for f0 in (0..filters).step_by(FB) {
            let lanes = FB.min(filters - f0);
            let mut gw: Taps = [[0f32; FB]; MAX_KK];
            let mut gb = [0f32; FB];
            for img in g * per..((g + 1) * per).min(n) {
                let wp = pad_image(&x[img * hw..(img + 1) * hw], c, &mut xp);
                gather_grads(dy, y, arg, act, (f0 * n + img) * plane, n * plane, lanes, plane, avx512, &mut gp);
                #[cfg(target_arch = "x86_64")]
                if avx512 {
                    // SAFETY: the CPU has AVX-512F (checked once above).
                    unsafe { grad_image_avx512(&xp, wp, c, pool, &gp, &mut gw, &mut gb) };
                } else {
                    with_simd(|| grad_image_portable(&xp, wp, c, pool, &gp, &mut gw, &mut gb));
                }
                #[cfg(not(target_arch = "x86_64"))]
                with_simd(|| grad_image_portable(&xp, wp, c, pool, &gp, &mut gw, &mut gb));
            }
            for l in 0..lanes {
                for (k, row) in gw.iter().enumerate().take(kk) {
                    dwp[(f0 + l) * kk + k] = row[l];
                }
                dbp[f0 + l] = gb[l];
            }
        }
    });
    let parts = &scratch[..groups * width];
    for (j, d) in dw[..filters * kk].iter_mut().enumerate() {
        *d = (0..groups).map(|g| parts[g * width + j]).sum();
    }
    if let Some(db) = db {
        for (fi, d) in db[..filters].iter_mut().enumerate() {
            *d = (0..groups).map(|g| parts[g * width + filters * kk + fi]).sum();
        }
    }
}

/// The pooled gradients of one image for a block of filters, times the activation's
/// derivative, with their winners, as [`Pooled`]: lane `l` of position `i` from
/// `at + l·stride + i` (lanes past `lanes` keep what they hold).
#[allow(clippy::too_many_arguments)]
fn gather_grads(
    dy: &[f32],
    y: &[f32],
    arg: &[f32],
    act: Activation,
    at: usize,
    stride: usize,
    lanes: usize,
    plane: usize,
    avx512: bool,
    gp: &mut Pooled,
) {
    let last = at + (lanes.max(1) - 1) * stride + plane;
    assert!(
        last <= dy.len() && last <= y.len() && last <= arg.len() && plane <= MAX_POOLED,
        "pooled gradients out of bounds"
    );
    #[cfg(target_arch = "x86_64")]
    if avx512 && matches!(act, Activation::Relu | Activation::Linear) && 16 * stride < i32::MAX as usize {
        // SAFETY: the CPU has AVX-512F (checked by the caller); bounds asserted above.
        unsafe { gather_grads_avx512(dy, y, arg, act == Activation::Relu, at, stride, lanes, plane, gp) };
        return;
    }
    let _ = avx512;
    for l in 0..lanes {
        let at = at + l * stride;
        for i in 0..plane {
            gp.0[i][l] = dy[at + i] * act.derivative_from_output(y[at + i]);
            gp.1[i][l] = arg[at + i];
        }
    }
}

/// [`gather_grads`] for ReLU or the identity, 16 lanes per gather (the same bits: the
/// gradient times ReLU's derivative, 1 where its output is positive, else 0).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn gather_grads_avx512(
    dy: &[f32],
    y: &[f32],
    arg: &[f32],
    relu: bool,
    at: usize,
    stride: usize,
    lanes: usize,
    plane: usize,
    gp: &mut Pooled,
) {
    use std::arch::x86_64::*;
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(stride as i32),
    );
    let mask: __mmask16 = if lanes >= 16 { 0xffff } else { (1u16 << lanes) - 1 };
    let zero = _mm512_setzero_ps();
    for i in 0..plane {
        // SAFETY: lane l reads `at + l·stride + i`, inside the buffers for l < lanes (asserted
        // by the caller); the other lanes are masked off. The stores write whole 16-lane rows.
        unsafe {
            let g = _mm512_mask_i32gather_ps::<4>(zero, mask, idx, dy.as_ptr().add(at + i).cast());
            let a = _mm512_mask_i32gather_ps::<4>(zero, mask, idx, arg.as_ptr().add(at + i).cast());
            let g = if relu {
                let yv = _mm512_mask_i32gather_ps::<4>(zero, mask, idx, y.as_ptr().add(at + i).cast());
                let d = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(yv, zero), _mm512_set1_ps(1.0));
                _mm512_mul_ps(g, d)
            } else {
                g
            };
            let (old_g, old_a) = (_mm512_loadu_ps(gp.0[i].as_ptr()), _mm512_loadu_ps(gp.1[i].as_ptr()));
            _mm512_storeu_ps(gp.0[i].as_mut_ptr(), _mm512_mask_blend_ps(mask, old_g, g));
            _mm512_storeu_ps(gp.1[i].as_mut_ptr(), _mm512_mask_blend_ps(mask, old_a, a));
        }
    }
}

/// Per-group partial gradients of [`backward`], reused from call to call.
static SCRATCH: std::sync::Mutex<Vec<f32>> = std::sync::Mutex::new(Vec::new());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx512_and_portable_give_the_same_bits() {
        if !has_avx512() {
            return;
        }
        let c = Window { n: 1, c: 1, h: 28, w: 28, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, oh: 26, ow: 26 };
        let pool = Window { n: 1, c: 16, h: 26, w: 26, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0, oh: 13, ow: 13 };
        let x: Vec<f32> = (0..784).map(|i| ((i * 37 % 101) as f32) / 101.0).collect();
        let w: Vec<f32> = (0..16 * 9).map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0).collect();
        let b: Vec<f32> = (0..16).map(|i| i as f32 * 0.01 - 0.05).collect();
        let mut xp = [0f32; MAX_PLANE];
        let wp = pad_image(&x, &c, &mut xp);
        let (wt, bias) = block_weights(&w, Some(&b), 9, 16, 0);
        let mut a: Pooled = ([[0f32; FB]; MAX_POOLED], [[0f32; FB]; MAX_POOLED]);
        let mut p: Pooled = ([[1f32; FB]; MAX_POOLED], [[1f32; FB]; MAX_POOLED]);
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { pool_image_avx512(&xp, wp, &c, &pool, &wt, &bias, &mut a) };
        pool_image_portable(&xp, wp, &c, &pool, &wt, &bias, &mut p);
        let bits = |v: &[[f32; FB]]| v.iter().flatten().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.0[..169]), bits(&p.0[..169]));
        assert_eq!(bits(&a.1[..169]), bits(&p.1[..169]));
        // Gradients of those windows, some lanes zero.
        let mut gp = a;
        for (i, g) in gp.0.iter_mut().enumerate().take(169) {
            for (l, v) in g.iter_mut().enumerate() {
                *v = if (i + l) % 5 == 0 { 0.0 } else { ((i * 7 + l) % 11) as f32 / 11.0 - 0.5 };
            }
        }
        let (mut gwa, mut gba) = ([[0f32; FB]; MAX_KK], [0f32; FB]);
        let (mut gwp, mut gbp) = ([[0f32; FB]; MAX_KK], [0f32; FB]);
        // SAFETY: as above.
        unsafe { grad_image_avx512(&xp, wp, &c, &pool, &gp, &mut gwa, &mut gba) };
        grad_image_portable(&xp, wp, &c, &pool, &gp, &mut gwp, &mut gbp);
        assert_eq!(bits(&gwa[..9]), bits(&gwp[..9]));
        assert_eq!(gba.map(f32::to_bits), gbp.map(f32::to_bits));
    }
}
