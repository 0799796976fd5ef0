//! What the agent was told, as it keeps it (in memory and on disk): one record per Device and
//! per Target, built from the API types after their validation, and turned into what the
//! engine serves.

use serde::{Deserialize, Serialize};
use spindle_crds::{Device, Digest, ReclaimPolicy, ReservationPersistence, Target, WriteCache};

use crate::engine::config::{LunConfig, TargetConfig};
use crate::engine::token_bucket::{DirLimits, QosLimits};
use crate::engine::{DrainAck, DrainState};
use crate::iscsi::chap::ChapSecrets;
use crate::iscsi::login::AclPolicy;
use crate::iscsi::params::{DigestPolicy, TargetLimits};
use crate::store::{StoreSource, StoreSpec};

/// Which Kubernetes object (or manifest) a record is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectId {
    pub namespace: String,
    pub name: String,
    /// Identity of this incarnation (a Device deleted and created again has a new uid).
    pub uid: String,
    /// The `metadata.generation` last applied.
    pub generation: i64,
}

impl ObjectId {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// `namespace/name` of the object called `name` in this object's namespace (a Target's
    /// LUNs name Devices of its own namespace).
    pub fn sibling_key(&self, name: &str) -> String {
        format!("{}/{}", self.namespace, name)
    }
}

/// A Device's drain state and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    // "phase" on disk (its name before the drain vocabulary was unified).
    #[serde(rename = "phase")]
    pub state: DrainState,
    pub ack: Option<DrainAck>,
    /// Why it failed (state Failed).
    pub failure: Option<String>,
    /// The backing file was removed on release.
    #[serde(default)]
    pub file_removed: bool,
    /// The block device was erased on release (reclaim policy Delete).
    #[serde(default)]
    pub wiped: bool,
}

impl Default for DrainRecord {
    fn default() -> Self {
        DrainRecord {
            state: DrainState::Running,
            ack: None,
            failure: None,
            file_removed: false,
            wiped: false,
        }
    }
}

/// A Device: its backing store and how it behaves as a SCSI disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub id: ObjectId,
    pub store: StoreSpec,
    pub write_cache: bool,
    pub thin: bool,
    /// log2(physical / logical block size), reported in READ CAPACITY(16).
    #[serde(default)]
    pub physical_block_exp: u8,
    pub reclaim_delete: bool,
    pub drain: DrainRecord,
    /// The agent created the backing file (false: it existed and was adopted, or a block
    /// device; also for records of agents that did not record it). Under reclaim policy Delete
    /// only a created file is removed.
    #[serde(default)]
    pub store_created: bool,
    /// Persistent reservations persist whatever the initiator's APTPL says
    /// (`reservationPersistence: Always`).
    #[serde(default)]
    pub reservations_always: bool,
    /// A clone: the uid of the snapshot its store starts from (made when first applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_from: Option<String>,
}

impl DeviceRecord {
    /// Reclaim policy Delete on a file the agent did not create: the file is kept.
    pub fn adopted_kept(&self) -> bool {
        self.reclaim_delete
            && !self.store_created
            && matches!(self.store.source, StoreSource::File { .. })
    }

    /// A record of a Device whose spec passed [`Device::validate`].
    pub fn from_spec(id: ObjectId, spec: &spindle_crds::DeviceSpec) -> Option<Self> {
        let source = match (&spec.source.file, &spec.source.block) {
            (Some(f), None) => StoreSource::File {
                path: f.path.clone(),
                size_bytes: f.size_bytes,
            },
            (None, Some(b)) => StoreSource::Block {
                path: b.path.clone(),
            },
            _ => return None,
        };
        Some(DeviceRecord {
            id,
            store: StoreSpec {
                source,
                block_size: spec.block_size,
                read_only: spec.read_only,
                direct: spec.direct_io,
            },
            write_cache: spec.write_cache == WriteCache::Writeback,
            thin: spec.thin_provisioning,
            physical_block_exp: spec.physical_block_exp(),
            reclaim_delete: spec.reclaim_policy == ReclaimPolicy::Delete,
            drain: DrainRecord::default(),
            store_created: false,
            reservations_always: spec.reservation_persistence == ReservationPersistence::Always,
            clone_from: None,
        })
    }

    /// Whether `other` asks for the same store and disk behaviour (the drain state and the
    /// generation aside).
    /// A file's size aside too: a larger one is grown in place, the LUN live.
    pub fn same_serving(&self, other: &DeviceRecord) -> bool {
        sizeless(&self.store) == sizeless(&other.store)
            && self.write_cache == other.write_cache
            && self.thin == other.thin
            && self.reservations_always == other.reservations_always
            && self.physical_block_exp == other.physical_block_exp
    }

    /// The LUN config of this Device as LUN `lun`.
    pub fn lun_config(&self, lun: u64) -> LunConfig {
        LunConfig {
            lun,
            device: self.id.key(),
            store: self.store.clone(),
            write_cache: self.write_cache,
            thin: self.thin,
            physical_block_exp: self.physical_block_exp,
        }
    }
}

/// One LUN of a Target: which Device (by name in the Target's namespace, and which
/// incarnation of it when the caller knows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunRecord {
    pub lun: u64,
    pub device_name: String,
    /// Empty: whichever incarnation the agent has (standalone manifests carry no uid).
    pub device_uid: String,
}

