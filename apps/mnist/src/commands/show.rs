//! `mnist show`: sample images with their labels.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use nn_viz::Tile;

use crate::commands::{create_parent, data_choice};
use crate::data::Split;
use crate::pictures::grid_options;
use crate::{report, Global};

const EXAMPLES: &str = "\
Examples:
  mnist show                                  the first 25 training digits into digits.png
  mnist show --count 100 --out first100.png   a 10×10 grid
  mnist show --index 7 --split test           test image 7 enlarged, with pixel coordinates
  mnist show --index 1000 --count 20          20 images from index 1000
  mnist --dataset fashion show                Fashion-MNIST with its class names";

/// Arguments of `mnist show`.
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true, after_help = EXAMPLES)]
pub struct ShowArgs {
    /// Show this image enlarged, with its label and pixel coordinates (with --count: start the
    /// grid here instead).
    #[arg(long, value_name = "N", value_parser = crate::commands::whole::<usize>)]
    pub index: Option<usize>,
    /// How many images to put in the grid. [default: 25]
    #[arg(long, value_name = "N", value_parser = crate::commands::whole::<usize>)]
    pub count: Option<usize>,
    /// Which images: the training or the test set.
    #[arg(long, value_enum, default_value_t = Split::Train)]
    pub split: Split,
    /// The PNG file to write. [default: digits.png, or digit-<split>-<N>.png with --index]
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
}

/// Runs `mnist show`.
///
/// # Errors
/// A missing data set, indices out of range, a file that cannot be written.
pub fn run(args: ShowArgs, global: &Global) -> Result<()> {
    let choice = data_choice(global, None)?;
    let (splits, _) = choice.load()?;
    let data = args.split.of(&splits);
    let names = choice.class_names();
    let name = |i: usize| names.get(data.label(i) as usize).cloned().unwrap_or_else(|| data.label(i).to_string());
    let check = |i: usize| -> Result<()> {
        if data.is_empty() {
            let flag = if args.index.is_some() { format!("--index {i}: ") } else { String::new() };
            bail!("{flag}the {} set of {} is empty (0 images): nothing to show", args.split.name(), choice.label);
        }
        if i >= data.len() {
            bail!(
                "--index {i}: the {} set has {} images (indices 0 to {})",
                args.split.name(),
                data.len(),
                data.len().saturating_sub(1)
            );
        }
        Ok(())
    };
    match (args.index, args.count) {
        (Some(i), None) => {
            check(i)?;
            let out = args.out.unwrap_or_else(|| PathBuf::from(format!("digit-{}-{i}.png", args.split.name())));
            create_parent(&out)?;
            let title = format!("{} {} image {i}: label {}", choice.title(), args.split.name(), name(i));
            nn_viz::enlarged_digit(&out, data.image(i), data.rows(), data.cols(), &title, 12)?;
            println!("{} image {i} (label {}) written to {}", args.split.name(), name(i), out.display());
        }
        (start, count) => {
            let start = start.unwrap_or(0);
            let count = count.unwrap_or(25);
            if count == 0 {
                bail!("--count 0: nothing to show");
            }
            if count > 2500 {
                bail!("--count {count}: at most 2500 images fit in a picture");
            }
            check(start)?;
            let end = start.saturating_add(count).min(data.len());
            if end - start < count {
                eprintln!(
                    "note: the {} set ends at index {}: showing {} of the {count} images asked for",
                    args.split.name(),
                    data.len() - 1,
                    end - start
                );
            }
            let tiles: Vec<Tile<'_>> = (start..end).map(|i| Tile::labelled(data.image(i), name(i))).collect();
            let out = args.out.unwrap_or_else(|| PathBuf::from("digits.png"));
            create_parent(&out)?;
            let title = format!("{} {} images {start}–{}", choice.title(), args.split.name(), end - 1);
            nn_viz::digit_grid(&out, &tiles, &grid_options(data.rows(), data.cols(), tiles.len(), title))?;
            let what = format!("{} image", args.split.name());
            let range = if tiles.len() == 1 { format!("({start})") } else { format!("({start} to {})", end - 1) };
            println!("{} {range} written to {}", report::plural(tiles.len(), &what), out.display());
        }
    }
    Ok(())
}
