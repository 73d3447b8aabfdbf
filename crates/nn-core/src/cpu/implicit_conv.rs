//! `Conv2D` on the CPU as an implicit GEMM, a few images at a time, so that nothing larger
//! than a core's L2 cache crosses memory.
//!
//! The generic path unfolds the whole batch into columns (`[c·kh·kw, n·oh·ow]`, 18 MB for the
//! second conv of Keras's convnet at batch 128) and runs one GEMM over them: the columns are
//! written to memory, read back, packed by the GEMM, and the same again backwards. Here the
//! batch is cut into fixed groups of images, each worked through in chunks of a few images,
//! and every product runs in the AVX-512 tile of `tile.rs`, whose gathered operand is read
//! straight from the images through two offset tables (per tap `(ci, ki, kj)`, per output
//! position):
//!
//! - forward: tiles of positions × filters, `y = act(cols · Wᵀ + b)` with the positions
//!   gathered from the images and `Wᵀ` packed once per call; each tile is stored transposed
//!   into `y [f, n, oh, ow]`, with its bias and ReLU;
//! - weight gradient: tiles of taps × filters, `dWᵀ += cols · dyᵀ` with the taps gathered from
//!   the images along the chunk's positions and the chunk's `dy` transposed; summed per group
//!   and the groups then added in order, so the result does not depend on the number of
//!   threads;
//! - input gradient: tiles of taps × positions, `dcols = Wᵀ · dy` into a per-thread buffer,
//!   folded back into the chunk's images at once (each image belongs to one chunk, so no two
//!   threads add to one pixel).
//!
//! A window that reaches into the padding reads a zero-padded copy of the chunk instead of the
//! batch. The drivers take the tile by vector count (`tiles(nv)`: `tile::tile_fn`, or the
//! portable one in tests). The device uses this path only with AVX-512 (elsewhere
//! matrixmultiply's GEMM over the unfolded batch is as fast); the portable tile keeps it
//! testable everywhere.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Mutex;

use super::conv::max_pool_plane;
use super::elementwise;
use super::scatter::{col2im_plane, store_transposed, transpose};
use super::simd::with_simd;
use super::team;
use super::tile::{Steps, TileFn, LANES, MAX_NV, MAX_ROWS};
use super::tile_gemm::{grow, pick_nv, Tiled};
use crate::activation::Activation;
use crate::device::{Channels, Window};

/// Images whose weight gradients are summed apart, then added in order.
const GROUPS: usize = 8;
/// The most floats one chunk's unfolded columns (the input gradient's buffer) take: 1 MB,
/// half a core's L2.
const CHUNK_FLOATS: usize = 1 << 18;
/// The most images in a chunk.
const MAX_CHUNK: usize = 8;
/// The widest tile, in columns.
const MAX_W: usize = MAX_NV * LANES;

/// The most floats of scratch the passes may take (2 GiB): past it, a convolution runs by
/// im2col, whose columns the network counts before allocating them (these buffers are kept
/// per thread, outside that count, and a 225-byte architecture asked for 6 GB of them).
const MAX_SCRATCH_FLOATS: usize = 1 << 29;

/// Whether the CPU runs this convolution here: it has AVX-512 (and the own kernels are on,
/// see `cpu::use_own_kernels`), the offsets fit and its scratch is bounded.
pub(crate) fn supports(win: &Window, filters: usize) -> bool {
    let p = Plan::new(win);
    super::own_kernels() && p.fits(filters) && p.scratch_floats(filters) <= MAX_SCRATCH_FLOATS
}

/// Per-thread buffers, grown as needed and kept.
#[derive(Default)]
struct Scratch {
    padded: Vec<f32>,
    conv: Vec<f32>,
    dcols: Vec<f32>,
    dy: Vec<f32>,
    dyt: Vec<f32>,
    out: Vec<f32>,
    taps: Vec<u32>,
    positions: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
    /// The input gradient's offset tables, on the thread that calls [`backward`].
    static TABLES: RefCell<(Vec<u32>, Vec<u32>)> = RefCell::default();
}

/// Per-group weight-gradient sums, reused from call to call.
static PARTIALS: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// The kernels of the Winograd input gradient, reused from call to call.
static ROTATED: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// Per-group Winograd weight-gradient sums, reused from call to call.
static TRANSFORMED: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// How a batch is cut: fixed groups of images, each in chunks of at most `chunk` images.
struct Plan {
    n: usize,
    ohw: usize,
    ckk: usize,
    per_group: usize,
    groups: usize,
    chunk: usize,
}

