//! Tests of the log store: openraft's storage conformance suite (twice: one large
//! segment, and segments of a few entries so that purge deletes files), then reopen,
//! torn-tail, index-anchor, truncation and ordering cases of our own.

use super::*;
use crate::testing::{MemStateMachine, TestConfig};
use openraft::Membership;
use openraft::StorageError as RaftStorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::type_config::alias::{EntryOf, LeaderIdOf};
use openraft::vote::RaftLeaderId;
use std::collections::BTreeSet;
use std::fs::OpenOptions;
use tempfile::TempDir;

type C = TestConfig;

/// Segments of a few entries each.
fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 256,
        index_interval_bytes: 64,
        fsync: true,
    }
}

struct Builder {
    cfg: LogConfig,
}

impl StoreBuilder<C, LogStore<C>, MemStateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore<C>, MemStateMachine), RaftStorageError<C>> {
        let dir = TempDir::new().map_err(|e| RaftStorageError::read(C::err_from_error(&e)))?;
        let store = LogStore::open(dir.path().join("group"), self.cfg.clone())
            .await
            .map_err(|e| RaftStorageError::read(C::err_from_error(&e)))?;
        Ok((dir, store, MemStateMachine::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder {
        cfg: LogConfig::default(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_with_small_segments() {
    Suite::test_all(Builder {
        cfg: small_segments(),
    })
    .await
    .unwrap();
}

fn log_id(term: u64, index: u64) -> LogIdOf<C> {
    LogIdOf::<C> {
        leader_id: LeaderIdOf::<C>::new(term, 1),
        index,
    }
}

fn normal(term: u64, index: u64) -> EntryOf<C> {
    EntryOf::<C>::new_normal(log_id(term, index), format!("cmd-{term}-{index}"))
}

fn membership(term: u64, index: u64) -> EntryOf<C> {
    let voters: BTreeSet<u64> = [1, 2, 3].into();
    EntryOf::<C>::new_membership(
        log_id(term, index),
        Membership::new_with_defaults(vec![voters], []),
    )
}

fn normals(term: u64, indexes: impl IntoIterator<Item = u64>) -> Vec<EntryOf<C>> {
    indexes.into_iter().map(|i| normal(term, i)).collect()
}

fn vote(term: u64) -> VoteOf<C> {
    VoteOf::<C>::new(term, 1)
}

async fn open(dir: &Path, cfg: LogConfig) -> LogStore<C> {
    LogStore::open(dir, cfg).await.unwrap()
}

/// Appends and waits until openraft would be told the entries are durable.
async fn append(store: &mut LogStore<C>, entries: Vec<EntryOf<C>>) {
    let (tx, rx) = C::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

async fn read(
    store: &mut LogStore<C>,
    range: impl RangeBounds<u64> + Clone + Debug + Send,
) -> Vec<EntryOf<C>> {
    store
        .get_log_reader()
        .await
        .try_get_log_entries(range)
        .await
        .unwrap()
}

async fn log_state(store: &mut LogStore<C>) -> (Option<LogIdOf<C>>, Option<LogIdOf<C>>) {
    let st = store.get_log_state().await.unwrap();
    (st.last_purged_log_id, st.last_log_id)
}

fn ids(entries: &[EntryOf<C>]) -> Vec<LogIdOf<C>> {
    entries.iter().map(|e| e.log_id()).collect()
}

fn store_error(e: &io::Error) -> &LogStoreError {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<LogStoreError>())
        .unwrap_or_else(|| panic!("not a LogStoreError: {e:?}"))
}

#[tokio::test]
async fn append_is_readable_at_once_and_its_callback_fires_only_when_durable() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path(), LogConfig::default()).await;
    let mut reader = store.get_log_reader().await;
    let (tx, rx) = C::oneshot();
    let mut entries = vec![membership(1, 0)];
    entries.extend(normals(1, 1..10));
    store
        .append(entries.clone(), IOFlushed::signal(tx))
        .await
        .unwrap();
    // Readable when append returns, whether or not the sync has run.
    assert_eq!(reader.try_get_log_entries(0..10).await.unwrap(), entries);
    rx.await.unwrap().unwrap();
    assert!(store.shared.log.durable_index() >= Some(9));
    assert!(store.shared.log.stats().fdatasyncs >= 1);
    // One Raft entry is one log entry, at the same index, with its term.
    let raw = store.shared.log.read(0, 10, 100, usize::MAX).unwrap();
    assert_eq!(
        raw.iter().map(|e| e.index).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert!(raw.iter().all(|e| e.term == 1));
}

#[tokio::test]
async fn every_other_write_waits_for_earlier_appends_to_be_durable() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path(), LogConfig::default()).await;
    // (The committed id is not written on its own: it rides on these writes.)
    for (k, write) in ["vote", "purge", "truncate"].into_iter().enumerate() {
        let base = 10 * k as u64;
        let (tx, mut rx) = C::oneshot();
        store
            .append(normals(1, base..base + 10), IOFlushed::signal(tx))
            .await
            .unwrap();
        match write {
            "vote" => store.save_vote(&vote(1)).await.unwrap(),
            "purge" => store.purge(log_id(1, 0)).await.unwrap(),
            _ => store
                .truncate_after(Some(log_id(1, base + 9)))
                .await
                .unwrap(),
        }
        // The append's callback has been completed, successfully, before the write.
        assert_eq!(rx.try_recv().unwrap().unwrap(), (), "{write}");
        assert!(
            store.shared.log.durable_index() >= Some(base + 9),
            "{write}"
        );
    }
}

#[tokio::test]
async fn reopen_keeps_vote_committed_entries_and_purge_state() {
    let dir = TempDir::new().unwrap();
    let mut expected = vec![membership(1, 0)];
    expected.extend(normals(1, 1..40));
    expected.extend(normals(3, 40..60));
    {
        let mut store = open(dir.path(), small_segments()).await;
        for chunk in expected.chunks(7) {
            append(&mut store, chunk.to_vec()).await;
        }
        store.save_vote(&vote(3)).await.unwrap();
        store.save_committed(Some(log_id(3, 55))).await.unwrap();
        store.purge(log_id(1, 30)).await.unwrap();
        // Whole segments below the purged index are gone from disk.
        // Purge is whole-segment: entries 28..=30 stay on disk but are never served.
        assert_eq!(store.shared.log.first_index(), 28);
    }
    let mut store = open(dir.path(), small_segments()).await;
    assert!(!store.recovery_report().truncated);
    assert_eq!(
        store.get_log_reader().await.read_vote().await.unwrap(),
        Some(vote(3))
    );
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 55)));
    assert_eq!(
        log_state(&mut store).await,
        (Some(log_id(1, 30)), Some(log_id(3, 59)))
    );
    assert_eq!(read(&mut store, 0..).await, expected[31..].to_vec());
    assert_eq!(read(&mut store, 0..=30).await, vec![]);
    assert_eq!(read(&mut store, 45..47).await, expected[45..47].to_vec());
    // The log continues where it ended.
    append(&mut store, normals(3, 60..62)).await;
    assert_eq!(
        ids(&read(&mut store, 59..).await),
        vec![log_id(3, 59), log_id(3, 60), log_id(3, 61)]
    );
}

