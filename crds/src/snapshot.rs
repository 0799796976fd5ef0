//! `DeviceSnapshot`: a crash-consistent copy of a Device, taken on the Device's node without
//! stopping its Target (docs/snapshots.md). A clone is a new Device whose
//! `spec.source.snapshot` names one.
//!
//! Shaped so a CSI driver maps onto it: a CSI snapshot is one DeviceSnapshot (its
//! `snapshot_id` the namespace/name, `size_bytes` and `creation_time` and `ready_to_use`
//! from the status), a volume from a snapshot a Device with `spec.source.snapshot`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::validate::{Errors, FieldError, check_object_name};

/// Desired state of a DeviceSnapshot: which Device to copy. Immutable.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "spindle.dev",
    version = "v1alpha1",
    kind = "DeviceSnapshot",
    namespaced,
    status = "DeviceSnapshotStatus",
    shortname = "devsnap",
    category = "spindle",
    doc = "A crash-consistent copy of a Device, taken on its node while its Target serves.",
    printcolumn(
        name = "Ready",
        type_ = "boolean",
        json_path = ".status.readyToUse",
        description = "Whether the copy is complete and may be cloned"
    ),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.source.deviceName",
        description = "The Device copied"
    ),
    printcolumn(
        name = "Size",
        type_ = "integer",
        json_path = ".status.sizeBytes",
        description = "Bytes of the copy (the Device's size when taken)"
    ),
    printcolumn(
        name = "Method",
        type_ = "string",
        json_path = ".status.method",
        description = "reflink (shared extents) or copy"
    ),
    printcolumn(
        name = "Hold-us",
        type_ = "integer",
        json_path = ".status.holdMicros",
        description = "How long the Device's writes were held, in microseconds",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why it is (not) ready",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::prose::flow_descriptions)]
pub struct DeviceSnapshotSpec {
    /// What to copy. Immutable: a snapshot is of one Device.
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "is immutable: create another DeviceSnapshot",
    }]))]
    pub source: SnapshotSource,
}

/// The Device a snapshot copies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSource {
    /// Name of a file-backed Device in the snapshot's own namespace (never another
    /// namespace's).
    #[schemars(length(min = 1, max = 253))]
    pub device_name: String,
}

/// How the copy was made.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMethod {
    /// The filesystem shares the extents (FICLONE on XFS with reflink=1, Btrfs): instant, thin.
    Reflink,
    /// The bytes were copied (a filesystem without reflinks), the writes held meanwhile.
    Copy,
}

/// Observed state of a DeviceSnapshot, written by the operator from what the agent reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::prose::flow_descriptions)]
pub struct DeviceSnapshotStatus {
    /// Ready (reasons: Taken, Copying, SourceNotFound, SourceRefused, AgentUnreachable,
    /// Failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The copy is complete: clones may start from it.
    #[serde(default)]
    pub ready_to_use: bool,
    /// Node holding the copy (the source Device's node when it was taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// uid of the Device copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_uid: Option<String>,
    /// Bytes of the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// When the copy was taken (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub creation_time: Option<String>,
    /// How long the Device's writes were held for the copy, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_micros: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<SnapshotMethod>,
    /// Bytes copied so far (a copy without reflinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_bytes: Option<u64>,
}

impl DeviceSnapshot {
    /// Applies the rules the CRD schema enforces, for callers without an apiserver.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        check_object_name(&mut errors, self.metadata.name.as_deref());
        errors.check(
            crate::names::is_valid_object_name(&self.spec.source.device_name),
            "spec.source.deviceName",
            "must be the name of a Device in this namespace",
        );
        errors.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_parses_and_names_its_device() {
        let s: DeviceSnapshot = serde_yaml::from_str(
            "apiVersion: spindle.dev/v1alpha1\nkind: DeviceSnapshot\nmetadata: {name: s1}\nspec:\n  source: {deviceName: d1}\n",
        )
        .unwrap();
        assert_eq!(s.spec.source.device_name, "d1");
        assert_eq!(s.validate(), Ok(()));
        let mut bad = s.clone();
        bad.spec.source.device_name = "other/d1".into();
        let e = bad.validate().unwrap_err();
        assert_eq!(e[0].field, "spec.source.deviceName");
        let r: Result<DeviceSnapshot, _> = serde_yaml::from_str(
            "apiVersion: spindle.dev/v1alpha1\nkind: DeviceSnapshot\nmetadata: {name: s1}\nspec: {}\n",
        );
        assert!(r.is_err(), "a snapshot needs its source");
    }
}
