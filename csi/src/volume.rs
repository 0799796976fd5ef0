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

/// The one topology segment every node plugin reports (NodeGetInfo), kubelet puts on its Node
/// as a label: "this node can attach Spindle volumes". A Spindle volume is reachable from any
/// node with an iSCSI initiator, so all such nodes share one segment, and the capacity the
/// provisioner publishes for it (CSIStorageCapacity) counts for those nodes only: the scheduler
/// does not place a Pod with a late-binding claim on a node without the node plugin. (Without a
/// key, csi-provisioner v6.4's capacity controller deletes each object it makes as obsolete: an
/// empty selector does not survive the API round trip unchanged.)
pub const TOPOLOGY_KEY: &str = "topology.csi.spindle.dev/initiator";
/// The value of [`TOPOLOGY_KEY`] on every node running the node plugin.
pub const TOPOLOGY_VALUE: &str = "iscsi";
