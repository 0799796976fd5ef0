//! What this node serves, and the one place that changes it: Devices (opened backing stores)
//! and Targets (engine threads over them), applied, removed, drained and released by
//! idempotent calls. The agent API and the standalone mode both drive it; in cluster mode it
//! persists what it was told (`state`) and serves it again at start, before any call.
//!
//! Rules (the agent API's contract, `agent-api/`):
//! - objects are identified by uid; a request with an older generation changes nothing;
//! - a Device is used by at most one Target; its LUN keeps the Device's drain state (a fenced
//!   Device stays fenced through Target updates and agent restarts);
//! - a released Device's uid is never served again.
//!
//! Where each part is:
//! - `devices.rs`, `targets.rs`: applying and removing Devices and Targets; `grow.rs` a
//!   Device's store growing, `ownership.rs` who may open which store;
//! - `delete.rs`: the delete protocol (drain, release); `reclaim.rs` removing or erasing a
//!   released Device's store; `stop.rs` a Target's engine stopping outside the node's lock;
//! - `views.rs`: what the node reports; `error.rs`: why a call was refused;
//! - `records.rs`, `state.rs`, `restore.rs`: what the node was told, kept under the data dir
//!   and served again at start; `reservations.rs` a Device's persisted SCSI reservations; `datadir.rs`, `agent_id.rs`: the data dir's own identity and
//!   the agent's.

mod agent_id;
pub mod datadir;
mod delete;
mod devices;
mod error;
mod grow;
mod ownership;
mod reclaim;
pub mod records;
mod reservations;
mod restore;
pub mod snapshot_records;
pub mod snapshots;
pub mod state;
mod stop;
mod targets;
mod views;

pub use datadir::DataDirReport;
pub use delete::{DrainFailure, ReleaseOutcome};
pub use error::NodeError;
pub use snapshots::SnapshotView;
pub use views::{DeviceView, NodeView, TargetView};

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::engine::config::DeviceIdentity;
use crate::engine::{Engine, EngineError, EngineOptions};
use agent_id::AgentId;
use error::precondition;
use ownership::StoreKey;
use records::{DeviceRecord, TargetRecord};
use state::StateStore;

/// How the node serves.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub engine: EngineOptions,
    /// Where file-backed Devices (and, when persisting, the agent's state) live.
    pub data_dir: PathBuf,
    /// Block devices Devices may use.
    pub allow_block: Vec<PathBuf>,
    /// Keep what the node is told under the data dir and serve it again at start.
    pub persist: bool,
    /// This node's name, recorded in the data dir's identity (empty: not known).
    pub node_name: String,
}

/// An opened backing store.
#[derive(Debug)]
struct Opened {
    file: Arc<File>,
    len: u64,
    path: PathBuf,
    /// The file was created by this open.
    created: bool,
    identity: DeviceIdentity,
    /// What the store is (device and inode, or block device number): one owner each.
    key: StoreKey,
    /// A block device's exclusive (O_EXCL) descriptor, held while the Device is.
    claim: Option<Arc<File>>,
    /// Where its persistent reservations are kept (`reservations.rs`).
    reservations: PathBuf,
}

/// A Device the node holds (not released).
#[derive(Debug)]
struct DeviceEntry {
    record: DeviceRecord,
    /// None when the store could not be opened (after a restart; `open_error` says why).
    opened: Option<Opened>,
    open_error: Option<String>,
    /// The Target with a LUN on it.
    used_by: Option<String>,
}

struct Inner {
    /// None once shut down.
    engine: Option<Engine>,
    devices: BTreeMap<String, DeviceEntry>,
    /// Released Devices by uid.
    released: BTreeMap<String, DeviceRecord>,
    targets: BTreeMap<String, TargetRecord>,
    state: Option<StateStore>,
    wipes: reclaim::Wipes,
    /// Engines being stopped, by Target key (`stop.rs`).
    stopping: BTreeMap<String, stop::Stopping>,
}

/// The node: what it serves and what it was told.
pub struct Node {
    inner: Mutex<Inner>,
    /// Calls that change a Target take turns per Target (`stop.rs`).
    gates: stop::Gates,
    /// Names the Devices of manifests in their SCSI identity.
    agent: AgentId,
    data_dir: PathBuf,
    allow_block: Vec<PathBuf>,
    /// What the agent found in its data dir at start.
    data_dir_report: DataDirReport,
    /// Snapshots being taken (`snapshots.rs`).
    taking: snapshots::Taking,
}

