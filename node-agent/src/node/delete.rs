//! The agent's side of deleting a Device (the calls DrainDevice and ReleaseDevice in
//! docs/agent-api.md; the operator's side is operator/src/delete.rs):
//!
//! 1. **DrainDevice**: the fence is recorded on disk first (a restart keeps it fenced), then the
//!    Device's LUN is fenced in its target's engine (new commands: 25h/00h), the commands it
//!    had accepted finish, and the store is fdatasynced. The answer is the flush
//!    acknowledgement, recorded and given again to every later DrainDevice.
//! 2. **ReleaseDevice**: only after the flush (or when forced: the user accepted the loss), the
//!    LUN is dropped, the store closed, a tombstone recorded (the uid is never served again),
//!    and under reclaim policy Delete the file removed.
//!
//! The drain states (Running → Draining → Flushed → Released, or Failed) and the
//! acknowledgement are `engine::drain`'s, the same names the record and the API use; this file
//! drives them for one Device and keeps the outcome.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::MutexGuard;

use super::error::{NodeError, precondition};
use super::records::{DeviceRecord, ObjectId};
use super::{Inner, Node};
use crate::engine::{DrainAck, DrainError, DrainState, TargetCmd};

/// What a release did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseOutcome {
    /// The node had this Device (false: nothing to do).
    pub known: bool,
    pub file_removed: bool,
    /// The block device was erased (reclaim policy Delete).
    pub wiped: bool,
    pub backing_path: String,
    /// Reclaim policy Delete, but the agent did not create the file: it was kept.
    pub adopted_kept: bool,
}

/// Why a drain did not flush.
#[derive(Debug, thiserror::Error)]
pub enum DrainFailure {
    /// The flush failed: the data may not be on disk. The Device stays failed.
    #[error("flushing Device {device}: {message}")]
    Flush { device: String, message: String },
    /// The drain could not be carried out now (e.g. the target stopped meanwhile); retry.
    #[error("{0}")]
    Interrupted(String),
}

/// How the drain reaches the Device's data.
enum Path {
    /// Through the LUN of this Target (fence, wait, flush on its engine).
    Target {
        name: String,
        tx: tokio::sync::mpsc::UnboundedSender<TargetCmd>,
        /// For a Target that turns out to have no LUN on it (one that could not be added).
        file: Store,
    },
    /// No Target serves it: fdatasync the store directly.
    File(Store),
}

/// A Device's store as the drain finds it.
enum Store {
    Open(Arc<std::fs::File>),
    /// Not open (it could not be opened when the agent started): opened now to be flushed.
    Closed(std::path::PathBuf),
}

