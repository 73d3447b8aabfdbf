//! Random hyper-parameter search, Keras Tuner's `RandomSearch` for multilayer perceptrons and
//! small convnets.
//!
//! The model of a trial is the Keras Tuner tutorial's, `Flatten → Dense(units_i, relu) × layers
//! → [Dropout(dropout)] → Dense(classes)` on logits, optionally after convolution blocks
//! `Conv2D(filters_i, 3, relu) → MaxPooling2D(2)` (Keras's simple MNIST convnet is two of them
//! and no hidden Dense layer), trained with sparse categorical cross-entropy. The objective is the validation accuracy of the best epoch (as Keras Tuner
//! scores a trial; the kept model has that epoch's weights), on the last
//! `validation_split` of the training images (held out, never trained on), averaged over
//! `executions_per_trial` runs with different seeds; a trial with an execution whose loss became
//! NaN or infinite is marked diverged and ranks below every other. Trials are drawn at random from the space,
//! without repeating a combination; they may run on several threads, each with its own model
//! and trainer.
//!
//! ```no_run
//! # fn demo(train: &nn_train::mnist_data::Dataset) -> Result<(), nn_train::TrainError> {
//! use nn_train::tuner::{random_search, SearchSpace, TunerConfig};
//! let space = SearchSpace::default();
//! let outcome = random_search(&space, &TunerConfig { max_trials: 10, ..Default::default() }, train, &mut |t| {
//!     println!("trial {}: {:.4}", t.number, t.val_accuracy);
//! })?;
//! println!("best: {}", outcome.best().params);
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use crate::device::{build_model, settle, DeviceChoice};
use crate::{
    Compile, EarlyStopping, FitConfig, Interrupt, Optimizer, Schedule, TrainError, Trainer, Validation, Verbosity,
};
use mnist_data::{Dataset, Rng};
use nn_core::{Activation, Conv2D, Dense, Dropout, Flatten, Loss, ModelSpec, Pool2D, Reshape};

/// Whole numbers from `min` to `max` (inclusive) in steps of `step`: Keras Tuner's
/// `hp.Int(name, min, max, step)`. Written `32..512:32`, `1..3` or `64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntRange {
    /// Smallest value.
    pub min: usize,
    /// Largest value (included when a whole number of steps from `min`).
    pub max: usize,
    /// Distance between values (at least 1).
    pub step: usize,
}

impl IntRange {
    /// The values of the range (allocated: see [`IntRange::len`] first for a range of user
    /// input).
    pub fn values(&self) -> Vec<usize> {
        (0..self.len()).map(|i| self.nth(i)).collect()
    }

    /// How many values the range holds (0 when the minimum is above the maximum), counted
    /// without listing them.
    pub fn len(&self) -> usize {
        if self.min > self.max {
            0
        } else {
            (self.max - self.min) / self.step.max(1) + 1
        }
    }

    /// Whether the range holds no value (its minimum is above its maximum).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th value (from 0), `min + i·step`; past the end, the last value.
    pub fn nth(&self, i: usize) -> usize {
        self.min + i.min(self.len().saturating_sub(1)) * self.step.max(1)
    }

    /// The largest value the range holds (`min` when it holds none).
    pub fn largest(&self) -> usize {
        self.nth(usize::MAX)
    }
}

impl FromStr for IntRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (range, step) = match s.split_once(':') {
            Some((r, st)) => (r, Some(st)),
            None => (s, None),
        };
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{s}': '{t}' is not a whole number (expected MIN..MAX[:STEP], e.g. 32..512:32)"))
        };
        let (min, max) = match range.split_once("..") {
            Some((a, b)) => (num(a)?, num(b.trim_start_matches('='))?),
            None => {
                let v = num(range)?;
                (v, v)
            }
        };
        let step = step.map(num).transpose()?.unwrap_or(1);
        if min > max {
            return Err(format!("'{s}': the minimum {min} is above the maximum {max}"));
        }
        if step == 0 {
            return Err(format!("'{s}': the step must be at least 1"));
        }
        Ok(IntRange { min, max, step })
    }
}

impl fmt::Display for IntRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else if self.step == 1 {
            write!(f, "{}..{}", self.min, self.max)
        } else {
            write!(f, "{}..{}:{}", self.min, self.max, self.step)
        }
    }
}

/// Parses a comma-separated list of choices (`1e-2,1e-3,1e-4`): Keras Tuner's `hp.Choice`.
///
/// # Errors
/// An empty list, an empty item (`1e-3,,1e-4`: a value left out?) or an item that does not
/// parse.
pub fn parse_choices<T: FromStr>(s: &str) -> Result<Vec<T>, String> {
    let items: Vec<&str> = s.split(',').map(str::trim).collect();
    if items.iter().all(|t| t.is_empty()) {
        return Err("expected at least one value, comma separated".into());
    }
    if items.iter().any(|t| t.is_empty()) {
        return Err(format!("'{s}' has an empty value between its commas"));
    }
    items.iter().map(|t| t.parse::<T>().map_err(|_| format!("'{t}' is not a valid value"))).collect()
}

/// The most convolution blocks a search may ask for (a 3×3 convolution and 2×2 pooling leave
/// nothing of a 28×28 image after 3).
const MAX_CONV_BLOCKS: usize = 8;

