//! The generated CRDs against a real kube-apiserver: they install, `kubectl explain` shows the
//! Rust doc comments, the apiserver rejects what `validate()` rejects (naming the same field) and
//! defaults what serde defaults, and the printer columns show in `kubectl get`.

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use spindle_crds::{Device, Target};
use spindle_e2e::cluster::{TestCluster, workspace_dir};

/// Everything a check needs: the cluster and the namespace it may use.
struct Ctx {
    cluster: TestCluster,
    ns: String,
}

impl Ctx {
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        Ok(self.cluster.kubectl(args, None)?)
    }

    fn kubectl_in(&self, args: &[&str], stdin: &str) -> Result<String> {
        Ok(self.cluster.kubectl(args, Some(stdin))?)
    }
}

/// One named step of the test; steps run in order against the same cluster.
type Check = fn(&Ctx) -> Result<()>;

#[test]
fn crds_on_a_real_apiserver() {
    let cluster = TestCluster::start(&["node-a", "node-b"]).expect("control plane starts");
    let ns = format!("spindle-e2e-{}", std::process::id());
    let ctx = Ctx { cluster, ns };
    let checks: &[(&str, Check)] = &[
        ("cluster has the requested nodes", nodes_and_namespace),
        ("CRDs apply server-side", apply_crds),
        ("explain shows doc comments", explain_shows_descriptions),
        ("apiserver and validate() agree", rejections_agree),
        ("apiserver defaults match serde defaults", defaults_agree),
        ("printer columns", printer_columns),
    ];
    let mut failures = Vec::new();
    for (name, check) in checks {
        if let Err(e) = check(&ctx) {
            failures.push(format!("{name}: {e:#}"));
        }
    }
    let _ = ctx.kubectl(&["delete", "namespace", &ctx.ns, "--wait=false"]);
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn nodes_and_namespace(ctx: &Ctx) -> Result<()> {
    if ctx.cluster.is_owned() {
        let nodes = ctx.kubectl(&["get", "nodes", "-o", "name"])?;
        ensure!(
            nodes.split_whitespace().eq(["node/node-a", "node/node-b"]),
            "nodes: {nodes}"
        );
        ctx.kubectl(&["get", "namespace", "spindle-system"])?;
    }
    ctx.kubectl(&["create", "namespace", &ctx.ns])?;
    Ok(())
}

fn apply_crds(ctx: &Ctx) -> Result<()> {
    let crds = workspace_dir().join("crds");
    let (device, target) = (crds.join("device.yaml"), crds.join("target.yaml"));
    let args = [
        "apply",
        "--server-side",
        "--field-manager",
        "spindle-e2e",
        "-f",
    ];
    for file in [&device, &target] {
        let path = file.to_str().context("UTF-8 path")?;
        ctx.kubectl(&[&args[..], &[path]].concat())?;
    }
    ctx.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/devices.spindle.dev",
        "crd/targets.spindle.dev",
    ])?;
    Ok(())
}

/// The description the generated schema holds at `path` (dot-separated, under the root).
fn schema_description(crd_yaml: &str, path: &[&str]) -> Result<String> {
    let crd: Value = serde_yaml::from_str(crd_yaml)?;
    let mut node = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for key in path {
        node = &node["properties"][key];
    }
    node["description"]
        .as_str()
        .map(str::to_owned)
        .context("no description")
}

fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn explain_shows_descriptions(ctx: &Ctx) -> Result<()> {
    let target_yaml = std::fs::read_to_string(workspace_dir().join("crds/target.yaml"))?;
    let device_yaml = std::fs::read_to_string(workspace_dir().join("crds/device.yaml"))?;
    let cases = [
        ("target.spec", &target_yaml, &["spec", "luns"][..]),
        ("target.spec", &target_yaml, &["spec", "iqn"][..]),
        (
            "target.spec.iscsi",
            &target_yaml,
            &["spec", "iscsi", "firstBurstLength"][..],
        ),
        (
            "device.spec.source.file",
            &device_yaml,
            &["spec", "source", "file", "sizeBytes"][..],
        ),
    ];
    for (resource, crd, path) in cases {
        let want = squash(&schema_description(crd, path)?);
        // --api-version avoids explain's discovery race right after the CRD is established.
        let got =
            squash(&ctx.kubectl(&["explain", resource, "--api-version=spindle.dev/v1alpha1"])?);
        ensure!(
            got.contains(&want),
            "`kubectl explain {resource}` lacks {want:?}:\n{got}"
        );
    }
    Ok(())
}

