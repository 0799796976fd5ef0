//! What the kernel says about iSCSI sessions and their disks, read from sysfs (no udev: the
//! disk of a volume is found from its session, not from `/dev/disk/by-*` links).
//!
//! - `class/iscsi_session/sessionN/{targetname,state}`: each session, its target and state;
//! - `class/iscsi_session/sessionN/device/targetH:C:T/H:C:T:L/block/sdX`: its disks by LUN;
//! - `block/sdX/{size,device/{wwid,vpd_pg83,state,rescan,delete}}`: a disk's identity, size.

use std::path::{Path, PathBuf};

use super::naa::Naa;

/// One iSCSI session the kernel holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// N of `sessionN` (what `iscsiadm -m session -r N` takes).
    pub id: u32,
    /// The target's IQN.
    pub target: String,
    /// The session state (`LOGGED_IN`, `FAILED`, `FREE`).
    pub state: String,
}

impl Session {
    pub fn logged_in(&self) -> bool {
        self.state == "LOGGED_IN"
    }
}

/// A sysfs tree (`/sys`, or a fake one in tests).
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The names of the entries of `dir` (none if it cannot be read).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Every iSCSI session, in session order.
    pub fn sessions(&self) -> Vec<Session> {
        let dir = self.root.join("class/iscsi_session");
        let mut v: Vec<Session> = entries(&dir)
            .into_iter()
            .filter_map(|name| {
                let id = name.strip_prefix("session")?.parse().ok()?;
                let d = dir.join(&name);
                Some(Session {
                    id,
                    target: read_trimmed(&d.join("targetname"))?,
                    state: read_trimmed(&d.join("state")).unwrap_or_default(),
                })
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// The sessions to target `iqn`.
    pub fn sessions_of(&self, iqn: &str) -> Vec<Session> {
        self.sessions()
            .into_iter()
            .filter(|s| s.target == iqn)
            .collect()
    }

    /// The disk (`sdX`) of LUN `lun` in session `id`, once the kernel has scanned it.
    pub fn disk_of(&self, id: u32, lun: u32) -> Option<String> {
        let dev = self
            .root
            .join(format!("class/iscsi_session/session{id}/device"));
        for target in entries(&dev)
            .into_iter()
            .filter(|t| t.starts_with("target"))
        {
            let tdir = dev.join(&target);
            for unit in entries(&tdir) {
                let l = unit.rsplit(':').next().and_then(|l| l.parse::<u32>().ok());
                if unit.split(':').count() == 4
                    && l == Some(lun)
                    && let Some(disk) = entries(&tdir.join(&unit).join("block")).into_iter().next()
                {
                    return Some(disk);
                }
            }
        }
        None
    }

    /// The session a disk belongs to (its sysfs path runs through `sessionN`).
    pub fn session_of_disk(&self, disk: &str) -> Option<u32> {
        let link = self.root.join("block").join(disk);
        let target = std::fs::read_link(&link).ok()?;
        target.components().find_map(|c| {
            c.as_os_str()
                .to_str()?
                .strip_prefix("session")?
                .parse()
                .ok()
        })
    }

    /// Whether `disk` (`sdX`) exists.
    pub fn disk_exists(&self, disk: &str) -> bool {
        self.root.join("block").join(disk).exists()
    }

    /// The disk's NAA: from VPD page 0x83, else from its `wwid`.
    pub fn naa_of(&self, disk: &str) -> Option<Naa> {
        let dev = self.root.join("block").join(disk).join("device");
        std::fs::read(dev.join("vpd_pg83"))
            .ok()
            .and_then(|p| Naa::from_vpd83(&p))
            .or_else(|| read_trimmed(&dev.join("wwid")).and_then(|w| Naa::from_wwid(&w)))
    }

    /// The disk's size in bytes.
    pub fn size_of(&self, disk: &str) -> Option<u64> {
        let sectors: u64 = read_trimmed(&self.root.join("block").join(disk).join("size"))?
            .parse()
            .ok()?;
        sectors.checked_mul(512)
    }

    /// The disk's `major:minor`, as mountinfo shows it.
    pub fn dev_of(&self, disk: &str) -> Option<String> {
        read_trimmed(&self.root.join("block").join(disk).join("dev"))
    }

    /// The SCSI device state of the disk (`running`, `offline`, `blocked`…).
    pub fn disk_state(&self, disk: &str) -> Option<String> {
        read_trimmed(&self.root.join("block").join(disk).join("device/state"))
    }

    /// The file that removes the disk's SCSI device when 1 is written to it.
    pub fn delete_file(&self, disk: &str) -> PathBuf {
        self.root.join("block").join(disk).join("device/delete")
    }

    /// The file that makes the kernel read the disk's capacity again when 1 is written to it.
    pub fn rescan_file(&self, disk: &str) -> PathBuf {
        self.root.join("block").join(disk).join("device/rescan")
    }
}

/// A disk name as sysfs and /dev use it (`sdb`), from its device path (`/dev/sdb`).
pub fn disk_name(dev: &str) -> Option<&str> {
    let name = dev.strip_prefix("/dev/")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake sysfs tree shaped like the kernel's.

    use std::os::unix::fs::symlink;
    use std::path::Path;

    /// Adds session `sid` (host `host`) to target `iqn` with disk `disk` at LUN `lun`.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        root: &Path,
        sid: u32,
        host: u32,
        iqn: &str,
        state: &str,
        lun: u32,
        disk: &str,
        wwid: &str,
    ) {
        let devices = root.join(format!("devices/platform/host{host}/session{sid}"));
        let unit = devices.join(format!("target{host}:0:0/{host}:0:0:{lun}"));
        std::fs::create_dir_all(unit.join("block").join(disk)).unwrap();
        std::fs::write(unit.join("wwid"), format!("{wwid}\n")).unwrap();
        std::fs::write(unit.join("state"), "running\n").unwrap();
        std::fs::write(unit.join("block").join(disk).join("size"), "131072\n").unwrap();
        std::fs::write(
            unit.join("block").join(disk).join("dev"),
            format!("8:{}\n", sid * 16),
        )
        .unwrap();
        symlink(&unit, unit.join("block").join(disk).join("device")).unwrap();
        let class = root.join(format!("class/iscsi_session/session{sid}"));
        std::fs::create_dir_all(&class).unwrap();
        std::fs::write(class.join("targetname"), format!("{iqn}\n")).unwrap();
        std::fs::write(class.join("state"), format!("{state}\n")).unwrap();
        symlink(&devices, class.join("device")).unwrap();
        std::fs::create_dir_all(root.join("block")).unwrap();
        symlink(unit.join("block").join(disk), root.join("block").join(disk)).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "iqn.2026-11.dev.spindle:spindle-system.vol-a";
    const B: &str = "iqn.2026-11.dev.spindle:spindle-system.vol-b";
    const NAA_A: &str = "6001405aabbccdd0011223344556677f";

    #[test]
    fn finds_sessions_disks_and_their_identity() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake::add(
            root,
            3,
            2,
            A,
            "LOGGED_IN",
            0,
            "sdb",
            &format!("naa.{NAA_A}"),
        );
        fake::add(root, 7, 6, B, "FAILED", 1, "sdc", "t10.SPINDLE other");
        let sys = Sysfs::new(root);
        assert_eq!(
            sys.sessions(),
            vec![
                Session {
                    id: 3,
                    target: A.into(),
                    state: "LOGGED_IN".into()
                },
                Session {
                    id: 7,
                    target: B.into(),
                    state: "FAILED".into()
                },
            ]
        );
        assert!(sys.sessions_of(A)[0].logged_in());
        assert!(!sys.sessions_of(B)[0].logged_in());
        assert_eq!(sys.disk_of(3, 0).as_deref(), Some("sdb"));
        assert_eq!(sys.disk_of(3, 1), None, "no LUN 1 in session 3");
        assert_eq!(sys.disk_of(7, 1).as_deref(), Some("sdc"));
        assert_eq!(sys.disk_of(9, 0), None);
        assert_eq!(sys.session_of_disk("sdb"), Some(3));
        assert_eq!(sys.session_of_disk("sdc"), Some(7));
        assert_eq!(sys.session_of_disk("sdz"), None);
        assert_eq!(sys.naa_of("sdb"), Some(Naa::parse(NAA_A).unwrap()));
        assert_eq!(sys.naa_of("sdc"), None, "a t10 wwid is no NAA");
        assert_eq!(sys.size_of("sdb"), Some(64 << 20));
        assert_eq!(sys.disk_state("sdb").as_deref(), Some("running"));
        assert_eq!(sys.dev_of("sdb").as_deref(), Some("8:48"));
        assert!(sys.disk_exists("sdb") && !sys.disk_exists("sdz"));
    }

    #[test]
    fn vpd_page_83_wins_over_the_wwid() {
        let dir = tempfile::tempdir().unwrap();
        fake::add(
            dir.path(),
            1,
            0,
            A,
            "LOGGED_IN",
            0,
            "sda",
            &format!("naa.{NAA_A}"),
        );
        let mut page = vec![0x00, 0x83, 0x00, 20, 0x01, 0x03, 0x00, 16];
        page.extend([0x60; 16]);
        std::fs::write(dir.path().join("block/sda/device/vpd_pg83"), &page).unwrap();
        let sys = Sysfs::new(dir.path());
        assert_eq!(sys.naa_of("sda").unwrap().to_string(), "60".repeat(16));
    }

    #[test]
    fn an_empty_tree_has_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Sysfs::new(dir.path());
        assert!(sys.sessions().is_empty());
        assert_eq!(sys.disk_of(1, 0), None);
    }

    #[test]
    fn disk_names() {
        assert_eq!(disk_name("/dev/sdb"), Some("sdb"));
        assert_eq!(disk_name("/dev/mapper/x"), None);
        assert_eq!(disk_name("sdb"), None);
    }
}
