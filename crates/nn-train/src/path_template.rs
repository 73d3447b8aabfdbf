//! Keras's checkpoint file names: `{epoch:02d}` and `{val_loss:.4f}` in a path are filled in
//! from the epoch's log (`ck-{epoch:02d}-{val_loss:.2f}.safetensors` →
//! `ck-03-0.09.safetensors`), as Python's `str.format` does for the specs Keras's examples use.

use std::path::{Path, PathBuf};

use crate::history::EpochLog;

/// One `{...}` field: a name and how to write its value.
#[derive(Clone, Debug, PartialEq)]
enum Spec {
    /// `{name}`: an integer as it is, a number in full.
    Plain,
    /// `{name:Nd}` or `{name:0Nd}`: an integer, at least `width` wide, zero-padded or not.
    Int { width: usize, zeros: bool },
    /// `{name:.Nf}`: a number with `digits` decimals.
    Fixed { digits: usize },
}

/// A piece of a template: text as it is, or a field to fill.
enum Part {
    Text(String),
    Field(String, Spec),
}

/// Splits `template` into text and fields.
///
/// # Errors
/// An unclosed `{`, a name that is not `epoch` or one of [`EpochLog::METRICS`], or a spec other
/// than `d`, `Nd`, `0Nd` (the epoch) and `.Nf` (any), in words.
fn parse(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    let mut text = String::new();
    while let Some(open) = rest.find(['{', '}']) {
        text.push_str(&rest[..open]);
        // `{{` and `}}` are a brace, as in Python.
        if let Some(brace) = rest[open..].strip_prefix("{{").or_else(|| rest[open..].strip_prefix("}}")) {
            text.push_str(&rest[open..=open]);
            rest = brace;
            continue;
        }
        if rest[open..].starts_with('}') {
            return Err(format!("a lone }} in {template:?} (write }}}} for a brace)"));
        }
        parts.push(Part::Text(std::mem::take(&mut text)));
        let after = &rest[open + 1..];
        let close =
            after.find('}').ok_or_else(|| format!("an unclosed {{ in {template:?} (write {{{{ for a brace)"))?;
        let field = &after[..close];
        let (name, spec) = field.split_once(':').unwrap_or((field, ""));
        let is_epoch = name == "epoch";
        if !is_epoch && !EpochLog::METRICS.contains(&name) {
            return Err(format!(
                "{{{field}}} in {template:?}: the fields a checkpoint's name can hold are epoch and {}",
                EpochLog::METRICS.join(", ")
            ));
        }
        let bad = || format!("{{{field}}} in {template:?}: write {{{name}:02d}}, {{{name}:d}} or {{{name}:.4f}}");
        let spec = if spec.is_empty() {
            Spec::Plain
        } else if let Some(digits) = spec.strip_prefix('.').and_then(|d| d.strip_suffix('f')) {
            Spec::Fixed { digits: digits.parse().ok().filter(|&d| d <= 17).ok_or_else(bad)? }
        } else if let (true, Some(width)) = (is_epoch, spec.strip_suffix('d')) {
            let zeros = width.starts_with('0') && width.len() > 1;
            let width = if width.is_empty() { 0 } else { width.parse().ok().filter(|&w| w <= 32).ok_or_else(bad)? };
            Spec::Int { width, zeros }
        } else {
            return Err(bad());
        };
        parts.push(Part::Field(name.to_string(), spec));
        rest = &after[close + 1..];
    }
    text.push_str(rest);
    parts.push(Part::Text(text));
    Ok(parts)
}

/// Checks that `path` is a template [`fill`] can fill (paths without braces always are; a
/// path that is not UTF-8 is taken as it is, braces and all).
///
/// # Errors
/// As [`fill`]'s, without an epoch: an unknown field or spec.
pub fn check(path: &Path) -> Result<(), String> {
    match path.to_str() {
        Some(s) if s.contains(['{', '}']) => parse(s).map(|_| ()),
        _ => Ok(()),
    }
}

/// `path` with its fields filled in from `log` (`{{` and `}}` are braces); a path without
/// braces (or that is not UTF-8) as it is.
///
/// # Errors
/// As [`check`], and a metric the epoch does not report (`{val_loss}` without validation).
pub fn fill(path: &Path, log: &EpochLog) -> Result<PathBuf, String> {
    let Some(template) = path.to_str().filter(|s| s.contains(['{', '}'])) else {
        return Ok(path.to_path_buf());
    };
    let mut out = String::new();
    for part in parse(template)? {
        match part {
            Part::Text(text) => out.push_str(&text),
            Part::Field(name, spec) => {
                let value = if name == "epoch" {
                    log.epoch as f64
                } else {
                    log.get(&name).ok_or_else(|| {
                        format!("{{{name}}} in {template:?}: epoch {} does not report {name}", log.epoch)
                    })?
                };
                out.push_str(&match spec {
                    Spec::Plain if name == "epoch" => log.epoch.to_string(),
                    // The rate is an f32: its shortest form (0.001, not 0.0010000000474974513).
                    Spec::Plain if matches!(name.as_str(), "lr" | "learning_rate") => (value as f32).to_string(),
                    Spec::Plain => value.to_string(),
                    Spec::Int { width, zeros: true } => format!("{:0width$}", log.epoch),
                    Spec::Int { width, zeros: false } => format!("{:width$}", log.epoch),
                    Spec::Fixed { digits } => format!("{value:.digits$}"),
                });
            }
        }
    }
    Ok(PathBuf::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(epoch: usize, val_loss: Option<f64>) -> EpochLog {
        EpochLog { epoch, loss: 0.25, accuracy: 0.9, val_loss, val_accuracy: None, seconds: 1.0, lr: 1e-3 }
    }

    #[test]
    fn fields_are_filled_as_keras_fills_them() {
        let p = Path::new("runs/ck-{epoch:02d}-{val_loss:.2f}.safetensors");
        assert_eq!(fill(p, &log(3, Some(0.0912))).unwrap(), Path::new("runs/ck-03-0.09.safetensors"));
        let p = Path::new("e{epoch}_{epoch:d}_{epoch:3d}_{loss}_{accuracy:.3f}");
        assert_eq!(fill(p, &log(7, None)).unwrap(), Path::new("e7_7_  7_0.25_0.900"));
        assert_eq!(fill(Path::new("plain.safetensors"), &log(1, None)).unwrap(), Path::new("plain.safetensors"));
        assert_eq!(check(Path::new("ck-{epoch:02d}.safetensors")), Ok(()));
        let p = Path::new("{{run}}/ck-{epoch}-{lr}");
        assert_eq!(fill(p, &log(2, None)).unwrap(), Path::new("{run}/ck-2-0.001"));
    }

    #[test]
    fn fields_it_cannot_fill_are_named() {
        let err = check(Path::new("ck-{step}.safetensors")).unwrap_err();
        assert!(err.contains("{step}") && err.contains("epoch and loss, accuracy"), "{err}");
        let err = check(Path::new("ck-{val_loss:02d}")).unwrap_err();
        assert!(err.contains("{val_loss:02d}") && err.contains("{val_loss:.4f}"), "{err}");
        let err = check(Path::new("ck-{epoch")).unwrap_err();
        assert!(err.contains("unclosed") && err.contains("{{"), "{err}");
        let err = check(Path::new("ck-epoch}")).unwrap_err();
        assert!(err.contains("a lone }"), "{err}");
        let err = fill(Path::new("ck-{val_loss:.3f}"), &log(2, None)).unwrap_err();
        assert!(err.contains("epoch 2 does not report val_loss"), "{err}");
    }
}
