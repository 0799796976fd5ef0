//! Issue 21, the CSI controller end to end: a real etcd + kube-apiserver, the operator and two
//! agents as processes, `spindle-csi controller` on tcp (against the test cluster's kubeconfig)
//! and `spindle-csi node` on the host (only for csi-sanity's NodeGetInfo), csi-sanity's
//! Controller tests, and checks of our own through CSI calls with real initiators (iscsi-inq).
//! The driver's objects live in spindle-system (the driver's namespace, as the chart installs
//! it); the checks run in order and each is reported (`-- NAME` or SPINDLE_E2E_ONLY=NAME runs some).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use spindle_csi::proto::controller_client::ControllerClient;
use spindle_e2e::checks::{Check, run_table};
use spindle_e2e::csi::{self as driver, Process};
use spindle_e2e::initiator;
use spindle_e2e::spindle::{OPERATOR, Spindle};
use tonic::transport::Channel;

mod calls;
mod capacity;
mod publish;
mod sanity;
mod volumes;

/// The driver's namespace (also the agents' Lease namespace in e2e/cluster/spindle).
const NS: &str = "spindle-system";
const MIB: i64 = 1 << 20;
const GIB: u64 = 1 << 30;
const FREE: &str = "spindle.dev/capacity-free-bytes";
/// Initiator names the checks publish to.
const IQN_A: &str = "iqn.2026-11.dev.spindle:e2e-csi-a";
const IQN_B: &str = "iqn.2026-11.dev.spindle:e2e-csi-b";
/// A finalizer the delete check holds a Device with.
const HOLD: &str = "e2e.spindle.dev/hold";

/// The driver's processes and the runtime its clients use, for the checks (plain fns).
struct Driver {
    controller: Process,
    node: Process,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
}

static DRIVER: Mutex<Option<Driver>> = Mutex::new(None);

/// Stops the driver at the end, even when a check panicked.
struct Stop;
impl Drop for Stop {
    fn drop(&mut self) {
        let d = DRIVER.lock().map(|mut d| d.take()).ok().flatten();
        if let Some(d) = d {
            let _ = std::fs::remove_dir_all(&d.dir);
        }
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let _stop = Stop;
    let checks: &[(&str, Check)] = &[
        (
            "csi-sanity: the Controller tests that run pass",
            sanity::sanity,
        ),
        (
            "CreateVolume: Device and Target Ready, the NAA in the context",
            volumes::create_ready,
        ),
        (
            "CreateVolume refuses unknown parameters and multi-node modes, naming them",
            volumes::create_refusals,
        ),
        (
            "DeleteVolume returns once the Device and its file are gone",
            volumes::delete_flushed,
        ),
        (
            "publish admits exactly one IQN; another initiator's login is refused",
            publish::publish_one_iqn,
        ),
        (
            "RWO: a second node's publish is refused, concurrent publishes admit one",
            publish::publish_single_node,
        ),
        ("expand grows the Device", volumes::expand_grows),
        (
            "GetCapacity and placement follow the Leases' free bytes",
            capacity::capacity,
        ),
    ];
    let code = run_table(start, "e2e-csi", checks, &[OPERATOR]);
    if let Ok(Some(d)) = DRIVER.lock().as_deref() {
        let log = d.controller.log_text();
        eprintln!(
            "controller log: {} lines; e2e run {:.0} s",
            log.lines().count(),
            started.elapsed().as_secs_f64()
        );
    }
    code
}

/// The cluster, with the driver's controller and node modes in [`DRIVER`].
fn start() -> Result<Spindle> {
    let s = Spindle::start(&["node-a", "node-b"], &[])?;
    let dir = std::env::temp_dir().join(format!("spindle-e2e-csi-{}", std::process::id()));
    let base = std::env::var("SPINDLE_ADDR_BASE").unwrap_or_else(|_| "127.0.0".into());
    let ip = format!("{base}.1");
    let kubeconfig = s.cluster.kubeconfig().to_path_buf();
    let controller = Process::start(
        &driver::binary(),
        "controller",
        driver::free_port(&ip).context("a port")?,
        &kubeconfig,
        &[
            "--namespace",
            NS,
            "--ready-timeout",
            "60",
            "--delete-timeout",
            "90",
        ],
        &dir,
    )
    .context("spindle-csi controller starts")?;
    let node_args = node_args(&dir).context("the node mode's arguments")?;
    let node_args: Vec<&str> = node_args.iter().map(String::as_str).collect();
    let node = Process::start(
        &node_binary(),
        "node",
        driver::free_port(&ip).context("a port")?,
        &kubeconfig,
        &node_args,
        &dir,
    )
    .context("spindle-csi node starts")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a tokio runtime")?;
    *DRIVER
        .lock()
        .map_err(|_| anyhow::anyhow!("driver lock poisoned"))? = Some(Driver {
        controller,
        node,
        rt,
        dir,
    });
    Ok(s)
}

/// The `spindle-csi` whose node mode serves csi-sanity's node calls: this build's, or
/// `$SPINDLE_E2E_CSI_NODE_BIN` (to try this controller with another branch's node mode).
fn node_binary() -> PathBuf {
    std::env::var_os("SPINDLE_E2E_CSI_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(driver::binary)
}

/// The host's node mode serves only Identity and NodeGetInfo here: its initiator name (the node
/// ID csi-sanity publishes to) comes from a file of the test's, its state from a folder of the
/// test's, when the node mode takes them.
fn node_args(dir: &std::path::Path) -> Result<Vec<String>> {
    let mut args = vec!["--node-name".to_owned(), "node-a".to_owned()];
    let help =
        initiator::run_ok(std::process::Command::new(node_binary()).args(["node", "--help"]))?;
    if help.contains("--initiator-name-file") {
        std::fs::create_dir_all(dir)?;
        let file = dir.join("initiatorname.iscsi");
        std::fs::write(
            &file,
            "InitiatorName=iqn.2026-11.dev.spindle:e2e-csi-sanity\n",
        )?;
        args.extend(["--initiator-name-file".into(), file.display().to_string()]);
    }
    if help.contains("--state-dir") {
        args.extend([
            "--state-dir".into(),
            dir.join("node-state").display().to_string(),
        ]);
    }
    Ok(args)
}

/// Runs `f` with a Controller client (and the node's address) on the driver's runtime.
fn with_ctl<T>(f: impl AsyncFnOnce(ControllerClient<Channel>) -> Result<T>) -> Result<T> {
    let guard = DRIVER
        .lock()
        .map_err(|_| anyhow::anyhow!("driver lock poisoned"))?;
    let d = guard.as_ref().context("the driver is not running")?;
    let url = d.controller.url();
    d.rt.block_on(async move {
        let c = ControllerClient::connect(url).await?;
        f(c).await
    })
}

/// The node mode's log.
fn node_log() -> String {
    DRIVER
        .lock()
        .ok()
        .and_then(|d| d.as_ref().map(|d| d.node.log_text()))
        .unwrap_or_default()
}

/// The controller's log (printed when a check fails).
fn controller_log() -> String {
    DRIVER
        .lock()
        .ok()
        .and_then(|d| d.as_ref().map(|d| d.controller.log_text()))
        .unwrap_or_default()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
