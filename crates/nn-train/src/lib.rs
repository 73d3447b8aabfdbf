//! nn-train
