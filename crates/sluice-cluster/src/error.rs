//! Errors the broker answers with. Client-facing variants carry the AWS message; the
//! gateway and the gRPC service map them to the wire, each in one place.

use sluice_meta::{CommandError, MetaError};
use sluice_storage::{KeyError, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
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
    #[error("{0}")]
    ExpiredIterator(String),
    #[error("{0}")]
    ThroughputExceeded(String),
    /// The caller's policies do not allow the call (AWS's AccessDeniedException message).
    #[error("{0}")]
    AccessDenied(String),
    /// The stream's KMS key (or the one a caller named) does not exist (AWS's
    /// KMSNotFoundException message).
    #[error("{0}")]
    KmsNotFound(String),
    /// The KMS key exists but is disabled (AWS's KMSDisabledException message).
    #[error("{0}")]
    KmsDisabled(String),
    /// The node's key provider failed (an unusable keyring file, corrupt key material).
    #[error("key provider")]
    Keyring(#[source] KeyError),
    #[error("shard storage")]
    Storage(#[from] StorageError),
    #[error("shard storage")]
    SharedStorage(#[source] std::sync::Arc<StorageError>),
    #[error("metadata")]
    Meta(#[source] MetaError),
    /// A shard group failed to start or to take a write.
    #[error("replication: {0}")]
    Replication(String),
    #[error("background task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl From<MetaError> for BrokerError {
    fn from(error: MetaError) -> Self {
        match error {
            MetaError::Rejected(rejected) => rejected.into(),
            other => BrokerError::Meta(other),
        }
    }
}

impl From<CommandError> for BrokerError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::NotFound(m) => BrokerError::NotFound(m),
            CommandError::InUse(m) => BrokerError::InUse(m),
            CommandError::InvalidArgument(m) => BrokerError::InvalidArgument(m),
            CommandError::LimitExceeded(m) => BrokerError::LimitExceeded(m),
            CommandError::Validation(m) => BrokerError::Validation(m),
        }
    }
}
