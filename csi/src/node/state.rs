//! What the node staged, one JSON file per volume in the state folder (`--state-dir`):
//! NodeUnstageVolume is given only the volume ID and the staging path, and must still find the
//! target to log out of (and the disk) after a restart of the plugin, or with the disk gone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{NodeError, io};

/// A staged volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub volume_id: String,
    pub iqn: String,
    pub portals: Vec<String>,
    pub lun: u32,
    /// 32 hex digits.
    pub naa: String,
    /// The disk (`sdX`) whose NAA was checked; None until it was found.
    pub disk: Option<String>,
    pub block: bool,
    pub staging_path: String,
    /// Target paths it is published at.
    #[serde(default)]
    pub published: Vec<String>,
}

/// The state folder.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Volume IDs become file names: the controller's are DNS labels; anything else that a
/// file name cannot carry is refused (NodeStage) or unknown (the other calls).
pub fn valid_volume_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, id: &str) -> Option<PathBuf> {
        valid_volume_id(id).then(|| self.dir.join(format!("{id}.json")))
    }

    /// The record of volume `id`, None if it is not staged here.
    pub fn load(&self, id: &str) -> Result<Option<Staged>, NodeError> {
        let Some(file) = self.file(id) else {
            return Ok(None);
        };
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| NodeError::Internal(format!("state file {}: {e}", file.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(file.display(), e)),
        }
    }

    /// Writes the record (atomically: a new file renamed over the old one).
    pub fn save(&self, s: &Staged) -> Result<(), NodeError> {
        let file = self.file(&s.volume_id).ok_or_else(|| {
            NodeError::invalid(
                "volume_id",
                "may only have letters, digits, '.', '-' and '_'",
            )
        })?;
        std::fs::create_dir_all(&self.dir).map_err(|e| io(self.dir.display(), e))?;
        let tmp = file.with_extension("json.new");
        let bytes = serde_json::to_vec_pretty(s)
            .map_err(|e| NodeError::Internal(format!("encoding state: {e}")))?;
        std::fs::write(&tmp, bytes).map_err(|e| io(tmp.display(), e))?;
        std::fs::rename(&tmp, &file).map_err(|e| io(file.display(), e))
    }

    pub fn remove(&self, id: &str) -> Result<(), NodeError> {
        let Some(file) = self.file(id) else {
            return Ok(());
        };
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(file.display(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("volumes"));
        let s = Staged {
            volume_id: "pvc-1".into(),
            iqn: "iqn.2026-11.dev.spindle:ns.pvc-1".into(),
            portals: vec!["10.0.0.5:3260".into()],
            lun: 0,
            naa: "60".repeat(16),
            disk: Some("sdb".into()),
            block: false,
            staging_path: "/stage".into(),
            published: vec![],
        };
        assert_eq!(store.load("pvc-1").unwrap(), None);
        store.save(&s).unwrap();
        assert_eq!(store.load("pvc-1").unwrap(), Some(s.clone()));
        store.remove("pvc-1").unwrap();
        store.remove("pvc-1").unwrap();
        assert_eq!(store.load("pvc-1").unwrap(), None);
        assert_eq!(store.load("../etc/passwd").unwrap(), None);
        let mut bad = s;
        bad.volume_id = "a/b".into();
        assert!(store.save(&bad).is_err());
    }

    #[test]
    fn volume_ids_that_are_file_names() {
        assert!(valid_volume_id("pvc-0b1c2d3e"));
        assert!(valid_volume_id("sanity-node-full-8c3f_x.1"));
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(254)] {
            assert!(!valid_volume_id(bad), "{bad}");
        }
    }
}
