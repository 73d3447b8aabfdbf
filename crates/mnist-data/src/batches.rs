//! Shuffled mini-batches, gathered from the resident `u8` images and normalised into reused
//! `f32` buffers, optionally prepared one batch ahead on a background thread (tf.data's
//! `prefetch`).
//!
//! In steady state nothing is allocated per batch: six buffers circulate between the
//! producer and the consumer. The producer, once it has run out of empty buffers, sleeps until
//! half of them are back, then fills them in a row: waking a sleeping thread costs a futex call
//! and, in a virtual machine, an inter-processor interrupt, so it is done once per few batches
//! rather than once per batch.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::preprocess::Normalization;
use crate::rng::Rng;

/// How a [`Batcher`] cuts an epoch into batches.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchConfig {
    /// Examples per batch (Keras default 32).
    pub batch_size: usize,
    /// Shuffle the order every epoch (Keras default true for training).
    pub shuffle: bool,
    /// Drop a last batch smaller than `batch_size` (Keras keeps it).
    pub drop_last: bool,
    /// Seed of the shuffles; epoch `e` uses an independent stream derived from it.
    pub seed: u64,
    /// How bytes become `f32`.
    pub normalization: Normalization,
    /// Prepare the next batch on a background thread while the current one is used.
    pub prefetch: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            batch_size: 32,
            shuffle: true,
            drop_last: false,
            seed: 0,
            normalization: Normalization::Scale,
            prefetch: true,
        }
    }
}

/// A change applied to each batch after it is gathered (data augmentation). Runs on the prefetch
/// thread when prefetching, so it costs the training loop nothing while a core is free.
pub trait BatchTransform: Send + Sync {
    /// Transforms `x`, `[n, rows, cols]` normalised pixels, in place.
    fn apply(&self, x: &mut [f32], n: usize, rows: usize, cols: usize, rng: &mut Rng);
}

/// One mini-batch: inputs `[len, rows*cols]`, labels `[len]` and the examples' indices.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Normalised pixels, `[len, rows * cols]` row-major.
    pub x: Vec<f32>,
    /// Labels, `[len]`.
    pub labels: Vec<u8>,
    /// Indices of the examples in the data set, `[len]`.
    pub indices: Vec<u32>,
}

impl Batch {
    fn with_capacity(batch: usize, pixels: usize) -> Batch {
        Batch {
            x: Vec::with_capacity(batch * pixels),
            labels: Vec::with_capacity(batch),
            indices: Vec::with_capacity(batch),
        }
    }
    /// Number of examples in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The order in which epoch `epoch` visits the examples: `0..n`, shuffled when asked, from a
/// stream that depends only on `(seed, epoch)`, so a resumed run sees the same order.
pub fn epoch_order(n: usize, shuffle: bool, seed: u64, epoch: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    if shuffle {
        Rng::derive(seed, epoch as u64).shuffle(&mut order);
    }
    order
}

struct Gather {
    data: Arc<Dataset>,
    norm: Normalization,
    transform: Option<Arc<dyn BatchTransform>>,
}

impl Gather {
    fn fill(&self, b: &mut Batch, idx: &[u32], rng: &mut Rng) {
        let px = self.data.pixels();
        b.indices.clear();
        b.indices.extend_from_slice(idx);
        b.labels.clear();
        b.labels.extend(idx.iter().map(|&i| self.data.label(i as usize)));
        b.x.resize(idx.len() * px, 0.0);
        for (k, &i) in idx.iter().enumerate() {
            self.norm.apply(self.data.image(i as usize), &mut b.x[k * px..(k + 1) * px]);
        }
        if let Some(t) = &self.transform {
            t.apply(&mut b.x, idx.len(), self.data.rows(), self.data.cols(), rng);
        }
    }
}

/// Cuts a data set into batches, epoch after epoch.
pub struct Batcher {
    gather: Arc<Gather>,
    cfg: BatchConfig,
    pool: Vec<Batch>,
}

impl Batcher {
    /// A batcher over `data`.
    ///
    /// # Errors
    /// [`DataError::Config`] when the batch size is 0 or the data set is empty.
    pub fn new(data: Arc<Dataset>, cfg: BatchConfig) -> Result<Batcher> {
        if cfg.batch_size == 0 {
            return Err(DataError::Config("batch size must be at least 1".into()));
        }
        if data.is_empty() {
            return Err(DataError::Config("cannot make batches of an empty data set".into()));
        }
        let gather = Arc::new(Gather { data, norm: cfg.normalization, transform: None });
        Ok(Batcher { gather, cfg, pool: Vec::new() })
    }

