//! The read side: what the node reports of its Devices and Targets (the engine's counters and
//! sessions joined to what the node holds).

use std::path::PathBuf;

use super::records::{DeviceRecord, ObjectId};
use super::{DeviceEntry, Inner, Node};
use crate::engine::config::DeviceIdentity;
use crate::engine::{DrainAck, DrainState, LunSnapshot, SessionInfo};

/// A Device as the node reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceView {
    pub id: ObjectId,
    pub state: DrainState,
    pub capacity_bytes: u64,
    pub identity: Option<DeviceIdentity>,
    pub backing_path: PathBuf,
    pub used_by: Option<String>,
    pub ack: Option<DrainAck>,
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
    /// `spec.qos` as applied to the Target's engine.
    pub qos: Option<spindle_crds::TargetQos>,
}

/// Everything the node serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    pub devices: Vec<DeviceView>,
    pub targets: Vec<TargetView>,
}

impl Node {
    /// Everything the node serves now.
    pub async fn view(&self) -> NodeView {
        let g = self.inner.lock().await;
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
            out.devices
                .push(DeviceView::released(r, self.backing_path(r)));
        }
        out
    }
}

impl DeviceView {
    /// A released Device: only its record is left.
    fn released(r: &DeviceRecord, backing_path: PathBuf) -> DeviceView {
        DeviceView {
            id: r.id.clone(),
            state: DrainState::Released,
            capacity_bytes: 0,
            identity: None,
            backing_path,
            used_by: None,
            ack: r.drain.ack.clone(),
            fenced_commands: r.drain.ack.as_ref().map_or(0, |a| a.fenced_commands),
            failure: None,
            store_created: r.store_created,
        }
    }
}

impl DeviceEntry {
    /// A view of a Device from its entry, with the fenced count its LUN reports (if served).
    pub(super) fn view(&self, lun: Option<&LunSnapshot>) -> DeviceView {
        let r = &self.record;
        DeviceView {
            id: r.id.clone(),
            state: r.drain.state,
            capacity_bytes: self.opened.as_ref().map_or(0, |o| o.len),
            identity: self.opened.as_ref().map(|o| o.identity.clone()),
            backing_path: self
                .opened
                .as_ref()
                .map(|o| o.path.clone())
                .unwrap_or_default(),
            used_by: self.used_by.clone(),
            ack: r.drain.ack.clone(),
            fenced_commands: lun
                .map(|l| l.fenced)
                .or(r.drain.ack.as_ref().map(|a| a.fenced_commands))
                .unwrap_or(0),
            failure: r.drain.failure.clone().or(self.open_error.clone()),
            store_created: r.store_created,
        }
    }
}

impl Inner {
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

    pub(super) async fn device_view(&self, key: &str) -> DeviceView {
        let used_by = self.devices.get(key).and_then(|d| d.used_by.clone());
        let lun = match &used_by {
            Some(t) => self
                .lun_snapshots(t)
                .await
                .into_iter()
                .find(|l| l.device == key),
            None => None,
        };
        let e = self.devices.get(key).expect("caller checked");
        e.view(lun.as_ref())
    }

    pub(super) async fn target_view(&self, key: &str) -> TargetView {
        let rec = self.targets.get(key).expect("caller checked");
        let snap = self.snapshot(key).await.unwrap_or_default();
        TargetView {
            id: rec.id.clone(),
            iqn: rec.iqn.clone(),
            port: rec.port,
            luns: snap.luns,
            sessions: snap.sessions,
            qos: rec.qos.clone(),
        }
    }
}
