//! A target's engine: a task on one of the agent's ring threads (`super::rings`) with its own
//! LUNs, the sessions handed to it, and the commands the rest of the agent sends it.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::config::{LunSetup, TargetConfig};
use super::conn::{self, Attach};
use super::device_barrier::{BarrierError, HoldAck};
use super::device_drain::DrainError;
use super::drain::DrainAck;
use super::rings;
use super::sessions::{Host, SessionInfo, Sessions};
use super::target_state::{LunSnapshot, TargetState};
use super::token_bucket::QosLimits;
use crate::iscsi::login::AclPolicy;
use crate::ring;

/// What the rest of the agent asks of a target's thread.
pub enum TargetCmd {
    /// Serve a connection that logged in to this target.
    Attach(Box<Attach>),
    /// Fence the LUNs of a Device, finish what was accepted, flush; answer = acknowledgement.
    Drain {
        device: String,
        reply: oneshot::Sender<Result<DrainAck, DrainError>>,
    },
    /// A snapshot: hold the writes of a Device (reads go on), finish those accepted, flush;
    /// answer once held. Writes stay held until [`TargetCmd::Resume`].
    Hold {
        device: String,
        reply: oneshot::Sender<Result<HoldAck, BarrierError>>,
    },
    /// Let the writes held for a snapshot go on.
    Resume { device: String },
    /// Close a drained Device's store and drop its LUNs (`force`: even if not flushed).
    Release {
        device: String,
        force: bool,
        reply: oneshot::Sender<Result<Vec<u64>, DrainError>>,
    },
    /// Serve these LUNs (replacing LUNs of the same number) and stop serving those; the
    /// initiators learn the inventory changed. Answers the LUNs that could not be added.
    SetLuns {
        add: Vec<LunSetup>,
        remove: Vec<u64>,
        reply: oneshot::Sender<Vec<u64>>,
    },
    /// A Device's store was grown to `len` bytes: its LUNs serve the new capacity at once and
    /// their initiators learn it (CAPACITY DATA HAS CHANGED). Answers the LUNs that grew.
    Grow {
        device: String,
        len: u64,
        reply: oneshot::Sender<Vec<u64>>,
    },
    /// New access list: SendTargets inside this target's sessions follows it, and sessions of
    /// initiators it no longer admits are closed.
    SetAcl(AclPolicy),
    /// New weight in its ring's fair share (`spec.qos.weight`), for the sessions it has.
    SetWeight(u32),
    /// New QoS limits, in force at once for the commands waiting and the next ones.
    SetQos(QosLimits),
    /// What the target serves now.
    Status {
        reply: oneshot::Sender<TargetSnapshot>,
    },
    /// Stop: every session stops reading, finishes and answers what it accepted, and closes;
    /// then every store is flushed and the thread ends. Nothing is fenced (a restart is not a
    /// delete).
    Shutdown {
        reply: oneshot::Sender<ShutdownReport>,
    },
}

/// A target as the agent's status shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetSnapshot {
    pub luns: Vec<LunSnapshot>,
    pub sessions: Vec<SessionInfo>,
}

/// What stopping a target did.
#[derive(Debug, Default)]
pub struct ShutdownReport {
    /// Each Device's flush: how long it took, or why it failed.
    pub flushes: Vec<(String, Result<Duration, String>)>,
    pub sessions_closed: usize,
    /// Set when commands were still running past the drain timeout (a store that does not
    /// answer): their answers were never sent, their data may not be on disk.
    pub unfinished: Option<String>,
}

/// The target's thread is gone (stopped, or it could not start its ring).
#[derive(Debug, thiserror::Error)]
#[error("the engine thread of Target {0} is not running")]
pub struct TargetGone(pub String);

/// The handle of a running target.
pub struct TargetHandle {
    name: String,
    tx: mpsc::UnboundedSender<TargetCmd>,
    /// Answered when the target's task has ended (dropped unanswered if it panicked).
    done: oneshot::Receiver<()>,
}

impl TargetHandle {
    /// Starts `config` over its LUNs as a task on one of the ring threads.
    pub fn spawn(
        config: Arc<TargetConfig>,
        luns: Vec<LunSetup>,
        keepalive: Duration,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ended, done) = oneshot::channel();
        let name = config.name.clone();
        rings::run(Box::new(move |ring| match ring {
            Ok(()) => {
                ring::spawn(async move {
                    serve(config, luns, keepalive, rx).await;
                    let _ = ended.send(());
                });
            }
            Err(e) => {
                std::thread::spawn(move || {
                    refuse(&config.name, &e, rx);
                    let _ = ended.send(());
                });
            }
        }))?;
        Ok(TargetHandle { name, tx, done })
    }

    /// The Target's `namespace/name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A sender of commands to the thread.
    pub fn sender(&self) -> mpsc::UnboundedSender<TargetCmd> {
        self.tx.clone()
    }

    /// Sends the command `make` builds around a reply channel and waits for the answer.
    pub async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> TargetCmd,
    ) -> Result<T, TargetGone> {
        request(&self.tx, &self.name, make).await
    }

    /// Drains, closes and waits until the target's task has ended.
    pub async fn shutdown(self) -> Result<ShutdownReport, TargetGone> {
        let report = self.request(|reply| TargetCmd::Shutdown { reply }).await;
        let name = self.name.clone();
        // A task stuck in a store that hangs is left behind (the process exit ends it)
        // rather than holding the shutdown.
        match tokio::time::timeout(Duration::from_secs(10), self.done).await {
            Err(_) => {
                tracing::error!(target = %name, "the target's engine did not stop; leaving it");
                report
            }
            Ok(Err(_)) => {
                tracing::error!(target = %name, "the target's engine panicked");
                Err(TargetGone(name))
            }
            Ok(Ok(())) => report,
        }
    }
}

