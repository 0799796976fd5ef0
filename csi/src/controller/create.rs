//! CreateVolume: a CHAP Secret, a Device and a Target, created once per volume name, and the
//! volume's context once both are Ready.

use std::collections::HashMap;

use kube::ResourceExt;
use tonic::Status;

use super::capabilities;
use super::cluster::{Cluster, Step, create_if_absent, get_opt, wait};
use super::names::{self, NAME_ANNOTATION};
use super::objects::{self, Plan};
use super::parameters;
use super::readiness::{Readiness, readiness};
use super::size;
use crate::proto::{CreateVolumeRequest, CreateVolumeResponse, Volume};

/// Annotation on the Device: how its node was chosen.
const PLACEMENT_ANNOTATION: &str = "csi.spindle.dev/placement";

pub async fn create_volume(
    c: &Cluster,
    req: CreateVolumeRequest,
) -> Result<CreateVolumeResponse, Status> {
    let id =
        names::volume_id(&req.name).ok_or_else(|| Status::invalid_argument("name is required"))?;
    let caps = capabilities::check(&req.volume_capabilities)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if req.volume_content_source.is_some() {
        return Err(Status::invalid_argument(
            "volume_content_source: snapshots and clones are not supported",
        ));
    }
    let params = parameters::parse(&req.parameters, &c.ports)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let range = req.capacity_range.as_ref();
    let size = size::volume_size(range, params.block_size)
        .map_err(|e| Status::out_of_range(e.to_string()))?;
    let existing = get_opt(&c.devices, &id).await?;
    let (node, placement) = match (&existing, &params.node) {
        (Some(d), _) => (d.spec.node_name.clone(), None),
        (None, Some(n)) => (n.clone(), Some(format!("{}={n}", parameters::NODE))),
        (None, None) => {
            let space = c.node_space().await?;
            let (node, known) = super::capacity::place(&space)
                .map_err(|e| Status::resource_exhausted(e.to_string()))?;
            let how = if known {
                "the agent with the most free bytes".to_owned()
            } else {
                tracing::warn!(
                    volume = %id, %node,
                    "no agent publishes its free bytes (Lease annotation {}): capacity is unknown, placing the volume on the first node by name",
                    spindle_agent_api::lease::CAPACITY_FREE_ANNOTATION
                );
                "capacity unknown (no agent publishes its free bytes): the first node by name"
                    .to_owned()
            };
            (node, Some(how))
        }
    };
    let plan = Plan {
        id: id.clone(),
        name: req.name.clone(),
        namespace: c.namespace.clone(),
        node,
        size,
        params,
        mode: caps[0].1,
    };
    match &existing {
        Some(d) => {
            if !objects::is_managed(&d.metadata) {
                return Err(Status::already_exists(format!(
                    "Device {}/{id} exists and is not managed by spindle-csi",
                    c.namespace
                )));
            }
            let target = get_opt(&c.targets, &id).await?;
            let diff = plan.differences(d, target.as_ref(), range, plan.params.node.is_some());
            if !diff.is_empty() {
                return Err(Status::already_exists(format!(
                    "volume {:?} (ID {id}) exists with other properties: {}",
                    req.name,
                    diff.join("; ")
                )));
            }
        }
        None => tracing::info!(
            volume = %id, name = %req.name, node = %plan.node, size,
            "creating volume"
        ),
    }
    ensure_objects(c, &plan, placement).await?;
    let volume = wait_ready(c, &id).await?;
    Ok(CreateVolumeResponse {
        volume: Some(volume),
    })
}

/// Creates whichever of the Secret, the Device and the Target is missing (an earlier call may
/// have stopped halfway), in the order the Target needs them.
async fn ensure_objects(c: &Cluster, plan: &Plan, placement: Option<String>) -> Result<(), Status> {
    let secret = {
        let mut rng = rand::rng();
        plan.secret(|| objects::chap_secret(&mut rng))
    };
    if let Some(secret) = secret {
        create_if_absent(&c.secrets, &secret).await?;
    }
    let mut device = plan.device();
    if let Some(how) = placement {
        device
            .annotations_mut()
            .insert(PLACEMENT_ANNOTATION.to_owned(), how);
    }
    if !create_if_absent(&c.devices, &device).await? {
        // Another call created it first: it must be this volume's.
        let d = get_opt(&c.devices, &plan.id).await?;
        let name = d
            .as_ref()
            .and_then(|d| d.annotations().get(NAME_ANNOTATION).cloned());
        if name.as_deref() != Some(plan.name.as_str()) {
            return Err(Status::already_exists(format!(
                "volume ID {} belongs to the volume named {name:?}",
                plan.id
            )));
        }
    }
    create_if_absent(&c.targets, &plan.target()).await?;
    Ok(())
}

/// Waits until the Device and the Target are Ready and report the volume's context.
pub async fn wait_ready(c: &Cluster, id: &str) -> Result<Volume, Status> {
    let what = format!("volume {id}: Device and Target Ready");
    wait(&what, c.ready_timeout, || async {
        let Some(d) = get_opt(&c.devices, id).await? else {
            return Err(Status::aborted(format!(
                "Device {}/{id} was deleted while the volume was being created",
                c.namespace
            )));
        };
        let generation = d.metadata.generation;
        let conditions = d
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        match readiness(&conditions, generation) {
            Readiness::Failed(code, msg) => {
                return Err(Status::new(
                    code,
                    format!("Device {}/{id}: {msg}", c.namespace),
                ));
            }
            Readiness::Pending(s) => return Ok(Step::Wait(format!("Device: {s}"))),
            Readiness::Ready => {}
        }
        let Some(t) = get_opt(&c.targets, id).await? else {
            return Ok(Step::Wait("Target: not created yet".into()));
        };
        let conditions = t
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        match readiness(&conditions, t.metadata.generation) {
            Readiness::Failed(code, msg) => {
                return Err(Status::new(
                    code,
                    format!("Target {}/{id}: {msg}", c.namespace),
                ));
            }
            Readiness::Pending(s) => return Ok(Step::Wait(format!("Target: {s}"))),
            Readiness::Ready => {}
        }
        Ok(match objects::context(&d, &t) {
            Some(ctx) => Step::Done(volume(id, &d, ctx)),
            None => Step::Wait("Ready, but the NAA or the portals are not reported yet".into()),
        })
    })
    .await
}

/// The CSI Volume of a Ready Device.
pub fn volume(id: &str, d: &spindle_crds::Device, ctx: HashMap<String, String>) -> Volume {
    Volume {
        capacity_bytes: i64::try_from(objects::capacity(d)).unwrap_or(i64::MAX),
        volume_id: id.to_owned(),
        volume_context: ctx,
        content_source: None,
        accessible_topology: vec![],
    }
}
