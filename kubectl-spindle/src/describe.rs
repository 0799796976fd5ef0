//! `kubectl spindle describe device`: a Device with its node's agent, the Targets exporting it
//! (with their sessions), its conditions, its last drain and its recent Events.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use spindle_crds::words::{kind, reason};
use spindle_crds::{Condition, Device, Target};

use crate::agent::AgentInfo;
use crate::events::EventLine;
use crate::table;

/// One Target exporting the Device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetLine {
    /// Its name (same namespace as the Device).
    pub name: String,
    /// The LUN number the Device has in it.
    pub lun: u64,
    /// Its Ready condition's status, if any.
    pub ready: Option<String>,
    /// Logged-in sessions.
    pub sessions: u32,
    /// The IQN in effect.
    pub iqn: String,
    /// Portals initiators connect to.
    pub portals: Vec<String>,
}

/// Everything `describe device` shows.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    /// The Device as read.
    pub device: Device,
    /// Its node's agent (None: no Lease).
    pub agent: Option<AgentInfo>,
    /// Targets whose LUNs name it.
    pub targets: Vec<TargetLine>,
    /// The last drain the agent acknowledged (the `Flushed` condition's message), if any.
    pub last_drain: Option<String>,
    /// Recent Events, oldest first.
    pub events: Vec<EventLine>,
}

/// The Targets of `targets` that export `d`, with the LUN they give it.
pub fn targets_of(d: &Device, targets: &[Target]) -> Vec<TargetLine> {
    let name = d.name_any();
    targets
        .iter()
        .filter(|t| t.namespace() == d.namespace())
        .flat_map(|t| {
            let status = t.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .find(|c| c.type_ == kind::READY)
                .map(|c| format!("{:?}", c.status));
            t.spec
                .luns
                .iter()
                .filter(|l| l.device_ref == name)
                .map(move |l| TargetLine {
                    name: t.name_any(),
                    lun: l.lun,
                    ready: ready.clone(),
                    sessions: status.sessions,
                    iqn: status.iqn.clone().unwrap_or_else(|| t.effective_iqn()),
                    portals: status.portals.clone(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The message of an acknowledged flush (`Flushed=True` with `FlushAcknowledged`).
pub fn last_drain(d: &Device) -> Option<String> {
    d.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind::FLUSHED && c.reason == reason::FLUSH_ACKNOWLEDGED)
        .map(|c| c.message.clone())
}

/// The view as text, at `now`.
pub fn render(v: &DeviceView, now: Timestamp) -> String {
    let d = &v.device;
    let status = d.status.clone().unwrap_or_default();
    let mut out = String::new();
    let mut field = |k: &str, v: String| out.push_str(&format!("{:<13}{v}\n", format!("{k}:")));
    field(
        "Device",
        format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any()),
    );
    let agent = match &v.agent {
        Some(a) => format!("agent {}, {}", a.state(), a.renewed()),
        None => "no agent Lease".to_owned(),
    };
    field("Node", format!("{} ({agent})", d.spec.node_name));
    let source = match (&d.spec.source.file, &d.spec.source.block) {
        (Some(f), _) => format!("file {} ({})", f.path, table::bytes(f.size_bytes)),
        (_, Some(b)) => format!("block device {}", b.path),
        _ => "-".to_owned(),
    };
    field("Source", source);
    field(
        "Capacity",
        status
            .capacity_bytes
            .map(table::bytes)
            .unwrap_or_else(|| "-".into()),
    );
    field(
        "Settings",
        format!(
            "blockSize {}, writeCache {:?}, reclaimPolicy {:?}{}{}{}",
            d.spec.block_size,
            d.spec.write_cache,
            d.spec.reclaim_policy,
            if d.spec.read_only { ", readOnly" } else { "" },
            if d.spec.thin_provisioning {
                ", thin"
            } else {
                ""
            },
            if d.spec.direct_io { ", directIO" } else { "" },
        ),
    );
    if let Some(serial) = &status.serial {
        field("Serial", serial.clone());
    }
    if let Some(naa) = &status.naa {
        field("NAA", naa.clone());
    }
    if let Some(t) = &d.metadata.deletion_timestamp {
        field(
            "Deleting",
            format!(
                "since {} ({} ago); finalizers {:?} (kubectl spindle why device -n {} {})",
                t.0,
                table::age(now.duration_since(t.0).as_secs()),
                d.finalizers(),
                d.namespace().unwrap_or_default(),
                d.name_any()
            ),
        );
    }
    field(
        "Last drain",
        v.last_drain
            .clone()
            .unwrap_or_else(|| "none recorded".into()),
    );
    out.push_str("\nTargets:\n");
    if v.targets.is_empty() {
        out.push_str("  (no Target exports it)\n");
    } else {
        let rows: Vec<Vec<String>> = v
            .targets
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.lun.to_string(),
                    t.ready.clone().unwrap_or_else(|| "-".into()),
                    t.sessions.to_string(),
                    if t.portals.is_empty() {
                        "-".into()
                    } else {
                        t.portals.join(",")
                    },
                    t.iqn.clone(),
                ]
            })
            .collect();
        indent(
            &mut out,
            &table::render(
                &["NAME", "LUN", "READY", "SESSIONS", "PORTALS", "IQN"],
                &rows,
            ),
        );
    }
    out.push_str("\nConditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  (none: the operator has not reconciled it)\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|c| condition_row(c, now))
            .collect();
        indent(
            &mut out,
            &table::render(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], &rows),
        );
    }
    out.push_str("\nEvents:\n");
    if v.events.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = v
            .events
            .iter()
            .map(|e| {
                vec![
                    e.seconds_ago.map(table::age).unwrap_or_else(|| "-".into()),
                    e.type_.clone(),
                    e.reason.clone(),
                    e.note.clone(),
                ]
            })
            .collect();
        indent(
            &mut out,
            &table::render(&["AGE", "TYPE", "REASON", "MESSAGE"], &rows),
        );
    }
    out
}

