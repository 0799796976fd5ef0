//! The generated CRDs against a real kube-apiserver: they install, `kubectl explain` shows the
//! Rust doc comments, the apiserver rejects what `validate()` rejects (naming the same field) and
//! defaults what serde defaults, and the printer columns show in `kubectl get`.

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use spindle_crds::{Device, Target};
use std::process::ExitCode;
use std::time::Duration;

use spindle_e2e::checks::{self, Body, Fixture};
use spindle_e2e::cluster::{TestCluster, workspace_dir};
use spindle_e2e::manifest::Manifest;
use spindle_e2e::wait::eventually;

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

impl Fixture for Ctx {
    fn finish(&mut self, _passed: bool) {
        let _ = self.kubectl(&["delete", "namespace", &self.ns, "--wait=false"]);
    }
}

fn main() -> ExitCode {
    let checks: &[(&str, Check)] = &[
        ("apiserver reports the pinned version", pinned_version),
        ("cluster has the requested nodes", nodes_and_namespace),
        ("CRDs apply server-side", apply_crds),
        ("explain shows doc comments", explain_shows_descriptions),
        ("apiserver and validate() agree", rejections_agree),
        ("apiserver defaults match serde defaults", defaults_agree),
        ("printer columns", printer_columns),
    ];
    checks::run(
        || {
            let cluster = TestCluster::start(&["node-a", "node-b"])?;
            let ns = format!("spindle-e2e-{}", std::process::id());
            Ok(Ctx { cluster, ns })
        },
        checks.iter().map(|&(name, check)| {
            let body: Body<Ctx> = Box::new(move |ctx| check(ctx));
            (name.to_owned(), body)
        }),
    )
}

/// `kubectl get --raw /version` shows the Kubernetes version pinned in e2e/cluster/versions
/// (a cached binary of another version would show up here). When the test reuses a cluster
/// from KUBECONFIG it is not ours to check.
fn pinned_version(ctx: &Ctx) -> Result<()> {
    if !ctx.cluster.is_owned() {
        return Ok(());
    }
    let versions = std::fs::read_to_string(workspace_dir().join("e2e/cluster/versions"))
        .context("reading e2e/cluster/versions")?;
    let pinned = versions
        .lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .context("no KUBERNETES_VERSION in e2e/cluster/versions")?
        .trim();
    let v: Value = serde_json::from_str(&ctx.kubectl(&["get", "--raw", "/version"])?)?;
    let got = v["gitVersion"].as_str().unwrap_or_default();
    ensure!(got == pinned, "/version says {got:?}, pinned is {pinned:?}");
    Ok(())
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
    // Discovery serves the new kinds shortly after they are established.
    eventually(Duration::from_secs(30), || {
        let kinds = ctx.kubectl(&["api-resources", "--api-group=spindle.dev", "-o", "name"])?;
        ensure!(
            kinds
                .split_whitespace()
                .eq(["devices.spindle.dev", "targets.spindle.dev"]),
            "discovery lists {kinds:?}"
        );
        Ok(())
    })
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
        // The apiserver publishes a new CRD's OpenAPI a moment after discovery lists it.
        eventually(Duration::from_secs(30), || {
            let got = squash(&ctx.kubectl(&["explain", resource])?);
            ensure!(
                got.contains(&want),
                "`kubectl explain {resource}` lacks {want:?}:\n{got}"
            );
            Ok(())
        })?;
    }
    Ok(())
}

/// A manifest and, when it must be rejected, the field the apiserver names and part of its
/// message (None: accepted).
struct Case {
    yaml: String,
    rejected: Option<(&'static str, &'static str)>,
}

/// Device d0 on node-a in `ns` with `spec` lines.
fn device_yaml(ns: &str, spec: &str) -> String {
    Manifest::device("d0", "node-a")
        .namespace(ns)
        .spec(spec)
        .yaml()
}

/// Target t0 in `ns` with `spec` lines.
fn target_yaml(ns: &str, spec: &str) -> String {
    Manifest::target("t0").namespace(ns).spec(spec).yaml()
}

