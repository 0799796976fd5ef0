//! `kubectl spindle drain device`: what the drain of a Device (the first step of its delete)
//! has to get through: the iSCSI sessions on the Targets exporting it, the commands in flight
//! on its LUNs (from the agent's metrics, when given), the flush state the operator recorded,
//! and what the delete waits on (`why device`). It reads only. Sessions do not hold a delete:
//! the agent's DrainDevice fences the LUN, lets accepted commands finish and flushes. Ending
//! them is the Target's business (the operator's RemoveTarget closes them); the commands that
//! do it are printed for the user to run.

use serde::Serialize;
use spindle_crds::Device;
use spindle_crds::words::{kind, reason};

use crate::describe::TargetLine;
use crate::scrape::{self, Sample};
use crate::table;
use crate::why::{Diagnosis, Wait};

/// Where the Device's flush stands, from its `Flushed` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flush {
    /// No drain asked (no `Flushed` condition).
    NotAsked,
    /// Asked, not acknowledged yet.
    Waiting,
    /// The agent acknowledged the flush.
    Acknowledged,
    /// The agent never had the Device: nothing to flush.
    NeverServed,
    /// The flush failed on the node (DATA_LOSS).
    Failed,
    /// Given up: skip-flush annotation or the Node gone.
    Skipped,
}

/// One LUN of a Target exporting the Device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionLine {
    /// The Target (same namespace).
    pub target: String,
    /// The Device's LUN in it.
    pub lun: u64,
    /// Sessions as the Target's status last reported them.
    pub sessions_in_status: u32,
    /// Sessions the agent counts now (with its metrics; None: not shown).
    pub sessions_live: Option<u64>,
    /// SCSI commands in flight on the LUN now (with its metrics; None: not shown).
    pub in_flight: Option<u64>,
}

/// Everything `drain device` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainView {
    /// namespace/name.
    pub device: String,
    /// Its node.
    pub node: String,
    /// Where the flush stands.
    pub flush: Flush,
    /// The `Flushed` condition's message, if any.
    pub flush_message: Option<String>,
    /// One line per Target LUN exporting it.
    pub sessions: Vec<SessionLine>,
    /// Where live figures came from, or why there are none.
    pub live_source: String,
    /// What the delete waits on.
    pub delete: Diagnosis,
    /// Commands that end the sessions (printed, never run).
    pub end_sessions: Vec<String>,
}

/// The flush state of `d`.
pub fn flush_state(d: &Device) -> (Flush, Option<String>) {
    let c = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == kind::FLUSHED));
    let Some(c) = c else {
        return (Flush::NotAsked, None);
    };
    let state = match c.reason.as_str() {
        reason::FLUSH_ACKNOWLEDGED => Flush::Acknowledged,
        reason::NEVER_SERVED => Flush::NeverServed,
        reason::FLUSH_FAILED => Flush::Failed,
        reason::FLUSH_SKIPPED | reason::NODE_GONE => Flush::Skipped,
        _ => Flush::Waiting,
    };
    (state, Some(c.message.clone()))
}

