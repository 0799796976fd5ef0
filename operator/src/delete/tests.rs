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
        ((true, true, Some("a"), None, false), SkipFlush),
        // skip-flush does not skip a reachable agent: it still stops serving the Target.
        ((true, true, Some("a"), Some(true), false), Remove),
        ((true, true, None, Some(true), false), NeverPlaced),
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

#[test]
fn finalizer_patches_pin_the_uid() {
    let mut d = device(false, false);
    d.metadata.uid = Some("uid-1".into());
    let patch = add_finalizer_patch(&d);
    assert_eq!(
        patch[0],
        json!({"op": "test", "path": "/metadata/uid", "value": "uid-1"})
    );
    assert_eq!(
        patch[2],
        json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER})
    );
    d.metadata.finalizers = None;
    let patch = add_finalizer_patch(&d);
    assert_eq!(patch[0]["path"], "/metadata/uid");
    assert_eq!(
        patch[1],
        json!({"op": "test", "path": "/metadata/finalizers", "value": null})
    );
}

/// An apiserver that answers every request with `code` (a Status), recording the bodies.
fn apiserver(code: u16, seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> kube::Client {
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let seen = seen.clone();
        async move {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await?.to_bytes();
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(String::from_utf8_lossy(&body).into_owned());
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "NotFound", "message": "gone", "code": code});
            http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(status.to_string().into_bytes()))
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
        }
    });
    kube::Client::new(service, "ns")
}

#[tokio::test]
async fn a_404_while_adding_the_finalizer_stops_the_reconcile() {
    let seen = std::sync::Arc::default();
    let api: Api<Device> = Api::namespaced(apiserver(404, std::sync::Arc::clone(&seen)), "ns");
    let mut d = device(false, false);
    d.metadata.uid = Some("uid-1".into());
    let added = ensure_finalizer(&api, &d).await.expect("a 404 is no error");
    assert!(!added, "the object is gone: the reconcile must stop");
    let bodies = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(bodies.len(), 1);
    assert!(
        bodies[0].contains("/metadata/uid") && bodies[0].contains("uid-1"),
        "{bodies:?}"
    );
    // A refused patch (a test op failed: another incarnation, or the list changed) is an error.
    let api: Api<Device> = Api::namespaced(apiserver(422, seen), "ns");
    assert!(ensure_finalizer(&api, &d).await.is_err());
}
