//! DeviceSnapshot reconcile (docs/snapshots.md): fetch the source Device (in the snapshot's own
//! namespace: `spec.source.deviceName` is a name, never a namespace) → `CreateSnapshot` on its
//! node's agent → status. Deletion: `DeleteSnapshot` on the node that holds the copy, then the
//! finalizer goes. A snapshot taken is never taken again (it is immutable): later reconciles
//! only report it.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use spindle_agent_api::v1 as api;
use spindle_crds::{ConditionStatus, Device, DeviceSnapshot, DeviceSnapshotStatus, SnapshotMethod};

use crate::context::{Ctx, WAIT};
use crate::error::Error;
use crate::objects::object_meta;
use crate::status::{self, Want};

const KIND: &str = "DeviceSnapshot";

/// Ready reasons of a DeviceSnapshot.
pub mod reason {
    pub const TAKEN: &str = "Taken";
    pub const SOURCE_NOT_FOUND: &str = "SourceNotFound";
    pub const SOURCE_NOT_READY: &str = "SourceNotReady";
    pub const SOURCE_REFUSED: &str = "SourceRefused";
    /// A clone's snapshot does not exist, is not ready, or is on another node.
    pub const SNAPSHOT_NOT_READY: &str = "SnapshotNotReady";
}

/// Entry point from the controller runtime.
pub async fn reconcile(s: Arc<DeviceSnapshot>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    super::timed(&ctx, KIND, s.as_ref(), async {
        if s.meta().deletion_timestamp.is_some() {
            delete(&ctx, &s).await
        } else {
            take(&ctx, &s).await
        }
    })
    .await
}

/// Backoff after a failed reconcile.
pub fn error_policy(s: Arc<DeviceSnapshot>, e: &Error, ctx: Arc<Ctx>) -> Action {
    super::backoff_action(&ctx, KIND, s.as_ref(), e)
}

fn api_of(ctx: &Ctx, s: &DeviceSnapshot) -> Api<DeviceSnapshot> {
    Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default())
}

async fn take(ctx: &Arc<Ctx>, s: &DeviceSnapshot) -> Result<Action, Error> {
    let api = api_of(ctx, s);
    if !crate::delete::ensure_finalizer(&api, s).await? {
        return Ok(Action::await_change());
    }
    let old = s.status.clone().unwrap_or_default();
    if old.ready_to_use {
        return Ok(Action::await_change());
    }
    let ns = s.namespace().unwrap_or_default();
    let name = &s.spec.source.device_name;
    // Only the snapshot's own namespace is looked in: another namespace's Device of the same
    // name is never copied.
    let source = kube::runtime::reflector::ObjectRef::<Device>::new(name).within(&ns);
    let mut new = old.clone();
    let mut result: Result<(), Error> = Ok(());
    let want = match ctx.devices.get(&source).map(|d| d.as_ref().clone()) {
        None => not_ready(
            reason::SOURCE_NOT_FOUND,
            format!("no Device {name:?} in namespace {ns:?} (spec.source.deviceName)"),
        ),
        Some(d) if d.meta().deletion_timestamp.is_some() || d.status.is_none() => not_ready(
            reason::SOURCE_NOT_READY,
            format!("Device {name:?} is being deleted or not served yet"),
        ),
        Some(d) => {
            let node = d.spec.node_name.clone();
            let agents = ctx.registry.snapshot();
            match agents.get(&node).and_then(|a| a.dial(&node)) {
                None => not_ready(
                    crate::conditions::reason::AGENT_UNREACHABLE,
                    format!("the agent of node {node:?} (Device {name:?}) is not reachable"),
                ),
                Some(dial) => {
                    let req = api::CreateSnapshotRequest {
                        meta: Some(object_meta(s)),
                        device: Some(object_meta(&d)),
                    };
                    match ctx.agents.create_snapshot(dial, req).await {
                        Ok(r) => {
                            taken(&mut new, &node, &r);
                            Want::new(
                                crate::conditions::kind::READY,
                                ConditionStatus::True,
                                reason::TAKEN,
                                format!(
                                    "copy of Device {name:?} on node {node:?}, writes held {} µs",
                                    r.hold_micros
                                ),
                            )
                        }
                        Err(e) => {
                            let w = not_ready(
                                if e.is_transient() {
                                    crate::conditions::reason::AGENT_UNREACHABLE
                                } else {
                                    reason::SOURCE_REFUSED
                                },
                                format!("the agent of node {node:?}: {e}"),
                            );
                            if e.is_transient() {
                                result = Err(e.into());
                            }
                            w
                        }
                    }
                }
            }
        }
    };
    let ready = new.ready_to_use;
    new.conditions = status::next_conditions(
        &old.conditions,
        &[want],
        s.meta().generation,
        &status::now(),
    );
    status::update(&ctx.events, &api, s, &old, &new).await?;
    result?;
    Ok(if ready {
        Action::await_change()
    } else {
        Action::requeue(WAIT)
    })
}

