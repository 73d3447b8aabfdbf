//! A 3×3 convolution (stride 1, no padding) followed by 2×2 max pooling, by Winograd's
//! F(2×2, 3×3): the forward pass of the second conv of Keras's convnet in 2.7× fewer
//! multiplications than the direct pass of `implicit_conv.rs`, its input gradient in 1.9×
//! fewer and its weight gradient in 2.7× fewer.
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
//! chunk's images stay in L2, and its blocks are worked a dozen at a time, so their
//! transformed inputs and products stay in L1. The results equal the direct pass's to
//! within rounding (the transforms add and subtract before multiplying); the winners and the
//! pooled values are stored exactly as `implicit_conv::forward_pooled` stores them, so its
//! backward pass takes them unchanged.
//!
//! The input gradient is the same transform run backwards: a correlation of the conv output's
//! gradient (zero-padded by 2) with the kernels turned by 180° and with channels and filters
//! swapped. Only the pooled windows' winners have a gradient, so with an odd conv size the
//! last row and column of the input have none, and the blocks cover the rest exactly. The
//! weight gradient is summed in the transformed domain, `dU[ξ] += V[ξ]ᵀ · dM[ξ]` with
//! `dM = A dY Aᵀ` of each block's output gradient, per fixed group of images (so it does not
//! depend on the number of threads), and turned back once: `dw = Gᵀ dU G`.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Mutex;

use super::scatter::{store_transposed, transpose};
use super::team;
use super::tile::{rows_for, Steps, TileFn, LANES, MAX_NV, MAX_ROWS};
use super::tile_gemm::{grow, Tiled};
use crate::activation::Activation;
use crate::device::Window;

/// Images whose blocks are worked on apart (as `implicit_conv`'s groups).
const GROUPS: usize = 8;
/// The most images in a chunk: the pixel-major copy of 4 images of 32 channels is 86 KB, and
/// the weight gradient's transformed inputs and output gradients for them 600 KB, within a
/// core's L2.
const CHUNK: usize = 4;

/// Whether [`forward_pooled`] takes this conv and the pooling after it: a 3×3 conv with
/// stride 1 and no padding, channels and filters in whole vectors, followed by a 2×2 max
/// pooling with stride 2 — a pair `implicit_conv` fuses too (its backward pass drives
/// [`input_gradient`] and [`weight_gradient`] for it).
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
static KERNELS: Mutex<super::HostBuf> = Mutex::new(super::HostBuf::new());

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
    fn new(win: &Window, pool: &Window, filters: usize) -> Shape {
        Shape { n: win.n, c: win.c, f: filters, w: win.w, hw: win.h * win.w, ow: win.ow, ph: pool.oh, pw: pool.ow }
    }
    fn blocks(&self) -> usize {
        self.ph * self.pw
    }
}

/// What [`input_transform`] reads: pixel-major images of `c` channels (`gc` floats per pixel:
/// all the chunk's images), rows `w` pixels long, cut into `rows × cols` blocks of 4×4
/// pixels, 2 apart.
struct Blocks {
    c: usize,
    gc: usize,
    w: usize,
    rows: usize,
    cols: usize,
}

/// `y = act(maxpool(conv(x, w) + b))` exactly as `implicit_conv::forward_pooled` defines it
/// (`x [c, n, h, w]`, or `[n, h, w, c]` with `x_pm`; `w [filters, c, 3, 3]`, pooled
/// `y [filters, n, ph, pw]`, winners in `arg` as offsets in the conv output plane), for the
/// pairs [`supports`] takes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_pooled(
    x: &[f32],
    x_pm: bool,
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
    let s = Shape::new(win, pool, filters);
    let mut kernels = KERNELS.lock().unwrap_or_else(|e| e.into_inner());
    let (u, bias) = kernels.grown(16 * s.c * s.f + s.f).split_at_mut(16 * s.c * s.f);
    for (fi, v) in bias.iter_mut().enumerate() {
        *v = b.map_or(0.0, |b| b[fi]);
    }
    transform_kernels(s.c, s.f, |ci, fi| std::array::from_fn(|r| w[(fi * s.c + ci) * 9 + r]), u);
    let (u, bias) = (&*u, &*bias);
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
                chunk(x, x_pm, &s, i..(i + CHUNK).min(hi), u, bias, act, &ys, &args, tiles, sc);
            }
        })
    });
}

/// `U = G g Gᵀ` for every input channel `ci < cin` and output channel `co < cout`, with
/// `g = kernel(ci, co)` (row-major 3×3), into `u [16][cin][cout]`; the input channels in
/// parallel.
fn transform_kernels(cin: usize, cout: usize, kernel: impl Fn(usize, usize) -> [f32; 9] + Sync, u: &mut [f32]) {
    let us = team::SyncPtr::new(&mut u[..16 * cin * cout]);
    team::for_each(cin, |ci| {
        // SAFETY: rows (ξ, ci) of U belong to this part (channel ci) alone.
        let rows: [&mut [f32]; 16] =
            std::array::from_fn(|xi| unsafe { us.range((xi * cin + ci) * cout, (xi * cin + ci + 1) * cout) });
        #[allow(clippy::needless_range_loop)]
        for co in 0..cout {
            let g = kernel(ci, co);
            // G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 of the kernel's rows; then each
            // row of that times Gᵀ, the same on its entries.
            let gg: [[f32; 3]; 4] = std::array::from_fn(|r| {
                std::array::from_fn(|k| {
                    let (a, m, z) = (g[k], g[3 + k], g[6 + k]);
                    [a, 0.5 * (a + m + z), 0.5 * (a - m + z), z][r]
                })
            });
            for (r, &[a, m, z]) in gg.iter().enumerate() {
                for (q, v) in [a, 0.5 * (a + m + z), 0.5 * (a - m + z), z].into_iter().enumerate() {
                    rows[r * 4 + q][co] = v;
                }
            }
        }
    });
}

