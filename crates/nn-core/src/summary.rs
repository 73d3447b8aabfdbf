//! Keras's `model.summary()` table.

use crate::error::Result;
use crate::spec::ModelSpec;

/// `n` with thousands separators, as Keras prints parameter counts (`101,770`).
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes(n: usize) -> String {
    let b = (n * 4) as f64;
    if b < 1024.0 {
        format!("{b:.2} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2} KB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} MB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// Parameter counts of an architecture: `(total, trainable, non-trainable)`.
///
/// # Errors
/// As [`ModelSpec::resolve`].
pub fn param_counts(spec: &ModelSpec) -> Result<(usize, usize, usize)> {
    let (mut t, mut nt) = (0, 0);
    for l in spec.resolve()? {
        for (_, shape, trainable) in l.spec.param_shapes(&l.input) {
            let n: usize = shape.iter().product();
            if trainable {
                t += n;
            } else {
                nt += n;
            }
        }
    }
    Ok((t + nt, t, nt))
}

/// The summary table as Keras 3 prints it: one row per layer with its name and type, output
/// shape (`(None, 128)`) and parameter count, then the totals.
///
/// # Errors
/// As [`ModelSpec::resolve`].
pub fn summary(spec: &ModelSpec, title: &str) -> Result<String> {
    let layers = spec.resolve()?;
    let rows: Vec<[String; 3]> = layers
        .iter()
        .map(|l| {
            let params: usize = l.spec.param_shapes(&l.input).iter().map(|(_, s, _)| s.iter().product::<usize>()).sum();
            let shape: Vec<String> =
                std::iter::once("None".to_string()).chain(l.output.iter().map(|d| d.to_string())).collect();
            [format!("{} ({})", l.name, l.spec.type_name()), format!("({})", shape.join(", ")), thousands(params)]
        })
        .collect();
    let heads = ["Layer (type)", "Output Shape", "Param #"];
    let w: Vec<usize> = (0..3)
        .map(|i| {
            rows.iter().map(|r| r[i].chars().count()).chain([heads[i].len()]).max().unwrap_or(0).max([31, 22, 13][i])
        })
        .collect();
    let line = |l: &str, m: &str, r: &str, f: &str| {
        format!("{l}{}{m}{}{m}{}{r}\n", f.repeat(w[0] + 2), f.repeat(w[1] + 2), f.repeat(w[2] + 2))
    };
    let row = |c: &[String; 3], sep: &str| {
        format!("{sep} {:<a$} {sep} {:<b$} {sep} {:>c$} {sep}\n", c[0], c[1], c[2], a = w[0], b = w[1], c = w[2])
    };
    let mut s = format!("Model: \"{title}\"\n");
    s += &line("┏", "┳", "┓", "━");
    s += &row(&heads.map(String::from), "┃");
    s += &line("┡", "╇", "┩", "━");
    for (i, r) in rows.iter().enumerate() {
        s += &row(r, "│");
        s += &if i + 1 < rows.len() { line("├", "┼", "┤", "─") } else { line("└", "┴", "┘", "─") };
    }
    let (total, trainable, non) = param_counts(spec)?;
    s += &format!(" Total params: {} ({})\n", thousands(total), bytes(total));
    s += &format!(" Trainable params: {} ({})\n", thousands(trainable), bytes(trainable));
    s += &format!(" Non-trainable params: {} ({})\n", thousands(non), bytes(non));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation::*;
    use crate::spec::{Dense, Flatten};

    #[test]
    fn the_tutorial_mlp_has_94494_params() {
        let spec = ModelSpec::new(&[28, 28])
            .add(Flatten::new())
            .add(Dense::new(100).activation(Sigmoid))
            .add(Dense::new(144).activation(Sigmoid))
            .add(Dense::new(10).activation(Softmax));
        let s = summary(&spec, "sequential").unwrap();
        assert!(s.contains("Total params: 94,494 (369.12 KB)"), "{s}");
        assert!(s.contains("dense_1 (Dense)") && s.contains("(None, 144)") && s.contains("14,544"), "{s}");
        assert!(s.contains("flatten (Flatten)") && s.contains("(None, 784)"), "{s}");
        assert!(s.contains("Non-trainable params: 0 (0.00 B)"), "{s}");
    }
}