impl Plan {
    fn new(win: &Window) -> Plan {
        let (ohw, ckk) = (win.oh * win.ow, win.c * win.kh * win.kw);
        let groups = GROUPS.min(win.n).max(1);
        let per_group = win.n.div_ceil(groups);
        let chunk = (CHUNK_FLOATS / (ckk * ohw).max(1)).clamp(1, MAX_CHUNK);
        Plan { n: win.n, ohw, ckk, per_group, groups: win.n.div_ceil(per_group.max(1)), chunk }
    }
    /// The images of group `g`, chunk by chunk.
    fn chunks(&self, g: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        let (lo, hi) = (g * self.per_group, ((g + 1) * self.per_group).min(self.n));
        (lo..hi).step_by(self.chunk).map(move |i| i..(i + self.chunk).min(hi))
    }
    /// The row stride of a chunk's column buffers: room for the widest tile past the end.
    fn ld(&self) -> usize {
        (self.chunk * self.ohw).div_ceil(MAX_W) * MAX_W + MAX_W
    }
    /// The floats of scratch the backward pass takes at most (saturating): each thread's
    /// columns and gradients of a chunk, and each group's weight-gradient sums.
    fn scratch_floats(&self, filters: usize) -> usize {
        let fpad = filters.div_ceil(LANES).saturating_add(MAX_NV) * LANES;
        let ld = self.ld();
        let per_thread = self
            .ckk
            .saturating_add(filters)
            .saturating_mul(ld)
            .saturating_add((self.chunk * self.ohw).saturating_mul(fpad));
        let sums = self.groups.saturating_mul(self.ckk.saturating_add(1).saturating_mul(fpad));
        per_thread.saturating_mul(super::team::threads().max(1)).saturating_add(sums)
    }
    /// Whether every offset the passes compute fits the tile's `u32` tables.
    fn fits(&self, filters: usize) -> bool {
        let most = (self.ckk * self.ld()).max(filters * self.ckk).max(filters * self.ld());
        most < u32::MAX as usize / 2
    }
}

/// Where a chunk's images are read from: the batch itself when no window reaches into the
/// padding, else a zero-padded copy of the chunk. Offsets of tap `(ci, ki, kj)` and of output
/// position `(image, oy, ox)` add up to the input pixel the tap reads for that position.
struct View {
    /// Images in the source (the batch's `n`, or the chunk's length).
    images: usize,
    /// First image of the source (0 for the batch, the chunk's first for a copy).
    first: usize,
    hp: usize,
    wp: usize,
}

impl View {
    fn tap(&self, win: &Window, r: usize) -> u32 {
        let (ci, ki, kj) = (r / (win.kh * win.kw), (r / win.kw) % win.kh, r % win.kw);
        (ci * self.images * self.hp * self.wp + ki * self.wp + kj) as u32
    }
    fn position(&self, win: &Window, img: usize, q: usize) -> u32 {
        let (oy, ox) = (q / win.ow, q % win.ow);
        ((img - self.first) * self.hp * self.wp + oy * win.sh * self.wp + ox * win.sw) as u32
    }
}

/// Whether the windows stay inside the images (no padding is read) and the batch's offsets fit.
fn reads_in_place(win: &Window) -> bool {
    let (hp, wp) = ((win.oh - 1) * win.sh + win.kh, (win.ow - 1) * win.sw + win.kw);
    win.ph == 0 && win.pw == 0 && hp <= win.h && wp <= win.w && win.c * win.n * win.h * win.w < u32::MAX as usize / 2
}

/// What the tiles of chunk `imgs` gather from: the source (the batch `x` itself, or its
/// zero-padded copy in `buf`), the offset of every tap, and of every output position of the
/// chunk (image-major), in `taps` and `positions`.
fn source<'a>(
    x: &'a [f32],
    win: &Window,
    imgs: &Range<usize>,
    buf: &'a mut Vec<f32>,
    taps: &'a mut Vec<u32>,
    positions: &'a mut Vec<u32>,
) -> (&'a [f32], &'a [u32], &'a [u32]) {
    let (src, v) = view(x, win, imgs, buf);
    let ohw = win.oh * win.ow;
    taps.clear();
    taps.extend((0..win.c * win.kh * win.kw).map(|r| v.tap(win, r)));
    positions.clear();
    positions.extend(imgs.clone().flat_map(|img| (0..ohw).map(move |q| (img, q))).map(|(i, q)| v.position(win, i, q)));
    (src, taps, positions)
}

/// The source of chunk `imgs`: the batch `x` itself, or its zero-padded copy in `buf`.
fn view<'a>(x: &'a [f32], win: &Window, imgs: &Range<usize>, buf: &'a mut Vec<f32>) -> (&'a [f32], View) {
    if reads_in_place(win) {
        return (x, View { images: win.n, first: 0, hp: win.h, wp: win.w });
    }
    let (hp, wp) = ((win.oh - 1) * win.sh + win.kh, (win.ow - 1) * win.sw + win.kw);
    let g = imgs.len();
    let out = grow(buf, win.c * g * hp * wp);
    out.fill(0.0);
    let hw = win.h * win.w;
    for ci in 0..win.c {
        for (j, img) in imgs.clone().enumerate() {
            let src = &x[(ci * win.n + img) * hw..(ci * win.n + img + 1) * hw];
            let dst = &mut out[(ci * g + j) * hp * wp..(ci * g + j + 1) * hp * wp];
            for iy in 0..win.h.min(hp.saturating_sub(win.ph)) {
                let cols = win.w.min(wp.saturating_sub(win.pw));
                let at = (iy + win.ph) * wp + win.pw;
                dst[at..at + cols].copy_from_slice(&src[iy * win.w..iy * win.w + cols]);
            }
        }
    }
    (out, View { images: g, first: imgs.start, hp, wp })
}

