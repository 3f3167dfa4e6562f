//! Unit tests of the segment log: append, read, sync, roll-over, index and timestamp
//! lookups, retention, truncation, reopen, crash recovery and group commit; encrypted
//! segments in `encryption`.

mod encryption;
mod proptests;

use super::*;
use std::sync::Barrier;
use tempfile::TempDir;

fn config(segment_bytes: u64, index_interval_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes,
        fsync: false,
    }
}

/// The payload the tests write at `index` in generation `generation`.
fn payload(index: u64, generation: u64) -> Vec<u8> {
    let len = usize::try_from((index * 7919 + generation * 31) % 97).unwrap();
    let mut out = format!("g{generation}-i{index}:").into_bytes();
    out.extend((0..len).map(|i| u8::try_from((index as usize + i) % 251).unwrap()));
    out
}

/// Appends one batch of `count` entries with timestamp `ts` and returns its range.
fn append_batch(log: &Log, count: u64, ts: u64, generation: u64) -> (u64, u64) {
    let first = log.next_index();
    let payloads: Vec<Vec<u8>> = (first..first + count)
        .map(|i| payload(i, generation))
        .collect();
    let entries: Vec<EntryRef<'_>> = payloads
        .iter()
        .map(|p| EntryRef {
            term: 1 + generation,
            timestamp_ms: ts,
            payload: p,
        })
        .collect();
    let range = log.append(&entries).unwrap();
    assert_eq!(range, (first, first + count - 1));
    range
}

fn read_all(log: &Log) -> Vec<Entry> {
    log.read(log.first_index(), u64::MAX, usize::MAX, usize::MAX)
        .unwrap()
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index).collect()
}

fn segment_files(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| segment::parse_file_name(e.unwrap().file_name().to_str()?, LOG_EXT))
        .collect();
    bases.sort_unstable();
    bases
}

fn log_path(dir: &Path, base: u64) -> PathBuf {
    SegmentPaths::new(dir, base).log
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// (position, length) of every frame of a segment file, by walking the prefixes.
fn frames_of(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let (body_len, _) = frame::parse_prefix(&bytes[pos..]).unwrap();
        let total = frame::PREFIX_LEN + body_len as usize;
        out.push((pos as u64, total as u64));
        pos += total;
    }
    out
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[usize::try_from(at).unwrap()] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

fn assert_entries_match(entries: &[Entry], generation_of: impl Fn(u64) -> u64) {
    for e in entries {
        assert_eq!(
            e.payload,
            payload(e.index, generation_of(e.index)),
            "payload of {}",
            e.index
        );
        assert_eq!(e.term, 1 + generation_of(e.index), "term of {}", e.index);
    }
}

#[test]
fn fresh_log_is_empty() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(&dir.path().join("log"), LogConfig::default()).unwrap();
    assert_eq!(log.first_index(), 0);
    assert_eq!(log.next_index(), 0);
    assert_eq!(log.durable_index(), None);
    assert_eq!(log.last_entry_timestamp(), None);
    assert!(log.read(0, u64::MAX, 10, 1 << 20).unwrap().is_empty());
    assert_eq!(log.index_at_timestamp(5).unwrap(), 0);
    assert_eq!(log.recovery_report(), RecoveryReport::default());
    assert_eq!(segment_files(log.dir()), vec![0]);
}

#[test]
fn append_then_read_returns_entries_in_order() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), config(1 << 20, 256)).unwrap();
    append_batch(&log, 1, 10, 0);
    append_batch(&log, 5, 11, 0);
    append_batch(&log, 3, 12, 0);
    assert_eq!(log.next_index(), 9);
    assert_eq!(log.last_entry_timestamp(), Some(12));
    let all = read_all(&log);
    assert_eq!(indexes(&all), (0..9).collect::<Vec<_>>());
    assert_entries_match(&all, |_| 0);
    assert_eq!(all[3].timestamp_ms, 11);
    // from the middle of a batch, bounded by upto
    assert_eq!(
        indexes(&log.read(2, 7, 100, usize::MAX).unwrap()),
        vec![2, 3, 4, 5, 6]
    );
    // bounded by max_entries
    assert_eq!(
        indexes(&log.read(4, 100, 2, usize::MAX).unwrap()),
        vec![4, 5]
    );
    // bounded by max_bytes, but always at least one entry
    assert_eq!(indexes(&log.read(4, 100, 100, 1).unwrap()), vec![4]);
    let two = payload(4, 0).len() + payload(5, 0).len();
    assert_eq!(indexes(&log.read(4, 100, 100, two).unwrap()), vec![4, 5]);
    assert_eq!(indexes(&log.read(4, 100, 100, two - 1).unwrap()), vec![4]);
    // empty windows
    assert!(log.read(9, 100, 10, 100).unwrap().is_empty());
    assert!(log.read(3, 3, 10, 100).unwrap().is_empty());
    assert!(log.read(3, 9, 0, 100).unwrap().is_empty());
    let stats = log.stats();
    assert_eq!((stats.appends, stats.appended_entries), (3, 9));
}

