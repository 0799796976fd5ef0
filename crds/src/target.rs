//! `Target`: an iSCSI target exporting Devices of one node as LUNs.

use std::collections::HashSet;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::chap::{ChapAlgorithm, algorithms_problem};
use crate::condition::Condition;
use crate::names::{
    IQN_MAX_LEN, IQN_PATTERN, OBJECT_NAME_PATTERN, is_valid_iqn, is_valid_object_name,
};
use crate::qos::TargetQos;
use crate::validate::{Errors, FieldError, check_object_name};

/// Prefix of the IQN a Target gets when `spec.iqn` is not set (followed by `<namespace>.<name>`).
pub const DEFAULT_IQN_PREFIX: &str = "iqn.2026-11.dev.spindle:";

/// Highest LUN number (SAM flat space addressing: 14 bits).
pub const MAX_LUN: u64 = 16383;

/// Most LUNs one Target may carry.
const MAX_LUNS: usize = 256;

/// Range RFC 7143 allows for the data segment and burst lengths.
const ISCSI_LENGTH_MIN: u32 = 512;
const ISCSI_LENGTH_MAX: u32 = 16_777_215;

/// Desired state of a Target: its name, portal, LUNs and who may log in.
// printcolumn(...) repeats `type_ = "string"` by design; clippy reads that as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "spindle.dev",
    version = "v1alpha1",
    kind = "Target",
    namespaced,
    status = "TargetStatus",
    shortname = "tgt",
    category = "spindle",
    doc = "An iSCSI target served by the node agent of the node its Devices live on.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the target accepts logins"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "Node serving the target"
    ),
    printcolumn(
        name = "IQN",
        type_ = "string",
        json_path = ".status.iqn",
        description = "iSCSI qualified name in effect"
    ),
    printcolumn(
        name = "Portal",
        type_ = "string",
        json_path = ".status.portals[*]",
        description = "Addresses (ip:port) initiators connect to"
    ),
    printcolumn(
        name = "Sessions",
        type_ = "integer",
        json_path = ".status.sessions",
        description = "Logged-in iSCSI sessions"
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
#[schemars(transform = crate::prose::flow_descriptions)]
pub struct TargetSpec {
    /// iSCSI qualified name (`iqn.YYYY-MM.reversed.domain[:suffix]` or `eui.` + 16 hex digits,
    /// lower case). Default: `iqn.2026-11.dev.spindle:<namespace>.<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(IQN_PATTERN), length(max = IQN_MAX_LEN))]
    pub iqn: Option<String>,
    /// TCP port of the portal on the node.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// Logical units: each maps a LUN number to a Device in the same namespace. All Devices must
    /// be on one node; the Target runs there. LUN numbers are unique.
    #[serde(default)]
    #[schemars(length(max = MAX_LUNS), extend("x-kubernetes-validations" = [{
        "rule": "self.all(l, self.exists_one(m, m.lun == l.lun))",
        "message": "LUN numbers must be unique",
    }]))]
    pub luns: Vec<LunSpec>,
    /// Which initiators may log in. Default: nobody.
    #[serde(default)]
    pub acl: Acl,
    /// CHAP authentication; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<ChapSpec>,
    /// iSCSI session parameters the target offers in login negotiation.
    #[serde(default)]
    pub iscsi: IscsiParams,
    /// Fair-share weight and limits (IOPS, bytes per second, burst); unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<TargetQos>,
}

impl TargetSpec {
    /// The Target's weight in its node's fair share (`spec.qos.weight`, default 1).
    pub fn weight(&self) -> u32 {
        self.qos.as_ref().and_then(|q| q.weight).unwrap_or(1)
    }
}

fn default_port() -> u16 {
    3260
}

/// One logical unit of a Target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LunSpec {
    /// LUN number the initiator sees (0 to 16383).
    #[schemars(range(max = MAX_LUN))]
    pub lun: u64,
    /// Name of the Device (same namespace) backing this LUN.
    #[schemars(pattern(OBJECT_NAME_PATTERN), length(max = 253))]
    pub device_ref: String,
}

