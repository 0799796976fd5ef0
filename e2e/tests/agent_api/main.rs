//! The node agent in cluster mode (`spindle-agent run`) against a real kube-apiserver, with
//! real initiators: the agent API over mutual TLS, the drain with writes in flight, restarts
//! (SIGKILL mid-drain, after ApplyTarget), the Lease through an apiserver outage, bad orders,
//! portals on a wildcard listener, and a loop block device.
//!
//! Agents run on 127.0.1.x. Needs the release agent (`cargo build --release -p spindle-agent`),
//! libiscsi-bin, qemu-utils + qemu-block-extra, gcc with libiscsi-dev, losetup, root.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use spindle_agent_api::v1::agent_client::AgentClient;
use tonic::transport::Channel;

use spindle_e2e::agent::{AgentConfig, AgentProcess, Certs, ClientCert, client};
use spindle_e2e::checks::{self, Body, Fixture};
use spindle_e2e::cluster::TestCluster;

mod drain;
mod lease;
mod orders;
mod requests;
mod serving;

const NS: &str = "spindle-system";
const INITIATOR: &str = "iqn.2026-11.dev.spindle:e2e-client";

struct Ctx {
    cluster: TestCluster,
    work: PathBuf,
    certs: Certs,
    agent: AgentProcess,
    rt: tokio::runtime::Runtime,
}

impl Ctx {
    fn client(&self) -> Result<AgentClient<Channel>> {
        self.rt
            .block_on(client(self.agent.api(), &self.certs, ClientCert::Operator))
    }

    fn data(&self, file: &str) -> PathBuf {
        self.agent.config.data_dir.join(file)
    }

    fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.cluster.kubectl(&a, None)?)?)
    }
}

type Check = fn(&mut Ctx) -> Result<()>;

impl Fixture for Ctx {
    fn report_failure(&self) {
        eprintln!("agent log:\n{}", self.agent.log_text());
    }

    fn finish(&mut self, passed: bool) {
        if passed {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

fn main() -> ExitCode {
    let checks: &[(&str, Check)] = &[
        (
            "apply, discover, write and read back",
            serving::apply_discover_io,
        ),
        (
            "mutual TLS refuses strangers",
            serving::mtls_refuses_strangers,
        ),
        (
            "drain with writes in flight",
            drain::drain_with_writes_in_flight,
        ),
        (
            "SIGKILL mid-drain, and after ApplyTarget",
            drain::kill_and_restart,
        ),
        ("bad orders change nothing", orders::bad_orders),
        (
            "an ACL change closes the sessions it no longer admits",
            serving::acl_change_cuts_sessions,
        ),
        (
            "Lease through an apiserver outage",
            lease::lease_survives_apiserver_outage,
        ),
        (
            "wildcard listener answers the arrival address",
            serving::wildcard_portal,
        ),
        (
            "a loop block device on the allowlist",
            serving::loop_block_device,
        ),
        (
            "a client that stopped answering does not hold the stop",
            drain::frozen_client_does_not_hold_the_stop,
        ),
    ];
    checks::run(
        start,
        checks.iter().map(|&(name, check)| {
            let body: Body<Ctx> = Box::new(check);
            (name.to_owned(), body)
        }),
    )
}

/// The cluster and node-api's agent.
fn start() -> Result<Ctx> {
    let cluster = TestCluster::start(&["node-api"]).context("control plane starts")?;
    let work = tempfile_dir("agent-api");
    let certs = Certs::make(&work.join("certs")).context("certificates")?;
    let agent = AgentProcess::start(agent_config(
        &cluster, &work, &certs, "node-api", 2, 3260, 9443,
    ))
    .context("agent starts")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(Ctx {
        cluster,
        work,
        certs,
        agent,
        rt,
    })
}

/// A work dir on a disk filesystem (tmpfs refuses O_DIRECT).
fn tempfile_dir(what: &str) -> PathBuf {
    let d = PathBuf::from(format!(
        "/var/tmp/spindle-e2e-{what}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn agent_config(
    cluster: &TestCluster,
    work: &Path,
    certs: &Certs,
    node: &str,
    host: u8,
    iscsi_port: u16,
    api_port: u16,
) -> AgentConfig {
    AgentConfig {
        node: node.into(),
        addr: IpAddr::from([127, 0, 1, host]),
        iscsi_port,
        api_port,
        iscsi_wildcard: false,
        data_dir: work.join(format!("{node}-data")),
        kubeconfig: cluster.kubeconfig().to_path_buf(),
        namespace: NS.into(),
        certs: certs.clone(),
        allow_block: Vec::new(),
        env: Vec::new(),
    }
}

/// Polls `ready` every 200 ms until it answers true (an error also means "not yet"); fails
/// when `timeout` passes first.
fn wait_until(timeout: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_for(timeout, || {
        ensure!(ready()?, "condition not reached");
        Ok(())
    })
}

/// Retries `f` every 200 ms until it succeeds or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e.context("timed out")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
