//! The agent API service (`spindle.agent.v1.Agent`): each call turned into one call on the
//! [`Node`], its outcome into a gRPC status, and counted in the metrics. Requests are logged
//! with the object they name, never with CHAP secrets. Every mutating call passes the leader
//! fence first ([`Fence`]): a call from a deposed operator leader changes nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spindle_agent_api::detail;
use spindle_agent_api::v1 as pb;
use spindle_agent_api::v1::agent_server::{Agent, AgentServer};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::calls::Calls;
use super::convert;
use super::fence::{Fence, FenceError};
use crate::node::{Node, NodeError};

/// The service over one node.
pub struct AgentService {
    node: Arc<Node>,
    node_name: String,
    calls: Calls,
    fence: Arc<Fence>,
}

/// Why a call was refused: by the node, or by the leader fence before the node saw it.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Fence(#[from] FenceError),
}

impl AgentService {
    /// The service; `calls` counts the calls it is answering (see [`serve`]).
    /// `fence` holds the highest operator leader term seen.
    pub fn new(
        node: Arc<Node>,
        node_name: String,
        calls: Calls,
        fence: Arc<Fence>,
    ) -> AgentServer<Self> {
        AgentServer::new(AgentService {
            node,
            node_name,
            calls,
            fence,
        })
    }

    /// Runs one mutating call ([`Self::call`]) once the leader fence admitted the request's
    /// term; the fence is held until the call ends.
    async fn mutate<T>(
        &self,
        method: &'static str,
        (term, object): (u64, String),
        f: impl Future<Output = Result<T, Refusal>>,
    ) -> Result<Response<T>, Status> {
        self.call(method, object, async {
            let _admitted = self.fence.admit(term).await?;
            f.await
        })
        .await
    }

