//! Drains and stops: writes in flight, SIGKILL mid-drain and after ApplyTarget, and a client
//! that stopped answering does not hold the stop.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spindle_agent_api::v1 as pb;

use spindle_e2e::agent::{ClientCert, client};
use spindle_e2e::initiator::{Writer, discovered, iscsi_ls, qemu_io, writer_tool};

use crate::requests::{device_meta, device_status, iqn, serve};
use crate::{Ctx, INITIATOR, wait_until};

pub fn drain_with_writes_in_flight(ctx: &mut Ctx) -> Result<()> {
    let mut c = ctx.client()?;
    let url = serve(ctx, &mut c, "d2", 1 << 30)?;
    let tool = writer_tool(&ctx.work.join("tools"))?;
    let w = Writer::start(&tool, &url, 200_000, 16, &ctx.work.join("d2-writes.txt"))?;
    wait_until(Duration::from_secs(30), || {
        Ok(w.results()?.good.len() >= 2000)
    })?;
    let ack = ctx
        .rt
        .block_on(c.drain_device(pb::DrainDeviceRequest {
            meta: device_meta("d2"),
        }))?
        .into_inner();
    let seen = w.finish()?;
    ensure!(
        seen.other.is_empty(),
        "answers other than GOOD or 25h/00h: {:?}",
        seen.other
    );
    ensure!(!seen.fenced.is_empty(), "no write was fenced");
    seen.check_file(&ctx.data("d2.img"))?;
    ensure!(
        ack.drained_commands <= 16,
        "drained {} with QD 16",
        ack.drained_commands
    );
    ensure!(ack.luns == vec![0] && ack.target == "e2e/d2", "{ack:?}");
    let st = device_status(ctx, &mut c, "d2")?;
    ensure!(
        st.state == pb::DrainState::Flushed as i32,
        "state {:?}",
        st.state
    );
    ensure!(
        st.fenced_commands == seen.fenced.len() as u64,
        "the agent counted {} fenced commands, the initiator saw {}",
        st.fenced_commands,
        seen.fenced.len()
    );
    ensure!(
        ack.fenced_commands <= st.fenced_commands,
        "ack {} > total {}",
        ack.fenced_commands,
        st.fenced_commands
    );
    let again = ctx
        .rt
        .block_on(c.drain_device(pb::DrainDeviceRequest {
            meta: device_meta("d2"),
        }))?
        .into_inner();
    ensure!(
        again == ack,
        "a repeated drain answered {again:?}, not {ack:?}"
    );
    eprintln!(
        "  drain: good={} fenced={} drained={} ack.fenced={} in {} µs",
        seen.good.len(),
        seen.fenced.len(),
        ack.drained_commands,
        ack.fenced_commands,
        ack.duration_micros
    );
    Ok(())
}

