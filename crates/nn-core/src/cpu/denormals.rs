//! Flush-to-zero: subnormal floats are 10-100× slower on x86 and appear naturally in training
//! (Adam's moments of dead units decay geometrically), so, as TensorFlow does, the CPU computes
//! with subnormals flushed to zero. Threads inherit the setting from the thread that starts
//! them (POSIX), so it is set before the thread pools are created.

/// Turns on flush-to-zero and denormals-are-zero for the calling thread (x86-64: MXCSR bits
/// FTZ and DAZ; aarch64: FPCR.FZ). Does nothing on other targets.
pub fn flush_denormals_to_zero() {
    #[cfg(target_arch = "x86_64")]
    {
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr only read/write this thread's SSE control register; setting
        // FTZ (bit 15) and DAZ (bit 6) changes rounding of subnormals only.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= (1 << 15) | (1 << 6);
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let mut fpcr: u64;
        // SAFETY: reading and writing this thread's FPCR; bit 24 (FZ) flushes subnormals.
        unsafe {
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr);
            fpcr |= 1 << 24;
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subnormals_become_zero() {
        super::flush_denormals_to_zero();
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5f32);
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(tiny * half, 0.0);
        }
    }
}
