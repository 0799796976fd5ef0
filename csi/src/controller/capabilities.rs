//! Which volume capabilities a Spindle volume has: a single node's disk (one initiator at a
//! time), as a filesystem (ext4 or xfs, made by the node) or as a raw block device.

use crate::proto::VolumeCapability;
use crate::proto::volume_capability::access_mode::Mode;
use crate::proto::volume_capability::{AccessMode, AccessType};

/// Filesystems the node can make and mount ("" lets the node choose: ext4).
pub const FS_TYPES: [&str; 3] = ["", "ext4", "xfs"];

/// How a volume is consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A filesystem of this type ("" for the default).
    Mount(String),
    /// The raw block device.
    Block,
}

/// A capability the driver does not offer (INVALID_ARGUMENT in CreateVolume, "not confirmed"
/// in ValidateVolumeCapabilities).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("volume_capabilities: at least one is required")]
    Missing,
    #[error("volume_capabilities[{0}]: access_type must be mount or block")]
    NoAccessType(usize),
    #[error("volume_capabilities[{0}]: fs_type {1:?} is not supported (use ext4 or xfs)")]
    FsType(usize, String),
    #[error("volume_capabilities[{0}]: access_mode is required")]
    NoAccessMode(usize),
    #[error(
        "volume_capabilities[{0}]: access mode {1} is not supported: a Spindle volume is one node's disk (its Target admits one initiator and no cluster filesystem arbitrates writers); use a SINGLE_NODE_* mode"
    )]
    MultiNode(usize, &'static str),
    #[error("volume_capabilities[{0}]: access mode {1} is unknown")]
    UnknownMode(usize, i32),
}

/// The access mode of a capability, if it is one the driver offers.
pub fn access_mode(i: usize, mode: Option<&AccessMode>) -> Result<Mode, CapabilityError> {
    let m = mode.ok_or(CapabilityError::NoAccessMode(i))?;
    match Mode::try_from(m.mode) {
        Ok(
            m @ (Mode::SingleNodeWriter
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter
            | Mode::SingleNodeReaderOnly),
        ) => Ok(m),
        Ok(
            m @ (Mode::MultiNodeReaderOnly
            | Mode::MultiNodeSingleWriter
            | Mode::MultiNodeMultiWriter),
        ) => Err(CapabilityError::MultiNode(i, m.as_str_name())),
        Ok(Mode::Unknown) | Err(_) => Err(CapabilityError::UnknownMode(i, m.mode)),
    }
}

/// Checks one capability (index `i` for messages).
pub fn check_one(i: usize, cap: &VolumeCapability) -> Result<(Access, Mode), CapabilityError> {
    let access = match &cap.access_type {
        None => return Err(CapabilityError::NoAccessType(i)),
        Some(AccessType::Block(_)) => Access::Block,
        Some(AccessType::Mount(m)) => {
            if !FS_TYPES.contains(&m.fs_type.as_str()) {
                return Err(CapabilityError::FsType(i, m.fs_type.clone()));
            }
            Access::Mount(m.fs_type.clone())
        }
    };
    Ok((access, access_mode(i, cap.access_mode.as_ref())?))
}

/// Checks every capability; at least one is required. Returns them checked, in order.
pub fn check(caps: &[VolumeCapability]) -> Result<Vec<(Access, Mode)>, CapabilityError> {
    if caps.is_empty() {
        return Err(CapabilityError::Missing);
    }
    caps.iter()
        .enumerate()
        .map(|(i, c)| check_one(i, c))
        .collect()
}

/// True if every capability asks for the raw block device (then no node expansion is needed).
pub fn all_block(caps: &[(Access, Mode)]) -> bool {
    !caps.is_empty() && caps.iter().all(|(a, _)| *a == Access::Block)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::volume_capability::{BlockVolume, MountVolume};

    pub(crate) fn cap(fs: Option<&str>, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(match fs {
                Some(fs) => AccessType::Mount(MountVolume {
                    fs_type: fs.into(),
                    ..Default::default()
                }),
                None => AccessType::Block(BlockVolume {}),
            }),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    #[test]
    fn single_node_mount_and_block_are_offered() {
        for m in [
            Mode::SingleNodeWriter,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
            Mode::SingleNodeReaderOnly,
        ] {
            for fs in [Some(""), Some("ext4"), Some("xfs"), None] {
                assert!(check(&[cap(fs, m)]).is_ok(), "{fs:?} {m:?}");
            }
        }
        let got = check(&[
            cap(Some("xfs"), Mode::SingleNodeWriter),
            cap(None, Mode::SingleNodeWriter),
        ])
        .unwrap();
        assert_eq!(got[0].0, Access::Mount("xfs".into()));
        assert_eq!(got[1].0, Access::Block);
        assert!(!all_block(&got));
        assert!(all_block(&got[1..]));
    }

    #[test]
    fn multi_node_modes_are_refused_saying_why() {
        for m in [
            Mode::MultiNodeMultiWriter,
            Mode::MultiNodeSingleWriter,
            Mode::MultiNodeReaderOnly,
        ] {
            let e = check(&[cap(Some("ext4"), m)]).unwrap_err();
            assert_eq!(e, CapabilityError::MultiNode(0, m.as_str_name()));
            assert!(e.to_string().contains("one initiator"), "{e}");
        }
    }

    #[test]
    fn malformed_capabilities_are_named() {
        assert_eq!(check(&[]), Err(CapabilityError::Missing));
        let mut c = cap(Some("ext4"), Mode::SingleNodeWriter);
        c.access_type = None;
        assert_eq!(check(&[c]), Err(CapabilityError::NoAccessType(0)));
        let mut c = cap(Some("ext4"), Mode::SingleNodeWriter);
        c.access_mode = None;
        assert_eq!(check(&[c]), Err(CapabilityError::NoAccessMode(0)));
        let mut c = cap(Some("ext4"), Mode::SingleNodeWriter);
        c.access_mode = Some(AccessMode { mode: 99 });
        assert_eq!(check(&[c]), Err(CapabilityError::UnknownMode(0, 99)));
        let ok = cap(Some("ext4"), Mode::SingleNodeWriter);
        assert_eq!(
            check(&[ok, cap(Some("btrfs"), Mode::SingleNodeWriter)]),
            Err(CapabilityError::FsType(1, "btrfs".into()))
        );
    }
}
