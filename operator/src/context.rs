//! What every reconcile of one leadership term shares: the apiserver client, the caches, the
//! agents, metrics and Events, and how failures are counted, logged once and backed off.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use spindle_crds::{Device, Target};
use tokio::sync::mpsc;

use crate::agent_client::AgentClients;
use crate::agents::Registry;
use crate::claimants::Claimants;
use crate::error::{Cause, Error};
use crate::metrics::Metrics;
use crate::status::Events;
use crate::tenancy::Tenancy;

/// Everything a reconcile needs.
pub struct Ctx {
    /// The apiserver.
    pub client: Client,
    /// Devices as last seen.
    pub devices: Store<Device>,
    /// Targets as last seen.
    pub targets: Store<Target>,
    /// Agents and Nodes.
    pub registry: Arc<Registry>,
    /// Agent API calls.
    pub agents: Arc<AgentClients>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Events.
    pub events: Events,
    /// Which IQNs and ports each namespace may use.
    pub tenancy: Arc<Tenancy>,
    /// Ask the Target controller to look at a Target again.
    pub poke_target: mpsc::UnboundedSender<ObjectRef<Target>>,
    /// uids of Devices whose flush this term recorded (guards against a stale cache showing
    /// the Device before its Flushed condition was written).
    pub flushed: Mutex<HashSet<String>>,
    /// Which Targets were refused a Device, and by which Target that exports it.
    pub claimants: Claimants,
    /// Consecutive failures per object (for backoff) and the last error logged.
    failures: Mutex<HashMap<String, (u32, String)>>,
}

/// Ready objects are looked at again this often (session counts, drift).
pub const RESYNC: Duration = Duration::from_secs(30);
/// Objects waiting for something outside the cluster (an agent) are looked at again this often,
/// besides every event that concerns them.
pub const WAIT: Duration = Duration::from_secs(10);

impl Ctx {
    /// A context for one leadership term.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        devices: Store<Device>,
        targets: Store<Target>,
        registry: Arc<Registry>,
        agents: Arc<AgentClients>,
        metrics: Arc<Metrics>,
        events: Events,
        tenancy: Arc<Tenancy>,
        poke_target: mpsc::UnboundedSender<ObjectRef<Target>>,
    ) -> Self {
        Self {
            client,
            devices,
            targets,
            registry,
            agents,
            metrics,
            events,
            tenancy,
            poke_target,
            flushed: Mutex::default(),
            claimants: Claimants::default(),
            failures: Mutex::default(),
        }
    }

    /// Records a successful reconcile: the backoff of `key` starts over.
    pub(crate) fn succeeded(&self, key: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, msg)) = f.remove(key) {
            tracing::info!(object = key, "recovered after: {msg}");
        }
    }

    /// Records a failure: logs it once (at warn) until it changes, and returns the backoff.
    pub(crate) fn failed(&self, kind: &str, key: &str, e: &Error) -> Duration {
        self.metrics
            .reconcile_errors
            .with_label_values(&[kind, e.cause().label()])
            .inc();
        let msg = e.to_string();
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let entry = f.entry(key.to_owned()).or_insert((0, String::new()));
        entry.0 = entry.0.saturating_add(1);
        if entry.1 != msg {
            tracing::warn!(object = key, "{kind}: {msg} (retrying with backoff)");
            entry.1 = msg;
        } else {
            tracing::debug!(object = key, attempt = entry.0, "{kind}: {msg}");
        }
        // An agent that did not answer while its Lease is current is usually restarting: look
        // again soon. Everything else backs off up to a minute.
        let cap = if e.cause() == Cause::AgentUnreachable {
            AGENT_RETRY_CAP
        } else {
            Duration::from_secs(60)
        };
        backoff(entry.0).min(cap)
    }
}

/// Asks the Target controller to look again at the Targets that were refused a Device because
/// `t` exported it (after `t` changed its LUNs or went away).
pub fn poke_claimants(ctx: &Ctx, t: &Target) {
    for other in ctx.claimants.waiting_for(t) {
        let _ = ctx.poke_target.send(other);
    }
}

/// Longest wait before calling an agent again that did not answer.
const AGENT_RETRY_CAP: Duration = Duration::from_secs(5);

/// 1 s, 2 s, 4 s, ... up to 60 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let got: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(0), Duration::from_secs(1));
    }
}
