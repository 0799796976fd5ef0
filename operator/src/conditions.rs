//! The words of the status (condition types and reasons, defined in `spindle_crds::words`
//! because `kubectl spindle` reads them too), and how to ask whether a condition holds.

use spindle_crds::{Condition, ConditionStatus};

pub use spindle_crds::words::{kind, reason};

/// True if `conditions` has `type_` with `status`.
pub fn condition_is(conditions: &[Condition], type_: &str, status: ConditionStatus) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == status)
}

/// Why an object is not (fully) served, and what to change. `reason` is a CamelCase condition
/// reason; `message` is for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Condition reason (see [`reason`]).
    pub reason: &'static str,
    /// What is wrong and what to change.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_lookup() {
        let c = [Condition {
            type_: kind::FLUSHED.into(),
            status: ConditionStatus::True,
            reason: reason::FLUSH_ACKNOWLEDGED.into(),
            message: String::new(),
            last_transition_time: None,
            observed_generation: None,
        }];
        assert!(condition_is(&c, kind::FLUSHED, ConditionStatus::True));
        assert!(!condition_is(&c, kind::FLUSHED, ConditionStatus::False));
        assert!(!condition_is(&c, kind::READY, ConditionStatus::True));
    }
}
