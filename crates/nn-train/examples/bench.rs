//! Speed benchmark of one model, printing `RESULT {json}` like `../shared/bench/bench_torch.py`.
//! `bench M1|M2|M3|M4|PRESET [--epochs E] [--real DIR] [--bf16|--bf16x3] [--no-level-products]
//! [--device cpu|cuda]`:
//! trains on synthetic data of MNIST's shape (or the real files), then predicts 10 000 images;
//! `--bf16` runs the CPU's products in bfloat16 where it has AMX, `--bf16x3` in split bfloat16
//! (`nn_core::cpu::set_matmul_precision`); `--no-level-products` turns off the exact AMX
//! products of the first layer's pixels (`nn_core::cpu::use_level_products`);
//! `--device cuda` trains on the GPU (a build with `--features cuda`). Used by `cargo xtask bench`.
use std::sync::Arc;
use std::time::Instant;

use mnist_data::{Dataset, Rng};
use nn_core::cpu::MatmulPrecision;
use nn_train::recipes::recipe;
use nn_train::{predict_dataset, FitConfig, Trainer, Verbosity};

fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut r = Rng::new(seed);
    let images = (0..n * 784).map(|_| r.below(256) as u8).collect();
    let labels = (0..n).map(|_| r.below(10) as u8).collect();
    Dataset::new(images, labels, 28, 28, 10).unwrap_or_else(|e| panic!("{e}"))
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t_start = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map(String::as_str).unwrap_or("M1");
    let name = match model {
        "M1" => "mlp-128",
        "M2" => "mlp-sigmoid-100-144",
        "M3" => "mlp-512-512",
        "M4" => "convnet",
        other => other,
    };
    let flag = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let epochs: usize = flag("--epochs").and_then(|e| e.parse().ok()).unwrap_or(3);
    let r = recipe(name).ok_or("unknown model")?;
    for (f, precision) in [("--bf16", MatmulPrecision::Medium), ("--bf16x3", MatmulPrecision::High)] {
        if args.iter().any(|a| a == f) {
            if !nn_core::cpu::bf16_products_available() {
                return Err(format!("{f}: this CPU (or OS) has no AMX bfloat16 products").into());
            }
            nn_core::cpu::set_matmul_precision(precision);
        }
    }
    if args.iter().any(|a| a == "--no-level-products") {
        nn_core::cpu::use_level_products(false);
    }
    let (train, test) = match flag("--real") {
        Some(dir) => {
            let d = mnist_data::Mnist::load(dir)?;
            (d.train, d.test)
        }
        None => (synthetic(60_000, 1), synthetic(10_000, 2)),
    };
    let test = Arc::new(test);
    let device: nn_train::DeviceChoice = flag("--device").as_deref().unwrap_or("cpu").parse()?;
    let (built, _) = nn_train::build_model(device, &r.spec, 0)?;
    let mut t = Trainer::new(built, r.compile);
    let ready = t_start.elapsed().as_secs_f64();
    t.fit(
        Arc::new(train),
        FitConfig { epochs, batch_size: r.batch_size, verbosity: Verbosity::Silent, ..Default::default() },
    )?;
    let mut secs: Vec<f64> = t.history().epochs.iter().map(|e| e.seconds).collect();
    let first = secs.remove(0);
    secs.sort_by(f64::total_cmp);
    let median = if secs.is_empty() { first } else { secs[secs.len() / 2] };
    // Predict the 10k test images: best of 5.
    let mut pred = f64::INFINITY;
    for _ in 0..5 {
        let p0 = Instant::now();
        let p = predict_dataset(t.model_mut(), &test, mnist_data::Normalization::Scale)?;
        pred = pred.min(p0.elapsed().as_secs_f64());
        std::hint::black_box(p);
    }
    let acc = t.evaluate(&test)?.accuracy;
    println!(
        "RESULT {{\"impl\": \"ours\", \"model\": \"{model}\", \"epochs\": {epochs}, \"s_per_epoch_median\": {median:.4}, \"first_epoch_s\": {first:.4}, \"samples_per_s\": {:.0}, \"predict10k_s\": {pred:.5}, \"ru_maxrss_mib\": {:.1}, \"startup_s\": {ready:.4}, \"test_acc\": {acc:.4}, \"device\": \"{}\"}}",
        60_000.0 / median,
        peak_rss_mib(),
        t.model().device()
    );
    Ok(())
}
