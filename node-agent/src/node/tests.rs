//! The node's rules, with real stores, real engine threads and a real portal (port 0).

use std::net::SocketAddr;
use std::path::Path;

use super::records::{self, DeviceRecord, LunRecord, ObjectId, TargetRecord};
use super::{Node, NodeError, NodeOptions};
use crate::engine::DrainState;
use crate::engine::EngineOptions;
use crate::iscsi::login::AclPolicy;
use crate::store::StoreSource;

/// Options of a test node: a real portal on port 0, data in `dir`.
pub(crate) fn opts(dir: &Path, persist: bool) -> NodeOptions {
    NodeOptions {
        engine: EngineOptions {
            listen: SocketAddr::from(([127, 0, 1, 1], 0)),
            advertise: None,
            keepalive: std::time::Duration::from_secs(15),
        },
        data_dir: dir.to_path_buf(),
        allow_block: Vec::new(),
        persist,
        node_name: "node-a".into(),
    }
}

pub(super) fn id(name: &str, uid: &str, generation: i64) -> ObjectId {
    ObjectId {
        namespace: "ns".into(),
        name: name.into(),
        uid: uid.into(),
        generation,
    }
}

pub(super) fn device(name: &str, uid: &str) -> DeviceRecord {
    records::sample_device(name, uid)
}

pub(super) fn target(name: &str, luns: &[(u64, &str)]) -> TargetRecord {
    TargetRecord {
        id: id(name, &format!("uid-{name}"), 1),
        iqn: format!("iqn.2026-11.dev.spindle:ns.{name}"),
        port: 0,
        luns: luns
            .iter()
            .map(|(lun, d)| LunRecord {
                lun: *lun,
                device_name: d.to_string(),
                device_uid: String::new(),
            })
            .collect(),
        acl: AclPolicy::AllowAll,
        chap: None,
        limits: Default::default(),
        qos: None,
    }
}

pub(super) async fn node(dir: &Path, persist: bool) -> Node {
    let (n, problems) = Node::start(opts(dir, persist)).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    n
}

/// The port the node's portal got (targets use it so no other listener is needed).
pub(super) async fn port(n: &Node) -> u16 {
    n.advertised_portal().await.unwrap().port()
}

fn field_of(e: NodeError) -> (String, String) {
    match e {
        NodeError::Invalid { field, .. } => ("invalid".into(), field),
        NodeError::Precondition { field, .. } => ("precondition".into(), field),
        e => ("other".into(), e.to_string()),
    }
}

