//! [`MetaStore`] over sled 0.34. Each named tree is a sled tree; atomic batches are
//! sled transactions over every tree they touch.

use super::{BatchOp, KeyValues, MetaStore};
use crate::error::StorageError;
use sled::Transactional;
use std::path::Path;

/// A [`MetaStore`] kept in a sled database directory.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

fn backend(op: &'static str) -> impl FnOnce(sled::Error) -> StorageError {
    move |e| StorageError::Meta {
        op,
        source: Box::new(e),
    }
}

impl SledStore {
    /// Opens (creating if absent) the database in `dir`. Blocking: call from a blocking
    /// thread.
    ///
    /// A store closed a moment ago may still be locked while sled's background I/O threads
    /// finish (sled's own test builds block on the lock for this reason), so a held lock is
    /// retried for a few seconds before it is reported.
    pub fn open(dir: &Path) -> Result<SledStore, StorageError> {
        const LOCK_RETRIES: u32 = 50;
        const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => return Ok(SledStore { db }),
                Err(sled::Error::Io(error))
                    if attempt < LOCK_RETRIES
                        && error.to_string().contains("could not acquire lock") =>
                {
                    attempt += 1;
                    tracing::debug!(attempt, dir = %dir.display(), "metadata store still locked; retrying");
                    // Runs on a blocking thread (never an async worker): waiting for another
                    // handle's threads to release a file lock has no condition to wait on.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(LOCK_RETRY_PAUSE);
                }
                Err(error) => return Err(backend("open")(error)),
            }
        }
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, StorageError> {
        self.db.open_tree(name).map_err(backend("open tree"))
    }
}

impl MetaStore for SledStore {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.tree(tree)?.get(key).map_err(backend("get"))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.tree(tree)?
            .insert(key, value)
            .map_err(backend("put"))?;
        Ok(())
    }

    fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
        self.tree(tree)?.remove(key).map_err(backend("delete"))?;
        Ok(())
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<KeyValues, StorageError> {
        self.tree(tree)?
            .scan_prefix(prefix)
            .map(|pair| {
                let (k, v) = pair.map_err(backend("scan"))?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn apply_batch(&self, batch: Vec<BatchOp<'_>>) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&str> = batch.iter().map(|(tree, _, _)| *tree).collect();
        names.sort_unstable();
        names.dedup();
        let trees: Vec<sled::Tree> = names
            .iter()
            .map(|name| self.tree(name))
            .collect::<Result<_, _>>()?;
        let slots: Vec<usize> = batch
            .iter()
            .map(|(tree, _, _)| names.binary_search(tree).unwrap_or(0))
            .collect();
        trees
            .as_slice()
            .transaction(|tx| {
                for ((_, key, value), slot) in batch.iter().zip(&slots) {
                    let tree = &tx[*slot];
                    match value {
                        Some(value) => {
                            tree.insert(key.as_slice(), value.as_slice())?;
                        }
                        None => {
                            tree.remove(key.as_slice())?;
                        }
                    }
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => backend("apply batch")(e),
                sled::transaction::TransactionError::Abort(()) => StorageError::Meta {
                    op: "apply batch",
                    source: "transaction aborted".into(),
                },
            })
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map_err(backend("flush"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("meta")).unwrap();
        crate::meta::conformance::run(&store);
    }

    #[test]
    fn sled_store_keeps_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        {
            let store = SledStore::open(&path).unwrap();
            store
                .apply_batch(vec![
                    ("a", b"k".to_vec(), Some(b"v".to_vec())),
                    ("b", b"k2".to_vec(), Some(b"w".to_vec())),
                ])
                .unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(&path).unwrap();
        assert_eq!(store.get("a", b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.get("b", b"k2").unwrap(), Some(b"w".to_vec()));
    }
}
