//! A target's engine thread: its own ring, its own LUNs, the sessions handed to it, and the
//! commands the rest of the agent sends it.

use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::config::{LunSetup, TargetConfig};
use super::conn::{self, Attach, Host, SessionInfo, Sessions};
use super::target::{DrainError, DrainReport, LunSnapshot, TargetState};
use crate::iscsi::login::AclPolicy;
use crate::ring;

/// What the rest of the agent asks of a target's thread.
pub enum TargetCmd {
    /// Serve a connection that logged in to this target.
    Attach(Box<Attach>),
    /// Fence the LUNs of a Device, finish what was accepted, flush; answer = acknowledgement.
    Drain {
        device: String,
        reply: oneshot::Sender<Result<DrainReport, DrainError>>,
    },
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
    /// New access list: SendTargets inside this target's sessions follows it, and sessions of
    /// initiators it no longer admits are closed.
    SetAcl(AclPolicy),
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

/// The handle of a running target thread.
pub struct TargetHandle {
    name: String,
    tx: mpsc::UnboundedSender<TargetCmd>,
    thread: JoinHandle<()>,
}

impl TargetHandle {
    /// Starts the thread of `config` over its LUNs.
    pub fn spawn(
        config: Arc<TargetConfig>,
        luns: Vec<LunSetup>,
        keepalive: Duration,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let name = config.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tgt-{}", config.name.replace('/', ".")))
            .spawn(move || run(config, luns, keepalive, rx))?;
        Ok(TargetHandle { name, tx, thread })
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

    /// Drains, closes and joins the thread.
    pub async fn shutdown(self) -> Result<ShutdownReport, TargetGone> {
        let report = self.request(|reply| TargetCmd::Shutdown { reply }).await;
        let name = self.name.clone();
        let thread = self.thread;
        // A thread stuck in a store that hangs is left behind (the process exit ends it)
        // rather than holding the shutdown.
        let join = tokio::task::spawn_blocking(move || thread.join());
        let joined = match tokio::time::timeout(Duration::from_secs(10), join).await {
            Ok(j) => j,
            Err(_) => {
                tracing::error!(target = %name, "the engine thread did not stop; leaving it");
                return report;
            }
        };
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!(target = %name, "the engine thread panicked");
            return Err(TargetGone(name));
        }
        report
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

fn run(
    config: Arc<TargetConfig>,
    luns: Vec<LunSetup>,
    keepalive: Duration,
    mut rx: mpsc::UnboundedReceiver<TargetCmd>,
) {
    let rt = match ring::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(target = %config.name, "{e}");
            // Drop the commands (their callers see the thread gone) until told to stop.
            while let Some(cmd) = rx.blocking_recv() {
                if let TargetCmd::Shutdown { reply } = cmd {
                    let _ = reply.send(ShutdownReport {
                        flushes: vec![(config.name.clone(), Err(e.to_string()))],
                        sessions_closed: 0,
                        unfinished: None,
                    });
                    return;
                }
            }
            return;
        }
    };
    rt.block_on(async move {
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
                TargetCmd::Release {
                    device,
                    force,
                    reply,
                } => {
                    let _ = reply.send(state.release_device(&device, force));
                }
                TargetCmd::SetLuns { add, remove, reply } => {
                    let changed = !add.is_empty() || !remove.is_empty();
                    for lun in remove {
                        state.remove_lun(lun);
                    }
                    let failed = add
                        .into_iter()
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
                TargetCmd::SetAcl(acl) => {
                    sessions.close_disallowed(&acl);
                    state.set_acl(acl);
                }
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
                    let limit = super::target::drain_timeout();
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
    });
}
