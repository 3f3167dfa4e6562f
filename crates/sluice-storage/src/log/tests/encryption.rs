//! Encrypted segments: append and read, reopen, recovery of torn and damaged encrypted
//! batches, truncation, retention, per-segment data keys and master-key rotation, and
//! the promise that sealed payloads never reach the disk in clear.

use super::*;
use crate::error::KeyError;
use crate::keyring::{KINESIS_MANAGED_ALIAS, LocalKeyring};

/// A payload that is easy to look for in raw files.
fn secret(index: u64, generation: u64) -> Vec<u8> {
    format!("SECRET-PAYLOAD-{generation}-{index:06}-end").into_bytes()
}

fn keyring() -> (TempDir, Arc<LocalKeyring>) {
    let dir = TempDir::new().unwrap();
    let keys = Arc::new(LocalKeyring::open_or_create(&dir.path().join("keyring.json")).unwrap());
    (dir, keys)
}

fn open(dir: &Path, cfg: &LogConfig, keys: &Arc<LocalKeyring>) -> Log {
    Log::open_with_keys(dir, cfg.clone(), Arc::clone(keys) as Arc<dyn KeyProvider>).unwrap()
}

fn master(keys: &LocalKeyring, reference: &str) -> EncryptionKey {
    keys.resolve(reference).unwrap()
}

/// Appends one batch of `count` secret entries, encrypted under `key` if given.
fn append_secret(
    log: &Log,
    count: u64,
    ts: u64,
    generation: u64,
    key: Option<&EncryptionKey>,
) -> (u64, u64) {
    let first = log.next_index();
    let payloads: Vec<Vec<u8>> = (first..first + count)
        .map(|i| secret(i, generation))
        .collect();
    let entries: Vec<EntryRef<'_>> = payloads
        .iter()
        .map(|p| EntryRef {
            term: 1 + generation,
            timestamp_ms: ts,
            payload: p,
        })
        .collect();
    log.append_with(&entries, key).unwrap()
}

fn assert_secrets(entries: &[Entry], generation_of: impl Fn(u64) -> u64) {
    for e in entries {
        assert_eq!(
            e.payload,
            secret(e.index, generation_of(e.index)),
            "payload of {}",
            e.index
        );
        assert_eq!(e.term, 1 + generation_of(e.index), "term of {}", e.index);
    }
}

