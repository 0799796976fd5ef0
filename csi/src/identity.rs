//! The Identity service: the driver's name and version, what it offers, and whether it is ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::{Request, Response, Status};

use crate::proto::identity_server::Identity;
use crate::proto::plugin_capability::{self, service::Type as ServiceType};
use crate::proto::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};
use crate::volume::DRIVER_NAME;

/// The Identity service of one mode.
#[derive(Clone)]
pub struct IdentityService {
    /// Plugin capabilities this mode declares: the plugin's as a whole (CONTROLLER_SERVICE and
    /// online expansion) in both modes, as the spec asks ("the grand sum of all capabilities
    /// of all instances of the Plugin software, as it is intended to be deployed").
    capabilities: Vec<PluginCapability>,
    /// Set once the mode can serve (the controller: its Kubernetes client works).
    ready: Arc<AtomicBool>,
}

impl IdentityService {
    /// The node mode's identity: the same plugin capabilities as the controller's (a CO, and
    /// csi-sanity's Node suite, learn from the node's socket whether volumes can be created,
    /// published to a node and grown).
    pub fn node(ready: Arc<AtomicBool>) -> Self {
        Self::controller(ready)
    }

    /// The controller mode's identity: the controller service, online expansion.
    pub fn controller(ready: Arc<AtomicBool>) -> Self {
        let service = |t: ServiceType| PluginCapability {
            r#type: Some(plugin_capability::Type::Service(
                plugin_capability::Service { r#type: t as i32 },
            )),
        };
        let expansion = PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(
                plugin_capability::VolumeExpansion {
                    r#type: plugin_capability::volume_expansion::Type::Online as i32,
                },
            )),
        };
        Self {
            capabilities: vec![service(ServiceType::ControllerService), expansion],
            ready,
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: DRIVER_NAME.to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: self.capabilities.clone(),
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse {
            ready: Some(self.ready.load(Ordering::Relaxed)),
        }))
    }
}