/// A Target with its references resolved: effective IQN, CHAP secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub id: ObjectId,
    pub iqn: String,
    pub port: u16,
    pub luns: Vec<LunRecord>,
    pub acl: AclPolicy,
    pub chap: Option<ChapSecrets>,
    pub limits: TargetLimits,
    /// `spec.qos` (absent in state saved before QoS existed: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<spindle_crds::TargetQos>,
}

impl TargetRecord {
    /// A record of a Target whose spec passed [`Target::validate`]: `iqn` is the effective IQN
    /// and `chap` the secrets its Secret holds.
    pub fn from_target(
        id: ObjectId,
        t: &Target,
        iqn: String,
        chap: Option<ChapSecrets>,
        device_uid: impl Fn(&str) -> String,
    ) -> Self {
        let s = &t.spec;
        TargetRecord {
            id,
            iqn,
            port: s.port,
            luns: s
                .luns
                .iter()
                .map(|l| LunRecord {
                    lun: l.lun,
                    device_name: l.device_ref.clone(),
                    device_uid: device_uid(&l.device_ref),
                })
                .collect(),
            acl: if s.acl.allow_all {
                AclPolicy::AllowAll
            } else {
                AclPolicy::Only(s.acl.initiators.clone())
            },
            chap,
            limits: limits(&s.iscsi),
            qos: s.qos.clone(),
        }
    }

    /// `namespace/name` of the Device behind LUN `l`.
    pub fn device_key(&self, l: &LunRecord) -> String {
        self.id.sibling_key(&l.device_name)
    }

    /// The engine's config for this Target over these LUNs.
    pub fn config(&self, luns: Vec<LunConfig>) -> TargetConfig {
        TargetConfig {
            name: self.id.key(),
            iqn: self.iqn.clone(),
            port: self.port,
            acl: self.acl.clone(),
            chap: self.chap.clone(),
            limits: self.limits.clone(),
            weight: self.qos.as_ref().and_then(|q| q.weight).unwrap_or(1),
            qos: qos_limits(self.qos.as_ref()),
            luns,
        }
    }
}

/// `spec` without the file size: what must not change for a store to be served on as it is.
fn sizeless(spec: &StoreSpec) -> StoreSpec {
    let mut s = spec.clone();
    if let StoreSource::File { size_bytes, .. } = &mut s.source {
        *size_bytes = 0;
    }
    s
}

fn digest_policy(d: Digest) -> DigestPolicy {
    match d {
        Digest::None => DigestPolicy::Off,
        Digest::Crc32c => DigestPolicy::Require,
        Digest::Optional => DigestPolicy::Allow,
    }
}

/// The negotiation limits a Target's `spec.iscsi` sets.
pub fn limits(p: &spindle_crds::IscsiParams) -> TargetLimits {
    TargetLimits {
        header_digest: digest_policy(p.header_digest),
        data_digest: digest_policy(p.data_digest),
        max_recv_data_segment_len: p.max_recv_data_segment_length,
        max_burst_len: p.max_burst_length,
        first_burst_len: p.first_burst_length,
        initial_r2t: p.initial_r2t,
        immediate_data: p.immediate_data,
        max_outstanding_r2t: p.max_outstanding_r2t,
        ..TargetLimits::default()
    }
}

/// The limits the engine enforces for a Target's `spec.qos`.
pub fn qos_limits(q: Option<&spindle_crds::TargetQos>) -> QosLimits {
    let Some(q) = q else {
        return QosLimits::default();
    };
    QosLimits {
        read: DirLimits {
            iops: q.read_iops,
            bytes_per_second: q.read_bytes_per_second,
        },
        write: DirLimits {
            iops: q.write_iops,
            bytes_per_second: q.write_bytes_per_second,
        },
        burst_seconds: q.burst(),
    }
}

/// A Device manifest's record (standalone: the manifest carries no uid; its name stands in).
pub fn device_from_manifest(d: &Device) -> Option<DeviceRecord> {
    DeviceRecord::from_spec(manifest_id(&d.metadata), &d.spec)
}

/// The id of an object read from a manifest: uid and generation from the manifest if it has
/// them, else the name and generation 0.
pub fn manifest_id(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectId {
    let namespace = m.namespace.clone().unwrap_or_else(|| "default".into());
    let name = m.name.clone().unwrap_or_default();
    ObjectId {
        uid: m
            .uid
            .clone()
            .unwrap_or_else(|| format!("manifest:{namespace}/{name}")),
        generation: m.generation.unwrap_or(0),
        namespace,
        name,
    }
}

/// A file-backed Device record of 1 MiB at `<name>.img` in namespace `ns`, for tests.
#[cfg(test)]
pub fn sample_device(name: &str, uid: &str) -> DeviceRecord {
    DeviceRecord {
        id: ObjectId {
            namespace: "ns".into(),
            name: name.into(),
            uid: uid.into(),
            generation: 1,
        },
        store: StoreSpec {
            source: StoreSource::File {
                path: format!("{name}.img"),
                size_bytes: 1 << 20,
            },
            block_size: 512,
            read_only: false,
            direct: false,
        },
        write_cache: true,
        thin: false,
        physical_block_exp: 0,
        reclaim_delete: true,
        drain: DrainRecord::default(),
        store_created: false,
        reservations_always: false,
        clone_from: None,
    }
}
