//! A Jepsen-style checker for the history of a Kinesis stream under faults.
//!
//! Pure code, no I/O. The inputs are every write a test attempted and what each node returned
//! when the test read every shard back in full, after the faults healed:
//!
//! - [`Write`]: a unique record id that is also the record's data, its partition key, the
//!   writer that issued it (writes of one writer are given in the order it issued them, each
//!   one waited for before the next) and its [`Outcome`]: `Acked` at a shard and sequence
//!   number, `Failed` (a definite error such as a validation or throttling error: the record
//!   must never appear) or `Unknown` (a timeout or connection error: it may or may not appear).
//! - [`NodeRead`]: for one node read from, each shard's records in the order they were read.
//!
//! [`check`] returns a [`Report`] of every anomaly found (invariants 1-3 of DESIGN.md): lost
//! acknowledged records, duplicates, reordered reads, failed writes that were read, records
//! read at another position than the one acknowledged, nodes whose reads of a shard diverge,
//! records one node never returns although another does, a writer's records of one key out
//! of its order, altered partition keys and records nobody wrote.
//!
//! Sequence numbers are decimal strings of up to 56 digits or more (beyond `u128`); they are
//! compared as big integers: without leading zeros, the longer one is greater, and equal
//! lengths compare digit by digit.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt;

/// One record a writer tried to put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Who issued it; the writes of one writer are listed in the order it issued them.
    pub writer: usize,
    /// Unique over the history; also the record's data.
    pub id: String,
    pub partition_key: String,
    pub outcome: Outcome,
}

/// What the writer learnt about a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at this position: it must be read there, on every node.
    Acked {
        shard_id: String,
        sequence_number: String,
    },
    /// A definite error: it must never be read.
    Failed,
    /// A timeout or a connection error: it may or may not be read.
    Unknown,
}

impl Write {
    pub fn acked(
        writer: usize,
        id: impl Into<String>,
        partition_key: impl Into<String>,
        shard_id: impl Into<String>,
        sequence_number: impl Into<String>,
    ) -> Write {
        Write {
            writer,
            id: id.into(),
            partition_key: partition_key.into(),
            outcome: Outcome::Acked {
                shard_id: shard_id.into(),
                sequence_number: sequence_number.into(),
            },
        }
    }

    pub fn failed(writer: usize, id: impl Into<String>, partition_key: impl Into<String>) -> Write {
        Write {
            writer,
            id: id.into(),
            partition_key: partition_key.into(),
            outcome: Outcome::Failed,
        }
    }

    pub fn unknown(
        writer: usize,
        id: impl Into<String>,
        partition_key: impl Into<String>,
    ) -> Write {
        Write {
            writer,
            id: id.into(),
            partition_key: partition_key.into(),
            outcome: Outcome::Unknown,
        }
    }

    fn acked_at(&self) -> Option<Position> {
        match &self.outcome {
            Outcome::Acked {
                shard_id,
                sequence_number,
            } => Some(Position::new(shard_id, sequence_number)),
            Outcome::Failed | Outcome::Unknown => None,
        }
    }
}

/// One record as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    pub sequence_number: String,
    pub partition_key: String,
    /// The record's data (a write's id), decoded as UTF-8.
    pub data: String,
}

impl ReadRecord {
    pub fn new(
        sequence_number: impl Into<String>,
        partition_key: impl Into<String>,
        data: impl Into<String>,
    ) -> ReadRecord {
        ReadRecord {
            sequence_number: sequence_number.into(),
            partition_key: partition_key.into(),
            data: data.into(),
        }
    }
}

/// Every shard of the stream as read, in full, from one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRead {
    /// A label for reports, e.g. `node-2`.
    pub node: String,
    /// Each shard once, its records in read order.
    pub shards: Vec<ShardRead>,
}

impl NodeRead {
    pub fn new(node: impl Into<String>) -> NodeRead {
        NodeRead {
            node: node.into(),
            shards: Vec::new(),
        }
    }

    /// Adds a shard's records (builder style).
    pub fn shard(mut self, shard_id: impl Into<String>, records: Vec<ReadRecord>) -> NodeRead {
        self.shards.push(ShardRead {
            shard_id: shard_id.into(),
            records,
        });
        self
    }
}

/// One shard's records in read order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRead {
    pub shard_id: String,
    pub records: Vec<ReadRecord>,
}

/// Where a record is: shard and sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    pub shard_id: String,
    pub sequence_number: String,
}

impl Position {
    fn new(shard_id: &str, sequence_number: &str) -> Position {
        Position {
            shard_id: shard_id.to_owned(),
            sequence_number: sequence_number.to_owned(),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.shard_id, self.sequence_number)
    }
}

