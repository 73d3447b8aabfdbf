//! nn-viz
