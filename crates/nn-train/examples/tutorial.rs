//! TensorFlow's "beginner quickstart" for MNIST, step by step with the library: load and
//! explore the data, build and summarise a model, train it with validation, evaluate it, predict
//! a few digits, plot its history, save it and use it again.
//!
//! ```text
//! cargo run --release -p nn-train --example tutorial -- [data/mnist] [epochs] [out-folder]
//! ```
//!
//! Defaults: `data/mnist` (the four files as published, `.gz` or not: `mnist fetch` downloads
//! them), 5 epochs (~97.7% on the test set, as Keras), pictures and the model in
//! `target/tutorial/`.
use std::path::PathBuf;
use std::sync::Arc;

use nn_train::mnist_data::{DatasetKind, Mnist, Summary};
use nn_train::nn_core::{Activation, Dense, Dropout, Flatten, Loss, Model, ModelSpec};
use nn_train::{Compile, FitConfig, Optimizer, Trainer, Validation};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "data/mnist".into());
    let epochs: usize = match args.next() {
        Some(e) => e.parse().map_err(|_| format!("epochs: '{e}' is not a whole number"))?,
        None => 5,
    };
    let out = PathBuf::from(args.next().unwrap_or_else(|| "target/tutorial".into()));

    // 1. Load: Keras's `mnist.load_data()`. The pixels stay bytes; batches become f32 in [0, 1].
    let mnist = Mnist::load(&dir)
        .map_err(|e| format!("{e}\n(download the files with `cargo run --release -p mnist -- fetch`)"))?;
    println!("training set\n{}", Summary::of(&mnist.train));
    println!("test set: {:?}", mnist.test);

    // 2. Build: Flatten, Dense(128, relu), Dropout(0.2), Dense(10) giving logits.
    let spec = ModelSpec::new(&[28, 28])
        .add(Flatten::new())
        .add(Dense::new(128).activation(Activation::Relu))
        .add(Dropout::new(0.2))
        .add(Dense::new(10));
    let model = Model::new(&spec, 42)?;
    println!("{}", model.summary());

    // 3. Compile: Adam (Keras's defaults) and sparse categorical cross-entropy on the logits.
    let compile = Compile {
        optimizer: Optimizer::adam(),
        loss: Loss::SparseCategoricalCrossentropy { from_logits: true },
        ..Default::default()
    };
    let mut trainer = Trainer::new(model, compile);

    // 4. Fit, keeping the last 10% of the training images to validate on after each epoch.
    let history = trainer
        .fit(Arc::new(mnist.train), FitConfig { epochs, validation: Validation::Split(0.1), ..Default::default() })?;
    print!("\nhistory:\n{}", history.to_csv());

    // 5. Evaluate on the 10,000 test images, which training never saw.
    let test = Arc::new(mnist.test);
    let e = trainer.evaluate(&test)?;
    println!("\ntest loss {:.4}, test accuracy {:.2}%", e.loss, 100.0 * e.accuracy);

    // 6. Predict: class probabilities (the softmax of the logits) of the first five images.
    let names = DatasetKind::Mnist.class_names();
    let first = &test.images()[..5 * 784];
    let probabilities = trainer.predict_images(first)?;
    let mut tiles = Vec::new();
    for (i, row) in probabilities.rows().into_iter().enumerate() {
        let best = (0..row.len()).fold(0, |b, k| if row[k] > row[b] { k } else { b });
        let truth = names[test.labels()[i] as usize];
        println!("predicted {} ({:.1}%), labelled {truth}", names[best], 100.0 * row[best]);
        tiles.push(nn_viz::Tile::prediction(test.image(i), names[best], truth));
    }

    // 7. Visualise: the learning curves, and the five digits with what the model said.
    let curves = nn_viz::HistoryCurves {
        title: "784-128-10 with dropout".into(),
        loss: history.series("loss"),
        val_loss: history.series("val_loss"),
        accuracy: history.series("accuracy"),
        val_accuracy: history.series("val_accuracy"),
    };
    nn_viz::plot_history(out.join("history.png"), &curves)?;
    nn_viz::digit_grid(out.join("predictions.png"), &tiles, &nn_viz::GridOptions::default())?;

    // 8. Save and reuse: one safetensors file (weights, architecture, loss, normalisation), read
    //    back by another program; its predictions are the same numbers.
    let path = out.join("model.safetensors");
    trainer.save_model(&path)?;
    let mut again = Trainer::resume(&path)?;
    assert_eq!(again.predict_images(first)?, probabilities, "the reloaded model predicts differently");
    println!("\nsaved {}, reloaded: the same predictions", path.display());
    println!("pictures: {}, {}", out.join("history.png").display(), out.join("predictions.png").display());
    Ok(())
}
