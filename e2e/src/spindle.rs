//! [`Spindle`]: a cluster with Spindle running (CRDs, one agent per node, one operator replica),
//! and the reads tests make of it through kubectl: objects, conditions, Events.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cluster::{TestCluster, workspace_dir};
use crate::runtime::{self, Runtime};

/// The first operator replica's name.
pub const OPERATOR: &str = "operator-0";

/// A condition as read from an object's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// True, False or Unknown.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// One Event about an object.
#[derive(Debug, Clone)]
pub struct Ev {
    /// Normal or Warning.
    pub type_: String,
    /// Reason.
    pub reason: String,
    /// Note.
    pub note: String,
}

/// A cluster with Spindle running in it.
pub struct Spindle {
    /// The control plane.
    pub cluster: TestCluster,
    /// How Spindle runs.
    pub rt: Box<dyn Runtime>,
}

impl Spindle {
    /// Starts (or borrows, with KUBECONFIG) a cluster with the Node objects `with_agents` and
    /// `without`, installs the CRDs, starts an agent on each of `with_agents` and one operator
    /// replica. Agent addresses follow the order of both lists.
    pub fn start(with_agents: &[&str], without: &[&str]) -> Result<Self> {
        let all: Vec<&str> = with_agents.iter().chain(without).copied().collect();
        let cluster = TestCluster::start(&all)?;
        let rt = runtime::from_env(cluster.kubeconfig(), &all)?;
        let s = Self { cluster, rt };
        s.install_crds()?;
        for node in with_agents {
            s.rt.start_agent(node)?;
        }
        s.rt.start_operator(OPERATOR)?;
        Ok(s)
    }

    /// Applies Spindle's CRDs (server-side) and waits until the apiserver serves them.
    pub fn install_crds(&self) -> Result<()> {
        self.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager",
            "spindle-e2e",
            "-f",
            &workspace_dir().join("crds").to_string_lossy(),
        ])?;
        self.kubectl(&[
            "wait",
            "--for",
            "condition=Established",
            "crd/devices.spindle.dev",
            "crd/targets.spindle.dev",
            "crd/devicesnapshots.spindle.dev",
        ])?;
        Ok(())
    }

    /// kubectl with `args`; stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        Ok(self.cluster.kubectl(args, None)?)
    }

    /// `kubectl apply -n NS -f -` of `yaml`.
    pub fn apply(&self, ns: &str, yaml: &str) -> Result<()> {
        self.cluster
            .kubectl(&["apply", "-n", ns, "-f", "-"], Some(yaml))?;
        Ok(())
    }

    /// Creates a namespace (ignores one that exists).
    pub fn namespace(&self, ns: &str) -> Result<()> {
        self.apply(
            "default",
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
        )
    }

    /// The object as JSON, or None when it does not exist.
    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Result<Option<Value>> {
        let out = self.kubectl(&[
            "get",
            kind,
            "-n",
            ns,
            name,
            "-o",
            "json",
            "--ignore-not-found",
        ])?;
        if out.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&out).context("kubectl get -o json")?,
        ))
    }

    /// Polls `f` every 200 ms until it gives `Some`, or fails after `timeout` saying `what` and
    /// the last state `f` described.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            match f() {
                Ok(Some(t)) => return Ok(t),
                Ok(None) => {}
                Err(e) => last = Some(format!("{e:#}")),
            }
            if Instant::now() >= deadline {
                bail!(
                    "{what}: not after {} s{}",
                    timeout.as_secs(),
                    last.map(|l| format!(" (last: {l})")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the object's condition `type_` has `status`; returns it.
    pub fn wait_condition(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<Cond> {
        let mut seen = None;
        let r = self.wait_for(
            &format!("{kind} {ns}/{name} {type_}={status}"),
            timeout,
            || {
                let c = self.get(kind, ns, name)?.and_then(|o| condition(&o, type_));
                seen = c.clone();
                Ok(c.filter(|c| c.status == status))
            },
        );
        r.with_context(|| format!("last seen {type_}: {seen:?}"))
    }

    /// Waits until the object no longer exists.
    pub fn wait_gone(&self, kind: &str, ns: &str, name: &str, timeout: Duration) -> Result<()> {
        self.wait_for(&format!("{kind} {ns}/{name} gone"), timeout, || {
            Ok(self.get(kind, ns, name)?.is_none().then_some(()))
        })
    }

    /// Events about the object, oldest first.
    pub fn events(&self, ns: &str, name: &str) -> Result<Vec<Ev>> {
        let out = self.kubectl(&["get", "events.events.k8s.io", "-n", ns, "-o", "json"])?;
        let v: Value = serde_json::from_str(&out)?;
        let mut events: Vec<(String, Ev)> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                let when = e["eventTime"]
                    .as_str()
                    .or(e["metadata"]["creationTimestamp"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                (
                    when,
                    Ev {
                        type_: s("type"),
                        reason: s("reason"),
                        note: s("note"),
                    },
                )
            })
            .collect();
        events.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(events.into_iter().map(|(_, e)| e).collect())
    }

    /// Waits for an Event with `reason` about the object.
    pub fn wait_event(&self, ns: &str, name: &str, reason: &str, timeout: Duration) -> Result<Ev> {
        self.wait_for(&format!("Event {reason} on {ns}/{name}"), timeout, || {
            Ok(self
                .events(ns, name)?
                .into_iter()
                .find(|e| e.reason == reason))
        })
    }
}

impl Drop for Spindle {
    fn drop(&mut self) {
        if let Err(e) = self.rt.stop_all() {
            eprintln!("warning: stopping Spindle: {e:#}");
        }
    }
}

/// The condition `type_` of an object, if present.
pub fn condition(obj: &Value, type_: &str) -> Option<Cond> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| Cond {
            status: c["status"].as_str().unwrap_or_default().to_owned(),
            reason: c["reason"].as_str().unwrap_or_default().to_owned(),
            message: c["message"].as_str().unwrap_or_default().to_owned(),
        })
}

/// The IQN Spindle gives a Target without `spec.iqn`.
pub fn default_iqn(ns: &str, name: &str) -> String {
    format!("iqn.2026-11.dev.spindle:{ns}.{name}")
}