#[test]
fn a_log_restarts_beyond_its_end_and_recovers_there() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), config(4 << 10, 256)).unwrap();
    for ts in 0..20 {
        append_batch(&log, 10, ts, 0);
    }
    assert!(segment_files(dir.path()).len() > 2);
    assert!(matches!(
        log.restart_at(150),
        Err(StorageError::RestartBehind {
            index: 150,
            next_index: 200
        })
    ));
    log.restart_at(1_000).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (1_000, 1_000));
    assert_eq!(log.durable_index(), Some(999));
    assert_eq!(log.last_entry_timestamp(), None);
    assert_eq!(segment_files(dir.path()), vec![1_000]);
    assert!(read_all(&log).is_empty());
    assert_eq!(append_batch(&log, 5, 7, 1), (1_000, 1_004));
    log.sync(1_004).unwrap();
    drop(log);
    let log = Log::open(dir.path(), config(4 << 10, 256)).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (1_000, 1_005));
    assert_eq!(indexes(&read_all(&log)), (1_000..1_005).collect::<Vec<_>>());
}

#[test]
fn a_crash_during_a_restart_leaves_the_old_log() {
    // The new segment exists and the old ones are still there: recovery keeps the old log
    // (the newest segment does not follow on from its predecessor).
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), config(4 << 10, 256)).unwrap();
    for ts in 0..20 {
        append_batch(&log, 10, ts, 0);
    }
    log.sync(199).unwrap();
    drop(log);
    create_segment_files(dir.path(), 5_000).unwrap();
    let log = Log::open(dir.path(), config(4 << 10, 256)).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (0, 200));
    assert_eq!(read_all(&log).len(), 200);
}

#[test]
fn invalid_calls_are_rejected() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), config(1 << 20, 256)).unwrap();
    assert!(matches!(log.append(&[]), Err(StorageError::EmptyAppend)));
    assert!(matches!(
        log.sync(0),
        Err(StorageError::NotWritten {
            index: 0,
            next_index: 0
        })
    ));
    append_batch(&log, 2, 1, 0);
    assert!(matches!(
        log.sync(2),
        Err(StorageError::NotWritten {
            index: 2,
            next_index: 2
        })
    ));
    assert!(matches!(
        Log::open(dir.path(), config(0, 1)),
        Err(StorageError::InvalidConfig(_))
    ));
    assert!(matches!(
        Log::open(dir.path(), config(2 << 30, 1)),
        Err(StorageError::InvalidConfig(_))
    ));
}

#[test]
fn sync_makes_entries_durable_and_counts_fdatasyncs() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            fsync: true,
            ..config(1 << 20, 256)
        },
    )
    .unwrap();
    let base = log.stats().fdatasyncs;
    append_batch(&log, 3, 1, 0);
    assert_eq!(log.durable_index(), None);
    log.sync(1).unwrap();
    assert_eq!(
        log.durable_index(),
        Some(2),
        "a sync covers everything written"
    );
    log.sync(0).unwrap();
    assert_eq!(
        log.stats().fdatasyncs,
        base + 1,
        "an already durable index needs no sync"
    );
    append_batch(&log, 1, 1, 0);
    log.sync(3).unwrap();
    assert_eq!(log.durable_index(), Some(3));
    let stats = log.stats();
    assert_eq!((stats.sync_calls, stats.fdatasyncs), (3, base + 2));
}

