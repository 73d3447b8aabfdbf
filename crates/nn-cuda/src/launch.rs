//! Launch geometry of the kernels: pure arithmetic, testable without a GPU.
//!
//! Element-wise kernels use grid-stride loops, so their grid is capped at [`MAX_GRID`] blocks;
//! row-wise kernels give each row one warp; per-channel reductions blocks of (channel, slice of
//! its values) whose partial sums a second kernel adds per channel.

use crate::error::CudaError;

/// Threads per block of the element-wise and per-channel kernels.
pub const BLOCK: u32 = 256;
/// Threads per warp.
pub const WARP: u32 = 32;
/// Rows handled at once by a block of the one-warp-per-row kernels.
pub const ROWS_PER_BLOCK: u32 = BLOCK / WARP;
/// Grid cap of the grid-stride kernels (enough blocks to fill any current GPU many times over).
pub const MAX_GRID: u32 = 65_535;
/// Threads along `y` of `channel_sums_cols` (`CS_ROWS` in `elementwise.cu`).
pub const CS_ROWS: u32 = 8;
/// Threads of the single-block reductions (`regularizer_penalty`).
pub const REDUCE_BLOCK: u32 = 1024;

/// A kernel launch's grid and block, in threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Blocks along `(x, y, z)`.
    pub grid: (u32, u32, u32),
    /// Threads per block along `(x, y, z)`.
    pub block: (u32, u32, u32),
}

impl Launch {
    fn linear(grid: u32, block: u32) -> Launch {
        Launch { grid: (grid, 1, 1), block: (block, 1, 1) }
    }
    /// Total threads launched.
    pub fn threads(&self) -> u64 {
        let (g, b) = (self.grid, self.block);
        u64::from(g.0) * u64::from(g.1) * u64::from(g.2) * u64::from(b.0) * u64::from(b.1) * u64::from(b.2)
    }
}

/// Blocks needed for `n` items at `per_block` items per block, at least 1, at most `MAX_GRID`.
pub fn blocks_for(n: usize, per_block: u32) -> u32 {
    let blocks = n.div_ceil(per_block.max(1) as usize).clamp(1, MAX_GRID as usize);
    blocks as u32
}

/// One thread per element over `n` elements (grid-stride beyond `MAX_GRID · BLOCK`).
pub fn elementwise(n: usize) -> Launch {
    Launch::linear(blocks_for(n, BLOCK), BLOCK)
}

/// One warp per row over `rows` rows.
pub fn warp_rows(rows: usize) -> Launch {
    Launch::linear(blocks_for(rows, ROWS_PER_BLOCK), BLOCK)
}

/// Blocks a per-channel reduction over `[outer, channels, inner]` aims for: about two per
/// multiprocessor of an H100 (132), so that a layer's few channels do not leave most of the GPU
/// idle (with a block per channel, fast-cnn's batch norms and bias sums took half its GPU time).
pub const CHANNEL_BLOCKS: usize = 256;

/// The fewest values a block of such a reduction sums.
pub const CHANNEL_PART_MIN: usize = 1024;

/// The first stage of a per-channel reduction (`channel_sums_part`, `bn_stats_part`,
/// `bn_grad_part`) over `per_channel` values a channel: blocks `(channel, part)`, each part an
/// equal slice of the channel's values, about [`CHANNEL_BLOCKS`] blocks in all and at least
/// [`CHANNEL_PART_MIN`] values a block; returns the launch and the number of parts.
///
/// # Errors
/// More channels than a grid can hold (2³¹ − 1).
pub fn channel_parts(channels: usize, per_channel: usize) -> Result<(Launch, u32), CudaError> {
    let grid = u32::try_from(channels.max(1))
        .ok()
        .filter(|&g| g <= i32::MAX as u32)
        .ok_or_else(|| CudaError::Invalid(format!("{channels} channels exceed one CUDA grid")))?;
    let most = per_channel.div_ceil(CHANNEL_PART_MIN).clamp(1, 65_535);
    let parts = CHANNEL_BLOCKS.div_ceil(channels.max(1)).clamp(1, most) as u32;
    Ok((Launch { grid: (grid, parts, 1), block: (BLOCK, 1, 1) }, parts))
}

/// `channel_sums_cols`: blocks of `(32, CS_ROWS)` threads, 32 channels per block.
pub fn channel_columns(channels: usize) -> Launch {
    Launch { grid: (channels.div_ceil(WARP as usize).max(1) as u32, 1, 1), block: (WARP, CS_ROWS, 1) }
}

