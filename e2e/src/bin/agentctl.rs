//! `agentctl`: calls one node agent's API from a shell, for tests and for looking at an agent
//! by hand. It presents the operator's client certificate from a directory made by
//! `e2e/cluster/certs` (ca.crt, operator.crt, operator.key).
//!
//! Exits 0 on success (the answer printed), 1 when the agent refused (gRPC code and message
//! printed), 2 on bad usage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spindle_agent_api::v1 as pb;
use spindle_e2e::agent::{Certs, ClientCert, client};

/// Call a Spindle node agent's API (mutual TLS, as the operator).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The agent API endpoint.
    #[arg(long, value_name = "ADDR:PORT")]
    endpoint: SocketAddr,
    /// Directory with ca.crt, operator.crt and operator.key.
    #[arg(long, value_name = "DIR")]
    certs: PathBuf,
    #[command(subcommand)]
    call: Call,
}

/// The object a call is about.
#[derive(clap::Args)]
struct Object {
    /// NAMESPACE/NAME
    object: String,
    /// The object's uid.
    #[arg(long)]
    uid: String,
    /// The object's generation.
    #[arg(long, default_value_t = 1)]
    generation: i64,
    /// The operator leader term the call claims (0: none).
    #[arg(long, default_value_t = 0)]
    leader_term: u64,
}

impl Object {
    fn meta(&self) -> Result<pb::ObjectMeta, String> {
        let (ns, name) = self
            .object
            .split_once('/')
            .ok_or_else(|| format!("{:?} is not NAMESPACE/NAME", self.object))?;
        Ok(pb::ObjectMeta {
            namespace: ns.into(),
            name: name.into(),
            uid: self.uid.clone(),
            generation: self.generation,
            leader_term: self.leader_term,
        })
    }
}

#[derive(Subcommand)]
enum Call {
    /// What the agent serves (GetStatus).
    Status,
    /// Open a file-backed Device (ApplyDevice).
    ApplyDevice {
        #[command(flatten)]
        object: Object,
        /// File under the agent's data dir.
        #[arg(long)]
        file: String,
        #[arg(long)]
        size_bytes: u64,
        #[arg(long, default_value_t = 512)]
        block_size: u32,
        #[arg(long)]
        writethrough: bool,
        #[arg(long)]
        thin: bool,
        #[arg(long)]
        direct_io: bool,
        #[arg(long)]
        retain: bool,
    },
    /// Serve a Target (ApplyTarget).
    ApplyTarget {
        #[command(flatten)]
        object: Object,
        #[arg(long)]
        iqn: String,
        #[arg(long, default_value_t = 3260)]
        port: u32,
        /// LUN:DEVICE_NAME[:DEVICE_UID], repeatable.
        #[arg(long = "lun")]
        luns: Vec<String>,
        /// Initiator IQN allowed to log in, repeatable (none: --allow-all).
        #[arg(long = "initiator")]
        initiators: Vec<String>,
        #[arg(long)]
        allow_all: bool,
        /// USER:SECRET the initiator must present.
        #[arg(long)]
        chap: Option<String>,
        /// USER:SECRET the target answers with (mutual CHAP).
        #[arg(long)]
        mutual: Option<String>,
    },
    /// Stop serving a Target (RemoveTarget).
    RemoveTarget {
        #[command(flatten)]
        object: Object,
    },
    /// Fence, drain and flush a Device (DrainDevice); prints the acknowledgement.
    Drain {
        #[command(flatten)]
        object: Object,
    },
    /// Close a drained Device (ReleaseDevice).
    Release {
        #[command(flatten)]
        object: Object,
        /// Keep the file (default: the Device's own reclaim policy).
        #[arg(long, conflicts_with = "delete")]
        retain: bool,
        /// Remove the file.
        #[arg(long)]
        delete: bool,
        /// Release even if not flushed.
        #[arg(long)]
        force: bool,
    },
}

fn credentials(s: &str) -> Result<pb::ChapCredentials, String> {
    let (user, secret) = s
        .split_once(':')
        .ok_or("CHAP credentials are USER:SECRET")?;
    Ok(pb::ChapCredentials {
        user: user.into(),
        secret: secret.into(),
    })
}