    /// Runs one call: counts it as in progress until it ends, times it, counts it by method and
    /// code, logs refusals.
    async fn call<T>(
        &self,
        method: &'static str,
        object: String,
        f: impl Future<Output = Result<T, Refusal>>,
    ) -> Result<Response<T>, Status> {
        let _in_progress = self.calls.begin();
        let start = Instant::now();
        let r = f.await.map_err(|e| match e {
            Refusal::Node(e) => status(e),
            Refusal::Fence(e) => fence_status(e),
        });
        let m = crate::metrics::get();
        m.api_seconds
            .with_label_values(&[method])
            .observe(start.elapsed().as_secs_f64());
        let code = match &r {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        m.api_requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
        match &r {
            Ok(_) => tracing::debug!(method, %object, "API call done"),
            Err(s) => {
                tracing::warn!(method, %object, code = ?s.code(), "API call refused: {}", s.message())
            }
        }
        r.map(Response::new)
    }
}

/// The gRPC status of a node error.
pub fn status(e: NodeError) -> Status {
    let msg = e.to_string();
    match e {
        NodeError::Invalid { .. } => Status::invalid_argument(msg),
        NodeError::Precondition { .. } => Status::failed_precondition(msg),
        NodeError::InUse {
            owner, owner_uid, ..
        } => detail::status(
            tonic::Code::FailedPrecondition,
            msg,
            &pb::ErrorDetail {
                reason: pb::ErrorReason::BackingStoreInUse.into(),
                owner,
                owner_uid,
            },
        ),
        NodeError::Missing { .. } => detail::status(
            tonic::Code::FailedPrecondition,
            msg,
            &pb::ErrorDetail {
                reason: pb::ErrorReason::BackingStoreMissing.into(),
                ..Default::default()
            },
        ),
        NodeError::NoSpace { .. } => detail::status(
            tonic::Code::ResourceExhausted,
            msg,
            &pb::ErrorDetail {
                reason: pb::ErrorReason::NoSpace.into(),
                ..Default::default()
            },
        ),
        NodeError::NotFound(_) => Status::not_found(msg),
        NodeError::DataLoss(_) => Status::data_loss(msg),
        NodeError::ShuttingDown => Status::unavailable(msg),
        NodeError::State(_) | NodeError::Internal(_) => Status::internal(msg),
    }
}

/// The gRPC status of a fence refusal: a stale term is FAILED_PRECONDITION with the typed
/// reason STALE_LEADER; a term that could not be recorded is UNAVAILABLE (try again).
fn fence_status(e: FenceError) -> Status {
    let msg = e.to_string();
    match e {
        FenceError::Stale { .. } => spindle_agent_api::detail::status(
            tonic::Code::FailedPrecondition,
            msg,
            &pb::ErrorDetail {
                reason: pb::ErrorReason::StaleLeader as i32,
                ..pb::ErrorDetail::default()
            },
        ),
        FenceError::Persist { .. } | FenceError::Corrupt { .. } => Status::unavailable(msg),
    }
}

/// The leader term of a request and the object it names (for the log).
fn sender_of(meta: &Option<pb::ObjectMeta>) -> (u64, String) {
    (meta.as_ref().map_or(0, |m| m.leader_term), object_of(meta))
}

fn object_of(meta: &Option<pb::ObjectMeta>) -> String {
    meta.as_ref()
        .map(|m| {
            format!(
                "{}/{} (uid {}, generation {})",
                m.namespace, m.name, m.uid, m.generation
            )
        })
        .unwrap_or_else(|| "(no metadata)".into())
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn apply_device(
        &self,
        request: Request<pb::ApplyDeviceRequest>,
    ) -> Result<Response<pb::ApplyDeviceResponse>, Status> {
        let req = request.into_inner();
        self.mutate("ApplyDevice", sender_of(&req.meta), async {
            let served_before = !req.served_naa.is_empty();
            let rec = convert::device_record(req)?;
            let (stale, v) = self.node.apply_device_served(rec, served_before).await?;
            Ok(pb::ApplyDeviceResponse {
                stale,
                status: Some(convert::device_status(&v)),
            })
        })
        .await
    }

    async fn apply_target(
        &self,
        request: Request<pb::ApplyTargetRequest>,
    ) -> Result<Response<pb::ApplyTargetResponse>, Status> {
        let req = request.into_inner();
        self.mutate("ApplyTarget", sender_of(&req.meta), async {
            let rec = convert::target_record(req)?;
            let (stale, v) = self.node.apply_target(rec).await?;
            let ip = self.node.advertised_portal().await.map(|p| p.ip());
            Ok(pb::ApplyTargetResponse {
                stale,
                status: Some(convert::target_status(&v, ip)),
            })
        })
        .await
    }

    async fn remove_target(
        &self,
        request: Request<pb::RemoveTargetRequest>,
    ) -> Result<Response<pb::RemoveTargetResponse>, Status> {
        let req = request.into_inner();
        self.mutate("RemoveTarget", sender_of(&req.meta), async {
            let id = convert::object_id(req.meta)?;
            let (known, closed) = self.node.remove_target(&id).await?;
            Ok(pb::RemoveTargetResponse {
                known,
                sessions_closed: closed as u32,
            })
        })
        .await
    }

    async fn drain_device(
        &self,
        request: Request<pb::DrainDeviceRequest>,
    ) -> Result<Response<pb::DrainAck>, Status> {
        let req = request.into_inner();
        self.mutate("DrainDevice", sender_of(&req.meta), async {
            let id = convert::object_id(req.meta)?;
            let ack = self.node.drain_device(&id).await?;
            Ok(convert::ack(&id, &ack))
        })
        .await
    }

    async fn release_device(
        &self,
        request: Request<pb::ReleaseDeviceRequest>,
    ) -> Result<Response<pb::ReleaseDeviceResponse>, Status> {
        let req = request.into_inner();
        self.mutate("ReleaseDevice", sender_of(&req.meta), async {
            let policy = pb::ReclaimPolicy::try_from(req.reclaim_policy).map_err(|_| {
                NodeError::Invalid {
                    field: "reclaimPolicy".into(),
                    message: format!("unknown value {}", req.reclaim_policy),
                }
            })?;
            let reclaim_delete = match policy {
                pb::ReclaimPolicy::Unspecified => None,
                pb::ReclaimPolicy::Delete => Some(true),
                pb::ReclaimPolicy::Retain => Some(false),
            };
            let id = convert::object_id(req.meta)?;
            let r = self
                .node
                .release_device(&id, reclaim_delete, req.force)
                .await?;
            Ok(pb::ReleaseDeviceResponse {
                known: r.known,
                file_removed: r.file_removed,
                backing_path: r.backing_path,
                adopted_kept: r.adopted_kept,
            })
        })
        .await
    }

    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        let req = request.into_inner();
        self.mutate("CreateSnapshot", sender_of(&req.meta), async {
            let snap = convert::object_id(req.meta)?;
            let device = convert::object_id(req.device).map_err(|_| NodeError::Invalid {
                field: "device".into(),
                message: "the Device's namespace, name and uid are required".into(),
            })?;
            let r = self.node.create_snapshot(&snap, &device).await?;
            Ok(convert::snapshot(&crate::node::SnapshotView {
                id: r.id.clone(),
                copied_bytes: r.size_bytes,
                total_bytes: r.size_bytes,
                record: Some(r),
            }))
        })
        .await
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let req = request.into_inner();
        self.mutate("DeleteSnapshot", sender_of(&req.meta), async {
            let snap = convert::object_id(req.meta)?;
            let known = self.node.delete_snapshot(&snap)?;
            Ok(pb::DeleteSnapshotResponse { known })
        })
        .await
    }