/// Compares two sequence numbers as unbounded non-negative integers; `None` when either is
/// not a non-empty string of ASCII digits.
pub fn compare_sequence_numbers(a: &str, b: &str) -> Option<Ordering> {
    let a = digits(a)?;
    let b = digits(b)?;
    Some(a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
}

/// The digits without leading zeros (`""` for zero), or `None` if not a decimal number.
fn digits(sequence_number: &str) -> Option<&str> {
    if sequence_number.is_empty() || !sequence_number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(sequence_number.trim_start_matches('0'))
}

/// An acknowledged write that no node returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    pub id: String,
    pub acked: Position,
}

/// A record one node returned more than once (in one shard or in several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicated {
    pub node: String,
    pub id: String,
    /// Every position it was read at, in read order.
    pub read: Vec<Position>,
}

/// Within one node's read of a shard, a sequence number not greater than the one before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reordered {
    pub node: String,
    pub shard_id: String,
    /// The index of the offending record in the shard's read.
    pub index: usize,
    pub previous: String,
    pub sequence_number: String,
}

/// A write that failed definitely and was read anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedThenRead {
    pub node: String,
    pub id: String,
    pub read: Position,
}

/// An acknowledged write read at another shard or sequence number than the one acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrongPosition {
    pub node: String,
    pub id: String,
    pub acked: Position,
    pub read: Position,
}

/// Two nodes' reads of one shard where neither is a prefix of the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergent {
    pub shard_id: String,
    pub node_a: String,
    pub node_b: String,
    /// The first index where they differ, and what each returned there.
    pub index: usize,
    pub record_a: ReadRecord,
    pub record_b: ReadRecord,
}

/// A record that is acknowledged or that another node returned, but that this node did not
/// return (the lost ones are reported only as lost).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeverReadable {
    pub node: String,
    pub id: String,
}

/// Two acknowledged writes of one writer with one partition key in one shard whose sequence
/// numbers do not increase in the order the writer issued them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutOfWriterOrder {
    pub writer: usize,
    pub partition_key: String,
    pub earlier_id: String,
    pub earlier: Position,
    pub later_id: String,
    pub later: Position,
}

/// A record read with another partition key than the one written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlteredKey {
    pub node: String,
    pub id: String,
    pub written: String,
    pub read: String,
}

/// A record whose data is no write's id (altered bytes, or a stray writer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unexpected {
    pub node: String,
    pub read: Position,
    pub data: String,
}

/// A sequence number that is not a decimal number, as acknowledged (`node` is `ack`) or read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub node: String,
    pub at: Position,
}

/// Counts that put the anomalies in proportion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub writes: usize,
    pub acked: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Unknown writes that some node returned.
    pub unknown_read: usize,
    pub nodes: usize,
    /// Records returned, per node, in the order of the reads.
    pub records_read: Vec<usize>,
}

/// Every anomaly in a history; [`Report::is_ok`] when there is none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub summary: Summary,
    pub lost: Vec<Lost>,
    pub duplicated: Vec<Duplicated>,
    /// Within a shard, read order must have strictly increasing sequence numbers.
    pub reordered: Vec<Reordered>,
    pub failed_then_read: Vec<FailedThenRead>,
    pub wrong_position: Vec<WrongPosition>,
    pub divergent: Vec<Divergent>,
    pub never_readable: Vec<NeverReadable>,
    pub out_of_writer_order: Vec<OutOfWriterOrder>,
    pub altered_key: Vec<AlteredKey>,
    pub unexpected: Vec<Unexpected>,
    pub malformed: Vec<Malformed>,
}

impl Report {
    /// No anomaly of any kind.
    pub fn is_ok(&self) -> bool {
        self.anomalies() == 0
    }

    /// The number of anomalies of every kind.
    pub fn anomalies(&self) -> usize {
        self.lost.len()
            + self.duplicated.len()
            + self.reordered.len()
            + self.failed_then_read.len()
            + self.wrong_position.len()
            + self.divergent.len()
            + self.never_readable.len()
            + self.out_of_writer_order.len()
            + self.altered_key.len()
            + self.unexpected.len()
            + self.malformed.len()
    }
}

/// Judges a history: `writes` in the order each writer issued them, `reads` one per node.
///
/// Panics if two writes share an id or a node's read lists a shard twice: those are mistakes
/// of the test, not of the system under test.
pub fn check(writes: &[Write], reads: &[NodeRead]) -> Report {
    let mut report = Report::default();
    let mut by_id: HashMap<&str, &Write> = HashMap::with_capacity(writes.len());
    for write in writes {
        let previous = by_id.insert(write.id.as_str(), write);
        assert!(previous.is_none(), "write id {:?} is not unique", write.id);
    }
    for read in reads {
        let mut shards = HashSet::new();
        for shard in &read.shards {
            assert!(
                shards.insert(shard.shard_id.as_str()),
                "{} lists {} twice",
                read.node,
                shard.shard_id
            );
        }
    }

    check_acknowledgements(writes, &mut report);
    for read in reads {
        check_node_read(read, &by_id, &mut report);
    }
    check_visibility(writes, reads, &mut report);
    check_divergence(reads, &mut report);
    check_writer_order(writes, &mut report);
    report.summary = summarize(writes, reads);
    report
}

