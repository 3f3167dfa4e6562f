//! `MetaStore`: the small ordered key-value interface the metadata state machine
//! persists its applied state through, and its sled implementation.
//!
//! Keys and values are bytes; keys are ordered bytewise within a named tree. Nothing
//! stored here may be the only copy of an acknowledged write: `flush` is not a durable
//! sync in sled, so everything here must be rebuildable from the Raft logs.

mod sled_store;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

pub use sled_store::SledStore;

use crate::error::StorageError;

/// One write of an atomic batch: `(tree, key, Some(value))` puts, `(tree, key, None)`
/// deletes.
pub type BatchOp<'a> = (&'a str, Vec<u8>, Option<Vec<u8>>);

/// Key-value pairs in key order.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// An ordered key-value store with named trees.
pub trait MetaStore: Send + Sync {
    /// The value under `key` in `tree`.
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Sets `key` to `value` in `tree`.
    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError>;

    /// Removes `key` from `tree`; removing a missing key is not an error.
    fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError>;

    /// Every pair in `tree` whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<KeyValues, StorageError>;

    /// Applies every operation, across any trees, atomically: after a crash either all
    /// of them are visible or none. Later operations on the same key win.
    fn apply_batch(&self, batch: Vec<BatchOp<'_>>) -> Result<(), StorageError>;

    /// Writes buffered changes to disk (best effort, see the module docs).
    fn flush(&self) -> Result<(), StorageError>;
}
