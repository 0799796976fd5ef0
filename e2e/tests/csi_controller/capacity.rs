//! GetCapacity and placement follow the free bytes the agents' Leases publish.

use anyhow::{Context, Result, bail, ensure};
use spindle_csi::proto::*;
use spindle_csi::volume as ctx;
use spindle_e2e::spindle::Spindle;

use crate::calls::{create, delete};
use crate::{FREE, GIB, MIB, NS, with_ctl};

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

pub fn capacity(s: &Spindle, _: &str) -> Result<()> {
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
