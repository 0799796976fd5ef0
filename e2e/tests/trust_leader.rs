//! A deposed operator leader is fenced, end to end: a real etcd + kube-apiserver, two operator
//! replicas and an agent (processes; the checks SIGSTOP them, so only the process runtime).
//!
//! - A leader whose apiserver stops answering steps down within its renew deadline.
//! - A leader frozen past its lease while the standby takes over and removes a Target: once
//!   resumed it changes nothing on the agent (the Target is not served again), its log says it
//!   stopped acting, and a call carrying its term is refused by the agent (STALE_LEADER,
//!   counted) and changes nothing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spindle_agent_api::v1 as pb;
use spindle_e2e::agent::{Certs, pinned_client};
use spindle_e2e::checks::{Check, run_table};
use spindle_e2e::manifest::{device_yaml, target_yaml};
use spindle_e2e::spindle::{OPERATOR, Spindle};

const READY: Duration = Duration::from_secs(30);
/// The operator's leader Lease duration (15 s) plus a renewal period and slack.
const TAKEOVER: Duration = Duration::from_secs(30);
/// The leader's renew deadline (two thirds of 15 s).
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
const MIB: u64 = 1 << 20;
const NODE: &str = "node-a";
const STANDBY: &str = "operator-1";

fn main() -> ExitCode {
    let checks: &[(&str, Check)] = &[
        (
            "apiserver silent: the leader steps down within its deadline",
            apiserver_silent,
        ),
        (
            "frozen leader resumed after a takeover changes nothing",
            frozen_leader,
        ),
    ];
    run_table(
        || Spindle::start(&[NODE], &[]),
        "e2e-leader",
        checks,
        &[OPERATOR, STANDBY],
    )
}

/// The local cluster's state dir (pids of the apiserver and of Spindle's processes).
fn state_dir(s: &Spindle) -> Result<PathBuf> {
    Ok(s.cluster
        .kubeconfig()
        .parent()
        .context("state dir")?
        .to_path_buf())
}

fn pid_of(s: &Spindle, file: &str) -> Result<String> {
    let path = state_dir(s)?.join(file);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| {
            format!(
                "{} (these checks signal local processes: e2e/cluster/up, process runtime)",
                path.display()
            )
        })?
        .trim()
        .to_owned())
}

fn signal(pid: &str, sig: &str) -> Result<()> {
    let st = std::process::Command::new("kill")
        .args([&format!("-{sig}"), pid])
        .status()?;
    ensure!(st.success(), "kill -{sig} {pid}");
    Ok(())
}

/// Sum of the samples of `name` (any labels) at `http://addr/metrics`.
fn scrape(addr: &str, name: &str) -> Result<f64> {
    let out = std::process::Command::new("curl")
        .args(["-fsS", "--max-time", "5", &format!("http://{addr}/metrics")])
        .output()?;
    ensure!(out.status.success(), "scraping {addr}");
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn operator_metric(s: &Spindle, id: &str, name: &str) -> Result<f64> {
    scrape(&s.rt.operator_metrics(id)?, name)
}

fn agent_ip(s: &Spindle) -> Result<String> {
    Ok(s.rt.portal(NODE)?.ip().to_string())
}

fn agent_metric(s: &Spindle, name: &str) -> Result<f64> {
    scrape(&format!("{}:9562", agent_ip(s)?), name)
}

fn leads(s: &Spindle, id: &str) -> bool {
    operator_metric(s, id, "spindle_operator_leader").ok() == Some(1.0)
}

/// The agent API as the operator reaches it (its certificate), on a runtime of its own; a new
/// connection for every call (the agent closes connections whose pings go unanswered, and this
/// runtime only runs during a call).
struct Agent {
    rt: tokio::runtime::Runtime,
    api: std::net::SocketAddr,
    certs: Certs,
    /// The fingerprint the node's Lease publishes (the agent makes its key at start).
    key: String,
}

impl Agent {
    fn connect(s: &Spindle) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let api = format!("{}:9443", agent_ip(s)?).parse()?;
        let certs = Certs {
            dir: state_dir(s)?.join("spindle"),
        };
        let lease = s.kubectl(&[
            "get",
            "lease",
            "-n",
            "spindle-system",
            NODE,
            "-o",
            &format!(
                "jsonpath={{.metadata.annotations.{}}}",
                spindle_agent_api::lease::API_KEY_ANNOTATION.replace('.', "\\.")
            ),
        ])?;
        let key = lease.trim().to_owned();
        ensure!(!key.is_empty(), "the Lease of {NODE} publishes no key");
        Ok(Self {
            rt,
            api,
            certs,
            key,
        })
    }

    fn client(&self) -> Result<pb::agent_client::AgentClient<tonic::transport::Channel>> {
        self.rt
            .block_on(pinned_client(self.api, &self.certs, NODE, &self.key))
    }

    fn status(&self) -> Result<pb::AgentStatus> {
        let mut c = self.client()?;
        Ok(self
            .rt
            .block_on(c.get_status(pb::GetStatusRequest {}))?
            .into_inner())
    }

    fn serves(&self, iqn: &str) -> Result<bool> {
        Ok(self.status()?.targets.iter().any(|t| t.iqn == iqn))
    }
}

