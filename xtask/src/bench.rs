//! `cargo xtask bench`: our speed against PyTorch on the same machine, in the same run.
//!
//! For each model it runs our bench example and the peer script alternately, `--repeats`
//! times, and prints medians and the ratio ours/theirs. The peer runs only when a Python with
//! torch is found (`PEER_PYTHON`, else `/tmp/peer-venv/bin/python`, else `python3`).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// `cargo xtask bench --help`.
const USAGE: &str =
    "cargo xtask bench [--models M1,M2,M3,M4] [--epochs 3] [--repeats 3] [--real DIR] [--bf16 | --bf16x3]

Trains each model (M1 784-128-10, M2 784-100-144-10 sigmoid, M3 784-512-512-10, M4 Keras's
simple convnet) for a few epochs on synthetic data of MNIST's shape, ours and PyTorch's
(../shared/bench, when a Python with torch is found) alternately, and prints the medians:
seconds per epoch (first epoch excluded), samples/s, 10k predictions, peak RSS, start-up.
Before and after, it times the machine's f32 GEMM as issue 3's goals were calibrated
(matrixmultiply on two threads: the `gemm_peak` example) and prints it as a share of the
speed the goals were set at, so figures from different days can be compared.

  --models LIST   comma-separated models to run (default M1,M2,M3,M4)
  --epochs N      epochs per run (default 3)
  --repeats N     runs of each side per model (default 3)
  --real DIR      both sides train on the real MNIST files in DIR (the four .gz files, e.g.
                  data/mnist) instead of random pixels: the speed a user sees, since our
                  first dense layer skips the pixels that are zero (81% of a digit's)
  --bf16          mixed precision on both sides: our products in bfloat16 on AMX
                  (`mnist --precision bf16`), PyTorch's with
                  torch.set_float32_matmul_precision(\"medium\") (bfloat16 in oneDNN); needs a
                  CPU with AMX
  --bf16x3        matmul precision \"high\" on both sides: ours splits each operand into two
                  bfloat16s on AMX (`mnist --precision bf16x3`); PyTorch's
                  torch.set_float32_matmul_precision(\"high\") (on CPUs its products stay f32)";

/// A Python program that sets PyTorch's matmul precision to `level`, then runs the peer script
/// (its first argument) with the arguments after it.
fn peer_precision(level: &str) -> String {
    format!(
        "import runpy, sys, torch
torch.set_float32_matmul_precision('{level}')
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')"
    )
}

/// Fails on a flag `bench` does not take, or one without its value.
fn check_flags(args: &[String]) -> Result<()> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--models" | "--epochs" | "--repeats" | "--real" => {
                let Some(v) = it.next().filter(|v| !v.starts_with("--")) else {
                    bail!("`{a}` needs a value\n\n{USAGE}");
                };
                match a.as_str() {
                    "--epochs" | "--repeats" if !v.parse::<usize>().is_ok_and(|n| n > 0) => {
                        bail!("{a} {v}: give a whole number, 1 or more")
                    }
                    "--models" => {
                        if let Some(m) = v.split(',').find(|m| !["M1", "M2", "M3", "M4"].contains(m)) {
                            bail!("--models {v}: no model `{m}` (M1, M2, M3, M4)");
                        }
                    }
                    _ => {}
                }
            }
            "--bf16" | "--bf16x3" => {}
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    if args.iter().any(|a| a == "--bf16") && args.iter().any(|a| a == "--bf16x3") {
        bail!("--bf16 and --bf16x3: give one of the two\n\n{USAGE}");
    }
    Ok(())
}

/// One `RESULT {json}` line, as the fields we read.
#[derive(Debug, Default, Clone)]
struct Run {
    s_per_epoch: f64,
    predict10k: f64,
    rss_mib: f64,
    startup: f64,
}

fn field(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\""))?;
    let rest = &json[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn parse(out: &str) -> Option<Run> {
    let line = out.lines().rev().find(|l| l.starts_with("RESULT "))?;
    Some(Run {
        s_per_epoch: field(line, "s_per_epoch_median")?,
        predict10k: field(line, "predict10k_s").or_else(|| field(line, "predict10k_bs128_s")).unwrap_or(f64::NAN),
        rss_mib: field(line, "ru_maxrss_mib").unwrap_or(f64::NAN),
        startup: field(line, "startup_s").or_else(|| field(line, "import_s")).unwrap_or(f64::NAN),
    })
}

fn run(cmd: &mut Command) -> Result<Run> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse(&text).with_context(|| format!("no RESULT line from {cmd:?}:\n{text}"))
}

