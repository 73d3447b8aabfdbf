//! [`Trainer`]: a model compiled with an optimiser and a loss; `fit`, `evaluate`, `predict`,
//! model files and resumable checkpoints. One loop for every device.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mnist_data::batches::epoch_order;
use mnist_data::{Augmentation, BatchConfig, Batcher, Dataset, Normalization, Rng};
use ndarray::Array2;
use nn_core::model_file::{normalization_json, NORMALIZATION_KEY};
use nn_core::{Activation, FilledBatch, LayerSpec, Loss, Model, ModelFile, StepParams, Tensor};
use serde::{Deserialize, Serialize};

use crate::callbacks::{Callback, Control};
use crate::error::{Result, TrainError};
use crate::history::{EpochLog, History};
use crate::interrupt::{Interrupt, INTERRUPTED};
use crate::metrics::{argmax_rows, Confusion};
use crate::optimizer::Optimizer;
use crate::progress::{EpochProgress, Verbosity};
use crate::schedule::Schedule;

/// Keras's `compile`: optimiser, loss and learning-rate schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Compile {
    /// The optimiser.
    pub optimizer: Optimizer,
    /// The loss.
    pub loss: Loss,
    /// The learning-rate schedule.
    #[serde(default)]
    pub schedule: Schedule,
}

impl Compile {
    /// The compile settings a trainer's model file or checkpoint records (its
    /// `training_config`), to train a model loaded from it as it was trained (Keras's
    /// `load_model` keeps the compiled optimiser and loss); `None` for a bare model file
    /// ([`Model::save`]).
    ///
    /// # Errors
    /// [`TrainError::Config`] for a `training_config` that does not parse.
    pub fn recorded_in(file: &ModelFile) -> Result<Option<Compile>> {
        file.metadata
            .get("training_config")
            .map(|c| {
                serde_json::from_str(c).map_err(|e| {
                    // What a valid one looks like says more than serde's words.
                    let example = serde_json::to_string(&Compile::default()).unwrap_or_default();
                    TrainError::Config(format!("training_config: {e} (it reads as, e.g., {example})"))
                })
            })
            .transpose()
    }
}

/// Where validation numbers come from.
#[derive(Clone, Debug, Default)]
pub enum Validation {
    /// None.
    #[default]
    None,
    /// A separate data set (e.g. the test set, as the tutorials do).
    Data(Arc<Dataset>),
    /// Keras's `validation_split`: the last fraction of the training data, taken before shuffling.
    Split(f64),
}

/// Keras's `fit` arguments. Defaults: 1 epoch, batch 32, shuffle, no validation, seed 0,
/// pixels scaled to `[0, 1]`.
pub struct FitConfig {
    /// Epochs to train in total (a resumed run continues up to this number).
    pub epochs: usize,
    /// Examples per update.
    pub batch_size: usize,
    /// Shuffle every epoch.
    pub shuffle: bool,
    /// Validation data.
    pub validation: Validation,
    /// Callbacks.
    pub callbacks: Vec<Box<dyn Callback>>,
    /// Seed of shuffles, dropout and augmentation (weights are seeded when the model is built).
    /// Taken while the trainer has completed no epoch (its first `fit`, or one after a first fit
    /// stopped in its first epoch): a later `fit` (or a resumed run) goes on with the run's
    /// seed ([`TrainState::seed`]), so that its batches continue the same sequence.
    pub seed: u64,
    /// On-the-fly augmentation of training batches. Its fill is set to the value the run's
    /// normalisation gives a black pixel ([`Augmentation::fill_for`]).
    pub augmentation: Option<Augmentation>,
    /// How pixels become inputs. `None` (the default) keeps the trainer's
    /// ([`Trainer::normalization`]: `x / 255` for a new trainer, the file's for a resumed one
    /// or one given [`Trainer::with_normalization`]); `Some` sets it for a run that has not
    /// trained an epoch yet (a run goes on with the inputs it started on).
    pub normalization: Option<Normalization>,
    /// Progress output.
    pub verbosity: Verbosity,
}

/// Every setting, with the callbacks counted (they need not be `Debug`).
impl std::fmt::Debug for FitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FitConfig")
            .field("epochs", &self.epochs)
            .field("batch_size", &self.batch_size)
            .field("shuffle", &self.shuffle)
            .field("validation", &self.validation)
            .field("callbacks", &format_args!("[{} callback(s)]", self.callbacks.len()))
            .field("seed", &self.seed)
            .field("augmentation", &self.augmentation)
            .field("normalization", &self.normalization)
            .field("verbosity", &self.verbosity)
            .finish()
    }
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 1,
            batch_size: 32,
            shuffle: true,
            validation: Validation::None,
            callbacks: Vec::new(),
            seed: 0,
            augmentation: None,
            normalization: None,
            verbosity: Verbosity::Auto,
        }
    }
}

/// Where a run stands: what a checkpoint must hold besides weights and optimiser state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Updates done.
    pub step: u64,
    /// The run's seed (shuffles, dropout, augmentation derive from it and the epoch or step).
    pub seed: u64,
    /// The step the optimiser's state began at: 0, or the steps done before a resume from a
    /// file without optimiser state (a model file rather than a checkpoint), whose optimiser
    /// starts afresh. Adam's bias correction counts from here, as a fresh optimiser's does:
    /// counted from 0, its zeroed moments would take steps ~3× too large.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub optimizer_from: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A trainer's weights, optimiser state and progress at the end of an epoch (what
/// `TerminateOnNaN` puts back).
struct Snapshot {
    weights: Vec<Tensor>,
    slots: Vec<Tensor>,
    state: TrainState,
    /// The base learning rate (a callback may lower it at an epoch's end).
    lr: f32,
    /// The tensors kept for callbacks ([`Trainer::keep_tensors`]).
    kept: Vec<Tensor>,
}

/// Loss and accuracy of a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean loss (with the regularisation penalty, as Keras reports it).
    pub loss: f64,
    /// Fraction classified right.
    pub accuracy: f64,
}

/// Examples per forward pass when evaluating: as in prediction
/// ([`nn_core::model::predict_batch_size`]: large for dense networks, small for convolutional
/// ones and for very wide or deep ones), at most 1000.
fn eval_batch_size(spec: &nn_core::ModelSpec) -> usize {
    nn_core::model::predict_batch_size(spec).min(1000)
}

/// A model with its training configuration and progress.
pub struct Trainer {
    model: Model,
    compile: Compile,
    state: TrainState,
    history: History,
    normalization: Normalization,
    targets: Vec<f32>,
    /// The caller's own metadata, written into every model file and checkpoint.
    annotations: BTreeMap<String, String>,
    /// Tensors callbacks keep across a resume (see [`Trainer::keep_tensors`]), by full name.
    kept: Vec<Tensor>,
    /// Whether the `fit` under way validates after each epoch ([`Trainer::validates`]).
    pub(crate) validating: bool,
    /// Stops a `fit` under way from another thread ([`Trainer::interrupt`]).
    interrupt: Interrupt,
}

