//! Snapshots of a Device and clones from them (docs/snapshots.md). A snapshot holds the
//! Device's writes at a barrier in its target's engine (accepted writes finish, new ones wait,
//! reads go on), flushes, copies the store (`FICLONE`, else a copy within the agent's copy
//! limit, writes held meanwhile), and lets the writes go on; the hold is measured.
//! Only file-backed Devices: a block device has no reflink and no room in the data dir.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::Node;
use super::error::{NodeError, invalid, precondition};
use super::records::ObjectId;
use super::snapshot_records::{SnapshotDir, SnapshotRecord, safe_uid};
use crate::engine::{DrainState, TargetCmd};
use crate::store::StoreSource;
use crate::store::copy::{CopyError, CopyPolicy, copy_store};

/// How long a copy may hold a Device's writes where there are no reflinks (0: no copies).
static COPY_LIMIT_SECS: AtomicU64 = AtomicU64::new(10);

/// Sets how long a snapshot may copy (writes held) on a filesystem without reflinks; zero
/// refuses such snapshots.
pub fn set_copy_limit(limit: Duration) {
    COPY_LIMIT_SECS.store(limit.as_secs(), Ordering::Relaxed);
}

fn copy_policy() -> CopyPolicy {
    match COPY_LIMIT_SECS.load(Ordering::Relaxed) {
        0 => CopyPolicy::ReflinkOnly,
        s => CopyPolicy::CopyWithin(Duration::from_secs(s)),
    }
}

/// Snapshots being taken: by Device (one at a time), with their progress by snapshot uid.
#[derive(Default)]
pub(super) struct Taking {
    devices: SyncMutex<BTreeMap<String, String>>,
    progress: SyncMutex<BTreeMap<String, (Arc<AtomicU64>, u64)>>,
}

/// A snapshot as the node reports it: complete (`record`), or being copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotView {
    pub record: Option<SnapshotRecord>,
    pub id: ObjectId,
    pub copied_bytes: u64,
    pub total_bytes: u64,
}

/// Lowers a Device's barrier when dropped: a call cancelled mid-copy never leaves writes held.
struct Resume(Option<(UnboundedSender<TargetCmd>, String)>);

impl Drop for Resume {
    fn drop(&mut self) {
        if let Some((tx, device)) = self.0.take() {
            let _ = tx.send(TargetCmd::Resume { device });
        }
    }
}

/// Frees a Device for its next snapshot when dropped.
struct Turn<'a>(&'a Taking, String, String);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Ok(mut d) = self.0.devices.lock() {
            d.remove(&self.1);
        }
        if let Ok(mut p) = self.0.progress.lock() {
            p.remove(&self.2);
        }
    }
}

impl Node {
    fn snapshot_dir(&self) -> SnapshotDir {
        SnapshotDir::new(&self.data_dir)
    }

