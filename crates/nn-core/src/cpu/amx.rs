//! Matrix products in bfloat16 on Intel's AMX tiles: the CPU device's opt-in precisions below
//! f32 (see [`MatmulPrecision`]).
//!
//! `C = α·op(A)·op(B) + β·C` with both operands rounded to bfloat16 (`bf16_pack.rs`) and every
//! product summed in f32, as PyTorch's `torch.set_float32_matmul_precision("medium")` does on
//! such CPUs (the outputs, the activations and the weights stay f32; Keras's `mixed_bfloat16`
//! policy would keep the activations in bfloat16 too); or, for "high", each operand split into
//! two bfloat16s and three products summed. One `tdpbf16ps` multiplies a 16×32 tile of `A` by a 32×16 one of
//! `B` into 16×16 sums: 8,192 multiply-adds, where an AVX-512 FMA does 16. On the project's
//! two Sapphire Rapids cores M3's 128×512×512 products run at 1.3–1.9 TFLOP/s, against ~330
//! GFLOP/s in f32 (`examples/gemm_shapes.rs --bf16`).
//!
//! A product is cut into blocks of 32×32 outputs (2×2 tiles, eight tile registers: four sums,
//! two of `A`, two of `B`), shared between the team's threads by rows or columns of blocks;
//! see [`gemm`] for who packs what.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::bf16_pack::Form;
#[cfg(target_arch = "x86_64")]
use super::bf16_pack::{Source, Tile};
#[cfg(target_arch = "x86_64")]
use super::shares;
#[cfg(target_arch = "x86_64")]
use super::team::{self, SyncPtr};
use crate::device::Gemm;

/// The precision asked for with [`set_matmul_precision`], as its `u8`.
static PRECISION: AtomicU8 = AtomicU8::new(MatmulPrecision::Highest as u8);

/// Below this many multiply-adds a product stays in f32 (packing both operands would cost
/// more than it saves).
const MIN_MACS: usize = 1 << 16;

/// The same for split operands ([`MatmulPrecision::High`]: twice the packing, three times the
/// products): M3's `128×10×512` took 21 µs split, 15 in f32; M1's `128×128×784` 56 against 92.
const MIN_MACS_SPLIT: usize = 1 << 20;

/// Nor split products of fewer rows: one row of blocks reads each of `B`'s tiles once, which
/// does not pay for packing it twice (M2's `32×100×784` took 22 µs split, 20 in f32, and on
/// the real files its first layer's sparse products are faster still).
const MIN_ROWS_SPLIT: usize = 64;

/// How the CPU device runs its matrix products: the levels of PyTorch's
/// `torch.set_float32_matmul_precision`. Set with [`set_matmul_precision`].
///
/// Below `Highest`, every product of at least 65,536 multiply-adds (`Medium`; for `High`,
/// 1,048,576 and 64 rows) — dense layers' forward passes and gradients, im2col convolutions,
/// not the own convolution kernels — runs on Intel's AMX tiles in bfloat16, summed in f32,
/// where the CPU has them (Sapphire Rapids and later; see [`bf16_products_available`]);
/// elsewhere every level is `Highest`. Weights, activations, losses and updates stay f32 at
/// every level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MatmulPrecision {
    /// Every product in f32 (the default; Keras's `float32` policy, PyTorch's "highest").
    #[default]
    Highest = 0,
    /// Each operand split into two bfloat16s, `x ≈ hi + lo`, and each product taken as
    /// `hi·hi' + hi·lo' + lo·hi'`: three AMX products carrying about 16 of f32's 24 significant
    /// bits (PyTorch's "high" on CPUs without TF32). Near f32's results, and faster than f32
    /// on wide layers (BENCHMARKS.md).
    High = 1,
    /// Both operands rounded to bfloat16, 8 significant bits (PyTorch's "medium"; Keras's
    /// `mixed_bfloat16` policy also keeps the activations in bfloat16): the products 3–6×
    /// faster than f32's and a wide dense model trains about twice as fast; the weights part
    /// from the f32 run's from the first step, and the recipes reach the same accuracies
    /// (BENCHMARKS.md).
    Medium = 2,
}

/// Sets how the CPU device runs the matrix products run after the call, from any thread
/// ([`MatmulPrecision::Highest`], every product in f32, until then). Below `Highest`, the
/// first dense layer's products are the AMX ones, not the sparse ones of
/// [`super::use_sparse_inputs`].
pub fn set_matmul_precision(precision: MatmulPrecision) {
    PRECISION.store(precision as u8, Ordering::Relaxed);
}

/// The precision the CPU device's products run in: the one set with [`set_matmul_precision`]
/// where this CPU and operating system can run it, `Highest` elsewhere.
pub fn matmul_precision() -> MatmulPrecision {
    match PRECISION.load(Ordering::Relaxed) {
        0 => MatmulPrecision::Highest,
        _ if !bf16_products_available() => MatmulPrecision::Highest,
        1 => MatmulPrecision::High,
        _ => MatmulPrecision::Medium,
    }
}

/// Whether this CPU has AMX with bfloat16 (and AVX-512 BF16, BW and DQ for packing) and the
/// operating system lets this process use the tiles (on Linux a process asks once, with
/// `arch_prctl(ARCH_REQ_XCOMP_PERM)`; done here on the first call). Only on x86-64 Linux.
pub fn bf16_products_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    if !(std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512bf16"))
    {
        return false;
    }
    // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    let edx = __cpuid_count(7, 0).edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    const SYS_ARCH_PRCTL: i64 = 158;
    let ret: i64;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) only asks the kernel for permission
    // to use the tile registers; it reads and writes no memory of ours.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Whether products whose `A` holds levels ([`Gemm::a_levels`]) run exactly on AMX (see
