//! The node's initiator name (`/etc/iscsi/initiatorname.iscsi`, `InitiatorName=iqn.…`): the
//! node ID the driver reports, which ControllerPublish admits to the Target's ACL.

use thiserror::Error;

/// The longest node ID kubelet accepts (a CSINode's `nodeID`).
pub const MAX_NODE_ID_LEN: usize = 192;

/// Why the initiator name cannot serve as the node ID.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InitiatorError {
    #[error("{file}: no InitiatorName= line (open-iscsi writes one at install: see iscsi-iname)")]
    Missing { file: String },
    #[error(
        "{file}: InitiatorName {name:?} is not an iSCSI name (iqn.YYYY-MM.domain[:id] or eui.16HEX)"
    )]
    Invalid { file: String, name: String },
    #[error(
        "{file}: InitiatorName is {len} bytes; a CSI node ID may have at most {MAX_NODE_ID_LEN} (kubelet's CSINode limit): choose a shorter initiator name"
    )]
    TooLong { file: String, len: usize },
}

/// The initiator name in the text of `file`: the last `InitiatorName=` line (comments and
/// blanks ignored), checked.
pub fn parse(file: &str, text: &str) -> Result<String, InitiatorError> {
    let name = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("InitiatorName="))
        .map(str::trim)
        .next_back()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| InitiatorError::Missing {
            file: file.to_string(),
        })?;
    if name.len() > MAX_NODE_ID_LEN {
        return Err(InitiatorError::TooLong {
            file: file.to_string(),
            len: name.len(),
        });
    }
    if !is_iscsi_name(name) {
        return Err(InitiatorError::Invalid {
            file: file.to_string(),
            name: name.to_string(),
        });
    }
    Ok(name.to_string())
}

/// An `iqn.` name (date, reversed domain, optional `:` part; no blanks or control characters)
/// or an `eui.` name (16 hex digits).
fn is_iscsi_name(name: &str) -> bool {
    if let Some(hex) = name.strip_prefix("eui.") {
        return hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    let Some(rest) = name.strip_prefix("iqn.") else {
        return false;
    };
    let b = rest.as_bytes();
    let date_ok = b.len() > 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'.';
    date_ok
        && rest
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "/etc/iscsi/initiatorname.iscsi";

    #[test]
    fn reads_the_name_debian_writes() {
        let text = "## DO NOT EDIT OR REMOVE THIS FILE!\n## If you remove this file, the iSCSI daemon will not start.\n#InitiatorName=iqn.1993-08.org.debian:01:old\nInitiatorName=iqn.1993-08.org.debian:01:3c4f5a6b7c8d\n";
        assert_eq!(
            parse(F, text).unwrap(),
            "iqn.1993-08.org.debian:01:3c4f5a6b7c8d"
        );
        assert_eq!(
            parse(F, "InitiatorName= eui.02004567A425678D \n").unwrap(),
            "eui.02004567A425678D"
        );
    }

    #[test]
    fn refuses_missing_invalid_and_too_long_names() {
        assert!(matches!(parse(F, ""), Err(InitiatorError::Missing { .. })));
        assert!(matches!(
            parse(F, "# InitiatorName=iqn.2026-01.x:y\n"),
            Err(InitiatorError::Missing { .. })
        ));
        assert!(matches!(
            parse(F, "InitiatorName=\n"),
            Err(InitiatorError::Missing { .. })
        ));
        for bad in [
            "node-1",
            "iqn.x",
            "iqn.2026-1.x",
            "iqn.2026-01.a b",
            "eui.123",
        ] {
            assert!(
                matches!(
                    parse(F, &format!("InitiatorName={bad}\n")),
                    Err(InitiatorError::Invalid { .. })
                ),
                "{bad}"
            );
        }
        let long = format!("iqn.2026-01.dev.spindle:{}", "a".repeat(MAX_NODE_ID_LEN));
        let err = parse(F, &format!("InitiatorName={long}\n")).unwrap_err();
        assert!(err.to_string().contains("at most 192"), "{err}");
        let exact = format!("iqn.2026-01.x:{}", "a".repeat(MAX_NODE_ID_LEN - 14));
        assert_eq!(exact.len(), MAX_NODE_ID_LEN);
        assert_eq!(parse(F, &format!("InitiatorName={exact}")).unwrap(), exact);
    }
}
