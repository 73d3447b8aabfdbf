//! `exp` for `f32` in plain arithmetic, so the loops that call it vectorise (a call to the C
//! library's `expf` per element does not): Cephes's range reduction and polynomial, within two
//! ulps of the exact value. Without fused multiply-adds, every SIMD width and the scalar code give
//! the same bits.

/// `eˣ`, within 2 ulps; `NaN` stays `NaN`, `+∞` above 88.72, `0` below -87.33 (where results
/// would be subnormal, which the CPU device flushes to zero anyway).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two, so that n·ln 2 is subtracted without rounding error.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.33, 88.72);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * (r * r) + r + 1.0;
    // 2ⁿ from the bits of n + 1.5·2²³, whose low bits hold the integer n (the same bits as
    // `((n as i32 + 127) as u32) << 23`, but a float-to-int cast, with its saturation, stops
    // loops from vectorising).
    let n_bits = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let y = e * scale;
    // Selects, not branches, so that loops calling this vectorise.
    let y = select(x > 88.72, f32::INFINITY, y);
    let y = select(x < -87.33, 0.0, y);
    select(x.is_nan(), x, y)
}

/// `if c { a } else { b }` as a bit mask, which compiles to a blend in vector loops.
#[inline(always)]
fn select(c: bool, a: f32, b: f32) -> f32 {
    let m = (c as u32).wrapping_neg();
    f32::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
}

/// The logistic sigmoid `1 / (1 + e⁻ˣ)` through [`exp`].
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bit_trick_gives_the_power_of_two_of_a_cast() {
        for n in -127..=128 {
            let n = n as f32;
            let n_bits = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
            assert_eq!(n_bits.wrapping_add(127) << 23, ((n as i32 + 127) as u32) << 23, "n = {n}");
        }
    }

    #[test]
    fn exp_is_within_two_ulps_and_handles_the_edges() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - exact) / exact).abs());
            x += 0.000_731;
        }
        assert!(worst < 2.5e-7, "relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7 && sigmoid(-100.0) == 0.0 && sigmoid(100.0) == 1.0);
    }
}
