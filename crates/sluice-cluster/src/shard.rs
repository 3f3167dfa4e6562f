//! One shard's log on this node: the append path (timestamps, group-committed fsync,
//! encryption under the stream's current key) and the read path (only up to the commit
//! point; encrypted batches are opened by the log).

use crate::error::BrokerError;
use crate::record::{self, Batch, StoredRecord};
use crate::throttle::ShardLimits;
use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use sluice_storage::{EncryptionKey, EntryRef, KeyProvider, Log, LogConfig, StorageError};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

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

/// What the writer task and the readers share.
struct Shared {
    log: Log,
    writer: Mutex<WriterState>,
    /// The exclusive commit point: every offset below it is durable.
    committed: watch::Sender<u64>,
    /// Records and bytes committed since the log was opened (for scaling decisions).
    written_records: AtomicU64,
    written_bytes: AtomicU64,
    /// Observes each group-commit fsync (`sluice_fsync_duration_seconds`).
    fsync_duration: Histogram,
    /// The newest written offset not yet fsynced (records applied from a Raft log that
    /// already holds them durably are synced in the background, at most a second later).
    unsynced: parking_lot::Mutex<Option<u64>>,
}

/// How often a replica's record log is fsynced behind its applies.
const BACKGROUND_SYNC: std::time::Duration = std::time::Duration::from_secs(1);

/// One append waiting for the writer task.
struct PendingAppend {
    records: Batch,
    now_ms: u64,
    /// The master key to encrypt under: the stream's key when the append was routed.
    key: Option<EncryptionKey>,
    /// The Raft index of the entry these records came from, kept beside each record
    /// (`EntryRef::term`) so a replayed entry is recognised.
    raft_index: u64,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// How much one group commit takes from the queue at most.
const MAX_DRAIN_BYTES: usize = 8 << 20;
const MAX_DRAIN_RECORDS: usize = 20_000;
const QUEUE_DEPTH: usize = 4096;

pub(crate) struct ShardLog {
    shared: Arc<Shared>,
    queue: mpsc::Sender<PendingAppend>,
    /// Provisioned-mode throughput limits of this shard.
    limits: Mutex<ShardLimits>,
}

/// See [`ShardLog::retained_start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetainedStart {
    /// The Raft index of the entry of the first retained record.
    pub raft_index: u64,
    /// That record's offset.
    pub offset: u64,
    /// Its arrival time.
    pub timestamp_ms: u64,
}

/// The first offset given to one append; its records have consecutive offsets.
pub(crate) struct Appended {
    pub first_offset: u64,
}