/// The forward pass's weights, packed once per call: `Wᵀ` in panels of `tw` filters
/// (`[ckk][tw]` each, zero past the last filter) and the bias padded alike.
struct Packed<'a> {
    wt: &'a [f32],
    bias: &'a [f32],
    tile: TileFn,
    nv: usize,
    tw: usize,
    panels: usize,
    filters: usize,
}

/// Packs `w [filters, ckk]` and `b` into `buf` for chunks of `positions` output positions.
fn pack<'a>(
    w: &[f32],
    b: Option<&[f32]>,
    filters: usize,
    ckk: usize,
    positions: usize,
    tiles: fn(usize) -> TileFn,
    buf: &'a mut super::HostBuf,
) -> Packed<'a> {
    let nv = pick_nv(positions, filters.min(MAX_W));
    let tw = nv * LANES;
    let panels = filters.div_ceil(tw);
    let (wt, bias) = buf.grown(panels * ckk * tw + panels * tw).split_at_mut(panels * ckk * tw);
    for (f, v) in bias.iter_mut().enumerate() {
        *v = if f < filters { b.map_or(0.0, |b| b[f]) } else { 0.0 };
    }
    for t in 0..panels {
        for r in 0..ckk {
            for l in 0..tw {
                let f = t * tw + l;
                wt[(t * ckk + r) * tw + l] = if f < filters { w[f * ckk + r] } else { 0.0 };
            }
        }
    }
    Packed { wt, bias, tile: tiles(nv), nv, tw, panels, filters }
}

/// The conv outputs of chunk `imgs`, plus bias (and ReLU if `relu`): position `q` of the chunk
/// (image-major) for filter `f` goes to `dst[at0 + f·stride + q]`.
///
/// Tiles of output positions × filters: the positions gather their inputs from the images,
/// the filters are vectors of the packed `Wᵀ`; each tile is stored transposed.
#[allow(clippy::too_many_arguments)]
fn conv_chunk(
    x: &[f32],
    win: &Window,
    imgs: &Range<usize>,
    k: &Packed,
    relu: bool,
    dst: &team::SyncPtr<f32>,
    at0: usize,
    stride: usize,
    s: &mut Scratch,
) {
    let ckk = win.c * win.kh * win.kw;
    let out = grow(&mut s.out, MAX_ROWS * MAX_W);
    let (src, taps, positions) = source(x, win, imgs, &mut s.padded, &mut s.taps, &mut s.positions);
    let steps = Steps::new(taps);
    let tw = k.tw;
    for t in 0..k.panels {
        let g = Tiled {
            tile: k.tile,
            nv: k.nv,
            a: src,
            row_offs: positions,
            steps: &steps,
            b: &k.wt[t * ckk * tw..(t + 1) * ckk * tw],
            ldb: tw,
            cols: tw,
        };
        let f0 = t * tw;
        g.emit(out, |q0, rows, _, tw, o| {
            let (lanes, at) = (tw.min(k.filters - f0), at0 + f0 * stride + q0);
            store_transposed(o, tw, rows, lanes, &k.bias[f0..f0 + tw], relu, dst, at, stride);
        });
    }
}

/// `y = act(conv(x, w) + b)`: `x [c, n, h, w]`, `w [filters, c, kh, kw]`, `y [filters, n, oh, ow]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    act: Activation,
    win: &Window,
    filters: usize,
    y: &mut [f32],
    tiles: fn(usize) -> TileFn,
) {
    let p = Plan::new(win);
    let (ohw, n) = (p.ohw, p.n);
    let mut packed = PACKED.lock().unwrap_or_else(|e| e.into_inner());
    let k = pack(w, b, filters, p.ckk, p.chunk * ohw, tiles, &mut packed);
    let fused = matches!(act, Activation::Relu | Activation::Linear);
    let relu = act == Activation::Relu;
    let ys = team::SyncPtr::new(&mut y[..filters * n * ohw]);
    team::for_each(p.groups, |g| {
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            for imgs in p.chunks(g) {
                // This chunk's positions in every filter's row belong to this part alone.
                conv_chunk(x, win, &imgs, &k, relu, &ys, imgs.start * ohw, n * ohw, s);
            }
        })
    });
    drop(packed);
    if !fused {
        elementwise::bias_act(y, None, act, Channels { outer: 1, channels: filters, inner: n * ohw });
    }
}

