//! The project's task runner: `cargo xtask <command>` (an alias in `.cargo/config.toml`).
//!
//! - `train [--features F] [ARGS...]`: makes sure MNIST is in `data/` (linking
//!   `../shared/data/mnist` when there is one, else `mnist fetch`), builds the `mnist` binary in
//!   release mode and runs `mnist train ARGS...` (default: the mlp-128 recipe).
//! - `info`: the same data lookup for MNIST and Fashion-MNIST, then `mnist info` for each.
//! - `ci`: what CI's test step runs: `cargo test --workspace`, nn-cuda's tests with the `cuda`
//!   feature, then the consumer crate's tests.
//! - `bench [--models M1,M2,M3,M4] [--epochs 3] [--repeats 3]`: our training speed against
//!   PyTorch's on the same machine, run alternately (see `bench.rs`).

mod bench;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const HELP: &str = "\
cargo xtask <command>

Commands:
  train [--features F] [ARGS...]  build mnist (release) and run `mnist train ARGS...`
                                  (default: --model mlp-128); `--features cuda` builds with CUDA,
                                  as does `--device cuda` among the ARGS
  info                            `mnist info` for MNIST and Fashion-MNIST
  ci                              cargo test --workspace, nn-cuda with --features cuda,
                                  then tests/consumer's tests
  bench [--models M1,M2,M3,M4] [--epochs 3] [--repeats 3]
                                  seconds per epoch, ours against PyTorch (../shared/bench),
                                  alternating runs; PEER_PYTHON picks the Python with torch

Data sets are looked for in data/<name>; when missing, ../shared/data/<name> is linked there if
it exists, else `mnist fetch` downloads them. CARGO_TARGET_DIR is honoured.";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let command = args.next().map(|a| a.to_string_lossy().into_owned());
    let rest: Vec<OsString> = args.collect();
    match command.as_deref() {
        Some("train") => train(rest),
        Some("info") => info(),
        Some("ci") => ci(),
        Some("bench") => {
            let args: Vec<String> = rest.iter().map(|a| a.to_string_lossy().into_owned()).collect();
            bench::bench(&root()?, &target_dir()?, &args)
        }
        Some("-h" | "--help" | "help") | None => {
            println!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}

/// The workspace root (the parent of this crate's folder).
fn root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask has no parent folder")
}

/// `cargo`, as the one running us, without the variables `cargo run` set for xtask itself
/// (`CARGO_PKG_NAME=xtask`, `CARGO_MANIFEST_DIR`, ...): build scripts that watch them (ring's)
/// would otherwise see them change between `cargo xtask` and a plain `cargo build` and rebuild
/// half the workspace each way.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_for_xtask) {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Whether `cargo run` sets the environment variable `key` for the binary it runs (rather than
/// it being the user's setting, as `CARGO_HOME` or `CARGO_TARGET_DIR` are).
fn set_for_xtask(key: &str) -> bool {
    ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_"].iter().any(|p| key.starts_with(p))
        || matches!(key, "CARGO_PRIMARY_PACKAGE" | "OUT_DIR")
}

/// Runs `cmd` from the workspace root, streaming its output; fails on a non-zero exit.
fn status(mut cmd: Command, what: &str) -> Result<()> {
    let root = root()?;
    let status = cmd.current_dir(&root).status().with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Where cargo puts the release `mnist` binary.
fn mnist_binary() -> Result<PathBuf> {
    Ok(target_dir()?.join("release").join(format!("mnist{}", std::env::consts::EXE_SUFFIX)))
}

/// The workspace's target folder (`CARGO_TARGET_DIR` when set).
fn target_dir() -> Result<PathBuf> {
    let root = root()?;
    Ok(match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                root.join(d)
            }
        }
        None => root.join("target"),
    })
}

/// Builds `mnist` in release mode with `features`.
fn build_mnist(features: &[String]) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "-p", "mnist"]);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    eprintln!(
        "xtask: cargo build --release -p mnist{}",
        if features.is_empty() { String::new() } else { format!(" --features {}", features.join(",")) }
    );
    status(cmd, "building mnist")?;
    let bin = mnist_binary()?;
    if !bin.is_file() {
        bail!("{} was not built (is CARGO_TARGET_DIR set differently for cargo?)", bin.display());
    }
    Ok(bin)
}

