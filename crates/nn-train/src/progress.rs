//! Keras-style progress: a live bar on a terminal
//! (`469/469 [=====] - 1s 2ms/step - loss: 0.2601 - accuracy: 0.9254`), one plain line per
//! epoch otherwise.

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
    steps: usize,
    start: Instant,
    last_draw: Instant,
}

/// How often the bar asks for fresh numbers (reading them may synchronise a GPU).
pub(crate) const REFRESH: Duration = Duration::from_millis(150);

impl EpochProgress {
    pub(crate) fn start(v: Verbosity, epoch: usize, epochs: usize, steps: usize) -> EpochProgress {
        let live = v == Verbosity::Auto && std::io::stdout().is_terminal();
        if v != Verbosity::Silent {
            println!("Epoch {epoch}/{epochs}");
        }
        let bar = live.then(|| {
            let b = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stdout_with_hz(10));
            b.set_style(
                ProgressStyle::with_template("{pos:>5}/{len} [{bar:30}] - {elapsed} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        });
        let now = Instant::now();
        EpochProgress { bar, lines: v != Verbosity::Silent, steps, start: now, last_draw: now }
    }

    /// Whether it is time to refresh the numbers.
    pub(crate) fn wants_numbers(&self) -> bool {
        self.bar.is_some() && self.last_draw.elapsed() >= REFRESH
    }

    pub(crate) fn update(&mut self, step: usize, loss: f64, acc: f64) {
        if let Some(b) = &self.bar {
            b.set_position(step as u64);
            b.set_message(format!("loss: {loss:.4} - accuracy: {acc:.4}"));
            self.last_draw = Instant::now();
        }
    }

    pub(crate) fn finish(self, summary: &str) {
        let secs = self.start.elapsed().as_secs_f64();
        let per_step = secs / self.steps.max(1) as f64;
        let step_txt = if per_step >= 1.0 {
            format!("{per_step:.2}s/step")
        } else if per_step >= 1e-3 {
            format!("{:.0}ms/step", per_step * 1e3)
        } else {
            format!("{:.0}us/step", per_step * 1e6)
        };
        let line =
            format!("{s}/{s} [==============================] - {secs:.1}s {step_txt} - {summary}", s = self.steps);
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
        if self.lines {
            println!("{line}");
        }
    }
}
