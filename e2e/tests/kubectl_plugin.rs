//! `kubectl spindle` (the release build of `kubectl-spindle`) against a real cluster: the
//! operator and two agents as processes, node-c a Node without an agent. It is run the way
//! kubectl runs plugins (on PATH, `kubectl spindle ...`) and its output is checked against what
//! the cluster holds: the agents' Leases, the Devices' conditions, a delete held by a stopped
//! agent. `SPINDLE_E2E_SHOW_OUTPUT=1` prints what each successful command printed.

use std::path::Path;
use std::process::{Command, ExitCode, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use spindle_e2e::checks::{Check, run_table};
use spindle_e2e::cluster::release_binary;
use spindle_e2e::initiator::lun_url;
use spindle_e2e::manifest::{device_yaml, target_yaml};
use spindle_e2e::spindle::{OPERATOR, Spindle, condition};

const READY: Duration = Duration::from_secs(30);
/// The agents' Lease duration (15 s) plus the operator's clock tick and some slack.
const LEASE: Duration = Duration::from_secs(25);
const MIB: u64 = 1 << 20;

fn main() -> ExitCode {
    let checks: &[(&str, Check)] = &[
        ("nodes lists each agent with its capacity", nodes),
        ("describe device shows the conditions and Targets", describe),
        (
            "why target names a missing Device, then serving",
            why_target_device,
        ),
        (
            "drain device shows the live session and commands in flight",
            drain_sessions,
        ),
        (
            "why device names the agent unreachable for a held delete",
            why_agent_unreachable,
        ),
        ("a missing Device is a clear error", missing_device),
        ("no CRDs installed is a clear error", crds_missing),
    ];
    run_table(
        || Spindle::start(&["node-a", "node-b"], &["node-c"]),
        "e2e-plugin",
        checks,
        &[OPERATOR],
    )
}

/// `kubectl spindle ARGS` with the plugin's folder first on PATH and the cluster's kubeconfig
/// in KUBECONFIG, as a user runs it.
fn plugin(s: &Spindle, args: &[&str]) -> Result<Output> {
    let binary = release_binary("kubectl-spindle");
    ensure!(
        binary.is_file(),
        "no plugin at {} (cargo build --release -p kubectl-spindle)",
        binary.display()
    );
    let dir = binary.parent().unwrap_or(Path::new("."));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    Command::new(s.cluster.kubectl_binary())
        .arg("spindle")
        .args(args)
        .env("PATH", std::env::join_paths(paths)?)
        .env("KUBECONFIG", s.cluster.kubeconfig())
        .output()
        .context("running kubectl spindle")
}

/// stdout of a `kubectl spindle ARGS` that must succeed.
fn plugin_ok(s: &Spindle, args: &[&str]) -> Result<String> {
    let out = plugin(s, args)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "kubectl spindle {args:?} failed ({}): {}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var_os("SPINDLE_E2E_SHOW_OUTPUT").is_some() {
        eprintln!("\n$ kubectl spindle {}\n{stdout}", args.join(" "));
    }
    Ok(stdout)
}

/// stderr of a `kubectl spindle ARGS` that must fail cleanly (exit 1, no panic).
fn plugin_fails(s: &Spindle, args: &[&str]) -> Result<String> {
    let out = plugin(s, args)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.code() == Some(1),
        "kubectl spindle {args:?}: want exit 1, got {} (stdout {:?}, stderr {stderr:?})",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(!stderr.contains("panicked"), "it panicked: {stderr}");
    Ok(stderr)
}

fn device_and_target(s: &Spindle, ns: &str, name: &str, node: &str) -> Result<()> {
    s.apply(
        ns,
        &device_yaml(name, node, 64 * MIB, "  reclaimPolicy: Retain\n"),
    )?;
    s.apply(ns, &target_yaml(name, &[(0, name)], ""))?;
    s.wait_condition("device", ns, name, "Ready", "True", READY)?;
    s.wait_condition("target", ns, name, "Ready", "True", READY)?;
    Ok(())
}

/// The line of `text` that starts with `first` (a table row by its first column).
fn row<'a>(text: &'a str, first: &str) -> Result<Vec<&'a str>> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .with_context(|| format!("no row {first:?} in:\n{text}"))
}

