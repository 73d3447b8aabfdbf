//! # nn-viz
//!
//! Pictures in and out for MNIST models, from plain data (slices and the small structs of this
//! crate), with no dependency on the neural-network crates:
//!
//! - [`history`]: [`plot_history`], "Model loss" and "Model accuracy" per epoch, train and
//!   validation;
//! - [`grid`]: [`digit_grid`], digits with captions ("Pred: 7, True: 7" in green, red when wrong),
//!   and [`enlarged_digit`], one digit with its pixel coordinates;
//! - [`confusion`]: [`confusion_png`], a confusion matrix as a heat map with the counts;
//! - [`diagram`]: [`network_diagram`], the classic drawing of a network, circles and lines;
//! - [`digitize`]: [`digitize_path`], a photo or drawing of a digit turned into an MNIST-style
//!   28×28 image (polarity, background, cropping, 20-pixel box, centre of mass);
//! - [`font`]: the embedded DejaVu Sans font every picture writes with.
//!
//! Pictures are PNG files; digits are drawn dark on white (matplotlib's `gray_r`).
//!
//! ```no_run
//! use nn_viz::{plot_history, HistoryCurves};
//! let curves = HistoryCurves {
//!     loss: vec![0.30, 0.14, 0.10],
//!     val_loss: vec![0.16, 0.11, 0.09],
//!     accuracy: vec![0.91, 0.96, 0.97],
//!     val_accuracy: vec![0.95, 0.97, 0.97],
//!     ..Default::default()
//! };
//! plot_history("runs/mlp/history.png", &curves)?;
//! let digit: [u8; 784] = nn_viz::digitize_path("my-seven.jpg")?;
//! # Ok::<(), nn_viz::VizError>(())
//! ```

mod canvas;
pub mod confusion;
pub mod diagram;
pub mod digitize;
pub mod error;
pub mod font;
pub mod grid;
pub mod history;
mod text;

pub use confusion::confusion_png;
pub use diagram::{network_diagram, DiagramLayer, LayerKind};
pub use digitize::{digitize_image, digitize_path, mnist_style_from_luma, DIGIT_BOX, MNIST_PIXELS, MNIST_SIDE};
pub use error::{DigitizeError, Result, VizError};
pub use font::{register_fonts, FONT_FAMILY};
pub use grid::{digit_grid, enlarged_digit, GridOptions, Tile, Tone};
pub use history::{plot_history, HistoryCurves};

/// The `image` crate, whose `DynamicImage` [`digitize_image`] takes, re-exported at the
/// version nn-viz was built with.
pub use image;
