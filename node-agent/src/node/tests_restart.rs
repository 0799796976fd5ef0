//! A restarted agent's Targets as initiators meet them again: served from the state before any
//! call, and still served after the operator's first reconcile re-applies them unchanged.

use std::net::SocketAddr;

use super::tests::{device, node, port, target};
use super::tests_grow::{GOOD, Session};

/// READ(10) of block 0, 512 bytes.
const READ_BLOCK_0: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];

/// A persisting node in `dir` served Target "t" with LUN 0 on Device "a" (uid "ua") and
/// stopped. Returns the Target as applied.
pub(super) async fn served_then_stopped(dir: &std::path::Path) -> super::records::TargetRecord {
    let mut t = target("t", &[(0, "a")]);
    let n = node(dir, true).await;
    n.apply_device(device("a", "ua")).await.unwrap();
    t.port = port(&n).await;
    n.apply_target(t.clone()).await.unwrap();
    n.shutdown().await.unwrap();
    t
}

#[tokio::test]
async fn a_restored_target_applied_again_unchanged_keeps_its_lun() {
    let dir = tempfile::tempdir().unwrap();
    let t = served_then_stopped(dir.path()).await;
    let n = node(dir.path(), true).await;
    let portal = SocketAddr::from(([127, 0, 1, 1], t.port));
    let iqn = t.iqn.clone();
    let read = move |isid: u8| {
        let iqn = iqn.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = Session::login(portal, &iqn, "iqn.2026-11.dev.spindle:back", isid);
            s.settle();
            let a = s.command(&READ_BLOCK_0, 512);
            (
                a.status,
                if a.status == GOOD {
                    (0, 0, 0)
                } else {
                    a.sense_code()
                },
            )
        })
    };
    assert_eq!(
        read(1).await.unwrap(),
        (GOOD, (0, 0, 0)),
        "served again from the state"
    );
    // The operator's reconcile after the restart: the same Target, then the same Device.
    n.apply_target(t.clone()).await.unwrap();
    n.apply_device(device("a", "ua")).await.unwrap();
    assert_eq!(
        read(2).await.unwrap(),
        (GOOD, (0, 0, 0)),
        "still served after the reconcile"
    );
    n.shutdown().await.unwrap();
}
