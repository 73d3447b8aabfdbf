//! The CPU device called where a careless caller might: products from inside a rayon pool of
//! another size than the global one (the device's loops must split the same way on every
//! thread) or on one thread (`on_one_thread`: the same bits as on all), and products and
//! convolutions with sizes whose products overflow `usize` (refused with a message, not run
//! past the buffers: in release builds those sizes used to wrap and the kernels' stores to
//! land far outside).
#![allow(clippy::unwrap_used)]

use nn_core::cpu::{
    bf16_products_available, gemm_slices, on_one_thread, set_matmul_precision, Cpu, HostBuf, MatmulPrecision,
};
use nn_core::device::{Device, Gemm, PixelMajor, Window};
use nn_core::Activation;

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
    assert_eq!(refusal(outcome).as_deref(), Some("gemm operand too small"));
}

/// The message a call panicked with (`None` if it returned).
fn refusal(outcome: std::thread::Result<()>) -> Option<String> {
    let payload = outcome.err()?;
    payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned())
}

fn zeros(len: usize) -> HostBuf {
    HostBuf::zeros(len).unwrap()
}

#[test]
fn convolutions_whose_sizes_wrap_are_refused() {
    // The fused single-channel pass with pixel-major output: `filters·n·4` wraps to 24, and its
    // rows were stored `filters` floats apart.
    let filters = (1u128 << 64).div_ceil(3) as usize;
    let n = 9;
    let conv = Window { n, c: 1, h: 6, w: 6, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, oh: 4, ow: 4 };
    let pool = Window { n, c: filters, h: 4, w: 4, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0, oh: 2, ow: 2 };
    let (x, w) = (zeros(n * 36), zeros(16 * 9));
    let pm = PixelMajor { input: false, output: true };
    let outcome = std::panic::catch_unwind(|| {
        let (mut y, mut arg) = (zeros(24), zeros(24));
        let _ = Cpu.conv_pool(&x, &w, None, Activation::Relu, &conv, filters, &pool, pm, &mut y, &mut arg);
    });
    let message = refusal(outcome).expect("conv_pool refuses sizes that overflow");
    assert!(message.contains("conv_pool") && message.contains("overflow"), "{message}");

    // The implicit-GEMM convolution: `62·n` wraps to 30, and lane 1 was stored `n` floats on.
    let n = (1u128 << 64).div_ceil(31) as usize;
    let win = Window { n, c: 1, h: 1, w: 1, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0, oh: 1, ow: 1 };
    let (x, w) = (zeros(64), zeros(64));
    let outcome = std::panic::catch_unwind(|| {
        let mut y = zeros(30);
        let _ = Cpu.conv2d(&x, &w, None, Activation::Relu, &win, 62, &mut y);
    });
    let message = refusal(outcome).expect("conv2d refuses sizes that overflow");
    assert!(message.contains("conv2d") && message.contains("overflow"), "{message}");
    let outcome = std::panic::catch_unwind(|| {
        let (mut dw, mut dx) = (zeros(64), zeros(64));
        let _ = Cpu.conv2d_backward(&x, &w, &w, &win, 62, Some(&mut dw), Some(&mut dx));
    });
    assert!(refusal(outcome).is_some_and(|m| m.contains("overflow")));

    // A filter count no buffer backs is refused before anything is allocated for it.
    let win = Window { n: 1, c: 1, h: 1, w: 1, kh: 1, kw: 1, sh: 1, sw: 1, ph: 0, pw: 0, oh: 1, ow: 1 };
    let outcome = std::panic::catch_unwind(|| {
        let (x, w, mut y) = (zeros(1), zeros(1), zeros(1));
        let _ = Cpu.conv2d(&x, &w, None, Activation::Relu, &win, 1 << 41, &mut y);
    });
    let message = refusal(outcome).expect("conv2d refuses a kernel its buffer cannot hold");
    assert!(message.starts_with("conv2d w: 1 values where"), "{message}");
}

#[test]
fn a_conv_and_pooling_pair_no_pass_fuses_is_an_error_not_wrong_numbers() {
    // An overlapping 3×3 pooling with stride 1: no fused pass takes it.
    let conv = Window { n: 2, c: 1, h: 8, w: 8, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, oh: 6, ow: 6 };
    let pool = Window { n: 2, c: 4, h: 6, w: 6, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, oh: 4, ow: 4 };
    assert!(!Cpu.fuses_conv_pool(&conv, &pool));
    let (x, w) = (zeros(2 * 64), zeros(4 * 9));
    let (mut y, mut arg) = (zeros(4 * 2 * 16), zeros(4 * 2 * 16));
    let pm = PixelMajor { input: false, output: false };
    let e = Cpu.conv_pool(&x, &w, None, Activation::Relu, &conv, 4, &pool, pm, &mut y, &mut arg).unwrap_err();
    assert!(e.to_string().contains("ask Device::fuses_conv_pool first"), "{e}");
    let (mut dw, mut dx) = (zeros(4 * 9), zeros(2 * 64));
    let e = Cpu
        .conv_pool_backward(&x, &y, &y, &arg, Activation::Relu, &conv, 4, &pool, pm, &w, &mut dw, None, Some(&mut dx))
        .unwrap_err();
    assert!(e.to_string().contains("ask Device::fuses_conv_pool first"), "{e}");
}