#[test]
fn appends_roll_over_to_new_segments() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), config(1024, 128)).unwrap();
    for i in 0..40 {
        append_batch(&log, 3, i, 0);
    }
    let bases = segment_files(dir.path());
    assert!(bases.len() > 5, "expected several segments, got {bases:?}");
    assert_eq!(log.stats().segments, bases.len());
    for base in &bases[..bases.len() - 1] {
        let len = std::fs::metadata(log_path(dir.path(), *base))
            .unwrap()
            .len();
        assert!(len <= 1024, "segment {base} has {len} bytes");
    }
    let all = read_all(&log);
    assert_eq!(indexes(&all), (0..120).collect::<Vec<_>>());
    assert_entries_match(&all, |_| 0);
    // reads that start in one segment and end in another
    for from in 0..120 {
        let got = log.read(from, from + 7, 100, usize::MAX).unwrap();
        assert_eq!(
            indexes(&got),
            (from..(from + 7).min(120)).collect::<Vec<_>>()
        );
    }
    // a batch larger than a segment gets a segment of its own
    let big = vec![7u8; 3000];
    let (first, _) = log
        .append(&[EntryRef {
            term: 1,
            timestamp_ms: 50,
            payload: &big,
        }])
        .unwrap();
    append_batch(&log, 1, 51, 0);
    assert_eq!(segment_files(dir.path()).last(), Some(&(first + 1)));
    assert_eq!(log.read(first, first + 1, 1, 1).unwrap()[0].payload, big);
}

#[test]
fn sealed_segments_keep_exact_sparse_indexes() {
    let dir = TempDir::new().unwrap();
    let interval = 200;
    {
        let log = Log::open(dir.path(), config(4096, interval)).unwrap();
        for i in 0..200 {
            append_batch(&log, 1 + i % 3, i, 0);
        }
    }
    let log = Log::open(dir.path(), config(4096, interval)).unwrap();
    assert_eq!(
        log.recovery_report().indexes_rebuilt,
        0,
        "index files were complete on close"
    );
    let state = log.state.read();
    assert!(state.sealed.len() > 3);
    for (at, sealed) in state.sealed.iter().enumerate() {
        let view = log.view(&state, at).unwrap();
        let frames = frames_of(&sealed.paths.log);
        let Hints::Sealed(loaded) = &view.hints else {
            unreachable!()
        };
        assert!(!loaded.index.entries.is_empty());
        // Each lookup lands within one interval (plus the batch holding the target).
        for index in sealed.base..sealed.end {
            let hint = view.hint_for_index(index).map_or(0, |h| u64::from(h.pos));
            let target = log.read(index, index + 1, 1, 1).unwrap();
            assert_eq!(indexes(&target), vec![index]);
            let frame_pos = {
                let mut walker = FrameWalker::new(
                    ChunkReader::new(&view.file, view.path, view.size, 4096),
                    view.path,
                    0,
                    sealed.base,
                    None,
                );
                let mut pos = 0;
                while let Some(frame) = walker.next_frame().unwrap() {
                    if frame.header.end_index() > index {
                        pos = frame.pos;
                        break;
                    }
                }
                pos
            };
            let largest_frame = frames.iter().map(|f| f.1).max().unwrap();
            assert!(hint <= frame_pos && frame_pos - hint <= u64::from(interval) + largest_frame);
        }
    }
}

#[test]
fn damaged_index_files_never_change_what_reads_return() {
    let dir = TempDir::new().unwrap();
    {
        let log = Log::open(dir.path(), config(2048, 100)).unwrap();
        for i in 0..120 {
            append_batch(&log, 2, i / 10, 0);
        }
    }
    // Plausible but wrong points: shifted positions and relative indexes.
    for base in segment_files(dir.path()) {
        let paths = SegmentPaths::new(dir.path(), base);
        let Some(mut index) = segment::read_index_files(&paths) else {
            continue;
        };
        for point in &mut index.entries {
            point.pos += 3;
            point.ts = 0;
        }
        write_index_files(&paths, &index).unwrap();
    }
    let log = Log::open(dir.path(), config(2048, 100)).unwrap();
    let all = read_all(&log);
    assert_eq!(indexes(&all), (0..240).collect::<Vec<_>>());
    assert_entries_match(&all, |_| 0);
    for from in (0..240).step_by(7) {
        assert_eq!(log.read(from, from + 1, 1, 1).unwrap()[0].index, from);
    }
    for ts in 0..13 {
        assert_eq!(log.index_at_timestamp(ts).unwrap(), (ts * 20).min(240));
    }
    // missing index files are rebuilt too
    drop(log);
    for base in segment_files(dir.path()) {
        std::fs::remove_file(SegmentPaths::new(dir.path(), base).idx).unwrap();
    }
    let log = Log::open(dir.path(), config(2048, 100)).unwrap();
    assert!(log.recovery_report().indexes_rebuilt >= 1);
    assert_eq!(indexes(&read_all(&log)), (0..240).collect::<Vec<_>>());
}

