//! `kubectl spindle why device`: what a Device's delete waits on and what the user can do. The
//! same order of questions as the operator's `delete::device_step` (operator/src/delete.rs),
//! answered from what the API holds: the finalizer, the skip-flush annotation, the Node object,
//! the agent's Lease, and the `Deleting`/`Flushed` conditions the operator records.

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use spindle_crds::words::{FINALIZER, SKIP_FLUSH_ANNOTATION, kind, reason};
use spindle_crds::{Condition, ConditionStatus, Device};

use crate::agent::AgentInfo;
use crate::table;

/// What a Device's delete is waiting on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wait {
    /// Not being deleted.
    NotDeleting,
    /// Spindle's finalizer is gone; other finalizers (someone else's) hold it.
    OtherFinalizers,
    /// The annotation lets it go without the agent: the operator has to act on it.
    SkipFlushSet,
    /// The Node object is gone: the operator lets go without a flush.
    NodeGone,
    /// The agent of its node cannot be called (Lease expired, absent or unverified).
    AgentUnreachable,
    /// The agent reported the flush failed (DATA_LOSS).
    FlushFailed,
    /// The flush is acknowledged; the release of the store is in progress or retried.
    Releasing,
    /// The operator asked the agent to fence, finish and flush.
    Draining,
    /// The operator has recorded nothing about the delete yet.
    OperatorNotActing,
}

/// The answer: what it waits on, the evidence, and what the user can do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    /// Machine-readable state.
    pub wait: Wait,
    /// One line: what the delete waits on.
    pub summary: String,
    /// What was seen (conditions, Lease, annotations).
    pub evidence: Vec<String>,
    /// What the user can do.
    pub actions: Vec<String>,
}

