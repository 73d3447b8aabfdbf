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

/// `y = act(maxpool(conv(x, w) + b))` of a single-channel `x [1, n, h, w]`: pooled
/// `y [filters, n, ph, pw]` and each window's winner in `arg` (an offset in the conv output
/// plane), or with `out_pm` both pixel-major, `[n, ph, pw, filters]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    act: Activation,
    c: &Window,
    filters: usize,
    pool: &Window,
    out_pm: bool,
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
                if out_pm {
                    // Each position's filters side by side: rows as the kernel computed them.
                    let at = img * plane * filters + f0;
                    store_rows(&out, act, plane, lanes, at, filters, &ys, &args, avx512);
                    continue;
                }
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
    dy_pm: bool,
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
                // Lane (filter) l of position i at `at + l·lane_stride + i·pos_stride`.
                let (at, strides) = if dy_pm {
                    (img * plane * filters + f0, (1, filters))
                } else {
                    ((f0 * n + img) * plane, (n * plane, 1))
                };
                gather_grads(dy, y, arg, act, at, strides, lanes, plane, avx512, &mut gp);
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
/// `at + l·lane_stride + i·pos_stride` (channels-major tensors: `(n·plane, 1)`; pixel-major:
/// `(1, filters)`), lanes past `lanes` keeping what they hold.
#[allow(clippy::too_many_arguments)]
fn gather_grads(
    dy: &[f32],
    y: &[f32],
    arg: &[f32],
    act: Activation,
    at: usize,
    (lane_stride, pos_stride): (usize, usize),
    lanes: usize,
    plane: usize,
    avx512: bool,
    gp: &mut Pooled,
) {
    let last = at + (lanes.max(1) - 1) * lane_stride + (plane.max(1) - 1) * pos_stride + 1;
    assert!(
        last <= dy.len() && last <= y.len() && last <= arg.len() && plane <= MAX_POOLED && lanes <= FB,
        "pooled gradients out of bounds"
    );
    #[cfg(target_arch = "x86_64")]
    if avx512 && matches!(act, Activation::Relu | Activation::Linear) && 16 * lane_stride < i32::MAX as usize {
        let relu = act == Activation::Relu;
        // SAFETY: the CPU has AVX-512F (checked by the caller); bounds asserted above.
        unsafe { gather_grads_avx512(dy, y, arg, relu, at, (lane_stride, pos_stride), lanes, plane, gp) };
        return;
    }
    let _ = avx512;
    for i in 0..plane {
        for l in 0..lanes {
            let k = at + l * lane_stride + i * pos_stride;
            gp.0[i][l] = dy[k] * act.derivative_from_output(y[k]);
            gp.1[i][l] = arg[k];
        }
    }
}

/// One image's pooled outputs and winners for a block of filters (`out`, as [`Pooled`]) stored
/// pixel-major: lane `l` of position `i` at `at + i·stride + l` of `ys` and `args`, with the
/// activation applied as the transposed store applies it (`+ 0`, its zero bias, then ReLU),
/// so the values have its bits.
#[allow(clippy::too_many_arguments)]
fn store_rows(
    out: &Pooled,
    act: Activation,
    plane: usize,
    lanes: usize,
    at: usize,
    stride: usize,
    ys: &SyncPtr<f32>,
    args: &SyncPtr<f32>,
    avx512: bool,
) {
    let last = at + (plane.max(1) - 1) * stride + lanes;
    assert!(last <= ys.raw().1 && last <= args.raw().1 && plane <= MAX_POOLED, "pooled rows out of bounds");
    #[cfg(target_arch = "x86_64")]
    if avx512 && matches!(act, Activation::Relu | Activation::Linear) {
        // SAFETY: the CPU has AVX-512F (checked by the caller); bounds asserted above.
        unsafe { store_rows_avx512(out, act == Activation::Relu, plane, lanes, at, stride, ys, args) };
        return;
    }
    let _ = avx512;
    for i in 0..plane {
        let k = at + i * stride;
        // SAFETY: these rows belong to the caller's part (this image's), inside (asserted).
        let (yr, ar) = unsafe { (ys.range(k, k + lanes), args.range(k, k + lanes)) };
        for l in 0..lanes {
            let v = out.0[i][l];
            yr[l] = match act {
                Activation::Relu => (v + 0.0).max(0.0),
                Activation::Linear => v + 0.0,
                _ => act.apply(v),
            };
            ar[l] = out.1[i][l];
        }
    }
}

