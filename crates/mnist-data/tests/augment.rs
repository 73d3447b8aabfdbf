//! Augmentation through the batcher: seeded, identical with and without prefetch.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use mnist_data::augment::AffineParams;
use mnist_data::{Augmentation, BatchConfig, Batcher, Dataset, Normalization};

fn data(n: usize) -> Arc<Dataset> {
    // Each image: a bright square whose position depends on the index.
    let mut images = vec![0u8; n * 784];
    for i in 0..n {
        let (r0, c0) = (6 + i % 7, 6 + (i / 7) % 7);
        for r in r0..r0 + 10 {
            for c in c0..c0 + 8 {
                images[i * 784 + r * 28 + c] = 200 + (i % 50) as u8;
            }
        }
    }
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    Arc::new(Dataset::new(images, labels, 28, 28, 10).unwrap())
}

fn epoch_x(b: &mut Batcher, epoch: usize) -> Vec<Vec<f32>> {
    let mut e = b.epoch(epoch);
    let mut out = vec![];
    while let Some(batch) = e.next_batch() {
        out.push(batch.x.clone());
    }
    out
}

#[test]
fn augmented_batches_are_seeded_and_prefetch_agrees() {
    let aug = Arc::new(Augmentation::new().rotation(10.0).shift(0.1, 0.1).zoom(0.1));
    let cfg = BatchConfig { batch_size: 16, seed: 3, ..Default::default() };
    let mut pre = Batcher::new(data(50), cfg.clone()).unwrap().with_transform(aug.clone());
    let mut inline =
        Batcher::new(data(50), BatchConfig { prefetch: false, ..cfg.clone() }).unwrap().with_transform(aug.clone());
    let mut plain = Batcher::new(data(50), cfg).unwrap();
    let a = epoch_x(&mut pre, 0);
    assert_eq!(a, epoch_x(&mut inline, 0));
    assert_eq!(a, epoch_x(&mut pre, 0));
    assert_ne!(a, epoch_x(&mut pre, 1));
    assert_ne!(a, epoch_x(&mut plain, 0));
}

#[test]
fn identity_augmentation_is_a_no_op_in_the_batcher() {
    let cfg = BatchConfig { batch_size: 8, seed: 1, ..Default::default() };
    let mut with = Batcher::new(data(20), cfg.clone()).unwrap().with_transform(Arc::new(Augmentation::default()));
    let mut without = Batcher::new(data(20), cfg).unwrap();
    assert_eq!(epoch_x(&mut with, 0), epoch_x(&mut without, 0));
}

#[test]
fn standardised_batches_fill_with_standardised_black() {
    let norm = Normalization::MNIST_STANDARD;
    let black = norm.table()[0];
    // Shift 0.5 of the width: every image moves by at least a few pixels somewhere, and a
    // border strip always comes from outside the frame.
    let aug = Augmentation::new().shift(0.5, 0.0).fill_for(norm);
    let cfg = BatchConfig { batch_size: 10, normalization: norm, ..Default::default() };
    let mut b = Batcher::new(data(10), cfg).unwrap().with_transform(Arc::new(aug));
    let mut e = b.epoch(0);
    let batch = e.next_batch().unwrap();
    for img in batch.x.chunks(784) {
        // Background stays black in the normalised scale: nothing below it, most pixels at it.
        assert!(img.iter().all(|&v| v >= black - 1e-5));
        assert!(img.iter().filter(|&&v| (v - black).abs() < 1e-5).count() > 500);
    }
    // transform_one agrees with the documented semantics on a whole-pixel shift.
    let mut src = vec![black; 784];
    src[14 * 28 + 14] = 2.0;
    let mut dst = vec![0.0; 784];
    let p = AffineParams { shift_x: -4.0, shift_y: 2.0, ..AffineParams::IDENTITY };
    aug.transform_one(&src, &mut dst, 28, 28, &p);
    assert_eq!(dst[16 * 28 + 10], 2.0);
    assert_eq!(dst.iter().filter(|&&v| v == black).count(), 783);
}
