//! Serving: apply then discover, write and read back; mutual TLS; an ACL change closing the
//! sessions it no longer admits; a wildcard listener; a loop block device on the allowlist.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use spindle_agent_api::v1 as pb;
use spindle_agent_api::v1::agent_client::AgentClient;
use tonic::transport::Channel;

use spindle_e2e::agent::{AgentProcess, ClientCert, client};
use spindle_e2e::initiator::{Writer, discovered, iscsi_ls, lun_url, qemu_io, writer_tool};

use crate::orders::code_and_message;
use crate::requests::{device_meta, file_device, iqn, serve, target};
use crate::{Ctx, INITIATOR, agent_config, wait_until};

pub fn apply_discover_io(ctx: &mut Ctx) -> Result<()> {
    let mut c = ctx.client()?;
    let url = serve(ctx, &mut c, "d1", 64 << 20)?;
    let listing = iscsi_ls(ctx.agent.portal(), INITIATOR)?;
    let found = discovered(&listing);
    let portals = found
        .get(&iqn("d1"))
        .with_context(|| format!("iscsi-ls does not list {}: {listing}", iqn("d1")))?;
    ensure!(
        portals == &vec![format!("{},1", ctx.agent.portal())],
        "portals {portals:?}"
    );
    qemu_io(&url, &["write -P 0xab 1M 1M", "read -P 0xab 1M 1M"])?;
    let s = ctx
        .rt
        .block_on(c.get_status(pb::GetStatusRequest {}))?
        .into_inner();
    let t = s
        .targets
        .iter()
        .find(|t| t.iqn == iqn("d1"))
        .context("target in status")?;
    ensure!(
        t.portals == vec![ctx.agent.portal().to_string()],
        "{:?}",
        t.portals
    );
    ensure!(
        t.luns[0].write_bytes >= 1 << 20,
        "LUN counters: {:?}",
        t.luns[0]
    );
    Ok(())
}

pub fn mtls_refuses_strangers(ctx: &mut Ctx) -> Result<()> {
    for who in [
        ClientCert::Anonymous,
        ClientCert::OtherCa,
        ClientCert::WrongName,
    ] {
        let r = ctx.rt.block_on(async {
            let mut c = client(ctx.agent.api(), &ctx.certs, who).await?;
            c.get_status(pb::GetStatusRequest {}).await?;
            anyhow::Ok(())
        });
        ensure!(r.is_err(), "{who:?} was let in");
    }
    let refusals = ctx.agent.log_text().matches("connection refused").count();
    ensure!(refusals >= 3, "the agent logged {refusals} refusals");
    let mut c = ctx.client()?;
    ctx.rt.block_on(c.get_status(pb::GetStatusRequest {}))?;
    Ok(())
}

