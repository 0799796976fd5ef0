//! The delete protocol, the only place that adds or removes the finalizer `spindle.dev/flush`.
//!
//! Device: `Deleting=True` → `DrainDevice` (fence, finish, flush) → `Flushed=True` with the
//! acknowledgement's counts → `ReleaseDevice` → finalizer removed. Target: `Deleting=True` →
//! `RemoveTarget` → finalizer removed. Every step is idempotent on both sides, and what to do
//! next is decided from what is recorded in the object ([`device_step`], [`target_step`], pure),
//! so an operator killed at any point resumes where it was and never repeats harm.
//!
//! While the agent cannot answer, the finalizer holds (that protects the data) and the condition
//! says since when. Two ways out, each with a Warning Event: the Node object was deleted (the disk
//! went with it), or the annotation `spindle.dev/skip-flush: "true"` (the user accepts the loss).
//!
//! Why not kube-runtime's `finalizer()` helper: it removes the finalizer as soon as the cleanup
//! returns `Ok`, so a cleanup can hold the finalizer only by failing. Here holding is the normal
//! case, not a failure: "waiting for the flush" (the agent unreachable, a flush that failed)
//! requeues with `Ok` and a condition that says why, without counting an error or backing off,
//! and the steps in between record their progress (`Deleting`, `Flushed`) in the status so the
//! next step is decided from the object.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use spindle_agent_api::v1 as api;
use spindle_crds::{ConditionStatus, Device, DeviceStatus, Target, TargetStatus};
use tonic::Code;

use crate::agents::AgentView;
use crate::conditions::{condition_is, kind, reason};
use crate::context::{Ctx, WAIT};
use crate::error::Error;
use crate::objects::{key_of, object_meta, reclaim_policy};
use crate::status::{self, Want};

pub use spindle_crds::words::{FINALIZER, SKIP_FLUSH_ANNOTATION};

/// True when `obj` carries the finalizer.
pub fn has_finalizer(obj: &impl Resource) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

fn skip_flush(obj: &impl Resource) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(SKIP_FLUSH_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Adds the finalizer (first reconcile). A JSON patch with tests on the uid and on the list, so
/// it cannot land on an object re-created under the same name, and a concurrent change makes it
/// fail (and retry) instead of dropping someone else's finalizer. `Ok(false)`: the object is gone
/// (404); the reconcile must stop there, before any agent call.
pub async fn ensure_finalizer<K>(api: &Api<K>, obj: &K) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if has_finalizer(obj) {
        return Ok(true);
    }
    match patch_finalizers(api, obj, add_finalizer_patch(obj)).await {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// The JSON patch that adds the finalizer to exactly this incarnation of `obj` (pure).
fn add_finalizer_patch(obj: &impl Resource) -> serde_json::Value {
    let meta = obj.meta();
    let mut ops = Vec::new();
    if let Some(uid) = &meta.uid {
        ops.push(serde_json::json!({"op": "test", "path": "/metadata/uid", "value": uid}));
    }
    match &meta.finalizers {
        None => ops.extend([
            serde_json::json!({"op": "test", "path": "/metadata/finalizers", "value": null}),
            serde_json::json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}),
        ]),
        Some(list) => ops.extend([
            serde_json::json!({"op": "test", "path": "/metadata/finalizers", "value": list}),
            serde_json::json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}),
        ]),
    }
    serde_json::Value::Array(ops)
}

/// Removes the finalizer: the object goes. Idempotent (a missing object or finalizer is fine).
pub(crate) async fn remove_finalizer<K>(api: &Api<K>, obj: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let list = obj.meta().finalizers.clone().unwrap_or_default();
    let Some(i) = list.iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let mut patch = serde_json::json!([
        {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
    ]);
    // Never the finalizer of an object re-created under the same name.
    if let (Some(uid), Some(ops)) = (&obj.meta().uid, patch.as_array_mut()) {
        ops.insert(
            0,
            serde_json::json!({"op": "test", "path": "/metadata/uid", "value": uid}),
        );
    }
    match patch_finalizers(api, obj, patch).await {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        r => r,
    }
}

async fn patch_finalizers<K>(
    api: &Api<K>,
    obj: &K,
    patch: serde_json::Value,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map(drop)
}

/// The next step of a Device's deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceStep {
    /// The finalizer is gone: nothing left to do.
    Done,
    /// The Node object was deleted and no agent speaks for it: let go without a flush.
    NodeGone,
    /// The user set `spindle.dev/skip-flush: "true"`: let go (releasing by force if possible).
    SkipFlush,
    /// The agent cannot be called: hold the finalizer.
    WaitForAgent,
    /// Ask the agent to drain and flush.
    Drain,
    /// The flush is recorded: release the store, then remove the finalizer.
    Release,
}

