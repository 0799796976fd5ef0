//! Issue 17, backing stores: one owner per store, never a resurrected disk. A real etcd +
//! kube-apiserver, the operator and agents as processes, real initiators (qemu-io, iscsi-ls).
//! Node-a serves the file checks, node-b the loop device (its agent is restarted with
//! `--allow-block`), node-c the data dir swap (its whole data dir is replaced). Each check uses
//! its own namespaces; they run in order on one cluster and all are reported.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use spindle_e2e::checks::{Check, run_table};
use spindle_e2e::initiator;
use spindle_e2e::manifest::{self, Manifest, target_yaml};
use spindle_e2e::spindle::{OPERATOR, Spindle, condition, default_iqn};

const READY: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;
/// The operator retries a refused Device within its WAIT; a reconcile after a change lands
/// within this.
const RETRY: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let checks: &[(&str, Check)] = &[
        (
            "two namespaces, one path: the second is refused, the first untouched",
            same_path,
        ),
        (
            "a hard link to another Device's file is the same store",
            hard_link,
        ),
        ("an allowlisted loop device has one owner", loop_device),
        (
            "data dir swapped for an empty one: BackingStoreMissing, nothing created, recovers",
            data_dir_swapped,
        ),
    ];
    run_table(
        || Spindle::start(&["node-a", "node-b", "node-c"], &[]),
        "e2e-store",
        checks,
        &[OPERATOR],
    )
}

/// A Device manifest with a `source` (flow YAML) and reclaim policy Delete.
fn device(name: &str, node: &str, source: &str) -> String {
    Manifest::device(name, node)
        .spec(&format!("  source: {source}\n  reclaimPolicy: Delete\n"))
        .yaml()
}

/// A file source of 16 MiB.
fn file_source(path: &str) -> String {
    manifest::file_source(path, 16 * MIB)
}

/// The first Device (`ns`/db) with a Target over it, Ready, with a pattern written through
/// its LUN 0; returns the LUN's URL.
fn first_device(s: &Spindle, ns: &str, node: &str, source: &str) -> Result<String> {
    s.namespace(ns)?;
    s.apply(ns, &device("db", node, source))?;
    s.apply(ns, &target_yaml("db", &[(0, "db")], ""))?;
    s.wait_condition("device", ns, "db", "Ready", "True", READY)?;
    s.wait_condition("target", ns, "db", "Ready", "True", READY)?;
    let url = initiator::lun_url(s.rt.portal(node)?, &default_iqn(ns, "db"), 0);
    initiator::qemu_io(&url, &["write -P 0x5a 1M 256k"])?;
    Ok(url)
}

/// The pattern written by [`first_device`] reads back through the first Device's LUN.
fn pattern_intact(url: &str) -> Result<()> {
    let read = initiator::qemu_io(url, &["read -P 0x5a 1M 256k"])?;
    ensure!(read.contains("read 262144/262144"), "{read}");
    Ok(())
}

/// The second Device (`ns`/x on `source`) goes Ready=False BackingStoreInUse naming the first,
/// with a Warning Event; its Target serves no LUN 0 of the first's store.
fn second_refused(s: &Spindle, ns: &str, owner_ns: &str, node: &str, source: &str) -> Result<()> {
    s.namespace(ns)?;
    s.apply(ns, &device("x", node, source))?;
    s.apply(ns, &target_yaml("x", &[(0, "x")], ""))?;
    let ready = s.wait_condition("device", ns, "x", "Ready", "False", READY)?;
    let ready = s
        .wait_for("Ready reason BackingStoreInUse", READY, || {
            let c = s
                .get("device", ns, "x")?
                .and_then(|o| condition(&o, "Ready"));
            Ok(c.filter(|c| c.reason == "BackingStoreInUse"))
        })
        .with_context(|| format!("first seen: {ready:?}"))?;
    ensure!(
        ready.message.contains(&format!("{owner_ns}/db")),
        "the message does not name the owner: {ready:?}"
    );
    let ev = s.wait_event(ns, "x", "BackingStoreInUse", READY)?;
    ensure!(ev.type_ == "Warning", "{ev:?}");
    let url = initiator::lun_url(s.rt.portal(node)?, &default_iqn(ns, "x"), 0);
    if let Ok(out) = initiator::qemu_io(&url, &["read 0 4k"]) {
        bail!("the refused Device's Target serves a LUN 0: {out}");
    }
    Ok(())
}

/// Deletes the second Device (reclaim policy Delete) and its Target; waits until they are gone.
fn delete_second(s: &Spindle, ns: &str) -> Result<()> {
    s.kubectl(&["delete", "target", "-n", ns, "x", "--wait=false"])?;
    s.kubectl(&["delete", "device", "-n", ns, "x", "--wait=false"])?;
    s.wait_gone("device", ns, "x", READY)?;
    s.wait_gone("target", ns, "x", READY)
}

fn same_path(s: &Spindle, ns: &str) -> Result<()> {
    let (a, b) = (format!("{ns}-a"), format!("{ns}-b"));
    let src = file_source("shared.img");
    let url = first_device(s, &a, "node-a", &src)?;
    second_refused(s, &b, &a, "node-a", &src)?;
    delete_second(s, &b)?;
    let file = s.rt.data_dir("node-a")?.join("shared.img");
    ensure!(file.exists(), "{} was removed", file.display());
    pattern_intact(&url)?;
    let d = s.get("device", &a, "db")?.context("first Device")?;
    let ready = condition(&d, "Ready").context("Ready")?;
    ensure!(ready.status == "True", "the first Device: {ready:?}");
    Ok(())
}

