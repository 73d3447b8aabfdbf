//! The CPU device: buffers are [`HostBuf`]s (`f32`s starting on a cache line); matrix
//! products go to the own register tiles, AMX or single-threaded `matrixmultiply` calls, and
//! large element-wise passes to loops, all split over the device's team of threads
//! (`team.rs`), vectorised for the CPU's widest instruction set (`simd.rs`).

pub(crate) mod adam;
mod amx;
#[cfg(target_arch = "x86_64")]
mod bf16_pack;
mod conv;
mod conv_pool;
mod denormals;
mod elementwise;
mod free_memory;
mod high_water;
mod host_buf;
mod implicit_conv;
mod norm;
mod scatter;
mod shares;
pub(crate) mod simd;
mod sizes;
mod softmax;
#[cfg(target_arch = "x86_64")]
mod sparse_avx2;
mod sparse_gemm;
pub(crate) mod team;
mod tile;
mod tile_gemm;
mod winograd;
mod xent;

use std::ops::Range;

use team::SyncPtr;

pub use amx::{
    bf16_products_available, level_products_run, matmul_precision, set_matmul_precision, use_level_products,
    MatmulPrecision,
};
pub use denormals::flush_denormals_to_zero;
pub use host_buf::HostBuf;
pub(crate) use softmax::softmax_rows;

use crate::activation::Activation;
use crate::device::{BatchNormArgs, Channels, Device, Gemm, PixelMajor, Window};
use crate::error::Result;
use crate::loss::XentArgs;
use crate::optim::{update_host, Prepared, StepParams, UpdateRule};

/// The most state slots an update rule keeps per parameter (Adam and RMSprop: 2).
const MAX_SLOTS: usize = 4;

/// Below this many multiply-adds a GEMM runs on one thread.
const GEMM_PAR_MIN: usize = 1 << 20;

/// Whether work of `macs` multiply-adds in products and `values` in element-wise passes runs
/// on one thread anyway (each below the size from which the CPU device splits work).
pub(crate) fn runs_serially(macs: usize, values: usize) -> bool {
    macs < GEMM_PAR_MIN && values < PAR_MIN
}

/// Below this many elements an element-wise pass runs on one thread (handing out parts would
/// cost more than it saves).
pub(crate) const PAR_MIN: usize = 1 << 15;

/// The CPU device. Cheap to create and to clone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Cpu {
    /// The CPU device.
    pub fn new() -> Cpu {
        Cpu
    }
}

