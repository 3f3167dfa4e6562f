//! Errors of the metadata group.

/// Why a command was rejected. The message is the user-facing AWS text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CommandError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Validation(String),
}

/// Failures of the metadata store itself.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(transparent)]
    Rejected(#[from] CommandError),
    #[error("metadata log")]
    Log(#[source] sluice_storage::StorageError),
    #[error("encode or decode metadata")]
    Codec(#[source] serde_json::Error),
    #[error("metadata store")]
    Store(#[source] sluice_storage::StorageError),
    /// The metadata group could not be started or failed.
    #[error("metadata group: {0}")]
    Raft(String),
    /// No leader could take the command, or its outcome is unknown.
    #[error("metadata group unavailable: {0}")]
    Unavailable(String),
}