/// Makes sure `data/<name>` holds the data set: links `../shared/data/<name>` when it exists,
/// else downloads it with `mnist fetch`.
fn ensure_data(name: &str, bin: &Path) -> Result<()> {
    let root = root()?;
    if link_shared(&root, name)? {
        return Ok(());
    }
    eprintln!("xtask: data/{name} is missing; fetching it");
    let mut cmd = Command::new(bin);
    cmd.args(["--data-dir", "data", "--dataset", name, "fetch"]);
    status(cmd, &format!("mnist fetch --dataset {name}"))
}

/// `true` when `<root>/data/<name>` holds the data set, linking it to
/// `<root>/../shared/data/<name>` first when it does not and that folder does; `false` when
/// neither has it.
fn link_shared(root: &Path, name: &str) -> Result<bool> {
    let dest = root.join("data").join(name);
    if has_data(&dest) {
        return Ok(true);
    }
    let shared = root.join("..").join("shared").join("data").join(name);
    if !has_data(&shared) {
        return Ok(false);
    }
    let shared = shared.canonicalize().with_context(|| format!("{}: cannot resolve", shared.display()))?;
    std::fs::create_dir_all(root.join("data")).context("cannot create data/")?;
    if dest.symlink_metadata().is_ok() {
        // A broken link or an empty folder: replace it.
        if dest.is_dir() && !dest.is_symlink() {
            std::fs::remove_dir(&dest).with_context(|| format!("{} exists and is not empty", dest.display()))?;
        } else {
            std::fs::remove_file(&dest).with_context(|| format!("cannot replace {}", dest.display()))?;
        }
    }
    link_dir(&shared, &dest)?;
    eprintln!("xtask: linked {} -> {}", dest.display(), shared.display());
    Ok(true)
}

/// Whether `dir` holds the four files of a data set (gzip or raw, either spelling).
fn has_data(dir: &Path) -> bool {
    ["train-images", "train-labels", "t10k-images", "t10k-labels"].iter().all(|stem| {
        std::fs::read_dir(dir)
            .is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with(stem)))
    })
}

