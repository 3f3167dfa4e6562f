//! The segment log: append, group-committed sync, reads, timestamp lookup, retention,
//! suffix truncation and crash recovery over the files described in `segment`.
//!
//! # Concurrency
//!
//! * `writer` serializes every mutation (append, roll, truncate, retention) and owns the
//!   reusable frame buffer, so a batch is encoded once and written with one `pwrite`.
//! * `state` (a read-write lock) holds the list of segments. Readers hold it shared for
//!   the length of a read; only roll, truncation and retention take it exclusively, and
//!   only briefly. Reads never touch `writer`.
//! * An append writes its frame, then updates the active segment's size and index, then
//!   publishes `next_index` (release). Readers load `next_index` (acquire) first and
//!   never look at entries at or beyond it, so they cannot see a partial batch.
//! * Group commit (`sync`): a caller whose index is not yet durable either becomes the
//!   leader (no sync in flight) or waits on a condition variable for the sync in flight.
//!   The leader snapshots `next_index`, fdatasyncs the active segment with no lock held,
//!   and then marks everything below the snapshot durable, which releases every waiter it
//!   covers. Sealed segments need no sync: the active segment is fdatasync'd before it
//!   is sealed.
//! * Any failed write or sync stops the log ([`StorageError::Failed`]) until it is
//!   reopened: after such a failure the page cache and the disk may disagree.
//!
//! # Encryption
//!
//! [`Log::append_with`] seals a batch under the active segment's data key, creating the
//! key (wrapped by the given master key through the log's [`KeyProvider`], stored in the
//! segment's `.key` sidecar, durable before the batch) on the first encrypted append to
//! a segment, and sealing the segment first if its key belongs to another master key.
//! Each segment's cipher is loaded with the segment (active: at open; sealed: with its
//! indexes) and travels with the segment's view to every read, so readers open
//! encrypted batches transparently. The plaintext path (`append`) never touches a key.

use crate::crypto::{self, SegmentCipher};
use crate::error::StorageError;
use crate::frame::{self, MAX_FRAME_BYTES};
use crate::keyring::{EncryptionKey, KeyProvider};
use crate::segment::{
    self, ChunkReader, FrameWalker, IndexBuilder, IndexEntry, KEY_TMP_SUFFIX, LOG_EXT, RawFrame,
    ScanFrom, ScanStop, SegmentPaths, SparseIndex, TMP_SUFFIX, write_index_files,
};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The largest allowed `segment_bytes`.
const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// How many sealed segments keep an open file handle and their loaded indexes.
const OPEN_SEALED_SEGMENTS: usize = 16;
/// The frame buffer is released after a batch larger than this.
const KEEP_BUFFER_BYTES: usize = 16 << 20;

/// Tuning of one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A new segment is started when the next batch would push the active one past this
    /// size (a single larger batch gets a segment of its own). At most 1 GiB.
    pub segment_bytes: u64,
    /// A sparse index point is written about every this many bytes of batches.
    pub index_interval_bytes: u32,
    /// Whether `sync` really calls fdatasync. Only tests that want speed turn it off.
    pub fsync: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
            index_interval_bytes: 4096,
            fsync: true,
        }
    }
}

impl LogConfig {
    fn validate(&self) -> Result<(), StorageError> {
        if self.segment_bytes == 0 {
            return Err(StorageError::InvalidConfig(
                "segment_bytes must be positive",
            ));
        }
        if self.segment_bytes > MAX_SEGMENT_BYTES {
            return Err(StorageError::InvalidConfig(
                "segment_bytes must be at most 1 GiB",
            ));
        }
        Ok(())
    }
}

/// One entry to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub term: u64,
    /// Must not decrease in append order (the time index relies on it).
    pub timestamp_ms: u64,
    pub payload: &'a [u8],
}

/// One entry read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub timestamp_ms: u64,
    pub payload: Bytes,
}

/// What `open` had to repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Whether any bytes or segments were cut (a torn tail, or a superseded overlap left
    /// by a crash during `truncate_from`).
    pub truncated: bool,
    /// How many bytes were cut, whole removed segments included.
    pub bytes_cut: u64,
    /// How many segment files were removed because a predecessor ended early.
    pub segments_removed: usize,
    /// Batches in the last segment that fail their checksum but are followed by valid
    /// ones: media damage rather than a torn write. They are kept, reads of them fail
    /// with [`StorageError::Corrupt`], and the log needs repair from a peer.
    pub corrupt_batches: usize,
    /// How many index file pairs were rewritten because they were missing or stale.
    pub indexes_rebuilt: usize,
}

/// Counters since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub appends: u64,
    pub appended_entries: u64,
    pub appended_bytes: u64,
    /// Calls to [`Log::sync`].
    pub sync_calls: u64,
    /// fdatasync calls on segment files (group commit, sealing and truncation).
    pub fdatasyncs: u64,
    pub segments_created: u64,
    pub segments_deleted: u64,
    /// Segments currently in the log, the active one included.
    pub segments: usize,
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    appended_entries: AtomicU64,
    appended_bytes: AtomicU64,
    sync_calls: AtomicU64,
    fdatasyncs: AtomicU64,
    segments_created: AtomicU64,
    segments_deleted: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// The segment being written.
struct Active {
    base: u64,
    paths: SegmentPaths,
    file: Arc<File>,
    /// The data key of its encrypted batches; set (sidecar written) before the first.
    cipher: RwLock<Option<Arc<SegmentCipher>>>,
    meta: RwLock<ActiveMeta>,
    /// How many index points are already in the index files.
    persisted_points: Mutex<usize>,
}

struct ActiveMeta {
    /// Bytes of complete frames.
    size: u64,
    next_index: u64,
    index: SparseIndex,
    builder: IndexBuilder,
    max_ts: Option<u64>,
}

/// A segment that is no longer written. Its file and indexes are loaded on demand and
/// kept in a small cache.
struct Sealed {
    base: u64,
    /// The base of the next segment.
    end: u64,
    size: u64,
    paths: SegmentPaths,
    max_ts: OnceLock<u64>,
    loaded: Mutex<Option<Arc<Loaded>>>,
}

struct Loaded {
    file: Arc<File>,
    cipher: Option<Arc<SegmentCipher>>,
    index: SparseIndex,
    /// The newest timestamp, or where and why the tail failed verification.
    tail: Result<u64, (u64, &'static str)>,
}

struct State {
    sealed: Vec<Arc<Sealed>>,
    active: Arc<Active>,
}

impl State {
    fn first_index(&self) -> u64 {
        self.sealed.first().map_or(self.active.base, |s| s.base)
    }

    /// The position (in segment order, the active segment last) of the segment that
    /// holds `index`; the caller has checked `index >= first_index()`.
    fn locate(&self, index: u64) -> usize {
        if index >= self.active.base {
            return self.sealed.len();
        }
        self.sealed
            .partition_point(|s| s.base <= index)
            .saturating_sub(1)
    }
}

struct SyncState {
    /// Every entry below this index is durable.
    durable_next: u64,
    in_flight: bool,
}

/// A segment prepared for reading.
struct View<'a> {
    base: u64,
    /// Written bytes to read up to.
    size: u64,
    /// For sealed segments, the base of the next segment.
    end: Option<u64>,
    file: Arc<File>,
    path: &'a Path,
    cipher: Option<Arc<SegmentCipher>>,
    hints: Hints<'a>,
}