#[tokio::test]
async fn the_delete_protocol_drains_once_acknowledges_again_and_releases_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), true).await;
    let p = port(&n).await;
    n.apply_device(device("a", "ua")).await.unwrap();
    n.apply_device(device("b", "ub")).await.unwrap();
    let mut t = target("t", &[(0, "a"), (1, "b")]);
    t.port = p;
    let (_, view) = n.apply_target(t).await.unwrap();
    assert_eq!(view.luns.len(), 2);

    // Release before the flush is refused; forced release is the escape hatch.
    let e = n
        .release_device(&id("a", "ua", 1), None, false)
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::Precondition { .. }), "{e}");

    let ack = n.drain_device(&id("a", "ua", 1)).await.unwrap();
    assert_eq!(ack.target.as_deref(), Some("ns/t"));
    assert_eq!(ack.luns, vec![0]);
    assert_eq!(
        n.drain_device(&id("a", "ua", 1)).await.unwrap(),
        ack,
        "same acknowledgement"
    );

    let v = n.view().await;
    let a = v.devices.iter().find(|d| d.id.name == "a").unwrap();
    assert_eq!(a.state, DrainState::Flushed);
    let lun0 = &v.targets[0].luns.iter().find(|l| l.lun == 0).unwrap();
    assert_eq!(lun0.state, crate::engine::drain::DrainState::Flushed);

    let img = dir.path().join("a.img");
    assert!(img.exists());
    let r = n
        .release_device(&id("a", "ua", 1), None, false)
        .await
        .unwrap();
    assert!(r.known && r.file_removed);
    assert!(!img.exists(), "reclaim policy Delete removes the file");
    let again = n
        .release_device(&id("a", "ua", 1), None, false)
        .await
        .unwrap();
    assert!(
        again.known && again.file_removed,
        "a released Device: success again"
    );
    assert_eq!(n.drain_device(&id("a", "ua", 1)).await.unwrap(), ack);
    let e = n.apply_device(device("a", "ua")).await.unwrap_err();
    assert_eq!(field_of(e), ("precondition".into(), "metadata.uid".into()));
    assert!(
        !img.exists(),
        "a released uid is never served (or created) again"
    );
    let v = n.view().await;
    assert_eq!(v.targets[0].luns.len(), 1, "the released LUN is gone");

    // Unknown objects: release succeeds, drain says not found.
    assert!(
        !n.release_device(&id("zz", "uz", 1), None, false)
            .await
            .unwrap()
            .known
    );
    assert!(matches!(
        n.drain_device(&id("zz", "uz", 1)).await,
        Err(NodeError::NotFound(_))
    ));

    // Retain keeps the file (a drain of a Device no Target uses flushes its store).
    n.apply_device(device("c", "uc")).await.unwrap();
    let ack = n.drain_device(&id("c", "uc", 1)).await.unwrap();
    assert_eq!((ack.target, ack.drained_commands), (None, 0));
    let r = n
        .release_device(&id("c", "uc", 1), Some(false), false)
        .await
        .unwrap();
    assert!(!r.file_removed);
    assert!(dir.path().join("c.img").exists());
    n.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stale_generation_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), false).await;
    let mut d = device("a", "ua");
    d.id.generation = 5;
    n.apply_device(d.clone()).await.unwrap();
    let mut old = d.clone();
    old.id.generation = 4;
    old.thin = true;
    let (stale, view) = n.apply_device(old).await.unwrap();
    assert!(stale);
    assert_eq!(view.id.generation, 5);
    let mut t = target("t", &[(0, "a")]);
    t.port = port(&n).await;
    t.id.generation = 3;
    n.apply_target(t.clone()).await.unwrap();
    t.id.generation = 2;
    t.luns.clear();
    let (stale, view) = n.apply_target(t).await.unwrap();
    assert!(stale);
    assert_eq!(view.luns.len(), 1, "the stale request removed nothing");
    n.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_orders_name_the_field_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), false).await;
    let p = port(&n).await;
    let mut escape = device("e", "ue");
    escape.store.source = StoreSource::File {
        path: "../outside.img".into(),
        size_bytes: 4096,
    };
    let e = n.apply_device(escape).await.unwrap_err();
    assert_eq!(
        field_of(e),
        ("invalid".into(), "spec.source.file.path".into())
    );
    let mut reserved = device("r", "ur");
    reserved.store.source = StoreSource::File {
        path: ".spindle/state/x.img".into(),
        size_bytes: 4096,
    };
    let e = n.apply_device(reserved).await.unwrap_err();
    assert_eq!(
        field_of(e),
        ("invalid".into(), "spec.source.file.path".into())
    );
    let mut block = device("b", "ub");
    block.store.source = StoreSource::Block {
        path: "/dev/loop0".into(),
    };
    let e = n.apply_device(block).await.unwrap_err();
    assert_eq!(
        field_of(e),
        ("invalid".into(), "spec.source.block.path".into())
    );

    n.apply_device(device("a", "ua")).await.unwrap();
    let mut t1 = target("t1", &[(0, "a")]);
    t1.port = p;
    n.apply_target(t1.clone()).await.unwrap();

    let mut missing = target("t2", &[(0, "nope")]);
    missing.port = p;
    let e = n.apply_target(missing).await.unwrap_err();
    assert_eq!(
        field_of(e),
        ("precondition".into(), "spec.luns[0].deviceRef".into())
    );
    let mut claim = target("t3", &[(0, "a")]);
    claim.port = p;
    let e = n.apply_target(claim).await.unwrap_err();
    assert!(
        e.to_string().contains("already used by Target ns/t1"),
        "{e}"
    );
    let mut same_iqn = target("t4", &[]);
    same_iqn.port = p;
    same_iqn.iqn = t1.iqn.clone();
    let e = n.apply_target(same_iqn).await.unwrap_err();
    assert_eq!(field_of(e), ("precondition".into(), "spec.iqn".into()));
    let mut other_uid = device("a", "another-uid");
    other_uid.id.generation = 9;
    let e = n.apply_device(other_uid).await.unwrap_err();
    assert_eq!(field_of(e), ("precondition".into(), "metadata.uid".into()));
    let mut moved = device("a", "ua");
    moved.store.source = StoreSource::File {
        path: "b.img".into(),
        size_bytes: 2 << 20,
    };
    let e = n.apply_device(moved).await.unwrap_err();
    assert_eq!(field_of(e), ("invalid".into(), "spec.source".into()));
    let mut shrunk = device("a", "ua");
    shrunk.store.source = StoreSource::File {
        path: "a.img".into(),
        size_bytes: 1 << 19,
    };
    let e = n.apply_device(shrunk).await.unwrap_err();
    assert_eq!(
        field_of(e),
        ("invalid".into(), "spec.source.file.sizeBytes".into())
    );

    let v = n.view().await;
    assert_eq!(v.targets.len(), 1, "only t1 is served");
    assert_eq!(v.targets[0].luns.len(), 1);
    assert_eq!(v.devices.len(), 1);
    n.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_target_update_adds_and_removes_luns_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), false).await;
    let p = port(&n).await;
    for d in ["a", "b", "c"] {
        n.apply_device(device(d, &format!("u{d}"))).await.unwrap();
    }
    let mut t = target("t", &[(0, "a"), (1, "b")]);
    t.port = p;
    n.apply_target(t.clone()).await.unwrap();
    t.id.generation = 2;
    t.luns = vec![
        LunRecord {
            lun: 0,
            device_name: "a".into(),
            device_uid: "ua".into(),
        },
        LunRecord {
            lun: 2,
            device_name: "c".into(),
            device_uid: String::new(),
        },
    ];
    let (_, view) = n.apply_target(t).await.unwrap();
    let luns: Vec<(u64, String)> = view
        .luns
        .iter()
        .map(|l| (l.lun, l.device.clone()))
        .collect();
    assert_eq!(luns, vec![(0, "ns/a".into()), (2, "ns/c".into())]);
    let v = n.view().await;
    let used = |name: &str| {
        v.devices
            .iter()
            .find(|d| d.id.name == name)
            .unwrap()
            .used_by
            .clone()
    };
    assert_eq!(used("b"), None, "b is free again");
    assert_eq!(used("c").as_deref(), Some("ns/t"));
    // b can now be claimed by another Target.
    let mut t2 = target("t2", &[(0, "b")]);
    t2.port = p;
    n.apply_target(t2).await.unwrap();
    let (known, _) = n.remove_target(&id("t", "uid-t", 2)).await.unwrap();
    assert!(known);
    let (known, _) = n.remove_target(&id("t", "uid-t", 2)).await.unwrap();
    assert!(!known, "removing twice is success, with nothing to do");
    n.shutdown().await.unwrap();
}

