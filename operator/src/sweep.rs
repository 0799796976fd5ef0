//! The orphan sweep: when an agent (re)registers — it becomes reachable, moves, or renews with a
//! new acquire time — and at the start of every leadership term, compare what it serves
//! (`GetStatus`) with the cluster, and take away what the cluster no longer has: Targets are
//! removed, Devices are drained and released with reclaim policy **Retain** (an orphan's data is
//! never deleted; the file stays on the node). Each removal is logged.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use spindle_agent_api::v1 as api;
use tokio::sync::broadcast::error::RecvError;

use crate::agent_client::AgentError;
use crate::context::Ctx;
use spindle_agent_api::pinning::Dial;

/// A sweep that failed (agent gone again) is tried again after this long.
const RETRY: Duration = Duration::from_secs(30);

/// Runs sweeps as agents register, until dropped.
pub async fn run(ctx: Arc<Ctx>) {
    let mut changes = ctx.registry.subscribe();
    ctx.registry.wait_synced().await;
    let _ = ctx.devices.wait_until_ready().await;
    let _ = ctx.targets.wait_until_ready().await;
    // (endpoint, acquire time, key) swept last, per node; when a sweep failed, the error and when.
    let mut swept: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    let mut failed: BTreeMap<String, (String, Instant)> = BTreeMap::new();
    loop {
        for (node, view) in ctx.registry.snapshot() {
            let Some(lease) = view.lease.as_ref().filter(|l| l.reachable) else {
                swept.remove(&node);
                failed.remove(&node);
                continue;
            };
            let registration = (
                lease.endpoint.clone(),
                lease.acquired.clone(),
                lease.api_key.clone(),
            );
            let too_soon = failed
                .get(&node)
                .is_some_and(|(_, at)| at.elapsed() < RETRY);
            if swept.get(&node) == Some(&registration) || too_soon {
                continue;
            }
            let dial = Dial {
                node: &node,
                endpoint: &lease.endpoint,
                key: &lease.api_key,
            };
            match sweep(&ctx, dial).await {
                Ok(()) => {
                    swept.insert(node.clone(), registration);
                    failed.remove(&node);
                }
                Err(e) => {
                    let msg = e.to_string();
                    if failed.get(&node).is_none_or(|(m, _)| *m != msg) {
                        tracing::warn!(node, "orphan sweep: {msg} (will try again)");
                    }
                    failed.insert(node, (msg, Instant::now()));
                }
            }
        }
        let next = async { !matches!(changes.recv().await, Err(RecvError::Closed)) };
        tokio::select! {
            open = next => if !open { return },
            () = tokio::time::sleep(RETRY), if !failed.is_empty() => {}
        }
    }
}

/// What an agent's data dir report means for a person, when it is news (pure). The data is
/// protected by "must exist" (Devices served before are refused `BackingStoreMissing`, never
/// created blank); this says why they are refused.
pub fn data_dir_warning(node: &str, status: &api::AgentStatus) -> Option<String> {
    if !status.data_dir_foreign_node.is_empty() {
        return Some(format!(
            "the agent of node {node:?} runs on a data dir that belongs to node {:?}: check the \
             node's mounts and agent.dataDir",
            status.data_dir_foreign_node
        ));
    }
    status.data_dir_created.then(|| {
        format!(
            "the agent of node {node:?} started on a new data dir (no identity, no state): if \
             the node served Devices before, their stores are elsewhere (a mount that failed, a \
             replaced disk, a changed agent.dataDir); those Devices go BackingStoreMissing"
        )
    })
}

/// What to take away from one agent: Targets and Devices it serves that the cluster does not
/// have (pure).
pub fn orphans<'a>(
    status: &'a api::AgentStatus,
    device_uids: &HashSet<String>,
    target_uids: &HashSet<String>,
) -> (Vec<&'a api::TargetStatus>, Vec<&'a api::DeviceStatus>) {
    let uid = |m: &Option<api::ObjectMeta>| m.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
    let targets = status
        .targets
        .iter()
        .filter(|t| !target_uids.contains(&uid(&t.meta)))
        .collect();
    let devices = status
        .devices
        .iter()
        .filter(|d| d.state() != api::DrainState::Released)
        .filter(|d| !device_uids.contains(&uid(&d.meta)))
        .collect();
    (targets, devices)
}

