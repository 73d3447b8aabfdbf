//! Per-thread scratch lists that grow to the largest length any thread has needed.
//!
//! The team's threads claim the parts of a loop dynamically, so which thread first runs the
//! part that needs the longest list varies from step to step (a helper busy with the next
//! batch's gathering may not run a layer's product for several steps). A thread growing only
//! to what its own part needs could allocate many steps into training. So every list grows to
//! the high-water mark of its kind whenever it grows, and each thread tops its lists up to the
//! marks when it joins a team loop after a mark has risen ([`topped_up`]); the team has every
//! thread join one after each rise. So the steps after the first few allocate nothing.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The largest length any thread has asked of one kind of per-thread list.
pub(crate) struct HighWater(AtomicUsize);

/// How many times a mark has risen.
static RISES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// [`RISES`] when this thread last topped its lists up.
    static SEEN: Cell<usize> = const { Cell::new(0) };
}

impl HighWater {
    /// A mark at zero.
    pub(crate) const fn new() -> HighWater {
        HighWater(AtomicUsize::new(0))
    }

    /// Makes `v` at least `len` long (new items set to `fill`), with capacity for the longest
    /// list any thread has asked for so far (`len` 0 only makes that room).
    pub(crate) fn grow<T: Clone>(&self, v: &mut Vec<T>, len: usize, fill: T) {
        let before = self.0.fetch_max(len, Relaxed);
        if len > before {
            RISES.fetch_add(1, Relaxed);
        }
        let most = before.max(len);
        if v.capacity() < most {
            v.reserve_exact(most - v.len());
        }
        if v.len() < len {
            v.resize(len, fill);
        }
    }
}

/// How many times a mark has risen so far.
pub(crate) fn rises() -> usize {
    RISES.load(Relaxed)
}

/// Runs `top_up` (which grows this thread's lists to their marks) if a mark has risen since
/// this thread last did; the team calls it as a thread joins a loop, and has every thread join
/// one after a rise (`team.rs`).
pub(crate) fn topped_up(top_up: impl FnOnce()) {
    let rises = RISES.load(Relaxed);
    if SEEN.with(|s| s.replace(rises)) != rises {
        top_up();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_grows_to_the_longest_asked_for_by_any_thread() {
        static MARK: HighWater = HighWater::new();
        let mut other = Vec::<u32>::new();
        MARK.grow(&mut other, 100, 7);
        assert_eq!(other.len(), 100);
        assert!(other.iter().all(|&x| x == 7));
        // Another thread asking for less still gets room for 100: no allocation when it later
        // needs them.
        let mut mine = std::thread::spawn(|| {
            let mut v = Vec::<u32>::new();
            MARK.grow(&mut v, 10, 0);
            v
        })
        .join()
        .unwrap();
        assert_eq!(mine.len(), 10);
        assert!(mine.capacity() >= 100);
        let before = mine.as_ptr();
        MARK.grow(&mut mine, 100, 0);
        assert_eq!((mine.len(), mine.as_ptr()), (100, before));
        // A thread whose mark has risen since it last topped up does so as it joins a loop.
        topped_up(|| ());
        MARK.grow(&mut mine, 200, 0);
        let mut ran = false;
        topped_up(|| ran = true);
        assert!(ran);
    }
}