#[tokio::test]
async fn new_qos_limits_apply_in_place_and_show_in_the_view() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), false).await;
    let p = port(&n).await;
    n.apply_device(device("a", "ua")).await.unwrap();
    let mut t = target("t", &[(0, "a")]);
    t.port = p;
    let (_, view) = n.apply_target(t.clone()).await.unwrap();
    assert_eq!(view.qos, None);
    t.id.generation = 2;
    t.qos = Some(spindle_crds::TargetQos {
        read_iops: Some(100),
        ..Default::default()
    });
    let (stale, view) = n.apply_target(t.clone()).await.unwrap();
    assert!(!stale);
    assert_eq!(view.qos, t.qos, "the limits in force are reported");
    assert_eq!(
        view.luns.len(),
        1,
        "the LUN stayed served (an update, not a restart)"
    );
    n.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_node_serves_what_it_was_told_and_keeps_fences() {
    let dir = tempfile::tempdir().unwrap();
    {
        let n = node(dir.path(), true).await;
        let p = port(&n).await;
        n.apply_device(device("a", "ua")).await.unwrap();
        n.apply_device(device("b", "ub")).await.unwrap();
        n.apply_device(device("gone", "ug")).await.unwrap();
        let mut t = target("t", &[(0, "a"), (1, "b")]);
        t.port = p;
        n.apply_target(t).await.unwrap();
        n.drain_device(&id("a", "ua", 1)).await.unwrap();
        n.drain_device(&id("gone", "ug", 1)).await.unwrap();
        n.release_device(&id("gone", "ug", 1), None, false)
            .await
            .unwrap();
        n.shutdown().await.unwrap();
    }
    let n = node(dir.path(), true).await;
    let v = n.view().await;
    assert_eq!(v.targets.len(), 1, "served again before any call");
    let states: Vec<_> = v.targets[0].luns.iter().map(|l| (l.lun, l.state)).collect();
    use crate::engine::drain::DrainState as S;
    assert_eq!(states, vec![(0, S::Flushed), (1, S::Running)]);
    let state = |name: &str| v.devices.iter().find(|d| d.id.name == name).unwrap().state;
    assert_eq!(state("a"), DrainState::Flushed);
    assert_eq!(state("b"), DrainState::Running, "a restart is not a delete");
    assert_eq!(state("gone"), DrainState::Released);
    let e = n.apply_device(device("gone", "ug")).await.unwrap_err();
    assert_eq!(field_of(e).1, "metadata.uid");
    n.shutdown().await.unwrap();
}