/// The apiserver stops answering (SIGSTOP: connections stay open, nothing comes back, as on a
/// half-open connection): the leader stops leading within its renew deadline, not whenever the
/// connection gives up; once the apiserver is back it leads again and serves new objects.
fn apiserver_silent(s: &Spindle, ns: &str) -> Result<()> {
    s.wait_for("operator-0 leads", TAKEOVER, || {
        Ok(leads(s, OPERATOR).then_some(()))
    })?;
    let pid = pid_of(s, "kube-apiserver.pid")?;
    signal(&pid, "STOP")?;
    let paused = Instant::now();
    let stepped_down = s.wait_for(
        "the leader steps down while the apiserver is silent",
        RENEW_DEADLINE + Duration::from_secs(8),
        || Ok((!leads(s, OPERATOR)).then(|| paused.elapsed())),
    );
    std::thread::sleep(Duration::from_secs(2));
    let standby_led = leads(s, OPERATOR);
    signal(&pid, "CONT")?;
    let stepped_down = stepped_down?;
    eprintln!(
        "     stepped down {:.1} s after the apiserver went silent",
        stepped_down.as_secs_f64()
    );
    ensure!(
        stepped_down <= RENEW_DEADLINE + Duration::from_millis(1500),
        "stepped down {:.1} s after the apiserver went silent (renew deadline {} s)",
        stepped_down.as_secs_f64(),
        RENEW_DEADLINE.as_secs()
    );
    ensure!(!standby_led, "leading again while the apiserver was silent");
    let log = s.rt.operator_log(OPERATOR)?;
    ensure!(
        log.contains("could not be renewed before the renew deadline"),
        "the log does not say why it stopped:\n{}",
        tail(&log, 30)
    );
    s.wait_for("operator-0 leads again", TAKEOVER, || {
        Ok(leads(s, OPERATOR).then_some(()))
    })?;
    s.apply(ns, &device_yaml("back", NODE, MIB, ""))?;
    s.wait_condition("device", ns, "back", "Ready", "True", READY)?;
    Ok(())
}

