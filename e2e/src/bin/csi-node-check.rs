//! `csi-node-check`: the CSI calls of the node e2e phase (e2e/kernel/csi-node), one per run,
//! from a shell in the test guest: CreateVolume/ControllerPublish/DeleteVolume on the
//! controller, NodeStage/Publish/Unpublish/Unstage/GetVolumeHealth on the node plugin.
//!
//! Exits 0 on success (answers printed as `KEY=value` lines a shell can read), 1 when the call
//! was refused (`code=<gRPC code>` and `message=<text>` printed), 2 on bad usage or no
//! connection.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spindle_csi::proto::controller_client::ControllerClient;
use spindle_csi::proto::node_client::NodeClient;
use spindle_csi::proto::volume_capability::access_mode::Mode;
use spindle_csi::proto::*;
use spindle_csi::volume::{CTX_IQN, CTX_LUN, CTX_NAA, CTX_PORTALS};
use spindle_e2e::csi::capability;
use tonic::transport::{Channel, Endpoint, Uri};

/// CSI calls for the node e2e phase.
#[derive(Parser)]
struct Cli {
    /// The controller's endpoint (http://HOST:PORT).
    #[arg(long, default_value = "")]
    controller: String,
    /// The node plugin's unix socket.
    #[arg(long, default_value = "/run/csi/csi.sock")]
    node: String,
    /// Raw block instead of an ext4 file system.
    #[arg(long)]
    block: bool,
    #[command(subcommand)]
    call: Call,
}

#[derive(Subcommand)]
enum Call {
    /// CreateVolume NAME of SIZE bytes (StorageClass parameters as KEY=VALUE).
    Create {
        name: String,
        size: i64,
        params: Vec<String>,
    },
    /// ControllerPublishVolume to node NODE_ID.
    ControllerPublish { volume: String, node_id: String },
    /// DeleteVolume.
    Delete { volume: String },
    /// NodeStageVolume with this context.
    Stage {
        volume: String,
        staging: String,
        portals: String,
        iqn: String,
        lun: String,
        naa: String,
    },
    /// NodeUnstageVolume.
    Unstage { volume: String, staging: String },
    /// NodePublishVolume.
    Publish {
        volume: String,
        staging: String,
        target: String,
    },
    /// NodeUnpublishVolume.
    Unpublish { volume: String, target: String },
    /// NodeGetVolumeHealth: prints healthy=true|false and the reason.
    Health { volume: String },
    /// NodeGetInfo: prints node_id.
    Info,
}

async fn node_channel(path: String) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://node-plugin")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
}

async fn call(cli: Cli) -> Result<Vec<(String, String)>, tonic::Status> {
    let controller = || async {
        let ep = Endpoint::from_shared(cli.controller.clone())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let ch = ep
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok::<_, tonic::Status>(ControllerClient::new(ch))
    };
    let node = || async {
        let ch = node_channel(cli.node.clone())
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok::<_, tonic::Status>(NodeClient::new(ch))
    };
    let cap = capability(cli.block, Mode::SingleNodeWriter);
    let kv = |k: &str, v: String| (k.to_string(), v);
    Ok(match &cli.call {
        Call::Create { name, size, params } => {
            let parameters = params
                .iter()
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let r = controller()
                .await?
                .create_volume(CreateVolumeRequest {
                    name: name.clone(),
                    capacity_range: Some(CapacityRange {
                        required_bytes: *size,
                        limit_bytes: 0,
                    }),
                    volume_capabilities: vec![cap],
                    parameters,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let v = r.volume.unwrap_or_default();
            let c = &v.volume_context;
            let get = |k: &str| c.get(k).cloned().unwrap_or_default();
            vec![
                kv("VOLUME", v.volume_id.clone()),
                kv("PORTALS", get(CTX_PORTALS)),
                kv("IQN", get(CTX_IQN)),
                kv("LUN", get(CTX_LUN)),
                kv("NAA", get(CTX_NAA)),
            ]
        }
        Call::ControllerPublish { volume, node_id } => {
            controller()
                .await?
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    volume_id: volume.clone(),
                    node_id: node_id.clone(),
                    volume_capability: Some(cap),
                    ..Default::default()
                })
                .await?;
            vec![]
        }
        Call::Delete { volume } => {
            controller()
                .await?
                .delete_volume(DeleteVolumeRequest {
                    volume_id: volume.clone(),
                    ..Default::default()
                })
                .await?;
            vec![]
        }
        Call::Stage {
            volume,
            staging,
            portals,
            iqn,
            lun,
            naa,
        } => {
            let ctx: HashMap<String, String> = [
                (CTX_PORTALS, portals),
                (CTX_IQN, iqn),
                (CTX_LUN, lun),
                (CTX_NAA, naa),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
            node()
                .await?
                .node_stage_volume(NodeStageVolumeRequest {
                    volume_id: volume.clone(),
                    staging_target_path: staging.clone(),
                    volume_capability: Some(cap),
                    volume_context: ctx,
                    ..Default::default()
                })
                .await?;
            vec![]
        }
        Call::Unstage { volume, staging } => {
            node()
                .await?
                .node_unstage_volume(NodeUnstageVolumeRequest {
                    volume_id: volume.clone(),
                    staging_target_path: staging.clone(),
                })
                .await?;
            vec![]
        }
        Call::Publish {
            volume,
            staging,
            target,
        } => {
            node()
                .await?
                .node_publish_volume(NodePublishVolumeRequest {
                    volume_id: volume.clone(),
                    staging_target_path: staging.clone(),
                    target_path: target.clone(),
                    volume_capability: Some(cap),
                    ..Default::default()
                })
                .await?;
            vec![]
        }
        Call::Unpublish { volume, target } => {
            node()
                .await?
                .node_unpublish_volume(NodeUnpublishVolumeRequest {
                    volume_id: volume.clone(),
                    target_path: target.clone(),
                })
                .await?;
            vec![]
        }
        Call::Health { volume } => {
            let h = node()
                .await?
                .node_get_volume_health(NodeGetVolumeHealthRequest {
                    volume_id: volume.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .volume_health
                .unwrap_or_default();
            let first = h.health_statuses.first();
            vec![
                kv("HEALTHY", h.health_statuses.is_empty().to_string()),
                kv(
                    "REASON",
                    first.map(|e| e.reason.clone()).unwrap_or_default(),
                ),
                kv(
                    "MESSAGE",
                    first.map(|e| e.message.clone()).unwrap_or_default(),
                ),
            ]
        }
        Call::Info => {
            let i = node()
                .await?
                .node_get_info(NodeGetInfoRequest::default())
                .await?
                .into_inner();
            vec![kv("NODE_ID", i.node_id)]
        }
    })
}

/// `text` quoted for a POSIX shell.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match call(cli).await {
        Ok(lines) => {
            for (k, v) in lines {
                println!("{k}={}", quoted(&v));
            }
            ExitCode::SUCCESS
        }
        Err(s) if s.code() == tonic::Code::Unavailable => {
            eprintln!("no connection: {}", s.message());
            ExitCode::from(2)
        }
        Err(s) => {
            println!("code={:?}", s.code());
            println!("message={}", quoted(s.message()));
            ExitCode::from(1)
        }
    }
}
