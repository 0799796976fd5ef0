//! Kubelet's plugin registration (`pluginregistration/v1`, served on
//! `<kubelet dir>/plugins_registry/csi.spindle.dev-reg.sock`): kubelet's plugin watcher finds
//! the socket, asks GetInfo for the CSI endpoint, then reports whether it registered the
//! driver. The node mode answers it itself (node-driver-registrar is not needed).

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

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