/// The leader (operator-0) is frozen past its lease; the standby (operator-1) takes over and
/// removes a Target deleted meanwhile. Resumed, operator-0 does not serve it again, says it
/// stopped, and the agent refuses a call of its term.
fn frozen_leader(s: &Spindle, ns: &str) -> Result<()> {
    s.wait_for("operator-0 leads", TAKEOVER, || {
        Ok(leads(s, OPERATOR).then_some(()))
    })?;
    s.rt.start_operator(STANDBY)?;
    s.apply(ns, &device_yaml("d", NODE, MIB, ""))?;
    s.apply(ns, &target_yaml("t", &[(0, "d")], ""))?;
    s.wait_condition("target", ns, "t", "Ready", "True", READY)?;
    let iqn = spindle_e2e::spindle::default_iqn(ns, "t");
    let uid = s
        .get("target", ns, "t")?
        .and_then(|t| t["metadata"]["uid"].as_str().map(str::to_owned))
        .context("target uid")?;
    let agent = Agent::connect(s)?;
    ensure!(agent.serves(&iqn)?, "the agent does not serve {iqn}");
    // (Checked after the behaviour below, so that a build without terms fails on what matters.)
    let old_term = agent_metric(s, "spindle_agent_leader_term")?;
    ensure!(!leads(s, STANDBY), "{STANDBY} leads too");

    let pid = pid_of(s, "spindle/operator-0.pid")?;
    signal(&pid, "STOP")?;
    let frozen = Instant::now();
    let r = (|| -> Result<()> {
        s.kubectl(&["delete", "target", "-n", ns, "t", "--wait=false"])?;
        s.wait_for(&format!("{STANDBY} takes over"), TAKEOVER, || {
            Ok(leads(s, STANDBY).then_some(()))
        })?;
        s.wait_gone("target", ns, "t", READY)?;
        ensure!(!agent.serves(&iqn)?, "the new leader left {iqn} served");
        // Stay frozen until every requeue of the old leader is due (resync: 30 s), so that
        // anything it would still do, it does as soon as it runs again.
        std::thread::sleep(Duration::from_secs(40).saturating_sub(frozen.elapsed()));
        Ok(())
    })();
    signal(&pid, "CONT")?;
    r?;
    let new_term = agent_metric(s, "spindle_agent_leader_term")?;

    // Resumed: the Target stays gone, it stands by, and its log says it stopped acting.
    std::thread::sleep(Duration::from_secs(8));
    ensure!(
        !agent.serves(&iqn)?,
        "the deposed leader served the removed Target {iqn} again"
    );
    ensure!(!leads(s, OPERATOR), "operator-0 leads after resuming");
    ensure!(leads(s, STANDBY), "{STANDBY} no longer leads");
    // A call carrying the old leader's term: refused, counted, nothing changed.
    let refusals = agent_metric(s, "spindle_agent_stale_leader_refusals_total")?;
    let before = agent.status()?;
    let req = pb::ApplyTargetRequest {
        meta: Some(pb::ObjectMeta {
            namespace: ns.into(),
            name: "t".into(),
            uid,
            generation: 1,
            leader_term: old_term as u64,
        }),
        spec: Some(pb::TargetSpec {
            iqn: iqn.clone(),
            port: 3260,
            acl: Some(pb::Acl {
                allow_all: true,
                initiators: Vec::new(),
            }),
            ..Default::default()
        }),
    };
    let mut c = agent.client()?;
    let r = agent.rt.block_on(c.apply_target(req));
    let status = r.err().context("a call of the old term was accepted")?;
    ensure!(
        status.code() == tonic::Code::FailedPrecondition,
        "refused with {status:?}"
    );
    let want = format!(
        "stale leader: term {} < {}",
        old_term as u64, new_term as u64
    );
    ensure!(status.message() == want, "message {:?}", status.message());
    let detail = spindle_agent_api::detail::of(&status).context("no ErrorDetail")?;
    ensure!(
        detail.reason() == pb::ErrorReason::StaleLeader,
        "{detail:?}"
    );
    ensure!(
        agent_metric(s, "spindle_agent_stale_leader_refusals_total")? >= refusals + 1.0,
        "the refusal is not counted"
    );
    ensure!(
        agent.status()?.targets == before.targets,
        "a refused call changed the agent"
    );
    ensure!(!agent.serves(&iqn)?, "{iqn} served after the refused call");

    let log = s.rt.operator_log(OPERATOR)?;
    ensure!(
        log.contains("leader term ended"),
        "operator-0's log does not say it stopped acting:\n{}",
        tail(&log, 30)
    );
    ensure!(old_term > 0.0, "the agent has seen no leader term");
    ensure!(
        new_term > old_term,
        "the new leader's term {new_term} is not above the old one {old_term}"
    );
    ensure!(
        agent_metric(s, "spindle_agent_leader_term")? == new_term,
        "the agent's term moved"
    );

    // The new leader still acts.
    s.apply(ns, &target_yaml("t2", &[(0, "d")], ""))?;
    s.wait_condition("target", ns, "t2", "Ready", "True", READY)?;
    Ok(())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
