//! One identity per agent (issue 17, item 3), end to end: a real etcd + kube-apiserver, the
//! operator and the agents of node-a and node-b (as processes by default). Each agent makes its
//! own serving key and publishes its fingerprint in its node's Lease; the operator calls a node's
//! agent only if the server holds that key and names that node. Here the Lease of node-b is
//! forged with the admin's credentials (what root on a node could do if the chart's admission
//! policy did not stop it; e2e/chart/real-node shows it does) to send node-b's orders to the
//! agent of node-a: a redirect keeping node-b's key, a copy of node-a's Lease, a Lease with no
//! key. node-a's agent must get none of node-b's Devices and Targets, node-b's objects must say
//! why (reason AgentUnverified), and a Device delete must not finish on a NOT_FOUND from the wrong
//! agent. Each check uses its own namespace; all are reported. SPINDLE_E2E_ONLY picks checks.

use std::path::Path;
use std::process::Command;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use spindle_agent_api::lease::{API_ENDPOINT_ANNOTATION, API_KEY_ANNOTATION};
use spindle_e2e::checks::{Check, run_table};
use spindle_e2e::manifest::{device_yaml, target_yaml};
use spindle_e2e::spindle::{OPERATOR, Spindle, condition, default_iqn};

const READY: Duration = Duration::from_secs(30);
/// The agents' Lease namespace (e2e/cluster/spindle, the chart's release namespace).
const NS: &str = "spindle-system";
const MIB: u64 = 1 << 20;
/// The reason of an object whose node's agent is not verified.
const UNVERIFIED: &str = "AgentUnverified";

fn main() -> ExitCode {
    let checks: &[(&str, Check)] = &[
        (
            "each agent publishes a key of its own; a restart makes a new one, the operator follows",
            own_key_per_agent,
        ),
        (
            "node-b's Lease pointing at node-a's agent: node-a gets none of node-b's orders",
            redirected_lease_gets_no_orders,
        ),
        (
            "a Device delete waits for node-b's own agent, not a NOT_FOUND from node-a's",
            delete_waits_for_the_right_agent,
        ),
    ];
    run_table(
        || Spindle::start(&["node-a", "node-b"], &[]),
        "e2e-id",
        checks,
        &[OPERATOR],
    )
}

/// The agent Lease of `node`.
fn lease(s: &Spindle, node: &str) -> Result<Value> {
    let out = s.kubectl(&["get", "lease", "-n", NS, node, "-o", "json"])?;
    serde_json::from_str(&out).context("kubectl get lease -o json")
}

