//! nn-cuda
