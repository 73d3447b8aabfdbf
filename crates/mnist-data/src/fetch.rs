//! Downloading data sets (written next).
