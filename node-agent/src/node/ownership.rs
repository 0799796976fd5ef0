//! One owner per backing store, and never a blank store under an old identity.
//!
//! - A store is known by what it is, not by how it is named: a file by device and inode (after
//!   following symlinks, so a hard link or a symlink to a held file is the same store), a block
//!   device by its device number. The agent refuses a Device whose store another Device (another
//!   uid) holds, naming that Device; the holder keeps serving untouched.
//! - A block device is opened with `O_EXCL` for as long as its Device is held: the kernel then
//!   refuses it to anyone else who asks for it exclusively (and refuses it to the agent while it
//!   is mounted).
//! - A Device the agent already knows (reopened after a change or at start), or one the operator
//!   says was served before (`served_naa`), must find its store: a missing one is refused and
//!   nothing is created.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::agent_id::AGENT_ID_FILE;
use super::datadir::DATA_DIR_ID_FILE;
use super::error::{NodeError, invalid, precondition};
use super::records::DeviceRecord;
use super::state::RESERVED_DIR;
use super::{Inner, Node, Opened};
use crate::engine::config::DeviceIdentity;
use crate::engine::identity::device_identity;
use crate::store::{self, OpenMode, StoreError, StoreSource};

/// What a backing store is, whatever path names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StoreKey {
    File { dev: u64, ino: u64 },
    Block { rdev: u64 },
}

impl StoreKey {
    fn of(md: &std::fs::Metadata) -> StoreKey {
        if md.file_type().is_block_device() {
            StoreKey::Block { rdev: md.rdev() }
        } else {
            StoreKey::File {
                dev: md.dev(),
                ino: md.ino(),
            }
        }
    }
}

/// The store at `path` (symlinks followed); None when nothing is there.
fn key_at(path: &Path) -> Option<StoreKey> {
    std::fs::metadata(path).ok().map(|m| StoreKey::of(&m))
}

/// Whether a new Device's store may be created when missing, or must exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Missing {
    /// Never served: create a missing file.
    Create,
    /// Served before (the operator says so, or the agent holds its record): refuse.
    Refuse,
}

fn field_of(rec: &DeviceRecord) -> &'static str {
    match rec.store.source {
        StoreSource::File { .. } => "spec.source.file.path",
        StoreSource::Block { .. } => "spec.source.block.path",
    }
}

impl Inner {
    /// The Device (another uid than `uid`) holding the store `key`.
    fn holder(&self, key: StoreKey, uid: &str) -> Option<&DeviceRecord> {
        self.devices
            .values()
            .find(|e| e.record.id.uid != uid && e.opened.as_ref().is_some_and(|o| o.key == key))
            .map(|e| &e.record)
    }

    /// Refuses `rec` if another Device holds the store `key`.
    fn check_owner(&self, rec: &DeviceRecord, key: StoreKey, path: &Path) -> Result<(), NodeError> {
        let Some(h) = self.holder(key, &rec.id.uid) else {
            return Ok(());
        };
        crate::metrics::get()
            .store_refusals
            .with_label_values(&["in_use"])
            .inc();
        Err(NodeError::InUse {
            field: field_of(rec).into(),
            message: format!(
                "{} is the backing store of Device {} (uid {}) on this node (the same {}); a \
                 backing store has one owner: use another path, or delete that Device first",
                path.display(),
                h.id.key(),
                h.id.uid,
                match key {
                    StoreKey::File { .. } => "file, by device and inode",
                    StoreKey::Block { .. } => "block device",
                }
            ),
            owner: h.id.key(),
            owner_uid: h.id.uid.clone(),
        })
    }
}

