//! `sluice bench`: a load generator for the Kinesis JSON API.
//!
//! It speaks the Kinesis JSON 1.1 protocol directly (`POST /` with
//! `x-amz-target: Kinesis_20131202.<Op>`, a dummy `authorization` header), so it can measure
//! Sluice or any other Kinesis-compatible server that does not verify signatures. Each
//! concurrent worker keeps one HTTP/1.1 keep-alive connection; `--http2` multiplexes every
//! worker over one h2c (prior knowledge) connection instead.
//!
//! # Running it
//!
//! ```text
//! cargo build --release -p sluice
//! target/release/sluice server --data-dir /tmp/sluice-bench \
//!     --kinesis-addr 127.0.0.1:4599 --grpc-addr 127.0.0.1:50099 &
//! target/release/sluice bench --endpoint http://127.0.0.1:4599                 # everything
//! target/release/sluice bench --endpoint http://127.0.0.1:4599 --workload put-records \
//!     --duration 30 --batch 500 --record-size 1024 --concurrency 16
//! target/release/sluice bench --workload put-records --rate 200 --json          # paced
//! target/release/sluice bench --workload subscribe --duration 10      # fan-out latency
//! ```
//!
//! `make bench` (`deploy/local/bench.sh`) does the same against a fresh node on a temporary
//! data directory and passes extra arguments through.
//!
//! # Workloads
//!
//! The stream (`--stream`, default `bench`) is created with `--shards` shards if it does not
//! exist, and the run waits until it is ACTIVE. An existing stream is used as is.
//!
//! - `put-records`: PutRecords batches of `--batch` random records of `--record-size` bytes
//!   (default 1024) under random partition keys, `--concurrency` workers (default 8).
//! - `put-record`: single PutRecord calls of `--record-size` bytes (default 100),
//!   `--concurrency` workers (default 64).
//! - `get-records`: first writes a backlog of `--backlog-mb` MB (default 200, `0` skips it)
//!   of 1 KiB records, then reads the whole stream back from TRIM_HORIZON with GetRecords
//!   (Limit 10000), one reader per shard, until every shard is caught up. Reading stops after
//!   max(10 x `--duration`, 60) seconds at the latest (`caught_up: false` in the report).
//! - `subscribe`: enhanced fan-out. On a one-shard stream `<stream>-fanout` (created if
//!   missing), `--consumers` consumers (default 20, the per-stream limit) are registered, each
//!   opens one SubscribeToShard from LATEST, and PutRecords batches of `--batch` records
//!   (default 50) of `--record-size` bytes (default 100, at least 24) are written at
//!   `--rate` records/s (default 5000) by `--concurrency` workers (default 4). Every record
//!   carries the time its PutRecords call was sent, a counter, a run id and its worker;
//!   each consumer measures receive time minus send time per record, counts what it
//!   received, and checks that each worker's records arrive in the order they were sent.
//!   After `--duration` the writers stop, consumers get up to 5 s for records still in
//!   flight, then the subscriptions are closed and the consumers deregistered (consumers left
//!   by an interrupted run are removed at the start). The latency percentiles are delivery
//!   latency (PutRecords sent → record decoded by the consumer) over every consumer.
//! - `all` (default): put-records at full speed, then put-records again paced at 50% of the
//!   request rate just measured (reported as `put-records@50%`: latency under moderate load),
//!   then put-record, then get-records, then subscribe (at 5000 records/s whatever `--rate`
//!   says).
//!
//! Write phases last `--duration` seconds (default 10). Without `--rate` every worker sends
//! its next request as soon as the previous one answers, which measures peak throughput. With
//! `--rate N` requests are scheduled at N per second and latency is measured from each
//! request's scheduled send time, so a stalled server shows up in the percentiles instead of
//! silently slowing the load (coordinated omission). In `all`, `--rate` paces put-records and
//! put-record; the 50% phase always uses half the measured peak. For `subscribe` alone,
//! `--rate` counts records (not requests) per second.
//!
//! # Output
//!
//! While a phase runs and stderr is a terminal, a progress line (records/s, MB/s, p99 so far)
//! is refreshed once a second. After each workload, stdout gets one human-readable line and
//! one JSON line, for example
//!
//! ```text
//! {"workload":"put-records","records_per_sec":...,"mb_per_sec":...,"requests_per_sec":...,
//!  "p50_ms":...,"p99_ms":...,"p999_ms":...,"max_ms":...,"errors":0,"failed_records":0,...,
//!  "duration_s":10.0,"concurrency":8,"record_size":1024,"batch":500}
//! ```
//!
//! (on one line). `--json` prints only the JSON lines. MB means 10^6 bytes of record data
//! (not counting base64 or JSON framing). Latencies come from an HDR histogram with
//! microsecond resolution. `errors` counts failed requests (any request without a complete
//! 2xx answer within 30 s); `failed_records` counts records rejected inside a successful
//! PutRecords call; `error_kinds` breaks both down when non-zero. The command fails if a
//! workload completes no request at all.
//!
//! The `subscribe` lines differ: `records_per_sec` counts records written (acknowledged by
//! PutRecords), `deliveries_per_sec` records received summed over all consumers, `p50_ms`
//! ... `max_ms` are delivery latencies, and `missing` (records acknowledged but not received,
//! summed over consumers), `out_of_order`, `duplicates`, `consumers`, `put_p99_ms` and
//! `producer_lag_max_ms` (how late the writers fell behind their schedule) are added. The
//! command fails if any record is missing or out of order.