/// The tile's vectors for `cols` columns: the widest that divides them, so no tile reads or
/// writes past a row.
fn vectors_per_tile(cols: usize) -> usize {
    [4, 3, 2, 1].into_iter().find(|nv| (cols / LANES).is_multiple_of(*nv)).unwrap_or(1).min(MAX_NV)
}

/// Images `imgs` of `x [c, n, h, w]` (or, with `x_pm`, of a pixel-major `x [n, h, w, c]`)
/// into `px [h·w][image][c]`, so that one vector holds 16 channels of a pixel.
fn pixel_major(x: &[f32], x_pm: bool, s: &Shape, imgs: &Range<usize>, px: &mut [f32]) {
    let (gi, c) = (imgs.len(), s.c);
    for (j, img) in imgs.clone().enumerate() {
        if x_pm {
            let image = &x[img * s.hw * c..(img + 1) * s.hw * c];
            for (p, pixel) in image.chunks_exact(c).enumerate() {
                px[(p * gi + j) * c..(p * gi + j + 1) * c].copy_from_slice(pixel);
            }
        } else {
            transpose(&x[img * s.hw..], c, s.hw, s.n * s.hw, &mut px[j * c..], gi * c);
        }
    }
}

/// The three steps for every block of a chunk, a few blocks at a time so that their
/// transformed inputs and products stay in L1: `V = Bᵀ d B` of blocks `p0..p1` (as `b` cuts
/// the chunk's `gi` images, `pixels [height·b.w][gi][b.c]`), the 16 products
/// `M[ξ] = V[ξ] · U[ξ]` (`u [16][b.c][cout]`) in the AVX-512 tile, then `emit(p0..p1, m)` with
/// `m [block - p0][16][cout]`.
#[allow(clippy::too_many_arguments)]
fn pipeline(
    pixels: &[f32],
    height: usize,
    b: &Blocks,
    gi: usize,
    u: &[f32],
    cout: usize,
    tiles: fn(usize) -> TileFn,
    sc: &mut Scratch,
    mut emit: impl FnMut(Range<usize>, &[f32]),
) {
    let cin = b.c;
    let nv = vectors_per_tile(cout);
    let mr = rows_for(nv);
    // Two tiles of rows where their inputs fit in 32 KB, else one.
    let bt = if 16 * 2 * mr * cin * 4 <= 32 << 10 { 2 * mr } else { mr };
    let vs = v_stride(bt, cin);
    sc.rows.clear();
    sc.rows.extend((0..bt).map(|r| (r * cin) as u32));
    sc.steps.clear();
    sc.steps.extend(0..cin as u32);
    let steps = Steps::new(&sc.steps);
    let v = grow(&mut sc.v, 16 * vs);
    let m = grow(&mut sc.m, bt * 16 * cout);
    let out = grow(&mut sc.tile, MAX_ROWS * MAX_NV * LANES);
    let blocks = gi * b.rows * b.cols;
    for p0 in (0..blocks).step_by(bt) {
        let p1 = (p0 + bt).min(blocks);
        input_transform(pixels, height, b, p0..p1, v, vs);
        for xi in 0..16 {
            let g = Tiled {
                tile: tiles(nv),
                nv,
                a: &v[xi * vs..],
                row_offs: &sc.rows[..p1 - p0],
                steps: &steps,
                b: &u[xi * cin * cout..],
                ldb: cout,
                cols: cout,
            };
            g.store(&mut m[xi * cout..], 16 * cout, false, out);
        }
        emit(p0..p1, m);
    }
}

