//! Events about an object (`events.k8s.io/v1`), newest last, as `describe` lists them.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// One Event, reduced to what `describe` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventLine {
    /// When it last happened (RFC 3339), if known.
    pub time: Option<String>,
    /// Seconds since then.
    pub seconds_ago: Option<i64>,
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: String,
    /// CamelCase reason.
    pub reason: String,
    /// The note.
    pub note: String,
}

/// The Events of `events` about the object with `uid` (or, lacking a uid on the Event, its
/// `kind` and `name`), oldest first, at most `last` of them (the newest).
pub fn about(
    events: &[Event],
    kind: &str,
    name: &str,
    uid: Option<&str>,
    now: Timestamp,
    last: usize,
) -> Vec<EventLine> {
    let mut lines: Vec<(Timestamp, EventLine)> = events
        .iter()
        .filter(|e| {
            let r = e.regarding.as_ref();
            let same_uid = match (uid, r.and_then(|r| r.uid.as_deref())) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            same_uid
                && r.and_then(|r| r.kind.as_deref()) == Some(kind)
                && r.and_then(|r| r.name.as_deref()) == Some(name)
        })
        .map(|e| {
            let when = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let line = EventLine {
                time: when.map(|t| t.to_string()),
                seconds_ago: when.map(|t| now.duration_since(t).as_secs().max(0)),
                type_: e.type_.clone().unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                note: e.note.clone().unwrap_or_default(),
            };
            (when.unwrap_or(Timestamp::UNIX_EPOCH), line)
        })
        .collect();
    lines.sort_by_key(|(t, _)| *t);
    let skip = lines.len().saturating_sub(last);
    lines.into_iter().skip(skip).map(|(_, l)| l).collect()
}

#[cfg(test)]
pub(crate) mod fixtures {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::SignedDuration;

    use crate::agent::fixtures::now;

    /// An Event about Device `name`, `ago` seconds before the fixtures' now.
    pub fn event(name: &str, ago: i64, type_: &str, reason: &str, note: &str) -> Event {
        Event {
            event_time: Some(MicroTime(now() - SignedDuration::from_secs(ago))),
            regarding: Some(ObjectReference {
                kind: Some("Device".into()),
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            }),
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            note: Some(note.into()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::event;
    use super::*;
    use crate::agent::fixtures::now;

    #[test]
    fn only_the_objects_events_newest_last() {
        let events = [
            event("d", 5, "Normal", "Deleting", "second"),
            event("other", 1, "Normal", "Applied", "not ours"),
            event("d", 50, "Normal", "Applied", "first"),
            event("d", 90, "Normal", "Old", "dropped by the limit"),
        ];
        let lines = about(&events, "Device", "d", None, now(), 2);
        let reasons: Vec<&str> = lines.iter().map(|l| l.reason.as_str()).collect();
        assert_eq!(reasons, ["Applied", "Deleting"]);
        assert_eq!(lines[1].seconds_ago, Some(5));
    }
}
