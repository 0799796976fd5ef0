//! SendTargets (RFC 7143 §13.3 and appendix C): the Text Response that lists targets and
//! their portals, filtered by what the asking initiator may access.

use super::login::AclPolicy;
use super::params::SessionType;
use super::text::{self, NOT_UNDERSTOOD, Pairs, REJECT};

/// One target as discovery shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryEntry {
    pub iqn: String,
    /// Portals as `TargetAddress` values: `ip:port,tpgt` (IPv6 as `[addr]:port,tpgt`).
    pub portals: Vec<String>,
    /// Who may see (and log in to) this target.
    pub acl: AclPolicy,
}

/// Who asks, and in which session.
#[derive(Clone, Copy, Debug)]
pub struct Asker<'a> {
    pub initiator_name: &'a str,
    pub session_type: SessionType,
    /// The target of a normal session.
    pub current_target: Option<&'a str>,
}

/// The targets `value` asks for: `All` (discovery sessions only), a target name, or empty
/// (the current target of a normal session). None when the request is not allowed here.
fn selected<'e>(
    value: &str,
    asker: &Asker<'_>,
    entries: &'e [DiscoveryEntry],
) -> Option<Vec<&'e DiscoveryEntry>> {
    let visible = entries
        .iter()
        .filter(|e| e.acl.allows(asker.initiator_name));
    match (value, asker.session_type) {
        ("All", SessionType::Discovery) => Some(visible.collect()),
        ("All", SessionType::Normal) => None,
        ("", SessionType::Normal) => {
            let current = asker.current_target?;
            Some(visible.filter(|e| e.iqn == current).collect())
        }
        ("", SessionType::Discovery) => None,
        (name, _) => Some(visible.filter(|e| e.iqn == name).collect()),
    }
}

/// The response keys for `SendTargets=<value>`: TargetName followed by its TargetAddress
/// keys, for each selected target the initiator may access; `SendTargets=Reject` when the
/// request is not allowed in this session.
pub fn send_targets(value: &str, asker: &Asker<'_>, entries: &[DiscoveryEntry]) -> Pairs {
    let Some(targets) = selected(value, asker, entries) else {
        return vec![("SendTargets".to_owned(), REJECT.to_owned())];
    };
    let mut out = Pairs::new();
    for target in targets {
        out.push(("TargetName".to_owned(), target.iqn.clone()));
        for portal in &target.portals {
            out.push(("TargetAddress".to_owned(), portal.clone()));
        }
    }
    out
}

/// Answers the keys of a full-feature-phase Text Request: SendTargets as above, any other key
/// with NotUnderstood. The result is the Text Response data (split it with
/// [`text::TextReply`] if longer than the initiator's MaxRecvDataSegmentLength).
pub fn respond(request: &Pairs, asker: &Asker<'_>, entries: &[DiscoveryEntry]) -> bytes::Bytes {
    let mut out = Pairs::new();
    for (key, value) in request {
        if key == "SendTargets" {
            out.extend(send_targets(value, asker, entries));
        } else {
            out.push((key.clone(), NOT_UNDERSTOOD.to_owned()));
        }
    }
    text::encode(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-ls";

    fn entries() -> Vec<DiscoveryEntry> {
        vec![
            DiscoveryEntry {
                iqn: "iqn.2026-11.dev.spindle:default.open".into(),
                portals: vec!["10.0.0.1:3260,1".into(), "[fd00::1]:3260,1".into()],
                acl: AclPolicy::AllowAll,
            },
            DiscoveryEntry {
                iqn: "iqn.2026-11.dev.spindle:default.mine".into(),
                portals: vec!["10.0.0.1:3261,1".into()],
                acl: AclPolicy::Only(vec![ME.into()]),
            },
            DiscoveryEntry {
                iqn: "iqn.2026-11.dev.spindle:default.theirs".into(),
                portals: vec!["10.0.0.1:3262,1".into()],
                acl: AclPolicy::Only(vec!["iqn.1994-05.com.redhat:other".into()]),
            },
        ]
    }

    fn discovery() -> Asker<'static> {
        Asker {
            initiator_name: ME,
            session_type: SessionType::Discovery,
            current_target: None,
        }
    }

    fn names(pairs: &Pairs) -> Vec<&str> {
        pairs
            .iter()
            .filter(|(k, _)| k == "TargetName")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn all_lists_visible_targets_with_their_portals() {
        let out = send_targets("All", &discovery(), &entries());
        assert_eq!(
            names(&out),
            [
                "iqn.2026-11.dev.spindle:default.open",
                "iqn.2026-11.dev.spindle:default.mine"
            ]
        );
        // Each TargetName is followed by its own addresses.
        assert_eq!(out[0].0, "TargetName");
        assert_eq!(out[1], ("TargetAddress".into(), "10.0.0.1:3260,1".into()));
        assert_eq!(out[2], ("TargetAddress".into(), "[fd00::1]:3260,1".into()));
        assert_eq!(out[3].0, "TargetName");
        assert_eq!(out[4], ("TargetAddress".into(), "10.0.0.1:3261,1".into()));
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn named_target_only_if_visible() {
        let e = entries();
        let mine = send_targets("iqn.2026-11.dev.spindle:default.mine", &discovery(), &e);
        assert_eq!(names(&mine), ["iqn.2026-11.dev.spindle:default.mine"]);
        let theirs = send_targets("iqn.2026-11.dev.spindle:default.theirs", &discovery(), &e);
        assert!(theirs.is_empty());
        let unknown = send_targets("iqn.nope", &discovery(), &e);
        assert!(unknown.is_empty());
    }

    #[test]
    fn normal_session_gets_current_target_and_no_all() {
        let asker = Asker {
            initiator_name: ME,
            session_type: SessionType::Normal,
            current_target: Some("iqn.2026-11.dev.spindle:default.open"),
        };
        let e = entries();
        assert_eq!(
            names(&send_targets("", &asker, &e)),
            ["iqn.2026-11.dev.spindle:default.open"]
        );
        assert_eq!(
            send_targets("All", &asker, &e),
            vec![("SendTargets".to_owned(), REJECT.to_owned())]
        );
        assert_eq!(
            send_targets("", &discovery(), &e),
            vec![("SendTargets".to_owned(), REJECT.to_owned())]
        );
    }

    #[test]
    fn text_request_round_trip_in_libiscsi_form() {
        let request = text::parse(b"SendTargets=All\0").expect("parses");
        let data = respond(&request, &discovery(), &entries());
        let back = text::parse(&data).expect("our text parses");
        // libiscsi accepts only TargetName and TargetAddress keys, names first.
        assert!(
            back.iter()
                .all(|(k, _)| k == "TargetName" || k == "TargetAddress")
        );
        assert_eq!(back.first().map(|(k, _)| k.as_str()), Some("TargetName"));
        let other = text::parse(b"X-foo=1\0").expect("parses");
        assert_eq!(
            &respond(&other, &discovery(), &entries())[..],
            b"X-foo=NotUnderstood\0"
        );
    }
}
