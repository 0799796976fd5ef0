//! Standalone mode: serve Device and Target manifests from a folder, no Kubernetes.

pub mod manifest;
pub mod plan;

use crate::node::{Node, NodeError};
use manifest::{Origin, Problem};
use plan::Plan;

/// Applies the plan to the node, logging each object it refuses as one problem line.
/// Returns how many Targets are served.
pub async fn serve(node: &Node, plan: Plan) -> usize {
    for (o, d) in plan.devices {
        let object = format!("Device {}", d.id.key());
        if let Err(e) = node.apply_device(d).await {
            tracing::error!("{}", problem(&o, object, e));
        }
    }
    let mut served = 0;
    for (o, t) in plan.targets {
        let object = format!("Target {}", t.id.key());
        match node.apply_target(t).await {
            Ok(_) => served += 1,
            Err(e) => tracing::error!("{}", problem(&o, object, e)),
        }
    }
    served
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