enum Hints<'a> {
    Sealed(Arc<Loaded>),
    Active(&'a Active),
}

impl View<'_> {
    fn hint_for_index(&self, index: u64) -> Option<IndexEntry> {
        let rel = index.saturating_sub(self.base);
        match &self.hints {
            Hints::Sealed(loaded) => loaded.index.floor_by_rel(rel),
            Hints::Active(active) => active.meta.read().index.floor_by_rel(rel),
        }
    }

    fn hint_for_ts(&self, ts: u64) -> Option<IndexEntry> {
        match &self.hints {
            Hints::Sealed(loaded) => loaded.index.last_before_ts(ts),
            Hints::Active(active) => active.meta.read().index.last_before_ts(ts),
        }
    }

    /// Whether a frame starting at `base_index` still belongs to this segment.
    fn owns(&self, base_index: u64) -> bool {
        self.end.is_none_or(|end| base_index < end)
    }

    /// Fails if a sealed segment's frames ran out before its end index.
    fn check_complete(&self, walker: &FrameWalker<'_>) -> Result<(), StorageError> {
        match self.end {
            Some(end) if walker.expected() < end => Err(StorageError::corrupt(
                self.path,
                self.size,
                "segment ends before the next segment's base",
            )),
            _ => Ok(()),
        }
    }
}

/// A durable, append-only log of entries in segment files. See the crate docs.
pub struct Log {
    dir: PathBuf,
    cfg: LogConfig,
    keys: Option<Arc<dyn KeyProvider>>,
    writer: Mutex<Vec<u8>>,
    state: RwLock<State>,
    next_index: AtomicU64,
    first_index: AtomicU64,
    last_ts: Mutex<Option<u64>>,
    sync: Mutex<SyncState>,
    sync_done: Condvar,
    failed: AtomicBool,
    open_sealed: Mutex<VecDeque<Arc<Sealed>>>,
    counters: Counters,
    report: RecoveryReport,
    destroyed: AtomicBool,
}

/// Holds the group-commit slot so that no sync runs while a truncation rewrites files.
struct SyncSlot<'a> {
    log: &'a Log,
}

impl Drop for SyncSlot<'_> {
    fn drop(&mut self) {
        self.log.sync.lock().in_flight = false;
        self.log.sync_done.notify_all();
    }
}

impl Log {
    /// Opens (creating if absent) the log in `dir` and recovers it.
    ///
    /// Recovery scans the last segment frame by frame (length, header, index chain and
    /// CRC32C) and cuts it after the last valid batch, so a torn tail from a crash or
    /// power loss disappears whole: a batch is either entirely there or not at all. The
    /// segment before it is checked too, from its last index point; if it ends early the
    /// newer segment is removed and the older one becomes the last. The indexes of the
    /// last segment are rebuilt from the scan and rewritten if their files differ.
    /// Everything recovered counts as durable (it is fdatasync'd here).
    ///
    /// A log opened this way cannot read or write encrypted segments: it fails with
    /// [`StorageError::NoKeyProvider`] where it meets one. See
    /// [`open_with_keys`](Self::open_with_keys).
    pub fn open(dir: &Path, cfg: LogConfig) -> Result<Log, StorageError> {
        Self::open_impl(dir, cfg, None)
    }

    /// Opens the log like [`open`](Self::open), with `keys` to unwrap the data keys of
    /// encrypted segments and to wrap new ones for [`append_with`](Self::append_with).
    pub fn open_with_keys(
        dir: &Path,
        cfg: LogConfig,
        keys: Arc<dyn KeyProvider>,
    ) -> Result<Log, StorageError> {
        Self::open_impl(dir, cfg, Some(keys))
    }

