//! StorageClass parameters (CreateVolume's `parameters`): what a volume is made of.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;

use spindle_crds::{TargetQos, WriteCache};

use super::qos_parameters;

/// The storage node holding the volume (default: the agent with the most free bytes).
pub const NODE: &str = "spindle.dev/node";
/// CHAP: `oneway` (default), `mutual` or `none`.
pub const CHAP: &str = "spindle.dev/chap";
/// Logical block size: `512` (default) or `4096`.
pub const BLOCK_SIZE: &str = "spindle.dev/blockSize";
/// `true` advertises UNMAP (discards punch holes in the backing file); default `false`.
pub const THIN: &str = "spindle.dev/thinProvisioning";
/// `writeback` (default) or `writethrough`.
pub const WRITE_CACHE: &str = "spindle.dev/writeCache";
/// The Target's TCP port (default 3260), within the ports the operator allows.
pub const PORT: &str = "spindle.dev/port";

/// Extra-create-metadata the external-provisioner adds with `--extra-create-metadata`.
pub const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
/// See [`PVC_NAME`].
pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
/// See [`PVC_NAME`].
pub const PV_NAME: &str = "csi.storage.k8s.io/pv/name";
/// Prefix of the parameters the provisioner reserves (secrets, fstype, metadata).
const PROVISIONER_PREFIX: &str = "csi.storage.k8s.io/";

/// The iSCSI port, a Target's default.
pub const DEFAULT_PORT: u16 = 3260;

/// How a volume's Target authenticates initiators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChapMode {
    /// No CHAP.
    None,
    /// The initiator proves it knows the volume's secret.
    OneWay,
    /// Both ends prove it.
    Mutual,
}

/// A volume's parameters, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameters {
    /// `spindle.dev/node`, when given.
    pub node: Option<String>,
    pub chap: ChapMode,
    pub block_size: u32,
    pub thin: bool,
    pub write_cache: WriteCache,
    pub port: u16,
    /// The Target's `spec.qos` (the `spindle.dev/*Iops`, `*BytesPerSecond`, `burstSeconds`
    /// parameters, see [`qos_parameters`]).
    pub qos: Option<TargetQos>,
    /// The provisioner's metadata (PVC name and namespace, PV name), by parameter key.
    pub metadata: BTreeMap<String, String>,
}

/// A parameter the controller refuses (INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    /// Keys the driver does not know.
    #[error(
        "unknown parameter(s) {0:?}: the driver knows spindle.dev/node, spindle.dev/chap, spindle.dev/blockSize, spindle.dev/thinProvisioning, spindle.dev/writeCache, spindle.dev/port, spindle.dev/readIops, spindle.dev/writeIops, spindle.dev/readBytesPerSecond, spindle.dev/writeBytesPerSecond, spindle.dev/burstSeconds"
    )]
    Unknown(Vec<String>),
    /// A known key with a value it cannot take.
    #[error("parameter {key}={value:?}: {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: String,
    },
}

/// Parses `params`; the Target port must lie in `ports` (the operator's `--target-ports`).
pub fn parse(
    params: &HashMap<String, String>,
    ports: &RangeInclusive<u16>,
) -> Result<Parameters, ParameterError> {
    let mut unknown: Vec<String> = params
        .keys()
        .filter(|k| {
            ![NODE, CHAP, BLOCK_SIZE, THIN, WRITE_CACHE, PORT].contains(&k.as_str())
                && !qos_parameters::KEYS.contains(&k.as_str())
                && !k.starts_with(PROVISIONER_PREFIX)
        })
        .cloned()
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(ParameterError::Unknown(unknown));
    }
    let get = |k: &str| params.get(k).map(String::as_str);
    let invalid = |key: &'static str, value: &str, why: &str| ParameterError::Invalid {
        key,
        value: value.to_owned(),
        why: why.to_owned(),
    };
    let node = match get(NODE) {
        None => None,
        Some(n) if is_node_name(n) => Some(n.to_owned()),
        Some(n) => return Err(invalid(NODE, n, "not a valid node name")),
    };
    let chap = match get(CHAP) {
        None | Some("oneway") => ChapMode::OneWay,
        Some("mutual") => ChapMode::Mutual,
        Some("none") => ChapMode::None,
        Some(v) => return Err(invalid(CHAP, v, "must be oneway, mutual or none")),
    };
    let block_size = match get(BLOCK_SIZE) {
        None | Some("512") => 512,
        Some("4096") => 4096,
        Some(v) => return Err(invalid(BLOCK_SIZE, v, "must be 512 or 4096")),
    };
    let thin = match get(THIN) {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => return Err(invalid(THIN, v, "must be true or false")),
    };
    let write_cache = match get(WRITE_CACHE) {
        None | Some("writeback") => WriteCache::Writeback,
        Some("writethrough") => WriteCache::Writethrough,
        Some(v) => return Err(invalid(WRITE_CACHE, v, "must be writeback or writethrough")),
    };
    let port = match get(PORT) {
        None => DEFAULT_PORT,
        Some(v) => match v.parse::<u16>() {
            Ok(p) if ports.contains(&p) => p,
            _ => {
                return Err(invalid(
                    PORT,
                    v,
                    &format!(
                        "must be a port in {}-{} (the ports the operator allows Targets)",
                        ports.start(),
                        ports.end()
                    ),
                ));
            }
        },
    };
    let qos = qos_parameters::parse(params)?;
    let metadata = [PVC_NAME, PVC_NAMESPACE, PV_NAME]
        .iter()
        .filter_map(|k| params.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    Ok(Parameters {
        node,
        chap,
        block_size,
        thin,
        write_cache,
        port,
        qos,
        metadata,
    })
}

