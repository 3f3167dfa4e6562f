//! `sluice tail`: follows every shard of a stream with the client's `Consumer` (gRPC
//! ReadShard), or with `--kinesis-endpoint` with GetRecords, and prints records as they
//! are committed. A shard's children are read once
//! all of their parents are read to the end, so records of a partition key come out in
//! order across splits and merges.

use crate::json_api::{self, JsonConsumer};
use anyhow::Context;
use base64::Engine;
use serde_json::json;
use sluice_client::Position;
use sluice_proto::v1 as pb;
use std::io::Write;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum From {
    /// The oldest record still kept.
    TrimHorizon,
    /// Records written from now on.
    Latest,
    /// Records that arrived at or after --timestamp.
    AtTimestamp,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// The data as UTF-8 text, one record a line.
    Text,
    /// The data in base64, one record a line.
    Base64,
    /// One JSON object a line with the sequence number, shard, key, time and base64 data.
    Json,
}

#[derive(clap::Args)]
pub struct TailArgs {
    /// The stream to follow.
    stream: String,
    /// Where to start in each shard.
    #[arg(long, value_enum, default_value = "latest")]
    from: From,
    /// Epoch seconds (fractions allowed) for --from at-timestamp.
    #[arg(long, required_if_eq("from", "at-timestamp"))]
    timestamp: Option<f64>,
    /// How to print each record.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Stop after this many records.
    #[arg(long)]
    max_records: Option<usize>,
    /// Stop after this many seconds without a new record.
    #[arg(long)]
    idle_timeout: Option<f64>,
    #[command(flatten)]
    node: json_api::ApiTarget,
}

pub fn run(args: TailArgs) -> anyhow::Result<()> {
    crate::block_on(tail(args))
}

async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let position = match args.from {
        From::TrimHorizon => Position::TrimHorizon,
        From::Latest => Position::Latest,
        From::AtTimestamp => Position::AtTimestamp(
            args.timestamp
                .map(|seconds| (seconds * 1000.0).max(0.0) as u64)
                .unwrap_or(0),
        ),
    };
    let mut consumer = match args.node.kinesis()? {
        Some(kinesis) => Source::Json(JsonConsumer::start(kinesis, &args.stream, position).await?),
        None => {
            let client = args.node.node.client().await?;
            Source::Grpc(Box::new(client.consumer(&args.stream, position).await?))
        }
    };
    let mut out = std::io::stdout().lock();
    let mut printed = 0usize;
    let idle = args.idle_timeout.map(Duration::from_secs_f64);
    while args.max_records.is_none_or(|max| printed < max) {
        let next = match idle {
            Some(idle) => match tokio::time::timeout(idle, consumer.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => consumer.next().await,
        };
        let Some(batch) = next else { break };
        let batch = batch.with_context(|| format!("read {}", args.stream))?;
        for record in &batch.records {
            if args.max_records.is_some_and(|max| printed >= max) {
                break;
            }
            print_record(&mut out, args.format, &batch.shard_id, record)?;
            printed += 1;
        }
        out.flush().context("write standard output")?;
    }
    Ok(())
}

/// Where `tail` reads from.
enum Source {
    Grpc(Box<sluice_client::Consumer>),
    Json(JsonConsumer),
}

impl Source {
    async fn next(&mut self) -> Option<anyhow::Result<sluice_client::ShardRecords>> {
        match self {
            Source::Grpc(consumer) => Some(consumer.next().await?.map_err(anyhow::Error::from)),
            Source::Json(consumer) => consumer.next().await,
        }
    }
}

fn print_record(
    out: &mut impl Write,
    format: Format,
    shard: &str,
    record: &pb::Record,
) -> anyhow::Result<()> {
    match format {
        Format::Text => writeln!(out, "{}", String::from_utf8_lossy(&record.data)),
        Format::Base64 => writeln!(
            out,
            "{}",
            base64::engine::general_purpose::STANDARD.encode(&record.data)
        ),
        Format::Json => writeln!(
            out,
            "{}",
            json!({
                "ShardId": shard,
                "SequenceNumber": record.sequence_number,
                "PartitionKey": record.partition_key,
                "ApproximateArrivalTimestamp": record.approximate_arrival_timestamp_ms as f64 / 1000.0,
                "Data": base64::engine::general_purpose::STANDARD.encode(&record.data),
            })
        ),
    }
    .context("write standard output")
}