/// Whether [`forward_pooled`] takes this conv and the pooling after it: what [`supports`]
/// takes, followed by a non-overlapping `p × p` max pooling of its whole output.
pub(crate) fn supports_pooled(conv: &Window, pool: &Window) -> bool {
    let p = pool.kh;
    supports(conv, pool.c)
        && p >= 1
        && (pool.kw, pool.sh, pool.sw, pool.ph, pool.pw) == (p, p, p, 0, 0)
        && (pool.h, pool.w) == (conv.oh, conv.ow)
        && (pool.oh, pool.ow) == (conv.oh / p, conv.ow / p)
}

/// `y = act(maxpool(conv(x, w) + b))`, the conv output living only a chunk at a time in L2:
/// pooled `y [filters, n, poh, pow]`, and in `arg` each window's winner as an offset in its
/// conv output plane (the first maximum in row-major order). ReLU is applied before the
/// pooling, as in the separate layers; other (non-decreasing) activations after it.
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
    let p = Plan::new(win);
    let (ohw, n) = (p.ohw, p.n);
    let pp = pool.oh * pool.ow;
    let mut packed = PACKED.lock().unwrap_or_else(|e| e.into_inner());
    let k = pack(w, b, filters, p.ckk, p.chunk * ohw, tiles, &mut packed);
    let relu = act == Activation::Relu;
    let ys = team::SyncPtr::new(&mut y[..filters * n * pp]);
    let args = team::SyncPtr::new(&mut arg[..filters * n * pp]);
    team::for_each(p.groups, |g| {
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            for imgs in p.chunks(g) {
                let len = imgs.len() * ohw;
                let mut z = std::mem::take(&mut s.conv);
                let zs = team::SyncPtr::new(grow(&mut z, filters * len));
                conv_chunk(x, win, &imgs, &k, relu, &zs, 0, len, s);
                for f in 0..filters {
                    for (j, img) in imgs.clone().enumerate() {
                        let at = (f * n + img) * pp;
                        // SAFETY: plane (f, img) of the pooled outputs belongs to this chunk's
                        // part; the conv plane is this thread's.
                        let (yp, ap, zp) = unsafe {
                            (
                                ys.range(at, at + pp),
                                args.range(at, at + pp),
                                &*zs.range(f * len + j * ohw, f * len + (j + 1) * ohw),
                            )
                        };
                        with_simd(
                            #[inline(always)]
                            || max_pool_plane(zp, pool, yp, ap),
                        );
                        // ReLU went before the pooling (as in the separate layers); other
                        // non-decreasing activations commute with the maximum.
                        if !relu {
                            yp.iter_mut().for_each(|v| *v = act.apply(*v));
                        }
                    }
                }
                s.conv = z;
            }
        })
    });
}

/// `Wᵀ` packed by [`forward`] and [`forward_pooled`], reused from call to call.
static PACKED: Mutex<super::HostBuf> = Mutex::new(super::HostBuf::new());

/// Where [`backward`] finds the gradient of the conv's output (after the activation's).
pub(crate) enum Grad<'a> {
    /// `dy [filters, n, oh, ow]`, the activation's derivative already applied.
    Full(&'a [f32]),
    /// The gradient of [`forward_pooled`]'s pooled output `y` (`dy`, shaped like it): each
    /// goes, times the activation's derivative, to its window's winner (`arg`).
    Pooled {
        /// The gradient of the pooled output.
        dy: &'a [f32],
        /// The pooled output.
        y: &'a [f32],
        /// The winners' offsets.
        arg: &'a [f32],
        /// The activation.
        act: Activation,
        /// The pooling window.
        pool: &'a Window,
    },
}

