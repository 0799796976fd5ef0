//! The leader fence as the API applies it, on a real node: a call from an older term is refused
//! with STALE_LEADER and changes nothing (not the Target, not its CHAP secret, not the Device).

use std::path::Path;
use std::sync::Arc;

use spindle_agent_api::v1 as pb;
use spindle_agent_api::v1::agent_server::Agent;
use tonic::Request;

use super::AgentService;
use crate::api::calls::Calls;
use crate::api::fence::{self, Fence};
use crate::node::{Node, NodeOptions};

async fn service(dir: &Path) -> AgentService {
    let (node, problems) = Node::start(NodeOptions {
        node_name: "n1".into(),
        ..crate::node::tests::opts(dir, true)
    })
    .await
    .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    AgentService {
        node: Arc::new(node),
        node_name: "n1".into(),
        calls: Calls::new(),
        fence: Arc::new(Fence::open(dir).unwrap()),
    }
}

fn meta(name: &str, uid: &str, term: u64) -> Option<pb::ObjectMeta> {
    Some(pb::ObjectMeta {
        namespace: "ns".into(),
        name: name.into(),
        uid: uid.into(),
        generation: 1,
        leader_term: term,
    })
}

fn device(term: u64) -> pb::ApplyDeviceRequest {
    pb::ApplyDeviceRequest {
        meta: meta("d", "uid-d", term),
        served_naa: String::new(),
        spec: Some(pb::DeviceSpec {
            source: Some(pb::device_spec::Source::File(pb::FileSource {
                path: "d.img".into(),
                size_bytes: 1 << 20,
            })),
            block_size: 512,
            write_cache: pb::WriteCache::Writeback as i32,
            reclaim_policy: pb::ReclaimPolicy::Delete as i32,
            ..Default::default()
        }),
    }
}

/// A port free on the node's address.
fn free_port() -> u32 {
    let l = std::net::TcpListener::bind("127.0.1.1:0").unwrap();
    u32::from(l.local_addr().unwrap().port())
}

fn target(term: u64, port: u32, luns: &[u64], secret: &str) -> pb::ApplyTargetRequest {
    pb::ApplyTargetRequest {
        meta: meta("t", "uid-t", term),
        spec: Some(pb::TargetSpec {
            iqn: "iqn.2026-11.dev.spindle:ns.t".into(),
            port,
            luns: luns
                .iter()
                .map(|&lun| pb::LunMapping {
                    lun,
                    device_name: "d".into(),
                    device_uid: "uid-d".into(),
                })
                .collect(),
            acl: Some(pb::Acl {
                allow_all: true,
                initiators: Vec::new(),
            }),
            chap: Some(pb::Chap {
                initiator: Some(pb::ChapCredentials {
                    user: "alice".into(),
                    secret: secret.into(),
                }),
                target: None,
            }),
            iscsi: None,
            qos: None,
        }),
    }
}

fn assert_stale(r: Result<impl std::fmt::Debug, tonic::Status>, term: u64, highest: u64) {
    let s = r.expect_err("a call of an older term is refused");
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    assert_eq!(
        s.message(),
        format!("stale leader: term {term} < {highest}")
    );
    let d = spindle_agent_api::detail::of(&s).expect("a typed reason");
    assert_eq!(d.reason(), pb::ErrorReason::StaleLeader);
}

#[tokio::test]
async fn a_stale_leader_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path()).await;
    svc.apply_device(Request::new(device(4))).await.unwrap();
    let port = free_port();
    svc.apply_target(Request::new(target(5, port, &[0], "rotated-secret-1")))
        .await
        .unwrap();
    let before = svc.node.view().await;
    let state = dir.path().join(".spindle/state/targets/uid-t.json");
    let target_file = std::fs::read(&state).unwrap();
    let refusals = fence::refusals();

    // The deposed leader (term 4) replays its old apply with the old CHAP secret and no LUN,
    // removes the Target, drains and releases the Device.
    assert_stale(
        svc.apply_target(Request::new(target(4, port, &[], "old-secret-0")))
            .await,
        4,
        5,
    );
    assert_stale(
        svc.remove_target(Request::new(pb::RemoveTargetRequest {
            meta: meta("t", "uid-t", 4),
        }))
        .await,
        4,
        5,
    );
    assert_stale(
        svc.drain_device(Request::new(pb::DrainDeviceRequest {
            meta: meta("d", "uid-d", 4),
        }))
        .await,
        4,
        5,
    );
    assert_stale(
        svc.release_device(Request::new(pb::ReleaseDeviceRequest {
            meta: meta("d", "uid-d", 0),
            reclaim_policy: pb::ReclaimPolicy::Delete as i32,
            force: true,
        }))
        .await,
        0,
        5,
    );
    assert_stale(svc.apply_device(Request::new(device(1))).await, 1, 5);
    assert!(fence::refusals() >= refusals + 5);

    assert_eq!(
        svc.node.view().await,
        before,
        "a refused call changed the node"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        target_file,
        "a refused call rewrote the Target's state (its CHAP secret)"
    );
    assert!(dir.path().join("d.img").exists());

    // Status is not fenced, and the current leader still acts.
    svc.get_status(Request::new(pb::GetStatusRequest {}))
        .await
        .unwrap();
    svc.remove_target(Request::new(pb::RemoveTargetRequest {
        meta: meta("t", "uid-t", 5),
    }))
    .await
    .unwrap();
    assert!(svc.node.view().await.targets.is_empty());
    svc.node.shutdown().await.unwrap();
}