/// Initiator access control. Empty (the default) admits nobody.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!(self.allowAll && self.initiators.size() > 0)",
    "message": "allowAll and initiators are mutually exclusive",
}]))]
pub struct Acl {
    /// IQNs of the initiators allowed to log in (unique).
    #[serde(default)]
    #[schemars(
        inner(pattern(IQN_PATTERN), length(max = IQN_MAX_LEN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub initiators: Vec<String>,
    /// Admit every initiator (must not be combined with `initiators`).
    #[serde(default)]
    pub allow_all: bool,
}

/// CHAP authentication settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChapSpec {
    /// Name of a Secret in the Target's namespace with keys `username` and `password` (and, when
    /// `mutual`, `mutualUsername` and `mutualPassword`).
    #[schemars(pattern(OBJECT_NAME_PATTERN), length(max = 253))]
    pub secret_ref: String,
    /// Require the target to authenticate to the initiator as well.
    #[serde(default)]
    pub mutual: bool,
    /// CHAP digest algorithms the Target accepts: `MD5`, `SHA1`, `SHA256`, `SHA3-256` (each
    /// once). The initiator's order decides among them. Default: all four, MD5 included for
    /// initiators that speak nothing else (libiscsi); leave MD5 out to refuse it, e.g.
    /// `[SHA3-256, SHA256]` to require at least SHA-256.
    #[serde(default = "ChapAlgorithm::default_allowed")]
    #[schemars(length(min = 1, max = 4), extend("x-kubernetes-list-type" = "set"))]
    pub algorithms: Vec<ChapAlgorithm>,
}

/// iSCSI login parameters (RFC 7143 section 13) the target offers. The defaults favour
/// throughput on a local network: large bursts and immediate data without an initial R2T.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.firstBurstLength <= self.maxBurstLength",
    "message": "must not exceed maxBurstLength",
    "fieldPath": ".firstBurstLength",
}]))]
pub struct IscsiParams {
    /// Largest data segment the target accepts in one PDU, in bytes (512 to 16777215).
    #[serde(default = "default_max_recv_data_segment_length")]
    #[schemars(range(min = ISCSI_LENGTH_MIN, max = ISCSI_LENGTH_MAX))]
    pub max_recv_data_segment_length: u32,
    /// Largest solicited data sequence, in bytes (512 to 16777215).
    #[serde(default = "default_max_burst_length")]
    #[schemars(range(min = ISCSI_LENGTH_MIN, max = ISCSI_LENGTH_MAX))]
    pub max_burst_length: u32,
    /// Largest unsolicited data an initiator may send with a command, in bytes (512 to
    /// 16777215, at most maxBurstLength).
    #[serde(default = "default_first_burst_length")]
    #[schemars(range(min = ISCSI_LENGTH_MIN, max = ISCSI_LENGTH_MAX))]
    pub first_burst_length: u32,
    /// Require the initiator to wait for an R2T before sending unsolicited Data-Out PDUs.
    #[serde(default, rename = "initialR2T")]
    pub initial_r2t: bool,
    /// Allow data in the command PDU itself.
    #[serde(default = "default_true")]
    pub immediate_data: bool,
    /// R2Ts the target keeps outstanding per task (1 to 65535).
    #[serde(default = "default_max_outstanding_r2t", rename = "maxOutstandingR2T")]
    #[schemars(range(min = 1, max = 65535))]
    pub max_outstanding_r2t: u32,
    /// Header digest offer: `None`, `CRC32C`, or `Optional` (accept whichever the initiator
    /// prefers). Default `Optional`.
    #[serde(default)]
    pub header_digest: Digest,
    /// Data digest offer: `None`, `CRC32C`, or `Optional` (accept whichever the initiator
    /// prefers). Default `Optional`.
    #[serde(default)]
    pub data_digest: Digest,
}

