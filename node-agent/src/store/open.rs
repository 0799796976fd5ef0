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

/// Opens the store `spec` describes. A missing file-backed store is created as a sparse file of
/// `size_bytes` (parent directories too); an existing one is opened as it is.
pub fn open_store(
    spec: &StoreSpec,
    data_dir: &Path,
    allow_block: &[PathBuf],
) -> Result<OpenedStore, StoreError> {
    let (path, created) = match &spec.source {
        StoreSource::File { path, size_bytes } => {
            let full = resolve_in_data_dir(data_dir, path)?;
            let created = if full.exists() {
                false
            } else {
                if let Some(parent) = full.parent() {
                    std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
                }
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&full)
                    .map_err(io_err("creating", &full))?;
                f.set_len(*size_bytes).map_err(io_err("sizing", &full))?;
                true
            };
            (full, created)
        }
        StoreSource::Block { path } => {
            let p = PathBuf::from(path);
            if !allow_block.iter().any(|a| a == &p) {
                return Err(StoreError::NotAllowed(path.clone()));
            }
            (p, false)
        }
    };
    let file = open_flags(spec.read_only, spec.direct)
        .open(&path)
        .map_err(io_err("opening", &path))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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