/// The view of Device `d` exported by `targets`; `live` is the agent's scrape (Ok) or why there
/// is none (Err: not asked for, or it failed).
pub fn view(
    d: &Device,
    targets: &[TargetLine],
    live: Result<(&str, &[Sample]), String>,
    delete: Diagnosis,
) -> DrainView {
    let ns = d
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = d.metadata.name.clone().unwrap_or_default();
    let (flush, flush_message) = flush_state(d);
    let samples = live.as_ref().ok().map(|(_, s)| *s);
    let sessions = targets
        .iter()
        .map(|t| {
            let key = format!("{ns}/{}", t.name);
            let lun = t.lun.to_string();
            // A series the agent does not show stays unknown ("-"), never a guessed zero.
            let gauge = |metric: &str, labels: &[(&str, &str)]| {
                samples
                    .and_then(|s| scrape::value(s, metric, labels))
                    .map(|v| v as u64)
            };
            SessionLine {
                target: t.name.clone(),
                lun: t.lun,
                sessions_in_status: t.sessions,
                sessions_live: gauge(scrape::SESSIONS, &[("target", &key)]),
                in_flight: gauge(scrape::IN_FLIGHT, &[("target", &key), ("lun", &lun)]),
            }
        })
        .collect();
    let live_source = match live {
        Ok((addr, _)) => format!("live from the agent's metrics at {addr}"),
        Err(why) => why,
    };
    let end_sessions = targets
        .iter()
        .map(|t| {
            format!(
                "kubectl delete target -n {ns} {} (or remove LUN {} from it): the operator asks \
                 the agent to stop serving it; accepted commands finish, its sessions close",
                t.name, t.lun
            )
        })
        .collect();
    DrainView {
        device: format!("{ns}/{name}"),
        node: d.spec.node_name.clone(),
        flush,
        flush_message,
        sessions,
        live_source,
        delete,
        end_sessions,
    }
}