    /// Takes snapshot `snap` of Device `device` (same namespace), or answers the one taken.
    pub async fn create_snapshot(
        &self,
        snap: &ObjectId,
        device: &ObjectId,
    ) -> Result<SnapshotRecord, NodeError> {
        if !safe_uid(&snap.uid) {
            return Err(invalid("metadata.uid", "is not a plain uid"));
        }
        if snap.namespace != device.namespace {
            return Err(invalid(
                "spec.source.deviceName",
                format!(
                    "must name a Device in the snapshot's namespace {:?}, not {:?}",
                    snap.namespace, device.namespace
                ),
            ));
        }
        let dir = self.snapshot_dir();
        if let Some(r) = dir.load(&snap.uid).map_err(internal)? {
            if r.source.uid != device.uid {
                return Err(precondition(
                    "spec.source.deviceName",
                    format!(
                        "snapshot {} was taken of Device {} (uid {}), not uid {}",
                        snap.key(),
                        r.source.key(),
                        r.source.uid,
                        device.uid
                    ),
                ));
            }
            return Ok(r);
        }
        let key = device.key();
        let _turn = {
            let mut d = self.taking.devices.lock().map_err(poisoned)?;
            if let Some(other) = d.get(&key) {
                return Err(precondition(
                    "spec.source.deviceName",
                    format!("snapshot {other} of Device {key} is being taken; retry after it"),
                ));
            }
            d.insert(key.clone(), snap.key());
            Turn(&self.taking, key.clone(), snap.uid.clone())
        };
        let (file, len, block_size, target) = {
            let g = self.inner.lock().await;
            g.engine()?;
            let Some(e) = g
                .devices
                .get(&key)
                .filter(|e| e.record.id.uid == device.uid)
            else {
                return Err(NodeError::NotFound(format!(
                    "no Device {key} with uid {} on this node",
                    device.uid
                )));
            };
            if !matches!(e.record.store.source, StoreSource::File { .. }) {
                return Err(precondition(
                    "spec.source.block",
                    format!(
                        "Device {key} is a block device: snapshots are of file-backed Devices only"
                    ),
                ));
            }
            if matches!(
                e.record.drain.state,
                DrainState::Failed | DrainState::Released
            ) {
                return Err(precondition(
                    "spec.source.deviceName",
                    format!("Device {key} is {:?}", e.record.drain.state),
                ));
            }
            let Some(o) = &e.opened else {
                return Err(precondition(
                    "spec.source.deviceName",
                    format!(
                        "Device {key} is not open: {}",
                        e.open_error.as_deref().unwrap_or("unknown")
                    ),
                ));
            };
            let target = e
                .used_by
                .as_ref()
                .filter(|_| e.record.drain.state == DrainState::Running)
                .and_then(|t| g.engine.as_ref()?.target(t).map(|h| h.sender()));
            (
                Arc::clone(&o.file),
                o.len,
                e.record.store.block_size,
                target,
            )
        };
        dir.create().map_err(internal)?;
        let progress = Arc::new(AtomicU64::new(0));
        self.taking
            .progress
            .lock()
            .map_err(poisoned)?
            .insert(snap.uid.clone(), (progress.clone(), len));
        // The barrier: from here until `resume` drops, the Device's writes wait.
        let start = Instant::now();
        let resume = match target {
            Some(tx) => {
                // Armed before the barrier is asked for: cancelled while waiting for it, the
                // barrier still comes down.
                let resume = Resume(Some((tx.clone(), key.clone())));
                crate::engine::request(&tx, &key, |reply| TargetCmd::Hold {
                    device: key.clone(),
                    reply,
                })
                .await
                .map_err(|e| NodeError::Internal(e.to_string()))?
                .map_err(|e| NodeError::DataLoss(e.to_string()))?;
                resume
            }
            None => Resume(None),
        };
        let (image, partial) = (dir.image(&snap.uid), dir.partial(&snap.uid));
        let copied = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || copy_into(&file, len, &dir, &partial, &image, &progress)
        })
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))?;
        drop(resume);
        let hold = start.elapsed();
        let method = copied.map_err(|e| match e {
            CopyError::Io(e) => NodeError::Internal(format!("snapshot of {key}: {e}")),
            e => precondition("spec.source.deviceName", format!("snapshot of {key}: {e}")),
        })?;
        let r = SnapshotRecord {
            id: snap.clone(),
            source: device.clone(),
            size_bytes: len,
            block_size,
            method,
            hold_micros: hold.as_micros() as u64,
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        dir.save(&r).map_err(internal)?;
        tracing::info!(
            snapshot = %snap.key(), device = %key, ?method, bytes = len,
            hold_us = r.hold_micros, "snapshot taken"
        );
        Ok(r)
    }

    /// Removes a snapshot's copy and record; answers whether there was one.
    pub fn delete_snapshot(&self, snap: &ObjectId) -> Result<bool, NodeError> {
        if !safe_uid(&snap.uid) {
            return Err(invalid("metadata.uid", "is not a plain uid"));
        }
        if self
            .taking
            .progress
            .lock()
            .map_err(poisoned)?
            .contains_key(&snap.uid)
        {
            return Err(precondition(
                "metadata.uid",
                "the snapshot is being taken; retry",
            ));
        }
        self.snapshot_dir().remove(&snap.uid).map_err(internal)
    }

    /// Every snapshot on this node, those being copied with their progress.
    pub fn list_snapshots(&self) -> (Vec<SnapshotView>, Vec<String>) {
        let (records, problems) = self.snapshot_dir().list();
        let mut out: Vec<SnapshotView> = records
            .into_iter()
            .map(|r| SnapshotView {
                id: r.id.clone(),
                copied_bytes: r.size_bytes,
                total_bytes: r.size_bytes,
                record: Some(r),
            })
            .collect();
        if let Ok(p) = self.taking.progress.lock() {
            for (uid, (done, total)) in p.iter() {
                out.push(SnapshotView {
                    record: None,
                    id: ObjectId {
                        namespace: String::new(),
                        name: String::new(),
                        uid: uid.clone(),
                        generation: 0,
                    },
                    copied_bytes: done.load(Ordering::Relaxed),
                    total_bytes: *total,
                });
            }
        }
        (out, problems)
    }

    /// The snapshot a clone of Device `clone` starts from: it must be on this node and of the
    /// clone's namespace.
    pub(super) fn clone_source(
        &self,
        clone: &ObjectId,
        snapshot_uid: &str,
    ) -> Result<(SnapshotRecord, std::path::PathBuf), NodeError> {
        const FIELD: &str = "spec.source.snapshot.name";
        if !safe_uid(snapshot_uid) {
            return Err(invalid(FIELD, "names no snapshot with a plain uid"));
        }
        let dir = self.snapshot_dir();
        let Some(r) = dir.load(snapshot_uid).map_err(internal)? else {
            return Err(precondition(
                FIELD,
                format!("snapshot uid {snapshot_uid} is not on this node"),
            ));
        };
        if r.id.namespace != clone.namespace {
            return Err(precondition(
                FIELD,
                format!(
                    "snapshot {} is in another namespace than Device {}",
                    r.id.key(),
                    clone.key()
                ),
            ));
        }
        Ok((r, dir.image(snapshot_uid)))
    }
}