impl ShardLog {
    /// Opens (recovering) the log and starts its writer task on `tasks`. The task ends when
    /// the `ShardLog` is dropped. `keys` unwraps the data keys of encrypted segments and
    /// wraps new ones.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: &Path,
        config: LogConfig,
        keys: Arc<dyn KeyProvider>,
        tasks: &TaskTracker,
        cancel: CancellationToken,
        runtime: &tokio::runtime::Handle,
        span: tracing::Span,
        limits: ShardLimits,
        fsync_duration: Histogram,
    ) -> Result<Arc<ShardLog>, BrokerError> {
        let log = Log::open_with_keys(dir, config, keys)?;
        let report = log.recovery_report();
        if report.truncated {
            tracing::warn!(dir = %dir.display(), bytes_cut = report.bytes_cut, "cut a torn tail from a shard log");
        }
        if report.corrupt_batches > 0 {
            // Reads of the damaged batches would fail: the caller rebuilds the log.
            return Err(BrokerError::Storage(StorageError::Corrupt {
                segment: dir.to_owned(),
                offset: 0,
                reason: "batches fail their checksum",
            }));
        }
        let committed = log.durable_index().map_or(log.first_index(), |i| i + 1);
        let last_timestamp_ms = log.last_entry_timestamp().unwrap_or(0);
        let shared = Arc::new(Shared {
            log,
            writer: Mutex::new(WriterState {
                last_timestamp_ms,
                closed: false,
            }),
            committed: watch::channel(committed).0,
            written_records: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            fsync_duration,
            unsynced: parking_lot::Mutex::new(None),
        });
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        tasks.spawn_on(
            run_writer(Arc::clone(&shared), receiver, cancel).instrument(span),
            runtime,
        );
        Ok(Arc::new(ShardLog {
            shared,
            queue,
            limits: Mutex::new(limits),
        }))
    }

    /// Queues an append of records (of Raft entry `raft_index`), encrypted under `key` if
    /// given, and returns where its outcome arrives once they are durable. Appends queued
    /// back to back are written together: one write (one per run of appends with the same
    /// key) and one fsync.
    pub async fn submit(
        &self,
        records: Batch,
        now_ms: u64,
        key: Option<EncryptionKey>,
        raft_index: u64,
    ) -> Result<oneshot::Receiver<Result<Appended, AppendError>>, AppendError> {
        let (reply, answer) = oneshot::channel();
        let pending = PendingAppend {
            records,
            now_ms,
            key,
            raft_index,
            reply,
        };
        if self.queue.send(pending).await.is_err() {
            return Err(AppendError::Closed);
        }
        Ok(answer)
    }

    /// Fsyncs every record written so far. Blocking.
    pub fn sync_written(&self) -> Result<(), BrokerError> {
        let last = self.shared.unsynced.lock().take();
        if let Some(last) = last {
            self.shared.log.sync(last)?;
        }
        Ok(())
    }

    /// The Raft index kept beside the newest record (0 when there is none).
    pub fn last_raft_index(&self) -> Result<u64, BrokerError> {
        let log = &self.shared.log;
        let next = log.next_index();
        if next <= log.first_index() {
            return Ok(0);
        }
        let entries = log.read(next - 1, next, 1, usize::MAX)?;
        Ok(entries.first().map_or(0, |entry| entry.term))
    }
    /// Where this log's retained records begin in Raft terms, for a snapshot that lets the
    /// shard's Raft log drop the entries whose records retention deleted. Retention deletes
    /// whole segments and an entry's records are written in one batch, which never spans
    /// segments: the first retained record is the first of its entry, and every earlier
    /// entry wrote only records before it. `None` while nothing was deleted. Blocking.
    pub fn retained_start(&self) -> Result<Option<RetainedStart>, BrokerError> {
        let log = &self.shared.log;
        let first = log.first_index();
        if first == 0 || first >= self.commit_point() {
            return Ok(None);
        }
        let records = log.read(first, first + 1, 1, usize::MAX)?;
        Ok(records.first().map(|record| RetainedStart {
            raft_index: record.term,
            offset: record.index,
            timestamp_ms: record.timestamp_ms,
        }))
    }

    /// Starts the log over, empty, at `offset` if it ends before it (a snapshot says the
    /// records before `offset` are gone by retention); arrival times go on from
    /// `timestamp_ms` (that of the record at `offset` where the snapshot was taken, which
    /// its entry gives it again here). Blocking. Whether the log was started over.
    pub fn restart_at(&self, offset: u64, timestamp_ms: u64) -> Result<bool, BrokerError> {
        let mut writer = self.shared.writer.lock();
        if self.shared.log.next_index() >= offset {
            return Ok(false);
        }
        self.shared.log.restart_at(offset)?;
        *self.shared.unsynced.lock() = None;
        writer.last_timestamp_ms = writer.last_timestamp_ms.max(timestamp_ms);
        self.shared.committed.send_replace(offset);
        Ok(true)
    }

    /// Closes the shard for writes and returns the offset of its last record, durable.
    pub fn close_blocking(&self) -> Result<Option<u64>, BrokerError> {
        let last = {
            let mut writer = self.shared.writer.lock();
            writer.closed = true;
            self.shared
                .log
                .next_index()
                .checked_sub(1)
                .filter(|i| *i >= self.shared.log.first_index())
        };
        if let Some(last) = last {
            self.shared.log.sync(last)?;
        }
        Ok(last)
    }

    /// Reopens a shard whose close was not committed.
    pub fn reopen(&self) {
        self.shared.writer.lock().closed = false;
    }

    /// Which of these record sizes fit the shard's write budget now (in order).
    pub fn admit_writes(&self, sizes: &[u64], now_ms: u64) -> Vec<bool> {
        self.limits.lock().admit_writes(sizes, now_ms)
    }

    /// Which of these record sizes fit, as a prefix (see `ShardLimits::admit_writes_in_order`).
    pub fn admit_writes_in_order(&self, sizes: &[u64], now_ms: u64) -> Vec<bool> {
        self.limits.lock().admit_writes_in_order(sizes, now_ms)
    }

    /// Whether a GetRecords call fits the shard's read budget now.
    pub fn admit_read_call(&self, now_ms: u64) -> bool {
        self.limits.lock().admit_read_call(now_ms)
    }

    /// Charges bytes a GetRecords call returned.
    pub fn charge_read_bytes(&self, bytes: u64, now_ms: u64) {
        self.limits.lock().charge_read_bytes(bytes, now_ms);
    }

    /// (records, bytes) committed since the log was opened.
    pub fn written_totals(&self) -> (u64, u64) {
        (
            self.shared.written_records.load(Ordering::Relaxed),
            self.shared.written_bytes.load(Ordering::Relaxed),
        )
    }

    /// Watches the commit point, to push records as soon as they are durable.
    pub fn watch_commit_point(&self) -> watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    pub fn commit_point(&self) -> u64 {
        *self.shared.committed.borrow()
    }

    pub fn first_offset(&self) -> u64 {
        self.shared.log.first_index()
    }

    /// The first offset whose arrival time is at or after `timestamp_ms`.
    pub async fn offset_at_timestamp(&self, timestamp_ms: u64) -> Result<u64, BrokerError> {
        let shared = Arc::clone(&self.shared);
        let offset =
            tokio::task::spawn_blocking(move || shared.log.index_at_timestamp(timestamp_ms))
                .await??;
        Ok(offset)
    }

    /// Committed records from `from`, at most `max_records` and about `max_bytes`.
    pub async fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, BrokerError> {
        let upto = self.commit_point();
        let from = from.max(self.shared.log.first_index());
        if from >= upto {
            return Ok(Vec::new());
        }
        let shared = Arc::clone(&self.shared);
        let entries = tokio::task::spawn_blocking(move || {
            shared.log.read(from, upto, max_records, max_bytes)
        })
        .await??;
        Ok(entries
            .into_iter()
            .filter_map(|entry| record::decode(entry.index, entry.timestamp_ms, entry.payload))
            .collect())
    }

    /// The arrival time of the newest committed record.
    pub fn newest_timestamp_ms(&self) -> u64 {
        self.shared.writer.lock().last_timestamp_ms
    }

    pub fn delete_older_than(&self, cutoff_ms: u64) -> Result<u64, BrokerError> {
        Ok(self.shared.log.delete_segments_older_than(cutoff_ms)?)
    }

    /// (segments, bytes of every file in the log's directory). Blocking: it lists the
    /// directory; a file that vanishes meanwhile (retention) counts as 0 bytes.
    pub fn disk_usage(&self) -> (u64, u64) {
        let segments = self.shared.log.stats().segments as u64;
        let bytes = std::fs::read_dir(self.shared.log.dir())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|entry| entry.metadata().ok())
                    .filter(std::fs::Metadata::is_file)
                    .map(|metadata| metadata.len())
                    .sum()
            })
            .unwrap_or(0);
        (segments, bytes)
    }
}

