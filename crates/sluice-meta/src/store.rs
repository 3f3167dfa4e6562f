//! The durable metadata group of a single node: commands are appended to the metadata log
//! and fsynced before they are applied; the applied state is kept in the `MetaStore` (sled)
//! together with the index of the last applied command. On open, the applied state is
//! loaded and every later log entry is replayed, so losing sled's unsynced writes loses
//! nothing.

use crate::command::Command;
use crate::error::MetaError;
use crate::model::{AccessKey, Stream};
use crate::state::{Change, Identity, MetaState};
use parking_lot::{Mutex, RwLock};
use sluice_storage::{EntryRef, Log, LogConfig, MetaStore, SledStore};
use std::path::Path;

const STREAMS_TREE: &str = "streams";
const KEYS_TREE: &str = "keys";
const APPLIED_TREE: &str = "applied";
const APPLIED_KEY: &[u8] = b"meta";

/// The metadata store. Reads are cheap (a read lock); proposals are serialized.
pub struct Meta {
    state: RwLock<MetaState>,
    writer: Mutex<()>,
    log: Log,
    kv: SledStore,
}

impl Meta {
    pub fn open(dir: &Path, identity: Identity, fsync: bool) -> Result<Meta, MetaError> {
        let log = Log::open(
            &dir.join("log"),
            LogConfig {
                fsync,
                ..LogConfig::default()
            },
        )
        .map_err(MetaError::Log)?;
        let kv = SledStore::open(&dir.join("state")).map_err(MetaError::Store)?;
        let mut state = MetaState::new(identity);
        for (_, value) in kv
            .scan_prefix(STREAMS_TREE, b"")
            .map_err(MetaError::Store)?
        {
            let stream: Stream = serde_json::from_slice(&value).map_err(MetaError::Codec)?;
            state.streams.insert(stream.name.clone(), stream);
        }
        for (_, value) in kv.scan_prefix(KEYS_TREE, b"").map_err(MetaError::Store)? {
            let key: AccessKey = serde_json::from_slice(&value).map_err(MetaError::Codec)?;
            state.keys.insert(key.access_key_id.clone(), key);
        }
        let applied = kv
            .get(APPLIED_TREE, APPLIED_KEY)
            .map_err(MetaError::Store)?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map(u64::from_be_bytes);
        let meta = Meta {
            state: RwLock::new(state),
            writer: Mutex::new(()),
            log,
            kv,
        };
        meta.replay_after(applied)?;
        Ok(meta)
    }

    /// Applies every logged command the applied state has not seen yet.
    fn replay_after(&self, applied: Option<u64>) -> Result<(), MetaError> {
        let mut next = applied.map_or(self.log.first_index(), |i| i + 1);
        let end = self.log.next_index();
        let mut replayed = 0usize;
        while next < end {
            let entries = self
                .log
                .read(next, end, 1024, 16 << 20)
                .map_err(MetaError::Log)?;
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                let command: Command =
                    serde_json::from_slice(&entry.payload).map_err(MetaError::Codec)?;
                let change = self.state.read().plan(&command);
                // A rejected command changes nothing, on replay as when it was proposed.
                let change = change.unwrap_or(Change::Nothing);
                self.persist(&change, entry.index)?;
                self.state.write().commit(change);
                next = entry.index + 1;
                replayed += 1;
            }
        }
        if replayed > 0 {
            tracing::info!(replayed, "metadata state caught up from the log");
        }
        Ok(())
    }

    fn persist(&self, change: &Change, index: u64) -> Result<(), MetaError> {
        let mut batch = Vec::new();
        match change {
            Change::Put(stream) => batch.push((
                STREAMS_TREE,
                stream.name.as_bytes().to_vec(),
                Some(serde_json::to_vec(stream).map_err(MetaError::Codec)?),
            )),
            Change::Remove(name) => batch.push((STREAMS_TREE, name.as_bytes().to_vec(), None)),
            Change::PutKey(key) => batch.push((
                KEYS_TREE,
                key.access_key_id.as_bytes().to_vec(),
                Some(serde_json::to_vec(key).map_err(MetaError::Codec)?),
            )),
            Change::RemoveKey(id) => batch.push((KEYS_TREE, id.as_bytes().to_vec(), None)),
            Change::Nothing => {}
        }
        batch.push((
            APPLIED_TREE,
            APPLIED_KEY.to_vec(),
            Some(index.to_be_bytes().to_vec()),
        ));
        self.kv.apply_batch(batch).map_err(MetaError::Store)
    }

    /// Logs, fsyncs and applies one command. Blocking: call from a blocking thread.
    pub fn propose(&self, command: &Command) -> Result<(), MetaError> {
        let _writer = self.writer.lock();
        let change = self.state.read().plan(command)?;
        let payload = serde_json::to_vec(command).map_err(MetaError::Codec)?;
        let (index, _) = self
            .log
            .append(&[EntryRef {
                term: 0,
                timestamp_ms: 0,
                payload: &payload,
            }])
            .map_err(MetaError::Log)?;
        self.log.sync(index).map_err(MetaError::Log)?;
        self.persist(&change, index)?;
        self.state.write().commit(change);
        Ok(())
    }

    /// Runs `f` against the current state.
    pub fn read<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.state.read())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StreamMode;
    use std::collections::BTreeMap;

    fn create(name: &str, now_ms: u64) -> Command {
        Command::CreateStream {
            name: name.to_owned(),
            shard_count: 2,
            mode: StreamMode::Provisioned,
            tags: BTreeMap::new(),
            now_ms,
        }
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let meta = Meta::open(dir.path(), Identity::default(), true).unwrap();
            meta.propose(&create("a", 1)).unwrap();
            meta.propose(&create("b", 2)).unwrap();
            meta.propose(&Command::ActivateStream {
                name: "a".into(),
                created_ms: 1,
            })
            .unwrap();
            // A rejected command is answered and leaves no trace.
            assert!(meta.propose(&create("a", 3)).is_err());
        }
        let meta = Meta::open(dir.path(), Identity::default(), true).unwrap();
        let (names, status) = meta.read(|s| {
            (
                s.streams.keys().cloned().collect::<Vec<_>>(),
                s.streams["a"].status,
            )
        });
        assert_eq!(names, ["a", "b"]);
        assert_eq!(status, crate::StreamStatus::Active);
    }

    #[test]
    fn applied_state_is_rebuilt_from_the_log_when_sled_lost_it() {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let meta = Meta::open(dir.path(), Identity::default(), true).unwrap();
            for i in 0..5 {
                meta.propose(&create(&format!("s{i}"), i)).unwrap();
            }
            meta.propose(&Command::AddTags {
                name: "s3".into(),
                tags: [("k".to_owned(), "v".to_owned())].into(),
            })
            .unwrap();
            meta.read(|s| s.streams.clone())
        };
        // sled's writes are not durable syncs: model losing all of them.
        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        let meta = Meta::open(dir.path(), Identity::default(), true).unwrap();
        assert_eq!(meta.read(|s| s.streams.clone()), expected);
    }
}