/// One block of [`REDUCE_BLOCK`] threads.
pub fn single_block() -> Launch {
    Launch::linear(1, REDUCE_BLOCK)
}

/// `n` as the kernels' 32-bit element count.
///
/// # Errors
/// `n` above `u32::MAX` (the kernels index with 32-bit integers).
pub fn index_u32(n: usize, what: &str) -> Result<u32, CudaError> {
    u32::try_from(n)
        .map_err(|_| CudaError::Invalid(format!("{what}: {n} elements exceed the 32-bit indexing of the CUDA kernels")))
}

/// `n` as a 32-bit signed integer (window geometry, cuBLAS dimensions).
///
/// # Errors
/// `n` above `i32::MAX`.
pub fn index_i32(n: usize, what: &str) -> Result<i32, CudaError> {
    i32::try_from(n).map_err(|_| CudaError::Invalid(format!("{what}: {n} does not fit in a 32-bit integer")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn elementwise_covers_every_element_once_per_stride() {
        for n in [0usize, 1, 255, 256, 257, 1000, 60_000 * 784] {
            let l = elementwise(n);
            assert_eq!(l.block, (BLOCK, 1, 1));
            assert!(l.grid.0 >= 1 && l.grid.0 <= MAX_GRID);
            // Either one thread per element (no loop) or a full cap (grid-stride).
            if n <= (MAX_GRID * BLOCK) as usize {
                assert!(l.threads() >= n as u64, "n = {n}");
                assert!(l.threads() < n as u64 + BLOCK as u64 || n == 0, "n = {n}: too many blocks");
            } else {
                assert_eq!(l.grid.0, MAX_GRID);
            }
        }
        assert_eq!(elementwise(256).grid.0, 1);
        assert_eq!(elementwise(257).grid.0, 2);
        assert_eq!(elementwise(0).grid.0, 1);
        assert_eq!(elementwise(usize::MAX / 2).grid.0, MAX_GRID);
    }

    #[test]
    fn warp_rows_gives_each_row_a_warp() {
        assert_eq!(ROWS_PER_BLOCK, 8);
        for (rows, blocks) in [(0, 1), (1, 1), (8, 1), (9, 2), (128, 16), (60_000, 7500)] {
            let l = warp_rows(rows);
            assert_eq!(l.grid.0, blocks, "rows = {rows}");
            assert_eq!(l.block.0 % WARP, 0);
            assert!(u64::from(l.grid.0) * u64::from(ROWS_PER_BLOCK) >= rows as u64);
        }
        assert_eq!(warp_rows(10_000_000).grid.0, MAX_GRID);
    }

    #[test]
    fn per_channel_and_columns() {
        // fast-cnn's first batch norm at batch 128: 16 channels of 128 × 13 × 13 values.
        assert_eq!(channel_parts(16, 21_632).unwrap(), (Launch { grid: (16, 16, 1), block: (BLOCK, 1, 1) }, 16));
        // At least CHANNEL_PART_MIN values a part, and one part at least.
        assert_eq!(channel_parts(16, 5000).unwrap().1, 5);
        assert_eq!(channel_parts(16, 5).unwrap().1, 1);
        assert_eq!(channel_parts(1000, 1 << 20).unwrap().1, 1);
        assert_eq!(channel_parts(0, 0).unwrap().0.grid, (1, 1, 1));
        assert!(channel_parts(1 << 31, 1).is_err());
        assert_eq!(channel_columns(10).grid.0, 1);
        assert_eq!(channel_columns(32).grid.0, 1);
        assert_eq!(channel_columns(33).grid.0, 2);
        assert_eq!(channel_columns(128).block, (32, CS_ROWS, 1));
        assert_eq!(single_block().grid, (1, 1, 1));
        assert!(single_block().block.0 <= 1024, "CUDA caps a block at 1024 threads");
    }

    #[test]
    fn index_conversions() {
        assert_eq!(index_u32(7, "x").unwrap(), 7);
        assert_eq!(index_u32(u32::MAX as usize, "x").unwrap(), u32::MAX);
        let e = index_u32(u32::MAX as usize + 1, "im2col").unwrap_err().to_string();
        assert!(e.contains("im2col") && e.contains("32-bit"), "{e}");
        assert!(index_i32(i32::MAX as usize + 1, "m").is_err());
        assert_eq!(index_i32(5, "m").unwrap(), 5);
    }
}
