//! Weight initialisers with Keras's definitions and names.

use mnist_data::Rng;
use serde::{Deserialize, Serialize};

/// How a parameter tensor is filled before training. `fan_in`/`fan_out` follow Keras: for a
/// `Dense` kernel `[in, out]` they are `in` and `out`; for a conv kernel they are multiplied by
/// the receptive field size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Initializer {
    /// Uniform in `±sqrt(6 / (fan_in + fan_out))` (Keras's default kernel initialiser).
    #[default]
    GlorotUniform,
    /// Truncated normal with `σ = sqrt(2 / (fan_in + fan_out))`.
    GlorotNormal,
    /// Truncated normal with `σ = sqrt(2 / fan_in)`.
    HeNormal,
    /// Uniform in `±sqrt(6 / fan_in)`.
    HeUniform,
    /// Uniform in `±sqrt(3 / fan_in)` (LeCun uniform).
    LecunUniform,
    /// All zeros (Keras's default bias initialiser).
    Zeros,
    /// All ones (batch-norm scales).
    Ones,
}

impl Initializer {
    /// Fills `out` with values drawn from `rng`.
    pub fn fill(self, out: &mut [f32], fan_in: usize, fan_out: usize, rng: &mut Rng) {
        let (fi, fo) = (fan_in.max(1) as f32, fan_out.max(1) as f32);
        match self {
            Initializer::Zeros => out.fill(0.0),
            Initializer::Ones => out.fill(1.0),
            Initializer::GlorotUniform => uniform(out, (6.0 / (fi + fo)).sqrt(), rng),
            Initializer::HeUniform => uniform(out, (6.0 / fi).sqrt(), rng),
            Initializer::LecunUniform => uniform(out, (3.0 / fi).sqrt(), rng),
            Initializer::GlorotNormal => truncated_normal(out, (2.0 / (fi + fo)).sqrt(), rng),
            Initializer::HeNormal => truncated_normal(out, (2.0 / fi).sqrt(), rng),
        }
    }
}

fn uniform(out: &mut [f32], limit: f32, rng: &mut Rng) {
    for v in out {
        *v = rng.uniform(-limit, limit);
    }
}

/// Keras's truncated normal: draws beyond two standard deviations are redrawn; the result is
/// scaled by 1/0.87962566 so the variance is the requested one.
fn truncated_normal(out: &mut [f32], std: f32, rng: &mut Rng) {
    let s = std / 0.879_625_7;
    for v in out {
        let mut x = rng.normal();
        while x.abs() > 2.0 {
            x = rng.normal();
        }
        *v = x * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(v: &[f32]) -> (f32, f32, f32) {
        let n = v.len() as f32;
        let m = v.iter().sum::<f32>() / n;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / n;
        (m, var.sqrt(), v.iter().fold(0f32, |a, &x| a.max(x.abs())))
    }

    #[test]
    fn keras_variances() {
        let mut rng = Rng::new(1);
        let mut w = vec![0f32; 784 * 128];
        Initializer::GlorotUniform.fill(&mut w, 784, 128, &mut rng);
        let (m, s, mx) = stats(&w);
        let limit = (6.0f32 / 912.0).sqrt();
        assert!(m.abs() < 1e-3 && (s - limit / 3f32.sqrt()).abs() < 1e-3 && mx <= limit);
        Initializer::HeNormal.fill(&mut w, 784, 128, &mut rng);
        let (m, s, mx) = stats(&w);
        let std = (2.0f32 / 784.0).sqrt();
        assert!(m.abs() < 1e-3 && (s - std).abs() < 2e-3 && mx <= 2.0 * std / 0.879_625_7 + 1e-6, "{s} {std}");
        Initializer::HeUniform.fill(&mut w, 784, 128, &mut rng);
        let (m, s, mx) = stats(&w);
        let limit = (6.0f32 / 784.0).sqrt();
        assert!(m.abs() < 1e-3 && (s - limit / 3f32.sqrt()).abs() < 1e-3 && mx <= limit, "{s} {limit}");
        Initializer::LecunUniform.fill(&mut w, 784, 128, &mut rng);
        let (m, s, mx) = stats(&w);
        let limit = (3.0f32 / 784.0).sqrt();
        assert!(m.abs() < 1e-3 && (s - limit / 3f32.sqrt()).abs() < 1e-3 && mx <= limit, "{s} {limit}");
        Initializer::GlorotNormal.fill(&mut w, 784, 128, &mut rng);
        let (m, s, mx) = stats(&w);
        let std = (2.0f32 / 912.0).sqrt();
        assert!(m.abs() < 1e-3 && (s - std).abs() < 2e-3 && mx <= 2.0 * std / 0.879_625_7 + 1e-6, "{s} {std}");
        Initializer::Ones.fill(&mut w, 1, 1, &mut rng);
        assert!(w.iter().all(|&x| x == 1.0));
        Initializer::Zeros.fill(&mut w, 1, 1, &mut rng);
        assert!(w.iter().all(|&x| x == 0.0));
    }
}
