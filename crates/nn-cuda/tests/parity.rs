//! GPU parity: every primitive of the CUDA device against the CPU reference on random inputs,
//! then whole networks trained a few steps on both. Each test prints
//! `skipping: no CUDA device: <reason>` and passes when no GPU can be used, unless
//! `NN_REQUIRE_GPU` is set (on a machine that has one), where that fails.
#![allow(clippy::unwrap_used)]
// Without the `cuda` feature `Cuda` has no values: everything after `gpu()` is unreachable.
#![cfg_attr(not(feature = "cuda"), allow(unreachable_code, unused_variables, unused_mut))]

use mnist_data::Rng;
use nn_core::cpu::Cpu;
use nn_core::device::{BatchNormArgs, Channels, Device, Gemm, Window};
use nn_core::loss::XentArgs;
use nn_core::spec::window_out;
use nn_core::{
    Activation, BatchNorm, Conv2D, Dense, Dropout, Flatten, LayerSpec, Loss, Model, ModelSpec, Network, Padding,
    Pool2D, Runtime, StepParams, UpdateRule,
};
use nn_cuda::Cuda;

/// Relative tolerance (absolute below magnitude 1) of the primitives.
const TOL: f32 = 1e-4;

/// The GPU, or `None` (after saying why) when there is none. A GPU that is present but cannot be
/// opened fails the test.
fn gpu() -> Option<Cuda> {
    if !nn_cuda::is_available() {
        let reason = match Cuda::new(0) {
            Err(e) => e.to_string(),
            Ok(_) => "is_available() is false".into(),
        };
        // On the machine with the GPU, NN_REQUIRE_GPU=1 turns a silent skip into a failure.
        assert!(std::env::var_os("NN_REQUIRE_GPU").is_none(), "NN_REQUIRE_GPU is set, but no CUDA device: {reason}");
        println!("skipping: no CUDA device: {reason}");
        return None;
    }
    Some(Cuda::new(0).expect("a CUDA device is available but could not be opened"))
}

fn rand(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(lo, hi)).collect()
}

fn up<D: Device>(d: &D, v: &[f32]) -> D::Buf {
    let mut b = d.alloc(v.len()).unwrap();
    d.upload(v, &mut b).unwrap();
    b
}

fn down<D: Device>(d: &D, b: &D::Buf, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    d.download(b, &mut v).unwrap();
    v
}

#[track_caller]
fn close(what: &str, cpu: &[f32], gpu: &[f32], tol: f32) {
    assert_eq!(cpu.len(), gpu.len(), "{what}: lengths differ");
    let mut worst = (0usize, 0f32);
    for (i, (&c, &g)) in cpu.iter().zip(gpu).enumerate() {
        if c.is_nan() && g.is_nan() {
            continue;
        }
        let err = (c - g).abs() / c.abs().max(1.0);
        if err.is_nan() || err > worst.1 {
            worst = (i, err);
        }
    }
    let (i, err) = worst;
    assert!(err <= tol, "{what}: element {i}: cpu {} vs cuda {} (error {err:e} > {tol:e})", cpu[i], gpu[i]);
}

#[track_caller]
fn all_close(what: &str, cpu: &[Vec<f32>], gpu: &[Vec<f32>], tol: f32) {
    assert_eq!(cpu.len(), gpu.len());
    for (k, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        close(&format!("{what} (output {k})"), c, g, tol);
    }
}

fn gemm_case<D: Device>(d: &D, g: &Gemm, a: &[f32], b: &[f32], c: &[f32]) -> Vec<Vec<f32>> {
    let (ba, bb, mut bc) = (up(d, a), up(d, b), up(d, c));
    d.gemm(g, &ba, &bb, &mut bc).unwrap();
    vec![down(d, &bc, c.len())]
}

