//! The objects a volume is made of — a Device (its bytes), a Target (its LUN 0 and ACL) and a
//! CHAP Secret — built from a [`Plan`], compared with what exists, and read back into a CSI
//! `Volume`.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use spindle_crds::chap::{self, ChapAlgorithm};
use spindle_crds::{
    Acl, ChapSpec, Device, DeviceSource, DeviceSpec, FileSource, IscsiParams, LunSpec,
    ReclaimPolicy, Target, TargetSpec,
};

use super::names::{self, MANAGED_BY, MANAGED_BY_LABEL, NAME_ANNOTATION};
use super::parameters::{self, ChapMode, Parameters};
use crate::proto::CapacityRange;
use crate::proto::volume_capability::access_mode::Mode;
use crate::volume;

/// What CreateVolume makes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The volume ID (the Device's and the Target's name).
    pub id: String,
    /// The CreateVolume name.
    pub name: String,
    /// The driver's namespace.
    pub namespace: String,
    /// The storage node.
    pub node: String,
    /// Bytes.
    pub size: u64,
    pub params: Parameters,
    /// The first requested access mode (all are single-node).
    pub mode: Mode,
}

impl Plan {
    fn meta(&self, name: String) -> ObjectMeta {
        let mut labels = BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())]);
        let mut annotations = BTreeMap::from([(NAME_ANNOTATION.to_owned(), self.name.clone())]);
        for (param, key) in [
            (parameters::PVC_NAME, names::PVC_NAME_LABEL),
            (parameters::PVC_NAMESPACE, names::PVC_NAMESPACE_LABEL),
            (parameters::PV_NAME, names::PV_NAME_LABEL),
        ] {
            if let Some(v) = self.params.metadata.get(param) {
                if names::is_label_value(v) {
                    labels.insert(key.to_owned(), v.clone());
                }
                annotations.insert(key.to_owned(), v.clone());
            }
        }
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        }
    }

    /// The Device: a file `csi/<id>.img` of `size` bytes, removed with the Device.
    pub fn device(&self) -> Device {
        let p = &self.params;
        Device {
            metadata: self.meta(self.id.clone()),
            spec: DeviceSpec {
                node_name: self.node.clone(),
                source: DeviceSource {
                    file: Some(FileSource {
                        path: names::backing_path(&self.id),
                        size_bytes: self.size,
                    }),
                    block: None,
                    snapshot: None,
                },
                block_size: p.block_size,
                read_only: false,
                write_cache: p.write_cache,
                thin_provisioning: p.thin,
                reclaim_policy: ReclaimPolicy::Delete,
                direct_io: false,
                reservation_persistence: Default::default(),
                physical_block_size: None,
            },
            status: None,
        }
    }

    /// The Target: LUN 0 over the Device, nobody admitted yet, CHAP as the parameters say.
    pub fn target(&self) -> Target {
        let mut meta = self.meta(self.id.clone());
        meta.annotations.get_or_insert_default().insert(
            names::ACCESS_MODE_ANNOTATION.to_owned(),
            self.mode.as_str_name().to_owned(),
        );
        Target {
            metadata: meta,
            spec: TargetSpec {
                iqn: None,
                port: self.params.port,
                luns: vec![LunSpec {
                    lun: 0,
                    device_ref: self.id.clone(),
                }],
                acl: Acl::default(),
                chap: match self.params.chap {
                    ChapMode::None => None,
                    m => Some(ChapSpec {
                        secret_ref: names::secret_name(&self.id),
                        mutual: m == ChapMode::Mutual,
                        algorithms: ChapAlgorithm::default_allowed(),
                    }),
                },
                iscsi: IscsiParams::default(),
                qos: self.params.qos.clone(),
            },
            status: None,
        }
    }

    /// The CHAP Secret (None without CHAP), with secrets from `random` (a CSPRNG).
    pub fn secret(&self, mut random: impl FnMut() -> String) -> Option<Secret> {
        if self.params.chap == ChapMode::None {
            return None;
        }
        let mut data = BTreeMap::from([
            (chap::USER_KEY.to_owned(), self.id.clone()),
            (chap::SECRET_KEY.to_owned(), random()),
        ]);
        if self.params.chap == ChapMode::Mutual {
            data.insert(
                chap::MUTUAL_USER_KEY.to_owned(),
                format!("spindle-{}", self.id),
            );
            let mut target_secret = random();
            while Some(&target_secret) == data.get(chap::SECRET_KEY) {
                target_secret = random();
            }
            data.insert(chap::MUTUAL_SECRET_KEY.to_owned(), target_secret);
        }
        Some(Secret {
            metadata: self.meta(names::secret_name(&self.id)),
            string_data: Some(data),
            type_: Some("Opaque".into()),
            ..Default::default()
        })
    }

    /// How an existing volume of this ID differs from the plan (empty: it is the same volume).
    /// `node_given` says whether the node was asked for (else any node will do).
    pub fn differences(
        &self,
        device: &Device,
        target: Option<&Target>,
        range: Option<&CapacityRange>,
        node_given: bool,
    ) -> Vec<String> {
        let mut diff = Vec::new();
        let annotation = |m: &ObjectMeta| {
            m.annotations
                .as_ref()
                .and_then(|a| a.get(NAME_ANNOTATION))
                .cloned()
        };
        match annotation(&device.metadata) {
            Some(n) if n == self.name => {}
            other => diff.push(format!(
                "volume ID {} belongs to the volume named {other:?}",
                self.id
            )),
        }
        let spec = &device.spec;
        let size = spec.source.file.as_ref().map_or(0, |f| f.size_bytes);
        if !super::size::satisfies(size, range) {
            diff.push(format!(
                "its size is {size} bytes, outside the capacity_range asked for"
            ));
        }
        if node_given && spec.node_name != self.node {
            diff.push(format!("it is on node {:?}", spec.node_name));
        }
        let p = &self.params;
        if spec.block_size != p.block_size {
            diff.push(format!("its block size is {}", spec.block_size));
        }
        if spec.thin_provisioning != p.thin {
            diff.push(format!("thinProvisioning is {}", spec.thin_provisioning));
        }
        if spec.write_cache != p.write_cache {
            diff.push(format!("writeCache is {:?}", spec.write_cache));
        }
        if let Some(t) = target {
            if t.spec.port != p.port {
                diff.push(format!("its Target port is {}", t.spec.port));
            }
            let chap = match &t.spec.chap {
                None => ChapMode::None,
                Some(c) if c.mutual => ChapMode::Mutual,
                Some(_) => ChapMode::OneWay,
            };
            if chap != p.chap {
                diff.push(format!("its CHAP is {chap:?}"));
            }
        }
        diff
    }
}