/// The f32 GEMM speed (GFLOP/s) issue 3's goals were set at: matrixmultiply on two threads,
/// a 1024³ product and a 128×784×128 one. [`machine`] measures this machine against it.
const REFERENCE_GFLOPS: (f64, f64) = (400.0, 320.0);

/// The machine's f32 GEMM speed now, as the `gemm_peak` example measures it, in a line for the
/// table's header (see [`machine_line`]). An error (the example failed or printed no figures)
/// is printed in its place: the table does not depend on it.
fn machine(bin: &Path) -> Result<String> {
    let out = Command::new(bin).output().with_context(|| format!("running {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    machine_line(&text).with_context(|| format!("no GFLOP/s in the output of {}:\n{text}", bin.display()))
}

/// The two products' GFLOP/s from `gemm_peak`'s `RESULT` line, and their shares of
/// [`REFERENCE_GFLOPS`].
fn machine_line(out: &str) -> Option<String> {
    let line = out.lines().rev().find(|l| l.starts_with("RESULT "))?;
    let (square, layer) = (field(line, "gemm_1024_gflops")?, field(line, "gemm_128x784x128_gflops")?);
    let (ref_square, ref_layer) = REFERENCE_GFLOPS;
    Some(format!(
        "f32 GEMM (matrixmultiply, 2 threads) 1024³ {square:.0} GFLOP/s, 128×784×128 {layer:.0} \
         ({:.2} and {:.2} of the ~{ref_square:.0} and ~{ref_layer:.0} the issue's goals were set at)",
        square / ref_square,
        layer / ref_layer,
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn peer_python() -> Option<String> {
    let candidates =
        [std::env::var("PEER_PYTHON").ok(), Some("/tmp/peer-venv/bin/python".into()), Some("python3".into())];
    candidates
        .into_iter()
        .flatten()
        .find(|p| Command::new(p).args(["-c", "import torch"]).output().map(|o| o.status.success()).unwrap_or(false))
}

/// Runs the benchmark: `args` are `[--models M1,M2,M3,M4] [--epochs 3] [--repeats 3] [--real DIR]
/// [--bf16 | --bf16x3]`.
///
/// # Errors
/// A failed build, or a run that fails or prints no `RESULT` line.
pub fn bench(root: &Path, target: &Path, args: &[String]) -> Result<()> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    check_flags(args)?;
    let flag = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let models: Vec<String> =
        flag("--models").unwrap_or_else(|| "M1,M2,M3,M4".into()).split(',').map(String::from).collect();
    let epochs = flag("--epochs").unwrap_or_else(|| "3".into());
    let repeats: usize = flag("--repeats").and_then(|r| r.parse().ok()).unwrap_or(3);
    // Our flag and PyTorch's matmul precision, below f32.
    let precision = match (args.iter().any(|a| a == "--bf16"), args.iter().any(|a| a == "--bf16x3")) {
        (true, _) => Some(("--bf16", "medium")),
        (false, true) => Some(("--bf16x3", "high")),
        (false, false) => None,
    };
    let real = match flag("--real") {
        Some(dir) => {
            let dir = std::path::absolute(&dir).with_context(|| format!("--real {dir}"))?;
            if !["train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"].iter().any(|f| dir.join(f).is_file()) {
                bail!(
                    "--real {}: no train-images-idx3-ubyte(.gz) there (give the folder of the MNIST files)",
                    dir.display()
                );
            }
            Some(dir)
        }
        None => None,
    };
    let status = crate::cargo()
        .current_dir(root)
        .args(["build", "--release", "-p", "nn-train", "--example", "bench", "-p", "nn-core", "--example", "gemm_peak"])
        .status()?;
    if !status.success() {
        bail!("building the bench examples failed");
    }
    let ours_bin = target.join("release/examples/bench");
    let peak_bin = target.join("release/examples/gemm_peak");
    println!("machine before: {}", machine(&peak_bin).unwrap_or_else(|e| format!("not measured ({e:#})")));
    let peer = peer_python();
    let script = root.join("../shared/bench/bench_torch.py");
    match (&peer, script.exists()) {
        (Some(p), true) => println!("peer: PyTorch via {p}"),
        _ => println!("peer: none (no Python with torch, or no ../shared/bench); ours only"),
    }
    match &real {
        Some(dir) => println!("data: the real MNIST files in {}", dir.display()),
        None => println!("data: random pixels of MNIST's shape"),
    }
    match precision {
        Some(("--bf16", _)) => {
            println!("precision: mixed, products in bfloat16 (ours on AMX; PyTorch's matmul precision \"medium\")")
        }
        Some(_) => println!(
            "precision: products of split bfloat16s (ours on AMX; PyTorch's matmul precision \"high\", f32 on CPUs)"
        ),
        None => {}
    }
    println!(
        "\n| model | ours s/epoch | PyTorch s/epoch | ours/PyTorch | ours samples/s | predict 10k (ours) | peak RSS MiB (ours / PyTorch) | start-up s (ours) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for m in &models {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            let mut cmd = Command::new(&ours_bin);
            cmd.args([m.as_str(), "--epochs", epochs.as_str()]);
            if let Some(dir) = &real {
                cmd.arg("--real").arg(dir);
            }
            if let Some((flag, _)) = precision {
                cmd.arg(flag);
            }
            ours.push(run(&mut cmd)?);
            if let (Some(p), true) = (&peer, script.exists()) {
                let mut cmd = Command::new(p);
                if let Some(dir) = &real {
                    cmd.env("MNIST_DIR", dir);
                }
                if let Some((_, level)) = precision {
                    cmd.args(["-c", &peer_precision(level)]);
                }
                theirs.push(run(cmd.arg(&script).args([m.as_str(), "--epochs", epochs.as_str(), "--threads", "2"]))?);
            }
        }
        let o = median(ours.iter().map(|r| r.s_per_epoch).collect());
        let t = median(theirs.iter().map(|r| r.s_per_epoch).collect());
        println!(
            "| {m} | {o:.3} | {t:.3} | {:.2} | {:.0} | {:.1} ms | {:.0} / {:.0} | {:.3} |",
            o / t,
            60_000.0 / o,
            median(ours.iter().map(|r| r.predict10k).collect()) * 1e3,
            median(ours.iter().map(|r| r.rss_mib).collect()),
            median(theirs.iter().map(|r| r.rss_mib).collect()),
            median(ours.iter().map(|r| r.startup).collect()),
        );
    }
    println!("\nmachine after: {}", machine(&peak_bin).unwrap_or_else(|e| format!("not measured ({e:#})")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_line_reads_gemm_peak() {
        let out = "warming up\nRESULT {\"impl\": \"matrixmultiply\", \"threads\": 2, \"gemm_1024_gflops\": 268.0, \"gemm_128x784x128_gflops\": 160.0}\n";
        let line = machine_line(out).expect("a line");
        assert!(line.contains("1024³ 268 GFLOP/s, 128×784×128 160"), "{line}");
        assert!(line.contains("(0.67 and 0.50 of the ~400 and ~320"), "{line}");
        assert!(machine_line("RESULT {\"gemm_1024_gflops\": 268.0}").is_none());
        assert!(machine_line("no result").is_none());
    }

    #[test]
    fn flags_are_checked_before_anything_runs() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_flags(&args(&["--models", "M1", "--epochs", "2"])).is_ok());
        assert!(check_flags(&args(&["--real", "data/mnist", "--repeats", "1"])).is_ok());
        assert!(check_flags(&args(&["--bf16", "--models", "M3"])).is_ok());
        assert!(check_flags(&args(&["--bf16x3"])).is_ok());
        let e = check_flags(&args(&["--bf16x3", "--bf16"])).unwrap_err().to_string();
        assert!(e.contains("give one of the two"), "{e}");
        let e = check_flags(&args(&["--real"])).unwrap_err().to_string();
        assert!(e.contains("`--real` needs a value"), "{e}");
        let e = check_flags(&args(&["--real", "--epochs", "1"])).unwrap_err().to_string();
        assert!(e.contains("`--real` needs a value"), "{e}");
        let e = check_flags(&args(&["--repeats", "0"])).unwrap_err().to_string();
        assert!(e.contains("--repeats 0: give a whole number, 1 or more"), "{e}");
        let e = check_flags(&args(&["--epochs", "x"])).unwrap_err().to_string();
        assert!(e.contains("--epochs x"), "{e}");
        let e = check_flags(&args(&["--models", "M1,M9"])).unwrap_err().to_string();
        assert!(e.contains("no model `M9`"), "{e}");
        let e = check_flags(&args(&["--model", "M1"])).unwrap_err().to_string();
        assert!(e.contains("unknown argument `--model`"), "{e}");
        let e = check_flags(&args(&["--repeats"])).unwrap_err().to_string();
        assert!(e.contains("`--repeats` needs a value"), "{e}");
    }
}