/// One chunk of images: transform, multiply, transform back, pool, store.
#[allow(clippy::too_many_arguments)]
fn chunk(
    x: &[f32],
    x_pm: bool,
    s: &Shape,
    imgs: Range<usize>,
    u: &[f32],
    bias: &[f32],
    act: Activation,
    ys: &team::SyncPtr<f32>,
    args: &team::SyncPtr<f32>,
    tiles: fn(usize) -> TileFn,
    sc: &mut Scratch,
) {
    let (c, f, gi, t) = (s.c, s.f, imgs.len(), s.blocks());
    let gc = gi * c;
    // The images, pixel-major, so that one vector holds 16 channels of a pixel.
    let (mut pixels, mut pooled, mut winners) =
        (std::mem::take(&mut sc.pixels), std::mem::take(&mut sc.pooled), std::mem::take(&mut sc.winners));
    let px = grow(&mut pixels, s.hw * gc);
    pixel_major(x, x_pm, s, &imgs, px);
    // Bᵀ d B, the products, then Aᵀ M A, bias, ReLU and the maximum of each 2×2 block.
    let relu = act == Activation::Relu;
    let (pooled_c, winners_c) = (grow(&mut pooled, gi * t * f), grow(&mut winners, gi * t * f));
    let bl = Blocks { c, gc, w: s.w, rows: s.ph, cols: s.pw };
    pipeline(px, s.hw / s.w, &bl, gi, u, f, tiles, sc, |range, m| {
        output_transform(m, range, bias, s, relu, pooled_c, winners_c);
    });
    // ReLU went before the pooling (as in the separate layers); other non-decreasing
    // activations commute with the maximum.
    if !relu && act != Activation::Linear {
        pooled_c.iter_mut().for_each(|v| *v = act.apply(*v));
    }
    let zeros = grow(&mut sc.zeros, f);
    let pp = s.blocks();
    for (j, img) in imgs.enumerate() {
        // Each image's planes belong to this chunk's part.
        store_transposed(&pooled_c[j * t * f..], f, t, f, zeros, false, ys, img * pp, s.n * pp);
        store_transposed(&winners_c[j * t * f..], f, t, f, zeros, false, args, img * pp, s.n * pp);
    }
    (sc.pixels, sc.pooled, sc.winners) = (pixels, pooled, winners);
}

/// The kernels of [`input_gradient`]: each turned by 180°, channels and filters swapped,
/// transformed into `u [16][filters][c]` (`w [filters, c, 3, 3]`).
pub(crate) fn rotated_kernels(w: &[f32], c: usize, filters: usize, u: &mut Vec<f32>) {
    let u = grow(u, 16 * filters * c);
    transform_kernels(filters, c, |fi, ci| std::array::from_fn(|r| w[(fi * c + ci) * 9 + 8 - r]), u);
}

/// The input gradient of a chunk of images, for a pair [`supports`] takes: from `dyt`, the
/// gradient of the chunk's conv outputs (`[position][ldg]`, image `j`'s position `(oy, ox)` at
/// row `j·oh·ow + oy·ow + ox`, non-zero only inside the pooling windows), into the planes
/// `dx [c, n, h, w]` (or, with `dx_pm`, `[n, h, w, c]`) of images `imgs` (overwritten). `u` is
/// from [`rotated_kernels`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn input_gradient(
    u: &[f32],
    dyt: &[f32],
    ldg: usize,
    imgs: &Range<usize>,
    win: &Window,
    pool: &Window,
    filters: usize,
    dx_pm: bool,
    dxs: &team::SyncPtr<f32>,
    tiles: fn(usize) -> TileFn,
) {
    let (c, f, gi, n) = (win.c, filters, imgs.len(), win.n);
    let (ohw, hw) = (win.oh * win.ow, win.h * win.w);
    // dz is zero past the pooling windows (rows 2·ph.., columns 2·pw..), so dx is zero past
    // row and column 2·ph + 1 and 2·pw + 1: (ph + 1) × (pw + 1) blocks of 2×2 cover the rest,
    // reading dz padded by 2 on every side.
    let (rows, cols) = (2 * pool.oh, 2 * pool.ow);
    let (hp, wp) = (rows + 4, cols + 4);
    let gf = gi * f;
    let bl = Blocks { c: f, gc: gf, w: wp, rows: pool.oh + 1, cols: pool.ow + 1 };
    SCRATCH.with(|sc| {
        let sc = &mut *sc.borrow_mut();
        let (mut pixels, mut planes) = (std::mem::take(&mut sc.pixels), std::mem::take(&mut sc.pooled));
        // dz pixel-major and padded: the border zeroed, the windows' rows copied in.
        let px = grow(&mut pixels, hp * wp * gf);
        for y in 0..hp {
            let row = &mut px[y * wp * gf..(y + 1) * wp * gf];
            if y < 2 || y >= rows + 2 {
                row.fill(0.0);
            } else {
                row[..2 * gf].fill(0.0);
                row[(cols + 2) * gf..].fill(0.0);
            }
        }
        for j in 0..gi {
            for oy in 0..rows {
                for ox in 0..cols {
                    let (at, from) = (((oy + 2) * wp + ox + 2) * gf + j * f, (j * ohw + oy * win.ow + ox) * ldg);
                    px[at..at + f].copy_from_slice(&dyt[from..from + f]);
                }
            }
        }
        // The images' input gradients, pixel-major: zero where no block reaches.
        let planes_c = grow(&mut planes, gi * hw * c);
        planes_c.fill(0.0);
        pipeline(px, hp, &bl, gi, u, c, tiles, sc, |range, m| output_blocks(m, range, &bl, c, win.w, hw, planes_c));
        let zeros = grow(&mut sc.zeros, c);
        for (j, img) in imgs.clone().enumerate() {
            if dx_pm {
                // SAFETY: this image's pixels belong to this chunk's part.
                let dst = unsafe { dxs.range(img * hw * c, (img + 1) * hw * c) };
                // `+ 0.0` as the transposed store adds its zero bias (a -0 becomes +0).
                let src = &planes_c[j * hw * c..(j + 1) * hw * c];
                dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v + 0.0);
                continue;
            }
            // This image's planes belong to this chunk's part.
            store_transposed(&planes_c[j * hw * c..], c, hw, c, zeros, false, dxs, img * hw, n * hw);
        }
        (sc.pixels, sc.pooled) = (pixels, planes);
    });
}