fn condition_row(c: &Condition, now: Timestamp) -> Vec<String> {
    let age = c
        .last_transition_time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| table::age(now.duration_since(t).as_secs()))
        .unwrap_or_else(|| "-".into());
    vec![
        c.type_.clone(),
        format!("{:?}", c.status),
        c.reason.clone(),
        age,
        c.message.clone(),
    ]
}

fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use spindle_crds::ConditionStatus;

    use super::*;
    use crate::agent::fixtures::{lease_renewed, now};
    use crate::events::fixtures::event;
    use crate::fixtures::{condition, device, target};

    #[test]
    fn a_served_device_with_its_target_conditions_and_events() {
        let mut d = device("d0", "node-a");
        let s = d.status.get_or_insert_default();
        s.capacity_bytes = Some(64 << 20);
        s.conditions = vec![
            condition(
                kind::READY,
                ConditionStatus::True,
                reason::APPLIED,
                "served",
            ),
            condition(
                kind::AGENT_REACHABLE,
                ConditionStatus::True,
                reason::LEASE_CURRENT,
                "the agent of node \"node-a\" renews its Lease",
            ),
        ];
        let mut t = target("t0", &["other", "d0"]);
        let ts = t.status.get_or_insert_default();
        ts.sessions = 1;
        ts.portals = vec!["127.0.0.2:3260".into()];
        let view = DeviceView {
            targets: targets_of(&d, &[t, target("t1", &["other"])]),
            last_drain: last_drain(&d),
            agent: Some(AgentInfo::from_lease(&lease_renewed("node-a", 2), now())),
            events: crate::events::about(
                &[event("d0", 30, "Normal", "Applied", "served by node-a")],
                "Device",
                "d0",
                None,
                now(),
                10,
            ),
            device: d,
        };
        let text = render(&view, now());
        let expected = "\
Device:      ns/d0
Node:        node-a (agent reachable, renewed 2s ago)
Source:      file d0.img (64.0 MiB)
Capacity:    64.0 MiB
Settings:    blockSize 512, writeCache Writeback, reclaimPolicy Delete
Last drain:  none recorded

Targets:
  NAME   LUN   READY   SESSIONS   PORTALS          IQN
  t0     1     -       1          127.0.0.2:3260   iqn.2026-11.dev.spindle:ns.t0

Conditions:
  TYPE             STATUS   REASON         AGE   MESSAGE
  Ready            True     Applied        30s   served
  AgentReachable   True     LeaseCurrent   30s   the agent of node \"node-a\" renews its Lease

Events:
  AGE   TYPE     REASON    MESSAGE
  30s   Normal   Applied   served by node-a
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_deleted_device_shows_its_last_drain_and_the_why_hint() {
        let d = crate::fixtures::deleting(
            device("d0", "node-a"),
            vec![condition(
                kind::FLUSHED,
                ConditionStatus::True,
                reason::FLUSH_ACKNOWLEDGED,
                "the agent of node \"node-a\" acknowledged the flush",
            )],
        );
        let view = DeviceView {
            targets: Vec::new(),
            last_drain: last_drain(&d),
            agent: None,
            events: Vec::new(),
            device: d,
        };
        let text = render(&view, now());
        assert!(
            text.contains("Node:        node-a (no agent Lease)\n"),
            "{text}"
        );
        assert!(
            text.contains("Deleting:    since 2026-12-07T11:58:30Z (1m30s ago); finalizers [\"spindle.dev/flush\"] (kubectl spindle why device -n ns d0)\n"),
            "{text}"
        );
        assert!(
            text.contains("Last drain:  the agent of node \"node-a\" acknowledged the flush\n")
        );
        assert!(text.contains("  (no Target exports it)\n"));
    }
}