/// Decides a Device's next delete step from what is recorded (pure).
pub fn device_step(d: &Device, agent: &AgentView, node_gone: bool, flushed: bool) -> DeviceStep {
    if !has_finalizer(d) {
        DeviceStep::Done
    } else if skip_flush(d) {
        DeviceStep::SkipFlush
    } else if node_gone {
        DeviceStep::NodeGone
    } else if agent.reachable_endpoint().is_none() {
        DeviceStep::WaitForAgent
    } else if flushed {
        DeviceStep::Release
    } else {
        DeviceStep::Drain
    }
}

/// The next step of a Target's deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetStep {
    /// The finalizer is gone.
    Done,
    /// Never placed on a node: nothing to remove.
    NeverPlaced,
    /// The node was deleted.
    NodeGone,
    /// The user set `spindle.dev/skip-flush: "true"`.
    SkipFlush,
    /// The agent cannot be called: hold the finalizer.
    WaitForAgent,
    /// Ask the agent to stop serving it, then remove the finalizer.
    Remove,
}

/// Decides a Target's next delete step (pure). `node` is where it runs (or would run).
pub fn target_step(
    t: &Target,
    node: Option<&str>,
    agent: &AgentView,
    node_gone: bool,
) -> TargetStep {
    if !has_finalizer(t) {
        TargetStep::Done
    } else if node.is_none() {
        TargetStep::NeverPlaced
    } else if agent.reachable_endpoint().is_some() {
        // skip-flush only skips waiting for an agent that cannot answer: one that can stops
        // serving the Target first.
        TargetStep::Remove
    } else if skip_flush(t) {
        TargetStep::SkipFlush
    } else if node_gone {
        TargetStep::NodeGone
    } else {
        TargetStep::WaitForAgent
    }
}

fn unreachable_message(node: &str, agent: &AgentView, what: &str) -> String {
    let since = match &agent.lease {
        Some(l) => format!("unreachable since {} (its Lease expired)", l.expires),
        None => "not registered (no agent Lease)".to_owned(),
    };
    format!(
        "waiting for the agent of node {node:?} to {what}: {since}; the finalizer holds to protect \
         the data. If the node is gone for good delete its Node object, or set the annotation \
         {SKIP_FLUSH_ANNOTATION}: \"true\" to accept losing unflushed writes"
    )
}

