//! `mnist train`: a recipe (or a spec file) trained end to end, written to a run folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mnist_data::atomic::write_atomic;
use mnist_data::{Augmentation, Normalization};
use nn_core::Loss;
use nn_train::recipes::{recipe, RecipeValidation};
use nn_train::{
    Callback, Compile, Control, DeviceChoice, EarlyStopping, FitConfig, ModelCheckpoint, Optimizer, ReduceLROnPlateau,
    Schedule, Trainer, Validation, Verbosity,
};

use crate::commands::{data_choice, free_name};
use crate::device;
use crate::interrupt::Interrupted;
use crate::models::{self, ModelSource, DATASET_KEY};
use crate::{pictures, report, Global};

const EXAMPLES: &str = "\
Examples:
  mnist train                                   the TFDS Keras MNIST example (mlp-128, 6 epochs)
  mnist train --model mlp-sigmoid-100-144 --epochs 10
  mnist train --model convnet --epochs 3 --augment rotation=10,shift=0.1,zoom=0.1
  mnist train --model mlp-512-512 --dropout 0.2 --l2 1e-4 --early-stopping 2 --validation split:0.1
  mnist train --optimizer sgd --lr 0.1 --momentum 0.9 --schedule cosine --epochs 10
  mnist train --model my-net.json --epochs 5    an architecture of your own (see `mnist summary --save-spec`)
  mnist train --model runs/A/model.safetensors --dataset fashion --freeze conv2d,conv2d_1 --epochs 2
                                                fine-tune a trained convnet's last layer on Fashion-MNIST
  mnist train --limit 5000 --epochs 2           a quick experiment on the first 5000 images
  mnist train --epochs 10 --checkpoint ckpt.safetensors      then, after an interruption:
  mnist train --resume ckpt.safetensors --epochs 10          continue where it stopped

Every setting left out comes from the preset's recipe (`mnist summary --model NAME` prints it).
The run folder gets model.safetensors, history.csv, history.png, predictions.png, confusion.png
and report.txt. Ctrl-C stops training after its batch and saves the run as of the last completed
epoch (exit status 130); a second Ctrl-C quits at once.";

/// Optimisers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerName {
    /// Adam (Keras defaults: learning rate 0.001).
    Adam,
    /// Stochastic gradient descent (learning rate 0.01; see --momentum).
    Sgd,
    /// RMSprop (learning rate 0.001).
    Rmsprop,
}

impl OptimizerName {
    fn optimizer(self) -> Optimizer {
        match self {
            OptimizerName::Adam => Optimizer::adam(),
            OptimizerName::Sgd => Optimizer::sgd(),
            OptimizerName::Rmsprop => Optimizer::rmsprop(),
        }
    }
}

/// Learning-rate schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleName {
    /// The same rate throughout.
    Constant,
    /// Halved every third of the epochs.
    Step,
    /// Times 0.96 every epoch, smoothly.
    Exponential,
    /// Cosine decay to 0 over the run.
    Cosine,
    /// Warm up over a quarter of the run, then cosine down (super-convergence).
    Onecycle,
}

impl ScheduleName {
    fn name(self) -> &'static str {
        match self {
            ScheduleName::Constant => "constant",
            ScheduleName::Step => "step",
            ScheduleName::Exponential => "exponential",
            ScheduleName::Cosine => "cosine",
            ScheduleName::Onecycle => "onecycle",
        }
    }
}

/// Losses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossName {
    /// Integer labels (Keras's `sparse_categorical_crossentropy`).
    #[value(name = "sparse_categorical_crossentropy", alias = "sparse")]
    Sparse,
    /// One-hot labels (Keras's `categorical_crossentropy` with `to_categorical`).
    #[value(name = "categorical_crossentropy", alias = "categorical")]
    Categorical,
}

/// Where validation numbers come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValidationArg {
    /// The test set, after every epoch (as the tutorials do).
    Test,
    /// The last fraction of the training images, held out.
    Split(f64),
    /// No validation.
    None,
}

impl std::fmt::Display for ValidationArg {
    /// The form [`parse_validation`] reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValidationArg::Test => write!(f, "test"),
            ValidationArg::Split(x) => write!(f, "split:{x}"),
            ValidationArg::None => write!(f, "none"),
        }
    }
}

/// An optional `--limit` in words.
fn show_limit(l: &Option<usize>) -> String {
    l.map_or("none (every image)".into(), |n| n.to_string())
}

/// An optional `--augment` in words.
fn show_augment(a: &Option<Augmentation>) -> String {
    a.as_ref().map_or("none".into(), augment_arg)
}

/// The `--augment` form of `a` ([`parse_augment`] reads it back).
fn augment_arg(a: &Augmentation) -> String {
    format!(
        "rotation={},width_shift={},height_shift={},zoom={}",
        a.rotation_range, a.width_shift_range, a.height_shift_range, a.zoom_range
    )
}

fn parse_validation(s: &str) -> Result<ValidationArg, String> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "test" => return Ok(ValidationArg::Test),
        "none" | "off" | "no" => return Ok(ValidationArg::None),
        _ => {}
    }
    let f = s.strip_prefix("split:").or_else(|| s.strip_prefix("split=")).unwrap_or(&s);
    match f.parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(ValidationArg::Split(f)),
        Ok(f) => Err(format!("the split fraction must be between 0 and 1, got {f}")),
        Err(_) => Err(format!("expected test, none or split:FRACTION (e.g. split:0.1), got '{s}'")),
    }
}

/// Parses `rotation=10,shift=0.1,zoom=0.1` (also `width_shift=`, `height_shift=`; `none`).
pub fn parse_augment(s: &str) -> Result<Augmentation, String> {
    let mut a = Augmentation::new();
    if matches!(s.trim(), "none" | "off" | "") {
        return Ok(a);
    }
    // What each part set, to refuse a setting given twice (`rotation=10,rotation=20`).
    let mut set: Vec<(&str, &str)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) =
            part.split_once('=').ok_or_else(|| format!("'{part}': expected NAME=VALUE, e.g. rotation=10"))?;
        let sets: &[&str] = match key.trim() {
            "rotation" | "rotate" => &["rotation"],
            "shift" => &["width_shift", "height_shift"],
            "width_shift" | "width-shift" => &["width_shift"],
            "height_shift" | "height-shift" => &["height_shift"],
            "zoom" => &["zoom"],
            _ => &[],
        };
        for name in sets {
            if let Some((_, earlier)) = set.iter().find(|(n, _)| n == name) {
                return Err(format!("'{part}': {name} is already set by '{earlier}'"));
            }
            set.push((name, part));
        }
        let v: f32 = value.trim().parse().map_err(|_| format!("'{part}': {value} is not a number"))?;
        let fraction = |v: f32| {
            if (0.0..1.0).contains(&v) {
                Ok(v)
            } else {
                Err(format!("'{part}': a fraction of the image, at least 0 and below 1"))
            }
        };
        match key.trim() {
            "rotation" | "rotate" => {
                if !(0.0..=180.0).contains(&v) {
                    return Err(format!("'{part}': degrees between 0 and 180"));
                }
                a = a.rotation(v);
            }
            "shift" => a = a.shift(fraction(v)?, fraction(v)?),
            "width_shift" | "width-shift" => a.width_shift_range = fraction(v)?,
            "height_shift" | "height-shift" => a.height_shift_range = fraction(v)?,
            "zoom" => a = a.zoom(fraction(v)?),
            other => {
                return Err(format!(
                    "unknown augmentation '{other}': use rotation, shift, width_shift, height_shift or zoom"
                ))
            }
        }
    }
    Ok(a)
}

/// `TerminateOnNaN` at the end of each epoch only: an epoch whose loss became NaN or infinite
/// stops the run, which keeps the last good epoch's weights. (Reading the loss after every
/// batch, as `TerminateOnNaN` does, would make a GPU wait for each step.) So does an epoch whose
/// last update broke the weights, which its training loss (read before that update) does not
/// show: a validation loss that is not a number, or weights that are not.
struct StopOnDivergence;

/// How [`StopOnDivergence`]'s reason (the history's `stopped`) begins.
const DIVERGED: &str = "the loss became";

