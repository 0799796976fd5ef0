//! NodeGetVolumeStats: usage (statvfs of the mount; the disk's size in raw block mode).
//! NodeGetVolumeHealth: INACCESSIBLE when the volume's iSCSI session is down, its disk is gone
//! or not running, or the path is no longer mounted. (CSI v1.14 replaced the stats call's
//! VolumeCondition with this call.)

use std::ffi::CString;

use crate::proto::volume_health::VolumeHealthEntry;
use crate::proto::volume_usage::Unit;
use crate::proto::{
    NodeGetVolumeHealthResponse, NodeGetVolumeStatsResponse, VolumeHealth, VolumeHealthErrorType,
    VolumeUsage,
};

use super::error::NodeError;
use super::host::Host;
use super::state::Staged;
use super::sysfs::Session;

/// Why a volume is not healthy on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    NoSession { iqn: String },
    SessionDown { iqn: String, states: String },
    DiskGone { iqn: String },
    DiskNotRunning { disk: String, state: String },
    NotMounted { path: String },
}

impl Problem {
    /// The CamelCase reason CSI asks for.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::NoSession { .. } => "NoSession",
            Problem::SessionDown { .. } => "SessionDown",
            Problem::DiskGone { .. } => "DiskGone",
            Problem::DiskNotRunning { .. } => "DiskNotRunning",
            Problem::NotMounted { .. } => "NotMounted",
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::NoSession { iqn } => write!(f, "no iSCSI session to {iqn}"),
            Problem::SessionDown { iqn, states } => {
                write!(f, "the iSCSI session to {iqn} is down ({states})")
            }
            Problem::DiskGone { iqn } => {
                write!(f, "the volume's disk is gone from the session to {iqn}")
            }
            Problem::DiskNotRunning { disk, state } => write!(f, "disk {disk} is {state}"),
            Problem::NotMounted { path } => write!(f, "{path} is not mounted"),
        }
    }
}

/// What is wrong with the volume from what the node sees, if anything: its sessions, its disk
/// (name, SCSI state) and whether `path` (if one is checked) is mounted.
pub fn problem(
    sessions: &[Session],
    iqn: &str,
    disk: Option<(&str, Option<&str>)>,
    path: Option<(&str, bool)>,
) -> Option<Problem> {
    let iqn = iqn.to_string();
    if sessions.is_empty() {
        return Some(Problem::NoSession { iqn });
    }
    if !sessions.iter().any(Session::logged_in) {
        let states: Vec<&str> = sessions.iter().map(|s| s.state.as_str()).collect();
        return Some(Problem::SessionDown {
            iqn,
            states: states.join(", "),
        });
    }
    match disk {
        None => return Some(Problem::DiskGone { iqn }),
        Some((d, state)) if state != Some("running") => {
            return Some(Problem::DiskNotRunning {
                disk: d.to_string(),
                state: state.unwrap_or("unknown").to_string(),
            });
        }
        _ => {}
    }
    match path {
        Some((p, false)) => Some(Problem::NotMounted {
            path: p.to_string(),
        }),
        _ => None,
    }
}

/// The volume's problem as the node sees it, checking that `path` is mounted (if given).
fn volume_problem(
    host: &Host,
    st: &Staged,
    path: Option<&str>,
) -> Result<Option<Problem>, NodeError> {
    let sessions = host.sysfs.sessions_of(&st.iqn);
    let disk = st.disk.as_deref().filter(|d| host.sysfs.disk_exists(d));
    let disk_state = disk.map(|d| host.sysfs.disk_state(d));
    let mounted = match path {
        Some(p) => Some((p, host.mount_at(p)?.is_some())),
        None => None,
    };
    Ok(problem(
        &sessions,
        &st.iqn,
        disk.map(|d| (d, disk_state.as_ref().and_then(|s| s.as_deref()))),
        mounted,
    ))
}

struct Usage {
    total: u64,
    avail: u64,
    used: u64,
    inodes: u64,
    inodes_free: u64,
}

fn statvfs(path: &str) -> std::io::Result<Usage> {
    let c = CString::new(path).map_err(|_| std::io::Error::other("path has a NUL byte"))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let f = s.f_frsize;
    Ok(Usage {
        total: s.f_blocks * f,
        avail: s.f_bavail * f,
        used: s.f_blocks.saturating_sub(s.f_bfree) * f,
        inodes: s.f_files,
        inodes_free: s.f_ffree,
    })
}

