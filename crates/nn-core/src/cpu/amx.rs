//! Matrix products in bfloat16 on Intel's AMX tiles: the CPU device's opt-in mixed precision
//! (see [`use_bf16_products`]).
//!
//! `C = α·op(A)·op(B) + β·C` with both operands rounded to bfloat16 (`bf16_pack.rs`) and every
//! product summed in f32, as PyTorch's `torch.set_float32_matmul_precision("medium")` does on
//! such CPUs (the outputs, the activations and the weights stay f32; Keras's `mixed_bfloat16`
//! policy would keep the activations in bfloat16 too). One `tdpbf16ps` multiplies a 16×32 tile of `A` by a 32×16 one of
//! `B` into 16×16 sums: 8,192 multiply-adds, where an AVX-512 FMA does 16. On the project's
//! two Sapphire Rapids cores M3's 128×512×512 products run at 1.3–1.9 TFLOP/s, against ~330
//! GFLOP/s in f32 (`examples/gemm_shapes.rs --bf16`).
//!
//! A product is cut into blocks of 32×32 outputs (2×2 tiles, eight tile registers: four sums,
//! two of `A`, two of `B`), shared between the team's threads by rows or columns of blocks;
//! see [`gemm`] for who packs what.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use super::bf16_pack::{Source, Tile};
#[cfg(target_arch = "x86_64")]
use super::shares;
#[cfg(target_arch = "x86_64")]
use super::team::{self, SyncPtr};
use crate::device::Gemm;

/// Whether products go to the AMX tiles (see [`use_bf16_products`]).
static BF16_PRODUCTS: AtomicBool = AtomicBool::new(false);

/// Below this many multiply-adds a product stays in f32 (packing both operands would cost
/// more than it saves).
const MIN_MACS: usize = 1 << 16;

/// Turns the CPU device's bfloat16 products on or off (off by default: every product in f32).
///
/// On, every matrix product of the CPU device (dense layers' forward passes and gradients,
/// im2col convolutions; not the own convolution kernels) of at least 65,536 multiply-adds
/// rounds its two operands to bfloat16 and sums in f32 on Intel's AMX tiles, where the CPU has
/// them (Sapphire Rapids and later; see [`bf16_products_available`]); elsewhere it changes
/// nothing. This is mixed precision as PyTorch's `set_float32_matmul_precision("medium")` means
/// it: weights, activations, losses and updates stay f32, products carry 8 significant bits of
/// their operands (Keras's `mixed_bfloat16` policy also keeps the activations in bfloat16). The products are then 3–6×
/// faster and a wide dense model trains about twice as fast; the weights part from the f32
/// run's from the first step, and the recipes reach the same accuracies (BENCHMARKS.md). It applies to
/// the products run after the call, from any thread. On, it takes the first dense layer's
/// products from the sparse ones of [`super::use_sparse_inputs`].
pub fn use_bf16_products(on: bool) {
    BF16_PRODUCTS.store(on, Ordering::Relaxed);
}

/// Whether bfloat16 products were asked for with [`use_bf16_products`] and this CPU and
/// operating system can run them.
pub fn bf16_products() -> bool {
    BF16_PRODUCTS.load(Ordering::Relaxed) && bf16_products_available()
}

/// Whether this CPU has AMX with bfloat16 (and AVX-512 BF16 for rounding) and the operating
/// system lets this process use the tiles (on Linux a process asks once, with
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

