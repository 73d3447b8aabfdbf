//! Data augmentation (written next).
