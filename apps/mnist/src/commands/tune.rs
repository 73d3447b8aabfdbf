//! `mnist tune`: random hyper-parameter search (the search itself is in `crate::tune`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use mnist_data::atomic::write_atomic;
use nn_train::{DeviceChoice, Interrupt, Optimizer};

use crate::commands::{data_choice, free_name};
use crate::interrupt::Interrupted;
use crate::models::{self, DATASET_KEY};
use crate::{report, Global};
use nn_train::tuner::{parse_choices, random_search, trials_csv, IntRange, SearchSpace, TrialResult, TunerConfig};

const EXAMPLES: &str = "\
Examples:
  mnist tune                                         10 trials of 3 epochs in the default space
  mnist tune --max-trials 20 --units 64..256:64 --layers 1..3 --lr 1e-3,3e-4
  mnist tune --optimizer adam --lr 1e-3 --lr 3e-4     a list given as repeated options
  mnist tune --limit 10000 --epochs 2 --parallel 2   a quick search on 10000 images, 2 at a time
  mnist tune --conv-blocks 1..2 --filters 16..64:16 --layers 0..1 --units 64..128:64
                                                     convnets: 1 or 2 conv blocks, then 0 or 1 hidden layer
  mnist evaluate --model runs/tune-20250101-120000/best.safetensors

Each trial trains [Conv2D(filters, 3, relu) → MaxPooling2D(2)] × conv-blocks → Flatten →
Dense(units, relu) × layers → [Dropout] → Dense(10) with sparse categorical cross-entropy
(no convolution block by default: a multilayer perceptron), and is scored by the validation accuracy of its best epoch (as
Keras Tuner scores it) on the last 20% of the training images (held out). The best trial's
model is kept, with its best epoch's weights. Ctrl-C lets no further trial start: the search
ends with the trials under way and keeps the best (exit status 130).";