#[test]
fn gemm_single_and_batched() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(1);
    let mut cases = Vec::new();
    for (m, n, k) in [(1, 1, 1), (17, 33, 65), (128, 10, 784), (784, 10, 128), (128, 784, 10), (5, 300, 2)] {
        for ta in [false, true] {
            for tb in [false, true] {
                for beta in [0.0, 1.0] {
                    cases.push(Gemm::new(ta, tb, m, n, k).beta(beta));
                }
            }
        }
    }
    cases.push(Gemm::new(false, false, 6, 7, 8).batched(3, 6 * 8, 8 * 7, 6 * 7));
    cases.push(Gemm::new(true, false, 6, 7, 8).batched(4, 0, 8 * 7 + 3, 6 * 7 + 1).beta(1.0));
    cases.push(Gemm::new(false, true, 6, 7, 8).batched(2, 6 * 8, 0, 6 * 7));
    for g in cases {
        let (la, lb, lc) = nn_cuda::gemm::required_lens(&g);
        let (a, b, c) = (rand(&mut rng, la, -1.0, 1.0), rand(&mut rng, lb, -1.0, 1.0), rand(&mut rng, lc, -1.0, 1.0));
        all_close(&format!("{g:?}"), &gemm_case(&Cpu, &g, &a, &b, &c), &gemm_case(&gpu, &g, &a, &b, &c), TOL);
    }
}

fn bias_act_case<D: Device>(d: &D, y: &[f32], bias: Option<&[f32]>, act: Activation, s: Channels) -> Vec<Vec<f32>> {
    let mut by = up(d, y);
    let bb = bias.map(|b| up(d, b));
    d.bias_act(&mut by, bb.as_ref(), act, s).unwrap();
    vec![down(d, &by, y.len())]
}

fn act_backward_case<D: Device>(d: &D, y: &[f32], dy: &[f32], act: Activation, s: Channels) -> Vec<Vec<f32>> {
    let (by, mut bdy) = (up(d, y), up(d, dy));
    d.act_backward(&by, &mut bdy, act, s).unwrap();
    vec![down(d, &bdy, dy.len())]
}

const ACTS: [Activation; 5] =
    [Activation::Linear, Activation::Relu, Activation::Sigmoid, Activation::Tanh, Activation::Softmax];

#[test]
fn bias_activation_and_its_gradient() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(2);
    for s in [
        Channels { outer: 7, channels: 10, inner: 1 },
        Channels { outer: 3, channels: 45, inner: 1 },
        Channels { outer: 4, channels: 6, inner: 9 },
        Channels { outer: 300, channels: 128, inner: 1 },
    ] {
        for act in ACTS {
            let y = rand(&mut rng, s.len() + 5, -3.0, 3.0);
            let bias = rand(&mut rng, s.channels, -1.0, 1.0);
            for b in [None, Some(&bias[..])] {
                let what = format!("bias_act {act:?} {s:?} bias={}", b.is_some());
                all_close(&what, &bias_act_case(&Cpu, &y, b, act, s), &bias_act_case(&gpu, &y, b, act, s), TOL);
            }
            let mut out = rand(&mut rng, s.len(), -1.0, 1.0);
            out[0] = 0.0;
            let dy = rand(&mut rng, s.len(), -1.0, 1.0);
            let what = format!("act_backward {act:?} {s:?}");
            all_close(
                &what,
                &act_backward_case(&Cpu, &out, &dy, act, s),
                &act_backward_case(&gpu, &out, &dy, act, s),
                TOL,
            );
        }
    }
}

fn channel_sums_case<D: Device>(d: &D, dy: &[f32], s: Channels, beta: f32, out: &[f32]) -> Vec<Vec<f32>> {
    let (bdy, mut bo) = (up(d, dy), up(d, out));
    d.channel_sums(&bdy, s, beta, &mut bo).unwrap();
    vec![down(d, &bo, out.len())]
}

