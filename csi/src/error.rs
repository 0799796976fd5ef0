//! The crate's error type.

use thiserror::Error;

/// What can stop the driver from starting or serving (per-call failures are gRPC statuses).
#[derive(Debug, Error)]
pub enum Error {
    /// The `--endpoint` value cannot be used.
    #[error("endpoint {endpoint:?}: {why}")]
    Endpoint { endpoint: String, why: String },
    /// Listening or serving failed.
    #[error("serving on {endpoint}: {source}")]
    Serve {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Kubelet refused to register the node plugin.
    #[error("kubelet refused the plugin registration: {0}")]
    Registration(String),
    /// The Kubernetes client could not be set up.
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
}
