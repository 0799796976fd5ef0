//! The Rust validation (`Device::validate`, `Target::validate`) and the CRD schema (OpenAPI
//! constraints plus CEL rules, evaluated client-side with kube's CEL engine) must agree on every
//! example: same verdict, and the schema's complaint names a prefix of the field Rust names.

use kube::CustomResourceExt;
use kube::core::cel::{self, CompiledSchema, WarningKind};
use regex::Regex;
use serde_json::Value;
use spindle_crds::{Device, Target};

/// The openAPIV3Schema of a generated CRD, as JSON.
fn schema_of<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let version = crd.spec.versions.first().expect("one version");
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema present");
    serde_json::to_value(schema).expect("schema serializes")
}

/// Fields the schema rejects in `object`: CEL rules plus the structural constraints the apiserver
/// checks (pattern, enum, bounds, required, list-type set), after applying schema defaults.
fn schema_errors(schema: &Value, object: &Value) -> Vec<String> {
    let defaulted = cel::apply_defaults(schema, object);
    let mut found = Vec::new();
    if let Err(errors) = cel::Validator::new().validate(schema, &defaulted, None) {
        found.extend(
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field_path, e.message)),
        );
    }
    check_constraints(schema, &defaulted, "", &mut found);
    found
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A small interpreter for the OpenAPI keywords our CRDs use.
fn check_constraints(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    if value.is_null() {
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        let hit = allowed
            .iter()
            .any(|a| a == value || (a.as_f64().is_some() && a.as_f64() == value.as_f64()));
        if !hit {
            out.push(format!("{path}: not in enum"));
        }
    }
    if let Some(n) = value.as_f64()
        && (num("minimum").is_some_and(|m| n < m) || num("maximum").is_some_and(|m| n > m))
    {
        out.push(format!("{path}: out of range"));
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as f64;
        if num("minLength").is_some_and(|m| len < m) || num("maxLength").is_some_and(|m| len > m) {
            out.push(format!("{path}: bad length"));
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str)
            && !Regex::new(p).expect("pattern compiles").is_match(s)
        {
            out.push(format!("{path}: does not match pattern"));
        }
    }
    if let Some(items) = value.as_array() {
        if num("maxItems").is_some_and(|m| items.len() as f64 > m) {
            out.push(format!("{path}: too many items"));
        }
        if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    out.push(format!("{path}[{i}]: duplicate"));
                }
            }
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check_constraints(item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
    }
    if let Some(fields) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap_or_default();
            if !fields.contains_key(key) {
                out.push(format!("{}: required", join(path, key)));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (key, child) in fields {
                if let Some(child_schema) = props.get(key) {
                    check_constraints(child_schema, child, &join(path, key), out);
                }
            }
        }
    }
}

/// One example manifest and the field it must be rejected for (None: valid).
struct Case {
    name: &'static str,
    yaml: String,
    bad_field: Option<&'static str>,
}

fn device(spec: &str) -> String {
    format!(
        "apiVersion: spindle.dev/v1alpha1\nkind: Device\nmetadata:\n  name: d0\n  namespace: ns\nspec:\n  nodeName: n1\n{spec}"
    )
}

fn target(spec: &str) -> String {
    format!(
        "apiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata:\n  name: t0\n  namespace: ns\nspec:\n{spec}"
    )
}

fn case(name: &'static str, yaml: String, bad_field: Option<&'static str>) -> Case {
    Case {
        name,
        yaml,
        bad_field,
    }
}

