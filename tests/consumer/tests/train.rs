//! The README's "As a library" example, outside the workspace: a Sequential model built from
//! `ModelSpec`, compiled, fitted with validation, evaluated, saved, loaded back and used for
//! predictions — on a small synthetic data set, so the test needs no downloads.

use std::sync::Arc;

use mnist_data::Dataset;
use nn_core::{Activation::*, Dense, Flatten, Loss, Model, ModelSpec};
use nn_train::{Callback, Compile, EarlyStopping, FitConfig, Optimizer, ReduceLROnPlateau, Trainer, Validation};

/// `n` 28×28 images of three classes a small network tells apart: a bright top half, a bright
/// bottom half, or a bright left half, with noise.
fn three_bars(n: usize, seed: u64) -> Dataset {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 64) as u8
    };
    let (mut images, mut labels) = (Vec::with_capacity(n * 784), Vec::with_capacity(n));
    for i in 0..n {
        let class = (i % 3) as u8;
        for p in 0..784 {
            let (y, x) = (p / 28, p % 28);
            let lit = match class {
                0 => y < 14,
                1 => y >= 14,
                _ => x < 14,
            };
            images.push(if lit { 191 + noise() } else { noise() });
        }
        labels.push(class);
    }
    Dataset::new(images, labels, 28, 28, 3).expect("a well-formed data set")
}

#[test]
fn a_model_trains_evaluates_saves_and_reloads() {
    let (train, test) = (Arc::new(three_bars(600, 1)), Arc::new(three_bars(150, 2)));
    let spec = ModelSpec::new(&[28, 28]).add(Flatten::new()).add(Dense::new(16).activation(Relu)).add(Dense::new(3));
    let model = Model::new(&spec, 42).expect("the model builds");
    let compile = Compile {
        optimizer: Optimizer::adam(),
        loss: Loss::SparseCategoricalCrossentropy { from_logits: true },
        ..Default::default()
    };
    let mut t = Trainer::new(model, compile);
    let cfg = FitConfig { epochs: 3, batch_size: 32, validation: Validation::Data(test.clone()), ..Default::default() };
    let history = t.fit(train.clone(), cfg).expect("training runs");
    assert_eq!(history.epochs.len(), 3);
    let last = history.epochs.last().expect("three epochs");
    assert!(last.val_accuracy.is_some_and(|a| a > 0.95), "{last:?}");
    let eval = t.evaluate(&test).expect("evaluation runs");
    assert!(eval.accuracy > 0.95 && eval.loss < 0.5, "{eval:?}");

    let path = std::env::temp_dir().join(format!("consumer-model-{}.safetensors", std::process::id()));
    t.save_model(&path).expect("the model saves");
    let (mut reloaded, _) = Model::load(&path).expect("the model loads");
    // The way back to a trainer: the model with its loss and input normalisation.
    let mut again = nn_train::Trainer::resume(&path).expect("the model file resumes");
    let _ = std::fs::remove_file(&path);
    assert_eq!(again.evaluate(&test).expect("evaluation runs"), eval);
    let one = again.predict_images(&test.images()[..test.pixels()]).expect("one image predicts");
    assert_eq!(one.shape(), [1, 3]);
    let before = t.predict(&test).expect("predictions");
    let after = nn_train::predict_dataset(&mut reloaded, &test, mnist_data::Normalization::Scale).expect("predictions");
    assert_eq!(before.shape(), [150, 3]);
    assert!(before.iter().zip(after.iter()).all(|(a, b)| a.to_bits() == b.to_bits()), "reloaded predictions differ");
}

#[test]
fn callbacks_continue_a_fit_as_the_readme_shows() {
    let (train, test) = (Arc::new(three_bars(300, 3)), Arc::new(three_bars(90, 4)));
    let spec = ModelSpec::new(&[28, 28]).add(Flatten::new()).add(Dense::new(8).activation(Relu)).add(Dense::new(3));
    let compile = Compile { loss: Loss::SparseCategoricalCrossentropy { from_logits: true }, ..Default::default() };
    let mut t = Trainer::new(Model::new(&spec, 7).expect("the model builds"), compile);
    let fit = |epochs: usize, callbacks: Vec<Box<dyn Callback>>| FitConfig {
        epochs,
        batch_size: 32,
        validation: Validation::Data(test.clone()),
        callbacks,
        ..Default::default()
    };
    t.fit(train.clone(), fit(2, Vec::new())).expect("training runs");
    // Nothing can beat epoch 3 by 1e9: the rate halves after each later epoch, and early
    // stopping ends the run after two of them with epoch 3's weights.
    let callbacks: Vec<Box<dyn Callback>> = vec![
        Box::new(EarlyStopping::new("val_loss").patience(2).min_delta(1e9).restore_best_weights(true)),
        Box::new(ReduceLROnPlateau::new("val_loss").factor(0.5).patience(1).min_delta(1e9)),
    ];
    let history = t.fit(train, fit(20, callbacks)).expect("training runs");
    assert_eq!(history.epochs.len(), 5, "{history:?}");
    assert!(history.stopped.as_deref().is_some_and(|why| why.contains("early stopping")), "{history:?}");
    assert!((t.learning_rate() - 1e-3 / 4.0).abs() < 1e-9, "{}", t.learning_rate());
}
