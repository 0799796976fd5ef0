//! Conditions per the Kubernetes API conventions (`lastTransitionTime` moves only when the status
//! does), the status write (server-side apply on the status subresource, field manager
//! `spindle-operator`), and the Events that tell a person what changed.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use spindle_crds::{Condition, ConditionStatus};

use crate::agents::AgentView;
use crate::conditions::Problem;
use crate::conditions::{kind, reason};

/// Field manager of every status write.
pub const FIELD_MANAGER: &str = "spindle-operator";

/// A condition as the controller wants it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// Condition type (see [`kind`]).
    pub type_: &'static str,
    /// Its status.
    pub status: ConditionStatus,
    /// CamelCase reason.
    pub reason: String,
    /// For a person.
    pub message: String,
}

impl Want {
    /// A condition.
    pub fn new(
        type_: &'static str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// The conditions to write: `wants`, in that order, each keeping the old `lastTransitionTime`
/// when its status did not change, else `now`.
pub fn next_conditions(
    old: &[Condition],
    wants: &[Want],
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    wants
        .iter()
        .map(|w| {
            let prior = old.iter().find(|c| c.type_ == w.type_);
            let since = match prior {
                Some(c) if c.status == w.status => c.last_transition_time.clone(),
                _ => None,
            };
            Condition {
                type_: w.type_.to_owned(),
                status: w.status,
                reason: w.reason.clone(),
                message: w.message.clone(),
                last_transition_time: Some(since.unwrap_or_else(|| now.to_owned())),
                observed_generation: generation,
            }
        })
        .collect()
}

/// The conditions whose status or reason differ from before: what Events report.
pub fn transitions<'a>(old: &[Condition], new: &'a [Condition]) -> Vec<&'a Condition> {
    new.iter()
        .filter(|n| {
            !old.iter()
                .any(|o| o.type_ == n.type_ && o.status == n.status && o.reason == n.reason)
        })
        .collect()
}

