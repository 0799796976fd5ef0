//! Serving again at start what a persisting node was told before it stopped.

use super::error::NodeError;
use super::ownership::Missing;
use super::{DeviceEntry, Node};
use crate::engine::DrainState;

impl Node {
    /// Serves again what the state holds (persisting nodes only).
    pub(super) async fn restore(&self) -> Result<Vec<String>, NodeError> {
        let mut g = self.inner.lock().await;
        let Some(state) = &g.state else {
            return Ok(Vec::new());
        };
        let loaded = state.load()?;
        let mut problems = loaded.problems;
        for rec in loaded.devices {
            if rec.drain.state == DrainState::Released {
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
            entry.log_ready();
            g.devices.insert(key, entry);
        }
        self.finish_reclaims(&mut g, &mut problems);
        for mut rec in loaded.targets {
            let key = rec.id.key();
            // LUNs whose Device is gone (released, or not openable) are left out.
            rec.luns.retain(|l| {
                let dk = rec.id.sibling_key(&l.device_name);
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