#[test]
fn index_at_timestamp_finds_the_first_entry_at_or_after() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), config(1500, 64)).unwrap();
    // batch k holds 3 entries stamped 100 + 10 * (k / 2)
    for k in 0..60u64 {
        append_batch(&log, 3, 100 + 10 * (k / 2), 0);
    }
    assert!(log.stats().segments > 3);
    let expected = |ts: u64| -> u64 {
        (0..180u64)
            .find(|i| 100 + 10 * (i / 6) >= ts)
            .unwrap_or(180)
    };
    for ts in [
        0, 99, 100, 101, 109, 110, 111, 150, 155, 200, 389, 390, 391, 10_000,
    ] {
        assert_eq!(log.index_at_timestamp(ts).unwrap(), expected(ts), "ts {ts}");
    }
    // after reopen (indexes loaded from files) the answers are the same
    drop(log);
    let log = Log::open(dir.path(), config(1500, 64)).unwrap();
    for ts in (0..420).step_by(3) {
        assert_eq!(log.index_at_timestamp(ts).unwrap(), expected(ts), "ts {ts}");
    }
}

#[test]
fn retention_deletes_only_whole_expired_sealed_segments() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), config(1024, 64)).unwrap();
    for k in 0..30u64 {
        append_batch(&log, 4, k, 0);
    }
    let bases = segment_files(dir.path());
    assert!(bases.len() >= 4);
    assert_eq!(log.delete_segments_older_than(0).unwrap(), 0);
    let ts_of = |index: u64| index / 4;
    // a cutoff in the middle of a segment keeps that segment
    let cut_segment = 2;
    let cutoff = ts_of(bases[cut_segment]) + 1;
    let expected_first = bases
        .windows(2)
        .find(|pair| ts_of(pair[1] - 1) >= cutoff)
        .map_or(bases[bases.len() - 1], |pair| pair[0]);
    assert!(expected_first >= bases[cut_segment]);
    let dropped = log.delete_segments_older_than(cutoff).unwrap();
    let kept = segment_files(dir.path());
    assert_eq!(kept[0], expected_first);
    assert_eq!(dropped, kept[0]);
    assert_eq!(log.first_index(), kept[0]);
    assert_eq!(
        log.stats().segments_deleted,
        (bases.len() - kept.len()) as u64
    );
    assert!(matches!(
        log.read(0, u64::MAX, 10, 100),
        Err(StorageError::Trimmed { first_index }) if first_index == kept[0]
    ));
    assert_eq!(log.index_at_timestamp(0).unwrap(), kept[0]);
    // everything expired: the active segment stays
    let active_base = *kept.last().unwrap();
    log.delete_segments_older_than(u64::MAX).unwrap();
    assert_eq!(segment_files(dir.path()), vec![active_base]);
    assert_eq!(log.first_index(), active_base);
    assert_eq!(
        indexes(&read_all(&log)),
        (active_base..120).collect::<Vec<_>>()
    );
    // reopen keeps the new first index and the durable end
    drop(log);
    let log = Log::open(dir.path(), config(1024, 64)).unwrap();
    assert_eq!(log.first_index(), active_base);
    assert_eq!(log.next_index(), 120);
    assert_eq!(log.durable_index(), Some(119));
    assert_eq!(log.last_entry_timestamp(), Some(29));
}

#[test]
fn trim_before_drops_whole_segments_below() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), config(1024, 64)).unwrap();
    for k in 0..30u64 {
        append_batch(&log, 4, k, 0);
    }
    let bases = segment_files(dir.path());
    assert_eq!(log.trim_before(bases[2] - 1).unwrap(), bases[1]);
    assert_eq!(log.first_index(), bases[1]);
    assert_eq!(
        log.trim_before(u64::MAX).unwrap(),
        bases[bases.len() - 1] - bases[1]
    );
    assert_eq!(segment_files(dir.path()), vec![*bases.last().unwrap()]);
}

