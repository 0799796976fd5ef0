//! Snapshots taken while the libiscsi writer streams sequence-numbered 4 KiB blocks (block i
//! holds i, big-endian, then i's low byte; 16 in flight, in order): each snapshot must hold
//! every write acknowledged before it was asked for, nothing the writer never had
//! acknowledged, and no hole before the last 16 writes it holds (a prefix, give or take the
//! writes in flight at the barrier); no write may fail. Then a clone of one is served and read
//! back, and the source Device is deleted: its snapshots are kept.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use spindle_e2e::initiator::{self, Writer, writer_tool};
use spindle_e2e::manifest::{device_yaml, target_yaml};
use spindle_e2e::spindle::{Spindle, default_iqn};

use crate::{MIB, READY, XFS_NODE, clone_yaml, ensure_same, image_of, read_lun, scratch, take};

const QD: u64 = 16;
const BLOCK: usize = 4096;

/// The blocks of `data` that hold the writer's pattern.
fn written(data: &[u8]) -> BTreeSet<u64> {
    data.chunks_exact(BLOCK)
        .enumerate()
        .filter(|(i, b)| {
            let i = *i as u64;
            b[..8] == i.to_be_bytes() && b[8..].iter().all(|&x| x == (i & 0xFF) as u8)
        })
        .map(|(i, _)| i as u64)
        .collect()
}

pub fn prefix_of_acknowledged_writes(s: &Spindle, ns: &str) -> Result<()> {
    let size = 1024 * MIB;
    s.apply(ns, &device_yaml("src", XFS_NODE, size, ""))?;
    s.apply(ns, &target_yaml("src", &[(0, "src")], ""))?;
    s.wait_condition("target", ns, "src", "Ready", "True", READY)?;
    let portal = s.rt.portal(XFS_NODE)?;
    let url = initiator::lun_url(portal, &default_iqn(ns, "src"), 0);
    let dir = scratch(ns)?;
    let tool = writer_tool(&dir.join("tools"))?;
    let count = size / BLOCK as u64;
    let w = Writer::start(&tool, &url, count, QD as u32, &dir.join("writes.txt"))?;
    s.wait_for("2000 writes acknowledged", Duration::from_secs(30), || {
        Ok((w.results()?.good.len() >= 2000).then_some(()))
    })?;
    let mut taken = Vec::new();
    for k in 0..3 {
        let acked: BTreeSet<u64> = w.results()?.good.into_iter().collect();
        let name = format!("s{k}");
        let snap = take(s, ns, &name, "src")?;
        let after = w.results()?.good.len();
        taken.push((name, snap, acked, after));
        std::thread::sleep(Duration::from_millis(300));
    }
    let still_writing = w.results()?.good.len() < count as usize;
    let seen = w.finish()?;
    ensure!(
        seen.other.is_empty() && seen.fenced.is_empty(),
        "writes failed while snapshots were taken: {:?} / fenced {:?}",
        &seen.other[..seen.other.len().min(5)],
        &seen.fenced[..seen.fenced.len().min(5)]
    );
    let good: BTreeSet<u64> = seen.good.iter().copied().collect();
    ensure!(
        good.len() as u64 == count,
        "{} of {count} writes GOOD",
        good.len()
    );
    let mut last_len = 0;
    for (name, snap, acked, after) in &taken {
        let st = &snap["status"];
        ensure!(
            st["method"] == "reflink",
            "{name}: method {} on XFS",
            st["method"]
        );
        let hold = st["holdMicros"].as_u64().context("holdMicros")?;
        ensure!(hold > 0, "{name}: no hold reported");
        ensure!(st["sizeBytes"] == size, "{name}: {st}");
        ensure!(st["creationTime"].is_string(), "{name}: {st}");
        let data = std::fs::read(image_of(s, XFS_NODE, snap)?)?;
        let held = written(&data);
        let missing: Vec<_> = acked.difference(&held).take(5).collect();
        ensure!(
            missing.is_empty(),
            "{name}: writes acknowledged before the snapshot are missing: {missing:?}"
        );
        let phantom: Vec<_> = held.difference(&good).take(5).collect();
        ensure!(
            phantom.is_empty(),
            "{name}: holds writes never acknowledged: {phantom:?}"
        );
        let top = held.iter().next_back().copied().unwrap_or(0);
        let holes: Vec<_> = (0..top.saturating_sub(QD))
            .filter(|i| !held.contains(i))
            .take(5)
            .collect();
        ensure!(
            holes.is_empty(),
            "{name}: not a prefix: holes at {holes:?} below {top}"
        );
        ensure!(
            held.len() >= last_len,
            "{name}: holds fewer writes ({}) than the snapshot before ({last_len})",
            held.len()
        );
        last_len = held.len();
        eprintln!(
            "  {name}: {} writes held ({} acknowledged before, {after} after), hold {hold} µs",
            held.len(),
            acked.len()
        );
    }
    ensure!(
        still_writing,
        "the writer finished before the last snapshot: the snapshots did not overlap writes"
    );
    let table = s.kubectl(&["get", "-n", ns, "devicesnapshots", "-o", "wide"])?;
    for want in [
        "READY", "SOURCE", "METHOD", "HOLD-US", "reflink", "src", "true",
    ] {
        ensure!(
            table.contains(want),
            "kubectl get devicesnapshots lacks {want}:\n{table}"
        );
    }

    // A clone of s1, served and read back through iSCSI, is the snapshot's copy.
    let (_, s1, _, _) = &taken[1];
    s.apply(ns, &clone_yaml("c1", XFS_NODE, size, "s1"))?;
    s.apply(ns, &target_yaml("c1", &[(0, "c1")], ""))?;
    s.wait_condition("target", ns, "c1", "Ready", "True", READY)?;
    let served = read_lun(
        &initiator::lun_url(portal, &default_iqn(ns, "c1"), 0),
        &dir.join("c1.raw"),
    )?;
    let copy = std::fs::read(image_of(s, XFS_NODE, s1)?)?;
    ensure_same(
        &served,
        &copy,
        "the clone read through iSCSI against the snapshot",
    )?;

    // Deleting the source keeps its snapshots (docs/snapshots.md); deleting one removes it.
    let s0 = &taken[0].1;
    let s0_image = image_of(s, XFS_NODE, s0)?;
    s.kubectl(&["delete", "-n", ns, "target", "src", "--wait=false"])?;
    s.kubectl(&["delete", "-n", ns, "device", "src", "--wait=false"])?;
    s.wait_gone("device", ns, "src", READY)?;
    let kept = s
        .get("devicesnapshot", ns, "s0")?
        .context("s0 went with its Device")?;
    ensure!(kept["status"]["readyToUse"] == true, "{}", kept["status"]);
    ensure!(s0_image.exists(), "the copy of s0 went with its Device");
    s.kubectl(&["delete", "-n", ns, "devicesnapshot", "s0", "--wait=false"])?;
    s.wait_gone("devicesnapshot", ns, "s0", READY)?;
    ensure!(
        !s0_image.exists(),
        "DeviceSnapshot s0 deleted, its copy is still there"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
