//! What must hold on any machine, GPU or not: opening the device never panics, and without a
//! driver (or without the `cuda` feature) it fails with an error that says why.
#![allow(clippy::unwrap_used)]

use std::panic::catch_unwind;

#[test]
fn opening_the_device_never_panics_and_explains_failures() {
    let libs = nn_cuda::libraries();
    let available = catch_unwind(nn_cuda::is_available).expect("is_available panicked");
    let opened = catch_unwind(|| nn_cuda::Cuda::new(0).map(|_| ())).expect("Cuda::new panicked");
    match opened {
        Ok(()) => assert!(available, "Cuda::new succeeded but is_available() is false"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!available || libs.driver, "{msg}");
            assert!(matches!(e, nn_core::NnError::Device(_)), "{msg}");
            if cfg!(feature = "cuda") {
                assert!(msg.contains("CUDA"), "the error should mention CUDA: {msg}");
            } else {
                assert!(msg.contains("--features cuda"), "{msg}");
            }
        }
    }
    if !libs.driver {
        assert!(!available, "no driver library, yet is_available() is true");
        let msg = nn_cuda::Cuda::new(0).unwrap_err().to_string();
        if cfg!(feature = "cuda") {
            assert!(msg.contains("no CUDA driver found (libcuda.so)"), "{msg}");
        }
        assert!(nn_cuda::device_info(0).is_err());
        assert!(nn_cuda::device_count().is_err());
    }
}

#[test]
fn without_the_feature_nothing_is_available() {
    if cfg!(feature = "cuda") {
        return;
    }
    assert!(!nn_cuda::is_available());
    assert_eq!(nn_cuda::libraries(), nn_cuda::Libraries::default());
    let msg = nn_cuda::Cuda::new(0).unwrap_err().to_string();
    assert!(msg.contains("built without the `cuda` feature; rebuild with --features cuda"), "{msg}");
}

#[test]
fn a_missing_device_is_an_error_not_a_panic() {
    // Ordinal far beyond any machine's GPUs.
    let r = catch_unwind(|| nn_cuda::Cuda::new(4096).map(|_| ())).expect("Cuda::new panicked");
    assert!(r.is_err());
    let r = catch_unwind(|| nn_cuda::device_info(4096).map(|_| ())).expect("device_info panicked");
    assert!(r.is_err());
}