    fn open_impl(
        dir: &Path,
        cfg: LogConfig,
        keys: Option<Arc<dyn KeyProvider>>,
    ) -> Result<Log, StorageError> {
        cfg.validate()?;
        let created = !dir.exists();
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::io("create log directory", dir, e))?;
        if created
            && cfg.fsync
            && let Some(parent) = dir.parent()
        {
            fsync_dir(parent)?;
        }
        let mut report = RecoveryReport::default();
        let mut fdatasyncs = 0;
        let mut bases = list_segments(dir)?;
        if bases.is_empty() {
            create_segment_files(dir, 0)?;
            if cfg.fsync {
                fsync_dir(dir)?;
            }
            bases.push(0);
        }
        while let [.., prev, last] = bases[..] {
            if check_predecessor(dir, prev, last, &cfg, keys.as_ref(), &mut report)? {
                break;
            }
            let paths = SegmentPaths::new(dir, last);
            let len = std::fs::metadata(&paths.log).map(|m| m.len()).unwrap_or(0);
            remove_segment_files(&paths)?;
            tracing::warn!(dir = %dir.display(), segment = last, bytes = len, "removed a segment after an incomplete predecessor");
            report.truncated = true;
            report.bytes_cut += len;
            report.segments_removed += 1;
            bases.pop();
            if cfg.fsync {
                fsync_dir(dir)?;
            }
        }
        let last = bases.last().copied().unwrap_or(0);
        let active = Arc::new(load_active(
            dir,
            last,
            &cfg,
            keys.as_ref(),
            &mut report,
            &mut fdatasyncs,
        )?);
        let sealed: Vec<Arc<Sealed>> = bases
            .windows(2)
            .map(|pair| {
                let paths = SegmentPaths::new(dir, pair[0]);
                let size = std::fs::metadata(&paths.log)
                    .map_err(|e| StorageError::io("stat segment", &paths.log, e))?
                    .len();
                Ok(Arc::new(Sealed::new(pair[0], pair[1], size, paths)))
            })
            .collect::<Result<_, StorageError>>()?;
        let next_index = active.meta.read().next_index;
        let state = State { sealed, active };
        let first_index = state.first_index();
        let log = Log {
            dir: dir.to_path_buf(),
            cfg,
            keys,
            writer: Mutex::new(Vec::new()),
            state: RwLock::new(state),
            next_index: AtomicU64::new(next_index),
            first_index: AtomicU64::new(first_index),
            last_ts: Mutex::new(None),
            sync: Mutex::new(SyncState {
                durable_next: next_index,
                in_flight: false,
            }),
            sync_done: Condvar::new(),
            failed: AtomicBool::new(false),
            open_sealed: Mutex::new(VecDeque::new()),
            counters: Counters::default(),
            report,
            destroyed: AtomicBool::new(false),
        };
        bump(&log.counters.fdatasyncs, fdatasyncs);
        let last_ts = log.newest_timestamp();
        *log.last_ts.lock() = last_ts;
        if log.report != RecoveryReport::default() {
            tracing::info!(
                dir = %log.dir.display(),
                bytes_cut = log.report.bytes_cut,
                segments_removed = log.report.segments_removed,
                corrupt_batches = log.report.corrupt_batches,
                indexes_rebuilt = log.report.indexes_rebuilt,
                "recovered segment log"
            );
        }
        Ok(log)
    }

    /// What `open` repaired.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.report.clone()
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        LogStats {
            appends: c.appends.load(Ordering::Relaxed),
            appended_entries: c.appended_entries.load(Ordering::Relaxed),
            appended_bytes: c.appended_bytes.load(Ordering::Relaxed),
            sync_calls: c.sync_calls.load(Ordering::Relaxed),
            fdatasyncs: c.fdatasyncs.load(Ordering::Relaxed),
            segments_created: c.segments_created.load(Ordering::Relaxed),
            segments_deleted: c.segments_deleted.load(Ordering::Relaxed),
            segments: self.state.read().sealed.len() + 1,
        }
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `entries` as one batch with consecutive indexes starting at
    /// [`next_index`](Self::next_index) and returns the first and last index. The batch
    /// is visible to reads at once but durable only after [`sync`](Self::sync). An empty
    /// slice is rejected with [`StorageError::EmptyAppend`].
    pub fn append(&self, entries: &[EntryRef<'_>]) -> Result<(u64, u64), StorageError> {
        self.append_with(entries, None)
    }

    /// Like [`append`](Self::append), but with `Some(key)` the batch is encrypted:
    /// sealed with AES-256-GCM under the active segment's data key, which is wrapped by
    /// `key` (see the module docs). A segment whose data key belongs to another master key
    /// is sealed first, so a stream that changes keys starts a new segment. Fails with
    /// [`StorageError::Key`] if the provider will not wrap a new data key (unknown or
    /// disabled key) and [`StorageError::NoKeyProvider`] if the log has no provider;
    /// neither stops the log.
    pub fn append_with(
        &self,
        entries: &[EntryRef<'_>],
        key: Option<&EncryptionKey>,
    ) -> Result<(u64, u64), StorageError> {
        if entries.is_empty() {
            return Err(StorageError::EmptyAppend);
        }
        let frame_len = match frame::encoded_len(entries, key.is_some()) {
            Some(len) if len <= MAX_FRAME_BYTES => len,
            other => {
                return Err(StorageError::BatchTooLarge {
                    bytes: other.unwrap_or(u64::MAX),
                    limit: MAX_FRAME_BYTES,
                });
            }
        };
        let mut buf = self.writer.lock();
        self.ensure_running()?;
        let first = self.next_index.load(Ordering::Acquire);
        let mut active = Arc::clone(&self.state.read().active);
        let size = active.meta.read().size;
        if size > 0 && size + frame_len > self.cfg.segment_bytes {
            active = self.roll(&active)?;
        }
        let cipher = match key {
            Some(key) => Some(self.cipher_for_append(&mut active, key)?),
            None => None,
        };
        let header = frame::encode(&mut buf, first, entries, cipher.as_deref())?;
        debug_assert_eq!(buf.len() as u64, frame_len);
        let pos = active.meta.read().size;
        if let Err(e) = active.file.write_all_at(&buf, pos) {
            self.stop();
            return Err(StorageError::io("write segment", &active.paths.log, e));
        }
        {
            let mut meta = active.meta.write();
            if let Some(point) =
                meta.builder
                    .observe(first - active.base, pos, header.first_ts, frame_len)
            {
                meta.index.entries.push(point);
            }
            meta.size = pos + frame_len;
            meta.next_index = header.end_index();
            meta.max_ts = Some(
                meta.max_ts
                    .map_or(header.last_ts, |m| m.max(header.last_ts)),
            );
        }
        *self.last_ts.lock() = Some(header.last_ts);
        self.next_index.store(header.end_index(), Ordering::Release);
        if buf.capacity() > KEEP_BUFFER_BYTES {
            *buf = Vec::new();
        }
        bump(&self.counters.appends, 1);
        bump(&self.counters.appended_entries, u64::from(header.count));
        bump(&self.counters.appended_bytes, frame_len);
        Ok((first, header.end_index() - 1))
    }

    /// The data key to seal the next batch of `active` under `key`: the segment's own if
    /// it belongs to `key`; otherwise a new one, written to the sidecar before it is used,
    /// after sealing the segment if it already holds batches under another key. Called
    /// with the writer lock held.
    fn cipher_for_append(
        &self,
        active: &mut Arc<Active>,
        key: &EncryptionKey,
    ) -> Result<Arc<SegmentCipher>, StorageError> {
        let current = active.cipher.read().clone();
        if let Some(cipher) = current.as_ref()
            && cipher.master() == key
        {
            return Ok(Arc::clone(cipher));
        }
        let Some(keys) = self.keys.as_ref() else {
            return Err(StorageError::NoKeyProvider {
                segment: active.paths.log.clone(),
            });
        };
        let cipher = Arc::new(SegmentCipher::generate(keys.as_ref(), key)?);
        if current.is_some() && active.meta.read().size > 0 {
            *active = self.roll(active)?;
        }
        cipher.write_sidecar(&self.dir, &active.paths.key, self.cfg.fsync)?;
        *active.cipher.write() = Some(Arc::clone(&cipher));
        tracing::debug!(segment = %active.paths.log.display(), master_key = %key.key_id(), "new segment data key");
        Ok(cipher)
    }

    /// Seals `old` (fdatasync, index files) and starts a new active segment after it.
    /// Called with the writer lock held.
    fn roll(&self, old: &Arc<Active>) -> Result<Arc<Active>, StorageError> {
        let (end, size, index, max_ts) = {
            let meta = old.meta.read();
            (meta.next_index, meta.size, meta.index.clone(), meta.max_ts)
        };
        if self.cfg.fsync {
            if let Err(e) = old.file.sync_data() {
                self.stop();
                return Err(StorageError::io("sync segment", &old.paths.log, e));
            }
            bump(&self.counters.fdatasyncs, 1);
        }
        if let Err(error) = persist_active_index(old) {
            tracing::warn!(segment = %old.paths.log.display(), error = %error, "could not write index files of a sealed segment; they will be rebuilt");
        }
        let paths = create_segment_files(&self.dir, end)?;
        if self.cfg.fsync {
            fsync_dir(&self.dir)?;
        }
        let new = Arc::new(self.empty_active(end, paths)?);
        let sealed = Arc::new(Sealed::new(old.base, end, size, old.paths.clone()));
        if let Some(max_ts) = max_ts {
            let _ = sealed.max_ts.set(max_ts);
            *sealed.loaded.lock() = Some(Arc::new(Loaded {
                file: Arc::clone(&old.file),
                cipher: old.cipher.read().clone(),
                index,
                tail: Ok(max_ts),
            }));
        }
        {
            let mut state = self.state.write();
            state.sealed.push(Arc::clone(&sealed));
            state.active = Arc::clone(&new);
        }
        self.remember_open(sealed);
        bump(&self.counters.segments_created, 1);
        let mut sync = self.sync.lock();
        sync.durable_next = sync.durable_next.max(end);
        Ok(new)
    }

    /// A new, empty active segment starting at `base` over freshly created files.
    fn empty_active(&self, base: u64, paths: SegmentPaths) -> Result<Active, StorageError> {
        let file = open_rw(&paths.log)?;
        Ok(Active {
            base,
            paths,
            file: Arc::new(file),
            cipher: RwLock::new(None),
            meta: RwLock::new(ActiveMeta {
                size: 0,
                next_index: base,
                index: SparseIndex::default(),
                builder: IndexBuilder::new(self.cfg.index_interval_bytes),
                max_ts: None,
            }),
            persisted_points: Mutex::new(0),
        })
    }

    /// Returns once every entry with index `<= index` is durable.
    ///
    /// Concurrent callers share fdatasyncs: if a sync is in flight, a caller it does not
    /// cover waits for it, and then one waiter issues the next sync, covering everything
    /// appended so far. Appends proceed while a sync runs. Fails with
    /// [`StorageError::NotWritten`] if `index` has not been appended.
    pub fn sync(&self, index: u64) -> Result<(), StorageError> {
        bump(&self.counters.sync_calls, 1);
        let mut sync = self.sync.lock();
        loop {
            if sync.durable_next > index {
                return Ok(());
            }
            self.ensure_running()?;
            let next_index = self.next_index.load(Ordering::Acquire);
            if index >= next_index {
                return Err(StorageError::NotWritten { index, next_index });
            }
            if sync.in_flight {
                self.sync_done.wait(&mut sync);
                continue;
            }
            sync.in_flight = true;
            let round = MutexGuard::unlocked(&mut sync, || self.sync_round());
            sync.in_flight = false;
            self.sync_done.notify_all();
            let target = round?;
            sync.durable_next = sync.durable_next.max(target);
        }
    }

    /// One group-commit fdatasync; returns the index below which everything is durable.
    fn sync_round(&self) -> Result<u64, StorageError> {
        let target = self.next_index.load(Ordering::Acquire);
        let active = Arc::clone(&self.state.read().active);
        if self.cfg.fsync {
            if let Err(e) = active.file.sync_data() {
                self.stop();
                return Err(StorageError::io("sync segment", &active.paths.log, e));
            }
            bump(&self.counters.fdatasyncs, 1);
        }
        Ok(target)
    }

    /// Entries with index in `[from, upto)`, also below [`next_index`](Self::next_index):
    /// at most `max_entries`, and payloads of about `max_bytes` in total (the first entry
    /// is returned even if it alone is larger). Empty if `from` is at or past the bound
    /// or `max_entries` is 0. Fails with [`StorageError::Trimmed`] below
    /// [`first_index`](Self::first_index), and with [`StorageError::Corrupt`] if a batch
    /// it touches fails its checksum.
    pub fn read(
        &self,
        from: u64,
        upto: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let state = self.state.read();
        let limit = upto.min(self.next_index.load(Ordering::Acquire));
        let first_index = state.first_index();
        if from < first_index {
            return Err(StorageError::Trimmed { first_index });
        }
        let mut out = Vec::new();
        if from >= limit || max_entries == 0 {
            return Ok(out);
        }
        let chunk = max_bytes.saturating_add(64 << 10).clamp(64 << 10, 4 << 20);
        let mut next = from;
        let mut bytes = 0usize;
        let mut at = state.locate(from);
        'segments: while at <= state.sealed.len() {
            let view = self.view(&state, at)?;
            let hint = view.hint_for_index(next);
            let mut walker = walker_at(&view, hint, chunk, |f| f.header.base_index <= next)?;
            loop {
                if next >= limit
                    || out.len() >= max_entries
                    || (!out.is_empty() && bytes >= max_bytes)
                {
                    break 'segments;
                }
                let Some(frame) = walker.next_frame()? else {
                    break;
                };
                if frame.header.base_index >= limit {
                    break 'segments;
                }
                if !view.owns(frame.header.base_index) {
                    break;
                }
                if frame.header.end_index() <= next {
                    continue;
                }
                for (index, entry) in (frame.header.base_index..).zip(frame.entries()) {
                    let entry = entry
                        .map_err(|reason| StorageError::corrupt(view.path, frame.pos, reason))?;
                    if index < next {
                        continue;
                    }
                    if index >= limit
                        || out.len() >= max_entries
                        || (!out.is_empty()
                            && bytes.saturating_add(entry.payload.len()) > max_bytes)
                    {
                        break 'segments;
                    }
                    bytes = bytes.saturating_add(entry.payload.len());
                    out.push(Entry {
                        index,
                        term: entry.term,
                        timestamp_ms: entry.timestamp_ms,
                        payload: entry.payload,
                    });
                    next = index + 1;
                }
            }
            view.check_complete(&walker)?;
            if next >= limit {
                break;
            }
            at += 1;
        }
        Ok(out)
    }

    /// The smallest index whose `timestamp_ms >= ts_ms`, or
    /// [`next_index`](Self::next_index) if no entry that new exists yet. Below the first
    /// retained entry it answers [`first_index`](Self::first_index). Relies on
    /// timestamps not decreasing in append order.
    pub fn index_at_timestamp(&self, ts_ms: u64) -> Result<u64, StorageError> {
        let state = self.state.read();
        let limit = self.next_index.load(Ordering::Acquire);
        // The first sealed segment whose newest timestamp reaches ts_ms.
        let (mut lo, mut hi) = (0, state.sealed.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.sealed_max_ts(&state.sealed[mid])? < ts_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for at in lo..=state.sealed.len() {
            let view = self.view(&state, at)?;
            if let Some(found) = find_timestamp(&view, ts_ms, limit)? {
                return Ok(found);
            }
        }
        Ok(limit)
    }

    /// The first index still retained (0 for a fresh log).
    pub fn first_index(&self) -> u64 {
        self.first_index.load(Ordering::Acquire)
    }

    /// The index the next appended entry gets.
    pub fn next_index(&self) -> u64 {
        self.next_index.load(Ordering::Acquire)
    }

    /// The highest index known durable, `None` if none ever was. Everything recovered by
    /// `open` counts as durable. After retention this may lie below `first_index`.
    pub fn durable_index(&self) -> Option<u64> {
        self.sync.lock().durable_next.checked_sub(1)
    }

    /// The timestamp of the newest entry, `None` if the log holds none.
    pub fn last_entry_timestamp(&self) -> Option<u64> {
        *self.last_ts.lock()
    }

    /// Retention: deletes whole sealed segments, oldest first, while their newest
    /// timestamp is below `cutoff_ms`. The active segment is never deleted. Returns how
    /// many entries were dropped; `first_index` moves forward accordingly.
    pub fn delete_segments_older_than(&self, cutoff_ms: u64) -> Result<u64, StorageError> {
        let candidates: Vec<Arc<Sealed>> = {
            let state = self.state.read();
            let mut out = Vec::new();
            for sealed in &state.sealed {
                if self.sealed_max_ts(sealed)? >= cutoff_ms {
                    break;
                }
                out.push(Arc::clone(sealed));
            }
            out
        };
        let _writer = self.writer.lock();
        self.ensure_running()?;
        let count = {
            let state = self.state.read();
            state
                .sealed
                .iter()
                .zip(&candidates)
                .take_while(|(a, b)| Arc::ptr_eq(a, b))
                .count()
        };
        self.drop_front_segments(count)
    }

    /// Drops entries below `before` at whole-segment granularity: every sealed segment
    /// that ends at or below `before` is deleted. Returns how many entries were dropped.
    pub fn trim_before(&self, before: u64) -> Result<u64, StorageError> {
        let _writer = self.writer.lock();
        self.ensure_running()?;
        let count = self
            .state
            .read()
            .sealed
            .iter()
            .take_while(|s| s.end <= before)
            .count();
        self.drop_front_segments(count)
    }

    /// Deletes the first `count` sealed segments. Called with the writer lock held.
    fn drop_front_segments(&self, count: usize) -> Result<u64, StorageError> {
        if count == 0 {
            return Ok(0);
        }
        let removed: Vec<Arc<Sealed>> = {
            let mut state = self.state.write();
            let removed = state.sealed.drain(..count).collect();
            self.first_index
                .store(state.first_index(), Ordering::Release);
            removed
        };
        let mut dropped = 0;
        let mut result = Ok(());
        for sealed in &removed {
            dropped += sealed.end - sealed.base;
            *sealed.loaded.lock() = None;
            if let Err(e) = remove_segment_files(&sealed.paths) {
                result = Err(e);
            }
        }
        let state = self.state.read();
        if state.sealed.is_empty() && state.active.meta.read().size == 0 {
            *self.last_ts.lock() = None;
        }
        drop(state);
        bump(&self.counters.segments_deleted, removed.len() as u64);
        tracing::debug!(dir = %self.dir.display(), segments = removed.len(), entries = dropped, "deleted old segments");
        result.map(|()| dropped)
    }

    /// Empties the log and starts it over at `index`, which must be beyond its end: every
    /// segment is deleted and an empty one begins at `index` (a replica that installs a
    /// snapshot of newer state than it holds: the entries it lacks are not needed).
    /// Durable when it returns. The new segment is made durable before the old ones go,
    /// so a crash between leaves either the old log (recovery drops a newest segment that
    /// does not follow on from its predecessor) or a suffix of it before the new segment.
    pub fn restart_at(&self, index: u64) -> Result<(), StorageError> {
        let _writer = self.writer.lock();
        self.ensure_running()?;
        let next_index = self.next_index.load(Ordering::Acquire);
        if index < next_index {
            return Err(StorageError::RestartBehind { index, next_index });
        }
        let _slot = self.acquire_sync_slot();
        let mut state = self.state.write();
        let paths = create_segment_files(&self.dir, index)?;
        fsync_dir(&self.dir)?;
        let new = Arc::new(self.empty_active(index, paths)?);
        let old_active = std::mem::replace(&mut state.active, new);
        let old_sealed: Vec<Arc<Sealed>> = state.sealed.drain(..).collect();
        self.first_index.store(index, Ordering::Release);
        self.next_index.store(index, Ordering::Release);
        *self.last_ts.lock() = None;
        self.sync.lock().durable_next = index;
        drop(state);
        // Oldest first: what a crash leaves is a suffix of the old log, then the new one.
        let mut result = Ok(());
        for sealed in &old_sealed {
            *sealed.loaded.lock() = None;
            if let Err(error) = remove_segment_files(&sealed.paths) {
                result = Err(error);
            }
        }
        if old_active.base != index
            && let Err(error) = remove_segment_files(&old_active.paths)
        {
            result = Err(error);
        }
        if result.is_ok() {
            result = fsync_dir(&self.dir);
        }
        if result.is_err() {
            self.stop();
        }
        bump(&self.counters.segments_deleted, old_sealed.len() as u64 + 1);
        bump(&self.counters.segments_created, 1);
        result
    }

    /// Removes every entry with index `>= from`; durable when it returns. A no-op if
    /// `from >= next_index`, [`StorageError::Trimmed`] if `from < first_index`.
    ///
    /// Reads and syncs wait while it runs. If it fails midway the log stops and must be
    /// reopened; recovery then finds either the old or the new end of the log, or a
    /// point between them (a prefix of the old log).
    pub fn truncate_from(&self, from: u64) -> Result<(), StorageError> {
        let _writer = self.writer.lock();
        self.ensure_running()?;
        if from >= self.next_index.load(Ordering::Acquire) {
            return Ok(());
        }
        let _slot = self.acquire_sync_slot();
        let mut state = self.state.write();
        let first_index = state.first_index();
        if from < first_index {
            return Err(StorageError::Trimmed { first_index });
        }
        let result = self.truncate_locked(&mut state, from);
        drop(state);
        match result {
            Ok(()) => {
                let last_ts = self.newest_timestamp();
                *self.last_ts.lock() = last_ts;
                Ok(())
            }
            Err(e) => {
                self.stop();
                Err(e)
            }
        }
    }

    fn truncate_locked(&self, state: &mut State, from: u64) -> Result<(), StorageError> {
        let at = state.locate(from);
        let in_active = at == state.sealed.len();
        // Newer segments go first, newest first, so a crash leaves a prefix of the log.
        if !in_active {
            remove_segment_files(&state.active.paths)?;
            for sealed in state.sealed[at + 1..].iter().rev() {
                *sealed.loaded.lock() = None;
                remove_segment_files(&sealed.paths)?;
            }
            if self.cfg.fsync {
                fsync_dir(&self.dir)?;
            }
        }
        let (frame, base, paths, index, cipher) = {
            let view = self.view(state, at)?;
            let hint = view.hint_for_index(from);
            let mut walker = walker_at(&view, hint, 64 << 10, |f| f.header.base_index <= from)?;
            // A damaged batch is cut whole: only its position is needed.
            walker.tolerate_checksums();
            let mut found = None;
            while let Some(frame) = walker.next_frame()? {
                if frame.header.end_index() > from {
                    found = Some(frame);
                    break;
                }
            }
            let Some(frame) = found else {
                return Err(StorageError::corrupt(
                    view.path,
                    view.size,
                    "batch to truncate is missing",
                ));
            };
            let index = match &view.hints {
                Hints::Sealed(loaded) => loaded.index.clone(),
                Hints::Active(active) => active.meta.read().index.clone(),
            };
            let paths = match &view.hints {
                Hints::Sealed(_) => state.sealed[at].paths.clone(),
                Hints::Active(active) => active.paths.clone(),
            };
            (frame, view.base, paths, index, view.cipher.clone())
        };
        let file = open_rw(&paths.log)?;
        let mut syncs = 0;
        let sync_file = |file: &File, path: &Path, syncs: &mut u64| -> Result<(), StorageError> {
            if self.cfg.fsync {
                file.sync_data()
                    .map_err(|e| StorageError::io("sync segment", path, e))?;
                *syncs += 1;
            }
            Ok(())
        };
        let cut = |file: &File, len: u64, syncs: &mut u64| -> Result<(), StorageError> {
            file.set_len(len)
                .map_err(|e| StorageError::io("truncate segment", &paths.log, e))?;
            sync_file(file, &paths.log, syncs)
        };
        let mut report = RecoveryReport::default();
        let mut new_sealed = None;
        let active_base;
        if frame.header.base_index == from {
            cut(&file, frame.pos, &mut syncs)?;
            active_base = base;
        } else if !frame.crc_ok {
            return Err(StorageError::corrupt(
                &paths.log,
                frame.pos,
                "cannot keep the head of a batch that fails its checksum",
            ));
        } else {
            // Keep the head of the batch: write it as a segment of its own, then cut the
            // old segment before the batch (see the layout notes in `segment`).
            let kept: Vec<frame::DecodedEntry> = frame
                .entries()
                .take(usize::try_from(from - frame.header.base_index).unwrap_or(usize::MAX))
                .collect::<Result<_, _>>()
                .map_err(|reason| StorageError::corrupt(&paths.log, frame.pos, reason))?;
            let refs: Vec<EntryRef<'_>> = kept
                .iter()
                .map(|e| EntryRef {
                    term: e.term,
                    timestamp_ms: e.timestamp_ms,
                    payload: &e.payload,
                })
                .collect();
            // An encrypted batch stays encrypted: its head is sealed again under the same
            // data key with a fresh nonce.
            let cipher = cipher.filter(|_| frame.header.encrypted);
            if frame.header.encrypted && cipher.is_none() {
                return Err(StorageError::corrupt(
                    &paths.log,
                    frame.pos,
                    "encrypted batch in a segment without a key sidecar",
                ));
            }
            let mut buf = Vec::new();
            frame::encode(&mut buf, frame.header.base_index, &refs, cipher.as_deref())?;
            cut(&file, frame.end_pos(), &mut syncs)?;
            let split = SegmentPaths::new(&self.dir, frame.header.base_index);
            let tmp = SegmentPaths::tmp(&self.dir, frame.header.base_index);
            {
                let tmp_file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)
                    .map_err(|e| StorageError::io("create segment", &tmp, e))?;
                tmp_file
                    .write_all_at(&buf, 0)
                    .map_err(|e| StorageError::io("write segment", &tmp, e))?;
                sync_file(&tmp_file, &tmp, &mut syncs)?;
            }
            if frame.pos > 0 {
                write_index_files(&split, &SparseIndex::default())?;
                // The new segment's sidecar is durable before its log file appears.
                if let Some(cipher) = &cipher {
                    cipher.write_sidecar(&self.dir, &split.key, self.cfg.fsync)?;
                }
            }
            std::fs::rename(&tmp, &split.log)
                .map_err(|e| StorageError::io("rename segment", &split.log, e))?;
            if self.cfg.fsync {
                fsync_dir(&self.dir)?;
            }
            if frame.pos > 0 {
                cut(&file, frame.pos, &mut syncs)?;
                let mut index = index;
                index.truncate_rel(frame.header.base_index - base);
                write_index_files(&paths, &index)?;
                new_sealed = Some(Arc::new(Sealed::new(
                    base,
                    frame.header.base_index,
                    frame.pos,
                    paths.clone(),
                )));
            }
            active_base = frame.header.base_index;
        }
        let active = load_active(
            &self.dir,
            active_base,
            &self.cfg,
            self.keys.as_ref(),
            &mut report,
            &mut syncs,
        )?;
        bump(&self.counters.fdatasyncs, syncs);
        for sealed in &state.sealed[at..] {
            *sealed.loaded.lock() = None;
        }
        state.sealed.truncate(at);
        state.sealed.extend(new_sealed);
        state.active = Arc::new(active);
        self.next_index.store(from, Ordering::Release);
        self.sync.lock().durable_next = from;
        *self.last_ts.lock() = None;
        tracing::debug!(dir = %self.dir.display(), from, "truncated log suffix");
        Ok(())
    }

    /// Deletes the log directory and everything in it.
    pub fn destroy(self) -> Result<(), StorageError> {
        self.destroyed.store(true, Ordering::Release);
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| StorageError::io("remove log directory", &self.dir, e))
    }

    fn ensure_running(&self) -> Result<(), StorageError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StorageError::Failed);
        }
        Ok(())
    }

    /// Stops the log after an I/O failure whose effect on disk is unknown.
    fn stop(&self) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(dir = %self.dir.display(), "segment log stopped after an io failure; reopen to recover");
        }
        self.sync_done.notify_all();
    }

    fn acquire_sync_slot(&self) -> SyncSlot<'_> {
        let mut sync = self.sync.lock();
        while sync.in_flight {
            self.sync_done.wait(&mut sync);
        }
        sync.in_flight = true;
        SyncSlot { log: self }
    }

    /// The newest timestamp in the log, loading the last sealed segment if needed.
    /// `None` if the log is empty or that segment's tail is damaged.
    fn newest_timestamp(&self) -> Option<u64> {
        let state = self.state.read();
        if let Some(ts) = state.active.meta.read().max_ts {
            return Some(ts);
        }
        let sealed = state.sealed.last()?;
        match self.sealed_max_ts(sealed) {
            Ok(ts) => Some(ts),
            Err(error) => {
                tracing::warn!(segment = %sealed.paths.log.display(), error = %error, "newest timestamp unknown");
                None
            }
        }
    }

    fn view<'s>(&self, state: &'s State, at: usize) -> Result<View<'s>, StorageError> {
        match state.sealed.get(at) {
            Some(sealed) => {
                let loaded = self.load_sealed(sealed)?;
                Ok(View {
                    base: sealed.base,
                    size: sealed.size,
                    end: Some(sealed.end),
                    file: Arc::clone(&loaded.file),
                    path: &sealed.paths.log,
                    cipher: loaded.cipher.clone(),
                    hints: Hints::Sealed(loaded),
                })
            }
            None => {
                let active = &state.active;
                // The size first: a cipher is set before the first batch it seals is
                // counted in the size, so it is visible for every byte read here.
                let size = active.meta.read().size;
                let cipher = active.cipher.read().clone();
                Ok(View {
                    base: active.base,
                    size,
                    end: None,
                    file: Arc::clone(&active.file),
                    path: &active.paths.log,
                    cipher,
                    hints: Hints::Active(active),
                })
            }
        }
    }

    fn sealed_max_ts(&self, sealed: &Arc<Sealed>) -> Result<u64, StorageError> {
        if let Some(ts) = sealed.max_ts.get() {
            return Ok(*ts);
        }
        let loaded = self.load_sealed(sealed)?;
        loaded
            .tail
            .map_err(|(offset, reason)| StorageError::corrupt(&sealed.paths.log, offset, reason))
    }

    fn load_sealed(&self, sealed: &Arc<Sealed>) -> Result<Arc<Loaded>, StorageError> {
        let loaded = {
            let mut slot = sealed.loaded.lock();
            if let Some(loaded) = slot.as_ref() {
                return Ok(Arc::clone(loaded));
            }
            let loaded = Arc::new(load_sealed_files(
                sealed,
                self.cfg.index_interval_bytes,
                self.keys.as_ref(),
            )?);
            if let Ok(ts) = loaded.tail {
                let _ = sealed.max_ts.set(ts);
            }
            *slot = Some(Arc::clone(&loaded));
            loaded
        };
        self.remember_open(Arc::clone(sealed));
        Ok(loaded)
    }

    /// Adds a loaded sealed segment to the bounded cache, unloading the oldest ones.
    fn remember_open(&self, sealed: Arc<Sealed>) {
        let evicted: Vec<Arc<Sealed>> = {
            let mut cache = self.open_sealed.lock();
            cache.push_back(sealed);
            let excess = cache.len().saturating_sub(OPEN_SEALED_SEGMENTS);
            cache.drain(..excess).collect()
        };
        for sealed in evicted {
            *sealed.loaded.lock() = None;
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if self.destroyed.load(Ordering::Acquire) || self.failed.load(Ordering::Acquire) {
            return;
        }
        let active = Arc::clone(&self.state.read().active);
        if let Err(error) = persist_active_index(&active) {
            tracing::warn!(segment = %active.paths.log.display(), error = %error, "could not write index files on close");
        }
    }
}