/// The space searched.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchSpace {
    /// Number of convolution blocks, `Conv2D(filters, 3, relu) → MaxPooling2D(2)` each, before
    /// the Dense layers; `0..0` (the default): none, a multilayer perceptron.
    pub conv_blocks: IntRange,
    /// Filters of each convolution block (drawn for each block separately; unused without
    /// convolution blocks).
    pub filters: IntRange,
    /// Number of hidden Dense layers (0 only with at least one convolution block).
    pub layers: IntRange,
    /// Units of each hidden layer (drawn for each layer separately).
    pub units: IntRange,
    /// Learning rates.
    pub learning_rates: Vec<f32>,
    /// Dropout rates before the output layer (0: no Dropout layer).
    pub dropouts: Vec<f32>,
    /// Batch sizes.
    pub batch_sizes: Vec<usize>,
    /// Optimisers (their learning rate is replaced by the trial's).
    pub optimizers: Vec<Optimizer>,
}

impl Default for SearchSpace {
    /// Keras Tuner's tutorial space: 1 to 2 layers of 32 to 512 units (step 32), learning rate
    /// 1e-2, 1e-3 or 1e-4, dropout 0, 0.2 or 0.5, batch 32 or 128, Adam or SGD; no convolution
    /// (`filters` 16 to 64, step 16, when `conv_blocks` asks for some).
    fn default() -> Self {
        SearchSpace {
            conv_blocks: IntRange { min: 0, max: 0, step: 1 },
            filters: IntRange { min: 16, max: 64, step: 16 },
            layers: IntRange { min: 1, max: 2, step: 1 },
            units: IntRange { min: 32, max: 512, step: 32 },
            learning_rates: vec![1e-2, 1e-3, 1e-4],
            dropouts: vec![0.0, 0.2, 0.5],
            batch_sizes: vec![32, 128],
            optimizers: vec![Optimizer::adam(), Optimizer::sgd()],
        }
    }
}

impl SearchSpace {
    /// Checks that every dimension has at least one usable value.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the dimension: for the ranges, a minimum above the maximum
    /// or a step of 0; no hidden layer without a convolution block, more than 16 hidden layers,
    /// layers of 0 units, more than 8 convolution blocks or blocks of 0 filters; for the lists,
    /// an empty list or a value out of its domain. (Whether the images are large enough for
    /// the convolution blocks is checked by [`random_search`], which knows them.)
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        for (name, r) in [
            ("conv_blocks", &self.conv_blocks),
            ("filters", &self.filters),
            ("layers", &self.layers),
            ("units", &self.units),
        ] {
            if r.min > r.max {
                return bad(format!("{name}: the minimum {} is above the maximum {}", r.min, r.max));
            }
            if r.step == 0 {
                return bad(format!("{name}: the step must be at least 1"));
            }
        }
        if self.conv_blocks.max > MAX_CONV_BLOCKS {
            return bad(format!(
                "conv_blocks: at most {MAX_CONV_BLOCKS} convolution blocks, got {}",
                self.conv_blocks.max
            ));
        }
        if self.conv_blocks.max > 0 && self.filters.min == 0 {
            return bad("filters: at least 1 filter per convolution block".into());
        }
        if self.layers.min == 0 && self.conv_blocks.min == 0 {
            return bad(
                "layers: at least 1 hidden layer (0 is allowed only when every trial has a convolution block: \
                 conv_blocks from 1)"
                    .into(),
            );
        }
        if self.layers.max > 16 {
            return bad(format!("layers: at most 16 hidden layers, got {}", self.layers.max));
        }
        if self.layers.max > 0 && self.units.min == 0 {
            return bad("units: at least 1 unit per layer".into());
        }
        if self.learning_rates.is_empty() || self.learning_rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
            return bad(format!("learning rates must be positive numbers, got {:?}", self.learning_rates));
        }
        if self.dropouts.is_empty() || self.dropouts.iter().any(|d| !(0.0..1.0).contains(d)) {
            return bad(format!("dropout rates must be at least 0 and below 1, got {:?}", self.dropouts));
        }
        if self.batch_sizes.is_empty() || self.batch_sizes.contains(&0) {
            return bad(format!("batch sizes must be at least 1, got {:?}", self.batch_sizes));
        }
        if self.optimizers.is_empty() {
            return bad("at least one optimiser".into());
        }
        Ok(())
    }

    /// How many different combinations the space holds (saturating).
    pub fn size(&self) -> u128 {
        // The stacks of `counts` layers, each with one of `choices` widths.
        let stacks = |counts: &IntRange, choices: &IntRange| {
            let widths = choices.len() as u128;
            (0..counts.len())
                .map(|i| widths.saturating_pow(u32::try_from(counts.nth(i)).unwrap_or(u32::MAX)))
                .fold(0u128, u128::saturating_add)
        };
        let architectures = stacks(&self.conv_blocks, &self.filters).saturating_mul(stacks(&self.layers, &self.units));
        [self.learning_rates.len(), self.dropouts.len(), self.batch_sizes.len(), self.optimizers.len()]
            .iter()
            .fold(architectures, |acc, &n| acc.saturating_mul(n as u128))
    }

    /// [`SearchSpace::validate`], then checks the space against images of `rows × cols` and
    /// `classes` classes: they survive the most convolution blocks the space asks for (each
    /// takes 2 rows and columns off, then halves them), and its largest models are within the
    /// limits of [`ModelSpec::resolve`] (so that no trial fails for its size once the search
    /// has started). [`random_search`] runs it first.
    ///
    /// # Errors
    /// As [`SearchSpace::validate`]; [`TrainError::Config`] naming `conv_blocks` for images too
    /// small, or the largest architecture and why it is refused.
    pub fn check(&self, rows: usize, cols: usize, classes: usize) -> Result<(), TrainError> {
        self.validate()?;
        let fits = conv_blocks_fitting(rows.min(cols));
        if self.conv_blocks.largest() > fits {
            return Err(TrainError::Config(format!(
                "conv_blocks: {} blocks of a 3×3 convolution and 2×2 pooling leave nothing of {rows}×{cols} \
                 images; at most {fits}",
                self.conv_blocks.largest()
            )));
        }
        // Parameters grow with the filters, the units and the hidden layers: the largest
        // model of each number of convolution blocks.
        for i in 0..self.conv_blocks.len() {
            let largest = HyperParams {
                filters: vec![self.filters.largest(); self.conv_blocks.nth(i)],
                units: vec![self.units.largest(); self.layers.largest()],
                learning_rate: self.learning_rates[0],
                dropout: 0.0,
                batch_size: self.batch_sizes[0],
                optimizer: self.optimizers[0],
            };
            largest.spec(&[rows, cols], classes).resolve().map_err(|e| {
                TrainError::Config(format!(
                    "the space's largest model ({}) cannot be built: {e}",
                    largest.architecture()
                ))
            })?;
        }
        Ok(())
    }

    /// Draws one combination.
    ///
    /// # Panics
    /// When a list is empty or `layers` or `units` holds no value (minimum above maximum):
    /// spaces that [`SearchSpace::validate`] rejects, as [`random_search`] does first.
    pub fn sample(&self, rng: &mut Rng) -> HyperParams {
        let pick = |rng: &mut Rng, n: usize| rng.below(n.max(1));
        let stack = |rng: &mut Rng, counts: &IntRange, choices: &IntRange| {
            let n = counts.nth(pick(rng, counts.len()));
            (0..n).map(|_| choices.nth(pick(rng, choices.len()))).collect::<Vec<usize>>()
        };
        // The dense layers first, and no draw for no convolution, so that a space without
        // convolution draws as it did before convolution blocks existed.
        let units = stack(rng, &self.layers, &self.units);
        let filters = if self.conv_blocks.max == 0 { Vec::new() } else { stack(rng, &self.conv_blocks, &self.filters) };
        let learning_rate = self.learning_rates[pick(rng, self.learning_rates.len())];
        let dropout = self.dropouts[pick(rng, self.dropouts.len())];
        let batch_size = self.batch_sizes[pick(rng, self.batch_sizes.len())];
        let optimizer = self.optimizers[pick(rng, self.optimizers.len())].learning_rate(learning_rate);
        HyperParams { filters, units, learning_rate, dropout, batch_size, optimizer }
    }
}

