//! The controllers (Device, Target, DeviceSnapshot) of one leadership term, their shared context and what
//! triggers them: their own objects, each other's (a Target follows its Devices, a Device's
//! `usedBy` follows the Targets), CHAP Secrets, and the agents' registry (a node's agent came,
//! went or moved; a Node was deleted).

mod device;
mod snapshot;
mod target;

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{Action, Config};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use spindle_crds::{Device, DeviceSnapshot, Target};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::agent_client::AgentClients;
use crate::agents::Registry;
use crate::context::Ctx;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::objects::key_of;
use crate::status::Events;
use crate::tenancy::Tenancy;

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
        ctx.succeeded(&key_of(obj));
    }
    result
}

/// The error policy of both controllers: try again after the object's backoff.
fn backoff_action(ctx: &Ctx, kind: &str, obj: &impl Resource, e: &Error) -> Action {
    Action::requeue(ctx.failed(kind, &key_of(obj), e))
}

/// What a replica was configured with (flags), as the controllers need it.
pub struct Settings<'a> {
    /// This replica's name (the Events' reporting instance).
    pub identity: &'a str,
    /// Reconciles at once, per kind.
    pub concurrency: u16,
    /// Which IQNs and ports each namespace may use.
    pub tenancy: Arc<Tenancy>,
}

/// Runs both controllers until the future is dropped (the end of a leadership term): watches go
/// through `watches`, every other apiserver call through `calls` (which has read timeouts), and
/// `agents` carries the term.
pub async fn run(
    calls: &Client,
    watches: &Client,
    registry: Arc<Registry>,
    agents: Arc<AgentClients>,
    metrics: Arc<Metrics>,
    settings: Settings<'_>,
) {
    let Settings {
        identity,
        concurrency,
        tenancy,
    } = settings;
    let devices_api: Api<Device> = Api::all(watches.clone());
    let targets_api: Api<Target> = Api::all(watches.clone());
    let secrets_api: Api<PartialObjectMeta<Secret>> = Api::all(watches.clone());
    let cfg = Config::default().concurrency(concurrency);

    // Targets refused a Device are poked when the Target holding it lets go (see
    // `context::poke_claimants`); nothing pokes a Device: its triggers are all watches.
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

    let ctx = Arc::new(Ctx::new(
        calls.clone(),
        devices.clone(),
        targets.clone(),
        registry.clone(),
        agents,
        metrics,
        Events::new(calls.clone(), identity),
        tenancy,
        poke_target_tx,
    ));

    let device_run = device_ctl
        .reconcile_on(node_devices)
        .run(device::reconcile, device::error_policy, ctx.clone())
        .for_each(reporter("Device"));
    let target_run = target_ctl
        .reconcile_on(futures::stream::select(
            node_targets,
            UnboundedReceiverStream::new(poke_target_rx),
        ))
        .run(target::reconcile, target::error_policy, ctx.clone())
        .for_each(reporter("Target"));
    let snapshots_api: Api<DeviceSnapshot> = Api::all(watches.clone());
    let snapshot_run = Controller::new(snapshots_api, watcher::Config::default())
        .with_config(Config::default().concurrency(concurrency))
        .run(snapshot::reconcile, snapshot::error_policy, ctx.clone())
        .for_each(reporter("DeviceSnapshot"));
    let sweeper = crate::sweep::run(ctx.clone());
    tokio::join!(device_run, target_run, snapshot_run, sweeper);
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
    (
        UnboundedReceiverStream::new(dev_rx),
        UnboundedReceiverStream::new(tgt_rx),
    )
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