/// True if the object carries the driver's managed-by label.
pub fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY)
}

/// The volume's size: the Device's served capacity, else its spec.
pub fn capacity(device: &Device) -> u64 {
    device
        .status
        .as_ref()
        .and_then(|s| s.capacity_bytes)
        .or_else(|| device.spec.source.file.as_ref().map(|f| f.size_bytes))
        .unwrap_or(0)
}

/// The volume context (the keys of [`crate::volume`]) once the Device and Target report what
/// the node needs: None while the NAA or the portals are not known yet.
pub fn context(device: &Device, target: &Target) -> Option<HashMap<String, String>> {
    let naa = device
        .status
        .as_ref()?
        .naa
        .as_deref()
        .filter(|n| is_naa(n))?
        .to_ascii_lowercase();
    let ts = target.status.as_ref()?;
    if ts.portals.is_empty() {
        return None;
    }
    let iqn = ts.iqn.clone().unwrap_or_else(|| target.effective_iqn());
    let lun = target.spec.luns.first().map_or(0, |l| l.lun);
    Some(HashMap::from([
        (volume::CTX_PORTALS.to_owned(), ts.portals.join(",")),
        (volume::CTX_IQN.to_owned(), iqn),
        (volume::CTX_LUN.to_owned(), lun.to_string()),
        (volume::CTX_NAA.to_owned(), naa),
        (
            volume::CTX_STORAGE_NODE.to_owned(),
            device.spec.node_name.clone(),
        ),
    ]))
}

