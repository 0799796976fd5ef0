//! `kubectl spindle why target`: whether a Target serves, and if not, why: the same questions
//! the operator asks before it applies a Target (operator/src/controller/target.rs), answered
//! from what the API holds: its LUNs' Devices, its node's agent Lease, its conditions. An
//! unreachable agent comes before Ready: a Ready=True written before the agent stopped is stale.

use kube::ResourceExt;
use serde::Serialize;
use spindle_crds::words::{kind, reason};
use spindle_crds::{Condition, ConditionStatus, Device, Target};

use crate::agent::AgentInfo;

/// Why a Target does (not) serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetState {
    /// Ready=True: the agent serves it.
    Serving,
    /// It is being deleted.
    Deleting,
    /// `spec.luns` is empty.
    NoLuns,
    /// A LUN names a Device that does not exist.
    DeviceNotFound,
    /// A LUN names a Device being deleted.
    DeviceDeleting,
    /// A LUN names a Device that is not Ready.
    DeviceNotReady,
    /// Its LUNs' Devices are on different nodes.
    DevicesOnTwoNodes,
    /// Its node's agent does not renew its Lease (or has none).
    AgentUnreachable,
    /// The operator says why in Ready (IQN or port not allowed, CHAP Secret, a refusal).
    OperatorSays,
    /// The operator has recorded nothing yet.
    OperatorNotActing,
}

/// One LUN and what its Device looks like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LunLine {
    /// LUN number.
    pub lun: u64,
    /// The Device it names.
    pub device: String,
    /// The Device exists.
    pub found: bool,
    /// Its node.
    pub node: Option<String>,
    /// Its Ready status and reason, e.g. `True Applied`.
    pub ready: Option<String>,
    /// It is being deleted.
    pub deleting: bool,
}

/// The answer for one Target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetDiagnosis {
    /// Machine-readable state.
    pub state: TargetState,
    /// One line.
    pub summary: String,
    /// Its node (status.node, else its first Device's).
    pub node: Option<String>,
    /// Its LUNs.
    pub luns: Vec<LunLine>,
    /// What was seen.
    pub evidence: Vec<String>,
    /// What the user can do.
    pub actions: Vec<String>,
}

