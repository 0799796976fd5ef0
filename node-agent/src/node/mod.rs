//! What this node serves, and the one place that changes it: Devices (opened backing stores)
//! and Targets (engine threads over them), applied, removed, drained and released by
//! idempotent calls. The agent API and the standalone mode both drive it; in cluster mode it
//! persists what it was told (`state`) and serves it again at start, before any call.
//!
//! Rules (the agent API's contract, `node-agent/proto`):
//! - objects are identified by uid; a request with an older generation changes nothing;
//! - a Device is used by at most one Target; its LUN keeps the Device's drain state (a fenced
//!   Device stays fenced through Target updates and agent restarts);
//! - a released Device's uid is never served again.
//!
//! The delete protocol (drain, release) is in `delete.rs`.

pub mod datadir;
mod delete;
mod grow;
mod ownership;
mod reclaim;
pub mod records;
pub mod state;
mod stop;

pub use datadir::DataDirReport;
pub use delete::{DrainFailure, ReleaseOutcome};

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::engine::config::{DeviceIdentity, LunSetup};
use crate::engine::drain::DrainState;
use crate::engine::identity::AgentId;
use crate::engine::{Engine, EngineError, EngineOptions, LunSnapshot, SessionInfo};
use crate::store;
use ownership::{Missing, StoreKey, check_reserved};
use records::{Ack, DeviceRecord, DrainPhase, ObjectId, TargetRecord};
use state::{StateError, StateStore};

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

/// Why a call was refused. The field names the API object's field (CRD path).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request itself is wrong; nothing changed.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The request is fine but the node's state forbids it now; nothing changed.
    #[error("{field}: {message}")]
    Precondition { field: String, message: String },
    /// Another Device holds the backing store; nothing changed.
    #[error("{field}: {message}")]
    InUse {
        field: String,
        message: String,
        /// `namespace/name` of the Device holding it.
        owner: String,
        owner_uid: String,
    },
    /// The Device was served before and its backing store is gone; nothing was created.
    #[error("{field}: {message}")]
    Missing { field: String, message: String },
    /// The Device's file could not grow (no room on the filesystem, a quota, the file-size
    /// limit); nothing changed: the old size is kept and served.
    #[error("{field}: {message}")]
    NoSpace { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// A flush or write failed: the Device is not flushed.
    #[error("{0}")]
    DataLoss(String),
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error("the agent could not record its state: {0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Internal(String),
}

fn invalid(field: &str, message: impl Into<String>) -> NodeError {
    NodeError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn precondition(field: &str, message: impl Into<String>) -> NodeError {
    NodeError::Precondition {
        field: field.into(),
        message: message.into(),
    }
}

/// A Device as the node reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceView {
    pub id: ObjectId,
    pub phase: DrainPhase,
    pub capacity_bytes: u64,
    pub identity: Option<DeviceIdentity>,
    pub backing_path: PathBuf,
    pub used_by: Option<String>,
    pub ack: Option<Ack>,
    pub fenced_commands: u64,
    /// Why it failed, or could not be opened.
    pub failure: Option<String>,
    /// The agent created its backing file (removed under Delete; an adopted one is kept).
    pub store_created: bool,
}

/// A Target as the node reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetView {
    pub id: ObjectId,
    pub iqn: String,
    pub port: u16,
    pub luns: Vec<LunSnapshot>,
    pub sessions: Vec<SessionInfo>,
}