#[test]
fn channel_sums() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(3);
    for s in [
        Channels { outer: 33, channels: 70, inner: 1 },
        Channels { outer: 5, channels: 3, inner: 49 },
        Channels { outer: 300, channels: 10, inner: 1 },
        Channels { outer: 64, channels: 32, inner: 784 },
    ] {
        for beta in [0.0, 1.0, 0.5] {
            let dy = rand(&mut rng, s.len(), -1.0, 1.0);
            let out = rand(&mut rng, s.channels, -1.0, 1.0);
            let what = format!("channel_sums {s:?} beta={beta}");
            all_close(
                &what,
                &channel_sums_case(&Cpu, &dy, s, beta, &out),
                &channel_sums_case(&gpu, &dy, s, beta, &out),
                TOL,
            );
        }
    }
}

fn xent_case<D: Device>(d: &D, a: &XentArgs, out: &[f32], t: &[f32]) -> Vec<Vec<f32>> {
    let (bo, bt) = (up(d, out), up(d, t));
    let mut grad = d.alloc(out.len()).unwrap();
    let mut stats = up(d, &[1.5, 2.0, 0.0, 0.0]);
    d.cross_entropy(a, &bo, &bt, &mut grad, &mut stats).unwrap();
    let first = down(d, &stats, 4);
    // A second batch accumulates into the same statistics.
    d.cross_entropy(a, &bo, &bt, &mut grad, &mut stats).unwrap();
    vec![down(d, &grad, out.len()), first, down(d, &stats, 4)]
}

#[test]
fn cross_entropy_every_variant() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(4);
    for (rows, cols) in [(37, 10), (5, 45), (256, 10)] {
        let labels: Vec<usize> = (0..rows).map(|_| rng.below(cols)).collect();
        let sparse_t: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
        let mut onehot = vec![0f32; rows * cols];
        let mut soft = rand(&mut rng, rows * cols, 0.0, 0.1);
        for (r, &l) in labels.iter().enumerate() {
            onehot[r * cols + l] = 1.0;
            soft[r * cols + l] += 0.8;
        }
        let logits = rand(&mut rng, rows * cols, -3.0, 3.0);
        let mut probs = logits.clone();
        for row in probs.chunks_mut(cols) {
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let s: f32 = row.iter().map(|v| (v - m).exp()).sum();
            row.iter_mut().for_each(|v| *v = (*v - m).exp() / s);
        }
        // A near-certain row exercises the clipping of probabilities.
        probs[..cols].fill(0.0);
        probs[labels[0]] = 1.0;
        for logits_in in [true, false] {
            let out = if logits_in { &logits } else { &probs };
            for (sparse, t) in [(true, &sparse_t), (false, &onehot), (false, &soft)] {
                let a = XentArgs { rows, cols, logits: logits_in, sparse, grad_scale: 1.0 / rows as f32 };
                let what = format!("cross_entropy {a:?}");
                all_close(&what, &xent_case(&Cpu, &a, out, t), &xent_case(&gpu, &a, out, t), TOL);
            }
        }
    }
}

fn dropout_case<D: Device>(d: &D, x: &[f32], rate: f32, seed: u64, len: usize) -> Vec<Vec<f32>> {
    let (bx, mut by) = (up(d, x), up(d, x));
    let mut mask = d.alloc(x.len()).unwrap();
    d.dropout(&bx, &mut by, &mut mask, rate, seed, len).unwrap();
    vec![down(d, &by, x.len()), down(d, &mask, x.len())]
}

#[test]
fn dropout_masks_are_identical() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(5);
    let x = rand(&mut rng, 100_003, -1.0, 1.0);
    for (rate, seed) in [(0.5, 1u64), (0.2, 0xDEAD_BEEF_0123_4567), (0.9, u64::MAX)] {
        let (c, g) = (dropout_case(&Cpu, &x, rate, seed, x.len() - 3), dropout_case(&gpu, &x, rate, seed, x.len() - 3));
        all_close(&format!("dropout rate={rate}"), &c, &g, 0.0);
    }
}

