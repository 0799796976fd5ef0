//! Issue 17's smaller holes, end to end (a real etcd + kube-apiserver, the operator and an
//! agent per node, as in `operator.rs`): what the operator shows and keeps when the agent
//! cannot finish a release. Each check uses its own namespace; SPINDLE_E2E_ONLY picks checks.
//! Needs root (chattr) on an ext4 or xfs data dir.

use std::path::Path;
use std::process::Command;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use spindle_e2e::checks::{Check, run_table};
use spindle_e2e::manifest::device_yaml;
use spindle_e2e::spindle::{OPERATOR, Spindle, condition};

const READY: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;

fn main() -> ExitCode {
    let checks: &[(&str, Check)] = &[(
        "a file that cannot be removed holds the Device, says why, and goes once it can",
        failed_unlink_holds_the_finalizer,
    )];
    run_table(
        || Spindle::start(&["node-a"], &[]),
        "e2e-holes",
        checks,
        &[OPERATOR],
    )
}

fn chattr(flag: &str, p: &Path) -> Result<()> {
    let st = Command::new("chattr").arg(flag).arg(p).status()?;
    ensure!(st.success(), "chattr {flag} {} failed ({st})", p.display());
    Ok(())
}

/// Makes the file mutable again however the check ends.
struct Unfreeze<'a>(&'a Path);

impl Drop for Unfreeze<'_> {
    fn drop(&mut self) {
        let _ = chattr("-i", self.0);
    }
}

/// ReleaseDevice under reclaimPolicy Delete cannot unlink the file (`chattr +i`): the Device
/// stays (finalizer held), its Deleting condition names the path and the OS error, and a retry
/// after the cause is gone completes the delete and removes the file. Before the fix the second
/// release answered "not known" and the finalizer went with the file still there.
fn failed_unlink_holds_the_finalizer(s: &Spindle, ns: &str) -> Result<()> {
    s.apply(ns, &device_yaml("stuck", "node-a", 16 * MIB, ""))?;
    s.wait_condition("device", ns, "stuck", "Ready", "True", READY)?;
    let file = s.rt.data_dir("node-a")?.join("stuck.img");
    ensure!(file.exists(), "{} missing while served", file.display());
    chattr("+i", &file)?;
    let guard = Unfreeze(&file);
    s.kubectl(&["delete", "device", "-n", ns, "stuck", "--wait=false"])?;
    let path = file.display().to_string();
    let c = s.wait_for("Deleting names the file and the error", READY, || {
        let c = s
            .get("device", ns, "stuck")?
            .and_then(|d| condition(&d, "Deleting"));
        Ok(c.filter(|c| c.message.contains(&path) && c.message.contains("not permitted")))
    })?;
    eprintln!("     Deleting: {} {}", c.reason, c.message);
    // The operator retries with backoff: several releases later it is still held.
    std::thread::sleep(Duration::from_secs(10));
    let d = s
        .get("device", ns, "stuck")?
        .context("the Device went although its file could not be removed")?;
    let c = condition(&d, "Deleting").context("Deleting condition")?;
    if !c.message.contains(&path) {
        bail!("Deleting no longer says why: {c:?}");
    }
    ensure!(file.exists(), "{} went although it was immutable", path);
    drop(guard);
    s.wait_gone("device", ns, "stuck", Duration::from_secs(90))?;
    ensure!(
        !file.exists(),
        "{path} still there after the delete completed"
    );
    Ok(())
}