fn lun(s: &str) -> Result<pb::LunMapping, String> {
    let mut parts = s.splitn(3, ':');
    let n = parts.next().and_then(|n| n.parse().ok());
    let (Some(lun), Some(device)) = (n, parts.next()) else {
        return Err(format!("{s:?} is not LUN:DEVICE[:UID]"));
    };
    Ok(pb::LunMapping {
        lun,
        device_name: device.into(),
        device_uid: parts.next().unwrap_or_default().into(),
    })
}

async fn call(cli: Cli) -> Result<String, String> {
    let certs = Certs {
        dir: cli.certs.clone(),
    };
    let mut c = client(cli.endpoint, &certs, ClientCert::Operator)
        .await
        .map_err(|e| format!("connecting to {}: {e:#}", cli.endpoint))?;
    let refused = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    let out = match cli.call {
        Call::Status => format!(
            "{:#?}",
            c.get_status(pb::GetStatusRequest {})
                .await
                .map_err(refused)?
                .into_inner()
        ),
        Call::ApplyDevice {
            object,
            file,
            size_bytes,
            block_size,
            writethrough,
            thin,
            direct_io,
            retain,
        } => {
            let req = pb::ApplyDeviceRequest {
                meta: Some(object.meta()?),
                spec: Some(pb::DeviceSpec {
                    source: Some(pb::device_spec::Source::File(pb::FileSource {
                        path: file,
                        size_bytes,
                    })),
                    block_size,
                    read_only: false,
                    write_cache: if writethrough {
                        pb::WriteCache::Writethrough
                    } else {
                        pb::WriteCache::Writeback
                    } as i32,
                    thin_provisioning: thin,
                    direct_io,
                    reclaim_policy: if retain {
                        pb::ReclaimPolicy::Retain
                    } else {
                        pb::ReclaimPolicy::Delete
                    } as i32,
                }),
                served_naa: String::new(),
            };
            format!(
                "{:#?}",
                c.apply_device(req).await.map_err(refused)?.into_inner()
            )
        }
        Call::ApplyTarget {
            object,
            iqn,
            port,
            luns,
            initiators,
            allow_all,
            chap,
            mutual,
        } => {
            let chap = match chap {
                None => None,
                Some(c) => Some(pb::Chap {
                    initiator: Some(credentials(&c)?),
                    target: mutual.as_deref().map(credentials).transpose()?,
                }),
            };
            let req = pb::ApplyTargetRequest {
                meta: Some(object.meta()?),
                spec: Some(pb::TargetSpec {
                    iqn,
                    port,
                    luns: luns.iter().map(|l| lun(l)).collect::<Result<_, _>>()?,
                    acl: Some(pb::Acl {
                        allow_all,
                        initiators,
                    }),
                    chap,
                    iscsi: None,
                    qos: None,
                }),
            };
            format!(
                "{:#?}",
                c.apply_target(req).await.map_err(refused)?.into_inner()
            )
        }
        Call::RemoveTarget { object } => {
            let req = pb::RemoveTargetRequest {
                meta: Some(object.meta()?),
            };
            format!(
                "{:#?}",
                c.remove_target(req).await.map_err(refused)?.into_inner()
            )
        }
        Call::Drain { object } => {
            let req = pb::DrainDeviceRequest {
                meta: Some(object.meta()?),
            };
            format!(
                "{:#?}",
                c.drain_device(req).await.map_err(refused)?.into_inner()
            )
        }
        Call::Release {
            object,
            retain,
            delete,
            force,
        } => {
            let policy = match (retain, delete) {
                (true, _) => pb::ReclaimPolicy::Retain,
                (_, true) => pb::ReclaimPolicy::Delete,
                _ => pb::ReclaimPolicy::Unspecified,
            };
            let req = pb::ReleaseDeviceRequest {
                meta: Some(object.meta()?),
                reclaim_policy: policy as i32,
                force,
            };
            format!(
                "{:#?}",
                c.release_device(req).await.map_err(refused)?.into_inner()
            )
        }
    };
    Ok(out)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentctl: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(call(cli)) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agentctl: {e}");
            ExitCode::FAILURE
        }
    }
}
