//! The node agent in cluster mode (`spindle-agent run`) against a real kube-apiserver, with
//! real initiators: the agent API over mutual TLS, the drain with writes in flight, restarts
//! (SIGKILL mid-drain, after ApplyTarget), the Lease through an apiserver outage, bad orders,
//! portals on a wildcard listener, and a loop block device.
//!
//! Agents run on 127.0.1.x. Needs the release agent (`cargo build --release -p spindle-agent`),
//! libiscsi-bin, qemu-utils + qemu-block-extra, gcc with libiscsi-dev, losetup, root.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use spindle_agent_api::v1 as pb;
use spindle_agent_api::v1::agent_client::AgentClient;
use tonic::transport::Channel;

use spindle_e2e::agent::{AgentConfig, AgentProcess, Certs, ClientCert, client, signal};
use spindle_e2e::cluster::TestCluster;
use spindle_e2e::initiator::{Writer, discovered, iscsi_ls, lun_url, qemu_io, writer_tool};

const NS: &str = "spindle-system";
const INITIATOR: &str = "iqn.2026-11.dev.spindle:e2e-client";

struct Ctx {
    cluster: TestCluster,
    work: PathBuf,
    certs: Certs,
    agent: AgentProcess,
    rt: tokio::runtime::Runtime,
}

impl Ctx {
    fn client(&self) -> Result<AgentClient<Channel>> {
        self.rt
            .block_on(client(self.agent.api(), &self.certs, ClientCert::Operator))
    }

    fn data(&self, file: &str) -> PathBuf {
        self.agent.config.data_dir.join(file)
    }

    fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.cluster.kubectl(&a, None)?)?)
    }
}

fn meta(name: &str, uid: &str, generation: i64) -> Option<pb::ObjectMeta> {
    Some(pb::ObjectMeta {
        namespace: "e2e".into(),
        name: name.into(),
        uid: uid.into(),
        generation,
        leader_term: 0,
    })
}

fn file_device(name: &str, size: u64) -> pb::ApplyDeviceRequest {
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

fn iqn(name: &str) -> String {
    format!("iqn.2026-11.dev.spindle:e2e.{name}")
}

fn target(name: &str, port: u16, luns: &[(u64, &str)]) -> pb::ApplyTargetRequest {
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
        }),
    }
}

fn device_meta(name: &str) -> Option<pb::ObjectMeta> {
    meta(name, &format!("uid-{name}"), 1)
}

/// Applies a Device and a Target with LUN 0 on it.
fn serve(ctx: &Ctx, c: &mut AgentClient<Channel>, name: &str, size: u64) -> Result<String> {
    ctx.rt.block_on(async {
        c.apply_device(file_device(name, size)).await?;
        c.apply_target(target(name, ctx.agent.config.iscsi_port, &[(0, name)]))
            .await?;
        anyhow::Ok(())
    })?;
    Ok(lun_url(ctx.agent.portal(), &iqn(name), 0))
}

fn device_status(ctx: &Ctx, c: &mut AgentClient<Channel>, name: &str) -> Result<pb::DeviceStatus> {
    let s = ctx
        .rt
        .block_on(c.get_status(pb::GetStatusRequest {}))?
        .into_inner();
    s.devices
        .into_iter()
        .find(|d| d.meta.as_ref().is_some_and(|m| m.name == name))
        .with_context(|| format!("no Device {name} in GetStatus"))
}

type Check = fn(&mut Ctx) -> Result<()>;