#[test]
fn truncate_from_removes_suffixes_at_any_index() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), config(1024, 64)).unwrap();
    for k in 0..30u64 {
        append_batch(&log, 4, k, 0);
    }
    assert_eq!(log.next_index(), 120);
    log.truncate_from(500).unwrap();
    assert_eq!(log.next_index(), 120, "beyond the end is a no-op");
    let mut generation = vec![0u64; 1000];
    // mid-batch in the active segment, at a batch boundary, mid-batch deep in a sealed
    // segment, at a segment base, and inside the first batch of a segment
    let bases = segment_files(dir.path());
    let points = [117, 112, bases[3] + 5, bases[2], bases[1] + 1, 2, 0];
    for (next_generation, from) in (1u64..).zip(points) {
        log.truncate_from(from).unwrap();
        assert_eq!(log.next_index(), from);
        assert_eq!(log.durable_index(), from.checked_sub(1));
        let all = read_all(&log);
        assert_eq!(indexes(&all), (0..from).collect::<Vec<_>>());
        assert_entries_match(&all, |i| generation[i as usize]);
        assert_eq!(
            log.last_entry_timestamp(),
            all.last().map(|e| e.timestamp_ms)
        );
        // appends continue at `from`
        let (first, last) = append_batch(&log, 3, 40, next_generation);
        assert_eq!(first, from);
        for i in first..=last {
            generation[i as usize] = next_generation;
        }
        let all = read_all(&log);
        assert_eq!(indexes(&all), (0..from + 3).collect::<Vec<_>>());
        assert_entries_match(&all, |i| generation[i as usize]);
        // and the result survives a reopen
        let reopened = {
            let dir = TempDir::new().unwrap();
            copy_dir(log.dir(), dir.path());
            let copy = Log::open(dir.path(), config(1024, 64)).unwrap();
            assert!(!copy.recovery_report().truncated);
            read_all(&copy)
        };
        assert_eq!(reopened, all);
        log.truncate_from(from + 3).unwrap();
    }
    assert!(matches!(
        log.read(0, 10, 10, usize::MAX),
        Ok(entries) if indexes(&entries) == vec![0, 1, 2]
    ));
    log.delete_segments_older_than(u64::MAX).unwrap();
    let first = log.first_index();
    if first > 0 {
        assert!(matches!(
            log.truncate_from(first - 1),
            Err(StorageError::Trimmed { first_index }) if first_index == first
        ));
    }
}

#[test]
fn truncate_from_is_durable_and_syncs_with_fsync_on() {
    let dir = TempDir::new().unwrap();
    let cfg = LogConfig {
        fsync: true,
        ..config(1024, 64)
    };
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    for k in 0..10u64 {
        append_batch(&log, 4, k, 0);
    }
    log.truncate_from(13).unwrap();
    assert_eq!(log.durable_index(), Some(12));
    log.sync(12).unwrap();
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.next_index(), 13);
    assert_eq!(indexes(&read_all(&log)), (0..13).collect::<Vec<_>>());
}

#[test]
fn crash_between_split_and_cut_recovers_the_truncated_log() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), config(1 << 20, 64)).unwrap();
    for k in 0..10u64 {
        append_batch(&log, 4, k, 0);
    }
    let before = std::fs::read(log_path(dir.path(), 0)).unwrap();
    log.truncate_from(22).unwrap(); // splits batch 20..24 into its own segment
    assert_eq!(segment_files(dir.path()), vec![0, 20]);
    drop(log);
    // A crash before the old segment was cut leaves it with the overlapping batches.
    std::fs::write(log_path(dir.path(), 0), &before).unwrap();
    let log = Log::open(dir.path(), config(1 << 20, 64)).unwrap();
    let report = log.recovery_report();
    assert!(report.truncated);
    assert_eq!(report.segments_removed, 0);
    assert_eq!(log.next_index(), 22);
    let all = read_all(&log);
    assert_eq!(indexes(&all), (0..22).collect::<Vec<_>>());
    assert_entries_match(&all, |_| 0);
    append_batch(&log, 2, 11, 0);
    assert_eq!(indexes(&read_all(&log)), (0..24).collect::<Vec<_>>());
}