/// Diagnoses `t`; `devices` are the Devices of its namespace, `agent` its node's Lease (None:
/// none, or no node known).
pub fn diagnose(t: &Target, devices: &[Device], agent: Option<&AgentInfo>) -> TargetDiagnosis {
    let ns = t.namespace().unwrap_or_else(|| "default".into());
    let name = t.name_any();
    let status = t.status.clone().unwrap_or_default();
    let cond = |ty: &str| status.conditions.iter().find(|c| c.type_ == ty).cloned();
    let luns: Vec<LunLine> = t
        .spec
        .luns
        .iter()
        .map(|l| lun_line(l.lun, &l.device_ref, devices))
        .collect();
    let node = status
        .node
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| luns.iter().find_map(|l| l.node.clone()));
    let mut evidence: Vec<String> = [kind::READY, kind::AGENT_REACHABLE, kind::DELETING]
        .into_iter()
        .filter_map(cond)
        .map(|c| condition_line(&c))
        .collect();
    if let Some(a) = agent {
        evidence.push(format!(
            "agent Lease of node {:?}: {}, {}",
            a.node,
            a.state(),
            a.renewed()
        ));
    }
    let mut d = TargetDiagnosis {
        state: TargetState::OperatorNotActing,
        summary: String::new(),
        node: node.clone(),
        luns: luns.clone(),
        evidence: Vec::new(),
        actions: Vec::new(),
    };
    let describe = |dev: &str| format!("kubectl spindle describe device -n {ns} {dev}");
    let ready = cond(kind::READY);
    let (state, summary, actions) = if t.metadata.deletion_timestamp.is_some() {
        (
            TargetState::Deleting,
            "being deleted: the operator stops it on its node's agent, then lets it go".into(),
            vec![format!(
                "if it stays, see its Deleting condition; the agent of node {} must be reachable",
                node.as_deref().unwrap_or("?")
            )],
        )
    } else if luns.is_empty() {
        (
            TargetState::NoLuns,
            "spec.luns is empty: there is nothing to serve".into(),
            vec![format!("add a LUN: kubectl edit target -n {ns} {name}")],
        )
    } else if let Some(l) = luns.iter().find(|l| !l.found) {
        (
            TargetState::DeviceNotFound,
            format!(
                "LUN {} names Device {ns}/{}, which does not exist",
                l.lun, l.device
            ),
            vec![format!(
                "create Device {ns}/{} or fix spec.luns[].deviceRef (kubectl get devices -n {ns})",
                l.device
            )],
        )
    } else if let Some(l) = luns.iter().find(|l| l.deleting) {
        (
            TargetState::DeviceDeleting,
            format!(
                "LUN {} names Device {ns}/{}, which is being deleted",
                l.lun, l.device
            ),
            vec![format!(
                "remove the LUN from the Target, or see kubectl spindle why device -n {ns} {}",
                l.device
            )],
        )
    } else if let Some(other) = luns.iter().find(|l| l.node != luns[0].node) {
        (
            TargetState::DevicesOnTwoNodes,
            format!(
                "its Devices are on different nodes ({} and {}): a Target serves from one node",
                luns[0].node.as_deref().unwrap_or("?"),
                other.node.as_deref().unwrap_or("?")
            ),
            vec!["put its LUNs' Devices on one node, or split the Target".into()],
        )
    } else if agent.is_none_or(|a| !a.reachable)
        || cond(kind::AGENT_REACHABLE).is_some_and(|c| c.status == ConditionStatus::False)
        || ready
            .as_ref()
            .is_some_and(|c| c.reason == reason::AGENT_UNREACHABLE || c.reason == reason::NO_AGENT)
    {
        let n = node.as_deref().unwrap_or("?");
        if agent.is_none() {
            evidence.push(format!("node {n:?} has no agent Lease"));
        }
        (
            TargetState::AgentUnreachable,
            format!("the agent of node {n:?} is unreachable: nothing serves the Target"),
            vec![
                format!("start the agent on node {n:?} (its Lease must be renewed)"),
                "kubectl spindle nodes shows every agent's Lease".into(),
            ],
        )
    } else if let Some(l) = luns.iter().find(|l| !l.ready_true()) {
        (
            TargetState::DeviceNotReady,
            format!(
                "LUN {} names Device {ns}/{}, which is not Ready ({})",
                l.lun,
                l.device,
                l.ready.as_deref().unwrap_or("no Ready condition yet")
            ),
            vec![describe(&l.device)],
        )
    } else if ready
        .as_ref()
        .is_some_and(|c| c.status == ConditionStatus::True)
    {
        let portals = if status.portals.is_empty() {
            "no portal reported".to_owned()
        } else {
            status.portals.join(", ")
        };
        (
            TargetState::Serving,
            format!(
                "serving on node {} at {portals} ({} session(s))",
                node.as_deref().unwrap_or("?"),
                status.sessions
            ),
            Vec::new(),
        )
    } else if let Some(c) = ready {
        (
            TargetState::OperatorSays,
            format!("not serving: {}: {}", c.reason, c.message),
            vec![format!(
                "fix what the message names (kubectl edit target -n {ns} {name}); the operator \
                 retries"
            )],
        )
    } else {
        (
            TargetState::OperatorNotActing,
            "the operator has not reconciled it (no Ready condition)".into(),
            vec!["check that the operator runs (its leader Lease, its logs)".into()],
        )
    };
    d.state = state;
    d.summary = summary;
    d.evidence = evidence;
    d.actions = actions;
    d
}

impl LunLine {
    fn ready_true(&self) -> bool {
        self.ready.as_deref().is_some_and(|r| r.starts_with("True"))
    }
}

fn lun_line(lun: u64, device: &str, devices: &[Device]) -> LunLine {
    let found = devices.iter().find(|d| d.name_any() == device);
    LunLine {
        lun,
        device: device.to_owned(),
        found: found.is_some(),
        node: found.map(|d| d.spec.node_name.clone()),
        ready: found.and_then(|d| {
            let c = d
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == kind::READY)?;
            Some(format!("{:?} {}", c.status, c.reason))
        }),
        deleting: found.is_some_and(|d| d.metadata.deletion_timestamp.is_some()),
    }
}

fn condition_line(c: &Condition) -> String {
    format!("{}={:?} {}: {}", c.type_, c.status, c.reason, c.message)
}

