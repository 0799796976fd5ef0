//! Standalone mode: serve Device and Target manifests from a folder, no Kubernetes.

pub mod manifest;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::DrainState;
use crate::node::records::DeviceRecord;
use crate::node::{Node, NodeError};
use manifest::{Origin, Problem};
use plan::Plan;

/// Makes the node serve what the folder says now (SIGHUP): Devices gone from the manifests are
/// deleted as in a cluster — drained (fence, finish, flush), then released (file removed under
/// `reclaimPolicy: Delete`) — Targets gone are stopped, and the rest is applied. Returns how
/// many Targets are served.
pub async fn reconcile(node: &Node, plan: Plan) -> usize {
    let view = node.view().await;
    let wanted_devices: BTreeSet<&str> = plan
        .devices
        .iter()
        .map(|(_, d)| d.id.uid.as_str())
        .collect();
    let wanted_targets: BTreeSet<&str> = plan
        .targets
        .iter()
        .map(|(_, t)| t.id.uid.as_str())
        .collect();
    for d in view
        .devices
        .iter()
        .filter(|d| d.state != DrainState::Released && !wanted_devices.contains(d.id.uid.as_str()))
    {
        let key = d.id.key();
        match node.drain_device(&d.id).await {
            Ok(ack) => {
                tracing::info!(
                    device = %key, drained_commands = ack.drained_commands,
                    fenced_commands = ack.fenced_commands, "Device removed from the manifests: drained"
                );
                match node.release_device(&d.id, None, false).await {
                    Ok(r) => {
                        tracing::info!(device = %key, file_removed = r.file_removed, "Device released")
                    }
                    Err(e) => tracing::error!(device = %key, "release failed: {e}"),
                }
            }
            Err(e) => tracing::error!(device = %key, "drain failed, the Device stays: {e}"),
        }
    }
    for t in view
        .targets
        .iter()
        .filter(|t| !wanted_targets.contains(t.id.uid.as_str()))
    {
        match node.remove_target(&t.id).await {
            Ok(_) => {
                tracing::info!(target = %t.id.key(), "Target removed from the manifests: stopped")
            }
            Err(e) => tracing::error!(target = %t.id.key(), "stopping failed: {e}"),
        }
    }
    serve(node, plan).await
}

/// Applies the plan to the node, logging each object it refuses as one problem line.
/// Returns how many Targets are served. Each Target follows its own Devices, so a node whose
/// open files run out (a served Device holds one descriptor) serves whole Targets up to its
/// limit and refuses the rest, instead of opening every Device first and serving none.
pub async fn serve(node: &Node, plan: Plan) -> usize {
    let mut devices: BTreeMap<String, _> = plan
        .devices
        .into_iter()
        .map(|(o, d)| (d.id.key(), (o, d)))
        .collect();
    let mut served = 0;
    for (o, t) in plan.targets {
        for l in &t.luns {
            if let Some((o, d)) = devices.remove(&t.device_key(l)) {
                apply_device(node, &o, d).await;
            }
        }
        let object = format!("Target {}", t.id.key());
        match node.apply_target(t).await {
            Ok(_) => served += 1,
            Err(e) => tracing::error!("{}", problem(&o, object, e)),
        }
    }
    for (o, d) in devices.into_values() {
        apply_device(node, &o, d).await;
    }
    served
}

async fn apply_device(node: &Node, o: &Origin, d: DeviceRecord) {
    let object = format!("Device {}", d.id.key());
    if let Err(e) = node.apply_device(d).await {
        tracing::error!("{}", problem(o, object, e));
    }
}

fn problem(o: &Origin, object: String, e: NodeError) -> Problem {
    let (field, message) = match e {
        NodeError::Invalid { field, message } | NodeError::Precondition { field, message } => {
            (field, message)
        }
        e => (String::new(), e.to_string()),
    };
    Problem {
        file: o.file.clone(),
        object,
        field,
        message,
    }
}
