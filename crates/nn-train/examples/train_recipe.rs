//! Trains one of the tutorial recipes on MNIST and prints the test accuracy.
//! `cargo run --release -p nn-train --example train_recipe -- mlp-128 [epochs] [seed] [data/mnist] [batch] [augment] [bf16|bf16x3]`
//! (`augment`: rotation 10°, shifts 0.1, as in the Keras tutorial's ImageDataGenerator; `bf16`:
//! the products in bfloat16 where the CPU has AMX, `bf16x3` in split bfloat16:
//! `nn_core::cpu::set_matmul_precision`).
use std::sync::Arc;

use nn_core::cpu::MatmulPrecision;
use nn_core::Model;
use nn_train::recipes::recipe;
use nn_train::{FitConfig, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("mlp-128");
    let r = recipe(name).ok_or("unknown recipe")?;
    let epochs = args.get(2).and_then(|e| e.parse().ok()).filter(|&e: &usize| e > 0).unwrap_or(r.epochs);
    let seed = args.get(3).and_then(|e| e.parse().ok()).unwrap_or(1);
    let dir = args.get(4).cloned().unwrap_or_else(|| "data/mnist".into());
    let batch_size = args.get(5).and_then(|b| b.parse().ok()).unwrap_or(r.batch_size);
    let word = |w: &str| args.iter().skip(6).any(|a| a == w);
    let augmentation = word("augment").then(|| mnist_data::Augmentation::new().rotation(10.0).shift(0.1, 0.1));
    for (w, precision) in [("bf16", MatmulPrecision::Medium), ("bf16x3", MatmulPrecision::High)] {
        if word(w) {
            if !nn_core::cpu::bf16_products_available() {
                return Err(format!("{w}: this CPU (or OS) has no AMX bfloat16 products").into());
            }
            nn_core::cpu::set_matmul_precision(precision);
        }
    }
    let t0 = std::time::Instant::now();
    let data = mnist_data::Mnist::load(&dir)?;
    let test = Arc::new(data.test);
    let model = Model::new(&r.spec, seed)?;
    println!("{}", model.summary());
    let mut t = Trainer::new(model, r.compile);
    let validation = r.validation(&test);
    t.fit(
        Arc::new(data.train),
        FitConfig { epochs, batch_size, augmentation, validation, seed, ..Default::default() },
    )?;
    let e = t.evaluate(&test)?;
    let secs: Vec<f64> = t.history().epochs.iter().map(|e| e.seconds).collect();
    println!(
        "test loss {:.4} accuracy {:.4}; epoch seconds {secs:?}; total {:.1}s",
        e.loss,
        e.accuracy,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