impl Node {
    /// A clone's store: when `rec` starts from a snapshot and its file does not exist yet, the
    /// file is made from the snapshot's copy (`FICLONE`, else a copy: nothing is held, the
    /// clone is not served yet), then grown to the clone's size. Answers whether it made it.
    pub(super) async fn make_clone_store(
        &self,
        rec: &super::records::DeviceRecord,
    ) -> Result<bool, NodeError> {
        let Some(uid) = &rec.clone_from else {
            return Ok(false);
        };
        let StoreSource::File { size_bytes, .. } = &rec.store.source else {
            return Err(invalid(
                "spec.source.file",
                "a clone from a snapshot is a file-backed Device",
            ));
        };
        let path = self.backing_path(rec);
        if path.exists() {
            return Ok(false);
        }
        let (snap, image) = self.clone_source(&rec.id, uid)?;
        if *size_bytes < snap.size_bytes {
            return Err(invalid(
                "spec.source.file.sizeBytes",
                format!(
                    "must be at least the snapshot's {} bytes (snapshot {})",
                    snap.size_bytes,
                    snap.id.key()
                ),
            ));
        }
        if rec.store.block_size != snap.block_size {
            return Err(invalid(
                "spec.blockSize",
                format!(
                    "must be the snapshot's block size {} (snapshot {})",
                    snap.block_size,
                    snap.id.key()
                ),
            ));
        }
        // Resolved in the data dir (no escape), parents made, as a created store's are.
        crate::store::resolve_in_data_dir(
            &self.data_dir,
            match &rec.store.source {
                StoreSource::File { path, .. } => path,
                StoreSource::Block { path } => path,
            },
        )
        .map_err(|e| invalid("spec.source.file.path", e.to_string()))?;
        let size = *size_bytes;
        let key = rec.id.key();
        let method = tokio::task::spawn_blocking(move || {
            let parent = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
            std::fs::create_dir_all(&parent)?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let partial = parent.join(format!(".{}.clone.partial", name.unwrap_or_default()));
            let _ = std::fs::remove_file(&partial);
            let src = File::open(&image)?;
            let dst = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&partial)?;
            let day = CopyPolicy::CopyWithin(Duration::from_secs(86_400));
            let r = copy_store(
                &src,
                &dst,
                snap.size_bytes,
                &parent,
                day,
                &AtomicU64::new(0),
            )
            .and_then(|m| {
                dst.set_len(size)?;
                dst.sync_all()?;
                std::fs::rename(&partial, &path)?;
                File::open(&parent)?.sync_all()?;
                Ok(m)
            });
            if r.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            r
        })
        .await
        .map_err(internal)?
        .map_err(|e| NodeError::Internal(format!("cloning Device {key}: {e}")))?;
        tracing::info!(device = %key, snapshot = %uid, ?method, "clone store made from the snapshot");
        Ok(true)
    }
}

/// Copies `len` bytes of `file` into `partial`, then makes it `image` (fsynced, renamed).
fn copy_into(
    file: &File,
    len: u64,
    dir: &SnapshotDir,
    partial: &std::path::Path,
    image: &std::path::Path,
    progress: &AtomicU64,
) -> Result<crate::store::copy::CopyMethod, CopyError> {
    let _ = std::fs::remove_file(partial);
    let dst = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(partial)?;
    let r = copy_store(file, &dst, len, dir.path(), copy_policy(), progress).and_then(|m| {
        dst.sync_all()?;
        std::fs::rename(partial, image)?;
        Ok(m)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(partial);
    }
    r
}

fn internal(e: impl std::fmt::Display) -> NodeError {
    NodeError::Internal(e.to_string())
}

fn poisoned<T>(_: T) -> NodeError {
    NodeError::Internal("snapshot bookkeeping poisoned".into())
}
