//! Bad orders: each refused with its code and the field it names, nothing served changes.

use anyhow::{Result, bail, ensure};
use spindle_agent_api::v1 as pb;

use crate::Ctx;
use crate::requests::{file_device, target};

pub fn code_and_message(
    r: Result<tonic::Response<impl Sized>, tonic::Status>,
) -> Result<(tonic::Code, String)> {
    match r {
        Ok(_) => bail!("the agent accepted it"),
        Err(s) => Ok((s.code(), s.message().to_string())),
    }
}

pub fn bad_orders(ctx: &mut Ctx) -> Result<()> {
    use tonic::Code;
    let mut c = ctx.client()?;
    let before = ctx
        .rt
        .block_on(c.get_status(pb::GetStatusRequest {}))?
        .into_inner();
    let mut escape = file_device("bad1", 1 << 20);
    if let Some(pb::device_spec::Source::File(f)) =
        escape.spec.as_mut().and_then(|s| s.source.as_mut())
    {
        f.path = "../../etc/evil.img".into();
    }
    let mut unaligned = file_device("bad2", 1 << 20);
    if let Some(pb::device_spec::Source::File(f)) =
        unaligned.spec.as_mut().and_then(|s| s.source.as_mut())
    {
        f.size_bytes = 1000;
    }
    let mut block = file_device("bad3", 1 << 20);
    block.spec.as_mut().unwrap().source = Some(pb::device_spec::Source::Block(pb::BlockSource {
        path: "/dev/sda".into(),
    }));
    let unknown_lun = target(
        "bad4",
        ctx.agent.config.iscsi_port,
        &[(0, "no-such-device")],
    );
    let claim = target("bad5", ctx.agent.config.iscsi_port, &[(0, "d1")]);
    let mut chap = target("bad6", ctx.agent.config.iscsi_port, &[]);
    chap.spec.as_mut().unwrap().chap = Some(pb::Chap {
        initiator: Some(pb::ChapCredentials {
            user: "u".into(),
            secret: "too-short".into(),
        }),
        target: None,
        algorithms: Vec::new(),
    });
    let cases = ctx.rt.block_on(async {
        anyhow::Ok(vec![
            (
                "file path escaping the data dir",
                code_and_message(c.apply_device(escape).await)?,
                Code::InvalidArgument,
                "spec.source.file.path",
            ),
            (
                "size not a multiple of the block size",
                code_and_message(c.apply_device(unaligned).await)?,
                Code::InvalidArgument,
                "spec.source.file.sizeBytes",
            ),
            (
                "block device off the allowlist",
                code_and_message(c.apply_device(block).await)?,
                Code::InvalidArgument,
                "spec.source.block.path",
            ),
            (
                "LUN on a Device the agent does not have",
                code_and_message(c.apply_target(unknown_lun).await)?,
                Code::FailedPrecondition,
                "spec.luns[0].deviceRef",
            ),
            (
                "a second Target claiming a Device",
                code_and_message(c.apply_target(claim).await)?,
                Code::FailedPrecondition,
                "already used by Target e2e/d1",
            ),
            (
                "CHAP secret of the wrong length",
                code_and_message(c.apply_target(chap).await)?,
                Code::InvalidArgument,
                "spec.chap.initiator.secret",
            ),
        ])
    })?;
    for (what, (code, msg), want_code, want_text) in cases {
        ensure!(
            code == want_code && msg.contains(want_text),
            "{what}: got {code:?} {msg:?}, want {want_code:?} naming {want_text:?}"
        );
        ensure!(
            !msg.contains("too-short"),
            "{what}: the secret is echoed: {msg}"
        );
    }
    let after = ctx
        .rt
        .block_on(c.get_status(pb::GetStatusRequest {}))?
        .into_inner();
    let luns = |s: &pb::AgentStatus| -> Vec<(String, Vec<u64>)> {
        s.targets
            .iter()
            .map(|t| (t.iqn.clone(), t.luns.iter().map(|l| l.lun).collect()))
            .collect()
    };
    ensure!(luns(&before) == luns(&after), "served targets changed");
    ensure!(
        before.devices.len() == after.devices.len(),
        "devices changed"
    );
    ensure!(
        !ctx.agent.log_text().contains("too-short"),
        "a CHAP secret reached the agent's log"
    );
    Ok(())
}
