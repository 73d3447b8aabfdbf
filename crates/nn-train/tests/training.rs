//! Behaviour of the training loop on a real subset of MNIST: determinism, exact resume from a
//! checkpoint, callbacks, model files.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use mnist_data::{Dataset, Normalization};
use nn_core::{preset, Activation, Dense, Dropout, Flatten, Loss, Model, ModelSpec};
use nn_train::{
    Callback, Compile, Control, EarlyStopping, EpochLog, FitConfig, Interrupt, ModelCheckpoint, Optimizer,
    ReduceLROnPlateau, Schedule, TerminateOnNaN, Trainer, Validation, Verbosity,
};

fn subset(n: usize) -> (Arc<Dataset>, Arc<Dataset>) {
    let d = mnist_data::Mnist::load(common::data_dir("mnist")).unwrap();
    (Arc::new(d.train.slice(0..n)), Arc::new(d.test.slice(0..1000)))
}

fn spec() -> ModelSpec {
    ModelSpec::new(&[28, 28])
        .add(Flatten::new())
        .add(Dense::new(64).activation(Activation::Relu))
        .add(Dropout::new(0.2))
        .add(Dense::new(10).activation(Activation::Softmax))
}

fn compile() -> Compile {
    Compile {
        optimizer: Optimizer::adam(),
        loss: Loss::CategoricalCrossentropy { from_logits: false },
        ..Default::default()
    }
}

fn cfg(epochs: usize, val: &Arc<Dataset>) -> FitConfig {
    FitConfig {
        epochs,
        batch_size: 64,
        seed: 7,
        validation: Validation::Data(val.clone()),
        verbosity: Verbosity::Silent,
        ..Default::default()
    }
}

#[test]
fn same_seed_same_history_and_weights() {
    let (train, val) = subset(4000);
    let mut a = Trainer::new(Model::new(&spec(), 3).unwrap(), compile());
    let mut b = Trainer::new(Model::new(&spec(), 3).unwrap(), compile());
    a.fit(train.clone(), cfg(2, &val)).unwrap();
    b.fit(train.clone(), cfg(2, &val)).unwrap();
    let strip = |t: &Trainer| {
        t.history().epochs.iter().map(|e| (e.loss, e.accuracy, e.val_loss, e.val_accuracy)).collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(a.model().weights().unwrap(), b.model().weights().unwrap());
    let mut c = Trainer::new(Model::new(&spec(), 4).unwrap(), compile());
    c.fit(train, cfg(2, &val)).unwrap();
    assert_ne!(a.model().weights().unwrap(), c.model().weights().unwrap());
}

#[test]
fn resume_from_a_checkpoint_ends_with_the_same_weights() {
    let (train, val) = subset(3000);
    let dir = tempfile::tempdir().unwrap();
    // In a folder the checkpoint makes (as Keras's ModelCheckpoint does).
    let ckpt = dir.path().join("new/ckpt.safetensors");
    // Uninterrupted: 3 epochs.
    let mut full = Trainer::new(Model::new(&spec(), 5).unwrap(), compile());
    full.fit(train.clone(), cfg(3, &val)).unwrap();
    // Interrupted after 2 epochs (checkpoint each epoch), then resumed to 3.
    let mut first = Trainer::new(Model::new(&spec(), 5).unwrap(), compile());
    first.set_annotation("dataset", "mnist");
    first.set_annotation("history", "not the trainer's own key");
    let mut c = cfg(2, &val);
    c.callbacks.push(Box::new(ModelCheckpoint::new(&ckpt)));
    first.fit(train.clone(), c).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&ckpt).unwrap();
    assert_eq!(resumed.state().epoch, 2);
    // The caller's annotations come back, and only they.
    let notes: Vec<_> = resumed.annotations().iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(notes, [("dataset", "mnist")]);
    resumed.fit(train.clone(), cfg(3, &val)).unwrap();
    assert_eq!(resumed.history().epochs.len(), 3);
    // `epochs` is the total to reach: asking for no more is an error, not a silent no-op.
    let err = resumed.fit(train, cfg(3, &val)).unwrap_err().to_string();
    assert!(err.contains("3 epochs already trained"), "{err}");
    assert_eq!(resumed.model().weights().unwrap(), full.model().weights().unwrap());
    assert_eq!(resumed.history().epochs[2].loss, full.history().epochs[2].loss);
}

/// Requests the trainer's interrupt at the end of epoch 2, as a Ctrl-C handler would during it.
struct InterruptAtTwo(Interrupt);

impl Callback for InterruptAtTwo {
    fn on_epoch_end(&mut self, log: &EpochLog, _t: &mut Trainer) -> nn_train::Result<Control> {
        if log.epoch == 2 {
            self.0.request();
        }
        Ok(Control::Continue)
    }
}

#[test]
fn an_interrupt_undoes_the_unfinished_epoch_and_the_checkpoint_resumes_exactly() {
    let (train, val) = subset(3000);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    let mut two = Trainer::new(Model::new(&spec(), 6).unwrap(), compile());
    two.fit(train.clone(), cfg(2, &val)).unwrap();
    let mut four = Trainer::new(Model::new(&spec(), 6).unwrap(), compile());
    four.fit(train.clone(), cfg(4, &val)).unwrap();

    let mut t = Trainer::new(Model::new(&spec(), 6).unwrap(), compile());
    let mut c = cfg(4, &val);
    c.callbacks.push(Box::new(InterruptAtTwo(t.interrupt())));
    c.callbacks.push(Box::new(ModelCheckpoint::new(&ckpt)));
    t.fit(train.clone(), c).unwrap();
    // Stopped after the first batch of epoch 3, which was undone.
    let stopped = t.history().stopped.clone().unwrap_or_default();
    assert!(stopped.starts_with("interrupted in epoch 3 after 1 of 47 batches"), "{stopped}");
    assert!(stopped.contains("unfinished epoch undone (back to epoch 2)"), "{stopped}");
    assert!(t.history().interrupted());
    assert_eq!((t.state().epoch, t.history().epochs.len()), (2, 2));
    assert_eq!(t.state().step, two.state().step);
    assert_eq!(t.model().weights().unwrap(), two.model().weights().unwrap());
    assert!(!t.interrupt().is_requested(), "the request is spent");

    // The next fit goes on as if never interrupted, in memory...
    t.fit(train.clone(), cfg(4, &val)).unwrap();
    assert_eq!(t.model().weights().unwrap(), four.model().weights().unwrap());
    // ...and from the checkpoint written before the interrupt (epoch 2's).
    let mut resumed = Trainer::resume(&ckpt).unwrap();
    assert_eq!(resumed.state().epoch, 2);
    resumed.fit(train, cfg(4, &val)).unwrap();
    assert_eq!(resumed.model().weights().unwrap(), four.model().weights().unwrap());
    assert_eq!(resumed.history().epochs[3].loss, four.history().epochs[3].loss);
}

