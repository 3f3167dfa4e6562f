//! [`LogStore`]: openraft's `RaftLogStorage` over one `sluice_storage::Log`, and
//! [`LogReader`], its `RaftLogReader`.
//!
//! # Layout
//!
//! ```text
//! <dir>/log/         the segment log: one Log entry per Raft entry
//! <dir>/raft-state   vote, committed log id, last purged log id, index anchor (`state_file`)
//! ```
//!
//! # Entries
//!
//! A Raft entry is stored as one `Log` entry: the payload is the CBOR encoding (ciborium)
//! of the whole openraft entry, log id included; `EntryRef::term` is the entry's term
//! ([`EntryTerm`]) and `timestamp_ms` the wall-clock time of the append, never decreasing.
//! CBOR rather than JSON: it is binary (record bytes are not spelled out as text), it is
//! already a workspace dependency (the gateway's CBOR 1.1), and it needs no schema.
//! Every read checks that the decoded entry carries the Raft index it was read at.
//!
//! # Index mapping
//!
//! The Raft entry with index `r` is stored at log index `anchor.log + (r - anchor.raft)`.
//! A fresh store has the anchor `(0, 0)`, so Raft index `i` is log index `i`: openraft's
//! first entry (the membership that `Raft::initialize` appends) has index 0, and a fresh
//! `Log` starts at 0. The anchor moves only when an append starts a store that holds no
//! live entry at a Raft index other than the mapped one: a follower's first entry after
//! an installed snapshot (snapshot index + 1, everything before it purged) or a first
//! append at index 1 (openraft's test suite does that). The segment log cannot skip
//! indexes, so the new anchor `(log.next_index(), r)` is made durable in the state file
//! before the entries are appended. Log entries below `anchor.log` are dead: they were
//! all purged or truncated, and purge trims them with the purged ones.
//!
//! The Raft indexes served are `[first, next)`: `next` is mapped from
//! `Log::next_index`, `first` is the largest of `anchor.raft`, the mapped
//! `Log::first_index` and the last purged index + 1. Purge drops whole segments, so the
//! log keeps some purged entries until their segment is gone; they are never returned.
//!
//! # Durability and order
//!
//! * `append` writes the entries (one frame, readable at once) on a blocking thread
//!   before it returns, and queues its callback; a blocking task then runs
//!   `Log::sync` (group commit) and completes the queued callbacks, in append order,
//!   once they are durable.
//! * Every other write (vote, truncate, purge) first makes every earlier append durable
//!   and completes its callback, so writes reach the disk in the order openraft issued
//!   them, and a saved vote or committed id is never ahead of the log.
//! * The committed id is kept in memory and reaches the state file with the next of those
//!   writes: Raft needs no durable commit index (a restarted replica learns it from the
//!   leader, and an older one is still committed), and writing it at every commit would
//!   cost three fsyncs before each apply.
//! * The vote is durable before `save_vote` returns (state file: temp, fsync, rename,
//!   fsync the directory). Purge writes the purged id first and deletes segments after.
//!   Truncation is durable when `Log::truncate_from` returns.
//!
//! All blocking work runs on tokio's blocking pool: the store must be used from within a
//! tokio runtime (openraft's `TokioRuntime`).

mod state_file;
#[cfg(test)]
mod tests;

use crate::LogStoreError;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{CommittedLeaderIdOf, LogIdOf, VoteOf};
use openraft::vote::{RaftTerm, leader_id_adv, leader_id_std};
use openraft::{NodeId, OptionalSend, RaftTypeConfig};
use parking_lot::{Mutex, RwLock, RwLockUpgradableReadGuard, RwLockWriteGuard};
use serde::{Deserialize, Serialize};
use sluice_storage::{
    EncryptionKey, EntryRef, KeyProvider, Log, LogConfig, RecoveryReport, StorageError,
};
use state_file::{StateFile, fsync_dir};
use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, Range, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The segment log's directory inside the store directory.
const LOG_DIR: &str = "log";
/// `limited_get_log_entries` returns at most this many entries...
const READ_BATCH_ENTRIES: usize = 4096;
/// ...and about this many payload bytes (at least one entry).
const READ_BATCH_BYTES: usize = 4 << 20;
/// The newest entries of one store kept in memory for replication, in encoded bytes.
const RECENT_BYTES_PER_STORE: usize = 8 << 20;
/// ... and of every store of the process together: idle groups cannot pin much memory.
const RECENT_BYTES_TOTAL: usize = 256 << 20;
/// Bytes held by the recent-entry caches of every store.
static RECENT_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The newest appended entries, contiguous, with their encoded sizes: a leader sends
/// each entry to every follower right after appending it, and serving those reads from
/// memory saves reading and decoding them again.
struct Recent<C: RaftTypeConfig> {
    entries: VecDeque<(C::Entry, usize)>,
    bytes: usize,
}