fn check_acknowledgements(writes: &[Write], report: &mut Report) {
    for write in writes {
        if let Some(acked) = write.acked_at()
            && digits(&acked.sequence_number).is_none()
        {
            report.malformed.push(Malformed {
                node: "ack".to_owned(),
                at: acked,
            });
        }
    }
}

/// Everything one node's read shows on its own: order, duplicates, failed or unknown data,
/// positions and keys that differ from the acknowledgement.
fn check_node_read(read: &NodeRead, by_id: &HashMap<&str, &Write>, report: &mut Report) {
    let node = &read.node;
    let mut seen: HashMap<&str, Vec<Position>> = HashMap::new();
    let mut seen_order: Vec<&str> = Vec::new();
    for shard in &read.shards {
        let mut previous: Option<&str> = None;
        for (index, record) in shard.records.iter().enumerate() {
            let position = Position::new(&shard.shard_id, &record.sequence_number);
            if digits(&record.sequence_number).is_none() {
                report.malformed.push(Malformed {
                    node: node.clone(),
                    at: position.clone(),
                });
            } else if let Some(previous) = previous
                && compare_sequence_numbers(previous, &record.sequence_number)
                    != Some(Ordering::Less)
            {
                report.reordered.push(Reordered {
                    node: node.clone(),
                    shard_id: shard.shard_id.clone(),
                    index,
                    previous: previous.to_owned(),
                    sequence_number: record.sequence_number.clone(),
                });
            }
            if digits(&record.sequence_number).is_some() {
                previous = Some(&record.sequence_number);
            }

            let Some(write) = by_id.get(record.data.as_str()) else {
                report.unexpected.push(Unexpected {
                    node: node.clone(),
                    read: position,
                    data: record.data.clone(),
                });
                continue;
            };
            if record.partition_key != write.partition_key {
                report.altered_key.push(AlteredKey {
                    node: node.clone(),
                    id: write.id.clone(),
                    written: write.partition_key.clone(),
                    read: record.partition_key.clone(),
                });
            }
            match write.acked_at() {
                Some(acked) if acked != position => report.wrong_position.push(WrongPosition {
                    node: node.clone(),
                    id: write.id.clone(),
                    acked,
                    read: position.clone(),
                }),
                Some(_) | None => {}
            }
            if write.outcome == Outcome::Failed {
                report.failed_then_read.push(FailedThenRead {
                    node: node.clone(),
                    id: write.id.clone(),
                    read: position.clone(),
                });
            }
            let positions = seen.entry(write.id.as_str()).or_default();
            if positions.is_empty() {
                seen_order.push(write.id.as_str());
            }
            positions.push(position);
        }
    }
    for id in seen_order {
        let positions = &seen[id];
        if positions.len() > 1 {
            report.duplicated.push(Duplicated {
                node: node.clone(),
                id: id.to_owned(),
                read: positions.clone(),
            });
        }
    }
}

/// Lost acknowledged writes, and records that some node returns and another does not.
fn check_visibility(writes: &[Write], reads: &[NodeRead], report: &mut Report) {
    let read_ids: Vec<HashSet<&str>> = reads
        .iter()
        .map(|read| {
            read.shards
                .iter()
                .flat_map(|shard| shard.records.iter().map(|record| record.data.as_str()))
                .collect()
        })
        .collect();
    for write in writes {
        let read_by = read_ids
            .iter()
            .filter(|ids| ids.contains(write.id.as_str()))
            .count();
        match &write.outcome {
            Outcome::Failed => continue,
            Outcome::Acked { .. } if read_by == 0 => {
                report.lost.push(Lost {
                    id: write.id.clone(),
                    acked: write.acked_at().expect("acked"),
                });
                continue;
            }
            Outcome::Acked { .. } | Outcome::Unknown => {}
        }
        if read_by == 0 {
            continue;
        }
        for (read, ids) in reads.iter().zip(&read_ids) {
            if !ids.contains(write.id.as_str()) {
                report.never_readable.push(NeverReadable {
                    node: read.node.clone(),
                    id: write.id.clone(),
                });
            }
        }
    }
}