/// Sweeps the agent `dial` reaches, once it is verified as `dial.node`'s (another node's agent
/// would see every Target of its own as an orphan here).
async fn sweep(ctx: &Ctx, dial: Dial<'_>) -> Result<(), AgentError> {
    let node = dial.node;
    let status = ctx.agents.status(dial).await?;
    if let Some(w) = data_dir_warning(node, &status) {
        tracing::warn!(node, data_dir_id = %status.data_dir_id, "{w}");
    }
    let device_uids: HashSet<String> = ctx.devices.state().iter().filter_map(|d| d.uid()).collect();
    // A Target the cluster has but that now runs elsewhere is an orphan here too.
    let target_uids: HashSet<String> = ctx
        .targets
        .state()
        .iter()
        .filter(|t| {
            t.status
                .as_ref()
                .and_then(|s| s.node.as_deref())
                .is_none_or(|n| n == node)
        })
        .filter_map(|t| t.uid())
        .collect();
    let (targets, devices) = orphans(&status, &device_uids, &target_uids);
    let name = |m: &Option<api::ObjectMeta>| {
        m.as_ref()
            .map(|m| format!("{}/{} (uid {})", m.namespace, m.name, m.uid))
            .unwrap_or_default()
    };
    for t in targets {
        let meta = t.meta.clone().unwrap_or_default();
        ctx.agents.remove_target(dial, meta).await?;
        ctx.metrics
            .orphans_removed
            .with_label_values(&["Target"])
            .inc();
        tracing::info!(
            node,
            "orphan sweep: removed Target {} the cluster no longer has",
            name(&t.meta)
        );
    }
    for d in devices {
        let meta = d.meta.clone().unwrap_or_default();
        let failed = d.state() == api::DrainState::Failed;
        if !failed {
            ctx.agents.drain_device(dial, meta.clone()).await?;
        }
        let req = api::ReleaseDeviceRequest {
            meta: Some(meta),
            reclaim_policy: api::ReclaimPolicy::Retain.into(),
            force: failed,
        };
        ctx.agents.release_device(dial, req).await?;
        ctx.metrics
            .orphans_removed
            .with_label_values(&["Device"])
            .inc();
        tracing::info!(
            node,
            "orphan sweep: released Device {} the cluster no longer has; its data stays at {}",
            name(&d.meta),
            d.backing_path
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str) -> Option<api::ObjectMeta> {
        Some(api::ObjectMeta {
            namespace: "default".into(),
            name: uid.into(),
            uid: uid.into(),
            generation: 1,
            leader_term: 0,
        })
    }

    #[test]
    fn only_what_the_cluster_lacks_is_an_orphan() {
        let dev = |uid: &str, state: api::DrainState| api::DeviceStatus {
            meta: meta(uid),
            state: state.into(),
            ..Default::default()
        };
        let tgt = |uid: &str| api::TargetStatus {
            meta: meta(uid),
            ..Default::default()
        };
        let status = api::AgentStatus {
            devices: vec![
                dev("d-known", api::DrainState::Running),
                dev("d-gone", api::DrainState::Running),
                dev("d-gone-flushed", api::DrainState::Flushed),
                dev("d-gone-released", api::DrainState::Released),
            ],
            targets: vec![tgt("t-known"), tgt("t-gone")],
            ..Default::default()
        };
        let devices: HashSet<String> = ["d-known".to_owned()].into();
        let targets: HashSet<String> = ["t-known".to_owned()].into();
        let (t, d) = orphans(&status, &devices, &targets);
        let uids = |m: Vec<&Option<api::ObjectMeta>>| -> Vec<String> {
            m.into_iter()
                .map(|m| m.clone().unwrap_or_default().uid)
                .collect()
        };
        assert_eq!(uids(t.iter().map(|t| &t.meta).collect()), ["t-gone"]);
        assert_eq!(
            uids(d.iter().map(|d| &d.meta).collect()),
            ["d-gone", "d-gone-flushed"]
        );
    }

    #[test]
    fn a_new_or_foreign_data_dir_is_news() {
        let mut st = api::AgentStatus {
            data_dir_id: "ab".into(),
            ..Default::default()
        };
        assert_eq!(data_dir_warning("n1", &st), None, "the dir it had: quiet");
        st.data_dir_created = true;
        let w = data_dir_warning("n1", &st).expect("new");
        assert!(
            w.contains("new data dir") && w.contains("BackingStoreMissing"),
            "{w}"
        );
        st.data_dir_foreign_node = "n2".into();
        let w = data_dir_warning("n1", &st).expect("foreign");
        assert!(w.contains("belongs to node \"n2\""), "{w}");
    }
}