/// [`store_rows`] for ReLU or the identity, a row per masked vector store.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn store_rows_avx512(
    out: &Pooled,
    relu: bool,
    plane: usize,
    lanes: usize,
    at: usize,
    stride: usize,
    ys: &SyncPtr<f32>,
    args: &SyncPtr<f32>,
) {
    use std::arch::x86_64::*;
    let mask: __mmask16 = if lanes >= 16 { 0xffff } else { (1u16 << lanes) - 1 };
    let zero = _mm512_setzero_ps();
    let (yp, ap) = (ys.raw().0, args.raw().0);
    for i in 0..plane {
        // SAFETY: row i of the fixed-size tile, and `lanes` floats from `at + i·stride`, inside
        // the destinations (asserted by the caller) and belonging to its part.
        unsafe {
            let mut z = _mm512_add_ps(_mm512_loadu_ps(out.0[i].as_ptr()), zero);
            if relu {
                z = _mm512_max_ps(z, zero);
            }
            _mm512_mask_storeu_ps(yp.add(at + i * stride), mask, z);
            _mm512_mask_storeu_ps(ap.add(at + i * stride), mask, _mm512_loadu_ps(out.1[i].as_ptr()));
        }
    }
}

/// [`gather_grads`] for ReLU or the identity: a position's lanes by one masked load where
/// they lie side by side, else by one gather (the same bits: the gradient times ReLU's
/// derivative, 1 where its output is positive, else 0).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn gather_grads_avx512(
    dy: &[f32],
    y: &[f32],
    arg: &[f32],
    relu: bool,
    at: usize,
    (lane_stride, pos_stride): (usize, usize),
    lanes: usize,
    plane: usize,
    gp: &mut Pooled,
) {
    use std::arch::x86_64::*;
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(lane_stride as i32),
    );
    let mask: __mmask16 = if lanes >= 16 { 0xffff } else { (1u16 << lanes) - 1 };
    let zero = _mm512_setzero_ps();
    // SAFETY (for the loads below): lane l of position i reads `at + l·lane_stride +
    // i·pos_stride`, inside the buffers for l < lanes (asserted by the caller); the other
    // lanes are masked off.
    let lanes_of = |src: &[f32], i: usize| unsafe {
        let p = src.as_ptr().add(at + i * pos_stride);
        if lane_stride == 1 {
            _mm512_maskz_loadu_ps(mask, p)
        } else {
            _mm512_mask_i32gather_ps::<4>(zero, mask, idx, p.cast())
        }
    };
    for i in 0..plane {
        let (g, a) = (lanes_of(dy, i), lanes_of(arg, i));
        let g = if relu {
            let d = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(lanes_of(y, i), zero), _mm512_set1_ps(1.0));
            _mm512_mul_ps(g, d)
        } else {
            g
        };
        // SAFETY: whole 16-lane rows of the fixed-size tile (i < plane <= MAX_POOLED).
        unsafe {
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

    /// The pooled outputs and winners stored pixel-major, and gradients read so, give the
    /// bits of the channels-major passes, with AVX-512 and without, for every activation path.
    #[test]
    fn pixel_major_rows_give_the_same_bits() {
        let (n, filters) = (3, 20);
        let c = Window { n, c: 1, h: 28, w: 28, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, oh: 26, ow: 26 };
        let pool = Window { n, c: filters, h: 26, w: 26, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0, oh: 13, ow: 13 };
        assert!(supports(&c, &pool));
        let plane = 169;
        let len = filters * n * plane;
        let x: Vec<f32> = (0..n * 784).map(|i| ((i * 37 % 101) as f32) / 101.0 - 0.2).collect();
        let w: Vec<f32> = (0..filters * 9).map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0).collect();
        let b: Vec<f32> = (0..filters).map(|i| i as f32 * 0.01 - 0.1).collect();
        // `[f, n, plane]` into `[n, plane, f]`.
        let turn = |v: &[f32]| {
            let mut out = vec![0f32; len];
            for f in 0..filters {
                for img in 0..n {
                    for i in 0..plane {
                        out[(img * plane + i) * filters + f] = v[(f * n + img) * plane + i];
                    }
                }
            }
            out
        };
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for act in [Activation::Relu, Activation::Linear, Activation::Tanh] {
            let (mut y1, mut a1, mut y2, mut a2) = (vec![0f32; len], vec![0f32; len], vec![1f32; len], vec![1f32; len]);
            forward(&x, &w, Some(&b), act, &c, filters, &pool, false, &mut y1, &mut a1);
            forward(&x, &w, Some(&b), act, &c, filters, &pool, true, &mut y2, &mut a2);
            assert_eq!(bits(&turn(&y1)), bits(&y2), "{act:?} outputs");
            assert_eq!(bits(&turn(&a1)), bits(&a2), "{act:?} winners");
            let dy: Vec<f32> =
                (0..len).map(|i| if i % 7 == 0 { 0.0 } else { ((i * 11 % 23) as f32 - 11.0) / 9.0 }).collect();
            let (mut dw1, mut db1, mut dw2, mut db2) =
                (vec![0f32; filters * 9], vec![0f32; filters], vec![1f32; filters * 9], vec![1f32; filters]);
            backward(&x, &dy, &y1, &a1, act, &c, filters, &pool, false, &mut dw1, Some(&mut db1));
            backward(&x, &turn(&dy), &y2, &a2, act, &c, filters, &pool, true, &mut dw2, Some(&mut db2));
            assert_eq!((bits(&dw1), bits(&db1)), (bits(&dw2), bits(&db2)), "{act:?} gradients");
        }
        // Both ways of storing and reading rows, on the same tile.
        let mut out: Pooled = ([[0f32; FB]; MAX_POOLED], [[0f32; FB]; MAX_POOLED]);
        for (i, (o, a)) in out.0.iter_mut().zip(out.1.iter_mut()).enumerate().take(plane) {
            for l in 0..FB {
                o[l] = if (i + l) % 5 == 0 { -0.0 } else { ((i * 3 + l) % 13) as f32 - 6.0 };
                a[l] = ((i + l) % 4) as f32;
            }
        }
        for act in [Activation::Relu, Activation::Linear] {
            let (mut ya, mut aa, mut yb, mut ab) =
                (vec![9f32; plane * 32], vec![9f32; plane * 32], vec![9f32; plane * 32], vec![9f32; plane * 32]);
            let (ysa, asa) = (SyncPtr::new(&mut ya), SyncPtr::new(&mut aa));
            let (ysb, asb) = (SyncPtr::new(&mut yb), SyncPtr::new(&mut ab));
            store_rows(&out, act, plane, 11, 3, 32, &ysa, &asa, has_avx512());
            store_rows(&out, act, plane, 11, 3, 32, &ysb, &asb, false);
            assert_eq!((bits(&ya), bits(&aa)), (bits(&yb), bits(&ab)), "{act:?} stored rows");
            let (mut ga, mut gb): (Pooled, Pooled) = (out, out);
            gather_grads(&ya, &ya, &aa, act, 3, (1, 32), 11, plane, has_avx512(), &mut ga);
            gather_grads(&ya, &ya, &aa, act, 3, (1, 32), 11, plane, false, &mut gb);
            let flat = |p: &Pooled| (bits(p.0.as_flattened()), bits(p.1.as_flattened()));
            assert_eq!(flat(&ga), flat(&gb), "{act:?} read rows");
            // Channels-major: a lane's plane after another's.
            let (gc, ycm, acm) = (
                (0..3 + 16 * 200).map(|i| ((i * 7 % 19) as f32 - 9.0) / 4.0).collect::<Vec<_>>(),
                (0..3 + 16 * 200).map(|i| if i % 3 == 0 { 0.0 } else { (i % 5) as f32 - 2.0 }).collect::<Vec<_>>(),
                (0..3 + 16 * 200).map(|i| (i % 4) as f32).collect::<Vec<_>>(),
            );
            let (mut ga, mut gb): (Pooled, Pooled) = (out, out);
            gather_grads(&gc, &ycm, &acm, act, 3, (200, 1), 13, plane, has_avx512(), &mut ga);
            gather_grads(&gc, &ycm, &acm, act, 3, (200, 1), 13, plane, false, &mut gb);
            assert_eq!(flat(&ga), flat(&gb), "{act:?} gathered lanes");
        }
    }

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
