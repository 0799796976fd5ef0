//! The agent API requests the checks send (Devices and Targets in namespace e2e), and the
//! replies they read.

use anyhow::{Context, Result};
use spindle_agent_api::v1 as pb;
use spindle_agent_api::v1::agent_client::AgentClient;
use tonic::transport::Channel;

use spindle_e2e::initiator::lun_url;

use crate::Ctx;

pub fn meta(name: &str, uid: &str, generation: i64) -> Option<pb::ObjectMeta> {
    Some(pb::ObjectMeta {
        namespace: "e2e".into(),
        name: name.into(),
        uid: uid.into(),
        generation,
        leader_term: 0,
    })
}

pub fn file_device(name: &str, size: u64) -> pb::ApplyDeviceRequest {
    pb::ApplyDeviceRequest {
        meta: meta(name, &format!("uid-{name}"), 1),
        spec: Some(pb::DeviceSpec {
            source: Some(pb::device_spec::Source::File(pb::FileSource {
                path: format!("{name}.img"),
                size_bytes: size,
            })),
            block_size: 512,
            write_cache: pb::WriteCache::Writeback as i32,
            reclaim_policy: pb::ReclaimPolicy::Retain as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn iqn(name: &str) -> String {
    format!("iqn.2026-11.dev.spindle:e2e.{name}")
}

pub fn target(name: &str, port: u16, luns: &[(u64, &str)]) -> pb::ApplyTargetRequest {
    pb::ApplyTargetRequest {
        meta: meta(name, &format!("uid-{name}"), 1),
        spec: Some(pb::TargetSpec {
            iqn: iqn(name),
            port: u32::from(port),
            luns: luns
                .iter()
                .map(|(lun, d)| pb::LunMapping {
                    lun: *lun,
                    device_name: d.to_string(),
                    device_uid: format!("uid-{d}"),
                })
                .collect(),
            acl: Some(pb::Acl {
                allow_all: true,
                initiators: vec![],
            }),
            chap: None,
            iscsi: None,
            qos: None,
        }),
    }
}

pub fn device_meta(name: &str) -> Option<pb::ObjectMeta> {
    meta(name, &format!("uid-{name}"), 1)
}

/// Applies a Device and a Target with LUN 0 on it.
pub fn serve(ctx: &Ctx, c: &mut AgentClient<Channel>, name: &str, size: u64) -> Result<String> {
    ctx.rt.block_on(async {
        c.apply_device(file_device(name, size)).await?;
        c.apply_target(target(name, ctx.agent.config.iscsi_port, &[(0, name)]))
            .await?;
        anyhow::Ok(())
    })?;
    Ok(lun_url(ctx.agent.portal(), &iqn(name), 0))
}

pub fn device_status(
    ctx: &Ctx,
    c: &mut AgentClient<Channel>,
    name: &str,
) -> Result<pb::DeviceStatus> {
    let s = ctx
        .rt
        .block_on(c.get_status(pb::GetStatusRequest {}))?
        .into_inner();
    s.devices
        .into_iter()
        .find(|d| d.meta.as_ref().is_some_and(|m| m.name == name))
        .with_context(|| format!("no Device {name} in GetStatus"))
}