/// A manifest, the field the apiserver must name when rejecting it (None: accepted).
struct Case {
    yaml: String,
    field: Option<&'static str>,
}

fn device_yaml(ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: spindle.dev/v1alpha1\nkind: Device\nmetadata: {{name: d0, namespace: {ns}}}\nspec:\n  nodeName: node-a\n{spec}"
    )
}

fn target_yaml(ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {{name: t0, namespace: {ns}}}\nspec:\n{spec}"
    )
}

fn cases(ns: &str) -> Vec<Case> {
    let d = |spec: &str, field| Case {
        yaml: device_yaml(ns, spec),
        field,
    };
    let t = |spec: &str, field| Case {
        yaml: target_yaml(ns, spec),
        field,
    };
    vec![
        d(
            "  source:\n    file: {path: d0.img, sizeBytes: 1048576}\n",
            None,
        ),
        d(
            "  blockSize: 4096\n  source:\n    file: {path: d0.img, sizeBytes: 6144}\n",
            Some("spec.source.file.sizeBytes"),
        ),
        d(
            "  source:\n    file: {path: d0.img, sizeBytes: 1000}\n",
            Some("spec.source.file.sizeBytes"),
        ),
        d(
            "  blockSize: 2048\n  source:\n    block: {path: /dev/sdb}\n",
            Some("spec.blockSize"),
        ),
        d("  source: {}\n", Some("spec.source")),
        d(
            "  source:\n    file: {path: ../etc/x, sizeBytes: 512}\n",
            Some("spec.source.file.path"),
        ),
        t(
            "  luns:\n  - {lun: 0, deviceRef: d0}\n  - {lun: 1, deviceRef: d1}\n",
            None,
        ),
        t(
            "  luns:\n  - {lun: 0, deviceRef: d0}\n  - {lun: 0, deviceRef: d1}\n",
            Some("spec.luns"),
        ),
        t("  iqn: iqn.2026-11.dev.spindle:ok\n", None),
        t("  iqn: iqn.26-11.dev.spindle\n", Some("spec.iqn")),
        t("  iqn: eui.02004567A425678D\n", None),
        t(
            "  acl:\n    initiators: [iqn.2026-11.dev.x, nope]\n",
            Some("spec.acl.initiators[1]"),
        ),
        t(
            "  acl: {allowAll: true, initiators: [iqn.2026-11.dev.x]}\n",
            Some("spec.acl"),
        ),
        t(
            "  iscsi: {firstBurstLength: 1048576, maxBurstLength: 65536}\n",
            Some("spec.iscsi.firstBurstLength"),
        ),
    ]
}

/// Rust-side verdict for a manifest: the fields `validate()` names.
fn rust_fields(yaml: &str) -> Result<Vec<String>> {
    let value: Value = serde_yaml::from_str(yaml)?;
    let result = match value["kind"].as_str() {
        Some("Device") => serde_json::from_value::<Device>(value)?.validate(),
        Some("Target") => serde_json::from_value::<Target>(value)?.validate(),
        other => bail!("unexpected kind {other:?}"),
    };
    Ok(result
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.field)
        .collect())
}

