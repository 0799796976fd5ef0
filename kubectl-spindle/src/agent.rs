//! What an agent's Lease says about it: reachable (renewed within the Lease's duration, by this
//! machine's clock), its version, endpoint and the capacity of its data directory.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use spindle_agent_api::lease;

/// One node's agent as its Lease describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    /// The node (the Lease is named after it).
    pub node: String,
    /// Renewed less than `duration_seconds` ago.
    pub reachable: bool,
    /// Seconds since the last renewal (None: never renewed).
    pub renewed_seconds_ago: Option<i64>,
    /// How long the Lease holds without renewal.
    pub duration_seconds: i64,
    /// The agent's version, if it publishes one.
    pub version: Option<String>,
    /// The agent API endpoint (`host:port`).
    pub endpoint: Option<String>,
    /// The iSCSI portal initiators reach.
    pub portal: Option<String>,
    /// Free bytes of its data directory.
    pub capacity_free_bytes: Option<u64>,
    /// Total bytes of its data directory.
    pub capacity_total_bytes: Option<u64>,
}

impl AgentInfo {
    /// Reads `l` at time `now`. The agent's clock and this machine's may differ: a skew larger
    /// than the Lease's duration misjudges reachability (the operator times renewals on its own
    /// clock and says so in each object's `AgentReachable` condition).
    pub fn from_lease(l: &Lease, now: Timestamp) -> Self {
        let annotation = |key: &str| {
            l.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let spec = l.spec.clone().unwrap_or_default();
        let duration_seconds = i64::from(
            spec.lease_duration_seconds
                .unwrap_or(lease::DURATION_SECONDS),
        );
        let renewed_seconds_ago = spec
            .renew_time
            .map(|t| now.duration_since(t.0).as_secs())
            .map(|s| s.max(0));
        Self {
            node: l.metadata.name.clone().unwrap_or_default(),
            reachable: renewed_seconds_ago.is_some_and(|s| s < duration_seconds),
            renewed_seconds_ago,
            duration_seconds,
            version: annotation(lease::VERSION_ANNOTATION),
            endpoint: annotation(lease::API_ENDPOINT_ANNOTATION),
            portal: annotation(lease::ISCSI_PORTAL_ANNOTATION),
            capacity_free_bytes: annotation(lease::CAPACITY_FREE_ANNOTATION)
                .and_then(|v| v.parse().ok()),
            capacity_total_bytes: annotation(lease::CAPACITY_TOTAL_ANNOTATION)
                .and_then(|v| v.parse().ok()),
        }
    }

    /// `reachable` or `unreachable`.
    pub fn state(&self) -> &'static str {
        if self.reachable {
            "reachable"
        } else {
            "unreachable"
        }
    }

    /// When it last renewed, e.g. `renewed 3s ago` or `never renewed`.
    pub fn renewed(&self) -> String {
        match self.renewed_seconds_ago {
            Some(s) => format!("renewed {} ago", crate::table::age(s)),
            None => "never renewed".to_owned(),
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::BTreeMap;

    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use spindle_agent_api::lease;

    /// A fixed "now" for the fixtures.
    pub fn now() -> Timestamp {
        "2026-12-07T12:00:00Z".parse().expect("timestamp")
    }

    /// node's agent Lease, renewed `ago` seconds before [`now`], with capacity annotations.
    pub fn lease_renewed(node: &str, ago: i64) -> Lease {
        let annotations = BTreeMap::from([
            (lease::VERSION_ANNOTATION.to_owned(), "0.1.0".to_owned()),
            (
                lease::API_ENDPOINT_ANNOTATION.to_owned(),
                "10.0.0.2:9443".to_owned(),
            ),
            (
                lease::CAPACITY_FREE_ANNOTATION.to_owned(),
                (3u64 << 30).to_string(),
            ),
            (
                lease::CAPACITY_TOTAL_ANNOTATION.to_owned(),
                (10u64 << 30).to_string(),
            ),
        ]);
        Lease {
            metadata: ObjectMeta {
                name: Some(node.to_owned()),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(node.to_owned()),
                lease_duration_seconds: Some(lease::DURATION_SECONDS),
                renew_time: Some(MicroTime(now() - SignedDuration::from_secs(ago))),
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{lease_renewed, now};
    use super::*;

    #[test]
    fn a_fresh_lease_is_reachable_with_its_capacity() {
        let a = AgentInfo::from_lease(&lease_renewed("node-a", 3), now());
        assert!(a.reachable);
        assert_eq!(a.state(), "reachable");
        assert_eq!(a.renewed(), "renewed 3s ago");
        assert_eq!(a.version.as_deref(), Some("0.1.0"));
        assert_eq!(a.capacity_free_bytes, Some(3 << 30));
        assert_eq!(a.capacity_total_bytes, Some(10 << 30));
        assert_eq!(a.portal, None, "an empty or absent portal reads as none");
    }

    #[test]
    fn a_lease_older_than_its_duration_is_unreachable() {
        let a = AgentInfo::from_lease(&lease_renewed("node-b", 15), now());
        assert!(!a.reachable);
        assert_eq!(a.renewed(), "renewed 15s ago");
        let mut l = lease_renewed("node-b", 0);
        l.spec.as_mut().expect("spec").renew_time = None;
        let a = AgentInfo::from_lease(&l, now());
        assert!(!a.reachable);
        assert_eq!(a.renewed(), "never renewed");
    }
}
