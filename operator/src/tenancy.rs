//! What a namespace may claim on the storage nodes, which are shared by every namespace: iSCSI
//! names and portal ports. A Target is served only under an IQN of its own namespace — Spindle's
//! form `iqn.2026-11.dev.spindle:<namespace>.<anything>` (the default is
//! `…:<namespace>.<name>`), or a name starting with a prefix an administrator granted to that
//! namespace (`--iqn-prefix NAMESPACE=PREFIX`) — and only on a port of the range the
//! administrator allows (`--target-ports FIRST-LAST`): the agents run in the host network, so a
//! Target's port is the node's.
//!
//! A namespace name is a DNS label (no '.'), so the '.' after it ends it: `…:a.x` belongs to
//! namespace `a`, never to `a-b` or `a.b` (which cannot exist). Grants are checked at start:
//! one may not reach into Spindle's own names (`iqn.2026-11.dev.spindle:`), and two namespaces'
//! grants may not overlap, so every IQN has at most one owning namespace.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use spindle_crds::{DEFAULT_IQN_PREFIX, Target};

use crate::conditions::Problem;
use crate::conditions::reason;

/// The ports Targets may use by default: the iSCSI port and the nine above it.
pub const DEFAULT_PORTS: RangeInclusive<u16> = 3260..=3269;

/// Names and ports namespaces may use; see the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenancy {
    /// Extra IQN prefixes, by namespace (lower case).
    grants: BTreeMap<String, Vec<String>>,
    /// Ports Targets may listen on.
    ports: RangeInclusive<u16>,
}

impl Default for Tenancy {
    fn default() -> Self {
        Self {
            grants: BTreeMap::new(),
            ports: DEFAULT_PORTS,
        }
    }
}

/// A grant or port range the operator refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenancyError {
    /// `--iqn-prefix` is not `NAMESPACE=PREFIX` with a valid namespace and prefix.
    #[error("--iqn-prefix {0:?}: {1}")]
    Grant(String, String),
    /// Two namespaces were granted overlapping prefixes.
    #[error(
        "--iqn-prefix: {a_ns}={a:?} and {b_ns}={b:?} overlap: an IQN may belong to one namespace only"
    )]
    Overlap {
        /// First namespace.
        a_ns: String,
        /// Its prefix.
        a: String,
        /// Second namespace.
        b_ns: String,
        /// Its prefix.
        b: String,
    },
    /// `--target-ports` is not `PORT` or `FIRST-LAST` with 1 <= FIRST <= LAST <= 65535.
    #[error("--target-ports {0:?}: {1}")]
    Ports(String, String),
}

/// Parses one `--iqn-prefix NAMESPACE=PREFIX`.
pub fn parse_grant(text: &str) -> Result<(String, String), TenancyError> {
    let bad = |why: &str| TenancyError::Grant(text.to_owned(), why.to_owned());
    let (ns, prefix) = text
        .split_once('=')
        .ok_or_else(|| bad("expected NAMESPACE=PREFIX"))?;
    if !is_dns_label(ns) {
        return Err(bad(
            "the namespace is not a valid namespace name (DNS label)",
        ));
    }
    let prefix = prefix.to_ascii_lowercase();
    let charset = prefix
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".:-".contains(&b));
    let scheme = prefix.strip_prefix("iqn.").or(prefix.strip_prefix("eui."));
    if !charset || scheme.is_none_or(str::is_empty) {
        return Err(bad(
            "the prefix must start with \"iqn.\" or \"eui.\", continue after it, and use only \
             a-z, 0-9, '.', ':' and '-'",
        ));
    }
    if overlaps(&prefix, DEFAULT_IQN_PREFIX) {
        return Err(bad(&format!(
            "the prefix overlaps Spindle's own names ({DEFAULT_IQN_PREFIX}<namespace>.), which \
             belong to their namespaces already"
        )));
    }
    Ok((ns.to_owned(), prefix))
}

