//! Deletes while the agent is away: killed mid-drain, stopped (the delete waits), its Node
//! deleted, or the flush skipped by annotation.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use spindle_e2e::initiator;
use spindle_e2e::manifest::{device_yaml, target_yaml};
use spindle_e2e::spindle::{Spindle, condition, default_iqn};

use crate::delete::check_delete_events;
use crate::{LEASE, MIB, READY, device_and_target, writer};

/// The agent SIGKILLed while its Device is being deleted. The kill has to land inside the drain,
/// which takes a few hundred milliseconds; when the agent had already acknowledged the flush and
/// released the Device before the kill landed (a runtime that kills slowly, such as pods behind
/// a frozen kubelet on a loaded machine), nothing was tested, and the check runs again with a new
/// Device, three times at most. The agent is started again whatever happened, so that a failure
/// here does not fail the checks after it.
pub fn agent_killed_mid_drain(s: &Spindle, ns: &str) -> Result<()> {
    for attempt in 1..=3 {
        let name = format!("kd{attempt}");
        device_and_target(s, ns, &name, "node-b", "  reclaimPolicy: Retain\n")?;
        let w = writer(s.rt.portal("node-b")?, &default_iqn(ns, &name), ns, 1000)?;
        s.kubectl(&["delete", "device", "-n", ns, &name, "--wait=false"])?;
        s.rt.kill_agent("node-b")?;
        // The connection dies with the agent: the writer fails; what it was answered counts.
        std::thread::sleep(Duration::from_millis(500));
        let answers = w.results()?;
        drop(w);
        std::thread::sleep(Duration::from_secs(2));
        let held = s.get("device", ns, &name)?.is_some();
        let done_before_kill = !held && {
            let events = s.events(ns, &name)?;
            ["FlushAcknowledged", "Released"]
                .iter()
                .all(|r| events.iter().any(|e| e.reason == *r))
        };
        s.rt.start_agent("node-b")?;
        let file = s.rt.data_dir("node-b")?.join(format!("{name}.img"));
        if held {
            s.wait_gone("device", ns, &name, LEASE + READY)?;
            return answers.check_file(&file);
        }
        ensure!(
            done_before_kill,
            "the Device went while its agent was dead, without a flush acknowledgement and a release"
        );
        answers.check_file(&file)?;
        eprintln!("     attempt {attempt}: the drain had ended before the kill landed; again");
    }
    bail!("in 3 attempts the kill never landed before the drain ended")
}

pub fn agent_stopped_delete_waits(s: &Spindle, ns: &str) -> Result<()> {
    device_and_target(s, ns, "wait", "node-b", "  reclaimPolicy: Retain\n")?;
    s.rt.kill_agent("node-b")?;
    let c = s.wait_condition("device", ns, "wait", "AgentReachable", "False", LEASE)?;
    ensure!(c.reason == "AgentUnreachable", "{c:?}");
    s.kubectl(&["delete", "device", "-n", ns, "wait", "--wait=false"])?;
    let c = s.wait_for("Deleting says the agent is unreachable", READY, || {
        Ok(s.get("device", ns, "wait")?
            .and_then(|d| condition(&d, "Deleting"))
            .filter(|c| c.reason == "AgentUnreachable"))
    })?;
    ensure!(c.message.contains("unreachable since"), "{c:?}");
    std::thread::sleep(Duration::from_secs(3));
    ensure!(
        s.get("device", ns, "wait")?.is_some(),
        "the finalizer did not hold"
    );
    s.rt.start_agent("node-b")?;
    s.wait_gone("device", ns, "wait", READY)?;
    check_delete_events(s, ns, "wait")
}

