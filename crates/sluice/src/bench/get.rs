//! The read workload: one reader per shard, GetShardIterator TRIM_HORIZON then GetRecords
//! loops until every shard is caught up (or closed), or a time limit passes.

use super::stats::{Progress, Report, Stats};
use crate::kinesis::Kinesis;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Records asked for per GetRecords call (the Kinesis maximum).
pub const GET_LIMIT: u64 = 10_000;

/// Give up on a shard after this many consecutive failures that are not throttling.
const MAX_CONSECUTIVE_ERRORS: u32 = 10;

#[derive(Deserialize)]
struct GetRecordsOutput<'a> {
    #[serde(rename = "Records", default, borrow)]
    records: Vec<RecordOutput<'a>>,
    #[serde(rename = "NextShardIterator", default)]
    next_iterator: Option<String>,
    #[serde(rename = "MillisBehindLatest", default)]
    millis_behind: Option<u64>,
}

#[derive(Deserialize)]
struct RecordOutput<'a> {
    #[serde(rename = "Data", borrow)]
    data: Cow<'a, str>,
}

/// How one shard's reader ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    CaughtUp,
    TimedOut,
    Failed,
}

/// Reads `stream` from the trim horizon on every shard concurrently.
pub async fn run(
    client: &Kinesis,
    stream: &str,
    record_size: usize,
    limit: Duration,
    progress: bool,
) -> anyhow::Result<Report> {
    let shards = client.list_shards(stream).await?;
    let stats = Stats::new(shards.len());
    let display = Progress::start("get-records", &stats, progress);
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = Vec::with_capacity(shards.len());
    for (worker, shard) in shards.iter().cloned().enumerate() {
        let client = client.clone();
        let stats = Arc::clone(&stats);
        let stream = stream.to_owned();
        tasks.push(tokio::spawn(async move {
            read_shard(&client, &stream, &shard, worker, &stats, deadline).await
        }));
    }
    let mut ends = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(end) => ends.push(end),
            Err(e) => {
                stats.error(format!("reader failed: {e}"));
                ends.push(End::Failed);
            }
        }
    }
    let elapsed = start.elapsed();
    drop(display);
    let mut report = Report::from_stats("get-records", &stats, elapsed);
    report.concurrency = shards.len();
    report.record_size = record_size;
    report.extra = vec![
        ("limit", json!(GET_LIMIT)),
        ("shards", json!(shards.len())),
        ("bytes", json!(report.bytes)),
        ("caught_up", json!(ends.iter().all(|e| *e == End::CaughtUp))),
        (
            "shards_timed_out",
            json!(ends.iter().filter(|e| **e == End::TimedOut).count()),
        ),
        (
            "shards_failed",
            json!(ends.iter().filter(|e| **e == End::Failed).count()),
        ),
    ];
    Ok(report)
}

async fn read_shard(
    client: &Kinesis,
    stream: &str,
    shard: &str,
    worker: usize,
    stats: &Stats,
    deadline: Instant,
) -> End {
    let mut consecutive_errors = 0;
    let mut iterator = loop {
        if Instant::now() >= deadline {
            return End::TimedOut;
        }
        match client.trim_horizon_iterator(stream, shard).await {
            Ok(iterator) => break iterator,
            Err(e) => {
                stats.error(e.label());
                consecutive_errors += 1;
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                    return End::Failed;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    consecutive_errors = 0;
    let mut decoded = Vec::new();
    loop {
        if Instant::now() >= deadline {
            return End::TimedOut;
        }
        let body = json!({ "ShardIterator": iterator, "Limit": GET_LIMIT }).to_string();
        let sent = Instant::now();
        let response = match client.call("GetRecords", body.into()).await {
            Ok(response) => response,
            Err(e) => {
                stats.error(e.label());
                match e.api_kind() {
                    // Other servers may throttle reads per shard; wait and retry.
                    Some("ProvisionedThroughputExceededException" | "LimitExceededException") => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    // The iterator is gone; the position cannot be resumed exactly.
                    Some("ExpiredIteratorException" | "ResourceNotFoundException") => {
                        return End::Failed;
                    }
                    _ => {
                        consecutive_errors += 1;
                        if consecutive_errors >= MAX_CONSECUTIVE_ERRORS {
                            return End::Failed;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                continue;
            }
        };
        let latency = sent.elapsed();
        consecutive_errors = 0;
        let output: GetRecordsOutput<'_> = match serde_json::from_slice(&response) {
            Ok(output) => output,
            Err(e) => {
                stats.error(format!("bad response: {e}"));
                return End::Failed;
            }
        };
        let mut bytes = 0u64;
        let mut bad_data = 0u64;
        for record in &output.records {
            decoded.clear();
            match STANDARD.decode_vec(record.data.as_bytes(), &mut decoded) {
                Ok(()) => bytes += decoded.len() as u64,
                Err(_) => bad_data += 1,
            }
        }
        if bad_data > 0 {
            stats.failed_records(
                bad_data,
                std::iter::repeat_n("invalid base64 Data", bad_data as usize),
            );
        }
        let count = output.records.len() as u64;
        stats.success(worker, latency, count - bad_data, bytes);
        match output.next_iterator {
            // A closed shard read to its end.
            None => return End::CaughtUp,
            Some(next) => iterator = next,
        }
        if count == 0 && output.millis_behind.unwrap_or(0) == 0 {
            return End::CaughtUp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_records_output_is_read() {
        let body = br#"{"Records":[{"SequenceNumber":"1","Data":"aGVsbG8=","PartitionKey":"k","ApproximateArrivalTimestamp":1.5},{"Data":"YQ\/b","PartitionKey":"k"}],"NextShardIterator":"it","MillisBehindLatest":0}"#;
        let output: GetRecordsOutput<'_> = serde_json::from_slice(body).unwrap();
        assert_eq!(output.records.len(), 2);
        assert_eq!(
            STANDARD.decode(output.records[0].data.as_bytes()).unwrap(),
            b"hello"
        );
        assert_eq!(output.records[1].data, "YQ/b");
        assert_eq!(output.next_iterator.as_deref(), Some("it"));
        assert_eq!(output.millis_behind, Some(0));
        let closed: GetRecordsOutput<'_> =
            serde_json::from_slice(br#"{"Records":[],"NextShardIterator":null}"#).unwrap();
        assert!(closed.next_iterator.is_none());
    }
}
