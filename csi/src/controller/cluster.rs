//! The Kubernetes side of the controller: the APIs it uses, Kubernetes errors as CSI statuses,
//! and bounded waits.

use std::future::Future;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use spindle_crds::{Device, Target};
use tonic::Status;

use super::capacity::{self, NodeSpace};

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(250);

/// The controller's view of the cluster.
#[derive(Clone)]
pub struct Cluster {
    pub devices: Api<Device>,
    pub targets: Api<Target>,
    pub secrets: Api<Secret>,
    /// The agents' Leases (in the operator's namespace).
    pub leases: Api<Lease>,
    /// The driver's namespace (its Devices, Targets and Secrets).
    pub namespace: String,
    /// Ports Targets may use (`spindle.dev/port`).
    pub ports: RangeInclusive<u16>,
    /// Bound of the waits for Ready (CreateVolume, publish, expand).
    pub ready_timeout: Duration,
    /// Bound of the wait for a deleted Device to be gone (the agent's flush).
    pub delete_timeout: Duration,
}

impl Cluster {
    /// Free bytes per agent, from the Leases labelled `spindle.dev/agent`.
    pub async fn node_space(&self) -> Result<Vec<NodeSpace>, Status> {
        let lp = ListParams::default().labels(spindle_agent_api::lease::AGENT_LABEL);
        let leases = self
            .leases
            .list(&lp)
            .await
            .map_err(|e| kube_status("listing the agents' Leases", e))?;
        Ok(capacity::from_leases(&leases.items))
    }
}

/// A Kubernetes error as the CSI status of the call that met it; `what` says what was tried.
pub fn kube_status(what: &str, e: kube::Error) -> Status {
    let msg = format!("{what}: {}", api_message(&e));
    match &e {
        kube::Error::Api(s) => match s.code {
            404 => Status::not_found(msg),
            409 => Status::aborted(msg),
            400 | 422 => Status::invalid_argument(msg),
            401 | 403 => Status::permission_denied(msg),
            429 => Status::resource_exhausted(msg),
            _ => Status::unavailable(msg),
        },
        _ => Status::unavailable(msg),
    }
}

/// What the API server said (its message alone: kube's Display adds the whole Status).
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// The object `name`, or None if it does not exist.
pub async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>, Status>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|e| kube_status(&format!("reading {name}"), e))
}

/// Creates `obj` unless an object of its name exists; true if this call created it.
pub async fn create_if_absent<K>(api: &Api<K>, obj: &K) -> Result<bool, Status>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
        Err(e) => Err(kube_status(&format!("creating {name}"), e)),
    }
}

/// Deletes `name`; an object already gone is fine.
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), Status>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(kube_status(&format!("deleting {name}"), e)),
    }
}

/// What one look of a wait found.
pub enum Step<T> {
    /// The wait is over.
    Done(T),
    /// Not yet; the state as it was seen (for the timeout's message).
    Wait(String),
}

/// Looks with `look` every 250 ms until it is done or fails, or `timeout` passes: then
/// DEADLINE_EXCEEDED saying `what` and the last state seen (the caller retries).
pub async fn wait<T, F, Fut>(what: &str, timeout: Duration, mut look: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Step<T>, Status>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match look().await? {
            Step::Done(t) => return Ok(t),
            Step::Wait(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(Status::deadline_exceeded(format!(
                "{what}: not after {} s (last: {last}); retry",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}