impl Callback for StopOnDivergence {
    fn on_epoch_end(&mut self, log: &nn_train::EpochLog, trainer: &mut Trainer) -> nn_train::Result<Control> {
        let broken = if !log.loss.is_finite() {
            Some(log.loss)
        } else if let Some(v) = log.val_loss.filter(|v| !v.is_finite()) {
            Some(v)
        } else {
            let weights = trainer.model().weights()?;
            weights.iter().flat_map(|t| &t.data).any(|v| !v.is_finite()).then_some(f64::NAN)
        };
        Ok(match broken {
            None => Control::Continue,
            Some(loss) => Control::StopAndRestore(format!(
                "{DIVERGED} {loss}: training stopped, the weights of the last completed epoch were kept"
            )),
        })
    }
}

/// The seed of a run given none (`--seed`).
const DEFAULT_SEED: u64 = 42;

/// Checkpoint and model metadata keys holding the fit settings a run was started with, so that
/// `--resume` continues with the same batches, validation and length.
mod fit_keys {
    pub const EPOCHS: &str = "fit.epochs";
    pub const BATCH_SIZE: &str = "fit.batch_size";
    pub const VALIDATION: &str = "fit.validation";
    pub const AUGMENT: &str = "fit.augment";
    pub const LIMIT: &str = "fit.limit";
    pub const EARLY_STOPPING: &str = "fit.early_stopping";
    pub const REDUCE_LR: &str = "fit.reduce_lr";
    /// The optimiser's learning rate when the run began (a callback may lower it since).
    pub const LEARNING_RATE: &str = "fit.learning_rate";
    /// Where the run writes its checkpoints (`--checkpoint`, made absolute; a name template
    /// as given): a resumed run goes on writing there.
    pub const CHECKPOINT: &str = "fit.checkpoint";
}

/// Arguments of `mnist train`.
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES, allow_negative_numbers = true)]
pub struct TrainArgs {
    /// The architecture: a preset (mlp-128, mlp-sigmoid-100-144, mlp-128-128, mlp-512-512,
    /// convnet, fast-cnn; each brings its tutorial's recipe) or an architecture file (.json),
    /// which trains with Adam at 0.001, sparse categorical cross-entropy, 5 epochs of batch 128
    /// and validation on the test set unless flags say otherwise (`mnist summary` prints it);
    /// or a trained model (.safetensors) to fine-tune: a new run from its weights, with the
    /// settings it was trained with (see --freeze).
    /// [default: mlp-128, or the checkpoint's with --resume]
    #[arg(long, short, value_name = "PRESET|SPEC.json|MODEL.safetensors")]
    pub model: Option<String>,
    /// Passes over the training set (with --resume: the total, counting the epochs already done).
    #[arg(long, short, value_name = "N", value_parser = crate::commands::whole::<usize>)]
    pub epochs: Option<usize>,
    /// Images per weight update.
    #[arg(long, short, value_name = "N", value_parser = crate::commands::whole::<usize>)]
    pub batch_size: Option<usize>,
    /// The optimiser (with Keras's default settings).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerName>,
    /// The learning rate. [default: the optimiser's, 0.001 for adam and rmsprop, 0.01 for sgd]
    #[arg(long, value_name = "RATE", value_parser = finite_f32)]
    pub lr: Option<f32>,
    /// Momentum of sgd and rmsprop (e.g. 0.9). [default: 0]
    #[arg(long, value_name = "M", value_parser = finite_f32)]
    pub momentum: Option<f32>,
    /// How the learning rate changes during training. [default: the recipe's, usually constant]
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleName>,
    /// The loss; whether it reads logits or probabilities follows the model's last layer.
    #[arg(long, value_enum)]
    pub loss: Option<LossName>,
    /// Validation after each epoch: `test` (the test set), `split:0.1` (the last 10% of the
    /// training images, held out) or `none`. [default: the recipe's]
    #[arg(long, value_name = "test|split:F|none", value_parser = parse_validation)]
    pub validation: Option<ValidationArg>,
    /// Random changes to each training image: `rotation=DEGREES`, `shift=FRACTION`
    /// (`width_shift=`, `height_shift=`), `zoom=FRACTION`, comma separated.
    #[arg(long, value_name = "rotation=10,shift=0.1,zoom=0.1", value_parser = parse_augment)]
    pub augment: Option<Augmentation>,
    /// Insert Dropout(RATE) before the last Dense layer (e.g. 0.2).
    #[arg(long, value_name = "RATE", value_parser = finite_f32)]
    pub dropout: Option<f32>,
    /// L2 weight penalty F·Σw² on the kernel of every Dense layer (e.g. 1e-4).
    #[arg(long, value_name = "F", value_parser = finite_f32)]
    pub l2: Option<f32>,
    /// Freeze these layers (comma separated, named as `mnist summary` prints them, e.g.
    /// `conv2d,conv2d_1`): training leaves their weights as they are (Keras's
    /// `layer.trainable = False`). With a trained --model, fine-tunes the layers above. Only
    /// these are frozen: `none` thaws a trained model's frozen layers. [default: as the model
    /// has them]
    #[arg(long, value_name = "LAYER,...", value_delimiter = ',')]
    pub freeze: Option<Vec<String>>,
    /// Stop when the validation loss (the training loss without validation) has not improved
    /// for PATIENCE epochs, and then put back the best epoch's weights (Keras's
    /// `restore_best_weights`: a run that trains every epoch keeps its last). `none` turns off
    /// a resumed run's.
    #[arg(long, value_name = "PATIENCE|none", value_parser = parse_patience)]
    pub early_stopping: Option<Patience>,
    /// Divide the learning rate by 10 when the validation loss (the training loss without
    /// validation) has not improved for PATIENCE epochs (Keras's ReduceLROnPlateau). `none`
    /// turns off a resumed run's.
    #[arg(long, value_name = "PATIENCE|none", value_parser = parse_patience)]
    pub reduce_lr: Option<Patience>,
    /// Save a resumable checkpoint (weights, optimiser state, progress) here after every epoch.
    /// As in Keras, `{epoch:02d}` or `{val_loss:.4f}` in the name keep one file an epoch
    /// (`ck-{epoch:02d}.safetensors`).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (written with --checkpoint) up to --epochs. Its
    /// checkpoints go on to where the run wrote them (as Keras's BackupAndRestore), unless
    /// --checkpoint says otherwise.
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Seed of the initial weights, shuffles, dropout and augmentation (same seed and number
    /// of cores, same run).
    /// [default: 42, or the checkpoint's with --resume]
    #[arg(long, value_parser = crate::commands::whole::<u64>)]
    pub seed: Option<u64>,
    /// Where to train: `cpu`, `cuda` (the first NVIDIA GPU; `cuda:N` for GPU N; needs a build
    /// with --features cuda) or `auto` (the GPU when there is one, else the CPU).
    #[arg(long, value_name = "cpu|cuda|cuda:N|auto", default_value = "auto")]
    pub device: DeviceChoice,
    /// The folder for the model, history, pictures and report, made when training ends or is
    /// stopped by Ctrl-C (a run stopped before its first epoch ends leaves none).
    /// [default: runs/<model>-<UTC time>]
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Train on the first N training images only (quick experiments).
    #[arg(long, value_name = "N", value_parser = crate::commands::whole::<usize>)]
    pub limit: Option<usize>,
    /// Print no summary table and no per-epoch progress: only the settings, the results and
    /// the files written.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The settings of a run, after recipe defaults and flags.
struct Plan {
    name: String,
    trainer: Trainer,
    epochs: usize,
    batch_size: usize,
    validation: ValidationArg,
    augmentation: Option<Augmentation>,
    /// The patience of early stopping, if any.
    early_stopping: Option<usize>,
    /// The patience of ReduceLROnPlateau, if any.
    reduce_lr: Option<usize>,
    /// How pixels become inputs: a trained model's own; for a new one, scaled to [0, 1].
    normalization: Normalization,
    /// A resumed run's `--limit` (`Some(None)`: every image), as its checkpoint recorded it.
    recorded_limit: Option<Option<usize>>,
    /// The learning rate a resumed run began with, as its checkpoint recorded it.
    recorded_lr: Option<f32>,
}

/// A number that fits a 32-bit float as it was typed: `1e39` is refused in the user's words,
/// not read as infinity and reported as `inf`.
fn finite_f32(s: &str) -> std::result::Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) if v.is_nan() => Err("not a number".into()),
        Ok(_) => Err(format!("{s} is beyond what a 32-bit float holds (about 3.4e38)")),
        Err(e) => Err(e.to_string()),
    }
}