/// Fsyncs what was written but not yet synced (see `Shared::unsynced`).
async fn sync_behind(shared: &Arc<Shared>) {
    let Some(last) = shared.unsynced.lock().take() else {
        return;
    };
    let shared = Arc::clone(shared);
    let synced = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let result = shared.log.sync(last);
        shared
            .fsync_duration
            .observe(started.elapsed().as_secs_f64());
        result
    })
    .await;
    match synced {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "background fsync of a record log failed"),
        Err(error) => tracing::error!(%error, "background fsync of a record log failed"),
    }
}

/// The shard's writer: drains queued appends and commits each drain as one batch.
async fn run_writer(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<PendingAppend>,
    cancel: CancellationToken,
) {
    // When the oldest record not yet fsynced was written: the timer runs only while there
    // is one, so an idle shard never wakes.
    let mut dirty_since: Option<tokio::time::Instant> = None;
    loop {
        let sync_at = dirty_since.map(|since| since + BACKGROUND_SYNC);
        let first = tokio::select! {
            _ = cancel.cancelled() => {
                sync_behind(&shared).await;
                return;
            }
            () = tokio::time::sleep_until(sync_at.unwrap_or_else(tokio::time::Instant::now)),
                if sync_at.is_some() =>
            {
                sync_behind(&shared).await;
                dirty_since = None;
                continue;
            }
            next = queue.recv() => match next {
                Some(first) => first,
                None => {
                    sync_behind(&shared).await;
                    return;
                }
            },
        };
        let mut bytes = pending_bytes(&first);
        let mut records = first.records.len();
        let mut drained = vec![first];
        while bytes < MAX_DRAIN_BYTES && records < MAX_DRAIN_RECORDS {
            let Ok(next) = queue.try_recv() else {
                break;
            };
            bytes += pending_bytes(&next);
            records += next.records.len();
            drained.push(next);
        }
        let writer = Arc::clone(&shared);
        let joined = tokio::task::spawn_blocking(move || {
            let outcome = writer.append_blocking(&drained);
            (drained, outcome)
        })
        .await;
        let (drained, outcome) = match joined {
            Ok(done) => done,
            Err(join) => {
                tracing::error!(error = %join, "shard writer failed");
                return;
            }
        };
        if dirty_since.is_none() && shared.unsynced.lock().is_some() {
            dirty_since = Some(tokio::time::Instant::now());
        }
        match outcome {
            Ok(outcomes) => {
                for (pending, outcome) in drained.into_iter().zip(outcomes) {
                    let answer = outcome
                        .map(|first_offset| Appended { first_offset })
                        .map_err(|error| AppendError::Failed(BrokerError::SharedStorage(error)));
                    let _ = pending.reply.send(answer);
                }
            }
            Err(WriteFailure::Closed) => {
                for pending in drained {
                    let _ = pending.reply.send(Err(AppendError::Closed));
                }
            }
            Err(WriteFailure::Storage(error)) => {
                let error = Arc::new(error);
                for pending in drained {
                    let _ =
                        pending
                            .reply
                            .send(Err(AppendError::Failed(BrokerError::SharedStorage(
                                Arc::clone(&error),
                            ))));
                }
            }
        }
    }
}