#[test]
fn agent_in_cluster_mode() {
    let cluster = TestCluster::start(&["node-api"]).expect("control plane starts");
    let work = tempfile_dir("agent-api");
    let certs = Certs::make(&work.join("certs")).expect("certificates");
    let agent = AgentProcess::start(agent_config(
        &cluster, &work, &certs, "node-api", 2, 3260, 9443,
    ))
    .expect("agent starts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ctx = Ctx {
        cluster,
        work,
        certs,
        agent,
        rt,
    };
    let checks: &[(&str, Check)] = &[
        ("apply, discover, write and read back", apply_discover_io),
        ("mutual TLS refuses strangers", mtls_refuses_strangers),
        ("drain with writes in flight", drain_with_writes_in_flight),
        ("SIGKILL mid-drain, and after ApplyTarget", kill_and_restart),
        ("bad orders change nothing", bad_orders),
        (
            "an ACL change closes the sessions it no longer admits",
            acl_change_cuts_sessions,
        ),
        (
            "Lease through an apiserver outage",
            lease_survives_apiserver_outage,
        ),
        (
            "wildcard listener answers the arrival address",
            wildcard_portal,
        ),
        ("a loop block device on the allowlist", loop_block_device),
        (
            "a client that stopped answering does not hold the stop",
            frozen_client_does_not_hold_the_stop,
        ),
    ];
    let mut failures = Vec::new();
    for (name, check) in checks {
        let t0 = Instant::now();
        match check(&mut ctx) {
            Ok(()) => eprintln!("ok: {name} ({:.1} s)", t0.elapsed().as_secs_f64()),
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&ctx.work);
    } else {
        eprintln!("agent log:\n{}", ctx.agent.log_text());
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}",
        failures.len(),
        checks.len(),
        failures.join("\n\n")
    );
}