/// How many blocks of a 3×3 convolution (no padding) and 2×2 pooling leave at least one pixel
/// of a side of `side` pixels.
fn conv_blocks_fitting(mut side: usize) -> usize {
    let mut blocks = 0;
    while side >= 4 {
        side = (side - 2) / 2;
        blocks += 1;
    }
    blocks
}

/// One combination of hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct HyperParams {
    /// Filters of each convolution block (their number is the number of blocks; none: a
    /// multilayer perceptron).
    pub filters: Vec<usize>,
    /// Units of each hidden layer (their number is the number of layers).
    pub units: Vec<usize>,
    /// The learning rate.
    pub learning_rate: f32,
    /// Dropout before the output layer (0: none).
    pub dropout: f32,
    /// Images per update.
    pub batch_size: usize,
    /// The optimiser, with the learning rate set.
    pub optimizer: Optimizer,
}

impl HyperParams {
    /// The architecture for images of `input_shape` (`[rows, cols]`) and `classes` classes.
    pub fn spec(&self, input_shape: &[usize], classes: usize) -> ModelSpec {
        let mut s = ModelSpec::new(input_shape);
        if !self.filters.is_empty() {
            s = s.add(Reshape { target_shape: [1].iter().chain(input_shape).copied().collect() });
            for &f in &self.filters {
                s = s.add(Conv2D::new(f, 3).activation(Activation::Relu)).add(Pool2D::max(2));
            }
        }
        s = s.add(Flatten::new());
        for &u in &self.units {
            s = s.add(Dense::new(u).activation(Activation::Relu));
        }
        if self.dropout > 0.0 {
            s = s.add(Dropout::new(self.dropout));
        }
        s.add(Dense::new(classes))
    }

    /// Optimiser and loss (sparse categorical cross-entropy on logits, constant rate).
    pub fn compile(&self) -> Compile {
        Compile {
            optimizer: self.optimizer,
            loss: Loss::SparseCategoricalCrossentropy { from_logits: true },
            schedule: Schedule::Constant,
        }
    }

    /// A key identifying the combination (to avoid repeating one).
    fn key(&self) -> String {
        format!(
            "{:?}|{:?}|{}|{}|{}|{}",
            self.filters,
            self.units,
            self.learning_rate,
            self.dropout,
            self.batch_size,
            self.optimizer.name()
        )
    }

    /// The units as `256,64`.
    pub fn units_text(&self) -> String {
        list(&self.units, ",")
    }

    /// The filters as `32,64`.
    pub fn filters_text(&self) -> String {
        list(&self.filters, ",")
    }

    /// The architecture's dimensions: `conv_blocks=2 filters=[32,64] layers=1 units=[128]`
    /// (the convolution part only when there is some).
    pub fn architecture(&self) -> String {
        let conv = if self.filters.is_empty() {
            String::new()
        } else {
            format!("conv_blocks={} filters=[{}] ", self.filters.len(), self.filters_text())
        };
        format!("{conv}layers={} units=[{}]", self.units.len(), self.units_text())
    }
}

/// Numbers joined by `sep`.
fn list(values: &[usize], sep: &str) -> String {
    values.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(sep)
}

impl fmt::Display for HyperParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} learning_rate={} dropout={} batch_size={} optimizer={}",
            self.architecture(),
            self.learning_rate,
            self.dropout,
            self.batch_size,
            self.optimizer.name()
        )
    }
}