    /// Applies `t` (e.g. augmentation) to every batch.
    pub fn with_transform(mut self, t: Arc<dyn BatchTransform>) -> Batcher {
        let g = &self.gather;
        self.gather = Arc::new(Gather { data: g.data.clone(), norm: g.norm, transform: Some(t) });
        self
    }

    /// The configuration.
    pub fn config(&self) -> &BatchConfig {
        &self.cfg
    }

    /// The data set.
    pub fn data(&self) -> &Arc<Dataset> {
        &self.gather.data
    }

    /// Number of batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.gather.data.len();
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    /// Starts epoch `epoch` (0-based); its batches come from [`Epoch::next_batch`].
    pub fn epoch(&mut self, epoch: usize) -> Epoch<'_> {
        let n = self.gather.data.len();
        let bs = self.cfg.batch_size;
        let mut order = epoch_order(n, self.cfg.shuffle, self.cfg.seed, epoch);
        if self.cfg.drop_last {
            order.truncate((n / bs) * bs);
        }
        let px = self.gather.data.pixels();
        while self.pool.len() < BUFFERS {
            // A batch holds at most the whole set, whatever the batch size asked.
            self.pool.push(Batch::with_capacity(bs.min(n), px));
        }
        let rng = Rng::derive(self.cfg.seed, 0x00A0_6000_0000 + epoch as u64);
        let mode = if self.cfg.prefetch {
            let shared = Arc::new(Shared {
                state: Mutex::new(Queue {
                    full: VecDeque::with_capacity(BUFFERS),
                    empty: self.pool.drain(..).collect(),
                    done: false,
                    stop: false,
                    producer_waiting: false,
                    consumer_waiting: false,
                }),
                produced: Condvar::new(),
                recycled: Condvar::new(),
            });
            let gather = self.gather.clone();
            let (theirs, thread_rng) = (shared.clone(), rng.clone());
            let handle = std::thread::Builder::new()
                .name("batch-prefetch".into())
                .spawn(move || produce(&gather, &order, bs, thread_rng, &theirs))
                .ok();
            match handle {
                Some(handle) => Mode::Prefetch { shared, handle: Some(handle) },
                // No thread could be started: fall back to gathering inline.
                None => {
                    self.pool.append(&mut lock(&shared).empty);
                    let mut order = epoch_order(n, self.cfg.shuffle, self.cfg.seed, epoch);
                    if self.cfg.drop_last {
                        order.truncate((n / bs) * bs);
                    }
                    Mode::Inline { order, pos: 0, rng }
                }
            }
        } else {
            Mode::Inline { order, pos: 0, rng }
        };
        Epoch { batcher: self, mode, current: None }
    }
}

/// Buffers circulating between the prefetch thread and the training loop.
const BUFFERS: usize = 6;
/// The sleeping producer is woken when this many empty buffers are back.
const WAKE_AT: usize = BUFFERS / 2;

/// The state shared by the prefetch thread and the epoch that consumes its batches.
struct Shared {
    state: Mutex<Queue>,
    /// Signalled when a batch is ready (or the producer is done) and the consumer waits.
    produced: Condvar,
    /// Signalled when [`WAKE_AT`] empty buffers are back (or the consumer stops) and the
    /// producer waits.
    recycled: Condvar,
}

struct Queue {
    full: VecDeque<Batch>,
    empty: Vec<Batch>,
    /// The producer has sent every batch of the epoch.
    done: bool,
    /// The consumer has gone: the producer stops.
    stop: bool,
    producer_waiting: bool,
    consumer_waiting: bool,
}

/// The queue, even if the other side panicked while holding it (its data stays consistent:
/// every change is a single push or pop).
fn lock(s: &Shared) -> MutexGuard<'_, Queue> {
    s.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks the producer done when it returns or unwinds, so the consumer never waits for a
/// batch that will not come.
struct Done<'a>(&'a Shared);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let mut q = lock(self.0);
        q.done = true;
        if q.consumer_waiting {
            self.0.produced.notify_one();
        }
    }
}