/// The model, its training configuration, where the run stands and how its inputs are made.
impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("model", &self.model)
            .field("compile", &self.compile)
            .field("state", &self.state)
            .field("epochs_in_history", &self.history.epochs.len())
            .field("normalization", &self.normalization)
            .finish_non_exhaustive()
    }
}

/// The largest training set (as `f32` images) kept in a GPU's memory for a run: 2 GiB.
const MAX_KEPT_BYTES: usize = 2 << 30;

/// The most optimiser steps a file may record ([`Trainer::resume`] refuses more).
const MAX_STEP: u64 = 1 << 48;

/// The metadata keys the trainer writes itself (an annotation cannot take them).
const TRAINER_KEYS: [&str; 4] = ["training_config", "history", "training_state", NORMALIZATION_KEY];

/// The update parameters of the trainer's step `step` (0-based) at rate `lr`, for an
/// optimiser whose state began at step `optimizer_from` (its bias correction counts from 1).
fn step_params(lr: f32, step: u64, optimizer_from: u64) -> StepParams {
    StepParams { lr, t: step.saturating_add(1).saturating_sub(optimizer_from) }
}

/// The dropout seed of the trainer's step `step` in a run seeded `seed`.
fn seed_of_step(seed: u64, step: u64) -> u64 {
    Rng::derive(seed, (1 << 40) + step).next_u64()
}

impl Trainer {
    /// Keras's `model.compile(optimizer, loss)`.
    pub fn new(model: Model, compile: Compile) -> Trainer {
        Trainer {
            model,
            compile,
            state: TrainState::default(),
            history: History::default(),
            normalization: Normalization::Scale,
            targets: Vec::new(),
            annotations: BTreeMap::new(),
            kept: Vec::new(),
            validating: false,
            interrupt: Interrupt::new(),
        }
    }