fn default_max_recv_data_segment_length() -> u32 {
    262_144
}
fn default_max_burst_length() -> u32 {
    1_048_576
}
fn default_first_burst_length() -> u32 {
    262_144
}
fn default_true() -> bool {
    true
}
fn default_max_outstanding_r2t() -> u32 {
    1
}

impl Default for IscsiParams {
    fn default() -> Self {
        Self {
            max_recv_data_segment_length: default_max_recv_data_segment_length(),
            max_burst_length: default_max_burst_length(),
            first_burst_length: default_first_burst_length(),
            initial_r2t: false,
            immediate_data: default_true(),
            max_outstanding_r2t: default_max_outstanding_r2t(),
            header_digest: Digest::default(),
            data_digest: Digest::default(),
        }
    }
}

/// Digest (HeaderDigest / DataDigest) the target offers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Digest {
    /// No digest.
    None,
    /// CRC32C digest required.
    #[serde(rename = "CRC32C")]
    Crc32c,
    /// Accept CRC32C or None, whichever the initiator lists first.
    #[default]
    Optional,
}

/// Observed state of a Target, written by the operator from what the agent reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::prose::flow_descriptions)]
pub struct TargetStatus {
    /// Ready, AgentReachable, and while it is deleted Deleting (one per type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Node serving the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Portal addresses as "ip:port".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub portals: Vec<String>,
    /// The IQN in effect (spec.iqn or the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iqn: Option<String>,
    /// Logged-in iSCSI sessions.
    #[serde(default)]
    pub sessions: u32,
    /// The QoS limits the agent enforces now (absent: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<TargetQos>,
    /// The metadata.generation the status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Target {
    /// The IQN this Target is served under: `spec.iqn`, or
    /// `iqn.2026-11.dev.spindle:<namespace>.<name>` (namespace `default` when unset).
    pub fn effective_iqn(&self) -> String {
        if let Some(iqn) = &self.spec.iqn {
            return iqn.clone();
        }
        let namespace = self.metadata.namespace.as_deref().unwrap_or("default");
        let name = self.metadata.name.as_deref().unwrap_or_default();
        format!("{DEFAULT_IQN_PREFIX}{namespace}.{name}")
    }

    /// Applies the rules the CRD schema enforces, for callers without an apiserver. Also checks
    /// that the default IQN derived from namespace and name is well formed.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        check_object_name(&mut errors, self.metadata.name.as_deref());
        let spec = &self.spec;
        match &spec.iqn {
            Some(iqn) => check_iqn(&mut errors, "spec.iqn", iqn),
            None if self.metadata.name.is_some() => {
                let iqn = self.effective_iqn();
                errors.check(
                    is_valid_iqn(&iqn),
                    "spec.iqn",
                    format!("default IQN {iqn:?} is not valid (too long?); set spec.iqn"),
                );
            }
            None => {}
        }
        errors.check(spec.port >= 1, "spec.port", "must be between 1 and 65535");
        check_luns(&mut errors, &spec.luns);
        check_acl(&mut errors, &spec.acl);
        if let Some(chap) = &spec.chap {
            errors.check(
                is_valid_object_name(&chap.secret_ref),
                "spec.chap.secretRef",
                format!("{:?} is not a valid Secret name", chap.secret_ref),
            );
            if let Some(p) = algorithms_problem(&chap.algorithms) {
                errors.add("spec.chap.algorithms", p);
            }
        }
        check_iscsi(&mut errors, &spec.iscsi);
        if let Some(qos) = &spec.qos {
            qos.check(&mut errors, "spec.qos");
        }
        errors.finish()
    }
}

fn check_iqn(errors: &mut Errors, field: &str, iqn: &str) {
    errors.check(
        is_valid_iqn(iqn),
        field,
        format!("{iqn:?} is not a well-formed iSCSI name (iqn.YYYY-MM.reversed.domain[:suffix] or eui.<16 hex>, at most 223 bytes)"),
    );
}

