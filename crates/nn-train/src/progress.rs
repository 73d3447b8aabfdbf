//! Keras-style progress: on a terminal an `Epoch 1/6` header and a live bar
//! (`  90/469 [=====>    ] - ETA: 1s - loss: 0.4778 - accuracy: 0.8632`) that ends as
//! `469/469 [=====] - 0.9s 2ms/step - loss: 0.2601 - accuracy: 0.9254`; otherwise one plain
//! line per epoch (`Epoch 1/6 - 469/469 - 0.9s 2ms/step - loss: 0.2601 - accuracy: 0.9254`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much a run prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verbosity {
    /// Nothing.
    Silent,
    /// A live bar when stdout is a terminal, else one line per epoch (the default).
    #[default]
    Auto,
    /// One line per epoch.
    Lines,
}

/// Progress of one epoch.
pub(crate) struct EpochProgress {
    bar: Option<ProgressBar>,
    lines: bool,
    /// `Epoch 3/10`.
    title: String,
    steps: usize,
    start: Instant,
    last_draw: Instant,
}

/// The bar's width in characters: its live line (`   90/469 [...] - ETA: 12s - loss: 0.4778 -
/// accuracy: 0.8632`) then fits in 80 columns, where a wrapped one would be redrawn badly.
const BAR: usize = 20;

/// How often the bar asks for fresh numbers (reading them may synchronise a GPU).
pub(crate) const REFRESH: Duration = Duration::from_millis(150);

impl EpochProgress {
    pub(crate) fn start(v: Verbosity, epoch: usize, epochs: usize, steps: usize) -> EpochProgress {
        let live = v == Verbosity::Auto && std::io::stdout().is_terminal();
        let title = format!("Epoch {epoch}/{epochs}");
        if live {
            println!("{title}");
        }
        let bar = live.then(|| {
            let b = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stdout_with_hz(10));
            b.set_style(
                ProgressStyle::with_template(&format!("{{pos:>5}}/{{len}} [{{bar:{BAR}}}] - ETA: {{eta}}{{msg}}"))
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        });
        let now = Instant::now();
        EpochProgress { bar, lines: v != Verbosity::Silent, title, steps, start: now, last_draw: now }
    }

    /// Whether it is time to refresh the numbers.
    pub(crate) fn wants_numbers(&self) -> bool {
        self.bar.is_some() && self.last_draw.elapsed() >= REFRESH
    }

    pub(crate) fn update(&mut self, step: usize, loss: f64, acc: f64) {
        if let Some(b) = &self.bar {
            b.set_position(step as u64);
            b.set_message(format!(" - loss: {loss:.4} - accuracy: {acc:.4}"));
            self.last_draw = Instant::now();
        }
    }

    /// Ends the epoch after `done` of its steps with `summary` (its metrics, or why it stopped).
    pub(crate) fn finish(self, done: usize, summary: &str) {
        let secs = self.start.elapsed().as_secs_f64();
        let per_step = secs / done.max(1) as f64;
        let step_txt = if per_step >= 1.0 {
            format!("{per_step:.2}s/step")
        } else if per_step >= 1e-3 {
            format!("{:.0}ms/step", per_step * 1e3)
        } else {
            format!("{:.0}us/step", per_step * 1e6)
        };
        let steps = format!("{done}/{}", self.steps);
        let line = match self.bar {
            Some(b) => {
                b.finish_and_clear();
                let filled = (BAR * done / self.steps.max(1)).min(BAR);
                let bar = format!("{}{}", "=".repeat(filled), " ".repeat(BAR - filled));
                format!("{steps} [{bar}] - {secs:.1}s {step_txt} - {summary}")
            }
            None => format!("{} - {steps} - {secs:.1}s {step_txt} - {summary}", self.title),
        };
        if self.lines {
            println!("{line}");
        }
    }
}