/// Parses `--target-ports`: `PORT` or `FIRST-LAST`.
pub fn parse_ports(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let p = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p >= 1);
    match (p(a), p(b)) {
        (Some(a), Some(b)) if a <= b => Ok(a..=b),
        _ => Err(format!(
            "{text:?}: expected PORT or FIRST-LAST with 1 <= FIRST <= LAST <= 65535"
        )),
    }
}

/// A Kubernetes node name (DNS subdomain).
fn is_node_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: RangeInclusive<u16> = 3260..=3269;

    fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults() {
        let p = parse(&params(&[]), &PORTS).unwrap();
        assert_eq!(p.node, None);
        assert_eq!(p.chap, ChapMode::OneWay);
        assert_eq!(p.block_size, 512);
        assert!(!p.thin);
        assert_eq!(p.write_cache, WriteCache::Writeback);
        assert_eq!(p.port, 3260);
        assert_eq!(p.qos, None);
    }

    #[test]
    fn every_parameter_is_read() {
        let p = parse(
            &params(&[
                (NODE, "node-a"),
                (CHAP, "mutual"),
                (BLOCK_SIZE, "4096"),
                (THIN, "true"),
                (WRITE_CACHE, "writethrough"),
                (PORT, "3265"),
                (qos_parameters::WRITE_IOPS, "100"),
                (PVC_NAME, "data"),
                (PVC_NAMESPACE, "app"),
                (PV_NAME, "pvc-1"),
                ("csi.storage.k8s.io/fstype", "ext4"),
            ]),
            &PORTS,
        )
        .unwrap();
        assert_eq!(p.node.as_deref(), Some("node-a"));
        assert_eq!(p.chap, ChapMode::Mutual);
        assert_eq!(p.block_size, 4096);
        assert!(p.thin);
        assert_eq!(p.write_cache, WriteCache::Writethrough);
        assert_eq!(p.port, 3265);
        assert_eq!(p.qos.as_ref().and_then(|q| q.write_iops), Some(100));
        assert_eq!(p.metadata[PVC_NAME], "data");
        assert_eq!(p.metadata.len(), 3);
        assert_eq!(
            parse(&params(&[(CHAP, "none")]), &PORTS).unwrap().chap,
            ChapMode::None
        );
    }

    #[test]
    fn unknown_parameters_are_named() {
        let e = parse(&params(&[("fsType", "ext4"), ("replicas", "3")]), &PORTS).unwrap_err();
        assert_eq!(
            e,
            ParameterError::Unknown(vec!["fsType".into(), "replicas".into()])
        );
        assert!(e.to_string().contains("\"fsType\""), "{e}");
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (k, v) in [
            (CHAP, "twoway"),
            (BLOCK_SIZE, "1024"),
            (THIN, "yes"),
            (WRITE_CACHE, "none"),
            (PORT, "80"),
            (PORT, "x"),
            (PORT, "3270"),
            (NODE, "Node_A"),
        ] {
            let e = parse(&params(&[(k, v)]), &PORTS).unwrap_err();
            assert!(
                matches!(&e, ParameterError::Invalid { key, .. } if *key == k),
                "{k}={v}: {e}"
            );
            assert!(e.to_string().starts_with(&format!("parameter {k}=")), "{e}");
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_ports("3260-3269").unwrap(), 3260..=3269);
        assert_eq!(parse_ports("3260").unwrap(), 3260..=3260);
        for bad in ["", "0-3", "3269-3260", "a-b", "1-70000"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }
}
