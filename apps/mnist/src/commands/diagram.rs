//! `mnist diagram`: the network drawn as circles and lines (or blocks).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::commands::create_parent;
use crate::models::ModelSource;
use crate::{pictures, Global};

const EXAMPLES: &str = "\
Examples:
  mnist diagram --model mlp-128                    network.png: 784 → 128 relu → 10
  mnist diagram --model convnet --out cnn.png      convolutions and pooling as blocks
  mnist diagram --model runs/.../model.safetensors --title \"My model\"";

/// Arguments of `mnist diagram`.
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct DiagramArgs {
    /// A preset name, an architecture file (.json) or a trained model (.safetensors).
    #[arg(long, short, value_name = "PRESET|SPEC.json|MODEL.safetensors")]
    pub model: String,
    /// The PNG file to write.
    #[arg(long, value_name = "FILE.png", default_value = "network.png")]
    pub out: PathBuf,
    /// The heading of the picture. [default: the model's name and its layer widths]
    #[arg(long)]
    pub title: Option<String>,
}

/// Runs `mnist diagram`.
///
/// # Errors
/// An unknown preset, a missing or invalid file, a picture that cannot be written.
pub fn run(args: DiagramArgs, _global: &Global) -> Result<()> {
    let source = ModelSource::parse(&args.model)?;
    let spec = source.spec()?;
    let layers = pictures::diagram_layers(&spec)?;
    let title = args.title.unwrap_or_else(|| {
        let (params, _, _) = nn_core::summary::param_counts(&spec).unwrap_or((0, 0, 0));
        format!("{} ({} parameters)", source.name(), crate::report::thousands(params))
    });
    create_parent(&args.out)?;
    nn_viz::network_diagram(&args.out, &layers, &title)?;
    println!("Diagram of {} written to {}", source.name(), args.out.display());
    Ok(())
}