/// A work dir on a disk filesystem (tmpfs refuses O_DIRECT).
fn tempfile_dir(what: &str) -> PathBuf {
    let d = PathBuf::from(format!(
        "/var/tmp/spindle-e2e-{what}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn agent_config(
    cluster: &TestCluster,
    work: &Path,
    certs: &Certs,
    node: &str,
    host: u8,
    iscsi_port: u16,
    api_port: u16,
) -> AgentConfig {
    AgentConfig {
        node: node.into(),
        addr: IpAddr::from([127, 0, 1, host]),
        iscsi_port,
        api_port,
        iscsi_wildcard: false,
        data_dir: work.join(format!("{node}-data")),
        kubeconfig: cluster.kubeconfig().to_path_buf(),
        namespace: NS.into(),
        certs: certs.clone(),
        allow_block: Vec::new(),
        env: Vec::new(),
    }
}

fn apply_discover_io(ctx: &mut Ctx) -> Result<()> {
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

fn mtls_refuses_strangers(ctx: &mut Ctx) -> Result<()> {
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

fn drain_with_writes_in_flight(ctx: &mut Ctx) -> Result<()> {
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

fn kill_and_restart(ctx: &mut Ctx) -> Result<()> {
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

fn code_and_message(
    r: Result<tonic::Response<impl Sized>, tonic::Status>,
) -> Result<(tonic::Code, String)> {
    match r {
        Ok(_) => bail!("the agent accepted it"),
        Err(s) => Ok((s.code(), s.message().to_string())),
    }
}

fn bad_orders(ctx: &mut Ctx) -> Result<()> {
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

fn acl_change_cuts_sessions(ctx: &mut Ctx) -> Result<()> {
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

fn lease_renew_time(ctx: &Ctx) -> Result<(String, Value)> {
    let l = ctx.kubectl_json(&["-n", NS, "get", "lease", &ctx.agent.config.node])?;
    let t = l["spec"]["renewTime"]
        .as_str()
        .context("lease has no renewTime")?
        .to_string();
    Ok((t, l))
}

/// An operator pod torn down (or frozen) with its connection open answers nothing, not even
/// HTTP/2 pings: SIGTERM still stops the agent within seconds (it waits for calls in progress,
/// not for idle connections), well inside a pod's grace period.
fn frozen_client_does_not_hold_the_stop(ctx: &mut Ctx) -> Result<()> {
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

fn lease_survives_apiserver_outage(ctx: &mut Ctx) -> Result<()> {
    let (t1, lease) = wait_for(Duration::from_secs(20), || lease_renew_time(ctx))?;
    let ann = &lease["metadata"]["annotations"];
    ensure!(
        ann["spindle.dev/api-endpoint"] == ctx.agent.api().to_string().as_str()
            && ann["spindle.dev/iscsi-portal"] == ctx.agent.portal().to_string().as_str(),
        "lease annotations: {ann}"
    );
    ensure!(lease["spec"]["holderIdentity"] == ctx.agent.config.node.as_str());
    wait_for(Duration::from_secs(15), || {
        let (t, _) = lease_renew_time(ctx)?;
        ensure!(t != t1, "not renewed yet");
        Ok(())
    })?;
    // I/O through a 30 s apiserver outage (the apiserver frozen: requests hang, then time out).
    let url = lun_url(ctx.agent.portal(), &iqn("d1"), 0);
    let perf_out = ctx.work.join("perf.txt");
    let mut perf = Command::new("iscsi-perf")
        .args(["-m", "2", "-b", "8", "-i", INITIATOR, &url])
        .stdout(std::fs::File::create(&perf_out)?)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid_file = ctx
        .cluster
        .kubeconfig()
        .with_file_name("kube-apiserver.pid");
    let apiserver: u32 = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("reading {}", pid_file.display()))?
        .trim()
        .parse()?;
    let log_before = ctx.agent.log_text().len();
    std::thread::sleep(Duration::from_secs(2));
    signal(apiserver, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(30));
    signal(apiserver, libc::SIGCONT);
    let resumed = Instant::now();
    let r = wait_for(Duration::from_secs(30), || {
        let (t, _) = lease_renew_time(ctx)?;
        let renewed = k8s_time_after(&t, resumed)?;
        ensure!(
            renewed,
            "renewTime {t} is from before the apiserver came back"
        );
        Ok(())
    });
    std::thread::sleep(Duration::from_secs(2));
    signal(perf.id(), libc::SIGINT);
    let _ = perf.wait();
    r?;
    let out = std::fs::read_to_string(&perf_out)?.replace('\r', "\n");
    let seconds: Vec<(u32, u64)> = out
        .split("00:")
        .filter_map(|chunk| {
            let (ss, rest) = chunk.split_once(" - ")?;
            let iops = rest
                .split("iops current ")
                .nth(1)?
                .split_whitespace()
                .next()?;
            Some((ss.parse().ok()?, iops.parse().ok()?))
        })
        .collect();
    ensure!(
        seconds.len() >= 34,
        "iscsi-perf reported only {} seconds: {out}",
        seconds.len()
    );
    ensure!(
        seconds.iter().all(|(_, iops)| *iops > 0),
        "I/O stalled during the outage: {seconds:?}"
    );
    let log = &ctx.agent.log_text()[log_before..];
    ensure!(
        log.matches("cannot renew the agent's Lease").count() == 1,
        "the outage should be logged once:\n{log}"
    );
    ensure!(
        log.contains("Lease renewed again"),
        "recovery not logged:\n{log}"
    );
    Ok(())
}

/// Whether a Kubernetes MicroTime is later than `instant` (compared on the wall clock).
fn k8s_time_after(t: &str, instant: Instant) -> Result<bool> {
    let out = Command::new("date")
        .args(["-u", "-d", t, "+%s.%N"])
        .output()?;
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    Ok(secs > now - instant.elapsed().as_secs_f64())
}

fn wildcard_portal(ctx: &mut Ctx) -> Result<()> {
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

fn loop_block_device(ctx: &mut Ctx) -> Result<()> {
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

/// Polls `ready` every 200 ms until it answers true (an error also means "not yet"); fails
/// when `timeout` passes first.
fn wait_until(timeout: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_for(timeout, || {
        ensure!(ready()?, "condition not reached");
        Ok(())
    })
}

/// Retries `f` every 200 ms until it succeeds or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e.context("timed out")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