#[test]
fn an_interrupt_in_the_first_epoch_leaves_the_initial_weights() {
    let (train, val) = subset(1000);
    let mut t = Trainer::new(Model::new(&spec(), 6).unwrap(), compile());
    let start = t.model().weights().unwrap();
    // Requested before the fit (a Ctrl-C while the data loaded): it stops after one batch.
    t.interrupt().request();
    t.fit(train.clone(), cfg(1, &val)).unwrap();
    assert!(t.history().interrupted() && !t.interrupt().is_requested());
    assert_eq!(t.model().weights().unwrap(), start);
    // The request was spent: the next fit runs whole.
    t.fit(train.clone(), cfg(1, &val)).unwrap();
    assert_eq!(t.history().stopped, None);
    assert_ne!(t.model().weights().unwrap(), start);

    let mut t = Trainer::new(Model::new(&spec(), 6).unwrap(), compile());
    let mut c = cfg(3, &val);
    c.callbacks.push(Box::new(RequestOnFirstBatch(t.interrupt())));
    t.fit(train, c).unwrap();
    let stopped = t.history().stopped.clone().unwrap_or_default();
    assert!(stopped.starts_with("interrupted in epoch 1 after 1 of 16 batches"), "{stopped}");
    assert!(stopped.contains("no epoch completed"), "{stopped}");
    assert_eq!((t.state().epoch, t.state().step, t.history().epochs.len()), (0, 0, 0));
    assert_eq!(t.model().weights().unwrap(), start);
}

/// A callback whose log cannot be written.
struct UnwritableLog;

impl Callback for UnwritableLog {
    fn on_epoch_end(&mut self, _log: &EpochLog, _t: &mut Trainer) -> nn_train::Result<Control> {
        std::fs::write("/nonexistent-folder/log.txt", "epoch").map_err(|e| nn_train::TrainError::Callback(e.into()))?;
        Ok(Control::Continue)
    }
}

#[test]
fn a_callbacks_own_error_comes_back_as_it_was() {
    let (train, val) = subset(500);
    let mut t = Trainer::new(Model::new(&spec(), 6).unwrap(), compile());
    let mut c = cfg(2, &val);
    c.callbacks.push(Box::new(UnwritableLog));
    let err = t.fit(train, c).unwrap_err();
    let nn_train::TrainError::Callback(inner) = &err else { panic!("{err:?}") };
    let io = inner.downcast_ref::<std::io::Error>().expect("the io::Error itself");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(err.to_string(), io.to_string());
}

/// Requests the interrupt after the first batch (from the batch hook, as a handler on another
/// thread could at any time).
struct RequestOnFirstBatch(Interrupt);

impl Callback for RequestOnFirstBatch {
    fn wants_batch_losses(&self) -> bool {
        true
    }
    fn on_batch_end(&mut self, _loss: f64) -> Control {
        self.0.request();
        Control::Continue
    }
    fn on_epoch_end(&mut self, _log: &EpochLog, _t: &mut Trainer) -> nn_train::Result<Control> {
        Ok(Control::Continue)
    }
}

#[test]
fn early_stopping_restores_best_weights_from_before_a_resume() {
    // A min_delta no epoch can beat: the first epoch stays the best, and every run ends with
    // its weights put back.
    let (train, val) = subset(2000);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    let es = || EarlyStopping::new("val_loss").patience(10).min_delta(1e9).restore_at_end(true);
    let run = |t: &mut Trainer, epochs: usize, checkpoint: bool| {
        let mut c = cfg(epochs, &val);
        // The checkpoint first: it still holds the early stopping's state of its epoch.
        if checkpoint {
            c.callbacks.push(Box::new(ModelCheckpoint::new(&ckpt)));
        }
        c.callbacks.push(Box::new(es()));
        t.fit(train.clone(), c).unwrap();
    };
    let mut full = Trainer::new(Model::new(&spec(), 6).unwrap(), compile());
    run(&mut full, 3, false);
    let mut first = Trainer::new(Model::new(&spec(), 6).unwrap(), compile());
    run(&mut first, 2, true);
    let mut resumed = Trainer::resume(&ckpt).unwrap();
    run(&mut resumed, 3, false);
    assert_eq!(resumed.history().epochs.len(), 3);
    assert_eq!(resumed.model().weights().unwrap(), full.model().weights().unwrap());

    // Kept best weights that do not fit the model (an edited file) are refused before training,
    // not when they would be put back at the end.
    let mut file = nn_core::ModelFile::load(&ckpt).unwrap();
    let kept = file.extra.iter_mut().find(|t| t.name.starts_with("kept.") && t.shape.len() == 2).unwrap();
    kept.shape.reverse();
    let name = kept.name.clone();
    file.save(&ckpt).unwrap();
    let mut damaged = Trainer::resume(&ckpt).unwrap();
    let before = damaged.model().weights().unwrap();
    let mut c = cfg(3, &val);
    c.callbacks.push(Box::new(es()));
    let err = damaged.fit(train.clone(), c).unwrap_err().to_string();
    let weight = name.rsplitn(3, '.').take(2).collect::<Vec<_>>();
    assert!(err.contains("do not fit the model") && err.contains(&format!("{}.{}", weight[1], weight[0])), "{err}");
    assert_eq!(damaged.model().weights().unwrap(), before);
    assert_eq!(damaged.history().epochs.len(), 2);
}

