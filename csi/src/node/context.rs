//! What NodeStageVolume is given, checked: the volume context the controller wrote (keys in
//! [`crate::volume`]) and the capability (file system or raw block, access mode).

use std::collections::HashMap;

use crate::proto::VolumeCapability;
use crate::proto::volume_capability::AccessType;
use crate::proto::volume_capability::access_mode::Mode as AccessMode;
use crate::volume::{CTX_IQN, CTX_LUN, CTX_NAA, CTX_PORTALS};

use super::error::NodeError;
use super::naa::Naa;

/// Where the volume's logical unit is and what it must be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// `host:port` of each portal.
    pub portals: Vec<String>,
    pub iqn: String,
    pub lun: u32,
    pub naa: Naa,
}

fn key<'a>(ctx: &'a HashMap<String, String>, k: &'static str) -> Result<&'a str, NodeError> {
    ctx.get(k)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| NodeError::invalid("volume_context", format!("{k:?} is missing")))
}

impl Attachment {
    pub fn from_context(ctx: &HashMap<String, String>) -> Result<Attachment, NodeError> {
        let bad =
            |k: &str, why: String| NodeError::invalid("volume_context", format!("{k:?} {why}"));
        let portals: Vec<String> = key(ctx, CTX_PORTALS)?
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        for p in &portals {
            let port = p.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(_))) || p.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(bad(CTX_PORTALS, format!("has {p:?}, not host:port")));
            }
        }
        let iqn = key(ctx, CTX_IQN)?;
        if !(iqn.starts_with("iqn.") || iqn.starts_with("eui.") || iqn.starts_with("naa."))
            || iqn.len() > 223
            || iqn
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(bad(CTX_IQN, format!("is {iqn:?}, not an iSCSI name")));
        }
        let lun = key(ctx, CTX_LUN)?;
        let lun = lun
            .parse::<u32>()
            .ok()
            .filter(|l| *l < 16384)
            .ok_or_else(|| bad(CTX_LUN, format!("is {lun:?}, not a LUN number")))?;
        let naa_text = key(ctx, CTX_NAA)?;
        let naa = Naa::parse(naa_text).map_err(|e| bad(CTX_NAA, e.to_string()))?;
        Ok(Attachment {
            portals,
            iqn: iqn.to_string(),
            lun,
            naa,
        })
    }
}

/// File systems the node makes and grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    pub fn parse(s: &str) -> Option<FsType> {
        match s {
            "ext4" => Some(FsType::Ext4),
            "xfs" => Some(FsType::Xfs),
            _ => None,
        }
    }
}

/// How the volume is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A file system: its type (None: not asked, ext4 when one is made) and mount flags.
    Mount {
        fs: Option<FsType>,
        flags: Vec<String>,
    },
    /// The raw disk.
    Block,
}

impl Access {
    pub fn from_capability(cap: Option<&VolumeCapability>) -> Result<Access, NodeError> {
        let cap = cap.ok_or_else(|| NodeError::invalid("volume_capability", "is missing"))?;
        let mode = cap
            .access_mode
            .as_ref()
            .and_then(|m| AccessMode::try_from(m.mode).ok())
            .unwrap_or(AccessMode::Unknown);
        let access = match &cap.access_type {
            Some(AccessType::Block(_)) => Access::Block,
            Some(AccessType::Mount(m)) => {
                let fs = match m.fs_type.trim() {
                    "" => None,
                    t => Some(FsType::parse(t).ok_or_else(|| {
                        NodeError::invalid(
                            "volume_capability.mount.fs_type",
                            format!("{t:?} is not supported (ext4 or xfs)"),
                        )
                    })?),
                };
                for f in &m.mount_flags {
                    if f.is_empty() || f.contains(char::is_whitespace) {
                        return Err(NodeError::invalid(
                            "volume_capability.mount.mount_flags",
                            format!("{f:?} is not a mount option"),
                        ));
                    }
                }
                Access::Mount {
                    fs,
                    flags: m.mount_flags.clone(),
                }
            }
            None => {
                return Err(NodeError::invalid(
                    "volume_capability.access_type",
                    "is missing (mount or block)",
                ));
            }
        };
        match mode {
            AccessMode::Unknown => Err(NodeError::invalid(
                "volume_capability.access_mode",
                "is missing or unknown",
            )),
            AccessMode::MultiNodeMultiWriter | AccessMode::MultiNodeSingleWriter
                if matches!(access, Access::Mount { .. }) =>
            {
                Err(NodeError::invalid(
                    "volume_capability.access_mode",
                    format!(
                        "{} is not offered for a file system (one writer node at a time)",
                        mode.as_str_name()
                    ),
                ))
            }
            _ => Ok(access),
        }
    }
}