/// [`use_level_products`]).
static LEVEL_PRODUCTS: AtomicBool = AtomicBool::new(true);

/// Turns on or off (on by default) the exact products of a first dense layer's scaled pixels
/// on AMX. Where the CPU has AMX ([`bf16_products_available`]) and the inputs are bytes
/// divided by 255 (`Normalization::Scale`, which the trainer declares to the network:
/// `Runtime::set_input_levels`), a pixel `p / 255` is `p`, exact in bfloat16, divided by 255;
/// at the default precision the other operand splits into three bfloat16s that hold all of its
/// 24 bits, so the three products are exact, summed in f32 as an f32 product sums, and the
/// sums divided by 255 at the end. The results are f32's to within f32's own rounding
/// (measured as near the exact sums as f32's or nearer: f32 rounds every `p / 255`), and the
/// first layer's products run 1.6–2.5× faster (M1 trains 25% faster, M3 20%). At
/// [`MatmulPrecision::High`] the other operand splits in two, as it does there anyway, and the
/// pixels are exact instead of split. Inputs that are not such pixels are seen to be so as
/// they are packed, and take the product they would have had without the declaration. Off,
/// every first layer's product is what it was before them: for comparing both.
pub fn use_level_products(on: bool) {
    LEVEL_PRODUCTS.store(on, Ordering::Relaxed);
}

/// Products run on levels ([`level_products_run`]).
static LEVEL_RUNS: AtomicUsize = AtomicUsize::new(0);

/// How many products this process has run on levels (see [`use_level_products`]), refusals
/// not counted: a diagnostic, to see whether a model's first layer takes them on its data.
pub fn level_products_run() -> usize {
    LEVEL_RUNS.load(Ordering::Relaxed)
}

/// What an AMX product makes of its operands: the forms of `A`'s tiles and of `B`'s. One of
/// `Round·Round` ([`MatmulPrecision::Medium`]), `Split·Split` (`High`), or `Levels` by
/// `Split3` (`Highest`) or `Split` (`High`); `Levels·Round` is computed right too (the tests'
/// "medium" with levels) but not chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Scheme {
    a: Form,
    b: Form,
}

/// How [`gemm`] runs this product, if it takes it (AMX available): a single product, with
/// levels in `A` at `Highest` or `High` (with β = 0, from [`MIN_MACS`] multiply-adds and
/// [`MIN_ROWS_SPLIT`] rows), or below `Highest` from [`MIN_MACS`] multiply-adds
/// ([`MIN_MACS_SPLIT`] and [`MIN_ROWS_SPLIT`] rows for `High`).
pub(crate) fn handles(g: &Gemm) -> Option<Scheme> {
    let single = g.batch <= 1 && g.m > 0 && g.n > 0 && g.k > 0;
    if !single {
        return None;
    }
    let macs = g.m * g.n * g.k;
    let precision = matmul_precision();
    let levels = g.a_levels.filter(|&d| {
        d.is_finite()
            && d > 0.0
            && g.beta == 0.0
            && macs >= MIN_MACS
            && g.m >= MIN_ROWS_SPLIT
            && LEVEL_PRODUCTS.load(Ordering::Relaxed)
    });
    // In bfloat16 ("medium") the levels' check costs more than their exactness is worth:
    // M1 0.055–0.058 → 0.060–0.062 s/epoch.
    let b = match precision {
        MatmulPrecision::Highest => Some(Form::Split3),
        MatmulPrecision::High => Some(Form::Split),
        MatmulPrecision::Medium => None,
    };
    if let Some((d, b)) = levels.zip(b).filter(|_| bf16_products_available()) {
        return Some(Scheme { a: Form::Levels(d), b });
    }
    match precision {
        MatmulPrecision::Highest => None,
        MatmulPrecision::High => {
            (macs >= MIN_MACS_SPLIT && g.m >= MIN_ROWS_SPLIT).then_some(Scheme { a: Form::Split, b: Form::Split })
        }
        MatmulPrecision::Medium => (macs >= MIN_MACS).then_some(Scheme { a: Form::Round, b: Form::Round }),
    }
}

/// What a dense layer's forward product does to its outputs before storing them (see
/// `Device::dense_forward`): adds the bias (one per column), then applies a ReLU or nothing.
/// Done as a block's sums are stored, it saves a pass over the outputs: 10k M3 predictions in
/// bfloat16, whose 2048×512 outputs do not fit in L2, 9.9–10.1 → 8.9–9.4 ms.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Epilogue<'a> {
    /// The bias, one per column of `C`.
    bias: Option<&'a [f32]>,
    /// A ReLU after the bias.
    relu: bool,
}

