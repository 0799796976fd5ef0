//! Node mode: attach a volume with the node's open-iscsi, check its NAA, format and mount it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Error;
use crate::endpoint::Endpoint;
use crate::identity::IdentityService;
use crate::proto::identity_server::IdentityServer;

/// Settings of the node mode (from the command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Where to serve CSI (kubelet's plugin socket).
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: Endpoint,
    /// This node's name (NodeGetInfo's node ID).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
}

/// Serves the node mode until `shutdown` resolves.
pub async fn serve(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let ready = Arc::new(AtomicBool::new(false));
    let identity = IdentityService::node(ready.clone());
    ready.store(true, Ordering::Relaxed);
    let router = tonic::transport::Server::builder().add_service(IdentityServer::new(identity));
    settings.endpoint.serve(router, shutdown).await
}