/// Whether the CPU device may use its own AVX-512 kernels (see [`use_own_kernels`]).
static OWN_KERNELS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the CPU device's own AVX-512 kernels (the tile GEMM for dense products, the
/// implicit-GEMM convolution and the fused multi-channel conv + pooling) on or off for the
/// networks built afterwards; on by default, and only used where the CPU has AVX-512. Off,
/// every product goes to matrixmultiply and every convolution through im2col: the path a CPU
/// without AVX-512 takes, so tests can compare both on one machine. Set it before building a
/// network: one built with them on may fail (with an error) once they are turned off.
pub fn use_own_kernels(on: bool) {
    OWN_KERNELS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the own kernels are on and the CPU has AVX-512.
pub(crate) fn own_kernels() -> bool {
    OWN_KERNELS.load(std::sync::atomic::Ordering::Relaxed) && simd::has_avx512()
}

/// Whether the CPU device multiplies mostly-zero inputs by their nonzeros alone (see
/// [`use_sparse_inputs`]).
static SPARSE_INPUTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns on or off the products of a first dense layer that skip the input's zeros (on by
/// default, where the CPU has AVX-512 or AVX2 with FMA and the own kernels are on). A scaled
/// MNIST digit is 81% zeros: its first layer's forward product and weight gradient then run
/// over the pixels lit in a tile's images, and the images in which a tile's pixels are lit,
/// 1.5–2× faster on MNIST. The results have the bits of the dense products where those run in
/// the own AVX-512 tile GEMM (layers up to 256 units), but for the sign of a zero sum, and
/// where the weights or gradients hold an infinity or a NaN that only zero pixels reach (left
/// out, where a dense product's `0·∞` makes a NaN); wider layers' dense products, and all of
/// them on a CPU with AVX2 only (`sparse_avx2.rs` then has its own tiles), run in
/// matrixmultiply, which sums in another order. Inputs that are not mostly zeros are seen to be so within a
/// few rows and take the dense products. Off, every product is dense: for comparing both.
pub fn use_sparse_inputs(on: bool) {
    SPARSE_INPUTS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the sparse products are on (they and the own kernels; which tiles they run, AVX-512
/// or AVX2, or none on other CPUs, is theirs to see).
pub(crate) fn sparse_inputs() -> bool {
    SPARSE_INPUTS.load(std::sync::atomic::Ordering::Relaxed) && OWN_KERNELS.load(std::sync::atomic::Ordering::Relaxed)
}

/// How many parts of products (a thread's share of one product) this process has computed
/// from the nonzeros of their input alone (see [`use_sparse_inputs`]): a diagnostic, to see
/// whether a model's first layer takes the sparse products on its data.
pub fn sparse_parts() -> usize {
    sparse_gemm::parts_run()
}

/// Grows this thread's per-thread scratch lists to the longest any thread has needed
/// (`high_water.rs`): the team runs it as a thread joins a loop after a mark has risen.
fn top_up_scratch() {
    sparse_gemm::top_up();
    #[cfg(target_arch = "x86_64")]
    sparse_avx2::top_up();
    #[cfg(target_arch = "x86_64")]
    amx::top_up();
}

/// Runs `f`. (It used to move `f` onto a rayon worker so that rayon's parallel loops started
/// from it ran partly on the calling thread; the device's loops now go to its own team from
/// whichever thread calls them, so there is nothing left to arrange.)
pub fn on_compute_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    f()
}

/// Whether one of the CPU's fused conv + pooling passes (single-channel, Winograd, implicit
/// GEMM) takes this pair.
fn any_fused_pass(conv: &Window, pool: &Window, filters: usize) -> bool {
    conv_pool::supports(conv, pool)
        || winograd::supports(conv, pool, filters)
        || implicit_conv::supports_pooled(conv, pool)
}

/// The error of a conv + pooling pair that [`Device::fuses_conv_pool`] does not accept.
fn unfused(conv: &Window, pool: &Window) -> crate::error::NnError {
    crate::error::NnError::Device(format!(
        "cpu: no fused pass for a {}×{} convolution (strides {}×{}) followed by a {}×{} pooling (strides {}×{}); \
         ask Device::fuses_conv_pool first",
        conv.kh, conv.kw, conv.sh, conv.sw, pool.kh, pool.kw, pool.sh, pool.sw
    ))
}

/// The error of a convolution that [`Device::direct_conv`] does not accept.
fn no_direct_conv(win: &Window, filters: usize) -> crate::error::NnError {
    crate::error::NnError::Device(format!(
        "cpu: no direct pass for a {}×{} convolution of {} channels into {filters} filters; ask Device::direct_conv \
         first",
        win.kh, win.kw, win.c
    ))
}

/// Runs `f` with the CPU device's parallel loops on the calling thread alone, each loop's parts
/// one after the other (split as on all threads, so the results are the same bits): to time
/// the device on one core, or to keep it off the others. The number of threads otherwise is
/// the size of rayon's global pool, fixed at the device's first parallel loop; a rayon pool the
/// caller runs in does not change it.
pub fn on_one_thread<R>(f: impl FnOnce() -> R) -> R {
    team::alone(f)
}

impl Device for Cpu {
    type Buf = HostBuf;

    fn describe(&self) -> String {
        let threads = match team::threads() {
            1 => "1 thread".to_string(),
            n => format!("{n} threads"),
        };
        let bf16 = match amx::matmul_precision() {
            MatmulPrecision::Highest => "",
            MatmulPrecision::High => ", bf16x3 products",
            MatmulPrecision::Medium => ", bf16 products",
        };
        format!("cpu ({threads}{bf16})")
    }
    fn alloc(&self, len: usize) -> Result<HostBuf> {
        // A buffer larger than the memory the system has left is refused here: zero-filled, it
        // would end in the system killing the process (Linux grants the address space anyway).
        // Small ones skip the check (reading the system's figure costs ~20 µs).
        if len >= 1 << 18 {
            if let Some(free) = free_memory::free_host_memory().filter(|&free| len as u64 * 4 > free) {
                return Err(crate::tensor::out_of_host_memory(len, Some(free)));
            }
        }
        HostBuf::zeros(len)
    }
    fn free_memory(&self) -> Option<u64> {
        free_memory::free_host_memory()
    }
    fn upload(&self, src: &[f32], dst: &mut HostBuf) -> Result<()> {
        dst[..src.len()].copy_from_slice(src);
        Ok(())
    }
    fn download(&self, src: &HostBuf, dst: &mut [f32]) -> Result<()> {
        let n = dst.len();
        dst.copy_from_slice(&src[..n]);
        Ok(())
    }
    fn copy(&self, src: &HostBuf, dst: &mut HostBuf, len: usize) -> Result<()> {
        elementwise::copy(&src[..len], &mut dst[..len]);
        Ok(())
    }
    fn fill(&self, buf: &mut HostBuf, value: f32, len: usize) -> Result<()> {
        buf[..len].fill(value);
        Ok(())
    }
    fn gather_rows(&self, src: &HostBuf, width: usize, rows: &HostBuf, n: usize, dst: &mut HostBuf) -> Result<()> {
        if rows.len() < n || dst.len() < n * width {
            return Err(crate::NnError::Shape {
                layer: "gather_rows".into(),
                expected: vec![n, width],
                found: vec![dst.len()],
            });
        }
        for (&r, out) in rows[..n].iter().zip(dst.chunks_exact_mut(width.max(1))) {
            let at = r as usize * width;
            let row = src.get(at..at + width).ok_or_else(|| crate::NnError::Shape {
                layer: "gather_rows".into(),
                expected: vec![at + width],
                found: vec![src.len()],
            })?;
            out.copy_from_slice(row);
        }
        Ok(())
    }

    fn host_mut<'a>(&self, buf: &'a mut HostBuf) -> Option<&'a mut [f32]> {
        Some(&mut buf[..])
    }
    fn gemm(&self, g: &Gemm, a: &HostBuf, b: &HostBuf, c: &mut HostBuf) -> Result<()> {
        gemm_slices(g, a, b, c);
        Ok(())
    }

    fn dense_forward(
        &self,
        g: &Gemm,
        x: &HostBuf,
        w: &HostBuf,
        bias: Option<&HostBuf>,
        act: Activation,
        y: &mut HostBuf,
    ) -> Result<()> {
        // On AMX the bias and a ReLU go into the blocks' stores (see `amx::Epilogue`).
        if gemm_then(g, x, w, y, amx::Epilogue::of(bias.map(|b| &b[..g.n]), act)) {
            return Ok(());
        }
        self.bias_act(y, bias, act, Channels { outer: g.m, channels: g.n, inner: 1 })
    }

    fn bias_act(&self, y: &mut HostBuf, bias: Option<&HostBuf>, act: Activation, s: Channels) -> Result<()> {
        elementwise::bias_act(&mut y[..s.len()], bias.map(|b| &b[..s.channels]), act, s);
        Ok(())
    }
    fn act_backward(&self, y: &HostBuf, dy: &mut HostBuf, act: Activation, s: Channels) -> Result<()> {
        elementwise::act_backward(&y[..s.len()], &mut dy[..s.len()], act, s);
        Ok(())
    }
    fn channel_sums(&self, dy: &HostBuf, s: Channels, beta: f32, out: &mut HostBuf) -> Result<()> {
        elementwise::channel_sums(&dy[..s.len()], s, beta, &mut out[..s.channels]);
        Ok(())
    }
    fn cross_entropy(
        &self,
        args: &XentArgs,
        out: &HostBuf,
        targets: &HostBuf,
        grad: &mut HostBuf,
        stats: &mut HostBuf,
    ) -> Result<()> {
        let (loss, correct) = xent::cross_entropy(args, out, targets, grad);
        stats[0] += loss;
        stats[1] += correct;
        Ok(())
    }
    fn dropout(
        &self,
        x: &HostBuf,
        y: &mut HostBuf,
        mask: &mut HostBuf,
        rate: f32,
        seed: u64,
        len: usize,
    ) -> Result<()> {
        elementwise::dropout(&x[..len], &mut y[..len], &mut mask[..len], rate, seed);
        Ok(())
    }
    fn mul(&self, x: &HostBuf, m: &HostBuf, y: &mut HostBuf, len: usize) -> Result<()> {
        elementwise::mul(&x[..len], &m[..len], &mut y[..len]);
        Ok(())
    }
    fn regularizer_grad(&self, w: &HostBuf, dw: &mut HostBuf, l1: f32, l2: f32, len: usize) -> Result<()> {
        for (d, &w) in dw[..len].iter_mut().zip(&w[..len]) {
            *d += 2.0 * l2 * w
                + l1 * if w > 0.0 {
                    1.0
                } else if w < 0.0 {
                    -1.0
                } else {
                    0.0
                };
        }
        Ok(())
    }
    fn regularizer_penalty(&self, w: &HostBuf, l1: f32, l2: f32, len: usize, acc: &mut HostBuf) -> Result<()> {
        let (mut a, mut s) = (0f64, 0f64);
        for &w in &w[..len] {
            a += w.abs() as f64;
            s += (w * w) as f64;
        }
        acc[0] += (l1 as f64 * a + l2 as f64 * s) as f32;
        Ok(())
    }
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        rule: &UpdateRule,
        sp: StepParams,
        w: &mut HostBuf,
        g: &HostBuf,
        slots: &mut [HostBuf],
        len: usize,
        cols: usize,
    ) -> Result<()> {
        const CHUNK: usize = 1 << 14;
        let w = &mut w[..len];
        let g = &g[..len];
        assert!(slots.len() <= MAX_SLOTS, "an update rule with more than {MAX_SLOTS} slots");
        let k = slots.len();
        if len < PAR_MIN {
            let mut views: [&mut [f32]; MAX_SLOTS] = Default::default();
            for (v, s) in views.iter_mut().zip(slots.iter_mut()) {
                *v = &mut s[..len];
            }
            update_host(rule, sp, w, g, &mut views[..k]);
            return Ok(());
        }
        let prepared = Prepared::new(rule, sp);
        let wp = SyncPtr::new(w);
        let mut sp_slots: [Option<SyncPtr<f32>>; MAX_SLOTS] = [None; MAX_SLOTS];
        for (p, s) in sp_slots.iter_mut().zip(slots.iter_mut()) {
            *p = Some(SyncPtr::new(&mut s[..len]));
        }
        let rows = if cols > 0 && len.is_multiple_of(cols) { len / cols } else { 0 };
        if shares::splits(rows) {
            // Each thread updates its share of the rows: the ones its products use.
            team::for_each_pinned(|p| {
                let share = shares::share(rows, p);
                simd::with_simd(
                    #[inline(always)]
                    // SAFETY: this part alone updates these rows.
                    || unsafe { update_range(&prepared, wp, g, &sp_slots[..k], share.start * cols..share.end * cols) },
                )
            });
            return Ok(());
        }
        // Every tensor split into the same chunks, updated in parallel.
        team::for_each(len.div_ceil(CHUNK), |i| {
            simd::with_simd(
                #[inline(always)]
                // SAFETY: this part alone updates chunk i.
                || unsafe { update_range(&prepared, wp, g, &sp_slots[..k], i * CHUNK..((i + 1) * CHUNK).min(len)) },
            )
        });
        Ok(())
    }

    fn im2col(&self, x: &HostBuf, win: &Window, cols: &mut HostBuf) -> Result<()> {
        conv::im2col(x, win, cols);
        Ok(())
    }
    fn col2im(&self, cols: &HostBuf, win: &Window, dx: &mut HostBuf) -> Result<()> {
        conv::col2im(cols, win, dx);
        Ok(())
    }
    fn swap_axes01(&self, src: &HostBuf, a: usize, b: usize, r: usize, dst: &mut HostBuf) -> Result<()> {
        conv::swap_axes01(src, a, b, r, dst);
        Ok(())
    }
    fn max_pool(&self, x: &HostBuf, win: &Window, y: &mut HostBuf, arg: &mut HostBuf) -> Result<()> {
        conv::max_pool(x, win, y, arg);
        Ok(())
    }
    fn max_pool_backward(&self, dy: &HostBuf, arg: &HostBuf, win: &Window, dx: &mut HostBuf) -> Result<()> {
        conv::max_pool_backward(dy, arg, win, dx);
        Ok(())
    }
    fn fuses_conv_pool(&self, conv: &Window, pool: &Window) -> bool {
        conv_pool::supports(conv, pool) || implicit_conv::supports_pooled(conv, pool)
    }
    /// The single-channel pass (`conv_pool.rs`) into a Winograd pass (`winograd.rs`): the
    /// first computes a pixel's filters side by side and the second transforms a pixel's
    /// channels side by side, so between them the images stay pixel-major.
    fn pixel_major_between(&self, first: (&Window, &Window, usize), second: (&Window, &Window, usize)) -> bool {
        // (The second pair, of 16·j channels, is never taken by the single-channel pass.)
        let ((c1, p1, f1), (c2, p2, f2)) = (first, second);
        conv_pool::supports(c1, p1) && winograd::supports(c2, p2, f2) && (c2.c, c2.h, c2.w) == (f1, p1.oh, p1.ow)
    }
    fn conv_pool(
        &self,
        x: &HostBuf,
        w: &HostBuf,
        b: Option<&HostBuf>,
        act: Activation,
        conv: &Window,
        filters: usize,
        pool: &Window,
        pm: PixelMajor,
        y: &mut HostBuf,
        arg: &mut HostBuf,
    ) -> Result<()> {
        sizes::conv_pool("conv_pool", conv, filters, pool);
        let (out, kernel) = ([conv.n, filters, pool.oh, pool.ow], [filters, conv.c, conv.kh, conv.kw]);
        sizes::need("conv_pool x", x.len(), &[conv.n, conv.c, conv.h, conv.w]);
        sizes::need("conv_pool w", w.len(), &kernel);
        sizes::need("conv_pool bias", b.map_or(filters, |b| b.len()), &[filters]);
        sizes::need("conv_pool y", y.len(), &out);
        sizes::need("conv_pool winners", arg.len(), &out);
        if !any_fused_pass(conv, pool, filters) {
            return Err(unfused(conv, pool));
        }
        let single = conv_pool::supports(conv, pool);
        let wino = !single && winograd::supports(conv, pool, filters);
        if (pm.input && !wino) || (pm.output && !single) {
            return Err(crate::error::NnError::Device(format!("cpu: no pixel-major conv + pooling pass for {pm:?}")));
        }
        if single {
            conv_pool::forward(x, w, b.map(|b| &b[..]), act, conv, filters, pool, pm.output, y, arg);
        } else if wino {
            let b = b.map(|b| &b[..]);
            winograd::forward_pooled(x, pm.input, w, b, act, conv, filters, pool, y, arg, tile::tile_fn);
        } else {
            let b = b.map(|b| &b[..]);
            implicit_conv::forward_pooled(x, w, b, act, conv, filters, pool, y, arg, tile::tile_fn);
        }
        Ok(())
    }
    fn conv_pool_backward(
        &self,
        x: &HostBuf,
        dy: &HostBuf,
        y: &HostBuf,
        arg: &HostBuf,
        act: Activation,
        conv: &Window,
        filters: usize,
        pool: &Window,
        pm: PixelMajor,
        w: &HostBuf,
        dw: &mut HostBuf,
        db: Option<&mut HostBuf>,
        dx: Option<&mut HostBuf>,
    ) -> Result<()> {
        sizes::conv_pool("conv_pool_backward", conv, filters, pool);
        let (out, kernel) = ([conv.n, filters, pool.oh, pool.ow], [filters, conv.c, conv.kh, conv.kw]);
        let input = [conv.n, conv.c, conv.h, conv.w];
        sizes::need("conv_pool_backward x", x.len(), &input);
        sizes::need("conv_pool_backward dy", dy.len(), &out);
        sizes::need("conv_pool_backward y", y.len(), &out);
        sizes::need("conv_pool_backward winners", arg.len(), &out);
        sizes::need("conv_pool_backward w", w.len(), &kernel);
        sizes::need("conv_pool_backward dw", dw.len(), &kernel);
        sizes::need("conv_pool_backward db", db.as_ref().map_or(filters, |b| b.len()), &[filters]);
        sizes::need("conv_pool_backward dx", dx.as_ref().map_or(x.len(), |d| d.len()), &input);
        if !any_fused_pass(conv, pool, filters) {
            return Err(unfused(conv, pool));
        }
        // The single-channel pass has no input gradient; both passes leave the same winners.
        let single = dx.is_none() && conv_pool::supports(conv, pool);
        let wino = dx.is_some() && winograd::supports(conv, pool, filters);
        if (pm.input && !wino) || (pm.output && !single) {
            return Err(crate::error::NnError::Device(format!(
                "cpu: no pixel-major conv + pooling gradient for {pm:?}"
            )));
        }
        if single {
            conv_pool::backward(x, dy, y, arg, act, conv, filters, pool, pm.output, dw, db.map(|b| &mut b[..]));
        } else {
            let grad = implicit_conv::Grad::Pooled { dy, y, arg, act, pool };
            let (db, dx) = (db.map(|b| &mut b[..]), dx.map(|d| &mut d[..]));
            implicit_conv::backward(x, pm.input, grad, w, conv, filters, Some(dw), db, dx, tile::tile_fn);
        }
        Ok(())
    }
    fn direct_conv(&self, win: &Window, filters: usize) -> bool {
        implicit_conv::supports(win, filters)
    }
    fn conv2d(
        &self,
        x: &HostBuf,
        w: &HostBuf,
        b: Option<&HostBuf>,
        act: Activation,
        win: &Window,
        filters: usize,
        y: &mut HostBuf,
    ) -> Result<()> {
        sizes::conv("conv2d", win, filters);
        sizes::need("conv2d x", x.len(), &[win.n, win.c, win.h, win.w]);
        sizes::need("conv2d w", w.len(), &[filters, win.c, win.kh, win.kw]);
        sizes::need("conv2d bias", b.map_or(filters, |b| b.len()), &[filters]);
        sizes::need("conv2d y", y.len(), &[win.n, filters, win.oh, win.ow]);
        if !implicit_conv::supports(win, filters) {
            return Err(no_direct_conv(win, filters));
        }
        implicit_conv::forward(x, w, b.map(|b| &b[..]), act, win, filters, y, tile::tile_fn);
        Ok(())
    }
    fn conv2d_backward(
        &self,
        x: &HostBuf,
        dy: &HostBuf,
        w: &HostBuf,
        win: &Window,
        filters: usize,
        dw: Option<&mut HostBuf>,
        dx: Option<&mut HostBuf>,
    ) -> Result<()> {
        sizes::conv("conv2d_backward", win, filters);
        let (input, kernel) = ([win.n, win.c, win.h, win.w], [filters, win.c, win.kh, win.kw]);
        sizes::need("conv2d_backward x", x.len(), &input);
        sizes::need("conv2d_backward dy", dy.len(), &[win.n, filters, win.oh, win.ow]);
        sizes::need("conv2d_backward w", w.len(), &kernel);
        sizes::need("conv2d_backward dw", dw.as_ref().map_or(w.len(), |d| d.len()), &kernel);
        sizes::need("conv2d_backward dx", dx.as_ref().map_or(x.len(), |d| d.len()), &input);
        if !implicit_conv::supports(win, filters) {
            return Err(no_direct_conv(win, filters));
        }
        let (dw, dx) = (dw.map(|d| &mut d[..]), dx.map(|d| &mut d[..]));
        implicit_conv::backward(x, false, implicit_conv::Grad::Full(dy), w, win, filters, dw, None, dx, tile::tile_fn);
        Ok(())
    }
    fn avg_pool(&self, x: &HostBuf, win: &Window, y: &mut HostBuf) -> Result<()> {
        conv::avg_pool(x, win, y);
        Ok(())
    }
    fn avg_pool_backward(&self, dy: &HostBuf, win: &Window, dx: &mut HostBuf) -> Result<()> {
        conv::avg_pool_backward(dy, win, dx);
        Ok(())
    }
    fn batch_norm_train(
        &self,
        args: &BatchNormArgs,
        x: &HostBuf,
        gamma: &HostBuf,
        beta: &HostBuf,
        moving_mean: &mut HostBuf,
        moving_var: &mut HostBuf,
        saved: &mut HostBuf,
        y: &mut HostBuf,
    ) -> Result<()> {
        norm::train(args, x, gamma, beta, moving_mean, moving_var, saved, y);
        Ok(())
    }
    fn batch_norm_infer(
        &self,
        args: &BatchNormArgs,
        x: &HostBuf,
        gamma: &HostBuf,
        beta: &HostBuf,
        moving_mean: &HostBuf,
        moving_var: &HostBuf,
        y: &mut HostBuf,
    ) -> Result<()> {
        norm::infer(args, x, gamma, beta, moving_mean, moving_var, y);
        Ok(())
    }
    fn batch_norm_backward(
        &self,
        args: &BatchNormArgs,
        x: &HostBuf,
        dy: &HostBuf,
        gamma: &HostBuf,
        saved: &HostBuf,
        dx: &mut HostBuf,
        dgamma: &mut HostBuf,
        dbeta: &mut HostBuf,
    ) -> Result<()> {
        norm::backward(args, x, dy, gamma, saved, dx, dgamma, dbeta);
        Ok(())
    }
}

