//! `mnist predict`: class probabilities of your own images or of data-set examples.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use mnist_data::{Dataset, DatasetKind};
use nn_viz::{Tile, Tone};

use crate::commands::{create_parent, data_choice};
use crate::data::{DataChoice, Split};
use crate::models::load_trained;
use crate::{pictures, report, Global};

const EXAMPLES: &str = "\
Examples:
  mnist predict --model runs/mlp-128-20250101-120000/model.safetensors my-seven.jpg
  mnist predict --model model.safetensors photos/*.png --out predictions.png
  mnist predict --model model.safetensors --index 0 1 2 3      test images 0 to 3

Your images may be of any size up to 64 megapixels and any colour (PNG, JPEG or BMP): a dark digit on light paper or a
light one on a dark background. Each is turned into an MNIST-style 28×28 image (cropped, scaled
to 20 pixels, centred by its centre of mass) before it is classified; --out shows what the model
saw.";

/// Arguments of `mnist predict`.
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true, after_help = EXAMPLES)]
pub struct PredictArgs {
    /// The trained model: model.safetensors from `mnist train` (or its run folder),
    /// best.safetensors from `mnist tune`, or a checkpoint.
    #[arg(long, short, value_name = "FILE")]
    pub model: String,
    /// Where to run the model: `cpu`, `cuda` (the first NVIDIA GPU; `cuda:N` for GPU N; needs a
    /// build with --features cuda) or `auto` (the GPU when there is one, else the CPU).
    #[arg(long, value_name = "cpu|cuda|cuda:N|auto", default_value = "auto")]
    pub device: nn_train::DeviceChoice,
    /// Image files of digits (PNG, JPEG or BMP; any size up to 64 megapixels, any colour).
    #[arg(value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Data-set examples to classify, by index (e.g. --index 0 1 2).
    /// Image files go before --index, or after `--` (`--index 0 1 -- photo.png`).
    #[arg(long, value_name = "N", num_args = 1.., value_parser = index_value)]
    pub index: Vec<usize>,
    /// Which set --index refers to.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Also draw the images as the model saw them, with the predictions, into this PNG.
    #[arg(long, value_name = "FILE.png")]
    pub out: Option<PathBuf>,
}

/// The most images --out draws, as `mnist show --count`.
const MAX_PICTURE: usize = 2500;

/// Parses an --index value; a file name there was meant as an image, which clap cannot tell:
/// --index takes every value up to the next option.
fn index_value(s: &str) -> Result<usize, String> {
    crate::commands::whole::<usize>(s).map_err(|e| {
        let number_like = s.trim_start_matches(['-', '+']).bytes().next().is_some_and(|b| b.is_ascii_digit());
        if number_like {
            e
        } else {
            format!(
                "{e}; --index takes every value up to the next option, so give image files before --index \
                 (`mnist predict --model M {s} --index 0 1`) or after `--` (`--index 0 1 -- {s}`)"
            )
        }
    })
}

/// One thing to classify.
struct Item {
    /// How to name it ("photo.png", "test[3]").
    source: String,
    /// Its 28×28 pixels (0 = background).
    pixels: Vec<u8>,
    /// The true class, for data-set examples.
    truth: Option<usize>,
}

/// Runs `mnist predict`.
///
/// # Errors
/// A missing or invalid model, images that cannot be read (after classifying the others),
/// indices out of range, a file that cannot be written.
pub fn run(args: PredictArgs, global: &Global) -> Result<()> {
    if args.images.is_empty() && args.index.is_empty() {
        bail!("nothing to predict: give image files and/or --index N (see `mnist predict --help`)");
    }
    let asked = args.images.len() + args.index.len();
    if let (Some(out), true) = (&args.out, asked > MAX_PICTURE) {
        bail!(
            "--out {}: {asked} images asked for, but at most {MAX_PICTURE} fit in a picture; predict fewer with \
             --out, or leave out --out to print the predictions only",
            out.display()
        );
    }
    let loaded = load_trained(&args.model, args.device)?;
    let model_name = loaded.name();
    let mut trainer = loaded.trainer;
    let choice = data_choice(global, loaded.dataset.as_deref());
    // Photos need only the class names: a custom data set's are the digits, as are those of a
    // data set no longer where it was trained.
    let names = match (&choice, args.index.is_empty()) {
        (Ok(c), _) => c.class_names(),
        (Err(_), true) => (0..10).map(|d| d.to_string()).collect(),
        (Err(e), false) => bail!("--index needs the data set: {e}"),
    };
    crate::models::check_classes(trainer.model().spec(), names.len(), &loaded.path.display().to_string())?;
    if let (false, Ok(c)) = (args.index.is_empty(), &choice) {
        if let Some(note) = c.mismatch_note(&global.data_dir, loaded.dataset.as_deref()) {
            eprintln!("note: {note}");
        }
    }
    if let (false, Some(recorded)) = (args.images.is_empty(), loaded.dataset.as_deref()) {
        let digits = DataChoice::resolve(&global.data_dir, recorded).is_ok_and(|c| c.kind == Some(DatasetKind::Mnist));
        if !digits {
            eprintln!(
                "note: the model was trained on {recorded} (recorded in its file), but photos are prepared as \
                 MNIST's handwritten digits are (inverted when light, cropped, centred by their centre of mass): \
                 predictions of other images may be off"
            );
        }
    }
    // A flat input (`[784]`, as Keras's MLPs on flattened pixels) takes square photos, and
    // examples of the data set of as many pixels whatever their shape.
    let flat = trainer.model().spec().input_shape.len() == 1;
    let (rows, cols) = match trainer.model().spec().input_shape.as_slice() {
        [h, w] | [1, h, w] => (*h, *w),
        [n] if n.isqrt() * n.isqrt() == *n => (n.isqrt(), n.isqrt()),
        other => bail!("{}: the model takes inputs of shape {other:?}, not images", args.model),
    };

    let mut items = Vec::new();
    let mut failures = Vec::new();
    for path in &args.images {
        if (rows, cols) != (nn_viz::MNIST_SIDE, nn_viz::MNIST_SIDE) {
            bail!("{}: the model takes {rows}×{cols} images; only 28×28 models can read photos", args.model);
        }
        match nn_viz::digitize_path(path) {
            Ok(px) => items.push(Item { source: path.display().to_string(), pixels: px.to_vec(), truth: None }),
            Err(e) => {
                eprintln!("error: {e}");
                failures.push(path.display().to_string());
            }
        }
    }
    if let (false, Ok(choice)) = (args.index.is_empty(), &choice) {
        let (splits, _) = choice.load()?;
        let data = args.split.of(&splits);
        let fits =
            if flat { data.rows() * data.cols() == rows * cols } else { (data.rows(), data.cols()) == (rows, cols) };
        if !fits {
            bail!(
                "--index: the {} set of {} holds {}×{} images and {} takes {rows}×{cols}: give a model trained \
                 on this data set",
                args.split.name(),
                choice.label,
                data.rows(),
                data.cols(),
                args.model
            );
        }
        let outputs = trainer.model().output_len();
        for &i in &args.index {
            if data.is_empty() {
                bail!("--index {i}: the {} set of {} is empty (0 images)", args.split.name(), choice.label);
            }
            if i >= data.len() {
                bail!(
                    "--index {i}: the {} set has {} images (indices 0 to {})",
                    args.split.name(),
                    data.len(),
                    data.len().saturating_sub(1)
                );
            }
            let label = data.label(i) as usize;
            if outputs > 0 && label >= outputs {
                bail!(
                    "--index {i}: label {label} does not fit the model's {outputs} outputs: the model was not made \
                     for the {} data set; give a model trained on it",
                    choice.label
                );
            }
            items.push(Item {
                source: format!("{}[{i}]", args.split.name()),
                pixels: data.image(i).to_vec(),
                truth: Some(data.label(i) as usize),
            });
        }
    }

    let name = |k: usize| names.get(k).cloned().unwrap_or_else(|| k.to_string());
    let mut predictions = Vec::new();
    if !items.is_empty() {
        let pixels: Vec<u8> = items.iter().flat_map(|it| it.pixels.iter().copied()).collect();
        let labels = vec![0u8; items.len()];
        let batch = Dataset::new(pixels, labels, rows, cols, names.len().max(1))?;
        let probs = trainer.predict(&batch)?;
        for (it, row) in items.iter().zip(probs.rows()) {
            let p: Vec<f32> = row.to_vec();
            let (k, pk) =
                p.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            let truth = match it.truth {
                Some(t) if t == k => format!(" (true: {}, right)", name(t)),
                Some(t) => format!(" (true: {}, WRONG)", name(t)),
                None => String::new(),
            };
            println!("{}: predicted {} ({:.2}%){truth}", it.source, name(k), pk * 100.0);
            print!("{}", report::probability_lines(&p, &names));
            predictions.push((k, pk));
        }
        // Many examples: their accuracy at the end, where it can be read.
        let judged: Vec<bool> =
            items.iter().zip(&predictions).filter_map(|(it, &(k, _))| it.truth.map(|t| t == k)).collect();
        if judged.len() > 1 {
            let right = judged.iter().filter(|&&r| r).count();
            println!(
                "accuracy on the {} {} images: {:.4} ({right} of {} right)",
                judged.len(),
                args.split.name(),
                right as f64 / judged.len() as f64,
                judged.len()
            );
        }
    }

    if let Some(out) = &args.out {
        if items.is_empty() {
            eprintln!("note: no image could be read; {} not written", out.display());
        } else {
            create_parent(out)?;
            let tiles: Vec<Tile<'_>> = items
                .iter()
                .zip(&predictions)
                .map(|(it, &(k, pk))| match it.truth {
                    Some(t) => Tile::prediction(&it.pixels, &name(k), &name(t)),
                    None => Tile {
                        pixels: &it.pixels,
                        caption: format!("Pred: {} ({:.1}%)", name(k), pk * 100.0),
                        tone: Tone::Neutral,
                    },
                })
                .collect();
            let title = format!("Predictions of {model_name}");
            nn_viz::digit_grid(out, &tiles, &pictures::grid_options(rows, cols, tiles.len(), title))?;
            println!("Written to {}", out.display());
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} image(s) gave no prediction (see above): {}",
            failures.len(),
            args.images.len(),
            failures.join(", ")
        );
    }
    Ok(())
}
