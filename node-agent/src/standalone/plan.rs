//! From manifests to what the engine serves (pure): validate every object with the same rules as
//! the CRD schema, resolve each Target's LUNs to Devices and its CHAP Secret, and report each
//! object that cannot be served as one [`Problem`] line. The rest is served.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use spindle_crds::{Device, Digest, Target, WriteCache};

use super::manifest::{Manifests, Origin, Problem};
use crate::engine::config::{LunConfig, TargetConfig};
use crate::iscsi::chap::{ChapSecrets, Credentials};
use crate::iscsi::login::AclPolicy;
use crate::iscsi::params::{DigestPolicy, TargetLimits};
use crate::store::{StoreSource, StoreSpec};

/// Secret keys holding CHAP credentials (the Secret is named by `spec.chap.secretRef`).
pub const CHAP_USER_KEY: &str = "username";
pub const CHAP_SECRET_KEY: &str = "password";
pub const CHAP_MUTUAL_USER_KEY: &str = "mutualUsername";
pub const CHAP_MUTUAL_SECRET_KEY: &str = "mutualPassword";

fn key(ns: Option<&String>, name: Option<&String>) -> String {
    format!(
        "{}/{}",
        ns.map(String::as_str).unwrap_or("default"),
        name.map(String::as_str).unwrap_or("")
    )
}

fn problem(origin: &Origin, object: String, field: &str, message: String) -> Problem {
    Problem {
        file: origin.file.clone(),
        object,
        field: field.to_string(),
        message,
    }
}

/// The store a Device describes.
pub fn store_spec(d: &Device) -> Option<StoreSpec> {
    let source = match (&d.spec.source.file, &d.spec.source.block) {
        (Some(f), None) => StoreSource::File {
            path: f.path.clone(),
            size_bytes: f.size_bytes,
        },
        (None, Some(b)) => StoreSource::Block {
            path: b.path.clone(),
        },
        _ => return None,
    };
    Some(StoreSpec {
        source,
        block_size: d.spec.block_size,
        read_only: d.spec.read_only,
        direct: d.spec.direct_io,
    })
}

fn secret_value(s: &Secret, k: &str) -> Option<Vec<u8>> {
    if let Some(v) = s.string_data.as_ref().and_then(|m| m.get(k)) {
        return Some(v.as_bytes().to_vec());
    }
    s.data.as_ref().and_then(|m| m.get(k)).map(|b| b.0.clone())
}

fn chap_from_secret(s: &Secret, mutual: bool) -> Result<ChapSecrets, String> {
    let text = |k: &str, why: &str| {
        let v = secret_value(s, k)
            .filter(|v| !v.is_empty())
            .ok_or(format!("has no key {k:?}{why}"))?;
        String::from_utf8(v).map_err(|_| format!("key {k:?} is not UTF-8"))
    };
    let initiator = Credentials {
        user: text(CHAP_USER_KEY, "")?,
        secret: text(CHAP_SECRET_KEY, "")?,
    };
    let target = if mutual {
        let why = " (spec.chap.mutual is true)";
        Some(Credentials {
            user: text(CHAP_MUTUAL_USER_KEY, why)?,
            secret: text(CHAP_MUTUAL_SECRET_KEY, why)?,
        })
    } else {
        None
    };
    Ok(ChapSecrets { initiator, target })
}

fn digest_policy(d: Digest) -> DigestPolicy {
    match d {
        Digest::None => DigestPolicy::Off,
        Digest::Crc32c => DigestPolicy::Require,
        Digest::Optional => DigestPolicy::Allow,
    }
}