fn seconds_since(ts: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<f64> {
    ts.map(|t| Timestamp::now().duration_since(t.0).as_secs_f64().max(0.0))
}

/// Runs the next steps of a Device's deletion.
pub async fn device(ctx: &Arc<Ctx>, d: &Device) -> Result<Action, Error> {
    let api: Api<Device> = Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    let node = d.spec.node_name.clone();
    let agent = ctx.registry.view(&node);
    let uid = d.uid().unwrap_or_default();
    let conditions = d
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let flushed = condition_is(&conditions, kind::FLUSHED, ConditionStatus::True)
        || ctx
            .flushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&uid);
    let step = device_step(d, &agent, ctx.registry.node_gone(&node), flushed);
    tracing::debug!(device = key_of(d), ?step, "delete step");
    pending(ctx, "Device", d, step == DeviceStep::Done);
    let mut w = DeviceWriter::new(ctx, &api, d, &node, &agent, flushed);
    match step {
        DeviceStep::Done => return Ok(Action::await_change()),
        DeviceStep::NodeGone => {
            let msg = format!(
                "Node {node:?} was deleted: its disk went with it; removing the finalizer without a flush"
            );
            w.flushed(ConditionStatus::False, reason::NODE_GONE, &msg);
            w.deleting(reason::NODE_GONE, &msg).await?;
            ctx.events.publish(d, true, reason::NODE_GONE, &msg).await;
        }
        DeviceStep::SkipFlush => {
            let mut msg = format!(
                "annotation {SKIP_FLUSH_ANNOTATION}=true: deleting without waiting for the flush; \
                 writes not yet flushed may be lost"
            );
            if let Some(dial) = agent.dial(&node) {
                let req = api::ReleaseDeviceRequest {
                    meta: Some(object_meta(d)),
                    reclaim_policy: reclaim_policy(d.spec.reclaim_policy).into(),
                    force: true,
                };
                match ctx.agents.release_device(dial, req).await {
                    Ok(_) => msg.push_str("; the agent released the store"),
                    Err(e) => msg.push_str(&format!("; the agent did not release the store: {e}")),
                }
            }
            w.flushed(ConditionStatus::False, reason::FLUSH_SKIPPED, &msg);
            w.deleting(reason::FLUSH_SKIPPED, &msg).await?;
            ctx.events
                .publish(d, true, reason::FLUSH_SKIPPED, &msg)
                .await;
        }
        DeviceStep::WaitForAgent => {
            let msg = unreachable_message(&node, &agent, "drain and flush the Device");
            w.deleting(reason::AGENT_UNREACHABLE, &msg).await?;
            return Ok(Action::requeue(WAIT));
        }
        DeviceStep::Drain | DeviceStep::Release => {
            // Every answer below, NOT_FOUND included, is from the agent verified as `node`'s.
            let dial = agent.dial(&node).unwrap_or_default();
            if step == DeviceStep::Drain {
                w.deleting(
                    reason::DELETING,
                    format!(
                        "fencing the Device on node {node:?}, finishing accepted commands, flushing"
                    ),
                )
                .await?;
                let started = Instant::now();
                match ctx.agents.drain_device(dial, object_meta(d)).await {
                    Ok(ack) => w.flushed(
                        ConditionStatus::True,
                        reason::FLUSH_ACKNOWLEDGED,
                        &ack_message(&node, &ack),
                    ),
                    Err(e) if e.refused_code() == Some(Code::NotFound) => w.flushed(
                        ConditionStatus::True,
                        reason::NEVER_SERVED,
                        &format!(
                            "the agent of node {node:?} never had this Device: nothing to flush"
                        ),
                    ),
                    Err(e) if e.refused_code() == Some(Code::DataLoss) => {
                        let msg = format!(
                            "the flush failed on node {node:?}: {e}; the finalizer holds. Set \
                             {SKIP_FLUSH_ANNOTATION}: \"true\" to delete anyway"
                        );
                        w.flushed(ConditionStatus::False, reason::FLUSH_FAILED, &msg);
                        w.deleting(reason::FLUSH_FAILED, &msg).await?;
                        return Ok(Action::requeue(crate::context::RESYNC));
                    }
                    Err(e) => {
                        let why = e.reason();
                        w.deleting(why, format!("draining on node {node:?}: {e}; retrying"))
                            .await?;
                        return Err(e.into());
                    }
                }
                observe(ctx, "Device", "drain", started);
                ctx.flushed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(uid.clone());
                w.deleting(
                    reason::DELETING,
                    format!("flushed; releasing the store on node {node:?}"),
                )
                .await?;
            }
            let started = Instant::now();
            let req = api::ReleaseDeviceRequest {
                meta: Some(object_meta(d)),
                reclaim_policy: reclaim_policy(d.spec.reclaim_policy).into(),
                force: false,
            };
            match ctx.agents.release_device(dial, req).await {
                Ok(r) => {
                    observe(ctx, "Device", "release", started);
                    let what = if r.file_removed {
                        format!(
                            "released; file {} removed (reclaimPolicy Delete)",
                            r.backing_path
                        )
                    } else if r.adopted_kept {
                        format!(
                            "released; file {} kept although reclaimPolicy is Delete: it existed \
                             before this Device adopted it, and the agent removes only files it \
                             created",
                            r.backing_path
                        )
                    } else if r.known && erased_on_release(d) {
                        // The agent answers a Delete of a block device only once it is erased.
                        format!(
                            "released; block device {} erased (reclaimPolicy Delete)",
                            r.backing_path
                        )
                    } else if r.known {
                        format!("released; backing store {} kept", r.backing_path)
                    } else {
                        "nothing to release: the agent no longer had it".to_owned()
                    };
                    ctx.events.publish(d, false, reason::RELEASED, what).await;
                }
                Err(e) if e.refused_code() == Some(Code::FailedPrecondition) => {
                    // The agent does not consider it flushed: drain again (harmless, idempotent).
                    ctx.flushed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&uid);
                    w.flushed(
                        ConditionStatus::False,
                        reason::NOT_FLUSHED,
                        &format!("the agent refused the release: {e}; draining again"),
                    );
                    w.deleting(reason::DELETING, "draining again").await?;
                    return Err(e.into());
                }
                Err(e) => {
                    let why = e.reason();
                    w.deleting(why, format!("releasing on node {node:?}: {e}; retrying"))
                        .await?;
                    return Err(e.into());
                }
            }
        }
    }
    remove_finalizer(&api, d).await?;
    finished(ctx, "Device", d);
    Ok(Action::await_change())
}