fn cases(ns: &str) -> Vec<Case> {
    let d = |spec: &str, rejected| Case {
        yaml: device_yaml(ns, spec),
        rejected,
    };
    let t = |spec: &str, rejected| Case {
        yaml: target_yaml(ns, spec),
        rejected,
    };
    vec![
        d(
            "  source:\n    file: {path: d0.img, sizeBytes: 1048576}\n",
            None,
        ),
        d(
            "  blockSize: 4096\n  source:\n    file: {path: d0.img, sizeBytes: 6144}\n",
            Some((
                "spec.source.file.sizeBytes",
                "must be a multiple of blockSize",
            )),
        ),
        d(
            "  source:\n    file: {path: d0.img, sizeBytes: 1000}\n",
            Some((
                "spec.source.file.sizeBytes",
                "must be a multiple of blockSize",
            )),
        ),
        d(
            "  blockSize: 2048\n  source:\n    block: {path: /dev/sdb}\n",
            Some(("spec.blockSize", "supported values")),
        ),
        d(
            "  source: {}\n",
            Some(("spec.source", "exactly one of file or block")),
        ),
        d(
            "  source:\n    file: {path: ../etc/x, sizeBytes: 512}\n",
            Some(("spec.source.file.path", "must not contain '..'")),
        ),
        t(
            "  luns:\n  - {lun: 0, deviceRef: d0}\n  - {lun: 1, deviceRef: d1}\n",
            None,
        ),
        t(
            "  luns:\n  - {lun: 0, deviceRef: d0}\n  - {lun: 0, deviceRef: d1}\n",
            Some(("spec.luns", "LUN numbers must be unique")),
        ),
        t("  iqn: iqn.2026-11.dev.spindle:ok\n", None),
        t(
            "  iqn: iqn.26-11.dev.spindle\n",
            Some(("spec.iqn", "should match")),
        ),
        t("  iqn: eui.02004567A425678D\n", None),
        t(
            "  acl:\n    initiators: [iqn.2026-11.dev.x, nope]\n",
            Some(("spec.acl.initiators[1]", "should match")),
        ),
        t(
            "  acl: {allowAll: true, initiators: [iqn.2026-11.dev.x]}\n",
            Some(("spec.acl", "mutually exclusive")),
        ),
        t(
            "  iscsi: {firstBurstLength: 1048576, maxBurstLength: 65536}\n",
            Some((
                "spec.iscsi.firstBurstLength",
                "must not exceed maxBurstLength",
            )),
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
        let ok = match (case.rejected, &server) {
            (None, None) => rust.is_empty(),
            (Some((field, message)), Some(stderr)) => {
                stderr.contains(&format!("{field}: "))
                    && stderr.contains(message)
                    && rust.iter().any(|f| f.starts_with(field))
            }
            _ => false,
        };
        if !ok {
            problems.push(format!(
                "expected {:?}; apiserver said {server:?}; validate() named {rust:?}\n{}",
                case.rejected, case.yaml
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

/// `kubectl get` output split into rows of words.
fn table(ctx: &Ctx, args: &[&str]) -> Result<Vec<Vec<String>>> {
    let out = ctx.kubectl(args)?;
    Ok(out
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect())
}

fn patch_status(ctx: &Ctx, object: &str, status: &str) -> Result<()> {
    let patch = format!(r#"{{"status":{status}}}"#);
    let args = [
        "patch",
        "-n",
        &ctx.ns,
        object,
        "--subresource=status",
        "--type=merge",
        "-p",
    ];
    ctx.kubectl(&[&args[..], &[patch.as_str()]].concat())?;
    Ok(())
}

fn printer_columns(ctx: &Ctx) -> Result<()> {
    patch_status(
        ctx,
        "target/t0",
        r#"{"node":"node-a","iqn":"iqn.2026-11.dev.spindle:x.t0","sessions":2,
            "portals":["127.0.0.1:3260","10.0.0.2:3260"],
            "conditions":[{"type":"Ready","status":"True","reason":"Serving","message":""}]}"#,
    )?;
    let rows = table(ctx, &["get", "-n", &ctx.ns, "targets"])?;
    ensure!(
        rows.first().is_some_and(|h| h[..] == ["NAME", "READY", "NODE", "IQN", "PORTAL", "SESSIONS", "AGE"]),
        "target header: {rows:?}"
    );
    // PORTAL shows the first portal.
    ensure!(
        rows.get(1).and_then(|r| r.get(..6)).is_some_and(|r| r
            == [
                "t0",
                "True",
                "node-a",
                "iqn.2026-11.dev.spindle:x.t0",
                "127.0.0.1:3260",
                "2"
            ]),
        "target row: {rows:?}"
    );
    patch_status(
        ctx,
        "device/d0",
        r#"{"capacityBytes":1048576,"usedBy":["ns/t0"],
            "conditions":[{"type":"Ready","status":"False","reason":"Pending","message":""}]}"#,
    )?;
    let rows = table(ctx, &["get", "-n", &ctx.ns, "devices", "-o", "wide"])?;
    ensure!(
        rows.first()
            .is_some_and(|h| h[..] == ["NAME", "READY", "NODE", "SIZE", "USED-BY", "REASON", "AGE"]),
        "device header: {rows:?}"
    );
    ensure!(
        rows.get(1)
            .and_then(|r| r.get(..5))
            .is_some_and(|r| r == ["d0", "False", "node-a", "1048576", r#"["ns/t0"]"#]),
        "device row: {rows:?}"
    );
    Ok(())
}
