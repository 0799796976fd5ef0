//! Issue 21, what the CSI driver needs from the agent and the operator: a Device grown live
//! (ControllerExpandVolume), the room of each node in its Lease (GetCapacity), and an initiator
//! taken out of a Target's ACL cut off (ControllerUnpublishVolume). A real etcd +
//! kube-apiserver, the operator and an agent as processes, sessions held open by the
//! repository's libiscsi probe (`e2e/standalone/tools/probe.c`). Each check uses its own
//! namespace and file names; they run in order on one cluster and all are reported.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use spindle_agent_api::lease::{CAPACITY_FREE_ANNOTATION, CAPACITY_TOTAL_ANNOTATION};
use spindle_e2e::checks::{Check, run_table};
use spindle_e2e::initiator::lun_url;
use spindle_e2e::manifest::{Manifest, target_yaml};
use spindle_e2e::probe::{Answer, Probe, probe_tool};
use spindle_e2e::spindle::{OPERATOR, Spindle, condition, default_iqn};

const NODE: &str = "node-a";
const MIB: u64 = 1 << 20;
const READY: Duration = Duration::from_secs(30);
/// From `kubectl patch` to the new size in the Device's status.
const GROWN: Duration = Duration::from_secs(20);
/// From the ACL edit to the removed initiator's connection closed.
const CUT: Duration = Duration::from_secs(10);
/// Two Lease renewals (every 5 s).
const RENEWALS: Duration = Duration::from_secs(15);

fn main() -> ExitCode {
    let _tools = Removed(tools_dir());
    let checks: &[(&str, Check)] = &[
        (
            "a grown Device: status, file, one UNIT ATTENTION per session, READ CAPACITY, no relogin",
            grown_live,
        ),
        (
            "a thick Device grows allocated; one that cannot grow is NoSpace and keeps its size",
            thick_and_no_space,
        ),
        (
            "a shrink or another path is refused by the API server, naming the field",
            shrink_refused,
        ),
        (
            "the Lease carries the data dir's room; free bytes drop when a file fills it",
            lease_capacity,
        ),
        (
            "an initiator taken out of acl.initiators loses its session, the other keeps its",
            acl_cut,
        ),
    ];
    run_table(
        || Spindle::start(&[NODE], &[]),
        "e2e-grow",
        checks,
        &[OPERATOR],
    )
}

/// A folder removed when the suite ends, passed or not.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tools_dir() -> PathBuf {
    std::env::temp_dir().join(format!("spindle-e2e-grow-{}", std::process::id()))
}

/// A Device on NODE over `<ns>-<name>.img` (file names are per data dir, not per namespace).
fn device(ns: &str, name: &str, size: u64, thin: bool) -> String {
    Manifest::device(name, NODE)
        .file(&format!("{ns}-{name}.img"), size)
        .spec(&format!("  thinProvisioning: {thin}\n"))
        .yaml()
}

/// Device `name` with a Target of the same name over it (`acl`: the Target's extra lines),
/// both Ready; returns the URL of its LUN 0.
fn served(s: &Spindle, ns: &str, name: &str, size: u64, thin: bool, acl: &str) -> Result<String> {
    s.apply(ns, &device(ns, name, size, thin))?;
    s.apply(ns, &target_yaml(name, &[(0, name)], acl))?;
    s.wait_condition("device", ns, name, "Ready", "True", READY)?;
    s.wait_condition("target", ns, name, "Ready", "True", READY)?;
    Ok(lun_url(s.rt.portal(NODE)?, &default_iqn(ns, name), 0))
}

fn patch_size(s: &Spindle, ns: &str, name: &str, size: u64) -> Result<String> {
    s.kubectl(&[
        "patch",
        "device",
        "-n",
        ns,
        name,
        "--type",
        "merge",
        "-p",
        &format!("{{\"spec\":{{\"source\":{{\"file\":{{\"sizeBytes\":{size}}}}}}}}}"),
    ])
}

fn capacity(d: &Value) -> Option<u64> {
    d["status"]["capacityBytes"].as_u64()
}

/// Waits until the Device's status says `size`; returns how long that took from `since`.
fn wait_capacity(s: &Spindle, ns: &str, name: &str, size: u64, since: Instant) -> Result<f64> {
    s.wait_for(&format!("{ns}/{name} capacityBytes {size}"), GROWN, || {
        let d = s.get("device", ns, name)?.context("device")?;
        Ok((capacity(&d) == Some(size)).then(|| since.elapsed().as_secs_f64()))
    })
}