    async fn list_snapshots(
        &self,
        _request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        self.call("ListSnapshots", String::new(), async {
            let (views, problems) = self.node.list_snapshots();
            Ok(pb::ListSnapshotsResponse {
                snapshots: views.iter().map(convert::snapshot).collect(),
                problems,
            })
        })
        .await
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        self.call("GetStatus", String::new(), async {
            let portal = self.node.advertised_portal().await;
            let v = self.node.view().await;
            let dd = self.node.data_dir_report();
            Ok(pb::AgentStatus {
                data_dir_id: dd.id.clone(),
                data_dir_created: dd.created,
                data_dir_foreign_node: dd.foreign_node.clone().unwrap_or_default(),
                node_name: self.node_name.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                portals: portal.map(|p| p.to_string()).into_iter().collect(),
                devices: v.devices.iter().map(convert::device_status).collect(),
                targets: v
                    .targets
                    .iter()
                    .map(|t| convert::target_status(t, portal.map(|p| p.ip())))
                    .collect(),
            })
        })
        .await
    }
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 pings on idle connections, and how long an answer may take: a peer that went away
/// without closing (its pod's network torn down) is noticed and its connection closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// On stop, how long connections may take to close once no call is in progress (a client
/// answering the GOAWAY); past it they are cut.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves the API on `listener` with mutual TLS until `shutdown` resolves. Handshakes run
/// concurrently, so a slow or hostile client does not hold up the operator. After `shutdown`,
/// new calls are refused, the calls in progress (`calls`, as given to [`AgentService::new`])
/// are answered, and connections left open [`CLOSE_GRACE`] after that are cut: an idle
/// connection never holds the agent's stop.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: AgentServer<AgentService>,
    calls: Calls,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let accepting = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("agent API: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    // A bare TCP connect (a readiness probe) says nothing: not worth a warning.
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        tracing::debug!(%peer, "agent API: connection closed before TLS");
                    }
                    Ok(Err(e)) => refused(peer, &e.to_string()),
                    Err(_) => refused(peer, "TLS handshake timed out"),
                }
            });
        }
    });
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(service)
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        });
    let lingering = async {
        if stopping.await.is_err() {
            return std::future::pending().await; // the server ended by itself
        }
        calls.idle().await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    let r = tokio::select! {
        r = server => r,
        () = lingering => {
            tracing::warn!(
                "agent API: connections still open {} s after the last call was answered are cut",
                CLOSE_GRACE.as_secs()
            );
            Ok(())
        }
    };
    accepting.abort();
    r
}

fn refused(peer: SocketAddr, why: &str) {
    crate::metrics::get()
        .api_requests
        .with_label_values(&["(handshake)", "Unauthenticated"])
        .inc();
    tracing::warn!(%peer, "agent API: connection refused: {why}");
}

#[cfg(test)]
#[path = "server_fence_tests.rs"]
mod fence_tests;
