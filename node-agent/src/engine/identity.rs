//! How a Device is named to SCSI initiators: its unit serial number (VPD 80h) and its logical
//! unit designator (VPD 83h). Multipath software keys on these, so they must be
//!
//! - stable for the life of the Device (across agent restarts), and
//! - unique across agents (two agents may both serve a Device called `default/db`).
//!
//! The designator is NAA 3 ("locally assigned", SPC-4 7.8.6.6.4), which needs no IEEE company
//! ID: 60 bits of a hash of the Device's Kubernetes uid (unique everywhere and kept for the
//! Device's life), or, for a Device from a manifest (which has no uid), of the agent's
//! identity and the Device's name. The agent's identity is 128 random bits made once and kept
//! in its data dir (`.spindle-agent-id`).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the file in the data dir that holds the agent's identity.
pub const AGENT_ID_FILE: &str = ".spindle-agent-id";

/// The identity of one agent installation (its data dir): 128 random bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentId(pub [u8; 16]);

/// Why the agent's identity could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} does not hold 32 hex digits; remove it to make a new identity (initiators will see new device identifiers)"
    )]
    Malformed { path: PathBuf },
}

impl AgentId {
    /// Reads the identity kept in `data_dir`, making (and keeping) a new one the first time.
    pub fn load_or_create(data_dir: &Path) -> Result<AgentId, IdentityError> {
        let path = data_dir.join(AGENT_ID_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => return Self::parse(text.trim()).ok_or(IdentityError::Malformed { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let id = AgentId(rand::random());
        // Written to a temporary file, synced, then linked into place: a crash leaves either
        // no identity or a whole one, and two agents racing on one data dir agree on one.
        let tmp = data_dir.join(format!("{AGENT_ID_FILE}.{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(format!("{}\n", hex::encode(id.0)).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(id),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::load_or_create(data_dir)
            }
            Err(e) => Err(io(e)),
        }
    }

    fn parse(text: &str) -> Option<AgentId> {
        let bytes = hex::decode(text).ok()?;
        Some(AgentId(bytes.try_into().ok()?))
    }
}

/// The SCSI identity of the Device named `name` (unique within `scope`: an empty scope for a
/// Kubernetes uid, the agent's identity for a manifest's `namespace/name`): its unit serial
/// number (16 hex digits) and its NAA 3 designator (8 bytes), both from the same 60 bits.
pub fn device_identity(scope: &[u8], name: &str) -> (String, [u8; 8]) {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(scope);
    h.update([0]);
    h.update(name.as_bytes());
    let h: [u8; 16] = h.finalize().into();
    let mut naa = [0u8; 8];
    naa.copy_from_slice(&h[..8]);
    // NAA 3h: locally assigned; the other 60 bits are the hash.
    naa[0] = 0x30 | (naa[0] & 0x0F);
    (hex::encode(naa), naa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_kept_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let a = AgentId::load_or_create(d.path()).unwrap();
        let b = AgentId::load_or_create(d.path()).unwrap();
        assert_eq!(a, b, "same data dir, same identity");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(a, AgentId::load_or_create(other.path()).unwrap());
        let leftovers: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the identity file is left");
    }

    #[test]
    fn a_damaged_identity_file_is_reported_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(AGENT_ID_FILE), "not hex\n").unwrap();
        let e = AgentId::load_or_create(d.path()).unwrap_err();
        assert!(e.to_string().contains("32 hex digits"), "{e}");
    }

    #[test]
    fn designators_are_naa3_stable_and_differ_across_agents_and_devices() {
        let (a, b) = (AgentId([1; 16]), AgentId([2; 16]));
        let (serial, naa) = device_identity(&a.0, "default/db");
        assert_eq!(naa[0] >> 4, 3, "NAA 3: locally assigned");
        assert_eq!(serial, hex::encode(naa));
        assert_eq!(device_identity(&a.0, "default/db"), (serial, naa), "stable");
        assert_ne!(device_identity(&b.0, "default/db").1, naa, "other agent");
        assert_ne!(device_identity(&a.0, "default/db2").1, naa, "other device");
        assert_ne!(
            device_identity(&[], "5c1f...uid").1,
            naa,
            "a uid needs no scope"
        );
    }
}
