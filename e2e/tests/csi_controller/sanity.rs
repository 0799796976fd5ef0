//! csi-sanity against the controller (and the node mode's Identity and NodeGetInfo): every spec
//! that runs passes, and no Controller spec is skipped but those of capabilities the driver does
//! not declare.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use spindle_csi::proto::NodeGetInfoRequest;
use spindle_csi::proto::node_client::NodeClient;
use spindle_e2e::csi::{self as driver, Spec};
use spindle_e2e::spindle::Spindle;
use tonic::Code;

use crate::calls::crd_allows_growth;
use crate::{DRIVER, MIB, controller_log, node_log, tail};

/// Skip messages of specs for capabilities the controller does not declare.
const UNDECLARED: &[&str] = &[
    "Snapshot not supported",
    "Volume Cloning not supported",
    "CreateSnapshot not supported",
    "DeleteSnapshot not supported",
    "ListSnapshots not supported",
    "GetSnapshot not supported",
    "SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported",
    "Modify volume not supported",
    "Modify Volume not supported",
    "ControllerModifyVolume not supported",
    "ControllerGetVolumeHealth not supported",
    "ControllerListVolumeHealth not supported",
    "ControllerPublishVolume.readonly field not supported",
    // Node-side: the attach limit is the node's (NodeGetInfo), not run here.
    "testnodevolumeattachlimit not enabled",
];

pub fn sanity(s: &Spindle, _: &str) -> Result<()> {
    let (ctl_addr, node_addr, dir) = {
        let g = DRIVER.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let d = g.as_ref().context("driver")?;
        (d.controller.addr, d.node.addr, d.dir.clone())
    };
    // NodeGetInfo comes from the node mode (another helper's work): without it the lifecycle
    // specs, which call it, cannot run.
    let node_info = {
        let g = DRIVER.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let d = g.as_ref().context("driver")?;
        let url = d.node.url();
        d.rt.block_on(async move {
            let mut n = NodeClient::connect(url).await?;
            anyhow::Ok(n.node_get_info(NodeGetInfoRequest::default()).await)
        })?
    };
    let mut skip = vec!["Node Service".to_owned()];
    let mut pending = Vec::new();
    match node_info {
        Ok(info) => eprintln!("    NodeGetInfo: node ID {:?}", info.into_inner().node_id),
        // csi-sanity's cleanup after every volume spec calls NodeGetCapabilities and
        // NodeUnpublishVolume: without the node mode's Node service no volume spec can pass.
        Err(st) if st.code() == Code::Unimplemented => bail!(
            "the node mode serves no Node service (NodeGetInfo: {st}); csi-sanity's cleanup needs \
             NodeGetCapabilities and NodeUnpublishVolume: run with the node mode merged, or set \
             SPINDLE_E2E_CSI_NODE_BIN to a spindle-csi that has it"
        ),
        Err(st) => bail!("NodeGetInfo failed: {st}; node log:\n{}", tail(&node_log())),
    }
    if !crd_allows_growth(s)? {
        skip.push(r"ExpandVolume \[Controller Server\] should work".into());
        pending.push("ExpandVolume should work (the Device CRD does not let a file grow yet)");
    }
    let params = dir.join("sanity-params.yaml");
    std::fs::write(
        &params,
        "spindle.dev/chap: none\nspindle.dev/node: node-a\n",
    )?;
    let args: Vec<String> = vec![
        format!("--csi.endpoint={node_addr}"),
        format!("--csi.controllerendpoint={ctl_addr}"),
        format!("--csi.testvolumeparameters={}", params.display()),
        format!("--csi.testvolumesize={}", 64 * MIB),
        format!("--csi.testvolumeexpandsize={}", 128 * MIB),
        format!("--csi.mountdir={}", dir.join("mnt").display()),
        format!("--csi.stagingdir={}", dir.join("stage").display()),
        format!("--ginkgo.skip={}", skip.join("|")),
    ];
    let started = Instant::now();
    let (specs, output) = driver::run_sanity(&args, &dir)?;
    let took = started.elapsed();
    let failed: Vec<&Spec> = specs
        .iter()
        .filter(|s| s.ran() && s.state != "passed")
        .collect();
    let ran = specs.iter().filter(|s| s.ran()).count();
    let passed = specs.iter().filter(|s| s.state == "passed").count();
    let skipped: Vec<&Spec> = specs.iter().filter(|s| !s.ran()).collect();
    let controller_skips: Vec<&Spec> = skipped
        .iter()
        .copied()
        .filter(|s| s.name.contains("[Controller Server]"))
        .collect();
    eprintln!(
        "csi-sanity: {} specs, {ran} ran, {passed} passed, {} skipped ({} of them Controller specs) in {:.0} s",
        specs.len(),
        skipped.len(),
        controller_skips.len(),
        took.as_secs_f64()
    );
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for s in &controller_skips {
        *reasons
            .entry(if s.state == "pending" {
                "marked pending (XIt) in csi-sanity itself"
            } else if s.message.is_empty() {
                "filtered out by --ginkgo.skip (PENDING below)"
            } else {
                &s.message
            })
            .or_default() += 1;
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort();
    for (why, n) in &reasons {
        eprintln!("  skipped Controller specs: {n} × {why}");
    }
    for p in &pending {
        eprintln!("  PENDING: {p}");
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|s| format!("{} [{}]: {}", s.name, s.state, s.message))
            .collect();
        bail!(
            "{} csi-sanity specs failed:\n{}\ncontroller log:\n{}\ncsi-sanity output (tail):\n{}",
            failed.len(),
            list.join("\n"),
            tail(&controller_log()),
            tail(&output)
        );
    }
    ensure!(ran > 0, "csi-sanity ran nothing: {}", tail(&output));
    let wrong: Vec<String> = controller_skips
        .iter()
        .filter(|s| !s.message.is_empty() && !UNDECLARED.contains(&s.message.as_str()))
        .map(|s| format!("{}: {}", s.name, s.message))
        .collect();
    ensure!(
        wrong.is_empty(),
        "Controller specs skipped for capabilities the driver declares:\n{}",
        wrong.join("\n")
    );
    Ok(())
}