impl Node {
    /// Binds the iSCSI portal and, when persisting, serves again what the state under the data
    /// dir holds. Returns the node and one line per object that could not be served again.
    pub async fn start(opts: NodeOptions) -> Result<(Node, Vec<String>), NodeError> {
        let engine = Engine::start(opts.engine.clone()).map_err(|e| match e {
            EngineError::Bind { .. } => precondition("--iscsi-listen", e.to_string()),
            e => NodeError::Internal(e.to_string()),
        })?;
        // First, before the agent writes anything there: is this the data dir it served from?
        let data_dir_report = datadir::load_or_create(&opts.data_dir, &opts.node_name)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        datadir::announce(&opts.data_dir, &opts.node_name, &data_dir_report);
        let state = if opts.persist {
            Some(StateStore::open(&opts.data_dir)?)
        } else {
            None
        };
        let agent = AgentId::load_or_create(&opts.data_dir)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        let node = Node {
            agent,
            inner: Mutex::new(Inner {
                engine: Some(engine),
                devices: BTreeMap::new(),
                released: BTreeMap::new(),
                targets: BTreeMap::new(),
                state,
                wipes: Default::default(),
                stopping: BTreeMap::new(),
            }),
            gates: Default::default(),
            data_dir: opts.data_dir,
            allow_block: opts.allow_block,
            data_dir_report,
            taking: Default::default(),
        };
        let problems = node.restore().await?;
        Ok((node, problems))
    }

    /// The iSCSI address initiators are told to use, when the node knows one.
    pub async fn advertised_portal(&self) -> Option<std::net::SocketAddr> {
        let g = self.inner.lock().await;
        let e = g.engine.as_ref()?;
        Some(std::net::SocketAddr::new(
            e.advertised_ip()?,
            e.default_port(),
        ))
    }

    /// What the agent found in its data dir at start.
    pub fn data_dir_report(&self) -> &DataDirReport {
        &self.data_dir_report
    }

    /// Stops every target (sessions answer what they accepted and close, stores are flushed;
    /// nothing is fenced: a restart is not a delete); later calls answer ShuttingDown.
    /// The state on disk is kept: a restarted agent serves the same targets again.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let engine = self.inner.lock().await.engine.take();
        let Some(engine) = engine else {
            return Ok(());
        };
        let mut first_err = None;
        for (name, r) in engine.shutdown().await {
            match r {
                Ok(rep) => {
                    match &rep.unfinished {
                        None => tracing::info!(
                            target = %name, sessions_closed = rep.sessions_closed,
                            "sessions answered what they had accepted and closed"
                        ),
                        Some(e) => {
                            tracing::error!(target = %name, "stop: {e}");
                            first_err
                                .get_or_insert(NodeError::DataLoss(format!("Target {name}: {e}")));
                        }
                    }
                    for (device, f) in rep.flushes {
                        match f {
                            Ok(took) => tracing::info!(
                                target = %name, %device, ms = took.as_millis() as u64,
                                "Device flushed"
                            ),
                            Err(e) => {
                                tracing::error!(target = %name, %device, "flush failed: {e}");
                                first_err.get_or_insert(NodeError::DataLoss(format!(
                                    "Target {name}: Device {device}: {e}"
                                )));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(target = %name, "{e}");
                    first_err.get_or_insert(NodeError::Internal(e.to_string()));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Inner {
    fn engine(&self) -> Result<&Engine, NodeError> {
        self.engine.as_ref().ok_or(NodeError::ShuttingDown)
    }

    fn engine_mut(&mut self) -> Result<&mut Engine, NodeError> {
        self.engine.as_mut().ok_or(NodeError::ShuttingDown)
    }

    fn save_device(&self, r: &DeviceRecord) -> Result<(), NodeError> {
        if let Some(s) = &self.state {
            s.save_device(r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_busy;
#[cfg(test)]
mod tests_grow;
#[cfg(test)]
mod tests_holes;
#[cfg(test)]
mod tests_reservations;
#[cfg(test)]
mod tests_restart;
#[cfg(test)]
mod tests_snapshots;
