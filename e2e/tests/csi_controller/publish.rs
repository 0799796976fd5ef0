//! ControllerPublishVolume: exactly one initiator admitted per volume, and one node for a
//! single-node volume.

use anyhow::{Context, Result, bail, ensure};
use spindle_csi::proto::volume_capability::access_mode::Mode;
use spindle_csi::proto::*;
use spindle_csi::volume as ctx;
use spindle_e2e::csi::capability;
use spindle_e2e::initiator;
use spindle_e2e::spindle::Spindle;
use tonic::Code;

use crate::calls::{acl, create, delete, publish, unpublish};
use crate::{IQN_A, IQN_B, MIB, with_ctl};

/// `iscsi-inq` as `initiator` against LUN 0 of `iqn`: Ok(output) if it logged in.
fn inquiry(portal: std::net::SocketAddr, iqn: &str, initiator: &str) -> Result<String> {
    initiator::run_ok(
        std::process::Command::new("iscsi-inq")
            .args(["-i", initiator])
            .arg(initiator::lun_url(portal, iqn, 0)),
    )
}

pub fn publish_one_iqn(s: &Spindle, _: &str) -> Result<()> {
    let v = create(
        "pvc-e2e-publish",
        64 * MIB,
        &[("spindle.dev/node", "node-a"), ("spindle.dev/chap", "none")],
    )?;
    let id = &v.volume_id;
    let iqn = v.volume_context.get(ctx::CTX_IQN).context("iqn")?.clone();
    let portal = s.rt.portal("node-a")?;
    ensure!(
        inquiry(portal, &iqn, IQN_A).is_err(),
        "logged in before publish"
    );
    publish(id, IQN_A)?.map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    ensure!(
        acl(s, id)? == vec![IQN_A.to_owned()],
        "ACL {:?}",
        acl(s, id)?
    );
    let ok = inquiry(portal, &iqn, IQN_A).context("the published node logs in")?;
    ensure!(!ok.trim().is_empty(), "iscsi-inq printed nothing");
    ensure!(
        inquiry(portal, &iqn, IQN_B).is_err(),
        "another initiator logged in to a published volume"
    );
    // Idempotent, and unpublish takes the node out.
    publish(id, IQN_A)?.map_err(|e| anyhow::anyhow!("publish again: {e}"))?;
    unpublish(id, IQN_A)?;
    ensure!(
        acl(s, id)?.is_empty(),
        "ACL after unpublish {:?}",
        acl(s, id)?
    );
    ensure!(
        inquiry(portal, &iqn, IQN_A).is_err(),
        "logged in after unpublish"
    );
    unpublish(id, IQN_A)?;
    delete(id)
}

pub fn publish_single_node(s: &Spindle, _: &str) -> Result<()> {
    let v = create(
        "pvc-e2e-rwo",
        64 * MIB,
        &[("spindle.dev/node", "node-b"), ("spindle.dev/chap", "none")],
    )?;
    let id = v.volume_id.clone();
    publish(&id, IQN_A)?.map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    match publish(&id, IQN_B)? {
        Err(st) if st.code() == Code::FailedPrecondition && st.message().contains(IQN_A) => {}
        other => bail!("a second node's publish: {other:?}"),
    }
    unpublish(&id, IQN_A)?;
    // Two nodes at once: exactly one gets the volume, the ACL holds exactly that one.
    let (ra, rb) = with_ctl(async |c| {
        let req = |node: &str| ControllerPublishVolumeRequest {
            volume_id: id.clone(),
            node_id: node.into(),
            volume_capability: Some(capability(true, Mode::SingleNodeWriter)),
            ..Default::default()
        };
        let (mut a, mut b) = (c.clone(), c);
        let (ra, rb) = tokio::join!(
            a.controller_publish_volume(req(IQN_A)),
            b.controller_publish_volume(req(IQN_B))
        );
        Ok((ra.map(drop), rb.map(drop)))
    })?;
    let winner = match (&ra, &rb) {
        (Ok(()), Err(st)) if st.code() == Code::FailedPrecondition => IQN_A,
        (Err(st), Ok(())) if st.code() == Code::FailedPrecondition => IQN_B,
        _ => bail!("concurrent publishes: {ra:?} / {rb:?}"),
    };
    ensure!(
        acl(s, &id)? == vec![winner.to_owned()],
        "ACL {:?}",
        acl(s, &id)?
    );
    unpublish(&id, winner)?;
    delete(&id)
}
