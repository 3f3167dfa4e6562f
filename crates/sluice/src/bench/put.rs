//! The write workloads: PutRecords batches and single PutRecord calls, closed-loop (each
//! worker sends its next request when the previous one answers) or paced at a target rate.

use super::stats::{Progress, Report, Stats};
use crate::kinesis::Kinesis;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use rand::{Rng, RngCore};
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Memory budget for pre-built request bodies of one workload.
const BODY_BUDGET: usize = 64 << 20;

/// When a phase ends.
#[derive(Clone, Copy)]
pub enum Stop {
    /// Start no request after this long.
    After(Duration),
    /// Send exactly this many requests, but start none after the time limit.
    Requests(u64, Duration),
}

/// One write phase.
pub struct PutPlan {
    /// Label in reports (`put-records`, `put-records@50%`, `backlog`, ...).
    pub label: String,
    /// PutRecord (one record per request) instead of PutRecords.
    pub single: bool,
    pub record_size: usize,
    /// Records per PutRecords request (ignored for PutRecord).
    pub batch: usize,
    pub concurrency: usize,
    pub stop: Stop,
    /// Target requests/s; latency is then measured from each request's scheduled send time.
    pub rate: Option<f64>,
}

/// Request bodies built once and reused round-robin, so the load generator spends its CPU on
/// sending rather than on encoding.
pub struct Bodies {
    bodies: Vec<Bytes>,
}

impl Bodies {
    /// Random payloads of `record_size` bytes (base64-encoded once) under random partition
    /// keys, so records spread over every shard.
    pub fn build(stream: &str, single: bool, record_size: usize, batch: usize) -> Self {
        let mut rng = rand::rng();
        let encoded_len = record_size.div_ceil(3) * 4;
        let per_request = if single { 1 } else { batch.max(1) };
        let distinct_payloads = (BODY_BUDGET / 4 / encoded_len.max(1)).clamp(1, 256);
        let payloads: Vec<String> = (0..distinct_payloads)
            .map(|_| {
                let mut data = vec![0u8; record_size];
                rng.fill_bytes(&mut data);
                STANDARD.encode(&data)
            })
            .collect();
        let body_len = per_request * (encoded_len + 64) + stream.len() + 64;
        let count = if single {
            1024
        } else {
            (BODY_BUDGET / body_len.max(1)).clamp(4, 64)
        };
        let stream_json = serde_json::Value::from(stream).to_string();
        let mut next_payload = 0usize;
        let bodies = (0..count)
            .map(|_| {
                let mut body = String::with_capacity(body_len);
                body.push_str("{\"StreamName\":");
                body.push_str(&stream_json);
                if single {
                    body.push(',');
                    push_record(&mut body, &payloads[next_payload], rng.random());
                    next_payload = (next_payload + 1) % payloads.len();
                } else {
                    body.push_str(",\"Records\":[");
                    for i in 0..per_request {
                        if i > 0 {
                            body.push(',');
                        }
                        body.push('{');
                        push_record(&mut body, &payloads[next_payload], rng.random());
                        body.push('}');
                        next_payload = (next_payload + 1) % payloads.len();
                    }
                    body.push(']');
                }
                body.push('}');
                Bytes::from(body)
            })
            .collect();
        Self { bodies }
    }

    fn get(&self, ticket: u64) -> Bytes {
        self.bodies[(ticket % self.bodies.len() as u64) as usize].clone()
    }
}

/// Appends the members `"Data":"...","PartitionKey":"pk-..."` of one record.
fn push_record(body: &mut String, data: &str, key: u64) {
    body.push_str("\"Data\":\"");
    body.push_str(data);
    body.push_str("\",\"PartitionKey\":\"pk-");
    body.push_str(&format!("{key:016x}"));
    body.push('"');
}

#[derive(Deserialize)]
struct PutRecordsCount {
    #[serde(rename = "FailedRecordCount", default)]
    failed: u64,
}

#[derive(Deserialize)]
struct PutRecordsEntries<'a> {
    #[serde(rename = "Records", default, borrow)]
    records: Vec<PutRecordsEntry<'a>>,
}

#[derive(Deserialize)]
struct PutRecordsEntry<'a> {
    #[serde(rename = "ErrorCode", default, borrow)]
    error_code: Option<Cow<'a, str>>,
}

