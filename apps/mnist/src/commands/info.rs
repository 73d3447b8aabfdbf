//! `mnist info`: what a tutorial prints before training.

use anyhow::Result;
use clap::Args;
use mnist_data::Summary;

use crate::commands::data_choice;
use crate::Global;

const EXAMPLES: &str = "\
Examples:
  mnist info                        MNIST in data/mnist
  mnist --dataset fashion info      Fashion-MNIST in data/fashion
  mnist --dataset ~/my-digits info  a folder holding the four IDX files";

/// Arguments of `mnist info` (none besides the global `--data-dir` and `--dataset`).
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct InfoArgs {}

/// Runs `mnist info`.
///
/// # Errors
/// A missing or invalid data set.
pub fn run(_args: InfoArgs, global: &Global) -> Result<()> {
    let choice = data_choice(global, None)?;
    let (splits, took) = choice.load()?;
    println!("{} ({}), loaded in {:.2} s", choice.title(), choice.dir.display(), took.as_secs_f64());
    let names = choice.class_names();
    let train = Summary::of(&splits.train);
    let test = Summary::of(&splits.test);
    for (what, s) in [("train", &train), ("test", &test)] {
        println!();
        println!("{what}:");
        // The class counts follow in one table for both sets.
        for line in s.to_string().lines().filter(|l| !l.starts_with("class counts")) {
            println!("  {line}");
        }
    }
    println!();
    let name_w = names.iter().map(|n| n.chars().count()).max().unwrap_or(4).max(4);
    println!("  {:>5}  {:<name_w$}  {:>7}  {:>7}", "class", "name", "train", "test");
    for (k, name) in names.iter().enumerate() {
        let count = |s: &Summary| s.class_counts.get(k).copied().unwrap_or(0);
        println!("  {k:>5}  {name:<name_w$}  {:>7}  {:>7}", count(&train), count(&test));
    }
    println!("  {:>5}  {:<name_w$}  {:>7}  {:>7}", "", "total", train.len, test.len);
    Ok(())
}