impl<'a> Epilogue<'a> {
    /// The epilogue of `act` after `bias`, for the activations it has (linear and ReLU).
    pub(crate) fn of(bias: Option<&'a [f32]>, act: crate::activation::Activation) -> Option<Epilogue<'a>> {
        use crate::activation::Activation;
        match act {
            Activation::Linear => Some(Epilogue { bias, relu: false }),
            Activation::Relu => Some(Epilogue { bias, relu: true }),
            _ => None,
        }
    }
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// This thread's packed tiles, reused from call to call: the operand it reads whole, and a
    /// panel of the one it has a share of (two rows, or columns, of tiles).
    static BUFFERS: std::cell::RefCell<Buffers> = const { std::cell::RefCell::new(Buffers { shared: Vec::new(), panel: Vec::new(), packed_for: 0 }) };
}

/// The most tiles any thread's `shared` and `panel` have needed.
#[cfg(target_arch = "x86_64")]
static SHARED: super::high_water::HighWater = super::high_water::HighWater::new();
#[cfg(target_arch = "x86_64")]
static PANEL: super::high_water::HighWater = super::high_water::HighWater::new();

/// Grows this thread's tile buffers to the most any thread has needed (skipped while in use).
#[cfg(target_arch = "x86_64")]
pub(crate) fn top_up() {
    let _ = BUFFERS.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            SHARED.grow(&mut b.shared, 0, Tile::ZERO);
            PANEL.grow(&mut b.panel, 0, Tile::ZERO);
        }
    });
}

/// A thread's packed tiles (see `BUFFERS`).
#[cfg(target_arch = "x86_64")]
struct Buffers {
    /// The operand the thread reads whole.
    shared: Vec<Tile>,
    /// A panel of the operand it has a share of.
    panel: Vec<Tile>,
    /// The call (of [`CALLS`]) whose operand `shared` holds: a thread running several parts of
    /// one call (the team busy, or a part left unclaimed) packs it once.
    packed_for: u64,
}

/// Numbers the calls of [`gemm`], from 1.
#[cfg(target_arch = "x86_64")]
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// `C [m, n] = α·op(A)·op(B) + β·C` in bfloat16 products summed in f32 (see the module), over
/// the CPU team when `parallel`, the operands' tiles in `scheme`'s forms. Only for products
/// [`handles`] accepts, in the scheme it gives. With an `epilogue`, the blocks apply it to `C`
/// as they store their sums; returns whether it was applied (not when the product is split
/// along `k`: the caller then applies it), or `None` where `A` was to hold levels and does not
/// (`C` then holds garbage: the caller takes another product).
///
/// A forward product `x·W` (neither operand transposed) whose kernel `W` splits into the
/// kernel's shares of rows (`shares.rs`) is split along `k` as in f32: each thread multiplies
/// its share of `x`'s columns by its share of `W`'s rows, the rows its core updates, into `C`
/// (the first) or a partial sum, and the partial sums are added. Any other product is cut
/// into blocks of 32×32 outputs shared out by rows or by columns of blocks (see `product`).
pub(crate) fn gemm(
    g: &Gemm,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    parallel: bool,
    scheme: Scheme,
    epilogue: Option<Epilogue>,
) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        let (m, n, k) = (g.m, g.n, g.k);
        let (lda, ldb) = (if g.trans_a { m } else { k }, if g.trans_b { k } else { n });
        // Levels: the sums are of the integers, α divides them.
        let g = &match scheme.a {
            Form::Levels(d) => Gemm { alpha: g.alpha / d, ..*g },
            _ => *g,
        };
        // Set by a part that finds a value in `A` that is not a level.
        let refused = AtomicBool::new(false);
        let parts = if parallel { team::threads() } else { 1 };
        if parts > 1 && !g.trans_a && !g.trans_b && shares::splits(k) && m * n <= super::tile_gemm::MAX_PARTIAL {
            let mut partials = super::tile_gemm::PARTIALS.lock().unwrap_or_else(|e| e.into_inner());
            let sums = SyncPtr::new(super::tile_gemm::grow(&mut partials, (parts - 1) * m * n));
            let cp = SyncPtr::new(&mut c[..m * n]);
            team::for_each_pinned(|p| {
                let ks = shares::share(k, p);
                if ks.is_empty() {
                    return;
                }
                let sub = Gemm { k: ks.len(), beta: if p == 0 { g.beta } else { 0.0 }, ..*g };
                // SAFETY: part 0 writes C, part p > 0 partial sum p - 1 alone.
                let out = if p == 0 {
                    cp.raw().0
                } else {
                    // SAFETY: as above.
                    let sum = unsafe { sums.range((p - 1) * m * n, p * m * n) };
                    // The partial sum's lines were last read by the thread adding the sums up,
                    // on another core. Written over whole first, they come back to this core
                    // together; left to the tile stores (rows of 64 bytes astride two lines),
                    // each store waited for its own lines: M1's 128×128×784 product on two
                    // threads took 55 µs, now 36 (the part writing C did not wait).
                    sum.fill(0.0);
                    sum.as_mut_ptr()
                };
                // SAFETY: `a`'s columns `ks` and `b`'s rows `ks` lie inside them.
                unsafe {
                    let call = CALLS.fetch_add(1, Ordering::Relaxed);
                    product(
                        &sub,
                        (lda, ldb),
                        (a.as_ptr().add(ks.start), b.as_ptr().add(ks.start * ldb)),
                        (out, None),
                        (0, 1),
                        call,
                        (scheme, &refused),
                    );
                }
            });
            if !ran(&refused, scheme) {
                return None;
            }
            super::tile_gemm::add_partials(&mut c[..m * n], &partials[..(parts - 1) * m * n]);
            return Some(false);
        }
        let cp = SyncPtr::new(&mut c[..m * n]);
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the operands' sizes were checked by the caller (gemm_slices); each part
        // writes its own blocks of C.
        on_parts(parts, |p| unsafe {
            product(
                g,
                (lda, ldb),
                (a.as_ptr(), b.as_ptr()),
                (cp.raw().0, epilogue),
                (p, parts),
                call,
                (scheme, &refused),
            )
        });
        ran(&refused, scheme).then_some(epilogue.is_some())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, a, b, c, parallel, scheme, epilogue);
        unreachable!("bfloat16 products are only available on x86-64");
    }
}