fn produce(gather: &Gather, order: &[u32], bs: usize, mut rng: Rng, shared: &Shared) {
    let _done = Done(shared);
    for idx in order.chunks(bs) {
        let mut b = {
            let mut q = lock(shared);
            loop {
                if q.stop {
                    return;
                }
                if let Some(b) = q.empty.pop() {
                    break b;
                }
                q.producer_waiting = true;
                q = shared.recycled.wait(q).unwrap_or_else(|e| e.into_inner());
                q.producer_waiting = false;
            }
        };
        gather.fill(&mut b, idx, &mut rng);
        let mut q = lock(shared);
        q.full.push_back(b);
        if q.consumer_waiting {
            shared.produced.notify_one();
        }
    }
}

enum Mode {
    Inline { order: Vec<u32>, pos: usize, rng: Rng },
    Prefetch { shared: Arc<Shared>, handle: Option<JoinHandle<()>> },
}

/// The batches of one epoch. A lending iterator: each batch is valid until the next call.
pub struct Epoch<'a> {
    batcher: &'a mut Batcher,
    mode: Mode,
    current: Option<Batch>,
}

impl Epoch<'_> {
    /// The next batch, or `None` at the end of the epoch.
    pub fn next_batch(&mut self) -> Option<&Batch> {
        match &mut self.mode {
            Mode::Inline { order, pos, rng } => {
                if *pos >= order.len() {
                    return None;
                }
                let bs = self.batcher.cfg.batch_size;
                let end = (*pos + bs).min(order.len());
                let mut b = match self.current.take() {
                    Some(b) => b,
                    None => self.batcher.pool.pop().unwrap_or_default(),
                };
                self.batcher.gather.fill(&mut b, &order[*pos..end], rng);
                *pos = end;
                self.current = Some(b);
            }
            Mode::Prefetch { shared, .. } => {
                let mut q = lock(shared);
                if let Some(b) = self.current.take() {
                    q.empty.push(b);
                    if q.producer_waiting && q.empty.len() >= WAKE_AT {
                        shared.recycled.notify_one();
                    }
                }
                self.current = loop {
                    if let Some(b) = q.full.pop_front() {
                        break Some(b);
                    }
                    if q.done {
                        break None;
                    }
                    if q.producer_waiting {
                        // Nothing is ready and the producer sleeps: wake it whatever it waits for.
                        shared.recycled.notify_one();
                    }
                    q.consumer_waiting = true;
                    q = shared.produced.wait(q).unwrap_or_else(|e| e.into_inner());
                    q.consumer_waiting = false;
                };
            }
        }
        self.current.as_ref()
    }
}

