//! The last step of a release under reclaim policy Delete: the file of a released Device is
//! removed, or its block device erased (`store::wipe`), so the next tenant of the path or the
//! disk never reads this one's data.
//!
//! Until that step has completed the Device stays known as released with its reclaim pending
//! (in memory and in its tombstone): every later ReleaseDevice tries again and, while it cannot
//! complete, fails naming the path and the OS error, so the operator keeps its finalizer and
//! says why. No other Device may take the path meanwhile, and a restarted agent finishes a
//! pending removal only when no Device uses the path.
//!
//! Erasing a large disk takes a while: it runs on its own thread, a release waits for it a few
//! seconds (outside the node's lock) and otherwise answers how far it got; a later release
//! collects the outcome.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{MutexGuard, watch};

use super::error::{NodeError, precondition};
use super::records::DeviceRecord;
use super::{Inner, Node, ReleaseOutcome};
use crate::store::StoreSource;
use crate::store::wipe::{WipeProgress, WipeReport, wipe_block_device};

/// How long one release waits for an erase before answering "not yet" (under the operator's
/// 10 s deadline for a release).
const WIPE_WAIT: Duration = Duration::from_secs(5);

type WipeOutcome = Option<Result<WipeReport, String>>;

/// An erase running (or finished, not yet collected).
struct WipeJob {
    progress: Arc<WipeProgress>,
    outcome: watch::Receiver<WipeOutcome>,
}

/// Erases under way, by Device uid.
#[derive(Default)]
pub(super) struct Wipes {
    jobs: BTreeMap<String, Arc<WipeJob>>,
}

impl Wipes {
    /// The erase of `path` for Device `uid`: the one running, else a new one.
    fn start(&mut self, uid: &str, path: PathBuf) -> Arc<WipeJob> {
        if let Some(j) = self.jobs.get(uid) {
            return Arc::clone(j);
        }
        let progress = Arc::new(WipeProgress::default());
        let (tx, outcome) = watch::channel(None);
        let p = Arc::clone(&progress);
        tokio::task::spawn_blocking(move || {
            let r = wipe_block_device(&path, &p).map_err(|e| e.to_string());
            let _ = tx.send(Some(r));
        });
        let job = Arc::new(WipeJob { progress, outcome });
        self.jobs.insert(uid.to_owned(), Arc::clone(&job));
        job
    }
}

/// The Delete of `r` is still owed (never for a file the agent adopted: that one is kept).
fn pending(r: &DeviceRecord) -> bool {
    r.reclaim_delete && !r.drain.file_removed && !r.drain.wiped && !r.adopted_kept()
}

impl Node {
    fn outcome(&self, r: &DeviceRecord) -> ReleaseOutcome {
        ReleaseOutcome {
            known: true,
            file_removed: r.drain.file_removed,
            wiped: r.drain.wiped,
            backing_path: self.backing_path(r).display().to_string(),
            adopted_kept: r.adopted_kept(),
        }
    }