/// Everything the node serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    pub devices: Vec<DeviceView>,
    pub targets: Vec<TargetView>,
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

    /// Opens (creating) a Device's backing store, or updates a Device already held.
    /// Returns whether the request was stale (older generation: nothing changed).
    pub async fn apply_device(&self, rec: DeviceRecord) -> Result<(bool, DeviceView), NodeError> {
        self.apply_device_served(rec, false).await
    }

    /// [`Node::apply_device`]; `served_before`: the Device was served before (the operator
    /// recorded its identity), so its store must exist: a missing one is refused, not created.
    pub async fn apply_device_served(
        &self,
        mut rec: DeviceRecord,
        served_before: bool,
    ) -> Result<(bool, DeviceView), NodeError> {
        check_reserved(&rec)?;
        let mut g = self.inner.lock().await;
        g.engine()?;
        let key = rec.id.key();
        if g.released.contains_key(&rec.id.uid) {
            return Err(precondition(
                "metadata.uid",
                format!(
                    "Device {key} (uid {}) was released on this node and is never served again",
                    rec.id.uid
                ),
            ));
        }
        let Some(e) = g.devices.get(&key) else {
            self.check_reclaim_pending(&g, &rec)?;
            let missing = if served_before {
                Missing::Refuse
            } else {
                Missing::Create
            };
            let opened = self.open(&g, &rec, missing, None)?;
            rec.store_created = opened.created;
            let mut entry = DeviceEntry {
                record: rec,
                opened: Some(opened),
                open_error: None,
                used_by: None,
            };
            g.save_device(&entry.record)?;
            log_ready(&entry);
            let view = device_view(&mut entry, None);
            g.devices.insert(key, entry);
            return Ok((false, view));
        };
        if e.record.id.uid != rec.id.uid {
            return Err(precondition(
                "metadata.uid",
                format!(
                    "this node still holds Device {key} with uid {}; drain and release it first",
                    e.record.id.uid
                ),
            ));
        }
        if rec.id.generation < e.record.id.generation {
            let view = g.device_view(&key).await;
            return Ok((true, view));
        }
        let change = grow::source_change(&e.record.store.source, &rec.store.source)?;
        if e.record.store.block_size != rec.store.block_size {
            return Err(invalid(
                "spec.blockSize",
                "is immutable; create a new Device for another block size",
            ));
        }
        let changed = !e.record.same_serving(&rec) || e.opened.is_none();
        let mut updated = e.record.clone();
        updated.id.generation = rec.id.generation;
        updated.reclaim_delete = rec.reclaim_delete;
        updated.store = rec.store;
        updated.write_cache = rec.write_cache;
        updated.thin = rec.thin;
        let mut reopened = if changed {
            // Known to this node: its store was served, so it must exist.
            let claim = e.opened.as_ref().and_then(|o| o.claim.clone());
            Some(self.open(&g, &updated, Missing::Refuse, claim)?)
        } else {
            None
        };
        // A larger file grows now (refused: nothing changed); a block device is sized again.
        let current = reopened.as_ref().or(e.opened.as_ref());
        let grown = match current {
            Some(o) => grow::store_len(o, &updated, change)?,
            None => None,
        };
        if let (Some(len), Some(o)) = (grown, reopened.as_mut()) {
            o.len = len;
        }
        g.save_device(&updated)?;
        let entry = g.devices.get_mut(&key).expect("checked above");
        entry.record = updated;
        if let Some(o) = reopened {
            entry.opened = Some(o);
            entry.open_error = None;
            log_ready(entry);
            // A served LUN picks up the new flags (its initiators see a fresh logical unit).
            if let (Some(t), DrainPhase::Running) =
                (entry.used_by.clone(), entry.record.drain.phase)
            {
                g.remap_device(&t, &key).await?;
            }
        } else if let (Some(len), Some(o)) = (grown, entry.opened.as_mut()) {
            let before = o.len;
            o.len = len;
            tracing::info!(device = %key, before, after = len, "Device grown");
            // Served: the LUN grows live (sessions stay; each nexus is told once).
            if let Some(t) = entry.used_by.clone() {
                g.grow_lun(&t, &key, len).await;
            }
        }
        let view = g.device_view(&key).await;
        Ok((false, view))
    }

    /// Serves a Target, or updates one already served. Returns whether the request was stale.
    pub async fn apply_target(&self, rec: TargetRecord) -> Result<(bool, TargetView), NodeError> {
        let key = rec.id.key();
        // Calls on one Target take turns; calls on others never wait for it (`stop.rs`).
        let _turn = self.gates.enter(&key).await;
        let mut g = self.inner.lock().await;
        g.engine()?;
        if let Some(old) = g.targets.get(&key)
            && old.id.uid == rec.id.uid
            && rec.id.generation < old.id.generation
        {
            let view = g.target_view(&key).await;
            return Ok((true, view));
        }
        if let Some((other, _)) = g
            .targets
            .iter()
            .find(|(k, t)| **k != key && t.iqn.eq_ignore_ascii_case(&rec.iqn))
        {
            return Err(precondition(
                "spec.iqn",
                format!("{} is already served by Target {other}", rec.iqn),
            ));
        }
        g.check_luns(&rec)?;
        let old = g.targets.get(&key).cloned();
        // Not running (an earlier call was cut short mid-restart): started afresh.
        let restart = g.engine()?.target(&key).is_none()
            || old.as_ref().is_none_or(|o| {
                o.id.uid != rec.id.uid
                    || !o.iqn.eq_ignore_ascii_case(&rec.iqn)
                    || o.port != rec.port
            });
        if let Some(state) = &g.state {
            state.save_target(&rec)?;
            if let Some(o) = old.as_ref().filter(|o| o.id.uid != rec.id.uid) {
                state.remove_target(&o.id.uid)?;
            }
        }
        if restart {
            return self.restart_target(g, rec, old).await;
        }
        g.update_target(old.as_ref().expect("not a restart"), &rec)
            .await?;
        g.targets.insert(key.clone(), rec);
        let view = g.target_view(&key).await;
        Ok((false, view))
    }

    /// Stops serving a Target (its sessions are closed, its commands finish, its Devices are
    /// flushed and stay open). Returns whether the node had it and how many sessions closed.
    /// The engine stops outside the node's lock (`stop.rs`).
    pub async fn remove_target(&self, id: &ObjectId) -> Result<(bool, usize), NodeError> {
        let key = id.key();
        let _turn = self.gates.enter(&key).await;
        let stop = {
            let mut g = self.inner.lock().await;
            g.engine()?;
            match g.targets.get(&key) {
                Some(t) if id.uid.is_empty() || t.id.uid == id.uid => {}
                _ => return Ok((false, 0)),
            }
            if let Some(s) = &g.state {
                s.remove_target(&id.uid)?;
            }
            let rec = g.targets.remove(&key).expect("checked above");
            g.begin_stop(&key, Some(&rec))
        };
        let Some(stop) = stop else {
            return Ok((true, 0));
        };
        let report = match stop.wait().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => return Err(NodeError::Internal(e.to_string())),
            None => return Ok((true, 0)),
        };
        tracing::info!(target = %key, sessions_closed = report.sessions_closed, "Target removed");
        Ok((true, report.sessions_closed))
    }

    /// Everything the node serves now.
    pub async fn view(&self) -> NodeView {
        let mut g = self.inner.lock().await;
        let mut out = NodeView::default();
        let keys: Vec<String> = g.targets.keys().cloned().collect();
        for k in keys {
            out.targets.push(g.target_view(&k).await);
        }
        let keys: Vec<String> = g.devices.keys().cloned().collect();
        for k in keys {
            out.devices.push(g.device_view(&k).await);
        }
        for r in g.released.values() {
            out.devices.push(DeviceView {
                id: r.id.clone(),
                phase: DrainPhase::Released,
                capacity_bytes: 0,
                identity: None,
                backing_path: self.backing_path(r),
                used_by: None,
                ack: r.drain.ack.clone(),
                fenced_commands: r.drain.ack.as_ref().map_or(0, |a| a.fenced_commands),
                failure: None,
                store_created: r.store_created,
            });
        }
        out
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

    /// Serves again what the state holds (persisting nodes only).
    async fn restore(&self) -> Result<Vec<String>, NodeError> {
        let mut g = self.inner.lock().await;
        let Some(state) = &g.state else {
            return Ok(Vec::new());
        };
        let loaded = state.load()?;
        let mut problems = loaded.problems;
        for rec in loaded.devices {
            if rec.drain.phase == DrainPhase::Released {
                self.finish_release(&mut g, rec, &mut problems);
                continue;
            }
            let key = rec.id.key();
            // Served before this restart: a missing store is reported, never created.
            let (opened, open_error) = match self.open(&g, &rec, Missing::Refuse, None) {
                Ok(o) => (Some(o), None),
                Err(e) => {
                    problems.push(format!("Device {key}: {e}"));
                    (None, Some(e.to_string()))
                }
            };
            let entry = DeviceEntry {
                record: rec,
                opened,
                open_error,
                used_by: None,
            };
            log_ready(&entry);
            g.devices.insert(key, entry);
        }
        self.finish_reclaims(&mut g, &mut problems);
        for mut rec in loaded.targets {
            let key = rec.id.key();
            // LUNs whose Device is gone (released, or not openable) are left out.
            rec.luns.retain(|l| {
                let dk = rec_device_key(&rec.id, &l.device_name);
                let ok = g
                    .devices
                    .get(&dk)
                    .is_some_and(|d| d.opened.is_some() && d.used_by.is_none());
                if !ok {
                    problems.push(format!(
                        "Target {key}: LUN {} (Device {dk}) is not served again",
                        l.lun
                    ));
                }
                ok
            });
            match g.start_target(&rec).await {
                Ok(()) => {
                    g.targets.insert(key, rec);
                }
                Err(e) => problems.push(format!("Target {key}: {e}")),
            }
        }
        let (d, t) = (g.devices.len(), g.targets.len());
        if d + t > 0 {
            tracing::info!(
                devices = d,
                targets = t,
                "served again what the state holds"
            );
        }
        Ok(problems)
    }
}