/// Adds the weight gradient of a chunk of images, in the transformed domain, to
/// `du [16][c][filters]` (turn the sum over the batch into `dw` with [`weight_gradient_of`]),
/// for a pair [`supports`] takes: `dU[ξ] += V[ξ]ᵀ · dM[ξ]` over the chunk's blocks, with
/// `V = Bᵀ d B` of the images `x [c, n, h, w]` (`[n, h, w, c]` with `x_pm`) and `dM = A dY Aᵀ`
/// of each 2×2 block of the conv outputs' gradient `dyt [position][ldg]` (image `j`'s position
/// `(oy, ox)` at row `j·oh·ow + oy·ow + ox`, zero outside the pooling windows).
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_gradient(
    x: &[f32],
    x_pm: bool,
    dyt: &[f32],
    ldg: usize,
    imgs: &Range<usize>,
    win: &Window,
    pool: &Window,
    filters: usize,
    du: &mut [f32],
    tiles: fn(usize) -> TileFn,
) {
    let s = Shape::new(win, pool, filters);
    let (c, f, gi, t) = (s.c, s.f, imgs.len(), s.blocks());
    let (gc, blocks) = (gi * c, gi * t);
    assert!(du.len() >= 16 * c * f && ldg >= f, "Winograd weight gradient outside its buffers");
    SCRATCH.with(|sc| {
        let sc = &mut *sc.borrow_mut();
        let px = grow(&mut sc.pixels, s.hw * gc);
        pixel_major(x, x_pm, &s, imgs, px);
        let bl = Blocks { c, gc, w: s.w, rows: s.ph, cols: s.pw };
        let (vs, ms) = (v_stride(blocks, c), v_stride(blocks, f));
        let v = grow(&mut sc.v, 16 * vs);
        input_transform(px, s.hw / s.w, &bl, 0..blocks, v, vs);
        let dm = grow(&mut sc.m, 16 * ms);
        gradient_transform(dyt, ldg, &s, blocks, dm, ms);
        // dU[ξ] [c, f] += V[ξ]ᵀ · dM[ξ]: rows are channels (gathered down V's blocks), the
        // steps are the blocks, the vectors filters.
        let nv = vectors_per_tile(f);
        sc.rows.clear();
        sc.rows.extend(0..c as u32);
        sc.steps.clear();
        sc.steps.extend((0..blocks).map(|p| (p * c) as u32));
        let steps = Steps::new(&sc.steps);
        let out = grow(&mut sc.tile, MAX_ROWS * MAX_NV * LANES);
        for xi in 0..16 {
            let g = Tiled {
                tile: tiles(nv),
                nv,
                a: &v[xi * vs..],
                row_offs: &sc.rows,
                steps: &steps,
                b: &dm[xi * ms..],
                ldb: f,
                cols: f,
            };
            g.store(&mut du[xi * c * f..(xi + 1) * c * f], f, true, out);
        }
    });
}

/// `dw [filters, c, 3, 3] = Gᵀ dU G` of the transformed weight gradient `du [16][c][filters]`.
pub(crate) fn weight_gradient_of(du: &[f32], c: usize, filters: usize, dw: &mut [f32]) {
    for ci in 0..c {
        for fi in 0..filters {
            let d = |r: usize, q: usize| du[((r * 4 + q) * c + ci) * filters + fi];
            // Gᵀ dU (3×4), then times G (4×3): G's columns combine rows 0..3 as
            // (1, ½, ½, 0), (0, ½, -½, 0), (0, ½, ½, 1).
            let t: [[f32; 4]; 3] = std::array::from_fn(|a| {
                std::array::from_fn(|q| match a {
                    0 => d(0, q) + 0.5 * (d(1, q) + d(2, q)),
                    1 => 0.5 * (d(1, q) - d(2, q)),
                    _ => 0.5 * (d(1, q) + d(2, q)) + d(3, q),
                })
            });
            for (a, ta) in t.iter().enumerate() {
                let out = [ta[0] + 0.5 * (ta[1] + ta[2]), 0.5 * (ta[1] - ta[2]), 0.5 * (ta[1] + ta[2]) + ta[3]];
                for (b, v) in out.into_iter().enumerate() {
                    dw[(fi * c + ci) * 9 + a * 3 + b] = v;
                }
            }
        }
    }
}