/// The Ready condition: True with `ok()` as message, or False with the first problem's reason
/// and every problem's message.
pub fn ready(problems: &[Problem], ok: impl FnOnce() -> String) -> Want {
    match problems.first() {
        None => Want::new(kind::READY, ConditionStatus::True, reason::APPLIED, ok()),
        Some(first) => Want::new(
            kind::READY,
            ConditionStatus::False,
            first.reason,
            problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// The AgentReachable condition for an object on `node`; `field` names where the node comes
/// from (for the message).
pub fn agent_reachable(node: &str, agent: Option<&AgentView>, field: &str) -> Want {
    match crate::desired::node_problem(node, agent, field) {
        None => Want::new(
            kind::AGENT_REACHABLE,
            ConditionStatus::True,
            reason::LEASE_CURRENT,
            format!("the agent of node {node:?} renews its Lease"),
        ),
        Some(p) => Want::new(
            kind::AGENT_REACHABLE,
            ConditionStatus::False,
            p.reason,
            p.message,
        ),
    }
}

/// A status and its conditions.
pub trait HasConditions: Serialize + PartialEq {
    /// The conditions.
    fn conditions(&self) -> &[Condition];
}

impl HasConditions for spindle_crds::DeviceStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl HasConditions for spindle_crds::TargetStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl HasConditions for spindle_crds::DeviceSnapshotStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

/// Writes `new` when it differs from `old`, and publishes an Event per condition transition.
/// Returns whether it wrote.
pub async fn update<K, S>(
    events: &Events,
    api: &Api<K>,
    obj: &K,
    old: &S,
    new: &S,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: HasConditions,
{
    if new == old {
        return Ok(false);
    }
    write(api, obj, new).await?;
    events
        .transitions(obj, old.conditions(), new.conditions())
        .await;
    Ok(true)
}

/// Now, as a condition timestamp (RFC 3339, seconds).
pub fn now() -> String {
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map_or_else(|_| Timestamp::now().to_string(), |t| t.to_string())
}

/// Writes `status` with server-side apply on the status subresource. A missing object (deleted
/// meanwhile) is not an error.
pub async fn write<K>(api: &Api<K>, obj: &K, status: &impl Serialize) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(&obj.name_any(), &params, &Patch::Apply(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Publishes Events for the objects of one controller.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// Events reported as `spindle-operator` (instance: this replica's identity).
    pub fn new(client: kube::Client, instance: &str) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(instance.to_owned()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// One Event on `obj`. Failing to publish is logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: impl Into<String>,
    ) {
        let mut note: String = note.into();
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!("publishing event {reason}: {e}");
        }
    }

    /// An Event for each condition transition: Warning when the news is bad.
    pub async fn transitions<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        old: &[Condition],
        new: &[Condition],
    ) {
        for (c, warning) in newsworthy(old, new) {
            self.publish(obj, warning, &c.reason, &c.message).await;
        }
    }
}

/// The transitions a person cares about, each with whether it is a Warning (pure). Left out:
/// an agent found reachable at the first look; a Target waiting for its new Device (the
/// Device's own Events tell); and the marks of a delete's start (`Ready=False/Deleting`,
/// `Flushed=False/NotFlushed`: the Deleting condition's Event says it) and of the escape hatches
/// (they publish their own Warning).
pub fn newsworthy<'a>(old: &[Condition], new: &'a [Condition]) -> Vec<(&'a Condition, bool)> {
    transitions(old, new)
        .into_iter()
        .filter(|c| {
            let first_look = !old.iter().any(|o| o.type_ == c.type_);
            !((c.type_ == kind::AGENT_REACHABLE && c.status == ConditionStatus::True && first_look)
                || c.reason == reason::DEVICE_NOT_READY
                || (c.type_ == kind::FLUSHED && c.reason == reason::NOT_FLUSHED)
                || (c.type_ == kind::READY && c.reason == reason::DELETING)
                || c.reason == reason::NODE_GONE
                || c.reason == reason::FLUSH_SKIPPED)
        })
        .map(|c| {
            let warning = match c.type_.as_str() {
                kind::READY | kind::AGENT_REACHABLE => c.status != ConditionStatus::True,
                kind::FLUSHED => c.status == ConditionStatus::False,
                _ => c.reason == reason::AGENT_UNREACHABLE,
            };
            (c, warning)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(type_: &str, status: ConditionStatus, reason: &str, since: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Some(since.into()),
            observed_generation: Some(1),
        }
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        use ConditionStatus::*;
        let old = vec![
            cond("Ready", False, "NoAgent", "t0"),
            cond("AgentReachable", False, "NoAgent", "t0"),
        ];
        let wants = [
            // status unchanged, reason changed: time stays
            Want::new("Ready", False, "DeviceNotFound", "x"),
            // status changed: time moves
            Want::new("AgentReachable", True, "LeaseCurrent", "y"),
            // new condition: time is now
            Want::new("Deleting", True, "Deleting", "z"),
        ];
        let new = next_conditions(&old, &wants, Some(2), "t1");
        let times: Vec<_> = new
            .iter()
            .map(|c| c.last_transition_time.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(times, ["t0", "t1", "t1"]);
        assert!(new.iter().all(|c| c.observed_generation == Some(2)));
        let changed: Vec<_> = transitions(&old, &new)
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(changed, ["Ready", "AgentReachable", "Deleting"]);
        // Writing the same again is no transition and keeps every time.
        let again = next_conditions(&new, &wants, Some(2), "t2");
        assert_eq!(again, new);
        assert!(transitions(&new, &again).is_empty());
    }

    #[test]
    fn events_for_what_a_person_cares_about() {
        use ConditionStatus::*;
        let created = next_conditions(
            &[],
            &[
                Want::new("Ready", True, "Applied", "serving"),
                Want::new("AgentReachable", True, "LeaseCurrent", "renews"),
            ],
            Some(1),
            "t0",
        );
        let news: Vec<_> = newsworthy(&[], &created)
            .iter()
            .map(|(c, w)| (c.reason.as_str(), *w))
            .collect();
        assert_eq!(news, [("Applied", false)]);
        let lost = next_conditions(
            &created,
            &[
                Want::new("Ready", False, "AgentUnreachable", "gone"),
                Want::new("AgentReachable", False, "AgentUnreachable", "gone"),
            ],
            Some(1),
            "t1",
        );
        let news: Vec<_> = newsworthy(&created, &lost)
            .iter()
            .map(|(c, w)| (c.type_.as_str(), *w))
            .collect();
        assert_eq!(news, [("Ready", true), ("AgentReachable", true)]);
        let back = next_conditions(
            &lost,
            &[Want::new("AgentReachable", True, "LeaseCurrent", "ok")],
            Some(1),
            "t2",
        );
        assert_eq!(newsworthy(&lost, &back).len(), 1, "reachable again is news");
        let waiting = next_conditions(
            &[],
            &[Want::new("Ready", False, "DeviceNotReady", "x")],
            Some(1),
            "t0",
        );
        assert!(newsworthy(&[], &waiting).is_empty());
        let deleting = next_conditions(
            &created,
            &[
                Want::new("Ready", False, "Deleting", "x"),
                Want::new("Deleting", True, "Deleting", "fencing"),
                Want::new("Flushed", False, "NotFlushed", "waiting"),
            ],
            Some(1),
            "t3",
        );
        let news: Vec<_> = newsworthy(&created, &deleting)
            .iter()
            .map(|(c, w)| (c.type_.as_str(), *w))
            .collect();
        assert_eq!(news, [("Deleting", false)]);
    }
}