    /// Adds `key = value` to the metadata of every model file and checkpoint this trainer
    /// writes (e.g. the data set, or an application's own settings of the run), and which
    /// [`Trainer::resume_with`] reads back into [`Trainer::annotations`]. The trainer's own
    /// keys (`training_config`, `history`, `training_state`, `normalization`) cannot be set.
    pub fn set_annotation(&mut self, key: &str, value: impl Into<String>) {
        if !TRAINER_KEYS.contains(&key) {
            self.annotations.insert(key.to_string(), value.into());
        }
    }
    /// The annotations (see [`Trainer::set_annotation`]); after a resume, the checkpoint's
    /// metadata besides the trainer's own.
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        &self.annotations
    }

    /// A handle that stops this trainer's `fit` under way from another thread (a Ctrl-C
    /// handler): after the batch under way, undoing the unfinished epoch (see [`Interrupt`]).
    pub fn interrupt(&self) -> Interrupt {
        self.interrupt.clone()
    }

    /// The trainer with `history` as if it had run those epochs (callbacks' tests).
    #[cfg(test)]
    pub(crate) fn with_history(mut self, history: History) -> Trainer {
        self.state.epoch = history.epochs.len();
        self.history = history;
        self
    }

    /// Keeps `tensors` under `key` (replacing what was kept there) in every checkpoint this
    /// trainer writes, as `kept.<key>.<name>` tensors, and gets them back after
    /// [`Trainer::resume_with`]: the state a callback needs to continue exactly (EarlyStopping's
    /// best weights).
    pub fn keep_tensors(&mut self, key: &str, tensors: Vec<Tensor>) {
        let prefix = format!("{key}.");
        self.kept.retain(|t| !t.name.starts_with(&prefix));
        self.kept.extend(prefixed(&prefix, tensors));
    }
    /// The tensors kept under `key` (see [`Trainer::keep_tensors`]), with their own names;
    /// empty when there are none.
    pub fn kept_tensors(&self, key: &str) -> Vec<Tensor> {
        unprefixed(&format!("{key}."), &self.kept)
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// The model, mutable.
    pub fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }
    /// Gives the model back.
    pub fn into_model(self) -> Model {
        self.model
    }
    /// The compile settings.
    pub fn compile(&self) -> &Compile {
        &self.compile
    }
    /// The base learning rate: the optimiser's, which the schedule starts from.
    pub fn learning_rate(&self) -> f32 {
        self.compile.optimizer.lr()
    }
    /// Sets the base learning rate, from the next epoch of [`Trainer::fit`] on (Keras's
    /// `model.optimizer.learning_rate = lr`, as [`crate::ReduceLROnPlateau`] does at an
    /// epoch's end); under a schedule it scales the schedule's rates. Checkpoints and model
    /// files keep it, so a resumed run goes on at the new rate.
    ///
    /// # Errors
    /// [`TrainError::Config`] for a rate that is not finite and positive.
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(TrainError::Config(format!("a learning rate must be finite and positive, not {lr}")));
        }
        self.compile.optimizer = self.compile.optimizer.learning_rate(lr);
        Ok(())
    }
    /// The history so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// How the run's inputs are made from pixel bytes (a continued fit must use the same):
    /// what `evaluate`, `predict` and a `fit` without [`FitConfig::normalization`] use.
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    /// The trainer with inputs made from pixel bytes by `n` (a new trainer's are `x / 255`).
    /// For a model loaded with [`Model::load`], give the file's, or it evaluates, predicts and
    /// trains on inputs it was not trained on:
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use nn_train::{nn_core::Model, Compile, Trainer};
    /// let (model, file) = Model::load("model.safetensors")?;
    /// let trainer = Trainer::new(model, Compile::default()).with_normalization(file.normalization()?)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`TrainError::Config`] for a deviation that makes no numbers, or for another
    /// normalisation than the one a run that has trained epochs started on (it goes on with
    /// its own).
    pub fn with_normalization(mut self, n: Normalization) -> Result<Trainer> {
        check_normalization(n)?;
        self.check_run_normalization(n)?;
        self.normalization = n;
        Ok(self)
    }

    /// Refuses normalisation `n` for a run that has trained epochs on another (it goes on with
    /// the inputs it started on).
    fn check_run_normalization(&self, n: Normalization) -> Result<()> {
        let done = self.state.epoch;
        if done > 0 && n != self.normalization {
            return Err(TrainError::Config(format!(
                "the run's {done} epoch(s) trained on inputs normalised as {:?}, not {n:?}: a run goes on with \
                 its own (leave FitConfig::normalization at None)",
                self.normalization
            )));
        }
        Ok(())
    }

    /// Whether the `fit` under way validates after each epoch (false outside a fit), so that its epochs report
    /// `val_loss` and `val_accuracy`: callbacks that monitor those check it in
    /// [`crate::Callback::on_train_begin`], before any epoch's work is spent.
    pub fn validates(&self) -> bool {
        self.validating
    }

    /// Progress so far.
    pub fn state(&self) -> TrainState {
        self.state
    }

    /// Keeps `train` (normalised by `norm`, with its targets) in the device's memory for
    /// `Runtime::train_rows`; false, keeping nothing, where it is larger than
    /// [`MAX_KEPT_BYTES`] or the device cannot hold it (its allocation fails).
    fn keep_training_set(&mut self, train: &Dataset, norm: Normalization) -> Result<bool> {
        if train.images().len().saturating_mul(4) > MAX_KEPT_BYTES {
            return Ok(false);
        }
        let mut images = vec![0f32; train.images().len()];
        norm.apply(train.images(), &mut images);
        self.fill_targets(train.labels());
        let targets = std::mem::take(&mut self.targets);
        let kept = self.model.runtime().keep_training_set(&images, &targets, train.len(), self.compile.loss);
        self.targets = targets;
        match kept {
            Ok(k) => Ok(k),
            Err(nn_core::NnError::Device(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn fill_targets(&mut self, labels: &[u8]) {
        let loss = self.compile.loss;
        self.targets.clear();
        if loss.sparse() {
            self.targets.extend(labels.iter().map(|&l| l as f32));
        } else {
            let k = self.model.output_len();
            self.targets.resize(labels.len() * k, 0.0);
            self.targets.fill(0.0);
            for (row, &l) in self.targets.chunks_mut(k).zip(labels) {
                if (l as usize) < k {
                    row[l as usize] = 1.0;
                }
            }
        }
    }

    /// Refuses a loss that cannot read the model's outputs: probabilities (`from_logits:
    /// false`) from a linear or tanh head (negative outputs: a NaN loss), or logits from a
    /// softmax head (a second softmax, which trains badly without a word).
    fn check_loss(&self) -> Result<()> {
        let Some(LayerSpec::Dense(head)) = self.model.spec().layers.last() else { return Ok(()) };
        let loss = self.compile.loss;
        match head.activation {
            Activation::Linear | Activation::Tanh if !loss.from_logits() => Err(TrainError::Config(format!(
                "the model ends in a {} Dense layer, whose outputs are not probabilities, but the loss {} reads \
                 probabilities (from_logits: false): use from_logits: true, or a softmax head",
                head.activation.name(),
                loss.name()
            ))),
            Activation::Softmax if loss.from_logits() => Err(TrainError::Config(format!(
                "the model ends in a softmax, but the loss {} reads logits (from_logits: true) and would apply a \
                 second softmax: use from_logits: false, or a linear head",
                loss.name()
            ))),
            _ => Ok(()),
        }
    }

    fn check_data(&self, data: &Dataset) -> Result<()> {
        check_input_shape(self.model.spec(), data)?;
        self.check_labels(data.labels())
    }

    /// Refuses a label the model has no output for.
    fn check_labels(&self, labels: &[u8]) -> Result<()> {
        let classes = self.model.output_len();
        match labels.iter().position(|&l| l as usize >= classes) {
            Some(i) => Err(TrainError::Config(format!(
                "label {} (example {i}) does not fit the model's {classes} outputs",
                labels[i]
            ))),
            None => Ok(()),
        }
    }

    /// Refuses a learning rate, schedule or momentum that cannot train (NaN, infinite, not
    /// positive; a checkpoint's too) and a normalisation that makes no numbers (a deviation of 0).
    fn check_settings(&self, norm: Normalization) -> Result<()> {
        let lr = self.compile.optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(TrainError::Config(format!("learning rate {lr}: must be a positive number")));
        }
        self.compile.schedule.check().map_err(TrainError::Config)?;
        let momentum = match self.compile.optimizer {
            Optimizer::Sgd { momentum, .. } | Optimizer::RmsProp { momentum, .. } => momentum,
            Optimizer::Adam { .. } => 0.0,
        };
        if !(momentum.is_finite() && (0.0..1.0).contains(&momentum)) {
            return Err(TrainError::Config(format!("momentum {momentum}: must be at least 0 and below 1")));
        }
        // As PyTorch checks them: decay rates in [0, 1), a finite ε ≥ 0.
        let (decays, epsilon): (&[(&str, f32)], f32) = match self.compile.optimizer {
            Optimizer::Sgd { .. } => (&[], 0.0),
            Optimizer::Adam { beta_1, beta_2, epsilon, .. } => (&[("beta_1", beta_1), ("beta_2", beta_2)], epsilon),
            Optimizer::RmsProp { rho, epsilon, .. } => (&[("rho", rho)], epsilon),
        };
        if let Some((name, v)) = decays.iter().find(|(_, v)| !(0.0..1.0).contains(v)) {
            return Err(TrainError::Config(format!("{name} {v}: must be at least 0 and below 1")));
        }
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(TrainError::Config(format!("epsilon {epsilon}: must be a number at least 0")));
        }
        check_normalization(norm)
    }

    /// Keras's `fit`: trains for `cfg.epochs` epochs (continuing a resumed run from its last
    /// completed epoch), validating after each, running the callbacks, printing progress.
    /// Returns the history, all epochs so far (a copy: the trainer keeps its own,
    /// [`Trainer::history`], so the trainer is free to use at once).
    ///
    /// # Errors
    /// Data that do not fit the model, bad options, device failures, callback failures.
    pub fn fit(&mut self, train: Arc<Dataset>, cfg: FitConfig) -> Result<History> {
        let fitted = self.fit_here(train, cfg);
        self.validating = false;
        // The training set kept on a GPU for this fit (if any) goes, however the fit ended.
        self.model.runtime().drop_training_set();
        fitted?;
        Ok(self.history.clone())
    }

    fn fit_here(&mut self, train: Arc<Dataset>, mut cfg: FitConfig) -> Result<()> {
        if cfg.epochs == 0 || cfg.batch_size == 0 {
            return Err(TrainError::Config("epochs and batch size must be at least 1".into()));
        }
        self.check_loss()?;
        let normalization = cfg.normalization.unwrap_or(self.normalization);
        self.check_settings(normalization)?;
        self.check_run_normalization(normalization)?;
        let done = self.state.epoch;
        if done >= cfg.epochs {
            return Err(TrainError::Config(format!(
                "{} already trained; `epochs` is the total to reach (Keras's `epochs` with \
                 `initial_epoch` = {done}): ask for more than {done}",
                if done == 1 { "1 epoch".to_string() } else { format!("{done} epochs") }
            )));
        }
        self.check_data(&train).map_err(|e| TrainError::Config(format!("training data: {e}")))?;
        let (train, val) = match &cfg.validation {
            Validation::None => (train, None),
            Validation::Data(v) => {
                if v.is_empty() {
                    return Err(TrainError::Config("the validation data set is empty".into()));
                }
                self.check_data(v).map_err(|e| TrainError::Config(format!("validation data: {e}")))?;
                (train, Some(v.clone()))
            }
            Validation::Split(f) => {
                let (t, v) = mnist_data::validation_split(&train, *f)?;
                (Arc::new(t), Some(Arc::new(v)))
            }
        };
        if self.state.epoch == 0 {
            self.state.seed = cfg.seed;
        }
        self.normalization = normalization;
        let seed = self.state.seed;
        let bc = BatchConfig {
            batch_size: cfg.batch_size,
            shuffle: cfg.shuffle,
            drop_last: false,
            seed,
            normalization,
            prefetch: true,
        };
        let mut batcher = Batcher::new(train.clone(), bc)?;
        let augmented = cfg.augmentation.filter(|a| !a.is_identity());
        if let Some(aug) = augmented {
            batcher = batcher.with_transform(Arc::new(aug.fill_for(normalization)));
        }
        // Where the network's inputs are host memory (the CPU), each batch is gathered straight
        // into them by the step's own threads: no prefetch thread competing for the cores, no
        // copy. The batches are the batcher's, in the same order. Augmented batches (one random
        // stream per epoch) and devices with their own memory keep the prefetch thread.
        let inline = augmented.is_none() && self.model.runtime().host_inputs();
        let (px, norm) = (train.pixels(), normalization);
        // What the gathered inputs are (augmented batches come as slices, undeclared).
        self.model.runtime().set_input_levels(norm.levels());
        // On a GPU, the training set goes to its memory once (normalised, with its targets),
        // and each step sends only its row numbers and gathers its batch there (the same
        // batches, in the same order). Augmented batches, and a set the GPU cannot hold, go
        // batch by batch through the prefetch thread.
        let kept = !inline && augmented.is_none() && self.keep_training_set(&train, norm)?;
        let by_rows = inline || kept;
        // At most the whole set a batch, whatever the batch size asked (10¹² aborted here).
        let mut labels: Vec<u8> = Vec::with_capacity(cfg.batch_size.min(train.len()));
        let steps = batcher.batches_per_epoch();
        let rule = self.compile.optimizer.rule();
        let schedule = self.compile.schedule.resolved(steps.saturating_mul(cfg.epochs));
        let per_batch = cfg.callbacks.iter().any(|c| c.wants_batch_losses());
        // Keep the last completed epoch (at first: the start) for a callback that stops and
        // restores (TerminateOnNaN, when the loss blows up). A copy of the weights and the
        // optimiser state an epoch: small beside the epoch's work.
        let mut last_good = self.snapshot()?;
        let mut stop: Option<String> = None;
        // A batch callback's `Stop`: ends this epoch early, then training.
        let mut stop_after: Option<String> = None;
        // Whether the reason to stop was printed on an epoch's line.
        let mut said = false;
        let loss = self.compile.loss;
        self.model.runtime().take_stats()?;
        self.validating = val.is_some();
        let mut callbacks = std::mem::take(&mut cfg.callbacks);
        for cb in &mut callbacks {
            if let Control::Stop(why) | Control::StopAndRestore(why) = cb.on_train_begin(self)? {
                stop.get_or_insert(why);
            }
        }
        cfg.callbacks = callbacks;

        while self.state.epoch < cfg.epochs && stop.is_none() {
            let started = Instant::now();
            let epoch = self.state.epoch;
            let mut progress = EpochProgress::start(cfg.verbosity, epoch + 1, cfg.epochs, steps);
            let (mut loss_sum, mut correct, mut seen) = (0f64, 0f64, 0usize);
            let mut since_read = 0usize;
            let mut it = if by_rows { None } else { Some(batcher.epoch(epoch)) };
            let order = if by_rows { epoch_order(train.len(), cfg.shuffle, seed, epoch) } else { Vec::new() };
            let mut chunks = order.chunks(cfg.batch_size.max(1));
            let mut key_ahead: Option<u64> = None;
            let mut done = 0;
            // Read each epoch: a callback may have changed it (`set_learning_rate`).
            let base_lr = self.compile.optimizer.lr();
            let mut lr = base_lr;
            // This step's learning rate, update parameters and dropout seed.
            let optimizer_from = self.state.optimizer_from;
            let step = |s: u64| {
                let lr = schedule.lr(base_lr, s, epoch);
                (lr, step_params(lr, s, optimizer_from), seed_of_step(seed, s))
            };
            loop {
                let n = if let Some(it) = it.as_mut() {
                    let Some(b) = it.next_batch() else { break };
                    let (sp, step_seed);
                    (lr, sp, step_seed) = step(self.state.step);
                    self.fill_targets(&b.labels);
                    self.model.runtime().train_batch(&b.x, &self.targets, b.len(), loss, &rule, sp, step_seed)?;
                    b.len()
                } else if kept {
                    let Some(idx) = chunks.next() else { break };
                    let (sp, step_seed);
                    (lr, sp, step_seed) = step(self.state.step);
                    self.model.runtime().train_rows(idx, loss, &rule, sp, step_seed)?;
                    idx.len()
                } else {
                    let Some(idx) = chunks.next() else { break };
                    let next_idx = chunks.clone().next();
                    let (sp, step_seed);
                    (lr, sp, step_seed) = step(self.state.step);
                    labels.clear();
                    labels.extend(idx.iter().map(|&i| train.labels()[i as usize]));
                    self.fill_targets(&labels);
                    let images = train.images();
                    let (fill, fill_next) =
                        (gather(images, px, idx, norm), gather(images, px, next_idx.unwrap_or(&[]), norm));
                    // The network may gather the next batch during this step (see
                    // `Runtime::train_filled`); keys are unique to this process.
                    let key = key_ahead.take().unwrap_or_else(|| BATCH_KEYS.fetch_add(1, Ordering::Relaxed));
                    key_ahead = next_idx.map(|_| BATCH_KEYS.fetch_add(1, Ordering::Relaxed));
                    let batch = FilledBatch { n: idx.len(), fill: &fill, key };
                    let next =
                        next_idx.zip(key_ahead).map(|(i, key)| FilledBatch { n: i.len(), fill: &fill_next, key });
                    self.model.runtime().train_filled(batch, next, &self.targets, loss, &rule, sp, step_seed)?;
                    idx.len()
                };
                self.state.step += 1;
                done += 1;
                since_read += n;
                if per_batch || progress.wants_numbers() || done == steps {
                    let (l, c) = self.model.runtime().take_stats()?;
                    if per_batch {
                        let batch_loss = l / since_read as f64;
                        for cb in &mut cfg.callbacks {
                            match cb.on_batch_end(batch_loss) {
                                Control::Continue => {}
                                Control::Stop(why) => {
                                    stop_after.get_or_insert(why);
                                }
                                Control::StopAndRestore(why) => stop = Some(why),
                            }
                        }
                    }
                    loss_sum += l;
                    correct += c;
                    seen += since_read;
                    since_read = 0;
                    progress.update(done, loss_sum / seen as f64, correct / seen as f64);
                    if stop.is_some() || stop_after.is_some() {
                        break;
                    }
                }
                // After the batch's callbacks: what they request is seen at once.
                if self.interrupt.is_requested() {
                    // Honoured: the request is spent (a later fit runs), the history says so.
                    self.interrupt.clear();
                    stop = Some(format!(
                        "{INTERRUPTED} {} after {done} of {steps} batches: training stopped and the unfinished \
                         epoch undone ({})",
                        epoch + 1,
                        if epoch == 0 { "no epoch completed".to_string() } else { format!("back to epoch {epoch}") }
                    ));
                    break;
                }
            }
            drop(it);
            if let Some(why) = &stop {
                self.restore(&last_good)?;
                // The epoch's line says why; it is not said again at the end.
                progress.finish(done, why);
                said = true;
                break;
            }
            let penalty = self.model.runtime().regularization_penalty()? as f64;
            let mut log = EpochLog {
                epoch: epoch + 1,
                loss: loss_sum / seen.max(1) as f64 + penalty,
                accuracy: correct / seen.max(1) as f64,
                val_loss: None,
                val_accuracy: None,
                seconds: 0.0,
                // The f32 as written (1e-3, not 0.0010000000474974513): its shortest decimal.
                lr: lr.to_string().parse().unwrap_or(lr as f64),
            };
            if let Some(v) = &val {
                let e = self.evaluate(v)?;
                log.val_loss = Some(e.loss);
                log.val_accuracy = Some(e.accuracy);
            }
            log.seconds = started.elapsed().as_secs_f64();
            let mut summary = format!("loss: {:.4} - accuracy: {:.4}", log.loss, log.accuracy);
            if let (Some(vl), Some(va)) = (log.val_loss, log.val_accuracy) {
                summary += &format!(" - val_loss: {vl:.4} - val_accuracy: {va:.4}");
            }
            progress.finish(done, &summary);
            self.history.epochs.push(log.clone());
            self.state.epoch += 1;
            let mut callbacks = std::mem::take(&mut cfg.callbacks);
            let mut restored = false;
            for cb in &mut callbacks {
                match cb.on_epoch_end(&log, self)? {
                    Control::Continue => {}
                    Control::Stop(why) => stop = Some(why),
                    Control::StopAndRestore(why) => {
                        self.restore(&last_good)?;
                        stop = Some(why);
                        restored = true;
                    }
                }
            }
            let now = self.learning_rate();
            if now != base_lr && cfg.verbosity != Verbosity::Silent {
                // As Keras's ReduceLROnPlateau says it (verbose=1).
                println!("Epoch {}: learning rate {base_lr:.4e} → {now:.4e}", epoch + 1);
            }
            // Then what saves the trainer's state (checkpoints), with every callback's state
            // of this epoch in it whatever their order.
            // (Nothing, when the epoch was undone: the state is the last epoch's, committed then.)
            for cb in callbacks.iter_mut().filter(|_| !restored) {
                cb.on_epoch_committed(self)?;
            }
            cfg.callbacks = callbacks;
            if stop.is_none() {
                stop = stop_after.take();
            }
            if stop.is_none() && self.state.epoch < cfg.epochs {
                last_good = self.snapshot()?;
            }
        }
        let mut callbacks = std::mem::take(&mut cfg.callbacks);
        for cb in &mut callbacks {
            cb.on_train_end(self)?;
        }
        if let (Some(why), true, false) = (&stop, cfg.verbosity != Verbosity::Silent, said) {
            println!("{why}");
        }
        self.history.stopped = stop;
        Ok(())
    }

    /// The weights, optimiser state and progress, to [`Trainer::restore`] later.
    fn snapshot(&mut self) -> Result<Snapshot> {
        let weights = self.model.weights()?;
        let slots = self.model.runtime().optimizer_state()?;
        Ok(Snapshot { weights, slots, state: self.state, lr: self.learning_rate(), kept: self.kept.clone() })
    }

    /// Puts back a [`Trainer::snapshot`]: its weights, optimiser state, progress, learning rate
    /// and callbacks' kept tensors, and the history as it was then.
    fn restore(&mut self, s: &Snapshot) -> Result<()> {
        self.model.set_weights(&s.weights)?;
        self.model.runtime().set_optimizer_state(&s.slots)?;
        self.state = s.state;
        self.compile.optimizer = self.compile.optimizer.learning_rate(s.lr);
        self.kept.clone_from(&s.kept);
        self.history.epochs.truncate(s.state.epoch);
        Ok(())
    }

    /// Keras's `evaluate`: mean loss and accuracy on `data` (inference mode).
    ///
    /// # Errors
    /// Data that do not fit the model; [`TrainError::Config`] for an empty data set or a loss
    /// that cannot read the model's outputs; device failures.
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Evaluation> {
        self.check_loss()?;
        self.check_data(data)?;
        if data.is_empty() {
            return Err(TrainError::Config("nothing to evaluate: the data set is empty".into()));
        }
        let loss = self.compile.loss;
        let px = data.pixels();
        let norm = self.normalization;
        let batch = eval_batch_size(self.model.spec());
        self.model.runtime().take_stats()?;
        self.model.runtime().set_input_levels(norm.levels());
        let mut start = 0;
        let (mut loss_sum, mut correct) = (0f64, 0f64);
        while start < data.len() {
            let n = batch.min(data.len() - start);
            let bytes = &data.images()[start * px..(start + n) * px];
            self.fill_targets(&data.labels()[start..start + n]);
            let targets = std::mem::take(&mut self.targets);
            // The bytes are converted straight into the network's input, in parallel.
            let r = self.model.runtime().eval_filled(n, &convert(bytes, px, norm), &targets, loss);
            self.targets = targets;
            r?;
            let (l, c) = self.model.runtime().take_stats()?;
            loss_sum += l;
            correct += c;
            start += n;
        }
        let penalty = self.model.runtime().regularization_penalty()? as f64;
        let n = data.len().max(1) as f64;
        Ok(Evaluation { loss: loss_sum / n + penalty, accuracy: correct / n })
    }

    /// Keras's `train_on_batch`: one update on a batch of your own, for a training loop of
    /// your own. `x` holds `labels.len()` inputs, `[n, inputs]`, already prepared as the
    /// model's inputs (e.g. by [`Normalization::apply`]; any numbers, not only images); the
    /// update counts as the trainer's next step (the optimiser's bias correction, the
    /// schedule's rate at that step, checkpoints), and draws its dropout masks from the step
    /// number. Returns the batch's mean loss (before the update, with the regularisation
    /// penalty after it, as `fit` reports an epoch) and accuracy.
    ///
    /// ```
    /// # use nn_train::{Compile, Trainer};
    /// # use nn_train::nn_core::{Activation, Dense, Model, ModelSpec};
    /// let spec = ModelSpec::new(&[4]).add(Dense::new(3).activation(Activation::Softmax));
    /// let mut t = Trainer::new(Model::new(&spec, 1)?, Compile::default());
    /// let (x, labels) = (vec![0.5f32; 2 * 4], [0u8, 2]);
    /// for _ in 0..10 {
    ///     let e = t.train_on_batch(&x, &labels)?;
    ///     println!("loss {:.3}, accuracy {:.2}", e.loss, e.accuracy);
    /// }
    /// assert_eq!(t.state().step, 10);
    /// # Ok::<(), nn_train::TrainError>(())
    /// ```
    ///
    /// # Errors
    /// An empty batch, `x` that is not `labels.len()` inputs, a label the model has no output
    /// for, a loss that cannot read the model's head, settings that cannot train, a schedule
    /// over a whole run (which only `fit` knows the length of); device failures.
    pub fn train_on_batch(&mut self, x: &[f32], labels: &[u8]) -> Result<Evaluation> {
        self.check_batch(x, labels)?;
        self.check_settings(self.normalization)?;
        if self.compile.schedule.resolved(0) != self.compile.schedule.resolved(1) {
            return Err(TrainError::Config(format!(
                "the schedule {:?} runs over a whole fit, whose length train_on_batch does not know: give it \
                 its number of steps",
                self.compile.schedule
            )));
        }
        let s = self.state.step;
        let lr = self.compile.schedule.lr(self.compile.optimizer.lr(), s, self.state.epoch);
        let sp = step_params(lr, s, self.state.optimizer_from);
        let (loss, rule) = (self.compile.loss, self.compile.optimizer.rule());
        self.model.runtime().take_stats()?;
        self.fill_targets(labels);
        self.model.runtime().train_batch(x, &self.targets, labels.len(), loss, &rule, sp, seed_of_step(0, s))?;
        self.state.step += 1;
        self.batch_result(labels.len())
    }

    /// Keras's `test_on_batch`: the mean loss and accuracy of the model on a batch of your own,
    /// `x [n, inputs]` prepared as its inputs (see [`Trainer::train_on_batch`]), in inference
    /// mode; the weights stay as they are.
    ///
    /// # Errors
    /// As [`Trainer::train_on_batch`], less the settings and schedule.
    pub fn test_on_batch(&mut self, x: &[f32], labels: &[u8]) -> Result<Evaluation> {
        self.check_batch(x, labels)?;
        let loss = self.compile.loss;
        self.model.runtime().take_stats()?;
        self.fill_targets(labels);
        self.model.runtime().eval_batch(x, &self.targets, labels.len(), loss)?;
        self.batch_result(labels.len())
    }

    /// Refuses a batch of [`Trainer::train_on_batch`] or [`Trainer::test_on_batch`] that does
    /// not fit the model.
    fn check_batch(&self, x: &[f32], labels: &[u8]) -> Result<()> {
        self.check_loss()?;
        let (n, inputs) = (labels.len(), self.model.input_len());
        if n == 0 {
            return Err(TrainError::Config("an empty batch: give at least 1 example".into()));
        }
        if x.len() != n * inputs {
            return Err(TrainError::Config(format!(
                "{} values of x for {n} labels: the model takes {inputs} values an example ({:?}), so {} here",
                x.len(),
                self.model.spec().input_shape,
                n * inputs
            )));
        }
        self.check_labels(labels)
    }

    /// The mean loss (with the penalty) and accuracy of the `n` examples since the statistics
    /// were last read.
    fn batch_result(&mut self, n: usize) -> Result<Evaluation> {
        let (l, c) = self.model.runtime().take_stats()?;
        let penalty = self.model.runtime().regularization_penalty()? as f64;
        Ok(Evaluation { loss: l / n as f64 + penalty, accuracy: c / n as f64 })
    }

    /// Class probabilities `[N, classes]` for every image of `data`.
    ///
    /// The same images give the same numbers, call after call; an image predicted in another
    /// batch (a slice of `data`, or [`Trainer::predict_images`] on a few) may differ in the
    /// last bits, about 1e-7, as the order of a matrix product's sums follows the batch's size
    /// (as in PyTorch).
    ///
    /// # Errors
    /// Data that do not fit the model; device failures.
    pub fn predict(&mut self, data: &Dataset) -> Result<Array2<f32>> {
        predict_dataset(&mut self.model, data, self.normalization)
    }

    /// Class probabilities `[n, classes]` of images that are not in a [`Dataset`]: `pixels`
    /// holds `n` whole images (the model's input size each, bytes 0–255, row-major), prepared
    /// with the trainer's normalisation, as `predict` prepares a data set's.
    ///
    /// # Errors
    /// Bytes that are not whole images; device failures.
    pub fn predict_images(&mut self, pixels: &[u8]) -> Result<Array2<f32>> {
        predict_bytes(&mut self.model, pixels, self.normalization)
    }

    /// Predicted classes and the confusion matrix on `data`.
    ///
    /// # Errors
    /// As [`Trainer::predict`], and a label the model has no output for (as
    /// [`Trainer::evaluate`]: the matrix would leave its examples out).
    pub fn confusion(&mut self, data: &Dataset) -> Result<(Vec<usize>, Confusion)> {
        self.check_data(data)?;
        let p = self.predict(data)?;
        let k = p.ncols();
        let pred = argmax_rows(p.as_slice().unwrap_or(&[]), k);
        let c = Confusion::from_predictions(data.labels(), &pred, k);
        Ok((pred, c))
    }

    fn metadata(&self) -> BTreeMap<String, String> {
        let mut m = self.annotations.clone();
        m.insert("training_config".into(), serde_json::to_string(&self.compile).unwrap_or_default());
        m.insert("history".into(), self.history.to_json());
        m.insert("training_state".into(), serde_json::to_string(&self.state).unwrap_or_default());
        m.insert(NORMALIZATION_KEY.into(), normalization_json(self.normalization));
        m
    }

    /// Saves the model file: weights, architecture, training configuration and history.
    ///
    /// # Errors
    /// I/O failures naming the file.
    pub fn save_model(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(self.model.save(path, self.metadata())?)
    }

    /// Saves a checkpoint: the model file plus optimiser state (`optimizer.<param>.slot<k>`
    /// tensors) and progress, from which [`Trainer::resume`] continues exactly — given a `fit`
    /// with the same batch size, shuffle, validation and augmentation, which the checkpoint
    /// does not record (keep them with [`Trainer::set_annotation`], as `mnist train` does).
    ///
    /// # Errors
    /// I/O failures naming the file.
    pub fn save_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let mut f = self.model.to_file(self.metadata())?;
        f.extra = prefixed("optimizer.", self.model.runtime().optimizer_state()?).collect();
        f.extra.extend(prefixed("kept.", self.kept.clone()));
        Ok(f.save(path.as_ref())?)
    }

    /// Rebuilds a trainer from a checkpoint (or a model file: then the optimiser starts afresh),
    /// with the model on `make_model`'s device (e.g. `|f| Model::from_file(Cpu, f)`). This is
    /// also the way to use a trained model on data: the trainer reads back how its inputs were
    /// normalised (`predict`, `evaluate`), where `Model::load` gives the bare model.
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] when the file lacks the training configuration; model-file errors.
    pub fn resume_with(
        path: impl AsRef<Path>,
        make_model: impl FnOnce(&ModelFile) -> nn_core::Result<Model>,
    ) -> Result<Trainer> {
        let path = path.as_ref();
        let f = ModelFile::load(path)?;
        let bad = |m: &str| TrainError::Checkpoint { path: path.to_path_buf(), message: m.to_string() };
        let recorded = Compile::recorded_in(&f).map_err(|e| match e {
            TrainError::Config(m) => bad(&m),
            other => other,
        })?;
        let compile = recorded.ok_or_else(|| {
            bad("no training_config: a bare model (`Model::save`), not a trainer's file (`Trainer::save_model`, \
                 a checkpoint); read it with `Model::load`")
        })?;
        let history: History = f
            .metadata
            .get("history")
            .map(|h| serde_json::from_str(h))
            .transpose()
            .map_err(|e| bad(&format!("history: {e}")))?
            .unwrap_or_default();
        let mut state: TrainState = f
            .metadata
            .get("training_state")
            .map(|h| serde_json::from_str(h))
            .transpose()
            .map_err(|e| bad(&format!("training_state: {e}")))?
            .unwrap_or_default();
        // Errors from here name the file: its architecture, or its optimiser state, may not fit.
        let mut model = make_model(&f).map_err(|e| bad(&e.to_string()))?;
        let slots = unprefixed("optimizer.", &f.extra);
        model.runtime().set_optimizer_state(&slots).map_err(|e| {
            bad(&format!(
                "optimiser state: {e} (a checkpoint resumes the run that wrote it, with the same trainable \
                 layers; to freeze or thaw layers, start a new run from its weights: Model::load, \
                 ModelSpec::set_trainable, Trainer::new)"
            ))
        })?;
        // No run takes 2^48 steps (a billion steps a day for 700 years): a damaged file.
        if state.step > MAX_STEP {
            return Err(bad(&format!(
                "training_state: step {} is beyond any run (at most {MAX_STEP}): the file was edited or is damaged",
                state.step
            )));
        }
        if slots.is_empty() {
            // A model file: the optimiser starts afresh here (moments of zero, step 1).
            state.optimizer_from = state.step;
        } else if state.optimizer_from >= state.step && state.step > 0 {
            // Its optimiser state has taken at least one step since it began: Adam's bias
            // correction at step 0 would divide by zero.
            return Err(bad(&format!(
                "training_state: the optimiser's state began at step {} of {}: the file was edited or is damaged",
                state.optimizer_from, state.step
            )));
        }
        let normalization = f.normalization().map_err(|e| bad(&e.to_string()))?;
        let mut annotations = f.metadata.clone();
        annotations.retain(|k, _| !TRAINER_KEYS.contains(&k.as_str()));
        let kept = unprefixed("kept.", &f.extra);
        if state.epoch != history.epochs.len() {
            return Err(bad(&format!(
                "training_state counts {} epoch(s) done, its history holds {}: the file was edited or is damaged",
                state.epoch,
                history.epochs.len()
            )));
        }
        let trainer = Trainer {
            model,
            compile,
            state,
            history,
            normalization,
            targets: Vec::new(),
            annotations,
            kept,
            validating: false,
            interrupt: Interrupt::new(),
        };
        // Settings `fit` would refuse (a negative learning rate) are refused here, naming the file
        // they came from rather than as if given to `fit`. (Its normalisation was checked as it
        // was read. A loss that cannot read the model's head is left to `fit` and `evaluate`:
        // the file still predicts.)
        trainer.check_settings(normalization).map_err(|e| match e {
            TrainError::Config(m) => bad(&format!("training_config: {m}")),
            other => other,
        })?;
        Ok(trainer)
    }

    /// [`Trainer::resume_with`] on the CPU.
    ///
    /// # Errors
    /// As [`Trainer::resume_with`].
    pub fn resume(path: impl AsRef<Path>) -> Result<Trainer> {
        Trainer::resume_with(path, |f| Model::from_file(nn_core::cpu::Cpu, f))
    }
}

