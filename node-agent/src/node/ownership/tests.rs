//! One owner per store, must-exist, created vs adopted: with real stores and a real node.

use std::path::Path;

use crate::node::records::{DeviceRecord, ObjectId, sample_device};
use crate::node::{Node, NodeError, NodeOptions};
use crate::store::StoreSource;

fn opts(dir: &Path, persist: bool, allow_block: Vec<std::path::PathBuf>) -> NodeOptions {
    NodeOptions {
        allow_block,
        ..crate::node::tests::opts(dir, persist)
    }
}

async fn node(dir: &Path) -> Node {
    let (n, problems) = Node::start(opts(dir, true, Vec::new())).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    n
}

/// Device `name` (uid `uid`) in namespace `ns` on file `path`.
fn on_file(ns: &str, name: &str, uid: &str, path: &str) -> DeviceRecord {
    let mut d = sample_device(name, uid);
    d.id.namespace = ns.into();
    d.store.source = StoreSource::File {
        path: path.into(),
        size_bytes: 1 << 20,
    };
    d
}

fn id_of(d: &DeviceRecord) -> ObjectId {
    d.id.clone()
}

fn assert_in_use(e: NodeError, owner: &str, owner_uid: &str) {
    match e {
        NodeError::InUse {
            owner: o,
            owner_uid: u,
            message,
            ..
        } => {
            assert_eq!((o.as_str(), u.as_str()), (owner, owner_uid));
            assert!(message.contains(owner), "{message}");
        }
        e => panic!("not InUse: {e:?}"),
    }
}

/// The first Device still serves its bytes after the second was refused.
async fn first_untouched(n: &Node, dir: &Path, first: &DeviceRecord, path: &str) {
    let v = n.view().await;
    let d = v.devices.iter().find(|d| d.id.uid == first.id.uid).unwrap();
    assert!(d.failure.is_none(), "{:?}", d.failure);
    assert_eq!(
        std::fs::read(dir.join(path)).unwrap()[..4],
        *b"DATA",
        "the first Device's data is unchanged"
    );
}

#[tokio::test]
async fn two_namespaces_one_path_the_second_is_refused_and_its_delete_keeps_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let a = on_file("ns-a", "db", "ua", "shared.img");
    n.apply_device(a.clone()).await.unwrap();
    let mut bytes = std::fs::read(dir.path().join("shared.img")).unwrap();
    bytes[..4].copy_from_slice(b"DATA");
    std::fs::write(dir.path().join("shared.img"), &bytes).unwrap();

    let b = on_file("ns-b", "x", "ub", "shared.img");
    let e = n.apply_device(b.clone()).await.unwrap_err();
    assert_in_use(e, "ns-a/db", "ua");
    first_untouched(&n, dir.path(), &a, "shared.img").await;

    // The refused Device is unknown to the node: its release (Delete) leaves the file.
    let r = n.release_device(&id_of(&b), None, false).await.unwrap();
    assert!(!r.known && !r.file_removed);
    assert!(dir.path().join("shared.img").exists());
}

#[tokio::test]
async fn a_hard_link_or_a_symlink_to_a_held_file_is_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let a = on_file("ns-a", "db", "ua", "a.img");
    n.apply_device(a.clone()).await.unwrap();
    let mut bytes = std::fs::read(dir.path().join("a.img")).unwrap();
    bytes[..4].copy_from_slice(b"DATA");
    std::fs::write(dir.path().join("a.img"), &bytes).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::hard_link(dir.path().join("a.img"), dir.path().join("sub/hard.img")).unwrap();
    std::os::unix::fs::symlink("../a.img", dir.path().join("sub/soft.img")).unwrap();

    let e = n
        .apply_device(on_file("ns-b", "h", "uh", "sub/hard.img"))
        .await
        .unwrap_err();
    assert_in_use(e, "ns-a/db", "ua");
    let e = n
        .apply_device(on_file("ns-c", "s", "us", "sub/soft.img"))
        .await
        .unwrap_err();
    assert_in_use(e, "ns-a/db", "ua");
    first_untouched(&n, dir.path(), &a, "a.img").await;

    // The same Device applied again (its own store) is fine.
    n.apply_device(a).await.unwrap();
}

#[tokio::test]
async fn created_is_persisted_and_delete_keeps_an_adopted_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.img"), vec![9u8; 1 << 20]).unwrap();
    {
        let n = node(dir.path()).await;
        let (_, v) = n
            .apply_device(on_file("ns", "adopted", "u1", "old.img"))
            .await
            .unwrap();
        assert!(!v.store_created, "the file existed: adopted");
        let (_, v) = n
            .apply_device(on_file("ns", "fresh", "u2", "new.img"))
            .await
            .unwrap();
        assert!(v.store_created);
        n.shutdown().await.unwrap();
    }
    // After a restart the node still knows which file it created.
    let n = node(dir.path()).await;
    let v = n.view().await;
    let created = |name: &str| {
        v.devices
            .iter()
            .find(|d| d.id.name == name)
            .unwrap()
            .store_created
    };
    assert!(!created("adopted") && created("fresh"));
    for (name, uid) in [("adopted", "u1"), ("fresh", "u2")] {
        let id = ObjectId {
            namespace: "ns".into(),
            name: name.into(),
            uid: uid.into(),
            generation: 1,
        };
        n.drain_device(&id).await.unwrap();
    }
    let r = n
        .release_device(&on_file("ns", "adopted", "u1", "old.img").id, None, false)
        .await
        .unwrap();
    assert!(r.known && !r.file_removed && r.adopted_kept, "{r:?}");
    assert_eq!(
        std::fs::read(dir.path().join("old.img")).unwrap(),
        vec![9u8; 1 << 20],
        "an adopted file is kept, untouched, under Delete"
    );
    let r = n
        .release_device(&on_file("ns", "fresh", "u2", "new.img").id, None, false)
        .await
        .unwrap();
    assert!(r.file_removed && !r.adopted_kept);
    assert!(!dir.path().join("new.img").exists());
}