/// Runs one write phase and returns its report.
pub async fn run(client: &Kinesis, plan: &PutPlan, bodies: Arc<Bodies>, progress: bool) -> Report {
    let workers = plan.concurrency.max(1);
    let stats = Stats::new(workers);
    let (limit, max_requests) = match plan.stop {
        Stop::After(duration) => (duration, None),
        Stop::Requests(count, duration) => (duration, Some(count)),
    };
    let records_per_request = if plan.single { 1 } else { plan.batch as u64 };
    let bytes_per_record = plan.record_size as u64;
    let op = if plan.single {
        "PutRecord"
    } else {
        "PutRecords"
    };
    let next_ticket = Arc::new(AtomicU64::new(0));
    let display = Progress::start(&plan.label, &stats, progress);
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let client = client.clone();
        let stats = Arc::clone(&stats);
        let bodies = Arc::clone(&bodies);
        let next_ticket = Arc::clone(&next_ticket);
        let rate = plan.rate;
        let single = plan.single;
        tasks.push(tokio::spawn(async move {
            loop {
                let ticket = next_ticket.fetch_add(1, Ordering::Relaxed);
                if max_requests.is_some_and(|max| ticket >= max) {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let scheduled = match rate {
                    Some(rate) => {
                        let at = start + Duration::from_secs_f64(ticket as f64 / rate);
                        if at >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(at).await;
                        at
                    }
                    None => now,
                };
                match client.call(op, bodies.get(ticket)).await {
                    Ok(response) => {
                        let latency = scheduled.elapsed();
                        let failed = if single {
                            0
                        } else {
                            match failed_records(&response) {
                                Ok((count, codes)) => {
                                    if count > 0 {
                                        stats.failed_records(
                                            count,
                                            codes.iter().map(String::as_str),
                                        );
                                    }
                                    count.min(records_per_request)
                                }
                                Err(e) => {
                                    stats.error(format!("bad response: {e}"));
                                    continue;
                                }
                            }
                        };
                        let ok = records_per_request - failed;
                        stats.success(worker, latency, ok, ok * bytes_per_record);
                    }
                    Err(e) => stats.error(e.label()),
                }
            }
        }));
    }
    let mut report = finish(tasks, &stats, display, plan, start).await;
    report.batch = Some(records_per_request as usize);
    report.target_rate = plan.rate;
    report
}

/// Waits for a write workload's workers and reports on it (`plan.concurrency` workers,
/// records of `plan.record_size`).
pub(super) async fn finish(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stats: &Arc<Stats>,
    display: Progress,
    plan: &PutPlan,
    started: Instant,
) -> Report {
    for task in tasks {
        if let Err(e) = task.await {
            stats.error(format!("worker failed: {e}"));
        }
    }
    let elapsed = started.elapsed();
    drop(display);
    let mut report = Report::from_stats(&plan.label, stats, elapsed);
    report.concurrency = plan.concurrency.max(1);
    report.record_size = plan.record_size;
    report
}

/// FailedRecordCount and, when it is not zero, the ErrorCode of each failed entry.
fn failed_records(response: &[u8]) -> Result<(u64, Vec<String>), serde_json::Error> {
    let count: PutRecordsCount = serde_json::from_slice(response)?;
    if count.failed == 0 {
        return Ok((0, Vec::new()));
    }
    let entries: PutRecordsEntries<'_> = serde_json::from_slice(response)?;
    let codes = entries
        .records
        .into_iter()
        .filter_map(|e| e.error_code.map(Cow::into_owned))
        .collect();
    Ok((count.failed, codes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_bodies_are_valid_put_records_input() {
        let bodies = Bodies::build("s\"x", false, 10, 3);
        let value: serde_json::Value = serde_json::from_slice(&bodies.get(0)).unwrap();
        assert_eq!(value["StreamName"], "s\"x");
        let records = value["Records"].as_array().unwrap();
        assert_eq!(records.len(), 3);
        for record in records {
            let data = STANDARD.decode(record["Data"].as_str().unwrap()).unwrap();
            assert_eq!(data.len(), 10);
            assert!(record["PartitionKey"].as_str().unwrap().starts_with("pk-"));
        }
    }

    #[test]
    fn single_bodies_are_valid_put_record_input() {
        let bodies = Bodies::build("bench", true, 100, 500);
        let a: serde_json::Value = serde_json::from_slice(&bodies.get(0)).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&bodies.get(1)).unwrap();
        assert_eq!(
            STANDARD.decode(a["Data"].as_str().unwrap()).unwrap().len(),
            100
        );
        assert_ne!(a["PartitionKey"], b["PartitionKey"]);
    }

    #[test]
    fn failed_record_codes_are_read() {
        let ok = br#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1","ShardId":"shardId-000000000000"}]}"#;
        assert_eq!(failed_records(ok).unwrap(), (0, vec![]));
        let bad = br#"{"FailedRecordCount":1,"Records":[{"SequenceNumber":"1","ShardId":"s"},{"ErrorCode":"InternalFailure","ErrorMessage":"x"}]}"#;
        assert_eq!(
            failed_records(bad).unwrap(),
            (1, vec!["InternalFailure".to_owned()])
        );
    }
}