/// Runs the next steps of a Target's deletion. `node` is where it runs or would run.
pub async fn target(ctx: &Arc<Ctx>, t: &Target, node: Option<String>) -> Result<Action, Error> {
    let api: Api<Target> = Api::namespaced(ctx.client.clone(), &t.namespace().unwrap_or_default());
    let agent = node
        .as_deref()
        .map(|n| ctx.registry.view(n))
        .unwrap_or_default();
    let gone = node.as_deref().is_some_and(|n| ctx.registry.node_gone(n));
    let step = target_step(t, node.as_deref(), &agent, gone);
    tracing::debug!(target = key_of(t), ?step, "delete step");
    pending(ctx, "Target", t, step == TargetStep::Done);
    let node = node.unwrap_or_default();
    match step {
        TargetStep::Done => return Ok(Action::await_change()),
        TargetStep::NeverPlaced => {}
        TargetStep::NodeGone | TargetStep::SkipFlush => {
            let (why, msg) = if step == TargetStep::NodeGone {
                (
                    reason::NODE_GONE,
                    format!("Node {node:?} was deleted; removing the finalizer"),
                )
            } else {
                (
                    reason::FLUSH_SKIPPED,
                    format!("annotation {SKIP_FLUSH_ANNOTATION}=true: removing without the agent"),
                )
            };
            target_deleting(ctx, &api, t, &node, &agent, why, msg.clone()).await?;
            ctx.events.publish(t, true, why, msg).await;
        }
        TargetStep::WaitForAgent => {
            target_deleting(
                ctx,
                &api,
                t,
                &node,
                &agent,
                reason::AGENT_UNREACHABLE,
                unreachable_message(&node, &agent, "stop serving the Target"),
            )
            .await?;
            return Ok(Action::requeue(WAIT));
        }
        TargetStep::Remove => {
            target_deleting(
                ctx,
                &api,
                t,
                &node,
                &agent,
                reason::DELETING,
                format!("closing its sessions on node {node:?}"),
            )
            .await?;
            let dial = agent.dial(&node).unwrap_or_default();
            let started = Instant::now();
            match ctx.agents.remove_target(dial, object_meta(t)).await {
                Ok(r) => {
                    observe(ctx, "Target", "remove", started);
                    let note = if r.known {
                        format!(
                            "no longer served on node {node:?}; {} session(s) closed",
                            r.sessions_closed
                        )
                    } else {
                        format!("the agent of node {node:?} was not serving it")
                    };
                    ctx.events.publish(t, false, reason::REMOVED, note).await;
                }
                Err(e) if skip_flush(t) => {
                    // The user accepted going without the agent; the orphan sweep removes it
                    // when the agent answers again.
                    let msg = format!(
                        "annotation {SKIP_FLUSH_ANNOTATION}=true: the agent of node {node:?} did \
                         not remove it ({e}); removing the finalizer anyway"
                    );
                    target_deleting(
                        ctx,
                        &api,
                        t,
                        &node,
                        &agent,
                        reason::FLUSH_SKIPPED,
                        msg.clone(),
                    )
                    .await?;
                    ctx.events
                        .publish(t, true, reason::FLUSH_SKIPPED, msg)
                        .await;
                }
                Err(e) => {
                    let why = e.reason();
                    target_deleting(
                        ctx,
                        &api,
                        t,
                        &node,
                        &agent,
                        why,
                        format!("removing on node {node:?}: {e}; retrying"),
                    )
                    .await?;
                    return Err(e.into());
                }
            }
        }
    }
    remove_finalizer(&api, t).await?;
    finished(ctx, "Target", t);
    ctx.claimants.forget(t);
    // Targets refused a Device this one held may have it now.
    crate::context::poke_claimants(ctx, t);
    Ok(Action::await_change())
}

async fn target_deleting(
    ctx: &Arc<Ctx>,
    api: &Api<Target>,
    t: &Target,
    node: &str,
    agent: &AgentView,
    why: &str,
    msg: String,
) -> Result<(), Error> {
    let old = t.status.clone().unwrap_or_default();
    let mut wants = vec![
        Want::new(
            kind::READY,
            ConditionStatus::False,
            reason::DELETING,
            "the Target is being deleted",
        ),
        Want::new(kind::DELETING, ConditionStatus::True, why, msg),
    ];
    if !node.is_empty() {
        wants.insert(
            1,
            status::agent_reachable(node, Some(agent), "the node of its Devices"),
        );
    }
    let conditions =
        status::next_conditions(&old.conditions, &wants, t.meta().generation, &status::now());
    let new = TargetStatus {
        conditions,
        ..old.clone()
    };
    status::update(&ctx.events, api, t, &old, &new).await?;
    Ok(())
}

