//! How Spindle runs under test: the one place that knows whether the agents and the operator are
//! processes on this machine or pods on a node. Tests only use [`Runtime`]; the implementation is
//! chosen by `SPINDLE_E2E_RUNTIME`: `process` (the default) runs them as processes through
//! `e2e/cluster/spindle`; `pods` drives the Helm chart's pods on the real nodes of
//! `e2e/cluster/up --kubelet` through `e2e/cluster/pods`, which takes the same commands.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cluster::scripts_dir;

/// Start, stop and kill Spindle's agents and operator replicas, and find what they expose.
pub trait Runtime: Send + Sync {
    /// Starts (or restarts) the agent of `node`, on the address it had before or the next free
    /// one; returns when its API listens.
    fn start_agent(&self, node: &str) -> Result<()>;
    /// Stops the agent of `node` gracefully (SIGTERM: it drains) and waits.
    fn stop_agent(&self, node: &str) -> Result<()>;
    /// Kills the agent of `node` (SIGKILL).
    fn kill_agent(&self, node: &str) -> Result<()>;
    /// The agent's iSCSI portal.
    fn portal(&self, node: &str) -> Result<SocketAddr>;
    /// Where the agent keeps file-backed Devices, as seen from this machine.
    fn data_dir(&self, node: &str) -> Result<PathBuf>;
    /// Starts an operator replica named `id`; returns when its metrics endpoint listens.
    fn start_operator(&self, id: &str) -> Result<()> {
        self.start_operator_with(id, &[])
    }
    /// Starts an operator replica named `id` with extra command-line `args` (e.g. the chart's
    /// `--iqn-prefix`); returns when its metrics endpoint listens.
    fn start_operator_with(&self, id: &str, args: &[&str]) -> Result<()>;
    /// Kills an operator replica (SIGKILL).
    fn kill_operator(&self, id: &str) -> Result<()>;
    /// `ip:port` of a replica's metrics endpoint.
    fn operator_metrics(&self, id: &str) -> Result<String>;
    /// A replica's log so far.
    fn operator_log(&self, id: &str) -> Result<String>;
    /// Stops everything (end of the tests).
    fn stop_all(&self) -> Result<()>;
}

/// The runtime `SPINDLE_E2E_RUNTIME` names, for the cluster whose kubeconfig is given. As
/// processes, agents get the addresses `SPINDLE_ADDR_BASE.2`, `.3`, ... in `nodes` order
/// (default base 127.0.0); as pods, their node's address.
pub fn from_env(kubeconfig: &Path, nodes: &[&str]) -> Result<Box<dyn Runtime>> {
    let which = std::env::var("SPINDLE_E2E_RUNTIME").unwrap_or_else(|_| "process".into());
    match which.as_str() {
        "process" => Ok(Box::new(Scripted::new(kubeconfig, "spindle", nodes)?)),
        "pods" => Ok(Box::new(Scripted::new(kubeconfig, "pods", &[])?)),
        other => bail!(
            "SPINDLE_E2E_RUNTIME={other:?}: use \"process\" (e2e/cluster/spindle) or \"pods\" \
             (e2e/cluster/pods: the chart's pods on real nodes)"
        ),
    }
}

/// Agents and operators started, stopped and described by a script in `e2e/cluster/`
/// (`spindle`: processes; `pods`: the chart's pods).
pub struct Scripted {
    script: &'static str,
    name: String,
    addresses: BTreeMap<String, String>,
}

impl Scripted {
    /// For the local cluster whose kubeconfig is `kubeconfig` (in its state dir
    /// `.../spindle-cluster-NAME/`), through `e2e/cluster/SCRIPT`; `nodes` get agent addresses
    /// (none: the script knows them).
    pub fn new(kubeconfig: &Path, script: &'static str, nodes: &[&str]) -> Result<Self> {
        let dir = kubeconfig
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .context("kubeconfig is not in a cluster state dir")?;
        let name = dir
            .strip_prefix("spindle-cluster-")
            .context("the e2e runtimes need a cluster made by e2e/cluster/up")?
            .to_owned();
        let base = std::env::var("SPINDLE_ADDR_BASE").unwrap_or_else(|_| "127.0.0".into());
        let addresses = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| ((*n).to_owned(), format!("{base}.{}", i + 2)))
            .collect();
        Ok(Self {
            script,
            name,
            addresses,
        })
    }

    fn script(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(scripts_dir().join(self.script))
            .env(
                DRAIN_HOLD_ENV,
                std::env::var(DRAIN_HOLD_ENV).unwrap_or_else(|_| DRAIN_HOLD_MS.to_owned()),
            )
            .arg("--name")
            .arg(&self.name)
            .args(args)
            .output()
            .with_context(|| format!("running e2e/cluster/{}", self.script))?;
        if !out.status.success() {
            bail!(
                "e2e/cluster/{} {}: {}",
                self.script,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn info(&self, args: &[&str], key: &str) -> Result<String> {
        let text = self.script(args)?;
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(str::to_owned)
            .with_context(|| format!("no {key} in: {text}"))
    }
}

/// The agents the suite starts hold each drain this long after its fence (the agent's test
/// hook), so that a kill lands mid-drain however fast the drain is (check "agent killed
/// mid-drain"). Agents started as processes inherit it from here; the chart's pods get it
/// through `agent.extraEnv` (e2e/chart/real-node installs it so). Override with the variable.
pub const DRAIN_HOLD_ENV: &str = "SPINDLE_TEST_DRAIN_DELAY_MS";
/// See [`DRAIN_HOLD_ENV`].
pub const DRAIN_HOLD_MS: &str = "1000";

impl Runtime for Scripted {
    fn start_agent(&self, node: &str) -> Result<()> {
        match self.addresses.get(node) {
            Some(ip) => self.script(&["start-agent", node, ip]),
            None => self.script(&["start-agent", node]),
        }
        .map(drop)
    }
    fn stop_agent(&self, node: &str) -> Result<()> {
        self.script(&["stop-agent", node]).map(drop)
    }
    fn kill_agent(&self, node: &str) -> Result<()> {
        self.script(&["kill-agent", node]).map(drop)
    }
    fn portal(&self, node: &str) -> Result<SocketAddr> {
        let p = self.info(&["info", node], "portal")?;
        p.parse().with_context(|| format!("portal {p:?}"))
    }
    fn data_dir(&self, node: &str) -> Result<PathBuf> {
        self.info(&["info", node], "data").map(PathBuf::from)
    }
    fn start_operator_with(&self, id: &str, args: &[&str]) -> Result<()> {
        let mut all = vec!["start-operator", id];
        all.extend_from_slice(args);
        self.script(&all).map(drop)
    }
    fn kill_operator(&self, id: &str) -> Result<()> {
        self.script(&["kill-operator", id]).map(drop)
    }
    fn operator_metrics(&self, id: &str) -> Result<String> {
        self.info(&["operator-info", id], "metrics")
    }
    fn operator_log(&self, id: &str) -> Result<String> {
        let path = self.info(&["operator-info", id], "log")?;
        Ok(std::fs::read_to_string(path).unwrap_or_default())
    }
    fn stop_all(&self) -> Result<()> {
        self.script(&["stop-all"]).map(drop)
    }
}
