//! What the `mnist` binary's integration tests share: finding the real data, running the
//! binary, and checking that it succeeded or failed cleanly.
//!
//! The data is looked for in `<workspace>/data/mnist` (CI links the real files there), then in
//! `<workspace>/../shared/data/mnist`. The tests fail, rather than skip, when neither exists.
// Each test file uses its own part of this module.
#![allow(dead_code, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The folder holding `mnist/` (given to `--data-dir`).
pub fn data_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    for dir in [root.join("data"), root.join("..").join("shared").join("data")] {
        if mnist_data::dataset::find_file(&dir.join("mnist"), 0).is_ok() {
            return dir;
        }
    }
    panic!("the real MNIST files are needed: put (or link) them in {}/data/mnist (see data/README.md)", root.display());
}

/// Runs `mnist ARGS` in `dir` (no `--data-dir`).
pub fn mnist_bare(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnist")).current_dir(dir).args(args).output().expect("the mnist binary runs")
}

/// Runs `mnist --data-dir <data> ARGS` in `dir`.
pub fn mnist(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnist"))
        .current_dir(dir)
        .arg("--data-dir")
        .arg(data_root())
        .args(args)
        .output()
        .expect("the mnist binary runs")
}

/// Asserts success; returns (stdout, stderr).
pub fn ok_both(out: &Output) -> (String, String) {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mnist failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (stdout.into_owned(), stderr.into_owned())
}

/// Asserts success; returns stdout.
pub fn ok(out: &Output) -> String {
    ok_both(out).0
}

/// Asserts a clean failure (non-zero exit, no panic) whose stderr mentions every one of
/// `needles`; returns (stdout, stderr).
pub fn fails_both(out: &Output, needles: &[&str]) -> (String, String) {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "expected a failure:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_ne!(out.status.code(), Some(101), "a panic's exit code:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr should mention {n:?}:\n{stderr}");
    }
    (stdout.into_owned(), stderr.into_owned())
}

/// As [`fails_both`]; returns stderr.
pub fn fails(out: &Output, needles: &[&str]) -> String {
    fails_both(out, needles).1
}