pub fn kill_and_restart(ctx: &mut Ctx) -> Result<()> {
    // Hold drains after their fence is recorded, so the kill lands mid-drain.
    ctx.agent
        .config
        .env
        .push(("SPINDLE_TEST_DRAIN_DELAY_MS".into(), "4000".into()));
    ctx.agent.restart()?;
    let mut c = ctx.client()?;
    let url = serve(ctx, &mut c, "d3", 1 << 30)?;
    let tool = writer_tool(&ctx.work.join("tools"))?;
    let w = Writer::start(&tool, &url, 200_000, 16, &ctx.work.join("d3-writes.txt"))?;
    wait_until(Duration::from_secs(30), || {
        Ok(w.results()?.good.len() >= 2000)
    })?;
    let api = ctx.agent.api();
    let certs = ctx.certs.clone();
    let drain = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = client(api, &certs, ClientCert::Operator).await?;
            c.drain_device(pb::DrainDeviceRequest {
                meta: device_meta("d3"),
            })
            .await?;
            anyhow::Ok(())
        })
    });
    wait_until(Duration::from_secs(10), || {
        Ok(device_status(ctx, &mut c, "d3")?.state == pb::DrainState::Draining as i32)
    })?;
    ctx.agent.kill();
    ensure!(
        drain.join().unwrap().is_err(),
        "the drain answered although the agent was killed"
    );
    let before_kill = w.results()?;
    drop(w);
    ctx.agent.config.env.clear();
    ctx.agent.restart()?;
    let mut c = ctx.client()?;
    let st = device_status(ctx, &mut c, "d3")?;
    ensure!(
        st.state == pb::DrainState::Draining as i32,
        "after the restart the Device is {:?}, not still fenced",
        st.state
    );
    // libiscsi's login ends with a TEST UNIT READY of the LUN: the fence refuses it.
    let probe =
        Writer::start(&tool, &url, 1, 1, &ctx.work.join("d3-probe.txt"))?.finish_failed()?;
    ensure!(
        probe.contains("LOGICAL_UNIT_NOT_SUPPORTED"),
        "the LUN is not fenced after the restart: {probe}"
    );
    let ack = ctx
        .rt
        .block_on(c.drain_device(pb::DrainDeviceRequest {
            meta: device_meta("d3"),
        }))?
        .into_inner();
    ensure!(ack.drained_commands == 0, "{ack:?}");
    // The probe's write 0 was refused: block 0 still holds writer 1's data (if it got GOOD).
    before_kill.check_file(&ctx.data("d3.img"))?;

    // SIGKILL right after ApplyTarget: served again at start, before any call.
    let url4 = serve(ctx, &mut c, "d4", 64 << 20)?;
    qemu_io(&url4, &["write -P 0x5a 0 64k"])?;
    ctx.agent.kill();
    ctx.agent.restart()?;
    let listing = iscsi_ls(ctx.agent.portal(), INITIATOR)?;
    ensure!(
        discovered(&listing).contains_key(&iqn("d4")),
        "not served after the restart: {listing}"
    );
    qemu_io(&url4, &["read -P 0x5a 0 64k"])?;
    Ok(())
}

/// An operator pod torn down (or frozen) with its connection open answers nothing, not even
/// HTTP/2 pings: SIGTERM still stops the agent within seconds (it waits for calls in progress,
/// not for idle connections), well inside a pod's grace period.
pub fn frozen_client_does_not_hold_the_stop(ctx: &mut Ctx) -> Result<()> {
    let (api, certs) = (ctx.agent.api(), ctx.certs.clone());
    let (connected_tx, connected) = std::sync::mpsc::channel::<Result<()>>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    // The client's runtime runs one call, then its thread blocks: the connection stays open
    // and nothing on it is read or answered any more.
    let frozen = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let c = rt.block_on(async {
            let mut c = client(api, &certs, ClientCert::Operator).await?;
            c.get_status(pb::GetStatusRequest {}).await?;
            anyhow::Ok(c)
        });
        let held = match c {
            Ok(c) => {
                let _ = connected_tx.send(Ok(()));
                Some(c)
            }
            Err(e) => {
                let _ = connected_tx.send(Err(e));
                None
            }
        };
        let _ = released.recv(); // blocks the runtime's only thread
        drop(held);
    });
    connected
        .recv_timeout(Duration::from_secs(30))
        .context("the client did not connect")??;
    let t0 = Instant::now();
    let status = ctx.agent.stop();
    let took = t0.elapsed();
    let _ = release.send(());
    let _ = frozen.join();
    let log = ctx.agent.log_text();
    ctx.agent.restart()?;
    let status = status?;
    ensure!(status.success(), "the agent's stop failed: {status}");
    ensure!(
        took < Duration::from_secs(15),
        "the stop took {took:?} with a frozen client connected"
    );
    ensure!(
        log.contains("after the last call was answered are cut"),
        "the agent did not say it cut the frozen client's connection"
    );
    Ok(())
}