fn load(host: &Host, volume_id: &str) -> Result<Staged, NodeError> {
    host.store.load(volume_id)?.ok_or_else(|| {
        NodeError::NotFound(format!("volume {volume_id} is not staged on this node"))
    })
}

pub async fn stats(
    host: &Host,
    volume_id: &str,
    path: &str,
) -> Result<NodeGetVolumeStatsResponse, NodeError> {
    let st = load(host, volume_id)?;
    if path != st.staging_path && !st.published.iter().any(|p| p == path) {
        return Err(NodeError::NotFound(format!(
            "volume {volume_id} is neither staged nor published at {path}"
        )));
    }
    if std::fs::symlink_metadata(path).is_err() {
        return Err(NodeError::NotFound(format!("{path} does not exist")));
    }
    let disk = st.disk.as_deref().filter(|d| host.sysfs.disk_exists(d));
    let mut usage = Vec::new();
    if st.block {
        if let Some(size) = disk.and_then(|d| host.sysfs.size_of(d)) {
            usage.push(VolumeUsage {
                unit: Unit::Bytes as i32,
                total: size as i64,
                available: 0,
                used: 0,
            });
        }
    } else if host.mount_at(path)?.is_some() {
        let u = statvfs(path).map_err(|e| super::error::io(path, e))?;
        usage.push(VolumeUsage {
            unit: Unit::Bytes as i32,
            total: u.total as i64,
            available: u.avail as i64,
            used: u.used as i64,
        });
        usage.push(VolumeUsage {
            unit: Unit::Inodes as i32,
            total: u.inodes as i64,
            available: u.inodes_free as i64,
            used: u.inodes.saturating_sub(u.inodes_free) as i64,
        });
    }
    Ok(NodeGetVolumeStatsResponse { usage })
}

/// NodeGetVolumeHealth: healthy (no entries), or INACCESSIBLE with the reason.
pub async fn health(
    host: &Host,
    volume_id: &str,
    publish_path: &str,
    staging_path: &str,
) -> Result<NodeGetVolumeHealthResponse, NodeError> {
    let st = load(host, volume_id)?;
    let path = [publish_path, staging_path]
        .into_iter()
        .find(|p| !p.is_empty())
        .or((!st.block).then_some(st.staging_path.as_str()));
    let entries = volume_problem(host, &st, path)?
        .map(|p| VolumeHealthEntry {
            status: VolumeHealthErrorType::Inaccessible as i32,
            reason: p.reason().to_string(),
            message: p.to_string(),
        })
        .into_iter()
        .collect();
    Ok(NodeGetVolumeHealthResponse {
        volume_health: Some(VolumeHealth {
            volume_id: volume_id.to_string(),
            health_statuses: entries,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(state: &str) -> Session {
        Session {
            id: 1,
            target: "iqn.x".into(),
            state: state.into(),
        }
    }

    #[test]
    fn problems() {
        let up = [s("LOGGED_IN")];
        let running = Some(("sdb", Some("running")));
        assert_eq!(problem(&up, "iqn.x", running, Some(("/m", true))), None);
        assert_eq!(problem(&up, "iqn.x", running, None), None);
        let p = problem(&[], "iqn.x", None, None).unwrap();
        assert_eq!(
            (p.reason(), p.to_string().as_str()),
            ("NoSession", "no iSCSI session to iqn.x")
        );
        let p = problem(&[s("FAILED")], "iqn.x", running, None).unwrap();
        assert!(p.to_string().contains("down (FAILED)"), "{p}");
        assert_eq!(
            problem(&up, "iqn.x", None, None).unwrap().reason(),
            "DiskGone"
        );
        let p = problem(&up, "iqn.x", Some(("sdb", Some("offline"))), None).unwrap();
        assert_eq!(p.to_string(), "disk sdb is offline");
        let p = problem(&up, "iqn.x", running, Some(("/m", false))).unwrap();
        assert_eq!(
            (p.reason(), p.to_string().as_str()),
            ("NotMounted", "/m is not mounted")
        );
    }

    #[test]
    fn statvfs_of_a_folder() {
        let u = statvfs("/").unwrap();
        assert!(u.total > 0 && u.avail <= u.total && u.used <= u.total);
        assert!(statvfs("/no/such/path").is_err());
    }
}
