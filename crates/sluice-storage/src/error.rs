//! Errors of the storage crate: one enum for the segment log and the metadata store.
//!
//! Corruption is its own variant so that the caller can stop the affected shard (and
//! repair it from its peers) without treating it as an ordinary I/O failure. Key errors
//! (`KeyError`) are separate so that callers can tell a missing or disabled master key
//! from damage on disk.

use std::path::PathBuf;

/// Everything that can go wrong in [`crate::Log`] and [`crate::MetaStore`].
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system call on a file of the log failed.
    #[error("{op} {path}")]
    Io {
        /// A short verb phrase naming what was being done, e.g. `write segment`.
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An I/O error without a known file (conversion from a bare `std::io::Error`).
    #[error("storage io")]
    BareIo(#[from] std::io::Error),
    /// Bytes on disk failed their checksum or framing checks. Nothing from this region
    /// is ever returned; the log must be repaired from a peer.
    #[error("corrupt segment {segment} at offset {offset}: {reason}")]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    /// The requested index lies below the first index still retained.
    #[error("index was trimmed, the first retained index is {first_index}")]
    Trimmed { first_index: u64 },
    /// `sync` was asked to cover an index that has not been appended.
    #[error("index {index} has not been written, the next index is {next_index}")]
    NotWritten { index: u64, next_index: u64 },
    /// `restart_at` was asked to start the log over at or before its end.
    #[error(
        "a log restarts only beyond its end: asked for {index}, the next index is {next_index}"
    )]
    RestartBehind { index: u64, next_index: u64 },
    /// `append` was called with no entries.
    #[error("append needs at least one entry")]
    EmptyAppend,
    /// One batch would exceed the largest frame the format allows.
    #[error("batch of {bytes} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge { bytes: u64, limit: u64 },
    /// The log configuration is unusable.
    #[error("invalid log config: {0}")]
    InvalidConfig(&'static str),
    /// An earlier write or sync failed; the file state is unknown, so the log refuses
    /// further work until it is reopened (which runs recovery).
    #[error("log is stopped after an earlier io failure and must be reopened")]
    Failed,
    /// A master key could not wrap or unwrap a segment's data key, or no key provider
    /// was given to a log that holds encrypted segments.
    #[error("segment data key")]
    Key(#[from] KeyError),
    /// A segment has a key sidecar, but the log was opened without a key provider.
    #[error("segment {segment} is encrypted but the log has no key provider")]
    NoKeyProvider { segment: PathBuf },
    /// The metadata store backend failed.
    #[error("metadata store {op}")]
    Meta {
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(segment: impl Into<PathBuf>, offset: u64, reason: &'static str) -> Self {
        StorageError::Corrupt {
            segment: segment.into(),
            offset,
            reason,
        }
    }
}

/// Everything that can go wrong with master keys: resolving a caller's key id, wrapping
/// and unwrapping data keys, and the local keyring file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No master key has this id, alias or ARN (or the text names no key at all).
    #[error("master key {key_id} not found")]
    NotFound { key_id: String },
    /// The master key exists but is disabled: it wraps no new data keys.
    #[error("master key {key_id} is disabled")]
    Disabled { key_id: String },
    /// A segment names a version of its master key that the keyring does not hold.
    #[error("master key {key_id} has no version {version}")]
    VersionNotFound { key_id: String, version: u32 },
    /// Wrapped key material failed authentication or has the wrong shape.
    #[error("corrupt key material: {reason}")]
    Corrupt { reason: &'static str },
    /// The operating system's random number generator failed.
    #[error("no randomness available")]
    Randomness,
    /// Group or others have access to the keyring file; it holds master keys in clear.
    #[error("keyring {path} has mode {mode:o}, open to group or others; run `chmod 600` on it")]
    InsecurePermissions { path: PathBuf, mode: u32 },
    /// The keyring file does not parse or does not add up.
    #[error("keyring {path} is invalid: {reason}")]
    Format { path: PathBuf, reason: String },
    /// An alias that is already taken, or that is not of the form `alias/<name>`.
    #[error("alias {alias}: {reason}")]
    Alias { alias: String, reason: &'static str },
    /// An operating-system call on the keyring file failed.
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl KeyError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KeyError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