/// Applies `prepared` to elements `range` of the weights, the gradient and the state slots;
/// inlined into the caller's vectorised loop.
///
/// # Safety
/// No other thread may touch elements `range` of `w` or of the slots during the call.
#[inline(always)]
unsafe fn update_range(
    prepared: &Prepared,
    w: SyncPtr<f32>,
    g: &[f32],
    slots: &[Option<SyncPtr<f32>>],
    range: std::ops::Range<usize>,
) {
    let (lo, hi) = (range.start, range.end);
    let mut views: [&mut [f32]; MAX_SLOTS] = Default::default();
    for (v, p) in views.iter_mut().zip(slots) {
        if let Some(p) = p {
            // SAFETY: the caller's contract.
            *v = unsafe { p.range(lo, hi) };
        }
    }
    // SAFETY: as above.
    let w = unsafe { w.range(lo, hi) };
    prepared.apply(w, &g[lo..hi], &mut views[..slots.len()]);
}

/// Row-major (strided-batched) GEMM on slices through single-threaded `matrixmultiply` calls,
/// parallel over the device's team (one set of threads: matrixmultiply's own pool beside
/// another cost a third of a convnet's time on two cores).
///
/// Large products split `C` by rows or columns; a product with a small `C` and a long shared
/// dimension (a conv layer's weight gradient: `[32, 9]` over `k = 86 528`) splits along `k` and
/// sums the partial products.
pub fn gemm_slices(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    gemm_then(g, a, b, c, None);
}