fn grown_live(s: &Spindle, ns: &str) -> Result<()> {
    let url = served(s, ns, "vol", 16 * MIB, true, "")?;
    let tool = probe_tool(&tools_dir())?;
    let mut sessions = Vec::new();
    for who in ["grow-a", "grow-b"] {
        let mut p = Probe::login(&tool, &url, &format!("iqn.2026-11.dev.spindle:{who}"))?;
        p.settle()?;
        let rc = p.send("rc16")?;
        ensure!(
            rc == Answer::Good(Some((16 * MIB / 512 - 1, 512))),
            "{rc:?}"
        );
        sessions.push(p);
    }
    let patched = Instant::now();
    patch_size(s, ns, "vol", 64 * MIB)?;
    let took = wait_capacity(s, ns, "vol", 64 * MIB, patched)?;
    eprintln!("     capacityBytes followed the patch in {took:.1} s");
    let file = s.rt.data_dir(NODE)?.join(format!("{ns}-vol.img"));
    let len = std::fs::metadata(&file)?.len();
    ensure!(len == 64 * MIB, "{} holds {len} bytes", file.display());
    for p in &mut sessions {
        // The open session's next command: CAPACITY DATA HAS CHANGED, once.
        let first = p.send("rc16")?;
        ensure!(
            first == Answer::Check(6, 0x2a, 0x09),
            "{}: {first:?}",
            p.initiator
        );
        let again = p.send("rc16")?;
        ensure!(
            again == Answer::Good(Some((64 * MIB / 512 - 1, 512))),
            "{}: {again:?}",
            p.initiator
        );
        let rc10 = p.send("rc10")?;
        ensure!(
            rc10 == Answer::Good(Some((64 * MIB / 512 - 1, 512))),
            "{rc10:?}"
        );
        ensure!(p.send("tur")? == Answer::Good(None), "{}", p.initiator);
    }
    let d = s.get("device", ns, "vol")?.context("device")?;
    let ready = condition(&d, "Ready").context("Ready")?;
    ensure!(ready.status == "True", "{ready:?}");
    ensure!(ready.message.contains(&(64 * MIB).to_string()), "{ready:?}");
    Ok(())
}

fn thick_and_no_space(s: &Spindle, ns: &str) -> Result<()> {
    let url = served(s, ns, "thick", 8 * MIB, false, "")?;
    let patched = Instant::now();
    patch_size(s, ns, "thick", 32 * MIB)?;
    wait_capacity(s, ns, "thick", 32 * MIB, patched)?;
    let file = s.rt.data_dir(NODE)?.join(format!("{ns}-thick.img"));
    let meta = std::fs::metadata(&file)?;
    let allocated = meta.blocks() * 512;
    ensure!(
        meta.len() == 32 * MIB && allocated >= 24 * MIB,
        "thick growth allocates: length {}, allocated {allocated}",
        meta.len()
    );
    // Past the largest file the filesystem takes (ext4: 16 TiB): fallocate refuses at once,
    // nothing is allocated.
    let huge = 1u64 << 46;
    patch_size(s, ns, "thick", huge)?;
    let ready = s.wait_for("Ready=False NoSpace", READY, || {
        let c = s
            .get("device", ns, "thick")?
            .and_then(|o| condition(&o, "Ready"));
        Ok(c.filter(|c| c.status == "False" && c.reason == "NoSpace"))
    })?;
    ensure!(ready.message.contains("sizeBytes"), "{ready:?}");
    let d = s.get("device", ns, "thick")?.context("device")?;
    ensure!(capacity(&d) == Some(32 * MIB), "status: {:?}", capacity(&d));
    ensure!(
        std::fs::metadata(&file)?.len() == 32 * MIB,
        "the file changed"
    );
    // Still served at the old size, with no unit attention.
    let tool = probe_tool(&tools_dir())?;
    let mut p = Probe::login(&tool, &url, "iqn.2026-11.dev.spindle:grow-c")?;
    p.settle()?;
    let rc = p.send("rc16")?;
    ensure!(
        rc == Answer::Good(Some((32 * MIB / 512 - 1, 512))),
        "{rc:?}"
    );
    Ok(())
}

fn shrink_refused(s: &Spindle, ns: &str) -> Result<()> {
    s.apply(ns, &device(ns, "fixed", 16 * MIB, true))?;
    s.wait_condition("device", ns, "fixed", "Ready", "True", READY)?;
    let shrink = s
        .cluster
        .kubectl_fails(
            &[
                "patch",
                "device",
                "-n",
                ns,
                "fixed",
                "--type",
                "merge",
                "-p",
                &format!(
                    "{{\"spec\":{{\"source\":{{\"file\":{{\"sizeBytes\":{}}}}}}}}}",
                    8 * MIB
                ),
            ],
            None,
        )?
        .context("the shrink was accepted")?;
    ensure!(
        shrink.contains("spec.source.file.sizeBytes") && shrink.contains("may only grow"),
        "{shrink}"
    );
    let moved = s
        .cluster
        .kubectl_fails(
            &[
                "patch",
                "device",
                "-n",
                ns,
                "fixed",
                "--type",
                "merge",
                "-p",
                "{\"spec\":{\"source\":{\"file\":{\"path\":\"elsewhere.img\"}}}}",
            ],
            None,
        )?
        .context("the path change was accepted")?;
    ensure!(
        moved.contains("spec.source.file.path") && moved.contains("immutable"),
        "{moved}"
    );
    let d = s.get("device", ns, "fixed")?.context("device")?;
    ensure!(capacity(&d) == Some(16 * MIB), "{:?}", capacity(&d));
    Ok(())
}