mod get;
mod grpc;
mod produce;
mod put;
mod stats;
mod subscribe;

use crate::kinesis::Kinesis;
use anyhow::{Context, bail, ensure};
use put::{Bodies, PutPlan, Stop};
use stats::Report;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

/// Records per PutRecords request used to write the get-records backlog.
const BACKLOG_BATCH: usize = 500;
/// Record size of the get-records backlog.
const BACKLOG_RECORD_SIZE: usize = 1024;
/// Concurrency used to write the get-records backlog.
const BACKLOG_CONCURRENCY: usize = 8;
/// Defaults of the subscribe workload.
const FANOUT_RATE: f64 = 5000.0;
const FANOUT_BATCH: usize = 50;
const FANOUT_RECORD_SIZE: usize = 100;
const FANOUT_PRODUCERS: usize = 4;
/// Writing the backlog stops after this long even if it is incomplete.
const BACKLOG_TIME_LIMIT: Duration = Duration::from_secs(600);

/// Which load to drive.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Workload {
    /// PutRecords batches.
    PutRecords,
    /// Single PutRecord calls.
    PutRecord,
    /// Write a backlog, then read it back with GetRecords on every shard.
    GetRecords,
    /// Enhanced fan-out: SubscribeToShard consumers on one shard, delivery latency.
    Subscribe,
    /// PutRecords batches over the native gRPC API (`--grpc-endpoint`).
    GrpcPutRecords,
    /// Records through the Rust client's producer over the native API (`--grpc-endpoint`):
    /// batched per shard and sent to each shard's leader.
    GrpcProduce,
    /// put-records, put-records at 50% of its peak rate, put-record, get-records, subscribe.
    All,
}

