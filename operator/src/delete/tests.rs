//! The next delete step, from what is recorded: a table per kind.

use super::*;
use crate::agents::LeaseView;
use serde_json::json;

fn agent(lease: Option<bool>) -> AgentView {
    AgentView {
        node_exists: true,
        lease: lease.map(|reachable| LeaseView {
            endpoint: "127.0.0.2:9443".into(),
            portal: "127.0.0.2:3260".into(),
            reachable,
            expires: "2026-11-30T10:00:15Z".into(),
            acquired: String::new(),
            api_key: String::new(),
        }),
    }
}

fn device(finalizer: bool, skip: bool) -> Device {
    let finalizers: Vec<&str> = if finalizer {
        vec!["other.io/x", FINALIZER]
    } else {
        vec![]
    };
    let annotations = if skip {
        json!({SKIP_FLUSH_ANNOTATION: "true"})
    } else {
        json!({SKIP_FLUSH_ANNOTATION: "false"})
    };
    serde_json::from_value(json!({
        "apiVersion": "spindle.dev/v1alpha1", "kind": "Device",
        "metadata": {"name": "d", "namespace": "ns", "finalizers": finalizers, "annotations": annotations,
                     "deletionTimestamp": "2026-11-30T10:00:00Z"},
        "spec": {"nodeName": "a", "source": {"file": {"path": "d.img", "sizeBytes": 512}}}
    }))
    .expect("device")
}

#[test]
fn device_delete_steps() {
    use DeviceStep::*;
    // (finalizer, skip-flush, lease reachable?, node gone, flushed recorded) -> step
    let cases = [
        ((false, false, Some(true), false, false), Done),
        ((true, false, Some(true), false, false), Drain),
        ((true, false, Some(true), false, true), Release),
        ((true, false, Some(false), false, false), WaitForAgent),
        ((true, false, None, false, false), WaitForAgent),
        ((true, false, Some(false), false, true), WaitForAgent),
        ((true, false, Some(false), true, false), NodeGone),
        ((true, true, Some(false), false, false), SkipFlush),
        ((true, true, Some(true), false, false), SkipFlush),
        ((false, true, Some(true), false, false), Done),
    ];
    for ((fin, skip, lease, gone, flushed), want) in cases {
        let got = device_step(&device(fin, skip), &agent(lease), gone, flushed);
        assert_eq!(
            got, want,
            "finalizer={fin} skip={skip} lease={lease:?} gone={gone} flushed={flushed}"
        );
    }
}

#[test]
fn target_delete_steps() {
    use TargetStep::*;
    let t = |finalizer: bool, skip: bool| -> Target {
        let d = device(finalizer, skip);
        let mut t: Target = serde_json::from_value(json!({
            "apiVersion": "spindle.dev/v1alpha1", "kind": "Target",
            "metadata": {"name": "t", "namespace": "ns"}, "spec": {}
        }))
        .expect("target");
        t.metadata.finalizers = d.metadata.finalizers;
        t.metadata.annotations = d.metadata.annotations;
        t
    };
    let cases = [
        ((false, false, Some("a"), Some(true), false), Done),
        ((true, false, None, Some(true), false), NeverPlaced),
        ((true, false, Some("a"), Some(true), false), Remove),
        ((true, false, Some("a"), Some(false), false), WaitForAgent),
        ((true, false, Some("a"), None, true), NodeGone),
        ((true, true, Some("a"), Some(false), false), SkipFlush),
    ];
    for ((fin, skip, node, lease, gone), want) in cases {
        let got = target_step(&t(fin, skip), node, &agent(lease), gone);
        assert_eq!(
            got, want,
            "finalizer={fin} skip={skip} node={node:?} lease={lease:?} gone={gone}"
        );
    }
}

#[test]
fn unreachable_says_since_when_and_the_ways_out() {
    let m = unreachable_message("a", &agent(Some(false)), "drain and flush the Device");
    assert!(m.contains("unreachable since 2026-11-30T10:00:15Z"), "{m}");
    assert!(m.contains("delete its Node object"), "{m}");
    assert!(m.contains("spindle.dev/skip-flush: \"true\""), "{m}");
    let m = unreachable_message("a", &agent(None), "x");
    assert!(m.contains("not registered"), "{m}");
}

#[test]
fn ack_message_has_the_counts() {
    let ack = api::DrainAck {
        target: "ns/t".into(),
        luns: vec![1],
        drained_commands: 12,
        fenced_commands: 34,
        duration_micros: 15_500,
        flushed_at_unix_ms: 1_795_000_000_000,
        ..Default::default()
    };
    let m = ack_message("a", &ack);
    assert!(
        m.contains("12 command(s) accepted before the fence finished"),
        "{m}"
    );
    assert!(m.contains("34 refused by the fence"), "{m}");
    assert!(m.contains("15.5 ms"), "{m}");
    assert!(m.contains("LUN [1] of Target ns/t"), "{m}");
}
