//! Target reconcile: fetch (the Target, its namespace's Devices and Targets, the agents, the
//! CHAP Secret) → validate and build the request ([`crate::desired::plan_target`]) →
//! `ApplyTarget` (after `RemoveTarget` on the node it leaves, if it moved) → status. Deletion goes
//! to [`crate::delete::target`].

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use spindle_crds::{ConditionStatus, Device, Target, TargetStatus};

use super::device::agent_problem;
use crate::conditions::{kind, reason};
use crate::context::{Ctx, RESYNC, WAIT};
use crate::desired::{self, ChapInput, TargetWorld};
use crate::error::Error;
use crate::objects::{key_of, object_meta};
use crate::status::{self, Want};

const KIND: &str = "Target";

/// Entry point from the controller runtime.
pub async fn reconcile(t: Arc<Target>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    super::timed(&ctx, KIND, t.as_ref(), async {
        if t.meta().deletion_timestamp.is_some() {
            let node = placed_node(&ctx, &t);
            crate::delete::target(&ctx, &t, node).await
        } else {
            apply(&ctx, &t).await
        }
    })
    .await
}

/// Backoff after a failed reconcile.
pub fn error_policy(t: Arc<Target>, e: &Error, ctx: Arc<Ctx>) -> Action {
    super::backoff_action(&ctx, KIND, t.as_ref(), e)
}

/// Where the Target runs (its status), or would run (its first LUN's Device's node).
fn placed_node(ctx: &Ctx, t: &Target) -> Option<String> {
    if let Some(n) = t.status.as_ref().and_then(|s| s.node.clone()) {
        return Some(n);
    }
    let ns = t.namespace();
    let devices = ctx.devices.state();
    t.spec.luns.iter().find_map(|l| {
        devices
            .iter()
            .find(|d| d.namespace() == ns && d.name_any() == l.device_ref)
            .map(|d| d.spec.node_name.clone())
    })
}

async fn chap_input(ctx: &Ctx, t: &Target) -> Result<ChapInput, Error> {
    let Some(chap) = &t.spec.chap else {
        return Ok(ChapInput::NotUsed);
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &t.namespace().unwrap_or_default());
    Ok(match api.get_opt(&chap.secret_ref).await? {
        None => ChapInput::Missing,
        Some(s) => {
            let mut data = s.data.unwrap_or_default();
            // stringData is write-only in the API, but a Secret read from elsewhere may carry it.
            for (k, v) in s.string_data.unwrap_or_default() {
                data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
            }
            ChapInput::Secret(data.into_iter().collect::<BTreeMap<_, _>>())
        }
    })
}

