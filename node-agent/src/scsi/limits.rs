//! Block limits of a logical unit: what the block limits VPD page (B0h) advertises and what
//! the block commands enforce, from one place.

use super::LuConfig;

/// Largest READ/WRITE/VERIFY transfer, in bytes (bounds the buffer one command allocates).
const MAX_TRANSFER_BYTES: u32 = 8 << 20;
/// Preferred transfer size, in bytes.
const OPTIMAL_TRANSFER_BYTES: u32 = 1 << 20;
/// Largest WRITE SAME range, in bytes (written in bounded chunks).
const MAX_WRITE_SAME_BYTES: u64 = 1 << 30;
/// Largest WRITE SAME range, in blocks (a 2-byte count, whatever the block size).
const MAX_WRITE_SAME_BLOCKS: u64 = 0xFFFF;
/// Largest number of UNMAP block descriptors in one parameter list.
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// Largest COMPARE AND WRITE, in blocks (the CDB field is one byte).
pub const MAX_COMPARE_AND_WRITE_BLOCKS: u8 = 255;
/// Size of the pattern buffer WRITE SAME writes per backend call, in bytes.
pub const WRITE_SAME_CHUNK_BYTES: u64 = 1 << 20;

/// Logical blocks per physical block (2^LBPPB exponent; the exponent is at most 15).
pub fn physical_block_blocks(cfg: &LuConfig) -> u16 {
    1u16 << cfg.physical_block_exp.min(15)
}

/// Maximum transfer length in logical blocks.
pub fn max_transfer_blocks(cfg: &LuConfig) -> u32 {
    (MAX_TRANSFER_BYTES / cfg.block_size.max(1)).max(1)
}

/// Optimal transfer length in logical blocks.
pub fn optimal_transfer_blocks(cfg: &LuConfig) -> u32 {
    (OPTIMAL_TRANSFER_BYTES / cfg.block_size.max(1)).max(1)
}

/// Maximum WRITE SAME length in logical blocks.
pub fn max_write_same_blocks(cfg: &LuConfig) -> u64 {
    (MAX_WRITE_SAME_BYTES / u64::from(cfg.block_size.max(1))).clamp(1, MAX_WRITE_SAME_BLOCKS)
}

/// Maximum UNMAP LBA COUNT (per descriptor), in logical blocks: 0 when not thin, else
/// FFFFFFFFh ("no limit": deallocation is a hole punch whatever its size).
pub fn max_unmap_blocks(cfg: &LuConfig) -> u32 {
    if cfg.thin { u32::MAX } else { 0 }
}
