//! Controller mode: volumes as Spindle Devices and Targets in the driver's namespace.
//!
//! - [`names`], [`parameters`], [`capabilities`], [`size`]: what a CreateVolume asks for.
//! - [`objects`]: the Device, Target and CHAP Secret of a volume; [`readiness`]: their status
//!   as CSI answers.
//! - [`create`], [`delete`], [`publish`] (with [`acl`]), [`expand`], [`list`] (with [`pages`]
//!   and [`capacity`]): the calls; [`service`] serves them; [`cluster`]: the Kubernetes side.

pub mod acl;
pub mod capabilities;
pub mod capacity;
pub mod cluster;
pub mod create;
pub mod delete;
pub mod expand;
pub mod list;
pub mod names;
pub mod objects;
pub mod pages;
pub mod parameters;
pub mod publish;
pub mod qos_parameters;
pub mod readiness;
pub mod service;
pub mod size;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Api;

use crate::Error;
use crate::endpoint::Endpoint;
use crate::identity::IdentityService;
use crate::proto::controller_server::ControllerServer;
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
    /// Namespace of the agents' Leases (the operator's), read for their free bytes.
    #[arg(
        long,
        env = "SPINDLE_LEASE_NAMESPACE",
        default_value = "spindle-system"
    )]
    pub lease_namespace: String,
    /// Ports a StorageClass may give Targets (spindle.dev/port): the operator's --target-ports.
    #[arg(long, default_value = "3260-3269", value_parser = parameters::parse_ports)]
    pub target_ports: RangeInclusive<u16>,
    /// Serve /healthz here (200 once the API server answered), e.g. 0.0.0.0:9808.
    #[arg(long, env = "SPINDLE_CSI_HEALTH_ADDRESS")]
    pub health_address: Option<SocketAddr>,
    /// Seconds CreateVolume, ControllerPublish and ControllerExpand wait for the Device and
    /// Target to be served before answering DEADLINE_EXCEEDED (the sidecars retry).
    #[arg(long, default_value_t = 60)]
    pub ready_timeout: u64,
    /// Seconds DeleteVolume waits for the Device to be gone (the agent's fence, drain, flush
    /// and release) before answering DEADLINE_EXCEEDED (the provisioner retries).
    #[arg(long, default_value_t = 120)]
    pub delete_timeout: u64,
}

/// Serves the controller mode until `shutdown` resolves.
pub async fn serve(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let client = kube::Client::try_default().await?;
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(mark_ready_when_api_answers(client.clone(), ready.clone()));
    let cluster = cluster::Cluster {
        devices: Api::namespaced(client.clone(), &settings.namespace),
        targets: Api::namespaced(client.clone(), &settings.namespace),
        secrets: Api::namespaced(client.clone(), &settings.namespace),
        leases: Api::namespaced(client, &settings.lease_namespace),
        namespace: settings.namespace.clone(),
        ports: settings.target_ports.clone(),
        ready_timeout: Duration::from_secs(settings.ready_timeout),
        delete_timeout: Duration::from_secs(settings.delete_timeout),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = settings.health_address {
        let mut rx = stop_rx.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::health::serve(addr, ready, stopped).await {
                tracing::error!("health endpoint: {e}");
            }
        });
    }
    tracing::info!(
        endpoint = %settings.endpoint, namespace = %settings.namespace,
        "serving the CSI controller"
    );
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(IdentityService::controller(ready)))
        .add_service(ControllerServer::new(service::ControllerService {
            cluster,
        }));
    let r = settings
        .endpoint
        .serve(router, async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
    drop(stop_rx);
    r
}

/// Sets `ready` once the API server answers (Probe and /healthz report it).
async fn mark_ready_when_api_answers(client: kube::Client, ready: Arc<AtomicBool>) {
    let mut wait = Duration::from_millis(500);
    loop {
        match client.apiserver_version().await {
            Ok(v) => {
                tracing::info!(version = %v.git_version, "the API server answered: ready");
                ready.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                tracing::warn!("the API server does not answer yet: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}
