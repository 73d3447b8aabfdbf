//! The library's tutorial example (`examples/tutorial.rs`), run as a user runs it: one epoch on
//! the real MNIST files, its pictures and model written, its reloaded model checked.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

/// An example's program, built beside this test's by `cargo test` (in `<target>/<profile>/examples`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built: run `cargo test -p nn-train` (which builds the examples), not one test target alone",
        path.display()
    );
    path
}

#[test]
fn the_tutorial_runs_from_loading_to_reloading() {
    let out = tempfile::tempdir().unwrap();
    let run =
        Command::new(example("tutorial")).arg(common::data_dir("mnist")).arg("1").arg(out.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    for part in ["shape: (60000, 28, 28)", "Total params: 101,770", "Epoch 1/1", "reloaded: the same predictions"] {
        assert!(stdout.contains(part), "'{part}' not in:\n{stdout}");
    }
    // One epoch of the quickstart model: ~96% (Keras ~95.8%).
    let accuracy: f64 = stdout
        .split("test accuracy ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|a| a.parse().ok())
        .unwrap();
    assert!(accuracy >= 95.0, "test accuracy {accuracy}%");
    for file in ["history.png", "predictions.png", "model.safetensors"] {
        assert!(out.path().join(file).metadata().unwrap().len() > 0, "{file} missing");
    }
}
