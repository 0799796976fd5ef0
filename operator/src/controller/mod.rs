//! The two controllers (Device, Target) of one leadership term, their shared context and what
//! triggers them: their own objects, each other's (a Target follows its Devices, a Device's
//! `usedBy` follows the Targets), CHAP Secrets, and the agents' registry (a node's agent came,
//! went or moved; a Node was deleted).

mod device;
mod target;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{Action, Config};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use spindle_crds::{Device, Target};
use tokio::sync::mpsc;

use crate::agent_client::{AgentClients, AgentError};
use crate::agents::Registry;
use crate::metrics::Metrics;
use crate::status::Events;

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or could not be reached.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The agent could not be reached or refused.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

impl Error {
    /// Short label for the errors metric.
    fn label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Self::Kube(_) => "apiserver",
            Self::Agent(e) if e.is_transient() => "agent_unreachable",
            Self::Agent(_) => "agent_refused",
        }
    }
}

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
    /// Ask the Target controller to look at a Target again.
    pub poke_target: mpsc::UnboundedSender<ObjectRef<Target>>,
    /// uids of Devices whose flush this term recorded (guards against a stale cache showing
    /// the Device before its Flushed condition was written).
    pub flushed: Mutex<HashSet<String>>,
    /// Consecutive failures per object (for backoff) and the last error logged.
    failures: Mutex<HashMap<String, (u32, String)>>,
}

/// Ready objects are looked at again this often (session counts, drift).
pub const RESYNC: Duration = Duration::from_secs(30);
/// Objects waiting for something outside the cluster (an agent) are looked at again this often,
/// besides every event that concerns them.
pub const WAIT: Duration = Duration::from_secs(10);

impl Ctx {
    /// Records a successful reconcile: the backoff of `key` starts over.
    fn succeeded(&self, key: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, msg)) = f.remove(key) {
            tracing::info!(object = key, "recovered after: {msg}");
        }
    }

    /// Records a failure: logs it once (at warn) until it changes, and returns the backoff.
    fn failed(&self, kind: &str, key: &str, e: &Error) -> Duration {
        self.metrics
            .reconcile_errors
            .with_label_values(&[kind, e.label()])
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
        let cap = if e.label() == "agent_unreachable" {
            AGENT_RETRY_CAP
        } else {
            Duration::from_secs(60)
        };
        backoff(entry.0).min(cap)
    }
}

/// What a reconcile acts on: the spec (generation), the deletion, the skip-flush annotation, and
/// which incarnation (uid). Status writes (ours) change none of these.
fn what_we_act_on<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let m = obj.meta();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.uid.hash(&mut h);
    m.generation.hash(&mut h);
    m.deletion_timestamp.is_some().hash(&mut h);
    m.annotations
        .as_ref()
        .and_then(|a| a.get(crate::delete::SKIP_FLUSH_ANNOTATION))
        .hash(&mut h);
    Some(h.finish())
}

/// Runs one reconcile of `obj`, counting it and its duration; a success resets its backoff.
async fn timed(
    ctx: &Ctx,
    kind: &str,
    obj: &impl Resource,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile.await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciles
        .with_label_values(&[kind, outcome])
        .inc();
    ctx.metrics
        .reconcile_seconds
        .with_label_values(&[kind])
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&crate::desired::key_of(obj));
    }
    result
}

/// The error policy of both controllers: try again after the object's backoff.
fn backoff_action(ctx: &Ctx, kind: &str, obj: &impl Resource, e: &Error) -> Action {
    Action::requeue(ctx.failed(kind, &crate::desired::key_of(obj), e))
}

/// Asks the Target controller to look again at the Targets that were refused a Device because
/// `t` exported it (after `t` changed its LUNs or went away).
pub fn poke_claimants(ctx: &Ctx, t: &Target) {
    let needle = format!(
        "is already exported by Target {}",
        crate::desired::key_of(t)
    );
    for other in ctx.targets.state() {
        let refused = other.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == crate::status::kind::READY && c.message.contains(&needle))
        });
        if refused && other.uid() != t.uid() {
            let _ = ctx.poke_target.send(ObjectRef::from_obj(other.as_ref()));
        }
    }
}

/// Longest wait before calling an agent again that did not answer.
const AGENT_RETRY_CAP: Duration = Duration::from_secs(5);