/// Gradients of [`forward`] or [`forward_pooled`] from `grad`: each if asked, `dw [filters, c,
/// kh, kw]`, `db [filters]` and `dx [c, n, h, w]` (all overwritten). With `x_pm`, `x` and `dx`
/// are pixel-major, `[n, h, w, c]`: only for a pooled gradient that Winograd's passes take,
/// with `dw` and `dx` both asked for.
///
/// The weight gradient's tiles are taps × filters: the taps gather from the images along the
/// chunk's positions, the filters are vectors of the chunk's `dyᵀ`. The input gradient's are
/// taps × positions (`Wᵀ · dy`), stored as columns and folded back into the chunk's images.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    x: &[f32],
    x_pm: bool,
    grad: Grad,
    w: &[f32],
    win: &Window,
    filters: usize,
    mut dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
    tiles: fn(usize) -> TileFn,
) {
    let p = Plan::new(win);
    let (ckk, ohw, n, hw) = (p.ckk, p.ohw, p.n, win.h * win.w);
    let ld = p.ld();
    let len_max = p.chunk * ohw;
    let w = &w[..filters * ckk];
    // Weight gradient: rows = taps (gathered), vectors over filters (from dyᵀ).
    let nv_w = pick_nv(ckk, filters);
    let tile_w = tiles(nv_w);
    let fpad = filters.div_ceil(nv_w * LANES) * nv_w * LANES;
    // Input gradient: rows = taps (from W), vectors over the chunk's positions (from dy).
    let nv_x = pick_nv(ckk, len_max);
    let tile_x = tiles(nv_x);
    // Taken out of their thread-local for the call (a nested call finds empty ones).
    let (mut x_rows, mut x_step_offs) = TABLES.with(|t| std::mem::take(&mut *t.borrow_mut()));
    x_rows.clear();
    x_rows.extend(0..ckk as u32);
    x_step_offs.clear();
    x_step_offs.extend((0..filters).map(|f| (f * ckk) as u32));
    let x_steps = Steps::new(&x_step_offs);
    let (want_dw, want_db) = (dw.is_some(), db.is_some());
    // The input gradient by Winograd's transform where it takes the pair (`winograd.rs`).
    let winograd_pool = match grad {
        Grad::Pooled { pool, .. } if dx.is_some() && super::winograd::supports(win, pool, filters) => Some(pool),
        _ => None,
    };
    let mut rotated = ROTATED.lock().unwrap_or_else(|e| e.into_inner());
    if winograd_pool.is_some() {
        super::winograd::rotated_kernels(w, win.c, filters, &mut rotated);
    }
    let rotated = &*rotated;
    let dxs = dx.map(|d| team::SyncPtr::new(&mut d[..win.c * n * hw]));
    // The weight gradient by Winograd's transform too, summed per group in its domain.
    let winograd_dw = match grad {
        Grad::Pooled { pool, .. } if want_dw && super::winograd::supports(win, pool, filters) => Some(pool),
        _ => None,
    };
    let du_len = 16 * win.c * filters;
    let mut transformed = TRANSFORMED.lock().unwrap_or_else(|e| e.into_inner());
    let dus = team::SyncPtr::new(grow(&mut transformed, if winograd_dw.is_some() { p.groups * du_len } else { 0 }));

    // Per group: dWᵀ [ckk, fpad], then the bias gradient [fpad].
    let width = ckk * fpad + fpad;
    assert!(
        !x_pm || (winograd_pool.is_some() && winograd_dw.is_some()),
        "pixel-major images only through Winograd's passes"
    );
    let mut partials = PARTIALS.lock().unwrap_or_else(|e| e.into_inner());
    let parts = grow(&mut partials, p.groups * width);
    team::chunks_mut(parts, width, |g, part| {
        part.fill(0.0);
        if winograd_dw.is_some() {
            // SAFETY: group g's sums belong to this part alone.
            unsafe { dus.range(g * du_len, (g + 1) * du_len) }.fill(0.0);
        }
        let (dwt, dbp) = part.split_at_mut(ckk * fpad);
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            let dcols = grow(&mut s.dcols, ckk * ld);
            let dyc = grow(&mut s.dy, filters * ld);
            let dyt = grow(&mut s.dyt, len_max * fpad + MAX_W);
            let out = grow(&mut s.out, MAX_ROWS * MAX_W);
            for imgs in p.chunks(g) {
                let len = imgs.len() * ohw;
                let db_part = want_db.then_some(&mut *dbp);
                if winograd_dw.is_some() {
                    // Only the Winograd passes read this chunk's gradient: position-major.
                    fill_dyt(&grad, n, ohw, filters, &imgs, &mut dyt[..len * fpad], fpad, db_part);
                } else {
                    fill_dy(&grad, n, ohw, filters, &imgs, &mut dyc[..filters * ld], ld, db_part);
                    if want_dw || winograd_pool.is_some() {
                        transpose(&dyc[..filters * ld], filters, len, ld, &mut dyt[..len * fpad], fpad);
                    }
                }
                if let (true, Some(pool)) = (want_dw, winograd_dw) {
                    // SAFETY: group g's sums belong to this part alone.
                    let du = unsafe { dus.range(g * du_len, (g + 1) * du_len) };
                    super::winograd::weight_gradient(x, x_pm, dyt, fpad, &imgs, win, pool, filters, du, tiles);
                } else if want_dw {
                    let (src, taps, positions) = source(x, win, &imgs, &mut s.padded, &mut s.taps, &mut s.positions);
                    let steps = Steps::new(positions);
                    let g = Tiled {
                        tile: tile_w,
                        nv: nv_w,
                        a: src,
                        row_offs: taps,
                        steps: &steps,
                        b: dyt,
                        ldb: fpad,
                        cols: filters,
                    };
                    g.store(dwt, fpad, true, out);
                }
                let Some(dxs) = dxs.as_ref() else { continue };
                if let Some(pool) = winograd_pool {
                    super::winograd::input_gradient(rotated, dyt, fpad, &imgs, win, pool, filters, x_pm, dxs, tiles);
                    continue;
                }
                let g = Tiled {
                    tile: tile_x,
                    nv: nv_x,
                    a: w,
                    row_offs: &x_rows,
                    steps: &x_steps,
                    b: dyc,
                    ldb: ld,
                    cols: len,
                };
                g.store(dcols, ld, false, out);
                for ci in 0..win.c {
                    for (j, img) in imgs.clone().enumerate() {
                        let at = (ci * n + img) * hw;
                        // SAFETY: the planes of this chunk's images belong to this part.
                        let plane = unsafe { dxs.range(at, at + hw) };
                        col2im_plane(dcols, ld, j * ohw, win, ci, plane);
                    }
                }
            }
        })
    });
    TABLES.with(|t| *t.borrow_mut() = (x_rows, x_step_offs));
    let winograd_sums = winograd_dw.is_some();
    if let (Some(dw), true) = (dw.as_deref_mut(), winograd_sums) {
        // The groups' sums added in order, then out of the transformed domain.
        let (first, rest) = transformed[..p.groups * du_len].split_at_mut(du_len);
        for part in rest.chunks_exact(du_len) {
            first.iter_mut().zip(part).for_each(|(a, &b)| *a += b);
        }
        super::winograd::weight_gradient_of(first, win.c, filters, dw);
    } else if let Some(dw) = dw {
        for f in 0..filters {
            for r in 0..ckk {
                dw[f * ckk + r] = (0..p.groups).map(|g| parts[g * width + r * fpad + f]).sum();
            }
        }
    }
    if let Some(db) = db {
        for (f, d) in db.iter_mut().enumerate().take(filters) {
            *d = (0..p.groups).map(|g| parts[g * width + ckk * fpad + f]).sum();
        }
    }
}

