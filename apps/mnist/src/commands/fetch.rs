//! `mnist fetch`: download a data set with progress bars.

use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mnist_data::fetch::{default_base_url, FetchEvent, FetchOptions};
use mnist_data::DatasetKind;

use crate::Global;

const EXAMPLES: &str = "\
Examples:
  mnist fetch                          MNIST into data/mnist
  mnist fetch --dataset fashion        Fashion-MNIST into data/fashion
  mnist --data-dir ~/datasets fetch    MNIST into ~/datasets/mnist
  mnist fetch --base-url https://ossci-datasets.s3.amazonaws.com/mnist/   from a mirror

Files already present with the right checksum are not downloaded again. Offline? Copy the four
.gz files into the folder by hand; `mnist info` checks that they load.";

/// Arguments of `mnist fetch`.
#[derive(Args, Debug)]
#[command(after_help = EXAMPLES)]
pub struct FetchArgs {
    /// Download from this address instead of the official one (the four file names are appended
    /// to it). The SHA-256 sums checked are still the official ones.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
}

/// Refuses a --base-url that is not an http:// or https:// address (the downloader reads no
/// other), before anything is created.
fn check_url(url: &str, dest: &std::path::Path) -> Result<()> {
    let lower = url.to_ascii_lowercase();
    let host = ["http://", "https://"].iter().find_map(|scheme| lower.strip_prefix(scheme));
    match host {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        Some(_) => bail!("--base-url {url}: no host name after the scheme; give e.g. https://example.org/mnist/"),
        None => bail!(
            "--base-url {url}: only http:// and https:// URLs work; for files you already have (a local copy, \
             file://...), copy the four .gz files into {} and run `mnist info` to check they load",
            dest.display()
        ),
    }
}

/// Runs `mnist fetch`.
///
/// # Errors
/// A data set that cannot be fetched by name, network or checksum failures.
pub fn run(args: FetchArgs, global: &Global) -> Result<()> {
    let name = global.dataset.as_deref().unwrap_or("mnist");
    let Some(kind) = DatasetKind::from_name(name) else {
        bail!("--dataset {name}: `mnist fetch` downloads `mnist` or `fashion`; a folder of your own cannot be fetched");
    };
    let dest = global.data_dir.join(kind.name());
    if let Some(url) = &args.base_url {
        check_url(url, &dest)?;
    }
    let base = args.base_url.unwrap_or_else(|| default_base_url(kind).to_string());
    println!("Fetching {} from {base} into {}", kind.name(), dest.display());
    let tty = std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    let style =
        ProgressStyle::with_template("{msg:32} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let mut on_event = |event: FetchEvent| match event {
        FetchEvent::Skipped { name, bytes } => println!("  {name}: already present ({bytes} bytes, checksum ok)"),
        FetchEvent::Replacing { name, found } => {
            println!("  {name}: present but its checksum is wrong ({found}); downloading it again");
        }
        FetchEvent::Started { name, total, .. } => {
            let b = match total {
                Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            b.set_style(style.clone());
            b.set_message(format!("  {name}"));
            if !tty {
                b.set_draw_target(ProgressDrawTarget::hidden());
            }
            bar = Some(b);
        }
        FetchEvent::Progress { received, .. } => {
            if let Some(b) = &bar {
                b.set_position(received);
            }
        }
        FetchEvent::Done { name, bytes } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            println!("  {name}: downloaded {bytes} bytes, checksum ok");
        }
        _ => {}
    };
    let report = FetchOptions::new(kind)
        .base_url(base.clone())
        .fetch(&dest, &mut on_event)
        .with_context(|| format!("fetching {} failed", kind.name()))?;
    println!(
        "{}: {} file(s) downloaded ({:.1} MB), {} already present. Try `mnist{}{} info`.",
        dest.display(),
        report.downloaded.len(),
        report.bytes_downloaded as f64 / 1e6,
        report.skipped.len(),
        if global.data_dir == std::path::Path::new("data") {
            String::new()
        } else {
            format!(" --data-dir {}", global.data_dir.display())
        },
        if kind == DatasetKind::Mnist { String::new() } else { format!(" --dataset {}", kind.name()) }
    );
    Ok(())
}
