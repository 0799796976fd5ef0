//! What can go wrong reading Spindle's objects, as kinds the commands turn into advice.

/// A failure to read what a command needs from the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver does not serve `devices.spindle.dev`: Spindle's CRDs are not installed (or
    /// the kubeconfig points at another cluster).
    #[error(
        "the cluster has no Spindle CRDs (devices.spindle.dev is not served): install them \
         (kubectl apply -f crds/ or the Helm chart) or check which cluster your kubeconfig names"
    )]
    CrdsMissing,
    /// The object named on the command line does not exist.
    #[error("{kind} {namespace}/{name} not found (kubectl get {plural} -n {namespace} lists them)")]
    NotFound {
        /// Kind, e.g. Device.
        kind: &'static str,
        /// Plural resource name for the hint.
        plural: &'static str,
        /// Namespace looked in.
        namespace: String,
        /// Name asked for.
        name: String,
    },
    /// Any other apiserver or connection failure.
    #[error("asking the Kubernetes API for {what}: {source}")]
    Api {
        /// What was being read.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

/// True when `e` is the apiserver's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