/// File-backed Devices may not live where the agent keeps its state and identities.
pub(super) fn check_reserved(rec: &DeviceRecord) -> Result<(), NodeError> {
    if let StoreSource::File { path, .. } = &rec.store.source {
        let first = Path::new(path)
            .components()
            .find(|c| !matches!(c, std::path::Component::CurDir));
        if let Some(name) = first.map(|c| c.as_os_str()).filter(|n| {
            [RESERVED_DIR, DATA_DIR_ID_FILE, AGENT_ID_FILE]
                .iter()
                .any(|r| n == r)
        }) {
            return Err(invalid(
                "spec.source.file.path",
                format!(
                    "{} is reserved for the agent's own state and identity",
                    name.display()
                ),
            ));
        }
    }
    Ok(())
}

impl Node {
    /// Where a Device's bytes are.
    pub(super) fn backing_path(&self, r: &DeviceRecord) -> PathBuf {
        match &r.store.source {
            StoreSource::File { path, .. } => self.data_dir.join(path),
            StoreSource::Block { path } => PathBuf::from(path),
        }
    }

    /// Opens the store of a Device: checks that no other Device holds it (before opening, and
    /// again on the opened descriptor), refuses a missing one unless `missing` allows creating
    /// it, and keeps a block device's exclusive claim (`claim`: the one a reopen carries over).
    pub(super) fn open(
        &self,
        g: &Inner,
        rec: &DeviceRecord,
        missing: Missing,
        claim: Option<Arc<File>>,
    ) -> Result<Opened, NodeError> {
        let field = field_of(rec);
        // Unreadable persisted reservations refuse the Device before anything is opened.
        let reservations = super::reservations::path(&self.data_dir, &rec.id.uid);
        super::reservations::load(&reservations, &rec.id.key())?;
        let path = self.backing_path(rec);
        if let Some(key) = key_at(&path) {
            g.check_owner(rec, key, &path)?;
        }
        let mode = OpenMode {
            must_exist: missing == Missing::Refuse,
            // A reopen keeps the claim it has; a second O_EXCL open of the same device would
            // be refused by the kernel.
            exclusive: claim.is_none(),
        };
        let s = store::open_store_with(&rec.store, &self.data_dir, &self.allow_block, mode)
            .map_err(|e| match e {
                StoreError::Missing { .. } => {
                    crate::metrics::get()
                        .store_refusals
                        .with_label_values(&["missing"])
                        .inc();
                    if self.data_dir_report.created {
                        tracing::error!(
                            device = %rec.id.key(), data_dir = %self.data_dir.display(),
                            "a Device served before has no backing store, and this data dir is \
                             new: was the data dir replaced or not mounted?"
                        );
                    }
                    NodeError::Missing {
                        field: field.into(),
                        message: format!(
                            "{e}; the agent creates nothing under the identity it was served \
                             with: put the store back (the next reconcile serves it), or delete \
                             the Device"
                        ),
                    }
                }
                StoreError::Busy { .. } => precondition(field, e.to_string()),
                StoreError::Io { .. } | StoreError::OutOfFiles { .. } => {
                    precondition(field, e.to_string())
                }
                e => invalid(field, e.to_string()),
            })?;
        let key = s
            .file
            .metadata()
            .map(|m| StoreKey::of(&m))
            .map_err(|e| precondition(field, format!("{}: {e}", s.path.display())))?;
        g.check_owner(rec, key, &s.path)?;
        let claim = match (&rec.store.source, claim) {
            (StoreSource::Block { .. }, None) => Some(Arc::clone(&s.file)),
            (_, c) => c,
        };
        // A Kubernetes uid is unique everywhere; a manifest's Device is named uniquely only
        // on this agent, so the agent's identity goes in.
        let (serial, naa) = match rec.id.uid.strip_prefix("manifest:") {
            Some(_) => device_identity(&self.agent.0, &rec.id.key()),
            None => device_identity(&[], &rec.id.uid),
        };
        Ok(Opened {
            file: s.file,
            len: s.len,
            path: s.path,
            created: s.created,
            identity: DeviceIdentity { serial, naa },
            key,
            claim,
            reservations,
        })
    }
}

#[cfg(test)]
mod tests;
