//! `sluice put`: writes lines from standard input or a file as records through the client's
//! producer (batches of up to 500 records and 5 MiB sent to each shard's leader, refused
//! records retried in their order), or with `--kinesis-endpoint` through PutRecords calls,
//! with a progress bar on a terminal.

use crate::json_api::{self, Outgoing};
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use serde_json::json;
use sluice_client::{Delivery, ProducerConfig};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

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
    node: json_api::ApiTarget,
    /// Print JSON instead of text.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    output: String,
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
        records.push(Outgoing {
            partition_key: key,
            data: line.into_bytes(),
        });
    }

    let started = Instant::now();
    let total = records.len();
    // Drawn on standard error only when it is a terminal.
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} records written ({per_sec}, {eta} left)")
    {
        bar.set_style(style);
    }
    let written = match args.node.kinesis()? {
        Some(kinesis) => {
            let outcome =
                json_api::put_records(&kinesis, &args.stream, records, MAX_ATTEMPTS, &|n| {
                    bar.inc(n)
                })
                .await;
            bar.finish_and_clear();
            outcome?;
            total
        }
        None => put_grpc(&args, records, &bar).await?,
    };
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

/// Writes through the client's producer; the number of records written.
async fn put_grpc(
    args: &PutArgs,
    records: Vec<Outgoing>,
    bar: &ProgressBar,
) -> anyhow::Result<usize> {
    let total = records.len();
    let client = args.node.node.client().await?;
    let producer = client
        .producer(
            &args.stream,
            ProducerConfig {
                max_attempts: MAX_ATTEMPTS,
                ..ProducerConfig::default()
            },
        )
        .await?;
    // Outcomes are awaited in order beside the sending (which waits while the producer's
    // buffer is full): the first failure is reported with its line.
    let (outcomes, mut pending) = tokio::sync::mpsc::unbounded_channel::<(usize, Delivery)>();
    let waiter = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut written = 0usize;
            let mut first_error = None;
            while let Some((line, delivery)) = pending.recv().await {
                match delivery.await {
                    Ok(_) => {
                        written += 1;
                        bar.inc(1);
                    }
                    Err(error) => {
                        first_error.get_or_insert((line, error));
                    }
                }
            }
            (written, first_error)
        })
    };
    for (index, record) in records.into_iter().enumerate() {
        let delivery = producer.send(record.partition_key, record.data).await?;
        let _ = outcomes.send((index + 1, delivery));
    }
    drop(outcomes);
    producer.flush().await?;
    let (written, first_error) = waiter.await.context("wait for the records' outcomes")?;
    bar.finish_and_clear();
    if let Some((line, error)) = first_error {
        bail!(
            "{written} of {total} records written; line {line} and maybe others were not: {error}"
        );
    }
    Ok(written)
}