/// Whether [`gemm`] takes this product: bfloat16 products are on and available, and it is a
/// single product of at least [`MIN_MACS`] multiply-adds.
pub(crate) fn handles(g: &Gemm) -> bool {
    g.batch <= 1 && g.m > 0 && g.n > 0 && g.k > 0 && g.m * g.n * g.k >= MIN_MACS && bf16_products()
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
/// the CPU team when `parallel`. Only for products [`handles`] accepts.
///
/// A forward product `x·W` (neither operand transposed) whose kernel `W` splits into the
/// kernel's shares of rows (`shares.rs`) is split along `k` as in f32: each thread multiplies
/// its share of `x`'s columns by its share of `W`'s rows, the rows its core updates, into `C`
/// (the first) or a partial sum, and the partial sums are added. Any other product is cut
/// into blocks of 32×32 outputs shared out by rows or by columns of blocks (see `product`).
pub(crate) fn gemm(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32], parallel: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let (m, n, k) = (g.m, g.n, g.k);
        let (lda, ldb) = (if g.trans_a { m } else { k }, if g.trans_b { k } else { n });
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
                        a.as_ptr().add(ks.start),
                        b.as_ptr().add(ks.start * ldb),
                        out,
                        (0, 1),
                        call,
                    );
                }
            });
            super::tile_gemm::add_partials(&mut c[..m * n], &partials[..(parts - 1) * m * n]);
            return;
        }
        let cp = SyncPtr::new(&mut c[..m * n]);
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the operands' sizes were checked by the caller (gemm_slices); each part
        // writes its own blocks of C.
        on_parts(parts, |p| unsafe { product(g, (lda, ldb), a.as_ptr(), b.as_ptr(), cp.raw().0, (p, parts), call) });
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, a, b, c, parallel);
        unreachable!("bfloat16 products are only available on x86-64");
    }
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
/// the whole operand once.
///
/// # Safety
/// The CPU has AMX and AVX-512 BF16 and this process may use them; the operands hold every
/// element named; no other thread writes the blocks of C this part writes, meanwhile.
#[cfg(target_arch = "x86_64")]
unsafe fn product(
    g: &Gemm,
    (lda, ldb): (usize, usize),
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    (p, parts): (usize, usize),
    call: u64,
) {
    let (m, n, k) = (g.m, g.n, g.k);
    let (mb, nb, kt) = (m.div_ceil(32), n.div_ceil(32), k.div_ceil(32));
    let by_rows = mb >= nb;
    // Packs tiles `from..` of A (or B) into `out`: tile `t` covers rows (or columns)
    // `t / kt · 16..` and steps `t % kt · 32..`, zeros past the operand's edges.
    let pack = |of_a: bool, from: usize, out: &mut [Tile]| {
        let (src, len, trans, ld) = if of_a { (a, m, g.trans_a, lda) } else { (b, n, !g.trans_b, ldb) };
        // Row-major `op(A)` has its steps contiguous; `op(B)` when it is stored transposed.
        let (o_stride, s_stride) = if trans { (1, ld) } else { (ld, 1) };
        for (t, tile) in (from..).zip(out) {
            let (o, s) = (t / kt * 16, t % kt * 32);
            let at = Source { o_stride, s_stride, outer: len.saturating_sub(o).min(16), steps: (k - s).min(32) };
            if at.outer == 0 {
                *tile = Tile::ZERO;
                continue;
            }
            // SAFETY: the CPU has AVX-512 BF16 (the caller); a tile's elements lie inside
            // the operand (`Source` stops at its edges).
            unsafe { super::bf16_pack::pack(src.add(o * o_stride + s * s_stride), at, tile, of_a) };
        }
    };
    // The operand every part reads whole: B when the parts split the rows, A when they split
    // the columns. Each part packs its own copy: packing it once, shared out, cost more (each
    // part's tiles, read by the other core after the previous product, had to be fetched back
    // before being written: 170 ns a tile against 50).
    let (split, whole) = if by_rows { (mb, nb) } else { (nb, mb) };
    let own = even(split, parts, p);
    if own.is_empty() {
        // More parts than rows (or columns) of blocks: nothing to pack or compute.
        return;
    }
    BUFFERS.with_borrow_mut(|buffers| {
        let Buffers { shared, panel, packed_for } = buffers;
        SHARED.grow(shared, 2 * kt * whole, Tile::ZERO);
        PANEL.grow(panel, 2 * kt, Tile::ZERO);
        let (shared, panel) = (&mut shared[..2 * kt * whole], &mut panel[..2 * kt]);
        if *packed_for != call {
            pack(!by_rows, 0, shared);
            *packed_for = call;
        }
        // SAFETY: the CPU has AMX (the caller); this part writes only the blocks of C in its
        // own rows (or columns) of blocks.
        unsafe {
            with_tiles(|| {
                for x in own {
                    pack(by_rows, 2 * x * kt, panel);
                    for y in 0..whole {
                        let other = &shared[2 * y * kt..2 * (y + 1) * kt];
                        let (i, j, a, b) = if by_rows { (x, y, &*panel, other) } else { (y, x, other, &*panel) };
                        block(g, a, b, kt, i, j, c);
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
/// two rows of `kt` tiles of `op(A)` it reads (tile row `2i`, then `2i + 1`), and `b`, the two
/// columns of `op(B)`'s (tile column `2j`, then `2j + 1`).
///
/// # Safety
/// Inside [`with_tiles`]; `c` points to `C` (`m × n`), whose block is written by no other
/// thread meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block(g: &Gemm, a: &[Tile], b: &[Tile], kt: usize, i: usize, j: usize, c: *mut f32) {
    use std::arch::asm;
    use std::arch::x86_64::*;
    let (m, n) = (g.m, g.n);
    assert!(kt > 0 && a.len() == 2 * kt && b.len() == 2 * kt, "a block reads two rows and two columns of tiles");
    let (r0, c0) = (32 * i, 32 * j);
    let (nr, nc) = ((m - r0.min(m)).min(32), (n - c0.min(n)).min(32));
    if nr == 0 || nc == 0 {
        return;
    }
    // A whole block of a plain product goes straight into C; any other into `sums` first.
    let direct = nr == 32 && nc == 32 && g.alpha == 1.0 && g.beta == 0.0;
    // Left unset (zeroing 4 KiB per block showed in profiles): the asm below writes all four
    // tiles whole (16 rows of 64 bytes each) whenever they are read.
    let mut sums = std::mem::MaybeUninit::<[Tile; 4]>::uninit();
    // SAFETY: the tile registers are configured (the caller); the loads read `kt` tiles from
    // each of a's and b's two halves; the stores write C's block (32 rows of 32 values, rows
    // `n` apart) or the four tiles of `sums`. The four sums live in tmm0–tmm3 for the whole
    // of this one asm block, so nothing else can touch them.
    unsafe {
        let (out, ld) = if direct { (c.add(r0 * n + c0), 4 * n) } else { (sums.as_mut_ptr().cast::<f32>(), 64) };
        // Where each of the four 16×16 sums goes: C's quarters, or `sums[0..4]` one after the
        // other (a tile is 256 floats).
        let (o01, o10, o11) = if direct {
            (out.add(16), out.add(16 * n), out.add(16 * n + 16))
        } else {
            (out.add(256), out.add(512), out.add(768))
        };
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
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
            "add {b1}, 1024",
            "dec {steps}",
            "jnz 2b",
            "tilestored [{o00} + {ld}], tmm0",
            "tilestored [{o01} + {ld}], tmm1",
            "tilestored [{o10} + {ld}], tmm2",
            "tilestored [{o11} + {ld}], tmm3",
            a0 = inout(reg) a.as_ptr() => _,
            a1 = inout(reg) a.as_ptr().add(kt) => _,
            b0 = inout(reg) b.as_ptr() => _,
            b1 = inout(reg) b.as_ptr().add(kt) => _,
            steps = inout(reg) kt => _,
            stride = in(reg) 64usize,
            o00 = in(reg) out,
            o01 = in(reg) o01,
            o10 = in(reg) o10,
            o11 = in(reg) o11,
            ld = in(reg) ld,
            out("tmm0") _,
            out("tmm1") _,
            out("tmm2") _,
            out("tmm3") _,
            out("tmm4") _,
            out("tmm5") _,
            out("tmm6") _,
            out("tmm7") _,
            options(nostack),
        );
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
                let v = if g.beta == 0.0 {
                    _mm512_mul_ps(alpha, s)
                } else {
                    _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(mask, out), _mm512_mul_ps(alpha, s))
                };
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

    #[test]
    fn products_are_the_sums_of_the_rounded_operands_for_every_layout_and_edge() {
        if !bf16_products_available() {
            eprintln!("skipped: this CPU or OS has no AMX-BF16");
            return;
        }
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (m, n, k) in [(128, 512, 784), (37, 70, 33), (16, 16, 32), (1, 300, 5), (200, 10, 128), (33, 31, 64)] {
            for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
                for (alpha, beta) in [(1.0, 0.0), (1.0, 1.0), (0.5, -2.0)] {
                    let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| next() * 3.0).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| next()).collect();
                    let g = Gemm { alpha, beta, ..Gemm::new(trans_a, trans_b, m, n, k) };
                    for parallel in [false, true] {
                        let mut c = c0.clone();
                        gemm(&g, &a, &b, &mut c, parallel);
                        for i in 0..m {
                            for j in 0..n {
                                let (mut sum, mut size) = (0.0f64, 0.0f64);
                                for s in 0..k {
                                    let x = a[if trans_a { s * m + i } else { i * k + s }];
                                    let y = b[if trans_b { j * k + s } else { s * n + j }];
                                    sum += round(x) * round(y);
                                    size += (round(x) * round(y)).abs();
                                }
                                let want = f64::from(alpha) * sum + f64::from(beta) * f64::from(c0[i * n + j]);
                                let got = f64::from(c[i * n + j]);
                                let tol = 1e-6 * (k as f64).sqrt() * (size + 1.0);
                                assert!(
                                    (got - want).abs() <= tol,
                                    "{m}×{n}×{k}, trans {trans_a}/{trans_b}, α {alpha} β {beta}, parallel {parallel}: \
                                     C[{i}, {j}] = {got}, want {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