fn check_numbers(a: &TrainArgs) -> Result<()> {
    if a.epochs == Some(0) {
        bail!("--epochs 0: train at least 1 epoch");
    }
    if a.batch_size == Some(0) {
        bail!("--batch-size 0: a batch holds at least 1 image");
    }
    if let Some(lr) = a.lr.filter(|lr| !(lr.is_finite() && *lr > 0.0)) {
        bail!("--lr {lr}: the learning rate must be a positive number");
    }
    // Updates of a subnormal rate are flushed to zero here (as on most accelerators).
    if let Some(lr) = a.lr.filter(|lr| *lr < f32::MIN_POSITIVE) {
        bail!("--lr {}: below 1.2e-38, the smallest normal 32-bit float: it would train as 0", report::rate(lr));
    }
    if let Some(m) = a.momentum.filter(|m| !(0.0..1.0).contains(m)) {
        bail!("--momentum {m}: at least 0 and below 1");
    }
    if a.limit == Some(0) {
        bail!("--limit 0: train on at least 1 image");
    }
    Ok(())
}

fn steps_per_epoch(n: usize, validation: ValidationArg, batch: usize) -> usize {
    let fit = match validation {
        ValidationArg::Split(f) => (n as f64 * (1.0 - f)).floor() as usize,
        _ => n,
    };
    fit.div_ceil(batch.max(1)).max(1)
}

/// Warns when a schedule fixed to a run's length (cosine, one-cycle: a resumed run extended
/// past the epochs it was started with) ends before the last of `epochs`: the epochs after
/// it train at its final rate, as Keras's would.
fn schedule_horizon_note(compile: &Compile, steps: usize, epochs: usize) {
    let total = match compile.schedule {
        Schedule::Cosine { total_steps, .. } | Schedule::OneCycle { total_steps, .. } => total_steps,
        _ => return,
    };
    if total == 0 || total >= steps.saturating_mul(epochs) {
        return;
    }
    let end = compile.schedule.lr(compile.optimizer.lr(), total as u64, total / steps.max(1));
    eprintln!(
        "note: the {} schedule covers the {total} steps of the first {} epoch(s), the length the run was \
         started with; the epochs after it train at its final learning rate {}",
        schedule_text(&compile.schedule).split(' ').next().unwrap_or("learning-rate"),
        report::rate(end),
        total.div_ceil(steps.max(1))
    );
}

/// A schedule in words (`total_steps` 0, a recipe's "the whole run", as such).
pub(crate) fn schedule_text(s: &Schedule) -> String {
    let over = |total: usize| if total == 0 { "the whole run".to_string() } else { format!("{total} steps") };
    match s {
        Schedule::Constant => "constant".into(),
        Schedule::Step { factor, every_epochs } => format!("step (×{factor} every {every_epochs} epochs)"),
        Schedule::Exponential { rate, decay_steps } => format!("exponential (×{rate} every {decay_steps} steps)"),
        Schedule::Cosine { total_steps, alpha } => format!("cosine over {} (floor {alpha})", over(*total_steps)),
        Schedule::OneCycle { total_steps, warmup, .. } => {
            format!("one-cycle over {} ({:.0}% warm-up)", over(*total_steps), warmup * 100.0)
        }
    }
}

fn optimizer_text(o: &Optimizer) -> String {
    match *o {
        Optimizer::Adam { learning_rate, .. } => format!("adam, learning rate {}", report::rate(learning_rate)),
        Optimizer::Sgd { learning_rate, momentum, nesterov } => format!(
            "sgd, learning rate {}, momentum {momentum}{}",
            report::rate(learning_rate),
            if nesterov { " (Nesterov)" } else { "" }
        ),
        Optimizer::RmsProp { learning_rate, rho, momentum, .. } => {
            format!("rmsprop, learning rate {}, rho {rho}, momentum {momentum}", report::rate(learning_rate))
        }
    }
}

/// The kernel penalty of layer `l`, in words (`L2 0.0001 on a Dense(128) kernel`), if it has one.
fn kernel_penalty(l: &nn_core::LayerSpec) -> Option<String> {
    let (r, layer) = match l {
        nn_core::LayerSpec::Dense(d) => (d.kernel_regularizer, format!("Dense({})", d.units)),
        nn_core::LayerSpec::Conv2D(c) => (c.kernel_regularizer, format!("Conv2D({})", c.filters)),
        _ => return None,
    };
    let r = r.filter(|r| r.l1 != 0.0 || r.l2 != 0.0)?;
    let mut p = Vec::new();
    if r.l1 != 0.0 {
        p.push(format!("L1 {}", report::rate(r.l1)));
    }
    if r.l2 != 0.0 {
        p.push(format!("L2 {}", report::rate(r.l2)));
    }
    Some(format!("{} on a {layer} kernel", p.join(" + ")))
}

/// Dropout layers and kernel penalties of an architecture, in words.
fn regularization_text(spec: &nn_core::ModelSpec) -> String {
    let parts: Vec<String> = spec
        .layers
        .iter()
        .filter_map(|l| match l {
            nn_core::LayerSpec::Dropout(d) => Some(format!("dropout {}", d.rate)),
            other => kernel_penalty(other),
        })
        .collect();
    // The same words for several layers once, counted: "L2 0.0001 on a Dense(512) kernel (×2)".
    let mut counted: Vec<(String, usize)> = Vec::new();
    for p in parts {
        match counted.iter_mut().find(|(q, _)| *q == p) {
            Some((_, n)) => *n += 1,
            None => counted.push((p, 1)),
        }
    }
    if counted.is_empty() {
        "none".into()
    } else {
        let shown: Vec<String> =
            counted.into_iter().map(|(p, n)| if n > 1 { format!("{p} (×{n})") } else { p }).collect();
        shown.join(", ")
    }
}

/// The frozen layers of `spec` by name (`dense, dense_1`), or `none`.
fn frozen_text(spec: &nn_core::ModelSpec) -> String {
    let layers = spec.resolve().unwrap_or_default();
    let names: Vec<&str> =
        layers.iter().filter(|l| l.spec.trainable() == Some(false)).map(|l| l.name.as_str()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn loss_text(l: Loss) -> String {
    format!("{}{}", l.name(), if l.from_logits() { " (from logits)" } else { "" })
}

fn augment_text(a: &Option<Augmentation>) -> String {
    match a {
        Some(a) if !a.is_identity() => {
            let mut parts = Vec::new();
            if a.rotation_range != 0.0 {
                parts.push(format!("rotation ±{}°", a.rotation_range));
            }
            let (w, h) = (a.width_shift_range, a.height_shift_range);
            let percent = |v: f32| format!("±{}%", report::rate(v * 100.0));
            if w == h && w != 0.0 {
                parts.push(format!("shift {}", percent(w)));
            } else if w != 0.0 || h != 0.0 {
                parts.push(format!("shift {} across, {} down", percent(w), percent(h)));
            }
            if a.zoom_range != 0.0 {
                parts.push(format!("zoom ±{}", a.zoom_range));
            }
            parts.join(", ")
        }
        _ => "none".into(),
    }
}

/// Checks that a file can be written at `path`: not a folder nor a special file, and its
/// folder (or, if that is missing, the nearest existing one above, where it will be made when
/// the first checkpoint is written) takes files (a probe is created and removed there).
fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("a folder, not a file");
    }
    if path.exists() && !path.is_file() {
        bail!("not a regular file (checkpoints replace the file they are written to)");
    }
    can_make(path.parent().unwrap_or(Path::new("")))
}

/// Checks that the folder `dir` takes files, or, if it is missing, that it can be made: the
/// nearest existing folder above it takes files.
fn can_make(dir: &Path) -> Result<()> {
    let above = dir.ancestors().find(|d| d.as_os_str().is_empty() || d.exists()).unwrap_or(Path::new(""));
    let above = if above.as_os_str().is_empty() { Path::new(".") } else { above };
    if !above.is_dir() {
        bail!("{} is not a folder", above.display());
    }
    probe(above)
}

