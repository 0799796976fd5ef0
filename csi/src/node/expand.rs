//! NodeExpandVolume: the session rescanned until the disk shows the size asked for, then the
//! file system grown (resize2fs on the disk, xfs_growfs on the mount); raw block: the rescan.

use std::time::Instant;

use super::context::FsType;
use super::error::NodeError;
use super::fs;
use super::host::Host;
use super::iscsiadm;

pub async fn expand(
    host: &Host,
    volume_id: &str,
    path: &str,
    required: u64,
) -> Result<u64, NodeError> {
    let _busy = host.claim(volume_id)?;
    let st = host.store.load(volume_id)?.ok_or_else(|| {
        NodeError::NotFound(format!("volume {volume_id} is not staged on this node"))
    })?;
    if path != st.staging_path && !st.published.iter().any(|p| p == path) {
        return Err(NodeError::NotFound(format!(
            "volume {volume_id} is neither staged nor published at {path}"
        )));
    }
    let disk = st
        .disk
        .clone()
        .filter(|d| host.sysfs.disk_exists(d))
        .ok_or_else(|| {
            NodeError::FailedPrecondition(format!("volume {volume_id}'s disk is gone"))
        })?;
    let sessions = host.sysfs.sessions_of(&st.iqn);
    let start = Instant::now();
    let size = loop {
        for s in &sessions {
            host.iscsiadm(iscsiadm::rescan(s.id)).await?;
        }
        // The disk itself too: a LUN that is known already re-reads its capacity this way.
        host.write_sysfs(host.sysfs.rescan_file(&disk), "1", host.limits.mount)
            .await?;
        let size = host.sysfs.size_of(&disk).unwrap_or(0);
        if size >= required {
            break size;
        }
        if start.elapsed() >= host.limits.device {
            return Err(NodeError::Internal(format!(
                "disk {disk} of volume {volume_id} shows {size} bytes after {} s of rescans, {required} asked",
                start.elapsed().as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    if st.block {
        return Ok(size);
    }
    let mount = host.mount_at(&st.staging_path)?.ok_or_else(|| {
        NodeError::FailedPrecondition(format!(
            "volume {volume_id} is not mounted at {}",
            st.staging_path
        ))
    })?;
    let fs_type = FsType::parse(&mount.fs_type).ok_or_else(|| {
        NodeError::FailedPrecondition(format!(
            "volume {volume_id} holds {}, which the node cannot grow",
            mount.fs_type
        ))
    })?;
    let (prog, args) = fs::grow(fs_type, &format!("/dev/{disk}"), &st.staging_path);
    host.run(prog, args, host.limits.format).await?;
    tracing::info!(volume = volume_id, size, "expanded");
    Ok(size)
}