impl Sealed {
    fn new(base: u64, end: u64, size: u64, paths: SegmentPaths) -> Self {
        Sealed {
            base,
            end,
            size,
            paths,
            max_ts: OnceLock::new(),
            loaded: Mutex::new(None),
        }
    }
}

/// Starts a walker at `hint` if the frame there is valid and passes `accept`, else at
/// the start of the segment. The walker is positioned on the first frame to process.
fn walker_at<'v>(
    view: &'v View<'_>,
    hint: Option<IndexEntry>,
    chunk: usize,
    accept: impl Fn(&RawFrame) -> bool,
) -> Result<FrameWalker<'v>, StorageError> {
    let reader = ChunkReader::new(&view.file, view.path, view.size, chunk);
    if let Some(hint) = hint {
        let start = (u64::from(hint.pos), view.base + u64::from(hint.rel));
        let mut walker = FrameWalker::new(reader, view.path, start.0, start.1, view.cipher.clone());
        match walker.next_frame() {
            Ok(Some(frame)) if accept(&frame) => {
                walker.rewind(start.0, start.1);
                return Ok(walker);
            }
            Ok(_) | Err(StorageError::Corrupt { .. }) => {
                tracing::debug!(segment = %view.path.display(), pos = hint.pos, "index hint does not match the log; scanning the segment");
                walker.rewind(0, view.base);
                return Ok(walker);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(FrameWalker::new(
        reader,
        view.path,
        0,
        view.base,
        view.cipher.clone(),
    ))
}

/// The first index at or after `ts` within one segment, bounded by `limit`.
fn find_timestamp(view: &View<'_>, ts: u64, limit: u64) -> Result<Option<u64>, StorageError> {
    if view.size == 0 {
        return Ok(None);
    }
    let hint = view.hint_for_ts(ts);
    let mut walker = walker_at(view, hint, 64 << 10, |f| f.header.first_ts < ts)?;
    while let Some(frame) = walker.next_frame()? {
        if frame.header.base_index >= limit {
            return Ok(Some(limit));
        }
        if !view.owns(frame.header.base_index) {
            return Ok(None);
        }
        if frame.header.last_ts < ts {
            continue;
        }
        for (index, entry) in (frame.header.base_index..).zip(frame.entries()) {
            let entry =
                entry.map_err(|reason| StorageError::corrupt(view.path, frame.pos, reason))?;
            if entry.timestamp_ms >= ts {
                return Ok(Some(index.min(limit)));
            }
        }
    }
    view.check_complete(&walker)?;
    Ok(None)
}

fn open_rw(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("open segment", path, e))
}

fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("sync directory", dir, e))
}

