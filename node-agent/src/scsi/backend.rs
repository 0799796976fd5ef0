//! What a logical unit needs from its backing store. The engine's store implements it over
//! io_uring; unit tests implement it in memory.

use std::io;

use bytes::Bytes;

/// Block I/O on a backing store. Buffers are owned and handed back, so a ring driver can own
/// them while the kernel works on them and the caller can reuse them afterwards.
#[allow(async_fn_in_trait)]
pub trait Backend {
    /// Reads exactly `len` bytes at byte `offset` (an error if the store is shorter). The
    /// store picks the memory (aligned for direct I/O) and hands it on as is: the bytes go
    /// to the initiator without another copy.
    async fn read(&self, offset: u64, len: usize) -> io::Result<Bytes>;
    /// Writes all of `buf` at byte `offset`. With `fua` the data is on stable storage when
    /// this returns.
    async fn write_at(&self, buf: Vec<u8>, offset: u64, fua: bool) -> (io::Result<()>, Vec<u8>);
    /// Makes every write completed so far durable (fdatasync).
    async fn flush(&self) -> io::Result<()>;
    /// Deallocates `len` bytes at `offset` (punch hole); the range reads as zeros afterwards.
    async fn unmap(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Whether the byte at `offset` is mapped (allocated), and for how many bytes from
    /// `offset` that stays the same (clamped to the store's end). For GET LBA STATUS.
    fn mapping(&self, offset: u64) -> io::Result<(bool, u64)>;
    /// The logical unit now serves `len` bytes (its store was grown to hold them).
    fn resized(&self, len: u64) {
        let _ = len;
    }
}
