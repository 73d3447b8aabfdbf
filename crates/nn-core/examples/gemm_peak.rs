//! The machine's f32 GEMM speed, as issue 3's speed table was calibrated: `matrixmultiply`'s
//! `sgemm` on two threads, each computing half of `C`'s rows (much as matrixmultiply's own
//! `threading` feature splits it; that feature's own pool measured 4–12% lower here on 1024³), on a
//! large square product and on the shape of a dense layer's forward product at batch 128.
//! Prints `RESULT {json}` with the median GFLOP/s of each.
//!
//! `cargo run --release -p nn-core --example gemm_peak [-- --threads N]`. The issue quotes
//! about 400 GFLOP/s for the first and 320 for the second on the machine its goals were set
//! on: the ratio of these figures to those says how fast the machine is now (`cargo xtask
//! bench` prints it beside its table). This bypasses the project's own kernels on purpose.
use std::time::Instant;

/// One band of `C`'s rows: `C[rows] = A[rows] · B` through single-threaded `sgemm`.
fn band(a: &[f32], b: &[f32], c: &mut [f32], (k, n): (usize, usize)) {
    let r = c.len() / n;
    assert!(a.len() == r * k && b.len() == k * n, "operands of the wrong size");
    // SAFETY: `a` is r×k, `b` k×n, `c` r×n, all row-major and exactly their slices (checked).
    unsafe {
        matrixmultiply::sgemm(
            r,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Median GFLOP/s of `reps` products `C [m, n] = A [m, k] · B [k, n]` after a warm-up, each
/// split into `threads` bands of rows on threads started once (like matrixmultiply's own
/// pool) and kept in step by a barrier before and after every product.
fn rate((m, k, n): (usize, usize, usize), reps: usize, threads: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.01).collect();
    let mut c = vec![0f32; m * n];
    let rows = m.div_ceil(threads);
    let warm = reps.div_ceil(4);
    let barrier = std::sync::Barrier::new(c.chunks(rows * n).count());
    let mut times = Vec::with_capacity(reps);
    std::thread::scope(|s| {
        let mut bands = c.chunks_mut(rows * n).enumerate();
        let (_, mine) = bands.next().expect("at least one band");
        for (i, theirs) in bands {
            let (a, b, barrier) = (&a[i * rows * k..i * rows * k + theirs.len() / n * k], &b, &barrier);
            s.spawn(move || {
                for _ in 0..warm + reps {
                    barrier.wait();
                    band(a, b, theirs, (k, n));
                    barrier.wait();
                }
            });
        }
        let a = &a[..mine.len() / n * k];
        for i in 0..warm + reps {
            barrier.wait();
            let t = Instant::now();
            band(a, &b, mine, (k, n));
            barrier.wait();
            if i >= warm {
                times.push(t.elapsed().as_secs_f64());
            }
        }
    });
    std::hint::black_box(&c);
    times.sort_by(f64::total_cmp);
    2.0 * (m * k * n) as f64 / times[reps / 2] / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|t| t.parse().ok())
        .unwrap_or(2usize)
        .max(1);
    let square = rate((1024, 1024, 1024), 40, threads);
    let layer = rate((128, 784, 128), 2000, threads);
    println!(
        "RESULT {{\"impl\": \"matrixmultiply\", \"threads\": {threads}, \"gemm_1024_gflops\": {square:.1}, \"gemm_128x784x128_gflops\": {layer:.1}}}"
    );
}
