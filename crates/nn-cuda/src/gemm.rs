//! How a row-major [`Gemm`] of nn-core becomes a column-major cuBLAS call. Pure arithmetic,
//! testable without a GPU.
//!
//! cuBLAS is column-major and our buffers are row-major. A row-major `[r, c]` matrix is, byte
//! for byte, the column-major `[c, r]` matrix — its transpose. So row-major `C = op(A)·op(B)`
//! is column-major `Cᵀ = op(B)ᵀ·op(A)ᵀ`: call `sgemm` with the operands swapped (B first),
//! `m` and `n` swapped, the same transpose flags, and leading dimensions equal to the row
//! lengths of the row-major storage.

use nn_core::device::Gemm;

/// The arguments of `cublasSgemm(StridedBatched)` for a row-major [`Gemm`]: cuBLAS's `A`
/// operand is our `B` and its `B` operand is our `A`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlasGemm {
    /// Transpose cuBLAS's `A` (= our `B`).
    pub transa: bool,
    /// Transpose cuBLAS's `B` (= our `A`).
    pub transb: bool,
    /// Rows of cuBLAS's column-major `C` (= columns of ours).
    pub m: usize,
    /// Columns of cuBLAS's `C` (= rows of ours).
    pub n: usize,
    /// The shared dimension.
    pub k: usize,
    /// Leading dimension of cuBLAS's `A` (our `B`).
    pub lda: usize,
    /// Leading dimension of cuBLAS's `B` (our `A`).
    pub ldb: usize,
    /// Leading dimension of `C`.
    pub ldc: usize,
    /// Elements between cuBLAS's consecutive `A` matrices (our `B`'s stride).
    pub stride_a: usize,
    /// Elements between cuBLAS's consecutive `B` matrices (our `A`'s stride).
    pub stride_b: usize,
    /// Elements between consecutive `C` matrices.
    pub stride_c: usize,
    /// Number of products (at least 1).
    pub batch: usize,
}

impl BlasGemm {
    /// `(transa, transb, m, n, k, lda, ldb, ldc)` in cuBLAS's argument order.
    pub fn args(&self) -> (bool, bool, usize, usize, usize, usize, usize, usize) {
        (self.transa, self.transb, self.m, self.n, self.k, self.lda, self.ldb, self.ldc)
    }
}

/// The cuBLAS call computing the row-major product `g` (see the module documentation).
/// Leading dimensions are at least 1, as cuBLAS requires even for empty matrices.
pub fn blas_gemm(g: &Gemm) -> BlasGemm {
    BlasGemm {
        transa: g.trans_b,
        transb: g.trans_a,
        m: g.n,
        n: g.m,
        k: g.k,
        // Our B is stored [k, n] (row length n) or, transposed, [n, k] (row length k).
        lda: if g.trans_b { g.k } else { g.n }.max(1),
        // Our A is stored [m, k] (row length k) or, transposed, [k, m] (row length m).
        ldb: if g.trans_a { g.m } else { g.k }.max(1),
        ldc: g.n.max(1),
        stride_a: g.stride_b,
        stride_b: g.stride_a,
        stride_c: g.stride_c,
        batch: g.batch.max(1),
    }
}

