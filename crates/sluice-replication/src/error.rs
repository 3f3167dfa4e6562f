//! Errors of the replication crate.
//!
//! openraft's storage traits speak `std::io::Error`; [`LogStoreError`] is what goes
//! inside it (`io::Error::get_ref` and `downcast` recover it), with the kind set so that
//! damage on disk (`InvalidData`) can be told from a failed operation (`Other`).

use sluice_storage::StorageError;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in [`crate::LogStore`] and [`crate::LogReader`].
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The segment log failed (I/O, corruption, a stopped log).
    #[error("segment log")]
    Log(#[from] StorageError),
    /// The group-commit sync that an append was waiting for failed. Shared by every
    /// append that the failed sync should have covered; the log is stopped until reopened.
    #[error("sync of appended entries failed")]
    Flush(#[source] Arc<StorageError>),
    /// An operating-system call on the store directory or its state file failed.
    #[error("{op} {path}")]
    Io {
        /// A short verb phrase naming what was being done, e.g. `write raft state`.
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The state file (vote, committed, purged, index anchor) failed its checks.
    #[error("raft state file {path} is corrupt: {reason}")]
    CorruptState { path: PathBuf, reason: &'static str },
    /// The state file's body did not decode.
    #[error("raft state file {path} does not decode")]
    DecodeState {
        path: PathBuf,
        #[source]
        source: ciborium::de::Error<io::Error>,
    },
    /// A stored entry's payload did not decode to a Raft entry.
    #[error("entry at raft index {index} does not decode")]
    DecodeEntry {
        index: u64,
        #[source]
        source: ciborium::de::Error<io::Error>,
    },
    /// A stored entry decoded to a Raft entry with another index: the index mapping and
    /// the log disagree.
    #[error("entry at raft index {index} holds raft index {found}")]
    IndexMismatch { index: u64, found: u64 },
    /// A Raft entry or the state could not be encoded.
    #[error("encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: ciborium::ser::Error<io::Error>,
    },
    /// An append that does not continue the log: it would leave a hole or overwrite
    /// entries that were not truncated first.
    #[error("append at raft index {got}, the log continues at {expected}")]
    NotContiguous { expected: u64, got: u64 },
    /// An append at or below the last purged index.
    #[error("append at raft index {got}, at or below the purged index {purged}")]
    BelowPurged { got: u64, purged: u64 },
    /// A blocking task was cancelled or panicked (the runtime is shutting down).
    #[error("blocking storage task did not complete")]
    Join(#[source] tokio::task::JoinError),
}

impl LogStoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogStoreError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether the error means bytes on disk are damaged (rather than an operation failed).
    pub fn is_corruption(&self) -> bool {
        match self {
            LogStoreError::Log(e) => matches!(e, StorageError::Corrupt { .. }),
            LogStoreError::CorruptState { .. }
            | LogStoreError::DecodeState { .. }
            | LogStoreError::DecodeEntry { .. }
            | LogStoreError::IndexMismatch { .. } => true,
            _ => false,
        }
    }
}

impl From<LogStoreError> for io::Error {
    fn from(e: LogStoreError) -> io::Error {
        let kind = if e.is_corruption() {
            io::ErrorKind::InvalidData
        } else {
            io::ErrorKind::Other
        };
        io::Error::new(kind, e)
    }
}
