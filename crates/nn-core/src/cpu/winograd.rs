//! A 3×3 convolution (stride 1, no padding) followed by 2×2 max pooling, by Winograd's
//! F(2×2, 3×3): the forward pass of the second conv of Keras's convnet in 2.7× fewer
//! multiplications than the direct pass of `implicit_conv.rs`.
//!
//! Each 2×2 block of conv outputs (one pooling window) comes from a 4×4 block of input
//! pixels: `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin and Gray, 2015) takes 16 multiplications
//! per input channel where the definition takes 36. The 16 products of a block are 16
//! independent GEMMs over the channels — `[blocks, c] × [c, filters]` — run in the AVX-512
//! tile of `tile.rs`; the transforms are vector additions over 16 channels (input) or 16
//! filters (output). Pooling picks the winner of each 2×2 block straight from the output
//! transform, so no conv output is ever stored; the last conv row and column, which an odd
//! size leaves out of the pooling, are never computed.
//!
//! The batch is cut like `implicit_conv.rs`'s (fixed groups, chunks of a few images), so a
//! chunk's transformed inputs and products stay in L2. The results equal the direct pass's to
//! within rounding (the transforms add and subtract before multiplying); the winners and the
//! pooled values are stored exactly as `implicit_conv::forward_pooled` stores them, so its
//! backward pass takes them unchanged.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Mutex;

use super::scatter::{store_transposed, transpose};
use super::team;
use super::tile::{Steps, TileFn, LANES, MAX_NV, MAX_ROWS};
use super::tile_gemm::{grow, Tiled};
use crate::activation::Activation;
use crate::device::Window;

/// Images whose blocks are worked on apart (as `implicit_conv`'s groups).
const GROUPS: usize = 8;
/// The most images in a chunk: 4 images of 32 channels into 64 filters keep about 700 KB of
/// buffers, a third of a core's L2.
const CHUNK: usize = 4;

/// Whether [`forward_pooled`] takes this conv and the pooling after it: a 3×3 conv with
/// stride 1 and no padding, channels and filters in whole vectors, followed by a 2×2 max
/// pooling with stride 2 — a pair `implicit_conv` fuses too (its backward pass is used).
pub(crate) fn supports(conv: &Window, pool: &Window, filters: usize) -> bool {
    super::implicit_conv::supports_pooled(conv, pool)
        && (conv.kh, conv.kw, conv.sh, conv.sw, conv.ph, conv.pw) == (3, 3, 1, 1, 0, 0)
        && pool.kh == 2
        && pool.oh > 0
        && pool.ow > 0
        && conv.c.is_multiple_of(LANES)
        && filters.is_multiple_of(LANES)
}

