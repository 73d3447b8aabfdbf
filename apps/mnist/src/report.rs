//! Text output: classification reports, confusion matrices, probability bars, timestamps and
//! the command line.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use nn_train::Confusion;

/// scikit-learn's `classification_report`: precision, recall, F1 and support per class, then
/// accuracy and the macro and weighted averages.
pub fn classification_report(c: &Confusion, names: &[String]) -> String {
    let per = c.per_class();
    let name_w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0).max("weighted avg".len());
    let mut s = String::new();
    let _ = writeln!(s, "{:>name_w$}  {:>9}  {:>9}  {:>9}  {:>9}", "", "precision", "recall", "f1-score", "support");
    for (i, r) in per.iter().enumerate() {
        let name = names.get(i).cloned().unwrap_or_else(|| i.to_string());
        let _ =
            writeln!(s, "{name:>name_w$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>9}", r.precision, r.recall, r.f1, r.support);
    }
    let total: u64 = per.iter().map(|r| r.support).sum();
    let k = per.len().max(1) as f64;
    let macro_avg = |f: fn(&nn_train::metrics::ClassReport) -> f64| per.iter().map(f).sum::<f64>() / k;
    let weighted = |f: fn(&nn_train::metrics::ClassReport) -> f64| {
        per.iter().map(|r| f(r) * r.support as f64).sum::<f64>() / total.max(1) as f64
    };
    let _ = writeln!(s);
    let _ = writeln!(s, "{:>name_w$}  {:>9}  {:>9}  {:>9.4}  {:>9}", "accuracy", "", "", c.accuracy(), total);
    let _ = writeln!(
        s,
        "{:>name_w$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>9}",
        "macro avg",
        macro_avg(|r| r.precision),
        macro_avg(|r| r.recall),
        macro_avg(|r| r.f1),
        total
    );
    let _ = writeln!(
        s,
        "{:>name_w$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>9}",
        "weighted avg",
        weighted(|r| r.precision),
        weighted(|r| r.recall),
        weighted(|r| r.f1),
        total
    );
    s
}

/// The confusion matrix as text (rows true, columns predicted), with a legend of the class
/// names when they are not the class numbers.
pub fn confusion_text(c: &Confusion, names: &[String]) -> String {
    let mut s = c.to_string();
    let numbered = names.iter().enumerate().all(|(i, n)| *n == i.to_string());
    if !numbered {
        let legend: Vec<String> = names.iter().enumerate().map(|(i, n)| format!("{i} = {n}")).collect();
        let _ = writeln!(s, "({})", legend.join(", "));
    }
    s
}

/// A bar of `width` characters for a probability (eighths of a block for the last one).
pub fn bar(p: f32, width: usize) -> String {
    const PARTS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    let eighths = (p.clamp(0.0, 1.0) * (width * 8) as f32).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    s.push_str(PARTS[eighths % 8]);
    s
}

/// The probabilities of one example, a line per class, tutorial style:
/// `  7  99.21% ██████████████████████████▊`, the predicted class marked with `<`.
pub fn probability_lines(probs: &[f32], names: &[String]) -> String {
    let best = nn_train::metrics::argmax_rows(probs, probs.len()).first().copied().unwrap_or(0);
    let name_w = names.iter().map(|n| n.chars().count()).max().unwrap_or(1);
    let mut s = String::new();
    for (i, &p) in probs.iter().enumerate() {
        let name = names.get(i).cloned().unwrap_or_else(|| i.to_string());
        let mark = if i == best { " <" } else { "" };
        let line = format!("  {name:>name_w$} {:>7.2}% {}{mark}", p * 100.0, bar(p, 30));
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}

/// The current UTC time as `YYYYmmdd-HHMMSS` (for run folder names).
pub fn timestamp() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format_timestamp(secs)
}

/// `secs` since the Unix epoch as `YYYYmmdd-HHMMSS` (UTC).
pub fn format_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day count since
/// 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The command line as typed, quoted where needed (for reports).
pub fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub use nn_core::summary::thousands;

/// `1 epoch`, `6 epochs`.
pub fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A fraction as a percentage to 6 significant digits: `0.1` is `10%`, `0.9999` is `99.99%`.
pub fn percent(f: f64) -> String {
    format!("{}%", rate((f * 100.0) as f32))
}

/// Seconds as `12.3s` or `4m 05s`.
pub fn duration(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let s = secs.round() as u64;
        format!("{}m {:02}s", s / 60, s % 60)
    }
}

/// A learning rate (or another setting) to 6 significant digits, as a person would write it:
/// a rate lowered in 32-bit floats (`0.001 × 0.1`) is `0.0001`, not `0.000100000005`; below
/// 10⁻⁶ or from 10⁶ up, with an exponent (`1e-9`, `1e30`), not 40 digits.
pub fn rate(lr: f32) -> String {
    match format!("{lr:.5e}").parse::<f64>() {
        Ok(v) if v != 0.0 && !(1e-6..1e6).contains(&v.abs()) => format!("{v:e}"),
        Ok(v) => v.to_string(),
        Err(_) => lr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_dates() {
        assert_eq!(format_timestamp(0), "19700101-000000");
        assert_eq!(format_timestamp(951_782_400 + 3_723), "20000229-010203");
        assert_eq!(format_timestamp(1_735_689_599), "20241231-235959");
    }

    #[test]
    fn reports_have_a_row_per_class() {
        let c = Confusion::from_predictions(&[0, 0, 1, 1], &[0, 1, 1, 1], 2);
        let names = vec!["0".to_string(), "1".to_string()];
        let r = classification_report(&c, &names);
        assert!(r.contains("precision") && r.contains("weighted avg"), "{r}");
        assert!(r.contains("0.6667"), "{r}");
        assert_eq!(bar(1.0, 4), "████");
        assert_eq!(
            (thousands(94_494), thousands(12), thousands(1_000_000)),
            ("94,494".into(), "12".into(), "1,000,000".into())
        );
        assert_eq!(bar(0.0, 4), "");
        assert!(probability_lines(&[0.1, 0.9], &names).lines().nth(1).is_some_and(|l| l.ends_with('<')));
    }

    #[test]
    fn rates_read_as_written() {
        assert_eq!(rate(0.001 * 0.1), "0.0001");
        assert_eq!(rate(0.001), "0.001");
        assert_eq!(rate(3e-4), "0.0003");
        assert_eq!(rate(0.123_456_78), "0.123457");
        assert_eq!(rate(1e-6), "0.000001");
        assert_eq!(rate(1e-9), "1e-9");
        assert_eq!(rate(1e-45), "1.4013e-45");
        assert_eq!(rate(1e30), "1e30");
        assert_eq!((rate(0.0), rate(250.0)), ("0".into(), "250".into()));
        assert_eq!((percent(0.1), percent(0.9999), percent(0.25)), ("10%".into(), "99.99%".into(), "25%".into()));
    }
}
