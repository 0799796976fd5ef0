//! The node's answers where a release or a drain cannot do what it is asked (issue 17, smaller
//! holes): a file that cannot be removed, a block device under reclaim policy Delete, a store
//! that is not open. Some need root (chattr, losetup): they say so and pass when not root.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::state::StateStore;
use super::tests::{device, id, node, opts};
use super::{Node, NodeError};
use crate::engine::DrainState;
use crate::store::StoreSource;

/// `chattr +i` / `-i`: an immutable file cannot be removed, nor opened for writing, even by
/// root. False when that is not possible here (not root, or a filesystem without it).
fn set_immutable(p: &Path, on: bool) -> bool {
    Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(p)
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes a file mutable again when the test ends, however it ends (so the temp dir goes).
struct Immutable(PathBuf);

impl Immutable {
    fn set(p: &Path) -> Option<Self> {
        set_immutable(p, true).then(|| Immutable(p.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        set_immutable(&self.0, false);
    }
}

#[tokio::test]
async fn a_failed_unlink_keeps_the_device_known_and_a_retry_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), true).await;
    let a = id("a", "ua", 1);
    n.apply_device(device("a", "ua")).await.unwrap();
    n.drain_device(&a).await.unwrap();
    let img = dir.path().join("a.img");
    let Some(frozen) = Immutable::set(&img) else {
        eprintln!("chattr +i is not possible here (not root, or not ext4/xfs): skipped");
        return;
    };
    let e = n.release_device(&a, None, false).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&img.display().to_string()) && msg.contains("Operation not permitted"),
        "names the path and the OS error: {msg}"
    );
    // Still known: a retry fails the same way (the operator keeps its finalizer), never
    // "nothing to release".
    let e = n.release_device(&a, None, false).await.unwrap_err();
    assert!(e.to_string().contains("could not be removed"), "{e}");
    let v = n.view().await;
    let d = v.devices.iter().find(|d| d.id.uid == "ua").expect("known");
    assert_eq!(d.state, DrainState::Released);
    // Nobody else may take the path while its removal is owed.
    let mut other = device("b", "ub");
    other.store.source = StoreSource::File {
        path: "a.img".into(),
        size_bytes: 1 << 20,
    };
    let e = n.apply_device(other).await.unwrap_err();
    assert!(
        matches!(&e, NodeError::Precondition { field, .. } if field == "spec.source.file.path"),
        "{e}"
    );
    // A restart keeps it known, reports the removal it still owes, and serves it no more.
    n.shutdown().await.unwrap();
    let (n, problems) = Node::start(opts(dir.path(), true)).await.unwrap();
    assert!(
        problems.iter().any(|p| p.contains("a.img")),
        "the owed removal is reported: {problems:?}"
    );
    assert!(n.release_device(&a, None, false).await.is_err());
    drop(frozen);
    let r = n.release_device(&a, None, false).await.unwrap();
    assert!(r.known && r.file_removed, "{r:?}");
    assert!(!img.exists());
    let again = n.release_device(&a, None, false).await.unwrap();
    assert!(again.known && again.file_removed);
    n.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restart_never_removes_a_file_another_device_uses() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), true).await;
    let a = id("a", "ua", 1);
    n.apply_device(device("a", "ua")).await.unwrap();
    n.drain_device(&a).await.unwrap();
    let img = dir.path().join("a.img");
    let Some(frozen) = Immutable::set(&img) else {
        eprintln!("chattr +i is not possible here: skipped");
        return;
    };
    n.release_device(&a, None, false).await.unwrap_err();
    n.shutdown().await.unwrap();
    drop(frozen);
    // What an agent that lost the release could be told next: another Device on that path
    // (recorded as served), with data of its own in the file.
    let mut b = device("b", "ub");
    b.store.source = StoreSource::File {
        path: "a.img".into(),
        size_bytes: 1 << 20,
    };
    StateStore::open(dir.path())
        .unwrap()
        .save_device(&b)
        .unwrap();
    std::fs::write(&img, vec![0x5a; 1 << 20]).unwrap();
    let (n, problems) = Node::start(opts(dir.path(), true)).await.unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("not reclaiming") && p.contains("ns/b")),
        "{problems:?}"
    );
    assert_eq!(
        std::fs::read(&img).unwrap(),
        vec![0x5a; 1 << 20],
        "b's data is untouched"
    );
    n.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_drain_of_a_store_that_is_not_open_flushes_it_or_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (id("a", "ua", 1), id("b", "ub", 1));
    {
        let n = node(dir.path(), true).await;
        n.apply_device(device("a", "ua")).await.unwrap();
        n.apply_device(device("b", "ub")).await.unwrap();
        n.shutdown().await.unwrap();
    }
    let (img_a, img_b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    // Immutable files cannot be opened for writing: the restarted node cannot open them.
    let Some(frozen_a) = Immutable::set(&img_a) else {
        eprintln!("chattr +i is not possible here: skipped");
        return;
    };
    let frozen_b = Immutable::set(&img_b).unwrap();
    let (n, problems) = Node::start(opts(dir.path(), true)).await.unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    // b's file goes while the node cannot open it: there is nothing it could flush.
    drop(frozen_b);
    std::fs::remove_file(&img_b).unwrap();
    let e = n.drain_device(&b).await.unwrap_err();
    assert!(
        e.to_string().contains("nothing was flushed"),
        "never acknowledged without a flush: {e}"
    );
    let v = n.view().await;
    let state = |name: &str| v.devices.iter().find(|d| d.id.name == name).unwrap().state;
    assert_eq!(state("b"), DrainState::Draining, "fenced, not flushed");
    // a can still be opened (read only) and fdatasynced: that is the flush.
    let ack = n.drain_device(&a).await.unwrap();
    assert_eq!(ack.target, None);
    // Once b's store can be opened again, its drain completes.
    std::fs::write(&img_b, vec![0u8; 1 << 20]).unwrap();
    n.drain_device(&b).await.unwrap();
    drop(frozen_a);
    n.shutdown().await.unwrap();
}