/// The gradient of chunk `imgs`'s conv outputs into `dyc` (`[filters][ld]`, the chunk's
/// positions first in each row).
/// Adds each filter's gradients to `db` when asked.
#[allow(clippy::too_many_arguments)]
fn fill_dy(
    grad: &Grad,
    n: usize,
    ohw: usize,
    filters: usize,
    imgs: &Range<usize>,
    dyc: &mut [f32],
    ld: usize,
    mut db: Option<&mut [f32]>,
) {
    let (base, len) = (imgs.start * ohw, imgs.len() * ohw);
    match *grad {
        Grad::Full(dy) => {
            for f in 0..filters {
                let row = &mut dyc[f * ld..f * ld + len];
                row.copy_from_slice(&dy[f * n * ohw + base..f * n * ohw + base + len]);
                if let Some(db) = db.as_deref_mut() {
                    db[f] += row.iter().sum::<f32>();
                }
            }
        }
        Grad::Pooled { .. } => {
            for f in 0..filters {
                dyc[f * ld..f * ld + len].fill(0.0);
            }
            spread_pooled(grad, n, filters, imgs, db, |f, j, pos, g| dyc[f * ld + j * ohw + pos] = g);
        }
    }
}

/// [`fill_dy`] for a pooled gradient, written position-major: `dyt [position][ldg]` (the
/// chunk's positions, filter `f` at column `f`), zero but at the windows' winners; the bias
/// gradient summed as [`fill_dy`] sums it.
#[allow(clippy::too_many_arguments)]
fn fill_dyt(
    grad: &Grad,
    n: usize,
    ohw: usize,
    filters: usize,
    imgs: &Range<usize>,
    dyt: &mut [f32],
    ldg: usize,
    db: Option<&mut [f32]>,
) {
    dyt.fill(0.0);
    spread_pooled(grad, n, filters, imgs, db, |f, j, pos, g| dyt[(j * ohw + pos) * ldg + f] = g);
}