/// Checks that a file can be created in the folder `dir`, by creating and removing one.
fn probe(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| anyhow::anyhow!("cannot write in {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Removes its folders (deepest first) when dropped, those that are empty (a run that failed
/// early).
struct RemoveIfEmpty(Vec<PathBuf>);

impl Drop for RemoveIfEmpty {
    fn drop(&mut self) {
        for dir in &self.0 {
            // Fails, harmlessly, when the run wrote anything.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Whether `a` and `b` name the same folder (as given, or resolved where both exist).
fn same_path(a: &Path, b: &Path) -> bool {
    let norm = |p: &Path| p.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect::<PathBuf>();
    norm(a) == norm(b) || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// The files a run writes in its folder.
const RUN_FILES: [&str; 6] =
    ["model.safetensors", "history.csv", "history.png", "predictions.png", "confusion.png", "report.txt"];

/// Where a run's files will go: `--run-dir`, or `runs/<name>-<time>`.
struct RunDir {
    path: PathBuf,
    /// Named by the run (not `--run-dir`): another name is taken if this one is gone by the
    /// time the run ends (`-2`, `-3`, …).
    chosen: bool,
}

/// The run folder: `--run-dir`, or `runs/<name>-<time>` (with `-2`, `-3`... if taken). It is
/// made when training ends, with its files ([`make_run_dir`]), so that a run stopped before
/// (Ctrl-C, a kill) leaves no empty folder; this checks that it can be: an existing folder
/// that takes files and holds no earlier run's, or one that can be made in the nearest
/// existing folder above it.
fn run_dir(arg: Option<PathBuf>, name: &str) -> Result<RunDir> {
    let (dir, chosen) = match arg {
        Some(d) => (d, false),
        None => {
            let safe: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
            (free_name(&PathBuf::from("runs").join(format!("{safe}-{}", report::timestamp()))), true)
        }
    };
    if let Some(f) = RUN_FILES.iter().find(|f| dir.join(f).exists()) {
        bail!(
            "--run-dir {}: it already holds a run ({f}), which this one would overwrite: give another folder, \
             or remove that one",
            dir.display()
        );
    }
    can_make(&dir).map_err(|e| anyhow::anyhow!("{}: cannot create the run folder: {e}", dir.display()))?;
    Ok(RunDir { path: dir, chosen })
}

/// Makes the run folder (and those above it that are missing) for a run's files: a folder the
/// run named itself is claimed anew (another run may have taken the name since it started:
/// then the next free one), `--run-dir` is used as it is. Returns the folder, and the folders
/// made, to be removed again if no file gets written.
fn make_run_dir(planned: &RunDir) -> Result<(PathBuf, RemoveIfEmpty)> {
    let cannot =
        |dir: &Path, e: std::io::Error| anyhow::anyhow!("{}: cannot create the run folder: {e}", dir.display());
    let mut dir = planned.path.clone();
    if !planned.chosen {
        let created = missing_folders(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| cannot(&dir, e))?;
        return Ok((dir, RemoveIfEmpty(created)));
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let above = missing_folders(parent);
    std::fs::create_dir_all(parent).map_err(|e| cannot(parent, e))?;
    // `create_dir` fails on a folder that exists: the claim is atomic, and a folder another
    // run claimed is never taken (nor removed).
    while let Err(e) = std::fs::create_dir(&dir) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(cannot(&dir, e));
        }
        dir = free_name(&planned.path);
    }
    Ok((dir.clone(), RemoveIfEmpty([vec![dir], above].concat())))
}

/// The folders from `dir` up that do not exist yet (created for a run, so removed again if it
/// fails before writing anything), deepest first.
fn missing_folders(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).map(Path::to_path_buf).collect()
}

/// Runs `mnist train`.
///
/// # Errors
/// Bad options, a missing data set, invalid architecture or checkpoint files, files that
/// cannot be written.
pub fn run(args: TrainArgs, global: &Global) -> Result<()> {
    let started = Instant::now();
    // From here Ctrl-C ends the program with status 130, and during training stops it gently.
    crate::interrupt::install();
    check_numbers(&args)?;
    // What to train, before the (slower) data load so that mistakes show at once.
    let source = match &args.resume {
        Some(_) => None,
        None => Some(ModelSource::parse(args.model.as_deref().unwrap_or("mlp-128"))?),
    };
    device::check_build(args.device)?;
    // A resumed run's checkpoint, read once: its trainer and what it recorded of the run.
    let resumed = match &args.resume {
        Some(p) if p.is_dir() => {
            bail!("--resume {}: a folder; give the checkpoint file written with --checkpoint", p.display())
        }
        Some(p) if !p.exists() => bail!("--resume {}: no such file", p.display()),
        Some(p) => Some(plan_resume(&args, p)?),
        None => None,
    };
    let recorded = |key: &str| resumed.as_ref().and_then(|p| p.trainer.annotations().get(key).cloned());
    let choice = data_choice(global, recorded(DATASET_KEY).as_deref())?;
    if let (Some(_), Some(recorded)) = (&global.dataset, recorded(DATASET_KEY)) {
        if *recorded != choice.label {
            eprintln!(
                "note: --dataset {} differs from the checkpoint's {recorded}: the resumed run trains on other data",
                choice.label
            );
        }
    }
    let (splits, load_time) = choice.load()?;
    let names = choice.class_names();
    let mut train_set = splits.train;
    // A checkpoint's limit: `Some(None)` for a run on every image.
    let limit = match resumed.as_ref().and_then(|p| p.recorded_limit) {
        Some(saved) => resumed_setting("--limit", args.limit.map(Some), Some(saved), show_limit).flatten(),
        None => args.limit,
    };
    if let Some(n) = limit.filter(|&n| n < train_set.len()) {
        train_set = train_set.slice(0..n);
    } else if let Some(n) = limit.filter(|&n| n > train_set.len()) {
        eprintln!("note: --limit {n}: the training set holds {} images; training on all of them", train_set.len());
    }
    let train_set = Arc::new(train_set);
    let test = Arc::new(splits.test);

    let plan = match (resumed, source) {
        (Some(plan), _) => plan,
        (None, Some(source)) => {
            // Before the model is built: one that cannot take the data is not worth its memory.
            nn_train::check_input_shape(&source.spec()?, &train_set)
                .with_context(|| format!("--model {}", source.name()))?;
            plan_new(&args, &source, train_set.len())?
        }
        (None, None) => bail!("nothing to train"),
    };
    let Plan {
        name,
        mut trainer,
        epochs,
        batch_size,
        validation,
        augmentation,
        early_stopping,
        reduce_lr,
        normalization,
        recorded_lr,
        ..
    } = plan;
    // Every checkpoint and the model file say what the run trained on and how.
    trainer.set_annotation(DATASET_KEY, choice.label.clone());
    trainer.set_annotation(fit_keys::EPOCHS, epochs.to_string());
    trainer.set_annotation(fit_keys::BATCH_SIZE, batch_size.to_string());
    trainer.set_annotation(fit_keys::VALIDATION, validation.to_string());
    trainer.set_annotation(
        fit_keys::AUGMENT,
        augmentation.filter(|a| !a.is_identity()).map_or("none".into(), |a| augment_arg(&a)),
    );
    trainer.set_annotation(fit_keys::LIMIT, limit.map_or("none".into(), |n| n.to_string()));
    trainer.set_annotation(fit_keys::EARLY_STOPPING, early_stopping.map_or("none".into(), |p| p.to_string()));
    trainer.set_annotation(fit_keys::REDUCE_LR, reduce_lr.map_or("none".into(), |p| p.to_string()));
    // The rate the run began with: a resumed run's optimiser holds the rate it reached.
    // Checkpoints written before the annotation: a constant schedule's first epoch trained at it.
    let first_epoch_rate = (trainer.compile().schedule == Schedule::Constant)
        .then(|| trainer.history().epochs.first().map(|e| e.lr as f32))
        .flatten();
    let start_lr = recorded_lr.or(first_epoch_rate).unwrap_or_else(|| trainer.learning_rate());
    trainer.set_annotation(fit_keys::LEARNING_RATE, start_lr.to_string());
    let done = trainer.state().epoch;
    // The resumed file, as the user named it (for the messages).
    let resumed_file = args.resume.as_ref().map_or_else(|| "CHECKPOINT".to_string(), |p| p.display().to_string());
    schedule_horizon_note(trainer.compile(), steps_per_epoch(train_set.len(), validation, batch_size), epochs);
    if done >= epochs {
        bail!(
            "the checkpoint has already trained {}; give --epochs above {done} to continue (or evaluate it as it \
             is: mnist evaluate --model {resumed_file})",
            report::plural(done, "epoch")
        );
    }
    let checkpoint = checkpoint_path(&args, &mut trainer);
    if let Some(path) = &checkpoint {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        trainer.set_annotation(fit_keys::CHECKPOINT, absolute.to_string_lossy());
    }
    // A run that early stopping ended would, resumed with it, stop again before its first
    // epoch (its callback picks up the patience already spent): say so before any work.
    if let Some(patience) = early_stopping.filter(|_| done > 0) {
        let probe = EarlyStopping::new(monitor_of(validation)).patience(patience).restore_best_weights(true);
        if let Some(why) = probe.stops_at_once(&trainer) {
            bail!(
                "resumed with --early-stopping {patience}, the run would stop before its first epoch ({why}). To \
                 train it on, resume with a longer patience or --early-stopping none, or start a new run from \
                 its weights: mnist train --model {resumed_file}"
            );
        }
    }
    // Where the checkpoints go must take them, before an epoch's work is spent.
    if let Some(path) = &checkpoint {
        check_writable(path).with_context(|| format!("--checkpoint {}", path.display()))?;
    }
    let planned = run_dir(args.run_dir.clone(), &name)?;
    if let Some(path) = &checkpoint {
        let into_run = path.parent().is_some_and(|p| same_path(p, &planned.path));
        if let Some(file) = path.file_name().filter(|f| into_run && RUN_FILES.iter().any(|r| f.to_str() == Some(*r))) {
            bail!(
                "--checkpoint {}: the run writes its own {} there when training ends; give the checkpoint \
                 another name or folder",
                path.display(),
                file.to_string_lossy()
            );
        }
    }

    let spec = trainer.model().spec().clone();
    // Named as the user gave it (a spec file's path, not the run name made of it).
    let given = args.model.as_deref().filter(|_| args.resume.is_none()).unwrap_or(&name);
    crate::models::check_classes(&spec, names.len(), &format!("--model {given}"))?;
    // Keras warns and trains nothing; a run that can change nothing is refused before its work.
    if spec.layers.iter().all(|l| l.trainable() != Some(true)) {
        bail!(
            "every layer with weights is frozen ({}): training would change nothing; leave a layer out of \
             --freeze, or evaluate the model as it is with mnist evaluate",
            frozen_text(&spec)
        );
    }
    let (params, _, _) = nn_core::summary::param_counts(&spec)?;
    let compile = *trainer.compile();
    let validation_text = match validation {
        ValidationArg::Test => format!("the test set ({} images)", test.len()),
        ValidationArg::Split(f) => {
            let held_out = mnist_data::validation_len(train_set.len(), f);
            // Both parts must hold images: said before the run starts, in the flag's words.
            if held_out == 0 || held_out == train_set.len() {
                bail!(
                    "--validation split:{f} of {}: leaves no image to {}; give a fraction nearer 0.5, or more \
                     images",
                    report::plural(train_set.len(), "training image"),
                    if held_out == 0 { "validate" } else { "train on" }
                );
            }
            format!("the last {} of the training images ({held_out} images)", report::percent(f))
        }
        ValidationArg::None => "none".into(),
    };
    // The settings that change training beyond the recipe's line, in words.
    let mut extras = Vec::new();
    if augmentation.is_some_and(|a| !a.is_identity()) {
        extras.push(format!("augmentation ({})", augment_text(&augmentation)));
    }
    let regularization = regularization_text(&spec);
    if regularization != "none" {
        extras.push(regularization.clone());
    }
    let frozen = frozen_text(&spec);
    if frozen != "none" {
        extras.push(format!("frozen: {frozen}"));
    }
    if let Some(p) = early_stopping {
        extras.push(format!("early stopping after {} without improvement", report::plural(p, "epoch")));
    }
    if let Some(p) = reduce_lr {
        extras.push(format!("learning rate ÷10 after {} without improvement", report::plural(p, "epoch")));
    }
    if !args.quiet {
        print!("{}", nn_core::summary(&spec, "sequential")?);
        println!();
    }
    println!(
        "Training {name} on {} ({} training images{}, loaded in {:.1}s) on {}",
        choice.title(),
        train_set.len(),
        if limit.is_some() { ", --limit" } else { "" },
        load_time.as_secs_f64(),
        trainer.model().device()
    );
    let momentum = match compile.optimizer {
        Optimizer::Sgd { momentum, nesterov, .. } if momentum != 0.0 => {
            format!(", momentum {momentum}{}", if nesterov { " (Nesterov)" } else { "" })
        }
        Optimizer::RmsProp { momentum, .. } if momentum != 0.0 => format!(", momentum {momentum}"),
        _ => String::new(),
    };
    println!(
        "{} (learning rate {}{}{momentum}, schedule {}), {}, {} of batch {}, {}{}{}",
        compile.optimizer.name(),
        report::rate(compile.optimizer.lr()),
        if compile.optimizer.lr() == start_lr {
            String::new()
        } else {
            format!(", lowered from {}", report::rate(start_lr))
        },
        schedule_text(&compile.schedule),
        loss_text(compile.loss),
        report::plural(epochs, "epoch"),
        batch_size,
        if validation == ValidationArg::None {
            "no validation".to_string()
        } else {
            format!("validation on {validation_text}")
        },
        if extras.is_empty() { String::new() } else { format!(", {}", extras.join(", ")) },
        if done > 0 { format!(", resuming after epoch {done}") } else { String::new() }
    );
    println!("Run folder: {} (written when training ends)", planned.path.display());

    let mut callbacks: Vec<Box<dyn Callback>> = Vec::new();
    if let Some(patience) = early_stopping {
        let monitor = monitor_of(validation);
        let key = format!("early_stopping.{monitor}");
        if done > 0 && trainer.kept_tensors(&key).is_empty() {
            eprintln!(
                "note: the checkpoint keeps no best weights for early stopping (it was written without it): \
                 early stopping starts afresh from the resume"
            );
        }
        callbacks.push(Box::new(EarlyStopping::new(monitor).patience(patience).restore_best_weights(true)));
    }
    if let Some(patience) = reduce_lr {
        let monitor = monitor_of(validation);
        callbacks.push(Box::new(ReduceLROnPlateau::new(monitor).patience(patience)));
    }
    if let Some(path) = &checkpoint {
        callbacks.push(Box::new(ModelCheckpoint::new(path)));
    }
    // A loss that becomes NaN or infinite stops the run with the last good epoch's weights
    // (a diverged model would be saved only to be refused by evaluate and predict).
    callbacks.push(Box::new(StopOnDivergence));
    let fit_validation = match validation {
        ValidationArg::Test => Validation::Data(test.clone()),
        ValidationArg::Split(f) => Validation::Split(f),
        ValidationArg::None => Validation::None,
    };
    let fit_started = Instant::now();
    // The first Ctrl-C stops training after its batch; the run is then saved as of its last
    // completed epoch (a second ends the program).
    let ctrl_c = crate::interrupt::during(
        trainer.interrupt(),
        "stopping after this batch, undoing the unfinished epoch, and saving the run",
    );
    trainer
        .fit(
            train_set.clone(),
            FitConfig {
                epochs,
                batch_size,
                validation: fit_validation,
                callbacks,
                seed: args.seed.unwrap_or(DEFAULT_SEED),
                augmentation,
                // The run's own (a model or checkpoint written by the library may standardise).
                normalization: Some(normalization),
                verbosity: if args.quiet { Verbosity::Silent } else { Verbosity::Auto },
                ..Default::default()
            },
        )
        .context("training failed")?;
    drop(ctrl_c);
    let fit_secs = fit_started.elapsed().as_secs_f64();
    let interrupted = trainer.history().interrupted();
    if interrupted && trainer.history().epochs.len() == done {
        return Err(Interrupted(format!(
            "in epoch {}, before it completed: nothing was saved{}",
            done + 1,
            if done > 0 { " (the checkpoint is left as it was)" } else { "" }
        ))
        .into());
    }
    let diverged = trainer.history().stopped.as_deref().filter(|why| why.starts_with(DIVERGED));
    if let Some(why) = diverged {
        let loss = why.split(':').next().unwrap_or(why);
        // A resumed run keeps its rate: only a fresh run can be given a lower one.
        let lr = report::rate(trainer.learning_rate());
        let mut advice = if done > 0 {
            format!("--resume keeps the run's learning rate: train afresh with a lower --lr (the run's is {lr})")
        } else {
            format!("try a lower --lr (now {lr})")
        };
        // Large weight penalties diverge too (L2 1e30): name them beside the rate.
        if spec.layers.iter().any(|l| kernel_penalty(l).is_some()) {
            advice += &format!(" or smaller weight penalties (--l2; now {regularization})");
        }
        let good = trainer.history().epochs.len();
        if good == done && done == 0 {
            bail!("training diverged in its first epoch ({loss}): nothing worth saving; {advice}");
        }
        if good == done {
            bail!(
                "training diverged in epoch {} ({loss}), the first after the checkpoint, which is left as it was; \
                 {advice}",
                done + 1
            );
        }
        eprintln!(
            "warning: training diverged in epoch {} ({loss}); the run keeps the weights of epoch {good}; {advice}",
            good + 1
        );
    }

    // Results on the test set.
    let eval = trainer.evaluate(&test)?;
    let probs = trainer.predict(&test)?;
    let predicted: Vec<usize> = pictures::best(&probs).into_iter().map(|(p, _)| p).collect();
    let confusion = nn_train::Confusion::from_predictions(test.labels(), &predicted, names.len());

    // The run folder: made now (a run that fails before writing anything in it leaves none of
    // the folders it made behind).
    let (dir, _cleanup) = make_run_dir(&planned)?;
    if dir != planned.path {
        eprintln!(
            "note: another run took {} meanwhile (it started in the same second): this run's files go to {}",
            planned.path.display(),
            dir.display()
        );
    }
    let model_path = dir.join("model.safetensors");
    trainer.save_model(&model_path)?;
    let history = trainer.history().clone();
    let csv_path = dir.join("history.csv");
    write_atomic(&csv_path, history.to_csv().as_bytes())?;
    let mut written = vec![
        ("model.safetensors", "the trained model (for evaluate, predict, summary, diagram)".to_string()),
        ("history.csv", "loss and accuracy per epoch".to_string()),
    ];
    let title = format!("{name} on {}", choice.title());
    if pictures::history_png(&dir.join("history.png"), &history, &title)? {
        written.push(("history.png", "training curves".into()));
    }
    let shown: Vec<usize> = (0..test.len().min(25)).collect();
    pictures::prediction_grid(
        &dir.join("predictions.png"),
        &test,
        &shown,
        &predicted[..shown.len()],
        &names,
        &format!("{title}: test images 0–{}", shown.len().saturating_sub(1)),
    )?;
    written.push(("predictions.png", "the first test images with their predictions".into()));
    nn_viz::confusion_png(
        dir.join("confusion.png"),
        &confusion.counts,
        &names,
        &format!("{title}: test accuracy {:.2}%", eval.accuracy * 100.0),
    )?;
    written.push(("confusion.png", "confusion matrix of the test set".into()));

    let epochs_run = history.epochs.len();
    let this_run = &history.epochs[done.min(epochs_run)..];
    // Folded from +0 (an empty `sum` of floats is -0, printed "-0.00").
    let secs_per_epoch = this_run.iter().fold(0.0, |a, e| a + e.seconds) / this_run.len().max(1) as f64;
    let stopped_early = epochs_run < epochs;
    let mut r = String::new();
    let _ = writeln!(r, "mnist train report");
    let _ = writeln!(r, "==================");
    let _ = writeln!(r, "command:        {}", report::command_line());
    let _ = writeln!(r, "model:          {name} ({} parameters)", report::thousands(params));
    let _ = writeln!(
        r,
        "data set:       {} ({}): {} training images{}, {} test images",
        choice.title(),
        choice.dir.display(),
        train_set.len(),
        if limit.is_some() { " (--limit)" } else { "" },
        test.len()
    );
    let _ = writeln!(r, "device:         {}", trainer.model().device());
    let _ = writeln!(r, "optimizer:      {}", optimizer_text(&compile.optimizer.learning_rate(start_lr)));
    let _ = writeln!(r, "schedule:       {}", schedule_text(&compile.schedule));
    if let Some(patience) = early_stopping {
        let _ = writeln!(
            r,
            "early stopping: after {} without improvement, then the best epoch's weights put back",
            report::plural(patience, "epoch")
        );
    }
    if let Some(patience) = reduce_lr {
        let _ = writeln!(
            r,
            "reduce lr:      ÷10 after {} without improvement; base rate at the end {:.4e}{}",
            report::plural(patience, "epoch"),
            trainer.learning_rate(),
            history.epochs.last().map_or(String::new(), |e| format!(" (the last epoch trained at {:.4e})", e.lr))
        );
    }
    let _ = writeln!(r, "loss:           {}", loss_text(compile.loss));
    let _ = writeln!(r, "batch size:     {batch_size}");
    let _ = writeln!(r, "validation:     {validation_text}");
    let _ = writeln!(r, "augmentation:   {}", augment_text(&augmentation));
    let _ = writeln!(r, "regularization: {regularization}");
    let _ = writeln!(r, "frozen layers:  {frozen}");
    let _ = writeln!(r, "seed:           {}", trainer.state().seed);
    let _ = writeln!(
        r,
        "epochs:         {epochs_run} of {epochs}{}{}",
        if done > 0 { format!(" (resumed after {done})") } else { String::new() },
        if stopped_early { " (stopped early)" } else { "" }
    );
    if let Some(why) = &history.stopped {
        let _ = writeln!(r, "stopped:        {why}");
    }
    let _ = writeln!(r, "seconds/epoch:  {secs_per_epoch:.2}");
    let _ = writeln!(r, "training time:  {}", report::duration(fit_secs));
    let _ = writeln!(r);
    let _ = writeln!(r, "test loss:      {:.4}", eval.loss);
    let _ = writeln!(r, "test accuracy:  {:.4}", eval.accuracy);
    let _ = writeln!(r);
    let _ = writeln!(r, "Per class, on the test set:");
    r += &report::classification_report(&confusion, &names);
    let _ = writeln!(r);
    let _ = writeln!(r, "Confusion matrix (rows: true class, columns: predicted class):");
    r += &report::confusion_text(&confusion, &names);
    let _ = writeln!(r);
    let _ = writeln!(r, "History:");
    r += &history.to_csv();
    let report_path = dir.join("report.txt");
    write_atomic(&report_path, r.as_bytes())?;
    written.push(("report.txt", "settings, test results per class, confusion matrix".into()));

    println!();
    println!("Test loss {:.4}, test accuracy {:.4} ({:.2}%)", eval.loss, eval.accuracy, eval.accuracy * 100.0);
    // An interrupted run's training time holds the undone epoch's part too: said apart.
    let epochs_secs = this_run.iter().fold(0.0, |a, e| a + e.seconds);
    let undone = if interrupted && fit_secs - epochs_secs >= 0.05 {
        format!(" (and {} of the undone epoch)", report::duration(fit_secs - epochs_secs))
    } else {
        String::new()
    };
    println!(
        "{}{} in {} ({secs_per_epoch:.2} s/epoch){undone}; {} in all",
        report::plural(this_run.len(), "epoch"),
        if done > 0 { format!(" (after the checkpoint's {done})") } else { String::new() },
        report::duration(if interrupted { epochs_secs } else { fit_secs }),
        report::duration(started.elapsed().as_secs_f64())
    );
    println!("Written to {}:", dir.display());
    for (file, what) in &written {
        println!("  {file:<18} {what}");
    }
    // The last checkpoint written (a name template filled in for the last epoch).
    let checkpoint = checkpoint.as_ref().map(|p| {
        history.epochs.last().and_then(|e| nn_train::path_template::fill(p, e).ok()).unwrap_or_else(|| p.clone())
    });
    if let Some(p) = &checkpoint {
        println!("  checkpoint: {}", p.display());
    }
    println!("Next: mnist evaluate --model {}", model_path.display());
    if interrupted {
        return Err(Interrupted(format!(
            "after {epochs_run} of {}; the run was saved in {}{}",
            report::plural(epochs, "epoch"),
            dir.display(),
            checkpoint
                .as_ref()
                .map_or(String::new(), |p| format!("; continue it with: mnist train --resume {}", p.display()))
        ))
        .into());
    }
    Ok(())
}

/// Where the run writes its checkpoints: `--checkpoint`; for a resumed run without it, where
/// the run wrote them (recorded in its file; for a file written before that was recorded, the
/// resumed checkpoint itself), as Keras's `BackupAndRestore` keeps its folder, with a note
/// when that is another file than the one resumed.
fn checkpoint_path(args: &TrainArgs, trainer: &mut Trainer) -> Option<PathBuf> {
    if args.checkpoint.is_some() {
        return args.checkpoint.clone();
    }
    let resumed = args.resume.as_ref()?;
    let recorded = trainer.annotations().get(fit_keys::CHECKPOINT).map(PathBuf::from);
    // Only a checkpoint (with optimiser state, and not a run folder's own file) stands for
    // its run's when nothing is recorded.
    let run_file = resumed.file_name().is_some_and(|f| RUN_FILES.iter().any(|r| f.to_str() == Some(*r)));
    let path = match recorded {
        Some(p) => p,
        None if !run_file && trainer.model_mut().runtime().optimizer_state().is_ok_and(|s| !s.is_empty()) => {
            resumed.clone()
        }
        None => return None,
    };
    // Said when they go anywhere but the file resumed.
    if !same_path(&path, resumed) {
        eprintln!(
            "note: checkpoints go on to {}, as the run's did (give --checkpoint to write them elsewhere)",
            path.display()
        );
    }
    Some(path)
}

/// A new run: the recipe of a preset (or defaults for a spec file), then the flags.
fn plan_new(args: &TrainArgs, source: &ModelSource, n_train: usize) -> Result<Plan> {
    // A trained model's file, read once: its architecture, weights and normalisation.
    let trained = match source {
        ModelSource::ModelFile(path) => Some((path, nn_core::ModelFile::load(path)?)),
        _ => None,
    };
    let mut spec = match &trained {
        Some((_, file)) => file.spec.clone(),
        None => source.spec()?,
    };
    let name = source.name();
    let r = match source {
        ModelSource::Preset(p) => recipe(p),
        _ => None,
    }
    .unwrap_or_else(|| models::spec_recipe(&spec));
    let (mut compile, mut epochs, mut batch, mut validation, mut augmentation) = (
        r.compile,
        r.epochs,
        r.batch_size,
        match r.validation {
            RecipeValidation::Test => ValidationArg::Test,
            RecipeValidation::Split(f) => ValidationArg::Split(f),
            RecipeValidation::None => ValidationArg::None,
        },
        r.augmentation,
    );
    // A trained model goes on with the settings it was trained with (Keras's `load_model`
    // keeps the compiled optimiser and loss), the flags changing them.
    if let Some((path, file)) = &trained {
        let context = || format!("--model {}", path.display());
        if let Some(recorded) = Compile::recorded_in(file).with_context(context)? {
            let fit = RecordedFit::of(&file.metadata).with_context(context)?;
            compile = restarted(recorded, fit.learning_rate);
            epochs = fit.epochs.unwrap_or(epochs);
            batch = fit.batch_size.unwrap_or(batch);
            validation = fit.validation.unwrap_or(validation);
            augmentation = fit.augmentation.unwrap_or(augmentation);
            eprintln!(
                "note: {} trains on with the settings it was trained with (optimiser, learning rate, loss, \
                 schedule, epochs, batch size, validation, augmentation) where flags do not change them",
                path.display()
            );
        }
    }
    if let Some(rate) = args.dropout {
        models::insert_dropout(&mut spec, rate)?;
    }
    if let Some(l2) = args.l2 {
        models::add_l2(&mut spec, l2)?;
    }
    if let Some(frozen) = &args.freeze {
        // Exactly these frozen (a trained model's frozen layers thawed first); `none`: none.
        spec.thaw_all();
        for layer in frozen.iter().map(|l| l.trim()).filter(|l| !(frozen.len() == 1 && *l == "none")) {
            spec.set_trainable(layer, false).with_context(|| format!("--freeze {layer}"))?;
        }
    }
    let epochs = args.epochs.unwrap_or(epochs);
    let batch_size = args.batch_size.unwrap_or(batch);
    let validation = args.validation.unwrap_or(validation);
    let augmentation = args.augment.or(augmentation);
    if let Some(o) = args.optimizer {
        compile.optimizer = o.optimizer();
    }
    if let Some(lr) = args.lr {
        compile.optimizer = compile.optimizer.learning_rate(lr);
    }
    if let Some(m) = args.momentum {
        if matches!(compile.optimizer, Optimizer::Adam { .. }) {
            eprintln!("note: --momentum is ignored by adam (use --optimizer sgd or rmsprop)");
        }
        compile.optimizer = compile.optimizer.momentum(m);
    }
    if let Some(l) = args.loss {
        let logits = !models::ends_in_softmax(&spec);
        compile.loss = match l {
            LossName::Sparse => Loss::SparseCategoricalCrossentropy { from_logits: logits },
            LossName::Categorical => Loss::CategoricalCrossentropy { from_logits: logits },
        };
    }
    let steps = steps_per_epoch(n_train, validation, batch_size);
    compile.schedule = match args.schedule {
        Some(s) => Schedule::from_name(s.name(), epochs, steps).unwrap_or_default(),
        // A recipe's "whole run" (total_steps 0) made explicit, for the report.
        None => compile.schedule.resolved(epochs.saturating_mul(steps)),
    };
    let seed = args.seed.unwrap_or(DEFAULT_SEED);
    let mut model = device::new_model(args.device, &spec, seed).with_context(|| format!("cannot build {name}"))?;
    // A trained model: fine-tuning starts from its weights (a fresh optimiser, a new run).
    let mut normalization = Normalization::Scale;
    if let Some((path, file)) = &trained {
        model.set_weights(&file.weights).with_context(|| format!("--model {}", path.display()))?;
        normalization = file.normalization().with_context(|| format!("--model {}", path.display()))?;
    }
    Ok(Plan {
        name,
        trainer: Trainer::new(model, compile),
        epochs,
        batch_size,
        validation,
        augmentation,
        early_stopping: args.early_stopping.and_then(|p| p.0),
        reduce_lr: args.reduce_lr.and_then(|p| p.0),
        normalization,
        recorded_limit: None,
        recorded_lr: None,
    })
}

/// A trained model's compile settings for a new run from its weights: the learning rate its
/// run began with (`fit.learning_rate`; ReduceLROnPlateau may have lowered the recorded one),
/// and a schedule fixed to its run's length (cosine, one-cycle) stretched over the new run.
fn restarted(mut compile: Compile, start_lr: Option<f32>) -> Compile {
    if let Some(lr) = start_lr {
        compile.optimizer = compile.optimizer.learning_rate(lr);
    }
    compile.schedule = compile.schedule.restarted();
    compile
}

/// The fit settings a run recorded in its file (`fit.*`), each `None` when not recorded (a
/// file written before the key was). A recorded `none` is `Some(None)`.
struct RecordedFit {
    epochs: Option<usize>,
    batch_size: Option<usize>,
    validation: Option<ValidationArg>,
    augmentation: Option<Option<Augmentation>>,
    /// The run's `--limit`.
    limit: Option<Option<usize>>,
    /// The patience of early stopping.
    early_stopping: Option<Option<usize>>,
    /// The patience of ReduceLROnPlateau.
    reduce_lr: Option<Option<usize>>,
    /// The learning rate the run began with.
    learning_rate: Option<f32>,
}

impl RecordedFit {
    /// Reads the `fit.*` annotations of a model file or checkpoint.
    ///
    /// # Errors
    /// A recorded value that does not read as its setting, or that no run could have had (a
    /// batch of 0 images, a rate that is not a positive number): the file is damaged, and the
    /// message names the key and its value.
    fn of(annotations: &std::collections::BTreeMap<String, String>) -> Result<RecordedFit> {
        fn read<T>(
            annotations: &std::collections::BTreeMap<String, String>,
            key: &str,
            parse: impl Fn(&str) -> std::result::Result<T, String>,
        ) -> Result<Option<T>> {
            annotations
                .get(key)
                .map(|v| parse(v).map_err(|why| anyhow::anyhow!("its {key} is \"{v}\": {why} (the file is damaged)")))
                .transpose()
        }
        let whole = crate::commands::whole::<usize>;
        let at_least_one =
            |v: &str| whole(v).and_then(|n| if n == 0 { Err("must be at least 1".into()) } else { Ok(n) });
        let or_none = |parse: &dyn Fn(&str) -> std::result::Result<usize, String>, v: &str| {
            if v == "none" {
                Ok(None)
            } else {
                parse(v).map(Some)
            }
        };
        let a = annotations;
        Ok(RecordedFit {
            epochs: read(a, fit_keys::EPOCHS, at_least_one)?,
            batch_size: read(a, fit_keys::BATCH_SIZE, at_least_one)?,
            validation: read(a, fit_keys::VALIDATION, parse_validation)?,
            augmentation: read(a, fit_keys::AUGMENT, |v| {
                parse_augment(v).map(|a| Some(a).filter(|a| !a.is_identity()))
            })?,
            limit: read(a, fit_keys::LIMIT, |v| or_none(&at_least_one, v))?,
            early_stopping: read(a, fit_keys::EARLY_STOPPING, |v| or_none(&whole, v))?,
            reduce_lr: read(a, fit_keys::REDUCE_LR, |v| or_none(&whole, v))?,
            learning_rate: read(a, fit_keys::LEARNING_RATE, |v| match v.parse::<f32>() {
                Ok(lr) if lr.is_finite() && lr >= f32::MIN_POSITIVE => Ok(lr),
                Ok(_) => Err("not a positive learning rate".into()),
                Err(e) => Err(e.to_string()),
            })?,
        })
    }
}

/// What `--early-stopping` and `--reduce-lr` watch: the validation loss, or the training loss
/// of a run without validation.
fn monitor_of(validation: ValidationArg) -> &'static str {
    if validation == ValidationArg::None {
        "loss"
    } else {
        "val_loss"
    }
}

/// The value of `--early-stopping` and `--reduce-lr`: a patience in epochs, or `None` (`none`)
/// for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patience(pub Option<usize>);

/// Reads a [`Patience`]: a whole number or `none`.
fn parse_patience(s: &str) -> Result<Patience, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Patience(None));
    }
    crate::commands::whole::<usize>(s).map(|p| Patience(Some(p))).map_err(|e| format!("{e} (or `none`)"))
}