fn hard_link(s: &Spindle, ns: &str) -> Result<()> {
    let (a, b) = (format!("{ns}-a"), format!("{ns}-b"));
    let url = first_device(s, &a, "node-a", &file_source("hl-first.img"))?;
    let dir = s.rt.data_dir("node-a")?;
    std::fs::create_dir_all(dir.join("other"))?;
    std::fs::hard_link(dir.join("hl-first.img"), dir.join("other/hl.img"))?;
    second_refused(s, &b, &a, "node-a", &file_source("other/hl.img"))?;
    delete_second(s, &b)?;
    ensure!(
        dir.join("hl-first.img").exists(),
        "the first's file was removed"
    );
    pattern_intact(&url)
}

/// A loop device over a file of 16 MiB, detached when dropped.
struct Loop {
    dev: String,
}

impl Loop {
    fn new(backing: &Path) -> Result<Loop> {
        std::fs::File::create(backing)?.set_len(16 * MIB)?;
        let out = initiator::run_ok(
            std::process::Command::new("losetup")
                .args(["--find", "--show"])
                .arg(backing),
        )?;
        Ok(Loop {
            dev: out.trim().to_owned(),
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

/// Restarts the agent of `node` with `devices` allowlisted (`--allow-block`).
fn allow_block(s: &Spindle, node: &str, devices: &[&str]) -> Result<()> {
    let dir = s.rt.data_dir(node)?;
    let agent_dir = dir.parent().context("agent dir")?;
    let lines: String = devices.iter().map(|d| format!("{d}\n")).collect();
    std::fs::write(agent_dir.join("allow-block"), lines)?;
    s.rt.stop_agent(node)?;
    s.rt.start_agent(node)
}

fn loop_device(s: &Spindle, ns: &str) -> Result<()> {
    let work = std::env::temp_dir().join(format!("spindle-e2e-store-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let lo = Loop::new(&work.join("loop.img"))?;
    allow_block(s, "node-b", &[&lo.dev])?;
    let r = (|| {
        let (a, b) = (format!("{ns}-a"), format!("{ns}-b"));
        let src = format!("{{block: {{path: {}}}}}", lo.dev);
        let url = first_device(s, &a, "node-b", &src)?;
        second_refused(s, &b, &a, "node-b", &src)?;
        delete_second(s, &b)?;
        pattern_intact(&url)?;
        // The Device holds the device exclusively: the kernel refuses another O_EXCL open.
        use std::os::unix::fs::OpenOptionsExt;
        let other = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(&lo.dev);
        ensure!(
            other.is_err(),
            "{} opened O_EXCL while a Device holds it",
            lo.dev
        );
        // Let the loop device go before it is detached.
        s.kubectl(&["delete", "target", "-n", &a, "db"])?;
        s.kubectl(&["delete", "device", "-n", &a, "db", "--wait=false"])?;
        s.wait_gone("device", &a, "db", READY)
    })();
    allow_block(s, "node-b", &[])?;
    drop(lo);
    let _ = std::fs::remove_dir_all(&work);
    r
}

fn data_dir_swapped(s: &Spindle, ns: &str) -> Result<()> {
    let node = "node-c";
    let url = first_device(s, ns, node, &file_source("disk.img"))?;
    let dir = s.rt.data_dir(node)?;
    let old = dir.with_file_name("data.old");
    // The node comes back with an empty data dir (a mount that failed, a reimaged disk).
    s.rt.stop_agent(node)?;
    std::fs::rename(&dir, &old)?;
    std::fs::create_dir(&dir)?;
    s.rt.start_agent(node)?;
    let r = (|| {
        let ready = s
            .wait_for("Device Ready=False BackingStoreMissing", RETRY, || {
                let c = s
                    .get("device", ns, "db")?
                    .and_then(|o| condition(&o, "Ready"));
                Ok(c.filter(|c| c.status == "False" && c.reason == "BackingStoreMissing"))
            })
            .context("the Device")?;
        ensure!(ready.message.contains("served before"), "{ready:?}");
        let ev = s.wait_event(ns, "db", "BackingStoreMissing", READY)?;
        ensure!(ev.type_ == "Warning", "{ev:?}");
        // No session can use the LUN: give the operator time to (re)apply the Target.
        std::thread::sleep(Duration::from_secs(5));
        if let Ok(out) = initiator::qemu_io(&url, &["read 0 4k"]) {
            bail!("LUN 0 of the lost Device is served: {out}");
        }
        let t = s.get("target", ns, "db")?.context("target")?;
        let tr = condition(&t, "Ready").context("target Ready")?;
        ensure!(tr.status == "False", "the Target: {tr:?}");
        // Nothing was created for the Device in the new data dir.
        let made: Vec<String> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".spindle"))
            .collect();
        ensure!(made.is_empty(), "created in the new data dir: {made:?}");
        // The agent's log is beside its dir: <state>/agent-NODE.log, data in <state>/agent-NODE/data.
        let log_path = dir
            .parent()
            .and_then(Path::parent)
            .context("state dir")?
            .join(format!("agent-{node}.log"));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        ensure!(
            log.contains("the data dir is new"),
            "the agent did not say its data dir is new"
        );
        Ok(())
    })();
    // Putting the old dir back recovers the Device and its data.
    s.rt.stop_agent(node)?;
    std::fs::rename(&dir, dir.with_file_name("data.empty"))?;
    std::fs::rename(&old, &dir)?;
    s.rt.start_agent(node)?;
    r?;
    s.wait_condition("device", ns, "db", "Ready", "True", RETRY)?;
    s.wait_condition("target", ns, "db", "Ready", "True", RETRY)?;
    pattern_intact(&url)
}