/// Hands each pooled gradient of chunk `imgs`, times the activation's derivative, to
/// `put(filter, image in the chunk, winner's position, gradient)` (windows do not overlap:
/// each position gets at most one), and adds each filter's sum to `db` when asked, per image.
fn spread_pooled(
    grad: &Grad,
    n: usize,
    filters: usize,
    imgs: &Range<usize>,
    mut db: Option<&mut [f32]>,
    mut put: impl FnMut(usize, usize, usize, f32),
) {
    let Grad::Pooled { dy, y, arg, act, pool } = *grad else {
        unreachable!("spread_pooled takes pooled gradients only");
    };
    let pp = pool.oh * pool.ow;
    for f in 0..filters {
        for (j, img) in imgs.clone().enumerate() {
            let at = (f * n + img) * pp;
            let mut sum = 0f32;
            for i in at..at + pp {
                let g = dy[i] * act.derivative_from_output(y[i]);
                put(f, j, arg[i] as usize, g);
                sum += g;
            }
            if let Some(db) = db.as_deref_mut() {
                db[f] += sum;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tile::{portable_fn, tile_fn};

    #[test]
    fn a_convolution_whose_scratch_is_unbounded_goes_to_im2col() {
        // 512 channels under a 57×57 kernel ("same" on 28×28): 6 GB of per-thread buffers,
        // uncounted, aborted the process; im2col's columns are counted and refused in words.
        let wide =
            Window { n: 128, c: 512, h: 28, w: 28, kh: 57, kw: 57, sh: 1, sw: 1, ph: 28, pw: 28, oh: 28, ow: 28 };
        assert!(Plan::new(&wide).scratch_floats(2) > MAX_SCRATCH_FLOATS);
        assert!(!supports(&wide, 2));
        // The convnet's second layer takes a few MB.
        let convnet = Window { n: 128, c: 32, h: 13, w: 13, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, oh: 11, ow: 11 };
        assert!(Plan::new(&convnet).scratch_floats(64) < 1 << 22);
    }

    /// The convolution and its gradients, straight from the definition (in f64).
    #[allow(clippy::type_complexity, clippy::needless_range_loop)]
    fn reference(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        dy: &[f32],
        win: &Window,
        f: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (n, c) = (win.n, win.c);
        let mut y = vec![0f64; f * n * win.oh * win.ow];
        let mut dw = vec![0f64; f * c * win.kh * win.kw];
        let mut dx = vec![0f64; c * n * win.h * win.w];
        for fi in 0..f {
            for ni in 0..n {
                for oy in 0..win.oh {
                    for ox in 0..win.ow {
                        let yi = ((fi * n + ni) * win.oh + oy) * win.ow + ox;
                        let mut s = b[fi] as f64;
                        for ci in 0..c {
                            for ki in 0..win.kh {
                                for kj in 0..win.kw {
                                    let iy = (oy * win.sh + ki) as isize - win.ph as isize;
                                    let ix = (ox * win.sw + kj) as isize - win.pw as isize;
                                    if iy < 0 || ix < 0 || iy as usize >= win.h || ix as usize >= win.w {
                                        continue;
                                    }
                                    let xi = ((ci * n + ni) * win.h + iy as usize) * win.w + ix as usize;
                                    let wi = ((fi * c + ci) * win.kh + ki) * win.kw + kj;
                                    s += x[xi] as f64 * w[wi] as f64;
                                    dw[wi] += dy[yi] as f64 * x[xi] as f64;
                                    dx[xi] += dy[yi] as f64 * w[wi] as f64;
                                }
                            }
                        }
                        y[yi] = s.max(0.0);
                    }
                }
            }
        }
        let f32s = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
        (f32s(y), f32s(dw), f32s(dx))
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, e)) in got.iter().zip(want).enumerate() {
            assert!((g - e).abs() <= 1e-4 * (1.0 + e.abs()), "{what}[{i}]: {g} vs {e}");
        }
    }

    #[test]
    fn forward_and_gradients_match_the_definition() {
        // (n, c, h, w, k, stride, pad, filters): strides, same padding, odd sizes, filter
        // counts off the vector width, batches that leave groups and chunks uneven.
        let cases = [
            (3, 32, 13, 13, 3, 1, 0, 64),
            (13, 3, 7, 6, 3, 1, 1, 5),
            (2, 4, 9, 9, 3, 2, 1, 17),
            (9, 2, 8, 7, 2, 2, 0, 33),
            (1, 1, 5, 5, 5, 1, 2, 3),
            (5, 6, 11, 10, 4, 3, 2, 70),
            (17, 16, 6, 6, 1, 1, 0, 24),
        ];
        for (n, c, h, wd, k, s, pd, f) in cases {
            let oh = (h + 2 * pd - k) / s + 1;
            let ow = (wd + 2 * pd - k) / s + 1;
            let win = Window { n, c, h, w: wd, kh: k, kw: k, sh: s, sw: s, ph: pd, pw: pd, oh, ow };
            let wave = |len: usize, m: usize, d: f32| -> Vec<f32> {
                (0..len).map(|i| ((i * m % 97) as f32 - 48.0) / d).collect()
            };
            let x = wave(n * c * h * wd, 31, 40.0);
            let w = wave(f * c * k * k, 17, 90.0);
            let b = wave(f, 7, 50.0);
            let dy = wave(f * n * oh * ow, 13, 60.0);
            let (y_ref, dw_ref, dx_ref) = reference(&x, &w, &b, &dy, &win, f);
            for tiles in [portable_fn as fn(usize) -> TileFn, tile_fn] {
                let what = format!("n{n} c{c} {h}x{wd} k{k} s{s} p{pd} f{f}");
                let mut y = vec![f32::NAN; f * n * oh * ow];
                forward(&x, &w, Some(&b), Activation::Relu, &win, f, &mut y, tiles);
                close(&y, &y_ref, &format!("{what} y"));
                let mut dw = vec![f32::NAN; w.len()];
                let mut dx = vec![f32::NAN; x.len()];
                backward(&x, false, Grad::Full(&dy), &w, &win, f, Some(&mut dw), None, Some(&mut dx), tiles);
                close(&dw, &dw_ref, &format!("{what} dw"));
                close(&dx, &dx_ref, &format!("{what} dx"));
            }
        }
    }

    #[test]
    fn pooled_forward_and_gradients_match_conv_relu_pool() {
        for (n, c, h, k, pd, f, p) in [(5, 4, 9, 3, 0, 20, 2), (3, 2, 8, 3, 1, 7, 3), (9, 3, 7, 2, 0, 33, 2)] {
            let oh = h + 2 * pd - k + 1;
            let win = Window { n, c, h, w: h, kh: k, kw: k, sh: 1, sw: 1, ph: pd, pw: pd, oh, ow: oh };
            let pool =
                Window { n, c: f, h: oh, w: oh, kh: p, kw: p, sh: p, sw: p, ph: 0, pw: 0, oh: oh / p, ow: oh / p };
            let pp = pool.oh * pool.ow;
            let wave = |len: usize, m: usize, d: f32| -> Vec<f32> {
                (0..len).map(|i| ((i * m % 97) as f32 - 48.0) / d).collect()
            };
            let x = wave(n * c * h * h, 31, 40.0);
            let w = wave(f * c * k * k, 17, 90.0);
            let b = wave(f, 7, 50.0);
            let gy = wave(f * n * pp, 13, 60.0);
            // Reference: this module's conv (with ReLU) then pooling, which must give the same
            // bits; the pooled gradient spread to those winners through ReLU's derivative
            // gives the gradients from the definition. (The winners are compared with our own
            // conv: near-ties can fall either way between two orders of summation.)
            let mut yfull = vec![0f32; f * n * oh * oh];
            forward(&x, &w, Some(&b), Activation::Relu, &win, f, &mut yfull, tile_fn);
            let (mut y_ref, mut arg_ref) = (vec![0f32; f * n * pp], vec![0f32; f * n * pp]);
            for plane in 0..f * n {
                let z = &yfull[plane * oh * oh..(plane + 1) * oh * oh];
                let (y, a) = (&mut y_ref[plane * pp..(plane + 1) * pp], &mut arg_ref[plane * pp..(plane + 1) * pp]);
                max_pool_plane(z, &pool, y, a);
            }
            let mut dfull = vec![0f32; f * n * oh * oh];
            for plane in 0..f * n {
                for i in 0..pp {
                    let at = plane * pp + i;
                    let g = if y_ref[at] > 0.0 { gy[at] } else { 0.0 };
                    dfull[plane * oh * oh + arg_ref[at] as usize] = g;
                }
            }
            let (_, dw_ref, dx_ref) = reference(&x, &w, &b, &dfull, &win, f);
            let db_ref: Vec<f32> =
                (0..f).map(|fi| dfull[fi * n * oh * oh..(fi + 1) * n * oh * oh].iter().sum()).collect();
            for tiles in [tile_fn, portable_fn as fn(usize) -> TileFn] {
                let what = format!("n{n} c{c} {h}x{h} k{k} p{pd} f{f} pool{p}");
                let (mut y, mut arg) = (vec![f32::NAN; f * n * pp], vec![f32::NAN; f * n * pp]);
                forward_pooled(&x, &w, Some(&b), Activation::Relu, &win, f, &pool, &mut y, &mut arg, tile_fn);
                assert_eq!(y, y_ref, "{what} y");
                assert_eq!(arg, arg_ref, "{what} winners");
                let (mut dw, mut db, mut dx) = (vec![f32::NAN; w.len()], vec![f32::NAN; f], vec![f32::NAN; x.len()]);
                let grad = Grad::Pooled { dy: &gy, y: &y, arg: &arg, act: Activation::Relu, pool: &pool };
                backward(&x, false, grad, &w, &win, f, Some(&mut dw), Some(&mut db), Some(&mut dx), tiles);
                close(&dw, &dw_ref, &format!("{what} dw"));
                close(&db, &db_ref, &format!("{what} db"));
                close(&dx, &dx_ref, &format!("{what} dx"));
            }
        }
    }

    #[test]
    fn gradients_do_not_depend_on_the_number_of_threads() {
        let win = Window { n: 37, c: 8, h: 9, w: 9, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, oh: 7, ow: 7 };
        let x: Vec<f32> = (0..37 * 8 * 81).map(|i| (i % 23) as f32 * 0.1 - 1.0).collect();
        let w: Vec<f32> = (0..16 * 72).map(|i| (i % 11) as f32 * 0.05 - 0.2).collect();
        let dy: Vec<f32> = (0..16 * 37 * 49).map(|i| (i % 13) as f32 * 0.07 - 0.4).collect();
        let run = || {
            let mut dw = vec![0f32; w.len()];
            backward(&x, false, Grad::Full(&dy), &w, &win, 16, Some(&mut dw), None, None, tile_fn);
            dw
        };
        let parallel = run();
        // The team runs nested calls serially: the same sums, one thread.
        let mut serial = Vec::new();
        team::for_each(2, |p| {
            if p == 0 {
                // SAFETY-free: only part 0 writes, through a mutex.
                *SERIAL.lock().unwrap_or_else(|e| e.into_inner()) = run();
            }
        });
        serial.extend_from_slice(&SERIAL.lock().unwrap_or_else(|e| e.into_inner()));
        assert_eq!(parallel, serial);
    }

    static SERIAL: Mutex<Vec<f32>> = Mutex::new(Vec::new());
}
