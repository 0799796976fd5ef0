//! What the agent was told, on disk under its data dir, so a restarted agent serves its
//! targets again before anyone calls it, and keeps fenced Devices fenced.
//!
//! One file per object (`.spindle/state/devices/<uid>.json`, `.spindle/state/targets/<uid>.json`),
//! each replaced atomically: written to a temporary file, fsynced, renamed over the old one, and
//! the directory fsynced. Files are readable by the agent's user only (Targets hold CHAP
//! secrets).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::records::{DeviceRecord, TargetRecord};
use crate::store::durable;

/// First path component under the data dir that belongs to the agent, not to Devices.
pub const RESERVED_DIR: &str = ".spindle";

/// Format of the state files.
const VERSION: u32 = 1;

/// A state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct StateError {
    what: &'static str,
    path: String,
    #[source]
    source: std::io::Error,
}

fn err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.display().to_string();
    move |source| StateError { what, path, source }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    version: u32,
    object: T,
}

/// What was found on disk.
#[derive(Debug, Default)]
pub struct Loaded {
    pub devices: Vec<DeviceRecord>,
    pub targets: Vec<TargetRecord>,
    /// Files that could not be read, one line each (they are left where they are).
    pub problems: Vec<String>,
}

/// The agent's state directory.
#[derive(Debug)]
pub struct StateStore {
    devices: PathBuf,
    targets: PathBuf,
}

impl StateStore {
    /// Opens (creating) the state directory under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StateError> {
        let root = data_dir.join(RESERVED_DIR).join("state");
        let s = StateStore {
            devices: root.join("devices"),
            targets: root.join("targets"),
        };
        for d in [&s.devices, &s.targets] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(err("creating", d))?;
        }
        Ok(s)
    }

    /// Writes (replaces) a Device's record.
    pub fn save_device(&self, r: &DeviceRecord) -> Result<(), StateError> {
        write_atomic(&self.devices, &r.id.uid, r)
    }

    /// Writes (replaces) a Target's record.
    pub fn save_target(&self, r: &TargetRecord) -> Result<(), StateError> {
        write_atomic(&self.targets, &r.id.uid, r)
    }

    /// Forgets a Target.
    pub fn remove_target(&self, uid: &str) -> Result<(), StateError> {
        remove(&self.targets, uid)
    }

    /// Reads every record; unreadable files become problems (never a panic, never a refusal
    /// to start: the rest is served).
    pub fn load(&self) -> Result<Loaded, StateError> {
        let mut out = Loaded::default();
        out.devices = read_all(&self.devices, &mut out.problems)?;
        out.targets = read_all(&self.targets, &mut out.problems)?;
        Ok(out)
    }
}

/// File name of an object: its uid where that is a safe name (Kubernetes uids are), else the
/// uid in hex.
pub(super) fn file_name(uid: &str) -> String {
    let safe = !uid.is_empty()
        && uid.len() <= 128
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if safe {
        format!("{uid}.json")
    } else {
        format!("x-{}.json", hex::encode(uid.as_bytes()))
    }
}

fn write_atomic<T: Serialize>(dir: &Path, uid: &str, object: &T) -> Result<(), StateError> {
    let path = dir.join(file_name(uid));
    let body = serde_json::to_vec_pretty(&Envelope {
        version: VERSION,
        object,
    })
    .map_err(|e| err("encoding", &path)(std::io::Error::other(e)))?;
    durable::replace(&path, &body).map_err(err("writing", &path))
}

fn remove(dir: &Path, uid: &str) -> Result<(), StateError> {
    let path = dir.join(file_name(uid));
    durable::remove(&path).map_err(err("removing", &path))
}

fn read_all<T: DeserializeOwned>(
    dir: &Path,
    problems: &mut Vec<String>,
) -> Result<Vec<T>, StateError> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(err("reading", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let parsed = fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                serde_json::from_slice::<Envelope<serde_json::Value>>(&b).map_err(|e| e.to_string())
            })
            .and_then(|env| {
                if env.version != VERSION {
                    return Err(format!("format version {} is not {VERSION}", env.version));
                }
                serde_json::from_value::<T>(env.object).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(o) => out.push(o),
            Err(e) => problems.push(format!("{}: {e}", p.display())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DrainState;
    use crate::iscsi::chap::{ChapAlgorithm, ChapSecrets, Credentials};
    use crate::iscsi::login::AclPolicy;
    use crate::node::records::{LunRecord, ObjectId, sample_device};
    use std::os::unix::fs::PermissionsExt;

    fn id(uid: &str) -> ObjectId {
        ObjectId {
            namespace: "ns".into(),
            name: "n".into(),
            uid: uid.into(),
            generation: 3,
        }
    }

    fn device(uid: &str) -> DeviceRecord {
        let mut d = sample_device("n", uid);
        d.id.generation = 3;
        d.drain.state = DrainState::Draining;
        d
    }

    #[test]
    fn records_round_trip_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let mut d = device("6b1f-uid");
        s.save_device(&d).unwrap();
        d.drain.state = DrainState::Flushed;
        s.save_device(&d).unwrap();
        let t = TargetRecord {
            id: id("t-uid"),
            iqn: "iqn.2026-11.dev.spindle:ns.t".into(),
            port: 3260,
            luns: vec![LunRecord {
                lun: 0,
                device_name: "n".into(),
                device_uid: "6b1f-uid".into(),
            }],
            acl: AclPolicy::AllowAll,
            chap: Some(ChapSecrets {
                initiator: Credentials {
                    user: "u".into(),
                    secret: "0123456789ab".into(),
                },
                target: None,
                algorithms: vec![ChapAlgorithm::Sha256],
            }),
            limits: Default::default(),
            qos: None,
        };
        s.save_target(&t).unwrap();
        let loaded = StateStore::open(dir.path()).unwrap().load().unwrap();
        assert_eq!(loaded.devices, vec![d]);
        assert_eq!(loaded.targets, vec![t]);
        assert!(loaded.problems.is_empty());
        let file = dir.path().join(".spindle/state/targets/t-uid.json");
        let mode = fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "CHAP secrets are readable by the agent only"
        );
        s.remove_target("t-uid").unwrap();
        s.remove_target("t-uid").unwrap();
        assert!(s.load().unwrap().targets.is_empty());
    }

    #[test]
    fn a_damaged_file_is_a_problem_line_and_the_rest_loads() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        s.save_device(&device("good")).unwrap();
        fs::write(
            dir.path().join(".spindle/state/devices/bad.json"),
            b"{\"vers",
        )
        .unwrap();
        fs::write(
            dir.path().join(".spindle/state/devices/future.json"),
            br#"{"version": 99, "object": {}}"#,
        )
        .unwrap();
        let loaded = s.load().unwrap();
        assert_eq!(loaded.devices.len(), 1);
        assert_eq!(loaded.problems.len(), 2, "{:?}", loaded.problems);
        assert!(loaded.problems.iter().any(|p| p.contains("version 99")));
    }

    #[test]
    fn unusual_uids_make_safe_file_names() {
        assert_eq!(file_name("0f1e-22"), "0f1e-22.json");
        assert_eq!(
            file_name("manifest:ns/../x"),
            format!("x-{}.json", hex::encode("manifest:ns/../x"))
        );
        assert!(!file_name("a/b").contains('/'));
    }
}
