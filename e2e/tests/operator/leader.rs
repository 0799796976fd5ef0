//! The operator's leadership and the apiserver: two replicas (only the leader acts, the standby
//! takes over), and an apiserver paused past the renew deadline.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use spindle_e2e::manifest::device_yaml;
use spindle_e2e::spindle::{OPERATOR, Spindle};

use crate::{LEASE, MIB, READY, device_and_target};

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

pub fn two_replicas(s: &Spindle, ns: &str) -> Result<()> {
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
pub fn apiserver_paused(s: &Spindle, ns: &str) -> Result<()> {
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
