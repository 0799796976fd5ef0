//! Clones of a filesystem, sources in other namespaces, and a data dir without reflinks.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use spindle_e2e::initiator;
use spindle_e2e::manifest::{device_yaml, target_yaml};
use spindle_e2e::spindle::{Spindle, default_iqn};

use crate::{
    EXT4_NODE, MIB, READY, XFS_NODE, clone_yaml, ensure_same, image_of, run, scratch,
    snapshot_yaml, take,
};

/// An ext4 with files, written to the source through iSCSI; snapshot; clone; the clone's file
/// passes `e2fsck -fn` and holds the files.
pub fn ext4_clone_passes_fsck(s: &Spindle, ns: &str) -> Result<()> {
    let size = 64 * MIB;
    let dir = scratch(ns)?;
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc"))?;
    for i in 0..50 {
        std::fs::write(
            tree.join(format!("etc/file{i}")),
            format!("{i}\n").repeat(100 * i + 1),
        )?;
    }
    let fs = dir.join("fs.ext4");
    run(Command::new("truncate")
        .args(["-s", &size.to_string()])
        .arg(&fs))?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&fs))?;
    s.apply(ns, &device_yaml("fs", XFS_NODE, size, ""))?;
    s.apply(ns, &target_yaml("fs", &[(0, "fs")], ""))?;
    s.wait_condition("target", ns, "fs", "Ready", "True", READY)?;
    let portal = s.rt.portal(XFS_NODE)?;
    let url = initiator::lun_url(portal, &default_iqn(ns, "fs"), 0);
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&fs)
        .arg(&url))?;
    take(s, ns, "fs-snap", "fs")?;
    s.apply(ns, &clone_yaml("fs-clone", XFS_NODE, size, "fs-snap"))?;
    s.wait_condition("device", ns, "fs-clone", "Ready", "True", READY)?;
    let clone = s.rt.data_dir(XFS_NODE)?.join("fs-clone.img");
    let out = Command::new("e2fsck").args(["-fn"]).arg(&clone).output()?;
    ensure!(
        out.status.success(),
        "e2fsck -fn of the clone: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let listing = run(Command::new("debugfs")
        .args(["-R", "ls -l /etc"])
        .arg(&clone))?;
    ensure!(
        listing.contains("file49"),
        "the clone lacks the files: {listing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A DeviceSnapshot names Devices of its own namespace only: a Device of the same name in
/// another namespace is not copied; a clone cannot start from another namespace's snapshot.
pub fn cross_namespace_refused(s: &Spindle, ns: &str) -> Result<()> {
    let other = format!("{ns}-b");
    s.namespace(&other)?;
    s.apply(ns, &device_yaml("only-here", XFS_NODE, 4 * MIB, ""))?;
    s.wait_condition("device", ns, "only-here", "Ready", "True", READY)?;
    let here = take(s, ns, "here", "only-here")?;
    s.apply(&other, &snapshot_yaml("thief", "only-here"))?;
    let c = s.wait_condition("devicesnapshot", &other, "thief", "Ready", "False", READY)?;
    ensure!(c.reason == "SourceNotFound", "{c:?}");
    ensure!(
        c.message.contains(&other),
        "the message names the namespace: {c:?}"
    );
    let thief = s.get("devicesnapshot", &other, "thief")?.context("thief")?;
    ensure!(thief["status"]["readyToUse"] != true, "{}", thief["status"]);
    let snaps = s.rt.data_dir(XFS_NODE)?.join(".spindle/snapshots");
    let uid = thief["metadata"]["uid"].as_str().context("uid")?;
    ensure!(
        !snaps.join(format!("{uid}.img")).exists(),
        "a copy was made for the other namespace"
    );
    // A clone in the other namespace naming this namespace's snapshot by name finds nothing.
    s.apply(&other, &clone_yaml("stolen", XFS_NODE, 4 * MIB, "here"))?;
    let c = s.wait_condition("device", &other, "stolen", "Ready", "False", READY)?;
    ensure!(c.reason == "SnapshotNotReady", "{c:?}");
    ensure!(
        !s.rt.data_dir(XFS_NODE)?.join("stolen.img").exists(),
        "a clone was made from another namespace's snapshot"
    );
    ensure!(image_of(s, XFS_NODE, &here)?.exists());
    Ok(())
}

/// On ext4 (no reflinks) the store is copied with the writes held (method copy), within the
/// agent's copy limit; the copy holds the data.
pub fn ext4_data_dir_copies(s: &Spindle, ns: &str) -> Result<()> {
    let size = 64 * MIB;
    s.apply(ns, &device_yaml("plain", EXT4_NODE, size, ""))?;
    s.apply(ns, &target_yaml("plain", &[(0, "plain")], ""))?;
    s.wait_condition("target", ns, "plain", "Ready", "True", READY)?;
    let url = initiator::lun_url(s.rt.portal(EXT4_NODE)?, &default_iqn(ns, "plain"), 0);
    initiator::qemu_io(&url, &["write -P 0x6b 0 8M", "write -P 0x3c 40M 1M"])?;
    let snap = take(s, ns, "plain-snap", "plain")?;
    let st = &snap["status"];
    ensure!(st["method"] == "copy", "method {} on ext4", st["method"]);
    ensure!(st["copiedBytes"] == size, "{st}");
    let hold = st["holdMicros"].as_u64().context("holdMicros")?;
    let copy = std::fs::read(image_of(s, EXT4_NODE, &snap)?)?;
    let source = std::fs::read(s.rt.data_dir(EXT4_NODE)?.join("plain.img"))?;
    ensure_same(
        &copy,
        &source,
        "the copy against the source (no writes since)",
    )?;
    eprintln!("  ext4: copied {size} bytes, writes held {hold} µs");
    Ok(())
}
