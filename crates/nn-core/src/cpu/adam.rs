//! Adam's update on the CPU, with the same bits everywhere and without the vector division.
//!
//! `w -= η_t·m / (√v + ε)` divides once per weight, and on AVX-512 a 16-lane division costs as
//! much as the rest of the update together: a small model's update (M1's and M2's 100 K
//! weights, whose state stays in the caches) spent a third of its time waiting for it. With
//! AVX-512 the quotient is instead a reciprocal estimate (`vrcp14ps`), one Newton step and one
//! fused correction (Markstein's): that gives the correctly rounded quotient, the division's own
//! bits (checked against the division for every divisor mantissa, and in the tests), in a third
//! of the time. Lanes whose divisor is zero, subnormal, infinite or NaN take the division.
//! Every other operation is the portable formula's, in its order and with its roundings, so
//! every width gives the same weights.

/// Below this magnitude a quotient is recomputed by division (the correction step is exact only
/// away from the subnormal range).
const TINY: f32 = 1.0 / (1u128 << 100) as f32;

/// Adam's coefficients for one step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamStep {
    /// `1 - β1`.
    pub(crate) c1: f32,
    /// `1 - β2`.
    pub(crate) c2: f32,
    /// `η √(1-β2ᵗ)/(1-β1ᵗ)`.
    pub(crate) lr_t: f32,
    /// ε.
    pub(crate) epsilon: f32,
}

impl AdamStep {
    /// Updates `w` with its gradient `g` and its moments `m`, `v` (all the same length).
    #[inline(always)]
    pub(crate) fn apply(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let n = w.len().min(g.len()).min(m.len()).min(v.len());
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if super::simd::has_avx512() {
            // SAFETY: the CPU has AVX-512F (checked just above); the slices hold `n` values.
            done = unsafe { self.avx512(&mut w[..n], &g[..n], &mut m[..n], &mut v[..n]) };
        }
        self.portable(&mut w[done..n], &g[done..n], &mut m[done..n], &mut v[done..n]);
    }

    /// The reference formula (Keras 3's), one weight at a time.
    #[inline(always)]
    fn portable(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m += (g - *m) * self.c1;
            *v += (g * g - *v) * self.c2;
            *w -= self.lr_t * *m / (v.sqrt() + self.epsilon);
        }
    }

    /// The formula on whole vectors of 16; returns how many weights it updated (the rest, fewer
    /// than 16, are left to [`AdamStep::portable`]).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> usize {
        use std::arch::x86_64::*;
        let n = w.len() / 16 * 16;
        let (c1, c2) = (_mm512_set1_ps(self.c1), _mm512_set1_ps(self.c2));
        let (lr_t, eps, one) = (_mm512_set1_ps(self.lr_t), _mm512_set1_ps(self.epsilon), _mm512_set1_ps(1.0));
        // Quotients the correction is proven right for: normal, and not near underflow.
        let (tiny, huge) = (_mm512_set1_ps(TINY), _mm512_set1_ps(f32::MAX));
        let zero = _mm512_setzero_ps();
        let (wp, gp, mp, vp) = (w.as_mut_ptr(), g.as_ptr(), m.as_mut_ptr(), v.as_mut_ptr());
        let mut i = 0;
        while i < n {
            // SAFETY: i + 16 <= n <= the length of every slice.
            unsafe {
                // Every load before the stores: with the four slices at the same offset in
                // their pages, a load after a store to the same offset waits for it.
                let gv = _mm512_loadu_ps(gp.add(i));
                let mut mv = _mm512_loadu_ps(mp.add(i));
                let mut vv = _mm512_loadu_ps(vp.add(i));
                let wv = _mm512_loadu_ps(wp.add(i));
                mv = _mm512_add_ps(mv, _mm512_mul_ps(_mm512_sub_ps(gv, mv), c1));
                vv = _mm512_add_ps(vv, _mm512_mul_ps(_mm512_sub_ps(_mm512_mul_ps(gv, gv), vv), c2));
                _mm512_storeu_ps(mp.add(i), mv);
                _mm512_storeu_ps(vp.add(i), vv);
                let a = _mm512_mul_ps(lr_t, mv);
                let d = _mm512_add_ps(_mm512_sqrt_ps(vv), eps);
                // r ≈ 1/d to ~2⁻²⁸, then q = RN(a/d) by one fused correction of a·r.
                let r0 = _mm512_rcp14_ps(d);
                let r = _mm512_fmadd_ps(r0, _mm512_fnmadd_ps(d, r0, one), r0);
                let q0 = _mm512_mul_ps(a, r);
                let mut q = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, q0, a), q0);
                // A zero numerator over a positive divisor: the quotient is the numerator (its
                // sign included). Anything else outside the proven range: the division.
                let aq = _mm512_abs_ps(q);
                let good = _mm512_mask_cmp_ps_mask::<_CMP_LE_OQ>(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(aq, tiny), aq, huge);
                if good != 0xFFFF {
                    let zeros =
                        _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, zero), d, zero);
                    q = _mm512_mask_mov_ps(q, zeros, a);
                    let other = !(good | zeros);
                    if other != 0 {
                        q = _mm512_mask_div_ps(q, other, a, d);
                    }
                }
                _mm512_storeu_ps(wp.add(i), _mm512_sub_ps(wv, q));
            }
            i += 16;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector path against the reference formula, bit for bit, on moments and gradients
    /// spread over many magnitudes (zero, subnormal and huge divisors, signed zeros included).
    #[test]
    fn the_vector_update_has_the_reference_bits() {
        let mut rng = mnist_data::Rng::new(5);
        let n = 4096 + 7;
        let mags = [0.0, 1e-42, 1e-30, 1e-12, 1e-7, 1e-4, 1e-2, 1.0, 1e3, 1e19, f32::INFINITY];
        let pick = |rng: &mut mnist_data::Rng| {
            let m = mags[(rng.uniform(0.0, mags.len() as f32) as usize).min(mags.len() - 1)];
            m * rng.uniform(-1.0, 1.0)
        };
        // Weights of ±0 too: only they show the sign of a zero step.
        let w: Vec<f32> = (0..n).map(|i| rng.uniform(-1.0, 1.0) * if i % 5 == 0 { 0.0 } else { 1.0 }).collect();
        let g: Vec<f32> = (0..n).map(|_| pick(&mut rng)).collect();
        let m: Vec<f32> = (0..n).map(|_| pick(&mut rng)).collect();
        let v: Vec<f32> = (0..n).map(|_| pick(&mut rng).abs()).collect();
        for epsilon in [1e-7, 0.0] {
            let step = AdamStep { c1: 0.1, c2: 0.001, lr_t: 3e-4, epsilon };
            let (mut w1, mut m1, mut v1) = (w.clone(), m.clone(), v.clone());
            let (mut w2, mut m2, mut v2) = (w.clone(), m.clone(), v.clone());
            for _ in 0..3 {
                step.apply(&mut w1, &g, &mut m1, &mut v1);
                step.portable(&mut w2, &g, &mut m2, &mut v2);
            }
            for (name, a, b) in [("w", &w1, &w2), ("m", &m1, &m2), ("v", &v1, &v2)] {
                for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                    assert!(x.to_bits() == y.to_bits(), "{name}[{i}] {x:e} != {y:e} (ε {epsilon})");
                }
            }
        }
    }
}
