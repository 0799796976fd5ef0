//! Growing a Device: which source changes an apply may make (a file's size may grow; nothing
//! else about the store may change), and growing the backing file on disk. Serving the new
//! capacity is the engine's (`TargetCmd::Grow`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::error::{NodeError, invalid};
use super::records::DeviceRecord;
use crate::store::StoreSource;

const SIZE_FIELD: &str = "spec.source.file.sizeBytes";

/// What an apply asks of a Device's store, compared with what it was told before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SourceChange {
    /// The same store (a block device is sized again all the same).
    Same,
    /// The same file, larger: grow it to this many bytes.
    Grow(u64),
}

/// Checks a new source against the old one: the kind and the path are immutable, a file's
/// size may only grow.
pub(super) fn source_change(
    old: &StoreSource,
    new: &StoreSource,
) -> Result<SourceChange, NodeError> {
    match (old, new) {
        (
            StoreSource::File {
                path: p0,
                size_bytes: s0,
            },
            StoreSource::File {
                path: p1,
                size_bytes: s1,
            },
        ) if p0 == p1 => match s1.cmp(s0) {
            std::cmp::Ordering::Less => Err(invalid(
                SIZE_FIELD,
                format!("may only grow: {s1} is below the current {s0} (a Device is never shrunk)"),
            )),
            std::cmp::Ordering::Equal => Ok(SourceChange::Same),
            std::cmp::Ordering::Greater => Ok(SourceChange::Grow(*s1)),
        },
        (StoreSource::Block { path: p0 }, StoreSource::Block { path: p1 }) if p0 == p1 => {
            Ok(SourceChange::Same)
        }
        _ => Err(invalid(
            "spec.source",
            "is immutable except file.sizeBytes, which may grow; create a new Device for another \
             backing store",
        )),
    }
}

/// Applies `change` to the opened store of Device `rec` and sizes it again: the usable bytes
/// (whole blocks) when they are more than it serves now. A block device grown underneath (a
/// grown LV) is found here too.
pub(super) fn store_len(
    o: &super::Opened,
    rec: &DeviceRecord,
    change: SourceChange,
) -> Result<Option<u64>, NodeError> {
    if let SourceChange::Grow(size) = change {
        grow_file(&o.file, rec.store.read_only, size, rec.thin, &o.path)?;
    }
    let size = size_of(&o.file).map_err(|e| {
        NodeError::Internal(format!("spec.source: sizing {}: {e}", o.path.display()))
    })?;
    let bs = u64::from(rec.store.block_size.max(1));
    let usable = size / bs * bs;
    Ok((usable > o.len).then_some(usable))
}

impl super::Inner {
    /// Device `dk`'s store now holds `len` bytes: Target `t`'s LUN on it serves them live.
    /// A Target whose engine is being restarted picks the size up when it starts.
    pub(super) async fn grow_lun(&self, t: &str, dk: &str, len: u64) {
        let Some(h) = self.engine.as_ref().and_then(|e| e.target(t)) else {
            return;
        };
        let device = dk.to_owned();
        match h
            .request(|reply| crate::engine::TargetCmd::Grow { device, len, reply })
            .await
        {
            Ok(luns) => tracing::info!(target = %t, device = %dk, ?luns, bytes = len,
                "LUN capacity grown; initiators get CAPACITY DATA HAS CHANGED"),
            Err(e) => tracing::warn!(target = %t, device = %dk, "growing the LUN: {e}"),
        }
    }
}

/// Size in bytes of an open file or block device (the end of the file; for a block device the
/// same as BLKGETSIZE64, so a grown LV shows up).
pub(super) fn size_of(file: &File) -> io::Result<u64> {
    // SAFETY: lseek on a descriptor we own.
    let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
    if end < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(end as u64)
}

/// Whether an error of growing a file means "no room here" rather than a broken store.
fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
    )
}

