//! NodeStageVolume and NodeUnstageVolume.
//!
//! Stage: log in, find the LUN's disk in sysfs, **check its NAA against the volume's before
//! anything touches it**, record it, then (file system) mkfs only when blkid finds nothing and
//! mount at the staging path. Unstage: unmount, flush, delete the SCSI disk, log out and delete
//! the node records — also when the disk is gone or the target unreachable.

use std::collections::BTreeMap;

use super::attach;
use super::context::{Access, Attachment, FsType};
use super::error::NodeError;
use super::fs::{self, Content};
use super::host::{Host, Unmount};
use super::iscsiadm::Chap;
use super::naa::Naa;
use super::state::{Staged, valid_volume_id};

/// What NodeStageVolume was asked.
pub struct StageRequest {
    pub volume_id: String,
    pub staging_path: String,
    pub access: Access,
    pub attachment: Attachment,
    pub chap: Option<Chap>,
}

pub fn check_id(id: &str) -> Result<(), NodeError> {
    if id.is_empty() {
        return Err(NodeError::invalid("volume_id", "is missing"));
    }
    if !valid_volume_id(id) {
        return Err(NodeError::invalid(
            "volume_id",
            format!("{id:?}: only letters, digits, '.', '-' and '_' (a Spindle volume ID)"),
        ));
    }
    Ok(())
}

pub fn check_path(field: &'static str, path: &str) -> Result<(), NodeError> {
    if path.is_empty() {
        return Err(NodeError::invalid(field, "is missing"));
    }
    if !path.starts_with('/') || path.contains('\n') {
        return Err(NodeError::invalid(
            field,
            format!("{path:?} is not an absolute path"),
        ));
    }
    Ok(())
}

pub fn chap_from(
    secrets: &std::collections::HashMap<String, String>,
) -> Result<Option<Chap>, NodeError> {
    let map: BTreeMap<String, String> = secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Chap::from_secrets(&map).map_err(|why| NodeError::invalid("secrets", why))
}

/// The disk's NAA equals the volume's, or the reason it does not.
pub fn verify_naa(
    found: Option<&Naa>,
    want: &Naa,
    disk: &str,
    iqn: &str,
    lun: u32,
) -> Result<(), NodeError> {
    match found {
        Some(n) if n == want => Ok(()),
        Some(n) => Err(NodeError::FailedPrecondition(format!(
            "disk {disk} (LUN {lun} of {iqn}) is naa.{n}, not the volume's naa.{want}: refusing to touch it"
        ))),
        None => Err(NodeError::FailedPrecondition(format!(
            "disk {disk} (LUN {lun} of {iqn}) reports no NAA identifier (VPD page 0x83): cannot tell it is the volume's naa.{want}"
        ))),
    }
}

pub async fn stage(host: &Host, req: StageRequest) -> Result<(), NodeError> {
    let _busy = host.claim(&req.volume_id)?;
    let a = &req.attachment;
    let block = matches!(req.access, Access::Block);
    if let Some(prev) = host.store.load(&req.volume_id)? {
        if prev.staging_path != req.staging_path {
            return Err(NodeError::AlreadyExists(format!(
                "volume {} is staged at {}, not {}",
                req.volume_id, prev.staging_path, req.staging_path
            )));
        }
        if prev.block != block {
            return Err(NodeError::AlreadyExists(format!(
                "volume {} is staged as {}",
                req.volume_id,
                if prev.block {
                    "a raw block device"
                } else {
                    "a file system"
                }
            )));
        }
    }
    // Something else mounted at the staging path is never replaced.
    let mounted = if block {
        None
    } else {
        host.mount_at(&req.staging_path)?
    };

    let had_session = !host.sysfs.sessions_of(&a.iqn).is_empty();
    attach::login(host, &a.iqn, &a.portals, req.chap.as_ref()).await?;
    let disk = attach::wait_disk(host, &a.iqn, a.lun).await?;
    if let Err(e) = verify_naa(
        host.sysfs.naa_of(&disk).as_ref(),
        &a.naa,
        &disk,
        &a.iqn,
        a.lun,
    ) {
        tracing::error!(volume = %req.volume_id, error = %e, "wrong disk");
        if !had_session {
            // The session was made for this volume: it goes, with its record.
            if let Err(le) = attach::logout(host, &a.iqn, &a.portals).await {
                tracing::warn!(error = %le, "logout after the NAA mismatch");
            }
        }
        return Err(e);
    }
    let dev = format!("/dev/{disk}");
    let disk_dev = host.sysfs.dev_of(&disk);
    if let Some(m) = &mounted
        && Some(&m.dev) != disk_dev.as_ref()
    {
        return Err(NodeError::AlreadyExists(format!(
            "{} has {} ({}) mounted, not volume {}'s disk {dev}",
            req.staging_path, m.source, m.dev, req.volume_id
        )));
    }
    host.store.save(&Staged {
        volume_id: req.volume_id.clone(),
        iqn: a.iqn.clone(),
        portals: a.portals.clone(),
        lun: a.lun,
        naa: a.naa.to_string(),
        disk: Some(disk.clone()),
        block,
        staging_path: req.staging_path.clone(),
        published: host
            .store
            .load(&req.volume_id)?
            .map(|p| p.published)
            .unwrap_or_default(),
    })?;
    let Access::Mount { fs, flags } = &req.access else {
        tracing::info!(volume = %req.volume_id, %dev, "staged (raw block)");
        return Ok(());
    };
    if mounted.is_some() {
        return Ok(());
    }
    let found = match host
        .run("blkid", fs::blkid_args(&dev), host.limits.mount)
        .await
    {
        Ok(out) => fs::parse_blkid(&out),
        Err(e) if e.code() == Some(fs::BLKID_NOTHING) => Content::Empty,
        Err(e) => return Err(e.into()),
    };
    let fs_type = match found {
        Content::Empty => {
            let t = fs.unwrap_or(FsType::Ext4);
            let (prog, args) = fs::mkfs(t, &dev);
            tracing::info!(volume = %req.volume_id, %dev, fs = t.name(), "no file system: formatting");
            host.run(prog, args, host.limits.format).await?;
            t.name().to_string()
        }
        Content::Fs(t) => {
            if let Some(want) = fs
                && want.name() != t
            {
                return Err(NodeError::FailedPrecondition(format!(
                    "volume {} holds {t}, the capability asks for {}",
                    req.volume_id,
                    want.name()
                )));
            }
            t
        }
        Content::Other(what) => {
            return Err(NodeError::FailedPrecondition(format!(
                "volume {}'s disk {dev} holds {what} and no file system: not formatting it",
                req.volume_id
            )));
        }
    };
    std::fs::create_dir_all(&req.staging_path)
        .map_err(|e| super::error::io(&req.staging_path, e))?;
    host.mount(fs::mount_args(&fs_type, flags, &dev, &req.staging_path))
        .await?;
    tracing::info!(volume = %req.volume_id, %dev, fs = %fs_type, path = %req.staging_path, "staged");
    Ok(())
}