fn rec_device_key(id: &ObjectId, device_name: &str) -> String {
    format!("{}/{}", id.namespace, device_name)
}

fn log_ready(e: &DeviceEntry) {
    if let Some(o) = &e.opened {
        tracing::info!(
            device = %e.record.id.key(), uid = %e.record.id.uid, path = %o.path.display(),
            bytes = o.len, created = o.created, direct_io = e.record.store.direct, "Device ready"
        );
    }
}

/// A view of a Device from its entry, with the fenced count its LUN reports (if served).
fn device_view(e: &mut DeviceEntry, lun: Option<&LunSnapshot>) -> DeviceView {
    let r = &e.record;
    DeviceView {
        id: r.id.clone(),
        phase: r.drain.phase,
        capacity_bytes: e.opened.as_ref().map_or(0, |o| o.len),
        identity: e.opened.as_ref().map(|o| o.identity.clone()),
        backing_path: e
            .opened
            .as_ref()
            .map(|o| o.path.clone())
            .unwrap_or_default(),
        used_by: e.used_by.clone(),
        ack: r.drain.ack.clone(),
        fenced_commands: lun
            .map(|l| l.fenced)
            .or(r.drain.ack.as_ref().map(|a| a.fenced_commands))
            .unwrap_or(0),
        failure: r.drain.failure.clone().or(e.open_error.clone()),
        store_created: r.store_created,
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

    /// Checks the LUN map of a Target against the Devices held.
    fn check_luns(&self, rec: &TargetRecord) -> Result<(), NodeError> {
        let key = rec.id.key();
        let mut seen = BTreeSet::new();
        for (i, l) in rec.luns.iter().enumerate() {
            let field = format!("spec.luns[{i}].deviceRef");
            let dk = rec.device_key(l);
            if !seen.insert(dk.clone()) {
                return Err(invalid(&field, format!("Device {dk} is mapped twice")));
            }
            let Some(d) = self.devices.get(&dk) else {
                return Err(precondition(
                    &field,
                    format!("no Device {dk} on this node; apply the Device first"),
                ));
            };
            if !l.device_uid.is_empty() && d.record.id.uid != l.device_uid {
                return Err(precondition(
                    &field,
                    format!(
                        "Device {dk} on this node is another incarnation (uid {}, not {})",
                        d.record.id.uid, l.device_uid
                    ),
                ));
            }
            if let Some(e) = &d.open_error {
                return Err(precondition(
                    &field,
                    format!("Device {dk} could not be opened: {e}"),
                ));
            }
            self.check_not_stopping(&dk, &key, &field)?;
            if let Some(other) = d.used_by.as_ref().filter(|o| **o != key) {
                return Err(precondition(
                    &field,
                    format!("Device {dk} is already used by Target {other}"),
                ));
            }
        }
        Ok(())
    }

    /// What the target needs for LUN `lun` on Device `dk` (the Device's own descriptor, shared).
    fn lun_setup(&self, dk: &str, lun: u64) -> Result<LunSetup, NodeError> {
        let d = self
            .devices
            .get(dk)
            .ok_or_else(|| NodeError::Internal(format!("Device {dk} vanished")))?;
        let o = d
            .opened
            .as_ref()
            .ok_or_else(|| NodeError::Internal(format!("Device {dk} is not open")))?;
        Ok(LunSetup {
            config: d.record.lun_config(lun),
            store: store::OpenedStore {
                file: Arc::clone(&o.file),
                len: o.len,
                path: o.path.clone(),
                created: false,
            },
            state: match d.record.drain.phase {
                DrainPhase::Running => DrainState::Running,
                // Fenced before a restart: nothing is in flight now, the flush is still owed.
                DrainPhase::Fenced | DrainPhase::Failed => DrainState::Draining,
                DrainPhase::Flushed => DrainState::Flushed,
                DrainPhase::Released => DrainState::Released,
            },
            identity: o.identity.clone(),
        })
    }

    /// Starts a Target's thread over its LUNs and marks its Devices used.
    async fn start_target(&mut self, rec: &TargetRecord) -> Result<(), NodeError> {
        let mut setups = Vec::new();
        for l in &rec.luns {
            setups.push(self.lun_setup(&rec.device_key(l), l.lun)?);
        }
        let config = rec.config(setups.iter().map(|s| s.config.clone()).collect());
        self.engine_mut()?
            .start_target(config, setups)
            .map_err(|e| match e {
                EngineError::Bind { .. } => precondition("spec.port", e.to_string()),
                EngineError::IqnTaken { .. } => precondition("spec.iqn", e.to_string()),
                e => NodeError::Internal(e.to_string()),
            })?;
        let key = rec.id.key();
        for l in &rec.luns {
            if let Some(d) = self.devices.get_mut(&rec.device_key(l)) {
                d.used_by = Some(key.clone());
            }
        }
        Ok(())
    }

    /// The Devices of `rec` are no longer used by it.
    fn release_luns_of(&mut self, rec: &TargetRecord) {
        let key = rec.id.key();
        for l in &rec.luns {
            if let Some(d) = self.devices.get_mut(&rec.device_key(l))
                && d.used_by.as_deref() == Some(key.as_str())
            {
                d.used_by = None;
            }
        }
    }

    /// Changes a served Target in place: LUNs added, removed or moved to another Device, and
    /// new login settings.
    async fn update_target(
        &mut self,
        old: &TargetRecord,
        new: &TargetRecord,
    ) -> Result<(), NodeError> {
        let key = new.id.key();
        let old_map: BTreeMap<u64, String> = old
            .luns
            .iter()
            .map(|l| (l.lun, old.device_key(l)))
            .collect();
        let new_map: BTreeMap<u64, String> = new
            .luns
            .iter()
            .map(|l| (l.lun, new.device_key(l)))
            .collect();
        let remove: Vec<u64> = old_map
            .iter()
            .filter(|(lun, dk)| new_map.get(lun) != Some(dk))
            .map(|(lun, _)| *lun)
            .collect();
        let mut add = Vec::new();
        for (lun, dk) in &new_map {
            if old_map.get(lun) != Some(dk) {
                add.push(self.lun_setup(dk, *lun)?);
            }
        }
        self.release_luns_of(old);
        for dk in new_map.values() {
            if let Some(d) = self.devices.get_mut(dk) {
                d.used_by = Some(key.clone());
            }
        }
        let configs = new
            .luns
            .iter()
            .filter_map(|l| {
                self.devices
                    .get(&new.device_key(l))
                    .map(|d| d.record.lun_config(l.lun))
            })
            .collect();
        let engine = self.engine_mut()?;
        engine.update_target(new.config(configs));
        if !add.is_empty() || !remove.is_empty() {
            let handle = engine
                .target(&key)
                .ok_or_else(|| NodeError::Internal(format!("Target {key} has no engine")))?;
            let failed = handle
                .request(|reply| crate::engine::TargetCmd::SetLuns { add, remove, reply })
                .await
                .map_err(|e| NodeError::Internal(e.to_string()))?;
            if !failed.is_empty() {
                return Err(NodeError::Internal(format!(
                    "LUNs {failed:?} could not be served (see the agent's log)"
                )));
            }
        }
        Ok(())
    }

    /// Serves Device `dk`'s LUN of Target `t` afresh (after its store was reopened).
    async fn remap_device(&mut self, t: &str, dk: &str) -> Result<(), NodeError> {
        let Some(rec) = self.targets.get(t).cloned() else {
            return Ok(());
        };
        if self.engine()?.target(t).is_none() {
            // Its engine is being restarted: the new one opens the LUN afresh.
            return Ok(());
        }
        let mut old = rec.clone();
        // Pretend the LUNs on this Device were elsewhere: update_target swaps them.
        old.luns.retain(|l| rec.device_key(l) != dk);
        self.update_target(&old, &rec).await
    }

    async fn lun_snapshots(&self, target: &str) -> Vec<LunSnapshot> {
        self.snapshot(target)
            .await
            .map(|s| s.luns)
            .unwrap_or_default()
    }

    async fn snapshot(&self, target: &str) -> Option<crate::engine::TargetSnapshot> {
        let h = self.engine.as_ref()?.target(target)?;
        h.request(|reply| crate::engine::TargetCmd::Status { reply })
            .await
            .ok()
    }

    async fn device_view(&mut self, key: &str) -> DeviceView {
        let used_by = self.devices.get(key).and_then(|d| d.used_by.clone());
        let lun = match &used_by {
            Some(t) => self
                .lun_snapshots(t)
                .await
                .into_iter()
                .find(|l| l.device == key),
            None => None,
        };
        let e = self.devices.get_mut(key).expect("caller checked");
        device_view(e, lun.as_ref())
    }

    async fn target_view(&self, key: &str) -> TargetView {
        let rec = self.targets.get(key).expect("caller checked");
        let snap = self.snapshot(key).await.unwrap_or_default();
        TargetView {
            id: rec.id.clone(),
            iqn: rec.iqn.clone(),
            port: rec.port,
            luns: snap.luns,
            sessions: snap.sessions,
        }
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