fn not_ready(reason: &str, message: String) -> Want {
    Want::new(
        crate::conditions::kind::READY,
        ConditionStatus::False,
        reason,
        message,
    )
}

/// The status of a snapshot the agent took.
fn taken(st: &mut DeviceSnapshotStatus, node: &str, r: &api::Snapshot) {
    st.ready_to_use = r.ready;
    st.node_name = Some(node.to_string());
    st.source_uid = r.device.as_ref().map(|d| d.uid.clone());
    st.size_bytes = Some(r.size_bytes);
    st.hold_micros = Some(r.hold_micros);
    st.copied_bytes = Some(r.copied_bytes);
    st.method = match r.method() {
        api::SnapshotMethod::Reflink => Some(SnapshotMethod::Reflink),
        api::SnapshotMethod::Copy => Some(SnapshotMethod::Copy),
        api::SnapshotMethod::Unspecified => None,
    };
    st.creation_time = k8s_openapi::jiff::Timestamp::from_millisecond(r.created_unix_ms)
        .ok()
        .map(|t| t.to_string());
}

/// Removes the copy on its node, then the finalizer. A snapshot never taken has nothing on
/// any node.
async fn delete(ctx: &Arc<Ctx>, s: &DeviceSnapshot) -> Result<Action, Error> {
    let api = api_of(ctx, s);
    if !crate::delete::has_finalizer(s) {
        return Ok(Action::await_change());
    }
    if let Some(node) = s.status.as_ref().and_then(|st| st.node_name.clone()) {
        let agents = ctx.registry.snapshot();
        let Some(dial) = agents.get(&node).and_then(|a| a.dial(&node)) else {
            tracing::info!(snapshot = %crate::objects::key_of(s), %node, "waiting for the agent to delete the copy");
            return Ok(Action::requeue(WAIT));
        };
        ctx.agents.delete_snapshot(dial, object_meta(s)).await?;
    }
    crate::delete::remove_finalizer(&api, s).await?;
    Ok(Action::await_change())
}

/// Resolves a clone's `spec.source.snapshot.name` (in the Device's namespace) into the request:
/// a problem when the snapshot is missing, not ready, or on another node than the Device.
pub async fn clone_source(
    ctx: &Ctx,
    d: &Device,
    name: &str,
    req: &mut api::ApplyDeviceRequest,
) -> Result<Result<(), crate::conditions::Problem>, Error> {
    let ns = d.namespace().unwrap_or_default();
    let snaps: Api<DeviceSnapshot> = Api::namespaced(ctx.client.clone(), &ns);
    let problem = |m: String| {
        Ok(Err(crate::conditions::Problem {
            reason: reason::SNAPSHOT_NOT_READY,
            message: m,
        }))
    };
    let Some(s) = snaps.get_opt(name).await? else {
        return problem(format!(
            "spec.source.snapshot.name: no DeviceSnapshot {name:?} in namespace {ns:?}"
        ));
    };
    let st = s.status.clone().unwrap_or_default();
    if !st.ready_to_use {
        return problem(format!(
            "spec.source.snapshot.name: DeviceSnapshot {name:?} is not ready to use yet"
        ));
    }
    if st.node_name.as_deref() != Some(d.spec.node_name.as_str()) {
        return problem(format!(
            "spec.source.snapshot.name: DeviceSnapshot {name:?} is on node {:?}, not on \
             spec.nodeName {:?}: a clone is made on the node that holds the copy",
            st.node_name.unwrap_or_default(),
            d.spec.node_name
        ));
    }
    if let Some(spec) = req.spec.as_mut() {
        spec.snapshot = Some(api::CloneSource {
            name: name.to_string(),
            uid: s.meta().uid.clone().unwrap_or_default(),
        });
    }
    Ok(Ok(()))
}