fn device_cases() -> Vec<Case> {
    vec![
        case(
            "file, defaults",
            device("  source:\n    file: {path: d0.img, sizeBytes: 1048576}\n"),
            None,
        ),
        case(
            "block 4096",
            device("  blockSize: 4096\n  source:\n    block: {path: /dev/loop0}\n"),
            None,
        ),
        case(
            "4096 file aligned",
            device("  blockSize: 4096\n  source:\n    file: {path: a/b.img, sizeBytes: 8192}\n"),
            None,
        ),
        case(
            "size not multiple of default 512",
            device("  source:\n    file: {path: d0.img, sizeBytes: 1000}\n"),
            Some("spec.source.file.sizeBytes"),
        ),
        case(
            "size not multiple of 4096",
            device("  blockSize: 4096\n  source:\n    file: {path: d0.img, sizeBytes: 512}\n"),
            Some("spec.source.file.sizeBytes"),
        ),
        case(
            "zero size",
            device("  source:\n    file: {path: d0.img, sizeBytes: 0}\n"),
            Some("spec.source.file.sizeBytes"),
        ),
        case(
            "block size 1024",
            device("  blockSize: 1024\n  source:\n    block: {path: /dev/loop0}\n"),
            Some("spec.blockSize"),
        ),
        case("no source", device("  source: {}\n"), Some("spec.source")),
        case(
            "both sources",
            device(
                "  source:\n    file: {path: d0.img, sizeBytes: 512}\n    block: {path: /dev/sdb}\n",
            ),
            Some("spec.source"),
        ),
        case(
            "absolute file path",
            device("  source:\n    file: {path: /etc/passwd, sizeBytes: 512}\n"),
            Some("spec.source.file.path"),
        ),
        case(
            "file path climbs out",
            device("  source:\n    file: {path: a/../../x, sizeBytes: 512}\n"),
            Some("spec.source.file.path"),
        ),
        case(
            "relative block path",
            device("  source:\n    block: {path: dev/sdb}\n"),
            Some("spec.source.block.path"),
        ),
        case(
            "empty node name",
            device("  source:\n    block: {path: /dev/sdb}\n")
                .replace("nodeName: n1", "nodeName: ''"),
            Some("spec.nodeName"),
        ),
    ]
}

fn target_cases() -> Vec<Case> {
    vec![
        case("empty spec", target("  luns: []\n"), None),
        case(
            "full",
            target(concat!(
                "  iqn: iqn.2026-11.dev.spindle:custom\n  port: 3261\n",
                "  luns:\n  - {lun: 0, deviceRef: d0}\n  - {lun: 1, deviceRef: d1}\n",
                "  acl:\n    initiators: [iqn.1993-08.org.debian:01:abc, eui.02004567A425678D]\n",
                "  chap: {secretRef: chap-secret, mutual: true}\n",
                "  iscsi: {firstBurstLength: 65536, maxBurstLength: 65536, headerDigest: CRC32C}\n",
            )),
            None,
        ),
        case("allow all", target("  acl: {allowAll: true}\n"), None),
        case(
            "duplicate LUN",
            target("  luns:\n  - {lun: 0, deviceRef: d0}\n  - {lun: 0, deviceRef: d1}\n"),
            Some("spec.luns"),
        ),
        case(
            "LUN too high",
            target("  luns:\n  - {lun: 16384, deviceRef: d0}\n"),
            Some("spec.luns[0].lun"),
        ),
        case(
            "bad device ref",
            target("  luns:\n  - {lun: 0, deviceRef: D0}\n"),
            Some("spec.luns[0].deviceRef"),
        ),
        case(
            "malformed IQN",
            target("  iqn: iqn.2026-1.dev.spindle\n"),
            Some("spec.iqn"),
        ),
        case(
            "upper-case IQN",
            target("  iqn: iqn.2026-11.Dev.spindle\n"),
            Some("spec.iqn"),
        ),
        case("port 0", target("  port: 0\n"), Some("spec.port")),
        case(
            "weight 0",
            target("  qos:\n    weight: 0\n"),
            Some("spec.qos.weight"),
        ),
        case(
            "weight 1001",
            target("  qos:\n    weight: 1001\n"),
            Some("spec.qos.weight"),
        ),
        case("weight 1000", target("  qos:\n    weight: 1000\n"), None),
        case("no weight", target("  qos: {}\n"), None),
        case(
            "malformed initiator",
            target("  acl:\n    initiators: [iqn.2026-11.dev.x, not-an-iqn]\n"),
            Some("spec.acl.initiators[1]"),
        ),
        case(
            "duplicate initiator",
            target("  acl:\n    initiators: [iqn.2026-11.dev.x, iqn.2026-11.dev.x]\n"),
            Some("spec.acl.initiators[1]"),
        ),
        case(
            "allowAll with initiators",
            target("  acl:\n    allowAll: true\n    initiators: [iqn.2026-11.dev.x]\n"),
            Some("spec.acl"),
        ),
        case(
            "first burst above max burst",
            target("  iscsi: {firstBurstLength: 1048576, maxBurstLength: 262144}\n"),
            Some("spec.iscsi.firstBurstLength"),
        ),
        case(
            "tiny segment length",
            target("  iscsi: {maxRecvDataSegmentLength: 511}\n"),
            Some("spec.iscsi.maxRecvDataSegmentLength"),
        ),
        case(
            "no outstanding R2T",
            target("  iscsi: {maxOutstandingR2T: 0}\n"),
            Some("spec.iscsi.maxOutstandingR2T"),
        ),
        case(
            "bad secret name",
            target("  chap: {secretRef: My_Secret}\n"),
            Some("spec.chap.secretRef"),
        ),
    ]
}

