//! The CSI Controller service: each call handed to the module that does it.

use tonic::{Request, Response, Status};

use super::cluster::Cluster;
use super::{create, delete, expand, list, publish};
use crate::proto::controller_server::Controller;
use crate::proto::controller_service_capability::{self, rpc::Type as Rpc};
use crate::proto::*;

/// What the controller offers (no snapshots, clones, health or PUBLISH_READONLY: a read-only
/// publication is recorded, and the node mounts read-only, but the Target serves the LU
/// writable).
pub const CAPABILITIES: [Rpc; 7] = [
    Rpc::CreateDeleteVolume,
    Rpc::PublishUnpublishVolume,
    Rpc::ExpandVolume,
    Rpc::ListVolumes,
    Rpc::ListVolumesPublishedNodes,
    Rpc::GetCapacity,
    Rpc::SingleNodeMultiWriter,
];

/// The Controller service over a cluster.
#[derive(Clone)]
pub struct ControllerService {
    pub cluster: Cluster,
}

type Answer<T> = Result<Response<T>, Status>;

fn unimplemented<T>(what: &str) -> Answer<T> {
    Err(Status::unimplemented(format!(
        "{what} is not supported by Spindle's CSI driver"
    )))
}

/// Logs a failed call (its message names the volume; requests and secrets are never logged).
fn logged<T>(call: &str, r: Result<T, Status>) -> Answer<T> {
    if let Err(s) = &r {
        tracing::warn!(call, code = ?s.code(), "{}", s.message());
    }
    r.map(Response::new)
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Answer<CreateVolumeResponse> {
        logged(
            "CreateVolume",
            create::create_volume(&self.cluster, req.into_inner()).await,
        )
    }

    async fn delete_volume(
        &self,
        req: Request<DeleteVolumeRequest>,
    ) -> Answer<DeleteVolumeResponse> {
        let r = delete::delete_volume(&self.cluster, &req.get_ref().volume_id).await;
        logged("DeleteVolume", r.map(|()| DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        req: Request<ControllerPublishVolumeRequest>,
    ) -> Answer<ControllerPublishVolumeResponse> {
        let r = publish::publish(&self.cluster, req.get_ref()).await;
        logged(
            "ControllerPublishVolume",
            r.map(|publish_context| ControllerPublishVolumeResponse { publish_context }),
        )
    }

    async fn controller_unpublish_volume(
        &self,
        req: Request<ControllerUnpublishVolumeRequest>,
    ) -> Answer<ControllerUnpublishVolumeResponse> {
        let r = publish::unpublish(&self.cluster, req.get_ref()).await;
        logged(
            "ControllerUnpublishVolume",
            r.map(|()| ControllerUnpublishVolumeResponse {}),
        )
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Answer<ValidateVolumeCapabilitiesResponse> {
        logged(
            "ValidateVolumeCapabilities",
            list::validate(&self.cluster, req.get_ref()).await,
        )
    }

    async fn list_volumes(&self, req: Request<ListVolumesRequest>) -> Answer<ListVolumesResponse> {
        logged(
            "ListVolumes",
            list::list_volumes(&self.cluster, req.get_ref()).await,
        )
    }

    async fn controller_list_volume_health(
        &self,
        _: Request<ControllerListVolumeHealthRequest>,
    ) -> Answer<ControllerListVolumeHealthResponse> {
        unimplemented("ControllerListVolumeHealth")
    }

    async fn controller_get_volume_health(
        &self,
        _: Request<ControllerGetVolumeHealthRequest>,
    ) -> Answer<ControllerGetVolumeHealthResponse> {
        unimplemented("ControllerGetVolumeHealth")
    }

    async fn get_capacity(&self, req: Request<GetCapacityRequest>) -> Answer<GetCapacityResponse> {
        logged(
            "GetCapacity",
            list::get_capacity(&self.cluster, req.get_ref()).await,
        )
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Answer<ControllerGetCapabilitiesResponse> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|t| ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(
                    controller_service_capability::Rpc { r#type: *t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        _: Request<CreateSnapshotRequest>,
    ) -> Answer<CreateSnapshotResponse> {
        unimplemented("CreateSnapshot")
    }

    async fn delete_snapshot(
        &self,
        _: Request<DeleteSnapshotRequest>,
    ) -> Answer<DeleteSnapshotResponse> {
        unimplemented("DeleteSnapshot")
    }

    async fn list_snapshots(
        &self,
        _: Request<ListSnapshotsRequest>,
    ) -> Answer<ListSnapshotsResponse> {
        unimplemented("ListSnapshots")
    }

    async fn get_snapshot(&self, _: Request<GetSnapshotRequest>) -> Answer<GetSnapshotResponse> {
        unimplemented("GetSnapshot")
    }

    async fn controller_expand_volume(
        &self,
        req: Request<ControllerExpandVolumeRequest>,
    ) -> Answer<ControllerExpandVolumeResponse> {
        logged(
            "ControllerExpandVolume",
            expand::expand(&self.cluster, req.get_ref()).await,
        )
    }

    async fn controller_get_volume(
        &self,
        _: Request<ControllerGetVolumeRequest>,
    ) -> Answer<ControllerGetVolumeResponse> {
        unimplemented("ControllerGetVolume")
    }

    async fn controller_modify_volume(
        &self,
        _: Request<ControllerModifyVolumeRequest>,
    ) -> Answer<ControllerModifyVolumeResponse> {
        unimplemented("ControllerModifyVolume")
    }

    async fn controller_get_node_info(
        &self,
        _: Request<ControllerGetNodeInfoRequest>,
    ) -> Answer<ControllerGetNodeInfoResponse> {
        unimplemented("ControllerGetNodeInfo")
    }
}
