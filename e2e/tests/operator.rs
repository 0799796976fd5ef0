//! The operator end to end: a real etcd + kube-apiserver, the operator and one agent per node
//! (as processes by default; see `spindle_e2e::runtime`), real initiators (iscsi-ls, qemu-io,
//! libiscsi). Node-a and node-b have agents; node-c exists but has none until a check starts one.
//! Each check uses its own namespace; they run in order on one cluster and all are reported.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use spindle_e2e::checks::{Check, run_table};
use spindle_e2e::initiator::{self, Writer, WriterResults};
use spindle_e2e::manifest::{device_yaml, target_yaml};
use spindle_e2e::spindle::{OPERATOR, Spindle, condition, default_iqn};

const READY: Duration = Duration::from_secs(30);
/// The agents' Lease duration (15 s) plus the operator's clock tick and some slack.
const LEASE: Duration = Duration::from_secs(25);
const MIB: u64 = 1 << 20;

fn main() -> ExitCode {
    let checks: &[(&str, Check)] = &[
        ("apply, connect, read and write", apply_connect_io),
        ("delete under I/O with Retain", delete_under_io_retain),
        (
            "delete with reclaimPolicy Delete removes the file",
            delete_removes_file,
        ),
        ("agent killed mid-drain", agent_killed_mid_drain),
        ("operator killed mid-delete", operator_killed_mid_delete),
        (
            "agent stopped: the delete waits, then completes",
            agent_stopped_delete_waits,
        ),
        ("node deleted: the delete proceeds", node_deleted),
        ("skip-flush annotation: the delete proceeds", skip_flush),
        ("bad specs say what to change and recover", bad_specs),
        ("CHAP Secret rotation reaches the agent", chap_rotation),
        ("orphans are released, their data kept", orphan_sweep),
        (
            "apiserver paused: the operator carries on",
            apiserver_paused,
        ),
        ("two replicas: only the leader acts", two_replicas),
    ];
    run_table(
        || Spindle::start(&["node-a", "node-b"], &["node-c"]),
        "e2e-op",
        checks,
        &[OPERATOR],
    )
}

/// The initiator name the checks log in with.
const INITIATOR: &str = "iqn.2026-11.dev.spindle:e2e-operator";

/// The URL of LUN 0 of a Target with CHAP credentials.
fn chap_url(portal: std::net::SocketAddr, iqn: &str, user: &str, secret: &str) -> String {
    format!("iscsi://{user}%{secret}@{portal}/{iqn}/0")
}

