//! ControllerPublishVolume and ControllerUnpublishVolume: the node's initiator IQN added to (or
//! removed from) the volume's Target ACL, with optimistic concurrency (the write carries the
//! resourceVersion it read, and a conflict reads again), and the call returns once the agent
//! serves the new ACL.

use std::collections::HashMap;

use kube::ResourceExt;
use kube::api::PostParams;
use spindle_crds::Target;
use tonic::Status;

use super::acl::{self, Admit};
use super::capabilities;
use super::cluster::{Cluster, Step, get_opt, kube_status, wait};
use super::names::{self, ACCESS_MODE_ANNOTATION, READONLY_ANNOTATION};
use super::objects::is_managed;
use super::readiness::{Readiness, readiness};
use crate::proto::{ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest};

/// Tries of a read-modify-write before giving up with ABORTED.
const TRIES: usize = 8;

pub async fn publish(
    c: &Cluster,
    req: &ControllerPublishVolumeRequest,
) -> Result<HashMap<String, String>, Status> {
    if req.volume_id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    if req.node_id.is_empty() {
        return Err(Status::invalid_argument("node_id is required"));
    }
    let cap = req
        .volume_capability
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
    capabilities::check_one(0, cap).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let id = &req.volume_id;
    if !names::is_volume_id(id) {
        return Err(not_found(c, id));
    }
    let iqn = acl::initiator(&req.node_id).map_err(|e| Status::not_found(e.to_string()))?;
    for _ in 0..TRIES {
        let mut t = managed_target(c, id)
            .await?
            .ok_or_else(|| not_found(c, id))?;
        let ro_list = t.annotations().get(READONLY_ANNOTATION).cloned();
        match acl::admit(&t.spec.acl.initiators, &iqn) {
            Admit::Already => {
                if acl::is_readonly(ro_list.as_deref(), &iqn) != req.readonly {
                    return Err(Status::already_exists(format!(
                        "volume {id} is published to {iqn} with readonly={}; unpublish it first",
                        !req.readonly
                    )));
                }
                wait_applied(c, id).await?;
                return Ok(HashMap::new());
            }
            Admit::HeldBy(other) => {
                let mode = t
                    .annotations()
                    .get(ACCESS_MODE_ANNOTATION)
                    .cloned()
                    .unwrap_or_else(|| "single-node".into());
                return Err(Status::failed_precondition(format!(
                    "volume {id} is published to node {other}; its access mode {mode} admits one node: unpublish it there first"
                )));
            }
            Admit::Add(initiators) => {
                t.spec.acl.initiators = initiators;
                let list = acl::with_readonly(ro_list.as_deref(), &iqn, req.readonly);
                set_readonly_list(&mut t, list);
                if replace(c, &t).await? {
                    tracing::info!(volume = %id, initiator = %iqn, readonly = req.readonly, "published");
                    wait_applied(c, id).await?;
                    return Ok(HashMap::new());
                }
            }
        }
    }
    Err(aborted(id))
}

pub async fn unpublish(c: &Cluster, req: &ControllerUnpublishVolumeRequest) -> Result<(), Status> {
    if req.volume_id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    let id = &req.volume_id;
    if !names::is_volume_id(id) {
        return Ok(());
    }
    // No node ID: unpublish from every node. A node ID that is no initiator name was never
    // admitted.
    let iqn = if req.node_id.is_empty() {
        None
    } else {
        match acl::initiator(&req.node_id) {
            Ok(i) => Some(i),
            Err(_) => return Ok(()),
        }
    };
    for _ in 0..TRIES {
        let Some(mut t) = managed_target(c, id).await? else {
            return Ok(());
        };
        let kept = match &iqn {
            Some(i) => acl::remove(&t.spec.acl.initiators, i),
            None => (!t.spec.acl.initiators.is_empty()).then(Vec::new),
        };
        let Some(kept) = kept else {
            return Ok(());
        };
        let ro_list = t.annotations().get(READONLY_ANNOTATION).cloned();
        let list = match &iqn {
            Some(i) => acl::with_readonly(ro_list.as_deref(), i, false),
            None => String::new(),
        };
        t.spec.acl.initiators = kept;
        set_readonly_list(&mut t, list);
        if replace(c, &t).await? {
            tracing::info!(volume = %id, initiator = ?iqn, "unpublished");
            return wait_applied(c, id).await;
        }
    }
    Err(aborted(id))
}

/// The volume's Target if it exists and is the driver's.
async fn managed_target(c: &Cluster, id: &str) -> Result<Option<Target>, Status> {
    Ok(get_opt(&c.targets, id)
        .await?
        .filter(|t| is_managed(&t.metadata)))
}

fn set_readonly_list(t: &mut Target, list: String) {
    if list.is_empty() {
        t.annotations_mut().remove(READONLY_ANNOTATION);
    } else {
        t.annotations_mut()
            .insert(READONLY_ANNOTATION.to_owned(), list);
    }
}

/// Writes `t` if nobody changed it since it was read (its resourceVersion); false on a
/// conflict (read again and retry).
async fn replace(c: &Cluster, t: &Target) -> Result<bool, Status> {
    let name = t.name_any();
    match c.targets.replace(&name, &PostParams::default(), t).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
        Err(e) => Err(kube_status(&format!("updating Target {name}"), e)),
    }
}

/// Waits until the agent serves the Target's current spec (Ready, or refused, for its current
/// generation): after publish the node can log in, after unpublish it cannot.
async fn wait_applied(c: &Cluster, id: &str) -> Result<(), Status> {
    let what = format!("Target {}/{id}: new ACL applied", c.namespace);
    wait(&what, c.ready_timeout, || async {
        let Some(t) = get_opt(&c.targets, id).await? else {
            return Ok(Step::Done(()));
        };
        let conditions = t
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        Ok(match readiness(&conditions, t.metadata.generation) {
            Readiness::Ready => Step::Done(()),
            Readiness::Failed(code, msg) => {
                return Err(Status::new(
                    code,
                    format!("Target {}/{id}: {msg}", c.namespace),
                ));
            }
            Readiness::Pending(s) => Step::Wait(s),
        })
    })
    .await
}

fn not_found(c: &Cluster, id: &str) -> Status {
    Status::not_found(format!(
        "volume {id} does not exist (no Target {}/{id})",
        c.namespace
    ))
}

fn aborted(id: &str) -> Status {
    Status::aborted(format!(
        "volume {id}: the Target kept changing under concurrent updates; retry"
    ))
}