/// Refuses a normalisation that makes no numbers (a deviation of 0, a NaN mean).
fn check_normalization(norm: Normalization) -> Result<()> {
    if let Normalization::Standardize { mean, std } = norm {
        // A subnormal deviation is flushed to 0 by the CPU's arithmetic.
        if !(mean.is_finite() && std.is_finite() && std >= f32::MIN_POSITIVE) {
            return Err(TrainError::Config(format!(
                "normalization: standardize with mean {mean} and deviation {std}: the deviation must be a positive \
                 number (at least 1.2e-38)"
            )));
        }
    }
    Ok(())
}

/// `tensors` renamed `<prefix><name>` (how a checkpoint files them beside the weights).
fn prefixed(prefix: &str, tensors: Vec<Tensor>) -> impl Iterator<Item = Tensor> + '_ {
    tensors.into_iter().map(move |t| Tensor { name: format!("{prefix}{}", t.name), ..t })
}

/// Those of `tensors` named `<prefix><name>`, renamed `<name>`.
fn unprefixed(prefix: &str, tensors: &[Tensor]) -> Vec<Tensor> {
    tensors
        .iter()
        .filter_map(|t| t.name.strip_prefix(prefix).map(|n| Tensor { name: n.to_string(), ..t.clone() }))
        .collect()
}

