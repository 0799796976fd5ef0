//! Spindle's Kubernetes API types: `Device` and `Target` in `spindle.dev/v1alpha1`.
//!
//! The same types serve the operator (through the apiserver) and the standalone node agent (which
//! reads the same YAML from a folder). The schema rules the apiserver enforces (OpenAPI patterns,
//! ranges and CEL rules) are mirrored by [`Device::validate`] and [`Target::validate`], so a
//! manifest is judged the same way with or without Kubernetes.

pub mod chap;
mod condition;
mod device;
pub mod manifest;
mod names;
mod prose;
mod qos;
mod snapshot;
mod target;
mod validate;
pub mod words;

pub use condition::{Condition, ConditionStatus};
pub use device::{
    BlockSource, CloneSource, Device, DeviceSource, DeviceSpec, DeviceStatus, FileSource,
    ReclaimPolicy, ReservationPersistence, WriteCache,
};
pub use names::{IQN_MAX_LEN, IQN_PATTERN, OBJECT_NAME_PATTERN, is_valid_iqn};
pub use qos::{DEFAULT_BURST_SECONDS, TargetQos};
pub use snapshot::{
    DeviceSnapshot, DeviceSnapshotSpec, DeviceSnapshotStatus, SnapshotMethod, SnapshotSource,
};
pub use target::{
    Acl, ChapSpec, DEFAULT_IQN_PREFIX, Digest, IscsiParams, LunSpec, MAX_LUN, Target, TargetSpec,
    TargetStatus,
};
pub use validate::FieldError;

/// The API group of every Spindle resource.
pub const GROUP: &str = "spindle.dev";
/// The API version of the types in this crate.
pub const VERSION: &str = "v1alpha1";