impl Node {
    /// Fences, drains and flushes a Device; the answer is the flush acknowledgement.
    pub async fn drain_device(&self, id: &ObjectId) -> Result<DrainAck, NodeError> {
        let key = id.key();
        let path = {
            let mut g = self.lock_when_stopped(&key).await;
            g.engine()?;
            if let Some(r) = g.released.get(&id.uid) {
                return r.drain.ack.clone().ok_or_else(|| {
                    precondition("", format!("Device {key} was released without a flush"))
                });
            }
            let Some(e) = g.devices.get(&key).filter(|e| e.record.id.uid == id.uid) else {
                return Err(NodeError::NotFound(format!(
                    "no Device {key} with uid {} on this node",
                    id.uid
                )));
            };
            match e.record.drain.state {
                DrainState::Flushed => {
                    if let Some(ack) = e.record.drain.ack.clone() {
                        return Ok(ack);
                    }
                }
                DrainState::Failed => {
                    return Err(NodeError::DataLoss(format!(
                        "Device {key} failed: {}",
                        e.record.drain.failure.as_deref().unwrap_or("unknown error")
                    )));
                }
                DrainState::Running | DrainState::Draining | DrainState::Released => {}
            }
            if e.record.drain.state == DrainState::Running {
                // Recorded before the fence goes up: whatever happens next, it stays fenced.
                let mut r = e.record.clone();
                r.drain.state = DrainState::Draining;
                g.save_device(&r)?;
                g.devices.get_mut(&key).expect("checked").record = r;
                tracing::info!(device = %key, "drain: fenced");
            }
            let e = g.devices.get(&key).expect("checked");
            let file = match &e.opened {
                Some(o) => Store::Open(Arc::clone(&o.file)),
                None => Store::Closed(self.backing_path(&e.record)),
            };
            match e.used_by.as_ref().and_then(|t| {
                let tx = g.engine.as_ref()?.target(t)?.sender();
                Some((t.clone(), tx))
            }) {
                Some((name, tx)) => Path::Target { name, tx, file },
                None => Path::File(file),
            }
        };
        let outcome = drain_through(path, &key).await;
        let mut g = self.inner.lock().await;
        let Some(e) = g.devices.get(&key).filter(|e| e.record.id.uid == id.uid) else {
            return Err(NodeError::Internal(format!(
                "Device {key} was released while it drained"
            )));
        };
        let mut r = e.record.clone();
        match outcome {
            Ok(ack) => {
                r.drain.state = DrainState::Flushed;
                r.drain.ack = Some(ack.clone());
                g.save_device(&r)?;
                g.devices.get_mut(&key).expect("checked").record = r;
                crate::metrics::get()
                    .device_drain_seconds
                    .observe(ack.duration().as_secs_f64());
                tracing::info!(
                    device = %key, drained_commands = ack.drained_commands,
                    fenced_commands = ack.fenced_commands, micros = ack.duration_micros,
                    "drain: flushed; acknowledged"
                );
                Ok(ack)
            }
            Err(DrainFailure::Flush { device, message }) => {
                r.drain.state = DrainState::Failed;
                r.drain.failure = Some(message.clone());
                g.save_device(&r)?;
                g.devices.get_mut(&key).expect("checked").record = r;
                tracing::error!(device = %key, "drain: flush failed: {message}");
                Err(NodeError::DataLoss(format!(
                    "flushing Device {device}: {message}"
                )))
            }
            Err(DrainFailure::Interrupted(m)) => Err(NodeError::Internal(m)),
        }
    }

    /// Closes a flushed Device (or any, when `force`) and, under reclaim policy Delete (the
    /// one in effect now: `reclaim_delete`, else the applied one), removes its file.
    pub async fn release_device(
        &self,
        id: &ObjectId,
        reclaim_delete: Option<bool>,
        force: bool,
    ) -> Result<ReleaseOutcome, NodeError> {
        let key = id.key();
        let mut g = self.lock_when_stopped(&key).await;
        g.engine()?;
        if g.released.contains_key(&id.uid) {
            drop(g);
            return self.reclaim(&id.uid, reclaim_delete).await;
        }
        let Some(e) = g.devices.get(&key).filter(|e| e.record.id.uid == id.uid) else {
            return Ok(ReleaseOutcome {
                known: false,
                file_removed: false,
                wiped: false,
                backing_path: String::new(),
                adopted_kept: false,
            });
        };
        if e.record.drain.state != DrainState::Flushed && !force {
            return Err(precondition(
                "",
                format!(
                    "Device {key} is not flushed ({:?}); drain it first, or release it with \
                     force (annotation spindle.dev/skip-flush) and accept the loss",
                    e.record.drain.state
                ),
            ));
        }
        if let Some(t) = e.used_by.clone() {
            release_lun(&g, &t, &key, force).await?;
        }
        let mut r = g.devices.get(&key).expect("checked").record.clone();
        if let Some(d) = reclaim_delete {
            r.reclaim_delete = d;
        }
        r.drain.state = DrainState::Released;
        // The tombstone first: a crash from here on never serves this uid again.
        g.save_device(&r)?;
        if let Some(o) = g.devices.get(&key).and_then(|e| e.opened.as_ref()) {
            super::reservations::forget(&o.reservations, &key);
        }
        drop(g.devices.remove(&key));
        tracing::info!(device = %key, forced = force, "Device released");
        g.released.insert(r.id.uid.clone(), r);
        drop(g);
        // Under reclaim policy Delete the file goes or the block device is erased; until that
        // has happened the Device stays known (released, its reclaim pending) and every release
        // answers why it is not done.
        self.reclaim(&id.uid, None).await
    }

