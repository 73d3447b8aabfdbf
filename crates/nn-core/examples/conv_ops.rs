//! Times each CPU primitive at the shapes of Keras's simple convnet (batch 128), to see where a
//! training step goes. `cargo run --release -p nn-core --example conv_ops [F1 F2]` (filters of
//! the two conv layers; default 32 64).
use std::time::Instant;

use nn_core::cpu::{Cpu, HostBuf};
use nn_core::device::{Channels, Device, Gemm, Window};
use nn_core::Activation;

fn time(name: &str, reps: usize, mut f: impl FnMut()) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    println!("{name:<28} {:>8.3} ms", t.elapsed().as_secs_f64() * 1e3 / reps as f64);
}

fn main() -> nn_core::Result<()> {
    nn_core::cpu::flush_denormals_to_zero();
    let d = Cpu;
    let n = 128;
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (f1, f2) = match args[..] {
        [a, b, ..] => (a, b),
        _ => (32, 64),
    };
    for (c, h, f) in [(1usize, 28usize, f1), (f1, 13, f2)] {
        let (oh, ow) = (h - 2, h - 2);
        let win = Window { n, c, h, w: h, kh: 3, kw: 3, sh: 1, sw: 1, ph: 0, pw: 0, oh, ow };
        let ckk = c * 9;
        let ohw = oh * ow;
        let x: HostBuf = (0..n * c * h * h).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<_>>()[..].into();
        let mut cols = d.alloc(ckk * n * ohw)?;
        let wk: HostBuf = vec![0.01; f * ckk][..].into();
        let mut tmp = d.alloc(f * n * ohw)?;
        let mut y = d.alloc(f * n * ohw)?;
        let mut dx = d.alloc(n * c * h * h)?;
        let mut gw = d.alloc(f * ckk)?;
        let bias: HostBuf = vec![0.1f32; f][..].into();
        println!("conv {c}->{f} on {h}x{h}:");
        time("  im2col", 20, || d.im2col(&x, &win, &mut cols).unwrap_or(()));
        time("  gemm fwd W·cols", 20, || {
            d.gemm(&Gemm::new(false, false, f, n * ohw, ckk), &wk, &cols, &mut tmp).unwrap_or(())
        });
        time("  swap nchw", 20, || d.swap_axes01(&tmp, f, n, ohw, &mut y).unwrap_or(()));
        let s = Channels { outer: n, channels: f, inner: ohw };
        time("  bias+relu", 20, || d.bias_act(&mut y, Some(&bias), Activation::Relu, s).unwrap_or(()));
        let yc = y.clone();
        time("  relu backward", 20, || d.act_backward(&yc, &mut y, Activation::Relu, s).unwrap_or(()));
        let mut gb = d.alloc(f)?;
        time("  channel sums", 20, || d.channel_sums(&yc, s, 0.0, &mut gb).unwrap_or(()));
        time("  gemm dW t·colsT", 20, || {
            d.gemm(&Gemm::new(false, true, f, ckk, n * ohw), &tmp, &cols, &mut gw).unwrap_or(())
        });
        time("  gemm dcols WT·t", 20, || {
            d.gemm(&Gemm::new(true, false, ckk, n * ohw, f), &wk, &tmp, &mut cols).unwrap_or(())
        });
        time("  col2im", 20, || d.col2im(&cols, &win, &mut dx).unwrap_or(()));
        let pw = Window { n, c: f, h: oh, w: ow, kh: 2, kw: 2, sh: 2, sw: 2, ph: 0, pw: 0, oh: oh / 2, ow: ow / 2 };
        let mut py = d.alloc(n * f * (oh / 2) * (ow / 2))?;
        let mut arg = d.alloc(n * f * (oh / 2) * (ow / 2))?;
        time("  maxpool", 20, || d.max_pool(&yc, &pw, &mut py, &mut arg).unwrap_or(()));
        let mut pdx = d.alloc(n * f * ohw)?;
        time("  maxpool backward", 20, || d.max_pool_backward(&py, &arg, &pw, &mut pdx).unwrap_or(()));
        if d.fuses_conv_pool(&win, &pw) {
            time("  fused conv+relu+pool", 20, || {
                d.conv_pool(&x, &wk, Some(&bias), Activation::Relu, &win, f, &pw, Default::default(), &mut py, &mut arg)
                    .unwrap_or(())
            });
            let pyc = py.clone();
            let relu = Activation::Relu;
            let mut backward = |dx: Option<&mut HostBuf>| {
                d.conv_pool_backward(
                    &x,
                    &pyc,
                    &pyc,
                    &arg,
                    relu,
                    &win,
                    f,
                    &pw,
                    Default::default(),
                    &wk,
                    &mut gw,
                    Some(&mut gb),
                    dx,
                )
                .unwrap_or(())
            };
            time("  fused backward (no dx)", 20, || backward(None));
            if c > 1 {
                time("  fused backward with dx", 20, || backward(Some(&mut dx)));
            }
        }
        if d.direct_conv(&win, f) {
            time("  direct conv+bias+relu", 20, || {
                d.conv2d(&x, &wk, Some(&bias), Activation::Relu, &win, f, &mut y).unwrap_or(())
            });
            time("  direct backward dW", 20, || {
                d.conv2d_backward(&x, &tmp, &wk, &win, f, Some(&mut gw), None).unwrap_or(())
            });
            time("  direct backward dW+dx", 20, || {
                d.conv2d_backward(&x, &tmp, &wk, &win, f, Some(&mut gw), Some(&mut dx)).unwrap_or(())
            });
        }
    }
    Ok(())
}