/// An NAA designator as the agent reports it: 16 hex digits (the 8-byte NAA 5 it serves today)
/// or 32 (a 16-byte NAA 6).
fn is_naa(n: &str) -> bool {
    matches!(n.len(), 16 | 32) && n.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A CHAP secret from `rng`: 32 letters and digits (about 190 bits), inside the lengths
/// [`chap::SECRET_MIN_LEN`]..=[`chap::SECRET_MAX_LEN`].
pub fn chap_secret(rng: &mut impl rand::Rng) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(rng, 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindle_crds::{DeviceStatus, TargetStatus, WriteCache};

    fn plan(chap: ChapMode) -> Plan {
        let params = parameters::parse(
            &HashMap::from([
                (parameters::PVC_NAME.to_owned(), "data-db-0".to_owned()),
                (parameters::PVC_NAMESPACE.to_owned(), "app".to_owned()),
                (parameters::PV_NAME.to_owned(), "pvc-1".to_owned()),
            ]),
            &(3260..=3269),
        )
        .unwrap();
        Plan {
            id: "pvc-1".into(),
            name: "pvc-1".into(),
            namespace: "spindle-system".into(),
            node: "node-a".into(),
            size: 1 << 30,
            params: Parameters { chap, ..params },
            mode: Mode::SingleNodeWriter,
        }
    }

    #[test]
    fn device_target_and_secret_are_valid_and_linked() {
        let p = plan(ChapMode::Mutual);
        let d = p.device();
        assert_eq!(d.validate(), Ok(()));
        assert_eq!(d.spec.source.file.as_ref().unwrap().path, "csi/pvc-1.img");
        assert_eq!(d.spec.reclaim_policy, ReclaimPolicy::Delete);
        let t = p.target();
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(t.spec.luns[0].device_ref, "pvc-1");
        assert!(t.spec.acl.initiators.is_empty() && !t.spec.acl.allow_all);
        let chap_spec = t.spec.chap.as_ref().unwrap();
        assert_eq!(chap_spec.secret_ref, "pvc-1-chap");
        assert!(chap_spec.mutual);
        let mut rng = rand::rng();
        let s = p.secret(|| chap_secret(&mut rng)).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("pvc-1-chap"));
        let data = s.string_data.unwrap();
        for k in [
            chap::USER_KEY,
            chap::SECRET_KEY,
            chap::MUTUAL_USER_KEY,
            chap::MUTUAL_SECRET_KEY,
        ] {
            assert!(data.contains_key(k), "{k}");
        }
        assert_eq!(
            chap::secret_length_problem(data[chap::SECRET_KEY].len()),
            None
        );
        assert_eq!(
            chap::mutual_problem(&data[chap::SECRET_KEY], &data[chap::MUTUAL_SECRET_KEY]),
            None
        );
        let labels = d.metadata.labels.unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels[names::PVC_NAME_LABEL], "data-db-0");
        assert_eq!(labels[names::PVC_NAMESPACE_LABEL], "app");
    }

    #[test]
    fn mutual_secrets_differ_even_from_a_repeating_source() {
        let p = plan(ChapMode::Mutual);
        let mut n = 0;
        let s = p
            .secret(|| {
                n += 1;
                if n < 3 {
                    "same-secret-123".into()
                } else {
                    "other-secret-45".into()
                }
            })
            .unwrap();
        let data = s.string_data.unwrap();
        assert_ne!(data[chap::SECRET_KEY], data[chap::MUTUAL_SECRET_KEY]);
    }

    #[test]
    fn no_chap_means_no_secret() {
        let p = plan(ChapMode::None);
        assert!(p.secret(|| unreachable!()).is_none());
        assert!(p.target().spec.chap.is_none());
        let o = plan(ChapMode::OneWay);
        let data = o.secret(|| "x".repeat(32)).unwrap().string_data.unwrap();
        assert_eq!(data.len(), 2);
    }

    #[test]
    fn chap_secrets_are_random_and_long_enough() {
        let mut rng = rand::rng();
        let (a, b) = (chap_secret(&mut rng), chap_secret(&mut rng));
        assert_ne!(a, b);
        assert!(a.len() >= 16 && chap::secret_length_problem(a.len()).is_none());
    }

    #[test]
    fn differences_name_what_is_not_the_same() {
        let p = plan(ChapMode::OneWay);
        let (d, t) = (p.device(), p.target());
        assert!(p.differences(&d, Some(&t), None, true).is_empty());
        let bigger = CapacityRange {
            required_bytes: 2 << 30,
            limit_bytes: 0,
        };
        let diff = p.differences(&d, Some(&t), Some(&bigger), true);
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(diff[0].contains("size"), "{diff:?}");
        let mut other = p.clone();
        other.name = "other".into();
        other.node = "node-b".into();
        other.params.write_cache = WriteCache::Writethrough;
        other.params.chap = ChapMode::None;
        let diff = other.differences(&d, Some(&t), None, true);
        assert_eq!(diff.len(), 4, "{diff:?}");
        // Without a node asked for, the node does not matter.
        assert_eq!(other.differences(&d, Some(&t), None, false).len(), 3);
    }

    #[test]
    fn context_waits_for_naa_and_portals() {
        let p = plan(ChapMode::OneWay);
        let (mut d, mut t) = (p.device(), p.target());
        assert!(context(&d, &t).is_none());
        d.status = Some(DeviceStatus {
            naa: Some("6001405ABCDEF0123456789ABCDEF012".into()),
            capacity_bytes: Some(1 << 30),
            ..Default::default()
        });
        assert!(context(&d, &t).is_none());
        t.status = Some(TargetStatus {
            portals: vec!["10.0.0.1:3260".into(), "10.0.0.2:3260".into()],
            iqn: Some("iqn.2026-11.dev.spindle:spindle-system.pvc-1".into()),
            ..Default::default()
        });
        let c = context(&d, &t).unwrap();
        assert_eq!(c[volume::CTX_PORTALS], "10.0.0.1:3260,10.0.0.2:3260");
        assert_eq!(c[volume::CTX_NAA], "6001405abcdef0123456789abcdef012");
        assert_eq!(c[volume::CTX_LUN], "0");
        assert_eq!(c[volume::CTX_STORAGE_NODE], "node-a");
        assert_eq!(
            c[volume::CTX_IQN],
            "iqn.2026-11.dev.spindle:spindle-system.pvc-1"
        );
        assert_eq!(capacity(&d), 1 << 30);
        // The agent's 8-byte NAA is taken too; anything else is not an NAA.
        d.status.as_mut().unwrap().naa = Some("341C278CE8556FB0".into());
        assert_eq!(
            context(&d, &t).unwrap()[volume::CTX_NAA],
            "341c278ce8556fb0"
        );
        d.status.as_mut().unwrap().naa = Some("341c278ce8556fb".into());
        assert!(context(&d, &t).is_none());
        assert!(is_managed(&d.metadata));
    }
}