/// Per-thread buffers, grown as needed and kept.
#[derive(Default)]
struct Scratch {
    /// The chunk's images, pixel-major: `[h·w][image][channel]`.
    pixels: Vec<f32>,
    /// The transformed inputs, `[16][block][channel]`.
    v: Vec<f32>,
    /// The products, `[block][16][filter]`.
    m: Vec<f32>,
    /// One image's pooled outputs and winners, `[window][filter]`.
    pooled: Vec<f32>,
    winners: Vec<f32>,
    zeros: Vec<f32>,
    rows: Vec<u32>,
    steps: Vec<u32>,
    tile: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// The transformed kernels `[16][c][filters]`, reused from call to call.
static KERNELS: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// The shapes of one call.
struct Shape {
    n: usize,
    c: usize,
    f: usize,
    /// Input row length and plane size.
    w: usize,
    hw: usize,
    /// Conv output row length (the winners' offsets are in its plane).
    ow: usize,
    /// Pooled rows and columns: 2×2 blocks per image.
    ph: usize,
    pw: usize,
}

impl Shape {
    fn blocks(&self) -> usize {
        self.ph * self.pw
    }
}

/// `y = act(maxpool(conv(x, w) + b))` exactly as `implicit_conv::forward_pooled` defines it
/// (`x [c, n, h, w]`, `w [filters, c, 3, 3]`, pooled `y [filters, n, ph, pw]`, winners in `arg`
/// as offsets in the conv output plane), for the pairs [`supports`] takes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_pooled(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    act: Activation,
    win: &Window,
    filters: usize,
    pool: &Window,
    y: &mut [f32],
    arg: &mut [f32],
    tiles: fn(usize) -> TileFn,
) {
    let s = Shape { n: win.n, c: win.c, f: filters, w: win.w, hw: win.h * win.w, ow: win.ow, ph: pool.oh, pw: pool.ow };
    let mut kernels = KERNELS.lock().unwrap_or_else(|e| e.into_inner());
    let u = grow(&mut kernels, 16 * s.c * s.f + s.f);
    transform_kernels(w, b, &s, u);
    let u = &*u;
    let pp = s.blocks();
    let ys = team::SyncPtr::new(&mut y[..s.f * s.n * pp]);
    let args = team::SyncPtr::new(&mut arg[..s.f * s.n * pp]);
    let groups = GROUPS.min(s.n).max(1);
    let per_group = s.n.div_ceil(groups);
    team::for_each(s.n.div_ceil(per_group), |g| {
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            let (lo, hi) = (g * per_group, ((g + 1) * per_group).min(s.n));
            for i in (lo..hi).step_by(CHUNK) {
                chunk(x, &s, i..(i + CHUNK).min(hi), u, act, &ys, &args, tiles, sc);
            }
        })
    });
}

/// `U = G g Gᵀ` for every (channel, filter) into `u [16][c][filters]`, and the bias after it;
/// the channels in parallel.
fn transform_kernels(w: &[f32], b: Option<&[f32]>, s: &Shape, u: &mut [f32]) {
    let (c, f) = (s.c, s.f);
    let (u, bias) = u[..16 * c * f + f].split_at_mut(16 * c * f);
    for (fi, v) in bias.iter_mut().enumerate() {
        *v = b.map_or(0.0, |b| b[fi]);
    }
    let us = team::SyncPtr::new(u);
    team::for_each(c, |ci| {
        for xi in 0..16 {
            // SAFETY: row (ξ, ci) of U belongs to this part (channel ci) alone.
            let row = unsafe { us.range((xi * c + ci) * f, (xi * c + ci + 1) * f) };
            let (r, q) = (xi / 4, xi % 4);
            for (fi, v) in row.iter_mut().enumerate() {
                let g = &w[(fi * c + ci) * 9..(fi * c + ci + 1) * 9];
                // Row r of G g (G's rows: g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 of the kernel's
                // rows), then entry q of that row times Gᵀ (the same on its entries).
                let gg: [f32; 3] = std::array::from_fn(|k| {
                    let (a, m, z) = (g[k], g[3 + k], g[6 + k]);
                    [a, 0.5 * (a + m + z), 0.5 * (a - m + z), z][r]
                });
                let [a, m, z] = gg;
                *v = [a, 0.5 * (a + m + z), 0.5 * (a - m + z), z][q];
            }
        }
    });
}

