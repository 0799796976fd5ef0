//! From manifests to what the engine serves (pure): validate every object with the same rules as
//! the CRD schema, resolve each Target's LUNs to Devices and its CHAP Secret, and report each
//! object that cannot be served as one [`Problem`] line. The rest is served.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use spindle_crds::{ChapSpec, Device, chap};

use super::manifest::{Manifests, Origin, Problem};
use crate::iscsi::chap::{ChapSecrets, Credentials};
use crate::node::records::{DeviceRecord, TargetRecord, device_from_manifest, manifest_id};

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

fn secret_value(s: &Secret, k: &str) -> Option<Vec<u8>> {
    if let Some(v) = s.string_data.as_ref().and_then(|m| m.get(k)) {
        return Some(v.as_bytes().to_vec());
    }
    s.data.as_ref().and_then(|m| m.get(k)).map(|b| b.0.clone())
}

/// The CHAP a Target's `spec.chap` asks for, with the credentials its Secret `s` holds.
fn chap_from_secret(s: &Secret, spec: &ChapSpec) -> Result<ChapSecrets, String> {
    let mutual = spec.mutual;
    let text = |k: &str, why: &str| {
        let v = secret_value(s, k)
            .filter(|v| !v.is_empty())
            .ok_or(format!("has no key {k:?}{why}"))?;
        String::from_utf8(v).map_err(|_| format!("key {k:?} is not UTF-8"))
    };
    let secret = |k: &str, why: &str| {
        let v = text(k, why)?;
        match chap::secret_length_problem(v.len()) {
            Some(p) => Err(format!("key {k:?} {p}")),
            None => Ok(v),
        }
    };
    let initiator = Credentials {
        user: text(chap::USER_KEY, "")?,
        secret: secret(chap::SECRET_KEY, "")?,
    };
    let target = if mutual {
        let why = " (spec.chap.mutual is true)";
        let t = Credentials {
            user: text(chap::MUTUAL_USER_KEY, why)?,
            secret: secret(chap::MUTUAL_SECRET_KEY, why)?,
        };
        if let Some(p) = chap::mutual_problem(&initiator.secret, &t.secret) {
            return Err(p);
        }
        Some(t)
    } else {
        None
    };
    Ok(ChapSecrets {
        initiator,
        target,
        algorithms: spec.algorithms.clone(),
    })
}

/// What the manifests ask the node to serve.
#[derive(Debug, Default)]
pub struct Plan {
    pub devices: Vec<(Origin, DeviceRecord)>,
    pub targets: Vec<(Origin, TargetRecord)>,
}