/// A resumed run: the checkpoint's model, optimiser and loss; the fit settings it was started
/// with (a flag that changes one is used, with a note that the run then differs from an
/// uninterrupted one), or for a checkpoint without them, the flags, else the recipe of its
/// preset.
fn plan_resume(args: &TrainArgs, path: &Path) -> Result<Plan> {
    let mut trainer = device::resume(args.device, path)?;
    let ignored: Vec<&str> = [
        ("--model", args.model.is_some()),
        ("--seed", args.seed.is_some()),
        ("--optimizer", args.optimizer.is_some()),
        ("--lr", args.lr.is_some()),
        ("--momentum", args.momentum.is_some()),
        ("--loss", args.loss.is_some()),
        ("--schedule", args.schedule.is_some()),
        ("--dropout", args.dropout.is_some()),
        ("--l2", args.l2.is_some()),
        ("--freeze", args.freeze.is_some()),
    ]
    .iter()
    .filter(|(_, given)| *given)
    .map(|(flag, _)| *flag)
    .collect();
    if !ignored.is_empty() {
        eprintln!(
            "note: {} ignored with --resume: the checkpoint's architecture, optimiser, loss and seed are used \
             (to train on with other ones, give it as --model {}: a new run from its weights)",
            ignored.join(", "),
            path.display()
        );
    }
    let stateful = trainer.compile().optimizer.rule().slots() > 0;
    if stateful && trainer.state().step > 0 && trainer.model_mut().runtime().optimizer_state()?.is_empty() {
        eprintln!(
            "note: {} holds no optimiser state (a model file, not a --checkpoint): the optimiser starts afresh, \
             so the run will not match an uninterrupted one",
            path.display()
        );
    }
    let spec = trainer.model().spec().clone();
    let name = models::preset_of(&spec).map_or_else(
        || path.file_stem().map_or_else(|| "resumed".into(), |s| s.to_string_lossy().into_owned()),
        str::to_string,
    );
    let r = recipe(&name);
    let recipe_validation = match r.as_ref().map(|r| r.validation) {
        Some(RecipeValidation::Split(f)) => ValidationArg::Split(f),
        Some(RecipeValidation::None) => ValidationArg::None,
        _ => ValidationArg::Test,
    };
    let fit = RecordedFit::of(trainer.annotations()).with_context(|| format!("--resume {}", path.display()))?;
    // --epochs is the total to reach, not part of the batches: no note when it grows.
    let epochs = args.epochs.or(fit.epochs);
    let batch_size = resumed_setting("--batch-size", args.batch_size, fit.batch_size, usize::to_string);
    let validation = resumed_setting("--validation", args.validation, fit.validation, ValidationArg::to_string);
    // A patience the run started with ("none" when it had none).
    let patience = |flag: &str, saved: Option<Option<usize>>, given: Option<Option<usize>>| match saved {
        Some(saved) => {
            resumed_setting(flag, given, Some(saved), |p| p.map_or("none".into(), |p| p.to_string())).flatten()
        }
        None => given.flatten(),
    };
    let early_stopping = patience("--early-stopping", fit.early_stopping, args.early_stopping.map(|p| p.0));
    let reduce_lr = patience("--reduce-lr", fit.reduce_lr, args.reduce_lr.map(|p| p.0));
    // A recorded "none" is kept as none, not replaced by the recipe's augmentation.
    let augmentation = match fit.augmentation {
        Some(saved) => {
            let given = args.augment.map(|a| Some(a).filter(|a| !a.is_identity()));
            resumed_setting("--augment", given, Some(saved), show_augment).flatten()
        }
        None => args.augment.or(r.as_ref().and_then(|r| r.augmentation)),
    };
    Ok(Plan {
        name,
        epochs: epochs.or(r.as_ref().map(|r| r.epochs)).unwrap_or(5),
        batch_size: batch_size.or(r.as_ref().map(|r| r.batch_size)).unwrap_or(128),
        validation: validation.unwrap_or(recipe_validation),
        augmentation,
        early_stopping,
        reduce_lr,
        normalization: trainer.normalization(),
        recorded_limit: fit.limit,
        recorded_lr: fit.learning_rate,
        trainer,
    })
}

