//! Why a node call was refused: one error type for the node's API, naming the API object's field.

use super::state::StateError;

/// Why a call was refused. The field names the API object's field (CRD path).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request itself is wrong; nothing changed.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The request is fine but the node's state forbids it now; nothing changed.
    #[error("{field}: {message}")]
    Precondition { field: String, message: String },
    /// Another Device holds the backing store; nothing changed.
    #[error("{field}: {message}")]
    InUse {
        field: String,
        message: String,
        /// `namespace/name` of the Device holding it.
        owner: String,
        owner_uid: String,
    },
    /// The Device was served before and its backing store is gone; nothing was created.
    #[error("{field}: {message}")]
    Missing { field: String, message: String },
    /// The Device's file could not grow (no room on the filesystem, a quota, the file-size
    /// limit); nothing changed: the old size is kept and served.
    #[error("{field}: {message}")]
    NoSpace { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// A flush or write failed: the Device is not flushed.
    #[error("{0}")]
    DataLoss(String),
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error("the agent could not record its state: {0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Internal(String),
}

pub(super) fn invalid(field: &str, message: impl Into<String>) -> NodeError {
    NodeError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

pub(super) fn precondition(field: &str, message: impl Into<String>) -> NodeError {
    NodeError::Precondition {
        field: field.into(),
        message: message.into(),
    }
}
