//! `mnist evaluate`: a trained model on the test set.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::commands::data_choice;
use crate::data::Split;
use crate::models::load_trained;
use crate::{pictures, report, Global};

const EXAMPLES: &str = "\
Examples:
  mnist evaluate --model runs/mlp-128-20250101-120000/model.safetensors
  mnist evaluate --model model.safetensors --out-dir eval      also confusion.png and errors.png
  mnist evaluate --model model.safetensors --split train       accuracy on the training set

The data set is the one the model was trained on unless --dataset says otherwise.";

/// Arguments of `mnist evaluate`.
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true, after_help = EXAMPLES)]
pub struct EvaluateArgs {
    /// The trained model: model.safetensors from `mnist train` (or its run folder),
    /// best.safetensors from `mnist tune`, or a checkpoint.
    #[arg(long, short, value_name = "FILE")]
    pub model: String,
    /// Where to run the model: `cpu`, `cuda` (the first NVIDIA GPU; `cuda:N` for GPU N; needs a
    /// build with --features cuda) or `auto` (the GPU when there is one, else the CPU).
    #[arg(long, value_name = "cpu|cuda|cuda:N|auto", default_value = "auto")]
    pub device: nn_train::DeviceChoice,
    /// Which images to evaluate on.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Also write confusion.png (heat map) and errors.png (the most confident mistakes) here.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// How many mistakes errors.png shows (with --out-dir).
    #[arg(long, value_name = "N", default_value_t = 25, value_parser = crate::commands::whole::<usize>, requires = "out_dir")]
    pub errors: usize,
}

/// Runs `mnist evaluate`.
///
/// # Errors
/// A missing or invalid model file, a missing data set, a data set that does not fit the model,
/// files that cannot be written.
pub fn run(args: EvaluateArgs, global: &Global) -> Result<()> {
    // Where the pictures go must take them, before the evaluation's work is spent.
    if let Some(dir) = args.out_dir.as_ref().filter(|d| d.exists() && !d.is_dir()) {
        bail!("--out-dir {}: a file, not a folder; give a folder for confusion.png and errors.png", dir.display());
    }
    let loaded = load_trained(&args.model, args.device)?;
    let model_name = loaded.name();
    let model_path = loaded.path.display().to_string();
    let mut trainer = loaded.trainer;
    let choice = data_choice(global, loaded.dataset.as_deref())?;
    if let Some(note) = choice.mismatch_note(&global.data_dir, loaded.dataset.as_deref()) {
        eprintln!("note: {note}");
    }
    let (splits, _) = choice.load()?;
    let data = args.split.of(&splits);
    let names = choice.class_names();
    crate::models::check_classes(trainer.model().spec(), names.len(), &model_path)?;
    let eval = trainer.evaluate(data).with_context(|| format!("cannot evaluate {model_path} on {}", choice.label))?;
    let probs = trainer.predict(data)?;
    let predicted: Vec<usize> = pictures::best(&probs).into_iter().map(|(p, _)| p).collect();
    let confusion = nn_train::Confusion::from_predictions(data.labels(), &predicted, names.len());

    println!("{model_path} on the {} {} set ({} images)", choice.title(), args.split.name(), data.len());
    println!("loss:     {:.4}", eval.loss);
    println!(
        "accuracy: {:.4} ({:.2}%, {} wrong)",
        eval.accuracy,
        eval.accuracy * 100.0,
        data.len() as u64 - diag(&confusion)
    );
    println!();
    println!("Confusion matrix (rows: true class, columns: predicted class):");
    print!("{}", report::confusion_text(&confusion, &names));
    println!();
    print!("{}", report::classification_report(&confusion, &names));

    if let Some(dir) = args.out_dir {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", dir.display()))?;
        let confusion_path = dir.join("confusion.png");
        nn_viz::confusion_png(
            &confusion_path,
            &confusion.counts,
            &names,
            &format!("{model_name}: {} accuracy {:.2}%", args.split.name(), eval.accuracy * 100.0),
        )?;
        println!();
        println!("Confusion matrix written to {}", confusion_path.display());
        if args.errors == 0 {
            return Ok(());
        }
        let mistakes = pictures::worst_mistakes(data, &probs, args.errors);
        let errors_path = dir.join("errors.png");
        let title = format!("{model_name}: the {} most confident mistakes", mistakes.len());
        if pictures::mistakes_grid(&errors_path, data, &mistakes, &names, &title)? {
            println!("The {} most confident mistakes written to {}", mistakes.len(), errors_path.display());
        } else {
            println!("No mistakes: no errors.png");
        }
    }
    Ok(())
}

fn diag(c: &nn_train::Confusion) -> u64 {
    (0..c.counts.len()).map(|i| c.counts[i][i]).sum()
}
