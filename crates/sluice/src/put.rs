//! `sluice put`: writes lines from standard input or a file as records, in batches of up to
//! 500 records and 5 MiB, retrying records the node refused (throttling) in their order.

use crate::grpc::{self, status_error};
use anyhow::{Context, bail};
use rand::Rng;
use serde_json::json;
use sluice_proto::v1 as pb;
use sluice_proto::v1::data_client::DataClient;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MAX_BATCH_RECORDS: usize = 500;
const MAX_BATCH_BYTES: usize = 5 << 20;
const MAX_RECORD_BYTES: usize = 1 << 20;
const MAX_ATTEMPTS: u32 = 20;

#[derive(clap::Args)]
pub struct PutArgs {
    /// The stream to write to.
    stream: String,
    /// Read lines from this file instead of standard input.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Use this partition key for every record.
    #[arg(long, conflicts_with = "key_field")]
    partition_key: Option<String>,
    /// Parse each line as JSON and use this top-level field as the partition key.
    #[arg(long)]
    key_field: Option<String>,
    #[command(flatten)]
    node: grpc::Target,
    /// Print JSON instead of text.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    output: String,
}

struct Pending {
    partition_key: String,
    data: Vec<u8>,
}

pub fn run(args: PutArgs) -> anyhow::Result<()> {
    crate::block_on(put(args))
}

fn partition_key(args: &PutArgs, line: &str, number: usize) -> anyhow::Result<String> {
    if let Some(key) = &args.partition_key {
        return Ok(key.clone());
    }
    if let Some(field) = &args.key_field {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {number} is not JSON"))?;
        return match value.get(field) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            _ => bail!("line {number} has no string or number field {field:?}"),
        };
    }
    Ok(format!("{:032x}", rand::rng().random::<u128>()))
}

async fn put(args: PutArgs) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut records = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.context("read input")?;
        let number = index + 1;
        let key = partition_key(&args, &line, number)?;
        if key.chars().count() > 256 {
            bail!("line {number}: partition key longer than 256 characters");
        }
        if line.len() + key.len() > MAX_RECORD_BYTES {
            bail!("line {number}: record larger than 1 MiB with its partition key");
        }
        records.push(Pending {
            partition_key: key,
            data: line.into_bytes(),
        });
    }

    let (channel, signer) = args.node.connect().await?;
    let mut client = DataClient::with_interceptor(channel, signer);
    let started = Instant::now();
    let total = records.len();
    let mut written = 0usize;
    let mut queue: std::collections::VecDeque<Pending> = records.into();
    let mut attempts = 0u32;
    while !queue.is_empty() {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while let Some(next) = queue.front() {
            let size = next.data.len() + next.partition_key.len();
            if batch.len() == MAX_BATCH_RECORDS || bytes + size > MAX_BATCH_BYTES {
                break;
            }
            bytes += size;
            batch.extend(queue.pop_front());
        }
        let request = pb::PutRecordsRequest {
            stream_name: args.stream.clone(),
            records: batch
                .iter()
                .map(|r| pb::PutRecordsRequestEntry {
                    partition_key: r.partition_key.clone(),
                    explicit_hash_key: None,
                    data: r.data.clone().into(),
                })
                .collect(),
        };
        let answer = client
            .put_records(request)
            .await
            .map_err(status_error)?
            .into_inner();
        // Refused records go back to the front, in their order, ahead of later lines.
        let mut refused = Vec::new();
        let mut last_error = String::new();
        for (record, result) in batch.into_iter().zip(answer.records) {
            match result.result {
                Some(pb::put_records_result_entry::Result::Success(_)) => written += 1,
                Some(pb::put_records_result_entry::Result::Error(error)) => {
                    last_error = format!("{}: {}", error.error_code, error.error_message);
                    refused.push(record);
                }
                None => refused.push(record),
            }
        }
        if !refused.is_empty() {
            attempts += 1;
            if attempts > MAX_ATTEMPTS {
                bail!(
                    "gave up after {MAX_ATTEMPTS} retries with {} records unwritten: {last_error}",
                    refused.len() + queue.len()
                );
            }
            for record in refused.into_iter().rev() {
                queue.push_front(record);
            }
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempts.min(10)))).await;
        } else {
            attempts = 0;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if args.output == "json" {
        println!(
            "{}",
            json!({"StreamName": args.stream, "Records": written, "Seconds": elapsed})
        );
    } else {
        println!(
            "{}: put {written} of {total} records in {elapsed:.2} s",
            args.stream
        );
    }
    Ok(())
}
