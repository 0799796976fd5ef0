//! Issue 21, the CSI controller end to end: a real etcd + kube-apiserver, the operator and two
//! agents as processes, `spindle-csi controller` on tcp (against the test cluster's kubeconfig)
//! and `spindle-csi node` on the host (only for csi-sanity's NodeGetInfo), csi-sanity's
//! Controller tests, and checks of our own through CSI calls with real initiators (iscsi-inq).
//! The driver's objects live in spindle-system (the driver's namespace, as the chart installs
//! it); the checks run in order and all are reported (SPINDLE_E2E_ONLY=<part of a name>).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use spindle_csi::proto::controller_client::ControllerClient;
use spindle_csi::proto::volume_capability::access_mode::Mode;
use spindle_csi::proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use spindle_csi::proto::*;
use spindle_csi::volume as ctx;
use spindle_e2e::checks::{Check, run_table};
use spindle_e2e::csi::{self as driver, Process};
use spindle_e2e::initiator;
use spindle_e2e::spindle::{OPERATOR, Spindle};
use tonic::Code;
use tonic::transport::Channel;

/// The driver's namespace (also the agents' Lease namespace in e2e/cluster/spindle).
const NS: &str = "spindle-system";
const MIB: i64 = 1 << 20;
const GIB: u64 = 1 << 30;
const FREE: &str = "spindle.dev/capacity-free-bytes";
/// Initiator names the checks publish to.
const IQN_A: &str = "iqn.2026-11.dev.spindle:e2e-csi-a";
const IQN_B: &str = "iqn.2026-11.dev.spindle:e2e-csi-b";
/// A finalizer the delete check holds a Device with.
const HOLD: &str = "e2e.spindle.dev/hold";

/// The driver's processes and the runtime its clients use, for the checks (plain fns).
struct Driver {
    controller: Process,
    node: Process,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
}

#[path = "csi_controller/sanity.rs"]
mod sanity;

static DRIVER: Mutex<Option<Driver>> = Mutex::new(None);