/// Runs every case through both validators and reports each disagreement.
fn check_agreement<K>(
    cases: Vec<Case>,
    rust: impl Fn(&K) -> Result<(), Vec<spindle_crds::FieldError>>,
) where
    K: CustomResourceExt + serde::de::DeserializeOwned,
{
    let schema = schema_of::<K>();
    let mut failures = Vec::new();
    for case in cases {
        let object: Value = serde_yaml::from_str(&case.yaml).expect("example is YAML");
        let typed: K = serde_json::from_value(object.clone()).expect("example deserializes");
        let rust_fields: Vec<String> = match rust(&typed) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.field.clone()).collect(),
        };
        let schema_found = schema_errors(&schema, &object);
        let verdicts = format!("rust: {rust_fields:?}; schema: {schema_found:?}");
        match case.bad_field {
            None if !rust_fields.is_empty() || !schema_found.is_empty() => {
                failures.push(format!("{}: should be valid; {verdicts}", case.name));
            }
            Some(field) => {
                let rust_names = rust_fields.iter().any(|f| f.starts_with(field));
                let schema_names = schema_found.iter().any(|e| e.starts_with(field));
                if !rust_names || !schema_names {
                    failures.push(format!(
                        "{}: should be rejected at {field}; {verdicts}",
                        case.name
                    ));
                }
            }
            None => {}
        }
    }
    assert!(
        failures.is_empty(),
        "disagreements:\n{}",
        failures.join("\n")
    );
}

#[test]
fn device_rules_agree_with_schema() {
    check_agreement::<Device>(device_cases(), Device::validate);
}

#[test]
fn target_rules_agree_with_schema() {
    check_agreement::<Target>(target_cases(), Target::validate);
}

/// Every CEL rule compiles and stays within the apiserver's cost budget (otherwise the apiserver
/// refuses the CRD). Each rule is costed against the schema it is attached to.
#[test]
fn cel_rules_compile_within_budget() {
    let mut count = 0;
    for schema in [schema_of::<Device>(), schema_of::<Target>()] {
        let compiled: CompiledSchema = cel::compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "CEL errors: {:?}",
            compiled.compilation_errors()
        );
        let mut scoped = Vec::new();
        collect_rules(&schema, &mut scoped);
        for (rule, at) in scoped {
            count += 1;
            // Scope warnings are skipped: the analyser flags comprehension variables (`l` in
            // `self.all(l, ...)`) as unknown.
            let warnings: Vec<_> = cel::estimate_rule_cost(&rule, &cel::compile_schema(&at))
                .into_iter()
                .filter(|w| w.kind != WarningKind::WrongScope)
                .collect();
            assert!(warnings.is_empty(), "{rule}: {warnings:?}");
        }
    }
    assert!(
        count >= 8,
        "expected every CEL rule to be found, got {count}"
    );
}

