//! The routed native write workload: records sent through the Rust client's `Producer`,
//! which batches them per shard and sends each batch straight to its shard's leader over
//! that node's `Produce` stream (no forwarding hop in a cluster).
//!
//! As a producer application does, the senders keep sending without waiting for
//! acknowledgements (the producer's buffer holds them back when it is full); each record's
//! latency runs from its send (or, with `--rate`, its scheduled send) to its
//! acknowledgement, and throughput counts acknowledged records. The report's requests are
//! groups of `--batch` acknowledgements.

use super::put::PutPlan;
use super::stats::{Progress, Report, Stats};
use rand::Rng;
use sluice_client::{Client, ClientConfig, Delivery, ProducerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Runs `plan.concurrency` senders until the duration is over, then waits for the records
/// still in flight.
pub async fn run(
    endpoint: &str,
    stream: &str,
    plan: &PutPlan,
    progress: bool,
) -> anyhow::Result<Report> {
    let client = Client::connect(ClientConfig::new(endpoint)).await?;
    let producer = Arc::new(client.producer(stream, ProducerConfig::default()).await?);
    let payloads = Arc::new(super::grpc::payloads(plan.record_size));
    let senders = plan.concurrency.max(1);
    let stats = Stats::new(senders);
    let display = Progress::start(&plan.label, &stats, progress);
    let start = Instant::now();
    let deadline = start + super::grpc::plan_duration(plan);
    let group = plan.batch.max(1);
    // With --rate (records/s for this workload), each sender sends its share on a schedule.
    let interval = plan
        .rate
        .map(|rate| Duration::from_secs_f64(senders as f64 / rate));
    let mut tasks = Vec::with_capacity(senders);
    for worker in 0..senders {
        let producer = Arc::clone(&producer);
        let stats = Arc::clone(&stats);
        let payloads = Arc::clone(&payloads);
        let record_size = plan.record_size as u64;
        tasks.push(tokio::spawn(async move {
            let (outcomes, pending) = mpsc::unbounded_channel::<(Instant, Delivery)>();
            let waiter = tokio::spawn(acknowledged(
                pending,
                Arc::clone(&stats),
                worker,
                group,
                record_size,
            ));
            let mut sent = 0u32;
            loop {
                let mut at = Instant::now();
                if let Some(interval) = interval {
                    let scheduled = start + interval * sent;
                    if scheduled > at {
                        tokio::time::sleep_until(scheduled).await;
                    }
                    at = scheduled;
                }
                if at >= deadline {
                    break;
                }
                let key = format!("pk-{:016x}", rand::rng().random::<u64>());
                let data = payloads[sent as usize % payloads.len()].clone();
                match producer.send(key, data).await {
                    Ok(delivery) => {
                        let _ = outcomes.send((at, delivery));
                    }
                    Err(error) => stats.error(error.to_string()),
                }
                sent = sent.wrapping_add(1);
            }
            drop(outcomes);
            if let Err(error) = waiter.await {
                stats.error(format!("waiter failed: {error}"));
            }
        }));
    }
    let mut report = super::put::finish(tasks, &stats, display, plan, start).await;
    report.batch = Some(group);
    Ok(report)
}

/// Awaits one sender's deliveries in order, recording each acknowledged record's latency
/// in groups of `group`.
async fn acknowledged(
    mut pending: mpsc::UnboundedReceiver<(Instant, Delivery)>,
    stats: Arc<Stats>,
    worker: usize,
    group: usize,
    record_size: u64,
) {
    let mut latencies = Vec::with_capacity(group);
    while let Some((sent, delivery)) = pending.recv().await {
        match delivery.await {
            Ok(_) => {
                latencies.push(sent.elapsed());
                if latencies.len() == group {
                    stats.deliveries(worker, &latencies, group as u64 * record_size);
                    latencies.clear();
                }
            }
            Err(error) => stats.failed_records(1, [error.kind().unwrap_or("Error")]),
        }
    }
    if !latencies.is_empty() {
        stats.deliveries(worker, &latencies, latencies.len() as u64 * record_size);
    }
}