/// Builds and writes a deleting Device's status (only when it changed).
struct DeviceWriter<'a> {
    ctx: &'a Arc<Ctx>,
    api: &'a Api<Device>,
    d: &'a Device,
    node: &'a str,
    agent: &'a AgentView,
    /// The status last written (or read).
    current: DeviceStatus,
    flushed: Want,
}

impl<'a> DeviceWriter<'a> {
    fn new(
        ctx: &'a Arc<Ctx>,
        api: &'a Api<Device>,
        d: &'a Device,
        node: &'a str,
        agent: &'a AgentView,
        flushed: bool,
    ) -> Self {
        let current = d.status.clone().unwrap_or_default();
        let flushed = current
            .conditions
            .iter()
            .find(|c| c.type_ == kind::FLUSHED && (flushed || c.status != ConditionStatus::True))
            .map(|c| Want::new(kind::FLUSHED, c.status, &c.reason, c.message.clone()))
            .unwrap_or_else(|| {
                Want::new(
                    kind::FLUSHED,
                    ConditionStatus::False,
                    reason::NOT_FLUSHED,
                    "waiting for the agent's flush acknowledgement",
                )
            });
        Self {
            ctx,
            api,
            d,
            node,
            agent,
            current,
            flushed,
        }
    }

    fn flushed(&mut self, status: ConditionStatus, why: &str, msg: &str) {
        self.flushed = Want::new(kind::FLUSHED, status, why, msg);
    }

    async fn deleting(&mut self, why: &str, msg: impl Into<String>) -> Result<(), Error> {
        let wants = [
            Want::new(
                kind::READY,
                ConditionStatus::False,
                reason::DELETING,
                "the Device is being deleted",
            ),
            status::agent_reachable(self.node, Some(self.agent), "spec.nodeName"),
            Want::new(kind::DELETING, ConditionStatus::True, why, msg),
            self.flushed.clone(),
        ];
        let conditions = status::next_conditions(
            &self.current.conditions,
            &wants,
            self.d.meta().generation,
            &status::now(),
        );
        let new = DeviceStatus {
            conditions,
            ..self.current.clone()
        };
        status::update(&self.ctx.events, self.api, self.d, &self.current, &new).await?;
        self.current = new;
        Ok(())
    }
}

/// A block device under reclaim policy Delete: the agent erases it before it answers a release.
fn erased_on_release(d: &Device) -> bool {
    d.spec.source.block.is_some() && d.spec.reclaim_policy == spindle_crds::ReclaimPolicy::Delete
}

fn ack_message(node: &str, ack: &api::DrainAck) -> String {
    let luns = if ack.target.is_empty() {
        "no Target used it".to_owned()
    } else {
        format!("LUN {:?} of Target {}", ack.luns, ack.target)
    };
    let at = Timestamp::from_millisecond(ack.flushed_at_unix_ms)
        .map(|t| t.to_string())
        .unwrap_or_default();
    format!(
        "the agent of node {node:?} acknowledged the flush at {at}: {} command(s) accepted before \
         the fence finished, {} refused by the fence, {:.1} ms from fence to flush ({luns})",
        ack.drained_commands,
        ack.fenced_commands,
        ack.duration_micros as f64 / 1000.0
    )
}

fn observe(ctx: &Ctx, kind: &str, phase: &str, started: Instant) {
    ctx.metrics
        .delete_phases
        .with_label_values(&[kind, phase])
        .inc();
    ctx.metrics
        .delete_seconds
        .with_label_values(&[kind, phase])
        .observe(started.elapsed().as_secs_f64());
}

/// Keeps the operator's pending-deletion gauges current (`done`: nothing left to do).
fn pending(ctx: &Ctx, kind: &'static str, obj: &impl Resource, done: bool) {
    let uid = obj.meta().uid.as_deref().unwrap_or_default();
    if done {
        ctx.metrics.delete_done(uid);
    } else {
        let waited = seconds_since(obj.meta().deletion_timestamp.as_ref()).unwrap_or(0.0);
        ctx.metrics.delete_pending(kind, uid, waited);
    }
}

fn finished(ctx: &Ctx, kind: &str, obj: &impl Resource) {
    ctx.metrics
        .delete_done(obj.meta().uid.as_deref().unwrap_or_default());
    ctx.metrics
        .delete_phases
        .with_label_values(&[kind, "total"])
        .inc();
    if let Some(s) = seconds_since(obj.meta().deletion_timestamp.as_ref()) {
        ctx.metrics
            .delete_seconds
            .with_label_values(&[kind, "total"])
            .observe(s);
    }
    tracing::info!(object = key_of(obj), "{kind} deleted: finalizer removed");
}

#[cfg(test)]
mod tests;
