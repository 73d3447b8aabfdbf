//! Matrix products in bfloat16 on Intel's AMX tiles: the CPU device's opt-in mixed precision
//! (see [`use_bf16_products`]).
//!
//! `C = α·op(A)·op(B) + β·C` with both operands rounded to bfloat16 (`bf16_pack.rs`) and every
//! product summed in f32, as PyTorch's `torch.set_float32_matmul_precision("medium")` and
//! Keras's `mixed_bfloat16` policy do on such CPUs (the outputs, the activations and the
//! weights stay f32 here). One `tdpbf16ps` multiplies a 16×32 tile of `A` by a 32×16 one of
//! `B` into 16×16 sums: 8,192 multiply-adds, where an AVX-512 FMA does 16. On the project's
//! Sapphire Rapids cores a 128×512×512 product runs at ~850 GFLOP/s a core, against ~190 for
//! the f32 products.
//!
//! A product is cut into blocks of 32×32 outputs (2×2 tiles, eight tile registers: four sums,
//! two of `A`, two of `B`); both operands are packed into tiles first, the team's threads
//! sharing the packing and then the blocks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use super::bf16_pack::{Source, Tile};
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
/// nothing. This is mixed precision as Keras's `mixed_bfloat16` policy and PyTorch's
/// `set_float32_matmul_precision("medium")` mean it: weights, activations, losses and updates
/// stay f32, products carry 8 significant bits of their operands. Training is then several
/// times faster for wide dense layers, and its results differ from the f32 ones in the third
/// or fourth digit (the recipes reach the same accuracies; see BENCHMARKS.md). It applies to
/// the products run after the call, from any thread.
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
/// single product of at least [`MIN_MACS`] multiply-adds whose operands each have a unit
/// stride one way.
pub(crate) fn handles(g: &Gemm) -> bool {
    g.batch <= 1 && g.m > 0 && g.n > 0 && g.k > 0 && g.m * g.n * g.k >= MIN_MACS && bf16_products()
}

/// The packed tiles, reused from call to call: `A`'s, then `B`'s.
static PACKED: Mutex<Vec<Tile>> = Mutex::new(Vec::new());

/// `C [m, n] = α·op(A)·op(B) + β·C` in bfloat16 products summed in f32 (see the module), over
/// the CPU team when `parallel`. Only for products [`handles`] accepts.
pub(crate) fn gemm(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32], parallel: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let (m, n, k) = (g.m, g.n, g.k);
        // Blocks are 2×2 tiles: pad the tile rows and columns to even counts.
        let (mt, nt, kt) = (m.div_ceil(32) * 2, n.div_ceil(32) * 2, k.div_ceil(32));
        let (a_tiles, b_tiles) = (mt * kt, nt * kt);
        let mut packed = PACKED.lock().unwrap_or_else(|e| e.into_inner());
        if packed.len() < a_tiles + b_tiles {
            packed.resize(a_tiles + b_tiles, Tile::ZERO);
        }
        let tiles = SyncPtr::new(&mut packed[..a_tiles + b_tiles]);
        let parts = if parallel { team::threads() } else { 1 };
        let a_at = |t: usize| {
            let (r, s) = (t / kt * 16, t % kt * 32);
            let (o_stride, s_stride) = if g.trans_a { (1, m) } else { (k, 1) };
            let at = Source { o_stride, s_stride, outer: m.saturating_sub(r).min(16), steps: (k - s).min(32) };
            (r * o_stride + s * s_stride, at)
        };
        let b_at = |t: usize| {
            let (col, s) = (t / kt * 16, t % kt * 32);
            let (o_stride, s_stride) = if g.trans_b { (k, 1) } else { (1, n) };
            let at = Source { o_stride, s_stride, outer: n.saturating_sub(col).min(16), steps: (k - s).min(32) };
            (col * o_stride + s * s_stride, at)
        };
        let pack = |p: usize| {
            let range = even(a_tiles + b_tiles, parts, p);
            let (lo, hi) = (range.start, range.end);
            // SAFETY: this part writes tiles `lo..hi` alone.
            let mine = unsafe { tiles.range(lo, hi) };
            for (t, tile) in (lo..hi).zip(mine) {
                // SAFETY: the CPU has AVX-512 BF16 (bf16_products checked it); a tile's
                // elements lie inside `a` or `b` (`Source` stops at the operand's edges).
                unsafe {
                    if t < a_tiles {
                        let (off, at) = a_at(t);
                        if at.outer == 0 {
                            *tile = Tile::ZERO;
                        } else {
                            super::bf16_pack::pack_a(a.as_ptr().add(off), at, tile);
                        }
                    } else {
                        let (off, at) = b_at(t - a_tiles);
                        if at.outer == 0 {
                            *tile = Tile::ZERO;
                        } else {
                            super::bf16_pack::pack_b(b.as_ptr().add(off), at, tile);
                        }
                    }
                }
            }
        };
        team::for_each(parts, pack);
        // The blocks of 32×32 outputs, shared out by rows or by columns of blocks, whichever
        // has more.
        let (mb, nb) = (mt / 2, nt / 2);
        let cp = SyncPtr::new(&mut c[..m * n]);
        let run = |p: usize| {
            let (rows, cols) = if mb >= nb { (even(mb, parts, p), 0..nb) } else { (0..mb, even(nb, parts, p)) };
            let (base, _) = tiles.raw();
            let (c, _) = cp.raw();
            // SAFETY: the tiles were all written by the packing above (its loop has returned);
            // this part writes only its own blocks of C; the CPU has AMX (checked by handles).
            unsafe {
                let packed = std::slice::from_raw_parts(base, a_tiles + b_tiles);
                blocks(g, &packed[..a_tiles], &packed[a_tiles..], kt, rows, cols, c);
            }
        };
        team::for_each(parts, run);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, a, b, c, parallel);
        unreachable!("bfloat16 products are only available on x86-64");
    }
}