/// Creates (or empties) the log and index files of a segment; a new segment has no key
/// sidecar until its first encrypted batch.
fn create_segment_files(dir: &Path, base: u64) -> Result<SegmentPaths, StorageError> {
    let paths = SegmentPaths::new(dir, base);
    remove_file_if_present(&paths.key)?;
    for path in [&paths.log, &paths.idx, &paths.tix] {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| StorageError::io("create segment", path, e))?;
    }
    Ok(paths)
}

fn remove_file_if_present(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove segment", path, e)),
    }
}

/// Removes a segment's files, the log first and the key sidecar last; missing files are
/// fine.
fn remove_segment_files(paths: &SegmentPaths) -> Result<(), StorageError> {
    for path in [&paths.log, &paths.idx, &paths.tix, &paths.key] {
        remove_file_if_present(path)?;
    }
    Ok(())
}

/// The bases of the segments in `dir`, sorted. Leftover temporary files, and index files
/// and key sidecars without a segment, are removed.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut bases = Vec::new();
    let mut orphans = Vec::new();
    let read_dir =
        std::fs::read_dir(dir).map_err(|e| StorageError::io("list log directory", dir, e))?;
    for entry in read_dir {
        let entry = entry.map_err(|e| StorageError::io("list log directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = segment::parse_file_name(name, LOG_EXT) {
            bases.push(base);
        } else if name.ends_with(TMP_SUFFIX) || name.ends_with(KEY_TMP_SUFFIX) {
            orphans.push(entry.path());
        }
    }
    bases.sort_unstable();
    for entry in
        std::fs::read_dir(dir).map_err(|e| StorageError::io("list log directory", dir, e))?
    {
        let entry = entry.map_err(|e| StorageError::io("list log directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let base = segment::parse_file_name(name, segment::OFFSET_INDEX_EXT)
            .or_else(|| segment::parse_file_name(name, segment::TIME_INDEX_EXT))
            .or_else(|| segment::parse_file_name(name, segment::KEY_EXT));
        if base.is_some_and(|b| bases.binary_search(&b).is_err()) {
            orphans.push(entry.path());
        }
    }
    for path in orphans {
        std::fs::remove_file(&path)
            .map_err(|e| StorageError::io("remove leftover file", &path, e))?;
    }
    Ok(bases)
}

/// Checks that the segment at `base` ends exactly where the segment at `next_base`
/// starts, cutting any bytes past that point (a superseded overlap). Returns `false` if
/// it ends early: it has then been cut after its last valid batch, and the caller must
/// remove the newer segment.
fn check_predecessor(
    dir: &Path,
    base: u64,
    next_base: u64,
    cfg: &LogConfig,
    keys: Option<&Arc<dyn KeyProvider>>,
    report: &mut RecoveryReport,
) -> Result<bool, StorageError> {
    let paths = SegmentPaths::new(dir, base);
    let cipher = crypto::load_cipher(&paths.key, keys)?;
    let file = open_rw(&paths.log)?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io("stat segment", &paths.log, e))?
        .len();
    let count = next_base.saturating_sub(base);
    let hinted = segment::read_index_files(&paths).filter(|i| i.is_consistent(count, len));
    let scan_from = |start_pos: u64, start_index: u64| {
        segment::scan(
            &file,
            &paths.log,
            len,
            &ScanFrom {
                segment_base: base,
                start_pos,
                start_index,
                boundary: Some(next_base),
                index_interval: cfg.index_interval_bytes,
                cipher: cipher.clone(),
            },
        )
    };
    let intact = |o: &segment::ScanOutcome| {
        o.next_index == next_base && matches!(o.stop, ScanStop::Eof | ScanStop::Boundary)
    };
    let tail_point = hinted.as_ref().and_then(|i| i.entries.last().copied());
    let (mut outcome, mut index) = match (tail_point, &hinted) {
        (Some(p), Some(hinted)) => (
            scan_from(u64::from(p.pos), base + u64::from(p.rel))?,
            hinted.clone(),
        ),
        _ => {
            let outcome = scan_from(0, base)?;
            let index = outcome.index.clone();
            (outcome, index)
        }
    };
    if !intact(&outcome) && tail_point.is_some() {
        outcome = scan_from(0, base)?;
        index = outcome.index.clone();
    }
    let intact = intact(&outcome);
    report.corrupt_batches += outcome.corrupt_frames.len();
    if outcome.end_pos < len {
        tracing::warn!(
            segment = %paths.log.display(),
            at = outcome.end_pos,
            bytes = len - outcome.end_pos,
            reason = ?outcome.stop,
            "cutting the tail of a sealed segment"
        );
        file.set_len(outcome.end_pos)
            .map_err(|e| StorageError::io("truncate segment", &paths.log, e))?;
        if cfg.fsync {
            file.sync_data()
                .map_err(|e| StorageError::io("sync segment", &paths.log, e))?;
        }
        report.truncated = true;
        report.bytes_cut += len - outcome.end_pos;
    }
    index.truncate_rel(outcome.next_index - base);
    if hinted.as_ref() != Some(&index) {
        write_index_files(&paths, &index)?;
        report.indexes_rebuilt += 1;
    }
    Ok(intact)
}

/// Scans the segment at `base` completely, cuts a torn tail, rebuilds its indexes and
/// makes it the active segment.
fn load_active(
    dir: &Path,
    base: u64,
    cfg: &LogConfig,
    keys: Option<&Arc<dyn KeyProvider>>,
    report: &mut RecoveryReport,
    fdatasyncs: &mut u64,
) -> Result<Active, StorageError> {
    let paths = SegmentPaths::new(dir, base);
    let cipher = crypto::load_cipher(&paths.key, keys)?;
    let file = open_rw(&paths.log)?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io("stat segment", &paths.log, e))?
        .len();
    let outcome = segment::scan(
        &file,
        &paths.log,
        len,
        &ScanFrom {
            segment_base: base,
            start_pos: 0,
            start_index: base,
            boundary: None,
            index_interval: cfg.index_interval_bytes,
            cipher: cipher.clone(),
        },
    )?;
    if outcome.end_pos < len {
        tracing::warn!(
            segment = %paths.log.display(),
            at = outcome.end_pos,
            bytes = len - outcome.end_pos,
            reason = ?outcome.stop,
            "cutting a torn tail"
        );
        file.set_len(outcome.end_pos)
            .map_err(|e| StorageError::io("truncate segment", &paths.log, e))?;
        report.truncated = true;
        report.bytes_cut += len - outcome.end_pos;
    }
    if !outcome.corrupt_frames.is_empty() {
        tracing::error!(
            segment = %paths.log.display(),
            batches = outcome.corrupt_frames.len(),
            first_at = outcome.corrupt_frames.first().copied(),
            "segment has batches that fail their checksum"
        );
        report.corrupt_batches += outcome.corrupt_frames.len();
    }
    if cfg.fsync {
        file.sync_data()
            .map_err(|e| StorageError::io("sync segment", &paths.log, e))?;
        *fdatasyncs += 1;
    }
    if segment::read_index_files(&paths).as_ref() != Some(&outcome.index) {
        write_index_files(&paths, &outcome.index)?;
        report.indexes_rebuilt += 1;
    }
    Ok(Active {
        base,
        paths,
        file: Arc::new(file),
        cipher: RwLock::new(cipher),
        persisted_points: Mutex::new(outcome.index.entries.len()),
        meta: RwLock::new(ActiveMeta {
            size: outcome.end_pos,
            next_index: outcome.next_index,
            index: outcome.index,
            builder: outcome.builder,
            max_ts: outcome.max_ts,
        }),
    })
}

