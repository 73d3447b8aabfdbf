//! Times loading MNIST's four gzip files (decompression and parsing, train and test in
//! parallel).
//!
//! ```text
//! cargo run --release -p mnist-data --example bench_load -- [RUNS] [DIR]
//! ```
//!
//! `RUNS` defaults to 5 and `DIR` to `data/mnist` (or `../shared/data/mnist` when that is
//! missing). Prints the minimum and median wall-clock seconds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let runs = match args.next().map(|a| a.parse::<usize>()) {
        None => 5,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: bench_load [RUNS (a positive integer, default 5)] [DIR (default data/mnist)]");
            return ExitCode::from(2);
        }
    };
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| {
        let local = PathBuf::from("data/mnist");
        let shared = PathBuf::from("../shared/data/mnist");
        if !local.is_dir() && shared.is_dir() {
            shared
        } else {
            local
        }
    });

    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let splits = match mnist_data::Mnist::load(&dir) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        times.push(start.elapsed().as_secs_f64());
        std::hint::black_box(&splits);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "loaded {} from .gz {runs} times: min {:.3} s, median {:.3} s",
        dir.display(),
        times[0],
        times[times.len() / 2]
    );
    ExitCode::SUCCESS
}
