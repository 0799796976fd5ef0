//! The CSI Node service: each call checked, then handed to its module.

use tonic::{Request, Response, Status};

use crate::proto::node_server::Node;
use crate::proto::node_service_capability::{Rpc, rpc::Type as RpcType};
use crate::proto::volume_capability::AccessType;
use crate::proto::*;
use crate::volume::{TOPOLOGY_KEY, TOPOLOGY_VALUE};

use super::context::{Access, Attachment};
use super::error::NodeError;
use super::host::Host;
use super::publish::PublishRequest;
use super::stage::{StageRequest, chap_from, check_id, check_path};
use super::{context, expand, initiator, publish, stage, stats};

/// The Node service of this node.
pub struct NodeService {
    host: Host,
    /// max_volumes_per_node (0: not reported).
    max_volumes: i64,
}

impl NodeService {
    pub fn new(host: Host, max_volumes: i64) -> Self {
        Self { host, max_volumes }
    }
}

/// The capabilities the node declares.
pub fn capabilities() -> Vec<NodeServiceCapability> {
    [
        RpcType::StageUnstageVolume,
        RpcType::ExpandVolume,
        RpcType::GetVolumeStats,
        RpcType::GetVolumeHealth,
        RpcType::SingleNodeMultiWriter,
    ]
    .into_iter()
    .map(|t| NodeServiceCapability {
        r#type: Some(node_service_capability::Type::Rpc(Rpc { r#type: t as i32 })),
    })
    .collect()
}

/// The node ID: the initiator name in `file`.
pub fn node_id(file: &std::path::Path) -> Result<String, NodeError> {
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| {
        NodeError::FailedPrecondition(format!(
            "{shown}: {e} (the node needs open-iscsi: its initiator name is the node ID)"
        ))
    })?;
    initiator::parse(&shown, &text).map_err(|e| NodeError::FailedPrecondition(e.to_string()))
}

fn is_block(cap: Option<&VolumeCapability>) -> bool {
    matches!(
        cap.and_then(|c| c.access_type.as_ref()),
        Some(AccessType::Block(_))
    )
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let r = request.into_inner();
        check_id(&r.volume_id)?;
        check_path("staging_target_path", &r.staging_target_path)?;
        let access = Access::from_capability(r.volume_capability.as_ref())?;
        let attachment = Attachment::from_context(&r.volume_context)?;
        let chap = chap_from(&r.secrets)?;
        stage::stage(
            &self.host,
            StageRequest {
                volume_id: r.volume_id,
                staging_path: r.staging_target_path,
                access,
                attachment,
                chap,
            },
        )
        .await?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() {
            return Err(NodeError::invalid("volume_id", "is missing").into());
        }
        check_path("staging_target_path", &r.staging_target_path)?;
        stage::unstage(&self.host, &r.volume_id, &r.staging_target_path).await?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() {
            return Err(NodeError::invalid("volume_id", "is missing").into());
        }
        check_path("target_path", &r.target_path)?;
        Access::from_capability(r.volume_capability.as_ref())?;
        check_path("staging_target_path", &r.staging_target_path)?;
        publish::publish(
            &self.host,
            PublishRequest {
                block: is_block(r.volume_capability.as_ref()),
                single_writer: context::single_writer(r.volume_capability.as_ref()),
                volume_id: r.volume_id,
                staging_path: r.staging_target_path,
                target_path: r.target_path,
                read_only: r.readonly,
            },
        )
        .await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() {
            return Err(NodeError::invalid("volume_id", "is missing").into());
        }
        check_path("target_path", &r.target_path)?;
        publish::unpublish(&self.host, &r.volume_id, &r.target_path).await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() {
            return Err(NodeError::invalid("volume_id", "is missing").into());
        }
        if r.volume_path.is_empty() {
            return Err(NodeError::invalid("volume_path", "is missing").into());
        }
        Ok(Response::new(
            stats::stats(&self.host, &r.volume_id, &r.volume_path).await?,
        ))
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() {
            return Err(NodeError::invalid("volume_id", "is missing").into());
        }
        if r.volume_path.is_empty() {
            return Err(NodeError::invalid("volume_path", "is missing").into());
        }
        if let Some(cap) = r.volume_capability.as_ref() {
            Access::from_capability(Some(cap))?;
        }
        let required = r
            .capacity_range
            .as_ref()
            .map(|c| c.required_bytes.max(0) as u64)
            .unwrap_or(0);
        let size = expand::expand(&self.host, &r.volume_id, &r.volume_path, required).await?;
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: size as i64,
        }))
    }

    async fn node_get_volume_health(
        &self,
        request: Request<NodeGetVolumeHealthRequest>,
    ) -> Result<Response<NodeGetVolumeHealthResponse>, Status> {
        let r = request.into_inner();
        if r.volume_id.is_empty() {
            return Err(NodeError::invalid("volume_id", "is missing").into());
        }
        for (field, p) in [
            ("volume_publish_path", &r.volume_publish_path),
            ("staging_target_path", &r.staging_target_path),
        ] {
            if !p.is_empty() {
                check_path(field, p)?;
            }
        }
        Ok(Response::new(
            stats::health(
                &self.host,
                &r.volume_id,
                &r.volume_publish_path,
                &r.staging_target_path,
            )
            .await?,
        ))
    }

    async fn node_get_storage_health(
        &self,
        _: Request<NodeGetStorageHealthRequest>,
    ) -> Result<Response<NodeGetStorageHealthResponse>, Status> {
        Err(Status::unimplemented(
            "NodeGetStorageHealth is not offered (GET_STORAGE_HEALTH is not declared)",
        ))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: capabilities(),
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        let node_id = node_id(&self.host.initiator_file)?;
        Ok(Response::new(NodeGetInfoResponse {
            node_id,
            max_volumes_per_node: self.max_volumes,
            accessible_topology: Some(node_topology()),
        }))
    }
}

