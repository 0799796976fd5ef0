//! A Device's persisted SCSI reservations on the node: a file that cannot be read refuses
//! the Device (at start and when applied), and a released Device's file goes.

use super::Node;
use super::error::NodeError;
use super::reservations;
use super::tests::{device, id, node, opts};
use super::tests_restart::served_then_stopped;
use crate::scsi::pr_record;

const GARBAGE: &[u8] = b"{\"version\": 1, \"generation\": ";

#[tokio::test]
async fn an_unreadable_reservations_file_refuses_the_device_at_start_and_on_apply() {
    let dir = tempfile::tempdir().unwrap();
    served_then_stopped(dir.path()).await;
    let file = reservations::path(dir.path(), "ua");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, GARBAGE).unwrap();

    // At start: the Device is not served, and the problem says why.
    let (n, problems) = Node::start(opts(dir.path(), true)).await.unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("Device ns/a") && p.contains("persisted SCSI reservations")),
        "{problems:?}"
    );
    let v = n.view().await;
    assert!(v.targets.iter().all(|t| t.luns.is_empty()), "no LUN on it");
    // Applied again (the operator's reconcile): refused, naming the field.
    match n.apply_device(device("a", "ua")).await {
        Err(NodeError::Precondition { field, message }) => {
            assert_eq!(field, "spec.reservationPersistence");
            assert!(message.contains(&file.display().to_string()), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&file).unwrap(), GARBAGE, "left as it was");
    n.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_released_device_forgets_its_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), true).await;
    n.apply_device(device("a", "ua")).await.unwrap();
    let file = reservations::path(dir.path(), "ua");
    let empty = pr_record::PrRecord {
        version: pr_record::VERSION,
        generation: 1,
        aptpl: true,
        registrants: vec![],
        reservation: None,
    };
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, pr_record::encode(&empty)).unwrap();
    n.drain_device(&id("a", "ua", 1)).await.unwrap();
    n.release_device(&id("a", "ua", 1), None, false)
        .await
        .unwrap();
    assert!(!file.exists());
    n.shutdown().await.unwrap();
}