/// Parses `--target-ports PORT` or `FIRST-LAST`.
pub fn parse_ports(text: &str) -> Result<RangeInclusive<u16>, TenancyError> {
    let bad = |why: &str| TenancyError::Ports(text.to_owned(), why.to_owned());
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| bad("expected PORT or FIRST-LAST, ports 1 to 65535"))
    };
    let (first, last) = (port(first)?, port(last)?);
    if first > last {
        return Err(bad("FIRST is above LAST"));
    }
    Ok(first..=last)
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// One is a prefix of the other: some IQN would match both.
fn overlaps(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// `iqn.2026-11.dev.spindle:<namespace>.`: the names every namespace owns.
pub fn namespace_iqn_prefix(namespace: &str) -> String {
    format!("{DEFAULT_IQN_PREFIX}{namespace}.")
}

impl Tenancy {
    /// The rules from parsed `--iqn-prefix` grants and `--target-ports`; refuses grants of two
    /// namespaces that overlap.
    pub fn new(
        grants: impl IntoIterator<Item = (String, String)>,
        ports: RangeInclusive<u16>,
    ) -> Result<Self, TenancyError> {
        let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (ns, prefix) in grants {
            for (other_ns, others) in &by_ns {
                if let Some(other) = others
                    .iter()
                    .find(|o| *other_ns != ns && overlaps(o, &prefix))
                {
                    return Err(TenancyError::Overlap {
                        a_ns: other_ns.clone(),
                        a: other.clone(),
                        b_ns: ns,
                        b: prefix,
                    });
                }
            }
            let list = by_ns.entry(ns).or_default();
            if !list.contains(&prefix) {
                list.push(prefix);
            }
        }
        Ok(Self {
            grants: by_ns,
            ports,
        })
    }

    /// Why `t` may not be served under its IQN (`spec.iqn`, or the default), if it may not.
    pub fn iqn_problem(&self, t: &Target) -> Option<Problem> {
        let ns = t.metadata.namespace.as_deref().unwrap_or("default");
        let iqn = t.effective_iqn().to_ascii_lowercase();
        let own = namespace_iqn_prefix(ns);
        let granted = self.grants.get(ns).map(Vec::as_slice).unwrap_or_default();
        if (iqn.starts_with(&own) && iqn.len() > own.len())
            || granted.iter().any(|g| iqn.starts_with(g.as_str()))
        {
            return None;
        }
        let grants = if granted.is_empty() {
            String::new()
        } else {
            format!(" or a name starting with a prefix granted to it ({granted:?})")
        };
        Some(Problem {
            reason: reason::IQN_NOT_ALLOWED,
            message: format!(
                "spec.iqn: {iqn:?} is not a name of namespace {ns:?}: a Target may use \
                 {own}<name> (the default when spec.iqn is unset){grants}; change spec.iqn, or \
                 ask an administrator to grant a prefix (chart value operator.iqnPrefixes)"
            ),
        })
    }

    /// Why `t` may not listen on `spec.port`, if it may not.
    pub fn port_problem(&self, t: &Target) -> Option<Problem> {
        let port = t.spec.port;
        if self.ports.contains(&port) {
            return None;
        }
        Some(Problem {
            reason: reason::PORT_NOT_ALLOWED,
            message: format!(
                "spec.port: {port} is outside the ports Targets may use on the storage nodes \
                 ({}-{}); pick one in that range, or ask an administrator to widen it (chart \
                 value operator.targetPorts)",
                self.ports.start(),
                self.ports.end()
            ),
        })
    }

    /// Every reason `t` may not be served at all (names and ports it may not use).
    pub fn problems(&self, t: &Target) -> Vec<Problem> {
        [self.iqn_problem(t), self.port_problem(t)]
            .into_iter()
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(ns: &str, name: &str, iqn: Option<&str>, port: u16) -> Target {
        let mut spec = serde_json::json!({"port": port});
        if let Some(iqn) = iqn {
            spec["iqn"] = iqn.into();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "spindle.dev/v1alpha1", "kind": "Target",
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        }))
        .expect("target")
    }

    fn grants(list: &[&str]) -> Tenancy {
        let parsed = list.iter().map(|g| parse_grant(g).expect("grant"));
        Tenancy::new(parsed, DEFAULT_PORTS).expect("tenancy")
    }

    #[test]
    fn iqns_belong_to_their_namespace() {
        let t = grants(&["legacy=iqn.2001-04.com.example:db.", "hw=eui.0200"]);
        // (namespace, spec.iqn, allowed)
        let cases = [
            ("a", None, true),
            ("a", Some("iqn.2026-11.dev.spindle:a.db"), true),
            ("a", Some("iqn.2026-11.dev.spindle:a.other.name"), true),
            ("a", Some("iqn.2026-11.dev.spindle:a.x:y"), true),
            // Another namespace's names, including one the namespace name is a prefix of.
            ("a", Some("iqn.2026-11.dev.spindle:default.db"), false),
            ("a", Some("iqn.2026-11.dev.spindle:a-b.db"), false),
            ("a-b", Some("iqn.2026-11.dev.spindle:a.db"), false),
            ("a", Some("iqn.2026-11.dev.spindle:ab.db"), false),
            // The namespace's own prefix with nothing after it, or without the separator.
            ("a", Some("iqn.2026-11.dev.spindle:a"), false),
            ("a", Some("iqn.2026-11.dev.spindle:a."), false),
            ("a", Some("iqn.2026-11.dev.spindle:a:db"), false),
            ("a", Some("iqn.2026-11.dev.spindle"), false),
            // Names of other authorities: only with a grant, only to its namespace.
            ("a", Some("iqn.2001-04.com.example:db.main"), false),
            ("legacy", Some("iqn.2001-04.com.example:db.main"), true),
            ("legacy", Some("iqn.2001-04.com.example:web"), false),
            ("legacy", Some("iqn.2026-11.dev.spindle:legacy.db"), true),
            ("hw", Some("eui.02004567A425678D"), true),
            ("legacy", Some("eui.02004567A425678D"), false),
        ];
        for (ns, iqn, allowed) in cases {
            let p = t.iqn_problem(&target(ns, "db", iqn, 3260));
            assert_eq!(p.is_none(), allowed, "{ns} {iqn:?}: {p:?}");
            if let Some(p) = p {
                assert_eq!(p.reason, "IqnNotAllowed");
                assert!(p.message.starts_with("spec.iqn: "), "{}", p.message);
                assert!(
                    p.message
                        .contains(&format!("iqn.2026-11.dev.spindle:{ns}.<name>")),
                    "{}",
                    p.message
                );
            }
        }
        let p = t
            .iqn_problem(&target("legacy", "db", Some("iqn.2001-04.com.x:y"), 3260))
            .expect("refused");
        assert!(p.message.contains("iqn.2001-04.com.example:db."), "{p:?}");
    }

    #[test]
    fn ports_come_from_the_allowed_range() {
        let t = Tenancy::default();
        for (port, allowed) in [(3260, true), (3269, true), (3270, false), (22, false)] {
            let p = t.port_problem(&target("a", "db", None, port));
            assert_eq!(p.is_none(), allowed, "{port}");
            if let Some(p) = p {
                assert_eq!(p.reason, "PortNotAllowed");
                assert!(p.message.starts_with("spec.port: "), "{}", p.message);
                assert!(p.message.contains("(3260-3269)"), "{}", p.message);
            }
        }
        let wide = Tenancy::new([], parse_ports("3000-4000").expect("range")).expect("tenancy");
        assert!(wide.port_problem(&target("a", "db", None, 3999)).is_none());
        let both = Tenancy::default().problems(&target(
            "a",
            "db",
            Some("iqn.2026-11.dev.spindle:b.db"),
            80,
        ));
        let reasons: Vec<&str> = both.iter().map(|p| p.reason).collect();
        assert_eq!(reasons, ["IqnNotAllowed", "PortNotAllowed"]);
    }

    #[test]
    fn flags_parse_and_refuse_what_is_ambiguous() {
        assert_eq!(parse_ports("3260"), Ok(3260..=3260));
        assert_eq!(parse_ports("3260-3269"), Ok(3260..=3269));
        for bad in ["", "0-10", "3270-3260", "a-b", "3260-", "70000"] {
            assert!(parse_ports(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_grant("legacy=IQN.2001-04.com.Example:"),
            Ok(("legacy".into(), "iqn.2001-04.com.example:".into()))
        );
        for bad in [
            "legacy",
            "=iqn.2001-04.com.example:",
            "Legacy=iqn.2001-04.com.example:",
            "a.b=iqn.2001-04.com.example:",
            "legacy=",
            "legacy=iqn.",
            "legacy=naa.5000",
            "legacy=iqn.2001-04.com.example:has space",
            // Spindle's own names, or a prefix covering them.
            "legacy=iqn.2026-11.dev.spindle:default.",
            "legacy=iqn.2026-11.dev.spindle:",
            "legacy=iqn.2026-11.dev",
        ] {
            assert!(parse_grant(bad).is_err(), "{bad:?}");
        }
        let overlap = [
            parse_grant("a=iqn.2001-04.com.example:").expect("a"),
            parse_grant("b=iqn.2001-04.com.example:db").expect("b"),
        ];
        let e = Tenancy::new(overlap, DEFAULT_PORTS).expect_err("overlap");
        assert!(e.to_string().contains("overlap"), "{e}");
        let same_ns = [
            parse_grant("a=iqn.2001-04.com.example:").expect("a"),
            parse_grant("a=iqn.2001-04.com.example:db").expect("a"),
        ];
        assert!(Tenancy::new(same_ns, DEFAULT_PORTS).is_ok());
    }
}
