//! The CSI calls the checks make through the controller, and what they read back.

use anyhow::{Context, Result};
use spindle_csi::proto::volume_capability::access_mode::Mode;
use spindle_csi::proto::*;
use spindle_e2e::csi::capability;
use spindle_e2e::spindle::Spindle;

use crate::{NS, controller_log, tail, with_ctl};

pub fn create_req(name: &str, size: i64, params: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![capability(false, Mode::SingleNodeWriter)],
        parameters: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

/// CreateVolume; the volume.
pub fn create(name: &str, size: i64, params: &[(&str, &str)]) -> Result<Volume> {
    let req = create_req(name, size, params);
    with_ctl(async move |mut c| {
        let r = c.create_volume(req).await?.into_inner();
        r.volume.context("CreateVolume returned no volume")
    })
    .with_context(|| {
        format!(
            "CreateVolume {name}; controller log:\n{}",
            tail(&controller_log())
        )
    })
}

pub fn delete(id: &str) -> Result<()> {
    let req = DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    };
    with_ctl(async move |mut c| {
        c.delete_volume(req).await?;
        Ok(())
    })
}

pub fn publish(id: &str, node: &str) -> Result<std::result::Result<(), tonic::Status>> {
    let req = ControllerPublishVolumeRequest {
        volume_id: id.into(),
        node_id: node.into(),
        volume_capability: Some(capability(false, Mode::SingleNodeWriter)),
        ..Default::default()
    };
    with_ctl(async move |mut c| Ok(c.controller_publish_volume(req).await.map(drop)))
}

pub fn unpublish(id: &str, node: &str) -> Result<()> {
    let req = ControllerUnpublishVolumeRequest {
        volume_id: id.into(),
        node_id: node.into(),
        ..Default::default()
    };
    with_ctl(async move |mut c| {
        c.controller_unpublish_volume(req).await?;
        Ok(())
    })
}

/// The initiators of a Target's ACL.
pub fn acl(s: &Spindle, id: &str) -> Result<Vec<String>> {
    let t = s.get("target", NS, id)?.context("the Target")?;
    Ok(t["spec"]["acl"]["initiators"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

/// True if the Device CRD lets a file source grow (helper "grow"): the old immutability rule
/// on `spec.source` is gone.
pub fn crd_allows_growth(s: &Spindle) -> Result<bool> {
    let crd = s.kubectl(&["get", "crd", "devices.spindle.dev", "-o", "json"])?;
    Ok(!crd.contains("self.source == oldSelf.source"))
}
