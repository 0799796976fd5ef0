//! DeleteVolume: the Target, then the Device — whose finalizer makes the agent fence, drain,
//! flush and release the store, so the call returns only once the Device object is gone — then
//! the CHAP Secret. A missing volume is success; every step may be retried.

use kube::Api;
use tonic::Status;

use super::cluster::{Cluster, Step, delete, get_opt, wait};
use super::names;
use super::objects::is_managed;

pub async fn delete_volume(c: &Cluster, id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    if !names::is_volume_id(id) {
        // No volume of this driver has such an ID.
        return Ok(());
    }
    remove(c, &c.targets, "Target", id).await?;
    remove(c, &c.devices, "Device", id).await?;
    remove_secret(c, &names::secret_name(id)).await?;
    tracing::info!(volume = %id, "volume deleted");
    Ok(())
}

/// Deletes the driver's object `name` and waits until it is gone.
async fn remove<K>(c: &Cluster, api: &Api<K>, kind: &str, name: &str) -> Result<(), Status>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + DeletingState,
{
    let Some(obj) = get_opt(api, name).await? else {
        return Ok(());
    };
    if !is_managed(obj.meta()) {
        return Err(Status::failed_precondition(format!(
            "{kind} {}/{name} is not managed by spindle-csi: not deleting it",
            c.namespace
        )));
    }
    if obj.meta().deletion_timestamp.is_none() {
        delete(api, name).await?;
    }
    let what = format!("{kind} {}/{name} deleted", c.namespace);
    wait(&what, c.delete_timeout, || async {
        Ok(match get_opt(api, name).await? {
            None => Step::Done(()),
            Some(o) => Step::Wait(o.deleting_state()),
        })
    })
    .await
}

/// Deletes the driver's CHAP Secret (read as metadata only: the controller never reads the
/// credentials back).
async fn remove_secret(c: &Cluster, name: &str) -> Result<(), Status> {
    let meta = c
        .secrets
        .get_metadata_opt(name)
        .await
        .map_err(|e| super::cluster::kube_status(&format!("reading Secret {name}"), e))?;
    match meta {
        None => Ok(()),
        Some(m) if !is_managed(&m.metadata) => Err(Status::failed_precondition(format!(
            "Secret {}/{name} is not managed by spindle-csi: not deleting it",
            c.namespace
        ))),
        Some(_) => delete(&c.secrets, name).await,
    }
}

/// What a deleted object waits for, as its conditions say (for the timeout's message).
pub trait DeletingState {
    fn deleting_state(&self) -> String;
}

fn conditions_state(conditions: &[spindle_crds::Condition]) -> String {
    let said: Vec<String> = conditions
        .iter()
        .filter(|c| matches!(c.type_.as_str(), "Deleting" | "Flushed" | "AgentReachable"))
        .map(|c| format!("{}={:?} {}: {}", c.type_, c.status, c.reason, c.message))
        .collect();
    if said.is_empty() {
        "still present".into()
    } else {
        said.join("; ")
    }
}

impl DeletingState for spindle_crds::Device {
    fn deleting_state(&self) -> String {
        conditions_state(self.status.as_ref().map_or(&[], |s| &s.conditions))
    }
}

impl DeletingState for spindle_crds::Target {
    fn deleting_state(&self) -> String {
        conditions_state(self.status.as_ref().map_or(&[], |s| &s.conditions))
    }
}
