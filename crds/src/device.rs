//! `Device`: a file or block device on one node, exported as a SCSI logical unit.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::validate::{Errors, FieldError, check_object_name};

/// Block sizes a Device may have.
pub(crate) const BLOCK_SIZES: [u32; 2] = [512, 4096];

/// Largest physical block size a Device may report (64 KiB; SBC's exponent field would allow
/// more, but no store allocates in larger units and initiators align I/O to it).
pub(crate) const MAX_PHYSICAL_BLOCK_SIZE: u32 = 65536;

/// Longest backing-store path (Linux PATH_MAX).
const PATH_MAX_LEN: usize = 4096;

/// CEL rule: a path has no `..` component (it cannot climb out of where the agent puts it).
const NO_DOTDOT_RULE: &str = "!self.split('/').exists(p, p == '..')";

/// Message of the transition rules that keep the backing store itself.
const IMMUTABLE_STORE: &str = "is immutable: create a new Device for another backing store";

/// Desired state of a Device: where its bytes live and how it behaves as a SCSI disk.
// printcolumn(...) repeats `type_ = "string"` by design; clippy reads that as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "spindle.dev",
    version = "v1alpha1",
    kind = "Device",
    namespaced,
    status = "DeviceStatus",
    shortname = "dev",
    category = "spindle",
    doc = "A file or block device on one node, exported by Spindle as a SCSI logical unit.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the agent serves the device"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".spec.nodeName",
        description = "Node holding the backing store"
    ),
    printcolumn(
        name = "Size",
        type_ = "integer",
        json_path = ".status.capacityBytes",
        description = "Capacity in bytes, as the agent reports it"
    ),
    printcolumn(
        name = "Used-By",
        type_ = "string",
        json_path = ".status.usedBy",
        description = "Targets exporting this device",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why it is (not) ready; the Ready condition's message says what to change",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.source.file) || self.source.file.sizeBytes % self.blockSize == 0",
    "message": "must be a multiple of blockSize",
    "fieldPath": ".source.file.sizeBytes",
}, {
    "rule": "!has(self.physicalBlockSize) || self.physicalBlockSize >= self.blockSize",
    "message": "must be a power-of-two multiple of blockSize",
    "fieldPath": ".physicalBlockSize",
}]))]
#[schemars(transform = crate::prose::flow_descriptions)]
pub struct DeviceSpec {
    /// Name of the node whose agent holds the backing store and serves this device. Immutable:
    /// the bytes live on that node.
    #[schemars(length(min = 1), extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "is immutable: the data lives on that node; create a new Device on the other node instead",
    }]))]
    pub node_name: String,
    /// The backing store: exactly one of `file` or `block`. Immutable, except `file.sizeBytes`,
    /// which may grow (never shrink).
    pub source: DeviceSource,
    /// Logical block size in bytes: 512 or 4096.
    #[serde(default = "default_block_size")]
    #[schemars(extend("enum" = [512, 4096]))]
    pub block_size: u32,
    /// Physical block size in bytes reported to initiators (READ CAPACITY(16) and the Block
    /// Limits VPD page): a power-of-two multiple of `blockSize`, at most 65536. Initiators align
    /// their I/O to it (the filesystem's allocation unit, typically 4096). Unset: the same as
    /// `blockSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]))]
    pub physical_block_size: Option<u32>,
    /// Export the device write-protected (writes fail with DATA PROTECT).
    #[serde(default)]
    pub read_only: bool,
    /// Write caching: `writeback` acknowledges writes once queued to the page cache (the initiator
    /// flushes with SYNCHRONIZE CACHE); `writethrough` makes every write durable before it completes.
    #[serde(default)]
    pub write_cache: WriteCache,
    /// Advertise thin provisioning: UNMAP and WRITE SAME with UNMAP punch holes in the backing store.
    #[serde(default)]
    pub thin_provisioning: bool,
    /// What happens to a file-backed store when the Device is deleted: `Delete` removes the file,
    /// `Retain` keeps it. Block devices are never erased.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
    /// Open the backing store with O_DIRECT, bypassing the node's page cache.
    #[serde(default, rename = "directIO")]
    pub direct_io: bool,
    /// When SCSI persistent reservations (registrations, the reservation, the generation) are
    /// kept on the node so they survive an agent restart: `Initiator` while the initiator's
    /// last REGISTER set APTPL (activate persist through power loss), `Always` whatever it
    /// says.
    #[serde(default)]
    pub reservation_persistence: ReservationPersistence,
}