fn nodes(s: &Spindle, ns: &str) -> Result<()> {
    device_and_target(s, ns, "n0", "node-a")?;
    let text = plugin_ok(s, &["nodes"])?;
    let header = row(&text, "NODE")?;
    ensure!(
        header
            == [
                "NODE", "AGENT", "RENEWED", "VERSION", "TARGETS", "DEVICES", "SESSIONS", "FREE",
                "TOTAL"
            ],
        "{text}"
    );
    let a = row(&text, "node-a")?;
    ensure!(a[1] == "reachable", "node-a's agent: {text}");
    ensure!(
        a[4] == "1" && a[5] == "1",
        "node-a's Target and Device: {text}"
    );
    ensure!(row(&text, "node-b")?[1] == "reachable", "{text}");
    let c = row(&text, "node-c");
    ensure!(c.is_err(), "node-c has no agent and no Device: {text}");
    // -o wide: the Lease's duration, the agent's endpoints and the Targets' names.
    let wide = plugin_ok(s, &["nodes", "-o", "wide"])?;
    ensure!(
        row(&wide, "NODE")?[9..] == ["LEASE", "API", "PORTAL", "TARGET-NAMES"],
        "{wide}"
    );
    let lease_a = s
        .get("lease", "spindle-system", "node-a")?
        .context("no Lease")?;
    let annotation = |k: &str| {
        lease_a["metadata"]["annotations"][k]
            .as_str()
            .unwrap_or("-")
    };
    // The last four cells (FREE and TOTAL are two words each).
    let a = row(&wide, "node-a")?;
    let a = &a[a.len().saturating_sub(4)..];
    ensure!(
        a[0] == "15s"
            && a[1] == annotation("spindle.dev/api-endpoint")
            && a[2] == annotation("spindle.dev/iscsi-portal")
            && a[3].split(',').any(|t| t == format!("{ns}/n0")),
        "node-a as its Lease has it ({}): {wide}",
        lease_a["metadata"]["annotations"]
    );
    // The capacity is the Lease's, to the byte (JSON) and in binary units (text).
    let json: Value = serde_json::from_str(&plugin_ok(s, &["nodes", "-o", "json"])?)?;
    for node in ["node-a", "node-b"] {
        let lease = s
            .get("lease", "spindle-system", node)?
            .with_context(|| format!("no Lease {node}"))?;
        let annotation = |k: &str| -> Result<u64> {
            lease["metadata"]["annotations"][k]
                .as_str()
                .with_context(|| format!("Lease {node} has no {k}"))?
                .parse()
                .context("a number of bytes")
        };
        let total = annotation("spindle.dev/capacity-total-bytes")?;
        let shown = json
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["node"] == node)
            .with_context(|| format!("{node} missing from -o json"))?;
        ensure!(
            shown["agent"]["capacityTotalBytes"] == total,
            "{node}: total {total} in the Lease, {} shown",
            shown["agent"]["capacityTotalBytes"]
        );
        ensure!(
            shown["agent"]["capacityFreeBytes"].as_u64().is_some(),
            "{shown}"
        );
        let cells = row(&text, node)?;
        let total_text = cells[cells.len() - 2..].join(" ");
        ensure!(
            total_text.ends_with("iB") || total_text.ends_with(" B"),
            "{node}: total {total_text:?}"
        );
    }
    Ok(())
}

fn describe(s: &Spindle, ns: &str) -> Result<()> {
    device_and_target(s, ns, "d0", "node-a")?;
    let text = plugin_ok(s, &["describe", "device", "d0", "-n", ns])?;
    ensure!(
        text.contains(&format!("Device:      {ns}/d0\n")),
        "the header: {text}"
    );
    ensure!(
        text.contains("Node:        node-a (agent reachable, renewed"),
        "the agent: {text}"
    );
    let ready =
        condition(&s.get("device", ns, "d0")?.context("d0 gone")?, "Ready").context("no Ready")?;
    let cond = row(&text, "Ready")?;
    ensure!(
        cond[1] == "True" && cond[2] == ready.reason,
        "Ready as the Device has it ({ready:?}): {text}"
    );
    ensure!(row(&text, "AgentReachable")?[1] == "True", "{text}");
    let target = row(&text, "d0")?;
    ensure!(
        target[1] == "0" && target[2] == "True",
        "the Target and its LUN: {text}"
    );
    ensure!(text.contains("\nEvents:\n"), "{text}");
    let json: Value = serde_json::from_str(&plugin_ok(
        s,
        &["describe", "device", "d0", "-n", ns, "-o", "json"],
    )?)?;
    ensure!(json["targets"][0]["name"] == "d0", "{json}");
    Ok(())
}

