//! Times [`Augmentation`] on MNIST-sized batches: 128 images of 28×28, rotation 10°, shift 0.1,
//! zoom 0.1, on one thread. Run with `cargo run --release -p mnist-data --example bench_augment`.

use std::hint::black_box;
use std::time::Instant;

use mnist_data::{Augmentation, BatchTransform, Rng};

fn main() {
    const N: usize = 128;
    const SIDE: usize = 28;
    let px = SIDE * SIDE;
    // Digit-like content: a ring of ink around the centre with some noise.
    let mut rng = Rng::new(1);
    let images: Vec<f32> = (0..N * px)
        .map(|i| {
            let (r, c) = ((i % px) / SIDE, i % SIDE);
            let d = ((r as f32 - 13.5).powi(2) + (c as f32 - 13.5).powi(2)).sqrt();
            if (5.0..9.0).contains(&d) {
                0.5 + 0.5 * rng.next_f32()
            } else {
                0.0
            }
        })
        .collect();
    let aug = Augmentation::new().rotation(10.0).shift(0.1, 0.1).zoom(0.1);
    let mut x = images.clone();
    let mut rng = Rng::new(42);
    // Warm up (the thread-local scratch buffer, caches).
    for _ in 0..50 {
        x.copy_from_slice(&images);
        aug.apply(&mut x, N, SIDE, SIDE, &mut rng);
    }
    let mut best = f64::INFINITY;
    let mut total = 0.0;
    let (rounds, iters) = (10, 200);
    for _ in 0..rounds {
        let mut t_round = 0.0;
        for _ in 0..iters {
            x.copy_from_slice(&images);
            let t = Instant::now();
            aug.apply(black_box(&mut x), N, SIDE, SIDE, &mut rng);
            t_round += t.elapsed().as_secs_f64();
        }
        best = best.min(t_round / iters as f64);
        total += t_round;
    }
    let mean = total / (rounds * iters) as f64;
    let per_px = mean / (N * px) as f64;
    println!(
        "augment {N}×{SIDE}×{SIDE} (rotation 10, shift 0.1, zoom 0.1): {:.1} µs/batch mean, {:.1} µs best round, {:.2} ns/pixel",
        mean * 1e6,
        best * 1e6,
        per_px * 1e9
    );
    black_box(&x);
}