/// The segment every node plugin reports (see [`crate::volume::TOPOLOGY_KEY`]).
fn node_topology() -> Topology {
    Topology {
        segments: [(TOPOLOGY_KEY.to_owned(), TOPOLOGY_VALUE.to_owned())].into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kubelet copies the segment onto the Node as a label: both halves must be valid label
    /// parts, or registration fails on every node.
    #[test]
    fn the_topology_segment_is_a_valid_node_label() {
        let t = node_topology();
        assert_eq!(t.segments.len(), 1);
        let (key, value) = t.segments.iter().next().unwrap();
        let (prefix, name) = key.split_once('/').expect("a prefixed key");
        let label_part = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
        };
        assert!(
            prefix.len() <= 253 && prefix.split('.').all(label_part),
            "{key}"
        );
        assert!(label_part(name), "{key}");
        assert!(label_part(value), "{value}");
    }

    #[test]
    fn the_node_id_is_the_initiator_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("initiatorname.iscsi");
        let e = node_id(&f).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.to_string().contains("open-iscsi"), "{e}");
        std::fs::write(&f, "InitiatorName=iqn.2026-12.dev.spindle:node-1\n").unwrap();
        assert_eq!(node_id(&f).unwrap(), "iqn.2026-12.dev.spindle:node-1");
        std::fs::write(
            &f,
            format!("InitiatorName=iqn.2026-12.x:{}\n", "n".repeat(200)),
        )
        .unwrap();
        assert!(node_id(&f).unwrap_err().to_string().contains("at most 192"));
    }

    #[test]
    fn declares_stage_expand_stats_health() {
        let types: Vec<i32> = capabilities()
            .into_iter()
            .filter_map(|c| match c.r#type {
                Some(node_service_capability::Type::Rpc(r)) => Some(r.r#type),
                _ => None,
            })
            .collect();
        assert_eq!(
            types,
            vec![
                RpcType::StageUnstageVolume as i32,
                RpcType::ExpandVolume as i32,
                RpcType::GetVolumeStats as i32,
                RpcType::GetVolumeHealth as i32,
                RpcType::SingleNodeMultiWriter as i32
            ]
        );
    }
}
