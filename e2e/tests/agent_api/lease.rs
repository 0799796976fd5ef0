//! The agent's Lease through an apiserver outage, with I/O running.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use spindle_e2e::agent::signal;
use spindle_e2e::initiator::lun_url;

use crate::requests::iqn;
use crate::{Ctx, INITIATOR, NS, wait_for};

fn lease_renew_time(ctx: &Ctx) -> Result<(String, Value)> {
    let l = ctx.kubectl_json(&["-n", NS, "get", "lease", &ctx.agent.config.node])?;
    let t = l["spec"]["renewTime"]
        .as_str()
        .context("lease has no renewTime")?
        .to_string();
    Ok((t, l))
}

pub fn lease_survives_apiserver_outage(ctx: &mut Ctx) -> Result<()> {
    let (t1, lease) = wait_for(Duration::from_secs(20), || lease_renew_time(ctx))?;
    let ann = &lease["metadata"]["annotations"];
    ensure!(
        ann["spindle.dev/api-endpoint"] == ctx.agent.api().to_string().as_str()
            && ann["spindle.dev/iscsi-portal"] == ctx.agent.portal().to_string().as_str(),
        "lease annotations: {ann}"
    );
    ensure!(lease["spec"]["holderIdentity"] == ctx.agent.config.node.as_str());
    wait_for(Duration::from_secs(15), || {
        let (t, _) = lease_renew_time(ctx)?;
        ensure!(t != t1, "not renewed yet");
        Ok(())
    })?;
    // I/O through a 30 s apiserver outage (the apiserver frozen: requests hang, then time out).
    let url = lun_url(ctx.agent.portal(), &iqn("d1"), 0);
    let perf_out = ctx.work.join("perf.txt");
    let mut perf = Command::new("iscsi-perf")
        .args(["-m", "2", "-b", "8", "-i", INITIATOR, &url])
        .stdout(std::fs::File::create(&perf_out)?)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid_file = ctx
        .cluster
        .kubeconfig()
        .with_file_name("kube-apiserver.pid");
    let apiserver: u32 = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("reading {}", pid_file.display()))?
        .trim()
        .parse()?;
    let log_before = ctx.agent.log_text().len();
    std::thread::sleep(Duration::from_secs(2));
    signal(apiserver, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(30));
    signal(apiserver, libc::SIGCONT);
    let resumed = Instant::now();
    let r = wait_for(Duration::from_secs(30), || {
        let (t, _) = lease_renew_time(ctx)?;
        let renewed = k8s_time_after(&t, resumed)?;
        ensure!(
            renewed,
            "renewTime {t} is from before the apiserver came back"
        );
        Ok(())
    });
    std::thread::sleep(Duration::from_secs(2));
    signal(perf.id(), libc::SIGINT);
    let _ = perf.wait();
    r?;
    let out = std::fs::read_to_string(&perf_out)?.replace('\r', "\n");
    let seconds: Vec<(u32, u64)> = out
        .split("00:")
        .filter_map(|chunk| {
            let (ss, rest) = chunk.split_once(" - ")?;
            let iops = rest
                .split("iops current ")
                .nth(1)?
                .split_whitespace()
                .next()?;
            Some((ss.parse().ok()?, iops.parse().ok()?))
        })
        .collect();
    ensure!(
        seconds.len() >= 34,
        "iscsi-perf reported only {} seconds: {out}",
        seconds.len()
    );
    ensure!(
        seconds.iter().all(|(_, iops)| *iops > 0),
        "I/O stalled during the outage: {seconds:?}"
    );
    let log = &ctx.agent.log_text()[log_before..];
    ensure!(
        log.matches("cannot renew the agent's Lease").count() == 1,
        "the outage should be logged once:\n{log}"
    );
    ensure!(
        log.contains("Lease renewed again"),
        "recovery not logged:\n{log}"
    );
    Ok(())
}

/// Whether a Kubernetes MicroTime is later than `instant` (compared on the wall clock).
fn k8s_time_after(t: &str, instant: Instant) -> Result<bool> {
    let out = Command::new("date")
        .args(["-u", "-d", t, "+%s.%N"])
        .output()?;
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    Ok(secs > now - instant.elapsed().as_secs_f64())
}
