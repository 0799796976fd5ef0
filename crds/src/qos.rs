//! `spec.qos` of a Target: its weight in the fair share of its ring, and the limits a tenant
//! can be given (commands per second and bytes per second, reads and writes apart, with a
//! burst). A limit is a cap: a command over it waits until the Target is back under it; it is
//! never failed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{Errors, FieldError};

/// Highest fair-share weight.
pub const MAX_WEIGHT: u32 = 1000;
/// Smallest bytes-per-second limit: one 4 KiB block per second.
pub const MIN_BYTES_PER_SECOND: u64 = 4096;
/// Highest limit of either kind (well above what one node moves; keeps the arithmetic exact).
pub const MAX_LIMIT: u64 = 1 << 50;
/// Longest burst.
pub const MAX_BURST_SECONDS: u32 = 60;
/// Burst when `burstSeconds` is not set.
pub const DEFAULT_BURST_SECONDS: u32 = 1;

/// Quality of service of a Target. Every limit is optional: absent means unlimited.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetQos {
    /// Fair-share weight of this Target among the Targets on its ring (1 to 1000, default 1):
    /// under contention a Target gets commands admitted in proportion to its weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_WEIGHT))]
    pub weight: Option<u32>,
    /// Most read commands (that read the medium) per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_LIMIT))]
    pub read_iops: Option<u64>,
    /// Most write commands (that write the medium) per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_LIMIT))]
    pub write_iops: Option<u64>,
    /// Most bytes read per second (at least 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_BYTES_PER_SECOND, max = MAX_LIMIT))]
    pub read_bytes_per_second: Option<u64>,
    /// Most bytes written per second (at least 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_BYTES_PER_SECOND, max = MAX_LIMIT))]
    pub write_bytes_per_second: Option<u64>,
    /// How long an idle Target may then run above its limits: the burst allowance is this many
    /// seconds of each limit (0 to 60, default 1; 0 paces the commands, with 50 ms of slack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_BURST_SECONDS))]
    pub burst_seconds: Option<u32>,
}

impl TargetQos {
    /// The burst in effect.
    pub fn burst(&self) -> u32 {
        self.burst_seconds.unwrap_or(DEFAULT_BURST_SECONDS)
    }

    /// True when some limit is set (a weight alone limits nothing).
    pub fn is_limited(&self) -> bool {
        self.read_iops.is_some()
            || self.write_iops.is_some()
            || self.read_bytes_per_second.is_some()
            || self.write_bytes_per_second.is_some()
    }

    /// Applies the schema's rules, naming fields under `field` (e.g. `spec.qos`); for callers
    /// that build a QoS outside a Target (the CSI driver's StorageClass parameters).
    pub fn validate(&self, field: &str) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        self.check(&mut errors, field);
        errors.finish()
    }

    /// Records what breaks the schema's rules, under `field` (e.g. `spec.qos`).
    pub(crate) fn check(&self, errors: &mut Errors, field: &str) {
        if let Some(w) = self.weight {
            errors.check(
                (1..=MAX_WEIGHT).contains(&w),
                format_args!("{field}.weight"),
                format!("{w} is not between 1 and {MAX_WEIGHT}"),
            );
        }
        for (name, value, min) in [
            ("readIops", self.read_iops, 1),
            ("writeIops", self.write_iops, 1),
            (
                "readBytesPerSecond",
                self.read_bytes_per_second,
                MIN_BYTES_PER_SECOND,
            ),
            (
                "writeBytesPerSecond",
                self.write_bytes_per_second,
                MIN_BYTES_PER_SECOND,
            ),
        ] {
            if let Some(v) = value {
                errors.check(
                    (min..=MAX_LIMIT).contains(&v),
                    format_args!("{field}.{name}"),
                    format!("{v} is not between {min} and {MAX_LIMIT}"),
                );
            }
        }
        if let Some(b) = self.burst_seconds {
            errors.check(
                b <= MAX_BURST_SECONDS,
                format_args!("{field}.burstSeconds"),
                format!("{b} is above {MAX_BURST_SECONDS}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(q: &TargetQos) -> Vec<String> {
        let mut e = Errors::default();
        q.check(&mut e, "spec.qos");
        e.finish()
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn absent_fields_are_unlimited_with_a_one_second_burst() {
        let q: TargetQos = serde_yaml::from_str("{}").unwrap();
        assert_eq!(q, TargetQos::default());
        assert!(!q.is_limited());
        assert_eq!(q.burst(), 1);
        assert!(errors_of(&q).is_empty());
        let q: TargetQos = serde_yaml::from_str("{weight: 5}").unwrap();
        assert!(!q.is_limited(), "a weight is not a limit");
    }

    #[test]
    fn camel_case_fields_parse() {
        let q: TargetQos = serde_yaml::from_str(
            "{readIops: 100, writeIops: 50, readBytesPerSecond: 1048576, \
             writeBytesPerSecond: 65536, burstSeconds: 0}",
        )
        .unwrap();
        assert_eq!(q.read_iops, Some(100));
        assert_eq!(q.write_iops, Some(50));
        assert_eq!(q.read_bytes_per_second, Some(1 << 20));
        assert_eq!(q.write_bytes_per_second, Some(65536));
        assert_eq!(q.burst(), 0);
        assert!(q.is_limited());
        assert!(errors_of(&q).is_empty());
    }

    #[test]
    fn each_bad_field_is_named() {
        let q = TargetQos {
            weight: Some(0),
            read_iops: Some(0),
            write_iops: Some(MAX_LIMIT + 1),
            read_bytes_per_second: Some(512),
            write_bytes_per_second: Some(4096),
            burst_seconds: Some(61),
        };
        assert_eq!(
            errors_of(&q),
            [
                "spec.qos.weight: 0 is not between 1 and 1000",
                "spec.qos.readIops: 0 is not between 1 and 1125899906842624",
                "spec.qos.writeIops: 1125899906842625 is not between 1 and 1125899906842624",
                "spec.qos.readBytesPerSecond: 512 is not between 4096 and 1125899906842624",
                "spec.qos.burstSeconds: 61 is above 60",
            ]
        );
        let q = TargetQos {
            weight: Some(1001),
            ..TargetQos::default()
        };
        assert_eq!(
            errors_of(&q),
            ["spec.qos.weight: 1001 is not between 1 and 1000"]
        );
    }

    #[test]
    fn a_negative_or_fractional_limit_is_refused_by_the_parser() {
        assert!(serde_yaml::from_str::<TargetQos>("{readIops: -1}").is_err());
        assert!(serde_yaml::from_str::<TargetQos>("{readIops: 1.5}").is_err());
    }
}