/// `dM = A dY Aᵀ` for every 2×2 block of the conv outputs' gradient `dyt [position][ldg]` (the
/// blocks the pooling windows cover), into `dm [16][block][f]` with the 16 matrices `ms` apart.
fn gradient_transform(dyt: &[f32], ldg: usize, s: &Shape, blocks: usize, dm: &mut [f32], ms: usize) {
    let (f, t, ohw) = (s.f, s.blocks(), s.ow * (s.hw / s.w - 2));
    let images = blocks.div_ceil(t.max(1));
    assert!(
        super::simd::has_avx512()
            && f.is_multiple_of(LANES)
            && ldg >= f
            && 2 * s.ph <= ohw / s.ow.max(1)
            && 2 * s.pw <= s.ow
            && dyt.len() >= ((images - 1) * ohw + (2 * s.ph - 1) * s.ow + 2 * s.pw - 1) * ldg + f
            && ms >= blocks * f
            && dm.len() >= 15 * ms + blocks * f,
        "Winograd gradient transform outside its buffers"
    );
    // SAFETY: AVX-512F and the bounds (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        gradient_transform_avx512(dyt, ldg, s, blocks, dm, ms)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the Winograd passes run only where the CPU has AVX-512");
}

/// [`gradient_transform`] with AVX-512.
///
/// # Safety
/// The CPU has AVX-512F; the bounds [`gradient_transform`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gradient_transform_avx512(dyt: &[f32], ldg: usize, s: &Shape, blocks: usize, dm: &mut [f32], ms: usize) {
    use std::arch::x86_64::*;
    let (f, t, ohw) = (s.f, s.blocks(), s.ow * (s.hw / s.w - 2));
    let (src, dst) = (dyt.as_ptr(), dm.as_mut_ptr());
    for p in 0..blocks {
        let (j, q) = (p / t, p % t);
        let (by, bx) = (q / s.pw, q % s.pw);
        let at = (j * ohw + 2 * by * s.ow + 2 * bx) * ldg;
        for fv in (0..f).step_by(LANES) {
            // SAFETY (loads and stores): inside the bounds the caller checked.
            let (y00, y01, y10, y11) = unsafe {
                (
                    _mm512_loadu_ps(src.add(at + fv)),
                    _mm512_loadu_ps(src.add(at + ldg + fv)),
                    _mm512_loadu_ps(src.add(at + s.ow * ldg + fv)),
                    _mm512_loadu_ps(src.add(at + (s.ow + 1) * ldg + fv)),
                )
            };
            // A dY: rows y0, y0 + y1, y0 - y1, -y1 (of the 2×2's rows); then the same along
            // each row: (a, b) -> a, a + b, a - b, -b.
            let zero = _mm512_setzero_ps();
            let rows = [
                (y00, y01),
                (_mm512_add_ps(y00, y10), _mm512_add_ps(y01, y11)),
                (_mm512_sub_ps(y00, y10), _mm512_sub_ps(y01, y11)),
                (_mm512_sub_ps(zero, y10), _mm512_sub_ps(zero, y11)),
            ];
            for (r, &(a, b)) in rows.iter().enumerate() {
                let out = [a, _mm512_add_ps(a, b), _mm512_sub_ps(a, b), _mm512_sub_ps(zero, b)];
                for (e, o) in out.into_iter().enumerate() {
                    unsafe { _mm512_storeu_ps(dst.add((r * 4 + e) * ms + p * f + fv), o) };
                }
            }
        }
    }
}

/// The distance between the 16 matrices `V[ξ]` of `blocks × c`: one vector more than their
/// size, so that the 16 stores of a block do not all fall in one set of the L1 cache.
fn v_stride(blocks: usize, c: usize) -> usize {
    blocks * c + LANES
}

/// `V = Bᵀ d B` for blocks `range` (numbered image by image, row-major, as `b` cuts the images
/// `height` pixels high of `pixels [h·w][image][c]`), into `v [16][block - range.start][c]`
/// with the 16 matrices `vs` apart, 16 channels at a time.
fn input_transform(pixels: &[f32], height: usize, b: &Blocks, range: Range<usize>, v: &mut [f32], vs: usize) {
    let t = b.rows * b.cols;
    let gi = range.end.div_ceil(t.max(1));
    assert!(
        super::simd::has_avx512()
            && b.c.is_multiple_of(LANES)
            && 2 * b.rows + 2 <= height
            && 2 * b.cols + 2 <= b.w
            && b.gc >= gi * b.c
            && pixels.len() >= height * b.w * b.gc
            && vs >= range.len() * b.c
            && v.len() >= 15 * vs + range.len() * b.c,
        "Winograd input transform outside its buffers"
    );
    // SAFETY: AVX-512F (checked above); every block's pixels lie inside `pixels` and every
    // block's outputs inside `v` (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        input_transform_avx512(pixels, b, range, v, vs)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the Winograd passes run only where the CPU has AVX-512");
}