/// For each shard, every pair of nodes: one read must be a prefix of the other.
fn check_divergence(reads: &[NodeRead], report: &mut Report) {
    let mut shard_order: Vec<&str> = Vec::new();
    let mut by_shard: HashMap<&str, Vec<(&str, &[ReadRecord])>> = HashMap::new();
    for read in reads {
        for shard in &read.shards {
            let nodes = by_shard.entry(shard.shard_id.as_str()).or_default();
            if nodes.is_empty() {
                shard_order.push(shard.shard_id.as_str());
            }
            nodes.push((read.node.as_str(), &shard.records));
        }
    }
    for shard_id in shard_order {
        let nodes = &by_shard[shard_id];
        for (a, (node_a, records_a)) in nodes.iter().enumerate() {
            for (node_b, records_b) in &nodes[a + 1..] {
                let difference = records_a
                    .iter()
                    .zip(records_b.iter())
                    .position(|(record_a, record_b)| record_a != record_b);
                if let Some(index) = difference {
                    report.divergent.push(Divergent {
                        shard_id: shard_id.to_owned(),
                        node_a: (*node_a).to_owned(),
                        node_b: (*node_b).to_owned(),
                        index,
                        record_a: records_a[index].clone(),
                        record_b: records_b[index].clone(),
                    });
                }
            }
        }
    }
}

/// A writer waits for each write before the next, so its acknowledged writes of one key in
/// one shard must have increasing sequence numbers. (A key's writes land in another shard
/// only across a reshard, where parent-before-child read order applies instead.)
fn check_writer_order(writes: &[Write], report: &mut Report) {
    let mut last: HashMap<(usize, &str, &str), (&Write, Position)> = HashMap::new();
    for write in writes {
        let Outcome::Acked { shard_id, .. } = &write.outcome else {
            continue;
        };
        let acked = write.acked_at().expect("acked");
        let key = (
            write.writer,
            write.partition_key.as_str(),
            shard_id.as_str(),
        );
        if let Some((earlier, earlier_at)) = last.get(&key)
            && matches!(
                compare_sequence_numbers(&earlier_at.sequence_number, &acked.sequence_number),
                Some(Ordering::Greater | Ordering::Equal)
            )
        {
            report.out_of_writer_order.push(OutOfWriterOrder {
                writer: write.writer,
                partition_key: write.partition_key.clone(),
                earlier_id: earlier.id.clone(),
                earlier: earlier_at.clone(),
                later_id: write.id.clone(),
                later: acked.clone(),
            });
        }
        last.insert(key, (write, acked));
    }
}

fn summarize(writes: &[Write], reads: &[NodeRead]) -> Summary {
    let read_ids: HashSet<&str> = reads
        .iter()
        .flat_map(|read| &read.shards)
        .flat_map(|shard| shard.records.iter().map(|record| record.data.as_str()))
        .collect();
    let count = |predicate: fn(&Outcome) -> bool| {
        writes
            .iter()
            .filter(|write| predicate(&write.outcome))
            .count()
    };
    Summary {
        writes: writes.len(),
        acked: count(|outcome| matches!(outcome, Outcome::Acked { .. })),
        failed: count(|outcome| matches!(outcome, Outcome::Failed)),
        unknown: count(|outcome| matches!(outcome, Outcome::Unknown)),
        unknown_read: writes
            .iter()
            .filter(|write| {
                write.outcome == Outcome::Unknown && read_ids.contains(write.id.as_str())
            })
            .count(),
        nodes: reads.len(),
        records_read: reads
            .iter()
            .map(|read| read.shards.iter().map(|shard| shard.records.len()).sum())
            .collect(),
    }
}

/// At most this many entries of each kind are printed.
const SHOWN_PER_KIND: usize = 20;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        write!(
            f,
            "{} writes ({} acked, {} failed, {} unknown of which {} were read); \
             records read per node: {:?}; ",
            s.writes, s.acked, s.failed, s.unknown, s.unknown_read, s.records_read
        )?;
        if self.is_ok() {
            return writeln!(f, "no anomaly");
        }
        writeln!(f, "{} anomalies", self.anomalies())?;
        section(f, "lost (acknowledged, read by no node)", &self.lost)?;
        section(f, "duplicated", &self.duplicated)?;
        section(
            f,
            "reordered (sequence numbers not increasing in a shard's read)",
            &self.reordered,
        )?;
        section(
            f,
            "failed then read (a definite error, yet read)",
            &self.failed_then_read,
        )?;
        section(
            f,
            "wrong position (read elsewhere than acknowledged)",
            &self.wrong_position,
        )?;
        section(
            f,
            "divergent (neither read is a prefix of the other)",
            &self.divergent,
        )?;
        section(
            f,
            "never readable from a node (acknowledged or read elsewhere)",
            &self.never_readable,
        )?;
        section(
            f,
            "out of writer order (one writer, one key)",
            &self.out_of_writer_order,
        )?;
        section(f, "altered partition key", &self.altered_key)?;
        section(f, "unexpected data (no such write)", &self.unexpected)?;
        section(f, "malformed sequence number", &self.malformed)
    }
}