pub fn node_deleted(s: &Spindle, ns: &str) -> Result<()> {
    device_and_target(s, ns, "gone", "node-b", "  reclaimPolicy: Retain\n")?;
    s.rt.kill_agent("node-b")?;
    s.wait_condition("device", ns, "gone", "AgentReachable", "False", LEASE)?;
    s.kubectl(&["delete", "device", "-n", ns, "gone", "--wait=false"])?;
    s.kubectl(&["delete", "target", "-n", ns, "gone", "--wait=false"])?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        s.get("device", ns, "gone")?.is_some(),
        "deleted before the Node went"
    );
    let node = s.kubectl(&["get", "node", "node-b", "-o", "yaml"])?;
    s.kubectl(&["delete", "node", "node-b"])?;
    let r = (|| {
        s.wait_gone("device", ns, "gone", READY)?;
        s.wait_gone("target", ns, "gone", READY)?;
        let e = s.wait_event(ns, "gone", "NodeGone", READY)?;
        ensure!(e.type_ == "Warning", "{e:?}");
        Ok(())
    })();
    // Put node-b back for the other checks.
    let node: serde_json::Value = parse_yaml(&node)?;
    let name = node["metadata"]["name"]
        .as_str()
        .unwrap_or("node-b")
        .to_owned();
    s.apply("default", &format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{kubernetes.io/hostname: {name}}}}}\n"))?;
    s.rt.start_agent("node-b")?;
    r
}

fn parse_yaml(text: &str) -> Result<serde_json::Value> {
    Ok(serde_yaml::from_str(text)?)
}

pub fn skip_flush(s: &Spindle, ns: &str) -> Result<()> {
    device_and_target(s, ns, "skip", "node-b", "  reclaimPolicy: Retain\n")?;
    s.rt.kill_agent("node-b")?;
    s.wait_condition("device", ns, "skip", "AgentReachable", "False", LEASE)?;
    s.kubectl(&["delete", "device", "-n", ns, "skip", "--wait=false"])?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        s.get("device", ns, "skip")?.is_some(),
        "deleted without the annotation"
    );
    s.kubectl(&[
        "annotate",
        "device",
        "-n",
        ns,
        "skip",
        "spindle.dev/skip-flush=true",
    ])?;
    let r = (|| {
        s.wait_gone("device", ns, "skip", READY)?;
        let e = s.wait_event(ns, "skip", "FlushSkipped", READY)?;
        ensure!(e.type_ == "Warning", "{e:?}");
        Ok(())
    })();
    s.rt.start_agent("node-b")?;
    r
}

/// The agent restarted while its Device's last reconcile had failed (Ready=False,
/// AgentUnreachable): the Target keeps LUN 0 when the agent is back. A Device's status that only
/// says its agent could not be called at that moment never unmaps a LUN that initiators use (a
/// Linux initiator takes the disk offline on LOGICAL UNIT NOT SUPPORTED). Reads go on through
/// fresh sessions for 10 s after the agent is back: every one answers the data written before.
/// A Device event that changes nothing the operator acts on (an annotation; `n` makes it new).
fn touch(s: &Spindle, ns: &str, name: &str, n: u32) -> Result<()> {
    s.kubectl(&[
        "annotate",
        "device",
        "-n",
        ns,
        name,
        &format!("e2e.spindle.dev/touched={n}"),
        "--overwrite",
    ])?;
    Ok(())
}

/// What qemu-io says when nothing listens on the portal (libiscsi cannot connect).
const NOT_LISTENING: &str = "Can not reconnect right now";