/// Every CEL rule with the schema it is attached to.
fn collect_rules(schema: &Value, out: &mut Vec<(String, Value)>) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in rules.iter().filter_map(|r| r["rule"].as_str()) {
            out.push((rule.to_owned(), schema.clone()));
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        props.values().for_each(|p| collect_rules(p, out));
    }
    if let Some(items) = schema.get("items") {
        collect_rules(items, out);
    }
}

/// Transition rules: a Device's node and backing store cannot change; other fields can.
#[test]
fn device_node_and_source_are_immutable() {
    let base = "  source:\n    file: {path: a.img, sizeBytes: 4096}\n";
    let old: Device = serde_yaml::from_str(&device(base)).expect("device");
    let edit = |f: &dyn Fn(&mut Device)| {
        let mut new = old.clone();
        f(&mut new);
        match kube::core::cel::validate_cel_update(&new, &old) {
            Ok(()) => vec![],
            Err(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field_path, e.message))
                .collect::<Vec<_>>(),
        }
    };
    let node = edit(&|d| d.spec.node_name = "n2".into());
    assert!(
        node.iter()
            .any(|e| e.contains("nodeName") && e.contains("immutable")),
        "{node:?}"
    );
    let path = edit(&|d| {
        if let Some(f) = d.spec.source.file.as_mut() {
            f.path = "b.img".into();
        }
    });
    assert!(
        path.iter()
            .any(|e| e.contains("source") && e.contains("immutable")),
        "{path:?}"
    );
    assert_eq!(edit(&|d| d.spec.read_only = true), Vec::<String>::new());
    assert_eq!(edit(&|_| {}), Vec::<String>::new());
    let to_block = edit(&|d| {
        d.spec.source.file = None;
        d.spec.source.block = Some(spindle_crds::BlockSource {
            path: "/dev/sdx".into(),
        });
    });
    assert!(
        to_block
            .iter()
            .any(|e| e.contains("source") && e.contains("immutable")),
        "{to_block:?}"
    );
}

fn set_size(d: &mut Device, size: u64) {
    if let Some(f) = d.spec.source.file.as_mut() {
        f.size_bytes = size;
    }
}

/// Transition rules: a file-backed Device's size may grow, never shrink; the path stays.
#[test]
fn device_size_may_grow_but_never_shrink() {
    let base = "  source:\n    file: {path: a.img, sizeBytes: 8192}\n";
    let old: Device = serde_yaml::from_str(&device(base)).expect("device");
    let edit = |f: &dyn Fn(&mut Device)| {
        let mut new = old.clone();
        f(&mut new);
        match kube::core::cel::validate_cel_update(&new, &old) {
            Ok(()) => vec![],
            Err(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field_path, e.message))
                .collect::<Vec<_>>(),
        }
    };
    assert_eq!(edit(&|d| set_size(d, 1 << 30)), Vec::<String>::new());
    let shrink = edit(&|d| set_size(d, 4096));
    assert!(
        shrink
            .iter()
            .any(|e| e.contains("sizeBytes") && e.contains("may only grow")),
        "{shrink:?}"
    );
    let path_and_grow = edit(&|d| {
        set_size(d, 1 << 20);
        if let Some(f) = d.spec.source.file.as_mut() {
            f.path = "b.img".into();
        }
    });
    assert!(
        path_and_grow
            .iter()
            .any(|e| e.contains("path") && e.contains("immutable")),
        "{path_and_grow:?}"
    );
    // Growing keeps the other rules: still a multiple of blockSize.
    let ragged = edit(&|d| set_size(d, 8192 + 100));
    assert!(
        ragged.iter().any(|e| e.contains("multiple of blockSize")),
        "{ragged:?}"
    );
}
