//! ListVolumes, GetCapacity and ValidateVolumeCapabilities: reading what the volumes and the
//! agents are.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::ListParams;
use tonic::Status;

use super::capabilities;
use super::capacity;
use super::cluster::{Cluster, get_opt, kube_status};
use super::create::volume;
use super::names::{self, MANAGED_BY, MANAGED_BY_LABEL};
use super::objects::{self, is_managed};
use super::pages;
use super::parameters;
use crate::proto::list_volumes_response::{Entry, VolumeStatus};
use crate::proto::validate_volume_capabilities_response::Confirmed;
use crate::proto::{
    GetCapacityRequest, GetCapacityResponse, ListVolumesRequest, ListVolumesResponse,
    ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
};

pub async fn list_volumes(
    c: &Cluster,
    req: &ListVolumesRequest,
) -> Result<ListVolumesResponse, Status> {
    let after =
        pages::parse_token(&req.starting_token).map_err(|e| Status::aborted(e.to_string()))?;
    if req.max_entries < 0 {
        return Err(Status::invalid_argument("max_entries must not be negative"));
    }
    let lp = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let devices = c
        .devices
        .list(&lp)
        .await
        .map_err(|e| kube_status("listing the driver's Devices", e))?;
    let targets: BTreeMap<String, _> = c
        .targets
        .list(&lp)
        .await
        .map_err(|e| kube_status("listing the driver's Targets", e))?
        .items
        .into_iter()
        .map(|t| (t.name_any(), t))
        .collect();
    let devices: BTreeMap<String, _> = devices
        .items
        .into_iter()
        .map(|d| (d.name_any(), d))
        .filter(|(n, _)| names::is_volume_id(n))
        .collect();
    let ids: Vec<String> = devices.keys().cloned().collect();
    let (page, next_token) = pages::page(&ids, after, req.max_entries);
    let entries = page
        .iter()
        .map(|id| {
            let d = &devices[id];
            let t = targets.get(id);
            let ctx = t.and_then(|t| objects::context(d, t)).unwrap_or_default();
            Entry {
                volume: Some(volume(id, d, ctx)),
                status: Some(VolumeStatus {
                    published_node_ids: t
                        .map(|t| t.spec.acl.initiators.clone())
                        .unwrap_or_default(),
                }),
            }
        })
        .collect();
    Ok(ListVolumesResponse {
        entries,
        next_token,
    })
}

pub async fn get_capacity(
    c: &Cluster,
    req: &GetCapacityRequest,
) -> Result<GetCapacityResponse, Status> {
    let params = parameters::parse(&req.parameters, &c.ports)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if !req.volume_capabilities.is_empty() && capabilities::check(&req.volume_capabilities).is_err()
    {
        // No volume with these capabilities can be made anywhere.
        return Ok(GetCapacityResponse {
            available_capacity: 0,
            maximum_volume_size: Some(0),
            minimum_volume_size: None,
        });
    }
    let space = c.node_space().await?;
    let a = capacity::answer(&space, params.node.as_deref());
    if !a.unknown.is_empty() {
        tracing::debug!(
            nodes = ?a.unknown,
            "capacity unknown for these nodes (their Lease has no {}): not counted",
            spindle_agent_api::lease::CAPACITY_FREE_ANNOTATION
        );
    }
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    Ok(GetCapacityResponse {
        available_capacity: n(a.available),
        maximum_volume_size: Some(n(a.maximum)),
        minimum_volume_size: None,
    })
}

pub async fn validate(
    c: &Cluster,
    req: &ValidateVolumeCapabilitiesRequest,
) -> Result<ValidateVolumeCapabilitiesResponse, Status> {
    let id = &req.volume_id;
    if id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    if req.volume_capabilities.is_empty() {
        return Err(Status::invalid_argument("volume_capabilities is required"));
    }
    let exists = names::is_volume_id(id)
        && get_opt(&c.devices, id)
            .await?
            .is_some_and(|d| is_managed(&d.metadata));
    if !exists {
        return Err(Status::not_found(format!("volume {id} does not exist")));
    }
    let refused = capabilities::check(&req.volume_capabilities)
        .err()
        .map(|e| e.to_string())
        .or_else(|| {
            parameters::parse(&req.parameters, &c.ports)
                .err()
                .map(|e| e.to_string())
        });
    Ok(match refused {
        Some(message) => ValidateVolumeCapabilitiesResponse {
            confirmed: None,
            message,
        },
        None => ValidateVolumeCapabilitiesResponse {
            confirmed: Some(Confirmed {
                volume_context: req.volume_context.clone(),
                volume_capabilities: req.volume_capabilities.clone(),
                parameters: req.parameters.clone(),
                mutable_parameters: Default::default(),
            }),
            message: String::new(),
        },
    })
}