fn small_ops_case<D: Device>(d: &D, x: &[f32], m: &[f32], w: &[f32]) -> Vec<Vec<f32>> {
    let n = x.len();
    let (bx, mut by) = (up(d, x), up(d, x));
    d.mul(&bx, &up(d, m), &mut by, n - 1).unwrap();
    let bw = up(d, w);
    let mut dw = up(d, m);
    d.regularizer_grad(&bw, &mut dw, 0.003, 0.01, n).unwrap();
    let mut acc = up(d, &[0.25]);
    d.regularizer_penalty(&bw, 0.003, 0.01, n, &mut acc).unwrap();
    let first = down(d, &acc, 1);
    d.regularizer_penalty(&bw, 0.0, 0.5, n / 2, &mut acc).unwrap();
    vec![down(d, &by, n), down(d, &dw, n), first, down(d, &acc, 1)]
}

#[test]
fn mul_and_regularizers() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(6);
    for n in [7, 5000, 300_001] {
        let (x, m) = (rand(&mut rng, n, -2.0, 2.0), rand(&mut rng, n, -2.0, 2.0));
        let mut w = rand(&mut rng, n, -1.0, 1.0);
        w[0] = 0.0;
        all_close(
            &format!("mul/regularizers n={n}"),
            &small_ops_case(&Cpu, &x, &m, &w),
            &small_ops_case(&gpu, &x, &m, &w),
            TOL,
        );
    }
}

fn update_case<D: Device>(d: &D, rule: &UpdateRule, w: &[f32], grads: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let n = w.len();
    let mut bw = up(d, w);
    let mut slots: Vec<D::Buf> = (0..rule.slots()).map(|_| d.alloc(n).unwrap()).collect();
    for (t, g) in grads.iter().enumerate() {
        let bg = up(d, g);
        d.update(rule, StepParams { lr: 0.01, t: t as u64 + 1 }, &mut bw, &bg, &mut slots, n, n).unwrap();
    }
    let mut out = vec![down(d, &bw, n)];
    out.extend(slots.iter().map(|s| down(d, s, n)));
    out
}

#[test]
fn optimizer_updates() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(7);
    let rules = [
        UpdateRule::Sgd { momentum: 0.0, nesterov: false },
        UpdateRule::Sgd { momentum: 0.9, nesterov: false },
        UpdateRule::Sgd { momentum: 0.9, nesterov: true },
        UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 },
        UpdateRule::RmsProp { rho: 0.9, momentum: 0.0, epsilon: 1e-7 },
        UpdateRule::RmsProp { rho: 0.9, momentum: 0.5, epsilon: 1e-7 },
    ];
    for n in [7, 100_000] {
        let w = rand(&mut rng, n, -1.0, 1.0);
        let grads: Vec<Vec<f32>> = (0..3).map(|_| rand(&mut rng, n, -1.0, 1.0)).collect();
        for rule in &rules {
            all_close(
                &format!("{rule:?} n={n}"),
                &update_case(&Cpu, rule, &w, &grads),
                &update_case(&gpu, rule, &w, &grads),
                TOL,
            );
        }
    }
}

fn window(n: usize, c: usize, h: usize, w: usize, k: usize, s: usize, pad: Padding) -> Window {
    let (oh, ph) = window_out(h, k, s, pad);
    let (ow, pw) = window_out(w, k, s, pad);
    Window { n, c, h, w, kh: k, kw: k, sh: s, sw: s, ph, pw, oh, ow }
}

fn windows() -> Vec<Window> {
    vec![
        window(3, 2, 9, 7, 3, 1, Padding::Valid),
        window(2, 3, 8, 9, 3, 2, Padding::Same),
        window(2, 4, 8, 8, 2, 2, Padding::Valid),
        window(2, 2, 7, 7, 3, 2, Padding::Same),
        window(4, 8, 28, 28, 5, 1, Padding::Same),
        window(3, 5, 7, 7, 7, 7, Padding::Valid),
    ]
}