/// [`input_transform`] with AVX-512. (No closures here: they would not inherit the
/// function's AVX-512.)
///
/// # Safety
/// The CPU has AVX-512F; the bounds [`input_transform`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn input_transform_avx512(pixels: &[f32], b: &Blocks, range: Range<usize>, v: &mut [f32], vs: usize) {
    use std::arch::x86_64::*;
    let (c, t) = (b.c, b.rows * b.cols);
    let (src, dst) = (pixels.as_ptr(), v.as_mut_ptr());
    let p0 = range.start;
    for p in range {
        let (j, q) = (p / t, p % t);
        let (by, bx) = (q / b.cols, q % b.cols);
        for cv in (0..c).step_by(LANES) {
            // SAFETY (loads and stores): rows 2·by.. 2·by + 3 and columns 2·bx.. 2·bx + 3 are
            // inside the image, channel cv + 15 < c, block p - p0 inside `v` (all checked).
            let mut d = [[_mm512_setzero_ps(); 4]; 4];
            for (a, row) in d.iter_mut().enumerate() {
                let at = ((2 * by + a) * b.w + 2 * bx) * b.gc + j * c + cv;
                for (e, v) in row.iter_mut().enumerate() {
                    *v = unsafe { _mm512_loadu_ps(src.add(at + e * b.gc)) };
                }
            }
            // Bᵀ d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3; r[e][a] = (Bᵀ d)[a][e].
            let mut r = [[_mm512_setzero_ps(); 4]; 4];
            for (e, re) in r.iter_mut().enumerate() {
                *re = [
                    _mm512_sub_ps(d[0][e], d[2][e]),
                    _mm512_add_ps(d[1][e], d[2][e]),
                    _mm512_sub_ps(d[2][e], d[1][e]),
                    _mm512_sub_ps(d[1][e], d[3][e]),
                ];
            }
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
                    unsafe { _mm512_storeu_ps(dst.add((a * 4 + e) * vs + (p - p0) * c + cv), o) };
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` for one block and 16 lanes, `M[ξ]` at `m + ξ·stride`: `[Y00, Y01, Y10, Y11]`.
///
/// # Safety
/// The CPU has AVX-512F; 16 floats at each of the 16 addresses are readable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block_outputs(m: *const f32, stride: usize) -> [std::arch::x86_64::__m512; 4] {
    use std::arch::x86_64::*;
    let mut mm = [_mm512_setzero_ps(); 16];
    for (xi, v) in mm.iter_mut().enumerate() {
        // SAFETY: the caller's contract.
        *v = unsafe { _mm512_loadu_ps(m.add(xi * stride)) };
    }
    // Aᵀ M: rows m0 + m1 + m2 and m1 - m2 - m3; then the same along each row.
    let (mut s0, mut s1) = ([_mm512_setzero_ps(); 4], [_mm512_setzero_ps(); 4]);
    for e in 0..4 {
        s0[e] = _mm512_add_ps(_mm512_add_ps(mm[e], mm[4 + e]), mm[8 + e]);
        s1[e] = _mm512_sub_ps(_mm512_sub_ps(mm[4 + e], mm[8 + e]), mm[12 + e]);
    }
    [
        _mm512_add_ps(_mm512_add_ps(s0[0], s0[1]), s0[2]),
        _mm512_sub_ps(_mm512_sub_ps(s0[1], s0[2]), s0[3]),
        _mm512_add_ps(_mm512_add_ps(s1[0], s1[1]), s1[2]),
        _mm512_sub_ps(_mm512_sub_ps(s1[1], s1[2]), s1[3]),
    ]
}

/// `Y = Aᵀ M A` plus bias (and ReLU) for blocks `range` of a chunk (`m [block - range.start]
/// [16][f]`), and the winner of each 2×2 `Y` into `pooled [block][f]` and `winners [block][f]`
/// (offsets in the conv plane), 16 filters at a time.
fn output_transform(
    m: &[f32],
    range: Range<usize>,
    bias: &[f32],
    s: &Shape,
    relu: bool,
    pooled: &mut [f32],
    winners: &mut [f32],
) {
    let f = s.f;
    assert!(
        super::simd::has_avx512()
            && f.is_multiple_of(LANES)
            && m.len() >= range.len() * 16 * f
            && bias.len() >= f
            && pooled.len() >= range.end * f
            && winners.len() >= range.end * f,
        "Winograd output transform outside its buffers"
    );
    // SAFETY: AVX-512F and the bounds (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        output_transform_avx512(m, range, bias, s, relu, pooled, winners)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the Winograd passes run only where the CPU has AVX-512");
}

/// [`output_transform`] with AVX-512.
///
/// # Safety
/// The CPU has AVX-512F; the bounds [`output_transform`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_transform_avx512(
    m: &[f32],
    range: Range<usize>,
    bias: &[f32],
    s: &Shape,
    relu: bool,
    pooled: &mut [f32],
    winners: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (f, t) = (s.f, s.blocks());
    let zero = _mm512_setzero_ps();
    let p0 = range.start;
    for p in range {
        let q = p % t;
        let (by, bx) = (q / s.pw, q % s.pw);
        let base = (2 * by * s.ow + 2 * bx) as f32;
        let offs = [
            _mm512_set1_ps(base),
            _mm512_set1_ps(base + 1.0),
            _mm512_set1_ps(base + s.ow as f32),
            _mm512_set1_ps(base + s.ow as f32 + 1.0),
        ];
        for fv in (0..f).step_by(LANES) {
            // SAFETY (loads and stores): inside the lengths the caller checked.
            let mut y = unsafe { block_outputs(m.as_ptr().add((p - p0) * 16 * f + fv), f) };
            let b = unsafe { _mm512_loadu_ps(bias.as_ptr().add(fv)) };
            for v in &mut y {
                *v = _mm512_add_ps(*v, b);
                if relu {
                    *v = _mm512_max_ps(*v, zero);
                }
            }
            let [y00, y01, y10, y11] = y;
            // The winner as `conv::max_pool_plane` picks it: each row's, then the better of
            // the two (the first maximum in row-major order).
            let k1 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y01, y00);
            let (m1, i1) = (_mm512_mask_blend_ps(k1, y00, y01), _mm512_mask_blend_ps(k1, offs[0], offs[1]));
            let k2 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y11, y10);
            let (m2, i2) = (_mm512_mask_blend_ps(k2, y10, y11), _mm512_mask_blend_ps(k2, offs[2], offs[3]));
            let k = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m2, m1);
            unsafe {
                _mm512_storeu_ps(pooled.as_mut_ptr().add(p * f + fv), _mm512_mask_blend_ps(k, m1, m2));
                _mm512_storeu_ps(winners.as_mut_ptr().add(p * f + fv), _mm512_mask_blend_ps(k, i1, i2));
            }
        }
    }
}

