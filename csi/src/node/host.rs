//! The node's side of things the calls share: the tools (through the one [`Runner`]), the
//! sysfs tree, the mount table, the state folder, and one call at a time per volume.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::{NodeError, io};
use super::mountinfo::{self, Mount};
use super::runner::{RunError, Runner};
use super::state::Store;
use super::sysfs::Sysfs;

/// Time limits of the node's tools.
#[derive(Debug, Clone)]
pub struct Limits {
    /// iscsiadm (a login waits for the target; a logout of a dead session for its timeouts).
    pub iscsiadm: Duration,
    /// The disk of a new session to appear in sysfs; a grown disk to show its new size.
    pub device: Duration,
    /// mkfs, resize2fs, xfs_growfs.
    pub format: Duration,
    /// mount, umount, blkid, blockdev.
    pub mount: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            iscsiadm: Duration::from_secs(120),
            device: Duration::from_secs(60),
            format: Duration::from_secs(600),
            mount: Duration::from_secs(60),
        }
    }
}

/// The node's tools and files.
#[derive(Debug, Clone)]
pub struct Host {
    pub runner: Runner,
    pub sysfs: Sysfs,
    pub store: Store,
    /// The mount table to read (`/proc/self/mountinfo`, or `/proc/1/mountinfo` when the
    /// commands run in the host's mount namespace).
    pub mountinfo: PathBuf,
    /// Folders where open-iscsi may keep its node records.
    pub record_dirs: Vec<PathBuf>,
    pub initiator_file: PathBuf,
    pub limits: Limits,
    busy: Arc<Mutex<HashSet<String>>>,
}

/// How to unmount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmount {
    /// A failure is an error.
    Strict,
    /// A mount that does not come off in time (a dead disk with dirty data) is detached.
    LazyFallback,
    /// Detached at once (the disk's target is gone: its dirty data cannot be written).
    Lazy,
}

/// Held while a call works on a volume.
pub struct Busy {
    id: String,
    set: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.id);
        }
    }
}

impl Host {
    pub fn new(
        runner: Runner,
        sysfs: Sysfs,
        store: Store,
        mountinfo: PathBuf,
        record_dirs: Vec<PathBuf>,
        initiator_file: PathBuf,
        limits: Limits,
    ) -> Self {
        Host {
            runner,
            sysfs,
            store,
            mountinfo,
            record_dirs,
            initiator_file,
            limits,
            busy: Default::default(),
        }
    }

    /// Marks volume `id` busy, or ABORTED when another call holds it (the CO retries).
    pub fn claim(&self, id: &str) -> Result<Busy, NodeError> {
        let mut set = self
            .busy
            .lock()
            .map_err(|_| NodeError::Internal("volume lock poisoned".into()))?;
        if !set.insert(id.to_string()) {
            return Err(NodeError::Aborted(id.to_string()));
        }
        Ok(Busy {
            id: id.to_string(),
            set: self.busy.clone(),
        })
    }

    pub fn mounts(&self) -> Result<Vec<Mount>, NodeError> {
        let text = std::fs::read_to_string(&self.mountinfo)
            .map_err(|e| io(self.mountinfo.display(), e))?;
        Ok(mountinfo::parse(&text))
    }

    /// The mount visible at `path`.
    pub fn mount_at(&self, path: &str) -> Result<Option<Mount>, NodeError> {
        Ok(mountinfo::at(&self.mounts()?, path).cloned())
    }

    pub async fn run(
        &self,
        program: &str,
        args: Vec<String>,
        limit: Duration,
    ) -> Result<String, RunError> {
        self.runner.run(program, &args, limit).await
    }

    pub async fn iscsiadm(&self, args: Vec<String>) -> Result<String, RunError> {
        self.run("iscsiadm", args, self.limits.iscsiadm).await
    }

    pub async fn mount(&self, args: Vec<String>) -> Result<(), NodeError> {
        self.run("mount", args, self.limits.mount).await?;
        Ok(())
    }

    /// Unmounts `path` while something is mounted there (stacked mounts included).
    pub async fn unmount_all(&self, path: &str, how: Unmount) -> Result<(), NodeError> {
        for _ in 0..8 {
            if self.mount_at(path)?.is_none() {
                return Ok(());
            }
            let lazy = || vec!["-l".to_string(), path.to_string()];
            match how {
                Unmount::Lazy => {
                    self.run("umount", lazy(), self.limits.mount).await?;
                }
                Unmount::Strict => {
                    self.run("umount", vec![path.to_string()], self.limits.mount)
                        .await?;
                }
                Unmount::LazyFallback => {
                    if let Err(e) = self
                        .run("umount", vec![path.to_string()], self.limits.mount)
                        .await
                    {
                        tracing::warn!(path, error = %e, "unmount failed: detaching lazily");
                        self.run("umount", lazy(), self.limits.mount).await?;
                    }
                }
            }
        }
        match self.mount_at(path)? {
            None => Ok(()),
            Some(_) => Err(NodeError::Internal(format!("{path} is still mounted"))),
        }
    }

    /// Writes `value` to a sysfs file in a blocking thread, waiting at most `limit` for it (a
    /// SCSI delete waits for the disk's cache flush, which a dead target never answers). True
    /// if the write finished in time.
    pub async fn write_sysfs(
        &self,
        file: PathBuf,
        value: &'static str,
        limit: Duration,
    ) -> Result<bool, NodeError> {
        let shown = file.display().to_string();
        let task = tokio::task::spawn_blocking(move || std::fs::write(&file, value));
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok(()))) => Ok(true),
            Ok(Ok(Err(e))) => Err(io(shown, e)),
            Ok(Err(e)) => Err(NodeError::Internal(format!("{shown}: {e}"))),
            Err(_) => {
                tracing::warn!(file = %shown, seconds = limit.as_secs(), "sysfs write still running: going on");
                Ok(false)
            }
        }
    }
}