fn section<T: fmt::Display>(f: &mut fmt::Formatter<'_>, title: &str, items: &[T]) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(f, "{title}: {}", items.len())?;
    for item in items.iter().take(SHOWN_PER_KIND) {
        writeln!(f, "  {item}")?;
    }
    if items.len() > SHOWN_PER_KIND {
        writeln!(f, "  … and {} more", items.len() - SHOWN_PER_KIND)?;
    }
    Ok(())
}

impl fmt::Display for ReadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} (key {:?}) at {}",
            self.data, self.partition_key, self.sequence_number
        )
    }
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} acked at {}", self.id, self.acked)
    }
}

impl fmt::Display for Duplicated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let read: Vec<String> = self.read.iter().map(Position::to_string).collect();
        write!(
            f,
            "{} read {} times from {}: {}",
            self.id,
            self.read.len(),
            self.node,
            read.join(", ")
        )
    }
}

impl fmt::Display for Reordered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} record {}: {} after {}",
            self.node, self.shard_id, self.index, self.sequence_number, self.previous
        )
    }
}

impl fmt::Display for FailedThenRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} read from {} at {}", self.id, self.node, self.read)
    }
}

impl fmt::Display for WrongPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} acked at {}, read from {} at {}",
            self.id, self.acked, self.node, self.read
        )
    }
}

impl fmt::Display for Divergent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} record {}: {} has {}, {} has {}",
            self.shard_id, self.index, self.node_a, self.record_a, self.node_b, self.record_b
        )
    }
}

impl fmt::Display for NeverReadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} not returned by {}", self.id, self.node)
    }
}

impl fmt::Display for OutOfWriterOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "writer {} key {:?}: {} at {} then {} at {}",
            self.writer,
            self.partition_key,
            self.earlier_id,
            self.earlier,
            self.later_id,
            self.later
        )
    }
}

impl fmt::Display for AlteredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} written with key {:?}, read from {} with key {:?}",
            self.id, self.written, self.node, self.read
        )
    }
}