/// Every file of the log directory, concatenated per file.
fn files_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    out.sort();
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that no file of `dir` holds any of `needles` in clear.
fn assert_not_on_disk(dir: &Path, needles: &[Vec<u8>]) {
    for (path, bytes) in files_of(dir) {
        for needle in needles {
            assert!(
                !contains(&bytes, needle),
                "{} holds {:?} in clear",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

fn key_files(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            segment::parse_file_name(e.unwrap().file_name().to_str()?, segment::KEY_EXT)
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// The master key version a segment's sidecar names.
fn sidecar_version(dir: &Path, base: u64) -> u32 {
    let bytes = std::fs::read(SegmentPaths::new(dir, base).key).unwrap();
    u32::from_le_bytes(bytes[8..12].try_into().unwrap())
}

#[test]
fn encrypted_batches_read_back_and_never_reach_the_disk_in_clear() {
    let (_k, keys) = keyring();
    let key = master(&keys, KINESIS_MANAGED_ALIAS);
    let dir = TempDir::new().unwrap();
    let log = open(dir.path(), &config(1 << 20, 64), &keys);
    append_secret(&log, 3, 1, 0, None);
    assert!(
        key_files(dir.path()).is_empty(),
        "no sidecar before encryption"
    );
    append_secret(&log, 5, 2, 0, Some(&key));
    append_secret(&log, 1, 3, 0, Some(&key));
    append_secret(&log, 2, 4, 0, None);
    assert_eq!(key_files(dir.path()), vec![0]);
    let all = read_all(&log);
    assert_eq!(indexes(&all), (0..11).collect::<Vec<_>>());
    assert_secrets(&all, |_| 0);
    // reads from the middle of an encrypted batch, and by timestamp
    assert_eq!(
        indexes(&log.read(5, 9, 100, usize::MAX).unwrap()),
        vec![5, 6, 7, 8]
    );
    assert_eq!(log.index_at_timestamp(3).unwrap(), 8);
    drop(log);
    let sealed: Vec<Vec<u8>> = (3..9).map(|i| secret(i, 0)).collect();
    assert_not_on_disk(dir.path(), &sealed);
    // the plaintext batches stay as they were
    let bytes = std::fs::read(log_path(dir.path(), 0)).unwrap();
    assert!(contains(&bytes, &secret(0, 0)));
    assert!(contains(&bytes, &secret(10, 0)));
}

#[test]
fn an_encrypted_log_reopens_only_with_its_keys() {
    let (_k, keys) = keyring();
    let key = master(&keys, KINESIS_MANAGED_ALIAS);
    let dir = TempDir::new().unwrap();
    let cfg = config(512, 64);
    let log = open(dir.path(), &cfg, &keys);
    for k in 0..12u64 {
        append_secret(&log, 1 + k % 3, k, 0, Some(&key));
    }
    let next = log.next_index();
    assert!(log.stats().segments > 2);
    drop(log);
    let log = open(dir.path(), &cfg, &keys);
    assert_eq!(log.recovery_report(), RecoveryReport::default());
    assert_eq!(log.next_index(), next);
    let all = read_all(&log);
    assert_eq!(indexes(&all), (0..next).collect::<Vec<_>>());
    assert_secrets(&all, |_| 0);
    drop(log);
    assert!(matches!(
        Log::open(dir.path(), cfg.clone()),
        Err(StorageError::NoKeyProvider { .. })
    ));
    let stranger: Arc<dyn KeyProvider> = Arc::new(LocalKeyring::ephemeral().unwrap());
    assert!(matches!(
        Log::open_with_keys(dir.path(), cfg, stranger),
        Err(StorageError::Key(KeyError::NotFound { .. }))
    ));
}

/// A log of five encrypted batches in one segment; returns (dir, start and end of the
/// last frame, index of the last batch).
fn five_encrypted_batches(cfg: &LogConfig, keys: &Arc<LocalKeyring>) -> (TempDir, u64, u64, u64) {
    let key = master(keys, KINESIS_MANAGED_ALIAS);
    let dir = TempDir::new().unwrap();
    let log = open(dir.path(), cfg, keys);
    for k in 0..5u64 {
        append_secret(&log, 1 + k, k, 0, Some(&key));
    }
    let last_base = log.next_index() - 5;
    drop(log);
    let frames = frames_of(&log_path(dir.path(), 0));
    let (pos, len) = *frames.last().unwrap();
    (dir, pos, pos + len, last_base)
}

#[test]
fn recovery_cuts_a_torn_encrypted_batch_at_every_byte_offset() {
    let (_k, keys) = keyring();
    let key = master(&keys, KINESIS_MANAGED_ALIAS);
    let cfg = config(1 << 20, 40);
    let (dir, start, end, last_base) = five_encrypted_batches(&cfg, &keys);
    for cut in start..end {
        let copy = TempDir::new().unwrap();
        copy_dir(dir.path(), copy.path());
        let file = OpenOptions::new()
            .write(true)
            .open(log_path(copy.path(), 0))
            .unwrap();
        file.set_len(cut).unwrap();
        let log = open(copy.path(), &cfg, &keys);
        let report = log.recovery_report();
        assert_eq!(report.bytes_cut, cut - start, "cut at {cut}");
        assert_eq!(log.next_index(), last_base, "cut at {cut}");
        let all = read_all(&log);
        assert_eq!(indexes(&all), (0..last_base).collect::<Vec<_>>());
        assert_secrets(&all, |_| 0);
        append_secret(&log, 2, 10, 3, Some(&key));
        drop(log);
        let log = open(copy.path(), &cfg, &keys);
        assert_eq!(log.recovery_report(), RecoveryReport::default());
        let all = read_all(&log);
        assert_eq!(indexes(&all), (0..last_base + 2).collect::<Vec<_>>());
        assert_secrets(&all, |i| if i >= last_base { 3 } else { 0 });
    }
}

/// Flips a byte and recomputes the frame's checksum, so that only the seal can notice.
fn tamper_sealed(path: &Path, frame: (u64, u64), at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let (pos, len) = (
        usize::try_from(frame.0).unwrap(),
        usize::try_from(frame.1).unwrap(),
    );
    bytes[usize::try_from(at).unwrap()] ^= 0x20;
    let crc = crc32c::crc32c(&bytes[pos + frame::PREFIX_LEN..pos + len]);
    bytes[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_batch_that_fails_authentication_is_corrupt_and_never_returned() {
    let (_k, keys) = keyring();
    let cfg = config(1 << 20, 40);
    // In the middle of the log: kept, reported, and reads of it fail.
    let (dir, _, _, _) = five_encrypted_batches(&cfg, &keys);
    let path = log_path(dir.path(), 0);
    let frames = frames_of(&path);
    let (pos, len) = frames[1];
    tamper_sealed(&path, frames[1], pos + len - 20);
    let log = open(dir.path(), &cfg, &keys);
    assert_eq!(log.recovery_report().corrupt_batches, 1);
    assert_eq!(log.next_index(), 15);
    match log.read(0, u64::MAX, 100, usize::MAX) {
        Err(StorageError::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, pos);
            assert_eq!(reason, "batch failed authentication");
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
    assert_eq!(indexes(&log.read(0, 1, 10, 100).unwrap()), vec![0]);
    assert_eq!(
        indexes(&log.read(3, 15, 100, usize::MAX).unwrap()),
        (3..15).collect::<Vec<_>>()
    );
    drop(log);
    // At the tail: cut like a torn write, header tampering included.
    for at_header in [false, true] {
        let (dir, start, end, last_base) = five_encrypted_batches(&cfg, &keys);
        let path = log_path(dir.path(), 0);
        let at = if at_header {
            start + frame::PREFIX_LEN as u64 + 40
        } else {
            end - 1
        };
        tamper_sealed(&path, (start, end - start), at);
        let log = open(dir.path(), &cfg, &keys);
        assert_eq!(log.next_index(), last_base);
        assert_eq!(log.recovery_report().bytes_cut, end - start);
        assert_secrets(&read_all(&log), |_| 0);
    }
}

#[test]
fn a_missing_sidecar_stops_the_log_instead_of_cutting_it() {
    let (_k, keys) = keyring();
    let cfg = config(1 << 20, 40);
    let (dir, _, _, _) = five_encrypted_batches(&cfg, &keys);
    let before = std::fs::metadata(log_path(dir.path(), 0)).unwrap().len();
    std::fs::remove_file(SegmentPaths::new(dir.path(), 0).key).unwrap();
    assert!(matches!(
        Log::open_with_keys(dir.path(), cfg, Arc::clone(&keys) as Arc<dyn KeyProvider>),
        Err(StorageError::Corrupt { .. })
    ));
    assert_eq!(
        std::fs::metadata(log_path(dir.path(), 0)).unwrap().len(),
        before,
        "nothing was cut"
    );
}

#[test]
fn truncation_keeps_split_batches_sealed() {
    let (_k, keys) = keyring();
    let key = master(&keys, KINESIS_MANAGED_ALIAS);
    let cfg = config(400, 64);
    // 23 entries in batches of 1 to 4, one or two batches per segment.
    for from in 1..23u64 {
        let dir = TempDir::new().unwrap();
        let log = open(dir.path(), &cfg, &keys);
        for k in 0..10u64 {
            append_secret(&log, 1 + k % 4, k, 0, Some(&key));
        }
        let next = log.next_index();
        assert_eq!(next, 23);
        log.truncate_from(from).unwrap();
        assert_eq!(log.next_index(), from);
        let all = read_all(&log);
        assert_eq!(indexes(&all), (0..from).collect::<Vec<_>>(), "from {from}");
        assert_secrets(&all, |_| 0);
        append_secret(&log, 2, 20, 5, Some(&key));
        drop(log);
        let log = open(dir.path(), &cfg, &keys);
        assert_eq!(
            log.recovery_report(),
            RecoveryReport::default(),
            "from {from}"
        );
        let all = read_all(&log);
        assert_eq!(indexes(&all), (0..from + 2).collect::<Vec<_>>());
        assert_secrets(&all, |i| if i >= from { 5 } else { 0 });
        drop(log);
        let everything: Vec<Vec<u8>> = (0..next)
            .map(|i| secret(i, 0))
            .chain((from..from + 2).map(|i| secret(i, 5)))
            .collect();
        assert_not_on_disk(dir.path(), &everything);
        // every segment with encrypted batches has its sidecar, and no other sidecar is left
        assert_eq!(
            key_files(dir.path()),
            segment_files(dir.path()),
            "from {from}"
        );
    }
}

#[test]
fn each_segment_has_its_own_data_key_and_rotation_reaches_new_segments() {
    let (_k, keys) = keyring();
    let key = master(&keys, KINESIS_MANAGED_ALIAS);
    let dir = TempDir::new().unwrap();
    let cfg = config(300, 64);
    let log = open(dir.path(), &cfg, &keys);
    for k in 0..6u64 {
        append_secret(&log, 2, k, 0, Some(&key));
    }
    let before_rotation = segment_files(dir.path());
    assert!(before_rotation.len() >= 3);
    let sidecars: Vec<Vec<u8>> = before_rotation
        .iter()
        .map(|b| std::fs::read(SegmentPaths::new(dir.path(), *b).key).unwrap())
        .collect();
    for (i, a) in sidecars.iter().enumerate() {
        for b in &sidecars[i + 1..] {
            assert_ne!(a, b, "two segments share a wrapped data key");
        }
    }
    assert_eq!(keys.rotate(KINESIS_MANAGED_ALIAS).unwrap(), 2);
    // The active segment keeps its key; the next segments are wrapped under version 2.
    for k in 6..12u64 {
        append_secret(&log, 2, k, 1, Some(&key));
    }
    let generation = |i: u64| u64::from(i >= 12);
    let after = segment_files(dir.path());
    assert!(after.len() > before_rotation.len());
    for base in &before_rotation {
        assert_eq!(sidecar_version(dir.path(), *base), 1);
    }
    for base in after.iter().filter(|b| !before_rotation.contains(b)) {
        assert_eq!(sidecar_version(dir.path(), *base), 2, "segment {base}");
    }
    assert_secrets(&read_all(&log), generation);
    drop(log);
    let log = open(dir.path(), &cfg, &keys);
    assert_secrets(&read_all(&log), generation);
}

#[test]
fn a_new_master_key_starts_a_new_segment() {
    let (_k, keys) = keyring();
    let first = master(&keys, KINESIS_MANAGED_ALIAS);
    let other = keys.create_key(&["alias/other".to_owned()], "").unwrap();
    let second = master(&keys, "alias/other");
    assert_eq!(second.key_id(), other.key_id);
    let dir = TempDir::new().unwrap();
    let cfg = config(1 << 20, 64);
    let log = open(dir.path(), &cfg, &keys);
    append_secret(&log, 2, 1, 0, Some(&first));
    append_secret(&log, 2, 2, 0, None);
    assert_eq!(segment_files(dir.path()), vec![0]);
    append_secret(&log, 2, 3, 0, Some(&second));
    assert_eq!(segment_files(dir.path()), vec![0, 4]);
    append_secret(&log, 2, 4, 0, Some(&second));
    assert_eq!(segment_files(dir.path()), vec![0, 4]);
    drop(log);
    let log = open(dir.path(), &cfg, &keys);
    let all = read_all(&log);
    assert_eq!(indexes(&all), (0..8).collect::<Vec<_>>());
    assert_secrets(&all, |_| 0);
}

#[test]
fn a_disabled_key_refuses_new_data_keys_without_stopping_the_log() {
    let (_k, keys) = keyring();
    let key = master(&keys, KINESIS_MANAGED_ALIAS);
    let dir = TempDir::new().unwrap();
    let cfg = config(1 << 20, 64);
    let log = open(dir.path(), &cfg, &keys);
    keys.set_enabled(KINESIS_MANAGED_ALIAS, false).unwrap();
    let payload = secret(0, 0);
    let entries = [EntryRef {
        term: 1,
        timestamp_ms: 1,
        payload: &payload,
    }];
    assert!(matches!(
        log.append_with(&entries, Some(&key)),
        Err(StorageError::Key(KeyError::Disabled { .. }))
    ));
    assert!(key_files(dir.path()).is_empty());
    assert_eq!(log.append(&entries).unwrap(), (0, 0));
    keys.set_enabled(KINESIS_MANAGED_ALIAS, true).unwrap();
    assert_eq!(log.append_with(&entries, Some(&key)).unwrap(), (1, 1));
    // Data written under a key stays readable after the key is disabled.
    keys.set_enabled(KINESIS_MANAGED_ALIAS, false).unwrap();
    drop(log);
    let log = open(dir.path(), &cfg, &keys);
    assert_eq!(indexes(&read_all(&log)), vec![0, 1]);
}

#[test]
fn retention_trimming_and_destroy_remove_sidecars() {
    let (_k, keys) = keyring();
    let key = master(&keys, KINESIS_MANAGED_ALIAS);
    let dir = TempDir::new().unwrap();
    let cfg = config(300, 64);
    let log = open(dir.path(), &cfg, &keys);
    for k in 0..12u64 {
        append_secret(&log, 2, k, 0, Some(&key));
    }
    let segments = segment_files(dir.path());
    assert_eq!(key_files(dir.path()), segments);
    let dropped = log.delete_segments_older_than(4).unwrap();
    assert!(dropped > 0);
    assert_eq!(key_files(dir.path()), segment_files(dir.path()));
    assert!(segment_files(dir.path()).len() < segments.len());
    log.trim_before(log.next_index()).unwrap();
    assert_eq!(key_files(dir.path()), segment_files(dir.path()));
    assert_secrets(&read_all(&log), |_| 0);
    // A sidecar left without its segment (a crash in the middle of a removal) goes at
    // the next open.
    let orphan = SegmentPaths::new(dir.path(), 1);
    std::fs::write(&orphan.key, b"left over").unwrap();
    drop(log);
    let log = open(dir.path(), &cfg, &keys);
    assert!(!orphan.key.exists());
    log.destroy().unwrap();
    assert!(!dir.path().exists());
}