/// Grows the file behind `file` to `size` bytes if it is smaller (never shrinks it): thin with
/// ftruncate (a hole), thick with fallocate (the blocks reserved, so a full filesystem says so
/// now rather than at a later write). The new size is fsynced before this returns. On failure
/// the file is put back to its old size. Returns the file's size afterwards.
///
/// `file` may be read-only (a read-only Device): the same file is then opened again for
/// writing through `/proc/self/fd`.
pub(super) fn grow_file(
    file: &File,
    read_only: bool,
    size: u64,
    thin: bool,
    path: &std::path::Path,
) -> Result<u64, NodeError> {
    let io_err = |what: &str, e: io::Error| {
        let message = format!("{what} {}: {e}", path.display());
        if is_no_space(&e) {
            NodeError::NoSpace {
                field: SIZE_FIELD.into(),
                message: format!(
                    "cannot grow the file to {size} bytes, the old size is kept and served: \
                     {message}"
                ),
            }
        } else {
            NodeError::Internal(format!("{SIZE_FIELD}: {message}"))
        }
    };
    let reopened;
    let w = if read_only {
        reopened = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|e| io_err("reopening for writing", e))?;
        &reopened
    } else {
        file
    };
    let before = size_of(w).map_err(|e| io_err("sizing", e))?;
    if size <= before {
        return Ok(before);
    }
    let grown = if thin {
        w.set_len(size)
    } else {
        allocate(w, before, size - before)
    };
    if let Err(e) = grown.and_then(|()| w.sync_all()) {
        // A partial fallocate may have moved the end: back to where it was.
        if size_of(w).is_ok_and(|now| now != before) {
            let _ = w.set_len(before).and_then(|()| w.sync_all());
        }
        return Err(io_err("growing", e));
    }
    Ok(size)
}

/// fallocate(2) mode 0 (allocate, and extend the file past its end).
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    loop {
        // SAFETY: fallocate on a descriptor we own; no memory is passed.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> StoreSource {
        StoreSource::File {
            path: path.into(),
            size_bytes: size,
        }
    }

    #[test]
    fn a_file_may_grow_never_shrink_and_keeps_its_path_and_kind() {
        assert_eq!(
            source_change(&file("a", 4096), &file("a", 4096)).unwrap(),
            SourceChange::Same
        );
        assert_eq!(
            source_change(&file("a", 4096), &file("a", 8192)).unwrap(),
            SourceChange::Grow(8192)
        );
        let shrink = source_change(&file("a", 8192), &file("a", 4096)).unwrap_err();
        assert!(
            matches!(&shrink, NodeError::Invalid { field, message }
                if field == SIZE_FIELD && message.contains("may only grow")),
            "{shrink:?}"
        );
        let block = StoreSource::Block {
            path: "/dev/x".into(),
        };
        for (old, new) in [
            (file("a", 4096), file("b", 8192)),
            (file("a", 4096), block.clone()),
            (
                block.clone(),
                StoreSource::Block {
                    path: "/dev/y".into(),
                },
            ),
        ] {
            let e = source_change(&old, &new).unwrap_err();
            assert!(
                matches!(&e, NodeError::Invalid { field, .. } if field == "spec.source"),
                "{e:?}"
            );
        }
        assert_eq!(source_change(&block, &block).unwrap(), SourceChange::Same);
    }

    #[test]
    fn thin_grows_a_hole_thick_allocates_neither_shrinks() {
        let dir = tempfile::tempdir().unwrap();
        for thin in [true, false] {
            let p = dir.path().join(format!("{thin}.img"));
            std::fs::write(&p, vec![7u8; 4096]).unwrap();
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .unwrap();
            assert_eq!(grow_file(&f, false, 1 << 20, thin, &p).unwrap(), 1 << 20);
            let meta = std::fs::metadata(&p).unwrap();
            assert_eq!(meta.len(), 1 << 20);
            let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
            if thin {
                assert!(allocated < 1 << 19, "thin stays sparse: {allocated}");
            } else {
                assert!(allocated >= 1 << 20, "thick is allocated: {allocated}");
            }
            // Smaller or equal: nothing happens.
            assert_eq!(grow_file(&f, false, 4096, thin, &p).unwrap(), 1 << 20);
            assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
            assert_eq!(&std::fs::read(&p).unwrap()[..4096], &[7u8; 4096][..]);
        }
    }

    #[test]
    fn a_read_only_store_is_grown_through_a_writable_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ro.img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(grow_file(&f, true, 65536, true, &p).unwrap(), 65536);
        assert_eq!(size_of(&f).unwrap(), 65536);
    }

    #[test]
    fn no_room_is_no_space_and_the_old_size_stays() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        // Past the largest file offset: fallocate answers EFBIG at once (whatever the
        // filesystem), without filling the disk.
        let e = grow_file(&f, false, 1 << 63, false, &p).unwrap_err();
        assert!(
            matches!(&e, NodeError::NoSpace { field, message }
                if field == SIZE_FIELD && message.contains("old size is kept")),
            "{e:?}"
        );
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 4096);
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EIO)));
    }
}