fn conv_case<D: Device>(d: &D, win: &Window, x: &[f32], cols: &[f32], dy: &[f32], arg: &[f32]) -> Vec<Vec<f32>> {
    let rows = win.c * win.kh * win.kw;
    let (ncols, inputs, outputs) =
        (win.n * win.oh * win.ow, win.n * win.c * win.h * win.w, win.n * win.c * win.oh * win.ow);
    let (bx, bcols, bdy, barg) = (up(d, x), up(d, cols), up(d, dy), up(d, arg));
    let mut c = d.alloc(rows * ncols).unwrap();
    d.im2col(&bx, win, &mut c).unwrap();
    let mut dx = d.alloc(inputs).unwrap();
    d.col2im(&bcols, win, &mut dx).unwrap();
    let mut swapped = d.alloc(inputs).unwrap();
    d.swap_axes01(&bx, win.n, win.c, win.h * win.w, &mut swapped).unwrap();
    let (mut y, mut a) = (d.alloc(outputs).unwrap(), d.alloc(outputs).unwrap());
    d.max_pool(&bx, win, &mut y, &mut a).unwrap();
    let mut dmax = up(d, &vec![9.0; inputs]);
    d.max_pool_backward(&bdy, &barg, win, &mut dmax).unwrap();
    let mut avg = d.alloc(outputs).unwrap();
    d.avg_pool(&bx, win, &mut avg).unwrap();
    let mut davg = up(d, &vec![9.0; inputs]);
    d.avg_pool_backward(&bdy, win, &mut davg).unwrap();
    vec![
        down(d, &c, rows * ncols),
        down(d, &dx, inputs),
        down(d, &swapped, inputs),
        down(d, &y, outputs),
        down(d, &a, outputs),
        down(d, &dmax, inputs),
        down(d, &avg, outputs),
        down(d, &davg, inputs),
    ]
}

#[test]
fn convolution_and_pooling_helpers() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(8);
    for win in windows() {
        let (inputs, outputs) = (win.n * win.c * win.h * win.w, win.n * win.c * win.oh * win.ow);
        let x = rand(&mut rng, inputs, -1.0, 1.0);
        let cols = rand(&mut rng, win.c * win.kh * win.kw * win.n * win.oh * win.ow, -1.0, 1.0);
        let dy = rand(&mut rng, outputs, -1.0, 1.0);
        // Both devices scatter through the same winners.
        let (mut y, mut arg) = (Cpu.alloc(outputs).unwrap(), Cpu.alloc(outputs).unwrap());
        Cpu.max_pool(&x[..].into(), &win, &mut y, &mut arg).unwrap();
        all_close(
            &format!("{win:?}"),
            &conv_case(&Cpu, &win, &x, &cols, &dy, &arg),
            &conv_case(&gpu, &win, &x, &cols, &dy, &arg),
            TOL,
        );
    }
}

fn bn_case<D: Device>(d: &D, a: &BatchNormArgs, x: &[f32], p: &[Vec<f32>; 4], dy: &[f32]) -> Vec<Vec<f32>> {
    let (s, len) = (a.shape, a.shape.len());
    let (bx, g, b, bdy) = (up(d, x), up(d, &p[0]), up(d, &p[1]), up(d, dy));
    let (mut mm, mut mv) = (up(d, &p[2]), up(d, &p[3]));
    let mut saved = d.alloc(2 * s.channels).unwrap();
    let mut y = d.alloc(len).unwrap();
    d.batch_norm_train(a, &bx, &g, &b, &mut mm, &mut mv, &mut saved, &mut y).unwrap();
    let mut yi = d.alloc(len).unwrap();
    d.batch_norm_infer(a, &bx, &g, &b, &mm, &mv, &mut yi).unwrap();
    let (mut dx, mut dg, mut db) = (d.alloc(len).unwrap(), d.alloc(s.channels).unwrap(), d.alloc(s.channels).unwrap());
    d.batch_norm_backward(a, &bx, &bdy, &g, &saved, &mut dx, &mut dg, &mut db).unwrap();
    vec![
        down(d, &y, len),
        down(d, &saved, 2 * s.channels),
        down(d, &mm, s.channels),
        down(d, &mv, s.channels),
        down(d, &yi, len),
        down(d, &dx, len),
        down(d, &dg, s.channels),
        down(d, &db, s.channels),
    ]
}

