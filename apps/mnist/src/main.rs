//! `mnist`: the MNIST workflow of the Keras tutorials from the terminal.
//!
//! Fetch the data, look at it, train a model from a preset recipe or a spec file, evaluate it,
//! predict digits in your own photos, draw the network, search hyper-parameters. The work is done
//! by the workspace's crates (`mnist-data`, `nn-core`, `nn-train`, `nn-viz`); this binary only
//! turns command lines into calls and results into text and pictures.
// The doc comments of the arguments are clap's --help text, where `<split>` and `test[3]`
// are meant literally; rustdoc would read them as HTML and links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nn_core::cpu::MatmulPrecision;

mod commands;
mod data;
mod device;
mod interrupt;
mod models;
mod pictures;
mod report;

const EXAMPLES: &str = "\
Examples:
  mnist fetch                                  download MNIST into data/mnist
  mnist info                                   shapes, pixel statistics, class counts
  mnist show --count 25 --out digits.png       a grid of training digits
  mnist summary --model mlp-128                the Keras summary table of a preset
  mnist train --model mlp-128                  the TFDS Keras MNIST example (6 epochs, ~97.3%)
  mnist train --model convnet --epochs 3 --augment rotation=10,shift=0.1,zoom=0.1
  mnist evaluate --model runs/mlp-128-20250101-120000/model.safetensors --out-dir eval
  mnist predict --model runs/.../model.safetensors my-digit.jpg --index 0 1 2
  mnist diagram --model mlp-128 --out network.png
  mnist tune --max-trials 10 --epochs 3
  mnist --dataset fashion train --model mlp-128     the same on Fashion-MNIST
  mnist --precision bf16 train --model mlp-512-512  mixed precision (CPUs with AMX)
  mnist --precision bf16x3 train --model mlp-512-512  near-f32 products, faster (AMX)

Run `mnist <command> --help` for the options of each command.";

/// The heading of the options every command takes (the data set's and the arithmetic's), apart
/// from each command's own.
const GLOBAL: &str = "Options of every command";

/// The MNIST workflow of the Keras tutorials: data, training, evaluation, prediction, pictures.
#[derive(Parser, Debug)]
#[command(name = "mnist", version, about, long_about = None, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// The folder holding the data sets, one sub-folder each (`<DIR>/mnist`, `<DIR>/fashion`).
    #[arg(long, global = true, value_name = "DIR", default_value = "data", display_order = 900, help_heading = GLOBAL)]
    pub data_dir: PathBuf,

    /// The data set: `mnist` (handwritten digits), `fashion` (Fashion-MNIST), or the path of a
    /// folder holding the four IDX files (train/t10k images/labels, `.gz` or not).
    /// [default: mnist; for a model file, the data set it was trained on]
    #[arg(long, global = true, value_name = "mnist|fashion|PATH", display_order = 901, help_heading = GLOBAL)]
    pub dataset: Option<String>,

    /// How the CPU runs matrix products: f32, bf16x3 (near f32, faster; AMX) or bf16 (mixed
    /// precision; AMX).
    ///
    /// For training, evaluation and prediction. Weights, activations and updates stay f32 at
    /// every level; `bf16x3` and `bf16` need an Intel CPU with AMX (Xeon Sapphire Rapids or
    /// later) on Linux, and leave the GPU's products as they are. README.md ("Train and
    /// validate") and BENCHMARKS.md say more.
    #[arg(long, global = true, value_enum, default_value = "f32", display_order = 902, help_heading = GLOBAL)]
    pub precision: Precision,

    /// What to do.
    #[command(subcommand)]
    pub command: commands::Command,
}

/// `--precision`: how the CPU runs matrix products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// Every product in f32 (Keras's default `float32` policy); on AMX the first layer's
    /// pixels exactly.
    F32,
    /// Each operand split into two bfloat16s, three products summed in f32 on AMX (PyTorch's
    /// matmul precision "high").
    #[value(alias = "high")]
    Bf16x3,
    /// Products in bfloat16 summed in f32 on AMX (PyTorch's matmul precision "medium").
    #[value(alias = "medium")]
    Bf16,
}

/// What every command gets besides its own arguments.
#[derive(Clone, Debug)]
pub struct Global {
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--dataset`, when given.
    pub dataset: Option<String>,
}

fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = Cli::parse();
    let global = Global { data_dir: cli.data_dir, dataset: cli.dataset };
    let (name, precision) = match cli.precision {
        Precision::F32 => ("f32", MatmulPrecision::Highest),
        Precision::Bf16x3 => ("bf16x3", MatmulPrecision::High),
        Precision::Bf16 => ("bf16", MatmulPrecision::Medium),
    };
    if precision != MatmulPrecision::Highest {
        if !nn_core::cpu::bf16_products_available() {
            eprintln!(
                "error: --precision {name}: this CPU (or operating system) has no AMX bfloat16 products \
                 (they need an Intel Xeon of the Sapphire Rapids generation or later, on Linux); use --precision f32"
            );
            return ExitCode::FAILURE;
        }
        nn_core::cpu::set_matmul_precision(precision);
    }
    match commands::run(cli.command, &global) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(i) = e.downcast_ref::<interrupt::Interrupted>() {
                eprintln!("interrupted: {i}");
                return ExitCode::from(interrupt::STATUS);
            }
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: the libraries' errors already say
/// their cause (`x.png: Permission denied`), which the chain would repeat.
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out = format!("{out}: {c}");
        }
    }
    out
}

/// `mnist predict ... | head` closes stdout early: end quietly, as other command-line tools
/// do, instead of reporting a panic of `println!`.
fn quiet_broken_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message =
            payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied());
        if message.is_some_and(|m| m.contains("Broken pipe")) {
            // 128 + SIGPIPE, what a shell reports for a process ended by a broken pipe.
            std::process::exit(141);
        }
        default_hook(info);
    }));
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
