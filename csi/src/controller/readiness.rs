//! Reading a Device's or a Target's Ready condition as the CSI answer it leads to: ready, not
//! yet (keep waiting), or failed with the gRPC code the condition's reason calls for.

use spindle_crds::{Condition, ConditionStatus};
use tonic::Code;

/// Where an object stands on its way to Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Ready=True for the object's current generation.
    Ready,
    /// Not yet: no status, an old generation, or a reason that may pass by itself.
    Pending(String),
    /// Ready=False for a reason waiting will not cure: the CSI code and the operator's message.
    Failed(Code, String),
}

/// The code a Ready=False `reason` answers with, or None when waiting may cure it.
pub fn code_for(reason: &str) -> Option<Code> {
    Some(match reason {
        // The agent's data directory has no room for the file (or its growth).
        "NoSpace" => Code::ResourceExhausted,
        // The node has no agent, or no Node object: the volume cannot be served there.
        "NodeNotFound" | "NoAgent" => Code::FailedPrecondition,
        // Another Device holds the same store, or the store vanished from the node.
        "BackingStoreInUse" | "BackingStoreMissing" => Code::FailedPrecondition,
        // The agent refused the request (the message names the field).
        "AgentRefused" => Code::InvalidArgument,
        // The namespace may not use the port or the IQN.
        "PortNotAllowed" | "IqnNotAllowed" => Code::InvalidArgument,
        // The driver's own Secret is missing or wrong: a bug or a tampered Secret.
        "ChapSecretNotFound" | "ChapSecretInvalid" => Code::Internal,
        // A LUN's Device belongs to someone else or is on another node.
        "DeviceClaimed" | "DeviceOnOtherNode" => Code::FailedPrecondition,
        // AgentUnreachable, AgentUnverified, DeviceNotReady, DeviceNotFound, Deleting...: wait.
        _ => return None,
    })
}

/// Reads `conditions` of an object at `generation`.
pub fn readiness(conditions: &[Condition], generation: Option<i64>) -> Readiness {
    let Some(c) = conditions.iter().find(|c| c.type_ == "Ready") else {
        return Readiness::Pending("no Ready condition yet".into());
    };
    let current = match (c.observed_generation, generation) {
        (Some(seen), Some(g)) => seen >= g,
        _ => true,
    };
    let said = if c.message.is_empty() {
        c.reason.clone()
    } else {
        format!("{}: {}", c.reason, c.message)
    };
    match c.status {
        ConditionStatus::True if current => Readiness::Ready,
        ConditionStatus::False if current => match code_for(&c.reason) {
            Some(code) => Readiness::Failed(code, said),
            None => Readiness::Pending(said),
        },
        _ => Readiness::Pending(said),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(status: ConditionStatus, reason: &str, generation: Option<i64>) -> Vec<Condition> {
        vec![Condition {
            type_: "Ready".into(),
            status,
            reason: reason.into(),
            message: "spec.source.file: no space left".into(),
            last_transition_time: None,
            observed_generation: generation,
        }]
    }

    #[test]
    fn ready_only_for_the_current_generation() {
        assert_eq!(
            readiness(&cond(ConditionStatus::True, "Applied", Some(2)), Some(2)),
            Readiness::Ready
        );
        assert!(matches!(
            readiness(&cond(ConditionStatus::True, "Applied", Some(1)), Some(2)),
            Readiness::Pending(_)
        ));
        assert!(matches!(readiness(&[], Some(1)), Readiness::Pending(_)));
    }

    #[test]
    fn final_reasons_map_to_codes_with_the_message() {
        let r = readiness(&cond(ConditionStatus::False, "NoSpace", Some(1)), Some(1));
        assert_eq!(
            r,
            Readiness::Failed(
                Code::ResourceExhausted,
                "NoSpace: spec.source.file: no space left".into()
            )
        );
        assert!(matches!(
            readiness(
                &cond(ConditionStatus::False, "BackingStoreInUse", None),
                Some(1)
            ),
            Readiness::Failed(Code::FailedPrecondition, _)
        ));
        assert!(matches!(
            readiness(&cond(ConditionStatus::False, "PortNotAllowed", None), None),
            Readiness::Failed(Code::InvalidArgument, _)
        ));
    }

    #[test]
    fn passing_reasons_keep_waiting() {
        for reason in [
            "AgentUnreachable",
            "DeviceNotReady",
            "DeviceNotFound",
            "Whatever",
        ] {
            assert!(matches!(
                readiness(&cond(ConditionStatus::False, reason, Some(1)), Some(1)),
                Readiness::Pending(_)
            ));
        }
        // A failure of an older generation is not the answer for the new spec.
        assert!(matches!(
            readiness(&cond(ConditionStatus::False, "NoSpace", Some(1)), Some(2)),
            Readiness::Pending(_)
        ));
    }
}