impl<C: RaftTypeConfig> Recent<C>
where
    C::Entry: Clone,
{
    fn new() -> Self {
        Recent {
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.index())
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
            RECENT_BYTES.fetch_sub(size, Ordering::Relaxed);
        }
    }

    fn clear(&mut self) {
        while !self.entries.is_empty() {
            self.pop_front();
        }
    }

    /// Adds entries that follow the cached ones (a gap starts the cache over).
    fn push(&mut self, entries: &[C::Entry], sizes: &[usize]) {
        let Some(first) = entries.first() else {
            return;
        };
        let follows = self
            .entries
            .back()
            .is_none_or(|(last, _)| last.index() + 1 == first.index());
        if !follows {
            self.clear();
        }
        for (entry, size) in entries.iter().zip(sizes) {
            while !self.entries.is_empty()
                && (self.bytes + size > RECENT_BYTES_PER_STORE
                    || RECENT_BYTES.load(Ordering::Relaxed) + size > RECENT_BYTES_TOTAL)
            {
                self.pop_front();
            }
            if RECENT_BYTES.load(Ordering::Relaxed) + size > RECENT_BYTES_TOTAL
                || *size > RECENT_BYTES_PER_STORE
            {
                // No room: later entries would not follow the cached ones either.
                self.clear();
                return;
            }
            self.entries.push_back((entry.clone(), *size));
            self.bytes += size;
            RECENT_BYTES.fetch_add(*size, Ordering::Relaxed);
        }
    }

    /// Drops the entries from index `from` on.
    fn truncate_from(&mut self, from: u64) {
        while let Some((last, _)) = self.entries.back() {
            if last.index() < from {
                break;
            }
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
                RECENT_BYTES.fetch_sub(size, Ordering::Relaxed);
            }
        }
    }

    /// Entries `[from, to)` if the cache holds all of them, bounded like a log read.
    fn get(
        &self,
        from: u64,
        to: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Option<Vec<C::Entry>> {
        let first = self.first_index()?;
        let last = self.entries.back()?.0.index();
        if from < first || to > last + 1 {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for (entry, size) in self
            .entries
            .range((from - first) as usize..(to - first) as usize)
        {
            if !out.is_empty() && (out.len() >= max_entries || bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            out.push(entry.clone());
        }
        Some(out)
    }
}

impl<C: RaftTypeConfig> Drop for Recent<C> {
    fn drop(&mut self) {
        RECENT_BYTES.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The term of a committed leader id, as the `u64` the segment log keeps beside each
/// entry (`EntryRef::term`). Implemented for openraft's two leader-id kinds with terms
/// that convert to `u64`.
pub trait EntryTerm {
    /// The leader's term.
    fn term_u64(&self) -> u64;
}

impl<T, N> EntryTerm for leader_id_adv::LeaderId<T, N>
where
    T: RaftTerm + Into<u64>,
    N: NodeId,
{
    fn term_u64(&self) -> u64 {
        self.term.into()
    }
}

impl<T> EntryTerm for leader_id_std::CommittedLeaderId<T>
where
    T: RaftTerm + Into<u64>,
{
    fn term_u64(&self) -> u64 {
        self.term.into()
    }
}

/// Raft index `raft` is stored at log index `log`; later indexes follow consecutively.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Anchor {
    log: u64,
    raft: u64,
}

/// What the state file holds.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct HardState<C: RaftTypeConfig> {
    vote: Option<VoteOf<C>>,
    committed: Option<LogIdOf<C>>,
    purged: Option<LogIdOf<C>>,
    anchor: Anchor,
}

impl<C: RaftTypeConfig> Default for HardState<C> {
    fn default() -> Self {
        HardState {
            vote: None,
            committed: None,
            purged: None,
            anchor: Anchor::default(),
        }
    }
}

impl<C: RaftTypeConfig> Clone for HardState<C> {
    fn clone(&self) -> Self {
        HardState {
            vote: self.vote.clone(),
            committed: self.committed.clone(),
            purged: self.purged.clone(),
            anchor: self.anchor,
        }
    }
}

impl<C: RaftTypeConfig> HardState<C> {
    /// The Raft indexes the store serves (see the module docs).
    fn live_range(&self, log: &Log) -> Range<u64> {
        let a = self.anchor;
        let next = a
            .raft
            .saturating_add(log.next_index().saturating_sub(a.log));
        let stored_first = a
            .raft
            .saturating_add(log.first_index().saturating_sub(a.log));
        let purged_next = self
            .purged
            .as_ref()
            .map_or(0, |p| p.index.saturating_add(1));
        let first = stored_first.max(purged_next);
        first..next.max(first)
    }

    /// The Raft index the log's next entry maps to; `None` if the log ends before the
    /// anchor (an unsynced tail was lost with `fsync` off).
    fn mapped_next(&self, log: &Log) -> Option<u64> {
        let a = self.anchor;
        log.next_index()
            .checked_sub(a.log)
            .map(|n| a.raft.saturating_add(n))
    }

    /// The log index of Raft index `raft`, which is at or above the anchor.
    fn log_index(&self, raft: u64) -> u64 {
        debug_assert!(raft >= self.anchor.raft);
        self.anchor
            .log
            .saturating_add(raft.saturating_sub(self.anchor.raft))
    }

    /// The Raft index stored at log index `log`, which is at or above the anchor.
    fn raft_index(&self, log: u64) -> u64 {
        debug_assert!(log >= self.anchor.log);
        self.anchor
            .raft
            .saturating_add(log.saturating_sub(self.anchor.log))
    }
}

/// What only the writer touches (`LogStore` methods, which openraft calls one at a time).
struct Writer<C: RaftTypeConfig> {
    file: StateFile,
    /// The log id of the last live entry, `None` if there is none.
    last: Option<LogIdOf<C>>,
    /// The newest `timestamp_ms` appended.
    last_ts: u64,
}

/// An append whose callback waits for its entries to be durable.
struct Pending<C: RaftTypeConfig> {
    /// The last log index of the append; `None` for an empty append.
    last: Option<u64>,
    callback: IOFlushed<C>,
}

/// Chooses the master key an entry is sealed under on disk (`None`: stored in clear).
pub type Sealer<C> =
    Arc<dyn Fn(&<C as RaftTypeConfig>::Entry) -> Option<EncryptionKey> + Send + Sync>;

struct Shared<C: RaftTypeConfig> {
    dir: PathBuf,
    log: Log,
    /// Encryption at rest of the entries, when the group's data asks for it.
    sealer: Option<Sealer<C>>,
    /// The state as on disk. Readers hold it shared for the length of a read;
    /// truncation and a move of the anchor hold it exclusively.
    hard: RwLock<HardState<C>>,
    writer: Mutex<Writer<C>>,
    pending: Mutex<VecDeque<Pending<C>>>,
    /// The newest entries, for replication reads; changed under the writer lock.
    recent: Mutex<Recent<C>>,
    /// See [`LogStore::damage`].
    damage: Mutex<Option<LogIdOf<C>>>,
}

/// Raft log storage for one Raft group over a `sluice_storage::Log`. See the module
/// docs for the layout, the index mapping and the durability rules.
pub struct LogStore<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

/// Reads entries and the vote of a [`LogStore`]; cheap to clone, sees every append as
/// soon as `append` returns.
pub struct LogReader<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

impl<C: RaftTypeConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        LogReader {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    CommittedLeaderIdOf<C>: EntryTerm,
    C::Entry: Clone,
{
    /// Opens (creating if absent) the store in `dir` and recovers its segment log (a
    /// torn tail is cut: see `Log::open`). `cfg.fsync` also governs the state file; only
    /// tests that want speed turn it off.
    pub async fn open(
        dir: impl Into<PathBuf>,
        cfg: LogConfig,
    ) -> Result<LogStore<C>, LogStoreError> {
        let dir = dir.into();
        blocking(move || Self::open_blocking(dir, cfg, None)).await
    }

    /// Opens the store like [`open`](Self::open); each appended entry is sealed under the
    /// master key `sealer` names for it (`keys` wraps and unwraps the data keys), so data
    /// encrypted at rest elsewhere is not kept in clear in the Raft log.
    pub async fn open_sealed(
        dir: impl Into<PathBuf>,
        cfg: LogConfig,
        keys: Arc<dyn KeyProvider>,
        sealer: Sealer<C>,
    ) -> Result<LogStore<C>, LogStoreError> {
        let dir = dir.into();
        blocking(move || Self::open_blocking(dir, cfg, Some((keys, sealer)))).await
    }

    fn open_blocking(
        dir: PathBuf,
        cfg: LogConfig,
        sealing: Option<(Arc<dyn KeyProvider>, Sealer<C>)>,
    ) -> Result<LogStore<C>, LogStoreError> {
        let created = !dir.exists();
        std::fs::create_dir_all(&dir)
            .map_err(|e| LogStoreError::io("create store directory", &dir, e))?;
        if created
            && cfg.fsync
            && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty())
        {
            fsync_dir(parent)?;
        }
        let fsync = cfg.fsync;
        let (log, sealer) = match sealing {
            Some((keys, sealer)) => (
                Log::open_with_keys(&dir.join(LOG_DIR), cfg, keys)?,
                Some(sealer),
            ),
            None => (Log::open(&dir.join(LOG_DIR), cfg)?, None),
        };
        let file = StateFile::new(&dir, fsync);
        let hard: HardState<C> = file.load()?.unwrap_or_default();
        if log.next_index() < hard.anchor.log {
            tracing::warn!(
                dir = %dir.display(),
                log_next = log.next_index(),
                anchor = hard.anchor.log,
                "segment log ends before the index anchor; the store holds no live entry"
            );
        }
        let last_ts = log.last_entry_timestamp().unwrap_or(0);
        let shared = Shared {
            dir,
            log,
            sealer,
            hard: RwLock::new(hard),
            writer: Mutex::new(Writer {
                file,
                last: None,
                last_ts,
            }),
            pending: Mutex::new(VecDeque::new()),
            recent: Mutex::new(Recent::new()),
            damage: Mutex::new(None),
        };
        let last = shared.last_live_log_id(&shared.hard.read())?;
        shared.writer.lock().last = last.clone();
        if shared.log.recovery_report().corrupt_batches > 0 {
            let kept = shared.cut_damage()?;
            tracing::error!(
                dir = %shared.dir.display(),
                kept = ?kept.as_ref().map(|l| l.index),
                held = ?last.as_ref().map(|l| l.index),
                "raft log entries fail their checksum: cut the log before the first of them; \
                 the replica must catch up from its group before it votes or leads again"
            );
            *shared.damage.lock() = last;
        }
        Ok(LogStore {
            shared: Arc::new(shared),
        })
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// What opening the segment log repaired (a cut torn tail, corrupt batches).
    pub fn recovery_report(&self) -> RecoveryReport {
        self.shared.log.recovery_report()
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The last log id the store held before `open` cut entries that failed their
    /// checksum (media damage), `None` if nothing was cut. Entries up to it may have been
    /// acknowledged to a leader: until the log holds them again (from the group's leader),
    /// the replica must neither stand for election nor vote for a candidate whose log ends
    /// before it, or a single damaged disk could lose committed entries.
    pub fn damage(&self) -> Option<LogIdOf<C>> {
        self.shared.damage.lock().clone()
    }
}

impl<C> Shared<C>
where
    C: RaftTypeConfig,
    CommittedLeaderIdOf<C>: EntryTerm,
    C::Entry: Clone,
{
    /// Entries with Raft index in `[start, end)` that the store serves, bounded by
    /// `max_entries` and about `max_bytes` (at least one entry).
    fn read(
        &self,
        start: u64,
        end: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<C::Entry>, LogStoreError> {
        let hard = self.hard.read();
        let live = hard.live_range(&self.log);
        let from = start.max(live.start);
        let to = end.min(live.end);
        if from >= to {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.recent.lock().get(from, to, max_entries, max_bytes) {
            return Ok(entries);
        }
        let raw = self.log.read(
            hard.log_index(from),
            hard.log_index(to),
            max_entries,
            max_bytes,
        )?;
        raw.iter()
            .map(|e| decode_entry::<C>(hard.raft_index(e.index), &e.payload))
            .collect()
    }

    /// Finds the first live entry that fails its checksum and truncates the log before
    /// it; returns the log id of the last entry kept.
    fn cut_damage(&self) -> Result<Option<LogIdOf<C>>, LogStoreError> {
        const CHUNK: u64 = 256;
        let live = self.hard.read().live_range(&self.log);
        let readable = |from: u64, to: u64| -> Result<bool, LogStoreError> {
            let hard = self.hard.read();
            match self.log.read(
                hard.log_index(from),
                hard.log_index(to),
                usize::MAX,
                usize::MAX,
            ) {
                Ok(_) => Ok(true),
                Err(StorageError::Corrupt { .. }) => Ok(false),
                Err(error) => Err(error.into()),
            }
        };
        let mut first_bad = None;
        let mut index = live.start;
        while index < live.end && first_bad.is_none() {
            let to = (index + CHUNK).min(live.end);
            if !readable(index, to)? {
                for i in index..to {
                    if !readable(i, i + 1)? {
                        first_bad = Some(i);
                        break;
                    }
                }
            }
            index = to;
        }
        let Some(first_bad) = first_bad else {
            return Ok(self.writer.lock().last.clone());
        };
        let kept = if first_bad > live.start {
            self.read(first_bad - 1, first_bad, 1, usize::MAX)?
                .pop()
                .map(|e| e.log_id())
        } else {
            self.hard.read().purged.clone()
        };
        self.truncate_after(kept.clone())?;
        Ok(kept)
    }

    /// The log id of the last live entry, read from the log.
    fn last_live_log_id(&self, hard: &HardState<C>) -> Result<Option<LogIdOf<C>>, LogStoreError> {
        let live = hard.live_range(&self.log);
        if live.is_empty() {
            return Ok(None);
        }
        let last = live.end - 1;
        let raw = self
            .log
            .read(hard.log_index(last), hard.log_index(live.end), 1, 0)?;
        match raw.first() {
            Some(e) => Ok(Some(decode_entry::<C>(last, &e.payload)?.log_id())),
            None => Ok(None),
        }
    }

    /// Makes every appended entry durable and completes the callbacks it covers, in
    /// append order. On failure every queued callback gets the error: the log is
    /// stopped until it is reopened.
    fn sync_pending(&self) -> Result<(), LogStoreError> {
        let result = loop {
            let next = self.log.next_index();
            if next == 0 {
                break Ok(());
            }
            match self.log.sync(next - 1) {
                // A truncation moved the end between the two calls: sync the new end.
                Err(StorageError::NotWritten { .. }) => continue,
                other => break other,
            }
        };
        let mut pending = self.pending.lock();
        match result {
            Ok(()) => {
                let durable_next = self.log.durable_index().map_or(0, |d| d + 1);
                while pending
                    .front()
                    .is_some_and(|p| p.last.is_none_or(|last| last < durable_next))
                {
                    if let Some(p) = pending.pop_front() {
                        p.callback.io_completed(Ok(()));
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "sync of appended raft entries failed");
                let e = Arc::new(e);
                for p in pending.drain(..) {
                    p.callback
                        .io_completed(Err(LogStoreError::Flush(Arc::clone(&e)).into()));
                }
                Err(LogStoreError::Flush(e))
            }
        }
    }

    fn append(&self, entries: Vec<C::Entry>, callback: IOFlushed<C>) -> Result<(), LogStoreError> {
        let mut writer = self.writer.lock();
        let Some(first) = entries.first().map(|e| e.index()) else {
            self.pending.lock().push_back(Pending {
                last: None,
                callback,
            });
            return Ok(());
        };
        for (expected, entry) in (first..).zip(&entries) {
            if entry.index() != expected {
                return Err(LogStoreError::NotContiguous {
                    expected,
                    got: entry.index(),
                });
            }
        }
        let hard = self.hard.upgradable_read();
        let live = hard.live_range(&self.log);
        let hard = if !live.is_empty() {
            if first != live.end {
                return Err(LogStoreError::NotContiguous {
                    expected: live.end,
                    got: first,
                });
            }
            hard
        } else {
            if let Some(purged) = &hard.purged
                && first != purged.index.saturating_add(1)
            {
                if first <= purged.index {
                    return Err(LogStoreError::BelowPurged {
                        got: first,
                        purged: purged.index,
                    });
                }
                return Err(LogStoreError::NotContiguous {
                    expected: purged.index.saturating_add(1),
                    got: first,
                });
            }
            if hard.mapped_next(&self.log) == Some(first) {
                hard
            } else {
                // No live entry, and the mapping puts `first` elsewhere: move the anchor.
                // The log's end must be durable first, or a crash could lose entries
                // below the new anchor and shift every later index.
                self.sync_pending()?;
                let mut moved = hard.clone();
                moved.anchor = Anchor {
                    log: self.log.next_index(),
                    raft: first,
                };
                writer.file.store(&moved)?;
                tracing::debug!(dir = %self.dir.display(), log = moved.anchor.log, raft = first, "moved the raft index anchor");
                let mut hard = RwLockUpgradableReadGuard::upgrade(hard);
                *hard = moved;
                RwLockWriteGuard::downgrade_to_upgradable(hard)
            }
        };

        let now = now_ms().max(writer.last_ts);
        let payloads = entries
            .iter()
            .map(|entry| {
                let mut buf = Vec::with_capacity(128);
                ciborium::into_writer(entry, &mut buf)
                    .map(|()| buf)
                    .map_err(|source| LogStoreError::Encode {
                        what: "raft entry",
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<EntryRef<'_>> = entries
            .iter()
            .zip(&payloads)
            .map(|(entry, payload)| {
                let (leader, _) = entry.log_id_parts();
                EntryRef {
                    term: leader.term_u64(),
                    timestamp_ms: now,
                    payload,
                }
            })
            .collect();
        let (first_log, last_log) = match &self.sealer {
            None => self.log.append(&refs)?,
            Some(sealer) => {
                // One frame per run of entries sealed under the same key.
                let keys: Vec<Option<EncryptionKey>> = entries.iter().map(|e| sealer(e)).collect();
                let mut first_log = None;
                let mut last_log = 0;
                let mut start = 0;
                while start < refs.len() {
                    let end = (start..refs.len())
                        .find(|i| keys[*i] != keys[start])
                        .unwrap_or(refs.len());
                    let (first, last) = self
                        .log
                        .append_with(&refs[start..end], keys[start].as_ref())?;
                    first_log.get_or_insert(first);
                    last_log = last;
                    start = end;
                }
                (first_log.unwrap_or(last_log), last_log)
            }
        };
        debug_assert_eq!(first_log, hard.log_index(first));
        let sizes: Vec<usize> = payloads.iter().map(Vec::len).collect();
        self.recent.lock().push(&entries, &sizes);
        drop(hard);
        writer.last_ts = now;
        writer.last = entries.last().map(|e| e.log_id());
        self.pending.lock().push_back(Pending {
            last: Some(last_log),
            callback,
        });
        Ok(())
    }

    /// Replaces the hard state after every earlier append is durable.
    fn update_hard(&self, change: impl FnOnce(&mut HardState<C>)) -> Result<(), LogStoreError> {
        let writer = self.writer.lock();
        self.sync_pending()?;
        let mut hard = self.hard.read().clone();
        change(&mut hard);
        writer.file.store(&hard)?;
        *self.hard.write() = hard;
        Ok(())
    }

    fn truncate_after(&self, last_kept: Option<LogIdOf<C>>) -> Result<(), LogStoreError> {
        let mut writer = self.writer.lock();
        self.sync_pending()?;
        let from = last_kept.as_ref().map_or(0, |l| l.index.saturating_add(1));
        let hard = self.hard.write();
        let live = hard.live_range(&self.log);
        if from >= live.end {
            return Ok(());
        }
        let from_log = if from <= hard.anchor.raft {
            hard.anchor.log
        } else {
            hard.log_index(from)
        };
        self.recent.lock().truncate_from(from);
        // Entries below the log's first index are dead already (purged or truncated).
        self.log
            .truncate_from(from_log.max(self.log.first_index()))?;
        writer.last = self.last_live_log_id(&hard)?;
        tracing::debug!(dir = %self.dir.display(), from, "truncated raft log");
        Ok(())
    }

    fn purge(&self, upto: LogIdOf<C>) -> Result<(), LogStoreError> {
        let mut writer = self.writer.lock();
        self.sync_pending()?;
        let mut hard = self.hard.read().clone();
        if hard.purged.as_ref().is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        let purged_next = upto.index.saturating_add(1);
        hard.purged = Some(upto);
        writer.file.store(&hard)?;
        let trim_before = if purged_next <= hard.anchor.raft {
            hard.anchor.log
        } else {
            hard.log_index(purged_next).min(self.log.next_index())
        };
        *self.hard.write() = hard;
        {
            let mut recent = self.recent.lock();
            while recent.first_index().is_some_and(|i| i < purged_next) {
                recent.pop_front();
            }
        }
        if writer.last.as_ref().is_some_and(|l| l.index < purged_next) {
            writer.last = None;
        }
        // Readers no longer ask for anything below `trim_before`.
        let dropped = self.log.trim_before(trim_before)?;
        tracing::debug!(dir = %self.dir.display(), purged_next, dropped, "purged raft log");
        Ok(())
    }
}

fn decode_entry<C: RaftTypeConfig>(index: u64, payload: &[u8]) -> Result<C::Entry, LogStoreError> {
    let entry: C::Entry = ciborium::from_reader(payload)
        .map_err(|source| LogStoreError::DecodeEntry { index, source })?;
    let found = entry.index();
    if found != index {
        return Err(LogStoreError::IndexMismatch { index, found });
    }
    Ok(entry)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs blocking storage work on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, LogStoreError>
where
    F: FnOnce() -> Result<T, LogStoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(LogStoreError::Join)?
}

/// `[start, end)` of any range of Raft indexes.
fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl<C> RaftLogReader<C> for LogReader<C>
where
    C: RaftTypeConfig,
    CommittedLeaderIdOf<C>: EntryTerm,
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let (start, end) = bounds(&range);
        let shared = Arc::clone(&self.shared);
        Ok(blocking(move || shared.read(start, end, usize::MAX, usize::MAX)).await?)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(self.shared.hard.read().vote.clone())
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let shared = Arc::clone(&self.shared);
        Ok(blocking(move || shared.read(start, end, READ_BATCH_ENTRIES, READ_BATCH_BYTES)).await?)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    CommittedLeaderIdOf<C>: EntryTerm,
    C::Entry: Clone,
{
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id = self.shared.hard.read().purged.clone();
        let last = self.shared.writer.lock().last.clone();
        let last_log_id = last.or_else(|| last_purged_log_id.clone());
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let shared = Arc::clone(&self.shared);
        let vote = vote.clone();
        Ok(blocking(move || shared.update_hard(|h| h.vote = Some(vote))).await?)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        // Not written now: see "Durability and order" in the module docs.
        let mut hard = self.shared.hard.write();
        if committed > hard.committed {
            hard.committed = committed;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.shared.hard.read().committed.clone())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        let shared = Arc::clone(&self.shared);
        blocking(move || shared.append(entries, callback)).await?;
        // The sync runs on its own: the next append does not wait for it, and a later
        // write of any other kind completes whatever it has not completed yet.
        let shared = Arc::clone(&self.shared);
        drop(tokio::task::spawn_blocking(move || shared.sync_pending()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let shared = Arc::clone(&self.shared);
        Ok(blocking(move || shared.truncate_after(last_log_id)).await?)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let shared = Arc::clone(&self.shared);
        Ok(blocking(move || shared.purge(log_id)).await?)
    }
}