impl fmt::Display for Unexpected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} read from {} at {}",
            self.data, self.node, self.read
        )
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} from {}", self.at, self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S0: &str = "shardId-000000000000";
    const S1: &str = "shardId-000000000001";

    /// A 56-digit sequence number in the shape Sluice uses (`49` then digits), ordered by
    /// `n`; beyond u128.
    fn seq(n: u64) -> String {
        format!("49{n:054}")
    }

    fn rec(n: u64, key: &str, data: &str) -> ReadRecord {
        ReadRecord::new(seq(n), key, data)
    }

    /// Three writes by writer 0 with key `k`, acked at S0 1, 2, 3, and the full read of them.
    fn clean_history() -> (Vec<Write>, Vec<ReadRecord>) {
        let writes = vec![
            Write::acked(0, "a", "k", S0, seq(1)),
            Write::acked(0, "b", "k", S0, seq(2)),
            Write::acked(0, "c", "k", S0, seq(3)),
        ];
        let records = vec![rec(1, "k", "a"), rec(2, "k", "b"), rec(3, "k", "c")];
        (writes, records)
    }

    #[test]
    fn sequence_numbers_compare_as_big_integers() {
        use Ordering::*;
        assert_eq!(compare_sequence_numbers("9", "10"), Some(Less));
        assert_eq!(compare_sequence_numbers("010", "10"), Some(Equal));
        assert_eq!(compare_sequence_numbers("0", "000"), Some(Equal));
        assert_eq!(compare_sequence_numbers(&seq(2), &seq(10)), Some(Less));
        let big = "49".to_owned() + &"9".repeat(54);
        let bigger = "5".to_owned() + &"0".repeat(55);
        assert_eq!(compare_sequence_numbers(&big, &bigger), Some(Less));
        assert_eq!(compare_sequence_numbers(&bigger, &seq(7)), Some(Greater));
        assert_eq!(compare_sequence_numbers("", "1"), None);
        assert_eq!(compare_sequence_numbers("1", "-1"), None);
        assert_eq!(compare_sequence_numbers("1e5", "1"), None);
    }

    #[test]
    fn a_clean_history_on_every_node_is_ok() {
        let (mut writes, records) = clean_history();
        // An unknown write may appear, or not; a failed one that does not appear is fine.
        writes.push(Write::unknown(1, "u1", "x"));
        writes.push(Write::unknown(1, "u2", "x"));
        writes.push(Write::failed(1, "f", "x"));
        let s1 = vec![ReadRecord::new(seq(40), "x", "u1")];
        let reads: Vec<NodeRead> = (1..=3)
            .map(|n| {
                NodeRead::new(format!("node-{n}"))
                    .shard(S0, records.clone())
                    .shard(S1, s1.clone())
            })
            .collect();
        let report = check(&writes, &reads);
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.anomalies(), 0);
        assert_eq!(
            report.summary,
            Summary {
                writes: 6,
                acked: 3,
                failed: 1,
                unknown: 2,
                unknown_read: 1,
                nodes: 3,
                records_read: vec![4, 4, 4],
            }
        );
        assert!(report.to_string().contains("no anomaly"), "{report}");
    }

    #[test]
    fn an_acked_write_read_by_no_node_is_lost() {
        let (writes, mut records) = clean_history();
        records.remove(1);
        let reads = vec![
            NodeRead::new("node-1").shard(S0, records.clone()),
            NodeRead::new("node-2").shard(S0, records),
        ];
        let report = check(&writes, &reads);
        assert_eq!(
            report.lost,
            vec![Lost {
                id: "b".into(),
                acked: Position::new(S0, &seq(2)),
            }]
        );
        // Reported as lost only, not also as never readable from each node.
        assert!(report.never_readable.is_empty());
        assert_eq!(report.anomalies(), 1);
        assert!(!report.is_ok());
        let text = report.to_string();
        assert!(
            text.contains("lost (acknowledged, read by no node): 1"),
            "{text}"
        );
        assert!(
            text.contains(&format!("b acked at {S0}@{}", seq(2))),
            "{text}"
        );
    }

    #[test]
    fn a_record_read_twice_in_one_shard_or_in_two_shards_is_duplicated() {
        let (writes, records) = clean_history();
        let mut twice = records.clone();
        twice.push(rec(4, "k", "a"));
        let reads = vec![NodeRead::new("node-1").shard(S0, twice)];
        let report = check(&writes, &reads);
        assert_eq!(
            report.duplicated,
            vec![Duplicated {
                node: "node-1".into(),
                id: "a".into(),
                read: vec![Position::new(S0, &seq(1)), Position::new(S0, &seq(4))],
            }]
        );
        // The second copy is not where the write was acknowledged, either.
        assert_eq!(report.wrong_position.len(), 1);
        assert_eq!(report.anomalies(), 2, "{report}");

        let reads = vec![
            NodeRead::new("node-1")
                .shard(S0, records.clone())
                .shard(S1, vec![rec(9, "k", "b")]),
        ];
        let report = check(&writes, &reads);
        assert_eq!(
            report.duplicated,
            vec![Duplicated {
                node: "node-1".into(),
                id: "b".into(),
                read: vec![Position::new(S0, &seq(2)), Position::new(S1, &seq(9))],
            }]
        );
        assert_eq!(report.wrong_position.len(), 1);
        assert_eq!(report.wrong_position[0].read, Position::new(S1, &seq(9)));
    }

    #[test]
    fn an_unknown_write_read_twice_is_duplicated() {
        let writes = vec![Write::unknown(0, "u", "k")];
        let reads = vec![NodeRead::new("n").shard(S0, vec![rec(1, "k", "u"), rec(2, "k", "u")])];
        let report = check(&writes, &reads);
        assert_eq!(report.duplicated.len(), 1);
        assert_eq!(report.anomalies(), 1, "{report}");
    }

    #[test]
    fn a_shard_read_whose_sequence_numbers_do_not_strictly_increase_is_reordered() {
        let writes = vec![
            Write::unknown(0, "a", "k"),
            Write::unknown(0, "b", "k"),
            Write::unknown(0, "c", "k"),
            Write::unknown(0, "d", "k"),
        ];
        // 10 > 9 as integers although "10" < "9" as strings: no anomaly there. Then an equal
        // one and a smaller one.
        let records = vec![
            ReadRecord::new("9", "k", "a"),
            ReadRecord::new("10", "k", "b"),
            ReadRecord::new("10", "k", "c"),
            ReadRecord::new("8", "k", "d"),
        ];
        let report = check(&writes, &[NodeRead::new("n").shard(S0, records)]);
        assert_eq!(
            report.reordered,
            vec![
                Reordered {
                    node: "n".into(),
                    shard_id: S0.into(),
                    index: 2,
                    previous: "10".into(),
                    sequence_number: "10".into(),
                },
                Reordered {
                    node: "n".into(),
                    shard_id: S0.into(),
                    index: 3,
                    previous: "10".into(),
                    sequence_number: "8".into(),
                },
            ]
        );
        assert_eq!(report.anomalies(), 2, "{report}");
    }

    #[test]
    fn a_failed_write_that_is_read_is_reported() {
        let (mut writes, mut records) = clean_history();
        writes.push(Write::failed(1, "f", "k"));
        records.push(rec(4, "k", "f"));
        let report = check(&writes, &[NodeRead::new("node-1").shard(S0, records)]);
        assert_eq!(
            report.failed_then_read,
            vec![FailedThenRead {
                node: "node-1".into(),
                id: "f".into(),
                read: Position::new(S0, &seq(4)),
            }]
        );
        assert_eq!(report.anomalies(), 1, "{report}");
    }

    #[test]
    fn an_acked_write_read_at_another_sequence_number_or_shard_is_at_the_wrong_position() {
        let (writes, _) = clean_history();
        let reads = vec![
            NodeRead::new("node-1").shard(S0, vec![rec(1, "k", "a"), rec(5, "k", "b")]),
            NodeRead::new("node-2")
                .shard(S0, vec![rec(1, "k", "a")])
                .shard(S1, vec![rec(2, "k", "b"), rec(3, "k", "c")]),
        ];
        let report = check(&writes, &reads);
        let wrong: Vec<(&str, &str, Position)> = report
            .wrong_position
            .iter()
            .map(|w| (w.node.as_str(), w.id.as_str(), w.read.clone()))
            .collect();
        assert_eq!(
            wrong,
            vec![
                ("node-1", "b", Position::new(S0, &seq(5))),
                ("node-2", "b", Position::new(S1, &seq(2))),
                ("node-2", "c", Position::new(S1, &seq(3))),
            ]
        );
        assert_eq!(report.wrong_position[0].acked, Position::new(S0, &seq(2)));
        // c is missing from node-1 although node-2 returns it.
        assert_eq!(
            report.never_readable,
            vec![NeverReadable {
                node: "node-1".into(),
                id: "c".into(),
            }]
        );
    }

    #[test]
    fn reads_of_a_shard_where_neither_is_a_prefix_of_the_other_diverge() {
        let writes = vec![
            Write::unknown(0, "a", "k"),
            Write::unknown(0, "b", "k"),
            Write::unknown(0, "c", "k"),
        ];
        let full = vec![rec(1, "k", "a"), rec(2, "k", "b"), rec(3, "k", "c")];
        let prefix = vec![rec(1, "k", "a"), rec(2, "k", "b")];
        let forked = vec![rec(1, "k", "a"), rec(2, "k", "c")];
        let reads = vec![
            NodeRead::new("node-1").shard(S0, full),
            NodeRead::new("node-2").shard(S0, prefix),
            NodeRead::new("node-3").shard(S0, forked),
        ];
        let report = check(&writes, &reads);
        // node-2 is a prefix of node-1: not divergent (but c is never readable from it).
        assert_eq!(
            report.divergent,
            vec![
                Divergent {
                    shard_id: S0.into(),
                    node_a: "node-1".into(),
                    node_b: "node-3".into(),
                    index: 1,
                    record_a: rec(2, "k", "b"),
                    record_b: rec(2, "k", "c"),
                },
                Divergent {
                    shard_id: S0.into(),
                    node_a: "node-2".into(),
                    node_b: "node-3".into(),
                    index: 1,
                    record_a: rec(2, "k", "b"),
                    record_b: rec(2, "k", "c"),
                },
            ]
        );
        let never: Vec<(&str, &str)> = report
            .never_readable
            .iter()
            .map(|n| (n.node.as_str(), n.id.as_str()))
            .collect();
        assert_eq!(never, vec![("node-3", "b"), ("node-2", "c")]);
        assert!(report.to_string().contains("divergent"), "{report}");
    }

    #[test]
    fn divergence_includes_a_different_sequence_number_or_key_for_the_same_data() {
        let writes = vec![Write::unknown(0, "a", "k")];
        let reads = vec![
            NodeRead::new("node-1").shard(S0, vec![rec(1, "k", "a")]),
            NodeRead::new("node-2").shard(S0, vec![rec(2, "k", "a")]),
        ];
        let report = check(&writes, &reads);
        assert_eq!(report.divergent.len(), 1);
        assert_eq!(report.divergent[0].index, 0);
        assert_eq!(report.anomalies(), 1, "{report}");
    }

    #[test]
    fn an_acked_record_missing_from_one_node_is_never_readable_from_it() {
        let (writes, records) = clean_history();
        let reads = vec![
            NodeRead::new("node-1").shard(S0, records.clone()),
            NodeRead::new("node-2").shard(S0, records[..2].to_vec()),
            NodeRead::new("node-3"),
        ];
        let report = check(&writes, &reads);
        let never: Vec<(&str, &str)> = report
            .never_readable
            .iter()
            .map(|n| (n.node.as_str(), n.id.as_str()))
            .collect();
        assert_eq!(
            never,
            vec![
                ("node-3", "a"),
                ("node-3", "b"),
                ("node-2", "c"),
                ("node-3", "c"),
            ]
        );
        assert!(report.lost.is_empty());
        assert!(report.divergent.is_empty(), "a prefix is not a divergence");
    }

    #[test]
    fn an_unknown_record_read_by_one_node_only_is_never_readable_from_the_others() {
        let writes = vec![Write::unknown(0, "u", "k")];
        let reads = vec![
            NodeRead::new("node-1").shard(S0, vec![rec(1, "k", "u")]),
            NodeRead::new("node-2").shard(S0, vec![]),
        ];
        let report = check(&writes, &reads);
        assert_eq!(
            report.never_readable,
            vec![NeverReadable {
                node: "node-2".into(),
                id: "u".into(),
            }]
        );
        assert_eq!(report.anomalies(), 1, "{report}");
    }

    #[test]
    fn a_writers_acked_writes_of_one_key_must_increase_in_issue_order() {
        let writes = vec![
            Write::acked(0, "a", "k", S0, seq(5)),
            // Another writer, or another key, is not ordered against writer 0's key k.
            Write::acked(1, "x", "k", S0, seq(3)),
            Write::acked(0, "y", "other", S0, seq(4)),
            // An unknown write between two acked ones is not ordered.
            Write::unknown(0, "u", "k"),
            Write::acked(0, "b", "k", S0, seq(2)),
            // Across a reshard the key lands in another shard: not compared.
            Write::acked(0, "c", "k", S1, seq(1)),
            // Compared with the last acked write of the key in the same shard (b at 2).
            Write::acked(0, "d", "k", S0, seq(2)),
            Write::acked(0, "e", "k", S0, seq(6)),
        ];
        let report = check(&writes, &[]);
        let pairs: Vec<(&str, &str)> = report
            .out_of_writer_order
            .iter()
            .map(|o| (o.earlier_id.as_str(), o.later_id.as_str()))
            .collect();
        assert_eq!(pairs, vec![("a", "b"), ("b", "d")]);
        assert_eq!(report.out_of_writer_order[0].writer, 0);
        assert_eq!(report.out_of_writer_order[0].partition_key, "k");
        assert_eq!(
            report.out_of_writer_order[0].earlier,
            Position::new(S0, &seq(5))
        );
        // Nothing was read, so every acked write is also lost.
        assert_eq!(report.lost.len(), 7);
    }

    #[test]
    fn a_record_read_with_another_partition_key_is_altered() {
        let (writes, mut records) = clean_history();
        records[0].partition_key = "K".into();
        let report = check(&writes, &[NodeRead::new("n").shard(S0, records)]);
        assert_eq!(
            report.altered_key,
            vec![AlteredKey {
                node: "n".into(),
                id: "a".into(),
                written: "k".into(),
                read: "K".into(),
            }]
        );
        assert_eq!(report.anomalies(), 1, "{report}");
    }

    #[test]
    fn data_that_no_write_has_is_unexpected() {
        let (writes, mut records) = clean_history();
        records.push(rec(4, "k", "c\u{fffd}"));
        let report = check(&writes, &[NodeRead::new("n").shard(S0, records)]);
        assert_eq!(
            report.unexpected,
            vec![Unexpected {
                node: "n".into(),
                read: Position::new(S0, &seq(4)),
                data: "c\u{fffd}".into(),
            }]
        );
        assert_eq!(report.anomalies(), 1, "{report}");
    }

    #[test]
    fn a_sequence_number_that_is_not_a_decimal_number_is_malformed() {
        let writes = vec![
            Write::acked(0, "a", "k", S0, "49x"),
            Write::unknown(0, "b", "k"),
            Write::unknown(0, "c", "k"),
        ];
        let records = vec![
            ReadRecord::new("49x", "k", "a"),
            ReadRecord::new("5", "k", "b"),
            ReadRecord::new("", "k", "c"),
        ];
        let report = check(&writes, &[NodeRead::new("n").shard(S0, records)]);
        assert_eq!(
            report.malformed,
            vec![
                Malformed {
                    node: "ack".into(),
                    at: Position::new(S0, "49x"),
                },
                Malformed {
                    node: "n".into(),
                    at: Position::new(S0, "49x"),
                },
                Malformed {
                    node: "n".into(),
                    at: Position::new(S0, ""),
                },
            ]
        );
        // Malformed numbers are not also reported as reordered.
        assert!(report.reordered.is_empty());
        assert_eq!(report.anomalies(), 3, "{report}");
    }

    #[test]
    fn the_report_lists_at_most_twenty_entries_of_a_kind() {
        let writes: Vec<Write> = (0..25)
            .map(|i| Write::acked(0, format!("w{i}"), format!("k{i}"), S0, seq(i)))
            .collect();
        let report = check(&writes, &[NodeRead::new("n")]);
        assert_eq!(report.lost.len(), 25);
        let text = report.to_string();
        assert!(text.contains("25 anomalies"), "{text}");
        assert!(text.contains("w19 acked"), "{text}");
        assert!(!text.contains("w20 acked"), "{text}");
        assert!(text.contains("… and 5 more"), "{text}");
    }
}