fn default_block_size() -> u32 {
    512
}

/// Where a Device's bytes live. Exactly one member is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.file) != has(self.block)",
    "message": "exactly one of file or block must be set",
}, {
    "rule": "has(self.file) == has(oldSelf.file) && has(self.block) == has(oldSelf.block)",
    "message": "is immutable: create a new Device for another backing store",
}, {
    "rule": "!has(self.snapshot) || has(self.file)",
    "message": "a clone from a snapshot needs file (its path and size, at least the snapshot's)",
}, {
    "rule": "has(self.snapshot) == has(oldSelf.snapshot)",
    "message": "is immutable: a clone starts from its snapshot once",
}]))]
pub struct DeviceSource {
    /// A regular file the agent creates (sparse) and owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    /// An existing block device on the node (only paths on the agent's allowlist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockSource>,
    /// A clone: the file starts as a copy of this DeviceSnapshot (same namespace, on this
    /// Device's node). To clone a Device, snapshot it, then clone the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<CloneSource>,
}

/// The snapshot a clone starts from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloneSource {
    /// Name of a DeviceSnapshot in the Device's namespace.
    #[schemars(length(min = 1, max = 253), extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "is immutable: a clone starts from its snapshot once"},
    ]))]
    pub name: String,
}

/// A file-backed store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSource {
    /// Path of the file, relative to the agent's data directory; no `..` components.
    #[schemars(length(min = 1, max = PATH_MAX_LEN), extend("x-kubernetes-validations" = [
        {"rule": "!self.startsWith('/')", "message": "must be relative to the agent's data directory"},
        {"rule": NO_DOTDOT_RULE, "message": "must not contain '..' components"},
        {"rule": "self == oldSelf", "message": IMMUTABLE_STORE},
    ]))]
    pub path: String,
    /// Size of the file in bytes; a positive multiple of blockSize. May grow (the agent grows
    /// the file and the served capacity live); never shrinks.
    #[schemars(range(min = 1), extend("x-kubernetes-validations" = [
        {"rule": "self >= oldSelf", "message": "may only grow: a Device is never shrunk (sizeBytes below its current value)"},
    ]))]
    pub size_bytes: u64,
}

/// A block-device-backed store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockSource {
    /// Absolute path of the block device on the node, e.g. /dev/disk/by-id/...; no `..` components.
    #[schemars(length(max = PATH_MAX_LEN), extend("x-kubernetes-validations" = [
        {"rule": "self.startsWith('/')", "message": "must be an absolute path"},
        {"rule": NO_DOTDOT_RULE, "message": "must not contain '..' components"},
        {"rule": "self == oldSelf", "message": IMMUTABLE_STORE},
    ]))]
    pub path: String,
}

/// Write caching mode of a Device.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteCache {
    /// Writes complete once queued; SYNCHRONIZE CACHE makes them durable.
    #[default]
    Writeback,
    /// Every write is durable before it completes.
    Writethrough,
}

/// When a Device's persistent reservations are kept across agent restarts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReservationPersistence {
    /// As the initiator asks: while its last REGISTER set APTPL.
    #[default]
    Initiator,
    /// Always, as if every REGISTER set APTPL.
    Always,
}