/// A fit setting of a resumed run: the flag's value when given (with a note when it differs
/// from the one the run started with, as the run then differs from an uninterrupted one), else
/// the checkpoint's.
fn resumed_setting<T: PartialEq>(
    flag: &str,
    given: Option<T>,
    saved: Option<T>,
    show: impl Fn(&T) -> String,
) -> Option<T> {
    match (given, saved) {
        (Some(g), Some(s)) if g != s => {
            eprintln!(
                "note: {flag} {} differs from the checkpoint's {}: the resumed run will not match an \
                 uninterrupted one",
                show(&g),
                show(&s)
            );
            Some(g)
        }
        (Some(g), _) => Some(g),
        (None, s) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_folder_taken_meanwhile_is_left_to_its_run() {
        let tmp = tempfile::tempdir().unwrap();
        let planned = RunDir { path: tmp.path().join("runs/mlp-128-20260101-000000"), chosen: true };
        // Another run claimed the name while this one trained.
        std::fs::create_dir_all(&planned.path).unwrap();
        let (dir, cleanup) = make_run_dir(&planned).unwrap();
        assert_eq!(dir, tmp.path().join("runs/mlp-128-20260101-000000-2"));
        assert!(dir.is_dir());
        // Nothing written: only this run's folder goes.
        drop(cleanup);
        assert!(!dir.exists() && planned.path.is_dir());
        // A folder given with --run-dir that holds a run is refused before training.
        std::fs::write(planned.path.join("report.txt"), "an earlier run").unwrap();
        let err = run_dir(Some(planned.path.clone()), "mlp-128").err().unwrap().to_string();
        assert!(err.contains("already holds a run (report.txt)"), "{err}");
    }

    #[test]
    fn validation_and_augmentation_parse() {
        assert_eq!(parse_validation("split:0.1"), Ok(ValidationArg::Split(0.1)));
        assert_eq!(parse_validation("test"), Ok(ValidationArg::Test));
        assert_eq!(parse_validation("none"), Ok(ValidationArg::None));
        assert!(parse_validation("split:1.5").is_err());
        assert!(parse_validation("later").is_err());
        let a = parse_augment("rotation=10,shift=0.1,zoom=0.2").expect("parses");
        assert_eq!((a.rotation_range, a.width_shift_range, a.height_shift_range, a.zoom_range), (10.0, 0.1, 0.1, 0.2));
        assert!(parse_augment("spin=3").is_err());
        assert!(parse_augment("zoom=2").is_err());
        assert!(parse_augment("rotation").is_err());
        // A setting given twice is refused, naming both.
        assert_eq!(
            parse_augment("rotation=10,rotate=20").err().as_deref(),
            Some("'rotate=20': rotation is already set by 'rotation=10'")
        );
        assert!(parse_augment("shift=0.1,width_shift=0.2").is_err_and(|e| e.contains("width_shift is already set")));
        assert!(parse_augment("width_shift=0.1,height_shift=0.2").is_ok());
        // Said in percent of the image.
        assert_eq!(augment_text(&Some(a)), "rotation ±10°, shift ±10%, zoom ±0.2");
        let wide = parse_augment("width_shift=0.1,height_shift=0.05").expect("parses");
        assert_eq!(augment_text(&Some(wide)), "shift ±10% across, ±5% down");
    }

    #[test]
    fn steps_per_epoch_follow_the_validation_split() {
        assert_eq!(steps_per_epoch(60_000, ValidationArg::Test, 128), 469);
        assert_eq!(steps_per_epoch(60_000, ValidationArg::Split(0.2), 100), 480);
    }
}