/// Whether a call in `scheme` ran to the end (no part `refused` its levels); counts it when
/// it ran on levels ([`level_products_run`]).
#[cfg(target_arch = "x86_64")]
fn ran(refused: &AtomicBool, scheme: Scheme) -> bool {
    let ran = !refused.load(Ordering::Relaxed);
    if ran && matches!(scheme.a, Form::Levels(_)) {
        LEVEL_RUNS.fetch_add(1, Ordering::Relaxed);
    }
    ran
}

/// Part `p` of `parts` of `C [m, n] = α·op(A)·op(B) + β·C`, `op(A)[i, s]` at
/// `a[i·lda + s]` (or `a[s·lda + i]` transposed), `op(B)[s, j]` at `b[s·ldb + j]` (or
/// `b[j·ldb + s]`), `C` row-major `n` wide; `m`, `n`, `k`, α, β and the transposes from `g`.
///
/// The blocks of 32×32 outputs are shared out by rows or by columns of blocks, whichever has
/// more. Each part packs the other operand whole, then a panel of its own operand (the 2 rows
/// of tiles, or columns, that a row, or column, of blocks reads) at a time, just before the
/// blocks that use it, while it is in cache. `call` names the call (the same for all its
/// parts, a new one for the next call): a thread that runs several parts of one call packs
/// the whole operand once. The operands' tiles are in the forms of `scheme`; where `A`'s
/// values are to be levels and one is not, the part sets `refused` and stops, and so do the
/// others when they see it.
///
/// # Safety
/// The CPU has AMX and AVX-512 BF16 and this process may use them; the operands hold every
/// element named; no other thread writes the blocks of C this part writes, meanwhile.
#[cfg(target_arch = "x86_64")]
unsafe fn product(
    g: &Gemm,
    (lda, ldb): (usize, usize),
    (a, b): (*const f32, *const f32),
    (c, epilogue): (*mut f32, Option<Epilogue>),
    (p, parts): (usize, usize),
    call: u64,
    (scheme, refused): (Scheme, &AtomicBool),
) {
    let (m, n, k) = (g.m, g.n, g.k);
    // Each 32 steps of a row (or column) of tiles take `form.tiles()` tiles: `kta` tiles per
    // row of A's tiles, `ktb` per column of B's, from `kb` blocks of steps.
    let (mb, nb, kb) = (m.div_ceil(32), n.div_ceil(32), k.div_ceil(32));
    let (kta, ktb) = (scheme.a.tiles() * kb, scheme.b.tiles() * kb);
    let by_rows = mb >= nb;
    // Packs A's (or B's) blocks of steps `from..` into `out`, in its form: block `t` covers
    // rows (or columns) `t / kb · 16..` and steps `t % kb · 32..`, zeros past the operand's
    // edges. False where A's levels are not.
    let pack = |of_a: bool, from: usize, out: &mut [Tile]| {
        let (src, len, trans, ld, form) =
            if of_a { (a, m, g.trans_a, lda, scheme.a) } else { (b, n, !g.trans_b, ldb, scheme.b) };
        // Row-major `op(A)` has its steps contiguous; `op(B)` when it is stored transposed.
        let (o_stride, s_stride) = if trans { (1, ld) } else { (ld, 1) };
        let mut ok = true;
        for (t, tiles) in (from..).zip(out.chunks_exact_mut(form.tiles())) {
            let (o, s) = (t / kb * 16, t % kb * 32);
            let at = Source { o_stride, s_stride, outer: len.saturating_sub(o).min(16), steps: (k - s).min(32) };
            if at.outer == 0 {
                tiles.fill(Tile::ZERO);
                continue;
            }
            // SAFETY: the CPU has AVX-512 BF16 (the caller); a tile's elements lie inside
            // the operand (`Source` stops at its edges); `tiles` are as many as the form makes.
            ok &= unsafe { super::bf16_pack::pack(src.add(o * o_stride + s * s_stride), at, tiles, form, of_a) };
        }
        if !ok {
            refused.store(true, Ordering::Relaxed);
        }
        ok
    };
    // The operand every part reads whole: B when the parts split the rows, A when they split
    // the columns. Each part packs its own copy: packing it once, shared out, cost more (each
    // part's tiles, read by the other core after the previous product, had to be fetched back
    // before being written: 170 ns a tile against 50).
    let (divided, whole) = if by_rows { (mb, nb) } else { (nb, mb) };
    let (kt_own, kt_whole) = if by_rows { (kta, ktb) } else { (ktb, kta) };
    let own = even(divided, parts, p);
    if own.is_empty() {
        // More parts than rows (or columns) of blocks: nothing to pack or compute.
        return;
    }
    BUFFERS.with_borrow_mut(|buffers| {
        let Buffers { shared, panel, packed_for } = buffers;
        SHARED.grow(shared, 2 * kt_whole * whole, Tile::ZERO);
        PANEL.grow(panel, 2 * kt_own, Tile::ZERO);
        let (shared, panel) = (&mut shared[..2 * kt_whole * whole], &mut panel[..2 * kt_own]);
        if *packed_for != call {
            // A thread running a second part of this call finds it packed (and, for levels,
            // checked: a refusal stops the call's other parts).
            *packed_for = call;
            if !pack(!by_rows, 0, shared) {
                return;
            }
        }
        // SAFETY: the CPU has AMX (the caller); this part writes only the blocks of C in its
        // own rows (or columns) of blocks.
        unsafe {
            with_tiles(|| {
                for x in own {
                    if refused.load(Ordering::Relaxed) || !pack(by_rows, 2 * x * kb, panel) {
                        return;
                    }
                    for y in 0..whole {
                        let other = &shared[2 * y * kt_whole..2 * (y + 1) * kt_whole];
                        let (i, j, a, b) = if by_rows { (x, y, &*panel, other) } else { (y, x, other, &*panel) };
                        block(g, a, b, (kb, scheme), (i, j), (c, epilogue));
                    }
                }
            })
        };
    });
}

