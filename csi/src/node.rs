//! Node mode: attach a volume with the node's open-iscsi, check its NAA, format and mount it.
//!
//! One file per concern: [`runner`] (every external command, optionally behind a prefix such
//! as `nsenter --target 1 --mount --`), [`initiator`] (the node ID), [`context`] (the volume
//! context and capability), [`iscsiadm`] (arguments, CHAP in the record file), [`sysfs`]
//! (sessions and disks without udev), [`naa`], [`mountinfo`], [`fs`] (blkid, mkfs, grow),
//! [`state`] (what is staged), [`attach`] (login, logout), [`stage`], [`publish`], [`expand`],
//! [`stats`], [`service`] (the gRPC service) and [`registration`] (kubelet's plugin
//! registration).

pub mod attach;
pub mod authority;
pub mod context;
pub mod error;
pub mod expand;
pub mod fs;
pub mod host;
pub mod initiator;
pub mod iscsiadm;
pub mod mountinfo;
pub mod naa;
pub mod publish;
pub mod registration;
pub mod runner;
pub mod service;
pub mod stage;
pub mod state;
pub mod stats;
pub mod sysfs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::Error;
use crate::endpoint::Endpoint;
use crate::identity::IdentityService;
use crate::proto::identity_server::IdentityServer;
use crate::proto::node_server::NodeServer;

use host::{Host, Limits};
use registration::RegistrationService;
use registration::proto::registration_server::RegistrationServer;

/// Settings of the node mode (from the command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Where to serve CSI (kubelet's plugin socket).
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: Endpoint,
    /// This node's name (for the logs; the node ID is the initiator name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// open-iscsi's initiator name file: its InitiatorName is the node ID (NodeGetInfo), which
    /// ControllerPublishVolume admits to the volume's Target.
    #[arg(long, default_value = "/etc/iscsi/initiatorname.iscsi")]
    pub initiator_name_file: PathBuf,
    /// Words put before every command the node runs (iscsiadm, mount, umount, mkfs.*, blkid,
    /// blockdev, resize2fs, xfs_growfs), e.g. "nsenter --target 1 --mount --" to run the
    /// host's tools in the host's mount namespace from a privileged hostPID pod. Empty: run
    /// them directly.
    #[arg(long, default_value = "")]
    pub host_command_prefix: String,
    /// The mount table to read (/proc/1/mountinfo with an nsenter prefix: the host's).
    #[arg(long, default_value = "/proc/self/mountinfo")]
    pub mountinfo: PathBuf,
    /// Folders where open-iscsi keeps node records (CHAP settings are written into the
    /// record, never passed on a command line); the first holding the record is used.
    #[arg(long = "iscsi-node-dir", default_values = ["/etc/iscsi/nodes", "/var/lib/iscsi/nodes"])]
    pub iscsi_node_dirs: Vec<PathBuf>,
    /// The sysfs tree (sessions and disks are found there, not through udev).
    #[arg(long, default_value = "/sys")]
    pub sysfs: PathBuf,
    /// Where the node records what it staged (one file per volume; must survive a restart of
    /// the plugin).
    #[arg(
        long,
        default_value = "/var/lib/kubelet/plugins/csi.spindle.dev/volumes"
    )]
    pub state_dir: PathBuf,
    /// NodeGetInfo's max_volumes_per_node (0: no limit reported).
    #[arg(long, default_value_t = 0)]
    pub max_volumes_per_node: i64,
    /// Kubelet's plugin registry folder (/var/lib/kubelet/plugins_registry): serve kubelet's
    /// plugin registration on csi.spindle.dev-reg.sock there. Off when not given.
    #[arg(long)]
    pub kubelet_registration_dir: Option<PathBuf>,
    /// The CSI socket's path as kubelet sees it (default: the --endpoint path).
    #[arg(long)]
    pub kubelet_csi_path: Option<String>,
    /// Serve /healthz here (HOST:PORT).
    #[arg(long)]
    pub health_address: Option<SocketAddr>,
    /// Seconds an iscsiadm call may take (a login, a logout of a dead session).
    #[arg(long, default_value_t = 120)]
    pub iscsiadm_timeout: u64,
    /// Seconds to wait for a LUN's disk to appear (or to show a grown size).
    #[arg(long, default_value_t = 60)]
    pub device_timeout: u64,
}

impl Settings {
    fn limits(&self) -> Limits {
        Limits {
            iscsiadm: Duration::from_secs(self.iscsiadm_timeout),
            device: Duration::from_secs(self.device_timeout),
            ..Limits::default()
        }
    }
}

/// Serves the node mode until `shutdown` resolves (or kubelet refuses the registration).
pub async fn serve(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let host = Host::new(
        runner::Runner::new(runner::parse_prefix(&settings.host_command_prefix)),
        sysfs::Sysfs::new(&settings.sysfs),
        state::Store::new(&settings.state_dir),
        settings.mountinfo.clone(),
        settings.iscsi_node_dirs.clone(),
        settings.initiator_name_file.clone(),
        settings.limits(),
    );
    match service::node_id(&settings.initiator_name_file) {
        Ok(id) => tracing::info!(node_id = %id, node = ?settings.node_name, "node mode"),
        // Served anyway: NodeGetInfo says what is wrong, where kubelet reports it.
        Err(e) => tracing::error!(error = %e, "no usable node ID"),
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let ready = Arc::new(AtomicBool::new(false));
    if let Some(addr) = settings.health_address {
        let (ready, stop) = (ready.clone(), stopped(stop_rx.clone()));
        tokio::spawn(async move {
            if let Err(e) = crate::health::serve(addr, ready, stop).await {
                tracing::error!(error = %e, "health endpoint");
            }
        });
    }

    let (refused_tx, mut refused_rx) = mpsc::unbounded_channel();
    if let Some(dir) = &settings.kubelet_registration_dir {
        let csi_path = match (&settings.kubelet_csi_path, &settings.endpoint) {
            (Some(p), _) => p.clone(),
            (None, Endpoint::Unix(p)) => p.display().to_string(),
            (None, Endpoint::Tcp(_)) => {
                return Err(Error::Endpoint {
                    endpoint: settings.endpoint.to_string(),
                    why: "kubelet registration needs a unix endpoint or --kubelet-csi-path".into(),
                });
            }
        };
        let sock = registration::socket_path(dir);
        let router = tonic::transport::Server::builder().add_service(RegistrationServer::new(
            RegistrationService::new(csi_path, refused_tx),
        ));
        let stop = stopped(stop_rx.clone());
        let path = sock.clone();
        tokio::spawn(async move {
            if let Err(e) = registration::serve(&path, router, stop).await {
                tracing::error!(error = %e, "plugin registration socket");
            }
        });
        tracing::info!(socket = %sock.display(), "serving kubelet's plugin registration");
    }

    let identity = IdentityService::node(ready.clone());
    let node = service::NodeService::new(host, settings.max_volumes_per_node);
    ready.store(true, Ordering::Relaxed);
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(node));
    let serve_csi = settings.endpoint.serve(router, stopped(stop_rx));
    tokio::select! {
        r = serve_csi => r,
        Some(why) = refused_rx.recv() => Err(Error::Registration(why)),
    }
}