fn check_luns(errors: &mut Errors, luns: &[LunSpec]) {
    errors.check(
        luns.len() <= MAX_LUNS,
        "spec.luns",
        format!("at most {MAX_LUNS} LUNs"),
    );
    let mut seen = HashSet::new();
    for (i, lun) in luns.iter().enumerate() {
        errors.check(
            lun.lun <= MAX_LUN,
            format_args!("spec.luns[{i}].lun"),
            format!("{} is above {MAX_LUN}", lun.lun),
        );
        errors.check(
            seen.insert(lun.lun),
            format_args!("spec.luns[{i}].lun"),
            format!("duplicate LUN {}", lun.lun),
        );
        errors.check(
            is_valid_object_name(&lun.device_ref),
            format_args!("spec.luns[{i}].deviceRef"),
            format!("{:?} is not a valid Device name", lun.device_ref),
        );
    }
}

fn check_acl(errors: &mut Errors, acl: &Acl) {
    errors.check(
        !acl.allow_all || acl.initiators.is_empty(),
        "spec.acl",
        "allowAll and initiators are mutually exclusive",
    );
    let mut seen = HashSet::new();
    for (i, initiator) in acl.initiators.iter().enumerate() {
        let field = format!("spec.acl.initiators[{i}]");
        check_iqn(errors, &field, initiator);
        errors.check(
            seen.insert(initiator.as_str()),
            &field,
            format!("duplicate initiator {initiator:?}"),
        );
    }
}