/// (free, total) bytes the agent's Lease publishes.
fn lease_room(s: &Spindle) -> Result<(u64, u64)> {
    let l = s
        .get("lease", "spindle-system", NODE)?
        .context("the agent's Lease")?;
    let ann = &l["metadata"]["annotations"];
    let num = |k: &str| -> Result<u64> {
        ann[k]
            .as_str()
            .with_context(|| format!("no {k} in {ann}"))?
            .parse()
            .with_context(|| format!("{k} is not a number"))
    };
    Ok((
        num(CAPACITY_FREE_ANNOTATION)?,
        num(CAPACITY_TOTAL_ANNOTATION)?,
    ))
}

/// statvfs of `dir` as the test sees it: (free to unprivileged users, total).
fn statvfs(dir: &std::path::Path) -> Result<(u64, u64)> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a statvfs buffer.
    ensure!(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } == 0);
    // SAFETY: filled on success.
    let st = unsafe { st.assume_init() };
    Ok((st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize))
}

fn lease_capacity(s: &Spindle, ns: &str) -> Result<()> {
    let dir = s.rt.data_dir(NODE)?;
    let (free, total) = s.wait_for("capacity annotations", RENEWALS, || Ok(lease_room(s).ok()))?;
    let (_, fs_total) = statvfs(&dir)?;
    ensure!(
        total == fs_total,
        "total {total} is not the data dir's filesystem ({fs_total})"
    );
    ensure!(free <= total, "free {free} > total {total}");
    // A file that takes 1 GiB of the data dir's filesystem.
    let big = 1024 * MIB;
    let path = dir.join(format!("{ns}-filler.bin"));
    let f = std::fs::File::create(&path)?;
    // SAFETY: fallocate on a file we own.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, big as libc::off_t) };
    let filled = Instant::now();
    let r = (|| {
        ensure!(r == 0, "fallocate: {}", std::io::Error::last_os_error());
        // Other programs share the disk: ask for most of the drop, not all of it.
        let want = free.saturating_sub(big * 3 / 4);
        let dropped = s.wait_for(
            &format!("free bytes below {want} (were {free})"),
            RENEWALS,
            || Ok(lease_room(s)?.0.le(&want).then(|| filled.elapsed())),
        )?;
        eprintln!(
            "     free bytes dropped {:.1} s after the file was written",
            dropped.as_secs_f64()
        );
        Ok(())
    })();
    drop(f);
    std::fs::remove_file(&path)?;
    r
}

fn acl_cut(s: &Spindle, ns: &str) -> Result<()> {
    let (keep, gone) = (
        "iqn.2026-11.dev.spindle:node-keep",
        "iqn.2026-11.dev.spindle:node-detached",
    );
    let acl = |names: &[&str]| format!("  acl:\n    initiators: [{}]\n", names.join(", "));
    let url = served(s, ns, "shared", 16 * MIB, true, &acl(&[keep, gone]))?;
    let tool = probe_tool(&tools_dir())?;
    let mut kept = Probe::login(&tool, &url, keep)?;
    let mut cut = Probe::login(&tool, &url, gone)?;
    kept.settle()?;
    cut.settle()?;
    let edited = Instant::now();
    s.apply(ns, &target_yaml("shared", &[(0, "shared")], &acl(&[keep])))?;
    let took = cut.wait_closed(edited, CUT)?;
    eprintln!(
        "     the removed initiator's session closed {:.1} s after the edit",
        took.as_secs_f64()
    );
    ensure!(
        kept.send("tur")? == Answer::Good(None),
        "the allowed initiator lost its session"
    );
    let rc = kept.send("rc16")?;
    ensure!(matches!(rc, Answer::Good(Some(_))), "{rc:?}");
    match Probe::login(&tool, &url, gone) {
        Ok(_) => bail!("{gone} logged in again after its removal from the ACL"),
        Err(e) => ensure!(format!("{e:#}").contains("could not log in"), "{e:#}"),
    }
    Ok(())
}