fn pending_bytes(pending: &PendingAppend) -> usize {
    pending.records.record_bytes()
}

enum WriteFailure {
    Closed,
    Storage(StorageError),
}

/// The outcome of each drained append: its first offset, or why its batch failed.
type AppendOutcomes = Vec<Result<u64, Arc<StorageError>>>;

impl Shared {
    /// Writes the drained appends as framed batches (one per run of consecutive appends
    /// with the same key, so almost always one), fsyncs once, and advances the commit
    /// point. A batch the log refuses (a master key that will not wrap a new data key)
    /// fails only its own appends.
    fn append_blocking(&self, drained: &[PendingAppend]) -> Result<AppendOutcomes, WriteFailure> {
        let mut outcomes: AppendOutcomes = Vec::with_capacity(drained.len());
        let mut last_written = None;
        let mut written_records = 0u64;
        let mut written_bytes = 0usize;
        {
            let mut writer = self.writer.lock();
            if writer.closed {
                return Err(WriteFailure::Closed);
            }
            // Arrival timestamps never go backwards within a shard, even if the clock does.
            // Each append keeps its own (every replica applies the same appends in the same
            // order, however they are drained, and so gives the same timestamps).
            let mut timestamp_ms = writer.last_timestamp_ms;
            for run in drained.chunk_by(|a, b| a.key == b.key) {
                // The batches hold each record in the log's encoding already.
                let entries: Vec<EntryRef<'_>> = run
                    .iter()
                    .flat_map(|p| {
                        timestamp_ms = timestamp_ms.max(p.now_ms);
                        let stamp = timestamp_ms;
                        p.records.payloads().map(move |payload| EntryRef {
                            term: p.raft_index,
                            timestamp_ms: stamp,
                            payload,
                        })
                    })
                    .collect();
                match self.log.append_with(&entries, run[0].key.as_ref()) {
                    Ok((first, last)) => {
                        let mut next = first;
                        for pending in run {
                            outcomes.push(Ok(next));
                            next += pending.records.len() as u64;
                        }
                        last_written = Some(last);
                        written_records += last + 1 - first;
                        written_bytes +=
                            run.iter().map(|p| p.records.record_bytes()).sum::<usize>();
                        writer.last_timestamp_ms = timestamp_ms;
                    }
                    Err(error @ (StorageError::Key(_) | StorageError::NoKeyProvider { .. })) => {
                        tracing::warn!(error = %error, records = entries.len(), "could not encrypt a batch");
                        let error = Arc::new(error);
                        outcomes.extend(run.iter().map(|_| Err(Arc::clone(&error))));
                    }
                    Err(error) => return Err(WriteFailure::Storage(error)),
                }
            }
        }
        let Some(last) = last_written else {
            return Ok(outcomes);
        };
        // The records are durable in the shard group's Raft log already (they are applied
        // only once committed), and a replica that lost them in a crash applies them again
        // with the same offsets: the record log is fsynced behind, off the write path.
        *self.unsynced.lock() = Some(last);
        self.written_records
            .fetch_add(written_records, Ordering::Relaxed);
        self.written_bytes
            .fetch_add(written_bytes as u64, Ordering::Relaxed);
        self.committed.send_if_modified(|point| {
            if *point <= last {
                *point = last + 1;
                true
            } else {
                false
            }
        });
        Ok(outcomes)
    }
}