/// Diagnoses `d` at `now`; `agent` is its node's Lease (None: no Lease), `node_exists` whether
/// the Node object exists.
pub fn diagnose(
    d: &Device,
    agent: Option<&AgentInfo>,
    node_exists: bool,
    now: Timestamp,
) -> Diagnosis {
    let node = d.spec.node_name.as_str();
    let conditions = d
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let find = |t: &str| conditions.iter().find(|c| c.type_ == t);
    let deleting = find(kind::DELETING);
    let flushed = find(kind::FLUSHED);
    let mut evidence = Vec::new();
    let Some(since) = &d.metadata.deletion_timestamp else {
        return Diagnosis {
            wait: Wait::NotDeleting,
            summary: "not being deleted (no deletionTimestamp): nothing is stuck".into(),
            evidence,
            actions: Vec::new(),
        };
    };
    evidence.push(format!(
        "deletionTimestamp {} ({} ago)",
        since.0,
        table::age(now.duration_since(since.0).as_secs())
    ));
    let finalizers = d.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        evidence.push(format!("finalizers: {finalizers:?}"));
        return Diagnosis {
            wait: Wait::OtherFinalizers,
            summary: format!(
                "Spindle's finalizer {FINALIZER} is gone; the object waits on other finalizers"
            ),
            evidence,
            actions: vec![
                "ask whoever owns those finalizers; Spindle has finished its part".into(),
            ],
        };
    }
    evidence.push(format!("finalizer {FINALIZER} present"));
    for c in [deleting, flushed].into_iter().flatten() {
        evidence.push(condition_line(c));
    }
    let annotated = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SKIP_FLUSH_ANNOTATION))
        .is_some_and(|v| v == "true");
    let operator_silent = "the operator should act within seconds: check that it runs (its \
                           leader Lease, its logs)";
    if annotated {
        evidence.push(format!("annotation {SKIP_FLUSH_ANNOTATION}: \"true\""));
        return Diagnosis {
            wait: Wait::SkipFlushSet,
            summary: format!(
                "{SKIP_FLUSH_ANNOTATION} is set: the operator removes the finalizer without \
                 waiting for the flush"
            ),
            evidence,
            actions: vec![operator_silent.into()],
        };
    }
    if !node_exists {
        evidence.push(format!("Node {node:?} does not exist"));
        return Diagnosis {
            wait: Wait::NodeGone,
            summary: format!(
                "node {node:?} is gone: the operator removes the finalizer without a flush"
            ),
            evidence,
            actions: vec![operator_silent.into()],
        };
    }
    let operator_says_unreachable = deleting.is_some_and(|c| {
        c.reason == reason::AGENT_UNREACHABLE || c.reason == reason::AGENT_UNVERIFIED
    });
    let lease_says_unreachable = agent.is_none_or(|a| !a.reachable);
    match agent {
        Some(a) => evidence.push(format!(
            "agent Lease of node {node:?}: {}, {} (duration {}s)",
            a.state(),
            a.renewed(),
            a.duration_seconds
        )),
        None => evidence.push(format!("node {node:?} has no agent Lease")),
    }
    if operator_says_unreachable || lease_says_unreachable {
        return Diagnosis {
            wait: Wait::AgentUnreachable,
            summary: format!(
                "agent unreachable: the delete waits for the agent of node {node:?} to drain and \
                 flush the Device; the finalizer holds to protect unflushed writes"
            ),
            evidence,
            actions: vec![
                format!("start the agent on node {node:?} again: the delete then completes"),
                format!(
                    "if the node is gone for good: kubectl delete node {node} (its disk went \
                     with it)"
                ),
                format!(
                    "to give up the unflushed writes: kubectl annotate device -n {} {} \
                     {SKIP_FLUSH_ANNOTATION}=true",
                    d.metadata.namespace.as_deref().unwrap_or("default"),
                    d.metadata.name.as_deref().unwrap_or_default()
                ),
            ],
        };
    }
    let ns = d.metadata.namespace.as_deref().unwrap_or("default");
    let name = d.metadata.name.as_deref().unwrap_or_default();
    if flushed.is_some_and(|c| c.reason == reason::FLUSH_FAILED) {
        return Diagnosis {
            wait: Wait::FlushFailed,
            summary: format!(
                "flush failed on node {node:?}: the agent could not make the written data \
                 durable; the finalizer holds"
            ),
            evidence,
            actions: vec![
                format!(
                    "look at the backing store on node {node:?} (disk errors, a full or read-only filesystem); the operator retries"
                ),
                format!(
                    "to give up the unflushed writes: kubectl annotate device -n {ns} {name} \
                     {SKIP_FLUSH_ANNOTATION}=true"
                ),
            ],
        };
    }
    if flushed.is_some_and(|c| c.status == ConditionStatus::True) {
        return Diagnosis {
            wait: Wait::Releasing,
            summary: format!(
                "flushed; waiting for the agent of node {node:?} to release the store"
            ),
            evidence,
            actions: vec![format!(
                "the operator retries; if Deleting's message names an error, see the agent's log \
                 on node {node:?}"
            )],
        };
    }
    match deleting {
        Some(_) => Diagnosis {
            wait: Wait::Draining,
            summary: format!(
                "drain in progress: the agent of node {node:?} fences the Device, finishes the \
                 commands it accepted and flushes"
            ),
            evidence,
            actions: vec![format!(
                "wait: a drain takes seconds; if it lasts, Deleting's message says why and the \
                 operator retries (kubectl spindle describe device -n {ns} {name})"
            )],
        },
        None => Diagnosis {
            wait: Wait::OperatorNotActing,
            summary: "the operator has not started the delete (no Deleting condition)".into(),
            evidence,
            actions: vec![operator_silent.into()],
        },
    }
}

fn condition_line(c: &Condition) -> String {
    format!("{}={:?} {}: {}", c.type_, c.status, c.reason, c.message)
}

