//! Copying a store for a snapshot or a clone: `FICLONE` where the filesystem shares extents
//! (XFS with reflink=1, Btrfs: instant and thin), else a sparse-aware copy (only the data
//! extents, `SEEK_DATA`/`SEEK_HOLE` and `copy_file_range`) with its progress counted and a
//! deadline.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How a copy was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyMethod {
    /// The filesystem shares the extents (`FICLONE`): instant, no space used until written.
    Reflink,
    /// The data extents were copied byte for byte.
    Copy,
}

/// Why a copy was not made.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "the {fs} filesystem has no reflinks, and copying {total} bytes did not finish within \
         {limit_secs} s ({done} copied)"
    )]
    TooSlow {
        fs: String,
        total: u64,
        done: u64,
        limit_secs: u64,
    },
    #[error("the {fs} filesystem has no reflinks, and copies are turned off on this agent")]
    NoReflink { fs: String },
    #[error("copying: {0}")]
    Io(#[from] io::Error),
}

/// Copies are refused where there are no reflinks (only `FICLONE`), or allowed within a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyPolicy {
    ReflinkOnly,
    /// A copy may take this long (the writes of the source are held meanwhile).
    CopyWithin(std::time::Duration),
}

/// Makes `dst` (empty, on the same filesystem) hold `src`'s first `len` bytes.
pub fn copy_store(
    src: &File,
    dst: &File,
    len: u64,
    dir: &Path,
    policy: CopyPolicy,
    progress: &AtomicU64,
) -> Result<CopyMethod, CopyError> {
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if r == 0 {
        dst.set_len(len)?;
        progress.store(len, Ordering::Relaxed);
        return Ok(CopyMethod::Reflink);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY) => {}
        _ => return Err(e.into()),
    }
    let fs = filesystem_name(dir);
    let limit = match policy {
        CopyPolicy::ReflinkOnly => return Err(CopyError::NoReflink { fs }),
        CopyPolicy::CopyWithin(d) => d,
    };
    let deadline = Instant::now() + limit;
    dst.set_len(len)?;
    let mut pos: i64 = 0;
    let end = len as i64;
    while pos < end {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(src.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return Err(e.into());
        }
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src.as_raw_fd(), data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { end } else { hole.min(end) };
        let mut at = data;
        while at < hole {
            if Instant::now() > deadline {
                return Err(CopyError::TooSlow {
                    fs,
                    total: len,
                    done: progress.load(Ordering::Relaxed),
                    limit_secs: limit.as_secs(),
                });
            }
            let chunk = ((hole - at) as usize).min(8 << 20);
            let (mut off_in, mut off_out) = (at, at);
            // SAFETY: both descriptors are open; the offsets are ours.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    chunk,
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error().into());
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the source ended before its length",
                )
                .into());
            }
            at += n as i64;
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
        pos = hole;
    }
    Ok(CopyMethod::Copy)
}

/// The name of the filesystem holding `dir` (for messages), from its magic number.
pub fn filesystem_name(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs buffer of the right size.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    match st.f_type as u64 {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x6969 => "nfs".into(),
        other => format!("unknown (magic {other:#x})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_copy_holds_the_data_and_keeps_the_holes() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("src"))
            .unwrap();
        src.set_len(64 << 20).unwrap();
        src.seek(SeekFrom::Start(1 << 20)).unwrap();
        src.write_all(&[7u8; 4096]).unwrap();
        src.write_all_at(&[9u8; 512], (64 << 20) - 512).unwrap();
        let dst = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("dst"))
            .unwrap();
        let progress = AtomicU64::new(0);
        let policy = CopyPolicy::CopyWithin(std::time::Duration::from_secs(10));
        let m = copy_store(&src, &dst, 64 << 20, dir.path(), policy, &progress).unwrap();
        assert_eq!(dst.metadata().unwrap().len(), 64 << 20);
        let mut b = vec![0u8; 4096];
        dst.read_exact_at(&mut b, 1 << 20).unwrap();
        assert!(b.iter().all(|&x| x == 7));
        dst.read_exact_at(&mut b[..512], (64 << 20) - 512).unwrap();
        assert!(b[..512].iter().all(|&x| x == 9));
        if m == CopyMethod::Copy {
            assert!(
                progress.load(Ordering::Relaxed) < 16 << 20,
                "only the data extents are copied, not 64 MiB"
            );
            use std::os::unix::fs::MetadataExt;
            assert!(
                dst.metadata().unwrap().blocks() * 512 < 16 << 20,
                "the copy is sparse"
            );
        }
    }

    #[test]
    fn reflink_only_names_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let src = File::create(dir.path().join("s")).unwrap();
        src.set_len(4096).unwrap();
        let src = File::open(dir.path().join("s")).unwrap();
        let dst = File::create(dir.path().join("d")).unwrap();
        let p = AtomicU64::new(0);
        let fs = filesystem_name(dir.path());
        match copy_store(&src, &dst, 4096, dir.path(), CopyPolicy::ReflinkOnly, &p) {
            Ok(m) => assert_eq!(m, CopyMethod::Reflink, "{fs} shares extents"),
            Err(e) => assert!(e.to_string().contains(&fs), "{e}"),
        }
    }
}
