//! What a Node call can fail with, and the CSI status code each maps to.

use thiserror::Error;
use tonic::{Code, Status};

use super::runner::RunError;

#[derive(Debug, Error)]
pub enum NodeError {
    /// A request field is missing or unusable.
    #[error("{field}: {why}")]
    InvalidArgument { field: &'static str, why: String },
    /// The volume (or the volume at that path) is not on this node.
    #[error("{0}")]
    NotFound(String),
    /// The volume is staged or published differently (another disk, another path, ro vs rw).
    #[error("{0}")]
    AlreadyExists(String),
    /// The call cannot proceed in this state (not staged; the disk is not the volume's).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another call for the same volume is running.
    #[error("another operation on volume {0} is in progress")]
    Aborted(String),
    /// A tool failed or ran out of time.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Anything else on the node (a file, a wait that ran out).
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    pub fn invalid(field: &'static str, why: impl Into<String>) -> Self {
        NodeError::InvalidArgument {
            field,
            why: why.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            NodeError::InvalidArgument { .. } => Code::InvalidArgument,
            NodeError::NotFound(_) => Code::NotFound,
            NodeError::AlreadyExists(_) => Code::AlreadyExists,
            NodeError::FailedPrecondition(_) => Code::FailedPrecondition,
            NodeError::Aborted(_) => Code::Aborted,
            NodeError::Run(RunError::Timeout { .. }) => Code::DeadlineExceeded,
            NodeError::Run(_) | NodeError::Internal(_) => Code::Internal,
        }
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> NodeError {
    NodeError::Internal(format!("{what}: {e}"))
}
