//! Smoke test of the CUDA device: prints the GPU, then trains an MLP 784-128-10 (Adam, batch
//! 128) for one epoch of 60 000 random examples and prints the seconds per epoch, and how long
//! the epoch's batch uploads alone take.
//!
//! ```sh
//! cargo run --release -p nn-cuda --features cuda --example cuda_smoke
//! ```

use std::process::ExitCode;
use std::time::Instant;

use mnist_data::Rng;
use nn_core::{Activation, Dense, Device, Flatten, Loss, Model, ModelSpec, StepParams, UpdateRule};
use nn_cuda::Cuda;

const EXAMPLES: usize = 60_000;
const BATCH: usize = 128;

fn run() -> nn_core::Result<()> {
    let info = nn_cuda::device_info(0)?;
    println!("device: {info}");
    let spec = ModelSpec::new(&[28, 28])
        .add(Flatten::new())
        .add(Dense::new(128).activation(Activation::Relu))
        .add(Dense::new(10).activation(Activation::Softmax));
    let start = Instant::now();
    let mut model = Model::on(Cuda::new(0)?, &spec, 42)?;
    println!("opened {} in {:.2} s (NVRTC compiles the kernels)", model.device(), start.elapsed().as_secs_f64());

    let mut rng = Rng::new(7);
    let x: Vec<f32> = (0..EXAMPLES * 784).map(|_| rng.next_f32()).collect();
    let y: Vec<f32> = (0..EXAMPLES).map(|_| rng.below(10) as f32).collect();
    let loss = Loss::SparseCategoricalCrossentropy { from_logits: false };
    let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };

    let rt = model.runtime();
    // One warm-up batch (first launches, cuBLAS heuristics), not timed.
    rt.train_batch(&x[..BATCH * 784], &y[..BATCH], BATCH, loss, &rule, StepParams { lr: 1e-3, t: 1 }, 0)?;
    rt.take_stats()?;

    let start = Instant::now();
    let mut step = 1;
    for first in (0..EXAMPLES).step_by(BATCH) {
        let n = BATCH.min(EXAMPLES - first);
        step += 1;
        let sp = StepParams { lr: 1e-3, t: step };
        rt.train_batch(&x[first * 784..(first + n) * 784], &y[first..first + n], n, loss, &rule, sp, step)?;
    }
    // Reading the statistics waits for the GPU.
    let (sum, correct) = rt.take_stats()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "1 epoch of {EXAMPLES} random examples, batch {BATCH}: loss {:.4}, accuracy {:.4}",
        sum / EXAMPLES as f64,
        correct / EXAMPLES as f64
    );
    println!("{secs:.3} s per epoch ({:.0} examples/s)", EXAMPLES as f64 / secs);

    // The same epoch's uploads of inputs and labels alone, as a step makes them.
    let dev = Cuda::new(0)?;
    let (mut xb, mut yb) = (dev.alloc(BATCH * 784)?, dev.alloc(BATCH)?);
    dev.upload(&x[..BATCH * 784], &mut xb)?;
    dev.synchronize()?;
    let start = Instant::now();
    for first in (0..EXAMPLES).step_by(BATCH) {
        let n = BATCH.min(EXAMPLES - first);
        dev.upload(&x[first * 784..(first + n) * 784], &mut xb)?;
        dev.upload(&y[first..first + n], &mut yb)?;
    }
    dev.synchronize()?;
    let up = start.elapsed().as_secs_f64();
    let steps = EXAMPLES.div_ceil(BATCH);
    println!("its uploads alone: {up:.3} s ({:.1} µs a step)", up * 1e6 / steps as f64);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cuda_smoke: {e}");
            ExitCode::FAILURE
        }
    }
}
