//! A Device and a Target served to real initiators: status, `kubectl get` columns, I/O, and a
//! CHAP Secret rotation reaching the agent.

use anyhow::{Context, Result, ensure};
use spindle_e2e::initiator;
use spindle_e2e::manifest::{device_yaml, target_yaml};
use spindle_e2e::spindle::{Spindle, default_iqn};

use crate::INITIATOR;
use crate::{MIB, READY, device_and_target};

pub fn apply_connect_io(s: &Spindle, ns: &str) -> Result<()> {
    let iqn = device_and_target(s, ns, "web", "node-a", "")?;
    let portal = s.rt.portal("node-a")?;
    let portal_text = portal.to_string();
    let t = s.get("target", ns, "web")?.context("target")?;
    ensure!(
        t["status"]["portals"][0] == portal_text.as_str(),
        "status.portals: {}",
        t["status"]
    );
    ensure!(
        t["status"]["node"] == "node-a" && t["status"]["iqn"] == iqn.as_str(),
        "{}",
        t["status"]
    );
    let d = s.get("device", ns, "web")?.context("device")?;
    ensure!(d["status"]["capacityBytes"] == 64 * MIB, "{}", d["status"]);
    ensure!(
        d["status"]["usedBy"][0] == format!("{ns}/web"),
        "{}",
        d["status"]
    );
    let finalizers = &d["metadata"]["finalizers"];
    ensure!(
        finalizers
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "spindle.dev/flush")),
        "{finalizers}"
    );
    let ls = initiator::iscsi_ls(portal, INITIATOR)?;
    ensure!(ls.contains(&iqn), "iscsi-ls does not list {iqn}: {ls}");
    let url = initiator::lun_url(portal, &iqn, 0);
    initiator::qemu_io(&url, &["write -P 0x5a 1M 128k"])?;
    let read = initiator::qemu_io(&url, &["read -P 0x5a 1M 128k"])?;
    ensure!(read.contains("read 131072/131072"), "{read}");
    let table = s.kubectl(&["get", "-n", ns, "targets,devices"])?;
    for want in [
        "READY",
        "NODE",
        "PORTAL",
        "SESSIONS",
        "SIZE",
        "True",
        "node-a",
        &portal_text,
        "67108864",
    ] {
        ensure!(
            table.contains(want),
            "kubectl get targets,devices lacks {want:?}:\n{table}"
        );
    }
    Ok(())
}

/// The URL of LUN 0 of a Target with CHAP credentials.
fn chap_url(portal: std::net::SocketAddr, iqn: &str, user: &str, secret: &str) -> String {
    format!("iscsi://{user}%{secret}@{portal}/{iqn}/0")
}

pub fn chap_rotation(s: &Spindle, ns: &str) -> Result<()> {
    let secret = |pw: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: rot}}\nstringData: {{username: alice, password: {pw}}}\n"
        )
    };
    s.apply(ns, &secret("old-secret-12"))?;
    s.apply(ns, &device_yaml("rot", "node-a", MIB, ""))?;
    s.apply(
        ns,
        &target_yaml(
            "rot",
            &[(0, "rot")],
            "  acl: {allowAll: true}\n  chap: {secretRef: rot}\n",
        ),
    )?;
    s.wait_condition("target", ns, "rot", "Ready", "True", READY)?;
    let portal = s.rt.portal("node-a")?;
    let iqn = default_iqn(ns, "rot");
    let login = |pw: &str| initiator::qemu_io(&chap_url(portal, &iqn, "alice", pw), &["read 0 4k"]);
    login("old-secret-12").context("login with the first secret")?;
    s.apply(ns, &secret("new-secret-34"))?;
    s.wait_for("the new CHAP secret works", READY, || {
        Ok(login("new-secret-34").ok())
    })?;
    ensure!(
        login("old-secret-12").is_err(),
        "the old CHAP secret still logs in after the rotation"
    );
    Ok(())
}