/// Options of `sluice bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Kinesis JSON endpoint (http:// or https://; Sluice or any Kinesis-compatible server).
    #[arg(long, default_value = "http://127.0.0.1:4567")]
    endpoint: String,
    /// PEM CA bundle to trust for an https:// endpoint (besides the system roots).
    #[arg(long, env = "SLUICE_CA_BUNDLE")]
    ca_bundle: Option<std::path::PathBuf>,
    /// gRPC endpoint of the same node, for the grpc-put-records workload.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc_endpoint: String,
    /// Stream to use.
    #[arg(long, default_value = "bench")]
    stream: String,
    /// Shards of the stream when it has to be created.
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Workload to run.
    #[arg(long, value_enum, default_value = "all")]
    workload: Workload,
    /// Bytes of data per record [default: 1024 for put-records, 100 for put-record and
    /// subscribe].
    #[arg(long)]
    record_size: Option<usize>,
    /// Records per PutRecords request [default: 500; 50 for subscribe].
    #[arg(long)]
    batch: Option<usize>,
    /// Concurrent workers (one connection each) [default: 8 for put-records, 64 for
    /// put-record, 4 writers for subscribe].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seconds per write workload.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Target requests/s for write workloads (paced; latency measured from the scheduled
    /// send time); records/s for grpc-produce and subscribe [default there: unpaced and
    /// 5000].
    #[arg(long)]
    rate: Option<f64>,
    /// Consumers subscribed to the shard in the subscribe workload (at most 20).
    #[arg(long, default_value_t = 20)]
    consumers: usize,
    /// MB (10^6 bytes) of 1 KiB records written before the get-records workload reads the
    /// stream back.
    #[arg(long, default_value_t = 200)]
    backlog_mb: u64,
    /// Use HTTP/2 over one multiplexed connection (without TLS: prior knowledge).
    #[arg(long)]
    http2: bool,
    /// Print only the final JSON lines.
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0,
            "--duration must be between 0 and 86400 seconds"
        );
        if let Some(rate) = self.rate {
            ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number"
            );
        }
        if let Some(batch) = self.batch {
            ensure!(
                (1..=500).contains(&batch),
                "--batch must be between 1 and 500 (the PutRecords limit)"
            );
        }
        if let Some(size) = self.record_size {
            ensure!(
                (1..=1 << 20).contains(&size),
                "--record-size must be between 1 and 1048576 bytes"
            );
        }
        if matches!(self.workload, Workload::Subscribe | Workload::All) {
            ensure!(
                (1..=subscribe::MAX_CONSUMERS).contains(&self.consumers),
                "--consumers must be between 1 and {}",
                subscribe::MAX_CONSUMERS
            );
            ensure!(
                self.record_size
                    .is_none_or(|size| size >= subscribe::RecordHeader::LEN),
                "--record-size must be at least {} bytes for the subscribe workload",
                subscribe::RecordHeader::LEN
            );
            let plan = self.fanout_plan(self.workload == Workload::All);
            ensure!(
                plan.rate * self.duration <= 1e9,
                "subscribe: --rate x --duration must stay below 10^9 records"
            );
        }
        if let Some(concurrency) = self.concurrency {
            ensure!(
                (1..=4096).contains(&concurrency),
                "--concurrency must be between 1 and 4096"
            );
        }
        ensure!(
            (1..=10_000).contains(&self.shards),
            "--shards must be between 1 and 10000"
        );
        ensure!(!self.stream.is_empty(), "--stream must not be empty");
        Ok(())
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }

    fn put_plan(&self, single: bool) -> PutPlan {
        let (size, concurrency) = if single { (100, 64) } else { (1024, 8) };
        PutPlan {
            label: if single { "put-record" } else { "put-records" }.to_owned(),
            single,
            record_size: self.record_size.unwrap_or(size),
            batch: self.batch.unwrap_or(500),
            concurrency: self.concurrency.unwrap_or(concurrency),
            stop: Stop::After(self.duration()),
            rate: self.rate,
        }
    }

    /// The subscribe workload; `default_rate` ignores `--rate` (as in `all`, where it paces
    /// requests of the other phases).
    fn fanout_plan(&self, default_rate: bool) -> subscribe::FanoutPlan {
        subscribe::FanoutPlan {
            stream: format!("{}-fanout", self.stream),
            consumers: self.consumers,
            rate: if default_rate {
                FANOUT_RATE
            } else {
                self.rate.unwrap_or(FANOUT_RATE)
            },
            batch: self.batch.unwrap_or(FANOUT_BATCH),
            record_size: self.record_size.unwrap_or(FANOUT_RECORD_SIZE),
            producers: self.concurrency.unwrap_or(FANOUT_PRODUCERS),
            duration: self.duration(),
        }
    }
}

/// Where messages go: progress and notes on stderr, results on stdout.
struct Output {
    json: bool,
    progress: bool,
}

impl Output {
    fn note(&self, message: &str) {
        if !self.json {
            eprintln!("{message}");
        }
    }

