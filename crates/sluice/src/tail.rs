//! `sluice tail`: follows every shard of a stream over gRPC ReadShard and prints records as
//! they are committed. A shard's children are read once all of their parents are read to
//! the end, so records of a partition key come out in order across splits and merges.

use crate::grpc::{self, status_error};
use anyhow::Context;
use base64::Engine;
use serde_json::json;
use sluice_proto::v1 as pb;
use sluice_proto::v1::data_client::DataClient;
use sluice_proto::v1::streams_client::StreamsClient;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::Duration;
use tokio::sync::mpsc;

/// ReadShard batches may hold 10 MiB of records.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

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
    node: grpc::Target,
}

enum Event {
    Records(String, Vec<pb::Record>),
    Finished(String, Vec<pb::ChildShard>),
    Failed(String, tonic::Status),
}

pub fn run(args: TailArgs) -> anyhow::Result<()> {
    crate::block_on(tail(args))
}

fn position(args: &TailArgs, first: bool) -> pb::StartingPosition {
    use pb::StartingPositionType as T;
    // Children of a finished shard are always read from their start.
    let kind = match (first, args.from) {
        (false, _) | (true, From::TrimHorizon) => T::TrimHorizon,
        (true, From::Latest) => T::Latest,
        (true, From::AtTimestamp) => T::AtTimestamp,
    };
    pb::StartingPosition {
        r#type: kind as i32,
        sequence_number: String::new(),
        timestamp_ms: args
            .timestamp
            .map(|seconds| (seconds * 1000.0).max(0.0) as u64)
            .unwrap_or(0),
    }
}

async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let (channel, signer) = args.node.connect().await?;
    let description = StreamsClient::with_interceptor(channel.clone(), signer.clone())
        .describe_stream(pb::DescribeStreamRequest {
            stream_name: args.stream.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .stream
        .context("the node answered without a stream description")?;
    let data =
        DataClient::with_interceptor(channel, signer).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let known: HashSet<String> = description
        .shards
        .iter()
        .map(|s| s.shard_id.clone())
        .collect();
    // Shards to start with: from LATEST only the open ones; otherwise every shard whose
    // parents are gone (expired), children following their parents.
    let first: Vec<String> = description
        .shards
        .iter()
        .filter(|s| match args.from {
            From::Latest => s.ending_sequence_number.is_none(),
            _ => s
                .parent_shard_id
                .iter()
                .chain(s.adjacent_parent_shard_id.iter())
                .all(|p| !known.contains(p)),
        })
        .map(|s| s.shard_id.clone())
        .collect();

    let (events, mut inbox) = mpsc::channel::<Event>(64);
    let mut started: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut waiting: HashMap<String, Vec<String>> = HashMap::new();
    for shard in first {
        started.insert(shard.clone());
        spawn_reader(&data, &args, shard, position(&args, true), events.clone());
    }
    let mut out = std::io::stdout().lock();
    let mut printed = 0usize;
    let idle = args.idle_timeout.map(Duration::from_secs_f64);
    loop {
        if args.max_records.is_some_and(|max| printed >= max) || started.len() == finished.len() {
            break;
        }
        let event = match idle {
            Some(idle) => match tokio::time::timeout(idle, inbox.recv()).await {
                Ok(event) => event,
                Err(_) => break,
            },
            None => inbox.recv().await,
        };
        let Some(event) = event else { break };
        match event {
            Event::Records(shard, records) => {
                for record in records {
                    if args.max_records.is_some_and(|max| printed >= max) {
                        break;
                    }
                    print_record(&mut out, args.format, &shard, &record)?;
                    printed += 1;
                }
                out.flush().context("write standard output")?;
            }
            Event::Finished(shard, children) => {
                finished.insert(shard);
                for child in children {
                    waiting.insert(child.shard_id.clone(), child.parent_shards.clone());
                }
                let ready: Vec<String> = waiting
                    .iter()
                    .filter(|(child, parents)| {
                        !started.contains(*child) && parents.iter().all(|p| finished.contains(p))
                    })
                    .map(|(child, _)| child.clone())
                    .collect();
                for child in ready {
                    started.insert(child.clone());
                    spawn_reader(&data, &args, child, position(&args, false), events.clone());
                }
            }
            Event::Failed(shard, status) => {
                return Err(status_error(status)).with_context(|| format!("read {shard}"));
            }
        }
    }
    Ok(())
}

fn spawn_reader(
    data: &DataClient<grpc::Signed>,
    args: &TailArgs,
    shard: String,
    position: pb::StartingPosition,
    events: mpsc::Sender<Event>,
) {
    let mut client = data.clone();
    let request = pb::ReadShardRequest {
        stream_name: args.stream.clone(),
        shard_id: shard.clone(),
        starting_position: Some(position),
        max_records_per_batch: 0,
    };
    tokio::spawn(async move {
        let mut stream = match client.read_shard(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let _ = events.send(Event::Failed(shard, status)).await;
                return;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(batch)) => {
                    // Only the last batch of a finished shard has no continuation.
                    let done = batch.continuation_sequence_number.is_none();
                    if !batch.records.is_empty()
                        && events
                            .send(Event::Records(shard.clone(), batch.records))
                            .await
                            .is_err()
                    {
                        return;
                    }
                    if done {
                        let _ = events
                            .send(Event::Finished(shard, batch.child_shards))
                            .await;
                        return;
                    }
                }
                Ok(None) => {
                    let _ = events.send(Event::Finished(shard, Vec::new())).await;
                    return;
                }
                Err(status) => {
                    let _ = events.send(Event::Failed(shard, status)).await;
                    return;
                }
            }
        }
    });
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