#[test]
fn batch_normalisation() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(9);
    for shape in [
        Channels { outer: 16, channels: 5, inner: 1 },
        Channels { outer: 4, channels: 3, inner: 25 },
        Channels { outer: 64, channels: 32, inner: 196 },
    ] {
        let a = BatchNormArgs { shape, momentum: 0.99, epsilon: 1e-3 };
        let x = rand(&mut rng, shape.len(), -2.0, 3.0);
        let dy = rand(&mut rng, shape.len(), -1.0, 1.0);
        let c = shape.channels;
        let p = [
            rand(&mut rng, c, 0.5, 1.5),
            rand(&mut rng, c, -0.5, 0.5),
            rand(&mut rng, c, -0.1, 0.1),
            rand(&mut rng, c, 0.8, 1.2),
        ];
        all_close(
            &format!("batch norm {shape:?}"),
            &bn_case(&Cpu, &a, &x, &p, &dy),
            &bn_case(&gpu, &a, &x, &p, &dy),
            TOL,
        );
    }
}

fn memory_case<D: Device>(d: &D) -> Vec<Vec<f32>> {
    let mut a = d.alloc(10).unwrap();
    d.upload(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &mut a).unwrap();
    d.fill(&mut a, 7.0, 3).unwrap();
    let mut b = up(d, &[-1.0; 10]);
    d.copy(&a, &mut b, 4).unwrap();
    let partial = down(d, &b, 5);
    // Rows 4, 0, 4 and 2 of a [5, 3] table, gathered into a [4, 3] buffer longer than that.
    let table = up(d, &(0..15).map(|i| i as f32 * 0.5 - 2.0).collect::<Vec<_>>());
    let rows = up(d, &[4.0, 0.0, 4.0, 2.0]);
    let mut picked = up(d, &[9.0; 14]);
    d.gather_rows(&table, 3, &rows, 4, &mut picked).unwrap();
    vec![down(d, &a, 10), down(d, &b, 10), partial, d.read_scalars(&a, 2).unwrap(), down(d, &picked, 14)]
}

#[test]
fn memory_operations() {
    let Some(gpu) = gpu() else { return };
    all_close("memory", &memory_case(&Cpu), &memory_case(&gpu), 0.0);
    // Short buffers are errors, not out-of-bounds accesses.
    let mut small = gpu.alloc(4).unwrap();
    assert!(gpu.upload(&[0.0; 5], &mut small).is_err());
    assert!(gpu.fill(&mut small, 1.0, 5).is_err());
    assert!(gpu.gather_rows(&small, 2, &small, 3, &mut gpu.alloc(5).unwrap()).is_err());
    println!("{}", gpu.describe());
}

fn mlp() -> ModelSpec {
    ModelSpec::new(&[28, 28])
        .add(Flatten::new())
        .add(Dense::new(64).activation(Activation::Relu).l2(1e-3))
        .add(Dropout::new(0.25))
        .add(Dense::new(32).activation(Activation::Tanh))
        .add(Dense::new(10).activation(Activation::Softmax))
}

fn cnn() -> ModelSpec {
    ModelSpec::new(&[1, 28, 28])
        .add(Conv2D::new(8, 3).activation(Activation::Relu))
        .add(BatchNorm::default())
        .add(LayerSpec::MaxPooling2D(Pool2D::new(2)))
        .add(Conv2D::new(8, 3).padding(Padding::Same).strides(2).activation(Activation::Relu))
        .add(LayerSpec::AveragePooling2D(Pool2D::new(2)))
        .add(Flatten::new())
        .add(Dropout::new(0.2))
        .add(Dense::new(10).activation(Activation::Softmax))
}