pub async fn unstage(host: &Host, volume_id: &str, staging_path: &str) -> Result<(), NodeError> {
    let _busy = host.claim(volume_id)?;
    let Some(st) = host.store.load(volume_id)? else {
        // Not staged here (or already unstaged): only a mount left at the path goes.
        host.unmount_all(staging_path, Unmount::LazyFallback)
            .await?;
        return Ok(());
    };
    let sessions = host.sysfs.sessions_of(&st.iqn);
    let alive = sessions.iter().any(|s| s.logged_in());
    // The recorded disk, if it is still the volume's.
    let disk = st.disk.clone().filter(|d| {
        host.sysfs.disk_exists(d)
            && host.sysfs.naa_of(d).map(|n| n.to_string()) == Some(st.naa.clone())
    });
    if !alive && !sessions.is_empty() {
        // The target is unreachable: its session waits in recovery (replacement_timeout, 120 s
        // by default) and so would every write the unmount makes. Logging out first ends the
        // session and fails that I/O at once; the data could not reach the target anyway.
        tracing::warn!(volume = volume_id, iqn = %st.iqn, "session down: logging out before unmounting");
        if let Err(e) = attach::logout(host, &st.iqn, &st.portals).await {
            tracing::warn!(volume = volume_id, error = %e, "logout of the dead session");
        }
    }
    if !st.block {
        let how = if alive {
            Unmount::LazyFallback
        } else {
            Unmount::Lazy
        };
        host.unmount_all(&st.staging_path, how).await?;
        if staging_path != st.staging_path {
            host.unmount_all(staging_path, how).await?;
        }
    }
    if let Some(d) = &disk {
        let dev = format!("/dev/{d}");
        if alive
            && let Err(e) = host
                .run(
                    "blockdev",
                    vec!["--flushbufs".into(), dev.clone()],
                    host.limits.mount,
                )
                .await
        {
            tracing::warn!(%dev, error = %e, "flush failed");
        }
        let limit = if alive {
            host.limits.mount
        } else {
            std::time::Duration::from_secs(5)
        };
        match host
            .write_sysfs(host.sysfs.delete_file(d), "1", limit)
            .await
        {
            Ok(_) => {}
            Err(e) => tracing::warn!(%dev, error = %e, "deleting the SCSI disk failed"),
        }
    }
    attach::logout(host, &st.iqn, &st.portals).await?;
    host.store.remove(volume_id)?;
    tracing::info!(volume = volume_id, iqn = %st.iqn, "unstaged, logged out");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_with_another_naa_is_refused() {
        let want = Naa::parse("6001405aabbccdd0011223344556677f").unwrap();
        let other = Naa::parse("6001405aabbccdd0011223344556670f").unwrap();
        assert!(verify_naa(Some(&want), &want, "sdb", "iqn.x", 0).is_ok());
        let e = verify_naa(Some(&other), &want, "sdb", "iqn.x", 0).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.to_string()
                .contains("not the volume's naa.6001405aabbccdd0011223344556677f"),
            "{e}"
        );
        let e = verify_naa(None, &want, "sdb", "iqn.x", 0).unwrap_err();
        assert!(e.to_string().contains("no NAA"), "{e}");
    }

    #[test]
    fn ids_and_paths() {
        assert!(check_id("pvc-1").is_ok());
        assert_eq!(
            check_id("").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(check_id("a/b").is_err());
        assert!(check_path("staging_target_path", "/s").is_ok());
        assert!(check_path("staging_target_path", "").is_err());
        assert!(check_path("staging_target_path", "rel").is_err());
    }
}