async fn apply(ctx: &Arc<Ctx>, t: &Target) -> Result<Action, Error> {
    let ns = t.namespace();
    let api: Api<Target> = Api::namespaced(ctx.client.clone(), &ns.clone().unwrap_or_default());
    if !crate::delete::ensure_finalizer(&api, t).await? {
        // Deleted since the cache saw it: nothing to tell any agent.
        return Ok(Action::await_change());
    }
    let devices = ctx.devices.state();
    let devices: Vec<&Device> = devices
        .iter()
        .map(AsRef::as_ref)
        .filter(|d: &&Device| d.namespace() == ns)
        .collect();
    let targets = ctx.targets.state();
    let targets: Vec<&Target> = targets
        .iter()
        .map(AsRef::as_ref)
        .filter(|o: &&Target| o.namespace() == ns)
        .collect();
    let agents = ctx.registry.snapshot();
    let chap = chap_input(ctx, t).await?;
    let world = TargetWorld {
        devices: &devices,
        targets: &targets,
        agents: &agents,
        chap: &chap,
        tenancy: &ctx.tenancy,
    };
    let plan = desired::plan_target(t, &world);
    ctx.claimants.record(t, plan.claimed_by.clone());
    let old = t.status.clone().unwrap_or_default();
    let mut problems = plan.problems;
    let mut result = Ok(());

    // Moved to another node: stop serving it on the old one first (an unreachable old agent is
    // left to the orphan sweep when it comes back).
    if let (Some(prev), Some(next)) = (old.node.as_deref(), plan.node.as_deref())
        && prev != next
        && let Some(dial) = agents.get(prev).and_then(|a| a.dial(prev))
    {
        match ctx.agents.remove_target(dial, object_meta(t)).await {
            Ok(_) => tracing::info!(target = key_of(t), "moved from node {prev} to {next}"),
            Err(e) => problems.push(agent_problem(prev, &e)),
        }
    }

    let mut new = TargetStatus {
        iqn: Some(t.effective_iqn()),
        node: plan.node.clone().or(old.node.clone()),
        observed_generation: t.meta().generation,
        ..old.clone()
    };
    if plan.withdraw {
        withdraw(
            ctx,
            t,
            &[old.node.as_deref(), plan.node.as_deref()],
            &mut problems,
        )
        .await;
        new.portals.clear();
        new.sessions = 0;
    }
    let node = plan.node.clone().unwrap_or_default();
    let dial = agents.get(&node).and_then(|a| a.dial(&node));
    if let (Some(req), Some(dial)) = (plan.request, dial) {
        let luns = req.spec.as_ref().map_or(0, |s| s.luns.len());
        match ctx.agents.apply_target(dial, req).await {
            Ok(r) => {
                let s = r.status.unwrap_or_default();
                new.portals = s.portals;
                new.sessions = u32::try_from(s.sessions.len()).unwrap_or(u32::MAX);
                new.qos = s.qos.map(crate::desired::qos_from_api);
                new.node = Some(node.clone());
                tracing::debug!(target = key_of(t), luns, "applied");
            }
            Err(e) => {
                problems.push(agent_problem(&node, &e));
                if e.is_transient() {
                    result = Err(e);
                }
            }
        }
    }
    if new.portals.is_empty()
        && !plan.withdraw
        && let Some(portal) = agents
            .get(&node)
            .and_then(|a| a.lease.as_ref())
            .map(|l| l.portal.clone())
            .filter(|p| !p.is_empty())
    {
        new.portals = vec![portal];
    }
    let reach = if node.is_empty() {
        Want::new(
            kind::AGENT_REACHABLE,
            ConditionStatus::Unknown,
            reason::NO_LUNS,
            "no node yet: the Target runs on the node of its Devices",
        )
    } else {
        status::agent_reachable(&node, agents.get(&node), "the node of its Devices")
    };
    let ready = status::ready(&problems, || {
        format!(
            "serving {} on node {node:?} at {} with {} LUN(s)",
            t.effective_iqn(),
            new.portals.join(", "),
            t.spec.luns.len()
        )
    });
    new.conditions = status::next_conditions(
        &old.conditions,
        &[ready, reach],
        t.meta().generation,
        &status::now(),
    );
    status::update(&ctx.events, &api, t, &old, &new).await?;
    if old.observed_generation != t.meta().generation {
        // A changed LUN list may free a Device another Target waits for.
        crate::context::poke_claimants(ctx, t);
    }
    result?;
    Ok(Action::requeue(if problems.is_empty() {
        RESYNC
    } else {
        WAIT
    }))
}

/// Stops serving a Target whose IQN or port its namespace may not use, on the nodes where it ran
/// or would run: it may have been served before the rules (or a grant) changed. Idempotent; an
/// unreachable agent is tried again at the next reconcile (refused Targets come back every
/// [`WAIT`]).
async fn withdraw(
    ctx: &Ctx,
    t: &Target,
    nodes: &[Option<&str>],
    problems: &mut Vec<crate::conditions::Problem>,
) {
    let agents = ctx.registry.snapshot();
    let mut done: Vec<&str> = Vec::new();
    for node in nodes.iter().flatten().copied() {
        if done.contains(&node) {
            continue;
        }
        done.push(node);
        let Some(dial) = agents.get(node).and_then(|a| a.dial(node)) else {
            continue;
        };
        match ctx.agents.remove_target(dial, object_meta(t)).await {
            Ok(r) if r.known => tracing::warn!(
                target = key_of(t),
                node,
                "no longer served: its namespace may not use its IQN or port"
            ),
            Ok(_) => {}
            Err(e) => problems.push(agent_problem(node, &e)),
        }
    }
}
