//! The delete protocol under I/O: the flush before the finalizer goes (Events in order, every
//! GOOD write kept), reclaim policies, the operator killed mid-delete, and the orphan sweep.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use spindle_e2e::spindle::{OPERATOR, Spindle, condition, default_iqn};

use crate::{LEASE, READY, device_and_target, discover, writer};
use spindle_e2e::initiator::WriterResults;

/// Deletes a Device while the writer streams into its LUN; returns the writer's answers after
/// the Device is gone.
fn delete_while_writing(s: &Spindle, ns: &str, name: &str, node: &str) -> Result<WriterResults> {
    let tag = format!("{ns}-{name}");
    let w = writer(s.rt.portal(node)?, &default_iqn(ns, name), &tag, 2000)?;
    s.kubectl(&["delete", "device", "-n", ns, name, "--wait=false"])?;
    s.wait_gone("device", ns, name, READY)?;
    let a = w.finish()?;
    // After the flush the LUN leaves the Target's map: a write that late may meet the unit
    // attention REPORTED LUNS DATA HAS CHANGED (06h 3Fh/0Eh) instead of the fence.
    let other: Vec<&String> = a
        .other
        .iter()
        .filter(|l| !l.ends_with(" 06 3f 0e"))
        .collect();
    ensure!(
        other.is_empty(),
        "answers other than GOOD and 25h/00h: {:?}",
        &other[..other.len().min(5)]
    );
    ensure!(
        !a.fenced.is_empty(),
        "no write was refused by the fence (good: {})",
        a.good.len()
    );
    Ok(a)
}

/// Deleting before Flushed (Events in order, each once), with the counts in Flushed.
pub fn check_delete_events(s: &Spindle, ns: &str, name: &str) -> Result<()> {
    let events = s.events(ns, name)?;
    let pos = |r: &str| events.iter().position(|e| e.reason == r);
    let (Some(del), Some(flushed), Some(rel)) =
        (pos("Deleting"), pos("FlushAcknowledged"), pos("Released"))
    else {
        bail!("Events lack Deleting, FlushAcknowledged or Released: {events:?}");
    };
    ensure!(
        del < flushed && flushed < rel,
        "Events out of order: {events:?}"
    );
    let note = &events[flushed].note;
    ensure!(
        note.contains("refused by the fence") && note.contains("command(s)"),
        "{note}"
    );
    Ok(())
}

pub fn delete_under_io_retain(s: &Spindle, ns: &str) -> Result<()> {
    device_and_target(s, ns, "keep", "node-a", "  reclaimPolicy: Retain\n")?;
    let a = delete_while_writing(s, ns, "keep", "node-a")?;
    check_delete_events(s, ns, "keep")?;
    a.check_file(&s.rt.data_dir("node-a")?.join("keep.img"))?;
    let t = s.get("target", ns, "keep")?.context("target")?;
    let ready = condition(&t, "Ready").context("target Ready")?;
    ensure!(
        ready.status == "False" && ready.message.contains("\"keep\""),
        "target Ready: {ready:?}"
    );
    Ok(())
}

pub fn delete_removes_file(s: &Spindle, ns: &str) -> Result<()> {
    device_and_target(s, ns, "scratch", "node-a", "")?;
    let file = s.rt.data_dir("node-a")?.join("scratch.img");
    ensure!(file.exists(), "{} missing while served", file.display());
    delete_while_writing(s, ns, "scratch", "node-a")?;
    check_delete_events(s, ns, "scratch")?;
    ensure!(
        !file.exists(),
        "{} still there after a delete under reclaimPolicy Delete",
        file.display()
    );
    Ok(())
}

pub fn operator_killed_mid_delete(s: &Spindle, ns: &str) -> Result<()> {
    device_and_target(s, ns, "ok", "node-a", "  reclaimPolicy: Retain\n")?;
    let w = writer(s.rt.portal("node-a")?, &default_iqn(ns, "ok"), ns, 1000)?;
    s.kubectl(&["delete", "device", "-n", ns, "ok", "--wait=false"])?;
    s.rt.kill_operator(OPERATOR)?;
    std::thread::sleep(Duration::from_secs(1));
    s.rt.start_operator(OPERATOR)?;
    // The killed replica's Lease must expire before the restarted one (same identity: at once).
    s.wait_gone("device", ns, "ok", LEASE + READY)?;
    w.finish()?
        .check_file(&s.rt.data_dir("node-a")?.join("ok.img"))
}

pub fn orphan_sweep(s: &Spindle, ns: &str) -> Result<()> {
    device_and_target(s, ns, "orphan", "node-a", "")?;
    // The operator is away while someone strips the finalizers and deletes the objects.
    s.rt.kill_operator(OPERATOR)?;
    for kind in ["target", "device"] {
        s.kubectl(&[
            "patch",
            kind,
            "-n",
            ns,
            "orphan",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ])?;
        s.kubectl(&["delete", kind, "-n", ns, "orphan"])?;
    }
    s.rt.start_operator(OPERATOR)?;
    s.wait_for(
        "the sweep released the orphan Device",
        LEASE + READY,
        || {
            let log = s.rt.operator_log(OPERATOR)?;
            Ok(log
                .contains(&format!("released Device {ns}/orphan"))
                .then_some(()))
        },
    )?;
    let log = s.rt.operator_log(OPERATOR)?;
    ensure!(
        log.contains(&format!("removed Target {ns}/orphan")),
        "the orphan Target was not removed"
    );
    let file = s.rt.data_dir("node-a")?.join("orphan.img");
    ensure!(
        file.exists(),
        "the orphan's data was deleted: {} is gone",
        file.display()
    );
    let listed = discover(s.rt.portal("node-a")?)?;
    ensure!(
        !listed.contains(&default_iqn(ns, "orphan")),
        "the orphan Target is still served: {listed:?}"
    );
    Ok(())
}