#[tokio::test]
async fn a_torn_tail_loses_only_the_torn_batch_and_the_store_reopens() {
    let dir = TempDir::new().unwrap();
    let first: Vec<_> = normals(1, 0..10);
    {
        let mut store = open(dir.path(), LogConfig::default()).await;
        append(&mut store, first.clone()).await;
        // The committed id reaches the disk with the next durable write (the vote).
        store.save_committed(Some(log_id(1, 9))).await.unwrap();
        store.save_vote(&vote(2)).await.unwrap();
        // The last batch: a power loss may tear it, it was the newest write.
        append(&mut store, normals(2, 10..15)).await;
    }
    let segment = dir.path().join(LOG_DIR).join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&segment).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 7)
        .unwrap();

    let mut store = open(dir.path(), LogConfig::default()).await;
    let report = store.recovery_report();
    assert!(report.truncated);
    assert!(report.bytes_cut > 0);
    assert_eq!(log_state(&mut store).await, (None, Some(log_id(1, 9))));
    assert_eq!(read(&mut store, 0..).await, first);
    assert_eq!(
        store.get_log_reader().await.read_vote().await.unwrap(),
        Some(vote(2))
    );
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 9)));
    // The new leader's entries take the lost indexes, and survive another reopen.
    append(&mut store, normals(3, 10..12)).await;
    drop(store);
    let mut store = open(dir.path(), LogConfig::default()).await;
    assert!(!store.recovery_report().truncated);
    assert_eq!(log_state(&mut store).await, (None, Some(log_id(3, 11))));
    let mut expected = first;
    expected.extend(normals(3, 10..12));
    assert_eq!(read(&mut store, 0..).await, expected);
}

