//! A training step (inputs given as a slice, or gathered in place and ahead) allocates nothing
//! once the network has seen a batch of its size: buffers and per-thread scratch are reused
//! (the README's claim, counted with a global allocator).
//! Products that go to matrixmultiply (wider ones, and all of them without AVX-512) allocate
//! its packing buffer on every call, so this checks the models whose products all run in the
//! CPU device's own tile, on CPUs that have AVX-512, and, where the CPU has AMX, models whose
//! products all run in bfloat16 on its tiles.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use mnist_data::Rng;
use nn_core::cpu::Cpu;
use nn_core::{preset, FilledBatch, Loss, Network, Runtime, StepParams, UpdateRule};

/// The system allocator, counting allocations (from every thread).
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn training_steps_allocate_nothing_after_the_first() {
    #[cfg(target_arch = "x86_64")]
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("skipped: without AVX-512 the products go to matrixmultiply, which allocates");
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    return;
    use nn_core::cpu::MatmulPrecision::{High, Highest, Medium};
    let mut models = vec![("mlp-128", Highest), ("convnet", Highest), ("fast-cnn", Highest)];
    // With bfloat16 products every product of these goes to the AMX tiles, which pack into
    // per-thread buffers grown once (the switch is process-wide: this is the file's one test).
    if nn_core::cpu::bf16_products_available() {
        models.extend([("mlp-128", Medium), ("mlp-512-512", Medium), ("mlp-128", High), ("mlp-512-512", High)]);
    }
    for (name, precision) in models {
        nn_core::cpu::set_matmul_precision(precision);
        let spec = preset(name).unwrap();
        let mut net = Network::new(Cpu, &spec, 7).unwrap();
        let n = 64;
        let mut rng = Rng::new(1);
        let x: Vec<f32> = (0..n * 784).map(|_| rng.uniform(0.0, 1.0)).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 10) as f32).collect();
        let mut out = vec![0f32; n * 10];
        let loss = Loss::SparseCategoricalCrossentropy { from_logits: name == "mlp-128" };
        let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
        let fill = |r: std::ops::Range<usize>, dst: &mut [f32]| dst.copy_from_slice(&x[r.start * 784..r.end * 784]);
        let mut step = |t: u64, net: &mut Network<Cpu>| {
            let sp = StepParams { lr: 1e-3, t };
            net.train_batch(&x, &y, n, loss, &rule, sp, t).unwrap();
            // Batches gathered in place, the next one announced (gathered ahead by mlp-128).
            let batch = FilledBatch { n, fill: &fill, key: 2 * t };
            let next = FilledBatch { n, fill: &fill, key: 2 * t + 1 };
            net.train_filled(batch, Some(next), &y, loss, &rule, sp, t).unwrap();
            net.train_filled(next, None, &y, loss, &rule, sp, t).unwrap();
            net.predict_batch(&x, n, &mut out).unwrap();
        };
        // Warm-up: the CPU team starts and the scratch lists grow; every thread of the team
        // grows its own to the longest any thread has needed as soon as one of them grows
        // (which thread takes which part varies from step to step: a test failing here one
        // run in thirty showed a helper taking its first part of a product in step 7).
        for t in 1..=6 {
            step(t, &mut net);
        }
        let before = ALLOCATIONS.load(Relaxed);
        for t in 7..=9 {
            step(t, &mut net);
        }
        let during = ALLOCATIONS.load(Relaxed) - before;
        assert_eq!(during, 0, "{name} ({precision:?}): {during} allocations in three training steps and predictions");
    }
}
