//! Opening (and, for missing files, creating) a Device's backing store.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{StoreError, fdlimit, resolve_in_data_dir};

/// Where a Device's bytes live and how to open them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StoreSource {
    /// A file under the data dir, created sparse with this size when missing.
    File { path: String, size_bytes: u64 },
    /// A block device (must be on the allowlist).
    Block { path: String },
}

/// Everything needed to open a backing store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreSpec {
    pub source: StoreSource,
    pub block_size: u32,
    pub read_only: bool,
    pub direct: bool,
}

/// An opened store, not yet attached to a ring.
#[derive(Debug)]
pub struct OpenedStore {
    /// The store's one descriptor: the node that opened it and the target serving it share it
    /// (a Device costs one open file however many hold it).
    pub file: Arc<File>,
    /// Usable bytes: the size rounded down to whole blocks.
    pub len: u64,
    pub path: PathBuf,
    /// Whether this call created the file.
    pub created: bool,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| {
        if fdlimit::is_exhausted(&source) {
            let limit = fdlimit::limits().ok().map(|(soft, _)| soft);
            let advice = fdlimit::advice(&source, limit);
            return StoreError::OutOfFiles {
                path,
                advice,
                source,
            };
        }
        StoreError::Io { what, path, source }
    }
}

fn open_flags(read_only: bool, direct: bool) -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(!read_only);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o
}

/// Size of an open file or block device (seek to the end; works for both).
fn size_of(file: &File) -> io::Result<u64> {
    // SAFETY: lseek on a descriptor we own.
    let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
    if end < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(end as u64)
}

/// How [`open_store_with`] treats a store that is missing or shared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenMode {
    /// The store was served before: a missing one is [`StoreError::Missing`], never created.
    pub must_exist: bool,
    /// Open a block device with `O_EXCL` (the kernel then refuses it while mounted or held
    /// exclusively by anyone else, and refuses others while this descriptor is open).
    pub exclusive: bool,
}

/// Opens the store `spec` describes, creating a missing file (see [`open_store_with`]).
pub fn open_store(
    spec: &StoreSpec,
    data_dir: &Path,
    allow_block: &[PathBuf],
) -> Result<OpenedStore, StoreError> {
    open_store_with(spec, data_dir, allow_block, OpenMode::default())
}

/// Opens the store `spec` describes. A missing file-backed store is created as a sparse file of
/// `size_bytes` (parent directories too), and the file and every directory it needed are
/// fsynced before this returns, unless `mode.must_exist`; an existing one is opened as it is.
pub fn open_store_with(
    spec: &StoreSpec,
    data_dir: &Path,
    allow_block: &[PathBuf],
    mode: OpenMode,
) -> Result<OpenedStore, StoreError> {
    let mut exclusive = false;
    let (path, created) = match &spec.source {
        StoreSource::File { path, size_bytes } => {
            let full = resolve_in_data_dir(data_dir, path)?;
            let created = if full.exists() {
                false
            } else if mode.must_exist {
                return Err(StoreError::Missing {
                    path: full.display().to_string(),
                });
            } else {
                create_sparse(data_dir, &full, *size_bytes)?;
                true
            };
            (full, created)
        }
        StoreSource::Block { path } => {
            let p = PathBuf::from(path);
            if !allow_block.iter().any(|a| a == &p) {
                return Err(StoreError::NotAllowed(path.clone()));
            }
            if !p.exists() {
                // Missing whether or not it was served: a block device is never created.
                return Err(StoreError::Missing { path: path.clone() });
            }
            exclusive = mode.exclusive;
            (p, false)
        }
    };
    let mut flags = open_flags(spec.read_only, spec.direct);
    if exclusive {
        flags.custom_flags(libc::O_EXCL | if spec.direct { libc::O_DIRECT } else { 0 });
    }
    let file = flags.open(&path).map_err(|e| {
        if exclusive && e.raw_os_error() == Some(libc::EBUSY) {
            return StoreError::Busy {
                path: path.display().to_string(),
            };
        }
        io_err("opening", &path)(e)
    })?;
    fdlimit::within_limit(&file).map_err(io_err("opening", &path))?;
    let size = size_of(&file).map_err(io_err("sizing", &path))?;
    let bs = u64::from(spec.block_size);
    let len = size / bs * bs;
    if len == 0 {
        return Err(StoreError::TooSmall {
            path: path.display().to_string(),
            actual: size,
            block_size: spec.block_size,
        });
    }
    Ok(OpenedStore {
        file: Arc::new(file),
        len,
        path,
        created,
    })
}