/// The elements `A`, `B` and `C` must hold for `g` (every matrix of the batch in bounds).
pub fn required_lens(g: &Gemm) -> (usize, usize, usize) {
    let last = g.batch.max(1) - 1;
    let need = |stride: usize, size: usize| if size == 0 { 0 } else { last * stride + size };
    (need(g.stride_a, g.m * g.k), need(g.stride_b, g.k * g.n), need(g.stride_c, g.m * g.n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column-major reference `C = α·op(A)·op(B) + β·C`, the BLAS definition, with `op(A)`
    /// `[m, k]` and `op(B)` `[k, n]`.
    #[allow(clippy::too_many_arguments)]
    fn colmajor_sgemm(
        transa: bool,
        transb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        beta: f32,
        c: &mut [f32],
        ldc: usize,
    ) {
        for j in 0..n {
            for i in 0..m {
                let mut s = 0f32;
                for p in 0..k {
                    let av = if transa { a[p + i * lda] } else { a[i + p * lda] };
                    let bv = if transb { b[j + p * ldb] } else { b[p + j * ldb] };
                    s += av * bv;
                }
                let old = if beta == 0.0 { 0.0 } else { beta * c[i + j * ldc] };
                c[i + j * ldc] = alpha * s + old;
            }
        }
    }

    /// Runs `g` through the mapping and the column-major reference.
    fn through_blas(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        let bg = blas_gemm(g);
        for i in 0..bg.batch {
            let (oa, ob, oc) = (i * bg.stride_a, i * bg.stride_b, i * bg.stride_c);
            colmajor_sgemm(
                bg.transa,
                bg.transb,
                bg.m,
                bg.n,
                bg.k,
                g.alpha,
                &b[oa..],
                bg.lda,
                &a[ob..],
                bg.ldb,
                g.beta,
                &mut c[oc..],
                bg.ldc,
            );
        }
    }

    /// Plain row-major reference with explicit indexing.
    fn rowmajor(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
        for bi in 0..g.batch.max(1) {
            let (oa, ob, oc) = (bi * g.stride_a, bi * g.stride_b, bi * g.stride_c);
            for i in 0..g.m {
                for j in 0..g.n {
                    let mut s = 0f32;
                    for p in 0..g.k {
                        let av = if g.trans_a { a[oa + p * g.m + i] } else { a[oa + i * g.k + p] };
                        let bv = if g.trans_b { b[ob + j * g.k + p] } else { b[ob + p * g.n + j] };
                        s += av * bv;
                    }
                    let old = if g.beta == 0.0 { 0.0 } else { g.beta * c[oc + i * g.n + j] };
                    c[oc + i * g.n + j] = g.alpha * s + old;
                }
            }
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 16) % 17) as f32 - 8.0).collect()
    }

    #[test]
    fn mapping_matches_a_rowmajor_product() {
        for (m, n, k) in [(1, 1, 1), (2, 3, 4), (5, 1, 3), (3, 7, 1), (4, 4, 4), (6, 2, 5)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for beta in [0.0, 1.0, 0.5] {
                        let g = Gemm::new(ta, tb, m, n, k).beta(beta);
                        let (la, lb, lc) = required_lens(&g);
                        let (a, b) = (values(la, 1), values(lb, 2));
                        let mut want = values(lc, 3);
                        let mut got = want.clone();
                        rowmajor(&g, &a, &b, &mut want);
                        through_blas(&g, &a, &b, &mut got);
                        assert_eq!(got, want, "m={m} n={n} k={k} ta={ta} tb={tb} beta={beta}");
                        // And the CPU device agrees.
                        let mut cpu = values(lc, 3);
                        nn_core::cpu::gemm_slices(&g, &a, &b, &mut cpu);
                        assert_eq!(cpu, want, "cpu: m={m} n={n} k={k} ta={ta} tb={tb}");
                    }
                }
            }
        }
    }

    #[test]
    fn strided_batches_and_broadcast() {
        let (m, n, k, batch) = (3, 4, 2, 3);
        for ta in [false, true] {
            for tb in [false, true] {
                // A broadcast (stride 0), B and C strided with a gap between matrices.
                let g = Gemm::new(ta, tb, m, n, k).batched(batch, 0, k * n + 1, m * n + 2);
                let (la, lb, lc) = required_lens(&g);
                assert_eq!(la, m * k);
                assert_eq!(lb, (batch - 1) * (k * n + 1) + k * n);
                assert_eq!(lc, (batch - 1) * (m * n + 2) + m * n);
                let (a, b) = (values(la, 4), values(lb, 5));
                let mut want = values(lc, 6);
                let mut got = want.clone();
                rowmajor(&g, &a, &b, &mut want);
                through_blas(&g, &a, &b, &mut got);
                assert_eq!(got, want, "ta={ta} tb={tb}");
                let bg = blas_gemm(&g);
                assert_eq!((bg.stride_a, bg.stride_b, bg.stride_c, bg.batch), (k * n + 1, 0, m * n + 2, batch));
            }
        }
    }

    #[test]
    fn argument_mapping_by_hand() {
        // Dense forward: y [n, units] = x [n, in] · W [in, units].
        let g = Gemm::new(false, false, 128, 10, 784);
        assert_eq!(blas_gemm(&g).args(), (false, false, 10, 128, 784, 10, 784, 10));
        // Dense backward, dW [in, units] = xᵀ · dy.
        let g = Gemm::new(true, false, 784, 10, 128);
        assert_eq!(blas_gemm(&g).args(), (false, true, 10, 784, 128, 10, 784, 10));
        // Dense backward, dx [n, in] = dy · Wᵀ.
        let g = Gemm::new(false, true, 128, 784, 10);
        assert_eq!(blas_gemm(&g).args(), (true, false, 784, 128, 10, 10, 10, 784));
        // Empty shapes keep leading dimensions valid.
        let g = Gemm::new(false, false, 0, 0, 0);
        let bg = blas_gemm(&g);
        assert!(bg.lda >= 1 && bg.ldb >= 1 && bg.ldc >= 1);
        assert_eq!(required_lens(&g), (0, 0, 0));
    }
}