/// What a few training steps leave behind: per-step `(Σ loss, Σ correct)` (the last entry is an
/// evaluation pass), the penalty, then every weight and optimiser slot.
struct Trained {
    stats: Vec<(f32, f32)>,
    tensors: Vec<Vec<f32>>,
}

/// Trains `spec` a few steps on `dev`.
fn train<D: Device>(
    dev: D,
    spec: &ModelSpec,
    rule: &UpdateRule,
    loss: Loss,
    x: &[f32],
    t: &[f32],
    n: usize,
) -> Trained {
    let mut net = Network::new(dev, spec, 11).unwrap();
    let mut stats = Vec::new();
    for step in 0..4u64 {
        net.train_batch(x, t, n, loss, rule, StepParams { lr: 0.01, t: step + 1 }, 100 + step).unwrap();
        let (l, c) = net.take_stats().unwrap();
        stats.push((l as f32, c as f32));
    }
    net.eval_batch(x, t, n, loss).unwrap();
    let (l, c) = net.take_stats().unwrap();
    stats.push((l as f32, c as f32));
    let mut tensors = vec![vec![net.regularization_penalty().unwrap()]];
    tensors.extend(net.weights().unwrap().into_iter().map(|w| w.data));
    tensors.extend(net.optimizer_state().unwrap().into_iter().map(|w| w.data));
    Trained { stats, tensors }
}

#[test]
fn training_matches_the_cpu() {
    if gpu().is_none() {
        return;
    }
    let mut rng = Rng::new(10);
    let n = 32;
    let x = rand(&mut rng, n * 784, 0.0, 1.0);
    let labels: Vec<f32> = (0..n).map(|_| rng.below(10) as f32).collect();
    let mut onehot = vec![0f32; n * 10];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * 10 + l as usize] = 1.0;
    }
    let sparse = Loss::SparseCategoricalCrossentropy { from_logits: false };
    let dense = Loss::CategoricalCrossentropy { from_logits: false };
    let sgd = UpdateRule::Sgd { momentum: 0.9, nesterov: true };
    let adam = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
    let rms = UpdateRule::RmsProp { rho: 0.9, momentum: 0.0, epsilon: 1e-7 };
    for (spec, rule, loss, t) in [
        (mlp(), sgd, sparse, &labels),
        (mlp(), adam, dense, &onehot),
        (cnn(), sgd, sparse, &labels),
        (cnn(), adam, sparse, &labels),
        (cnn(), rms, dense, &onehot),
    ] {
        let what = format!("training {rule:?} {loss:?} {:?}", spec.layers);
        let cpu = train(Cpu, &spec, &rule, loss, &x, t, n);
        let cuda = train(Cuda::new(0).unwrap(), &spec, &rule, loss, &x, t, n);
        for (step, (c, g)) in cpu.stats.iter().zip(&cuda.stats).enumerate() {
            close(&format!("{what}: loss of step {step}"), &[c.0], &[g.0], TOL);
            // An output within rounding of a tie may pick another class on one device.
            assert!((c.1 - g.1).abs() <= 1.0, "{what}: correct count of step {step}: cpu {} vs cuda {}", c.1, g.1);
        }
        all_close(&what, &cpu.tensors, &cuda.tensors, TOL);
    }
}

#[test]
fn a_model_predicts_the_same_on_both_devices() {
    let Some(gpu) = gpu() else { return };
    let mut cpu = Model::new(&cnn(), 5).unwrap();
    let mut cuda = cpu.to_device(gpu).unwrap();
    assert!(cuda.device().starts_with("cuda:"), "{}", cuda.device());
    let mut rng = Rng::new(12);
    let n = 3000; // more than one prediction batch
    let x = rand(&mut rng, n * 784, 0.0, 1.0);
    let (p, q) = (cpu.predict(&x, n).unwrap(), cuda.predict(&x, n).unwrap());
    close("predict", p.as_slice().unwrap(), q.as_slice().unwrap(), TOL);
}
