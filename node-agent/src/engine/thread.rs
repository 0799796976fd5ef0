//! A target's engine thread: its own ring, its own LUNs, the sessions handed to it, and the
//! commands the rest of the agent sends it.

use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::config::{LunConfig, TargetConfig};
use super::conn::{self, Attach, Host, Sessions};
use super::identity::AgentId;
use super::target::{DrainReport, TargetState};
use crate::iscsi::discovery::DiscoveryEntry;
use crate::ring;
use crate::store::OpenedStore;

/// What the rest of the agent asks of a target's thread.
pub enum TargetCmd {
    /// Serve a connection that logged in to this target.
    Attach(Box<Attach>),
    /// Fence the LUNs of a Device, finish what was accepted, flush; answer = acknowledgement.
    Drain {
        device: String,
        reply: oneshot::Sender<Result<DrainReport, String>>,
    },
    /// Close a drained Device's store and drop its LUNs.
    Release {
        device: String,
        reply: oneshot::Sender<Result<Vec<u64>, String>>,
    },
    /// Drain everything, close every session, stop the thread.
    Shutdown {
        reply: oneshot::Sender<Vec<Result<DrainReport, String>>>,
    },
}

/// The handle of a running target thread.
pub struct TargetHandle {
    name: String,
    tx: mpsc::UnboundedSender<TargetCmd>,
    thread: JoinHandle<()>,
}

impl TargetHandle {
    /// Starts the thread of `config` over its opened stores.
    pub fn spawn(
        config: Arc<TargetConfig>,
        stores: Vec<(LunConfig, OpenedStore)>,
        keepalive: Duration,
        agent: AgentId,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let name = config.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tgt-{}", config.name.replace('/', ".")))
            .spawn(move || run(config, stores, keepalive, agent, rx))?;
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

    /// Drains, closes and joins the thread; the drain reports of its Devices.
    pub fn shutdown(self) -> Vec<Result<DrainReport, String>> {
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send(TargetCmd::Shutdown { reply }).is_ok();
        let reports = if sent {
            rx.blocking_recv()
                .unwrap_or_else(|_| vec![Err("the target thread stopped before answering".into())])
        } else {
            vec![Err("the target thread is gone".into())]
        };
        if self.thread.join().is_err() {
            return vec![Err("the target thread panicked".into())];
        }
        reports
    }
}

fn run(
    config: Arc<TargetConfig>,
    stores: Vec<(LunConfig, OpenedStore)>,
    keepalive: Duration,
    agent: AgentId,
    mut rx: mpsc::UnboundedReceiver<TargetCmd>,
) {
    let rt = match ring::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(target = %config.name, "{e}");
            // Answer whoever waits, so shutdown does not hang.
            while let Some(cmd) = rx.blocking_recv() {
                if let TargetCmd::Shutdown { reply } = cmd {
                    let _ = reply.send(vec![Err(e.to_string())]);
                    return;
                }
            }
            return;
        }
    };
    rt.block_on(async move {
        let state = Rc::new(TargetState::new((*config).clone(), stores, &agent));
        let sessions = Rc::new(Sessions::new(keepalive));
        // What SendTargets shows inside a normal session: this target only.
        let entries = Rc::new(vec![DiscoveryEntry {
            iqn: config.iqn.clone(),
            portals: Vec::new(),
            acl: config.acl.clone(),
        }]);
        let host = Host::Target(state.clone(), entries);
        while let Some(cmd) = rx.recv().await {
            match cmd {
                TargetCmd::Attach(a) => conn::start(host.clone(), sessions.clone(), *a),
                TargetCmd::Drain { device, reply } => {
                    let st = state.clone();
                    ring::spawn(async move {
                        let r = st.drain_device(&device).await.map_err(|e| e.to_string());
                        let _ = reply.send(r);
                    });
                }
                TargetCmd::Release { device, reply } => {
                    let _ = reply.send(state.release_device(&device).map_err(|e| e.to_string()));
                }
                TargetCmd::Shutdown { reply } => {
                    let reports = state
                        .drain_all()
                        .await
                        .into_iter()
                        .map(|r| r.map_err(|e| e.to_string()))
                        .collect();
                    sessions.close_all().await;
                    let _ = reply.send(reports);
                    return;
                }
            }
        }
    });
}