fn annotation(lease: &Value, key: &str) -> String {
    lease["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Now in the Lease's time format (RFC 3339, microseconds).
fn now() -> Result<String> {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .context("date")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Rewrites `node`'s Lease (its agent must be stopped, or it writes it back): the API endpoint
/// `endpoint`, the key `key` (None: no key annotation), renewed now for an hour.
fn forge(s: &Spindle, node: &str, endpoint: &str, key: Option<&str>) -> Result<()> {
    let mut l = lease(s, node)?;
    let meta = l["metadata"].as_object_mut().context("metadata")?;
    meta.remove("managedFields");
    meta.remove("resourceVersion");
    let ann = l["metadata"]["annotations"]
        .as_object_mut()
        .context("annotations")?;
    ann.insert(API_ENDPOINT_ANNOTATION.into(), endpoint.into());
    match key {
        Some(k) => ann.insert(API_KEY_ANNOTATION.into(), k.into()),
        None => ann.remove(API_KEY_ANNOTATION),
    };
    let t = now()?;
    l["spec"]["renewTime"] = t.clone().into();
    l["spec"]["acquireTime"] = t.into();
    l["spec"]["leaseDurationSeconds"] = 3600.into();
    s.cluster
        .kubectl(&["replace", "-f", "-"], Some(&l.to_string()))?;
    Ok(())
}

/// Waits until the object's Ready condition is False with `reason`; returns its message.
fn wait_not_ready(s: &Spindle, kind: &str, ns: &str, name: &str, reason: &str) -> Result<String> {
    let mut seen = None;
    s.wait_for(
        &format!("{kind} {ns}/{name} Ready=False reason {reason}"),
        READY,
        || {
            let c = s.get(kind, ns, name)?.and_then(|o| condition(&o, "Ready"));
            seen = c.clone();
            Ok(c.filter(|c| c.status == "False" && c.reason == reason)
                .map(|c| c.message))
        },
    )
    .with_context(|| format!("last seen Ready: {seen:?}"))
}

/// Files named `name` anywhere under `dir`.
fn find_file(dir: &Path, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name() == name {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

/// The IQNs a portal lists in discovery.
fn discovered(portal: std::net::SocketAddr) -> Result<String> {
    let out = Command::new("iscsi-ls")
        .args(["-i", "iqn.2026-11.dev.spindle:e2e-identity"])
        .arg(format!("iscsi://{portal}"))
        .output()
        .context("iscsi-ls")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// node-a's agent serves nothing of Device/Target `name`: no file made for it, its IQN not in
/// discovery.
fn node_a_serves_nothing_of(s: &Spindle, ns: &str, name: &str) -> Result<()> {
    let files = find_file(&s.rt.data_dir("node-a")?, &format!("{name}.img"));
    ensure!(
        files.is_empty(),
        "node-a's agent made node-b's Device file: {files:?}"
    );
    let iqn = default_iqn(ns, name);
    let listed = discovered(s.rt.portal("node-a")?)?;
    ensure!(
        !listed.contains(&iqn),
        "node-a's portal serves node-b's Target {iqn}:\n{listed}"
    );
    Ok(())
}

fn own_key_per_agent(s: &Spindle, ns: &str) -> Result<()> {
    let key =
        |node: &str| -> Result<String> { Ok(annotation(&lease(s, node)?, API_KEY_ANNOTATION)) };
    let (a, b) = (key("node-a")?, key("node-b")?);
    ensure!(
        a.len() == 64 && b.len() == 64,
        "the agents' Leases publish no key fingerprint ({API_KEY_ANNOTATION}): node-a {a:?}, node-b {b:?}"
    );
    ensure!(a != b, "node-a and node-b publish one key {a}");
    s.apply(ns, &device_yaml("before", "node-b", 16 * MIB, ""))?;
    s.wait_condition("device", ns, "before", "Ready", "True", READY)?;
    s.rt.stop_agent("node-b")?;
    s.rt.start_agent("node-b")?;
    let b2 = s.wait_for("node-b's Lease with a new key", READY, || {
        let k = key("node-b")?;
        Ok((k.len() == 64 && k != b).then_some(k))
    })?;
    ensure!(b2 != a, "node-b's new key is node-a's");
    // The operator calls the restarted agent with its new key: a new Device is served.
    s.apply(ns, &device_yaml("after", "node-b", 16 * MIB, ""))?;
    s.wait_condition("device", ns, "after", "Ready", "True", READY)?;
    s.wait_condition("device", ns, "before", "Ready", "True", READY)?;
    Ok(())
}

fn redirected_lease_gets_no_orders(s: &Spindle, ns: &str) -> Result<()> {
    let a = lease(s, "node-a")?;
    let a_endpoint = annotation(&a, API_ENDPOINT_ANNOTATION);
    let a_key = annotation(&a, API_KEY_ANNOTATION);
    let b_key = annotation(&lease(s, "node-b")?, API_KEY_ANNOTATION);
    ensure!(!a_endpoint.is_empty(), "node-a's Lease names no endpoint");
    s.rt.stop_agent("node-b")?;
    // (Device name, the key node-b's forged Lease publishes, what the message must say.)
    let cases: [(&str, Option<&str>, &str); 3] = [
        (
            "redirect",
            Some(&b_key),
            "is not the agent of node \"node-b\"",
        ),
        ("copied", Some(a_key.as_str()), "node-a"),
        ("nokey", None, API_KEY_ANNOTATION),
    ];
    for (name, key, says) in cases {
        forge(s, "node-b", &a_endpoint, key)?;
        s.apply(ns, &device_yaml(name, "node-b", 16 * MIB, ""))?;
        s.apply(ns, &target_yaml(name, &[(0, name)], ""))?;
        let msg = wait_not_ready(s, "device", ns, name, UNVERIFIED)
            .with_context(|| format!("Device {name} (node-b's Lease: {key:?})"))?;
        ensure!(
            msg.contains(says),
            "Device {name}: message {msg:?} lacks {says:?}"
        );
        // The Target waits for its Device; nothing of either reaches node-a's agent.
        let t = s.get("target", ns, name)?.context("target")?;
        let ready = condition(&t, "Ready");
        ensure!(
            ready.as_ref().is_none_or(|c| c.status != "True"),
            "Target {name} Ready: {ready:?}"
        );
        node_a_serves_nothing_of(s, ns, name)?;
    }
    // Some seconds more (reconciles retried): still nothing on node-a.
    std::thread::sleep(Duration::from_secs(5));
    for (name, _, _) in cases {
        node_a_serves_nothing_of(s, ns, name)?;
    }
    // node-b's own agent back: its Lease, its new key; all three are served where they belong.
    s.rt.start_agent("node-b")?;
    for (name, _, _) in cases {
        s.wait_condition("device", ns, name, "Ready", "True", READY)?;
        s.wait_condition("target", ns, name, "Ready", "True", READY)?;
        node_a_serves_nothing_of(s, ns, name)?;
    }
    let listed = discovered(s.rt.portal("node-b")?)?;
    ensure!(
        listed.contains(&default_iqn(ns, "redirect")),
        "node-b's portal does not list its Target:\n{listed}"
    );
    Ok(())
}

fn delete_waits_for_the_right_agent(s: &Spindle, ns: &str) -> Result<()> {
    s.apply(ns, &device_yaml("held", "node-b", 16 * MIB, ""))?;
    s.wait_condition("device", ns, "held", "Ready", "True", READY)?;
    let a_endpoint = annotation(&lease(s, "node-a")?, API_ENDPOINT_ANNOTATION);
    let b_key = annotation(&lease(s, "node-b")?, API_KEY_ANNOTATION);
    s.rt.stop_agent("node-b")?;
    forge(s, "node-b", &a_endpoint, Some(&b_key))?;
    s.kubectl(&["delete", "device", "-n", ns, "held", "--wait=false"])?;
    // node-a's agent would answer NOT_FOUND to DrainDevice: that is not node-b's flush.
    let deleting = s.wait_for("Deleting reason AgentUnverified", READY, || {
        let d = s
            .get("device", ns, "held")?
            .context("the Device went: deleted without node-b's flush")?;
        Ok(condition(&d, "Deleting").filter(|c| c.reason == UNVERIFIED))
    })?;
    std::thread::sleep(Duration::from_secs(10));
    let d = s
        .get("device", ns, "held")?
        .context("the Device went without node-b's agent flushing it")?;
    if let Some(f) = condition(&d, "Flushed").filter(|c| c.status == "True") {
        bail!("Flushed=True while node-b's agent is down: {f:?}");
    }
    ensure!(
        d["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "spindle.dev/flush")),
        "finalizer gone: {}",
        d["metadata"]
    );
    ensure!(
        deleting.message.contains("node-b"),
        "Deleting message: {:?}",
        deleting.message
    );
    // node-b's agent back: it drains and flushes the Device, and the delete completes.
    s.rt.start_agent("node-b")?;
    s.wait_gone("device", ns, "held", READY)?;
    let events = s.events(ns, "held")?;
    // Released by the agent that had it (not "nothing to release": that agent never had it).
    ensure!(
        events
            .iter()
            .any(|e| e.reason == "Released" && e.note.starts_with("released;")),
        "no Released event from node-b's agent: {events:?}"
    );
    Ok(())
}