/// What to do with a file-backed store when its Device is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReclaimPolicy {
    /// Remove the backing file.
    #[default]
    Delete,
    /// Keep the backing file.
    Retain,
}

/// Observed state of a Device, written by the operator from what the agent reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::prose::flow_descriptions)]
pub struct DeviceStatus {
    /// Ready, AgentReachable, and while it is deleted Deleting and Flushed (one per type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Capacity in bytes as served (block count times block size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Unit serial number (VPD page 0x80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// NAA designator (VPD page 0x83), as hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub naa: Option<String>,
    /// Targets (namespace/name) exporting this device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
}

impl Device {
    /// Applies the rules the CRD schema enforces, for callers without an apiserver.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        check_object_name(&mut errors, self.metadata.name.as_deref());
        self.spec.check(&mut errors);
        errors.finish()
    }
}

impl DeviceSpec {
    /// log2(physical block size / logical block size): READ CAPACITY(16)'s LOGICAL BLOCKS PER
    /// PHYSICAL BLOCK EXPONENT (0 when unset or invalid; [`Device::validate`] reports the latter).
    pub fn physical_block_exp(&self) -> u8 {
        match self.physical_block_size {
            Some(p)
                if p.is_power_of_two()
                    && self.block_size.is_power_of_two()
                    && p >= self.block_size
                    && p <= MAX_PHYSICAL_BLOCK_SIZE =>
            {
                (p.trailing_zeros() - self.block_size.trailing_zeros()) as u8
            }
            _ => 0,
        }
    }

    fn check(&self, errors: &mut Errors) {
        errors.check(!self.node_name.is_empty(), "spec.nodeName", "required");
        errors.check(
            BLOCK_SIZES.contains(&self.block_size),
            "spec.blockSize",
            format!("{} is not one of 512, 4096", self.block_size),
        );
        if let Some(p) = self.physical_block_size {
            errors.check(
                p.is_power_of_two() && p >= self.block_size && p <= MAX_PHYSICAL_BLOCK_SIZE,
                "spec.physicalBlockSize",
                format!(
                    "{p} is not a power-of-two multiple of blockSize ({}) of at most {MAX_PHYSICAL_BLOCK_SIZE}",
                    self.block_size
                ),
            );
        }
        match (&self.source.file, &self.source.block) {
            (Some(file), None) => {
                check_path(errors, "spec.source.file.path", &file.path, false);
                errors.check(
                    file.size_bytes >= 1,
                    "spec.source.file.sizeBytes",
                    "must be at least 1",
                );
                errors.check(
                    self.block_size == 0 || file.size_bytes % u64::from(self.block_size) == 0,
                    "spec.source.file.sizeBytes",
                    format!(
                        "{} must be a multiple of blockSize ({})",
                        file.size_bytes, self.block_size
                    ),
                );
            }
            (None, Some(block)) => check_path(errors, "spec.source.block.path", &block.path, true),
            _ => errors.add("spec.source", "exactly one of file or block must be set"),
        }
        if let Some(s) = &self.source.snapshot {
            errors.check(
                self.source.file.is_some(),
                "spec.source.snapshot",
                "a clone from a snapshot needs file (its path and size, at least the snapshot's)",
            );
            errors.check(
                crate::names::is_valid_object_name(&s.name),
                "spec.source.snapshot.name",
                "must be the name of a DeviceSnapshot in this namespace",
            );
        }
    }
}