/// [`gemm_slices`], with `epilogue` applied to `C` where the product runs on AMX as blocks of
/// outputs (a single product); returns whether it was applied.
fn gemm_then(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32], epilogue: Option<amx::Epilogue>) -> bool {
    let mut applied = false;
    let (m, n, k) = (g.m, g.n, g.k);
    // op(A) is [m, k]: stored [m, k] (rs = k, cs = 1) or [k, m] transposed (rs = 1, cs = m).
    let (rsa, csa) = if g.trans_a { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if g.trans_b { (1, k as isize) } else { (n as isize, 1) };
    // Whether `rows × cols` values from `i · stride` lie inside `len` (false where the sizes
    // overflow: the unchecked sums wrapped in release builds and let a huge `n` pass).
    let fits = |i: usize, stride: usize, rows: usize, cols: usize, len: usize| {
        i.checked_mul(stride)
            .zip(rows.checked_mul(cols))
            .and_then(|(o, size)| o.checked_add(size))
            .is_some_and(|end| end <= len)
    };
    for i in 0..g.batch.max(1) {
        assert!(
            fits(i, g.stride_a, m, k, a.len())
                && fits(i, g.stride_b, k, n, b.len())
                && fits(i, g.stride_c, m, n, c.len()),
            "gemm operand too small"
        );
        let (oa, ob, oc) = (i * g.stride_a, i * g.stride_b, i * g.stride_c);
        let (a, b, c) = (&a[oa..], &b[ob..], &mut c[oc..oc + m * n]);
        let threads = team::threads();
        if let Some(scheme) = amx::handles(g) {
            // `None`: `A` was to hold levels and does not; the product below overwrites `C`.
            if let Some(done) = amx::gemm(g, a, b, c, threads > 1 && m * n * k >= GEMM_PAR_MIN, scheme, epilogue) {
                applied = done;
                continue;
            }
        }
        if threads > 1 && m * n <= 64 * 512 && k >= 8192 {
            split_k(g, (rsa, csa), (rsb, csb), a, b, c, threads);
            continue;
        }
        if tile_gemm::handles(g) {
            tile_gemm::gemm(g, a, b, c, threads > 1 && m * n * k >= GEMM_PAR_MIN);
            continue;
        }
        // Below ~4M multiply-adds (~25 µs on one core) splitting costs more than it saves.
        let parts = if threads > 1 && m * n * k >= GEMM_PAR_MIN { threads } else { 1 };
        let cp = SendPtr(c.as_mut_ptr());
        // SAFETY (for the calls below): each call writes rows (or columns) of C, or a partial
        // sum, that no other part writes; the reads of A and B stay inside the operands
        // checked above.
        let sparse = g.sparse_a && !g.trans_b && g.alpha == 1.0 && (g.beta == 0.0 || g.beta == 1.0);
        let sgemm = |rows: Range<usize>, cols: Range<usize>, ks: Range<usize>, c: *mut f32, ldc: usize, beta: f32| unsafe {
            // A mostly-zero A (a first layer's pixels) multiplied by its nonzeros alone.
            if sparse && cols == (0..n) && ldc == n {
                let nv = tile_gemm::dense_nv(rows.len(), n);
                if sparse_gemm::part(
                    &sparse_gemm::SparseA::of(g),
                    a,
                    rows.clone(),
                    ks.clone(),
                    b,
                    n,
                    nv,
                    c,
                    beta == 1.0,
                ) {
                    return;
                }
            }
            matrixmultiply::sgemm(
                rows.len(),
                ks.len(),
                cols.len(),
                g.alpha,
                a.as_ptr().offset(rows.start as isize * rsa + ks.start as isize * csa),
                rsa,
                csa,
                b.as_ptr().offset(ks.start as isize * rsb + cols.start as isize * csb),
                rsb,
                csb,
                beta,
                c.add(rows.start * ldc + cols.start),
                ldc as isize,
                1,
            )
        };
        // A product with a dense kernel splits by the kernel's shares of rows (`shares.rs`):
        // the forward product (B = the kernel, not transposed) along k, each part summing
        // into C or a partial sum of its own; the weight gradient (C = the kernel's gradient)
        // by rows of C; the input gradient (B = the kernel, transposed) by columns of C.
        if parts > 1 && !g.trans_a && !g.trans_b && shares::splits(k) && m * n <= tile_gemm::MAX_PARTIAL {
            let mut partials = tile_gemm::PARTIALS.lock().unwrap_or_else(|e| e.into_inner());
            let ps = SendPtr(tile_gemm::grow(&mut partials, (parts - 1) * m * n).as_mut_ptr());
            team::for_each_pinned(|p| {
                let ks = shares::share(k, p);
                match p {
                    0 => sgemm(0..m, 0..n, ks, cp.get(), n, g.beta),
                    // SAFETY: partial sum p - 1 of the buffer just grown.
                    _ => sgemm(0..m, 0..n, ks, unsafe { ps.get().add((p - 1) * m * n) }, n, 0.0),
                }
            });
            tile_gemm::add_partials(&mut c[..m * n], &partials[..(parts - 1) * m * n]);
            continue;
        }
        if parts > 1 && g.trans_a && !g.trans_b && shares::splits(m) {
            team::for_each_pinned(|p| sgemm(shares::share(m, p), 0..n, 0..k, cp.get(), n, g.beta));
            continue;
        }
        if parts > 1 && g.trans_b && !g.trans_a && shares::splits(n) {
            team::for_each_pinned(|p| sgemm(0..m, shares::share(n, p), 0..k, cp.get(), n, g.beta));
            continue;
        }
        let by_rows = m >= n;
        let len = if by_rows { m } else { n };
        let step = len.div_ceil(parts);
        team::for_each(parts, |p| {
            let (lo, hi) = (p * step, ((p + 1) * step).min(len));
            if lo >= hi {
                return;
            }
            if by_rows {
                sgemm(lo..hi, 0..n, 0..k, cp.get(), n, g.beta);
            } else {
                sgemm(0..m, lo..hi, 0..k, cp.get(), n, g.beta);
            }
        });
    }
    applied
}

/// A pointer shared by the parallel parts of one GEMM, each writing its own block of `C`.
struct SendPtr(*mut f32);

impl SendPtr {
    /// The pointer (a method, so closures capture the wrapper, not the bare pointer).
    fn get(&self) -> *mut f32 {
        self.0
    }
}
// SAFETY: the parts write disjoint blocks (see `gemm_slices`).
unsafe impl Sync for SendPtr {}
// SAFETY: as above.
unsafe impl Send for SendPtr {}

/// `C = α·Σ_chunks op(A)[:, chunk]·op(B)[chunk, :] + β·C`, the chunks of `k` in parallel.
fn split_k(
    g: &Gemm,
    (rsa, csa): (isize, isize),
    (rsb, csb): (isize, isize),
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    threads: usize,
) {
    let (m, n, k) = (g.m, g.n, g.k);
    let parts = threads * 2;
    let chunk = k.div_ceil(parts);
    // The partial products live in a buffer kept between calls (no allocation per step).
    let mut scratch = SPLIT_K_SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    if scratch.len() < parts * m * n {
        scratch.resize(parts * m * n, 0.0);
    }
    team::chunks_mut(&mut scratch[..parts * m * n], m * n, |p, out| {
        let (k0, k1) = (p * chunk, ((p + 1) * chunk).min(k));
        if k0 >= k1 {
            out.fill(0.0);
            return;
        }
        // SAFETY: columns k0..k1 of op(A) and rows k0..k1 of op(B) lie inside the operands
        // checked by the caller; `out` is m×n.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k1 - k0,
                n,
                1.0,
                a.as_ptr().offset(k0 as isize * csa),
                rsa,
                csa,
                b.as_ptr().offset(k0 as isize * rsb),
                rsb,
                csb,
                0.0,
                out.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    });
    for (j, cv) in c.iter_mut().enumerate() {
        let s: f32 = (0..parts).map(|p| scratch[p * m * n + j]).sum();
        *cv = if g.beta == 0.0 { g.alpha * s } else { g.alpha * s + g.beta * *cv };
    }
}

/// Partial products of [`split_k`], reused from call to call.
static SPLIT_K_SCRATCH: std::sync::Mutex<Vec<f32>> = std::sync::Mutex::new(Vec::new());

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        for i in 0..g.m {
            for j in 0..g.n {
                let mut s = 0f64;
                for kk in 0..g.k {
                    let av = if g.trans_a { a[kk * g.m + i] } else { a[i * g.k + kk] };
                    let bv = if g.trans_b { b[j * g.k + kk] } else { b[kk * g.n + j] };
                    s += av as f64 * bv as f64;
                }
                c[i * g.n + j] = g.alpha * s as f32 + g.beta * c[i * g.n + j];
            }
        }
    }

    #[test]
    fn an_update_split_into_shares_gives_the_bits_of_one_pass() {
        let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
        for (rows, cols) in [(784, 100), (40, 3), (1000, 1)] {
            let len = rows * cols;
            let g: Vec<f32> = (0..len).map(|i| ((i * 7 % 31) as f32 - 15.0) / 100.0).collect();
            let w0: Vec<f32> = (0..len).map(|i| ((i * 5 % 23) as f32 - 11.0) / 10.0).collect();
            let buf = |x: &[f32]| HostBuf::from(x);
            let (mut w1, mut w2) = (buf(&w0), w0.clone());
            let mut s2 = vec![vec![0.1f32; len], vec![0.2f32; len]];
            let mut s1 = [buf(&s2[0]), buf(&s2[1])];
            let g1 = buf(&g);
            for t in 1..=3 {
                let sp = StepParams { lr: 0.01, t };
                Cpu.update(&rule, sp, &mut w1, &g1, &mut s1, len, cols).unwrap();
                let (m, v) = s2.split_at_mut(1);
                update_host(&rule, sp, &mut w2, &g, &mut [&mut m[0][..], &mut v[0][..]]);
            }
            assert!(w1.iter().zip(&w2).all(|(a, b)| a.to_bits() == b.to_bits()), "{rows}x{cols}");
            assert!(s1.iter().zip(&s2).all(|(a, b)| a[..] == b[..]));
        }
    }

    #[test]
    fn gemm_matches_the_reference_including_split_k() {
        // (64, 300, 200) is large enough to split by a kernel's shares, whatever the transposes.
        for (m, n, k) in [(5, 7, 3), (32, 9, 20000), (3, 4, 9000), (64, 33, 130), (64, 300, 200)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5).collect();
                let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 / 11.0 - 0.5).collect();
                let g = Gemm::new(ta, tb, m, n, k).beta(0.5);
                let mut c1 = vec![1f32; m * n];
                let mut c2 = c1.clone();
                gemm_slices(&g, &a, &b, &mut c1);
                reference(&g, &a, &b, &mut c2);
                for (x, y) in c1.iter().zip(&c2) {
                    assert!((x - y).abs() <= 1e-3 * (1.0 + y.abs()), "{m}x{n}x{k} {ta} {tb}: {x} vs {y}");
                }
            }
        }
    }
}
