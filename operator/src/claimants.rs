//! Which Targets wait for a Device another Target exports: recorded from each Target's plan
//! ([`crate::desired::TargetPlan::claimed_by`]) so that when the exporting Target changes its LUNs
//! or goes away, the Targets it refused are looked at again at once (not only at their next
//! periodic look). Kept per leadership term: every Target is reconciled at the start of a term,
//! which fills it again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;
use spindle_crds::Target;

use crate::objects::key_of;

/// Refused Targets (by `namespace/name`) and the Targets (`namespace/name`) that hold the
/// Devices they were refused.
#[derive(Default)]
pub struct Claimants {
    refused: Mutex<HashMap<String, Refused>>,
}

/// A refused Target and the owners of the Devices it was refused.
struct Refused {
    target: ObjectRef<Target>,
    owners: BTreeSet<String>,
}

impl Claimants {
    /// Records what `t`'s latest plan was refused and by whom (`owners` empty: nothing).
    pub fn record(&self, t: &Target, owners: BTreeSet<String>) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if owners.is_empty() {
            refused.remove(&key_of(t));
        } else {
            refused.insert(
                key_of(t),
                Refused {
                    target: ObjectRef::from_obj(t),
                    owners,
                },
            );
        }
    }

    /// Forgets `t` as a refused Target (it is gone).
    pub fn forget(&self, t: &Target) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused.remove(&key_of(t));
    }

    /// The Targets refused a Device because `owner` exports it.
    pub fn waiting_for(&self, owner: &Target) -> Vec<ObjectRef<Target>> {
        let owner = key_of(owner);
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused
            .iter()
            .filter(|(key, r)| **key != owner && r.owners.contains(&owner))
            .map(|(_, r)| r.target.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Claimants;
    use kube::runtime::reflector::ObjectRef;
    use spindle_crds::Target;

    fn target(name: &str) -> Target {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "spindle.dev/v1alpha1", "kind": "Target",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"luns": [], "acl": {"allowAll": true}}
        }))
        .expect("target")
    }

    #[test]
    fn the_targets_an_owner_refused_are_the_ones_poked() {
        let c = Claimants::default();
        let (owner, other, refused, unrelated) =
            (target("t0"), target("t3"), target("t1"), target("t2"));
        c.record(&refused, ["ns/t0".to_owned()].into());
        c.record(&unrelated, ["ns/t3".to_owned()].into());
        assert_eq!(c.waiting_for(&owner), vec![ObjectRef::from_obj(&refused)]);
        assert_eq!(c.waiting_for(&other), vec![ObjectRef::from_obj(&unrelated)]);
        assert!(c.waiting_for(&refused).is_empty());
    }

    #[test]
    fn a_target_no_longer_refused_or_gone_is_not_poked() {
        let c = Claimants::default();
        let (owner, a, b) = (target("t0"), target("t1"), target("t2"));
        c.record(&a, ["ns/t0".to_owned()].into());
        c.record(&b, ["ns/t0".to_owned()].into());
        c.record(&a, Default::default());
        c.forget(&b);
        assert!(c.waiting_for(&owner).is_empty());
    }
}
