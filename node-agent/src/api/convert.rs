//! From API messages to the node's records and back. Requests are checked with the same rules
//! as the CRD schema (the API types' own validation), so a bad order names the same field the
//! apiserver would.

use spindle_agent_api::v1 as pb;
use spindle_crds::{
    Acl, BlockSource, ChapSpec, Device, DeviceSource, DeviceSpec, Digest, FileSource, IscsiParams,
    LunSpec, ReclaimPolicy, ReservationPersistence, Target, TargetSpec, WriteCache, chap,
};

use crate::engine::{DrainAck, DrainState};
use crate::iscsi::chap::{ChapAlgorithm, ChapSecrets, Credentials};
use crate::node::records::{DeviceRecord, LunRecord, ObjectId, TargetRecord};
use crate::node::{DeviceView, NodeError, TargetView};

fn invalid(field: &str, message: impl Into<String>) -> NodeError {
    NodeError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The object a request is about; namespace, name and uid are required.
pub fn object_id(meta: Option<pb::ObjectMeta>) -> Result<ObjectId, NodeError> {
    let m = meta.ok_or_else(|| invalid("metadata", "required"))?;
    for (field, v) in [
        ("metadata.namespace", &m.namespace),
        ("metadata.name", &m.name),
        ("metadata.uid", &m.uid),
    ] {
        if v.is_empty() {
            return Err(invalid(field, "required"));
        }
    }
    Ok(ObjectId {
        namespace: m.namespace,
        name: m.name,
        uid: m.uid,
        generation: m.generation,
    })
}

/// The API's view of an object id.
pub fn meta(id: &ObjectId) -> pb::ObjectMeta {
    pb::ObjectMeta {
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        uid: id.uid.clone(),
        generation: id.generation,
        leader_term: 0,
    }
}

/// The first validation error as the node's error, the others appended to its message.
fn first_error(errors: Vec<spindle_crds::FieldError>) -> NodeError {
    let mut it = errors.into_iter();
    let Some(first) = it.next() else {
        return invalid("spec", "invalid");
    };
    let mut message = first.message;
    for e in it {
        message.push_str(&format!("; {e}"));
    }
    invalid(&first.field, message)
}

fn enum_value<E: TryFrom<i32>>(field: &str, v: i32) -> Result<E, NodeError> {
    E::try_from(v).map_err(|_| invalid(field, format!("unknown value {v}")))
}

/// An ApplyDevice request as the node's record.
pub fn device_record(req: pb::ApplyDeviceRequest) -> Result<DeviceRecord, NodeError> {
    let id = object_id(req.meta)?;
    let spec = req.spec.ok_or_else(|| invalid("spec", "required"))?;
    let source = match spec.source {
        Some(pb::device_spec::Source::File(f)) => DeviceSource {
            file: Some(FileSource {
                path: f.path,
                size_bytes: f.size_bytes,
            }),
            block: None,
            snapshot: None,
        },
        Some(pb::device_spec::Source::Block(b)) => DeviceSource {
            file: None,
            block: Some(BlockSource { path: b.path }),
            snapshot: None,
        },
        None => DeviceSource {
            file: None,
            block: None,
            snapshot: None,
        },
    };
    let mut source = source;
    let clone_from = match spec.snapshot {
        Some(s) => {
            if s.uid.is_empty() {
                return Err(invalid("spec.source.snapshot.uid", "required"));
            }
            source.snapshot = Some(spindle_crds::CloneSource { name: s.name });
            Some(s.uid)
        }
        None => None,
    };
    let write_cache = match enum_value("spec.writeCache", spec.write_cache)? {
        pb::WriteCache::Unspecified | pb::WriteCache::Writeback => WriteCache::Writeback,
        pb::WriteCache::Writethrough => WriteCache::Writethrough,
    };
    let reclaim_policy = match enum_value("spec.reclaimPolicy", spec.reclaim_policy)? {
        pb::ReclaimPolicy::Unspecified | pb::ReclaimPolicy::Delete => ReclaimPolicy::Delete,
        pb::ReclaimPolicy::Retain => ReclaimPolicy::Retain,
    };
    let reservation_persistence =
        match enum_value("spec.reservationPersistence", spec.reservation_persistence)? {
            pb::ReservationPersistence::Unspecified | pb::ReservationPersistence::Initiator => {
                ReservationPersistence::Initiator
            }
            pb::ReservationPersistence::Always => ReservationPersistence::Always,
        };
    let mut d = Device::new(
        &id.name,
        DeviceSpec {
            // The call went to this node's agent: the node is implied.
            node_name: "this-node".into(),
            source,
            block_size: spec.block_size,
            read_only: spec.read_only,
            write_cache,
            thin_provisioning: spec.thin_provisioning,
            reclaim_policy,
            direct_io: spec.direct_io,
            reservation_persistence,
            physical_block_size: (spec.physical_block_size != 0)
                .then_some(spec.physical_block_size),
        },
    );
    d.metadata.namespace = Some(id.namespace.clone());
    d.validate().map_err(first_error)?;
    let mut rec =
        DeviceRecord::from_spec(id, &d.spec).ok_or_else(|| invalid("spec.source", "required"))?;
    rec.clone_from = clone_from;
    Ok(rec)
}

fn credentials(field: &str, c: Option<pb::ChapCredentials>) -> Result<Credentials, NodeError> {
    let c = c.ok_or_else(|| invalid(field, "required"))?;
    if c.user.is_empty() {
        return Err(invalid(&format!("{field}.user"), "required"));
    }
    if let Some(p) = chap::secret_length_problem(c.secret.len()) {
        return Err(invalid(&format!("{field}.secret"), p));
    }
    Ok(Credentials {
        user: c.user,
        secret: c.secret,
    })
}

fn digest(field: &str, v: i32) -> Result<Digest, NodeError> {
    Ok(match enum_value(field, v)? {
        pb::Digest::Unspecified | pb::Digest::Optional => Digest::Optional,
        pb::Digest::None => Digest::None,
        pb::Digest::Crc32c => Digest::Crc32c,
    })
}

/// The algorithms of `spec.chap.algorithms` (empty: all, what an operator that predates the
/// field sends). The Target's validation then refuses duplicates.
fn chap_algorithms(codes: &[i32]) -> Result<Vec<ChapAlgorithm>, NodeError> {
    if codes.is_empty() {
        return Ok(ChapAlgorithm::default_allowed());
    }
    codes
        .iter()
        .map(|&v| {
            let known = enum_value::<pb::ChapAlgorithm>("spec.chap.algorithms", v)?;
            u64::try_from(known as i32)
                .ok()
                .and_then(ChapAlgorithm::from_code)
                .ok_or_else(|| invalid("spec.chap.algorithms", format!("unknown value {v}")))
        })
        .collect()
}

/// An ApplyTarget request as the node's record.
pub fn target_record(req: pb::ApplyTargetRequest) -> Result<TargetRecord, NodeError> {
    let id = object_id(req.meta)?;
    let spec = req.spec.ok_or_else(|| invalid("spec", "required"))?;
    let port = u16::try_from(spec.port)
        .map_err(|_| invalid("spec.port", format!("{} is not a TCP port", spec.port)))?;
    let chap = match spec.chap {
        None => None,
        Some(c) => {
            let initiator = credentials("spec.chap.initiator", c.initiator)?;
            let target = match c.target {
                None => None,
                Some(t) => Some(credentials("spec.chap.target", Some(t))?),
            };
            if let Some(p) = target
                .as_ref()
                .and_then(|t| chap::mutual_problem(&initiator.secret, &t.secret))
            {
                return Err(invalid("spec.chap.target.secret", p));
            }
            Some(ChapSecrets {
                initiator,
                target,
                algorithms: chap_algorithms(&c.algorithms)?,
            })
        }
    };
    let iscsi = match spec.iscsi {
        None => IscsiParams::default(),
        Some(p) => IscsiParams {
            max_recv_data_segment_length: p.max_recv_data_segment_length,
            max_burst_length: p.max_burst_length,
            first_burst_length: p.first_burst_length,
            initial_r2t: p.initial_r2t,
            immediate_data: p.immediate_data,
            max_outstanding_r2t: p.max_outstanding_r2t,
            header_digest: digest("spec.iscsi.headerDigest", p.header_digest)?,
            data_digest: digest("spec.iscsi.dataDigest", p.data_digest)?,
        },
    };
    let acl = spec.acl.unwrap_or_default();
    let mut t = Target::new(
        &id.name,
        TargetSpec {
            iqn: Some(spec.iqn.clone()),
            port,
            luns: spec
                .luns
                .iter()
                .map(|l| LunSpec {
                    lun: l.lun,
                    device_ref: l.device_name.clone(),
                })
                .collect(),
            acl: Acl {
                initiators: acl.initiators,
                allow_all: acl.allow_all,
            },
            // The operator resolved the Secret; only whether CHAP is mutual matters here.
            chap: chap.as_ref().map(|c| ChapSpec {
                secret_ref: "resolved-by-the-operator".into(),
                mutual: c.target.is_some(),
                algorithms: c.algorithms.clone(),
            }),
            iscsi,
            qos: spec.qos.map(super::convert_qos::from_pb),
        },
    );
    t.metadata.namespace = Some(id.namespace.clone());
    t.validate().map_err(first_error)?;
    let iqn = t.effective_iqn();
    let mut rec = TargetRecord::from_target(id, &t, iqn, chap, |_| String::new());
    for (r, l) in rec.luns.iter_mut().zip(&spec.luns) {
        *r = LunRecord {
            lun: l.lun,
            device_name: l.device_name.clone(),
            device_uid: l.device_uid.clone(),
        };
    }
    Ok(rec)
}

/// The API's name of a drain state (the same names, one for one).
pub fn drain_state(s: DrainState) -> pb::DrainState {
    match s {
        DrainState::Running => pb::DrainState::Running,
        DrainState::Draining => pb::DrainState::Draining,
        DrainState::Flushed => pb::DrainState::Flushed,
        DrainState::Released => pb::DrainState::Released,
        DrainState::Failed => pb::DrainState::Failed,
    }
}

/// The flush acknowledgement of Device `id`: the node's, with the Device's identity.
pub fn ack(id: &ObjectId, a: &DrainAck) -> pb::DrainAck {
    pb::DrainAck {
        namespace: id.namespace.clone(),
        name: id.name.clone(),
        uid: id.uid.clone(),
        target: a.target.clone().unwrap_or_default(),
        luns: a.luns.clone(),
        drained_commands: a.drained_commands,
        fenced_commands: a.fenced_commands,
        duration_micros: a.duration_micros,
        flushed_at_unix_ms: a.flushed_at_unix_ms,
    }
}

/// A Device's status.
pub fn device_status(v: &DeviceView) -> pb::DeviceStatus {
    pb::DeviceStatus {
        meta: Some(meta(&v.id)),
        state: drain_state(v.state) as i32,
        capacity_bytes: v.capacity_bytes,
        serial: v
            .identity
            .as_ref()
            .map(|i| i.serial.clone())
            .unwrap_or_default(),
        naa: v
            .identity
            .as_ref()
            .map(|i| hex::encode(i.naa))
            .unwrap_or_default(),
        backing_path: v.backing_path.display().to_string(),
        used_by: v.used_by.clone().unwrap_or_default(),
        ack: v.ack.as_ref().map(|a| ack(&v.id, a)),
        fenced_commands: v.fenced_commands,
        failure: v.failure.clone().unwrap_or_default(),
        store_created: v.store_created,
    }
}

/// A Target's status; `ip` is the address initiators reach the node on, if known.
pub fn target_status(v: &TargetView, ip: Option<std::net::IpAddr>) -> pb::TargetStatus {
    pb::TargetStatus {
        meta: Some(meta(&v.id)),
        iqn: v.iqn.clone(),
        portals: ip
            .map(|ip| vec![std::net::SocketAddr::new(ip, v.port).to_string()])
            .unwrap_or_default(),
        luns: v
            .luns
            .iter()
            .map(|l| pb::LunStatus {
                lun: l.lun,
                device: l.device.clone(),
                state: drain_state(l.state) as i32,
                commands: l.counters.commands,
                read_bytes: l.counters.read_bytes,
                write_bytes: l.counters.write_bytes,
                inflight: l.inflight,
            })
            .collect(),
        sessions: v
            .sessions
            .iter()
            .map(|s| pb::Session {
                initiator_name: s.initiator_name.clone(),
                isid: hex::encode(s.isid),
                tsih: u32::from(s.tsih),
                peer: s.peer.map(|p| p.to_string()).unwrap_or_default(),
            })
            .collect(),
        qos: v.qos.as_ref().map(super::convert_qos::to_pb),
    }
}

/// The API's snapshot of the node's view of one.
pub fn snapshot(v: &crate::node::SnapshotView) -> pb::Snapshot {
    use crate::store::copy::CopyMethod;
    match &v.record {
        Some(r) => pb::Snapshot {
            meta: Some(meta(&r.id)),
            device: Some(meta(&r.source)),
            size_bytes: r.size_bytes,
            block_size: r.block_size,
            method: match r.method {
                CopyMethod::Reflink => pb::SnapshotMethod::Reflink,
                CopyMethod::Copy => pb::SnapshotMethod::Copy,
            }
            .into(),
            hold_micros: r.hold_micros,
            created_unix_ms: r.created_unix_ms,
            ready: true,
            copied_bytes: r.size_bytes,
        },
        None => pb::Snapshot {
            meta: Some(meta(&v.id)),
            size_bytes: v.total_bytes,
            copied_bytes: v.copied_bytes,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_of(name: &str) -> Option<pb::ObjectMeta> {
        Some(pb::ObjectMeta {
            namespace: "ns".into(),
            name: name.into(),
            uid: "u1".into(),
            generation: 2,
            leader_term: 0,
        })
    }

    fn file_device(path: &str, size: u64, block_size: u32) -> pb::ApplyDeviceRequest {
        pb::ApplyDeviceRequest {
            meta: meta_of("d"),
            spec: Some(pb::DeviceSpec {
                source: Some(pb::device_spec::Source::File(pb::FileSource {
                    path: path.into(),
                    size_bytes: size,
                })),
                block_size,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field(e: NodeError) -> String {
        match e {
            NodeError::Invalid { field, .. } => field,
            e => panic!("not an invalid-argument error: {e}"),
        }
    }

    #[test]
    fn a_device_request_becomes_a_record_with_the_crd_defaults() {
        let r = device_record(file_device("d.img", 1 << 20, 512)).unwrap();
        assert_eq!(r.id.key(), "ns/d");
        assert!(r.write_cache && r.reclaim_delete && !r.thin);
    }

    #[test]
    fn the_physical_block_size_reaches_the_lun_as_an_exponent() {
        let r = device_record(file_device("d.img", 1 << 20, 512)).unwrap();
        assert_eq!(
            r.lun_config(0).physical_block_exp,
            0,
            "0: the logical block size"
        );
        let mut req = file_device("d.img", 1 << 20, 512);
        req.spec.as_mut().unwrap().physical_block_size = 4096;
        let r = device_record(req).unwrap();
        assert_eq!(r.lun_config(0).physical_block_exp, 3);
        for bad in [1000, 256, 1 << 17] {
            let mut req = file_device("d.img", 1 << 20, 512);
            req.spec.as_mut().unwrap().physical_block_size = bad;
            assert_eq!(
                field(device_record(req).unwrap_err()),
                "spec.physicalBlockSize"
            );
        }
    }

    #[test]
    fn bad_device_requests_name_the_crd_field() {
        assert_eq!(
            field(device_record(file_device("d.img", 1000, 512)).unwrap_err()),
            "spec.source.file.sizeBytes"
        );
        assert_eq!(
            field(device_record(file_device("../d.img", 4096, 512)).unwrap_err()),
            "spec.source.file.path"
        );
        assert_eq!(
            field(device_record(file_device("d.img", 4096, 1000)).unwrap_err()),
            "spec.blockSize"
        );
        let mut no_uid = file_device("d.img", 4096, 512);
        no_uid.meta.as_mut().unwrap().uid.clear();
        assert_eq!(field(device_record(no_uid).unwrap_err()), "metadata.uid");
        let mut bad_enum = file_device("d.img", 4096, 512);
        bad_enum.spec.as_mut().unwrap().write_cache = 42;
        assert_eq!(
            field(device_record(bad_enum).unwrap_err()),
            "spec.writeCache"
        );
        let no_source = pb::ApplyDeviceRequest {
            meta: meta_of("d"),
            spec: Some(pb::DeviceSpec {
                block_size: 512,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(field(device_record(no_source).unwrap_err()), "spec.source");
    }

    fn target_req(chap_secret: &str) -> pb::ApplyTargetRequest {
        pb::ApplyTargetRequest {
            meta: meta_of("t"),
            spec: Some(pb::TargetSpec {
                iqn: "iqn.2026-11.dev.spindle:ns.t".into(),
                port: 3260,
                luns: vec![pb::LunMapping {
                    lun: 0,
                    device_name: "d".into(),
                    device_uid: "du".into(),
                }],
                acl: Some(pb::Acl {
                    allow_all: true,
                    initiators: vec![],
                }),
                chap: Some(pb::Chap {
                    initiator: Some(pb::ChapCredentials {
                        user: "u".into(),
                        secret: chap_secret.into(),
                    }),
                    target: None,
                    algorithms: vec![],
                }),
                iscsi: None,
                qos: None,
            }),
        }
    }

    #[test]
    fn a_target_request_keeps_device_uids_and_chap() {
        let r = target_record(target_req("twelve-bytes")).unwrap();
        assert_eq!(r.luns[0].device_uid, "du");
        let chap = r.chap.unwrap();
        assert_eq!(chap.initiator.secret, "twelve-bytes");
        assert_eq!(chap.algorithms, ChapAlgorithm::ALL, "none named: all");
        assert_eq!(
            r.limits.max_burst_len, 1_048_576,
            "absent parameters: defaults"
        );
    }

    #[test]
    fn bad_target_requests_name_the_field_and_never_echo_a_secret() {
        let e = target_record(target_req("short-pw")).unwrap_err();
        let text = e.to_string();
        assert_eq!(field(e), "spec.chap.initiator.secret");
        assert!(!text.contains("short-pw"), "{text}");
        let mut bad_iqn = target_req("twelve-bytes");
        bad_iqn.spec.as_mut().unwrap().iqn = "IQN.bad".into();
        assert_eq!(field(target_record(bad_iqn).unwrap_err()), "spec.iqn");
        let mut dup = target_req("twelve-bytes");
        let l = dup.spec.as_ref().unwrap().luns[0].clone();
        dup.spec.as_mut().unwrap().luns.push(l);
        assert_eq!(field(target_record(dup).unwrap_err()), "spec.luns[1].lun");
        let mut port = target_req("twelve-bytes");
        port.spec.as_mut().unwrap().port = 70000;
        assert_eq!(field(target_record(port).unwrap_err()), "spec.port");
    }

    #[test]
    fn chap_algorithms_travel_by_their_chap_a_numbers() {
        let with = |codes: &[i32]| {
            let mut r = target_req("twelve-bytes");
            let chap = r.spec.as_mut().unwrap().chap.as_mut().unwrap();
            chap.algorithms = codes.to_vec();
            target_record(r)
        };
        let r = with(&[8, 7]).unwrap();
        assert_eq!(
            r.chap.unwrap().algorithms,
            [ChapAlgorithm::Sha3_256, ChapAlgorithm::Sha256]
        );
        for bad in [&[99][..], &[0], &[4], &[7, 7]] {
            let e = with(bad).unwrap_err();
            assert_eq!(field(e), "spec.chap.algorithms", "{bad:?}");
        }
    }
}