/// Part `p` of `parts` of `0..len`, the parts as even as whole items allow.
#[cfg(target_arch = "x86_64")]
fn even(len: usize, parts: usize, p: usize) -> std::ops::Range<usize> {
    p * len / parts..(p + 1) * len / parts
}

/// Runs `f(0)` alone, or `f(0)`, …, `f(parts - 1)` with part `p` on the same thread of the
/// team as in the previous call (`parts` is then the team's size).
#[cfg(target_arch = "x86_64")]
fn on_parts(parts: usize, f: impl Fn(usize) + Sync) {
    if parts <= 1 {
        f(0);
    } else {
        team::for_each_pinned(f);
    }
}

/// The tile configuration: palette 1, eight tiles of 16 rows of 64 bytes.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct Config([u8; 64]);

/// Runs `f` with the tile registers configured as [`block`] uses them, and releases them after
/// (also when `f` panics: a thread left with its tiles configured pays for saving them at
/// each context switch).
///
/// # Safety
/// The CPU has AMX and this process may use it.
#[cfg(target_arch = "x86_64")]
unsafe fn with_tiles(f: impl FnOnce()) {
    /// Releases the tiles when dropped.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            // SAFETY: only made after `ldtilecfg` succeeded, on a CPU with AMX.
            unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
        }
    }
    let mut config = Config([0; 64]);
    config.0[0] = 1;
    for t in 0..8 {
        config.0[16 + 2 * t] = 64;
        config.0[48 + t] = 16;
    }
    // SAFETY: loads a valid configuration (palette 1, 8 tiles within its limits); the caller
    // vouches for AMX.
    unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly)) };
    let _release = Release;
    f();
}