/// How the search runs.
#[derive(Clone, Debug, PartialEq)]
pub struct TunerConfig {
    /// Trials to run (fewer when the space holds fewer combinations).
    pub max_trials: usize,
    /// Trainings per trial, with different seeds; the objective is their mean.
    pub executions_per_trial: usize,
    /// Epochs of each training.
    pub epochs: usize,
    /// Fraction of the training images held out for validation (the last ones).
    pub validation_split: f64,
    /// Seed of the sampling and of the trainings.
    pub seed: u64,
    /// Trials trained at once, each on its own thread (0 counts as 1).
    pub parallel: usize,
    /// Where each trial trains (`Auto` is settled once, before the first trial; see
    /// [`crate::device::settle`]).
    pub device: DeviceChoice,
    /// Once requested (a Ctrl-C handler, or `on_trial`), no further trial starts: the search
    /// ends with the trials under way, and its outcome holds those finished. `None`: every
    /// trial runs.
    pub stop: Option<Interrupt>,
}

impl Default for TunerConfig {
    /// 10 trials of 1 execution, 3 epochs, validation split 0.2, seed 42, one at a time, on
    /// the CPU.
    fn default() -> Self {
        TunerConfig {
            max_trials: 10,
            executions_per_trial: 1,
            epochs: 3,
            validation_split: 0.2,
            seed: 42,
            parallel: 1,
            device: DeviceChoice::Cpu,
            stop: None,
        }
    }
}

/// The result of one trial.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialResult {
    /// 1-based trial number (in the order drawn).
    pub number: usize,
    /// The hyper-parameters.
    pub params: HyperParams,
    /// Mean validation accuracy of the executions' best epochs (the objective).
    pub val_accuracy: f64,
    /// Mean validation loss of the executions' best epochs.
    pub val_loss: f64,
    /// Wall time of the trial (all executions).
    pub seconds: f64,
    /// An execution's loss became NaN or infinite (a learning rate too high for some seeds at
    /// least): the trial ranks below every trial whose executions all trained, and its scores
    /// are the means over the executions that trained (NaN when none did).
    pub diverged: bool,
}

/// What a search found.
#[derive(Debug)]
pub struct SearchOutcome {
    /// Every trial, in the order they finished.
    pub trials: Vec<TrialResult>,
    /// Index into `trials` of the best one (the highest validation accuracy of the trials that
    /// did not diverge; the earlier on a tie).
    pub best_index: usize,
    /// The trained model of the best trial (its best execution), with its history.
    pub best_trainer: Trainer,
}

impl SearchOutcome {
    /// The best trial.
    pub fn best(&self) -> &TrialResult {
        &self.trials[self.best_index]
    }
}

/// Draws up to `n` different combinations (fewer when the space is smaller).
pub fn draw_trials(space: &SearchSpace, n: usize, seed: u64) -> Vec<HyperParams> {
    let mut rng = Rng::derive(seed, 0x7475_6e65);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut misses = 0;
    while out.len() < n && misses < 1000 {
        let p = space.sample(&mut rng);
        if seen.insert(p.key()) {
            out.push(p);
            misses = 0;
        } else {
            misses += 1;
        }
    }
    out
}

/// Trains one trial: `executions` models with seeds derived from `seed`; returns the result
/// and the trainer of its best execution.
fn run_trial(
    number: usize,
    params: &HyperParams,
    cfg: &TunerConfig,
    device: DeviceChoice,
    train: &Arc<Dataset>,
    val: &Arc<Dataset>,
) -> Result<(TrialResult, Trainer), TrainError> {
    let started = Instant::now();
    let spec = params.spec(&[train.rows(), train.cols()], train.classes());
    // The best execution: its trainer, accuracy and whether it diverged.
    let mut best: Option<(Trainer, f64, bool)> = None;
    let (mut acc_sum, mut loss_sum, mut trained) = (0.0, 0.0, 0usize);
    let executions = cfg.executions_per_trial.max(1);
    for e in 0..executions {
        let seed = Rng::derive(cfg.seed, (number as u64) << 16 | e as u64).next_u64() >> 11;
        let (model, _) = build_model(device, &spec, seed)?;
        let mut t = Trainer::new(model, params.compile());
        t.fit(
            train.clone(),
            FitConfig {
                epochs: cfg.epochs,
                batch_size: params.batch_size,
                validation: Validation::Data(val.clone()),
                seed,
                verbosity: Verbosity::Silent,
                // Keras Tuner scores an execution by its best epoch: keep that epoch's weights
                // (a patience of every epoch never stops it).
                callbacks: vec![Box::new(EarlyStopping::new("val_accuracy").patience(cfg.epochs).restore_at_end(true))],
                ..Default::default()
            },
        )?;
        let epochs = &t.history().epochs;
        let last = epochs.last();
        let blew_up = !last.is_some_and(|l| l.loss.is_finite() && l.val_loss.is_some_and(f64::is_finite));
        // The best epoch as EarlyStopping finds it: the first of the highest accuracy.
        let best_epoch = epochs.iter().filter(|l| l.val_accuracy.is_some_and(f64::is_finite)).fold(
            None::<&crate::history::EpochLog>,
            |b, l| match b {
                Some(b) if l.val_accuracy <= b.val_accuracy => Some(b),
                _ => Some(l),
            },
        );
        let acc = best_epoch.and_then(|l| l.val_accuracy).unwrap_or(0.0);
        let loss = best_epoch.and_then(|l| l.val_loss).unwrap_or(f64::NAN);
        // A diverged execution is kept only while no execution trained.
        let better = match &best {
            None => true,
            Some((_, b_acc, b_blew_up)) => (*b_blew_up && !blew_up) || (blew_up == *b_blew_up && acc > *b_acc),
        };
        if !blew_up {
            acc_sum += acc;
            loss_sum += loss;
            trained += 1;
        }
        if better {
            best = Some((t, acc, blew_up));
        }
    }
    // The means over the executions that trained (NaN when none did).
    let n = trained as f64;
    let result = TrialResult {
        number,
        params: params.clone(),
        val_accuracy: if trained > 0 { acc_sum / n } else { f64::NAN },
        val_loss: if trained > 0 { loss_sum / n } else { f64::NAN },
        seconds: started.elapsed().as_secs_f64(),
        diverged: trained < executions,
    };
    let trainer = best.map(|(t, ..)| t).ok_or_else(|| TrainError::Config("a trial ran no execution".into()))?;
    Ok((result, trainer))
}

