//! Overflow-safe checks of the sizes a caller hands the CPU device's convolutions, made before
//! any of their kernels runs.
//!
//! The kernels check their own ranges as they go, but with the sizes multiplied out in plain
//! `usize` arithmetic: sizes whose products wrap past 2⁶⁴ (release builds do not trap it)
//! passed those checks and had the unsafe stores write far outside the buffers. The
//! [`crate::device::Device`] methods are public, so these checks stand between any caller and
//! those kernels: once every product of a window's sizes is known to fit, and every buffer to
//! hold what its sizes say, no later product can wrap.

use crate::device::Window;

/// The product of `dims`; panics naming `what` where it overflows `usize`.
pub(crate) fn product(what: &str, dims: &[usize]) -> usize {
    dims.iter()
        .try_fold(1usize, |p, &d| p.checked_mul(d))
        .unwrap_or_else(|| panic!("{what}: the sizes {dims:?} overflow when multiplied"))
}

/// Panics unless a buffer of `len` values holds the product of `dims` (naming `what` and both
/// numbers), or where that product overflows.
pub(crate) fn need(what: &str, len: usize, dims: &[usize]) {
    let size = product(what, dims);
    assert!(len >= size, "{what}: {len} values where {dims:?} need {size}");
}

/// Panics unless `win`'s kernel and strides are at least 1 and its sizes multiply out without
/// overflow: the input `[n, c, h, w]` (padded too), the kernel `[c, kh, kw]` and the output
/// `[n, c, oh, ow]` (for a convolution the output's channels are its filters: see
/// [`conv`]).
pub(crate) fn window(what: &str, win: &Window) {
    assert!(
        win.kh >= 1 && win.kw >= 1 && win.sh >= 1 && win.sw >= 1,
        "{what}: a {}×{} window with strides {}×{}",
        win.kh,
        win.kw,
        win.sh,
        win.sw
    );
    let padded = |size: usize, pad: usize| {
        pad.checked_mul(2)
            .and_then(|p| size.checked_add(p))
            .unwrap_or_else(|| panic!("{what}: padding {pad} around {size} overflows"))
    };
    product(what, &[win.n, win.c, padded(win.h, win.ph), padded(win.w, win.pw)]);
    product(what, &[win.c, win.kh, win.kw]);
    product(what, &[win.n, win.c, win.oh, win.ow]);
}

/// [`window`] for a convolution of `filters` filters, with its kernel `[filters, c, kh, kw]`
/// and its output `[n, filters, oh, ow]` checked too.
pub(crate) fn conv(what: &str, win: &Window, filters: usize) {
    window(what, win);
    product(what, &[filters, win.c, win.kh, win.kw]);
    product(what, &[win.n, filters, win.oh, win.ow]);
}

/// [`conv`] and [`window`] for a convolution followed by pooling over its output: the pooling
/// window must read the convolution's output (`[n, filters, oh, ow]`).
pub(crate) fn conv_pool(what: &str, conv_win: &Window, filters: usize, pool: &Window) {
    conv(what, conv_win, filters);
    window(what, pool);
    assert!(
        (pool.n, pool.c, pool.h, pool.w) == (conv_win.n, filters, conv_win.oh, conv_win.ow),
        "{what}: pooling over [{}, {}, {}, {}] after a convolution to [{}, {filters}, {}, {}]",
        pool.n,
        pool.c,
        pool.h,
        pool.w,
        conv_win.n,
        conv_win.oh,
        conv_win.ow
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::catch_unwind;

    fn win(n: usize, c: usize, hw: usize, k: usize, o: usize) -> Window {
        Window { n, c, h: hw, w: hw, kh: k, kw: k, sh: 1, sw: 1, ph: 0, pw: 0, oh: o, ow: o }
    }

    #[test]
    fn products_that_fit_pass_and_those_that_wrap_panic() {
        assert_eq!(product("x", &[2, 3, 4]), 24);
        assert_eq!(product("x", &[]), 1);
        let wraps = (1u128 << 64).div_ceil(3) as usize;
        assert!(catch_unwind(|| product("x", &[3, wraps])).is_err());
        need("x", 24, &[2, 3, 4]);
        assert!(catch_unwind(|| need("x", 23, &[2, 3, 4])).is_err());
        assert!(catch_unwind(|| need("x", 2, &[3, wraps])).is_err());
    }

    #[test]
    fn windows_are_checked_whole() {
        conv("conv", &win(8, 1, 28, 3, 26), 32);
        conv_pool(
            "pair",
            &win(8, 1, 28, 3, 26),
            32,
            &Window { c: 32, sh: 2, sw: 2, kh: 2, kw: 2, ..win(8, 32, 26, 2, 13) },
        );
        let wraps = (1u128 << 64).div_ceil(31) as usize;
        assert!(catch_unwind(|| conv("conv", &win(wraps, 1, 1, 1, 1), 62)).is_err());
        assert!(catch_unwind(|| conv("conv", &win(1, 1, 28, 3, 26), usize::MAX / 2)).is_err());
        assert!(catch_unwind(|| window("w", &Window { sh: 0, ..win(1, 1, 28, 3, 26) })).is_err());
        assert!(catch_unwind(|| window("w", &Window { ph: usize::MAX / 2 + 1, ..win(1, 1, 28, 3, 26) })).is_err());
        // A pooling window that does not read the convolution's output.
        let pool = Window { sh: 2, sw: 2, kh: 2, kw: 2, ..win(8, 16, 26, 2, 13) };
        assert!(catch_unwind(|| conv_pool("pair", &win(8, 1, 28, 3, 26), 32, &pool)).is_err());
    }
}
