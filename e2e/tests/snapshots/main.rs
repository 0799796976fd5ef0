//! Snapshots and clones end to end (docs/snapshots.md): a real etcd + kube-apiserver, the
//! operator and two agents as processes: node-x's data dir on an XFS loop device (reflinks),
//! node-e's on this machine's ext4 (copies). Real initiators: the libiscsi writer streaming
//! sequence-numbered blocks while snapshots are taken, qemu-img reading a clone back, e2fsck
//! on a clone of an ext4. Needs root (losetup, mount), xfsprogs, e2fsprogs.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use spindle_e2e::checks::{Check, run_table};
use spindle_e2e::spindle::{OPERATOR, Spindle};

mod clones;
mod streaming;

const READY: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;
/// The node whose data dir is XFS (reflink=1), and the one left on ext4.
const XFS_NODE: &str = "node-x";
const EXT4_NODE: &str = "node-e";

/// The XFS image mounted over node-x's data dir, removed at the end.
static MOUNTED: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);

fn main() -> ExitCode {
    let checks: &[(&str, Check)] = &[
        (
            "snapshots under a streaming writer hold a prefix of the acknowledged writes",
            streaming::prefix_of_acknowledged_writes,
        ),
        (
            "a clone of an ext4 passes e2fsck",
            clones::ext4_clone_passes_fsck,
        ),
        (
            "another namespace's Device is never the source",
            clones::cross_namespace_refused,
        ),
        (
            "without reflinks (ext4) the store is copied, writes held",
            clones::ext4_data_dir_copies,
        ),
    ];
    let code = run_table(start, "e2e-snap", checks, &[OPERATOR]);
    unmount();
    code
}

/// Both agents, then node-x's data dir replaced by an XFS loop mount (before it holds
/// anything) and its agent started again on it.
fn start() -> Result<Spindle> {
    let s = Spindle::start(&[XFS_NODE, EXT4_NODE], &[])?;
    s.rt.stop_agent(XFS_NODE)?;
    let dir = s.rt.data_dir(XFS_NODE)?;
    let image = std::env::temp_dir().join(format!("spindle-e2e-snap-{}.xfs", std::process::id()));
    run(Command::new("truncate").args(["-s", "2G"]).arg(&image))?;
    run(Command::new("mkfs.xfs")
        .args(["-q", "-f", "-m", "reflink=1"])
        .arg(&image))?;
    std::fs::create_dir_all(&dir)?;
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&dir))?;
    *MOUNTED.lock().unwrap_or_else(|e| e.into_inner()) = Some((dir, image));
    s.rt.start_agent(XFS_NODE)?;
    Ok(s)
}

fn unmount() {
    if let Some((dir, image)) = MOUNTED.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // The loop device was made by mount -o loop: umount detaches it.
        let _ = Command::new("umount").arg(&dir).status();
        let _ = std::fs::remove_file(&image);
    }
}

/// Runs a command; fails with its stderr.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A DeviceSnapshot manifest of Device `device`.
fn snapshot_yaml(name: &str, device: &str) -> String {
    format!(
        "apiVersion: spindle.dev/v1alpha1\nkind: DeviceSnapshot\nmetadata: {{name: {name}}}\n\
         spec:\n  source: {{deviceName: {device}}}\n"
    )
}

/// A clone: a Device `name` of `size` bytes on `node` starting as snapshot `snap`.
fn clone_yaml(name: &str, node: &str, size: u64, snap: &str) -> String {
    format!(
        "apiVersion: spindle.dev/v1alpha1\nkind: Device\nmetadata: {{name: {name}}}\nspec:\n  \
         nodeName: {node}\n  source:\n    file: {{path: {name}.img, sizeBytes: {size}}}\n    \
         snapshot: {{name: {snap}}}\n"
    )
}

/// Takes snapshot `name` of `device` and waits until it is ready to use; returns the object.
fn take(s: &Spindle, ns: &str, name: &str, device: &str) -> Result<Value> {
    s.apply(ns, &snapshot_yaml(name, device))?;
    s.wait_for(
        &format!("DeviceSnapshot {ns}/{name} readyToUse"),
        READY,
        || {
            let o = s.get("devicesnapshot", ns, name)?.context("gone")?;
            if o["status"]["readyToUse"] == true {
                return Ok(Some(o));
            }
            bail!("status: {}", o["status"])
        },
    )
}

/// The copy of a snapshot on its node.
fn image_of(s: &Spindle, node: &str, snap: &Value) -> Result<PathBuf> {
    let uid = snap["metadata"]["uid"].as_str().context("uid")?;
    Ok(s.rt
        .data_dir(node)?
        .join(".spindle/snapshots")
        .join(format!("{uid}.img")))
}

/// Reads a whole LUN through iSCSI (qemu-img, the libiscsi block driver) into `out`.
fn read_lun(url: &str, out: &Path) -> Result<Vec<u8>> {
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", url])
        .arg(out))?;
    let data = std::fs::read(out)?;
    let _ = std::fs::remove_file(out);
    Ok(data)
}

/// The check's scratch folder.
fn scratch(ns: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("spindle-e2e-snap-{}-{ns}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn ensure_same(a: &[u8], b: &[u8], what: &str) -> Result<()> {
    ensure!(
        a.len() == b.len(),
        "{what}: {} bytes, not {}",
        a.len(),
        b.len()
    );
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
        bail!("{what}: differs first at byte {i}");
    }
    Ok(())
}
