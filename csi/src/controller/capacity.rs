//! Free bytes on the storage nodes, as the agents publish them in their Leases
//! (`spindle.dev/capacity-free-bytes`): where a new volume goes, and GetCapacity's answer.

use k8s_openapi::api::coordination::v1::Lease;
use spindle_agent_api::lease as names;

/// One agent as its Lease describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpace {
    /// The node (the Lease's name).
    pub node: String,
    /// Free bytes in the agent's data directory; None when the Lease does not say (an agent
    /// that does not publish it yet, or a value that is not a number).
    pub free: Option<u64>,
}

/// The agents' Leases (labelled `spindle.dev/agent`) as [`NodeSpace`]s, by node name.
pub fn from_leases(leases: &[Lease]) -> Vec<NodeSpace> {
    let mut v: Vec<NodeSpace> = leases
        .iter()
        .filter_map(|l| {
            let node = l.metadata.name.clone()?;
            let free = l
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(names::CAPACITY_FREE_ANNOTATION))
                .and_then(|v| v.trim().parse::<u64>().ok());
            Some(NodeSpace { node, free })
        })
        .collect();
    v.sort_by(|a, b| a.node.cmp(&b.node));
    v
}

/// Why no node can be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no storage node: no agent Lease was found (is the node agent running?)")]
    NoAgents,
}

/// Where a volume goes when the StorageClass names no node: the agent with the most free bytes;
/// among agents whose free bytes are unknown (no capacity annotation), the first by name — and
/// then the caller says capacity is unknown. Returns the node and whether its space was known.
pub fn place(nodes: &[NodeSpace]) -> Result<(String, bool), PlacementError> {
    if let Some(best) = nodes
        .iter()
        .filter_map(|n| n.free.map(|f| (f, n)))
        // Most free bytes; on a tie, the first by name.
        .max_by(|(fa, a), (fb, b)| fa.cmp(fb).then(b.node.cmp(&a.node)))
    {
        return Ok((best.1.node.clone(), true));
    }
    nodes
        .first()
        .map(|n| (n.node.clone(), false))
        .ok_or(PlacementError::NoAgents)
}

/// GetCapacity's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Bytes available for volumes.
    pub available: u64,
    /// The largest single volume (one node's free bytes: a volume lives on one node).
    pub maximum: u64,
    /// Nodes whose free bytes are unknown (not counted).
    pub unknown: Vec<String>,
}

/// Capacity of `node` alone (a StorageClass with `spindle.dev/node`), or of all nodes: the sum
/// of free bytes as available, the largest node's as maximum volume size.
pub fn answer(nodes: &[NodeSpace], node: Option<&str>) -> Answer {
    let chosen: Vec<&NodeSpace> = nodes
        .iter()
        .filter(|n| node.is_none_or(|want| n.node == want))
        .collect();
    let known = chosen.iter().filter_map(|n| n.free);
    Answer {
        available: known.clone().fold(0u64, u64::saturating_add),
        maximum: known.max().unwrap_or(0),
        unknown: chosen
            .iter()
            .filter(|n| n.free.is_none())
            .map(|n| n.node.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn lease(node: &str, free: Option<&str>) -> Lease {
        let mut l = Lease::default();
        l.metadata.name = Some(node.into());
        if let Some(f) = free {
            l.metadata.annotations = Some(BTreeMap::from([(
                names::CAPACITY_FREE_ANNOTATION.to_owned(),
                f.to_owned(),
            )]));
        }
        l
    }

    fn space(node: &str, free: Option<u64>) -> NodeSpace {
        NodeSpace {
            node: node.into(),
            free,
        }
    }

    #[test]
    fn leases_give_free_bytes_or_unknown() {
        let n = from_leases(&[
            lease("node-b", Some("100")),
            lease("node-a", None),
            lease("node-c", Some("lots")),
        ]);
        assert_eq!(
            n,
            vec![
                space("node-a", None),
                space("node-b", Some(100)),
                space("node-c", None)
            ]
        );
    }

    #[test]
    fn placement_takes_the_most_free_bytes() {
        let n = [
            space("node-a", Some(10)),
            space("node-b", Some(30)),
            space("node-c", None),
            space("node-d", Some(30)),
        ];
        assert_eq!(place(&n), Ok(("node-b".into(), true)));
        let unknown = [space("node-b", None), space("node-c", None)];
        assert_eq!(place(&unknown), Ok(("node-b".into(), false)));
        assert_eq!(place(&[]), Err(PlacementError::NoAgents));
    }

    #[test]
    fn capacity_sums_nodes_and_caps_a_volume_at_one_node() {
        let n = [
            space("node-a", Some(10)),
            space("node-b", Some(30)),
            space("node-c", None),
        ];
        let all = answer(&n, None);
        assert_eq!(
            all,
            Answer {
                available: 40,
                maximum: 30,
                unknown: vec!["node-c".into()]
            }
        );
        let a = answer(&n, Some("node-a"));
        assert_eq!((a.available, a.maximum), (10, 10));
        assert!(a.unknown.is_empty());
        let none = answer(&n, Some("node-x"));
        assert_eq!((none.available, none.maximum), (0, 0));
    }
}