pub fn acl_change_cuts_sessions(ctx: &mut Ctx) -> Result<()> {
    let mut c = ctx.client()?;
    let port = ctx.agent.config.iscsi_port;
    let mut t = target("acl1", port, &[(0, "acl1")]);
    t.spec.as_mut().unwrap().acl = Some(pb::Acl {
        allow_all: false,
        initiators: vec![INITIATOR.into()],
    });
    ctx.rt.block_on(async {
        c.apply_device(file_device("acl1", 16 << 20)).await?;
        c.apply_target(t.clone()).await?;
        anyhow::Ok(())
    })?;
    let url = lun_url(ctx.agent.portal(), &iqn("acl1"), 0);
    let mut perf = Command::new("iscsi-perf")
        .args(["-m", "1", "-b", "8", "-i", INITIATOR, &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(1));
    ensure!(perf.try_wait()?.is_none(), "iscsi-perf could not log in");
    let sessions = |c: &mut AgentClient<Channel>| -> Result<usize> {
        let s = ctx
            .rt
            .block_on(c.get_status(pb::GetStatusRequest {}))?
            .into_inner();
        Ok(s.targets
            .iter()
            .find(|t| t.iqn == iqn("acl1"))
            .map_or(0, |t| t.sessions.len()))
    };
    ensure!(sessions(&mut c)? == 1, "the session is not in the status");
    t.meta.as_mut().unwrap().generation = 2;
    t.spec.as_mut().unwrap().acl = Some(pb::Acl {
        allow_all: false,
        initiators: vec!["iqn.2026-11.dev.spindle:someone-else".into()],
    });
    ctx.rt.block_on(c.apply_target(t))?;
    let gone = wait_until(Duration::from_secs(10), || Ok(sessions(&mut c)? == 0));
    let _ = perf.kill();
    let _ = perf.wait();
    gone.context("the session outlived the ACL change")?;
    let listing = iscsi_ls(ctx.agent.portal(), INITIATOR)?;
    ensure!(
        !discovered(&listing).contains_key(&iqn("acl1")),
        "discovery still shows the target to a refused initiator: {listing}"
    );
    Ok(())
}

pub fn wildcard_portal(ctx: &mut Ctx) -> Result<()> {
    let mut cfg = agent_config(
        &ctx.cluster,
        &ctx.work,
        &ctx.certs,
        "node-wild",
        5,
        3263,
        9444,
    );
    cfg.iscsi_wildcard = true;
    let a = AgentProcess::start(cfg)?;
    let mut c = ctx
        .rt
        .block_on(client(a.api(), &ctx.certs, ClientCert::Operator))?;
    ctx.rt.block_on(async {
        c.apply_device(file_device("w1", 16 << 20)).await?;
        c.apply_target(target("w1", 3263, &[(0, "w1")])).await?;
        anyhow::Ok(())
    })?;
    for host in [5u8, 6] {
        let portal = SocketAddr::from(([127, 0, 1, host], 3263));
        let listing = iscsi_ls(portal, INITIATOR)?;
        let found = discovered(&listing);
        ensure!(
            found.get(&iqn("w1")) == Some(&vec![format!("{portal},1")]),
            "discovery through {portal} answered {listing}"
        );
    }
    Ok(())
}

pub fn loop_block_device(ctx: &mut Ctx) -> Result<()> {
    let img = ctx.work.join("loop-backing.img");
    std::fs::File::create(&img)?.set_len(64 << 20)?;
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()?;
    ensure!(
        out.status.success(),
        "losetup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let detach = Detach(dev.clone());
    ctx.agent.config.allow_block = vec![PathBuf::from(&dev)];
    ctx.agent.restart()?;
    let mut c = ctx.client()?;
    let mut d = file_device("blk", 0);
    d.spec.as_mut().unwrap().source = Some(pb::device_spec::Source::Block(pb::BlockSource {
        path: dev.clone(),
    }));
    d.spec.as_mut().unwrap().reclaim_policy = pb::ReclaimPolicy::Delete as i32;
    let st = ctx.rt.block_on(c.apply_device(d))?.into_inner();
    ensure!(
        st.status.as_ref().unwrap().capacity_bytes == 64 << 20,
        "{st:?}"
    );
    ctx.rt
        .block_on(c.apply_target(target("blk", ctx.agent.config.iscsi_port, &[(0, "blk")])))?;
    let url = lun_url(ctx.agent.portal(), &iqn("blk"), 0);
    qemu_io(&url, &["write -P 0x77 0 1M", "read -P 0x77 0 1M"])?;
    let tool = writer_tool(&ctx.work.join("tools"))?;
    let w = Writer::start(&tool, &url, 10_000, 16, &ctx.work.join("blk-writes.txt"))?;
    wait_until(Duration::from_secs(30), || {
        Ok(w.results()?.good.len() >= 500)
    })?;
    ctx.rt.block_on(c.drain_device(pb::DrainDeviceRequest {
        meta: device_meta("blk"),
    }))?;
    let seen = w.finish()?;
    ensure!(seen.other.is_empty(), "{:?}", seen.other);
    seen.check_file(&img)?;
    let r = ctx
        .rt
        .block_on(c.release_device(pb::ReleaseDeviceRequest {
            meta: device_meta("blk"),
            reclaim_policy: pb::ReclaimPolicy::Delete as i32,
            force: false,
        }))?
        .into_inner();
    ensure!(
        r.known && !r.file_removed,
        "a block device is never erased: {r:?}"
    );
    ensure!(Path::new(&dev).exists());
    // Another loop device, not on the allowlist, is refused.
    let mut other = file_device("blk2", 0);
    other.spec.as_mut().unwrap().source = Some(pb::device_spec::Source::Block(pb::BlockSource {
        path: "/dev/loop-not-allowed".into(),
    }));
    let (code, msg) = code_and_message(ctx.rt.block_on(c.apply_device(other)))?;
    ensure!(
        code == tonic::Code::InvalidArgument && msg.contains("allowlist"),
        "{code:?} {msg}"
    );
    drop(detach);
    Ok(())
}

/// Detaches a loop device when dropped.
struct Detach(String);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}