/// One chunk of images: transform, multiply, transform back, pool, store.
#[allow(clippy::too_many_arguments)]
fn chunk(
    x: &[f32],
    s: &Shape,
    imgs: Range<usize>,
    u: &[f32],
    act: Activation,
    ys: &team::SyncPtr<f32>,
    args: &team::SyncPtr<f32>,
    tiles: fn(usize) -> TileFn,
    sc: &mut Scratch,
) {
    let (c, f, gi, t) = (s.c, s.f, imgs.len(), s.blocks());
    let gc = gi * c;
    let blocks = gi * t;
    // The images, pixel-major, so that one vector holds 16 channels of a pixel.
    let pixels = grow(&mut sc.pixels, s.hw * gc);
    for (j, img) in imgs.clone().enumerate() {
        transpose(&x[img * s.hw..], c, s.hw, s.n * s.hw, &mut pixels[j * c..], gc);
    }
    let pixels = &*pixels;
    // Bᵀ d B for every 4×4 block of every image, 16 channels at a time.
    let v = grow(&mut sc.v, 16 * blocks * c);
    assert!(s.ph * 2 + 2 <= s.hw / s.w && s.pw * 2 + 2 <= s.w, "Winograd blocks outside the image");
    // SAFETY: `supports` admits this path only where the CPU has AVX-512 (the own kernels);
    // the reads stay inside the chunk's pixels (asserted above) and the writes inside `v`.
    unsafe { input_transform(pixels, s, gi, v) };
    let v = &*v;
    // The 16 products: M[ξ] = V[ξ] · U[ξ], each [blocks, c] × [c, f], into m [block][ξ][f].
    let nv = [4, 3, 2, 1].into_iter().find(|nv| (f / LANES).is_multiple_of(*nv)).unwrap_or(1).min(MAX_NV);
    sc.rows.clear();
    sc.rows.extend((0..blocks).map(|p| (p * c) as u32));
    sc.steps.clear();
    sc.steps.extend(0..c as u32);
    let steps = Steps::new(&sc.steps);
    let m = grow(&mut sc.m, blocks * 16 * f);
    let out = grow(&mut sc.tile, MAX_ROWS * MAX_NV * LANES);
    for xi in 0..16 {
        let g = Tiled {
            tile: tiles(nv),
            nv,
            a: &v[xi * blocks * c..],
            row_offs: &sc.rows,
            steps: &steps,
            b: &u[xi * c * f..],
            ldb: f,
            cols: f,
        };
        g.store(&mut m[xi * f..], 16 * f, false, out);
    }
    let m = &*m;
    // Aᵀ M A, bias, ReLU and the maximum of each 2×2 block, per image.
    let bias = &u[16 * c * f..16 * c * f + f];
    let relu = act == Activation::Relu;
    let pooled = grow(&mut sc.pooled, t * f);
    let winners = grow(&mut sc.winners, t * f);
    let zeros = grow(&mut sc.zeros, f);
    let pp = s.blocks();
    for (j, img) in imgs.enumerate() {
        // SAFETY: AVX-512 as above; block j·t.. of `m` and `t·f` floats of the outputs.
        unsafe { output_transform(&m[j * t * 16 * f..(j + 1) * t * 16 * f], bias, s, relu, pooled, winners) };
        // ReLU went before the pooling (as in the separate layers); other non-decreasing
        // activations commute with the maximum.
        if !relu && act != Activation::Linear {
            pooled.iter_mut().for_each(|v| *v = act.apply(*v));
        }
        // Each image's planes belong to this chunk's part.
        store_transposed(pooled, f, t, f, zeros, false, ys, img * pp, s.n * pp);
        store_transposed(winners, f, t, f, zeros, false, args, img * pp, s.n * pp);
    }
}

