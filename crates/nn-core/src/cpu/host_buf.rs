//! The CPU device's buffer: `f32`s that start on a cache line.
//!
//! The allocator hands a `Vec<f32>` of a layer's size 16 bytes past a page boundary, so every
//! 64-byte vector load of its rows straddled two cache lines: a dense kernel's rows read by
//! the register tiles (`tile.rs`) cost 17% of the tile's speed (a 6×64 tile over 784 steps:
//! 174 GFLOP/s from aligned rows, 145 from rows 4 or 16 bytes off), and 784-128-10 trained
//! 13% slower in f32 (0.140–0.147 against 0.119–0.128 s/epoch).

use std::ops::{Deref, DerefMut};

/// One cache line of floats: the unit a [`HostBuf`] is allocated in, for its alignment.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A zero-initialised `f32` buffer whose first element starts a 64-byte cache line; derefs
/// to `[f32]` of its length.
#[derive(Clone, Debug, Default)]
pub struct HostBuf {
    lines: Vec<Line>,
    len: usize,
}

impl Line {
    const ZERO: Line = Line([0.0; 16]);
}

impl HostBuf {
    /// An empty buffer (allocates nothing), for statics grown on first use.
    pub(crate) const fn new() -> HostBuf {
        HostBuf { lines: Vec::new(), len: 0 }
    }

    /// `len` zeros.
    ///
    /// # Errors
    /// [`crate::NnError::Device`] when the memory cannot be had (naming the size), rather than
    /// aborting.
    pub fn zeros(len: usize) -> crate::Result<HostBuf> {
        let mut b = HostBuf::new();
        b.lines.try_reserve_exact(len.div_ceil(16)).map_err(|_| crate::tensor::out_of_host_memory(len, None))?;
        b.grown(len);
        Ok(b)
    }

    /// Its first `len` floats, grown (with zeros) to them first if shorter: a scratch buffer.
    pub(crate) fn grown(&mut self, len: usize) -> &mut [f32] {
        if self.len < len {
            self.lines.resize(len.div_ceil(16), Line::ZERO);
            self.len = len;
        }
        &mut self[..len]
    }
}

impl From<&[f32]> for HostBuf {
    /// A copy of `x` (aborting, as `Vec` does, if the memory cannot be had).
    fn from(x: &[f32]) -> HostBuf {
        let mut b = HostBuf::new();
        b.grown(x.len()).copy_from_slice(x);
        b
    }
}

impl PartialEq for HostBuf {
    /// Equal lengths and equal floats.
    fn eq(&self, other: &HostBuf) -> bool {
        self[..] == other[..]
    }
}

impl<'a> IntoIterator for &'a HostBuf {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Deref for HostBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `lines` holds at least `len` initialised floats laid out contiguously (a
        // `Line` is 16 floats with no padding), aligned for `f32`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }
}

impl DerefMut for HostBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_on_a_cache_line_and_hold_zeros() {
        for len in [0, 1, 15, 16, 17, 100_352] {
            let mut b = HostBuf::zeros(len).unwrap();
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0.0));
            assert_eq!(b.as_ptr() as usize % 64, 0);
            if len > 0 {
                b[len - 1] = 3.0;
                assert_eq!(b.clone()[len - 1], 3.0);
                assert_eq!(HostBuf::from(&b[..])[..], b[..]);
            }
        }
        assert!(HostBuf::zeros(usize::MAX / 8).is_err());
    }
}