fn rejections_agree(ctx: &Ctx) -> Result<()> {
    let mut problems = Vec::new();
    for case in cases(&ctx.ns) {
        let server = ctx
            .cluster
            .kubectl_fails(&["create", "--dry-run=server", "-f", "-"], Some(&case.yaml))?;
        let rust = rust_fields(&case.yaml)?;
        let ok = match (case.field, &server) {
            (None, None) => rust.is_empty(),
            (Some(field), Some(stderr)) => {
                stderr.contains(field) && rust.iter().any(|f| f.starts_with(field))
            }
            _ => false,
        };
        if !ok {
            problems.push(format!(
                "expected {:?}; apiserver said {server:?}; validate() named {rust:?}\n{}",
                case.field, case.yaml
            ));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// A minimal manifest stored by the apiserver comes back with the same spec serde produces.
fn defaults_agree(ctx: &Ctx) -> Result<()> {
    for (yaml, kind) in [
        (
            device_yaml(
                &ctx.ns,
                "  source:\n    file: {path: d0.img, sizeBytes: 1048576}\n",
            ),
            "device/d0",
        ),
        (
            target_yaml(&ctx.ns, "  luns:\n  - {lun: 0, deviceRef: d0}\n"),
            "target/t0",
        ),
    ] {
        ctx.kubectl_in(
            &[
                "apply",
                "--server-side",
                "--field-manager",
                "spindle-e2e",
                "-f",
                "-",
            ],
            &yaml,
        )?;
        let stored = ctx.kubectl(&["get", "-n", &ctx.ns, kind, "-o", "json"])?;
        let local: Value = serde_yaml::from_str(&yaml)?;
        let stored: Value = serde_json::from_str(&stored)?;
        let (local_spec, stored_spec) = if kind.starts_with("device") {
            let l: Device = serde_json::from_value(local)?;
            let s: Device = serde_json::from_value(stored.clone())?;
            (serde_json::to_value(l.spec)?, serde_json::to_value(s.spec)?)
        } else {
            let l: Target = serde_json::from_value(local)?;
            let s: Target = serde_json::from_value(stored.clone())?;
            (serde_json::to_value(l.spec)?, serde_json::to_value(s.spec)?)
        };
        ensure!(
            local_spec == stored_spec,
            "{kind}: serde {local_spec} != apiserver {stored_spec}"
        );
        // The apiserver wrote the defaults into the object itself, not just our reading of it.
        ensure!(
            stored["spec"] == stored_spec,
            "{kind}: apiserver left fields to defaults: {}",
            stored["spec"]
        );
    }
    Ok(())
}

fn printer_columns(ctx: &Ctx) -> Result<()> {
    let ns = ctx.ns.as_str();
    let status = r#"{"status":{"node":"node-a","iqn":"iqn.2026-11.dev.spindle:x.t0","portals":["127.0.0.1:3260"],"sessions":2,"conditions":[{"type":"Ready","status":"True","reason":"Serving","message":""}]}}"#;
    ctx.kubectl(&[
        "patch",
        "-n",
        ns,
        "target/t0",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])?;
    let got = ctx.kubectl(&["get", "-n", ns, "targets"])?;
    let lines: Vec<Vec<&str>> = got
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    ensure!(
        lines.first().is_some_and(|h| h[..] == ["NAME", "READY", "NODE", "IQN", "PORTAL", "SESSIONS", "AGE"]),
        "target header: {got}"
    );
    ensure!(
        lines.get(1).is_some_and(|r| r[..6]
            == [
                "t0",
                "True",
                "node-a",
                "iqn.2026-11.dev.spindle:x.t0",
                "[\"127.0.0.1:3260\"]",
                "2"
            ]
            || r[..6]
                == [
                    "t0",
                    "True",
                    "node-a",
                    "iqn.2026-11.dev.spindle:x.t0",
                    "127.0.0.1:3260",
                    "2"
                ]),
        "target row: {got}"
    );
    let status = r#"{"status":{"capacityBytes":1048576,"usedBy":["t0"],"conditions":[{"type":"Ready","status":"False","reason":"Pending","message":""}]}}"#;
    ctx.kubectl(&[
        "patch",
        "-n",
        ns,
        "device/d0",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])?;
    let got = ctx.kubectl(&["get", "-n", ns, "devices", "-o", "wide"])?;
    let lines: Vec<Vec<&str>> = got
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    ensure!(
        lines
            .first()
            .is_some_and(|h| h[..] == ["NAME", "READY", "NODE", "SIZE", "USED-BY", "AGE"]),
        "device header: {got}"
    );
    ensure!(
        lines.get(1).is_some_and(|r| r.len() == 6
            && r[..4] == ["d0", "False", "node-a", "1048576"]
            && r[4].contains("t0")),
        "device row: {got}"
    );
    Ok(())
}
