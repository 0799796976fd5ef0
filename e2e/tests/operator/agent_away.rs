//! Deletes while the agent is away: killed mid-drain, stopped (the delete waits), its Node
//! deleted, or the flush skipped by annotation.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use spindle_e2e::spindle::{Spindle, condition, default_iqn};

use crate::delete::check_delete_events;
use crate::{LEASE, READY, device_and_target, writer};

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
