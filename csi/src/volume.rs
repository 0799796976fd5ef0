//! The contract between the controller and the node modes: the driver's name and what a
//! volume's context carries from CreateVolume to NodeStageVolume.

/// The CSI driver name (the `provisioner` of a StorageClass, the name of the CSIDriver object).
pub const DRIVER_NAME: &str = "csi.spindle.dev";

/// Volume context key: the Target's portals, `host:port`, comma separated.
pub const CTX_PORTALS: &str = "spindle.dev/portals";
/// Volume context key: the Target's IQN.
pub const CTX_IQN: &str = "spindle.dev/iqn";
/// Volume context key: the LUN number the volume has on its Target.
pub const CTX_LUN: &str = "spindle.dev/lun";
/// Volume context key: the logical unit's NAA identifier (16 bytes, 32 hex digits), the name
/// the node checks before it touches the disk.
pub const CTX_NAA: &str = "spindle.dev/naa";
/// Volume context key: the storage node holding the bytes.
pub const CTX_STORAGE_NODE: &str = "spindle.dev/storage-node";