/// The diagnosis as text.
pub fn render(key: &str, d: &TargetDiagnosis) -> String {
    let mut out = format!("Target {key}: {}\n", d.summary);
    if !d.luns.is_empty() {
        out.push_str("\nLUNs:\n");
        let rows: Vec<Vec<String>> = d
            .luns
            .iter()
            .map(|l| {
                let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                vec![
                    l.lun.to_string(),
                    l.device.clone(),
                    if !l.found {
                        "not found".into()
                    } else if l.deleting {
                        "deleting".into()
                    } else {
                        "exists".into()
                    },
                    dash(&l.node),
                    dash(&l.ready),
                ]
            })
            .collect();
        for line in
            crate::table::render(&["LUN", "DEVICE", "STATE", "NODE", "READY"], &rows).lines()
        {
            out.push_str(&format!("  {line}\n"));
        }
    }
    for (title, items) in [("Seen", &d.evidence), ("What you can do", &d.actions)] {
        if !items.is_empty() {
            out.push_str(&format!("\n{title}:\n"));
            for i in items {
                out.push_str(&format!("  - {i}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fixtures::{lease_renewed, now};
    use crate::fixtures::{condition, deleting, device, target};

    fn ready(mut d: Device) -> Device {
        d.status.get_or_insert_default().conditions = vec![condition(
            kind::READY,
            ConditionStatus::True,
            reason::APPLIED,
            "served",
        )];
        d
    }

    fn agent(ago: i64) -> AgentInfo {
        AgentInfo::from_lease(&lease_renewed("node-a", ago), now())
    }

    #[test]
    fn a_ready_target_is_serving() {
        let mut t = target("t", &["d0"]);
        let s = t.status.get_or_insert_default();
        s.conditions = vec![condition(
            kind::READY,
            ConditionStatus::True,
            reason::APPLIED,
            "ok",
        )];
        s.node = Some("node-a".into());
        s.portals = vec!["127.0.0.2:3260".into()];
        s.sessions = 2;
        let d = diagnose(&t, &[ready(device("d0", "node-a"))], Some(&agent(1)));
        assert_eq!(d.state, TargetState::Serving);
        let text = render("ns/t", &d);
        assert!(
            text.starts_with(
                "Target ns/t: serving on node node-a at 127.0.0.2:3260 (2 session(s))\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  LUN   DEVICE   STATE    NODE     READY\n  0     d0       exists   node-a   True Applied\n"),
            "{text}"
        );
    }

    #[test]
    fn each_device_problem_is_named_in_the_operators_order() {
        let a = agent(1);
        let t = target("t", &["d0", "d1"]);
        let d0 = ready(device("d0", "node-a"));
        let r = diagnose(&t, std::slice::from_ref(&d0), Some(&a));
        assert_eq!(r.state, TargetState::DeviceNotFound);
        assert_eq!(r.summary, "LUN 1 names Device ns/d1, which does not exist");
        let d1 = deleting(ready(device("d1", "node-a")), vec![]);
        assert_eq!(
            diagnose(&t, &[d0.clone(), d1], Some(&a)).state,
            TargetState::DeviceDeleting
        );
        let r = diagnose(&t, &[d0.clone(), device("d1", "node-a")], Some(&a));
        assert_eq!(r.state, TargetState::DeviceNotReady);
        assert!(r.summary.ends_with("(no Ready condition yet)"), "{r:?}");
        let r = diagnose(&t, &[d0.clone(), ready(device("d1", "node-b"))], Some(&a));
        assert_eq!(r.state, TargetState::DevicesOnTwoNodes);
        assert_eq!(
            diagnose(&target("t", &[]), &[], Some(&a)).state,
            TargetState::NoLuns
        );
    }

    #[test]
    fn an_expired_lease_or_none_is_agent_unreachable() {
        // Ready=True from before the agent stopped does not make it serving.
        let mut t = target("t", &["d0"]);
        t.status.get_or_insert_default().conditions = vec![condition(
            kind::READY,
            ConditionStatus::True,
            reason::APPLIED,
            "ok",
        )];
        let devices = [ready(device("d0", "node-a"))];
        let r = diagnose(&t, &devices, Some(&agent(40)));
        assert_eq!(r.state, TargetState::AgentUnreachable);
        assert!(
            r.evidence
                .contains(&"agent Lease of node \"node-a\": unreachable, renewed 40s ago".into()),
            "{r:?}"
        );
        let r = diagnose(&t, &devices, None);
        assert_eq!(r.state, TargetState::AgentUnreachable);
        assert!(
            r.evidence
                .contains(&"node \"node-a\" has no agent Lease".into())
        );
        // The operator's verdict (its clock) counts even when the Lease looks fresh here.
        t.status.get_or_insert_default().conditions.push(condition(
            kind::AGENT_REACHABLE,
            ConditionStatus::False,
            reason::AGENT_UNREACHABLE,
            "Lease expired",
        ));
        assert_eq!(
            diagnose(&t, &devices, Some(&agent(1))).state,
            TargetState::AgentUnreachable
        );
    }

    #[test]
    fn otherwise_the_operators_ready_condition_speaks() {
        let mut t = target("t", &["d0"]);
        let devices = [ready(device("d0", "node-a"))];
        assert_eq!(
            diagnose(&t, &devices, Some(&agent(1))).state,
            TargetState::OperatorNotActing
        );
        t.status.get_or_insert_default().conditions = vec![condition(
            kind::READY,
            ConditionStatus::False,
            reason::IQN_NOT_ALLOWED,
            "spec.iqn: not a name of namespace ns",
        )];
        let r = diagnose(&t, &devices, Some(&agent(1)));
        assert_eq!(r.state, TargetState::OperatorSays);
        assert_eq!(
            r.summary,
            "not serving: IqnNotAllowed: spec.iqn: not a name of namespace ns"
        );
        t.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        assert_eq!(
            diagnose(&t, &devices, Some(&agent(1))).state,
            TargetState::Deleting
        );
    }
}
