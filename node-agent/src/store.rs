//! Backing stores: a file under the agent's data dir, or an allowlisted block device, with
//! reads, writes, fdatasync and punch-hole going through the ring.

pub mod copy;
pub mod durable;
mod failure;
pub mod fdlimit;
mod open;
mod path;
pub mod wipe;

pub use failure::StickyFailure;
pub use open::{OpenMode, OpenedStore, StoreSource, StoreSpec, open_store, open_store_with};
pub use path::resolve_in_data_dir;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::metrics::stages;
use crate::ring;
use crate::scsi::Backend;

/// Errors opening or creating a backing store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("path {path:?} escapes the data dir {data_dir:?}")]
    Escapes { path: String, data_dir: String },
    #[error("path {0:?} must be relative to the data dir")]
    Absolute(String),
    #[error("block device {0:?} is not on the agent's allowlist (--allow-block)")]
    NotAllowed(String),
    #[error("{what} {path:?}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("opening {path:?}: {advice}")]
    OutOfFiles {
        path: String,
        advice: String,
        #[source]
        source: io::Error,
    },
    /// The store must exist (the Device was served before) and does not: nothing was created.
    #[error(
        "{path:?} does not exist, but this Device was served before: its backing store is gone"
    )]
    Missing { path: String },
    /// The block device is held exclusively by someone else (mounted, or opened with O_EXCL).
    #[error("block device {path:?} is in use (mounted, or held exclusively by another program)")]
    Busy { path: String },
    #[error("{path:?} holds {actual} bytes, fewer than one {block_size}-byte block")]
    TooSmall {
        path: String,
        actual: u64,
        block_size: u32,
    },
}

/// A backing store on the ring. Implements [`Backend`] for the SCSI layer. After a failed
/// write or flush it refuses every later write, unmap and flush ([`StickyFailure`]).
pub struct FileStore {
    file: ring::File,
    /// Usable bytes; grows when the Device does ([`Backend::resized`]).
    len: AtomicU64,
    direct: bool,
    failure: StickyFailure,
}

impl FileStore {
    /// Wraps an open file of `len` usable bytes (owned, or shared with the node that opened
    /// it); `direct` says it was opened with O_DIRECT.
    pub fn new(file: impl Into<Arc<std::fs::File>>, len: u64, direct: bool) -> Self {
        FileStore {
            file: ring::File::from_std(file),
            len: AtomicU64::new(len),
            direct,
            failure: StickyFailure::default(),
        }
    }

    /// Names the Device this store backs (in the log line and metric of a failure).
    pub fn for_device(mut self, device: &str) -> Self {
        self.failure = StickyFailure::new(device);
        self
    }

    /// Why the store failed, if it did: it then refuses writes and flushes until restarted.
    pub fn failure(&self) -> Option<String> {
        self.failure.cause()
    }

    /// Usable size in bytes.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the store has no usable bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Backend for FileStore {
    async fn read(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        // Page-aligned either way, so O_DIRECT needs no bounce buffer; the bytes go on to the
        // initiator from the very buffer the kernel filled.
        stages::io_submitted();
        let read = self.file.read_exact_at_aligned(len, offset).await;
        stages::io_completed();
        read
    }

    async fn write_at(&self, buf: Vec<u8>, offset: u64, fua: bool) -> (io::Result<()>, Vec<u8>) {
        if let Err(e) = self.failure.check() {
            return (Err(e), buf);
        }
        stages::io_submitted();
        let (res, buf) = if self.direct {
            // One copy into pooled page-aligned memory; the caller's buffer comes back as is.
            let aligned = ring::AlignedBuf::copy_of(&buf);
            (self.file.write_all_at_aligned(aligned, offset).await, buf)
        } else {
            self.file.write_all_at(buf, offset).await
        };
        let res = self.failure.record("write", res);
        if res.is_ok() && fua {
            let synced = self.file.sync_data().await;
            stages::io_completed();
            return (self.failure.record("flush (FUA write)", synced), buf);
        }
        stages::io_completed();
        (res, buf)
    }

    async fn flush(&self) -> io::Result<()> {
        self.failure.check()?;
        stages::io_submitted();
        let synced = self.file.sync_data().await;
        stages::io_completed();
        self.failure.record("flush", synced)
    }

    async fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        self.failure.check()?;
        self.file
            .fallocate(
                offset,
                len,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            )
            .await
    }

    fn resized(&self, len: u64) {
        self.len.fetch_max(len, Ordering::Relaxed);
    }

    fn mapping(&self, offset: u64) -> io::Result<(bool, u64)> {
        let end = self.len();
        if offset >= end {
            return Ok((true, 0));
        }
        let fd = self.file.raw_fd();
        let seek = |whence| {
            // SAFETY: lseek on a descriptor we own; it only moves the (unused) file offset.
            let r = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(r as u64)
            }
        };
        // ENXIO from SEEK_DATA means "no data from here to the end": all a hole.
        let next_data = match seek(libc::SEEK_DATA) {
            Ok(d) => d.min(end),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => end,
            // Stores without hole support (some block devices): everything is mapped.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                return Ok((true, end - offset));
            }
            Err(e) => return Err(e),
        };
        if next_data > offset {
            return Ok((false, next_data - offset));
        }
        let next_hole = seek(libc::SEEK_HOLE)?.min(end);
        Ok((true, next_hole.saturating_sub(offset).max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoreSource, StoreSpec, open_store};

    /// O_DIRECT needs a real filesystem (tmpfs refuses it): use the crate's own folder.
    fn direct_store(dir: &std::path::Path) -> Option<FileStore> {
        let spec = StoreSpec {
            source: StoreSource::File {
                path: "direct.img".into(),
                size_bytes: 1 << 20,
            },
            block_size: 512,
            read_only: false,
            direct: true,
        };
        match open_store(&spec, dir, &[]) {
            Ok(s) => Some(FileStore::new(s.file, s.len, true)),
            Err(StoreError::Io { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn direct_io_round_trips_unaligned_buffers_of_every_block_count() {
        // On the checkout's disk (tmpfs has no O_DIRECT); `cargo test` names it at run time.
        let here = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
        let dir = tempfile::tempdir_in(here).unwrap();
        let Some(store) = direct_store(dir.path()) else {
            eprintln!("O_DIRECT not supported here; skipped");
            return;
        };
        crate::ring::Runtime::new().unwrap().block_on(async {
            for blocks in [1usize, 7, 8, 64] {
                let len = blocks * 4096;
                let pattern: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ blocks as u8).collect();
                // A Vec with odd capacity and content, as the engine would hand over.
                let mut buf = Vec::with_capacity(len + 3);
                buf.extend_from_slice(&pattern);
                let (r, _back) = store.write_at(buf, 4096 * blocks as u64, false).await;
                r.unwrap();
                let got = store.read(4096 * blocks as u64, len).await.unwrap();
                assert_eq!(got.len(), len);
                assert_eq!(got.as_ptr().align_offset(ring::ALIGN), 0, "read in place");
                assert!(got == pattern, "{blocks} blocks read back differently");
            }
            store.flush().await.unwrap();
        });
    }
}
