//! Erasing a block device before it goes to its next tenant (reclaim policy Delete).
//!
//! The guarantee is that every byte reads back as zero afterwards. BLKDISCARD alone does not
//! give it (a device may keep the old data, or return anything, for discarded blocks: the
//! kernel no longer reports "discard zeroes data"), and BLKZEROOUT alone gives it but writes
//! (and, on thin or flash storage, allocates) the whole device. So:
//!
//! 1. BLKDISCARD over the device, in chunks: the storage underneath gets the space back;
//! 2. every chunk is read back; a chunk that is not all zero is zeroed with BLKZEROOUT
//!    (which writes zeroes, by WRITE ZEROES or by plain writes when the device has neither);
//! 3. a device without discard is zeroed with BLKZEROOUT throughout (nothing to verify);
//! 4. the device's cache is flushed (fdatasync).
//!
//! Progress is counted for the caller and logged every few seconds (a large disk takes a while).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `_IO(0x12, 119)`: discard a byte range `[start, len]` (linux/fs.h).
const BLKDISCARD: libc::c_ulong = 0x1277;
/// `_IO(0x12, 127)`: write zeroes to a byte range `[start, len]` (linux/fs.h).
const BLKZEROOUT: libc::c_ulong = 0x127f;

/// Bytes discarded, checked or zeroed per step (one progress update each).
const CHUNK: u64 = 64 << 20;
/// Bytes read at a time while checking a chunk.
const READ_BUF: usize = 1 << 20;
/// How often progress is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A wipe's progress, readable while it runs.
#[derive(Debug, Default)]
pub struct WipeProgress {
    done: AtomicU64,
    total: AtomicU64,
}

impl WipeProgress {
    /// Bytes handled so far and the device's size (0 until it is known).
    pub fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// What a wipe did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WipeReport {
    pub bytes: u64,
    /// The device took the discard.
    pub discarded: bool,
    /// Bytes written with zeroes (all of it without discard; else the chunks that did not read
    /// back as zero).
    pub zeroed: u64,
    pub duration: Duration,
}

/// Why a wipe did not complete: the device may still hold old data.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct WipeError {
    pub what: &'static str,
    pub path: String,
    #[source]
    pub source: io::Error,
}

/// Erases the block device at `path` (see the module doc). It is opened exclusively: a device
/// mounted or held exclusively by anyone else is refused (EBUSY), never erased under them.
pub fn wipe_block_device(path: &Path, progress: &WipeProgress) -> Result<WipeReport, WipeError> {
    let err = |what: &'static str| {
        let path = path.display().to_string();
        move |source| WipeError { what, path, source }
    };
    let started = Instant::now();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(path)
        .map_err(err("opening"))?;
    let md = file.metadata().map_err(err("inspecting"))?;
    if !md.file_type().is_block_device() {
        return Err(err("erasing")(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a block device",
        )));
    }
    // SAFETY: lseek on a descriptor we own.
    let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
    if end < 0 {
        return Err(err("sizing")(io::Error::last_os_error()));
    }
    let total = end as u64;
    progress.total.store(total, Ordering::Relaxed);
    let mut log = Logger::new(path, total);

    let discarded = match range_ioctl(&file, BLKDISCARD, 0, total.min(CHUNK)) {
        Ok(()) => true,
        Err(e) if unsupported(&e) => false,
        Err(e) => return Err(err("discarding")(e)),
    };
    let mut zeroed = 0;
    if discarded {
        let mut at = total.min(CHUNK);
        while at < total {
            let len = (total - at).min(CHUNK);
            range_ioctl(&file, BLKDISCARD, at, len).map_err(err("discarding"))?;
            at += len;
        }
        let mut buf = vec![0u8; READ_BUF];
        let mut at = 0;
        while at < total {
            let len = (total - at).min(CHUNK);
            if !reads_zero(&file, at, len, &mut buf).map_err(err("reading back"))? {
                range_ioctl(&file, BLKZEROOUT, at, len).map_err(err("zeroing"))?;
                zeroed += len;
            }
            at += len;
            progress.done.store(at, Ordering::Relaxed);
            log.tick(at);
        }
    } else {
        let mut at = 0;
        while at < total {
            let len = (total - at).min(CHUNK);
            range_ioctl(&file, BLKZEROOUT, at, len).map_err(err("zeroing"))?;
            at += len;
            zeroed += len;
            progress.done.store(at, Ordering::Relaxed);
            log.tick(at);
        }
    }
    file.sync_data().map_err(err("flushing"))?;
    Ok(WipeReport {
        bytes: total,
        discarded,
        zeroed,
        duration: started.elapsed(),
    })
}

/// The device has no discard (old kernels answer EINVAL or ENOTTY for some drivers).
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EINVAL)
    )
}

fn range_ioctl(file: &File, op: libc::c_ulong, start: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [start, len];
    // SAFETY: BLKDISCARD and BLKZEROOUT read two u64 from the pointer; `range` outlives the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), op as _, range.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads `[at, at + len)` and says whether it is all zero; drops what it read from the page
/// cache (a large device would otherwise push everything else out).
fn reads_zero(file: &File, at: u64, len: u64, buf: &mut [u8]) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut off = at;
    let end = at + len;
    let mut zero = true;
    while off < end && zero {
        let n = ((end - off) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], off)?;
        zero = buf[..n].iter().all(|b| *b == 0);
        off += n as u64;
    }
    // SAFETY: advice on a descriptor we own; it only affects caching.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            at as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
    Ok(zero)
}

/// Logs progress every [`LOG_EVERY`].
struct Logger<'a> {
    path: &'a Path,
    total: u64,
    last: Instant,
}

impl<'a> Logger<'a> {
    fn new(path: &'a Path, total: u64) -> Self {
        tracing::info!(path = %path.display(), bytes = total, "erasing block device");
        Logger {
            path,
            total,
            last: Instant::now(),
        }
    }

    fn tick(&mut self, done: u64) {
        if self.last.elapsed() >= LOG_EVERY {
            self.last = Instant::now();
            tracing::info!(
                path = %self.path.display(), done, total = self.total,
                percent = done * 100 / self.total.max(1), "erasing block device"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_not_erased() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.img");
        std::fs::write(&p, [7u8; 4096]).unwrap();
        let e = wipe_block_device(&p, &WipeProgress::default()).unwrap_err();
        assert!(e.to_string().contains("not a block device"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), vec![7u8; 4096]);
    }
}
