//! The data dir's own identity (`.spindle-data-dir`): a random id and the node it belongs to,
//! made (and fsynced) on the first start with that dir. It tells an agent whether it starts on
//! the dir it served from before, on a new (or replaced, empty) one, or on another node's: a
//! reimaged node or a mount that failed at boot shows up as a new dir, so the agent says so
//! instead of quietly starting over. What protects the data is the operator's "must exist"
//! (`served_naa`); this makes the cause visible (log, metric, status).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::agent_id::AGENT_ID_FILE;
use super::state::RESERVED_DIR;

/// Name of the identity file in the data dir.
pub const DATA_DIR_ID_FILE: &str = ".spindle-data-dir";

/// The identity file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a data dir identity ({why}); move it away to make a new one only if this \
         is the right data dir"
    )]
    Malformed { path: PathBuf, why: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct IdFile {
    id: String,
    node: String,
}

/// What the agent found in its data dir at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataDirReport {
    /// The data dir's identity (32 hex digits).
    pub id: String,
    /// The dir had no identity and held nothing of an agent's: it is new (or was replaced).
    pub created: bool,
    /// The node its identity names, when that is not this node.
    pub foreign_node: Option<String>,
}

/// Reads the identity of `data_dir`, making it on the first start. `node` is this node's name
/// (empty: not known, as in standalone mode; never foreign then).
pub fn load_or_create(data_dir: &Path, node: &str) -> Result<DataDirReport, DataDirError> {
    let path = data_dir.join(DATA_DIR_ID_FILE);
    let io = |what, p: &Path| {
        let p = p.to_path_buf();
        move |source| DataDirError::Io {
            what,
            path: p,
            source,
        }
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let f: IdFile =
                serde_json::from_slice(&bytes).map_err(|e| DataDirError::Malformed {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
            let foreign =
                (!node.is_empty() && !f.node.is_empty() && f.node != node).then(|| f.node.clone());
            return Ok(DataDirReport {
                id: f.id,
                created: false,
                foreign_node: foreign,
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("reading", &path)(e)),
    }
    // No identity: new, unless an agent used this dir before identities existed.
    let used_before = data_dir.join(RESERVED_DIR).exists() || data_dir.join(AGENT_ID_FILE).exists();
    let f = IdFile {
        id: hex::encode(rand::random::<[u8; 16]>()),
        node: node.to_owned(),
    };
    let body = serde_json::to_vec_pretty(&f).map_err(|e| DataDirError::Malformed {
        path: path.clone(),
        why: e.to_string(),
    })?;
    // Written whole to a temporary file, synced, linked into place, the dir synced: a crash
    // leaves no identity or a whole one.
    let tmp = data_dir.join(format!("{DATA_DIR_ID_FILE}.{}", std::process::id()));
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    out.write_all(&body)
        .and_then(|()| out.sync_all())
        .map_err(io("writing", &tmp))?;
    drop(out);
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return load_or_create(data_dir, node);
        }
        Err(e) => return Err(io("creating", &path)(e)),
    }
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", data_dir))?;
    Ok(DataDirReport {
        id: f.id,
        created: !used_before,
        foreign_node: None,
    })
}

/// Logs and publishes (metrics) what the agent found in its data dir.
pub fn announce(data_dir: &Path, node: &str, r: &DataDirReport) {
    let m = crate::metrics::get();
    m.data_dir_new.set(i64::from(r.created));
    m.data_dir_foreign.set(i64::from(r.foreign_node.is_some()));
    let dir = data_dir.display();
    if let Some(other) = &r.foreign_node {
        tracing::error!(
            data_dir = %dir, id = %r.id, this_node = %node, other_node = %other,
            "the data dir belongs to node {other:?}, not to this node: its Devices are not this \
             node's; check the data dir (agent.dataDir) and the node's mounts"
        );
    } else if r.created {
        tracing::warn!(
            data_dir = %dir, id = %r.id,
            "the data dir is new (it had no identity and no agent state): if this node served \
             Devices before, their data is elsewhere (a mount that failed, a replaced disk or a \
             changed agent.dataDir); Devices served before are refused (BackingStoreMissing), \
             never created blank"
        );
    } else {
        tracing::info!(data_dir = %dir, id = %r.id, "data dir identity");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_then_kept_then_foreign() {
        let d = tempfile::tempdir().unwrap();
        let first = load_or_create(d.path(), "node-a").unwrap();
        assert!(first.created, "an empty dir is new");
        assert_eq!(first.id.len(), 32);
        assert_eq!(first.foreign_node, None);
        let again = load_or_create(d.path(), "node-a").unwrap();
        assert_eq!(again.id, first.id, "the identity is kept");
        assert!(!again.created, "a dir with an identity is not new");
        let moved = load_or_create(d.path(), "node-b").unwrap();
        assert_eq!(moved.foreign_node.as_deref(), Some("node-a"));
        assert_eq!(
            moved.id, first.id,
            "another node's identity is reported, not replaced"
        );
        let leftovers: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the identity file");
    }

    #[test]
    fn a_dir_an_agent_used_before_identities_is_not_new() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(".spindle/state/devices")).unwrap();
        let r = load_or_create(d.path(), "n").unwrap();
        assert!(!r.created);
    }

    #[test]
    fn a_damaged_identity_is_reported_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(DATA_DIR_ID_FILE), "junk").unwrap();
        assert!(matches!(
            load_or_create(d.path(), "n"),
            Err(DataDirError::Malformed { .. })
        ));
        assert_eq!(
            std::fs::read(d.path().join(DATA_DIR_ID_FILE)).unwrap(),
            b"junk"
        );
    }
}