/// Opens a sealed segment: its file, its indexes (validated, rebuilt if they do not add
/// up) and its newest timestamp (from a verified walk of its tail).
fn load_sealed_files(
    sealed: &Sealed,
    interval: u32,
    keys: Option<&Arc<dyn KeyProvider>>,
) -> Result<Loaded, StorageError> {
    let path = &sealed.paths.log;
    let cipher = crypto::load_cipher(&sealed.paths.key, keys)?;
    let file = File::open(path).map_err(|e| StorageError::io("open segment", path, e))?;
    let count = sealed.end - sealed.base;
    let hinted =
        segment::read_index_files(&sealed.paths).filter(|i| i.is_consistent(count, sealed.size));
    let scan_from = |start_pos: u64, start_index: u64| {
        segment::scan(
            &file,
            path,
            sealed.size,
            &ScanFrom {
                segment_base: sealed.base,
                start_pos,
                start_index,
                boundary: Some(sealed.end),
                index_interval: interval,
                cipher: cipher.clone(),
            },
        )
    };
    let complete = |o: &segment::ScanOutcome| o.stop == ScanStop::Eof && o.next_index == sealed.end;
    if let Some(index) = &hinted
        && let Some(point) = index.entries.last()
    {
        let outcome = scan_from(u64::from(point.pos), sealed.base + u64::from(point.rel))?;
        if complete(&outcome)
            && outcome.corrupt_frames.is_empty()
            && let Some(max_ts) = outcome.max_ts
        {
            return Ok(Loaded {
                file: Arc::new(file),
                cipher,
                index: index.clone(),
                tail: Ok(max_ts),
            });
        }
    }
    let outcome = scan_from(0, sealed.base)?;
    if hinted.as_ref() != Some(&outcome.index) {
        tracing::info!(segment = %path.display(), "rebuilding the indexes of a sealed segment");
        if let Err(error) = write_index_files(&sealed.paths, &outcome.index) {
            tracing::warn!(segment = %path.display(), error = %error, "could not write rebuilt index files");
        }
    }
    let tail = match (complete(&outcome), outcome.max_ts) {
        (true, Some(max_ts)) => Ok(max_ts),
        (true, None) => Err((0, "sealed segment is empty")),
        (false, _) => Err((
            outcome.end_pos,
            match outcome.stop {
                ScanStop::Invalid(reason) => reason,
                ScanStop::Eof | ScanStop::Boundary => "segment ends before the next segment's base",
            },
        )),
    };
    Ok(Loaded {
        file: Arc::new(file),
        cipher,
        index: outcome.index,
        tail,
    })
}

/// Writes index points of the active segment that are not in its files yet.
fn persist_active_index(active: &Active) -> Result<(), StorageError> {
    let mut persisted = active.persisted_points.lock();
    let pending: Vec<IndexEntry> = {
        let meta = active.meta.read();
        meta.index
            .entries
            .get(*persisted..)
            .map(<[IndexEntry]>::to_vec)
            .unwrap_or_default()
    };
    if pending.is_empty() {
        return Ok(());
    }
    segment::append_index_files(&active.paths, *persisted, &pending)?;
    *persisted += pending.len();
    Ok(())
}

#[cfg(test)]
mod tests;
