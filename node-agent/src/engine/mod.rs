//! The engine: one thread with its own ring per Target, the acceptor that logs connections in
//! and hands them to their target's thread, the per-connection pump, and the drain.
//!
//! ```text
//!  acceptor thread (ring)            target thread "demo" (ring)       target thread "db" (ring)
//!  accept -> login -> lookup IQN --> Attach(conn) -> pump per session  ...
//!                  \-> discovery (SendTargets) answered here
//! ```

pub mod acceptor;
pub mod config;
pub mod conn;
pub mod drain;
pub mod framing;
pub mod identity;
pub mod memory;
pub mod outbox;
pub mod target;
mod thread;
mod tmf;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use target::{DrainError, DrainReport};
pub use thread::{TargetCmd, TargetHandle};

use crate::store::{self, StoreError};
use config::TargetConfig;

/// How the agent serves.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The iSCSI portal (every target is reachable through it).
    pub listen: SocketAddr,
    /// Where file-backed Devices live.
    pub data_dir: PathBuf,
    /// Block devices Devices may use.
    pub allow_block: Vec<PathBuf>,
    /// Idle time after which a connection is pinged (NOP-In).
    pub keepalive: std::time::Duration,
}

/// Why the agent could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("Target {target}: LUN {lun} (Device {device}): {source}")]
    Store {
        target: String,
        lun: u64,
        device: String,
        #[source]
        source: StoreError,
    },
    #[error("starting a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("no target could be started")]
    NothingServed,
    #[error("Target {target}: {message}")]
    Drain { target: String, message: String },
    #[error("the agent's identity: {0}")]
    Identity(#[from] identity::IdentityError),
}

/// What the acceptor knows of a target: enough to log an initiator in and hand it over.
#[derive(Clone)]
pub struct DirectoryEntry {
    pub config: Arc<TargetConfig>,
    pub handle: tokio::sync::mpsc::UnboundedSender<TargetCmd>,
}

/// Targets by IQN (lower case: IQNs compare case-insensitively).
pub type Directory = BTreeMap<String, DirectoryEntry>;

/// The running agent.
pub struct Agent {
    acceptor: acceptor::AcceptorHandle,
    targets: Vec<TargetHandle>,
}

impl Agent {
    /// Opens every target's stores, starts one engine thread per target and the acceptor.
    /// A target whose store cannot be opened is reported and left out; the rest are served.
    pub fn start(opts: AgentOptions, configs: Vec<TargetConfig>) -> Result<Agent, EngineError> {
        let listener =
            std::net::TcpListener::bind(opts.listen).map_err(|source| EngineError::Bind {
                addr: opts.listen,
                source,
            })?;
        let agent_id = identity::AgentId::load_or_create(&opts.data_dir)?;
        let mut targets = Vec::new();
        let mut directory = Directory::new();
        for cfg in configs {
            let mut stores = Vec::new();
            let mut failed = None;
            for l in &cfg.luns {
                match store::open_store(&l.store, &opts.data_dir, &opts.allow_block) {
                    Ok(s) => stores.push((l.clone(), s)),
                    Err(source) => {
                        failed = Some(EngineError::Store {
                            target: cfg.name.clone(),
                            lun: l.lun,
                            device: l.device.clone(),
                            source,
                        });
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                tracing::error!("{e}; the target is not served");
                continue;
            }
            for (l, s) in &stores {
                tracing::info!(
                    target = %cfg.name, lun = l.lun, device = %l.device,
                    path = %s.path.display(), bytes = s.len, created = s.created,
                    direct_io = l.store.direct, "LUN ready"
                );
            }
            let config = Arc::new(cfg);
            let handle = TargetHandle::spawn(config.clone(), stores, opts.keepalive, agent_id)
                .map_err(EngineError::Thread)?;
            directory.insert(
                config.iqn.to_ascii_lowercase(),
                DirectoryEntry {
                    config: config.clone(),
                    handle: handle.sender(),
                },
            );
            tracing::info!(
                target = %config.name, iqn = %config.iqn, portal = %opts.listen,
                luns = config.luns.len(), "Target ready"
            );
            targets.push(handle);
        }
        if targets.is_empty() {
            return Err(EngineError::NothingServed);
        }
        crate::metrics::get().targets.set(targets.len() as i64);
        let acceptor =
            acceptor::spawn(listener, Arc::new(directory)).map_err(EngineError::Thread)?;
        Ok(Agent { acceptor, targets })
    }

    /// Stops accepting, then drains every target (fence, finish accepted commands, flush),
    /// closes its sessions and stops its thread. Reports the first target that failed to drain.
    pub fn shutdown(self) -> Result<(), EngineError> {
        self.acceptor.stop();
        let mut first_err = None;
        for t in self.targets {
            let name = t.name().to_string();
            for r in t.shutdown() {
                match r {
                    Ok(rep) => tracing::info!(
                        target = %name, device = %rep.device, drained_commands = rep.drained_commands,
                        ms = rep.duration.as_millis() as u64, "Device drained and flushed"
                    ),
                    Err(message) => {
                        tracing::error!(target = %name, "drain failed: {message}");
                        first_err.get_or_insert(EngineError::Drain {
                            target: name.clone(),
                            message,
                        });
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