/// The diagnosis as text.
pub fn render(key: &str, d: &Diagnosis) -> String {
    let mut out = format!("Device {key}: {}\n", d.summary);
    if !d.evidence.is_empty() {
        out.push_str("\nSeen:\n");
        for e in &d.evidence {
            out.push_str(&format!("  - {e}\n"));
        }
    }
    if !d.actions.is_empty() {
        out.push_str("\nWhat you can do:\n");
        for a in &d.actions {
            out.push_str(&format!("  - {a}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::agent::fixtures::{lease_renewed, now};
    use crate::fixtures::{condition, deleting, device};

    fn agent(ago: i64) -> AgentInfo {
        AgentInfo::from_lease(&lease_renewed("node-b", ago), now())
    }

    fn deleting_cond(why: &str, msg: &str) -> Condition {
        condition(kind::DELETING, ConditionStatus::True, why, msg)
    }

    #[test]
    fn a_device_not_deleted_is_not_stuck() {
        let d = device("d", "node-b");
        let r = diagnose(&d, Some(&agent(1)), true, now());
        assert_eq!(r.wait, Wait::NotDeleting);
        assert!(r.actions.is_empty());
    }

    #[test]
    fn an_expired_lease_is_agent_unreachable_with_three_ways_out() {
        let d = deleting(
            device("d", "node-b"),
            vec![deleting_cond(
                reason::AGENT_UNREACHABLE,
                "waiting for the agent",
            )],
        );
        let r = diagnose(&d, Some(&agent(40)), true, now());
        assert_eq!(r.wait, Wait::AgentUnreachable);
        let text = render("ns/d", &r);
        assert!(
            text.starts_with("Device ns/d: agent unreachable:"),
            "{text}"
        );
        assert!(
            text.contains("deletionTimestamp 2026-12-07T11:58:30Z (1m30s ago)"),
            "{text}"
        );
        assert!(text.contains("agent Lease of node \"node-b\": unreachable, renewed 40s ago"));
        assert!(text.contains("kubectl delete node node-b"), "{text}");
        assert!(text.contains("kubectl annotate device -n ns d spindle.dev/skip-flush=true"));
    }

    #[test]
    fn the_operators_verdict_counts_even_when_the_lease_looks_fresh() {
        // Clock skew: this machine sees a fresh renewal, the operator (its own clock) does not.
        let d = deleting(
            device("d", "node-b"),
            vec![deleting_cond(
                reason::AGENT_UNVERIFIED,
                "not shown to be node-b's agent",
            )],
        );
        assert_eq!(
            diagnose(&d, Some(&agent(1)), true, now()).wait,
            Wait::AgentUnreachable
        );
        let d = deleting(device("d", "node-b"), vec![]);
        assert_eq!(diagnose(&d, None, true, now()).wait, Wait::AgentUnreachable);
    }

    #[test]
    fn skip_flush_and_node_gone_come_before_the_agent() {
        let mut d = deleting(device("d", "node-b"), vec![]);
        assert_eq!(diagnose(&d, None, false, now()).wait, Wait::NodeGone);
        d.metadata.annotations = Some(BTreeMap::from([(
            SKIP_FLUSH_ANNOTATION.to_owned(),
            "true".to_owned(),
        )]));
        assert_eq!(diagnose(&d, None, false, now()).wait, Wait::SkipFlushSet);
    }

    #[test]
    fn flush_states_are_named() {
        let failed = deleting(
            device("d", "node-b"),
            vec![
                deleting_cond(reason::FLUSH_FAILED, "the flush failed"),
                condition(
                    kind::FLUSHED,
                    ConditionStatus::False,
                    reason::FLUSH_FAILED,
                    "EIO",
                ),
            ],
        );
        let r = diagnose(&failed, Some(&agent(1)), true, now());
        assert_eq!(r.wait, Wait::FlushFailed);
        assert!(r.summary.starts_with("flush failed"));
        let released = deleting(
            device("d", "node-b"),
            vec![
                deleting_cond(reason::DELETING, "flushed; releasing"),
                condition(
                    kind::FLUSHED,
                    ConditionStatus::True,
                    reason::FLUSH_ACKNOWLEDGED,
                    "ok",
                ),
            ],
        );
        assert_eq!(
            diagnose(&released, Some(&agent(1)), true, now()).wait,
            Wait::Releasing
        );
        let draining = deleting(
            device("d", "node-b"),
            vec![
                deleting_cond(reason::DELETING, "fencing"),
                condition(
                    kind::FLUSHED,
                    ConditionStatus::False,
                    reason::NOT_FLUSHED,
                    "waiting",
                ),
            ],
        );
        let r = diagnose(&draining, Some(&agent(1)), true, now());
        assert_eq!(r.wait, Wait::Draining);
        assert!(r.summary.starts_with("drain in progress"));
        let silent = deleting(device("d", "node-b"), vec![]);
        assert_eq!(
            diagnose(&silent, Some(&agent(1)), true, now()).wait,
            Wait::OperatorNotActing
        );
    }

    #[test]
    fn only_foreign_finalizers_left() {
        let mut d = deleting(device("d", "node-b"), vec![]);
        d.metadata.finalizers = Some(vec!["example.com/backup".into()]);
        assert_eq!(diagnose(&d, None, true, now()).wait, Wait::OtherFinalizers);
    }
}