#[test]
fn reduce_lr_on_plateau_lowers_the_rate_and_resumes_where_it_was() {
    // Nothing beats the first epoch by 1e9: patience 1 lowers the rate after epoch 2, the
    // cooldown of 2 lets epoch 3 pass, epoch 4 lowers it again. Epochs train at the rate set
    // at the end of the one before.
    let (train, val) = subset(2000);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    let plateau = || ReduceLROnPlateau::new("val_loss").factor(0.5).patience(1).cooldown(2).min_delta(1e9);
    let run = |t: &mut Trainer, epochs: usize, checkpoint: bool| {
        let mut c = cfg(epochs, &val);
        c.callbacks.push(Box::new(plateau()));
        if checkpoint {
            c.callbacks.push(Box::new(ModelCheckpoint::new(&ckpt)));
        }
        t.fit(train.clone(), c).unwrap();
    };
    let mut full = Trainer::new(Model::new(&spec(), 8).unwrap(), compile());
    run(&mut full, 5, false);
    let rates: Vec<f64> = full.history().epochs.iter().map(|e| e.lr).collect();
    let want = [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4];
    assert!(rates.iter().zip(want).all(|(r, w)| (r - w).abs() < 1e-9), "{rates:?}");
    assert!((full.learning_rate() - 2.5e-4).abs() < 1e-10);
    // Interrupted in the cooldown (after epoch 3), resumed from the checkpoint: the same rates
    // and weights as the uninterrupted run.
    let mut first = Trainer::new(Model::new(&spec(), 8).unwrap(), compile());
    run(&mut first, 3, true);
    let mut resumed = Trainer::resume(&ckpt).unwrap();
    assert!((resumed.learning_rate() - 5e-4).abs() < 1e-10);
    run(&mut resumed, 5, false);
    let resumed_rates: Vec<f64> = resumed.history().epochs.iter().map(|e| e.lr).collect();
    assert_eq!(resumed_rates, rates);
    assert_eq!(resumed.model().weights().unwrap(), full.model().weights().unwrap());
}

#[test]
fn early_stopping_restores_the_best_weights_only_when_it_stops_as_keras_does() {
    // Nothing beats the first epoch by 1e9: the first epoch is the best throughout.
    let (train, val) = subset(2000);
    let fit = |epochs: usize, es: Option<EarlyStopping>| {
        let mut t = Trainer::new(Model::new(&spec(), 8).unwrap(), compile());
        let mut c = cfg(epochs, &val);
        c.callbacks.extend(es.map(|e| Box::new(e) as Box<dyn nn_train::Callback>));
        t.fit(train.clone(), c).unwrap();
        (t.history().epochs.len(), t.model().weights().unwrap())
    };
    let es = |patience: usize| EarlyStopping::new("val_loss").patience(patience).min_delta(1e9);
    let (one, three) = (fit(1, None), fit(3, None));
    // Never stopped: the last epoch's weights, restore_best_weights or not.
    assert_eq!(fit(3, Some(es(10).restore_best_weights(true))), three);
    // Stopped after epoch 2: the best (first) epoch's weights put back.
    let (epochs, weights) = fit(3, Some(es(1).restore_best_weights(true)));
    assert_eq!((epochs, weights), (2, one.1.clone()));
    // restore_at_end: the best epoch's whenever training ends.
    assert_eq!(fit(3, Some(es(10).restore_at_end(true))).1, one.1);
}

#[test]
fn early_stopping_on_a_second_fit_without_the_first_best_weights_starts_afresh() {
    let (train, val) = subset(2000);
    let mut t = Trainer::new(Model::new(&spec(), 7).unwrap(), compile());
    t.fit(train.clone(), cfg(2, &val)).unwrap();
    // Only the third epoch can be the best (nothing beats the first by 1e9): its weights are
    // the ones put back, not the last epoch's, and no earlier best is claimed.
    let mut c = cfg(4, &val);
    c.callbacks.push(Box::new(EarlyStopping::new("val_loss").patience(10).min_delta(1e9).restore_at_end(true)));
    t.fit(train, c).unwrap();
    let third = t.history().epochs[2].val_loss.unwrap();
    let now = t.evaluate(&val).unwrap().loss;
    assert!((now - third).abs() < 1e-6, "restored val_loss {now} vs the third epoch's {third}");
}

#[test]
fn a_loss_that_cannot_read_the_outputs_and_data_of_another_shape_are_refused() {
    let (train, val) = subset(500);
    // A linear head with a loss reading probabilities (Compile's default): NaN, refused.
    let logits = ModelSpec::new(&[28, 28]).add(Flatten::new()).add(Dense::new(10));
    let mut t = Trainer::new(Model::new(&logits, 1).unwrap(), Compile::default());
    let err = t.fit(train.clone(), cfg(1, &val)).unwrap_err().to_string();
    assert!(err.contains("from_logits: true"), "{err}");
    assert!(t.evaluate(&val).is_err());
    // A softmax head with a loss reading logits.
    let loss = Loss::CategoricalCrossentropy { from_logits: true };
    let mut t = Trainer::new(Model::new(&spec(), 1).unwrap(), Compile { loss, ..compile() });
    assert!(t.fit(train.clone(), cfg(1, &val)).unwrap_err().to_string().contains("second softmax"));
    // 784 pixels, but not 28×28.
    let tall = ModelSpec::new(&[56, 14]).add(Flatten::new()).add(Dense::new(10).activation(Activation::Softmax));
    let mut t = Trainer::new(Model::new(&tall, 1).unwrap(), compile());
    let err = t.fit(train, cfg(1, &val)).unwrap_err().to_string();
    assert!(err.contains("reads images of 56×14 pixels, the data's are 28×28") && err.contains("[28, 28]"), "{err}");
    assert!(t.predict(&val).unwrap_err().to_string().contains("28×28"), "predict checks as evaluate does");
    // Nothing to evaluate.
    let mut t = Trainer::new(Model::new(&spec(), 1).unwrap(), compile());
    assert!(t.evaluate(&val.slice(0..0)).unwrap_err().to_string().contains("empty"));
}