pub fn agent_back_keeps_lun(s: &Spindle, ns: &str) -> Result<()> {
    // 512 MiB: room for a writer that streams for seconds (below).
    s.apply(ns, &device_yaml("back", "node-b", 512 * MIB, ""))?;
    s.apply(ns, &target_yaml("back", &[(0, "back")], ""))?;
    s.wait_condition("device", ns, "back", "Ready", "True", READY)?;
    s.wait_condition("target", ns, "back", "Ready", "True", READY)?;
    let iqn = default_iqn(ns, "back");
    let url = initiator::lun_url(s.rt.portal("node-b")?, &iqn, 0);
    initiator::qemu_io(&url, &["write -P 0x5a 0 64k"])?;
    s.rt.kill_agent("node-b")?;
    let r = (|| {
        // A reconcile while the agent is dead fails: the Device says so.
        touch(s, ns, "back", 1)?;
        s.wait_for("Device Ready=False AgentUnreachable", READY, || {
            Ok(s.get("device", ns, "back")?
                .and_then(|d| condition(&d, "Ready"))
                .filter(|c| c.status == "False" && c.reason == "AgentUnreachable"))
        })
    })();
    s.rt.start_agent("node-b")?;
    r?;
    let start = Instant::now();
    let mut first = None;
    let mut reads = 0;
    while first.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(10)) {
        ensure!(
            start.elapsed() < READY,
            "no read answered within {} s of the agent's start",
            READY.as_secs()
        );
        match initiator::qemu_io(&url, &["read -P 0x5a 0 64k"]) {
            Ok(_) => {
                first.get_or_insert_with(Instant::now);
                reads += 1;
            }
            // Until the restarted agent listens, connecting fails; nothing else may.
            Err(e) if first.is_none() && format!("{e:#}").contains(NOT_LISTENING) => {}
            Err(e) => bail!("read {} after the agent came back failed: {e:#}", reads + 1),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("     {reads} reads in 10 s after the agent came back, all answered the data");
    stale_status_keeps_lun(s, ns, &iqn)
}

/// The same view made certain: with writes streaming, the Device's status is set
/// to what a reconcile during an agent restart leaves (Ready=False, AgentUnreachable) while the
/// agent serves. The Target reconciles on that change; its LUN must stay: no write may be
/// answered LOGICAL UNIT NOT SUPPORTED (or anything but GOOD).
fn stale_status_keeps_lun(s: &Spindle, ns: &str, iqn: &str) -> Result<()> {
    // One write in flight, 120,000 of them: it streams for seconds (about 7,000 a second here),
    // past the reconciles the status change starts.
    let dir = std::env::temp_dir().join(format!("spindle-e2e-op-{}", std::process::id()));
    let w = initiator::Writer::start(
        &initiator::writer_tool(&dir)?,
        &initiator::lun_url(s.rt.portal("node-b")?, iqn, 0),
        120_000,
        1,
        &dir.join(format!("{ns}-stale.txt")),
    )?;
    s.wait_for("the writer's first GOOD writes", READY, || {
        Ok((w.results()?.good.len() >= 50).then_some(()))
    })?;
    let status = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "False", "reason": "AgentUnreachable",
        "message": "the agent of node \"node-b\": connection refused (set by the e2e check)",
        "lastTransitionTime": "2026-12-07T00:00:00Z"
    }]}});
    let before = w.results()?.good.len();
    s.kubectl(&[
        "patch",
        "device",
        "-n",
        ns,
        "back",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])?;
    // The status change itself wakes the Target's reconcile, which may read the Device from a
    // cache not yet updated; a second Device event a second later (an annotation: no Device
    // reconcile, whose call would make the status fresh again) wakes it with the stale status
    // surely in the cache.
    std::thread::sleep(Duration::from_secs(1));
    touch(s, ns, "back", 2)?;
    std::thread::sleep(Duration::from_secs(1));
    let mid = w.results()?.good.len();
    std::thread::sleep(Duration::from_millis(500));
    let r = w.results()?;
    drop(w);
    ensure!(
        r.good.len() > mid || !r.fenced.is_empty() || !r.other.is_empty(),
        "the writer had stopped within a second of the status change: nothing to judge"
    );
    ensure!(
        r.fenced.is_empty() && r.other.is_empty(),
        "writes answered other than GOOD after the Device's status said its agent was \
         unreachable: {} LOGICAL UNIT NOT SUPPORTED (first: {:?}), others {:?}",
        r.fenced.len(),
        r.fenced.first(),
        r.other.iter().take(3).collect::<Vec<_>>()
    );
    eprintln!(
        "     {} writes GOOD across the stale status, none refused",
        r.good.len() - before
    );
    Ok(())
}