/// Part `p` of `parts` of `0..len`, the parts as even as whole items allow.
fn even(len: usize, parts: usize, p: usize) -> std::ops::Range<usize> {
    p * len / parts..(p + 1) * len / parts
}

/// The tile configuration: palette 1, eight tiles of 16 rows of 64 bytes.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct Config([u8; 64]);

/// Computes the blocks `rows × cols` (in blocks of 32×32) of `C`.
///
/// # Safety
/// The CPU has AMX-BF16 and this process may use it; `a` holds `mt × kt` tiles and `b`
/// `nt × kt` for the padded sizes of `g`; `c` points to `C` (`m × n`), whose blocks named are
/// written by no other thread meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn blocks(
    g: &Gemm,
    a: &[Tile],
    b: &[Tile],
    kt: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    c: *mut f32,
) {
    // SAFETY: the function's contract; each block below says what it touches.
    unsafe {
        use std::arch::asm;
        use std::arch::x86_64::*;
        let (m, n) = (g.m, g.n);
        let mut config = Config([0; 64]);
        config.0[0] = 1;
        for t in 0..8 {
            config.0[16 + 2 * t] = 64;
            config.0[48 + t] = 16;
        }
        // SAFETY: loads a valid configuration (palette 1, 8 tiles within its limits).
        asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
        let mut sums = [Tile::ZERO; 4];
        for j in cols {
            for i in rows.clone() {
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                let a0 = a.as_ptr().add(2 * i * kt);
                let a1 = a0.add(kt);
                let b0 = b.as_ptr().add(2 * j * kt);
                let b1 = b0.add(kt);
                for s in 0..kt {
                    // SAFETY: tiles s of rows 2i, 2i + 1 of A and columns 2j, 2j + 1 of B: inside
                    // the packed operands; each tile is 16 rows of 64 bytes.
                    asm!(
                        "tileloadd tmm4, [{a0} + {stride}]",
                        "tileloadd tmm6, [{b0} + {stride}]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {stride}]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {stride}]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.add(s),
                        a1 = in(reg) a1.add(s),
                        b0 = in(reg) b0.add(s),
                        b1 = in(reg) b1.add(s),
                        stride = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                }
                let (r0, c0) = (32 * i, 32 * j);
                let (nr, nc) = ((m - r0.min(m)).min(32), (n - c0.min(n)).min(32));
                if nr == 0 || nc == 0 {
                    continue;
                }
                if nr == 32 && nc == 32 && g.alpha == 1.0 && g.beta == 0.0 {
                    // Whole block, plain product: the sums go straight into C.
                    let out = c.add(r0 * n + c0);
                    let ldc = 4 * n;
                    // SAFETY: the block's 32 rows of 32 values lie inside C.
                    asm!(
                        "tilestored [{c00} + {ldc}], tmm0",
                        "tilestored [{c01} + {ldc}], tmm1",
                        "tilestored [{c10} + {ldc}], tmm2",
                        "tilestored [{c11} + {ldc}], tmm3",
                        c00 = in(reg) out,
                        c01 = in(reg) out.add(16),
                        c10 = in(reg) out.add(16 * n),
                        c11 = in(reg) out.add(16 * n + 16),
                        ldc = in(reg) ldc,
                        options(nostack),
                    );
                    continue;
                }
                // SAFETY: four tiles of 16 rows of 64 bytes, ours.
                asm!(
                    "tilestored [{s0} + {stride}], tmm0",
                    "tilestored [{s1} + {stride}], tmm1",
                    "tilestored [{s2} + {stride}], tmm2",
                    "tilestored [{s3} + {stride}], tmm3",
                    s0 = in(reg) sums[0].0.as_mut_ptr(),
                    s1 = in(reg) sums[1].0.as_mut_ptr(),
                    s2 = in(reg) sums[2].0.as_mut_ptr(),
                    s3 = in(reg) sums[3].0.as_mut_ptr(),
                    stride = in(reg) 64usize,
                    options(nostack),
                );
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
        asm!("tilerelease", options(nostack, nomem));
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