#[tokio::test]
async fn served_before_and_missing_is_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let d = on_file("ns", "db", "u1", "vols/db.img");
    let e = n.apply_device_served(d.clone(), true).await.unwrap_err();
    assert!(matches!(e, NodeError::Missing { .. }), "{e:?}");
    assert!(
        !dir.path().join("vols").exists(),
        "neither the file nor its directory"
    );
    assert!(n.view().await.devices.is_empty(), "the node holds nothing");
    // Put back, it is served (and not counted as created: it is not the agent's to delete).
    std::fs::create_dir(dir.path().join("vols")).unwrap();
    std::fs::write(dir.path().join("vols/db.img"), vec![0u8; 1 << 20]).unwrap();
    let (_, v) = n.apply_device_served(d, true).await.unwrap();
    assert_eq!(v.capacity_bytes, 1 << 20);
}

#[tokio::test]
async fn a_known_device_whose_file_vanished_is_not_recreated_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let n = node(dir.path()).await;
        n.apply_device(on_file("ns", "db", "u1", "db.img"))
            .await
            .unwrap();
        n.shutdown().await.unwrap();
    }
    std::fs::remove_file(dir.path().join("db.img")).unwrap();
    let (n, problems) = Node::start(opts(dir.path(), true, Vec::new()))
        .await
        .unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(!dir.path().join("db.img").exists(), "not created blank");
    // A re-apply (not even marked served) of a Device the node knows must find its store.
    let e = n
        .apply_device(on_file("ns", "db", "u1", "db.img"))
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::Missing { .. }), "{e:?}");
    assert!(!dir.path().join("db.img").exists());
}

#[tokio::test]
async fn the_data_dir_identity_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    let first = n.data_dir_report().clone();
    assert!(first.created && first.foreign_node.is_none());
    n.shutdown().await.unwrap();
    drop(n);
    let n = node(dir.path()).await;
    assert_eq!(n.data_dir_report().id, first.id);
    assert!(!n.data_dir_report().created);
    n.shutdown().await.unwrap();
    drop(n);
    let mut o = opts(dir.path(), true, Vec::new());
    o.node_name = "node-b".into();
    let (n, _) = Node::start(o).await.unwrap();
    assert_eq!(n.data_dir_report().foreign_node.as_deref(), Some("node-a"));
}

/// A loop device for the block tests, when this host lets us make one (root, losetup).
struct Loop {
    dev: String,
    _backing: tempfile::NamedTempFile,
}

impl Loop {
    fn new() -> Option<Loop> {
        let backing = tempfile::NamedTempFile::new().ok()?;
        backing.as_file().set_len(4 << 20).ok()?;
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing.path())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let dev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        Some(Loop {
            dev,
            _backing: backing,
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
    }
}

#[tokio::test]
async fn a_block_device_has_one_owner_and_is_held_exclusively() {
    let Some(lo) = Loop::new() else {
        eprintln!("skipped: no loop device (needs root and losetup)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (n, _) = Node::start(opts(dir.path(), true, vec![lo.dev.clone().into()]))
        .await
        .unwrap();
    let on_block = |ns: &str, name: &str, uid: &str| {
        let mut d = sample_device(name, uid);
        d.id.namespace = ns.into();
        d.store.source = StoreSource::Block {
            path: lo.dev.clone(),
        };
        d
    };
    let a = on_block("ns-a", "db", "ua");
    n.apply_device(a.clone()).await.unwrap();
    let e = n
        .apply_device(on_block("ns-b", "x", "ub"))
        .await
        .unwrap_err();
    assert_in_use(e, "ns-a/db", "ua");
    // The kernel refuses another exclusive open while the Device holds it.
    use std::os::unix::fs::OpenOptionsExt;
    let other = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&lo.dev);
    assert_eq!(
        other.map_err(|e| e.raw_os_error()).err(),
        Some(Some(libc::EBUSY)),
        "O_EXCL is held"
    );
    // A change that reopens the store keeps it (no EBUSY against itself).
    let mut changed = a.clone();
    changed.id.generation = 2;
    changed.write_cache = !a.write_cache;
    n.apply_device(changed).await.unwrap();
    n.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_agents_identity_files_are_no_backing_store() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path()).await;
    for path in [
        ".spindle-data-dir",
        ".spindle-agent-id",
        ".spindle/state/x.img",
    ] {
        let e = n
            .apply_device(on_file("ns", "sneaky", "u9", path))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, NodeError::Invalid { field, .. } if field == "spec.source.file.path"),
            "{path}: {e:?}"
        );
    }
}