/// Arguments of `mnist tune`.
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES, allow_negative_numbers = true)]
pub struct TuneArgs {
    /// How many combinations to try (fewer if the space holds fewer).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = crate::commands::whole::<usize>)]
    pub max_trials: usize,
    /// Trainings per combination, with different seeds; the score is their mean.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = crate::commands::whole::<usize>)]
    pub executions_per_trial: usize,
    /// Epochs of each training.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = crate::commands::whole::<usize>)]
    pub epochs: usize,
    /// Units of each hidden layer: MIN..MAX:STEP.
    #[arg(long, value_name = "MIN..MAX:STEP", default_value = "32..512:32")]
    pub units: IntRange,
    /// Learning rates to choose from, comma separated (or the option repeated).
    #[arg(long, value_name = "LIST", default_value = "1e-2,1e-3,1e-4", value_parser = parse_choices::<f32>)]
    pub lr: Vec<Vec<f32>>,
    /// Number of hidden Dense layers: MIN..MAX (from 0 when --conv-blocks starts at 1 or more).
    #[arg(long, value_name = "MIN..MAX", default_value = "1..2")]
    pub layers: IntRange,
    /// Number of convolution blocks, Conv2D(filters, 3×3, relu) → MaxPooling2D(2) each, before
    /// the hidden layers: MIN..MAX (at most 3 for 28×28 images; 0: none, a multilayer
    /// perceptron).
    #[arg(long, value_name = "MIN..MAX", default_value = "0")]
    pub conv_blocks: IntRange,
    /// Filters of each convolution block: MIN..MAX:STEP (used with --conv-blocks).
    #[arg(long, value_name = "MIN..MAX:STEP", default_value = "16..64:16")]
    pub filters: IntRange,
    /// Dropout rates before the output layer to choose from (0: none).
    #[arg(long, value_name = "LIST", default_value = "0,0.2,0.5", value_parser = parse_choices::<f32>)]
    pub dropout: Vec<Vec<f32>>,
    /// Batch sizes to choose from.
    #[arg(long, value_name = "LIST", default_value = "32,128", value_parser = parse_choices::<usize>)]
    pub batch_size: Vec<Vec<usize>>,
    /// Optimisers to choose from (adam, sgd, rmsprop).
    #[arg(long, value_name = "LIST", default_value = "adam,sgd", value_parser = parse_optimizers)]
    pub optimizer: Vec<Vec<Optimizer>>,
    /// Seed of the draws and of the trainings.
    #[arg(long, default_value_t = 42, value_parser = crate::commands::whole::<u64>)]
    pub seed: u64,
    /// Trials trained at the same time, each on its own thread (1 is best on a 2-core machine:
    /// each training already uses every core).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = crate::commands::whole::<usize>)]
    pub parallel: usize,
    /// Where the trials train: `cpu`, `cuda` (the first NVIDIA GPU; `cuda:N` for GPU N; needs a
    /// build with --features cuda) or `auto` (the GPU when there is one, else the CPU).
    #[arg(long, value_name = "cpu|cuda|cuda:N|auto", default_value = "auto")]
    pub device: DeviceChoice,
    /// Search on the first N training images only (20% of them validate).
    #[arg(long, value_name = "N", value_parser = crate::commands::whole::<usize>)]
    pub limit: Option<usize>,
    /// The folder for best.safetensors and trials.csv. [default: runs/tune-<UTC time>]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Parses `adam,sgd,rmsprop`.
fn parse_optimizers(s: &str) -> Result<Vec<Optimizer>, String> {
    let names: Vec<String> = parse_choices(s)?;
    names
        .iter()
        .map(|n| Optimizer::from_name(n).ok_or_else(|| format!("unknown optimizer '{n}': use adam, sgd or rmsprop")))
        .collect()
}

/// The values of a list option given once or more (`--lr 1e-3,1e-4` or `--lr 1e-3 --lr 1e-4`).
fn flatten<T: Clone>(lists: &[Vec<T>]) -> Vec<T> {
    lists.concat()
}

/// The table's columns for convolution blocks and their filters, when the space has them.
fn conv_columns(conv: bool, blocks: &str, filters: &str) -> String {
    if conv {
        format!("{blocks:>6}  {filters:<12}  ")
    } else {
        String::new()
    }
}

fn print_header(conv: bool) {
    println!(
        "{:>5}  {}{:>6}  {:<16}  {:>7}  {:>7}  {:>5}  {:<9}  {:>12}  {:>8}",
        "trial",
        conv_columns(conv, "blocks", "filters"),
        "layers",
        "units",
        "lr",
        "dropout",
        "batch",
        "optimizer",
        "val_accuracy",
        "seconds"
    );
}

fn print_row(t: &TrialResult, conv: bool) {
    let score = match (t.diverged, t.val_accuracy.is_finite()) {
        (false, _) => format!("{:.4}", t.val_accuracy),
        (true, true) => format!("{:.4} (div.)", t.val_accuracy),
        (true, false) => "diverged".to_string(),
    };
    let or_none = |text: String| if text.is_empty() { "-".to_string() } else { text };
    println!(
        "{:>5}  {}{:>6}  {:<16}  {:>7}  {:>7}  {:>5}  {:<9}  {:>12}  {:>8.1}",
        t.number,
        conv_columns(conv, &t.params.filters.len().to_string(), &or_none(t.params.filters_text())),
        t.params.units.len(),
        or_none(t.params.units_text()),
        format!("{:e}", t.params.learning_rate),
        t.params.dropout,
        t.params.batch_size,
        t.params.optimizer.name(),
        score,
        t.seconds
    );
}

/// A search space's error with its field named as the option that sets it (`units:` →
/// `--units:`).
fn flag_named(e: nn_train::TrainError) -> anyhow::Error {
    let message = e.to_string();
    for field in ["conv_blocks", "filters", "layers", "units"] {
        if let Some(rest) = message.strip_prefix(&format!("{field}:")) {
            return anyhow::anyhow!("--{}:{rest}", field.replace('_', "-"));
        }
    }
    e.into()
}

/// Fewer validation images than this give a note: each is worth a tenth of a point or more.
const SMALL_VALIDATION: usize = 1000;

/// Runs `mnist tune`.
///
/// # Errors
/// An invalid search space, a missing data set, a failed trial, files that cannot be written.
pub fn run(args: TuneArgs, global: &Global) -> Result<()> {
    let started = Instant::now();
    // From here Ctrl-C ends the program with status 130, and during the search lets no further
    // trial start.
    crate::interrupt::install();
    if args.parallel == 0 {
        bail!("--parallel 0: run at least 1 trial at a time");
    }
    if args.limit == Some(0) {
        bail!("--limit 0: search on at least 1 image");
    }
    for (flag, value) in [
        ("--max-trials", args.max_trials),
        ("--epochs", args.epochs),
        ("--executions-per-trial", args.executions_per_trial),
    ] {
        if value == 0 {
            bail!("{flag} 0: at least 1");
        }
    }
    let space = SearchSpace {
        conv_blocks: args.conv_blocks,
        filters: args.filters,
        layers: args.layers,
        units: args.units,
        learning_rates: flatten(&args.lr),
        dropouts: flatten(&args.dropout),
        batch_sizes: flatten(&args.batch_size),
        optimizers: flatten(&args.optimizer),
    };
    space.validate().map_err(flag_named)?;
    crate::device::check_build(args.device)?;
    let (device, note) = nn_train::settle(args.device);
    if let Some(n) = note {
        eprintln!("note: {n}");
    }
    // Ctrl-C during the search requests it (see below).
    let stop = Interrupt::new();
    let cfg = TunerConfig {
        max_trials: args.max_trials,
        executions_per_trial: args.executions_per_trial,
        epochs: args.epochs,
        validation_split: 0.2,
        seed: args.seed,
        parallel: args.parallel,
        device,
        stop: Some(stop.clone()),
    };
    // A folder named for the time, or the next free one (another search may have started this second).
    let dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| free_name(&PathBuf::from("runs").join(format!("tune-{}", report::timestamp()))));
    // An earlier search's results are never overwritten (as `mnist train --run-dir`).
    if let Some(found) = ["best.safetensors", "trials.csv"].iter().map(|f| dir.join(f)).find(|p| p.exists()) {
        bail!(
            "--out-dir {}: the folder already holds a search's results ({}); give another folder, or remove it \
             first",
            dir.display(),
            found.display()
        );
    }
    if dir.exists() && !dir.is_dir() {
        bail!("--out-dir {}: a file, not a folder; give a folder", dir.display());
    }
    let choice = data_choice(global, None)?;
    let (splits, _) = choice.load()?;
    let mut train = splits.train;
    if let Some(n) = args.limit {
        if n < train.len() {
            train = train.slice(0..n);
        } else if n > train.len() {
            eprintln!("note: --limit {n}: the training set holds {} images; searching on all of them", train.len());
        }
    }
    space.check(train.rows(), train.cols(), train.classes()).map_err(flag_named)?;
    // Both parts of the split must hold images, or no trial can run.
    let validating = mnist_data::validation_len(train.len(), cfg.validation_split);
    if validating == 0 || validating == train.len() {
        bail!(
            "{} training images cannot be split into 80% to train and 20% to validate (each part needs an \
             image at least): give a larger --limit",
            train.len()
        );
    }
    let test = Arc::new(splits.test);
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", dir.display()))?;