/// SINGLE_NODE_SINGLE_WRITER: one target path on the node at a time.
pub fn single_writer(cap: Option<&VolumeCapability>) -> bool {
    cap.and_then(|c| c.access_mode.as_ref())
        .is_some_and(|m| m.mode == AccessMode::SingleNodeSingleWriter as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::volume_capability::{AccessMode as Am, BlockVolume, MountVolume};

    const NAA: &str = "6001405aabbccdd0011223344556677f";

    fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            (CTX_PORTALS, "10.0.0.5:3260, 10.0.0.6:3260"),
            (CTX_IQN, "iqn.2026-11.dev.spindle:spindle-system.pvc-1"),
            (CTX_LUN, "0"),
            (CTX_NAA, NAA),
        ]
    }

    #[test]
    fn reads_the_controllers_context() {
        let a = Attachment::from_context(&ctx(&good())).unwrap();
        assert_eq!(a.portals, vec!["10.0.0.5:3260", "10.0.0.6:3260"]);
        assert_eq!(a.lun, 0);
        assert_eq!(a.naa.to_string(), NAA);
    }

    #[test]
    fn names_the_key_that_is_wrong() {
        for (k, v) in [
            (CTX_PORTALS, ""),
            (CTX_PORTALS, "10.0.0.5"),
            (CTX_PORTALS, "10.0.0.5:99999"),
            (CTX_IQN, "not-an-iqn"),
            (CTX_IQN, "iqn.2026-11.x y"),
            (CTX_LUN, "-1"),
            (CTX_LUN, "x"),
            (CTX_NAA, "1234"),
        ] {
            let mut c = good();
            c.retain(|(key, _)| *key != k);
            c.push((k, v));
            let err = Attachment::from_context(&ctx(&c)).unwrap_err();
            assert!(err.to_string().contains(k), "{k}={v}: {err}");
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
        }
        let err = Attachment::from_context(&ctx(&good()[1..])).unwrap_err();
        assert!(err.to_string().contains(CTX_PORTALS), "{err}");
    }

    fn cap(access: AccessType, mode: AccessMode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(access),
            access_mode: Some(Am { mode: mode as i32 }),
        }
    }

    fn mount(fs: &str, flags: &[&str]) -> AccessType {
        AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: flags.iter().map(|s| s.to_string()).collect(),
            volume_mount_group: String::new(),
        })
    }

    #[test]
    fn capabilities() {
        let m = Access::from_capability(Some(&cap(
            mount("", &["noatime"]),
            AccessMode::SingleNodeWriter,
        )))
        .unwrap();
        assert_eq!(
            m,
            Access::Mount {
                fs: None,
                flags: vec!["noatime".into()]
            }
        );
        let m = Access::from_capability(Some(&cap(
            mount("xfs", &[]),
            AccessMode::SingleNodeReaderOnly,
        )))
        .unwrap();
        assert_eq!(
            m,
            Access::Mount {
                fs: Some(FsType::Xfs),
                flags: vec![]
            }
        );
        let b = Access::from_capability(Some(&cap(
            AccessType::Block(BlockVolume {}),
            AccessMode::MultiNodeMultiWriter,
        )))
        .unwrap();
        assert_eq!(b, Access::Block);
        for bad in [
            cap(mount("btrfs", &[]), AccessMode::SingleNodeWriter),
            cap(mount("", &["a b"]), AccessMode::SingleNodeWriter),
            cap(mount("", &[]), AccessMode::MultiNodeMultiWriter),
            cap(mount("", &[]), AccessMode::Unknown),
        ] {
            assert!(Access::from_capability(Some(&bad)).is_err(), "{bad:?}");
        }
        assert!(Access::from_capability(None).is_err());
        assert!(single_writer(Some(&cap(
            mount("", &[]),
            AccessMode::SingleNodeSingleWriter
        ))));
        assert!(!single_writer(Some(&cap(
            mount("", &[]),
            AccessMode::SingleNodeMultiWriter
        ))));
        assert!(!single_writer(None));
    }
}