fn check_iscsi(errors: &mut Errors, p: &IscsiParams) {
    for (name, value) in [
        ("maxRecvDataSegmentLength", p.max_recv_data_segment_length),
        ("maxBurstLength", p.max_burst_length),
        ("firstBurstLength", p.first_burst_length),
    ] {
        errors.check(
            (ISCSI_LENGTH_MIN..=ISCSI_LENGTH_MAX).contains(&value),
            format_args!("spec.iscsi.{name}"),
            format!("{value} is not between {ISCSI_LENGTH_MIN} and {ISCSI_LENGTH_MAX}"),
        );
    }
    errors.check(
        p.first_burst_length <= p.max_burst_length,
        "spec.iscsi.firstBurstLength",
        "must not exceed maxBurstLength",
    );
    errors.check(
        (1..=65535).contains(&p.max_outstanding_r2t),
        "spec.iscsi.maxOutstandingR2T",
        format!("{} is not between 1 and 65535", p.max_outstanding_r2t),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Target {
        serde_yaml::from_str(yaml).expect("valid YAML manifest")
    }

    const MINIMAL: &str = "apiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {name: t0, namespace: prod}\nspec: {}\n";

    #[test]
    fn empty_spec_gets_documented_defaults() {
        let t = parse(MINIMAL);
        assert_eq!(t.spec.port, 3260);
        assert!(t.spec.luns.is_empty());
        assert_eq!(t.spec.acl, Acl::default());
        assert!(!t.spec.acl.allow_all && t.spec.acl.initiators.is_empty());
        assert_eq!(t.spec.chap, None);
        let p = &t.spec.iscsi;
        assert_eq!(p.max_recv_data_segment_length, 262_144);
        assert_eq!(p.max_burst_length, 1_048_576);
        assert_eq!(p.first_burst_length, 262_144);
        assert!(!p.initial_r2t && p.immediate_data);
        assert_eq!(p.max_outstanding_r2t, 1);
        assert_eq!(
            (p.header_digest, p.data_digest),
            (Digest::Optional, Digest::Optional)
        );
        assert_eq!(t.validate(), Ok(()));
    }

    #[test]
    fn partial_iscsi_block_keeps_other_defaults() {
        let t = parse(&MINIMAL.replace(
            "spec: {}",
            "spec:\n  iscsi: {initialR2T: true, maxOutstandingR2T: 4, dataDigest: CRC32C}",
        ));
        assert!(t.spec.iscsi.initial_r2t);
        assert_eq!(t.spec.iscsi.max_outstanding_r2t, 4);
        assert_eq!(t.spec.iscsi.data_digest, Digest::Crc32c);
        assert_eq!(t.spec.iscsi.header_digest, Digest::Optional);
        assert_eq!(t.spec.iscsi.max_burst_length, 1_048_576);
    }

    #[test]
    fn chap_algorithms_default_to_all_and_are_checked() {
        let t = parse(&MINIMAL.replace("spec: {}", "spec:\n  chap: {secretRef: s}"));
        let chap = t.spec.chap.as_ref().expect("chap");
        assert_eq!(chap.algorithms, ChapAlgorithm::ALL);
        let t = parse(&MINIMAL.replace(
            "spec: {}",
            "spec:\n  chap: {secretRef: s, algorithms: [SHA256, SHA3-256]}",
        ));
        let chap = t.spec.chap.as_ref().expect("chap");
        assert_eq!(
            chap.algorithms,
            [ChapAlgorithm::Sha256, ChapAlgorithm::Sha3_256]
        );
        assert_eq!(t.validate(), Ok(()));
        let bad = "spec:\n  chap: {secretRef: s, algorithms: [SHA-256]}";
        let e = serde_yaml::from_str::<Target>(&MINIMAL.replace("spec: {}", bad)).unwrap_err();
        assert!(e.to_string().contains("SHA-256"), "{e}");
        for (list, want) in [
            ("[]", "at least one"),
            ("[MD5, MD5]", "MD5 is listed twice"),
        ] {
            let t = parse(&MINIMAL.replace(
                "spec: {}",
                &format!("spec:\n  chap: {{secretRef: s, algorithms: {list}}}"),
            ));
            let errors = t.validate().unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].field, "spec.chap.algorithms");
            assert!(errors[0].message.contains(want), "{}", errors[0]);
        }
    }

    #[test]
    fn effective_iqn_defaults_from_namespace_and_name() {
        let mut t = parse(MINIMAL);
        assert_eq!(t.effective_iqn(), "iqn.2026-11.dev.spindle:prod.t0");
        t.metadata.namespace = None;
        assert_eq!(t.effective_iqn(), "iqn.2026-11.dev.spindle:default.t0");
        t.spec.iqn = Some("iqn.2001-04.com.example:disk".into());
        assert_eq!(t.effective_iqn(), "iqn.2001-04.com.example:disk");
    }

    #[test]
    fn duplicate_lun_names_the_second_entry() {
        let mut t = parse(MINIMAL);
        t.spec.luns = vec![
            LunSpec {
                lun: 0,
                device_ref: "a".into(),
            },
            LunSpec {
                lun: 0,
                device_ref: "b".into(),
            },
            LunSpec {
                lun: 1,
                device_ref: "c".into(),
            },
        ];
        let errors = t.validate().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].to_string(), "spec.luns[1].lun: duplicate LUN 0");
    }

    #[test]
    fn default_iqn_too_long_is_reported() {
        let mut t = parse(MINIMAL);
        t.metadata.name = Some("a".repeat(200));
        let errors = t.validate().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.iqn");
        t.spec.iqn = Some("iqn.2026-11.dev.spindle:short".into());
        assert_eq!(t.validate(), Ok(()));
    }

    #[test]
    fn qos_limits_parse_and_bad_ones_name_their_field() {
        let t = parse(&MINIMAL.replace(
            "spec: {}",
            "spec:\n  qos: {weight: 3, writeIops: 200, readBytesPerSecond: 100}",
        ));
        let q = t.spec.qos.as_ref().expect("qos parsed");
        assert_eq!((q.weight, q.write_iops), (Some(3), Some(200)));
        let errors = t.validate().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.qos.readBytesPerSecond");
        assert_eq!(parse(MINIMAL).spec.qos, None);
    }

    #[test]
    fn digest_wire_names() {
        let names: Vec<String> = [Digest::None, Digest::Crc32c, Digest::Optional]
            .iter()
            .map(|d| serde_json::to_string(d).expect("serializes"))
            .collect();
        assert_eq!(names, ["\"None\"", "\"CRC32C\"", "\"Optional\""]);
    }
}
