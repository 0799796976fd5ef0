//! Names the controller derives from a volume: the volume ID (the name of its Device and its
//! Target), its CHAP Secret, its backing file, and the labels and annotations it marks them with.

use ring::digest::{SHA256, digest};

/// Longest volume ID: a DNS label, so that it also fits a label value and keeps the Target's
/// default IQN (`iqn.2026-11.dev.spindle:<namespace>.<id>`) well inside 223 bytes.
pub const MAX_ID_LEN: usize = 63;
/// Hex digits of the name's SHA-256 a derived ID ends with.
const HASH_HEX: usize = 12;

/// Label on every object the controller creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "spindle-csi";
/// Annotation: the CreateVolume name the volume was made for (idempotency, hashed IDs).
pub const NAME_ANNOTATION: &str = "csi.spindle.dev/volume-name";
/// Label and annotation keys carrying the provisioner's extra-create-metadata.
pub const PVC_NAME_LABEL: &str = "csi.spindle.dev/pvc-name";
/// See [`PVC_NAME_LABEL`].
pub const PVC_NAMESPACE_LABEL: &str = "csi.spindle.dev/pvc-namespace";
/// See [`PVC_NAME_LABEL`].
pub const PV_NAME_LABEL: &str = "csi.spindle.dev/pv-name";
/// Annotation on the Target: the access mode the volume was created with (single-node modes
/// only), read by ControllerPublish.
pub const ACCESS_MODE_ANNOTATION: &str = "csi.spindle.dev/access-mode";
/// Annotation on the Target: the initiator that published the volume read-only.
pub const READONLY_ANNOTATION: &str = "csi.spindle.dev/readonly-initiators";

/// The volume ID for a CreateVolume `name`: the name itself when it is a DNS label of at most
/// [`MAX_ID_LEN`] bytes (PV names `pvc-<uid>` are), else its lower-cased letters and digits
/// (others become `-`), cut to fit, followed by `-` and 12 hex digits of the name's SHA-256.
/// None for an empty name.
pub fn volume_id(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    if is_volume_id(name) {
        return Some(name.to_owned());
    }
    let hash = digest(&SHA256, name.as_bytes());
    let hex: String = hash.as_ref()[..HASH_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut stem: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(MAX_ID_LEN - HASH_HEX - 1)
        .collect();
    stem = stem.trim_matches('-').to_owned();
    if stem.is_empty() {
        stem.push_str("vol");
    }
    Some(format!("{stem}-{hex}"))
}

/// True if `id` can be a volume ID (a DNS label of at most [`MAX_ID_LEN`] bytes). Anything else
/// names no volume of this driver.
pub fn is_volume_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ID_LEN
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The volume's CHAP Secret.
pub fn secret_name(id: &str) -> String {
    format!("{id}-chap")
}

/// The backing file, relative to the agent's data directory.
pub fn backing_path(id: &str) -> String {
    format!("csi/{id}.img")
}

/// True if `v` may be a label value (else it is kept as an annotation only).
pub fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_none_or(u8::is_ascii_alphanumeric)
        && b.last().is_none_or(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pv_names_are_kept() {
        let pv = "pvc-0b6f8c2e-1c4d-4e1a-9c1e-3f1d2a4b5c6d";
        assert_eq!(volume_id(pv).as_deref(), Some(pv));
        assert_eq!(volume_id("").as_deref(), None);
    }

    #[test]
    fn other_names_are_lowercased_and_hashed() {
        let a = volume_id("sanity-Node-Full-8F1A").unwrap();
        assert!(a.starts_with("sanity-node-full-8f1a-"), "{a}");
        assert!(is_volume_id(&a), "{a}");
        // Names differing only in case get different IDs.
        let b = volume_id("sanity-node-full-8F1A").unwrap();
        assert_ne!(a, b);
        assert_eq!(volume_id("sanity-Node-Full-8F1A").unwrap(), a, "stable");
    }

    #[test]
    fn long_and_odd_names_fit_a_dns_label() {
        for name in [
            "a".repeat(128),
            "_/_".into(),
            "Ünïcode ñame".into(),
            "-x-".into(),
            "x".repeat(64),
        ] {
            let id = volume_id(&name).unwrap();
            assert!(is_volume_id(&id), "{name:?} gave {id:?}");
            assert!(id.len() <= MAX_ID_LEN);
        }
        assert!(volume_id("_/_").unwrap().starts_with("vol-"));
    }

    #[test]
    fn volume_id_grammar() {
        assert!(is_volume_id("pvc-1"));
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_volume_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn derived_names() {
        assert_eq!(secret_name("pvc-1"), "pvc-1-chap");
        assert_eq!(backing_path("pvc-1"), "csi/pvc-1.img");
        assert!(is_label_value("data-db-0"));
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(!is_label_value("a/b"));
    }
}
