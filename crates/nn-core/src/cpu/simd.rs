//! Run-time choice of vector width for the CPU kernels.
//!
//! The crate is compiled for the baseline x86-64 (SSE2) so that its binaries run anywhere;
//! [`with_simd`] runs a closure inside a function compiled for AVX-512 (or AVX2) when the CPU
//! has it, so the loops the closure inlines are vectorised 16 (or 8) lanes wide. The closure's
//! body must inline into it (`#[inline(always)]` helpers, iterator adaptors): a call that stays
//! a call runs baseline code. Without fast-math no arithmetic is reordered, so every width gives
//! bit-identical results.

/// Whether this CPU has AVX-512F (the kernels written with its intrinsics need nothing more).
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `f`, vectorised for the widest instruction set this CPU has.
#[inline(always)]
pub(crate) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { run_avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { run_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