#[test]
fn settings_that_cannot_train_are_refused_before_the_first_epoch() {
    let (train, val) = subset(500);
    let fresh =
        |optimizer: Optimizer| Trainer::new(Model::new(&spec(), 1).unwrap(), Compile { optimizer, ..compile() });
    let refused = |t: &mut Trainer, c: FitConfig, needle: &str| {
        let err = t.fit(train.clone(), c).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
        assert_eq!(t.state().epoch, 0, "{needle}: an epoch was trained before the refusal");
    };
    refused(&mut fresh(Optimizer::adam().learning_rate(f32::NAN)), cfg(1, &val), "learning rate NaN");
    refused(&mut fresh(Optimizer::sgd().learning_rate(-1.0)), cfg(1, &val), "learning rate -1");
    refused(&mut fresh(Optimizer::sgd().momentum(1.5)), cfg(1, &val), "momentum 1.5");
    let adam = Optimizer::Adam { learning_rate: 1e-3, beta_1: 0.9, beta_2: 1.0, epsilon: 1e-7 };
    refused(&mut fresh(adam), cfg(1, &val), "beta_2 1: must be at least 0 and below 1");
    let rmsprop = Optimizer::RmsProp { learning_rate: 1e-3, rho: 0.9, momentum: 0.0, epsilon: -1e-7 };
    refused(&mut fresh(rmsprop), cfg(1, &val), "epsilon -0.0000001: must be a number at least 0");
    let flat = FitConfig { normalization: Some(Normalization::Standardize { mean: 0.0, std: 0.0 }), ..cfg(1, &val) };
    refused(&mut fresh(Optimizer::adam()), flat, "deviation must be a positive number");
    // A callback watching val_loss in a fit without validation, and empty validation data.
    let mut c = FitConfig { validation: Validation::None, ..cfg(1, &val) };
    c.callbacks.push(Box::new(EarlyStopping::new("val_loss")));
    refused(&mut fresh(Optimizer::adam()), c, "EarlyStopping monitors val_loss, but this fit has no validation data");
    let mut c = FitConfig { validation: Validation::None, ..cfg(1, &val) };
    c.callbacks.push(Box::new(ReduceLROnPlateau::new("val_loss")));
    refused(&mut fresh(Optimizer::adam()), c, "ReduceLROnPlateau monitors val_loss");
    // ModelCheckpoint has the training loss to fall back on: it is not refused.
    let dir = tempfile::tempdir().unwrap();
    let mut c = FitConfig { validation: Validation::None, ..cfg(1, &val) };
    c.callbacks.push(Box::new(ModelCheckpoint::new(dir.path().join("c.safetensors")).save_best_only("val_loss")));
    fresh(Optimizer::adam()).fit(train.clone(), c).unwrap();
    assert!(dir.path().join("c.safetensors").exists());
    let empty = Arc::new(val.slice(0..0));
    refused(&mut fresh(Optimizer::adam()), cfg(1, &empty), "the validation data set is empty");
    // A schedule whose rates cannot train: negative after the first drop, NaN from the start.
    let climbing = Schedule::Step { factor: -1.0, every_epochs: 1 };
    let mut t = Trainer::new(Model::new(&spec(), 1).unwrap(), Compile { schedule: climbing, ..compile() });
    refused(&mut t, cfg(2, &val), "schedule step: factor -1 must be a positive number");
    let nan = Schedule::OneCycle { total_steps: 0, warmup: 0.25, div: 0.0, final_div: 1e4 };
    let mut t = Trainer::new(Model::new(&spec(), 1).unwrap(), Compile { schedule: nan, ..compile() });
    refused(&mut t, cfg(1, &val), "schedule one-cycle: div 0 must be a positive number");
    // A run goes on with the inputs it trained on.
    let mut t = fresh(Optimizer::adam());
    t.fit(train.clone(), cfg(1, &val)).unwrap();
    let other = FitConfig { normalization: Some(Normalization::MNIST_STANDARD), ..cfg(2, &val) };
    let err = t.fit(train.clone(), other).unwrap_err().to_string();
    assert!(err.contains("normalised as Scale") && err.contains("Standardize"), "{err}");
    assert_eq!(t.state().epoch, 1);
}

#[test]
fn early_stopping_stops_and_restores_the_best_weights() {
    let (train, val) = subset(2000);
    let mut t = Trainer::new(
        Model::new(&spec(), 1).unwrap(),
        Compile { optimizer: Optimizer::adam().learning_rate(0.05), ..compile() },
    );
    let mut c = cfg(30, &val);
    c.callbacks.push(Box::new(EarlyStopping::new("val_loss").patience(1).restore_best_weights(true)));
    t.fit(train, c).unwrap();
    let h = t.history();
    assert!(h.epochs.len() < 30, "never stopped");
    let why = h.stopped.as_deref().unwrap_or_default();
    assert!(why.contains("val_loss"), "the history says why it stopped: {why:?}");
    let best = h.series("val_loss").into_iter().fold(f64::INFINITY, f64::min);
    let now = t.evaluate(&val).unwrap().loss;
    assert!((now - best).abs() < 1e-4, "restored val_loss {now} vs best {best}");
}