#[test]
fn reopen_restores_state() {
    let dir = TempDir::new().unwrap();
    {
        let log = Log::open(dir.path(), config(700, 64)).unwrap();
        for k in 0..20u64 {
            append_batch(&log, 2, 5 + k, 0);
        }
        log.sync(39).unwrap();
    }
    let log = Log::open(dir.path(), config(700, 64)).unwrap();
    assert_eq!(log.recovery_report(), RecoveryReport::default());
    assert_eq!(log.next_index(), 40);
    assert_eq!(log.durable_index(), Some(39));
    assert_eq!(log.last_entry_timestamp(), Some(24));
    let all = read_all(&log);
    assert_eq!(indexes(&all), (0..40).collect::<Vec<_>>());
    assert_entries_match(&all, |_| 0);
    append_batch(&log, 2, 30, 0);
    assert_eq!(log.next_index(), 42);
}

#[test]
fn reopen_with_an_empty_active_segment_reports_the_sealed_timestamp() {
    let dir = TempDir::new().unwrap();
    {
        let log = Log::open(dir.path(), config(400, 64)).unwrap();
        for k in 0..10u64 {
            append_batch(&log, 2, k, 0);
        }
        let active_base = log.state.read().active.base;
        log.truncate_from(active_base).unwrap();
        assert!(log.state.read().active.meta.read().size == 0);
    }
    let log = Log::open(dir.path(), config(400, 64)).unwrap();
    let newest = read_all(&log).last().map(|e| e.timestamp_ms);
    assert!(newest.is_some());
    assert_eq!(log.last_entry_timestamp(), newest);
}

/// Writes five batches into one segment and returns (dir, start of the last batch,
/// file length, index of the last batch).
fn five_batches(cfg: &LogConfig) -> (TempDir, u64, u64, u64) {
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), cfg.clone()).unwrap();
    for k in 0..5u64 {
        append_batch(&log, 1 + k, k, 0);
    }
    let last_base = log.next_index() - 5;
    drop(log);
    let frames = frames_of(&log_path(dir.path(), 0));
    let (pos, len) = *frames.last().unwrap();
    (dir, pos, pos + len, last_base)
}

#[test]
fn recovery_cuts_a_torn_last_batch_at_every_byte_offset() {
    let cfg = config(1 << 20, 40);
    let (dir, start, end, last_base) = five_batches(&cfg);
    for cut in start..end {
        let copy = TempDir::new().unwrap();
        copy_dir(dir.path(), copy.path());
        let file = OpenOptions::new()
            .write(true)
            .open(log_path(copy.path(), 0))
            .unwrap();
        file.set_len(cut).unwrap();
        let log = Log::open(copy.path(), cfg.clone()).unwrap();
        let report = log.recovery_report();
        assert_eq!(report.truncated, cut > start, "cut at {cut}");
        assert_eq!(report.bytes_cut, cut - start, "cut at {cut}");
        assert_eq!(log.next_index(), last_base, "cut at {cut}");
        assert_eq!(log.durable_index(), Some(last_base - 1));
        let all = read_all(&log);
        assert_eq!(indexes(&all), (0..last_base).collect::<Vec<_>>());
        assert_entries_match(&all, |_| 0);
        // appends continue with the next index, and their index points are right
        append_batch(&log, 3, 10, 7);
        assert_eq!(
            indexes(&log.read(last_base, u64::MAX, 10, usize::MAX).unwrap()),
            vec![last_base, last_base + 1, last_base + 2]
        );
        drop(log);
        let log = Log::open(copy.path(), cfg.clone()).unwrap();
        assert_eq!(
            log.recovery_report(),
            RecoveryReport::default(),
            "cut at {cut}"
        );
        let all = read_all(&log);
        assert_eq!(indexes(&all), (0..last_base + 3).collect::<Vec<_>>());
        assert_entries_match(&all, |i| if i >= last_base { 7 } else { 0 });
        let rebuilt = segment::read_index_files(&SegmentPaths::new(copy.path(), 0)).unwrap();
        assert_eq!(rebuilt, log.state.read().active.meta.read().index);
    }
}

#[test]
fn a_flipped_byte_in_the_last_batch_cuts_that_batch() {
    let cfg = config(1 << 20, 40);
    let (dir, start, end, last_base) = five_batches(&cfg);
    for at in start..end {
        let copy = TempDir::new().unwrap();
        copy_dir(dir.path(), copy.path());
        flip_byte(&log_path(copy.path(), 0), at);
        let log = Log::open(copy.path(), cfg.clone()).unwrap();
        assert_eq!(log.next_index(), last_base, "flip at {at}");
        assert_eq!(log.recovery_report().bytes_cut, end - start, "flip at {at}");
        assert_eq!(indexes(&read_all(&log)), (0..last_base).collect::<Vec<_>>());
    }
}

