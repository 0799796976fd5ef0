//! How the operator names an object: its `namespace/name` key (logs, backoff, `usedBy`,
//! claimants) and its identity and reclaim policy as the agent API carries them. Used by the
//! plans, the delete protocol, the controllers and their context alike.

use spindle_agent_api::v1 as api;
use spindle_crds::ReclaimPolicy;

/// The agent request's object identity of `obj`.
pub fn object_meta(obj: &impl kube::Resource) -> api::ObjectMeta {
    let m = obj.meta();
    api::ObjectMeta {
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        generation: m.generation.unwrap_or_default(),
        // Stamped by the agent client with the term of the leader sending it.
        leader_term: 0,
    }
}

/// `namespace/name` of an object.
pub fn key_of(obj: &impl kube::Resource) -> String {
    let m = obj.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}

/// The agent's reclaim policy for a Device's policy.
pub fn reclaim_policy(p: ReclaimPolicy) -> api::ReclaimPolicy {
    match p {
        ReclaimPolicy::Delete => api::ReclaimPolicy::Delete,
        ReclaimPolicy::Retain => api::ReclaimPolicy::Retain,
    }
}