/// A callback that records what it saw.
struct Record(std::sync::Arc<std::sync::Mutex<Vec<usize>>>);
impl Callback for Record {
    fn on_epoch_end(&mut self, log: &EpochLog, _t: &mut Trainer) -> nn_train::Result<Control> {
        self.0.lock().unwrap().push(log.epoch);
        Ok(Control::Continue)
    }
}

#[test]
fn terminate_on_nan_keeps_the_last_good_weights() {
    let (train, val) = subset(2000);
    // A huge learning rate blows the loss up within a few epochs.
    let opt = Optimizer::sgd().learning_rate(1e20).momentum(0.9);
    let mut t = Trainer::new(Model::new(&spec(), 2).unwrap(), Compile { optimizer: opt, ..compile() });
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut c = cfg(20, &val);
    c.callbacks.push(Box::new(TerminateOnNaN));
    c.callbacks.push(Box::new(Record(seen.clone())));
    t.fit(train, c).unwrap();
    assert!(seen.lock().unwrap().len() < 20, "did not stop");
    assert!(t.history().stopped.as_deref().is_some_and(|w| w.contains("NaN")), "{:?}", t.history().stopped);
    for w in t.model().weights().unwrap() {
        assert!(w.data.iter().all(|v| v.is_finite()), "{} holds non-finite values", w.name);
    }
    // The optimiser state and the progress are those of the same epoch.
    for s in t.model_mut().runtime().optimizer_state().unwrap() {
        assert!(s.data.iter().all(|v| v.is_finite()), "{} holds non-finite values", s.name);
    }
    assert_eq!(t.state().epoch, t.history().epochs.len());
    assert_eq!(t.state().step, t.history().epochs.len() as u64 * 2000u64.div_ceil(64), "steps of the kept epochs");
    assert!(t.history().epochs.iter().all(|e| e.loss.is_finite()));
}

/// A callback that asks at the end of its second epoch to stop and put back the first's weights.
struct RestoreAfterTwo;
impl Callback for RestoreAfterTwo {
    fn on_epoch_end(&mut self, log: &EpochLog, _t: &mut Trainer) -> nn_train::Result<Control> {
        Ok(if log.epoch == 2 { Control::StopAndRestore("enough".into()) } else { Control::Continue })
    }
}

#[test]
fn stop_and_restore_at_an_epoch_end_puts_back_the_epoch_before() {
    let (train, val) = subset(2000);
    let mut one = Trainer::new(Model::new(&spec(), 8).unwrap(), compile());
    one.fit(train.clone(), cfg(1, &val)).unwrap();
    let mut t = Trainer::new(Model::new(&spec(), 8).unwrap(), compile());
    let mut c = cfg(5, &val);
    // Lowers the rate at the end of epoch 2 (nothing beats epoch 1 by 1e9), before the stop:
    // the restore puts back epoch 1's rate too.
    c.callbacks.push(Box::new(ReduceLROnPlateau::new("val_loss").patience(1).min_delta(1e9)));
    c.callbacks.push(Box::new(RestoreAfterTwo));
    t.fit(train, c).unwrap();
    assert_eq!(t.history().stopped.as_deref(), Some("enough"));
    assert_eq!((t.state().epoch, t.history().epochs.len()), (1, 1));
    assert_eq!(t.model().weights().unwrap(), one.model().weights().unwrap());
    assert_eq!(t.learning_rate(), one.learning_rate());
}