    let combos = space.size();
    println!(
        "Random search on {} ({} training images; the last 20%, {validating} images, validate): {} trial(s) of {} epoch(s) × {} execution(s), {} at a time, on {}",
        choice.title(),
        train.len(),
        cfg.max_trials.min(usize::try_from(combos).unwrap_or(usize::MAX)),
        cfg.epochs,
        cfg.executions_per_trial,
        cfg.parallel,
        cfg.device
    );
    if (1..SMALL_VALIDATION).contains(&validating) {
        eprintln!(
            "note: {validating} validation images score each trial in steps of {:.2} points of accuracy: trials \
             closer than that are a tie; give a larger --limit",
            100.0 / validating as f64
        );
    }
    let conv = space.conv_blocks.max > 0;
    println!(
        "Space: {}layers {}, units {}, lr {:?}, dropout {:?}, batch {:?}, optimizer {} ({combos} combinations)",
        if conv { format!("conv blocks {}, filters {}, ", space.conv_blocks, space.filters) } else { String::new() },
        space.layers,
        space.units,
        space.learning_rates,
        space.dropouts,
        space.batch_sizes,
        space.optimizers.iter().map(Optimizer::name).collect::<Vec<_>>().join(",")
    );
    println!();
    print_header(conv);
    // The trials are kept as they finish, so that trials.csv is written whatever happens.
    let mut finished: Vec<TrialResult> = Vec::new();
    let ctrl_c = crate::interrupt::during(
        stop.clone(),
        "no further trial starts; the search ends with the trials under way and keeps the best model",
    );
    let searched = random_search(&space, &cfg, &train, &mut |t| {
        print_row(t, conv);
        finished.push(t.clone());
    });
    drop(ctrl_c);
    let stopped = stop.is_requested();
    let csv_path = dir.join("trials.csv");
    write_atomic(&csv_path, trials_csv(&finished).as_bytes())?;
    if stopped && searched.is_err() && finished.is_empty() {
        return Err(Interrupted("before a trial finished: no model was written".into()).into());
    }
    let outcome = searched.map_err(|e| {
        let flag = if e.to_string().contains("every trial diverged") { " (give them with --lr)" } else { "" };
        anyhow::anyhow!(
            "the search failed, so no model was written (the finished trials are in {}): {e}{flag}",
            csv_path.display()
        )
    })?;
    let best = outcome.best().clone();
    let diverged_count = outcome.trials.iter().filter(|t| t.diverged).count();
    if diverged_count > 0 {
        println!();
        println!(
            "{diverged_count} of {} trial(s) diverged (the loss became NaN or infinite, in one execution at least): they rank below every other \
             and are marked `diverged` in trials.csv",
            outcome.trials.len()
        );
    }
    let mut trainer = outcome.best_trainer;

    let best_path = dir.join("best.safetensors");
    trainer.save_model(&best_path)?;
    models::add_metadata(&best_path, &[(DATASET_KEY, choice.label.clone())])?;
    let test_eval = trainer.evaluate(&test)?;

    println!();
    println!("Best: trial {} with val_accuracy {:.4}", best.number, best.val_accuracy);
    println!("  {}", best.params);
    println!("  its model on the test set: loss {:.4}, accuracy {:.4}", test_eval.loss, test_eval.accuracy);
    println!("Search took {}", report::duration(started.elapsed().as_secs_f64()));
    println!("Written to {}:", dir.display());
    println!("  best.safetensors   the best trial's model (mnist evaluate --model {})", best_path.display());
    println!("  trials.csv         every trial's hyper-parameters and score");
    if stopped {
        return Err(Interrupted(format!(
            "after {} of {} trials; the best of them was saved in {}",
            outcome.trials.len(),
            cfg.max_trials.min(usize::try_from(combos).unwrap_or(usize::MAX)),
            dir.display()
        ))
        .into());
    }
    Ok(())
}