#[tokio::test]
async fn purge_past_the_end_moves_the_anchor_for_the_next_append_and_survives_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = open(dir.path(), LogConfig::default()).await;
        append(&mut store, normals(1, 0..=10)).await;
        // A follower installs a snapshot up to 20: everything it has is purged.
        store.purge(log_id(2, 20)).await.unwrap();
        assert_eq!(
            log_state(&mut store).await,
            (Some(log_id(2, 20)), Some(log_id(2, 20)))
        );
        assert_eq!(read(&mut store, 0..100).await, vec![]);
        append(&mut store, normals(2, 21..=25)).await;
        assert_eq!(
            store.shared.hard.read().anchor,
            Anchor { log: 11, raft: 21 }
        );
    }
    let mut store = open(dir.path(), LogConfig::default()).await;
    assert_eq!(
        log_state(&mut store).await,
        (Some(log_id(2, 20)), Some(log_id(2, 25)))
    );
    assert_eq!(read(&mut store, 0..).await, normals(2, 21..=25));
    assert_eq!(read(&mut store, 0..=20).await, vec![]);
    append(&mut store, normals(2, 26..=26)).await;
    assert_eq!(
        ids(&read(&mut store, 25..).await),
        vec![log_id(2, 25), log_id(2, 26)]
    );
    // Log index = anchor.log + (raft index - anchor.raft).
    let raw = store.shared.log.read(16, 17, 1, usize::MAX).unwrap();
    assert_eq!(
        decode_entry::<C>(26, &raw[0].payload).unwrap(),
        normal(2, 26)
    );
}

#[tokio::test]
async fn an_anchor_made_durable_without_its_entries_still_maps_the_next_append() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = open(dir.path(), LogConfig::default()).await;
        append(&mut store, normals(1, 0..=10)).await;
        store.purge(log_id(2, 20)).await.unwrap();
        // What a crash leaves between writing the moved anchor and appending the
        // entries after it (see `Shared::append`).
        let mut hard = store.shared.hard.read().clone();
        hard.anchor = Anchor { log: 11, raft: 21 };
        store.shared.writer.lock().file.store(&hard).unwrap();
    }
    let mut store = open(dir.path(), LogConfig::default()).await;
    assert_eq!(
        log_state(&mut store).await,
        (Some(log_id(2, 20)), Some(log_id(2, 20)))
    );
    assert_eq!(read(&mut store, 0..).await, vec![]);
    append(&mut store, normals(2, 21..=22)).await;
    assert_eq!(
        store.shared.hard.read().anchor,
        Anchor { log: 11, raft: 21 }
    );
    assert_eq!(read(&mut store, 0..).await, normals(2, 21..=22));
}

#[tokio::test]
async fn a_first_append_at_index_one_is_stored_at_log_index_zero() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = open(dir.path(), LogConfig::default()).await;
        append(
            &mut store,
            vec![membership(1, 1), normal(1, 2), normal(1, 3)],
        )
        .await;
        assert_eq!(store.shared.log.next_index(), 3);
    }
    let mut store = open(dir.path(), LogConfig::default()).await;
    assert_eq!(log_state(&mut store).await, (None, Some(log_id(1, 3))));
    assert_eq!(
        read(&mut store, 0..).await,
        vec![membership(1, 1), normal(1, 2), normal(1, 3)]
    );
}

#[tokio::test]
async fn truncation_is_durable_and_the_new_suffix_survives_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = open(dir.path(), small_segments()).await;
        append(&mut store, normals(1, 0..=10)).await;
        store.truncate_after(Some(log_id(1, 5))).await.unwrap();
        assert_eq!(log_state(&mut store).await, (None, Some(log_id(1, 5))));
        append(&mut store, normals(2, 6..=8)).await;
    }
    let mut store = open(dir.path(), small_segments()).await;
    let mut expected = normals(1, 0..=5);
    expected.extend(normals(2, 6..=8));
    assert_eq!(read(&mut store, 0..).await, expected);
    assert_eq!(log_state(&mut store).await, (None, Some(log_id(2, 8))));
    // Truncating everything leaves an empty log that starts again at 0.
    store.truncate_after(None).await.unwrap();
    assert_eq!(log_state(&mut store).await, (None, None));
    append(&mut store, normals(4, 0..=1)).await;
    drop(store);
    let mut store = open(dir.path(), small_segments()).await;
    assert_eq!(read(&mut store, 0..).await, normals(4, 0..=1));
}

