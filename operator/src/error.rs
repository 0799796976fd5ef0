//! The one error type of both reconcilers (controller-rs's shape: `reconcile` returns it, the
//! error policy sorts it by [`Cause`] into a metric label and a backoff).

use crate::agent_client::AgentError;

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver refused or could not be reached.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The agent could not be reached or refused.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// What a failed reconcile is counted as (the `reason` label of the errors metric) and how soon
/// it is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A write lost a race with another writer (HTTP 409).
    Conflict,
    /// Any other apiserver failure.
    Apiserver,
    /// The agent did not answer (or may answer if asked again).
    AgentUnreachable,
    /// The agent answered and refused.
    AgentRefused,
}

impl Cause {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::Apiserver => "apiserver",
            Self::AgentUnreachable => "agent_unreachable",
            Self::AgentRefused => "agent_refused",
        }
    }
}

impl Error {
    /// What this failure is counted as.
    pub fn cause(&self) -> Cause {
        match self {
            Self::Kube(kube::Error::Api(s)) if s.code == 409 => Cause::Conflict,
            Self::Kube(_) => Cause::Apiserver,
            Self::Agent(e) if e.is_transient() => Cause::AgentUnreachable,
            Self::Agent(_) => Cause::AgentRefused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cause, Error};
    use crate::agent_client::AgentError;

    #[test]
    fn an_agent_that_did_not_answer_is_told_apart_from_one_that_refused() {
        let unreachable = Error::from(AgentError::Unreachable {
            endpoint: "127.0.0.2:9443".into(),
            message: "connection refused".into(),
        });
        assert_eq!(unreachable.cause(), Cause::AgentUnreachable);
        assert_eq!(unreachable.cause().label(), "agent_unreachable");
        let refused = Error::from(AgentError::Refused {
            code: tonic::Code::InvalidArgument,
            message: "spec.x: bad".into(),
            detail: None,
        });
        assert_eq!(refused.cause(), Cause::AgentRefused);
        assert_eq!(refused.cause().label(), "agent_refused");
    }
}
