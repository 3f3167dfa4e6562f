//! Any bytes appended after valid batches in a segment file: opening the log must cut the
//! garbage (or report corruption), keep every valid batch, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_storage::{EntryRef, Log, LogConfig};

fuzz_target!(|garbage: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let config = LogConfig {
        fsync: false,
        ..LogConfig::default()
    };
    {
        let Ok(log) = Log::open(dir.path(), config.clone()) else {
            return;
        };
        for i in 0..3u64 {
            let payload = i.to_be_bytes();
            let entries = [EntryRef { term: 1, timestamp_ms: i, payload: &payload }];
            if log.append(&entries).is_err() {
                return;
            }
        }
    }
    let Ok(Some(segment)) = std::fs::read_dir(dir.path()).map(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
    }) else {
        return;
    };
    let Ok(mut bytes) = std::fs::read(&segment) else {
        return;
    };
    bytes.extend_from_slice(garbage);
    if std::fs::write(&segment, &bytes).is_err() {
        return;
    }
    if let Ok(log) = Log::open(dir.path(), config) {
        assert!(log.next_index() >= 3, "valid batches survive garbage after them");
        let entries = log.read(0, log.next_index(), 100, 1 << 20);
        if let Ok(entries) = entries {
            assert!(entries.len() >= 3);
        }
    }
});
