//! Sessions: the node record and login per portal (CHAP in the record file), waiting for the
//! LUN's disk in sysfs; logout and record deletion, bounded, also with the target gone.

use std::time::Instant;

use super::error::{NodeError, io};
use super::host::Host;
use super::iscsiadm::{self, Chap, EXIT_NO_OBJECTS, EXIT_SESSION_EXISTS};
use super::runner::RunError;

/// Logs in to `iqn` through each portal (records made with the CHAP settings in them).
pub async fn login(
    host: &Host,
    iqn: &str,
    portals: &[String],
    chap: Option<&Chap>,
) -> Result<(), NodeError> {
    for portal in portals {
        if host.sysfs.sessions_of(iqn).iter().any(|s| s.logged_in()) && portals.len() == 1 {
            return Ok(());
        }
        match host.iscsiadm(iscsiadm::new_record(iqn, portal)).await {
            Ok(_) => {}
            // An existing record is updated below.
            Err(e) if e.code() == Some(EXIT_SESSION_EXISTS) => {}
            Err(e) => return Err(e.into()),
        }
        host.iscsiadm(iscsiadm::update(iqn, portal, "node.startup", "manual"))
            .await?;
        set_auth(host, iqn, portal, chap)?;
        match host.iscsiadm(iscsiadm::login(iqn, portal)).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(EXIT_SESSION_EXISTS) => {}
            Err(e) => {
                // No record is left for a login that did not happen (the CO may never retry).
                if host.sysfs.sessions_of(iqn).is_empty()
                    && let Err(de) = host.iscsiadm(iscsiadm::delete_record(iqn, portal)).await
                {
                    tracing::warn!(iqn, portal, error = %de, "deleting the record after a failed login");
                }
                return Err(NodeError::Internal(format!(
                    "login to {iqn} at {portal} failed: {e}"
                )));
            }
        }
    }
    Ok(())
}

/// Writes the authentication settings into the node record file (see [`iscsiadm::with_auth`]).
fn set_auth(host: &Host, iqn: &str, portal: &str, chap: Option<&Chap>) -> Result<(), NodeError> {
    let file = host
        .record_dirs
        .iter()
        .find_map(|d| iscsiadm::record_file(d, iqn, portal))
        .ok_or_else(|| {
            NodeError::Internal(format!(
                "no node record of {iqn} at {portal} in {} (set --iscsi-node-dir to where open-iscsi keeps them)",
                host.record_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let text = std::fs::read_to_string(&file).map_err(|e| io(file.display(), e))?;
    let new = iscsiadm::with_auth(&text, chap);
    if new != text {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = file.with_extension("spindle-new");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io(tmp.display(), e))?;
        f.write_all(new.as_bytes())
            .map_err(|e| io(tmp.display(), e))?;
        std::fs::rename(&tmp, &file).map_err(|e| io(file.display(), e))?;
    }
    Ok(())
}

/// The LUN's disk in a logged-in session of `iqn`, waited for; rescans once half way.
pub async fn wait_disk(host: &Host, iqn: &str, lun: u32) -> Result<String, NodeError> {
    let start = Instant::now();
    let mut rescanned = false;
    loop {
        for s in host.sysfs.sessions_of(iqn) {
            if let Some(disk) = host.sysfs.disk_of(s.id, lun)
                && host.sysfs.dev_of(&disk).is_some()
            {
                return Ok(disk);
            }
        }
        let waited = start.elapsed();
        if waited >= host.limits.device {
            return Err(NodeError::Internal(format!(
                "LUN {lun} of {iqn} did not appear as a disk in {} s (sessions: {:?})",
                waited.as_secs(),
                host.sysfs.sessions_of(iqn)
            )));
        }
        if !rescanned && waited >= host.limits.device / 2 {
            rescanned = true;
            for s in host.sysfs.sessions_of(iqn) {
                let _ = host.iscsiadm(iscsiadm::rescan(s.id)).await;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Logs out of `iqn` at each portal and deletes the records: "nothing there" is fine, a
/// session still there afterwards is an error.
pub async fn logout(host: &Host, iqn: &str, portals: &[String]) -> Result<(), NodeError> {
    let gone = |e: &RunError| e.code() == Some(EXIT_NO_OBJECTS);
    let mut first_err = None;
    for portal in portals {
        if let Err(e) = host.iscsiadm(iscsiadm::logout(iqn, portal)).await
            && !gone(&e)
        {
            tracing::warn!(iqn, portal, error = %e, "logout failed");
            first_err.get_or_insert(e);
        }
        if let Err(e) = host.iscsiadm(iscsiadm::delete_record(iqn, portal)).await
            && !gone(&e)
        {
            tracing::warn!(iqn, portal, error = %e, "deleting the node record failed");
            first_err.get_or_insert(e);
        }
    }
    let left = host.sysfs.sessions_of(iqn);
    if !left.is_empty() {
        return Err(NodeError::Internal(format!(
            "sessions to {iqn} remain after logout: {left:?}{}",
            first_err.map(|e| format!(" ({e})")).unwrap_or_default()
        )));
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