/// A loop device over a file of `bytes` filled with `fill`; detached when dropped.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn new(dir: &Path, bytes: usize, fill: u8) -> Option<Self> {
        let file = dir.join(format!("loop-{fill}.img"));
        std::fs::write(&file, vec![fill; bytes]).ok()?;
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .ok()?;
        out.status.success().then(|| Loop {
            dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn read_device(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[tokio::test]
async fn reclaim_policy_delete_erases_a_block_device_and_retain_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    const BYTES: usize = 8 << 20;
    let Some(lo) = Loop::new(dir.path(), BYTES, 0xa5) else {
        eprintln!("losetup is not possible here (needs root and loop devices): skipped");
        return;
    };
    let mut o = opts(dir.path(), true);
    o.allow_block = vec![lo.dev.clone()];
    let (n, problems) = Node::start(o).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let block = |name: &str, delete: bool| {
        let mut d = device(name, &format!("u{name}"));
        d.store.source = StoreSource::Block {
            path: lo.dev.display().to_string(),
        };
        d.reclaim_delete = delete;
        d
    };
    // Retain: the data stays.
    n.apply_device(block("keep", false)).await.unwrap();
    let keep = id("keep", "ukeep", 1);
    n.drain_device(&keep).await.unwrap();
    let r = n.release_device(&keep, None, false).await.unwrap();
    assert!(r.known && !r.wiped && !r.file_removed, "{r:?}");
    assert!(read_device(&lo.dev).iter().all(|b| *b == 0xa5));
    // Delete: the next tenant reads zeroes.
    n.apply_device(block("gone", true)).await.unwrap();
    let gone = id("gone", "ugone", 1);
    n.drain_device(&gone).await.unwrap();
    let r = n.release_device(&gone, None, false).await.unwrap();
    assert!(r.known && r.wiped && !r.file_removed, "{r:?}");
    let data = read_device(&lo.dev);
    assert_eq!(data.len(), BYTES);
    assert!(
        data.iter().all(|b| *b == 0),
        "{} non-zero bytes remain",
        data.iter().filter(|b| **b != 0).count()
    );
    // Answered again, without a second erase.
    let again = n.release_device(&gone, None, false).await.unwrap();
    assert!(again.known && again.wiped, "{again:?}");
    n.shutdown().await.unwrap();
}
