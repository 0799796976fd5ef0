//! What the agent keeps of a snapshot: its copy `<uid>.img` and its record `<uid>.json` under
//! `.spindle/snapshots` in the data dir. The record is written (atomically, fsynced) after the
//! copy is complete: a copy without a record is an unfinished one and is removed.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::ObjectId;
use super::state::RESERVED_DIR;
use crate::store::copy::CopyMethod;
use crate::store::durable;

/// Version of the record's encoding.
const VERSION: u32 = 1;

/// A snapshot as the agent keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The snapshot object (namespace/name/uid).
    pub id: ObjectId,
    /// The Device it was taken of (same namespace).
    pub source: ObjectId,
    pub size_bytes: u64,
    pub block_size: u32,
    pub method: CopyMethod,
    /// How long the Device's writes were held.
    pub hold_micros: u64,
    pub created_unix_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    version: u32,
    snapshot: T,
}

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotRecordError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot record {path} is malformed: {message}")]
    Malformed { path: String, message: String },
}

/// Encodes a record.
pub fn encode(r: &SnapshotRecord) -> Vec<u8> {
    serde_json::to_vec_pretty(&Envelope {
        version: VERSION,
        snapshot: r,
    })
    .unwrap_or_default()
}

/// Decodes a record; anything else than a version-1 record is refused with what is wrong.
pub fn decode(bytes: &[u8]) -> Result<SnapshotRecord, String> {
    let e: Envelope<SnapshotRecord> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if e.version != VERSION {
        return Err(format!(
            "version {} (this agent reads {VERSION})",
            e.version
        ));
    }
    Ok(e.snapshot)
}

/// A uid as a file name: the characters of Kubernetes uids (and manifest ids) only.
pub fn safe_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 128
        && !uid.starts_with('.')
        && uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The snapshots folder of a data dir.
#[derive(Clone, Debug)]
pub struct SnapshotDir(PathBuf);

impl SnapshotDir {
    pub fn new(data_dir: &Path) -> Self {
        SnapshotDir(data_dir.join(RESERVED_DIR).join("snapshots"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The copy of snapshot `uid` (a checked uid).
    pub fn image(&self, uid: &str) -> PathBuf {
        self.0.join(format!("{uid}.img"))
    }

    /// Where a copy is made before it is complete.
    pub fn partial(&self, uid: &str) -> PathBuf {
        self.0.join(format!(".{uid}.img.partial"))
    }

    fn record(&self, uid: &str) -> PathBuf {
        self.0.join(format!("{uid}.json"))
    }

    pub fn create(&self) -> Result<(), SnapshotRecordError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.0)
            .map_err(io("creating", &self.0))
    }

    /// The record of `uid`, if there is one.
    pub fn load(&self, uid: &str) -> Result<Option<SnapshotRecord>, SnapshotRecordError> {
        let p = self.record(uid);
        match fs::read(&p) {
            Ok(b) => decode(&b)
                .map(Some)
                .map_err(|message| SnapshotRecordError::Malformed {
                    path: p.display().to_string(),
                    message,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &p)(e)),
        }
    }

    /// Writes a record atomically (temporary file, fsync, rename, fsync of the folder).
    pub fn save(&self, r: &SnapshotRecord) -> Result<(), SnapshotRecordError> {
        let p = self.record(&r.id.uid);
        durable::replace(&p, &encode(r)).map_err(io("writing", &p))
    }

    /// Removes a snapshot's record, then its copy. Nothing there: nothing to do.
    pub fn remove(&self, uid: &str) -> Result<bool, SnapshotRecordError> {
        let mut known = false;
        for p in [self.record(uid), self.image(uid), self.partial(uid)] {
            match fs::remove_file(&p) {
                Ok(()) => known = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("removing", &p)(e)),
            }
        }
        if known {
            self.sync()?;
        }
        Ok(known)
    }

    /// Every record; unreadable ones are returned as problems, not errors.
    pub fn list(&self) -> (Vec<SnapshotRecord>, Vec<String>) {
        let Ok(rd) = fs::read_dir(&self.0) else {
            return (Vec::new(), Vec::new());
        };
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(uid) = name.strip_suffix(".json").filter(|u| safe_uid(u)) else {
                continue;
            };
            match self.load(uid) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        out.sort_by_key(|r| r.id.key());
        (out, problems)
    }

    pub fn sync(&self) -> Result<(), SnapshotRecordError> {
        durable::sync_dir(&self.0).map_err(io("syncing", &self.0))
    }
}

fn io(what: &'static str, p: &Path) -> impl FnOnce(std::io::Error) -> SnapshotRecordError {
    let path = p.display().to_string();
    move |source| SnapshotRecordError::Io { what, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotRecord {
        let id = |name: &str, uid: &str| ObjectId {
            namespace: "ns".into(),
            name: name.into(),
            uid: uid.into(),
            generation: 1,
        };
        SnapshotRecord {
            id: id("s1", "u-s1"),
            source: id("d1", "u-d1"),
            size_bytes: 1 << 20,
            block_size: 512,
            method: CopyMethod::Reflink,
            hold_micros: 1234,
            created_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_record_round_trips_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let d = SnapshotDir::new(dir.path());
        d.create().unwrap();
        let r = sample();
        d.save(&r).unwrap();
        assert_eq!(d.load("u-s1").unwrap(), Some(r.clone()));
        assert_eq!(d.list(), (vec![r], vec![]));
        assert!(d.remove("u-s1").unwrap());
        assert!(!d.remove("u-s1").unwrap(), "a second delete finds nothing");
        assert_eq!(d.load("u-s1").unwrap(), None);
    }

    #[test]
    fn malformed_records_are_refused_with_the_reason() {
        assert_eq!(decode(&encode(&sample())).unwrap(), sample());
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"version\":1}",
            b"{\"version\":2,\"snapshot\":{}}",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut v: serde_json::Value = serde_json::from_slice(&encode(&sample())).unwrap();
        v["version"] = 9.into();
        let e = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.contains("version 9"), "{e}");
        v["version"] = 1.into();
        v["snapshot"]["method"] = "magic".into();
        assert!(decode(&serde_json::to_vec(&v).unwrap()).is_err());
        // A damaged file in the folder is a problem, the others are listed.
        let dir = tempfile::tempdir().unwrap();
        let d = SnapshotDir::new(dir.path());
        d.create().unwrap();
        d.save(&sample()).unwrap();
        fs::write(d.path().join("bad.json"), b"{").unwrap();
        let (ok, problems) = d.list();
        assert_eq!((ok.len(), problems.len()), (1, 1), "{problems:?}");
    }

    #[test]
    fn only_plain_uids_become_file_names() {
        assert!(safe_uid("6f1c2a4e-0b1d-4c1e-9a57-1f0e3b5f9d2a"));
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b"] {
            assert!(!safe_uid(bad), "{bad:?}");
        }
    }
}
