//! Per-I_T-nexus state of one logical unit: pending unit attentions (SAM-5 5.14) and the
//! initiator port name used by reservations.

use std::collections::HashMap;

use super::NexusId;
use super::sense::{Asc, POWER_ON_RESET};

/// At most this many unit attentions queue per nexus; further ones are dropped (the oldest
/// already tells the initiator to re-examine the unit).
const MAX_PENDING: usize = 8;

/// What the logical unit remembers about one I_T nexus.
#[derive(Debug, Default)]
pub(crate) struct NexusState {
    /// Pending unit attentions, oldest first.
    ua: Vec<Asc>,
    /// Initiator port name (`iqn...,i,0x<isid>`), if the engine told us.
    pub name: Option<String>,
}

/// All nexuses this logical unit has seen.
#[derive(Debug, Default)]
pub(crate) struct Nexuses {
    map: HashMap<NexusId, NexusState>,
}

/// Whether an ASC/ASCQ is one of the POWER ON, RESET, OR BUS DEVICE RESET OCCURRED family,
/// which supersedes every other pending unit attention.
fn is_reset(asc: Asc) -> bool {
    asc.0 == POWER_ON_RESET.0
}

impl NexusState {
    fn push(&mut self, asc: Asc) {
        if is_reset(asc) {
            self.ua.clear();
        } else if self.ua.contains(&asc) {
            return;
        }
        if self.ua.len() < MAX_PENDING {
            self.ua.push(asc);
        }
    }
}

impl Nexuses {
    /// The state of `id`, created on first sight with POWER ON, RESET, OR BUS DEVICE RESET
    /// OCCURRED pending (a new I_T nexus learns first that the unit was "reset").
    pub fn touch(&mut self, id: NexusId) -> &mut NexusState {
        self.map.entry(id).or_insert_with(|| NexusState {
            ua: vec![POWER_ON_RESET],
            name: None,
        })
    }

    /// Queues a unit attention for one nexus, or for every known one. Nexuses not seen yet
    /// will get POWER ON first, which tells them to re-examine everything.
    pub fn establish(&mut self, id: Option<NexusId>, asc: Asc) {
        match id {
            Some(id) => self.touch(id).push(asc),
            None => self.map.values_mut().for_each(|n| n.push(asc)),
        }
    }

    /// Queues a unit attention for every known nexus except `except`.
    pub fn establish_others(&mut self, except: NexusId, asc: Asc) {
        for (id, n) in &mut self.map {
            if *id != except {
                n.push(asc);
            }
        }
    }

    /// Queues a unit attention for every nexus whose initiator port name is `name`.
    pub fn establish_named(&mut self, name: &str, asc: Asc, except: Option<NexusId>) {
        for (id, n) in &mut self.map {
            if Some(*id) != except && n.name.as_deref() == Some(name) {
                n.push(asc);
            }
        }
    }

    /// The nexuses whose initiator port name is one of `names`, other than `except`.
    pub fn named(&self, names: &[String], except: NexusId) -> Vec<NexusId> {
        let mut ids: Vec<NexusId> = self
            .map
            .iter()
            .filter(|(id, n)| {
                **id != except && n.name.as_ref().is_some_and(|name| names.contains(name))
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The oldest pending unit attention of `id`, without clearing it.
    #[cfg(test)]
    pub fn peek(&self, id: NexusId) -> Option<Asc> {
        self.map.get(&id).and_then(|n| n.ua.first().copied())
    }

    /// Removes and returns the oldest pending unit attention of `id`.
    pub fn pop(&mut self, id: NexusId) -> Option<Asc> {
        let n = self.map.get_mut(&id)?;
        if n.ua.is_empty() {
            None
        } else {
            Some(n.ua.remove(0))
        }
    }

    /// Clears a specific pending unit attention of `id` (REPORT LUNS clears REPORTED LUNS
    /// DATA HAS CHANGED).
    pub fn clear(&mut self, id: NexusId, asc: Asc) {
        if let Some(n) = self.map.get_mut(&id) {
            n.ua.retain(|a| *a != asc);
        }
    }

    /// Forgets a nexus (I_T nexus loss).
    pub fn remove(&mut self, id: NexusId) {
        self.map.remove(&id);
    }

    /// The initiator port name of `id`, or a stable stand-in derived from its id.
    pub fn name(&self, id: NexusId) -> String {
        self.map
            .get(&id)
            .and_then(|n| n.name.clone())
            .unwrap_or_else(|| format!("nexus:{}", id.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::{
        BUS_DEVICE_RESET, MODE_PARAMETERS_CHANGED, REPORTED_LUNS_DATA_HAS_CHANGED,
    };

    #[test]
    fn new_nexus_gets_power_on_first() {
        let mut n = Nexuses::default();
        assert_eq!(n.peek(NexusId(1)), None);
        n.touch(NexusId(1));
        assert_eq!(n.pop(NexusId(1)), Some(POWER_ON_RESET));
        assert_eq!(n.pop(NexusId(1)), None);
        // Touching again does not re-raise it.
        n.touch(NexusId(1));
        assert_eq!(n.peek(NexusId(1)), None);
    }

    #[test]
    fn reset_supersedes_and_duplicates_collapse() {
        let mut n = Nexuses::default();
        n.touch(NexusId(1));
        n.pop(NexusId(1));
        n.establish(None, REPORTED_LUNS_DATA_HAS_CHANGED);
        n.establish(None, REPORTED_LUNS_DATA_HAS_CHANGED);
        n.establish(None, MODE_PARAMETERS_CHANGED);
        assert_eq!(n.pop(NexusId(1)), Some(REPORTED_LUNS_DATA_HAS_CHANGED));
        assert_eq!(n.pop(NexusId(1)), Some(MODE_PARAMETERS_CHANGED));
        assert_eq!(n.pop(NexusId(1)), None);
        n.establish(None, MODE_PARAMETERS_CHANGED);
        n.establish(Some(NexusId(1)), BUS_DEVICE_RESET);
        assert_eq!(n.pop(NexusId(1)), Some(BUS_DEVICE_RESET));
        assert_eq!(n.pop(NexusId(1)), None);
    }

    #[test]
    fn others_and_named() {
        let mut n = Nexuses::default();
        for i in 1..=3 {
            n.touch(NexusId(i));
            n.pop(NexusId(i));
        }
        n.touch(NexusId(2)).name = Some("iqn.a,i,0x1".into());
        n.establish_others(NexusId(1), MODE_PARAMETERS_CHANGED);
        assert_eq!(n.peek(NexusId(1)), None);
        assert_eq!(n.pop(NexusId(3)), Some(MODE_PARAMETERS_CHANGED));
        n.pop(NexusId(2));
        n.establish_named("iqn.a,i,0x1", REPORTED_LUNS_DATA_HAS_CHANGED, None);
        assert_eq!(n.peek(NexusId(2)), Some(REPORTED_LUNS_DATA_HAS_CHANGED));
        assert_eq!(n.peek(NexusId(3)), None);
        assert_eq!(n.name(NexusId(3)), "nexus:3");
        assert_eq!(n.name(NexusId(2)), "iqn.a,i,0x1");
        n.clear(NexusId(2), REPORTED_LUNS_DATA_HAS_CHANGED);
        assert_eq!(n.peek(NexusId(2)), None);
    }
}