/// Computes block `(i, j)` (32×32 outputs from row `32·i`, column `32·j`) of `C` from `a`, the
/// two rows of tiles of `op(A)` it reads (tile row `2i`, then `2i + 1`), and `b`, the two
/// columns of `op(B)`'s (tile column `2j`, then `2j + 1`), over `kb` blocks of 32 steps, each
/// taking as many tiles as `scheme`'s forms make. Split in two on both sides, the block sums
/// `hi·lo' + hi·hi' + lo·hi'` (in that order: the eight tiles are loaded once each, four tile
/// registers at a time); `A`'s levels `q` by `B`'s parts sum `q·lo' + q·mid' + q·hi'`.
///
/// # Safety
/// Inside [`with_tiles`]; `c` points to `C` (`m × n`), whose block is written by no other
/// thread meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block(
    g: &Gemm,
    a: &[Tile],
    b: &[Tile],
    (kb, scheme): (usize, Scheme),
    (i, j): (usize, usize),
    (c, epilogue): (*mut f32, Option<Epilogue>),
) {
    use std::arch::asm;
    use std::arch::x86_64::*;
    let (m, n) = (g.m, g.n);
    let (kta, ktb) = (scheme.a.tiles() * kb, scheme.b.tiles() * kb);
    assert!(kb > 0 && a.len() == 2 * kta && b.len() == 2 * ktb, "a block reads two rows and two columns of tiles");
    let (r0, c0) = (32 * i, 32 * j);
    let (nr, nc) = ((m - r0.min(m)).min(32), (n - c0.min(n)).min(32));
    if nr == 0 || nc == 0 {
        return;
    }
    // A whole block of a plain product goes straight into C; any other into `sums` first.
    let direct = nr == 32 && nc == 32 && g.alpha == 1.0 && g.beta == 0.0 && epilogue.is_none();
    // Left unset (zeroing 4 KiB per block showed in profiles): the asm below writes all four
    // tiles whole (16 rows of 64 bytes each) whenever they are read.
    let mut sums = std::mem::MaybeUninit::<[Tile; 4]>::uninit();
    // SAFETY: the tile registers are configured (the caller); the loads read `kt` tiles from
    // each of a's and b's two halves (split: two per step, 1024 bytes apart); the stores write
    // C's block (32 rows of 32 values, rows `n` apart) or the four tiles of `sums`. The four
    // sums live in tmm0–tmm3 for the whole of one asm block, so nothing else can touch them.
    unsafe {
        let (out, ld) = if direct { (c.add(r0 * n + c0), 4 * n) } else { (sums.as_mut_ptr().cast::<f32>(), 64) };
        // Where each of the four 16×16 sums goes: C's quarters, or `sums[0..4]` one after the
        // other (a tile is 256 floats).
        let outs: [*mut f32; 4] = if direct {
            [out, out.add(16), out.add(16 * n), out.add(16 * n + 16)]
        } else {
            [out, out.add(256), out.add(512), out.add(768)]
        };
        // The loop over the `kb` blocks of steps around `$body` (one block: its tiles loaded,
        // its products added to the four sums), then the sums stored; `$extra`: operands the
        // body uses beside the common ones.
        macro_rules! steps {
            ($($body:literal),* $(,)? ; $($extra:tt)*) => {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    "2:",
                    $($body,)*
                    "dec {steps}",
                    "jnz 2b",
                    "mov {p}, [{outs}]",
                    "tilestored [{p} + {ld}], tmm0",
                    "mov {p}, [{outs} + 8]",
                    "tilestored [{p} + {ld}], tmm1",
                    "mov {p}, [{outs} + 16]",
                    "tilestored [{p} + {ld}], tmm2",
                    "mov {p}, [{outs} + 24]",
                    "tilestored [{p} + {ld}], tmm3",
                    a0 = inout(reg) a.as_ptr() => _,
                    a1 = inout(reg) a.as_ptr().add(kta) => _,
                    b0 = inout(reg) b.as_ptr() => _,
                    b1 = inout(reg) b.as_ptr().add(ktb) => _,
                    steps = inout(reg) kb => _,
                    stride = in(reg) 64usize,
                    outs = in(reg) outs.as_ptr(),
                    p = out(reg) _,
                    ld = in(reg) ld,
                    $($extra)*
                    out("tmm0") _,
                    out("tmm1") _,
                    out("tmm2") _,
                    out("tmm3") _,
                    out("tmm4") _,
                    out("tmm5") _,
                    out("tmm6") _,
                    out("tmm7") _,
                    options(nostack),
                )
            };
        }
        match (scheme.a.tiles(), scheme.b.tiles()) {
            (2, 2) => steps!(
                // A's high parts by B's low parts.
                "tileloadd tmm4, [{a0} + {stride}]",
                "tileloadd tmm6, [{b0} + {stride} + 1024]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {stride} + 1024]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {stride}]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                // By B's high parts.
                "tileloadd tmm6, [{b0} + {stride}]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tileloadd tmm7, [{b1} + {stride}]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm3, tmm5, tmm7",
                // A's low parts by B's high parts.
                "tileloadd tmm4, [{a0} + {stride} + 1024]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {stride} + 1024]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a0}, 2048",
                "add {a1}, 2048",
                "add {b0}, 2048",
                "add {b1}, 2048";
            ),
            (1, 1) => steps!(
                "tileloadd tmm4, [{a0} + {stride}]",
                "tileloadd tmm6, [{b0} + {stride}]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {stride}]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {stride}]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a0}, 1024",
                "add {a1}, 1024",
                "add {b0}, 1024",
                "add {b1}, 1024";
            ),
            // A's levels by each of B's parts, the last (smallest) first: `last` is its offset.
            (1, parts @ (2 | 3)) => steps!(
                "tileloadd tmm4, [{a0} + {stride}]",
                "tileloadd tmm5, [{a1} + {stride}]",
                "mov {off}, {last}",
                "3:",
                "lea {p}, [{b0} + {off}]",
                "tileloadd tmm6, [{p} + {stride}]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "lea {p}, [{b1} + {off}]",
                "tileloadd tmm7, [{p} + {stride}]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm3, tmm5, tmm7",
                // Down to offset 0 (`sub` borrows past it).
                "sub {off}, 1024",
                "jnc 3b",
                "add {a0}, 1024",
                "add {a1}, 1024",
                "lea {b0}, [{b0} + {last} + 1024]",
                "lea {b1}, [{b1} + {last} + 1024]";
                off = out(reg) _,
                last = in(reg) (parts - 1) * 1024,
            ),
            other => unreachable!("no AMX scheme takes {other:?} tiles per block of steps"),
        }
        if direct {
            return;
        }
        // The asm stored the four sums into `sums`.
        let sums = sums.assume_init_ref();
        let (alpha, beta) = (_mm512_set1_ps(g.alpha), _mm512_set1_ps(g.beta));
        for r in 0..nr {
            for h in 0..2 {
                let width = nc.saturating_sub(16 * h).min(16);
                if width == 0 {
                    break;
                }
                let mask = if width == 16 { 0xffff } else { ((1u32 << width) - 1) as u16 };
                let tile = &sums[2 * (r / 16) + h];
                let s = _mm512_castsi512_ps(_mm512_load_si512(tile.0.as_ptr().add(16 * (r % 16)).cast()));
                let out = c.add((r0 + r) * n + c0 + 16 * h);
                let mut v = if g.beta == 0.0 {
                    _mm512_mul_ps(alpha, s)
                } else {
                    _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(mask, out), _mm512_mul_ps(alpha, s))
                };
                if let Some(e) = epilogue {
                    if let Some(bias) = e.bias {
                        // The bias has `n` values (the caller's slice); the mask stops at the
                        // block's last column.
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(c0 + 16 * h)));
                    }
                    if e.relu {
                        v = _mm512_max_ps(v, _mm512_setzero_ps());
                    }
                }
                _mm512_mask_storeu_ps(out, mask, v);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::bf16_pack::bf16_bits;
    use super::*;

    fn round(x: f32) -> f64 {
        f64::from(f32::from_bits(u32::from(bf16_bits(x)) << 16))
    }

    /// Whether this CPU or OS lacks AMX-BF16 (the test then says it skips).
    fn no_amx() -> bool {
        let none = !bf16_products_available();
        if none {
            eprintln!("skipped: this CPU or OS has no AMX-BF16");
        }
        none
    }

    /// Uniform values in [-1, 1) from `seed`.
    fn uniform(mut seed: u64) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// The scheme of a precision's products without levels.
    fn plain(precision: MatmulPrecision) -> Scheme {
        match precision {
            MatmulPrecision::High => Scheme { a: Form::Split, b: Form::Split },
            _ => Scheme { a: Form::Round, b: Form::Round },
        }
    }

    /// `x` as the split's two parts: rounded, and what the rounding left, rounded.
    fn split(x: f32) -> (f64, f64) {
        let hi = round(x);
        (hi, round((f64::from(x) - hi) as f32))
    }

    #[test]
    fn products_are_the_sums_of_the_rounded_operands_for_every_layout_and_edge() {
        if no_amx() {
            return;
        }
        let mut next = uniform(7);
        for precision in [MatmulPrecision::Medium, MatmulPrecision::High] {
            for (m, n, k) in [(128, 512, 784), (37, 70, 33), (16, 16, 32), (1, 300, 5), (200, 10, 128), (33, 31, 64)] {
                for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
                    for (alpha, beta) in [(1.0, 0.0), (1.0, 1.0), (0.5, -2.0)] {
                        let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
                        let b: Vec<f32> = (0..k * n).map(|_| next() * 3.0).collect();
                        let c0: Vec<f32> = (0..m * n).map(|_| next()).collect();
                        let g = Gemm { alpha, beta, ..Gemm::new(trans_a, trans_b, m, n, k) };
                        for parallel in [false, true] {
                            let mut c = c0.clone();
                            assert_eq!(gemm(&g, &a, &b, &mut c, parallel, plain(precision), None), Some(false));
                            for i in 0..m {
                                for j in 0..n {
                                    let (mut sum, mut size, mut exact) = (0.0f64, 0.0f64, 0.0f64);
                                    for s in 0..k {
                                        let x = a[if trans_a { s * m + i } else { i * k + s }];
                                        let y = b[if trans_b { j * k + s } else { s * n + j }];
                                        let xy = if precision == MatmulPrecision::High {
                                            let ((xh, xl), (yh, yl)) = (split(x), split(y));
                                            xh * yh + xh * yl + xl * yh
                                        } else {
                                            round(x) * round(y)
                                        };
                                        sum += xy;
                                        size += xy.abs();
                                        exact += f64::from(x) * f64::from(y);
                                    }
                                    let c0 = f64::from(beta) * f64::from(c0[i * n + j]);
                                    let want = f64::from(alpha) * sum + c0;
                                    let got = f64::from(c[i * n + j]);
                                    let tol = 1e-6 * (k as f64).sqrt() * (size + 1.0);
                                    assert!(
                                        (got - want).abs() <= tol,
                                        "{precision:?} {m}×{n}×{k}, trans {trans_a}/{trans_b}, α {alpha} β {beta}, \
                                         parallel {parallel}: C[{i}, {j}] = {got}, want {want}"
                                    );
                                    if precision == MatmulPrecision::High {
                                        // Split, the sum is within 2⁻¹⁵ of the exact one: f32's
                                        // own summation error is ~2⁻²⁴·√k of the same size.
                                        let exact = f64::from(alpha) * exact + c0;
                                        assert!(
                                            (got - exact).abs() <= size * 2f64.powi(-15) + tol,
                                            "{m}×{n}×{k}: C[{i}, {j}] = {got}, exact {exact}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_epilogue_gives_what_the_bias_and_activation_pass_gives() {
        if no_amx() {
            return;
        }
        use crate::activation::Activation;
        use crate::device::Channels;
        let mut next = uniform(11);
        // Whole blocks and ragged edges; split along k or not (a small C splits).
        for (m, n, k) in [(2048, 512, 784), (70, 45, 300), (128, 512, 512)] {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let bias: Vec<f32> = (0..n).map(|_| next()).collect();
            let g = Gemm::new(false, false, m, n, k);
            for precision in [MatmulPrecision::Medium, MatmulPrecision::High] {
                for act in [Activation::Relu, Activation::Linear] {
                    for with_bias in [true, false] {
                        let bias = with_bias.then_some(&bias[..]);
                        let mut want = vec![0f32; m * n];
                        assert_eq!(gemm(&g, &a, &b, &mut want, true, plain(precision), None), Some(false));
                        let shape = Channels { outer: m, channels: n, inner: 1 };
                        super::super::elementwise::bias_act(&mut want, bias, act, shape);
                        let mut got = vec![f32::NAN; m * n];
                        let epilogue = Epilogue::of(bias, act);
                        let applied = gemm(&g, &a, &b, &mut got, true, plain(precision), epilogue) == Some(true);
                        // 2048×512 outputs are too many to split along k: blocks, with the
                        // epilogue.
                        assert!(applied || m < 2048, "the blocks applied no epilogue");
                        if !applied {
                            super::super::elementwise::bias_act(&mut got, bias, act, shape);
                        }
                        assert!(got == want, "{m}×{n}×{k} {precision:?} {act:?}, bias {with_bias}");
                    }
                }
            }
        }
    }

    #[test]
    fn split_products_are_much_closer_to_f32_than_rounded_ones() {
        if no_amx() {
            return;
        }
        let (m, n, k) = (64, 64, 512);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 1.7).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i * 104_729 % 997) as f32 / 997.0 - 0.5).collect();
        let g = Gemm::new(false, false, m, n, k);
        let mut exact = vec![0f32; m * n];
        super::super::gemm_slices(&g, &a, &b, &mut exact);
        let error = |precision| {
            let mut c = vec![0f32; m * n];
            gemm(&g, &a, &b, &mut c, false, plain(precision), None);
            c.iter().zip(&exact).map(|(x, y)| f64::from(x - y).abs()).fold(0.0, f64::max)
        };
        let (medium, high) = (error(MatmulPrecision::Medium), error(MatmulPrecision::High));
        assert!(high * 100.0 < medium, "largest error: split {high}, rounded {medium}");
    }

    #[test]
    fn products_of_levels_are_f32_products_and_other_values_are_refused() {
        if no_amx() {
            return;
        }
        let mut next = uniform(5);
        // Ragged and whole blocks, split along k (C small) or not, both layouts of A.
        for (m, n, k) in [(128, 128, 784), (784, 128, 128), (37, 70, 33), (300, 40, 97)] {
            for trans_a in [false, true] {
                let a: Vec<f32> = (0..m * k).map(|_| ((next() + 1.0) * 128.0).min(255.0).floor() / 255.0).collect();
                let b: Vec<f32> = (0..k * n).map(|_| next() * 0.1).collect();
                let g = Gemm::new(trans_a, false, m, n, k).a_levels(Some(255.0));
                let at = |i: usize, s: usize| a[if trans_a { s * m + i } else { i * k + s }];
                // The f32 product and its largest error, against f64 sums.
                let mut f32s = vec![0f32; m * n];
                super::super::tile_gemm::gemm(&Gemm { a_levels: None, ..g }, &a, &b, &mut f32s, true);
                let exact =
                    |i: usize, j: usize| (0..k).map(|s| f64::from(at(i, s)) * f64::from(b[s * n + j])).sum::<f64>();
                let worst =
                    |c: &[f32]| (0..m * n).map(|x| (f64::from(c[x]) - exact(x / n, x % n)).abs()).fold(0.0, f64::max);
                let f32_error = worst(&f32s);
                for precision in [MatmulPrecision::Highest, MatmulPrecision::High, MatmulPrecision::Medium] {
                    let b_form = [Form::Split3, Form::Split, Form::Round][precision as usize];
                    let scheme = Scheme { a: Form::Levels(255.0), b: b_form };
                    let mut c = vec![f32::NAN; m * n];
                    assert!(gemm(&g, &a, &b, &mut c, true, scheme, None).is_some(), "{m}×{n}×{k}: refused");
                    let error = worst(&c);
                    // Every bit of B: as near as f32 (the pixels exact, where f32 rounds p / 255;
                    // measured 0.23–1.01 of f32's error, smaller on the long sums). Fewer: B's
                    // rounding.
                    let bound = match precision {
                        MatmulPrecision::Highest => 1.5 * f32_error,
                        MatmulPrecision::High => 2f64.powi(-15) * (k as f64).sqrt() * 0.1,
                        MatmulPrecision::Medium => 2f64.powi(-8) * (k as f64).sqrt() * 0.1,
                    };
                    assert!(error <= bound, "{m}×{n}×{k} {precision:?}: error {error:e}, f32's {f32_error:e}");
                }
                // A value that is not a pixel / 255, anywhere: refused.
                for spot in [0, m * k / 2, m * k - 1] {
                    let mut spoiled = a.clone();
                    spoiled[spot] = 0.3;
                    let mut c = vec![0f32; m * n];
                    let scheme = Scheme { a: Form::Levels(255.0), b: Form::Split3 };
                    for parallel in [false, true] {
                        assert_eq!(
                            gemm(&g, &spoiled, &b, &mut c, parallel, scheme, None),
                            None,
                            "{m}×{n}×{k} at {spot}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn products_told_of_levels_take_them_by_default_and_f32_after_a_refusal() {
        if no_amx() {
            return;
        }
        let (m, n, k) = (64, 64, 256);
        let a: Vec<f32> = (0..m * k).map(|i| (i * 13 % 256) as f32 / 255.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 101) as f32 / 101.0 - 0.5).collect();
        let g = Gemm::new(false, false, m, n, k).a_levels(Some(255.0));
        assert_eq!(handles(&g).map(|s| s.a), Some(Form::Levels(255.0)));
        assert_eq!(handles(&Gemm { beta: 1.0, ..g }), None, "β ≠ 0 cannot be recomputed after a refusal");
        // Through the device's entry: what f32 gives, within its rounding, levels or not.
        let (mut with, mut without) = (vec![0f32; m * n], vec![0f32; m * n]);
        super::super::gemm_slices(&g, &a, &b, &mut with);
        super::super::gemm_slices(&Gemm { a_levels: None, ..g }, &a, &b, &mut without);
        let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()));
        assert!(close(&with, &without));
        let mut spoiled = a.clone();
        spoiled[100] = 0.3;
        super::super::gemm_slices(&g, &spoiled, &b, &mut with);
        super::super::gemm_slices(&Gemm { a_levels: None, ..g }, &spoiled, &b, &mut without);
        assert_eq!(with, without, "a refused product is the f32 one");
    }
}
