//! Snapshots and clones on a real node: served and not served Devices, the records, the
//! namespace and block-device refusals, a clone made from a copy.

use std::os::unix::fs::FileExt;

use super::NodeError;
use super::tests::{device, id, node, port, target};

fn snap(name: &str, uid: &str) -> super::records::ObjectId {
    id(name, uid, 1)
}

#[tokio::test]
async fn a_snapshot_of_a_served_device_is_its_copy_and_a_clone_starts_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), true).await;
    n.apply_device(device("a", "ua")).await.unwrap();
    let mut t = target("t", &[(0, "a")]);
    t.port = port(&n).await;
    n.apply_target(t).await.unwrap();
    let a = dir.path().join("a.img");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&a)
        .unwrap()
        .write_all_at(&[0x42; 4096], 8192)
        .unwrap();
    let r = n
        .create_snapshot(&snap("s", "us"), &id("a", "ua", 1))
        .await
        .unwrap();
    assert_eq!((r.size_bytes, r.block_size), (1 << 20, 512));
    assert!(r.hold_micros > 0);
    // Reflinks where the filesystem shares extents (run with TMPDIR on XFS or Btrfs), else a copy.
    let fs = crate::store::copy::filesystem_name(dir.path());
    let want = match fs.as_str() {
        "xfs" | "btrfs" => crate::store::copy::CopyMethod::Reflink,
        _ => crate::store::copy::CopyMethod::Copy,
    };
    assert_eq!(r.method, want, "on {fs}");
    eprintln!(
        "snapshot on {fs}: {:?}, writes held {} µs",
        r.method, r.hold_micros
    );
    let copy = dir.path().join(".spindle/snapshots/us.img");
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&a).unwrap());
    // Idempotent by uid: the same record, nothing copied again.
    assert_eq!(
        n.create_snapshot(&snap("s", "us"), &id("a", "ua", 1))
            .await
            .unwrap(),
        r
    );
    let (list, problems) = n.list_snapshots();
    assert!(problems.is_empty());
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].record.as_ref(), Some(&r));
    // Writes after the snapshot do not reach it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&a)
        .unwrap()
        .write_all_at(&[0x99; 4096], 8192)
        .unwrap();
    let mut c = device("c", "uc");
    c.clone_from = Some("us".into());
    n.apply_device(c).await.unwrap();
    let clone = std::fs::read(dir.path().join("c.img")).unwrap();
    assert!(
        clone[8192..12288].iter().all(|&b| b == 0x42),
        "the clone is the snapshot"
    );
    assert!(n.delete_snapshot(&snap("s", "us")).unwrap());
    assert!(!copy.exists());
    assert!(
        !n.delete_snapshot(&snap("s", "us")).unwrap(),
        "a second delete finds nothing"
    );
    let clone_after = std::fs::read(dir.path().join("c.img")).unwrap();
    assert_eq!(
        clone, clone_after,
        "a clone keeps its data when its snapshot goes"
    );
}

#[tokio::test]
async fn snapshots_refuse_other_namespaces_unknown_devices_and_bad_clones() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), false).await;
    n.apply_device(device("a", "ua")).await.unwrap();
    let mut elsewhere = snap("s", "us");
    elsewhere.namespace = "other".into();
    let e = n
        .create_snapshot(&elsewhere, &id("a", "ua", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, NodeError::Invalid { field, .. } if field == "spec.source.deviceName"),
        "{e}"
    );
    let e = n
        .create_snapshot(&snap("s", "us"), &id("a", "wrong-uid", 1))
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::NotFound(_)), "{e}");
    let e = n
        .create_snapshot(&snap("s", "../x"), &id("a", "ua", 1))
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::Invalid { .. }), "{e}");
    assert!(!dir.path().join(".spindle/snapshots/us.img").exists());
    n.create_snapshot(&snap("s", "us"), &id("a", "ua", 1))
        .await
        .unwrap();
    // A clone smaller than its snapshot, of an unknown snapshot, of another namespace's.
    let mut small = device("c", "uc");
    small.clone_from = Some("us".into());
    if let crate::store::StoreSource::File { size_bytes, .. } = &mut small.store.source {
        *size_bytes = 4096;
    }
    let e = n.apply_device(small).await.unwrap_err();
    assert!(
        matches!(&e, NodeError::Invalid { field, .. } if field == "spec.source.file.sizeBytes"),
        "{e}"
    );
    let mut unknown = device("c", "uc");
    unknown.clone_from = Some("nope".into());
    let e = n.apply_device(unknown).await.unwrap_err();
    assert!(matches!(e, NodeError::Precondition { .. }), "{e}");
    let mut foreign = device("c", "uc");
    foreign.id.namespace = "other".into();
    foreign.clone_from = Some("us".into());
    let e = n.apply_device(foreign).await.unwrap_err();
    assert!(e.to_string().contains("another namespace"), "{e}");
    assert!(
        !dir.path().join("c.img").exists(),
        "no refused clone left a file"
    );
}