fn why_agent_unreachable(s: &Spindle, ns: &str) -> Result<()> {
    device_and_target(s, ns, "w0", "node-b")?;
    let text = plugin_ok(s, &["why", "device", "w0", "-n", ns])?;
    ensure!(
        text.contains("not being deleted"),
        "before the delete: {text}"
    );
    s.rt.kill_agent("node-b")?;
    let r = (|| {
        s.wait_condition("device", ns, "w0", "AgentReachable", "False", LEASE)?;
        let json: Value = serde_json::from_str(&plugin_ok(
            s,
            &["why", "target", "w0", "-n", ns, "-o", "json"],
        )?)?;
        ensure!(
            json["state"] == "agent-unreachable" && json["node"] == "node-b",
            "the Target of a stopped agent: {json}"
        );
        s.kubectl(&["delete", "device", "-n", ns, "w0", "--wait=false"])?;
        s.wait_for("Deleting says the agent is unreachable", READY, || {
            Ok(s.get("device", ns, "w0")?
                .and_then(|d| condition(&d, "Deleting"))
                .filter(|c| c.reason == "AgentUnreachable"))
        })?;
        let text = plugin_ok(s, &["why", "device", "w0", "-n", ns])?;
        ensure!(
            text.starts_with(&format!("Device {ns}/w0: agent unreachable:")),
            "{text}"
        );
        ensure!(
            text.contains("finalizer spindle.dev/flush present"),
            "{text}"
        );
        ensure!(
            text.contains(&format!(
                "kubectl annotate device -n {ns} w0 spindle.dev/skip-flush=true"
            )),
            "{text}"
        );
        let json: Value = serde_json::from_str(&plugin_ok(
            s,
            &["why", "device", "w0", "-n", ns, "-o", "json"],
        )?)?;
        ensure!(json["wait"] == "agent-unreachable", "{json}");
        let json: Value = serde_json::from_str(&plugin_ok(
            s,
            &["drain", "device", "w0", "-n", ns, "-o", "json"],
        )?)?;
        ensure!(
            json["delete"]["wait"] == "agent-unreachable"
                && ["not-asked", "waiting"].contains(&json["flush"].as_str().unwrap_or("")),
            "the drain of a Device whose agent is stopped: {json}"
        );
        let text = plugin_ok(s, &["drain", "device", "w0", "-n", ns])?;
        ensure!(
            text.contains("Delete:   agent unreachable")
                && text.contains(&format!("kubectl delete target -n {ns} w0")),
            "{text}"
        );
        let described = plugin_ok(s, &["describe", "device", "w0", "-n", ns])?;
        ensure!(
            described.contains("Deleting:    since") && row(&described, "Deleting")?.len() > 2,
            "{described}"
        );
        Ok(())
    })();
    s.rt.start_agent("node-b")?;
    r?;
    s.wait_gone("device", ns, "w0", READY)?;
    Ok(())
}

fn why_target_device(s: &Spindle, ns: &str) -> Result<()> {
    s.apply(ns, &target_yaml("t0", &[(0, "late")], ""))?;
    let json: Value = serde_json::from_str(&plugin_ok(
        s,
        &["why", "target", "t0", "-n", ns, "-o", "json"],
    )?)?;
    ensure!(
        json["state"] == "device-not-found" && json["luns"][0]["found"] == false,
        "a LUN over a Device not there: {json}"
    );
    let text = plugin_ok(s, &["why", "target", "t0", "-n", ns])?;
    ensure!(
        text.starts_with(&format!(
            "Target {ns}/t0: LUN 0 names Device {ns}/late, which does not exist"
        )),
        "{text}"
    );
    s.apply(
        ns,
        &device_yaml("late", "node-a", 64 * MIB, "  reclaimPolicy: Retain\n"),
    )?;
    s.wait_condition("target", ns, "t0", "Ready", "True", READY)?;
    let text = plugin_ok(s, &["why", "target", "t0", "-n", ns])?;
    let portal = s.rt.portal("node-a")?;
    ensure!(
        text.starts_with(&format!(
            "Target {ns}/t0: serving on node node-a at {portal}"
        )),
        "{text}"
    );
    let lun = row(&text, "0")?;
    ensure!(
        lun[1..4] == ["late", "exists", "node-a"] && lun[4] == "True",
        "{text}"
    );
    let stderr = plugin_fails(s, &["why", "target", "nope", "-n", ns])?;
    ensure!(
        stderr.contains(&format!("Target {ns}/nope not found")),
        "{stderr}"
    );
    Ok(())
}