/// Starts the libiscsi writer (16 in flight) on LUN 0 of `iqn` at `portal` and waits until
/// `good` writes were answered GOOD.
fn writer(portal: std::net::SocketAddr, iqn: &str, tag: &str, good: usize) -> Result<Writer> {
    let dir = std::env::temp_dir().join(format!("spindle-e2e-op-{}", std::process::id()));
    let tool = initiator::writer_tool(&dir)?;
    let w = Writer::start(
        &tool,
        &initiator::lun_url(portal, iqn, 0),
        16_000,
        16,
        &dir.join(format!("{tag}.txt")),
    )?;
    for _ in 0..600 {
        if w.results()?.good.len() >= good {
            return Ok(w);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "fewer than {good} GOOD writes after 30 s: {:?}",
        w.results()?.other
    )
}

/// The targets a portal lists in discovery, asked as this suite's initiator.
fn discover(portal: std::net::SocketAddr) -> Result<Vec<String>> {
    initiator::discover(portal, INITIATOR)
}

/// Applies a Device (1 MiB file on `node`) and a Target over it; waits for both Ready.
fn device_and_target(s: &Spindle, ns: &str, name: &str, node: &str, extra: &str) -> Result<String> {
    s.apply(ns, &device_yaml(name, node, 64 * MIB, extra))?;
    s.apply(ns, &target_yaml(name, &[(0, name)], ""))?;
    s.wait_condition("device", ns, name, "Ready", "True", READY)?;
    s.wait_condition("target", ns, name, "Ready", "True", READY)?;
    Ok(default_iqn(ns, name))
}

fn apply_connect_io(s: &Spindle, ns: &str) -> Result<()> {
    let iqn = device_and_target(s, ns, "web", "node-a", "")?;
    let portal = s.rt.portal("node-a")?;
    let portal_text = portal.to_string();
    let t = s.get("target", ns, "web")?.context("target")?;
    ensure!(
        t["status"]["portals"][0] == portal_text.as_str(),
        "status.portals: {}",
        t["status"]
    );
    ensure!(
        t["status"]["node"] == "node-a" && t["status"]["iqn"] == iqn.as_str(),
        "{}",
        t["status"]
    );
    let d = s.get("device", ns, "web")?.context("device")?;
    ensure!(d["status"]["capacityBytes"] == 64 * MIB, "{}", d["status"]);
    ensure!(
        d["status"]["usedBy"][0] == format!("{ns}/web"),
        "{}",
        d["status"]
    );
    let finalizers = &d["metadata"]["finalizers"];
    ensure!(
        finalizers
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "spindle.dev/flush")),
        "{finalizers}"
    );
    let ls = initiator::iscsi_ls(portal, INITIATOR)?;
    ensure!(ls.contains(&iqn), "iscsi-ls does not list {iqn}: {ls}");
    let url = initiator::lun_url(portal, &iqn, 0);
    initiator::qemu_io(&url, &["write -P 0x5a 1M 128k"])?;
    let read = initiator::qemu_io(&url, &["read -P 0x5a 1M 128k"])?;
    ensure!(read.contains("read 131072/131072"), "{read}");
    let table = s.kubectl(&["get", "-n", ns, "targets,devices"])?;
    for want in [
        "READY",
        "NODE",
        "PORTAL",
        "SESSIONS",
        "SIZE",
        "True",
        "node-a",
        &portal_text,
        "67108864",
    ] {
        ensure!(
            table.contains(want),
            "kubectl get targets,devices lacks {want:?}:\n{table}"
        );
    }
    Ok(())
}

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
fn check_delete_events(s: &Spindle, ns: &str, name: &str) -> Result<()> {
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

fn delete_under_io_retain(s: &Spindle, ns: &str) -> Result<()> {
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

fn delete_removes_file(s: &Spindle, ns: &str) -> Result<()> {
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

/// The agent SIGKILLed while its Device is being deleted. The kill has to land inside the drain,
/// which takes a few hundred milliseconds; when the agent had already acknowledged the flush and
/// released the Device before the kill landed (a runtime that kills slowly, such as pods behind
/// a frozen kubelet on a loaded machine), nothing was tested, and the check runs again with a new
/// Device, three times at most. The agent is started again whatever happened, so that a failure
/// here does not fail the checks after it.
fn agent_killed_mid_drain(s: &Spindle, ns: &str) -> Result<()> {
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

fn operator_killed_mid_delete(s: &Spindle, ns: &str) -> Result<()> {
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

fn agent_stopped_delete_waits(s: &Spindle, ns: &str) -> Result<()> {
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

fn node_deleted(s: &Spindle, ns: &str) -> Result<()> {
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

fn skip_flush(s: &Spindle, ns: &str) -> Result<()> {
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

/// Waits until the object's Ready is False with `reason` and a message containing `says`.
fn not_ready(
    s: &Spindle,
    kind: &str,
    ns: &str,
    name: &str,
    reason: &str,
    says: &str,
) -> Result<()> {
    s.wait_for(
        &format!("{kind} {name} Ready=False {reason} ({says})"),
        READY,
        || {
            let c = s.get(kind, ns, name)?.and_then(|o| condition(&o, "Ready"));
            match c {
                Some(c)
                    if c.status == "False" && c.reason == reason && c.message.contains(says) =>
                {
                    Ok(Some(()))
                }
                other => bail!("Ready: {other:?}"),
            }
        },
    )
}

fn bad_specs(s: &Spindle, ns: &str) -> Result<()> {
    // A LUN naming a missing Device; creating it fixes the Target.
    s.apply(ns, &target_yaml("t-missing", &[(0, "later")], ""))?;
    not_ready(
        s,
        "target",
        ns,
        "t-missing",
        "DeviceNotFound",
        "spec.luns[0].deviceRef: Device \"later\" not found",
    )?;
    s.apply(ns, &device_yaml("later", "node-a", MIB, ""))?;
    s.wait_condition("target", ns, "t-missing", "Ready", "True", READY)?;

    // A Device on another node than the Target's; dropping that LUN fixes it.
    s.apply(ns, &device_yaml("on-b", "node-b", MIB, ""))?;
    s.apply(ns, &device_yaml("on-a", "node-a", MIB, ""))?;
    s.apply(ns, &target_yaml("t-split", &[(0, "on-a"), (1, "on-b")], ""))?;
    not_ready(
        s,
        "target",
        ns,
        "t-split",
        "DeviceOnOtherNode",
        "Device \"on-b\" is on node \"node-b\"",
    )?;
    s.kubectl(&[
        "patch",
        "target",
        "-n",
        ns,
        "t-split",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/luns/1"}]"#,
    ])?;
    s.wait_condition("target", ns, "t-split", "Ready", "True", READY)?;

    // A Device whose node has no agent; starting the agent fixes it.
    s.apply(ns, &device_yaml("on-c", "node-c", MIB, ""))?;
    not_ready(
        s,
        "device",
        ns,
        "on-c",
        "NoAgent",
        "node \"node-c\" has no Spindle agent",
    )?;
    s.rt.start_agent("node-c")?;
    let fixed = s.wait_condition("device", ns, "on-c", "Ready", "True", READY);
    s.kubectl(&[
        "delete",
        "device",
        "-n",
        ns,
        "on-c",
        "--wait=true",
        "--timeout=30s",
    ])?;
    s.rt.stop_agent("node-c")?;
    fixed?;

    // CHAP Secret missing, then of the wrong length, then right.
    let chap = "  acl: {allowAll: true}\n  chap: {secretRef: creds}\n";
    s.apply(ns, &device_yaml("locked", "node-a", MIB, ""))?;
    s.apply(ns, &target_yaml("locked", &[(0, "locked")], chap))?;
    not_ready(
        s,
        "target",
        ns,
        "locked",
        "ChapSecretNotFound",
        "Secret \"creds\" not found",
    )?;
    let secret = |pw: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{username: alice, password: {pw}}}\n"
        )
    };
    s.apply(ns, &secret("short"))?;
    not_ready(s, "target", ns, "locked", "ChapSecretInvalid", "is 5 bytes")?;
    s.apply(ns, &secret("twelve-bytes"))?;
    s.wait_condition("target", ns, "locked", "Ready", "True", READY)?;

    // Two Targets claiming one Device: the younger is refused until the older lets go.
    s.apply(ns, &device_yaml("shared", "node-a", MIB, ""))?;
    s.apply(ns, &target_yaml("first", &[(0, "shared")], ""))?;
    s.wait_condition("target", ns, "first", "Ready", "True", READY)?;
    s.apply(ns, &target_yaml("second", &[(0, "shared")], ""))?;
    not_ready(
        s,
        "target",
        ns,
        "second",
        "DeviceClaimed",
        &format!("already exported by Target {ns}/first"),
    )?;
    s.kubectl(&["delete", "target", "-n", ns, "first"])?;
    s.wait_condition("target", ns, "second", "Ready", "True", READY)?;

    // nodeName is immutable: the apiserver refuses, naming the field.
    let moved = device_yaml("shared", "node-b", MIB, "");
    let err = s
        .cluster
        .kubectl_fails(&["apply", "-n", ns, "-f", "-"], Some(&moved))?
        .context("changing spec.nodeName was accepted")?;
    ensure!(
        err.contains("spec.nodeName") && err.contains("immutable"),
        "{err}"
    );
    // A Device may grow (csi_grow tests that), never shrink: refused, naming the field.
    let shrunk = device_yaml("shared", "node-a", MIB / 2, "");
    let err = s
        .cluster
        .kubectl_fails(&["apply", "-n", ns, "-f", "-"], Some(&shrunk))?
        .context("shrinking spec.source.file.sizeBytes was accepted")?;
    ensure!(
        err.contains("spec.source.file.sizeBytes") && err.contains("may only grow"),
        "{err}"
    );
    Ok(())
}

fn chap_rotation(s: &Spindle, ns: &str) -> Result<()> {
    let secret = |pw: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: rot}}\nstringData: {{username: alice, password: {pw}}}\n"
        )
    };
    s.apply(ns, &secret("old-secret-12"))?;
    s.apply(ns, &device_yaml("rot", "node-a", MIB, ""))?;
    s.apply(
        ns,
        &target_yaml(
            "rot",
            &[(0, "rot")],
            "  acl: {allowAll: true}\n  chap: {secretRef: rot}\n",
        ),
    )?;
    s.wait_condition("target", ns, "rot", "Ready", "True", READY)?;
    let portal = s.rt.portal("node-a")?;
    let iqn = default_iqn(ns, "rot");
    let login = |pw: &str| initiator::qemu_io(&chap_url(portal, &iqn, "alice", pw), &["read 0 4k"]);
    login("old-secret-12").context("login with the first secret")?;
    s.apply(ns, &secret("new-secret-34"))?;
    s.wait_for("the new CHAP secret works", READY, || {
        Ok(login("new-secret-34").ok())
    })?;
    ensure!(
        login("old-secret-12").is_err(),
        "the old CHAP secret still logs in after the rotation"
    );
    Ok(())
}

fn orphan_sweep(s: &Spindle, ns: &str) -> Result<()> {
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

fn metric(s: &Spindle, id: &str, name: &str) -> Result<f64> {
    let addr = s.rt.operator_metrics(id)?;
    let out = std::process::Command::new("curl")
        .args(["-fsS", "--max-time", "5", &format!("http://{addr}/metrics")])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn two_replicas(s: &Spindle, ns: &str) -> Result<()> {
    s.rt.start_operator("operator-1")?;
    std::thread::sleep(Duration::from_secs(3));
    ensure!(
        metric(s, OPERATOR, "spindle_operator_leader")? == 1.0,
        "operator-0 does not lead"
    );
    ensure!(
        metric(s, "operator-1", "spindle_operator_leader")? == 0.0,
        "operator-1 leads too"
    );
    device_and_target(s, ns, "ha", "node-a", "")?;
    ensure!(
        metric(s, "operator-1", "spindle_operator_reconciles_total")? == 0.0,
        "the standby reconciled"
    );
    s.rt.kill_operator(OPERATOR)?;
    s.wait_for("operator-1 takes over", LEASE, || {
        Ok((metric(s, "operator-1", "spindle_operator_leader")? == 1.0).then_some(()))
    })?;
    s.apply(ns, &device_yaml("after", "node-b", MIB, ""))?;
    s.wait_condition("device", ns, "after", "Ready", "True", READY)?;
    let holder = s.kubectl(&[
        "get",
        "lease",
        "-n",
        "spindle-system",
        "spindle-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])?;
    ensure!(holder == "operator-1", "Lease holder: {holder:?}");
    // Back to one replica named operator-0 for whatever runs next.
    s.rt.start_operator(OPERATOR)?;
    s.rt.kill_operator("operator-1")?;
    Ok(())
}

/// SIGSTOP the kube-apiserver for 20 s (longer than the leader's renew deadline): the operator
/// neither crashes nor floods its log, and serves new objects once the apiserver is back.
fn apiserver_paused(s: &Spindle, ns: &str) -> Result<()> {
    let state = s.cluster.kubeconfig().parent().context("state dir")?;
    let pid = std::fs::read_to_string(state.join("kube-apiserver.pid"))
        .context("this check pauses the local kube-apiserver (e2e/cluster/up)")?;
    let pid = pid.trim();
    let log_before = s.rt.operator_log(OPERATOR)?.lines().count();
    std::process::Command::new("kill")
        .args(["-STOP", pid])
        .status()?;
    std::thread::sleep(Duration::from_secs(20));
    std::process::Command::new("kill")
        .args(["-CONT", pid])
        .status()?;
    s.apply(ns, &device_yaml("back", "node-a", MIB, ""))?;
    s.wait_condition("device", ns, "back", "Ready", "True", LEASE + READY)?;
    let log = s.rt.operator_log(OPERATOR)?;
    let new: Vec<&str> = log.lines().skip(log_before).collect();
    let warnings = new
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    ensure!(
        warnings <= 12,
        "{warnings} warnings in 20 s of apiserver pause:\n{}",
        new.join("\n")
    );
    let addr = s.rt.operator_metrics(OPERATOR)?;
    let health = std::process::Command::new("curl")
        .args(["-fsS", "--max-time", "5", &format!("http://{addr}/healthz")])
        .status()?;
    ensure!(
        health.success(),
        "/healthz of the operator fails after the pause"
    );
    Ok(())
}
