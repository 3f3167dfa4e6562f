//! The durable metadata group of a single node: commands are appended to the metadata log
//! and fsynced before they are applied; the applied state is kept in the `MetaStore` (sled)
//! together with the index of the last applied command. On open, the applied state is
//! loaded and every later log entry is replayed, so losing sled's unsynced writes loses
//! nothing.

use crate::command::Command;
use crate::error::MetaError;
use crate::model::Stream;
use crate::state::{Change, Identity, MetaState};
use parking_lot::{Mutex, RwLock};
use sluice_storage::{EntryRef, Log, LogConfig, MetaStore, SledStore};
use std::path::Path;

const STREAMS_TREE: &str = "streams";
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
