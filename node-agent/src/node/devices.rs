//! Devices applied: a backing store opened (or created) and held, updated, grown or reopened.

use super::error::{NodeError, invalid, precondition};
use super::grow;
use super::ownership::{Missing, check_reserved};
use super::records::DeviceRecord;
use super::views::DeviceView;
use super::{DeviceEntry, Node};
use crate::engine::DrainState;

impl Node {
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
        // A clone's store is made from its snapshot before it is opened (and never after it
        // was served: a missing store of a served Device stays refused).
        let cloned = !served_before && self.make_clone_store(&rec).await?;
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
            rec.store_created = opened.created || cloned;
            let entry = DeviceEntry {
                record: rec,
                opened: Some(opened),
                open_error: None,
                used_by: None,
            };
            g.save_device(&entry.record)?;
            entry.log_ready();
            let view = entry.view(None);
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
        updated.reservations_always = rec.reservations_always;
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
            entry.log_ready();
            // A served LUN picks up the new flags (its initiators see a fresh logical unit).
            if let (Some(t), DrainState::Running) =
                (entry.used_by.clone(), entry.record.drain.state)
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
}

impl DeviceEntry {
    pub(super) fn log_ready(&self) {
        if let Some(o) = &self.opened {
            tracing::info!(
                device = %self.record.id.key(), uid = %self.record.id.uid,
                path = %o.path.display(), bytes = o.len, created = o.created,
                direct_io = self.record.store.direct, "Device ready"
            );
        }
    }
}