/// Reads the `normalization` metadata of a model file ([`nn_core::model_file::parse_normalization`]):
/// [`Normalization::Scale`] when absent.
///
/// # Errors
/// Anything else, in words (a model's inputs would be prepared wrongly without a word).
pub fn parse_normalization(s: Option<&str>) -> std::result::Result<Normalization, String> {
    s.map_or(Ok(Normalization::Scale), nn_core::model_file::parse_normalization)
}

/// Keys naming the batches a network may gather ahead (see `Runtime::train_filled`), unique
/// in the process.
static BATCH_KEYS: AtomicU64 = AtomicU64::new(0);

/// How many rows ahead of its conversion a gathered training image is prefetched.
const PREFETCH_ROWS: usize = 4;

/// Asks the CPU to bring `bytes` into its caches ahead of their use (a hint; nothing on
/// targets without a prefetch instruction).
#[inline]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch reads nothing architecturally and cannot fault; the address is
        // inside `bytes`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Class probabilities `[N, classes]` of every image of `data` (normalised by `norm`, in batches
/// of [`nn_core::model::predict_batch_size`]).
///
/// # Errors
/// Data that do not fit the model; device failures.
pub fn predict_dataset(model: &mut Model, data: &Dataset, norm: Normalization) -> Result<Array2<f32>> {
    check_input_shape(model.spec(), data)?;
    predict_bytes(model, data.images(), norm)
}