    /// A tombstone read at start: kept (its reclaim, if pending, is finished by
    /// [`Node::finish_reclaims`] once every Device is known).
    pub(super) fn finish_release(
        &self,
        g: &mut MutexGuard<'_, Inner>,
        r: DeviceRecord,
        _problems: &mut Vec<String>,
    ) {
        g.released.insert(r.id.uid.clone(), r);
    }
}

/// Drops the LUN of Device `key` from Target `t`'s engine.
async fn release_lun(g: &Inner, t: &str, key: &str, force: bool) -> Result<(), NodeError> {
    let Some(h) = g.engine.as_ref().and_then(|e| e.target(t)) else {
        return Ok(());
    };
    let device = key.to_string();
    match h
        .request(|reply| TargetCmd::Release {
            device,
            force,
            reply,
        })
        .await
    {
        Ok(Ok(_)) | Ok(Err(DrainError::UnknownDevice(_))) => Ok(()),
        Ok(Err(e)) => Err(precondition("", e.to_string())),
        Err(e) => Err(NodeError::Internal(e.to_string())),
    }
}

/// Carries out the drain (no lock held: commands in flight may take a while).
async fn drain_through(path: Path, key: &str) -> Result<DrainAck, DrainFailure> {
    match path {
        Path::Target { name, tx, file } => {
            let device = key.to_string();
            let r = crate::engine::request(&tx, &name, |reply| TargetCmd::Drain { device, reply })
                .await
                .map_err(|e| DrainFailure::Interrupted(format!("{e}; retry the drain")))?;
            match r {
                Ok(ack) => Ok(ack),
                // The target has no LUN on it after all: the store alone needs the flush.
                Err(DrainError::UnknownDevice(_)) => {
                    Box::pin(drain_through(Path::File(file), key)).await
                }
                Err(DrainError::Flush { source, .. }) => Err(DrainFailure::Flush {
                    device: key.to_string(),
                    message: source.to_string(),
                }),
                Err(e) => Err(DrainFailure::Interrupted(e.to_string())),
            }
        }
        Path::File(store) => {
            let started = Instant::now();
            let f = match store {
                Store::Open(f) => f,
                Store::Closed(path) => Arc::new(open_to_flush(key, path).await?),
            };
            let synced = tokio::task::spawn_blocking(move || f.sync_data())
                .await
                .map_err(|e| DrainFailure::Interrupted(e.to_string()))?;
            synced.map_err(|e| DrainFailure::Flush {
                device: key.to_string(),
                message: e.to_string(),
            })?;
            Ok(DrainAck::now(None, Vec::new(), 0, 0, started.elapsed()))
        }
    }
}

/// Opens the store of a Device that is not open, read only, to fdatasync it (that flushes
/// whatever the file or device holds unwritten, whoever wrote it). A store that cannot be
/// opened is not flushed: the drain fails, to be retried, and never claims a flush.
async fn open_to_flush(key: &str, path: std::path::PathBuf) -> Result<std::fs::File, DrainFailure> {
    let opened = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let f = std::fs::OpenOptions::new()
            .read(true)
            // A FIFO planted at the path must not block the open.
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)?;
        let t = f.metadata()?.file_type();
        if !t.is_file() && !t.is_block_device() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither a regular file nor a block device",
            ));
        }
        Ok((f, path))
    })
    .await
    .map_err(|e| DrainFailure::Interrupted(e.to_string()))?;
    match opened {
        Ok((f, path)) => {
            tracing::info!(
                device = %key, path = %path.display(),
                "drain: the store was not open; opened it to flush it"
            );
            Ok(f)
        }
        Err(e) => Err(DrainFailure::Interrupted(format!(
            "Device {key}: its store is not open (it could not be opened when the agent \
             started) and opening it now to flush it failed: {e}; nothing was flushed. The \
             drain succeeds once the store can be opened"
        ))),
    }
}
