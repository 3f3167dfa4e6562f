//! Model-based test: random sequences of append, sync, read, timestamp lookup, reopen,
//! truncation, retention and trimming, checked against an in-memory model of the log.
//! Appends are plaintext or encrypted under one of two master keys, at random.

use super::*;
use crate::keyring::{KINESIS_MANAGED_ALIAS, LocalKeyring};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        sizes: Vec<usize>,
        ts_step: u64,
        /// 0: plaintext; 1 or 2: encrypted under that master key.
        key: usize,
    },
    Sync,
    Read {
        from_back: u64,
        len: u64,
        max_entries: usize,
        max_bytes: usize,
    },
    IndexAtTimestamp {
        ts_back: u64,
    },
    Reopen,
    TruncateFrom {
        back: u64,
    },
    Retention {
        cutoff_back: u64,
    },
    TrimBefore {
        back: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(0usize..200, 1..8), 0u64..3, 0usize..3)
            .prop_map(|(sizes, ts_step, key)| Op::Append { sizes, ts_step, key }),
        1 => Just(Op::Sync),
        3 => (0u64..40, 0u64..40, 0usize..20, 0usize..600).prop_map(|(from_back, len, max_entries, max_bytes)| Op::Read {
            from_back,
            len,
            max_entries,
            max_bytes,
        }),
        2 => (0u64..30).prop_map(|ts_back| Op::IndexAtTimestamp { ts_back }),
        1 => Just(Op::Reopen),
        1 => (0u64..30).prop_map(|back| Op::TruncateFrom { back }),
        1 => (0u64..20).prop_map(|cutoff_back| Op::Retention { cutoff_back }),
        1 => (0u64..40).prop_map(|back| Op::TrimBefore { back }),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelEntry {
    term: u64,
    ts: u64,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Model {
    first: u64,
    entries: Vec<ModelEntry>,
    /// Timestamp of the newest entry ever appended, so appends never go backwards.
    clock: u64,
    salt: u64,
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn get(&self, index: u64) -> &ModelEntry {
        &self.entries[usize::try_from(index - self.first).unwrap()]
    }

    /// Drops entries below `new_first`.
    fn trim(&mut self, new_first: u64) {
        let drop = usize::try_from(new_first - self.first).unwrap();
        self.entries.drain(..drop);
        self.first = new_first;
    }
}

struct Harness {
    dir: TempDir,
    cfg: LogConfig,
    keys: Arc<LocalKeyring>,
    /// The two master keys appends may use.
    masters: [EncryptionKey; 2],
    log: Option<Log>,
    model: Model,
}

impl Harness {
    fn log(&self) -> &Log {
        self.log.as_ref().unwrap()
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append {
                sizes,
                ts_step,
                key,
            } => {
                self.model.clock += ts_step;
                self.model.salt += 1;
                let first = self.model.next();
                let new: Vec<ModelEntry> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, size)| {
                        let seed = first + i as u64 + self.model.salt * 1000;
                        ModelEntry {
                            term: self.model.salt,
                            ts: self.model.clock,
                            payload: (0..*size)
                                .map(|b| ((seed + b as u64) % 256) as u8)
                                .collect(),
                        }
                    })
                    .collect();
                let refs: Vec<EntryRef<'_>> = new
                    .iter()
                    .map(|e| EntryRef {
                        term: e.term,
                        timestamp_ms: e.ts,
                        payload: &e.payload,
                    })
                    .collect();
                let master = key.checked_sub(1).map(|k| &self.masters[k]);
                let range = self.log().append_with(&refs, master).unwrap();
                assert_eq!(range, (first, first + new.len() as u64 - 1));
                self.model.entries.extend(new);
            }
            Op::Sync => {
                let next = self.model.next();
                if next > 0 {
                    self.log().sync(next - 1).unwrap();
                    assert_eq!(self.log().durable_index(), Some(next - 1));
                }
            }
            Op::Read {
                from_back,
                len,
                max_entries,
                max_bytes,
            } => {
                let from = self.model.next().saturating_sub(*from_back);
                let upto = from + len;
                let got = self.log().read(from, upto, *max_entries, *max_bytes);
                if from < self.model.first {
                    assert!(
                        matches!(got, Err(StorageError::Trimmed { first_index }) if first_index == self.model.first)
                    );
                    return;
                }
                let got = got.unwrap();
                let mut expected = Vec::new();
                let mut bytes = 0;
                for index in from..upto.min(self.model.next()) {
                    let e = self.model.get(index);
                    if expected.len() >= *max_entries
                        || (!expected.is_empty() && bytes + e.payload.len() > *max_bytes)
                    {
                        break;
                    }
                    bytes += e.payload.len();
                    expected.push(Entry {
                        index,
                        term: e.term,
                        timestamp_ms: e.ts,
                        payload: Bytes::from(e.payload.clone()),
                    });
                }
                assert_eq!(got, expected);
            }
            Op::IndexAtTimestamp { ts_back } => {
                let ts = (self.model.clock + 2).saturating_sub(*ts_back);
                let expected = (self.model.first..self.model.next())
                    .find(|i| self.model.get(*i).ts >= ts)
                    .unwrap_or(self.model.next());
                assert_eq!(
                    self.log().index_at_timestamp(ts).unwrap(),
                    expected,
                    "ts {ts}"
                );
            }
            Op::Reopen => {
                drop(self.log.take());
                let log = Log::open_with_keys(
                    self.dir.path(),
                    self.cfg.clone(),
                    Arc::clone(&self.keys) as Arc<dyn KeyProvider>,
                )
                .unwrap();
                assert_eq!(log.recovery_report(), RecoveryReport::default());
                assert_eq!(log.durable_index(), self.model.next().checked_sub(1));
                self.log = Some(log);
            }
            Op::TruncateFrom { back } => {
                let from = self.model.next().saturating_sub(*back);
                let result = self.log().truncate_from(from);
                if from < self.model.first {
                    assert!(matches!(result, Err(StorageError::Trimmed { .. })));
                    return;
                }
                result.unwrap();
                if from == self.model.next() {
                    return; // nothing to remove: a no-op
                }
                let keep = usize::try_from(from - self.model.first).unwrap();
                self.model.entries.truncate(keep);
                assert_eq!(self.log().durable_index(), self.model.next().checked_sub(1));
            }
            Op::Retention { cutoff_back } => {
                let cutoff = (self.model.clock + 1).saturating_sub(*cutoff_back);
                let sealed: Vec<(u64, u64)> = self
                    .log()
                    .state
                    .read()
                    .sealed
                    .iter()
                    .map(|s| (s.base, s.end))
                    .collect();
                let mut new_first = self.model.first;
                for (base, end) in sealed {
                    assert_eq!(base, new_first);
                    if (base..end).any(|i| self.model.get(i).ts >= cutoff) {
                        break;
                    }
                    new_first = end;
                }
                let dropped = self.log().delete_segments_older_than(cutoff).unwrap();
                assert_eq!(dropped, new_first - self.model.first);
                self.model.trim(new_first);
            }
            Op::TrimBefore { back } => {
                let before = self.model.next().saturating_sub(*back);
                let sealed: Vec<(u64, u64)> = self
                    .log()
                    .state
                    .read()
                    .sealed
                    .iter()
                    .map(|s| (s.base, s.end))
                    .collect();
                let new_first = sealed
                    .iter()
                    .take_while(|(_, end)| *end <= before)
                    .last()
                    .map_or(self.model.first, |(_, end)| *end);
                let dropped = self.log().trim_before(before).unwrap();
                assert_eq!(dropped, new_first - self.model.first);
                self.model.trim(new_first);
            }
        }
    }

    fn check(&self) {
        let log = self.log();
        assert_eq!(log.next_index(), self.model.next());
        assert_eq!(log.first_index(), self.model.first);
        if let Some(last) = self.model.entries.last() {
            assert_eq!(log.last_entry_timestamp(), Some(last.ts));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        ops in prop::collection::vec(op(), 1..60),
        segment_bytes in prop::sample::select(vec![200u64, 600, 4096]),
        index_interval_bytes in prop::sample::select(vec![0u32, 64, 300]),
    ) {
        let cfg = config(segment_bytes, index_interval_bytes);
        let dir = TempDir::new().unwrap();
        let keys = Arc::new(LocalKeyring::ephemeral().unwrap());
        keys.create_key(&["alias/second".to_owned()], "").unwrap();
        let masters = [
            keys.resolve(KINESIS_MANAGED_ALIAS).unwrap(),
            keys.resolve("alias/second").unwrap(),
        ];
        let log = Log::open_with_keys(dir.path(), cfg.clone(), Arc::clone(&keys) as Arc<dyn KeyProvider>).unwrap();
        let mut harness = Harness { dir, cfg, keys, masters, log: Some(log), model: Model::default() };
        for op in &ops {
            harness.apply(op);
            harness.check();
        }
        // Whatever happened, a final reopen reads back exactly the model.
        harness.apply(&Op::Reopen);
        harness.check();
        let all = harness.log().read(harness.model.first, u64::MAX, usize::MAX, usize::MAX).unwrap();
        prop_assert_eq!(all.len(), harness.model.entries.len());
        for (entry, model) in all.iter().zip(&harness.model.entries) {
            prop_assert_eq!(&entry.payload[..], &model.payload[..]);
            prop_assert_eq!(entry.timestamp_ms, model.ts);
            prop_assert_eq!(entry.term, model.term);
        }
    }
}
