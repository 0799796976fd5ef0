//! A volume's life through CSI calls: CreateVolume (Device and Target Ready, the NAA in the
//! context; refusals naming what is refused), DeleteVolume waiting for the flush, expansion.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use spindle_csi::proto::volume_capability::access_mode::Mode;
use spindle_csi::proto::*;
use spindle_csi::volume as ctx;
use spindle_e2e::csi::capability;
use spindle_e2e::spindle::Spindle;
use tonic::Code;

use crate::calls::{acl, crd_allows_growth, create, create_req, delete, publish, unpublish};
use crate::{HOLD, IQN_A, MIB, NS, with_ctl};

// ---- checks of our own ----
pub fn create_ready(s: &Spindle, _: &str) -> Result<()> {
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

pub fn create_refusals(_: &Spindle, _: &str) -> Result<()> {
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

pub fn delete_flushed(s: &Spindle, _: &str) -> Result<()> {
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

pub fn expand_grows(s: &Spindle, _: &str) -> Result<()> {
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
