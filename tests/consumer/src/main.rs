//! Loads an MNIST-style data set from a folder and prints its summary.
//!
//! ```text
//! cargo run --manifest-path tests/consumer/Cargo.toml -- data/mnist
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "data/mnist".to_string());
    match mnist_data::Mnist::load(&dir) {
        Ok(splits) => {
            println!("train: {}", mnist_data::Summary::of(&splits.train));
            println!("test:  {}", mnist_data::Summary::of(&splits.test));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