/// Stops the driver at the end, even when a check panicked.
struct Stop;
impl Drop for Stop {
    fn drop(&mut self) {
        let d = DRIVER.lock().map(|mut d| d.take()).ok().flatten();
        if let Some(d) = d {
            let _ = std::fs::remove_dir_all(&d.dir);
        }
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let _stop = Stop;
    let checks: &[(&str, Check)] = &[
        (
            "csi-sanity: the Controller tests that run pass",
            sanity::sanity,
        ),
        (
            "CreateVolume: Device and Target Ready, the NAA in the context",
            create_ready,
        ),
        (
            "CreateVolume refuses unknown parameters and multi-node modes, naming them",
            create_refusals,
        ),
        (
            "DeleteVolume returns once the Device and its file are gone",
            delete_flushed,
        ),
        (
            "publish admits exactly one IQN; another initiator's login is refused",
            publish_one_iqn,
        ),
        (
            "RWO: a second node's publish is refused, concurrent publishes admit one",
            publish_single_node,
        ),
        ("expand grows the Device", expand_grows),
        (
            "GetCapacity and placement follow the Leases' free bytes",
            capacity,
        ),
    ];
    let code = run_table(start, "e2e-csi", checks, &[OPERATOR]);
    if let Ok(Some(d)) = DRIVER.lock().as_deref() {
        let log = d.controller.log_text();
        eprintln!(
            "controller log: {} lines; e2e run {:.0} s",
            log.lines().count(),
            started.elapsed().as_secs_f64()
        );
    }
    code
}

/// The cluster, with the driver's controller and node modes in [`DRIVER`].
fn start() -> Result<Spindle> {
    let s = Spindle::start(&["node-a", "node-b"], &[])?;
    let dir = std::env::temp_dir().join(format!("spindle-e2e-csi-{}", std::process::id()));
    let base = std::env::var("SPINDLE_ADDR_BASE").unwrap_or_else(|_| "127.0.0".into());
    let ip = format!("{base}.1");
    let kubeconfig = s.cluster.kubeconfig().to_path_buf();
    let controller = Process::start(
        &driver::binary(),
        "controller",
        driver::free_port(&ip).context("a port")?,
        &kubeconfig,
        &[
            "--namespace",
            NS,
            "--ready-timeout",
            "60",
            "--delete-timeout",
            "90",
        ],
        &dir,
    )
    .context("spindle-csi controller starts")?;
    let node_args = node_args(&dir).context("the node mode's arguments")?;
    let node_args: Vec<&str> = node_args.iter().map(String::as_str).collect();
    let node = Process::start(
        &node_binary(),
        "node",
        driver::free_port(&ip).context("a port")?,
        &kubeconfig,
        &node_args,
        &dir,
    )
    .context("spindle-csi node starts")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a tokio runtime")?;
    *DRIVER
        .lock()
        .map_err(|_| anyhow::anyhow!("driver lock poisoned"))? = Some(Driver {
        controller,
        node,
        rt,
        dir,
    });
    Ok(s)
}

/// The `spindle-csi` whose node mode serves csi-sanity's node calls: this build's, or
/// `$SPINDLE_E2E_CSI_NODE_BIN` (to try this controller with another branch's node mode).
fn node_binary() -> PathBuf {
    std::env::var_os("SPINDLE_E2E_CSI_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(driver::binary)
}

/// The host's node mode serves only Identity and NodeGetInfo here: its initiator name (the node
/// ID csi-sanity publishes to) comes from a file of the test's, its state from a folder of the
/// test's, when the node mode takes them.
fn node_args(dir: &std::path::Path) -> Result<Vec<String>> {
    let mut args = vec!["--node-name".to_owned(), "node-a".to_owned()];
    let help =
        initiator::run_ok(std::process::Command::new(node_binary()).args(["node", "--help"]))?;
    if help.contains("--initiator-name-file") {
        std::fs::create_dir_all(dir)?;
        let file = dir.join("initiatorname.iscsi");
        std::fs::write(
            &file,
            "InitiatorName=iqn.2026-11.dev.spindle:e2e-csi-sanity\n",
        )?;
        args.extend(["--initiator-name-file".into(), file.display().to_string()]);
    }
    if help.contains("--state-dir") {
        args.extend([
            "--state-dir".into(),
            dir.join("node-state").display().to_string(),
        ]);
    }
    Ok(args)
}

/// Runs `f` with a Controller client (and the node's address) on the driver's runtime.
fn with_ctl<T>(f: impl AsyncFnOnce(ControllerClient<Channel>) -> Result<T>) -> Result<T> {
    let guard = DRIVER
        .lock()
        .map_err(|_| anyhow::anyhow!("driver lock poisoned"))?;
    let d = guard.as_ref().context("the driver is not running")?;
    let url = d.controller.url();
    d.rt.block_on(async move {
        let c = ControllerClient::connect(url).await?;
        f(c).await
    })
}

/// The node mode's log.
fn node_log() -> String {
    DRIVER
        .lock()
        .ok()
        .and_then(|d| d.as_ref().map(|d| d.node.log_text()))
        .unwrap_or_default()
}

/// The controller's log (printed when a check fails).
fn controller_log() -> String {
    DRIVER
        .lock()
        .ok()
        .and_then(|d| d.as_ref().map(|d| d.controller.log_text()))
        .unwrap_or_default()
}

fn capability(block: bool, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })
        }),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn create_req(name: &str, size: i64, params: &[(&str, &str)]) -> CreateVolumeRequest {
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
fn create(name: &str, size: i64, params: &[(&str, &str)]) -> Result<Volume> {
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

fn delete(id: &str) -> Result<()> {
    let req = DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    };
    with_ctl(async move |mut c| {
        c.delete_volume(req).await?;
        Ok(())
    })
}

fn publish(id: &str, node: &str) -> Result<std::result::Result<(), tonic::Status>> {
    let req = ControllerPublishVolumeRequest {
        volume_id: id.into(),
        node_id: node.into(),
        volume_capability: Some(capability(false, Mode::SingleNodeWriter)),
        ..Default::default()
    };
    with_ctl(async move |mut c| Ok(c.controller_publish_volume(req).await.map(drop)))
}

fn unpublish(id: &str, node: &str) -> Result<()> {
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

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The initiators of a Target's ACL.
fn acl(s: &Spindle, id: &str) -> Result<Vec<String>> {
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
fn crd_allows_growth(s: &Spindle) -> Result<bool> {
    let crd = s.kubectl(&["get", "crd", "devices.spindle.dev", "-o", "json"])?;
    Ok(!crd.contains("self.source == oldSelf.source"))
}

// ---- checks of our own ----

fn create_ready(s: &Spindle, _: &str) -> Result<()> {
    let v = create(
        "pvc-e2e-ready",
        64 * MIB,
        &[
            ("spindle.dev/node", "node-b"),
            ("csi.storage.k8s.io/pvc/name", "data-db-0"),
            ("csi.storage.k8s.io/pvc/namespace", "app"),
            ("csi.storage.k8s.io/pv/name", "pvc-e2e-ready"),
        ],
    )?;
    let id = &v.volume_id;
    ensure!(id == "pvc-e2e-ready", "volume ID {id}");
    ensure!(
        v.capacity_bytes == 64 * MIB,
        "capacity {}",
        v.capacity_bytes
    );
    let d = s.get("device", NS, id)?.context("the Device")?;
    let t = s.get("target", NS, id)?.context("the Target")?;
    for (kind, o) in [("Device", &d), ("Target", &t)] {
        let ready = spindle_e2e::spindle::condition(o, "Ready").context("Ready")?;
        ensure!(ready.status == "True", "{kind}: {ready:?}");
        ensure!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "spindle-csi"
                && o["metadata"]["labels"]["csi.spindle.dev/pvc-name"] == "data-db-0"
                && o["metadata"]["labels"]["csi.spindle.dev/pvc-namespace"] == "app",
            "{kind} labels: {}",
            o["metadata"]["labels"]
        );
    }
    let naa = d["status"]["naa"].as_str().context("status.naa")?;
    let c = &v.volume_context;
    ensure!(
        c.get(ctx::CTX_NAA).map(String::as_str) == Some(&naa.to_ascii_lowercase()),
        "context NAA {:?}, Device NAA {naa}",
        c.get(ctx::CTX_NAA)
    );
    ensure!(
        c.get(ctx::CTX_STORAGE_NODE).map(String::as_str) == Some("node-b"),
        "{c:?}"
    );
    ensure!(
        c.get(ctx::CTX_LUN).map(String::as_str) == Some("0"),
        "{c:?}"
    );
    let portal = s.rt.portal("node-b")?.to_string();
    ensure!(
        c.get(ctx::CTX_PORTALS)
            .is_some_and(|p| p.split(',').any(|p| p == portal)),
        "portals {:?}, agent portal {portal}",
        c.get(ctx::CTX_PORTALS)
    );
    ensure!(
        c.get(ctx::CTX_IQN).map(String::as_str) == t["status"]["iqn"].as_str(),
        "{c:?}"
    );
    // CHAP by default: a Secret with the keys, the Target pointing at it, no secret in the log.
    let secret = s
        .get("secret", NS, &format!("{id}-chap"))?
        .context("the CHAP Secret")?;
    ensure!(
        secret["data"]["username"].is_string() && secret["data"]["password"].is_string(),
        "Secret keys"
    );
    ensure!(
        t["spec"]["chap"]["secretRef"] == format!("{id}-chap"),
        "{}",
        t["spec"]
    );
    ensure!(
        acl(s, id)?.is_empty() && t["spec"]["acl"]["allowAll"] != true,
        "ACL"
    );
    // Idempotent by name: the same request gives the same volume; another size is refused.
    let again = create("pvc-e2e-ready", 64 * MIB, &[("spindle.dev/node", "node-b")])?;
    ensure!(
        again.volume_id == *id && again.volume_context == v.volume_context,
        "{again:?}"
    );
    let other = with_ctl(async |mut c| {
        Ok(c.create_volume(create_req("pvc-e2e-ready", 128 * MIB, &[]))
            .await)
    })?;
    match other {
        Err(st) if st.code() == Code::AlreadyExists => {}
        other => bail!("another size: {other:?}"),
    }
    delete(id)
}

fn create_refusals(_: &Spindle, _: &str) -> Result<()> {
    let unknown = create_req(
        "pvc-e2e-bad",
        64 * MIB,
        &[("replicas", "3"), ("spindle.dev/chap", "none")],
    );
    let mut multi = create_req("pvc-e2e-bad", 64 * MIB, &[]);
    multi.volume_capabilities = vec![capability(false, Mode::MultiNodeMultiWriter)];
    let port = create_req("pvc-e2e-bad", 64 * MIB, &[("spindle.dev/port", "80")]);
    for (req, needle) in [
        (unknown, "\"replicas\""),
        (multi, "MULTI_NODE_MULTI_WRITER"),
        (port, "spindle.dev/port"),
    ] {
        let r = with_ctl(async move |mut c| Ok(c.create_volume(req).await))?;
        match r {
            Err(st) if st.code() == Code::InvalidArgument && st.message().contains(needle) => {}
            other => bail!("expected INVALID_ARGUMENT naming {needle}: {other:?}"),
        }
    }
    Ok(())
}

fn delete_flushed(s: &Spindle, _: &str) -> Result<()> {
    let v = create(
        "pvc-e2e-delete",
        64 * MIB,
        &[("spindle.dev/node", "node-a")],
    )?;
    let id = &v.volume_id;
    let file = s.rt.data_dir("node-a")?.join(format!("csi/{id}.img"));
    ensure!(file.exists(), "{} does not exist", file.display());
    // Published once (the ACL path), then unpublished as Kubernetes does before a delete.
    ensure!(publish(id, IQN_A)?.is_ok(), "publish");
    unpublish(id, IQN_A)?;
    // A finalizer of the test's holds the Device object after the operator's flush: the call
    // must still be waiting while the Device exists, and return once it is gone.
    s.kubectl(&[
        "patch",
        "device",
        "-n",
        NS,
        id,
        "--type=json",
        "-p",
        &format!(r#"[{{"op":"add","path":"/metadata/finalizers/-","value":"{HOLD}"}}]"#),
    ])?;
    let started = Instant::now();
    let call = {
        let id = id.clone();
        std::thread::spawn(move || delete(&id))
    };
    let finalizers = |s: &Spindle| -> Result<Option<Vec<String>>> {
        Ok(s.get("device", NS, id)?.map(|d| {
            d["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        }))
    };
    // The operator's part is done (its finalizer gone, the file released) but the object stays.
    s.wait_for(
        "the operator's finalizer gone",
        Duration::from_secs(60),
        || Ok(finalizers(s)?.filter(|f| f == &[HOLD.to_owned()])),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        !call.is_finished(),
        "DeleteVolume returned while the Device object still exists"
    );
    s.kubectl(&[
        "patch",
        "device",
        "-n",
        NS,
        id,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":[]}}"#,
    ])?;
    call.join()
        .map_err(|_| anyhow::anyhow!("the DeleteVolume thread panicked"))??;
    let took = started.elapsed();
    ensure!(
        s.get("device", NS, id)?.is_none(),
        "the Device exists after DeleteVolume returned"
    );
    ensure!(
        s.get("target", NS, id)?.is_none(),
        "the Target exists after DeleteVolume returned"
    );
    ensure!(
        s.get("secret", NS, &format!("{id}-chap"))?.is_none(),
        "the Secret exists after DeleteVolume returned"
    );
    ensure!(
        !file.exists(),
        "{} exists after DeleteVolume returned",
        file.display()
    );
    eprintln!("    DeleteVolume took {:.1} s", took.as_secs_f64());
    // Again: a missing volume is success.
    delete(id)?;
    delete("no-such-volume")
}

/// `iscsi-inq` as `initiator` against LUN 0 of `iqn`: Ok(output) if it logged in.
fn inquiry(portal: std::net::SocketAddr, iqn: &str, initiator: &str) -> Result<String> {
    initiator::run_ok(
        std::process::Command::new("iscsi-inq")
            .args(["-i", initiator])
            .arg(initiator::lun_url(portal, iqn, 0)),
    )
}

fn publish_one_iqn(s: &Spindle, _: &str) -> Result<()> {
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

fn publish_single_node(s: &Spindle, _: &str) -> Result<()> {
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

fn expand_grows(s: &Spindle, _: &str) -> Result<()> {
    let v = create(
        "pvc-e2e-expand",
        64 * MIB,
        &[("spindle.dev/node", "node-a")],
    )?;
    let id = v.volume_id.clone();
    let req = |size: i64, block: bool| ControllerExpandVolumeRequest {
        volume_id: id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        volume_capability: Some(capability(block, Mode::SingleNodeWriter)),
        ..Default::default()
    };
    let shrink = req(32 * MIB, false);
    match with_ctl(async move |mut c| Ok(c.controller_expand_volume(shrink).await))? {
        Err(st) if st.code() == Code::OutOfRange => {}
        other => bail!("shrinking: {other:?}"),
    }
    let grow = req(128 * MIB, false);
    let r = with_ctl(async move |mut c| Ok(c.controller_expand_volume(grow).await))?;
    if !crd_allows_growth(s)? {
        match r {
            Err(st) if st.code() == Code::FailedPrecondition => {
                eprintln!(
                    "    PENDING: the Device CRD does not let a file grow yet (helper \"grow\"): {}",
                    st.message()
                );
                return delete(&id);
            }
            other => bail!("growing without a growable CRD: {other:?}"),
        }
    }
    let r = r.map_err(|e| anyhow::anyhow!("expand: {e}"))?.into_inner();
    ensure!(
        r.capacity_bytes == 128 * MIB && r.node_expansion_required,
        "{r:?}"
    );
    let d = s.get("device", NS, &id)?.context("Device")?;
    ensure!(d["status"]["capacityBytes"] == 128 * MIB, "{}", d["status"]);
    let block = req(192 * MIB, true);
    let r = with_ctl(async move |mut c| Ok(c.controller_expand_volume(block).await?.into_inner()))?;
    ensure!(
        !r.node_expansion_required && r.capacity_bytes == 192 * MIB,
        "{r:?}"
    );
    delete(&id)
}

fn get_capacity(node: Option<&str>) -> Result<(i64, i64)> {
    let mut req = GetCapacityRequest::default();
    if let Some(n) = node {
        req.parameters.insert("spindle.dev/node".into(), n.into());
    }
    with_ctl(async move |mut c| {
        let r = c.get_capacity(req).await?.into_inner();
        Ok((r.available_capacity, r.maximum_volume_size.unwrap_or(-1)))
    })
}

fn lease_free(s: &Spindle, node: &str) -> Result<Option<u64>> {
    let l = s.get("lease", NS, node)?.context("the agent's Lease")?;
    Ok(l["metadata"]["annotations"][FREE]
        .as_str()
        .and_then(|v| v.parse().ok()))
}

fn annotate(s: &Spindle, node: &str, free: Option<u64>) -> Result<()> {
    let kv = match free {
        Some(f) => format!("{FREE}={f}"),
        None => format!("{FREE}-"),
    };
    s.kubectl(&["annotate", "--overwrite", "lease", "-n", NS, node, &kv])
        .map(drop)
}

fn capacity(s: &Spindle, _: &str) -> Result<()> {
    if lease_free(s, "node-a")?.is_some() {
        // The agents publish their free bytes (helper "grow"): GetCapacity reports what the
        // Leases say (read before and after, the value moves with the disk).
        for _ in 0..5 {
            let before = (lease_free(s, "node-a")?, lease_free(s, "node-b")?);
            let (_, max_a) = get_capacity(Some("node-a"))?;
            let after = (lease_free(s, "node-a")?, lease_free(s, "node-b")?);
            let seen = [before.0, after.0].map(|v| v.map(|v| v as i64));
            if seen.contains(&Some(max_a)) {
                return Ok(());
            }
        }
        bail!("GetCapacity for node-a never matched its Lease");
    }
    eprintln!("    the agents publish no free bytes yet: the check plays them in the Leases");
    let r = (|| {
        annotate(s, "node-a", Some(5 * GIB))?;
        annotate(s, "node-b", Some(7 * GIB))?;
        let all = get_capacity(None)?;
        ensure!(
            all == ((12 * GIB) as i64, (7 * GIB) as i64),
            "all nodes: {all:?}"
        );
        let a = get_capacity(Some("node-a"))?;
        ensure!(a == ((5 * GIB) as i64, (5 * GIB) as i64), "node-a: {a:?}");
        annotate(s, "node-a", Some(9 * GIB))?;
        let all = get_capacity(None)?;
        ensure!(
            all == ((16 * GIB) as i64, (9 * GIB) as i64),
            "after node-a grew: {all:?}"
        );
        // A volume without spindle.dev/node goes to the node with the most free bytes.
        let v = create("pvc-e2e-place", 64 * MIB, &[("spindle.dev/chap", "none")])?;
        let node = v.volume_context.get(ctx::CTX_STORAGE_NODE).cloned();
        delete(&v.volume_id)?;
        ensure!(node.as_deref() == Some("node-a"), "placed on {node:?}");
        Ok(())
    })();
    annotate(s, "node-a", None)?;
    annotate(s, "node-b", None)?;
    r?;
    // Unknown again: nothing is counted.
    let none = get_capacity(None)?;
    ensure!(none == (0, 0), "without annotations: {none:?}");
    Ok(())
}
