//! The subcommands: their arguments (clap) and what each one does.

use anyhow::Result;
use clap::Subcommand;
use std::path::{Path, PathBuf};

use crate::data::DataChoice;
use crate::Global;

pub mod diagram;
pub mod evaluate;
pub mod fetch;
pub mod info;
pub mod predict;
pub mod show;
pub mod summary;
pub mod train;
pub mod tune;

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download a data set (four gzip files, SHA-256 checked) into <data-dir>/<name>.
    Fetch(fetch::FetchArgs),
    /// Shapes, pixel range, mean/std and class counts of the training and test sets.
    Info(info::InfoArgs),
    /// Draw sample images with their labels into a PNG (a grid, or one digit enlarged).
    Show(show::ShowArgs),
    /// Print the Keras summary table of a preset, spec file or model file.
    Summary(summary::SummaryArgs),
    /// Train a model (a preset recipe or a spec file) and write a run folder with the model,
    /// history, pictures and a report.
    Train(Box<train::TrainArgs>),
    /// Test a trained model: loss, accuracy, confusion matrix, per-class precision/recall/F1.
    Evaluate(evaluate::EvaluateArgs),
    /// Classify your own images of digits, or test-set examples, with a trained model.
    Predict(predict::PredictArgs),
    /// Draw the network (circles and lines, or blocks) of a preset, spec file or model file.
    Diagram(diagram::DiagramArgs),
    /// Random search of hyper-parameters (units, layers, learning rate, dropout, ...), Keras
    /// Tuner style; keeps the best model.
    Tune(tune::TuneArgs),
}

/// Runs a subcommand.
///
/// # Errors
/// Whatever the command fails with, in words for the user.
pub fn run(command: Command, global: &Global) -> Result<()> {
    match command {
        Command::Fetch(a) => fetch::run(a, global),
        Command::Info(a) => info::run(a, global),
        Command::Show(a) => show::run(a, global),
        Command::Summary(a) => summary::run(a, global),
        Command::Train(a) => train::run(*a, global),
        Command::Evaluate(a) => evaluate::run(a, global),
        Command::Predict(a) => predict::run(a, global),
        Command::Diagram(a) => diagram::run(a, global),
        Command::Tune(a) => tune::run(a, global),
    }
}

/// Parses a whole-number flag, saying what is wrong with a bad value (clap's own parser says
/// "invalid digit found in string" for `-1`).
///
/// # Errors
/// A negative number, one too large for `T`, or text that is not a whole number.
pub fn whole<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse::<T>().map_err(|_| {
        let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
        match (s.starts_with('-'), !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())) {
            (true, true) => format!("{s} is negative: give a whole number"),
            (false, true) => format!("{s} is too large"),
            _ => format!("`{s}` is not a whole number"),
        }
    })
}

/// The data set of `--dataset`, else `fallback` (a model's data set), else MNIST.
///
/// # Errors
/// As [`DataChoice::resolve`].
pub fn data_choice(global: &Global, fallback: Option<&str>) -> Result<DataChoice> {
    match (global.dataset.as_deref(), fallback) {
        (Some(name), _) => DataChoice::resolve(&global.data_dir, name),
        (None, Some(recorded)) => DataChoice::resolve(&global.data_dir, recorded).map_err(|e| {
            anyhow::anyhow!(
                "the model was trained on the data set {recorded} (recorded in its file), which is not here: {e}"
            )
        }),
        (None, None) => DataChoice::resolve(&global.data_dir, "mnist"),
    }
}

/// Creates the folder that will hold `path`, if it has one.
///
/// # Errors
/// When the folder cannot be created, naming it.
pub fn create_parent(path: &std::path::Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", dir.display()))?;
    }
    Ok(())
}

/// `base`, or `base-2`, `base-3`, … : the first that does not exist.
pub(crate) fn free_name(base: &Path) -> PathBuf {
    let mut dir = base.to_path_buf();
    let mut k = 2;
    while dir.exists() {
        dir = PathBuf::from(format!("{}-{k}", base.display()));
        k += 1;
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_say_what_is_wrong() {
        assert_eq!(whole::<usize>("12"), Ok(12));
        assert_eq!(whole::<usize>("-1"), Err("-1 is negative: give a whole number".into()));
        assert_eq!(whole::<u8>("300"), Err("300 is too large".into()));
        assert_eq!(whole::<usize>("1.5"), Err("`1.5` is not a whole number".into()));
        assert_eq!(whole::<usize>("-0"), Err("-0 is negative: give a whole number".into()));
        let huge = "9".repeat(50);
        assert_eq!(whole::<usize>(&huge), Err(format!("{huge} is too large")));
    }
}