/// Whether trial `a` ranks above trial `b`: a trial whose executions all trained above one
/// with a diverged execution; then the higher validation accuracy (none at all, when every
/// execution diverged, ranks last); then the earlier trial.
fn ranks_above(a: &TrialResult, b: &TrialResult) -> bool {
    let score = |t: &TrialResult| if t.val_accuracy.is_nan() { f64::NEG_INFINITY } else { t.val_accuracy };
    let (sa, sb) = (score(a), score(b));
    (b.diverged && !a.diverged) || (a.diverged == b.diverged && (sa > sb || (sa == sb && a.number < b.number)))
}

/// Runs the search on `train` (the last `cfg.validation_split` of it validates), calling
/// `on_trial` as each trial finishes (in finishing order).
///
/// # Errors
/// [`TrainError::Config`] for an invalid space or configuration, when every trial diverged, or
/// when [`TunerConfig::stop`] stopped the search before a trial finished; [`TrainError::Data`]
/// for a data set too small to split (or a split fraction outside (0, 1)); the first trial that
/// fails (the others are not started).
pub fn random_search(
    space: &SearchSpace,
    cfg: &TunerConfig,
    train: &Dataset,
    on_trial: &mut dyn FnMut(&TrialResult),
) -> Result<SearchOutcome, TrainError> {
    space.check(train.rows(), train.cols(), train.classes())?;
    if cfg.max_trials == 0 || cfg.epochs == 0 || cfg.executions_per_trial == 0 {
        return Err(TrainError::Config("trials, executions per trial and epochs must be at least 1".into()));
    }
    let (device, _) = settle(cfg.device);
    let (fit_part, val_part) = mnist_data::validation_split(train, cfg.validation_split)?;
    let (fit_part, val_part) = (Arc::new(fit_part), Arc::new(val_part));
    let trials = draw_trials(space, cfg.max_trials, cfg.seed);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let workers = cfg.parallel.clamp(1, trials.len().max(1));
    // Each result comes with the way to tell its worker that it was handled: a worker starts
    // its next trial only then, so that a stop requested in `on_trial` starts no other.
    type Finished = (Result<(TrialResult, Trainer), TrainError>, mpsc::Sender<()>);
    let (tx, rx) = mpsc::channel::<Finished>();

    let mut results = Vec::new();
    let mut best: Option<(usize, Trainer)> = None;
    let mut first_error = None;
    std::thread::scope(|s| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (trials, next, failed, fit_part, val_part) = (&trials, &next, &failed, &fit_part, &val_part);
            s.spawn(move || {
                let (handled_tx, handled) = mpsc::channel();
                loop {
                    if failed.load(Ordering::Relaxed) || cfg.stop.as_ref().is_some_and(Interrupt::is_requested) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(params) = trials.get(i) else { break };
                    let r = run_trial(i + 1, params, cfg, device, fit_part, val_part);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if tx.send((r, handled_tx.clone())).is_err() || handled.recv().is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (r, handled) in rx {
            match r {
                Ok((result, trainer)) => {
                    on_trial(&result);
                    let better = best.as_ref().is_none_or(|(b, _)| ranks_above(&result, &results[*b]));
                    results.push(result);
                    if better {
                        best = Some((results.len() - 1, trainer));
                    }
                }
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
            // The worker may have ended already (it stops after a failed trial): nothing to tell.
            let _ = handled.send(());
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    let (best_index, best_trainer) = best.ok_or_else(|| {
        TrainError::Config(
            if cfg.stop.as_ref().is_some_and(Interrupt::is_requested) {
                "the search was stopped before a trial finished"
            } else {
                "no trial ran"
            }
            .into(),
        )
    })?;
    if results[best_index].val_accuracy.is_nan() {
        let rates: Vec<String> = space.learning_rates.iter().map(|r| r.to_string()).collect();
        return Err(TrainError::Config(format!(
            "every trial diverged (its loss became NaN or infinite): try lower learning rates than {}",
            rates.join(", ")
        )));
    }
    Ok(SearchOutcome { trials: results, best_index, best_trainer })
}

/// The trials as CSV: `trial,conv_blocks,filters,layers,units,learning_rate,dropout,batch_size,optimizer,val_accuracy,val_loss,seconds,status`
/// (filters and units separated by `;`; status `ok` or `diverged`; a score no execution reached is left
/// empty), in trial order.
pub fn trials_csv(trials: &[TrialResult]) -> String {
    let mut sorted: Vec<&TrialResult> = trials.iter().collect();
    sorted.sort_by_key(|t| t.number);
    let mut s = String::from(
        "trial,conv_blocks,filters,layers,units,learning_rate,dropout,batch_size,optimizer,val_accuracy,val_loss,seconds,status\n",
    );
    for t in sorted {
        let number = |v: f64| if v.is_finite() { format!("{v:.6}") } else { String::new() };
        let status = if t.diverged { "diverged" } else { "ok" };
        let (acc, loss) = (number(t.val_accuracy), number(t.val_loss));
        s += &format!(
            "{},{},{},{},{},{},{},{},{},{acc},{loss},{:.2},{status}\n",
            t.number,
            t.params.filters.len(),
            list(&t.params.filters, ";"),
            t.params.units.len(),
            list(&t.params.units, ";"),
            t.params.learning_rate,
            t.params.dropout,
            t.params.batch_size,
            t.params.optimizer.name(),
            t.seconds
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_choices_parse() {
        assert_eq!("32..512:32".parse::<IntRange>(), Ok(IntRange { min: 32, max: 512, step: 32 }));
        assert_eq!("1..2".parse::<IntRange>().map(|r| r.values()), Ok(vec![1, 2]));
        assert_eq!("64".parse::<IntRange>().map(|r| r.values()), Ok(vec![64]));
        assert_eq!("32..100:32".parse::<IntRange>().map(|r| r.values()), Ok(vec![32, 64, 96]));
        assert!("5..1".parse::<IntRange>().is_err());
        assert!("1..4:0".parse::<IntRange>().is_err());
        assert!("a..b".parse::<IntRange>().is_err());
        assert_eq!(parse_choices::<f32>("1e-2, 1e-3"), Ok(vec![1e-2, 1e-3]));
        assert!(parse_choices::<f32>("").is_err());
        assert!(parse_choices::<usize>("32,x").is_err());
        assert_eq!(
            parse_choices::<f32>("1e-3,,1e-4"),
            Err("'1e-3,,1e-4' has an empty value between its commas".into())
        );
        assert!(parse_choices::<f32>("1e-3,").is_err());
        assert_eq!("32..512:32".parse::<IntRange>().map(|r| r.to_string()), Ok("32..512:32".to_string()));
    }

    #[test]
    fn sampling_stays_in_the_space_and_never_repeats() {
        let space = SearchSpace {
            layers: IntRange { min: 1, max: 2, step: 1 },
            units: IntRange { min: 32, max: 64, step: 32 },
            learning_rates: vec![1e-3],
            dropouts: vec![0.0],
            batch_sizes: vec![32],
            optimizers: vec![Optimizer::adam()],
            ..SearchSpace::default()
        };
        assert_eq!(space.size(), 2 + 4);
        let trials = draw_trials(&space, 10, 1);
        assert_eq!(trials.len(), 6, "only 6 combinations exist");
        let keys: HashSet<String> = trials.iter().map(HyperParams::key).collect();
        assert_eq!(keys.len(), 6);
        assert!(trials
            .iter()
            .all(|t| (1..=2).contains(&t.units.len()) && t.units.iter().all(|u| [32, 64].contains(u))));
        assert_eq!(draw_trials(&space, 3, 1), draw_trials(&space, 3, 1), "same seed, same trials");
        let spec = trials[0].spec(&[28, 28], 10);
        assert_eq!(spec.output_shape().ok(), Some(vec![10]));
        assert!(SearchSpace { dropouts: vec![1.0], ..SearchSpace::default() }.validate().is_err());
    }

    #[test]
    fn validate_rejects_reversed_ranges_and_zero_steps_naming_the_field() {
        let message = |space: SearchSpace| match space.validate() {
            Err(TrainError::Config(m)) => m,
            other => panic!("expected a configuration error, got {other:?}"),
        };
        let reversed_units = SearchSpace { units: IntRange { min: 16, max: 8, step: 16 }, ..SearchSpace::default() };
        assert!(message(reversed_units).starts_with("units:"));
        let reversed_layers = SearchSpace { layers: IntRange { min: 3, max: 2, step: 1 }, ..SearchSpace::default() };
        assert!(message(reversed_layers).starts_with("layers:"));
        let zero_step_units = SearchSpace { units: IntRange { min: 8, max: 16, step: 0 }, ..SearchSpace::default() };
        assert!(message(zero_step_units).starts_with("units:"));
        let zero_step_layers = SearchSpace { layers: IntRange { min: 1, max: 2, step: 0 }, ..SearchSpace::default() };
        assert!(message(zero_step_layers).starts_with("layers:"));
        // The search refuses such a space before drawing (it used to panic in `sample`).
        let data = Dataset::new(vec![0; 40], vec![0, 1, 0, 1, 0, 1, 0, 1, 0, 1], 2, 2, 2).expect("data");
        let space = SearchSpace { units: IntRange { min: 16, max: 8, step: 16 }, ..SearchSpace::default() };
        let r =
            random_search(&space, &TunerConfig { max_trials: 1, epochs: 1, ..Default::default() }, &data, &mut |_| {});
        assert!(matches!(r, Err(TrainError::Config(m)) if m.starts_with("units:")));
    }

    /// 200 random 4×4 images whose class is whether the top half is brighter.
    fn top_or_bottom() -> Dataset {
        let mut rng = Rng::new(3);
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            let top = rng.below(2) == 1;
            for p in 0..16 {
                let bright = (p < 8) == top;
                images.push(if bright { 200 + rng.below(50) as u8 } else { rng.below(50) as u8 });
            }
            labels.push(u8::from(top));
        }
        Dataset::new(images, labels, 4, 4, 2).expect("data")
    }

    /// One hidden layer of `units`, no dropout, batches of 16.
    fn one_layer(units: IntRange, learning_rates: Vec<f32>, optimizer: Optimizer) -> SearchSpace {
        SearchSpace {
            layers: IntRange { min: 1, max: 1, step: 1 },
            units,
            learning_rates,
            dropouts: vec![0.0],
            batch_sizes: vec![16],
            optimizers: vec![optimizer],
            ..SearchSpace::default()
        }
    }

    #[test]
    fn a_huge_range_is_counted_without_listing_it_and_its_largest_model_refused_up_front() {
        let huge = IntRange { min: 1, max: usize::MAX, step: 1 };
        assert_eq!((huge.len(), huge.nth(2), huge.largest()), (usize::MAX, 3, usize::MAX));
        let space = SearchSpace { units: huge, ..SearchSpace::default() };
        space.validate().expect("a valid space until the images are known");
        assert!(space.size() > u64::MAX as u128);
        let _ = draw_trials(&space, 3, 1);
        let err = space.check(28, 28, 10).err().map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.contains("largest model (layers=2 units=[")), "{err:?}");
        // The search refuses it before any trial.
        let data = top_or_bottom();
        let err =
            random_search(&space, &TunerConfig { max_trials: 1, epochs: 1, ..Default::default() }, &data, &mut |_| {})
                .err()
                .map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.contains("cannot be built")), "{err:?}");
        let steps = IntRange { min: 32, max: 100, step: 32 };
        assert_eq!((steps.len(), steps.largest(), steps.values()), (3, 96, vec![32, 64, 96]));
        assert!(IntRange { min: 5, max: 1, step: 1 }.is_empty());
    }

    #[test]
    fn convolution_blocks_join_the_space() {
        let space = SearchSpace {
            conv_blocks: IntRange { min: 1, max: 2, step: 1 },
            filters: IntRange { min: 16, max: 32, step: 16 },
            layers: IntRange { min: 0, max: 1, step: 1 },
            units: IntRange { min: 64, max: 64, step: 1 },
            learning_rates: vec![1e-3],
            dropouts: vec![0.0],
            batch_sizes: vec![32],
            optimizers: vec![Optimizer::adam()],
        };
        space.validate().expect("valid");
        // (2 one-block + 4 two-block convolutions) × (no hidden layer + one of 64 units).
        assert_eq!(space.size(), 6 * 2);
        let trials = draw_trials(&space, 100, 7);
        assert_eq!(trials.len(), 12, "every combination, once");
        for t in &trials {
            assert!((1..=2).contains(&t.filters.len()) && t.filters.iter().all(|f| [16, 32].contains(f)), "{t}");
            let spec = t.spec(&[28, 28], 10);
            assert_eq!(spec.output_shape().ok(), Some(vec![10]), "{t}");
            let convs = spec.layers.iter().filter(|l| matches!(l, nn_core::LayerSpec::Conv2D(_))).count();
            let pools = spec.layers.iter().filter(|l| matches!(l, nn_core::LayerSpec::MaxPooling2D(_))).count();
            assert_eq!((convs, pools), (t.filters.len(), t.filters.len()));
        }
        assert!(trials.iter().any(|t| t.to_string().starts_with("conv_blocks=2 filters=[")));
        // Without convolution, a space draws as it did before convolution blocks existed: the
        // first trial of `mnist tune`'s default search (seed 42), as the nineteenth session's
        // build drew it.
        let mlp = SearchSpace::default();
        let before = HyperParams {
            filters: Vec::new(),
            units: vec![480, 224],
            learning_rate: 1e-4,
            dropout: 0.5,
            batch_size: 32,
            optimizer: Optimizer::sgd().learning_rate(1e-4),
        };
        assert_eq!(draw_trials(&mlp, 1, 42)[0], before, "{}", draw_trials(&mlp, 1, 42)[0]);
        // No hidden layer needs a convolution block in every trial.
        let bare = SearchSpace { conv_blocks: IntRange { min: 0, max: 1, step: 1 }, ..space.clone() };
        assert!(matches!(bare.validate(), Err(TrainError::Config(m)) if m.starts_with("layers:")));
        let no_filters = SearchSpace { filters: IntRange { min: 0, max: 16, step: 16 }, ..space.clone() };
        assert!(matches!(no_filters.validate(), Err(TrainError::Config(m)) if m.starts_with("filters:")));
        // 28×28 images take 3 blocks (26→13, 11→5, 3→1); 4×4 images take 1.
        assert_eq!((conv_blocks_fitting(28), conv_blocks_fitting(4), conv_blocks_fitting(3)), (3, 1, 0));
        let deep = SearchSpace { conv_blocks: IntRange { min: 1, max: 4, step: 1 }, ..space };
        deep.validate().expect("4 blocks are valid until the images are known");
        let err = deep.check(28, 28, 10).err().map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.contains("nothing of 28×28 images; at most 3")), "{err:?}");
    }

    #[test]
    fn a_convnet_search_trains_and_keeps_its_best_model() {
        let data = top_or_bottom();
        let space = SearchSpace {
            conv_blocks: IntRange { min: 1, max: 1, step: 1 },
            filters: IntRange { min: 4, max: 8, step: 4 },
            layers: IntRange { min: 0, max: 0, step: 1 },
            ..one_layer(IntRange { min: 4, max: 4, step: 4 }, vec![1e-2], Optimizer::adam())
        };
        let cfg = TunerConfig { max_trials: 2, epochs: 3, ..Default::default() };
        let out = random_search(&space, &cfg, &data, &mut |_| {}).expect("search");
        assert_eq!(out.trials.len(), 2);
        assert!(out.best().val_accuracy > 0.9, "an easy problem: {}", out.best().val_accuracy);
        let kept = out.best_trainer;
        assert!(kept.model().spec().layers.iter().any(|l| matches!(l, nn_core::LayerSpec::Conv2D(_))));
        let csv = trials_csv(&out.trials);
        assert!(csv.lines().nth(1).is_some_and(|l| l.starts_with("1,1,")), "{csv}");
        // Two blocks leave nothing of 4×4 images: refused before any training.
        let deep = SearchSpace { conv_blocks: IntRange { min: 2, max: 2, step: 1 }, ..space };
        let err = random_search(&deep, &cfg, &data, &mut |_| {}).err().map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.contains("at most 1")), "{err:?}");
    }

    #[test]
    fn trials_rank_by_divergence_then_accuracy_then_number() {
        let trial = |number: usize, val_accuracy: f64, diverged: bool| TrialResult {
            number,
            params: SearchSpace::default().sample(&mut Rng::new(1)),
            val_accuracy,
            val_loss: 0.0,
            seconds: 0.0,
            diverged,
        };
        let (good, better, partly, none) =
            (trial(1, 0.90, false), trial(2, 0.95, false), trial(3, 0.99, true), trial(4, f64::NAN, true));
        assert!(ranks_above(&better, &good) && !ranks_above(&good, &better));
        // A partly diverged trial ranks below every clean one, whatever its score, and above
        // one where no execution trained.
        assert!(ranks_above(&good, &partly) && !ranks_above(&partly, &good));
        assert!(ranks_above(&partly, &none) && !ranks_above(&none, &partly));
        // Ties go to the earlier trial.
        assert!(ranks_above(&good, &trial(5, 0.90, false)) && !ranks_above(&trial(5, 0.90, false), &good));
    }

    #[test]
    fn diverged_trials_rank_last_and_a_search_where_all_diverge_is_an_error() {
        let data = top_or_bottom();
        let space = |rates: Vec<f32>| one_layer(IntRange { min: 8, max: 8, step: 8 }, rates, Optimizer::sgd());
        let cfg = TunerConfig { max_trials: 2, epochs: 2, ..Default::default() };
        let out = random_search(&space(vec![1e30, 1e-1]), &cfg, &data, &mut |_| {}).expect("search");
        let diverged: Vec<&TrialResult> = out.trials.iter().filter(|t| t.diverged).collect();
        assert_eq!(diverged.len(), 1, "{:?}", out.trials);
        assert_eq!(diverged[0].params.learning_rate, 1e30);
        assert!(!out.best().diverged && out.best().params.learning_rate == 0.1);
        let csv = trials_csv(&out.trials);
        assert!(csv.lines().any(|l| l.ends_with(",diverged") && l.contains(",,")), "{csv}");
        let err = random_search(&space(vec![1e30]), &cfg, &data, &mut |_| {}).err().map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.contains("every trial diverged")), "{err:?}");
    }

    #[test]
    fn a_trial_is_scored_by_its_best_epoch_and_keeps_its_weights() {
        // A rate high enough that the accuracy moves up and down from epoch to epoch.
        let data = top_or_bottom();
        let space = one_layer(IntRange { min: 4, max: 4, step: 4 }, vec![10.0], Optimizer::sgd());
        let cfg = TunerConfig { max_trials: 1, epochs: 8, ..Default::default() };
        let out = random_search(&space, &cfg, &data, &mut |_| {}).expect("search");
        let mut kept = out.best_trainer;
        let accs = kept.history().series("val_accuracy");
        let best = accs.iter().copied().fold(0.0, f64::max);
        assert!(accs.last() < Some(&best), "the last epoch is the best: {accs:?}");
        assert_eq!(out.trials[0].val_accuracy, best);
        let (_, val) = mnist_data::validation_split(&data, cfg.validation_split).expect("split");
        assert_eq!(kept.evaluate(&val).expect("evaluate").accuracy, best);
    }

    #[test]
    fn a_stopped_search_ends_with_the_trials_under_way() {
        let data = top_or_bottom();
        let space = one_layer(IntRange { min: 4, max: 64, step: 4 }, vec![1e-2], Optimizer::adam());
        let stop = Interrupt::new();
        let cfg = TunerConfig { max_trials: 16, epochs: 2, stop: Some(stop.clone()), ..Default::default() };
        // Requested as the first trial is reported: no other starts (one at a time).
        let out = random_search(&space, &cfg, &data, &mut |_| stop.request()).expect("search");
        assert_eq!(out.trials.len(), 1);
        assert_eq!(out.best().number, 1);
        // Two at a time: the other worker's trial, if it had started, finishes too; no
        // third starts.
        stop.clear();
        let both = TunerConfig { parallel: 2, ..cfg.clone() };
        let out = random_search(&space, &both, &data, &mut |_| stop.request()).expect("search");
        assert!((1..=2).contains(&out.trials.len()), "{} trials", out.trials.len());
        // Requested before the search: no trial runs, and the error says why.
        let err = random_search(&space, &cfg, &data, &mut |_| {}).err().map(|e| e.to_string());
        assert!(err.as_deref().is_some_and(|e| e.contains("stopped before a trial finished")), "{err:?}");
    }

    #[test]
    fn a_tiny_search_runs_in_parallel_and_keeps_the_best() {
        let data = top_or_bottom();
        let space = SearchSpace {
            dropouts: vec![0.0, 0.2],
            ..one_layer(IntRange { min: 4, max: 16, step: 4 }, vec![1e-2], Optimizer::adam())
        };
        let cfg = TunerConfig { max_trials: 3, epochs: 3, parallel: 2, ..Default::default() };
        let mut seen = 0;
        let out = random_search(&space, &cfg, &data, &mut |_| seen += 1).expect("search");
        assert_eq!((seen, out.trials.len()), (3, 3));
        let best = out.best().val_accuracy;
        assert!(out.trials.iter().all(|t| t.val_accuracy <= best));
        assert!(best > 0.9, "an easy problem: {best}");
        // Scored by its best epoch, whose weights the kept model has (one execution per trial).
        let mut kept = out.best_trainer;
        let history_best = kept.history().series("val_accuracy").into_iter().fold(0.0, f64::max);
        assert_eq!(best, history_best);
        let (_, val) = mnist_data::validation_split(&data, cfg.validation_split).expect("split");
        assert_eq!(kept.evaluate(&val).expect("evaluate").accuracy, best);
        assert!(trials_csv(&out.trials).lines().count() == 4);
    }
}