impl Drop for Epoch<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.current.take() {
            self.batcher.pool.push(b);
        }
        if let Mode::Prefetch { shared, handle } = &mut self.mode {
            // Stop the producer, wait for it, and take every buffer back.
            {
                let mut q = lock(shared);
                q.stop = true;
                shared.recycled.notify_one();
            }
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
            let mut q = lock(shared);
            let q = &mut *q;
            self.batcher.pool.extend(q.full.drain(..).chain(q.empty.drain(..)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n: usize) -> Arc<Dataset> {
        let images: Vec<u8> = (0..n * 4).map(|i| (i / 4) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        Arc::new(Dataset::new(images, labels, 2, 2, 10).unwrap())
    }

    fn collect(b: &mut Batcher, epoch: usize) -> Vec<Vec<u32>> {
        let mut e = b.epoch(epoch);
        let mut out = vec![];
        while let Some(batch) = e.next_batch() {
            // Pixels follow the indices: image i holds the value i everywhere.
            for (k, &i) in batch.indices.iter().enumerate() {
                assert_eq!(batch.x[k * 4], i as f32 / 255.0);
                assert_eq!(batch.labels[k], (i % 10) as u8);
            }
            out.push(batch.indices.clone());
        }
        out
    }

    #[test]
    fn every_example_once_per_epoch_with_and_without_prefetch() {
        for prefetch in [false, true] {
            for drop_last in [false, true] {
                let cfg = BatchConfig { batch_size: 3, prefetch, drop_last, seed: 5, ..Default::default() };
                let mut b = Batcher::new(tiny(10), cfg).unwrap();
                let e0 = collect(&mut b, 0);
                assert_eq!(e0.len(), b.batches_per_epoch());
                assert_eq!(e0.len(), if drop_last { 3 } else { 4 });
                let mut all: Vec<u32> = e0.concat();
                all.sort_unstable();
                if !drop_last {
                    assert_eq!(all, (0..10).collect::<Vec<_>>());
                    assert_eq!(e0.last().unwrap().len(), 1);
                } else {
                    assert_eq!(all.len(), 9);
                }
                // Same seed and epoch, same order; another epoch, another order.
                assert_eq!(collect(&mut b, 0), e0);
                assert_ne!(collect(&mut b, 1), e0);
            }
        }
    }

    #[test]
    fn prefetch_and_inline_agree_and_early_drop_is_clean() {
        let cfg = BatchConfig { batch_size: 4, seed: 9, ..Default::default() };
        let mut a = Batcher::new(tiny(50), BatchConfig { prefetch: false, ..cfg.clone() }).unwrap();
        let mut b = Batcher::new(tiny(50), cfg).unwrap();
        assert_eq!(collect(&mut a, 2), collect(&mut b, 2));
        {
            let mut e = b.epoch(3);
            e.next_batch();
        } // dropped mid-epoch: the thread stops and the buffers come back
        assert_eq!(b.pool.len(), BUFFERS);
        let cfg = BatchConfig { shuffle: false, batch_size: 4, ..Default::default() };
        let mut c = Batcher::new(tiny(8), cfg).unwrap();
        assert_eq!(collect(&mut c, 0), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    }

    #[test]
    fn a_batch_size_past_the_set_is_one_batch_of_it_all() {
        // Buffers sized by the set, not by the batch size asked (10¹² aborted the allocation).
        for prefetch in [false, true] {
            let cfg = BatchConfig { batch_size: 1 << 40, prefetch, ..Default::default() };
            let mut b = Batcher::new(tiny(10), cfg).unwrap();
            assert_eq!(b.batches_per_epoch(), 1);
            let mut all = collect(&mut b, 0).concat();
            all.sort_unstable();
            assert_eq!(all, (0..10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn many_small_batches_through_the_prefetch_queue() {
        // Hundreds of hand-overs in both directions, with the producer sleeping and waking.
        let cfg = BatchConfig { batch_size: 1, seed: 3, ..Default::default() };
        let mut b = Batcher::new(tiny(250), cfg).unwrap();
        for epoch in 0..3 {
            let mut all = collect(&mut b, epoch).concat();
            all.sort_unstable();
            assert_eq!(all, (0..250).collect::<Vec<_>>());
        }
        assert_eq!(b.pool.len(), BUFFERS);
    }

    struct Boom;
    impl BatchTransform for Boom {
        fn apply(&self, _x: &mut [f32], _n: usize, _r: usize, _c: usize, _rng: &mut Rng) {
            panic!("transform failed");
        }
    }

    #[test]
    fn a_panicking_producer_ends_the_epoch_instead_of_hanging() {
        let cfg = BatchConfig { batch_size: 2, ..Default::default() };
        let mut b = Batcher::new(tiny(8), cfg).unwrap().with_transform(Arc::new(Boom));
        let mut e = b.epoch(0);
        assert!(e.next_batch().is_none());
    }

    #[test]
    fn bad_configs_are_errors() {
        let err = Batcher::new(tiny(3), BatchConfig { batch_size: 0, ..Default::default() }).err().unwrap();
        assert!(err.to_string().contains("batch size"));
    }

    struct AddOne;
    impl BatchTransform for AddOne {
        fn apply(&self, x: &mut [f32], _n: usize, _r: usize, _c: usize, _rng: &mut Rng) {
            x.iter_mut().for_each(|v| *v += 1.0);
        }
    }

    #[test]
    fn transforms_run_on_every_batch() {
        let cfg = BatchConfig { batch_size: 4, ..Default::default() };
        let mut b = Batcher::new(tiny(8), cfg).unwrap().with_transform(Arc::new(AddOne));
        let mut e = b.epoch(0);
        let batch = e.next_batch().unwrap();
        assert!(batch.x.iter().all(|&v| v >= 1.0));
    }
}
