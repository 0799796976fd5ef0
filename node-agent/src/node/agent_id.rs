//! The identity of one agent installation: 128 random bits made once and kept in its data dir
//! (`.spindle-agent-id`). It scopes the SCSI names of Devices from manifests, which have no
//! Kubernetes uid ([`crate::engine::identity::device_identity`]): two agents may both serve a
//! Device called `default/db`, and multipath software must tell them apart.

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
}
