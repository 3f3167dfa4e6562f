//! The routed native write workload: records sent through the Rust client's `Producer`,
//! which batches them per shard and sends each batch straight to its shard's leader over
//! that node's `Produce` stream (no forwarding hop in a cluster).

use super::put::PutPlan;
use super::stats::{Progress, Report, Stats};
use rand::{Rng, RngCore};
use sluice_client::{Client, ClientConfig, ProducerConfig};
use std::sync::Arc;
use tokio::time::Instant;

/// Runs `plan.concurrency` senders, each sending `plan.batch` records and then waiting for
/// their acknowledgements (a round counts as one request in the report).
pub async fn run(
    endpoint: &str,
    stream: &str,
    plan: &PutPlan,
    progress: bool,
) -> anyhow::Result<Report> {
    let client = Client::connect(ClientConfig::new(endpoint)).await?;
    let producer = Arc::new(client.producer(stream, ProducerConfig::default()).await?);
    let mut rng = rand::rng();
    let payloads: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..64)
            .map(|_| {
                let mut data = vec![0u8; plan.record_size];
                rng.fill_bytes(&mut data);
                data.into()
            })
            .collect(),
    );
    let workers = plan.concurrency.max(1);
    let stats = Stats::new(workers);
    let display = Progress::start(&plan.label, &stats, progress);
    let start = Instant::now();
    let deadline = start + super::grpc::plan_duration(plan);
    let per_round = plan.batch.max(1);
    let bytes_per_record = plan.record_size as u64;
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let producer = Arc::clone(&producer);
        let stats = Arc::clone(&stats);
        let payloads = Arc::clone(&payloads);
        tasks.push(tokio::spawn(async move {
            let mut deliveries = Vec::with_capacity(per_round);
            while Instant::now() < deadline {
                let round = Instant::now();
                for i in 0..per_round {
                    let key = format!("pk-{:016x}", rand::rng().random::<u64>());
                    match producer
                        .send(key, payloads[i % payloads.len()].clone())
                        .await
                    {
                        Ok(delivery) => deliveries.push(delivery),
                        Err(error) => stats.error(error.to_string()),
                    }
                }
                let mut ok = 0u64;
                for delivery in deliveries.drain(..) {
                    match delivery.await {
                        Ok(_) => ok += 1,
                        Err(error) => {
                            stats.failed_records(1, [error.kind().unwrap_or("Error")]);
                        }
                    }
                }
                stats.success(worker, round.elapsed(), ok, ok * bytes_per_record);
            }
        }));
    }
    let mut report = super::put::finish(tasks, &stats, display, plan, start).await;
    report.batch = Some(per_round);
    Ok(report)
}
