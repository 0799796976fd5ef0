//! ControllerExpandVolume: the Device's file grows (`spec.source.file.sizeBytes`), and the call
//! returns once the agent serves the new capacity.

use kube::api::{Patch, PatchParams};
use tonic::Status;

use super::capabilities::{self, Access};
use super::cluster::{Cluster, Step, api_message, get_opt, kube_status, wait};
use super::names;
use super::objects::{self, is_managed};
use super::readiness::{Readiness, readiness};
use super::size;
use crate::proto::{ControllerExpandVolumeRequest, ControllerExpandVolumeResponse};

/// Field manager of the controller's patches.
const FIELD_MANAGER: &str = "spindle-csi";

pub async fn expand(
    c: &Cluster,
    req: &ControllerExpandVolumeRequest,
) -> Result<ControllerExpandVolumeResponse, Status> {
    if req.volume_id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    let range = req
        .capacity_range
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
    let block = match &req.volume_capability {
        Some(cap) => {
            let (access, _) = capabilities::check_one(0, cap)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            access == Access::Block
        }
        None => false,
    };
    let id = &req.volume_id;
    let not_found = || Status::not_found(format!("volume {id} does not exist"));
    if !names::is_volume_id(id) {
        return Err(not_found());
    }
    let d = get_opt(&c.devices, id)
        .await?
        .filter(|d| is_managed(&d.metadata))
        .ok_or_else(not_found)?;
    let current = d
        .spec
        .source
        .file
        .as_ref()
        .map(|f| f.size_bytes)
        .ok_or_else(|| Status::internal(format!("volume {id} has no file source")))?;
    let wanted = size::volume_size(Some(range), d.spec.block_size)
        .map_err(|e| Status::out_of_range(e.to_string()))?;
    if wanted < current {
        return Err(Status::out_of_range(format!(
            "capacity_range asks for {wanted} bytes; volume {id} has {current}: volumes cannot shrink"
        )));
    }
    if wanted > current {
        let patch = serde_json::json!({"spec": {"source": {"file": {"sizeBytes": wanted}}}});
        c.devices
            .patch(id, &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&patch))
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 422 => Status::internal(format!(
                    "Device {}/{id} refuses the new size (does the installed Device CRD allow growing a file?): {}",
                    c.namespace,
                    api_message(&e)
                )),
                _ => kube_status(&format!("growing Device {id}"), e),
            })?;
        tracing::info!(volume = %id, from = current, to = wanted, "expanding volume");
    }
    let what = format!("Device {}/{id} serving {wanted} bytes", c.namespace);
    let served = wait(&what, c.ready_timeout, || async {
        let Some(d) = get_opt(&c.devices, id).await? else {
            return Err(not_found());
        };
        let have = d
            .status
            .as_ref()
            .and_then(|s| s.capacity_bytes)
            .unwrap_or(0);
        let conditions = d
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        // The agent refused the growth (NoSpace: the file keeps its old size).
        if let Readiness::Failed(code, msg) = readiness(&conditions, d.metadata.generation) {
            return Err(Status::new(
                expansion_code(code),
                format!("Device {}/{id}: {msg}", c.namespace),
            ));
        }
        Ok(if have >= wanted {
            Step::Done(objects::capacity(&d))
        } else {
            Step::Wait(format!("status.capacityBytes is {have}"))
        })
    })
    .await?;
    Ok(ControllerExpandVolumeResponse {
        capacity_bytes: i64::try_from(served).unwrap_or(i64::MAX),
        node_expansion_required: !block,
    })
}

/// The code an expansion answers for a Device that failed with `code`. FAILED_PRECONDITION means
/// "in use: only offline expansion" to ControllerExpandVolume's callers (the spec; the
/// external-resizer then refuses every later try while a Pod uses the volume), so a Device
/// whose node cannot serve it now answers UNAVAILABLE instead (retried).
fn expansion_code(code: tonic::Code) -> tonic::Code {
    match code {
        tonic::Code::FailedPrecondition => tonic::Code::Unavailable,
        other => other,
    }
}

#[cfg(test)]
mod expansion_code_tests {
    use super::expansion_code;
    use tonic::Code;

    #[test]
    fn an_expansion_never_answers_failed_precondition() {
        assert_eq!(expansion_code(Code::FailedPrecondition), Code::Unavailable);
        assert_eq!(
            expansion_code(Code::ResourceExhausted),
            Code::ResourceExhausted
        );
        assert_eq!(expansion_code(Code::InvalidArgument), Code::InvalidArgument);
    }
}