/// Whether `data`'s images fit the input of the architecture `spec` (as [`Trainer::fit`] and
/// [`Trainer::evaluate`] check): as many pixels, and for an image-shaped input (`[h, w]`,
/// `[1, h, w]`) the same rows and columns. Checked before a model is built, it spares
/// allocating one that cannot take the data.
///
/// # Errors
/// [`TrainError::Config`] with both shapes.
pub fn check_input_shape(spec: &nn_core::ModelSpec, data: &Dataset) -> Result<()> {
    let want = spec.input_shape.iter().fold(1usize, |a, &d| a.saturating_mul(d));
    let sides = match spec.input_shape[..] {
        [h, w] | [1, h, w] => Some((h, w)),
        _ => None,
    };
    if data.pixels() != want {
        return Err(TrainError::Config(format!(
            "the model takes {want} inputs per example ({:?}), the data has {}×{} images",
            spec.input_shape,
            data.rows(),
            data.cols()
        )));
    }
    if let Some((h, w)) = sides.filter(|&s| s != (data.rows(), data.cols())) {
        return Err(TrainError::Config(format!(
            "the model's input shape {:?} reads images of {h}×{w} pixels, the data's are {}×{} (as many \
             values, in other rows): give input_shape [{r}, {c}] (or [{want}] for flat inputs)",
            spec.input_shape,
            data.rows(),
            data.cols(),
            r = data.rows(),
            c = data.cols()
        )));
    }
    Ok(())
}

