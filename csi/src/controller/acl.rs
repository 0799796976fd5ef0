//! ControllerPublish and -Unpublish as edits of a Target's `spec.acl.initiators`: a node ID is
//! the node's initiator IQN, and a volume admits one node at a time.

use spindle_crds::is_valid_iqn;

/// A node ID the controller cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    #[error(
        "node_id {0:?} is not an iSCSI initiator name (iqn.YYYY-MM.domain[:suffix] or eui.<16 hex digits>): no node has it"
    )]
    NotAnIqn(String),
}

/// The node ID as an initiator name, in the lower case the Target's ACL requires (iSCSI names
/// compare case-insensitively).
pub fn initiator(node_id: &str) -> Result<String, NodeIdError> {
    let lower = if node_id.starts_with("eui.") || node_id.starts_with("EUI.") {
        format!("eui.{}", node_id[4..].to_ascii_uppercase())
    } else {
        node_id.to_ascii_lowercase()
    };
    if is_valid_iqn(&lower) {
        Ok(lower)
    } else {
        Err(NodeIdError::NotAnIqn(node_id.to_owned()))
    }
}

/// What publishing to `iqn` does to an ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// It is already admitted: nothing to change.
    Already,
    /// The new list of initiators.
    Add(Vec<String>),
    /// Another node holds the volume.
    HeldBy(String),
}

/// Publishing to `iqn` when the ACL admits `initiators` (a single-node volume: at most one).
pub fn admit(initiators: &[String], iqn: &str) -> Admit {
    if initiators.iter().any(|i| i.eq_ignore_ascii_case(iqn)) {
        return Admit::Already;
    }
    match initiators.first() {
        Some(other) => Admit::HeldBy(other.clone()),
        None => Admit::Add(vec![iqn.to_owned()]),
    }
}

/// Unpublishing `iqn`: the new list, or None when it is not admitted (nothing to change).
pub fn remove(initiators: &[String], iqn: &str) -> Option<Vec<String>> {
    let kept: Vec<String> = initiators
        .iter()
        .filter(|i| !i.eq_ignore_ascii_case(iqn))
        .cloned()
        .collect();
    (kept.len() != initiators.len()).then_some(kept)
}

/// A list of read-only publications (annotation value: comma-separated IQNs) with `iqn` set
/// to `readonly`.
pub fn with_readonly(list: Option<&str>, iqn: &str, readonly: bool) -> String {
    let mut v: Vec<&str> = list
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty() && *s != iqn)
        .collect();
    if readonly {
        v.push(iqn);
    }
    v.join(",")
}

/// True if `iqn` was published read-only according to `list`.
pub fn is_readonly(list: Option<&str>, iqn: &str) -> bool {
    list.unwrap_or_default().split(',').any(|s| s == iqn)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "iqn.2026-11.dev.spindle:node-a";
    const B: &str = "iqn.2026-11.dev.spindle:node-b";

    #[test]
    fn node_ids_must_be_initiator_names() {
        assert_eq!(initiator(A).unwrap(), A);
        assert_eq!(
            initiator("IQN.1993-08.org.Debian:01:ABC").unwrap(),
            "iqn.1993-08.org.debian:01:abc"
        );
        assert_eq!(
            initiator("eui.02004567a425678d").unwrap(),
            "eui.02004567A425678D"
        );
        for bad in ["fake-node-id-1234", "", "node-a", "iqn.2026-11.x:has space"] {
            let e = initiator(bad).unwrap_err();
            assert!(e.to_string().contains("not an iSCSI initiator name"), "{e}");
        }
    }

    #[test]
    fn one_node_at_a_time() {
        assert_eq!(admit(&[], A), Admit::Add(vec![A.into()]));
        assert_eq!(admit(&[A.into()], A), Admit::Already);
        assert_eq!(admit(&[A.into()], B), Admit::HeldBy(A.into()));
        assert_eq!(admit(&[A.to_uppercase()], A), Admit::Already);
    }

    #[test]
    fn unpublish_removes_only_that_node() {
        assert_eq!(remove(&[A.into()], A), Some(vec![]));
        assert_eq!(remove(&[A.into(), B.into()], B), Some(vec![A.into()]));
        assert_eq!(remove(&[A.into()], B), None);
        assert_eq!(remove(&[], A), None);
    }

    #[test]
    fn readonly_publications() {
        let l = with_readonly(None, A, true);
        assert!(is_readonly(Some(&l), A));
        assert!(!is_readonly(Some(&l), B));
        assert_eq!(with_readonly(Some(&l), A, false), "");
        assert_eq!(with_readonly(Some(&l), A, true), A);
    }
}