#[test]
fn a_flipped_byte_in_an_earlier_batch_is_reported_as_corrupt_on_read() {
    let cfg = config(1 << 20, 40);
    let (dir, _, _, _) = five_batches(&cfg);
    let path = log_path(dir.path(), 0);
    let frames = frames_of(&path);
    // a payload byte of the second batch (indexes 1..3)
    let (pos, len) = frames[1];
    flip_byte(&path, pos + len - 2);
    let log = Log::open(dir.path(), cfg).unwrap();
    let report = log.recovery_report();
    assert_eq!(report.corrupt_batches, 1);
    assert!(!report.truncated);
    assert_eq!(log.next_index(), 15, "later batches are kept");
    match log.read(0, u64::MAX, 100, usize::MAX) {
        Err(StorageError::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, path);
            assert_eq!(offset, pos);
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
    assert_eq!(
        indexes(&log.read(0, 1, 10, 100).unwrap()),
        vec![0],
        "entries before it read fine"
    );
}

#[test]
fn a_flipped_byte_in_an_older_segment_is_reported_as_corrupt_on_read() {
    let dir = TempDir::new().unwrap();
    let cfg = config(1024, 64);
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        for k in 0..40u64 {
            append_batch(&log, 3, k, 0);
        }
    }
    let bases = segment_files(dir.path());
    assert!(bases.len() > 3);
    let path = log_path(dir.path(), bases[1]);
    let frames = frames_of(&path);
    let (pos, len) = frames[frames.len() / 2];
    flip_byte(&path, pos + len / 2);
    let log = Log::open(dir.path(), cfg).unwrap();
    assert_eq!(log.recovery_report(), RecoveryReport::default());
    match log.read(bases[1], bases[2], 1000, usize::MAX) {
        Err(StorageError::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, path);
            assert_eq!(offset, pos);
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
    // other segments are unaffected
    assert_eq!(
        indexes(&log.read(0, bases[1], 1000, usize::MAX).unwrap()),
        (0..bases[1]).collect::<Vec<_>>()
    );
    assert_eq!(
        indexes(&log.read(bases[2], u64::MAX, 1000, usize::MAX).unwrap()),
        (bases[2]..120).collect::<Vec<_>>()
    );
}

#[test]
fn a_predecessor_that_ends_early_removes_the_newer_segment() {
    let dir = TempDir::new().unwrap();
    let cfg = config(1024, 64);
    {
        let log = Log::open(dir.path(), cfg.clone()).unwrap();
        for k in 0..20u64 {
            append_batch(&log, 3, k, 0);
        }
    }
    let bases = segment_files(dir.path());
    let (last, prev) = (bases[bases.len() - 1], bases[bases.len() - 2]);
    let prev_path = log_path(dir.path(), prev);
    let frames = frames_of(&prev_path);
    let (pos, _) = *frames.last().unwrap();
    let file = OpenOptions::new().write(true).open(&prev_path).unwrap();
    file.set_len(pos + 5).unwrap();
    let last_len = std::fs::metadata(log_path(dir.path(), last)).unwrap().len();
    let log = Log::open(dir.path(), cfg).unwrap();
    let report = log.recovery_report();
    assert!(report.truncated);
    assert_eq!(report.segments_removed, 1);
    assert_eq!(report.bytes_cut, 5 + last_len);
    let all = read_all(&log);
    let end = all.last().unwrap().index + 1;
    assert!(end < last);
    assert_eq!(log.next_index(), end);
    assert_eq!(indexes(&all), (0..end).collect::<Vec<_>>());
    assert_eq!(segment_files(dir.path()), bases[..bases.len() - 1].to_vec());
}

#[test]
fn readers_never_see_a_partial_batch() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(dir.path(), config(4096, 128)).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 0..300u64 {
                append_batch(&log, 1 + k % 7, k, 0);
            }
            done.store(true, Ordering::Release);
        });
        for _ in 0..2 {
            s.spawn(|| {
                let mut seen = 0;
                while !done.load(Ordering::Acquire) || seen < log.next_index() {
                    let next = log.next_index();
                    let got = log.read(seen, next, 50, usize::MAX).unwrap();
                    assert!(got.len() <= 50);
                    for (e, expected) in got.iter().zip(seen..) {
                        assert_eq!(e.index, expected);
                        assert_eq!(e.payload, payload(expected, 0));
                    }
                    seen += got.len() as u64;
                }
                assert_eq!(seen, log.next_index());
            });
        }
    });
}

