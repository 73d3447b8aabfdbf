//! How the CPU device splits a weight tensor between its threads: by rows (a dense kernel
//! `[in, units]`'s input features), one share per thread, the same way for every product
//! that reads or writes the kernel (its forward product, the weight gradient, the input
//! gradient) and for its update, each share on the same thread every time
//! ([`super::team::for_each_pinned`]). A share then stays in the cache of the core that uses
//! it, instead of crossing between cores two or three times a step: on two cores a 784×100
//! kernel updated by one core and read by the other cost its product 70% more time and its
//! Adam update twice as much.
//!
//! Shares are whole blocks of 16 rows, so that with rows of 16·j floats no cache line is
//! written by two threads. (Shares of columns were tried first: with 100 units every row
//! boundary between shares fell inside a cache line both cores wrote, and the update ran 4×
//! slower.)

use std::ops::Range;

use super::team;

/// Rows per block of a share.
const BLOCK: usize = 16;

/// Whether a tensor of `rows` rows is split into shares: at least a block per thread.
pub(crate) fn splits(rows: usize) -> bool {
    let t = team::threads();
    t > 1 && rows >= t * BLOCK
}

/// The rows of share `p` (of [`team::threads`]) of a tensor of `rows` rows: whole blocks of
/// 16 spread evenly, the last share ending with the partial block (784 rows on two threads:
/// `0..384` and `384..784`).
pub(crate) fn share(rows: usize, p: usize) -> Range<usize> {
    let (t, blocks) = (team::threads(), rows.div_ceil(BLOCK));
    let at = |p: usize| (p * blocks / t * BLOCK).min(rows);
    at(p)..at(p + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_rows_in_whole_blocks() {
        for rows in [16, 32, 100, 128, 144, 512, 784, 1000] {
            let mut next = 0;
            for p in 0..team::threads() {
                let s = share(rows, p);
                assert_eq!(s.start, next);
                assert!(s.start.is_multiple_of(BLOCK));
                next = s.end;
            }
            assert_eq!(next, rows);
        }
    }
}