/// `V = Bᵀ d B` for every 4×4 block `d` of the chunk's `gi` images (`pixels [h·w][gi][c]`),
/// into `v [16][block][c]`, 16 channels at a time.
///
/// # Safety
/// The CPU has AVX-512F; `pixels` holds `h·w·gi·c` floats and `v` `16·gi·blocks·c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_transform(pixels: &[f32], s: &Shape, gi: usize, v: &mut [f32]) {
    use std::arch::x86_64::*;
    let (c, t) = (s.c, s.blocks());
    let (gc, blocks) = (gi * c, gi * t);
    assert!(pixels.len() >= s.hw * gc && v.len() >= 16 * blocks * c, "Winograd buffers too short");
    let (src, dst) = (pixels.as_ptr(), v.as_mut_ptr());
    for j in 0..gi {
        for by in 0..s.ph {
            for bx in 0..s.pw {
                let p = j * t + by * s.pw + bx;
                for cv in (0..c).step_by(LANES) {
                    // SAFETY (loads and stores): rows 2·by.. 2·by + 3 and columns 2·bx.. 2·bx + 3
                    // are inside the image (checked by the caller), channel cv + 15 < c.
                    let at = |a: usize, e: usize| ((2 * by + a) * s.w + 2 * bx + e) * gc + j * c + cv;
                    let d: [[__m512; 4]; 4] =
                        [0, 1, 2, 3].map(|a| [0, 1, 2, 3].map(|e| unsafe { _mm512_loadu_ps(src.add(at(a, e))) }));
                    // Bᵀ d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3; r[e][a] = (Bᵀ d)[a][e].
                    let r = [0, 1, 2, 3].map(|e| {
                        [
                            _mm512_sub_ps(d[0][e], d[2][e]),
                            _mm512_add_ps(d[1][e], d[2][e]),
                            _mm512_sub_ps(d[2][e], d[1][e]),
                            _mm512_sub_ps(d[1][e], d[3][e]),
                        ]
                    });
                    // (Bᵀ d) B: the same along each row.
                    #[allow(clippy::needless_range_loop)]
                    for a in 0..4 {
                        let out = [
                            _mm512_sub_ps(r[0][a], r[2][a]),
                            _mm512_add_ps(r[1][a], r[2][a]),
                            _mm512_sub_ps(r[2][a], r[1][a]),
                            _mm512_sub_ps(r[1][a], r[3][a]),
                        ];
                        for (e, o) in out.into_iter().enumerate() {
                            unsafe { _mm512_storeu_ps(dst.add(((a * 4 + e) * blocks + p) * c + cv), o) };
                        }
                    }
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` plus bias (and ReLU) for every block of one image (`m [block][16][f]`), and the
/// winner of each 2×2 `Y` into `pooled [block][f]` and `winners [block][f]` (offsets in the
/// conv plane), 16 filters at a time.
///
/// # Safety
/// The CPU has AVX-512F; `m` holds `blocks·16·f` floats, `bias` `f`, the outputs `blocks·f`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_transform(m: &[f32], bias: &[f32], s: &Shape, relu: bool, pooled: &mut [f32], winners: &mut [f32]) {
    use std::arch::x86_64::*;
    let (f, t) = (s.f, s.blocks());
    assert!(m.len() >= t * 16 * f && bias.len() >= f && pooled.len() >= t * f && winners.len() >= t * f);
    let zero = _mm512_setzero_ps();
    for by in 0..s.ph {
        for bx in 0..s.pw {
            let q = by * s.pw + bx;
            let base = (2 * by * s.ow + 2 * bx) as f32;
            let offs = [base, base + 1.0, base + s.ow as f32, base + s.ow as f32 + 1.0].map(|o| _mm512_set1_ps(o));
            for fv in (0..f).step_by(LANES) {
                // SAFETY (loads and stores): inside the lengths asserted above.
                let mm: [__m512; 16] =
                    std::array::from_fn(|xi| unsafe { _mm512_loadu_ps(m.as_ptr().add((q * 16 + xi) * f + fv)) });
                // Aᵀ M: rows m0 + m1 + m2 and m1 - m2 - m3.
                let s0 = [0, 1, 2, 3].map(|e| _mm512_add_ps(_mm512_add_ps(mm[e], mm[4 + e]), mm[8 + e]));
                let s1 = [0, 1, 2, 3].map(|e| _mm512_sub_ps(_mm512_sub_ps(mm[4 + e], mm[8 + e]), mm[12 + e]));
                let b = unsafe { _mm512_loadu_ps(bias.as_ptr().add(fv)) };
                let finish = |z: __m512| {
                    let z = _mm512_add_ps(z, b);
                    if relu {
                        _mm512_max_ps(z, zero)
                    } else {
                        z
                    }
                };
                let left = |s: &[__m512; 4]| finish(_mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]));
                let right = |s: &[__m512; 4]| finish(_mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]));
                let (y00, y01, y10, y11) = (left(&s0), right(&s0), left(&s1), right(&s1));
                // The winner as `conv::max_pool_plane` picks it: each row's, then the better
                // of the two (the first maximum in row-major order).
                let k1 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y01, y00);
                let (m1, i1) = (_mm512_mask_blend_ps(k1, y00, y01), _mm512_mask_blend_ps(k1, offs[0], offs[1]));
                let k2 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y11, y10);
                let (m2, i2) = (_mm512_mask_blend_ps(k2, y10, y11), _mm512_mask_blend_ps(k2, offs[2], offs[3]));
                let k = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m2, m1);
                unsafe {
                    _mm512_storeu_ps(pooled.as_mut_ptr().add(q * f + fv), _mm512_mask_blend_ps(k, m1, m2));
                    _mm512_storeu_ps(winners.as_mut_ptr().add(q * f + fv), _mm512_mask_blend_ps(k, i1, i2));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tile::portable_fn;

    #[test]
    fn matches_the_direct_pass_values_and_winners() {
        if !crate::cpu::simd::has_avx512() {
            return; // the transforms are AVX-512 code, used only where the CPU has it
        }
        for (c, filters, h, n, act) in
            [(16, 32, 13, 5, Activation::Relu), (32, 16, 8, 3, Activation::Linear), (16, 16, 9, 2, Activation::Tanh)]
        {
            let oh = h - 2;
            let win = Window { n, c, h, w: h, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, oh, ow: oh };
            let pool = Window {
                n,
                c: filters,
                h: oh,
                w: oh,
                kh: 2,
                kw: 2,
                sh: 2,
                sw: 2,
                ph: 0,
                pw: 0,
                oh: oh / 2,
                ow: oh / 2,
            };
            let mut rng = mnist_data::Rng::new(7);
            let x: Vec<f32> = (0..c * n * h * h).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let w: Vec<f32> = (0..filters * c * 9).map(|_| rng.uniform(-0.3, 0.3)).collect();
            let b: Vec<f32> = (0..filters).map(|i| (i as f32 - 8.0) / 20.0).collect();
            let len = filters * n * (oh / 2) * (oh / 2);
            let (mut y1, mut a1, mut y2, mut a2) = (vec![0f32; len], vec![0f32; len], vec![0f32; len], vec![0f32; len]);
            let portable = |nv| portable_fn(nv);
            forward_pooled(&x, &w, Some(&b), act, &win, filters, &pool, &mut y1, &mut a1, portable);
            crate::cpu::implicit_conv::forward_pooled(
                &x,
                &w,
                Some(&b),
                act,
                &win,
                filters,
                &pool,
                &mut y2,
                &mut a2,
                portable,
            );
            // The conv's outputs, to tell a near-tie (whose winner rounding may change) from
            // a wrong winner.
            let mut z = vec![0f32; filters * n * oh * oh];
            crate::cpu::implicit_conv::forward(&x, &w, Some(&b), act, &win, filters, &mut z, portable);
            let mut differ = 0;
            for i in 0..len {
                assert!(
                    (y1[i] - y2[i]).abs() <= 1e-5 * (1.0 + y2[i].abs()),
                    "{c} {filters} {h}: {} vs {}",
                    y1[i],
                    y2[i]
                );
                if a1[i] != a2[i] {
                    let plane = i / ((oh / 2) * (oh / 2)) * oh * oh;
                    let (p, q) = (z[plane + a1[i] as usize], z[plane + a2[i] as usize]);
                    assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{c} {filters} {h}: winner {i}: {p} vs {q}");
                    differ += 1;
                }
            }
            assert!(differ * 100 <= len, "{differ} of {len} winners differ");
        }
    }
}
