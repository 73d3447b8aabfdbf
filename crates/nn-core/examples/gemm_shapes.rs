//! GFLOP/s of the CPU device's GEMM on the shapes of the benchmark models, on one thread
//! (`nn_core::cpu::on_one_thread`) and on all of the device's threads:
//! `cargo run --release -p nn-core --example gemm_shapes`; with `-- --bf16`, beside them the
//! time on all threads in f32, in split bfloat16 (matmul precision "high") and in bfloat16
//! ("medium"), on AMX where the CPU has it.
use std::time::Instant;

use nn_core::cpu::{gemm_slices, on_compute_threads, set_matmul_precision, MatmulPrecision};
use nn_core::device::Gemm;

fn rate(g: &Gemm, reps: usize) -> f64 {
    // Pixels scaled by 1/255 where the product is told so (a first layer's).
    let a: Vec<f32> = match g.a_levels {
        Some(_) => (0..g.m * g.k).map(|i| (i * 7 % 256) as f32 / 255.0).collect(),
        None => (0..g.m * g.k).map(|i| (i % 17) as f32 * 0.01).collect(),
    };
    let b: Vec<f32> = (0..g.k * g.n).map(|i| (i % 13) as f32 * 0.01).collect();
    let mut c = vec![0f32; g.m * g.n];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            gemm_slices(g, &a, &b, &mut c);
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    std::hint::black_box(&c);
    2.0 * (g.m * g.n * g.k) as f64 / best / 1e9
}

fn main() {
    // (name, trans_a, trans_b, m, n, k)
    let shapes = [
        ("M1 fwd  X·W1", false, false, 128, 128, 784),
        ("M1 dW1  Xᵀ·dZ1", true, false, 784, 128, 128),
        ("M1 fwd  H·W2", false, false, 128, 10, 128),
        ("M1 dW2  Hᵀ·dZ", true, false, 128, 10, 128),
        ("M1 dH   dZ·W2ᵀ", false, true, 128, 128, 10),
        ("M3 fwd  X·W1", false, false, 128, 512, 784),
        ("M3 fwd  H·W2", false, false, 128, 512, 512),
        ("M3 fwd  H·W3", false, false, 128, 10, 512),
        ("M3 dW1  Xᵀ·dZ1", true, false, 784, 512, 128),
        ("M3 dH   dZ·W2ᵀ", false, true, 128, 512, 512),
        ("M3 dW2  Hᵀ·dZ", true, false, 512, 512, 128),
        ("M3 dW3  Hᵀ·dZ", true, false, 512, 10, 128),
        ("M3 dH3  dZ·W3ᵀ", false, true, 128, 512, 10),
        ("M2 fwd  X·W1", false, false, 32, 100, 784),
        ("M2 dW1  Xᵀ·dZ1", true, false, 784, 100, 32),
        ("M2 fwd  H·W2", false, false, 32, 144, 100),
        ("M2 fwd  H·W3", false, false, 32, 10, 144),
        ("M2 dW2  Hᵀ·dZ", true, false, 100, 144, 32),
        ("M2 dW3  Hᵀ·dZ", true, false, 144, 10, 32),
        ("M2 dH2  dZ·W2ᵀ", false, true, 32, 100, 144),
        ("M2 dH3  dZ·W3ᵀ", false, true, 32, 144, 10),
        ("M4 conv2 fwd", false, false, 64, 1936, 288),
        ("M4 fwd  X·W", false, false, 128, 10, 1600),
        ("M4 dW   Xᵀ·dZ", true, false, 1600, 10, 128),
        ("M4 dX   dZ·Wᵀ", false, true, 128, 1600, 10),
        ("square 1024", false, false, 1024, 1024, 1024),
    ];
    let bf16 = std::env::args().any(|a| a == "--bf16") && nn_core::cpu::bf16_products_available();
    on_compute_threads(|| {
        for (name, ta, tb, m, n, k) in shapes {
            let g = Gemm::new(ta, tb, m, n, k);
            let reps = (2e9 / (2 * m * n * k) as f64).ceil() as usize / 10 + 1;
            if bf16 {
                let us = |r: f64| 2.0 * (m * n * k) as f64 / r / 1e3;
                let f32_rate = rate(&g, reps);
                set_matmul_precision(MatmulPrecision::High);
                let high_rate = rate(&g, reps);
                set_matmul_precision(MatmulPrecision::Medium);
                let bf16_rate = rate(&g, reps);
                set_matmul_precision(MatmulPrecision::Highest);
                // A first layer's products of pixels: exact on AMX in f32 (`use_level_products`).
                let levels = if name.contains("X·W1") || name.contains("Xᵀ·dZ1") {
                    format!("  f32 pixels {:8.1} µs", us(rate(&g.a_levels(Some(255.0)), reps)))
                } else {
                    String::new()
                };
                println!(
                    "{name:16} {m:5}x{n:5}x{k:5}  f32 {:8.1} µs {f32_rate:6.1}  bf16x3 {:8.1} µs {high_rate:6.1}  \
                     bf16 {:8.1} µs {bf16_rate:6.1} GFLOP/s{levels}",
                    us(f32_rate),
                    us(high_rate),
                    us(bf16_rate)
                );
                continue;
            }
            let par = rate(&g, reps);
            let one = nn_core::cpu::on_one_thread(|| rate(&g, reps));
            println!("{name:16} {m:5}x{n:5}x{k:5}  1 thread {one:6.1}  all {par:6.1} GFLOP/s");
        }
    });
}