#[tokio::test]
async fn appends_that_do_not_continue_the_log_are_rejected_and_change_nothing() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path(), LogConfig::default()).await;
    append(&mut store, normals(1, 0..5)).await;
    let cases: [(Vec<EntryOf<C>>, u64, u64); 3] = [
        (normals(1, 6..8), 5, 6),
        (normals(1, 3..8), 5, 3),
        (vec![normal(1, 5), normal(1, 7)], 6, 7),
    ];
    for (entries, expected, got) in cases {
        let err = store.append(entries, IOFlushed::noop()).await.unwrap_err();
        assert!(
            matches!(store_error(&err), LogStoreError::NotContiguous { expected: e, got: g } if *e == expected && *g == got),
            "{err:?}"
        );
        assert_eq!(err.kind(), io::ErrorKind::Other);
    }
    store.purge(log_id(1, 6)).await.unwrap();
    let err = store
        .append(normals(1, 5..6), IOFlushed::noop())
        .await
        .unwrap_err();
    assert!(
        matches!(
            store_error(&err),
            LogStoreError::BelowPurged { got: 5, purged: 6 }
        ),
        "{err:?}"
    );
    let err = store
        .append(normals(1, 9..10), IOFlushed::noop())
        .await
        .unwrap_err();
    assert!(
        matches!(
            store_error(&err),
            LogStoreError::NotContiguous {
                expected: 7,
                got: 9
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        log_state(&mut store).await,
        (Some(log_id(1, 6)), Some(log_id(1, 6)))
    );
    append(&mut store, normals(1, 7..9)).await;
    assert_eq!(read(&mut store, 0..).await, normals(1, 7..9));
}

#[tokio::test]
async fn reads_span_many_segments_and_purge_deletes_whole_segments() {
    let dir = TempDir::new().unwrap();
    let mut store = open(dir.path(), small_segments()).await;
    for base in (0..200).step_by(10) {
        append(&mut store, normals(1, base..base + 10)).await;
    }
    let segments = store.shared.log.stats().segments;
    assert!(segments >= 20, "{segments} segments");
    assert_eq!(
        ids(&read(&mut store, 37..=153).await),
        (37..=153).map(|i| log_id(1, i)).collect::<Vec<_>>()
    );
    let mut reader = store.get_log_reader().await;
    let limited = reader.limited_get_log_entries(0, 200).await.unwrap();
    assert!(!limited.is_empty());
    assert_eq!(
        ids(&limited),
        (0..limited.len() as u64)
            .map(|i| log_id(1, i))
            .collect::<Vec<_>>()
    );

    store.purge(log_id(1, 120)).await.unwrap();
    assert!(store.shared.log.stats().segments < segments);
    let first_kept = store.shared.log.first_index();
    assert!(
        first_kept > 0 && first_kept <= 121,
        "first index {first_kept}"
    );
    assert_eq!(read(&mut store, 0..).await, normals(1, 121..200));
    drop(store);
    let mut store = open(dir.path(), small_segments()).await;
    assert_eq!(read(&mut store, 0..).await, normals(1, 121..200));
    assert_eq!(
        log_state(&mut store).await,
        (Some(log_id(1, 120)), Some(log_id(1, 199)))
    );
}

#[tokio::test]
async fn a_damaged_state_file_fails_open_with_a_corruption_error() {
    let dir = TempDir::new().unwrap();
    {
        let mut store = open(dir.path(), LogConfig::default()).await;
        store.save_vote(&vote(5)).await.unwrap();
    }
    let path = dir.path().join(state_file::FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = match LogStore::<C>::open(dir.path(), LogConfig::default()).await {
        Ok(_) => panic!("opened a store with a damaged state file"),
        Err(e) => e,
    };
    assert!(matches!(err, LogStoreError::CorruptState { .. }), "{err:?}");
    assert!(err.is_corruption());
}
