//! StorageClass parameters for a volume's QoS limits: they become its Target's `spec.qos`.
//! Byte rates take a binary or decimal suffix (`50Mi`, `100M`) as Kubernetes quantities do.

use std::collections::HashMap;

use spindle_crds::TargetQos;

use super::parameters::ParameterError;

/// Read commands per second.
pub const READ_IOPS: &str = "spindle.dev/readIops";
/// Write commands per second.
pub const WRITE_IOPS: &str = "spindle.dev/writeIops";
/// Bytes read per second (`50Mi`, `100M`, `1048576`).
pub const READ_BPS: &str = "spindle.dev/readBytesPerSecond";
/// Bytes written per second.
pub const WRITE_BPS: &str = "spindle.dev/writeBytesPerSecond";
/// Seconds of each limit an idle volume may use at once (default 1).
pub const BURST_SECONDS: &str = "spindle.dev/burstSeconds";

/// Every QoS parameter key.
pub const KEYS: [&str; 5] = [READ_IOPS, WRITE_IOPS, READ_BPS, WRITE_BPS, BURST_SECONDS];

/// The volume's QoS (None: no QoS parameter given), checked by the Target's own rules.
pub fn parse(params: &HashMap<String, String>) -> Result<Option<TargetQos>, ParameterError> {
    if !KEYS.iter().any(|k| params.contains_key(*k)) {
        return Ok(None);
    }
    let number = |key: &'static str, quantity: bool| -> Result<Option<u64>, ParameterError> {
        let Some(v) = params.get(key) else {
            return Ok(None);
        };
        let n = if quantity { bytes(v) } else { v.parse().ok() };
        n.map(Some).ok_or_else(|| ParameterError::Invalid {
            key,
            value: v.clone(),
            why: if quantity {
                "must be a whole number of bytes, with an optional suffix Ki, Mi, Gi, Ti, k, M, G or T".into()
            } else {
                "must be a whole number".into()
            },
        })
    };
    let burst = number(BURST_SECONDS, false)?.map(|b| u32::try_from(b).unwrap_or(u32::MAX));
    let q = TargetQos {
        weight: None,
        read_iops: number(READ_IOPS, false)?,
        write_iops: number(WRITE_IOPS, false)?,
        read_bytes_per_second: number(READ_BPS, true)?,
        write_bytes_per_second: number(WRITE_BPS, true)?,
        burst_seconds: burst,
    };
    if let Err(errors) = q.validate("spec.qos") {
        let e = &errors[0];
        let name = e.field.trim_start_matches("spec.qos.");
        let key = KEYS
            .iter()
            .find(|k| k.ends_with(&format!("/{name}")))
            .copied()
            .unwrap_or(READ_IOPS);
        return Err(ParameterError::Invalid {
            key,
            value: params.get(key).cloned().unwrap_or_default(),
            why: e.message.clone(),
        });
    }
    Ok(Some(q))
}

/// `123`, `50Mi`, `100M`: a whole number of bytes.
fn bytes(v: &str) -> Option<u64> {
    const SUFFIXES: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, unit) = SUFFIXES
        .iter()
        .find_map(|(s, m)| v.strip_suffix(s).map(|d| (d, *m)))
        .unwrap_or((v, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_qos_parameter_is_no_qos() {
        assert_eq!(parse(&params(&[("spindle.dev/node", "a")])).unwrap(), None);
    }

    #[test]
    fn every_qos_parameter_is_read() {
        let q = parse(&params(&[
            (READ_IOPS, "500"),
            (WRITE_IOPS, "200"),
            (READ_BPS, "50Mi"),
            (WRITE_BPS, "10M"),
            (BURST_SECONDS, "0"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(q.read_iops, Some(500));
        assert_eq!(q.write_iops, Some(200));
        assert_eq!(q.read_bytes_per_second, Some(50 << 20));
        assert_eq!(q.write_bytes_per_second, Some(10_000_000));
        assert_eq!(q.burst_seconds, Some(0));
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (k, v) in [
            (READ_IOPS, "0"),
            (READ_IOPS, "-5"),
            (WRITE_IOPS, "1.5"),
            (READ_BPS, "1Ki"),
            (WRITE_BPS, "10Qi"),
            (WRITE_BPS, "Mi"),
            (WRITE_BPS, "99999999999Ti"),
            (BURST_SECONDS, "61"),
            (BURST_SECONDS, "99999999999"),
        ] {
            let e = parse(&params(&[(k, v)])).unwrap_err();
            assert!(
                matches!(&e, ParameterError::Invalid { key, .. } if *key == k),
                "{k}={v}: {e}"
            );
            assert!(e.to_string().starts_with(&format!("parameter {k}=")), "{e}");
        }
    }
}