/// Mirrors the path rules of [`FileSource`] (relative) and [`BlockSource`] (absolute).
fn check_path(errors: &mut Errors, field: &str, path: &str, absolute: bool) {
    if absolute {
        errors.check(path.starts_with('/'), field, "must be an absolute path");
    } else {
        errors.check(!path.is_empty(), field, "required");
        errors.check(
            !path.starts_with('/'),
            field,
            "must be relative to the agent's data directory",
        );
    }
    errors.check(
        path.len() <= PATH_MAX_LEN,
        field,
        format!("longer than {PATH_MAX_LEN} bytes"),
    );
    errors.check(
        !path.split('/').any(|p| p == ".."),
        field,
        "must not contain '..' components",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Device {
        serde_yaml::from_str(yaml).expect("valid YAML manifest")
    }

    const MINIMAL: &str = "apiVersion: spindle.dev/v1alpha1\nkind: Device\nmetadata: {name: d0}\nspec:\n  nodeName: n1\n  source:\n    file: {path: d0.img, sizeBytes: 4096}\n";

    #[test]
    fn minimal_manifest_gets_documented_defaults() {
        let d = parse(MINIMAL);
        assert_eq!(d.spec.block_size, 512);
        assert_eq!(d.spec.write_cache, WriteCache::Writeback);
        assert_eq!(d.spec.reclaim_policy, ReclaimPolicy::Delete);
        assert!(!d.spec.read_only && !d.spec.thin_provisioning && !d.spec.direct_io);
        assert_eq!(d.validate(), Ok(()));
    }

    #[test]
    fn wire_names_match_the_api() {
        let d = parse(&format!(
            "{MINIMAL}  writeCache: writethrough\n  directIO: true\n  reclaimPolicy: Retain\n"
        ));
        assert_eq!(d.spec.write_cache, WriteCache::Writethrough);
        assert!(d.spec.direct_io);
        assert_eq!(d.spec.reclaim_policy, ReclaimPolicy::Retain);
        let json = serde_json::to_value(&d.spec).expect("serializes");
        assert_eq!(json["writeCache"], "writethrough");
        assert_eq!(json["directIO"], true);
        assert_eq!(json["source"]["file"]["sizeBytes"], 4096);
        assert!(json["source"].get("block").is_none());
    }

    #[test]
    fn unknown_write_cache_is_an_error_not_a_panic() {
        let r: Result<Device, _> =
            serde_yaml::from_str(&format!("{MINIMAL}  writeCache: sometimes\n"));
        assert!(r.is_err());
    }

    #[test]
    fn reports_every_problem_with_its_field() {
        let mut d = parse(MINIMAL);
        d.metadata.name = None;
        d.spec.block_size = 1000;
        d.spec.source.file = Some(FileSource {
            path: "../x".into(),
            size_bytes: 100,
        });
        let errors = d.validate().unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"metadata.name: required".to_owned()),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.starts_with("spec.blockSize: 1000")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.starts_with("spec.source.file.path: must not contain '..'")),
            "{text:?}"
        );
        assert!(
            text.contains(
                &"spec.source.file.sizeBytes: 100 must be a multiple of blockSize (1000)"
                    .to_owned()
            ),
            "{text:?}"
        );
    }

    #[test]
    fn zero_block_size_does_not_divide_by_zero() {
        let mut d = parse(MINIMAL);
        d.spec.block_size = 0;
        let errors = d.validate().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.blockSize");
    }

    #[test]
    fn physical_block_size_is_a_bounded_power_of_two_multiple_of_the_block_size() {
        let d = parse(&format!("{MINIMAL}  physicalBlockSize: 4096\n"));
        assert_eq!(d.spec.physical_block_size, Some(4096));
        assert_eq!(d.spec.physical_block_exp(), 3);
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(parse(MINIMAL).spec.physical_block_exp(), 0);
        for bad in [256, 3072, 131072, 0] {
            let mut d = parse(MINIMAL);
            d.spec.physical_block_size = Some(bad);
            let errors = d.validate().unwrap_err();
            assert_eq!(errors.len(), 1, "{bad}");
            assert_eq!(errors[0].field, "spec.physicalBlockSize");
            assert_eq!(d.spec.physical_block_exp(), 0);
        }
        let mut d = parse(MINIMAL);
        d.spec.block_size = 4096;
        d.spec.physical_block_size = Some(512);
        assert!(d.validate().is_err());
    }
}
