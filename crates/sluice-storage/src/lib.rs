//! Durable storage for a Sluice node. This crate owns the per-group segment log
//! ([`Log`]: batches framed with length and CRC32C in append-only segment files, sparse
//! offset and time indexes, group-committed fdatasync, torn-tail recovery, retention
//! and suffix truncation) and a small ordered key-value interface ([`MetaStore`],
//! implemented over sled by [`SledStore`]; this is the only crate that imports sled).
//! It knows nothing about HTTP, gRPC, Raft, Kinesis or cluster placement: entries are
//! opaque payloads with a term and a timestamp. Entry types: [`Log`] with [`LogConfig`],
//! [`EntryRef`] and [`Entry`]; [`MetaStore`] with [`SledStore`]; [`StorageError`].
//!
//! Encryption at rest: a log opened with a [`KeyProvider`] seals the batches appended
//! with [`Log::append_with`] under a per-segment data key wrapped by a master key
//! ([`keyring`]: the provider interface, and [`LocalKeyring`], master keys in a local
//! JSON file).
//!
//! The API is blocking and thread-safe (`&self` everywhere); async callers run it on a
//! blocking thread. The file layout is described in the `segment` module, the frame
//! layout in `frame`, the key sidecar in `crypto`.

mod crypto;
mod error;
mod frame;
pub mod keyring;
mod log;
mod meta;
mod segment;

pub use error::{KeyError, StorageError};
pub use keyring::{EncryptionKey, KeyProvider, LocalKeyring};
pub use log::{Entry, EntryRef, Log, LogConfig, LogStats, RecoveryReport};
pub use meta::{BatchOp, KeyValues, MetaStore, SledStore};

#[cfg(any(test, feature = "testing"))]
pub use meta::conformance;
