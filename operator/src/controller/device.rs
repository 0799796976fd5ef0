//! Device reconcile: fetch (the Device, its node's agent, the Targets naming it) → validate and
//! build the request ([`crate::desired::plan_device`]) → `ApplyDevice` → status. Deletion goes
//! to [`crate::delete::device`].

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use spindle_crds::{Device, DeviceStatus, Target};

use crate::agent_client::AgentError;
use crate::conditions::Problem;
use crate::context::{Ctx, RESYNC, WAIT};
use crate::desired;
use crate::error::Error;
use crate::objects::key_of;
use crate::status;

const KIND: &str = "Device";

/// Entry point from the controller runtime.
pub async fn reconcile(d: Arc<Device>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    super::timed(&ctx, KIND, d.as_ref(), async {
        if d.meta().deletion_timestamp.is_some() {
            crate::delete::device(&ctx, &d).await
        } else {
            apply(&ctx, &d).await
        }
    })
    .await
}

/// Backoff after a failed reconcile.
pub fn error_policy(d: Arc<Device>, e: &Error, ctx: Arc<Ctx>) -> Action {
    super::backoff_action(&ctx, KIND, d.as_ref(), e)
}

async fn apply(ctx: &Arc<Ctx>, d: &Device) -> Result<Action, Error> {
    let api: Api<Device> = Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    if !crate::delete::ensure_finalizer(&api, d).await? {
        // Deleted since the cache saw it: nothing to tell any agent.
        return Ok(Action::await_change());
    }
    let node = d.spec.node_name.clone();
    let agents = ctx.registry.snapshot();
    let plan = desired::plan_device(d, &agents);
    let old = d.status.clone().unwrap_or_default();
    let mut new = DeviceStatus {
        used_by: used_by(ctx, d),
        ..old.clone()
    };
    let mut problems = plan.problems;
    let mut result = Ok(());
    let mut request = plan.request;
    if let (Some(req), Some(clone)) = (request.as_mut(), d.spec.source.snapshot.as_ref())
        && let Err(p) = super::snapshot::clone_source(ctx, d, &clone.name, req).await?
    {
        problems.push(p);
        request = None;
    }
    if let (Some(req), Some(dial)) = (request, agents.get(&node).and_then(|a| a.dial(&node))) {
        match ctx.agents.apply_device(dial, req).await {
            Ok(r) => {
                if let Some(s) = r.status {
                    new.capacity_bytes = Some(s.capacity_bytes);
                    new.serial = Some(s.serial).filter(|s| !s.is_empty());
                    new.naa = Some(s.naa).filter(|s| !s.is_empty());
                }
            }
            Err(e) => {
                problems.push(agent_problem(&node, &e));
                if e.is_transient() {
                    result = Err(e);
                }
            }
        }
    }
    let reach = status::agent_reachable(&node, agents.get(&node), "spec.nodeName");
    let ready = status::ready(&problems, || {
        format!(
            "served by the agent of node {node:?} ({} bytes)",
            new.capacity_bytes.unwrap_or_default()
        )
    });
    new.conditions = status::next_conditions(
        &old.conditions,
        &[ready, reach],
        d.meta().generation,
        &status::now(),
    );
    status::update(&ctx.events, &api, d, &old, &new).await?;
    result?;
    Ok(Action::requeue(if problems.is_empty() {
        RESYNC
    } else {
        WAIT
    }))
}

/// A failed agent call as a problem (by the refusal's typed reason, never its text).
pub fn agent_problem(node: &str, e: &AgentError) -> Problem {
    use spindle_agent_api::v1::ErrorReason;
    let message = match e.detail() {
        Some(d) if d.reason() == ErrorReason::BackingStoreInUse => format!(
            "the backing store is already used by Device {} (uid {}) on node {node:?}; a \
             backing store has one owner: use another path or device, or delete that Device \
             (the agent: {e})",
            d.owner, d.owner_uid
        ),
        Some(d) if d.reason() == ErrorReason::BackingStoreMissing => format!(
            "this Device was served before and its backing store is gone from node {node:?}; \
             nothing was created (no blank disk under its identity) and its LUN is not served: \
             put the store back (the next reconcile serves it again) or delete the Device (the \
             agent: {e})"
        ),
        Some(d) if d.reason() == ErrorReason::NoSpace => format!(
            "the backing file could not grow to spec.source.file.sizeBytes on node {node:?}; \
             the old size is kept and still served; free space in the agent's data dir on that \
             node: the operator retries (the agent: {e})"
        ),
        _ => format!("the agent of node {node:?}: {e}"),
    };
    Problem {
        reason: e.reason(),
        message,
    }
}

/// The Target (namespace/name) exporting this Device, if any.
fn used_by(ctx: &Ctx, d: &Device) -> Vec<String> {
    let ns = d.namespace();
    let targets = ctx.targets.state();
    let same_ns: Vec<&Target> = targets
        .iter()
        .map(AsRef::as_ref)
        .filter(|t: &&Target| t.namespace() == ns)
        .collect();
    desired::device_owner(d, &same_ns)
        .map(|t| vec![key_of(t)])
        .unwrap_or_default()
}