/// Sends a command to a target thread through `tx` and waits for the answer.
pub async fn request<T>(
    tx: &mpsc::UnboundedSender<TargetCmd>,
    name: &str,
    make: impl FnOnce(oneshot::Sender<T>) -> TargetCmd,
) -> Result<T, TargetGone> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply))
        .map_err(|_| TargetGone(name.to_string()))?;
    rx.await.map_err(|_| TargetGone(name.to_string()))
}

/// A target whose ring thread has no ring: drops its commands (their callers see it gone)
/// until told to stop.
fn refuse(name: &str, why: &str, mut rx: mpsc::UnboundedReceiver<TargetCmd>) {
    tracing::error!(target = %name, "{why}");
    while let Some(cmd) = rx.blocking_recv() {
        if let TargetCmd::Shutdown { reply } = cmd {
            let _ = reply.send(ShutdownReport {
                flushes: vec![(name.to_string(), Err(why.to_string()))],
                sessions_closed: 0,
                unfinished: None,
            });
            return;
        }
    }
}

/// The target's task: serves its commands until told to stop (or its handle is dropped,
/// which cuts its sessions).
async fn serve(
    config: Arc<TargetConfig>,
    luns: Vec<LunSetup>,
    keepalive: Duration,
    mut rx: mpsc::UnboundedReceiver<TargetCmd>,
) {
    let state = Rc::new(TargetState::new(&config, luns));
    let sessions = Rc::new(Sessions::new(keepalive));
    let host = Host::Target(state.clone());
    while let Some(cmd) = rx.recv().await {
        match cmd {
            TargetCmd::Attach(a) => conn::start(host.clone(), sessions.clone(), *a),
            TargetCmd::Drain { device, reply } => {
                let st = state.clone();
                ring::spawn(async move {
                    let _ = reply.send(st.drain_device(&device).await);
                });
            }
            TargetCmd::Hold { device, reply } => {
                let st = state.clone();
                ring::spawn(async move {
                    let held = st.hold_writes(&device).await;
                    // Nobody waits for the answer any more: nobody would lower the barrier.
                    if reply.send(held).is_err() {
                        st.resume_writes(&device);
                    }
                });
            }
            TargetCmd::Resume { device } => {
                let waited = state.resume_writes(&device);
                tracing::info!(target = %state.name, device, waited, "snapshot barrier lowered");
            }
            TargetCmd::Release {
                device,
                force,
                reply,
            } => {
                let _ = reply.send(state.release_device(&device, force));
            }
            TargetCmd::SetLuns { add, remove, reply } => {
                let changed = !add.is_empty() || !remove.is_empty();
                // A Device served afresh (re-applied) keeps its persistent reservations:
                // the new unit starts from the old one's state, not from the file.
                let mut carried = BTreeMap::new();
                for lun in remove {
                    if let Some(s) = state.slot(lun) {
                        carried.insert(s.device.clone(), s.lu.reservations_record());
                    }
                    state.remove_lun(lun);
                }
                let failed = add
                    .into_iter()
                    .map(|mut l| {
                        if let Some(r) = carried.remove(&l.config.device) {
                            l.reservations.restored = Some(r);
                        }
                        l
                    })
                    .filter_map(|l| {
                        let lun = l.config.lun;
                        (!state.add_lun(l)).then_some(lun)
                    })
                    .collect();
                if changed {
                    state.inventory_changed();
                }
                let _ = reply.send(failed);
            }
            TargetCmd::Grow { device, len, reply } => {
                let _ = reply.send(state.grow_device(&device, len));
            }
            TargetCmd::SetAcl(acl) => {
                sessions.close_disallowed(&acl);
                state.set_acl(acl);
            }
            TargetCmd::SetWeight(weight) => state.share.set_weight(weight),
            TargetCmd::SetQos(limits) => state.throttle.set(limits),
            TargetCmd::Status { reply } => {
                let _ = reply.send(TargetSnapshot {
                    luns: state.lun_snapshots(),
                    sessions: sessions.infos(),
                });
            }
            TargetCmd::Shutdown { reply } => {
                // A stop is not a delete: nothing is fenced. The sessions stop reading,
                // finish and answer what they accepted, and close; the initiators
                // reconnect (to the restarted agent) and send the rest again.
                // A store that does not answer cannot hold the stop: past the drain
                // timeout the connections are cut and the stop goes on, reported.
                let sessions_closed = sessions.count();
                let limit = super::device_drain::drain_timeout();
                let unfinished = match tokio::time::timeout(limit, sessions.stop_all()).await {
                    Ok(()) => None,
                    Err(_) => {
                        sessions.cut_all();
                        Some(format!(
                            "commands still running after {} s were not answered",
                            limit.as_secs()
                        ))
                    }
                };
                let flushes = state
                    .flush_all()
                    .await
                    .into_iter()
                    .map(|(d, r)| (d, r.map_err(|e| e.to_string())))
                    .collect();
                let _ = reply.send(ShutdownReport {
                    flushes,
                    sessions_closed,
                    unfinished,
                });
                return;
            }
        }
    }
    // Every handle is gone without a stop: the sessions are cut, as the end of a
    // target's thread cut them before targets shared rings.
    let limit = super::device_drain::drain_timeout();
    let _ = tokio::time::timeout(limit, sessions.close_all()).await;
}