/// Builds the records to apply from `m`, with a problem line for every object left out. Every
/// Target is served on `port` (the standalone portal), whatever its `spec.port`.
pub fn plan(m: &Manifests, port: u16) -> (Plan, Vec<Problem>) {
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
        if d.spec.source.snapshot.is_some() {
            // A clone needs a DeviceSnapshot's copy, which only the operator's calls make.
            problems.push(problem(
                o,
                object,
                "spec.source.snapshot",
                "clones are made through the operator (DeviceSnapshot), not in standalone mode"
                    .into(),
            ));
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

    let mut out = Plan::default();
    for (o, d) in devices.values() {
        if let Some(r) = device_from_manifest(d) {
            out.devices.push(((*o).clone(), r));
        }
    }
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
        // A LUN whose Device is missing (or taken) is left out and named; the Target serves
        // its other LUNs, as in a cluster.
        let mut luns = Vec::new();
        let mut lun_problems = Vec::new();
        for (i, l) in t.spec.luns.iter().enumerate() {
            let field = format!("spec.luns[{i}].deviceRef");
            let dk = format!("{ns}/{}", l.device_ref);
            if !devices.contains_key(&dk) {
                let m = format!(
                    "no valid Device {dk:?} in the manifests; LUN {} is not served",
                    l.lun
                );
                lun_problems.push((field, m));
                continue;
            }
            if let Some(other) = used_devices.get(&dk).filter(|o| **o != k) {
                let m = format!(
                    "Device {dk:?} is already used by Target {other}; LUN {} is not served",
                    l.lun
                );
                lun_problems.push((field, m));
                continue;
            }
            luns.push((l.lun, dk));
        }
        let chap = match &t.spec.chap {
            None => None,
            Some(c) => {
                let sk = format!("{ns}/{}", c.secret_ref);
                match secrets.get(&sk).map(|s| chap_from_secret(s, c)) {
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
        for (field, message) in lun_problems {
            problems.push(problem(o, object.clone(), &field, message));
        }
        for (_, dk) in &luns {
            used_devices.insert(dk.clone(), k.clone());
        }
        let mut rec = TargetRecord::from_target(manifest_id(&t.metadata), t, iqn, chap, |name| {
            devices
                .get(&format!("{ns}/{name}"))
                .map(|(_, d)| manifest_id(&d.metadata).uid)
                .unwrap_or_default()
        });
        rec.luns.retain(|l| luns.iter().any(|(n, _)| *n == l.lun));
        rec.port = port;
        out.targets.push((o.clone(), rec));
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::login::AclPolicy;
    use crate::standalone::manifest::parse_into;
    use std::path::Path;

    fn run(text: &str) -> (Vec<TargetRecord>, Vec<String>) {
        let (plan, p) = run_plan(text);
        (plan.targets.into_iter().map(|(_, t)| t).collect(), p)
    }

    fn run_plan(text: &str) -> (Plan, Vec<String>) {
        let mut m = Manifests::default();
        parse_into(Path::new("m.yaml"), text, &mut m);
        let (plan, mut p) = plan(&m, 3260);
        p.extend(m.problems);
        (plan, p.iter().map(|p| p.to_string()).collect())
    }

    const DEV: &str = "apiVersion: spindle.dev/v1alpha1\nkind: Device\nmetadata: {name: d, namespace: ns}\n\
        spec: {nodeName: n, source: {file: {path: d.img, sizeBytes: 1048576}}, thinProvisioning: true}\n";

    #[test]
    fn the_demo_example_becomes_one_target_with_one_thin_writeback_lun() {
        let (plan, p) = run_plan(include_str!("../../../examples/standalone/demo.yaml"));
        assert!(p.is_empty(), "{p:?}");
        let t: Vec<_> = plan.targets.iter().map(|(_, t)| t).collect();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].iqn, "iqn.2026-11.dev.spindle:default.demo");
        assert_eq!(t[0].acl, AclPolicy::AllowAll);
        assert_eq!(t[0].port, 3260);
        assert_eq!(t[0].luns.len(), 1);
        assert_eq!(plan.devices.len(), 1);
        let d = &plan.devices[0].1;
        assert_eq!(t[0].luns[0].device_uid, d.id.uid);
        assert!(d.thin && d.write_cache);
        assert_eq!(d.store.block_size, 512);
    }

    #[test]
    fn a_clone_is_refused_in_standalone_mode_naming_the_field() {
        let text = DEV.replace(
            "sizeBytes: 1048576}}",
            "sizeBytes: 1048576}, snapshot: {name: s}}",
        );
        let (plan, p) = run_plan(&text);
        assert!(plan.devices.is_empty(), "no empty file made for a clone");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("spec.source.snapshot: clones are made"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn a_lun_naming_a_missing_device_is_left_out_with_the_field_named() {
        let text = format!(
            "{DEV}---\napiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {{name: t, namespace: ns}}\n\
             spec: {{luns: [{{lun: 0, deviceRef: d}}, {{lun: 1, deviceRef: nope}}]}}\n"
        );
        let (t, p) = run(&text);
        assert_eq!(t.len(), 1, "the Target serves its other LUNs");
        let luns: Vec<u64> = t[0].luns.iter().map(|l| l.lun).collect();
        assert_eq!(luns, vec![0]);
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
        let luns: Vec<(String, usize)> =
            targets.iter().map(|t| (t.id.key(), t.luns.len())).collect();
        assert_eq!(luns, vec![("ns/a".into(), 1), ("ns/b".into(), 0)]);
        assert!(p[0].contains("already used by Target ns/a"), "{p:?}");
    }

    #[test]
    fn chap_credentials_come_from_the_named_secret() {
        let text = format!(
            "{DEV}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: ns}}\n\
             stringData: {{username: alice, password: sekrit123456, mutualUsername: tgt, mutualPassword: other1234567}}\n\
             ---\napiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {{name: t, namespace: ns}}\n\
             spec: {{luns: [{{lun: 0, deviceRef: d}}], chap: {{secretRef: s, mutual: true, algorithms: [SHA256]}}, acl: {{allowAll: true}}}}\n"
        );
        let (t, p) = run(&text);
        assert!(p.is_empty(), "{p:?}");
        let c = t[0].chap.as_ref().unwrap();
        assert_eq!(c.initiator.user, "alice");
        assert_eq!(c.initiator.secret, "sekrit123456");
        assert_eq!(c.target.as_ref().unwrap().user, "tgt");
        assert_eq!(c.algorithms, [spindle_crds::chap::ChapAlgorithm::Sha256]);
    }

    #[test]
    fn an_empty_chap_algorithm_list_is_a_problem() {
        let text = format!(
            "{DEV}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: ns}}\n\
             stringData: {{username: alice, password: sekrit123456}}\n\
             ---\napiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {{name: t, namespace: ns}}\n\
             spec: {{luns: [{{lun: 0, deviceRef: d}}], chap: {{secretRef: s, algorithms: []}}, acl: {{allowAll: true}}}}\n"
        );
        let (t, p) = run(&text);
        assert!(t.is_empty());
        assert!(p[0].contains("spec.chap.algorithms"), "{p:?}");
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

    #[test]
    fn a_chap_secret_shorter_than_12_bytes_is_a_problem() {
        let text = format!(
            "{DEV}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: ns}}\n\
             stringData: {{username: alice, password: short}}\n\
             ---\napiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {{name: t, namespace: ns}}\n\
             spec: {{luns: [{{lun: 0, deviceRef: d}}], chap: {{secretRef: s}}, acl: {{allowAll: true}}}}\n"
        );
        let (t, p) = run(&text);
        assert!(t.is_empty());
        assert!(
            p[0].contains("spec.chap.secretRef: Secret \"ns/s\" key \"password\" is 5 bytes"),
            "{p:?}"
        );
    }
}