/// The agent's Prometheus endpoint of `node` (e2e/cluster/spindle: its portal's IP, port 9562).
fn agent_metrics(s: &Spindle, node: &str) -> Result<String> {
    Ok(format!("{}:9562", s.rt.portal(node)?.ip()))
}

/// `kubectl spindle drain device dr0 -n NS --agent-metrics METRICS EXTRA...`, which must succeed.
fn drain_dr0(s: &Spindle, ns: &str, metrics: &str, extra: &[&str]) -> Result<String> {
    let mut args = vec![
        "drain",
        "device",
        "dr0",
        "-n",
        ns,
        "--agent-metrics",
        metrics,
    ];
    args.extend(extra);
    plugin_ok(s, &args)
}

fn drain_sessions(s: &Spindle, ns: &str) -> Result<()> {
    device_and_target(s, ns, "dr0", "node-a")?;
    let metrics = agent_metrics(s, "node-a")?;
    let live = |want: u64| -> Result<Value> {
        s.wait_for(&format!("{want} live session(s) shown"), READY, || {
            let json: Value = serde_json::from_str(&drain_dr0(s, ns, &metrics, &["-o", "json"])?)?;
            Ok((json["sessions"][0]["sessionsLive"] == want).then_some(json))
        })
    };
    // A session that stays logged in, idle: qemu-io sleeping on the LUN.
    let iqn = format!("iqn.2026-11.dev.spindle:{ns}.dr0");
    let mut session = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "sleep 60000"])
        .arg(lun_url(s.rt.portal("node-a")?, &iqn, 0))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu-io")?;
    let r = (|| {
        let json = live(1)?;
        ensure!(
            json["sessions"][0]["target"] == "dr0"
                && json["sessions"][0]["lun"] == 0
                && json["sessions"][0]["inFlight"] == 0
                && json["flush"] == "not-asked"
                && json["delete"]["wait"] == "not-deleting",
            "an idle session, nothing deleted: {json}"
        );
        let text = drain_dr0(s, ns, &metrics, &[])?;
        ensure!(
            row(&text, "dr0")?[3..] == ["1", "0"],
            "LIVE-SESSIONS and IN-FLIGHT: {text}"
        );
        let without: Value = serde_json::from_str(&plugin_ok(
            s,
            &["drain", "device", "dr0", "-n", ns, "-o", "json"],
        )?)?;
        ensure!(
            without["sessions"][0]["sessionsLive"].is_null(),
            "no --agent-metrics, no live figures: {without}"
        );
        Ok(())
    })();
    let _ = session.kill();
    let _ = session.wait();
    r?;
    live(0)?;
    // A scrape that fails is said in the output; the rest still comes from the API.
    let text = drain_dr0(s, ns, "not an address", &[])?;
    ensure!(text.contains("no live figures: --agent-metrics"), "{text}");
    Ok(())
}

fn missing_device(s: &Spindle, ns: &str) -> Result<()> {
    let stderr = plugin_fails(s, &["describe", "device", "nope", "-n", ns])?;
    ensure!(
        stderr.contains(&format!("Device {ns}/nope not found")),
        "{stderr}"
    );
    let stderr = plugin_fails(s, &["why", "device", "nope", "-n", ns])?;
    ensure!(stderr.contains("not found"), "{stderr}");
    Ok(())
}

/// Last: removes the CRDs (after every Device and Target is gone) and puts them back.
fn crds_missing(s: &Spindle, _ns: &str) -> Result<()> {
    s.kubectl(&[
        "delete",
        "targets,devices",
        "--all-namespaces",
        "--all",
        "--wait=true",
        "--timeout=60s",
    ])?;
    s.kubectl(&[
        "delete",
        "crd",
        "devices.spindle.dev",
        "targets.spindle.dev",
        "--wait=true",
    ])?;
    let r = (|| {
        for args in [
            &["nodes"][..],
            &["describe", "device", "x"],
            &["why", "device", "x"],
            &["why", "target", "x"],
            &["drain", "device", "x"],
        ] {
            let stderr = plugin_fails(s, args)?;
            ensure!(
                stderr.contains("the cluster has no Spindle CRDs"),
                "{args:?}: {stderr}"
            );
        }
        Ok(())
    })();
    s.install_crds()?;
    r
}
