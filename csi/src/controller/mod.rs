//! Controller mode: volumes as Spindle Devices and Targets in the driver's namespace.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Error;
use crate::endpoint::Endpoint;
use crate::identity::IdentityService;
use crate::proto::identity_server::IdentityServer;

/// Settings of the controller mode (from the command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Where to serve CSI (unix:///csi/csi.sock for the sidecars, tcp://HOST:PORT for tests).
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: Endpoint,
    /// Namespace the driver creates its Devices, Targets and CHAP Secrets in.
    #[arg(long, env = "SPINDLE_CSI_NAMESPACE", default_value = "spindle-system")]
    pub namespace: String,
}

/// Serves the controller mode until `shutdown` resolves.
pub async fn serve(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let ready = Arc::new(AtomicBool::new(false));
    let identity = IdentityService::controller(ready.clone());
    ready.store(true, Ordering::Relaxed);
    let router = tonic::transport::Server::builder().add_service(IdentityServer::new(identity));
    settings.endpoint.serve(router, shutdown).await
}
