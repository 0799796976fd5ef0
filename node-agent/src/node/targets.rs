//! Targets served: an engine thread started over a Target's LUNs, updated in place, stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::error::{NodeError, invalid, precondition};
use super::records::{ObjectId, TargetRecord};
use super::views::TargetView;
use super::{Inner, Node};
use crate::engine::EngineError;
use crate::engine::config::{LunSetup, PrSetup};
use crate::store;

impl Node {
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
}

impl Inner {
    /// Checks the LUN map of a Target against the Devices held.
    pub(super) fn check_luns(&self, rec: &TargetRecord) -> Result<(), NodeError> {
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
            // Fenced before a restart stays fenced: nothing is in flight now, the flush (or,
            // after a failed one, a forced release) is still owed.
            state: d.record.drain.state,
            identity: o.identity.clone(),
            // Read again: the LUN's last unit may have changed them since the Device opened.
            reservations: PrSetup {
                restored: super::reservations::load(&o.reservations, dk)?,
                file: Some(o.reservations.clone()),
                always: d.record.reservations_always,
            },
        })
    }

    /// Starts a Target's thread over its LUNs and marks its Devices used.
    pub(super) async fn start_target(&mut self, rec: &TargetRecord) -> Result<(), NodeError> {
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
    pub(super) fn release_luns_of(&mut self, rec: &TargetRecord) {
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
    pub(super) async fn remap_device(&mut self, t: &str, dk: &str) -> Result<(), NodeError> {
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
}
