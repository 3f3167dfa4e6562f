//! One shard's log on this node: the append path (timestamps, group-committed fsync) and
//! the read path (only up to the commit point).

use crate::error::BrokerError;
use crate::record::{self, StoredRecord};
use bytes::Bytes;
use parking_lot::Mutex;
use sluice_storage::{EntryRef, Log, LogConfig};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// Why an append did not happen.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The shard was closed by a split or merge: route again.
    Closed,
    Failed(BrokerError),
}

struct WriterState {
    last_timestamp_ms: u64,
    closed: bool,
}

pub(crate) struct ShardLog {
    log: Arc<Log>,
    writer: Mutex<WriterState>,
    /// The exclusive commit point: every offset below it is durable.
    committed: watch::Sender<u64>,
}

/// Offsets and the arrival timestamp given to one appended batch.
pub(crate) struct Appended {
    pub first_offset: u64,
}

impl ShardLog {
    pub fn open(dir: &Path, config: LogConfig) -> Result<Arc<ShardLog>, BrokerError> {
        let log = Log::open(dir, config)?;
        let report = log.recovery_report();
        if report.truncated {
            tracing::warn!(dir = %dir.display(), bytes_cut = report.bytes_cut, "cut a torn tail from a shard log");
        }
        let committed = log.durable_index().map_or(log.first_index(), |i| i + 1);
        let last_timestamp_ms = log.last_entry_timestamp().unwrap_or(0);
        Ok(Arc::new(ShardLog {
            log: Arc::new(log),
            writer: Mutex::new(WriterState {
                last_timestamp_ms,
                closed: false,
            }),
            committed: watch::channel(committed).0,
        }))
    }

    /// Appends records as one batch and returns once they are durable.
    pub async fn append(
        self: &Arc<Self>,
        records: Vec<(String, Bytes)>,
        now_ms: u64,
    ) -> Result<Appended, AppendError> {
        let shard = Arc::clone(self);
        let joined =
            tokio::task::spawn_blocking(move || shard.append_blocking(&records, now_ms)).await;
        match joined {
            Ok(result) => result,
            Err(join) => Err(AppendError::Failed(join.into())),
        }
    }

    fn append_blocking(
        &self,
        records: &[(String, Bytes)],
        now_ms: u64,
    ) -> Result<Appended, AppendError> {
        let mut payloads = Vec::with_capacity(records.len());
        for (key, data) in records {
            let mut payload = Vec::with_capacity(2 + key.len() + data.len());
            record::encode(key, data, &mut payload);
            payloads.push(payload);
        }
        let (first, last) = {
            let mut writer = self.writer.lock();
            if writer.closed {
                return Err(AppendError::Closed);
            }
            // Arrival timestamps never go backwards within a shard, even if the clock does.
            let timestamp_ms = now_ms.max(writer.last_timestamp_ms);
            let entries: Vec<EntryRef<'_>> = payloads
                .iter()
                .map(|payload| EntryRef {
                    term: 0,
                    timestamp_ms,
                    payload,
                })
                .collect();
            let range = self
                .log
                .append(&entries)
                .map_err(|e| AppendError::Failed(e.into()))?;
            writer.last_timestamp_ms = timestamp_ms;
            range
        };
        self.log
            .sync(last)
            .map_err(|e| AppendError::Failed(e.into()))?;
        self.committed.send_if_modified(|point| {
            if *point <= last {
                *point = last + 1;
                true
            } else {
                false
            }
        });
        Ok(Appended {
            first_offset: first,
        })
    }

    /// Closes the shard for writes and returns the offset of its last record, durable.
    pub fn close_blocking(&self) -> Result<Option<u64>, BrokerError> {
        let last = {
            let mut writer = self.writer.lock();
            writer.closed = true;
            self.log
                .next_index()
                .checked_sub(1)
                .filter(|i| *i >= self.log.first_index())
        };
        if let Some(last) = last {
            self.log.sync(last)?;
        }
        Ok(last)
    }

    /// Reopens a shard whose close was not committed.
    pub fn reopen(&self) {
        self.writer.lock().closed = false;
    }

    pub fn commit_point(&self) -> u64 {
        *self.committed.borrow()
    }

    pub fn first_offset(&self) -> u64 {
        self.log.first_index()
    }

    /// The first offset whose arrival time is at or after `timestamp_ms`.
    pub async fn offset_at_timestamp(
        self: &Arc<Self>,
        timestamp_ms: u64,
    ) -> Result<u64, BrokerError> {
        let shard = Arc::clone(self);
        let offset =
            tokio::task::spawn_blocking(move || shard.log.index_at_timestamp(timestamp_ms))
                .await??;
        Ok(offset)
    }

    /// Committed records from `from`, at most `max_records` and about `max_bytes`.
    pub async fn read(
        self: &Arc<Self>,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, BrokerError> {
        let upto = self.commit_point();
        let from = from.max(self.log.first_index());
        if from >= upto {
            return Ok(Vec::new());
        }
        let shard = Arc::clone(self);
        let entries =
            tokio::task::spawn_blocking(move || shard.log.read(from, upto, max_records, max_bytes))
                .await??;
        Ok(entries
            .into_iter()
            .filter_map(|entry| record::decode(entry.index, entry.timestamp_ms, entry.payload))
            .collect())
    }

    /// The arrival time of the newest committed record.
    pub fn newest_timestamp_ms(&self) -> u64 {
        self.writer.lock().last_timestamp_ms
    }

    pub fn delete_older_than(&self, cutoff_ms: u64) -> Result<u64, BrokerError> {
        Ok(self.log.delete_segments_older_than(cutoff_ms)?)
    }
}