#[cfg(unix)]
fn link_dir(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

#[cfg(not(unix))]
fn link_dir(target: &Path, link: &Path) -> Result<()> {
    std::fs::create_dir_all(link)?;
    for e in std::fs::read_dir(target)? {
        let e = e?;
        std::fs::copy(e.path(), link.join(e.file_name()))?;
    }
    Ok(())
}

/// `cargo xtask train [--features F] [ARGS...]`.
fn train(args: Vec<OsString>) -> Result<()> {
    let mut features = Vec::new();
    let mut pass = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        if s == "--features" {
            let f = it.next().context("--features needs a value (e.g. --features cuda)")?;
            features.extend(f.to_string_lossy().split(',').map(str::to_string));
        } else if let Some(f) = s.strip_prefix("--features=") {
            features.extend(f.split(',').map(str::to_string));
        } else {
            pass.push(a);
        }
    }
    let wants_cuda =
        pass.windows(2).any(|w| w[0] == "--device" && w[1] == "cuda") || pass.iter().any(|a| a == "--device=cuda");
    if wants_cuda && !features.iter().any(|f| f == "cuda") {
        features.push("cuda".into());
    }
    features.retain(|f| !f.is_empty());
    let dataset = flag_value(&pass, "--dataset").unwrap_or_else(|| "mnist".into());
    let data_dir = flag_value(&pass, "--data-dir").unwrap_or_else(|| "data".into());
    let bin = build_mnist(&features)?;
    // A data set of our own (a folder) or another --data-dir is the user's business.
    if (dataset == "mnist" || dataset == "fashion") && Path::new(&data_dir) == Path::new("data") {
        ensure_data(&dataset, &bin)?;
    }
    if !pass
        .iter()
        .any(|a| a == "--model" || a == "-m" || a.to_string_lossy().starts_with("--model=") || a == "--resume")
    {
        pass.splice(0..0, ["--model".into(), "mlp-128".into()]);
    }
    let mut cmd = Command::new(&bin);
    cmd.arg("train").args(&pass);
    eprintln!(
        "xtask: {} train {}",
        bin.display(),
        pass.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    // Ctrl-C reaches `mnist` too (the terminal signals the whole foreground group), which
    // stops training gently and saves the run: wait for it rather than die first (which would
    // close the terminal under it), then end as it ended.
    ctrlc::set_handler(|| {}).context("cannot take Ctrl-C while mnist train runs")?;
    let code = cmd.current_dir(root()?).status().context("cannot start mnist train")?.code();
    match code {
        Some(0) => Ok(()),
        // Interrupted (it said so itself), or another failure it has reported.
        Some(code) => std::process::exit(code),
        None => bail!("mnist train was killed by a signal"),
    }
}

/// The value of `flag` among `args` (`--flag VALUE` or `--flag=VALUE`), if given.
fn flag_value(args: &[OsString], flag: &str) -> Option<String> {
    let strs: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let prefix = format!("{flag}=");
    for (i, a) in strs.iter().enumerate() {
        if a == flag {
            return strs.get(i + 1).cloned();
        } else if let Some(v) = a.strip_prefix(&prefix) {
            return Some(v.to_string());
        }
    }
    None
}

/// `cargo xtask info`.
fn info() -> Result<()> {
    let bin = build_mnist(&[])?;
    for name in ["mnist", "fashion"] {
        ensure_data(name, &bin)?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--data-dir", "data", "--dataset", name, "info"]);
        status(cmd, &format!("mnist info --dataset {name}"))?;
        println!();
    }
    Ok(())
}

/// `cargo xtask ci`.
fn ci() -> Result<()> {
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    eprintln!("xtask: cargo test --workspace");
    status(test, "cargo test --workspace")?;
    let mut cuda = cargo();
    cuda.args(["test", "-p", "nn-cuda", "--features", "cuda"]);
    eprintln!("xtask: cargo test -p nn-cuda --features cuda");
    status(cuda, "nn-cuda's tests with the cuda feature")?;
    let mut consumer = cargo();
    consumer.args(["test", "--manifest-path", "tests/consumer/Cargo.toml"]);
    eprintln!("xtask: cargo test --manifest-path tests/consumer/Cargo.toml");
    status(consumer, "the consumer crate's tests")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_found() {
        let args: Vec<OsString> = ["--epochs", "1", "--dataset", "fashion"].iter().map(OsString::from).collect();
        assert_eq!(flag_value(&args, "--dataset").as_deref(), Some("fashion"));
        assert_eq!(flag_value(&args, "--data-dir"), None);
        assert_eq!(flag_value(&[OsString::from("--dataset=fashion")], "--dataset").as_deref(), Some("fashion"));
    }

    #[test]
    fn cargo_does_not_inherit_what_cargo_run_set_for_xtask() {
        for key in ["CARGO_PKG_NAME", "CARGO_MANIFEST_DIR", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"] {
            assert!(set_for_xtask(key), "{key}");
        }
        for key in ["CARGO", "CARGO_HOME", "CARGO_TARGET_DIR", "RUSTFLAGS", "CARGO_BUILD_JOBS"] {
            assert!(!set_for_xtask(key), "{key}");
        }
        // The test binary itself runs with CARGO_PKG_NAME set, as xtask does.
        let cmd = cargo();
        assert!(cmd.get_envs().any(|(k, v)| k == "CARGO_PKG_NAME" && v.is_none()));
    }

    #[test]
    fn shared_data_is_linked_into_data() {
        let base = std::env::temp_dir().join(format!("xtask-link-{}", std::process::id()));
        let (ws, shared) = (base.join("ws"), base.join("shared").join("data").join("mnist"));
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::create_dir_all(&shared).unwrap();
        assert!(!link_shared(&ws, "mnist").unwrap(), "nothing to link yet");
        for f in [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ] {
            std::fs::write(shared.join(f), b"x").unwrap();
        }
        assert!(link_shared(&ws, "mnist").unwrap());
        assert!(ws.join("data/mnist").is_symlink() || cfg!(not(unix)));
        assert!(has_data(&ws.join("data/mnist")));
        assert!(link_shared(&ws, "mnist").unwrap(), "already there");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