    fn report(&self, report: &Report) {
        if !self.json {
            println!("{}", report.human_line());
            if !report.error_kinds.is_empty() {
                for (kind, count) in &report.error_kinds {
                    eprintln!("  {}: {count} x {kind}", report.workload);
                }
            }
        }
        println!("{}", report.json_line());
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: BenchArgs) -> anyhow::Result<()> {
    let out = Output {
        json: args.json,
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    let pool = args.concurrency.unwrap_or(64).max(BACKLOG_CONCURRENCY) + args.consumers;
    let client = Kinesis::new(&args.endpoint, args.http2, pool, args.ca_bundle.as_deref())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let protocol = if args.http2 { "h2c" } else { "HTTP/1.1" };
    if args.workload == Workload::Subscribe {
        out.note(&format!(
            "endpoint {} ({protocol}), {cores} cores here",
            args.endpoint
        ));
    } else {
        let shards = client
            .ensure_stream(&args.stream, args.shards, &|m| out.note(m))
            .await
            .with_context(|| format!("prepare stream on {}", args.endpoint))?;
        out.note(&format!(
            "endpoint {} ({protocol}), stream {} with {shards} open shards, {cores} cores here",
            args.endpoint, args.stream,
        ));
    }

    let mut empty = Vec::new();
    let mut problems = Vec::new();
    let mut emit = |report: &Report| {
        out.report(report);
        if report.requests == 0 {
            empty.push(report.workload.clone());
        }
    };
    match args.workload {
        Workload::PutRecords => emit(&put_phase(&client, &args, args.put_plan(false), &out).await),
        Workload::PutRecord => emit(&put_phase(&client, &args, args.put_plan(true), &out).await),
        Workload::GetRecords => emit(&get_phase(&client, &args, &out).await?),
        Workload::GrpcPutRecords => {
            let mut plan = args.put_plan(false);
            plan.label = "grpc-put-records".to_owned();
            let report = grpc::run(&args.grpc_endpoint, &args.stream, &plan, out.progress)
                .await
                .with_context(|| format!("gRPC workload on {}", args.grpc_endpoint))?;
            emit(&report);
        }
        Workload::GrpcProduce => {
            let mut plan = args.put_plan(false);
            plan.label = "grpc-produce".to_owned();
            let report = produce::run(&args.grpc_endpoint, &args.stream, &plan, out.progress)
                .await
                .with_context(|| format!("produce workload on {}", args.grpc_endpoint))?;
            emit(&report);
        }
        Workload::Subscribe => {
            let fanout = fanout_phase(&client, &args, false, &out).await?;
            emit(&fanout.report);
            problems.extend(fanout.problems);
        }
        Workload::All => {
            let plan = args.put_plan(false);
            let bodies = Arc::new(Bodies::build(
                &args.stream,
                false,
                plan.record_size,
                plan.batch,
            ));
            let peak = put::run(&client, &plan, Arc::clone(&bodies), out.progress).await;
            emit(&peak);
            let half_rate = peak.requests_per_sec() / 2.0;
            if half_rate > 0.0 {
                let half = PutPlan {
                    label: "put-records@50%".to_owned(),
                    rate: Some(half_rate),
                    ..plan
                };
                emit(&put::run(&client, &half, bodies, out.progress).await);
            } else {
                out.note("put-records@50%: skipped (put-records completed no request)");
            }
            emit(&put_phase(&client, &args, args.put_plan(true), &out).await);
            emit(&get_phase(&client, &args, &out).await?);
            let fanout = fanout_phase(&client, &args, true, &out).await?;
            emit(&fanout.report);
            problems.extend(fanout.problems);
        }
    }
    if !empty.is_empty() {
        bail!("no request succeeded in: {}", empty.join(", "));
    }
    if !problems.is_empty() {
        bail!("subscribe: {}", problems.join("; "));
    }
    Ok(())
}

async fn fanout_phase(
    client: &Kinesis,
    args: &BenchArgs,
    default_rate: bool,
    out: &Output,
) -> anyhow::Result<subscribe::Outcome> {
    let plan = args.fanout_plan(default_rate);
    subscribe::run(client, &plan, out.progress, &|m| out.note(m))
        .await
        .with_context(|| format!("subscribe workload on {}", args.endpoint))
}

async fn put_phase(client: &Kinesis, args: &BenchArgs, plan: PutPlan, out: &Output) -> Report {
    let bodies = Arc::new(Bodies::build(
        &args.stream,
        plan.single,
        plan.record_size,
        plan.batch,
    ));
    put::run(client, &plan, bodies, out.progress).await
}

async fn get_phase(client: &Kinesis, args: &BenchArgs, out: &Output) -> anyhow::Result<Report> {
    let backlog_bytes = args.backlog_mb.saturating_mul(1_000_000);
    if backlog_bytes > 0 {
        let per_request = (BACKLOG_BATCH * BACKLOG_RECORD_SIZE) as u64;
        let requests = backlog_bytes.div_ceil(per_request);
        out.note(&format!(
            "get-records: writing a backlog of {} MB ({} records of {BACKLOG_RECORD_SIZE} B)",
            args.backlog_mb,
            requests * BACKLOG_BATCH as u64
        ));
        let plan = PutPlan {
            label: "backlog".to_owned(),
            single: false,
            record_size: BACKLOG_RECORD_SIZE,
            batch: BACKLOG_BATCH,
            concurrency: BACKLOG_CONCURRENCY,
            stop: Stop::Requests(requests, BACKLOG_TIME_LIMIT),
            rate: None,
        };
        let bodies = Arc::new(Bodies::build(
            &args.stream,
            false,
            BACKLOG_RECORD_SIZE,
            BACKLOG_BATCH,
        ));
        let backlog = put::run(client, &plan, bodies, out.progress).await;
        out.note(&format!(
            "get-records: backlog written: {} records ({:.1} MB) in {:.1} s, {} failed requests, {} failed records",
            backlog.records,
            backlog.bytes as f64 / 1e6,
            backlog.elapsed.as_secs_f64(),
            backlog.errors,
            backlog.failed_records,
        ));
    }
    let limit = Duration::from_secs_f64((args.duration * 10.0).max(60.0));
    out.note("get-records: reading the stream back from TRIM_HORIZON");
    let mut report = get::run(
        client,
        &args.stream,
        BACKLOG_RECORD_SIZE,
        limit,
        out.progress,
    )
    .await?;
    report
        .extra
        .push(("backlog_mb", serde_json::json!(args.backlog_mb)));
    Ok(report)
}