    /// Completes the release of the released Device `uid` under its reclaim policy (the one
    /// in effect now: `reclaim_delete`, while nothing was reclaimed yet, else the recorded one).
    pub(super) async fn reclaim(
        &self,
        uid: &str,
        reclaim_delete: Option<bool>,
    ) -> Result<ReleaseOutcome, NodeError> {
        let (job, key, path) = {
            let mut g = self.inner.lock().await;
            let Some(mut r) = g.released.get(uid).cloned() else {
                return Err(NodeError::Internal(format!("no released Device {uid}")));
            };
            if let Some(d) = reclaim_delete.filter(|d| *d != r.reclaim_delete)
                && !r.drain.file_removed
                && !r.drain.wiped
            {
                r.reclaim_delete = d;
                g.save_device(&r)?;
                g.released.insert(uid.to_owned(), r.clone());
            }
            if !pending(&r) {
                return Ok(self.outcome(&r));
            }
            let key = r.id.key();
            let path = self.backing_path(&r);
            match &r.store.source {
                StoreSource::File { .. } => {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(NodeError::Internal(format!(
                                "Device {key} is released, but its file {} could not be removed \
                                 (reclaimPolicy Delete): {e}; the node keeps it known and the \
                                 release completes when a later call can remove it",
                                path.display()
                            )));
                        }
                    }
                    r.drain.file_removed = true;
                    g.save_device(&r)?;
                    tracing::info!(device = %key, path = %path.display(), "file removed (reclaimPolicy Delete)");
                    let out = self.outcome(&r);
                    g.released.insert(uid.to_owned(), r);
                    return Ok(out);
                }
                StoreSource::Block { .. } => (g.wipes.start(uid, path.clone()), key, path),
            }
        };
        let mut rx = job.outcome.clone();
        let done = tokio::time::timeout(WIPE_WAIT, rx.wait_for(Option::is_some))
            .await
            .map(|r| r.map(|v| v.clone()));
        let result = match done {
            Err(_) => {
                let (done, total) = job.progress.get();
                return Err(NodeError::Internal(format!(
                    "Device {key} is released; its block device {} is being erased \
                     (reclaimPolicy Delete): {} of {} MiB so far; the release completes once \
                     that is done",
                    path.display(),
                    done >> 20,
                    total >> 20
                )));
            }
            Ok(Err(_)) => Err("the erase stopped unexpectedly".to_owned()),
            Ok(Ok(v)) => v.unwrap_or_else(|| Err("no outcome".to_owned())),
        };
        let mut g = self.inner.lock().await;
        g.wipes.jobs.remove(uid);
        let report = result.map_err(|e| {
            NodeError::Internal(format!(
                "Device {key} is released, but erasing its block device failed (reclaimPolicy \
                 Delete): {e}; the node keeps it known and the release tries again at the next call"
            ))
        })?;
        let Some(mut r) = g.released.get(uid).cloned() else {
            return Err(NodeError::Internal(format!("no released Device {uid}")));
        };
        r.drain.wiped = true;
        g.save_device(&r)?;
        tracing::info!(
            device = %key, path = %path.display(), bytes = report.bytes,
            discarded = report.discarded, zeroed = report.zeroed,
            millis = report.duration.as_millis() as u64, "block device erased (reclaimPolicy Delete)"
        );
        let out = self.outcome(&r);
        g.released.insert(uid.to_owned(), r);
        Ok(out)
    }

    /// Refuses a new Device on the path of a released one whose removal or erase is pending.
    pub(super) fn check_reclaim_pending(
        &self,
        g: &Inner,
        rec: &DeviceRecord,
    ) -> Result<(), NodeError> {
        let path = self.backing_path(rec);
        match g
            .released
            .values()
            .find(|r| pending(r) && self.backing_path(r) == path)
        {
            Some(r) => Err(precondition(
                match rec.store.source {
                    StoreSource::File { .. } => "spec.source.file.path",
                    StoreSource::Block { .. } => "spec.source.block.path",
                },
                format!(
                    "{} is still being reclaimed (reclaimPolicy Delete) for the released Device \
                     {} (uid {}); retry once its release has completed",
                    path.display(),
                    r.id.key(),
                    r.id.uid
                ),
            )),
            None => Ok(()),
        }
    }

    /// At start, once every Device is known: finishes the reclaims a crash or a failure left
    /// pending, except where a Device now uses the path (that is reported, never removed).
    pub(super) fn finish_reclaims(
        &self,
        g: &mut MutexGuard<'_, Inner>,
        problems: &mut Vec<String>,
    ) {
        let owed: Vec<DeviceRecord> = g
            .released
            .values()
            .filter(|r| pending(r))
            .cloned()
            .collect();
        for mut r in owed {
            let key = r.id.key();
            let path = self.backing_path(&r);
            if let Some(user) = g
                .devices
                .values()
                .find(|d| self.backing_path(&d.record) == path)
            {
                problems.push(format!(
                    "Device {key} (released): not reclaiming {}: Device {} uses it now",
                    path.display(),
                    user.record.id.key()
                ));
                continue;
            }
            match &r.store.source {
                StoreSource::File { .. } => match std::fs::remove_file(&path) {
                    Ok(()) => r.drain.file_removed = true,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        r.drain.file_removed = true
                    }
                    Err(e) => {
                        problems.push(format!(
                            "Device {key} (released): removing {}: {e}",
                            path.display()
                        ));
                        continue;
                    }
                },
                StoreSource::Block { .. } => {
                    // Started now; the next release of this Device collects it.
                    g.wipes.start(&r.id.uid, path);
                    continue;
                }
            }
            if let Err(e) = g.save_device(&r) {
                problems.push(format!("Device {key}: {e}"));
            }
            g.released.insert(r.id.uid.clone(), r);
        }
    }
}