/// The view as text.
pub fn render(v: &DrainView) -> String {
    let mut out = format!("Device {} on node {}\n", v.device, v.node);
    let flush = match v.flush {
        Flush::NotAsked if v.delete.wait == Wait::NotDeleting => {
            "no drain asked (the Device is not being deleted)"
        }
        Flush::NotAsked => "no drain asked yet",
        Flush::Waiting => "asked, not acknowledged yet",
        Flush::Acknowledged => "acknowledged by the agent",
        Flush::NeverServed => "nothing to flush (the agent never had it)",
        Flush::Failed => "FAILED on the node: the written data is not durable",
        Flush::Skipped => "skipped (the writes not flushed are given up)",
    };
    out.push_str(&format!("Flush:    {flush}"));
    if let Some(m) = &v.flush_message {
        out.push_str(&format!(" ({m})"));
    }
    out.push_str(&format!("\nDelete:   {}\n", v.delete.summary));
    out.push_str(&format!(
        "\nSessions and commands in flight ({}):\n",
        v.live_source
    ));
    if v.sessions.is_empty() {
        out.push_str("  (no Target exports it: no session can reach it)\n");
    } else {
        let dash = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        let rows: Vec<Vec<String>> = v
            .sessions
            .iter()
            .map(|s| {
                vec![
                    s.target.clone(),
                    s.lun.to_string(),
                    s.sessions_in_status.to_string(),
                    dash(s.sessions_live),
                    dash(s.in_flight),
                ]
            })
            .collect();
        let header = ["TARGET", "LUN", "SESSIONS", "LIVE-SESSIONS", "IN-FLIGHT"];
        for line in table::render(&header, &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
        out.push_str(
            "  Sessions do not hold the delete: the drain fences the LUN (new commands fail), \
             lets the accepted ones finish, then flushes.\n",
        );
    }
    if !v.delete.evidence.is_empty() {
        out.push_str("\nSeen:\n");
        for e in &v.delete.evidence {
            out.push_str(&format!("  - {e}\n"));
        }
    }
    let actions: Vec<&String> = v.delete.actions.iter().chain(&v.end_sessions).collect();
    if !actions.is_empty() {
        out.push_str("\nWhat you can do (nothing here is run for you):\n");
        for a in actions {
            out.push_str(&format!("  - {a}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use spindle_crds::ConditionStatus;

    use super::*;
    use crate::agent::fixtures::now;
    use crate::describe::targets_of;
    use crate::fixtures::{condition, deleting, device, target};
    use crate::why::diagnose;

    fn exported() -> (Device, Vec<TargetLine>) {
        let d = device("d0", "node-a");
        let mut t = target("t0", &["other", "d0"]);
        t.status.get_or_insert_default().sessions = 1;
        let lines = targets_of(&d, &[t]);
        (d, lines)
    }

    #[test]
    fn live_sessions_and_commands_in_flight_per_lun() {
        let (d, targets) = exported();
        let scrape = scrape::parse(
            "spindle_iscsi_sessions{target=\"ns/t0\"} 2\n\
             spindle_scsi_inflight{target=\"ns/t0\",lun=\"1\"} 5\n\
             spindle_scsi_inflight{target=\"ns/t0\",lun=\"0\"} 9\n",
        );
        let why = diagnose(&d, None, true, now());
        let v = view(&d, &targets, Ok(("10.0.0.2:9562", &scrape)), why);
        assert_eq!(v.flush, Flush::NotAsked);
        assert_eq!(
            v.sessions,
            [SessionLine {
                target: "t0".into(),
                lun: 1,
                sessions_in_status: 1,
                sessions_live: Some(2),
                in_flight: Some(5),
            }]
        );
        let text = render(&v);
        assert!(
            text.starts_with(
                "Device ns/d0 on node node-a\nFlush:    no drain asked (the Device is not being \
                 deleted)\nDelete:   not being deleted"
            ),
            "{text}"
        );
        assert!(
            text.contains("  TARGET   LUN   SESSIONS   LIVE-SESSIONS   IN-FLIGHT\n  t0       1     1          2               5\n"),
            "{text}"
        );
        assert!(text.contains("kubectl delete target -n ns t0 (or remove LUN 1 from it)"));
    }

    #[test]
    fn without_metrics_the_live_columns_are_dashes_and_say_why() {
        let (d, targets) = exported();
        let why = diagnose(&d, None, true, now());
        let v = view(&d, &targets, Err("no --agent-metrics given".into()), why);
        assert_eq!(v.sessions[0].sessions_live, None);
        let text = render(&v);
        assert!(text.contains("(no --agent-metrics given):"), "{text}");
        assert!(
            text.contains("  t0       1     1          -               -\n"),
            "{text}"
        );
    }

    #[test]
    fn a_series_the_agent_does_not_show_stays_unknown() {
        let (d, targets) = exported();
        let why = diagnose(&d, None, true, now());
        let scrape = scrape::parse("spindle_scsi_inflight{target=\"ns/t0\",lun=\"0\"} 4\n");
        let v = view(&d, &targets, Ok(("a:1", &scrape)), why);
        assert_eq!(v.sessions[0].sessions_live, None);
        assert_eq!(v.sessions[0].in_flight, None, "LUN 1 is not LUN 0");
    }

    #[test]
    fn the_flush_state_follows_the_flushed_condition() {
        let cases = [
            (reason::NOT_FLUSHED, ConditionStatus::False, Flush::Waiting),
            (
                reason::FLUSH_ACKNOWLEDGED,
                ConditionStatus::True,
                Flush::Acknowledged,
            ),
            (
                reason::NEVER_SERVED,
                ConditionStatus::True,
                Flush::NeverServed,
            ),
            (reason::FLUSH_FAILED, ConditionStatus::False, Flush::Failed),
            (
                reason::FLUSH_SKIPPED,
                ConditionStatus::False,
                Flush::Skipped,
            ),
            (reason::NODE_GONE, ConditionStatus::False, Flush::Skipped),
        ];
        for (why, status, want) in cases {
            let d = deleting(
                device("d0", "node-a"),
                vec![condition(kind::FLUSHED, status, why, "m")],
            );
            assert_eq!(flush_state(&d), (want, Some("m".into())), "{why}");
        }
        let d = deleting(device("d0", "node-a"), vec![]);
        let v = view(&d, &[], Err("x".into()), diagnose(&d, None, true, now()));
        let text = render(&v);
        assert!(text.contains("Flush:    no drain asked yet\n"), "{text}");
        assert!(text.contains("Delete:   agent unreachable"), "{text}");
        assert!(text.contains("(no Target exports it"), "{text}");
        assert!(text.contains("What you can do (nothing here is run for you):"));
    }
}
