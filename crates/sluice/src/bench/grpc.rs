//! The native write workload: PutRecords batches over gRPC (`sluice.v1.Data`), the same
//! records and reports as the Kinesis JSON workload, so the two APIs compare directly.

use super::put::PutPlan;
use super::stats::{Progress, Report, Stats};
use crate::grpc::Signer;
use rand::{Rng, RngCore};
use sluice_proto::v1 as pb;
use sluice_proto::v1::data_client::DataClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;
use tonic::transport::Channel;

/// 64 random payloads of `size` bytes, reused round-robin by the native write workloads.
pub(super) fn payloads(size: usize) -> Vec<bytes::Bytes> {
    let mut rng = rand::rng();
    (0..64)
        .map(|_| {
            let mut data = vec![0u8; size];
            rng.fill_bytes(&mut data);
            data.into()
        })
        .collect()
}

/// Requests prepared once and reused round-robin (their payloads are shared `Bytes`).
fn requests(stream: &str, plan: &PutPlan) -> Vec<pb::PutRecordsRequest> {
    let mut rng = rand::rng();
    let payloads = payloads(plan.record_size);
    (0..16)
        .map(|_| pb::PutRecordsRequest {
            stream_name: stream.to_owned(),
            records: (0..plan.batch)
                .map(|i| pb::PutRecordsRequestEntry {
                    partition_key: format!("pk-{:016x}", rng.random::<u64>()),
                    explicit_hash_key: None,
                    data: payloads[i % payloads.len()].clone(),
                })
                .collect(),
        })
        .collect()
}

/// Runs PutRecords over gRPC with `plan.concurrency` callers sharing `channels` HTTP/2
/// connections.
pub async fn run(
    endpoint: &str,
    stream: &str,
    plan: &PutPlan,
    progress: bool,
) -> anyhow::Result<Report> {
    let workers = plan.concurrency.max(1);
    let connections = workers.clamp(1, 4);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel: Channel = Channel::from_shared(endpoint.to_owned())?.connect().await?;
        channels.push(channel);
    }
    let signer = Signer::from_env();
    let requests = Arc::new(requests(stream, plan));
    let stats = Stats::new(workers);
    let next_ticket = Arc::new(AtomicU64::new(0));
    let display = Progress::start(&plan.label, &stats, progress);
    let start = Instant::now();
    let deadline = start + plan_duration(plan);
    let records_per_request = plan.batch as u64;
    let bytes_per_record = plan.record_size as u64;
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let mut client =
            DataClient::with_interceptor(channels[worker % connections].clone(), signer.clone())
                .max_encoding_message_size(16 << 20);
        let stats = Arc::clone(&stats);
        let requests = Arc::clone(&requests);
        let next_ticket = Arc::clone(&next_ticket);
        tasks.push(tokio::spawn(async move {
            loop {
                let ticket = next_ticket.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let request = requests[(ticket % requests.len() as u64) as usize].clone();
                match client.put_records(request).await {
                    Ok(response) => {
                        let response = response.into_inner();
                        let failed =
                            u64::from(response.failed_record_count).min(records_per_request);
                        if failed > 0 {
                            let codes: Vec<String> = response
                                .records
                                .iter()
                                .filter_map(|r| match &r.result {
                                    Some(pb::put_records_result_entry::Result::Error(e)) => {
                                        Some(e.error_code.clone())
                                    }
                                    _ => None,
                                })
                                .collect();
                            stats.failed_records(failed, codes.iter().map(String::as_str));
                        }
                        let ok = records_per_request - failed;
                        stats.success(worker, now.elapsed(), ok, ok * bytes_per_record);
                    }
                    Err(status) => stats.error(format!("grpc {:?}", status.code())),
                }
            }
        }));
    }
    let mut report = super::put::finish(tasks, &stats, display, plan, start).await;
    report.batch = Some(plan.batch);
    Ok(report)
}

pub(super) fn plan_duration(plan: &PutPlan) -> std::time::Duration {
    match plan.stop {
        super::put::Stop::After(duration) | super::put::Stop::Requests(_, duration) => duration,
    }
}
