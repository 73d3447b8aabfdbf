//! The CPU device: buffers are `Vec<f32>`, matrix products go to `matrixmultiply` (threaded),
//! large element-wise passes are split over rayon's threads.

mod conv;
mod denormals;
mod elementwise;
mod norm;

use rayon::prelude::*;

pub use denormals::flush_denormals_to_zero;

use crate::activation::Activation;
use crate::device::{BatchNormArgs, Channels, Device, Gemm, Window};
use crate::error::Result;
use crate::loss::XentArgs;
use crate::optim::{update_host, StepParams, UpdateRule};

/// Below this many elements an element-wise pass runs on one thread (rayon's dispatch would
/// cost more than it saves).
pub(crate) const PAR_MIN: usize = 1 << 15;

/// The CPU device. Cheap to create and to clone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Cpu {
    /// The CPU device.
    pub fn new() -> Cpu {
        Cpu
    }
}

impl Device for Cpu {
    type Buf = Vec<f32>;

    fn describe(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }
    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }
    fn upload(&self, src: &[f32], dst: &mut Vec<f32>) -> Result<()> {
        dst[..src.len()].copy_from_slice(src);
        Ok(())
    }
    fn download(&self, src: &Vec<f32>, dst: &mut [f32]) -> Result<()> {
        let n = dst.len();
        dst.copy_from_slice(&src[..n]);
        Ok(())
    }
    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>, len: usize) -> Result<()> {
        dst[..len].copy_from_slice(&src[..len]);
        Ok(())
    }
    fn fill(&self, buf: &mut Vec<f32>, value: f32, len: usize) -> Result<()> {
        buf[..len].fill(value);
        Ok(())
    }

    fn gemm(&self, g: &Gemm, a: &Vec<f32>, b: &Vec<f32>, c: &mut Vec<f32>) -> Result<()> {
        gemm_slices(g, a, b, c);
        Ok(())
    }

    fn bias_act(
        &self,
        y: &mut Vec<f32>,
        bias: Option<&Vec<f32>>,
        act: Activation,
        s: Channels,
    ) -> Result<()> {
        elementwise::bias_act(&mut y[..s.len()], bias.map(|b| &b[..s.channels]), act, s);
        Ok(())
    }
    fn act_backward(
        &self,
        y: &Vec<f32>,
        dy: &mut Vec<f32>,
        act: Activation,
        s: Channels,
    ) -> Result<()> {
        elementwise::act_backward(&y[..s.len()], &mut dy[..s.len()], act, s);
        Ok(())
    }
    fn channel_sums(
        &self,
        dy: &Vec<f32>,
        s: Channels,
        beta: f32,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        elementwise::channel_sums(&dy[..s.len()], s, beta, &mut out[..s.channels]);
        Ok(())
    }
    fn cross_entropy(
        &self,
        args: &XentArgs,
        out: &Vec<f32>,
        targets: &Vec<f32>,
        grad: &mut Vec<f32>,
        stats: &mut Vec<f32>,
    ) -> Result<()> {
        let (loss, correct) = elementwise::cross_entropy(args, out, targets, grad);
        stats[0] += loss;
        stats[1] += correct;
        Ok(())
    }
    fn dropout(
        &self,
        x: &mut Vec<f32>,
        mask: &mut Vec<f32>,
        rate: f32,
        seed: u64,
        len: usize,
    ) -> Result<()> {
        elementwise::dropout(&mut x[..len], &mut mask[..len], rate, seed);
        Ok(())
    }
    fn mul(&self, x: &mut Vec<f32>, m: &Vec<f32>, len: usize) -> Result<()> {
        for (x, &m) in x[..len].iter_mut().zip(&m[..len]) {
            *x *= m;
        }
        Ok(())
    }
    fn regularizer_grad(
        &self,
        w: &Vec<f32>,
        dw: &mut Vec<f32>,
        l1: f32,
        l2: f32,
        len: usize,
    ) -> Result<()> {
        for (d, &w) in dw[..len].iter_mut().zip(&w[..len]) {
            *d += 2.0 * l2 * w
                + l1 * if w > 0.0 {
                    1.0
                } else if w < 0.0 {
                    -1.0
                } else {
                    0.0
                };
        }
        Ok(())
    }
    fn regularizer_penalty(
        &self,
        w: &Vec<f32>,
        l1: f32,
        l2: f32,
        len: usize,
        acc: &mut Vec<f32>,
    ) -> Result<()> {
        let (mut a, mut s) = (0f64, 0f64);
        for &w in &w[..len] {
            a += w.abs() as f64;
            s += (w * w) as f64;
        }
        acc[0] += (l1 as f64 * a + l2 as f64 * s) as f32;
        Ok(())
    }
    fn update(
        &self,
        rule: &UpdateRule,
        sp: StepParams,
        w: &mut Vec<f32>,
        g: &Vec<f32>,
        slots: &mut [Vec<f32>],
        len: usize,
    ) -> Result<()> {
        const CHUNK: usize = 1 << 14;
        let w = &mut w[..len];
        let g = &g[..len];
        if len < PAR_MIN {
            let mut s: Vec<&mut [f32]> = slots.iter_mut().map(|s| &mut s[..len]).collect();
            update_host(rule, sp, w, g, &mut s);
            return Ok(());
        }
        // Split every tensor into the same chunks and update them in parallel.
        let mut slot_chunks: Vec<std::slice::ChunksMut<'_, f32>> = slots
            .iter_mut()
            .map(|s| s[..len].chunks_mut(CHUNK))
            .collect();
        let mut jobs = Vec::with_capacity(len.div_ceil(CHUNK));
        for (wc, gc) in w.chunks_mut(CHUNK).zip(g.chunks(CHUNK)) {
            let sc: Vec<&mut [f32]> = slot_chunks.iter_mut().filter_map(|it| it.next()).collect();
            jobs.push((wc, gc, sc));
        }
        jobs.into_par_iter()
            .for_each(|(wc, gc, mut sc)| update_host(rule, sp, wc, gc, &mut sc));
        Ok(())
    }

    fn im2col(&self, x: &Vec<f32>, win: &Window, cols: &mut Vec<f32>) -> Result<()> {
        conv::im2col(x, win, cols);
        Ok(())
    }
    fn col2im(&self, cols: &Vec<f32>, win: &Window, dx: &mut Vec<f32>) -> Result<()> {
        conv::col2im(cols, win, dx);
        Ok(())
    }
    fn swap_axes01(
        &self,
        src: &Vec<f32>,
        a: usize,
        b: usize,
        r: usize,
        dst: &mut Vec<f32>,
    ) -> Result<()> {
        conv::swap_axes01(src, a, b, r, dst);
        Ok(())
    }
    fn max_pool(
        &self,
        x: &Vec<f32>,
        win: &Window,
        y: &mut Vec<f32>,
        arg: &mut Vec<f32>,
    ) -> Result<()> {
        conv::max_pool(x, win, y, arg);
        Ok(())
    }
    fn max_pool_backward(
        &self,
        dy: &Vec<f32>,
        arg: &Vec<f32>,
        win: &Window,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        conv::max_pool_backward(dy, arg, win, dx);
        Ok(())
    }
    fn avg_pool(&self, x: &Vec<f32>, win: &Window, y: &mut Vec<f32>) -> Result<()> {
        conv::avg_pool(x, win, y);
        Ok(())
    }
    fn avg_pool_backward(&self, dy: &Vec<f32>, win: &Window, dx: &mut Vec<f32>) -> Result<()> {
        conv::avg_pool_backward(dy, win, dx);
        Ok(())
    }
    fn batch_norm_train(
        &self,
        args: &BatchNormArgs,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        moving_mean: &mut Vec<f32>,
        moving_var: &mut Vec<f32>,
        saved: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        norm::train(args, x, gamma, beta, moving_mean, moving_var, saved, y);
        Ok(())
    }
    fn batch_norm_infer(
        &self,
        args: &BatchNormArgs,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        moving_mean: &Vec<f32>,
        moving_var: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        norm::infer(args, x, gamma, beta, moving_mean, moving_var, y);
        Ok(())
    }
    fn batch_norm_backward(
        &self,
        args: &BatchNormArgs,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        gamma: &Vec<f32>,
        saved: &Vec<f32>,
        dx: &mut Vec<f32>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
    ) -> Result<()> {
        norm::backward(args, x, dy, gamma, saved, dx, dgamma, dbeta);
        Ok(())
    }
}

/// Row-major (strided-batched) GEMM on slices through `matrixmultiply`.
pub fn gemm_slices(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (m, n, k) = (g.m, g.n, g.k);
    // op(A) is [m, k]: stored [m, k] (rs = k, cs = 1) or [k, m] transposed (rs = 1, cs = m).
    let (rsa, csa) = if g.trans_a {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (rsb, csb) = if g.trans_b {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    for i in 0..g.batch.max(1) {
        let (oa, ob, oc) = (i * g.stride_a, i * g.stride_b, i * g.stride_c);
        assert!(
            oa + m * k <= a.len() && ob + k * n <= b.len() && oc + m * n <= c.len(),
            "gemm operand too small"
        );
        // SAFETY: the asserts above keep every access of the m×k, k×n and m×n views in bounds.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                g.alpha,
                a.as_ptr().add(oa),
                rsa,
                csa,
                b.as_ptr().add(ob),
                rsb,
                csb,
                g.beta,
                c.as_mut_ptr().add(oc),
                n as isize,
                1,
            );
        }
    }
}