/// Class probabilities `[N, classes]` of the `N` images in `pixels` (whole examples of
/// `model.input_len()` bytes each, 0–255), normalised by `norm`.
///
/// # Errors
/// Bytes that are not whole examples; device failures.
pub fn predict_bytes(model: &mut Model, pixels: &[u8], norm: Normalization) -> Result<Array2<f32>> {
    let px = model.input_len().max(1);
    if !pixels.len().is_multiple_of(px) {
        return Err(TrainError::Config(format!(
            "{} bytes are not whole images: the model takes {px} per example",
            pixels.len()
        )));
    }
    let count = pixels.len() / px;
    // Batch by batch, each batch's bytes converted straight into the network's input buffer:
    // converting the whole set first would write (and fault in) 31 MB of floats for MNIST's
    // test set, and a staging buffer would cost a copy per batch.
    let batch = nn_core::model::predict_batch_size(model.spec()).min(count.max(1));
    let classes = model.output_len();
    let mut out = vec![0f32; count * classes];
    model.runtime().set_input_levels(norm.levels());
    let mut start = 0;
    while start < count {
        let n = batch.min(count - start);
        let bytes = &pixels[start * px..(start + n) * px];
        model.predict_proba_filled(n, &convert(bytes, px, norm), &mut out[start * classes..(start + n) * classes])?;
        start += n;
    }
    Array2::from_shape_vec((count, classes), out).map_err(|e| TrainError::Config(e.to_string()))
}