/// The negotiation limits a Target's `spec.iscsi` sets.
pub fn limits(t: &Target) -> TargetLimits {
    let p = &t.spec.iscsi;
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

/// Builds the targets to serve from `m`, with a problem line for every object left out.
pub fn plan(m: &Manifests) -> (Vec<TargetConfig>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut devices: BTreeMap<String, (&Origin, &Device)> = BTreeMap::new();
    for (o, d) in &m.devices {
        let k = key(d.metadata.namespace.as_ref(), d.metadata.name.as_ref());
        let object = format!("Device {k}");
        if let Err(errs) = d.validate() {
            for e in errs {
                problems.push(problem(o, object.clone(), &e.field, e.message));
            }
            continue;
        }
        if devices.insert(k.clone(), (o, d)).is_some() {
            problems.push(problem(
                o,
                object,
                "metadata.name",
                "is defined twice".into(),
            ));
        }
    }
    let secrets: BTreeMap<String, &Secret> = m
        .secrets
        .iter()
        .map(|(_, s)| {
            (
                key(s.metadata.namespace.as_ref(), s.metadata.name.as_ref()),
                s,
            )
        })
        .collect();

    let mut out = Vec::new();
    let mut iqns = BTreeSet::new();
    let mut used_devices: BTreeMap<String, String> = BTreeMap::new();
    for (o, t) in &m.targets {
        let ns = t
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let k = key(Some(&ns), t.metadata.name.as_ref());
        let object = format!("Target {k}");
        if let Err(errs) = t.validate() {
            for e in errs {
                problems.push(problem(o, object.clone(), &e.field, e.message));
            }
            continue;
        }
        let iqn = t.effective_iqn();
        let mut bad = Vec::new();
        if !iqns.insert(iqn.to_ascii_lowercase()) {
            bad.push((
                "spec.iqn".to_string(),
                format!("{iqn} is served by another Target"),
            ));
        }
        let mut luns = Vec::new();
        for (i, l) in t.spec.luns.iter().enumerate() {
            let field = format!("spec.luns[{i}].deviceRef");
            let dk = format!("{ns}/{}", l.device_ref);
            let Some((_, d)) = devices.get(&dk) else {
                bad.push((field, format!("no valid Device {dk:?} in the manifests")));
                continue;
            };
            if let Some(other) = used_devices.get(&dk).filter(|o| **o != k) {
                bad.push((
                    field,
                    format!("Device {dk:?} is already used by Target {other}"),
                ));
                continue;
            }
            let Some(store) = store_spec(d) else {
                bad.push((field, format!("Device {dk:?} has no usable source")));
                continue;
            };
            luns.push(LunConfig {
                lun: l.lun,
                device: dk,
                store,
                write_cache: d.spec.write_cache == WriteCache::Writeback,
                thin: d.spec.thin_provisioning,
            });
        }
        let chap = match &t.spec.chap {
            None => None,
            Some(c) => {
                let sk = format!("{ns}/{}", c.secret_ref);
                match secrets.get(&sk).map(|s| chap_from_secret(s, c.mutual)) {
                    Some(Ok(cfg)) => Some(cfg),
                    Some(Err(e)) => {
                        bad.push(("spec.chap.secretRef".into(), format!("Secret {sk:?} {e}")));
                        None
                    }
                    None => {
                        bad.push((
                            "spec.chap.secretRef".into(),
                            format!("no Secret {sk:?} in the manifests"),
                        ));
                        None
                    }
                }
            }
        };
        if !bad.is_empty() {
            for (field, message) in bad {
                problems.push(problem(o, object.clone(), &field, message));
            }
            continue;
        }
        for l in &luns {
            used_devices.insert(l.device.clone(), k.clone());
        }
        let acl = if t.spec.acl.allow_all {
            AclPolicy::AllowAll
        } else {
            AclPolicy::Only(t.spec.acl.initiators.clone())
        };
        out.push(TargetConfig {
            name: k,
            iqn,
            acl,
            chap,
            limits: limits(t),
            luns,
        });
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standalone::manifest::parse_into;
    use std::path::Path;

    fn run(text: &str) -> (Vec<TargetConfig>, Vec<String>) {
        let mut m = Manifests::default();
        parse_into(Path::new("m.yaml"), text, &mut m);
        let (t, mut p) = plan(&m);
        p.extend(m.problems);
        (t, p.iter().map(|p| p.to_string()).collect())
    }

    const DEV: &str = "apiVersion: spindle.dev/v1alpha1\nkind: Device\nmetadata: {name: d, namespace: ns}\n\
        spec: {nodeName: n, source: {file: {path: d.img, sizeBytes: 1048576}}, thinProvisioning: true}\n";

    #[test]
    fn the_demo_example_becomes_one_target_with_one_thin_writeback_lun() {
        let (t, p) = run(include_str!("../../../examples/standalone/demo.yaml"));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].iqn, "iqn.2026-11.dev.spindle:default.demo");
        assert_eq!(t[0].acl, AclPolicy::AllowAll);
        assert_eq!(t[0].luns.len(), 1);
        assert!(t[0].luns[0].thin && t[0].luns[0].write_cache);
        assert_eq!(t[0].luns[0].store.block_size, 512);
    }

    #[test]
    fn a_target_naming_a_missing_device_is_left_out_with_the_field_named() {
        let text = format!(
            "{DEV}---\napiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {{name: t, namespace: ns}}\n\
             spec: {{luns: [{{lun: 0, deviceRef: d}}, {{lun: 1, deviceRef: nope}}]}}\n"
        );
        let (t, p) = run(&text);
        assert!(t.is_empty());
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("m.yaml: Target ns/t: spec.luns[1].deviceRef: "),
            "{}",
            p[0]
        );
    }

    #[test]
    fn a_device_is_served_by_one_target_only() {
        let t = |name: &str| {
            format!(
                "---\napiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {{name: {name}, namespace: ns}}\n\
                 spec: {{luns: [{{lun: 0, deviceRef: d}}], acl: {{allowAll: true}}}}\n"
            )
        };
        let (targets, p) = run(&format!("{DEV}{}{}", t("a"), t("b")));
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].name, "ns/a");
        assert!(p[0].contains("already used by Target ns/a"), "{p:?}");
    }

    #[test]
    fn chap_credentials_come_from_the_named_secret() {
        let text = format!(
            "{DEV}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: ns}}\n\
             stringData: {{username: alice, password: sekrit123456, mutualUsername: tgt, mutualPassword: other1234567}}\n\
             ---\napiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {{name: t, namespace: ns}}\n\
             spec: {{luns: [{{lun: 0, deviceRef: d}}], chap: {{secretRef: s, mutual: true}}, acl: {{allowAll: true}}}}\n"
        );
        let (t, p) = run(&text);
        assert!(p.is_empty(), "{p:?}");
        let c = t[0].chap.as_ref().unwrap();
        assert_eq!(c.initiator.user, "alice");
        assert_eq!(c.initiator.secret, "sekrit123456");
        assert_eq!(c.target.as_ref().unwrap().user, "tgt");
    }

    #[test]
    fn a_missing_chap_secret_is_a_problem() {
        let text = format!(
            "{DEV}---\napiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {{name: t, namespace: ns}}\n\
             spec: {{luns: [{{lun: 0, deviceRef: d}}], chap: {{secretRef: gone}}}}\n"
        );
        let (t, p) = run(&text);
        assert!(t.is_empty());
        assert!(
            p[0].contains("spec.chap.secretRef: no Secret \"ns/gone\""),
            "{p:?}"
        );
    }
}
