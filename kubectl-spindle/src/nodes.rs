//! `kubectl spindle nodes`: each node that has an agent (or that a Device names), with what its
//! Lease says and the Targets, Devices and sessions on it.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use serde::Serialize;
use spindle_crds::{Device, Target};

use crate::agent::AgentInfo;
use crate::table;

/// One line of `kubectl spindle nodes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    /// The node's name.
    pub node: String,
    /// A Node object of that name exists.
    pub node_exists: bool,
    /// Its agent, when it has a Lease.
    pub agent: Option<AgentInfo>,
    /// Targets (namespace/name) the operator placed on it.
    pub targets: Vec<String>,
    /// Devices (namespace/name) whose `spec.nodeName` is it.
    pub devices: Vec<String>,
    /// Logged-in iSCSI sessions over its Targets, as their status reports them.
    pub sessions: u32,
}

/// The rows: every node with an agent Lease or a Device, sorted by name.
pub fn rows(
    agents: &[AgentInfo],
    node_names: &BTreeSet<String>,
    devices: &[Device],
    targets: &[Target],
) -> Vec<NodeRow> {
    let mut rows: BTreeMap<String, NodeRow> = BTreeMap::new();
    for a in agents {
        entry(&mut rows, node_names, &a.node).agent = Some(a.clone());
    }
    for d in devices {
        entry(&mut rows, node_names, &d.spec.node_name)
            .devices
            .push(key(d));
    }
    for t in targets {
        let status = t.status.clone().unwrap_or_default();
        if let Some(node) = status.node.as_deref().filter(|n| !n.is_empty()) {
            let r = entry(&mut rows, node_names, node);
            r.targets.push(key(t));
            r.sessions += status.sessions;
        }
    }
    rows.into_values().collect()
}

fn entry<'a>(
    rows: &'a mut BTreeMap<String, NodeRow>,
    node_names: &BTreeSet<String>,
    node: &str,
) -> &'a mut NodeRow {
    rows.entry(node.to_owned()).or_insert_with(|| NodeRow {
        node: node.to_owned(),
        node_exists: node_names.contains(node),
        agent: None,
        targets: Vec::new(),
        devices: Vec::new(),
        sessions: 0,
    })
}

fn key(obj: &impl kube::Resource) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The columns of `kubectl spindle nodes`.
const HEADER: [&str; 9] = [
    "NODE", "AGENT", "RENEWED", "VERSION", "TARGETS", "DEVICES", "SESSIONS", "FREE", "TOTAL",
];

/// The columns `-o wide` adds.
const WIDE_HEADER: [&str; 4] = ["LEASE", "API", "PORTAL", "TARGET-NAMES"];

/// The rows as aligned text; `wide` adds the Lease's duration, the agent's endpoints and the
/// Targets' names.
pub fn render(rows: &[NodeRow], wide: bool) -> String {
    if rows.is_empty() {
        return "No Spindle agents registered and no Devices.\n".to_owned();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut line = cells(r);
            if wide {
                line.extend(wide_cells(r));
            }
            line
        })
        .collect();
    let mut header = HEADER.to_vec();
    if wide {
        header.extend(WIDE_HEADER);
    }
    table::render(&header, &cells)
}

fn cells(r: &NodeRow) -> Vec<String> {
    let agent = r.agent.as_ref();
    let state = match agent {
        Some(a) => a.state().to_owned(),
        None if r.node_exists => "no agent".to_owned(),
        None => "no agent, no Node".to_owned(),
    };
    let bytes = |b: Option<u64>| b.map(table::bytes).unwrap_or_else(|| "-".into());
    vec![
        r.node.clone(),
        state,
        agent
            .and_then(|a| a.renewed_seconds_ago)
            .map(table::age)
            .unwrap_or_else(|| "-".into()),
        agent
            .and_then(|a| a.version.clone())
            .unwrap_or_else(|| "-".into()),
        r.targets.len().to_string(),
        r.devices.len().to_string(),
        r.sessions.to_string(),
        bytes(agent.and_then(|a| a.capacity_free_bytes)),
        bytes(agent.and_then(|a| a.capacity_total_bytes)),
    ]
}

fn wide_cells(r: &NodeRow) -> Vec<String> {
    let agent = r.agent.as_ref();
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    vec![
        or_dash(agent.map(|a| format!("{}s", a.duration_seconds))),
        or_dash(agent.and_then(|a| a.endpoint.clone())),
        or_dash(agent.and_then(|a| a.portal.clone())),
        if r.targets.is_empty() {
            "-".into()
        } else {
            r.targets.join(",")
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fixtures::{lease_renewed, now};
    use crate::fixtures::{device, target};

    #[test]
    fn nodes_with_agents_devices_targets_and_sessions() {
        let agents = [
            AgentInfo::from_lease(&lease_renewed("node-a", 2), now()),
            AgentInfo::from_lease(&lease_renewed("node-b", 40), now()),
        ];
        let names = BTreeSet::from(["node-a".to_owned(), "node-b".to_owned()]);
        let devices = [device("d0", "node-a"), device("d1", "node-c")];
        let mut t = target("t0", &["d0"]);
        t.status.get_or_insert_default().node = Some("node-a".into());
        t.status.get_or_insert_default().sessions = 2;
        let rows = rows(&agents, &names, &devices, &[t]);
        assert_eq!(
            rows.iter().map(|r| r.node.as_str()).collect::<Vec<_>>(),
            ["node-a", "node-b", "node-c"]
        );
        assert_eq!(rows[0].devices, ["ns/d0"]);
        assert_eq!(rows[0].targets, ["ns/t0"]);
        assert_eq!(rows[0].sessions, 2);
        let text = render(&rows, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NODE     AGENT               RENEWED   VERSION   TARGETS   DEVICES   SESSIONS   FREE      TOTAL"
        );
        assert_eq!(
            lines[1],
            "node-a   reachable           2s        0.1.0     1         1         2          3.0 GiB   10.0 GiB"
        );
        assert!(
            lines[2].starts_with("node-b   unreachable         40s       0.1.0"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("node-c   no agent, no Node   -"),
            "{text}"
        );
    }

    #[test]
    fn wide_adds_the_endpoints_the_lease_duration_and_the_target_names() {
        let agents = [AgentInfo::from_lease(&lease_renewed("node-a", 2), now())];
        let names = BTreeSet::from(["node-a".to_owned(), "node-c".to_owned()]);
        let mut t0 = target("t0", &["d0"]);
        t0.status.get_or_insert_default().node = Some("node-a".into());
        let mut t1 = target("t1", &["d1"]);
        t1.status.get_or_insert_default().node = Some("node-a".into());
        let devices = [device("d0", "node-a"), device("d2", "node-c")];
        let text = render(&rows(&agents, &names, &devices, &[t0, t1]), true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with("TOTAL      LEASE   API             PORTAL   TARGET-NAMES"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("10.0 GiB   15s     10.0.0.2:9443   -        ns/t0,ns/t1"),
            "{text}"
        );
        assert!(lines[2].starts_with("node-c   no agent "), "{text}");
        assert!(
            lines[2].ends_with("-       -               -        -"),
            "{text}"
        );
    }

    #[test]
    fn nothing_registered_says_so() {
        assert_eq!(
            render(&[], true),
            "No Spindle agents registered and no Devices.\n"
        );
    }
}
