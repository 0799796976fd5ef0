//! Kubelet's plugin registration (`pluginregistration/v1`, served on
//! `<kubelet dir>/plugins_registry/csi.spindle.dev-reg.sock`): kubelet's plugin watcher finds
//! the socket, asks GetInfo for the CSI endpoint, then reports whether it registered the
//! driver. The node mode answers it itself (node-driver-registrar is not needed); every
//! connection goes through [`AuthorityFix`], without which kubelet's calls never reach the
//! service (see [`super::authority`]).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::{Connected, Router};
use tonic::{Request, Response, Status};

use super::authority::AuthorityFix;
use crate::Error;
use crate::volume::DRIVER_NAME;

#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("pluginregistration");
}

use proto::registration_server::Registration;
use proto::{InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse};

/// The registration socket in kubelet's registry folder.
pub fn socket_path(registry_dir: &Path) -> PathBuf {
    registry_dir.join(format!("{DRIVER_NAME}-reg.sock"))
}

/// The Registration service.
pub struct RegistrationService {
    /// The CSI socket as kubelet sees it (a host path).
    endpoint: String,
    /// Where a refusal goes (the node mode then exits).
    refused: mpsc::UnboundedSender<String>,
}

impl RegistrationService {
    pub fn new(endpoint: String, refused: mpsc::UnboundedSender<String>) -> Self {
        Self { endpoint, refused }
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        tracing::info!(endpoint = %self.endpoint, "kubelet asks for the plugin's info");
        Ok(Response::new(PluginInfo {
            r#type: "CSIPlugin".into(),
            name: DRIVER_NAME.into(),
            endpoint: self.endpoint.clone(),
            supported_versions: vec!["1.0.0".into()],
        }))
    }

    async fn notify_registration_status(
        &self,
        req: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let s = req.into_inner();
        if s.plugin_registered {
            tracing::info!("kubelet registered the driver");
        } else {
            tracing::error!(error = %s.error, "kubelet refused to register the driver");
            let _ = self.refused.send(s.error);
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// Serves `router` (the registration service) on the unix socket `path` until `shutdown`
/// resolves, each connection's requests rewritten by [`AuthorityFix`].
pub async fn serve(
    path: &Path,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let listener = crate::endpoint::bind_unix(path).map_err(|source| Error::Serve {
        endpoint: format!("unix://{}", path.display()),
        source,
    })?;
    let incoming = UnixListenerStream::new(listener).map(|conn| {
        conn.map(|client| {
            // The server end of an in-memory pipe; the pump rewrites what the client sends.
            let (server_end, pump_end) = tokio::io::duplex(64 << 10);
            tokio::spawn(pump(client, pump_end));
            Fixed(server_end)
        })
    });
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Copies the client's bytes to the server through the rewriter, and the server's back as they
/// are, until either side closes (or the client sends what is not HTTP/2).
async fn pump(client: UnixStream, server: DuplexStream) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = tokio::io::split(server);
    let upstream = async move {
        let mut fix = AuthorityFix::new();
        let (mut buf, mut out) = (vec![0u8; 16 << 10], Vec::new());
        let r = async {
            loop {
                let n = from_client.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                out.clear();
                fix.push(&buf[..n], &mut out)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                to_server.write_all(&out).await?;
            }
        }
        .await;
        let _ = to_server.shutdown().await;
        r
    };
    let downstream = async move {
        tokio::io::copy(&mut from_server, &mut to_client).await?;
        to_client.shutdown().await
    };
    let (up, down): (std::io::Result<()>, std::io::Result<()>) = tokio::join!(upstream, downstream);
    if let Err(e) = up.and(down) {
        tracing::warn!(error = %e, "plugin registration connection closed");
    }
}

/// The server's end of a registration connection.
struct Fixed(DuplexStream);

impl Connected for Fixed {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Fixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Fixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "registration_kubelet_tests.rs"]
mod kubelet_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use proto::registration_client::RegistrationClient;
    use proto::registration_server::RegistrationServer;

    #[tokio::test]
    async fn answers_kubelet_on_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = socket_path(dir.path());
        assert!(sock.ends_with("csi.spindle.dev-reg.sock"));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let svc = RegistrationService::new(
            "/var/lib/kubelet/plugins/csi.spindle.dev/csi.sock".into(),
            tx,
        );
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener));
        tokio::spawn(server);
        let path = sock.clone();
        let channel = tonic::transport::Endpoint::from_static("http://unused")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .unwrap();
        let mut client = RegistrationClient::new(channel);
        let info = client.get_info(InfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, "csi.spindle.dev");
        assert_eq!(
            info.endpoint,
            "/var/lib/kubelet/plugins/csi.spindle.dev/csi.sock"
        );
        assert_eq!(info.supported_versions, vec!["1.0.0"]);
        client
            .notify_registration_status(RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            })
            .await
            .unwrap();
        assert!(rx.try_recv().is_err(), "a success is no refusal");
        client
            .notify_registration_status(RegistrationStatus {
                plugin_registered: false,
                error: "version".into(),
            })
            .await
            .unwrap();
        assert_eq!(rx.recv().await.as_deref(), Some("version"));
    }
}