/// 1 s, 2 s, 4 s, ... up to 60 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Runs both controllers until the future is dropped (the end of a leadership term).
pub async fn run(
    client: Client,
    registry: Arc<Registry>,
    agents: Arc<AgentClients>,
    metrics: Arc<Metrics>,
    identity: &str,
    concurrency: u16,
) {
    let devices_api: Api<Device> = Api::all(client.clone());
    let targets_api: Api<Target> = Api::all(client.clone());
    let secrets_api: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
    let cfg = Config::default().concurrency(concurrency);

    let (poke_device_tx, poke_device_rx) = mpsc::unbounded_channel::<ObjectRef<Device>>();
    let (poke_target_tx, poke_target_rx) = mpsc::unbounded_channel::<ObjectRef<Target>>();

    // Each controller's own objects: reconciled when what the operator acts on changes, not
    // when only the status it wrote itself changed.
    let (devices, device_writer) = reflector::store::<Device>();
    let (targets, target_writer) = reflector::store::<Target>();
    let device_ctl = Controller::for_stream(
        watcher(devices_api.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(device_writer)
            .applied_objects()
            .predicate_filter(what_we_act_on, PredicateConfig::default()),
        devices.clone(),
    )
    .with_config(cfg.clone());
    let target_ctl = Controller::for_stream(
        watcher(targets_api.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(target_writer)
            .applied_objects()
            .predicate_filter(what_we_act_on, PredicateConfig::default()),
        targets.clone(),
    )
    .with_config(cfg);

    // A Device's usedBy follows the Targets that name it.
    let device_ctl = {
        device_ctl.watches(targets_api, watcher::Config::default(), |t: Target| {
            let ns = t.namespace().unwrap_or_default();
            t.spec
                .luns
                .iter()
                .map(|l| ObjectRef::new(&l.device_ref).within(&ns))
                .collect::<Vec<_>>()
        })
    };
    // A Target follows its Devices and its CHAP Secret.
    let target_ctl = {
        let by_device = targets.clone();
        let by_secret = targets.clone();
        target_ctl
            .watches(devices_api, watcher::Config::default(), move |d: Device| {
                let (ns, name) = (d.namespace(), d.name_any());
                by_device
                    .state()
                    .iter()
                    .filter(|t| {
                        t.namespace() == ns && t.spec.luns.iter().any(|l| l.device_ref == name)
                    })
                    .map(|t| ObjectRef::from_obj(t.as_ref()))
                    .collect::<Vec<_>>()
            })
            .watches_stream(
                watcher(secrets_api, watcher::Config::default()).touched_objects(),
                move |s| {
                    let (ns, name) = (s.namespace(), s.name_any());
                    by_secret
                        .state()
                        .iter()
                        .filter(|t| {
                            t.namespace() == ns
                                && t.spec.chap.as_ref().is_some_and(|c| c.secret_ref == name)
                        })
                        .map(|t| ObjectRef::from_obj(t.as_ref()))
                        .collect::<Vec<_>>()
                },
            )
    };

    // The registry's node changes reach every object on that node.
    let (node_devices, node_targets) = fan_out_node_changes(&registry, &devices, &targets);

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        devices: devices.clone(),
        targets: targets.clone(),
        registry: registry.clone(),
        agents,
        metrics,
        events: Events::new(client, identity),
        poke_target: poke_target_tx,
        flushed: Mutex::default(),
        failures: Mutex::default(),
    });
    drop(poke_device_tx);

    let device_run = device_ctl
        .reconcile_on(futures::stream::select(
            node_devices,
            receiver_stream(poke_device_rx),
        ))
        .run(device::reconcile, device::error_policy, ctx.clone())
        .for_each(reporter("Device"));
    let target_run = target_ctl
        .reconcile_on(futures::stream::select(
            node_targets,
            receiver_stream(poke_target_rx),
        ))
        .run(target::reconcile, target::error_policy, ctx.clone())
        .for_each(reporter("Target"));
    let sweeper = crate::sweep::run(ctx.clone());
    tokio::join!(device_run, target_run, sweeper);
}

/// Streams of the Devices and Targets on each node the registry reports changed.
fn fan_out_node_changes(
    registry: &Registry,
    devices: &Store<Device>,
    targets: &Store<Target>,
) -> (
    impl Stream<Item = ObjectRef<Device>> + Send + 'static,
    impl Stream<Item = ObjectRef<Target>> + Send + 'static,
) {
    let changes = registry.subscribe();
    let (dev_tx, dev_rx) = mpsc::unbounded_channel();
    let (tgt_tx, tgt_rx) = mpsc::unbounded_channel();
    let (devices, targets) = (devices.clone(), targets.clone());
    let fan = async move {
        let mut changes = changes;
        loop {
            let node = match changes.recv().await {
                Ok(node) => Some(node),
                // Missed some: look at everything.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let on_node = |d: &Device| node.as_ref().is_none_or(|n| &d.spec.node_name == n);
            let all_devices = devices.state();
            for d in all_devices.iter().filter(|d| on_node(d)) {
                let _ = dev_tx.send(ObjectRef::from_obj(d.as_ref()));
            }
            for t in targets.state() {
                let placed = t.status.as_ref().and_then(|s| s.node.as_ref());
                let hit = node.is_none()
                    || placed == node.as_ref()
                    || all_devices.iter().any(|d| {
                        on_node(d)
                            && d.namespace() == t.namespace()
                            && t.spec
                                .luns
                                .iter()
                                .any(|l| Some(&l.device_ref) == d.meta().name.as_ref())
                    });
                if hit {
                    let _ = tgt_tx.send(ObjectRef::from_obj(t.as_ref()));
                }
            }
        }
    };
    tokio::spawn(fan);
    (receiver_stream(dev_rx), receiver_stream(tgt_rx))
}

fn receiver_stream<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// Logs what the controller machinery reports (a watch that failed and is retried) once per
/// distinct message; reconcile failures are logged by the error policies.
type RunItem<K, E> =
    Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E, watcher::Error>>;

fn reporter<K: Resource, E: std::fmt::Display>(
    kind: &'static str,
) -> impl FnMut(RunItem<K, E>) -> std::future::Ready<()> {
    use kube::runtime::controller::Error as C;
    let mut last = String::new();
    move |r| {
        match r {
            Ok(_) => last.clear(),
            Err(C::ObjectNotFound(_)) | Err(C::ReconcilerFailed(..)) => {}
            Err(e) => {
                let msg = e.to_string();
                if msg != last {
                    tracing::warn!("{kind} controller: {msg} (retrying)");
                    last = msg;
                }
            }
        }
        std::future::ready(())
    }
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