/// The fill callback (see `nn_core::Fill`) of the batch of examples `idx` of `images` (`px`
/// bytes each). The shuffled rows are scattered over the whole set: each is asked for a few
/// rows ahead of its turn, so that its fetch from memory overlaps the conversion of the rows
/// before it (the gathering 20% faster, M1 2%).
fn gather<'a>(
    images: &'a [u8],
    px: usize,
    idx: &'a [u32],
    norm: Normalization,
) -> impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync + 'a {
    let row = move |i: u32| &images[i as usize * px..(i as usize + 1) * px];
    move |rows, x| {
        let mine = &idx[rows];
        mine.iter().take(PREFETCH_ROWS).for_each(|&i| prefetch(row(i)));
        for (k, &i) in mine.iter().enumerate() {
            if let Some(&ahead) = mine.get(k + PREFETCH_ROWS) {
                prefetch(row(ahead));
            }
            norm.apply(row(i), &mut x[k * px..(k + 1) * px]);
        }
    }
}

/// The fill callback (see `nn_core::Fill`) that converts consecutive images `bytes`
/// (`px` bytes each) into the network's input rows.
fn convert(bytes: &[u8], px: usize, norm: Normalization) -> impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync + '_ {
    move |rows, x| norm.apply(&bytes[rows.start * px..rows.end * px], x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_training_config_that_does_not_read_shows_one_that_does() {
        let spec = nn_core::ModelSpec::new(&[4]).add(nn_core::Dense::new(2));
        let mut file = Model::new(&spec, 1).unwrap().to_file(BTreeMap::new()).unwrap();
        file.metadata.insert("training_config".into(), r#"{"loss":"CrossEntropyLoss"}"#.into());
        let err = Compile::recorded_in(&file).unwrap_err().to_string();
        assert!(err.starts_with("training_config: ") && err.contains("(it reads as, e.g., {\"optimizer\""), "{err}");
        let example = err.split("e.g., ").nth(1).unwrap().trim_end_matches(')');
        file.metadata.insert("training_config".into(), example.into());
        assert_eq!(Compile::recorded_in(&file).unwrap(), Some(Compile::default()));
    }

    #[test]
    fn normalization_metadata_is_read_or_refused() {
        assert_eq!(parse_normalization(None), Ok(Normalization::Scale));
        assert_eq!(parse_normalization(Some("scale")), Ok(Normalization::Scale));
        assert!(parse_normalization(Some("garbage")).is_err());
        // What a trainer writes, a model file gives back to someone with nn-core alone.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let model = Model::new(&nn_core::ModelSpec::new(&[4]).add(nn_core::Dense::new(2)), 1).unwrap();
        let mut t = Trainer::new(model, Compile::default());
        t.normalization = Normalization::MNIST_STANDARD;
        t.save_model(&path).unwrap();
        let (_, file) = Model::load(&path).unwrap();
        assert_eq!(file.normalization().unwrap(), Normalization::MNIST_STANDARD);
        let json: serde_json::Value = serde_json::from_str(&file.metadata[NORMALIZATION_KEY]).unwrap();
        assert_eq!(json["kind"], "standardize");
    }

    #[test]
    fn a_fit_config_prints_its_settings_and_counts_its_callbacks() {
        let data = Arc::new(Dataset::new(vec![0; 8], vec![0, 1], 2, 2, 2).unwrap());
        let cfg = FitConfig {
            epochs: 3,
            validation: Validation::Data(data),
            callbacks: vec![Box::new(crate::TerminateOnNaN)],
            ..Default::default()
        };
        let text = format!("{cfg:?}");
        for part in ["epochs: 3", "batch_size: 32", "Data(Dataset { len: 2, rows: 2, cols: 2", "[1 callback(s)]"] {
            assert!(text.contains(part), "{part} not in {text}");
        }
    }
}