#[test]
fn model_file_roundtrip_is_bit_identical_and_bad_files_are_errors() {
    let (train, val) = subset(2000);
    let mut t = Trainer::new(
        Model::new(&preset("mlp-128").unwrap(), 9).unwrap(),
        Compile { loss: Loss::SparseCategoricalCrossentropy { from_logits: true }, ..compile() },
    );
    t.fit(train, cfg(1, &val)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    t.save_model(&path).unwrap();
    let (mut loaded, file) = Model::load(&path).unwrap();
    assert!(file.metadata.contains_key("history") && file.metadata.contains_key("training_config"));
    let a = nn_train::predict_dataset(t.model_mut(), &val, mnist_data::Normalization::Scale).unwrap();
    let b = nn_train::predict_dataset(&mut loaded, &val, mnist_data::Normalization::Scale).unwrap();
    assert_eq!(a, b);
    // Truncated.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = Model::load(&cut).err().unwrap().to_string();
    assert!(err.contains("cut.safetensors") && err.contains("not a model file"), "{err}");
    // Not a model file at all.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"hello world, not a model").unwrap();
    let err = Model::load(&junk).err().unwrap().to_string();
    assert!(err.contains("junk.bin") && err.contains("not a model file"), "{err}");
    // Shapes that disagree with the architecture.
    let mut f = nn_core::ModelFile::load(&path).unwrap();
    f.weights[0].shape = vec![28, 28 * 128];
    f.save(&dir.path().join("shape.safetensors")).unwrap();
    let err = Model::load(dir.path().join("shape.safetensors")).err().unwrap().to_string();
    assert!(err.contains("dense.kernel") && err.contains("[784, 128]"), "{err}");
    // A model file whose architecture has no layers.
    let mut f = nn_core::ModelFile::load(&path).unwrap();
    f.spec.layers.clear();
    let bytes = f.to_bytes().unwrap();
    let bare = dir.path().join("bare.safetensors");
    std::fs::write(&bare, bytes).unwrap();
    let err = Model::load(&bare).err().unwrap().to_string();
    assert!(err.contains("bare.safetensors") && err.contains("invalid architecture"), "{err}");
}

/// A callback that asks, from its third batch on, to stop.
struct StopAfterTwoBatches(usize);
impl Callback for StopAfterTwoBatches {
    fn wants_batch_losses(&self) -> bool {
        true
    }
    fn on_batch_end(&mut self, _loss: f64) -> Control {
        self.0 += 1;
        if self.0 > 2 {
            Control::Stop("enough batches".into())
        } else {
            Control::Continue
        }
    }
    fn on_epoch_end(&mut self, _log: &EpochLog, _t: &mut Trainer) -> nn_train::Result<Control> {
        Ok(Control::Continue)
    }
}

#[test]
fn a_stop_from_a_batch_ends_the_epoch_then_training() {
    let (train, val) = subset(2000);
    let mut t = Trainer::new(Model::new(&spec(), 2).unwrap(), compile());
    let mut c = cfg(3, &val);
    c.callbacks.push(Box::new(StopAfterTwoBatches(0)));
    t.fit(train, c).unwrap();
    let h = t.history();
    assert_eq!(h.epochs.len(), 1, "trained on after the stop");
    assert_eq!(h.stopped.as_deref(), Some("enough batches"));
    // The stopped epoch was still validated and logged, as Keras does.
    assert!(h.epochs[0].val_loss.is_some());
    assert_eq!(t.state().step, 3, "batches run after the stop");
}

#[test]
fn images_outside_a_data_set_predict_as_the_data_set_does() {
    let (train, val) = subset(1000);
    let mut t = Trainer::new(Model::new(&spec(), 4).unwrap(), compile());
    t.fit(train, cfg(1, &val)).unwrap();
    let set = t.predict(&val).unwrap();
    let three = t.predict_images(&val.images()[..3 * 784]).unwrap();
    assert_eq!(three.shape(), [3, 10]);
    // The same numbers up to the last bits, which depend on how a batch's products are split.
    assert!(three.iter().zip(set.iter()).all(|(a, b)| (a - b).abs() < 1e-5), "{three} vs {set}");
    let err = t.predict_images(&val.images()[..700]).unwrap_err().to_string();
    assert!(err.contains("700 bytes") && err.contains("784"), "{err}");
}

#[test]
fn predicting_a_data_set_equals_predicting_its_normalised_images() {
    // predict_dataset writes each batch's bytes straight into the network's input buffer, in
    // parallel row ranges; the result must be the same bits as the plain path. Scaled bytes
    // are declared levels (`Runtime::set_input_levels`), which a CPU with AMX multiplies
    // exactly: the same numbers then, within f32's rounding.
    let (_, test) = subset(10);
    let test = Arc::new(test.slice(0..300));
    for norm in [mnist_data::Normalization::MNIST_STANDARD, mnist_data::Normalization::Scale] {
        for name in ["mlp-128", "fast-cnn", "convnet"] {
            let mut model = Model::new(&preset(name).unwrap(), 3).unwrap();
            let fast = nn_train::predict_dataset(&mut model, &test, norm).unwrap();
            let x = mnist_data::flatten(&test, norm);
            let plain = model.predict_proba(x.as_slice().unwrap(), test.len()).unwrap();
            assert_eq!(fast.shape(), plain.shape());
            for (a, b) in fast.iter().zip(plain.iter()) {
                match norm.levels() {
                    None => assert_eq!(a.to_bits(), b.to_bits(), "{name} {norm:?}: {a} vs {b}"),
                    Some(_) => assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{name} {norm:?}: {a} vs {b}"),
                }
            }
        }
    }
}

#[test]
fn a_batch_size_past_the_training_set_trains_on_it_all_at_once() {
    // Keras takes it as one batch an epoch; the buffers are the set's size, not the size asked
    // (a batch size of 10¹² aborted an allocation).
    let (train, val) = subset(300);
    let mut t = Trainer::new(Model::new(&spec(), 3).unwrap(), compile());
    t.fit(train, FitConfig { batch_size: 1 << 40, ..cfg(2, &val) }).unwrap();
    assert_eq!(t.history().epochs.len(), 2);
    assert!(t.history().epochs.iter().all(|e| e.loss.is_finite()));
}

#[test]
fn a_checkpoint_that_cannot_be_resumed_is_named_in_the_error() {
    let (train, val) = subset(300);
    let mut t = Trainer::new(Model::new(&spec(), 3).unwrap(), compile());
    t.fit(train, cfg(1, &val)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    t.save_checkpoint(&path).unwrap();
    // Optimiser state of the wrong shape.
    let mut f = nn_core::ModelFile::load(&path).unwrap();
    let slot = f.extra.iter_mut().find(|x| x.name.starts_with("optimizer.") && x.name.ends_with("bias.slot0")).unwrap();
    slot.data.truncate(slot.data.len() / 2);
    slot.shape = vec![slot.data.len()];
    let state = dir.path().join("state.safetensors");
    f.save(&state).unwrap();
    let err = Trainer::resume(&state).err().unwrap().to_string();
    assert!(err.contains("state.safetensors") && err.contains("optimiser state"), "{err}");
    // The right number of values in another shape, and a slot missing (Adam's second moment
    // would silently start from zeros).
    let mut f = nn_core::ModelFile::load(&path).unwrap();
    let slot = f.extra.iter_mut().find(|x| x.name.starts_with("optimizer.") && x.name.ends_with("bias.slot0")).unwrap();
    slot.shape = vec![2, slot.data.len() / 2];
    f.save(&state).unwrap();
    let err = Trainer::resume(&state).err().unwrap().to_string();
    assert!(err.contains("state.safetensors") && err.contains("bias.slot0"), "{err}");
    let mut f = nn_core::ModelFile::load(&path).unwrap();
    f.extra.retain(|x| !(x.name.starts_with("optimizer.") && x.name.ends_with("bias.slot1")));
    f.save(&state).unwrap();
    let err = Trainer::resume(&state).err().unwrap().to_string();
    assert!(err.contains("state.safetensors") && err.contains("optimiser state: slots missing: "), "{err}");
    assert!(err.contains("to freeze or thaw layers, start a new run from its weights"), "{err}");
    // Debug output a program can log.
    let text = format!("{:?}", Trainer::resume(&path).unwrap());
    assert!(text.starts_with("Trainer { model: Model { input_shape: [28, 28], layers: [\"Flatten\""), "{text}");
    // An architecture whose images are channels-last.
    let mut f = nn_core::ModelFile::load(&path).unwrap();
    f.spec.input_shape = vec![28, 28, 1];
    let last = dir.path().join("last.safetensors");
    f.save(&last).unwrap();
    let err = Trainer::resume(&last).err().unwrap().to_string();
    assert!(err.contains("last.safetensors") && err.contains("channels"), "{err}");
    // A learning rate fit would refuse, and progress its history does not bear out: refused at
    // resume, naming the file (not later, as if given to fit).
    let edited = |key: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut f = nn_core::ModelFile::load(&path).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&f.metadata[key]).unwrap();
        edit(&mut v);
        f.metadata.insert(key.into(), v.to_string());
        f.save(&state).unwrap();
        Trainer::resume(&state).err().unwrap().to_string()
    };
    fn set_lr(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => m.iter_mut().for_each(|(k, x)| {
                if k == "learning_rate" {
                    *x = serde_json::json!(-0.5);
                } else {
                    set_lr(x);
                }
            }),
            serde_json::Value::Array(a) => a.iter_mut().for_each(set_lr),
            _ => {}
        }
    }
    let err = edited("training_config", &set_lr);
    assert!(err.contains("state.safetensors: training_config: learning rate -0.5"), "{err}");
    let err = edited("training_state", &|v| v["epoch"] = serde_json::json!(u64::MAX - 1));
    assert!(err.contains("state.safetensors: training_state counts 18446744073709551614 epoch(s)"), "{err}");
}