/// `Y = Aᵀ M A` for blocks `range` of a chunk (`m [block - range.start][16][c]`, as `b` cuts
/// the images), written 2×2 into the images' planes `planes [image][pixel][c]` (`hw` pixels,
/// rows `w` long).
fn output_blocks(m: &[f32], range: Range<usize>, b: &Blocks, c: usize, w: usize, hw: usize, planes: &mut [f32]) {
    let t = b.rows * b.cols;
    assert!(
        super::simd::has_avx512()
            && c.is_multiple_of(LANES)
            && m.len() >= range.len() * 16 * c
            && 2 * b.cols <= w
            && 2 * b.rows * w <= hw
            && planes.len() >= range.end.div_ceil(t.max(1)) * hw * c,
        "Winograd output transform outside its buffers"
    );
    // SAFETY: AVX-512F and the bounds (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        output_blocks_avx512(m, range, b, c, w, hw, planes)
    };
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the Winograd passes run only where the CPU has AVX-512");
}

/// [`output_blocks`] with AVX-512.
///
/// # Safety
/// The CPU has AVX-512F; the bounds [`output_blocks`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn output_blocks_avx512(
    m: &[f32],
    range: Range<usize>,
    b: &Blocks,
    c: usize,
    w: usize,
    hw: usize,
    planes: &mut [f32],
) {
    use std::arch::x86_64::*;
    let t = b.rows * b.cols;
    let (src, dst) = (m.as_ptr(), planes.as_mut_ptr());
    let p0 = range.start;
    for p in range {
        let (j, q) = (p / t, p % t);
        let (by, bx) = (q / b.cols, q % b.cols);
        for cv in (0..c).step_by(LANES) {
            // SAFETY (loads and stores): inside the bounds the caller checked.
            let y = unsafe { block_outputs(src.add((p - p0) * 16 * c + cv), c) };
            let at = (j * hw + 2 * by * w + 2 * bx) * c + cv;
            unsafe {
                _mm512_storeu_ps(dst.add(at), y[0]);
                _mm512_storeu_ps(dst.add(at + c), y[1]);
                _mm512_storeu_ps(dst.add(at + w * c), y[2]);
                _mm512_storeu_ps(dst.add(at + (w + 1) * c), y[3]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tile::portable_fn;

    /// `[c, n, r]` (channels-major) into `[n, r, c]` (pixel-major).
    fn to_pixel_major(x: &[f32], c: usize, n: usize, r: usize) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        for ci in 0..c {
            for img in 0..n {
                for p in 0..r {
                    out[(img * r + p) * c + ci] = x[(ci * n + img) * r + p];
                }
            }
        }
        out
    }

    /// Images read pixel-major, and the input gradient written so, give the bits of the
    /// channels-major passes: outputs, winners, weight, bias and input gradients.
    #[test]
    fn pixel_major_images_give_the_same_bits() {
        if !crate::cpu::simd::has_avx512() {
            return;
        }
        let (c, filters, h, n) = (16, 32, 13, 5);
        let (oh, hw) = (h - 2, h * h);
        let ph = oh / 2;
        let win = Window { n, c, h, w: h, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, oh, ow: oh };
        let pool = Window { n, c: filters, h: oh, w: oh, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0, oh: ph, ow: ph };
        let mut rng = mnist_data::Rng::new(12);
        // Non-negative inputs with zeros, as a ReLU layer hands on.
        let x: Vec<f32> = (0..c * n * hw).map(|_| rng.uniform(-0.5, 1.0).max(0.0)).collect();
        let xp = to_pixel_major(&x, c, n, hw);
        let w: Vec<f32> = (0..filters * c * 9).map(|_| rng.uniform(-0.3, 0.3)).collect();
        let b: Vec<f32> = (0..filters).map(|_| rng.uniform(-0.1, 0.1)).collect();
        let len = filters * n * ph * ph;
        let tiles = crate::cpu::tile::tile_fn;
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for act in [Activation::Relu, Activation::Linear] {
            let (mut y1, mut a1, mut y2, mut a2) = (vec![0f32; len], vec![0f32; len], vec![1f32; len], vec![1f32; len]);
            forward_pooled(&x, false, &w, Some(&b), act, &win, filters, &pool, &mut y1, &mut a1, tiles);
            forward_pooled(&xp, true, &w, Some(&b), act, &win, filters, &pool, &mut y2, &mut a2, tiles);
            assert_eq!((bits(&y1), bits(&a1)), (bits(&y2), bits(&a2)), "{act:?} forward");
            let dy: Vec<f32> = (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let run = |x: &[f32], pm: bool| {
                let grad = crate::cpu::implicit_conv::Grad::Pooled { dy: &dy, y: &y1, arg: &a1, act, pool: &pool };
                let (mut dw, mut db, mut dx) = (vec![0f32; filters * c * 9], vec![0f32; filters], vec![0f32; x.len()]);
                let (dws, dbs, dxs) = (Some(&mut dw[..]), Some(&mut db[..]), Some(&mut dx[..]));
                crate::cpu::implicit_conv::backward(x, pm, grad, &w, &win, filters, dws, dbs, dxs, tiles);
                (dw, db, dx)
            };
            let (dw1, db1, dx1) = run(&x, false);
            let (dw2, db2, dx2) = run(&xp, true);
            assert_eq!(bits(&dw1), bits(&dw2), "{act:?} weight gradient");
            assert_eq!(bits(&db1), bits(&db2), "{act:?} bias gradient");
            assert_eq!(bits(&to_pixel_major(&dx1, c, n, hw)), bits(&dx2), "{act:?} input gradient");
        }
    }

    #[test]
    fn gradients_match_the_definition() {
        if !crate::cpu::simd::has_avx512() {
            return;
        }
        for (c, filters, h, n) in [(16, 32, 13, 5), (32, 16, 8, 3), (16, 16, 10, 2)] {
            let oh = h - 2;
            let (ph, hw, ohw) = (oh / 2, h * h, oh * oh);
            let win = Window { n, c, h, w: h, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, oh, ow: oh };
            let pool = Window { n, c: filters, h: oh, w: oh, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0, oh: ph, ow: ph };
            let mut rng = mnist_data::Rng::new(11);
            let x: Vec<f32> = (0..c * n * hw).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let w: Vec<f32> = (0..filters * c * 9).map(|_| rng.uniform(-0.3, 0.3)).collect();
            let len = filters * n * ph * ph;
            let (mut y, mut arg) = (vec![0f32; len], vec![0f32; len]);
            let act = Activation::Relu;
            forward_pooled(&x, false, &w, None, act, &win, filters, &pool, &mut y, &mut arg, crate::cpu::tile::tile_fn);
            let dy: Vec<f32> = (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let mut dx = vec![f32::NAN; c * n * hw];
            let mut dw = vec![f32::NAN; filters * c * 9];
            let grad = crate::cpu::implicit_conv::Grad::Pooled { dy: &dy, y: &y, arg: &arg, act, pool: &pool };
            let tiles = crate::cpu::tile::tile_fn;
            crate::cpu::implicit_conv::backward(
                &x,
                false,
                grad,
                &w,
                &win,
                filters,
                Some(&mut dw),
                None,
                Some(&mut dx),
                tiles,
            );
            // The definition: each window's gradient (through ReLU) at its winner, then
            // dx[ci, img, iy, ix] = Σ dz[f, img, iy - ky, ix - kx] · w[f, ci, ky, kx].
            let mut dz = vec![0f64; filters * n * ohw];
            for i in 0..len {
                let plane = i / (ph * ph);
                dz[plane * ohw + arg[i] as usize] = if y[i] > 0.0 { dy[i] as f64 } else { 0.0 };
            }
            for ci in 0..c {
                for img in 0..n {
                    for iy in 0..h {
                        for ix in 0..h {
                            let mut want = 0f64;
                            for f in 0..filters {
                                for ky in 0..3 {
                                    for kx in 0..3 {
                                        let (oy, ox) = (iy as isize - ky as isize, ix as isize - kx as isize);
                                        if oy < 0 || ox < 0 || oy >= oh as isize || ox >= oh as isize {
                                            continue;
                                        }
                                        let z = dz[(f * n + img) * ohw + oy as usize * oh + ox as usize];
                                        want += z * w[((f * c + ci) * 3 + ky) * 3 + kx] as f64;
                                    }
                                }
                            }
                            let got = dx[(ci * n + img) * hw + iy * h + ix] as f64;
                            assert!(
                                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{c} {filters} {h}: dx {got} vs {want}"
                            );
                        }
                    }
                }
            }
            // dw[f, ci, ky, kx] = Σ dz[f, img, oy, ox] · x[ci, img, oy + ky, ox + kx].
            for f in 0..filters {
                for ci in 0..c {
                    for k in 0..9 {
                        let (ky, kx) = (k / 3, k % 3);
                        let mut want = 0f64;
                        for img in 0..n {
                            for oy in 0..oh {
                                for ox in 0..oh {
                                    let z = dz[(f * n + img) * ohw + oy * oh + ox];
                                    want += z * x[(ci * n + img) * hw + (oy + ky) * h + ox + kx] as f64;
                                }
                            }
                        }
                        let got = dw[(f * c + ci) * 9 + k] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{c} {filters} {h}: dw {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

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
            forward_pooled(&x, false, &w, Some(&b), act, &win, filters, &pool, &mut y1, &mut a1, portable);
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
