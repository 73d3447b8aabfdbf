//! The CPU device's products called where a careless caller might: from inside a rayon pool of
//! another size than the global one (the device's loops must split the same way on every
//! thread), on one thread (`on_one_thread`: the same bits as on all), and with sizes whose
//! products overflow `usize` (refused, not run past the operands).
#![allow(clippy::unwrap_used)]

use nn_core::cpu::{bf16_products_available, gemm_slices, on_one_thread, set_matmul_precision, MatmulPrecision};
use nn_core::device::Gemm;

/// `gemm_slices` of `g` on fixed operands (pixels scaled by 1/255 in `A` when `g` says so).
fn product(g: &Gemm) -> Vec<f32> {
    let a: Vec<f32> = match g.a_levels {
        Some(_) => (0..g.m * g.k).map(|i| (i * 7 % 256) as f32 / 255.0).collect(),
        None => (0..g.m * g.k).map(|i| (i % 17) as f32 * 0.01 - 0.05).collect(),
    };
    let b: Vec<f32> = (0..g.k * g.n).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
    let mut c = vec![0f32; g.m * g.n];
    gemm_slices(g, &a, &b, &mut c);
    c
}

#[test]
fn products_inside_a_pool_of_another_size_or_on_one_thread_are_the_same_bits() {
    // A forward product split along `k` (the kernel's shares of rows, and partial sums), a
    // weight gradient split by rows and an input gradient split by columns.
    let shapes = [
        Gemm::new(false, false, 64, 100, 784),
        Gemm::new(false, false, 128, 128, 784).a_levels(Some(255.0)),
        Gemm::new(true, false, 784, 100, 64),
        Gemm::new(false, true, 64, 512, 512),
    ];
    let mut precisions = vec![MatmulPrecision::Highest];
    if bf16_products_available() {
        precisions.extend([MatmulPrecision::High, MatmulPrecision::Medium]);
    }
    for precision in precisions {
        set_matmul_precision(precision);
        for g in &shapes {
            let outside = product(g);
            let alone = on_one_thread(|| product(g));
            assert!(alone == outside, "{precision:?} {}×{}×{} on one thread: not the team's product", g.m, g.n, g.k);
            for threads in [1, 3, 4] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                for run in 0..4 {
                    let inside = pool.install(|| product(g));
                    assert!(
                        inside == outside,
                        "{precision:?} {}×{}×{} in a pool of {threads} (run {run}): not the product made outside",
                        g.m,
                        g.n,
                        g.k
                    );
                }
            }
        }
    }
    set_matmul_precision(MatmulPrecision::Highest);
}

#[test]
fn sizes_that_overflow_are_refused_before_anything_runs() {
    // m·n and k·n wrap to small numbers modulo 2⁶⁴ (2 and 32 768): unchecked, the size check
    // passed and the product read and wrote far past the operands.
    let (m, k) = (3usize, 3 << 14);
    let n = (1u128 << 64).div_ceil(3) as usize;
    let (a, b) = (vec![1f32; m * k], vec![1f32; 32_768]);
    let outcome = std::panic::catch_unwind(|| {
        let mut c = vec![0f32; 2];
        gemm_slices(&Gemm::new(false, false, m, n, k), &a, &b, &mut c);
    });
    let message = outcome.expect_err("an overflowing size must be refused");
    let text =
        message.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| message.downcast_ref::<String>().cloned());
    assert_eq!(text.as_deref(), Some("gemm operand too small"));
}