/// A trainer resumed from a model file (no optimiser state) starts its optimiser afresh, as
/// Keras's `compile` does: Adam's first step after the resume moves each weight by the
/// learning rate, as a fresh Adam's first step does, not by ~3× that (zeroed moments with a
/// bias correction counted from the run's first step).
#[test]
fn a_model_file_resumes_with_a_fresh_optimiser() {
    let (train, val) = subset(640);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let spec = ModelSpec::new(&[28, 28]).add(Flatten::new()).add(Dense::new(10).activation(Activation::Softmax));
    let mut t = Trainer::new(Model::new(&spec, 2).unwrap(), compile());
    let c = |epochs: usize, batch_size: usize| FitConfig { batch_size, ..cfg(epochs, &val) };
    t.fit(train.clone(), c(3, 64)).unwrap();
    t.save_model(&path).unwrap();
    let mut resumed = Trainer::resume(&path).unwrap();
    assert_eq!(resumed.state().optimizer_from, 30, "10 steps an epoch for 3 epochs");
    let before = resumed.model().weights().unwrap();
    // One step: the whole training set as one batch.
    resumed.fit(train.clone(), c(4, 640)).unwrap();
    let after = resumed.model().weights().unwrap();
    let lr = f64::from(Optimizer::adam().lr());
    let largest = before
        .iter()
        .zip(&after)
        .flat_map(|(b, a)| b.data.iter().zip(&a.data).map(|(p, q)| f64::from((p - q).abs())))
        .fold(0f64, f64::max);
    assert!(largest > 0.9 * lr && largest < 1.01 * lr, "a weight moved by {largest}, the rate is {lr}");
    // Its checkpoints keep the count, so that resuming one continues it.
    let ck = dir.path().join("ck.safetensors");
    let mut t = Trainer::resume(&path).unwrap();
    t.fit(train.clone(), FitConfig { callbacks: vec![Box::new(ModelCheckpoint::new(&ck))], ..c(4, 64) }).unwrap();
    assert_eq!(Trainer::resume(&ck).unwrap().state().optimizer_from, 30);
    // A count past the steps (an edited file) is refused, not divided by zero.
    let mut f = nn_core::ModelFile::load(&ck).unwrap();
    f.metadata.insert("training_state".into(), r#"{"epoch":4,"step":40,"seed":7,"optimizer_from":40}"#.into());
    f.save(&ck).unwrap();
    let err = Trainer::resume(&ck).unwrap_err().to_string();
    assert!(err.contains("began at step 40 of 40"), "{err}");
    // A step count past any run (it wrapped round, and Adam's step 2^31 made NaN) is refused.
    let max = format!(r#"{{"epoch":4,"step":{},"seed":7,"optimizer_from":0}}"#, u64::MAX);
    f.metadata.insert("training_state".into(), max);
    f.save(&ck).unwrap();
    let err = Trainer::resume(&ck).unwrap_err().to_string();
    assert!(err.contains("is beyond any run") && err.contains("ck.safetensors"), "{err}");
}

/// A model loaded with `Model::load` is given its file's normalisation
/// (`Trainer::with_normalization`), and evaluates, predicts and trains as before the save.
#[test]
fn a_loaded_model_keeps_its_normalisation_through_with_normalization() {
    let (train, val) = subset(1000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("std.safetensors");
    let mut t = Trainer::new(Model::new(&spec(), 6).unwrap(), compile());
    let standard = FitConfig { normalization: Some(Normalization::MNIST_STANDARD), ..cfg(1, &val) };
    t.fit(train.clone(), standard).unwrap();
    let before = t.evaluate(&val).unwrap();
    t.save_model(&path).unwrap();
    let (model, file) = Model::load(&path).unwrap();
    let mut loaded = Trainer::new(model, compile()).with_normalization(file.normalization().unwrap()).unwrap();
    assert_eq!(loaded.normalization(), Normalization::MNIST_STANDARD);
    assert_eq!(loaded.evaluate(&val).unwrap(), before);
    assert_eq!(loaded.predict(&val).unwrap(), t.predict(&val).unwrap());
    // A fit that leaves the normalisation unset trains on the trainer's.
    loaded.fit(train.clone(), cfg(1, &val)).unwrap();
    assert_eq!(loaded.normalization(), Normalization::MNIST_STANDARD);
    let saved = dir.path().join("again.safetensors");
    loaded.save_model(&saved).unwrap();
    assert_eq!(Model::load(&saved).unwrap().1.normalization().unwrap(), Normalization::MNIST_STANDARD);
    // A run that has trained goes on with its inputs.
    let err = loaded.with_normalization(Normalization::Scale).unwrap_err().to_string();
    assert!(err.contains("trained on inputs normalised as Standardize"), "{err}");
}

/// Keras's checkpoint names: the epoch and its metrics filled into the path, a file an epoch.
#[test]
fn checkpoint_names_take_the_epoch_and_its_metrics() {
    let (train, val) = subset(500);
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("ck-{epoch:02d}-{val_accuracy:.3f}.safetensors");
    let mut t = Trainer::new(Model::new(&spec(), 1).unwrap(), compile());
    let c = FitConfig { callbacks: vec![Box::new(ModelCheckpoint::new(&template))], ..cfg(2, &val) };
    t.fit(train.clone(), c).unwrap();
    for e in &t.history().epochs {
        let name = format!("ck-{:02}-{:.3}.safetensors", e.epoch, e.val_accuracy.unwrap());
        let resumed = Trainer::resume(dir.path().join(&name)).unwrap();
        assert_eq!(resumed.state().epoch, e.epoch, "{name}");
    }
    // A field it cannot fill is refused before any work, as is a validation metric without validation.
    let mut t = Trainer::new(Model::new(&spec(), 1).unwrap(), compile());
    let c = FitConfig { callbacks: vec![Box::new(ModelCheckpoint::new(dir.path().join("{step}.st")))], ..cfg(1, &val) };
    let err = t.fit(train.clone(), c).unwrap_err().to_string();
    assert!(err.contains("{step}") && t.state().epoch == 0, "{err}");
    let c = FitConfig {
        validation: Validation::None,
        callbacks: vec![Box::new(ModelCheckpoint::new(dir.path().join("{val_loss:.2f}.st")))],
        ..cfg(1, &val)
    };
    let err = t.fit(train.clone(), c).unwrap_err().to_string();
    assert!(err.contains("names a validation metric") && t.state().epoch == 0, "{err}");
}

#[test]
fn a_confusion_matrix_of_labels_the_model_cannot_output_is_refused() {
    // Five outputs for ten digits: evaluate refuses, and so does the confusion matrix, which
    // would otherwise count only the examples of digits 0 to 4.
    let (_, test) = subset(10);
    let five = ModelSpec::new(&[28, 28]).add(Flatten::new()).add(Dense::new(5).activation(Activation::Softmax));
    let mut t = Trainer::new(Model::new(&five, 3).unwrap(), compile());
    let err = t.confusion(&test).unwrap_err().to_string();
    assert!(err.contains("does not fit the model's 5 outputs"), "{err}");
    assert!(t.evaluate(&test).is_err());
    let mut t = Trainer::new(Model::new(&spec(), 3).unwrap(), compile());
    let (pred, matrix) = t.confusion(&test).unwrap();
    assert_eq!((pred.len() as u64, matrix.total()), (1000, 1000));
}

#[test]
fn a_loop_of_train_on_batch_learns_and_counts_its_steps() {
    let (train, test) = subset(6400);
    let spec = ModelSpec::new(&[28, 28])
        .add(Flatten::new())
        .add(Dense::new(32).activation(Activation::Relu))
        .add(Dense::new(10));
    let compile = Compile { loss: Loss::SparseCategoricalCrossentropy { from_logits: true }, ..compile() };
    let mut t = Trainer::new(Model::new(&spec, 5).unwrap(), compile);
    let prepare = |d: &Dataset| -> Vec<f32> { d.images().iter().map(|&b| b as f32 / 255.0).collect() };
    let (x, x_test) = (prepare(&train), prepare(&test));
    let first = t.test_on_batch(&x_test, test.labels()).unwrap();
    for (xs, ys) in x.chunks(64 * 784).zip(train.labels().chunks(64)) {
        let e = t.train_on_batch(xs, ys).unwrap();
        assert!(e.loss.is_finite() && (0.0..=1.0).contains(&e.accuracy));
    }
    assert_eq!(t.state().step, 100);
    let weights = t.model().weights().unwrap();
    let after = t.test_on_batch(&x_test, test.labels()).unwrap();
    assert_eq!(t.model().weights().unwrap(), weights, "test_on_batch changed the weights");
    assert!(after.accuracy > 0.8 && after.loss < first.loss, "{first:?} → {after:?}");
    // The same numbers as evaluate on the same images.
    let eval = t.evaluate(&test).unwrap();
    assert!(
        (eval.accuracy - after.accuracy).abs() < 1e-9 && (eval.loss - after.loss).abs() < 1e-4,
        "{eval:?} {after:?}"
    );

    // Batches that do not fit are refused, and change nothing.
    let err = |r: nn_train::Result<nn_train::Evaluation>| r.unwrap_err().to_string();
    assert!(err(t.train_on_batch(&[], &[])).contains("an empty batch"));
    assert!(err(t.train_on_batch(&x[..784], &[1, 2])).contains("784 values of x for 2 labels"));
    assert!(err(t.train_on_batch(&x[..784], &[10])).contains("label 10"));
    let mut cosine = Trainer::new(
        Model::new(&spec, 5).unwrap(),
        Compile { schedule: Schedule::Cosine { total_steps: 0, alpha: 0.0 }, ..compile },
    );
    assert!(err(cosine.train_on_batch(&x[..784], &[1])).contains("runs over a whole fit"));
    assert_eq!(t.model().weights().unwrap(), weights);
    assert_eq!(t.state().step, 100);
}