/// Creates `full` (under `data_dir`) sparse with `size` bytes, then fsyncs it, its directory and
/// every directory created for it: once this returns, a crash does not lose the file.
fn create_sparse(data_dir: &Path, full: &Path, size: u64) -> Result<(), StoreError> {
    let parent = full.parent().unwrap_or(data_dir);
    let mut missing = Vec::new();
    let mut p = parent;
    while !p.exists() && p.starts_with(data_dir) && p != data_dir {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(up) => p = up,
            None => break,
        }
    }
    std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(full)
        .map_err(io_err("creating", full))?;
    f.set_len(size).map_err(io_err("sizing", full))?;
    f.sync_all().map_err(io_err("syncing", full))?;
    // The new entry in its directory, and each new directory in its parent.
    sync_dir(parent)?;
    for d in &missing {
        if let Some(up) = d.parent() {
            sync_dir(up)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn must_exist_creates_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mode = OpenMode {
            must_exist: true,
            exclusive: false,
        };
        let e = open_store_with(&file_spec("sub/x.img", 1 << 20), d.path(), &[], mode).unwrap_err();
        assert!(matches!(e, StoreError::Missing { .. }), "{e}");
        assert!(
            std::fs::read_dir(d.path()).unwrap().next().is_none(),
            "neither the file nor its directory was created"
        );
        // Once it exists again, it opens as it is.
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/x.img"), vec![1u8; 4096]).unwrap();
        let s = open_store_with(&file_spec("sub/x.img", 1 << 20), d.path(), &[], mode).unwrap();
        assert!(!s.created);
        assert_eq!(s.len, 4096);
    }

    fn file_spec(path: &str, size: u64) -> StoreSpec {
        StoreSpec {
            source: StoreSource::File {
                path: path.into(),
                size_bytes: size,
            },
            block_size: 512,
            read_only: false,
            direct: false,
        }
    }

    #[test]
    fn missing_file_is_created_sparse_with_its_size() {
        let d = tempfile::tempdir().unwrap();
        let s = open_store(&file_spec("sub/x.img", 1 << 30), d.path(), &[]).unwrap();
        assert!(s.created);
        assert_eq!(s.len, 1 << 30);
        let md = std::fs::metadata(d.path().join("sub/x.img")).unwrap();
        assert_eq!(md.len(), 1 << 30);
        assert!(md.blocks() * 512 < 1 << 20, "file should be sparse");
    }

    #[test]
    fn existing_file_is_opened_as_is() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x.img"), vec![7u8; 4096 + 100]).unwrap();
        let s = open_store(&file_spec("x.img", 1 << 20), d.path(), &[]).unwrap();
        assert!(!s.created);
        assert_eq!(s.len, 4096, "rounded down to whole blocks, not resized");
        assert_eq!(std::fs::metadata(&s.path).unwrap().len(), 4196);
    }

    #[test]
    fn block_devices_must_be_allowlisted() {
        let d = tempfile::tempdir().unwrap();
        let spec = StoreSpec {
            source: StoreSource::Block {
                path: "/dev/sda".into(),
            },
            ..file_spec("x", 0)
        };
        assert!(matches!(
            open_store(&spec, d.path(), &[]),
            Err(StoreError::NotAllowed(_))
        ));
    }
}