#[test]
fn concurrent_syncs_share_fdatasyncs() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            fsync: true,
            ..config(1 << 20, 4096)
        },
    )
    .unwrap();
    let threads = 8;
    let rounds = 20;
    let before = log.stats();
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (log, barrier) = (&log, &barrier);
            s.spawn(move || {
                for round in 0..rounds {
                    let body = format!("t{t}-r{round}");
                    let (index, _) = log
                        .append(&[EntryRef {
                            term: 1,
                            timestamp_ms: round,
                            payload: body.as_bytes(),
                        }])
                        .unwrap();
                    // Every append of the round is written before anyone syncs, so the
                    // first sync of the round covers all of them.
                    barrier.wait();
                    log.sync(index).unwrap();
                    assert!(log.durable_index().is_some_and(|d| d >= index));
                    barrier.wait();
                }
            });
        }
    });
    let after = log.stats();
    let syncs = after.sync_calls - before.sync_calls;
    let fdatasyncs = after.fdatasyncs - before.fdatasyncs;
    assert_eq!(syncs, (threads * rounds as usize) as u64);
    assert_eq!(
        fdatasyncs, rounds,
        "one fdatasync per round of {threads} syncs"
    );
    assert!(fdatasyncs < syncs);
    assert_eq!(log.durable_index(), Some(log.next_index() - 1));
}

#[test]
fn free_running_appenders_and_syncers_all_succeed() {
    let dir = TempDir::new().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            fsync: true,
            ..config(8192, 512)
        },
    )
    .unwrap();
    let threads = 6;
    let per_thread = 40u64;
    let before = log.stats();
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = &log;
            s.spawn(move || {
                for i in 0..per_thread {
                    let body = format!("t{t}-i{i}");
                    let entries = [EntryRef {
                        term: 1,
                        timestamp_ms: 0,
                        payload: body.as_bytes(),
                    }; 2];
                    let (_, last) = log.append(&entries).unwrap();
                    log.sync(last).unwrap();
                    assert!(log.durable_index().is_some_and(|d| d >= last));
                }
            });
        }
    });
    let total = threads as u64 * per_thread * 2;
    assert_eq!(log.next_index(), total);
    assert_eq!(log.durable_index(), Some(total - 1));
    let after = log.stats();
    let sync_calls = after.sync_calls - before.sync_calls;
    assert_eq!(sync_calls, threads as u64 * per_thread);
    // at most one fdatasync per sync call, plus one per sealed segment
    assert!(after.fdatasyncs - before.fdatasyncs <= sync_calls + after.segments_created);
    let all = read_all(&log);
    assert_eq!(all.len() as u64, total);
    // each thread's entries appear in its own order, in pairs
    for t in 0..threads {
        let prefix = format!("t{t}-");
        let mine: Vec<&Entry> = all
            .iter()
            .filter(|e| e.payload.starts_with(prefix.as_bytes()))
            .collect();
        assert_eq!(mine.len() as u64, per_thread * 2);
        for (i, pair) in mine.chunks(2).enumerate() {
            assert_eq!(pair[0].payload, format!("t{t}-i{i}").as_bytes());
            assert_eq!(pair[0].index + 1, pair[1].index);
        }
    }
}

#[test]
fn destroy_removes_the_directory() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("shard");
    let log = Log::open(&path, config(1 << 20, 64)).unwrap();
    append_batch(&log, 2, 0, 0);
    log.destroy().unwrap();
    assert!(!path.exists());
}

#[test]
fn leftover_temporary_and_orphan_files_are_removed_on_open() {
    let dir = TempDir::new().unwrap();
    {
        let log = Log::open(dir.path(), config(1 << 20, 64)).unwrap();
        append_batch(&log, 2, 0, 0);
    }
    let tmp = SegmentPaths::tmp(dir.path(), 1);
    std::fs::write(&tmp, b"partial").unwrap();
    let orphan = SegmentPaths::new(dir.path(), 77).idx;
    std::fs::write(&orphan, b"").unwrap();
    let log = Log::open(dir.path(), config(1 << 20, 64)).unwrap();
    assert!(!tmp.exists());
    assert!(!orphan.exists());
    assert_eq!(log.next_index(), 2);
}
