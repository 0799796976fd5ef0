//! NodePublishVolume and NodeUnpublishVolume: the staged file system bind-mounted at the
//! target path (read-only honoured), or the disk's device node bind-mounted onto a file
//! (raw block).

use std::os::unix::fs::MetadataExt;

use super::error::{NodeError, io};
use super::fs;
use super::host::{Host, Unmount};

pub struct PublishRequest {
    pub volume_id: String,
    pub staging_path: String,
    pub target_path: String,
    pub block: bool,
    /// SINGLE_NODE_SINGLE_WRITER: refused while published at another target path.
    pub single_writer: bool,
    pub read_only: bool,
}

pub async fn publish(host: &Host, req: PublishRequest) -> Result<(), NodeError> {
    let _busy = host.claim(&req.volume_id)?;
    let mut st = host.store.load(&req.volume_id)?.ok_or_else(|| {
        NodeError::FailedPrecondition(format!(
            "volume {} is not staged on this node (NodeStageVolume first)",
            req.volume_id
        ))
    })?;
    if st.staging_path != req.staging_path {
        return Err(NodeError::FailedPrecondition(format!(
            "volume {} is staged at {}, not {}",
            req.volume_id, st.staging_path, req.staging_path
        )));
    }
    if st.block != req.block {
        return Err(NodeError::invalid(
            "volume_capability",
            format!(
                "volume {} was staged as {}",
                req.volume_id,
                if st.block {
                    "a raw block device"
                } else {
                    "a file system"
                }
            ),
        ));
    }
    let disk = st.disk.clone().ok_or_else(|| {
        NodeError::FailedPrecondition(format!("volume {} has no disk recorded", req.volume_id))
    })?;
    let dev = format!("/dev/{disk}");
    let want_dev = host.sysfs.dev_of(&disk);
    let source = if st.block {
        dev.clone()
    } else {
        let staged = host.mount_at(&st.staging_path)?;
        match staged {
            Some(m) if Some(&m.dev) == want_dev.as_ref() => st.staging_path.clone(),
            _ => {
                return Err(NodeError::FailedPrecondition(format!(
                    "volume {}'s staging path {} does not have its disk {dev} mounted",
                    req.volume_id, st.staging_path
                )));
            }
        }
    };
    if let Some(m) = host.mount_at(&req.target_path)? {
        let same = if st.block {
            std::fs::metadata(&req.target_path)
                .ok()
                .map(|md| format!("{}:{}", libc::major(md.rdev()), libc::minor(md.rdev())))
                == want_dev
        } else {
            Some(&m.dev) == want_dev.as_ref()
        };
        if !same {
            return Err(NodeError::AlreadyExists(format!(
                "{} has something else mounted ({})",
                req.target_path, m.source
            )));
        }
        if m.read_only() != req.read_only {
            return Err(NodeError::AlreadyExists(format!(
                "volume {} is published at {} {}",
                req.volume_id,
                req.target_path,
                if m.read_only() {
                    "read-only"
                } else {
                    "read-write"
                }
            )));
        }
        return remember(host, &mut st, &req.target_path);
    }
    if req.single_writer {
        for other in st.published.iter().filter(|p| **p != req.target_path) {
            if host.mount_at(other)?.is_some() {
                return Err(NodeError::FailedPrecondition(format!(
                    "volume {} is single-node-single-writer and already published at {other}",
                    req.volume_id
                )));
            }
        }
    }
    if st.block {
        let parent = std::path::Path::new(&req.target_path)
            .parent()
            .ok_or_else(|| NodeError::invalid("target_path", "has no parent folder"))?;
        std::fs::create_dir_all(parent).map_err(|e| io(parent.display(), e))?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&req.target_path)
            .map_err(|e| io(&req.target_path, e))?;
    } else {
        std::fs::create_dir_all(&req.target_path).map_err(|e| io(&req.target_path, e))?;
    }
    for args in fs::bind_args(&source, &req.target_path, req.read_only) {
        host.mount(args).await?;
    }
    tracing::info!(volume = %req.volume_id, target = %req.target_path, read_only = req.read_only, "published");
    remember(host, &mut st, &req.target_path)
}

fn remember(host: &Host, st: &mut super::state::Staged, target: &str) -> Result<(), NodeError> {
    if !st.published.iter().any(|p| p == target) {
        st.published.push(target.to_string());
        host.store.save(st)?;
    }
    Ok(())
}

pub async fn unpublish(host: &Host, volume_id: &str, target_path: &str) -> Result<(), NodeError> {
    let _busy = host.claim(volume_id)?;
    host.unmount_all(target_path, Unmount::Strict).await?;
    match std::fs::symlink_metadata(target_path) {
        Ok(md) if md.is_dir() => {
            std::fs::remove_dir(target_path).map_err(|e| io(target_path, e))?
        }
        Ok(_) => std::fs::remove_file(target_path).map_err(|e| io(target_path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(target_path, e)),
    }
    if let Some(mut st) = host.store.load(volume_id)? {
        let before = st.published.len();
        st.published.retain(|p| p != target_path);
        if st.published.len() != before {
            host.store.save(&st)?;
        }
    }
    tracing::info!(volume = volume_id, target = target_path, "unpublished");
    Ok(())
}
