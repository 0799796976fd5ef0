//! Bad specs: each says what to change in its Ready condition, and fixing it recovers; the
//! apiserver refuses a moved or shrunk Device, naming the field.

use anyhow::{Context, Result, bail, ensure};
use spindle_e2e::manifest::{device_yaml, target_yaml};
use spindle_e2e::spindle::{Spindle, condition};

use crate::{MIB, READY};

/// Waits until the object's Ready is False with `reason` and a message containing `says`.
fn not_ready(
    s: &Spindle,
    kind: &str,
    ns: &str,
    name: &str,
    reason: &str,
    says: &str,
) -> Result<()> {
    s.wait_for(
        &format!("{kind} {name} Ready=False {reason} ({says})"),
        READY,
        || {
            let c = s.get(kind, ns, name)?.and_then(|o| condition(&o, "Ready"));
            match c {
                Some(c)
                    if c.status == "False" && c.reason == reason && c.message.contains(says) =>
                {
                    Ok(Some(()))
                }
                other => bail!("Ready: {other:?}"),
            }
        },
    )
}

pub fn bad_specs(s: &Spindle, ns: &str) -> Result<()> {
    // A LUN naming a missing Device; creating it fixes the Target.
    s.apply(ns, &target_yaml("t-missing", &[(0, "later")], ""))?;
    not_ready(
        s,
        "target",
        ns,
        "t-missing",
        "DeviceNotFound",
        "spec.luns[0].deviceRef: Device \"later\" not found",
    )?;
    s.apply(ns, &device_yaml("later", "node-a", MIB, ""))?;
    s.wait_condition("target", ns, "t-missing", "Ready", "True", READY)?;

    // A Device on another node than the Target's; dropping that LUN fixes it.
    s.apply(ns, &device_yaml("on-b", "node-b", MIB, ""))?;
    s.apply(ns, &device_yaml("on-a", "node-a", MIB, ""))?;
    s.apply(ns, &target_yaml("t-split", &[(0, "on-a"), (1, "on-b")], ""))?;
    not_ready(
        s,
        "target",
        ns,
        "t-split",
        "DeviceOnOtherNode",
        "Device \"on-b\" is on node \"node-b\"",
    )?;
    s.kubectl(&[
        "patch",
        "target",
        "-n",
        ns,
        "t-split",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/luns/1"}]"#,
    ])?;
    s.wait_condition("target", ns, "t-split", "Ready", "True", READY)?;

    // A Device whose node has no agent; starting the agent fixes it.
    s.apply(ns, &device_yaml("on-c", "node-c", MIB, ""))?;
    not_ready(
        s,
        "device",
        ns,
        "on-c",
        "NoAgent",
        "node \"node-c\" has no Spindle agent",
    )?;
    s.rt.start_agent("node-c")?;
    let fixed = s.wait_condition("device", ns, "on-c", "Ready", "True", READY);
    s.kubectl(&[
        "delete",
        "device",
        "-n",
        ns,
        "on-c",
        "--wait=true",
        "--timeout=30s",
    ])?;
    s.rt.stop_agent("node-c")?;
    fixed?;

    // CHAP Secret missing, then of the wrong length, then right.
    let chap = "  acl: {allowAll: true}\n  chap: {secretRef: creds}\n";
    s.apply(ns, &device_yaml("locked", "node-a", MIB, ""))?;
    s.apply(ns, &target_yaml("locked", &[(0, "locked")], chap))?;
    not_ready(
        s,
        "target",
        ns,
        "locked",
        "ChapSecretNotFound",
        "Secret \"creds\" not found",
    )?;
    let secret = |pw: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{username: alice, password: {pw}}}\n"
        )
    };
    s.apply(ns, &secret("short"))?;
    not_ready(s, "target", ns, "locked", "ChapSecretInvalid", "is 5 bytes")?;
    s.apply(ns, &secret("twelve-bytes"))?;
    s.wait_condition("target", ns, "locked", "Ready", "True", READY)?;

    // Two Targets claiming one Device: the younger is refused until the older lets go.
    s.apply(ns, &device_yaml("shared", "node-a", MIB, ""))?;
    s.apply(ns, &target_yaml("first", &[(0, "shared")], ""))?;
    s.wait_condition("target", ns, "first", "Ready", "True", READY)?;
    s.apply(ns, &target_yaml("second", &[(0, "shared")], ""))?;
    not_ready(
        s,
        "target",
        ns,
        "second",
        "DeviceClaimed",
        &format!("already exported by Target {ns}/first"),
    )?;
    s.kubectl(&["delete", "target", "-n", ns, "first"])?;
    s.wait_condition("target", ns, "second", "Ready", "True", READY)?;

    // nodeName is immutable: the apiserver refuses, naming the field.
    let moved = device_yaml("shared", "node-b", MIB, "");
    let err = s
        .cluster
        .kubectl_fails(&["apply", "-n", ns, "-f", "-"], Some(&moved))?
        .context("changing spec.nodeName was accepted")?;
    ensure!(
        err.contains("spec.nodeName") && err.contains("immutable"),
        "{err}"
    );
    // A Device may grow (csi_grow tests that), never shrink: refused, naming the field.
    let shrunk = device_yaml("shared", "node-a", MIB / 2, "");
    let err = s
        .cluster
        .kubectl_fails(&["apply", "-n", ns, "-f", "-"], Some(&shrunk))?
        .context("shrinking spec.source.file.sizeBytes was accepted")?;
    ensure!(
        err.contains("spec.source.file.sizeBytes") && err.contains("may only grow"),
        "{err}"
    );
    Ok(())
}
