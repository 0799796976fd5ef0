//! Name grammars shared by the schema (as regex patterns) and the Rust validation.

use std::sync::LazyLock;

use regex::Regex;

/// Longest iSCSI name in bytes (RFC 3720 section 3.2.6.1).
pub const IQN_MAX_LEN: usize = 223;

/// Well-formed iSCSI name: `iqn.YYYY-MM.reversed.domain[:anything]` or `eui.` + 16 hex digits.
/// Lower case only (iSCSI names are compared after lower-casing; we require the normal form).
pub const IQN_PATTERN: &str = r"^(iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[a-z0-9.:-]+)?|eui\.[0-9A-Fa-f]{16})$";

/// A Kubernetes object name (DNS-1123 subdomain), as used by references to Devices and Secrets.
pub const OBJECT_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";

/// Longest Kubernetes object name.
pub(crate) const OBJECT_NAME_MAX_LEN: usize = 253;

static IQN_RE: LazyLock<Regex> = LazyLock::new(|| compiled(IQN_PATTERN));
static OBJECT_NAME_RE: LazyLock<Regex> = LazyLock::new(|| compiled(OBJECT_NAME_PATTERN));

fn compiled(pattern: &str) -> Regex {
    // The patterns are constants checked by the unit tests below; failing here is a build bug.
    Regex::new(pattern).expect("constant pattern compiles")
}

/// True if `name` is a well-formed iSCSI name within [`IQN_MAX_LEN`] bytes.
pub fn is_valid_iqn(name: &str) -> bool {
    name.len() <= IQN_MAX_LEN && IQN_RE.is_match(name)
}

/// True if `name` is a valid Kubernetes object name.
pub(crate) fn is_valid_object_name(name: &str) -> bool {
    name.len() <= OBJECT_NAME_MAX_LEN && OBJECT_NAME_RE.is_match(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_world_iqns() {
        for ok in [
            "iqn.2026-11.dev.spindle:default.disk0",
            "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
            "iqn.1991-05.com.microsoft:host-1.example.com",
            "iqn.2003-01.org.linux-iscsi.host.x8664",
            "eui.02004567A425678D",
        ] {
            assert!(is_valid_iqn(ok), "{ok} should be valid");
        }
    }

    #[test]
    fn rejects_malformed_iqns() {
        for bad in [
            "",
            "iqn",
            "iqn.2026-13.dev.spindle",
            "iqn.26-11.dev.spindle",
            "iqn.2026-11.",
            "iqn.2026-11.-dev.spindle",
            "iqn.2026-11.dev.spindle:",
            "iqn.2026-11.dev.spindle:has space",
            "IQN.2026-11.dev.spindle",
            "iqn.2026-11.Dev.spindle",
            "eui.02004567A425678",
            "eui.02004567A425678DX",
            "naa.52004567BA64678D",
        ] {
            assert!(!is_valid_iqn(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn rejects_iqn_longer_than_223_bytes() {
        let long = format!("iqn.2026-11.dev.spindle:{}", "a".repeat(IQN_MAX_LEN));
        assert!(!is_valid_iqn(&long));
        let fits = format!("iqn.2026-11.dev.spindle:{}", "a".repeat(IQN_MAX_LEN - 24));
        assert_eq!(fits.len(), IQN_MAX_LEN);
        assert!(is_valid_iqn(&fits));
    }

    #[test]
    fn object_names() {
        assert!(is_valid_object_name("disk-0.a"));
        assert!(!is_valid_object_name("Disk"));
        assert!(!is_valid_object_name("-disk"));
        assert!(!is_valid_object_name(""));
    }
}
