//! The enhanced fan-out workload: registered consumers each hold one SubscribeToShard on a
//! one-shard stream while a paced producer writes to it; every consumer must receive every
//! record, in order, and the time from PutRecords to delivery is measured per record.
//!
//! # How it runs
//!
//! 1. The stream (`<stream>-fanout`) is created with one shard if missing; its StreamARN
//!    comes from DescribeStreamSummary. Consumers left behind by an interrupted run (named
//!    [`CONSUMER_PREFIX`]`NN`) are deregistered first.
//! 2. `consumers` consumers are registered and awaited until ACTIVE, then each opens one
//!    SubscribeToShard (StartingPosition LATEST) and waits for its `initial-response`, so
//!    every subscription's position is fixed before the first record is written.
//! 3. `producers` workers send PutRecords batches of `batch` records, paced so that
//!    `rate` records/s go out in all. Each record starts with a [`RecordHeader`]: the time
//!    its PutRecords call was sent (nanoseconds since an epoch shared with the consumers),
//!    a counter unique within the run, a run id and the producer's lane. The rest of the
//!    record is padding up to `record_size`.
//! 4. Each consumer decodes the event stream incrementally, takes the arrival time of the
//!    body frame that completed each event, and records receive time − send time per
//!    record. A counter not above the previous one from the same lane is out of order
//!    (each lane sends sequentially, so the shard must keep its order); a counter seen
//!    twice is a duplicate. Records of another run (an older run on the same stream) are
//!    ignored.
//! 5. After `duration` the producers stop; consumers get up to [`STRAGGLER_WAIT`] to catch
//!    up, then the subscriptions are closed and the consumers deregistered.
//!
//! A subscription that ends early (AWS ends them after five minutes) or fails is resumed
//! with AFTER_SEQUENCE_NUMBER at the last ContinuationSequenceNumber.
//!
//! `missing` counts, over all consumers, records whose PutRecords entry succeeded but that
//! the consumer never received.

use super::stats::{Progress, Report, Stats, ms, round3};
use crate::kinesis::{CallError, Kinesis};
use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_gateway::eventstream::{Message, decode_message};
use sluice_server::error_chain;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

/// Consumers registered by this workload are named `<prefix><index>`.
pub const CONSUMER_PREFIX: &str = "sluice-bench-";
/// The most consumers a stream may have (AWS's limit, also Sluice's).
pub const MAX_CONSUMERS: usize = 20;
/// After the producers stop, consumers get this long to receive what is still in flight.
pub const STRAGGLER_WAIT: Duration = Duration::from_secs(5);
/// Registering, activating and removing consumers must finish within this time.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a throttled control-plane call is retried.
const THROTTLE_RETRY: Duration = Duration::from_secs(30);
/// Waiting for the `initial-response` of a new subscription.
const FIRST_EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// A consumer gives up after this many failed attempts in a row to resubscribe.
const MAX_RESUBSCRIBE_ATTEMPTS: u32 = 20;

/// One fan-out run.
pub struct FanoutPlan {
    pub stream: String,
    pub consumers: usize,
    /// Records per second written in all.
    pub rate: f64,
    /// Records per PutRecords request.
    pub batch: usize,
    pub record_size: usize,
    /// Concurrent producer workers (lanes).
    pub producers: usize,
    pub duration: Duration,
}

/// The report, and what went wrong with delivery (missing or out-of-order records).
pub struct Outcome {
    pub report: Report,
    pub problems: Vec<String>,
}

// ----- record layout ---------------------------------------------------------------

/// What each record carries at its start (little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// When the PutRecords call carrying the record was sent, in nanoseconds since the
    /// run's epoch.
    pub sent_ns: u64,
    /// Unique within the run: batch number × batch size + position in the batch.
    pub counter: u64,
    pub run: u32,
    /// The producer worker that sent it.
    pub lane: u32,
}

impl RecordHeader {
    /// Bytes at the start of every record; the smallest allowed record size.
    pub const LEN: usize = 24;

    fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.sent_ns.to_le_bytes());
        out[8..16].copy_from_slice(&self.counter.to_le_bytes());
        out[16..20].copy_from_slice(&self.run.to_le_bytes());
        out[20..24].copy_from_slice(&self.lane.to_le_bytes());
    }

    fn read(data: &[u8]) -> Option<Self> {
        let field = |range: std::ops::Range<usize>| data.get(range);
        Some(Self {
            sent_ns: u64::from_le_bytes(field(0..8)?.try_into().ok()?),
            counter: u64::from_le_bytes(field(8..16)?.try_into().ok()?),
            run: u32::from_le_bytes(field(16..20)?.try_into().ok()?),
            lane: u32::from_le_bytes(field(20..24)?.try_into().ok()?),
        })
    }
}

/// A growable set of counters.
#[derive(Default, Clone)]
struct Bits(Vec<u64>);

impl Bits {
    /// Adds `i`; false if it was already there.
    fn insert(&mut self, i: u64) -> bool {
        let word = (i / 64) as usize;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let mask = 1u64 << (i % 64);
        let fresh = self.0[word] & mask == 0;
        self.0[word] |= mask;
        fresh
    }

    /// How many members of `self` are not in `other`.
    fn count_not_in(&self, other: &Bits) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, word)| u64::from((word & !other.0.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

// ----- setup -------------------------------------------------------------------------

/// Runs the workload; consumers registered here are deregistered before returning, also
/// on failure.
pub async fn run(
    client: &Kinesis,
    plan: &FanoutPlan,
    progress: bool,
    log: &dyn Fn(&str),
) -> anyhow::Result<Outcome> {
    let stream = plan.stream.as_str();
    let open = client.ensure_stream(stream, 1, log).await?;
    let stream_arn = stream_arn(client, stream).await?;
    let shards = open_shards(client, stream).await?;
    let [shard] = shards.as_slice() else {
        bail!(
            "stream {stream} has {open} open shards; the subscribe workload needs exactly one \
             (delete it or pick another --stream)"
        );
    };
    remove_leftovers(client, &stream_arn, plan.consumers, log).await?;
    let mut consumers = Vec::with_capacity(plan.consumers);
    let registered = register(client, &stream_arn, plan.consumers, &mut consumers).await;
    let result = match registered {
        Ok(()) => {
            log(&format!(
                "subscribe: {} consumers ACTIVE on {stream} ({shard}); producing {} records/s in batches of {} for {:.1} s",
                consumers.len(),
                plan.rate,
                plan.batch,
                plan.duration.as_secs_f64(),
            ));
            measure(client, plan, shard, &consumers, progress).await
        }
        Err(e) => Err(e),
    };
    for arn in &consumers {
        let input = json!({ "ConsumerARN": arn });
        if let Err(e) = control(client, "DeregisterStreamConsumer", &input).await {
            log(&format!("subscribe: could not deregister {arn}: {e}"));
        }
    }
    result
}

/// A consumer control-plane call, retried for a while when throttled (AWS allows five
/// registrations or deregistrations per second and stream).
async fn control(client: &Kinesis, op: &str, input: &Value) -> Result<Value, CallError> {
    let deadline = Instant::now() + THROTTLE_RETRY;
    loop {
        match client.call_json(op, input).await {
            Err(e)
                if e.api_kind() == Some("LimitExceededException") && Instant::now() < deadline =>
            {
                sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

async fn stream_arn(client: &Kinesis, stream: &str) -> anyhow::Result<String> {
    let answer = client
        .call_json("DescribeStreamSummary", &json!({ "StreamName": stream }))
        .await
        .with_context(|| format!("describe stream {stream}"))?;
    match answer["StreamDescriptionSummary"]["StreamARN"].as_str() {
        Some(arn) if !arn.is_empty() => Ok(arn.to_owned()),
        _ => bail!("DescribeStreamSummary of {stream} returned no StreamARN"),
    }
}

/// Ids of the shards of `stream` that are still open.
async fn open_shards(client: &Kinesis, stream: &str) -> anyhow::Result<Vec<String>> {
    let mut shards = Vec::new();
    let mut input = json!({ "StreamName": stream });
    for _ in 0..1000 {
        let answer = client
            .call_json("ListShards", &input)
            .await
            .with_context(|| format!("list shards of {stream}"))?;
        for shard in answer["Shards"].as_array().into_iter().flatten() {
            let closed = shard["SequenceNumberRange"]["EndingSequenceNumber"].is_string();
            if let (Some(id), false) = (shard["ShardId"].as_str(), closed) {
                shards.push(id.to_owned());
            }
        }
        match answer["NextToken"].as_str() {
            Some(token) if !token.is_empty() => input = json!({ "NextToken": token }),
            _ => return Ok(shards),
        }
    }
    bail!("ListShards of {stream} did not end after 1000 pages")
}

/// Every consumer of the stream as (name, ARN, status).
async fn list_consumers(
    client: &Kinesis,
    stream_arn: &str,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut consumers = Vec::new();
    let mut input = json!({ "StreamARN": stream_arn });
    for _ in 0..100 {
        let answer = control(client, "ListStreamConsumers", &input)
            .await
            .with_context(|| format!("list consumers of {stream_arn}"))?;
        for consumer in answer["Consumers"].as_array().into_iter().flatten() {
            let field = |name: &str| consumer[name].as_str().unwrap_or("").to_owned();
            consumers.push((
                field("ConsumerName"),
                field("ConsumerARN"),
                field("ConsumerStatus"),
            ));
        }
        match answer["NextToken"].as_str() {
            Some(token) if !token.is_empty() => {
                input = json!({ "StreamARN": stream_arn, "NextToken": token });
            }
            _ => return Ok(consumers),
        }
    }
    bail!("ListStreamConsumers of {stream_arn} did not end after 100 pages")
}

/// Deregisters this workload's consumers left by an earlier run and waits until they are
/// gone and `wanted` more fit under the per-stream limit.
async fn remove_leftovers(
    client: &Kinesis,
    stream_arn: &str,
    wanted: usize,
    log: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut announced = false;
    loop {
        let consumers = list_consumers(client, stream_arn).await?;
        let ours: Vec<_> = consumers
            .iter()
            .filter(|(name, _, _)| name.starts_with(CONSUMER_PREFIX))
            .collect();
        let others = consumers.len() - ours.len();
        if others + wanted > MAX_CONSUMERS {
            bail!(
                "{stream_arn} has {others} other consumers; {wanted} more would exceed the limit of {MAX_CONSUMERS} (lower --consumers)"
            );
        }
        if ours.is_empty() {
            return Ok(());
        }
        if !announced {
            log(&format!(
                "subscribe: removing {} consumers left by an earlier run",
                ours.len()
            ));
            announced = true;
        }
        for (name, arn, status) in ours {
            if status == "DELETING" {
                continue;
            }
            match control(
                client,
                "DeregisterStreamConsumer",
                &json!({ "ConsumerARN": arn }),
            )
            .await
            {
                Ok(_) => {}
                Err(e) if e.api_kind() == Some("ResourceNotFoundException") => {}
                Err(e) if e.api_kind() == Some("ResourceInUseException") => {}
                Err(e) => return Err(e).context(format!("deregister leftover consumer {name}")),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "consumers of an earlier run were still present after {} s",
                SETUP_TIMEOUT.as_secs()
            );
        }
        sleep(Duration::from_millis(200)).await;
    }
}

/// Registers `count` consumers (their ARNs go to `arns` as they are created, so the caller
/// can remove them even if a later step fails) and waits until all are ACTIVE.
async fn register(
    client: &Kinesis,
    stream_arn: &str,
    count: usize,
    arns: &mut Vec<String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    for index in 0..count {
        let name = format!("{CONSUMER_PREFIX}{index:02}");
        let input = json!({ "StreamARN": stream_arn, "ConsumerName": name });
        let answer = control(client, "RegisterStreamConsumer", &input)
            .await
            .with_context(|| format!("register consumer {name}"))?;
        let Some(arn) = answer["Consumer"]["ConsumerARN"].as_str() else {
            bail!("RegisterStreamConsumer of {name} returned no ConsumerARN");
        };
        arns.push(arn.to_owned());
    }
    let mut pending: Vec<&String> = arns.iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for arn in pending {
            let answer = control(
                client,
                "DescribeStreamConsumer",
                &json!({ "ConsumerARN": arn }),
            )
            .await
            .with_context(|| format!("describe consumer {arn}"))?;
            if answer["ConsumerDescription"]["ConsumerStatus"].as_str() != Some("ACTIVE") {
                still.push(arn);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "{} consumers did not become ACTIVE within {} s",
                pending.len(),
                SETUP_TIMEOUT.as_secs()
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

// ----- event streams -----------------------------------------------------------------

/// An event-stream response body decoded message by message.
struct EventStream {
    body: Incoming,
    buffer: BytesMut,
    /// When the newest body frame arrived.
    arrived: Instant,
}

impl EventStream {
    /// The next message and when its last byte arrived; `None` at a clean end.
    /// Cancel-safe: dropping the future loses nothing.
    async fn next(&mut self) -> Result<Option<(Message, Instant)>, String> {
        loop {
            match decode_message(&self.buffer) {
                Ok(Some((message, used))) => {
                    self.buffer.advance(used);
                    return Ok(Some((message, self.arrived)));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("bad event stream: {e}")),
            }
            match self.body.frame().await {
                None if self.buffer.is_empty() => return Ok(None),
                None => return Err("event stream ended inside a message".to_owned()),
                Some(Err(e)) => return Err(format!("transport: {}", error_chain(&e))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.arrived = Instant::now();
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Where a subscription starts.
enum Start {
    Latest,
    After(String),
    AtTimestampMs(u64),
}

/// Opens one SubscribeToShard and reads up to its `initial-response`.
async fn subscribe(
    client: &Kinesis,
    consumer_arn: &str,
    shard: &str,
    start: &Start,
) -> Result<EventStream, String> {
    let position = match start {
        Start::Latest => json!({ "Type": "LATEST" }),
        Start::After(sequence) => {
            json!({ "Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": sequence })
        }
        Start::AtTimestampMs(ms) => {
            json!({ "Type": "AT_TIMESTAMP", "Timestamp": *ms as f64 / 1000.0 })
        }
    };
    let input = json!({
        "ConsumerARN": consumer_arn,
        "ShardId": shard,
        "StartingPosition": position,
    });
    let body = client
        .open_stream("SubscribeToShard", Bytes::from(input.to_string()))
        .await
        .map_err(|e| e.label())?;
    let mut stream = EventStream {
        body,
        buffer: BytesMut::new(),
        arrived: Instant::now(),
    };
    let first = tokio::time::timeout(FIRST_EVENT_TIMEOUT, stream.next())
        .await
        .map_err(|_| "no initial-response within 30 s".to_owned())??;
    match first {
        Some((message, _)) if message.header_str(":event-type") == Some("initial-response") => {
            Ok(stream)
        }
        Some((message, _)) => Err(format!(
            "first event was not initial-response: {}",
            describe(&message)
        )),
        None => Err("event stream ended before initial-response".to_owned()),
    }
}

/// The type headers of a message, for error reports.
fn describe(message: &Message) -> String {
    let header = |name| message.header_str(name).unwrap_or("?");
    match message.header_str(":message-type") {
        Some("exception") => format!("exception {}", header(":exception-type")),
        Some("error") => format!(
            "error {}: {}",
            header(":error-code"),
            header(":error-message")
        ),
        other => format!("{} {}", other.unwrap_or("?"), header(":event-type")),
    }
}

#[derive(Deserialize)]
struct EventPayload<'a> {
    #[serde(rename = "Records", default, borrow)]
    records: Vec<EventRecord<'a>>,
    #[serde(rename = "ContinuationSequenceNumber", default)]
    continuation: Option<String>,
}

#[derive(Deserialize)]
struct EventRecord<'a> {
    #[serde(rename = "Data", borrow)]
    data: Cow<'a, str>,
}

// ----- consumers ---------------------------------------------------------------------

/// What the consumers share.
struct Shared {
    epoch: Instant,
    run: u32,
    lanes: usize,
    /// Counters at or above this cannot belong to the run.
    counter_limit: u64,
    deliveries: Arc<Stats>,
    /// Distinct records of this run received, per consumer.
    distinct: Vec<AtomicU64>,
    /// Where to resume a subscription that has seen no event yet (epoch milliseconds).
    started_ms: u64,
}

/// One consumer's tally.
#[derive(Default)]
struct Tally {
    received: Bits,
    last: Vec<Option<u64>>,
    deliveries: u64,
    duplicates: u64,
    out_of_order: u64,
    foreign: u64,
    invalid: u64,
    resubscribes: u64,
    gave_up: bool,
    continuation: Option<String>,
    latencies: Vec<Duration>,
    decoded: Vec<u8>,
}

impl Tally {
    /// Takes in one message; an error describes an exception or a malformed event.
    fn handle(
        &mut self,
        shared: &Shared,
        index: usize,
        message: &Message,
        arrived: Instant,
    ) -> Result<(), String> {
        match message.header_str(":message-type") {
            Some("event") => {}
            _ => return Err(describe(message)),
        }
        if message.header_str(":event-type") != Some("SubscribeToShardEvent") {
            return Ok(());
        }
        let payload: EventPayload<'_> = serde_json::from_slice(&message.payload)
            .map_err(|e| format!("bad SubscribeToShardEvent: {e}"))?;
        if let Some(continuation) = payload.continuation {
            self.continuation = Some(continuation);
        }
        let arrived_ns = arrived.duration_since(shared.epoch).as_nanos() as u64;
        self.latencies.clear();
        let mut bytes = 0u64;
        for record in &payload.records {
            self.decoded.clear();
            if STANDARD
                .decode_vec(record.data.as_bytes(), &mut self.decoded)
                .is_err()
            {
                self.invalid += 1;
                continue;
            }
            let Some(header) = RecordHeader::read(&self.decoded) else {
                self.foreign += 1;
                continue;
            };
            if header.run != shared.run {
                self.foreign += 1;
                continue;
            }
            let lane = header.lane as usize;
            if lane >= shared.lanes || header.counter >= shared.counter_limit {
                self.invalid += 1;
                continue;
            }
            self.deliveries += 1;
            bytes += self.decoded.len() as u64;
            self.latencies.push(Duration::from_nanos(
                arrived_ns.saturating_sub(header.sent_ns),
            ));
            if !self.received.insert(header.counter) {
                self.duplicates += 1;
                continue;
            }
            shared.distinct[index].fetch_add(1, Ordering::Relaxed);
            if self.last.len() < shared.lanes {
                self.last.resize(shared.lanes, None);
            }
            match self.last[lane] {
                Some(last) if header.counter < last => self.out_of_order += 1,
                _ => self.last[lane] = Some(header.counter),
            }
        }
        if !self.latencies.is_empty() {
            shared.deliveries.deliveries(index, &self.latencies, bytes);
        }
        Ok(())
    }
}

/// Reads one consumer's subscription until shutdown, resubscribing when it ends.
async fn consume(
    client: Kinesis,
    shared: Arc<Shared>,
    index: usize,
    consumer_arn: String,
    shard: String,
    mut stream: EventStream,
    mut shutdown: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let ended = loop {
            let next = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return tally,
                next = stream.next() => next,
            };
            match next {
                Ok(Some((message, arrived))) => {
                    if let Err(e) = tally.handle(&shared, index, &message, arrived) {
                        shared.deliveries.error(format!("subscription: {e}"));
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = ended {
            shared.deliveries.error(format!("subscription: {e}"));
        }
        drop(stream);
        // Resume where the last event left off.
        let start = match &tally.continuation {
            Some(sequence) => Start::After(sequence.clone()),
            None => Start::AtTimestampMs(shared.started_ms),
        };
        let mut attempts = 0;
        stream = loop {
            let opened = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return tally,
                opened = subscribe(&client, &consumer_arn, &shard, &start) => opened,
            };
            match opened {
                Ok(stream) => break stream,
                Err(e) => {
                    shared.deliveries.error(format!("resubscribe: {e}"));
                    attempts += 1;
                    if attempts >= MAX_RESUBSCRIBE_ATTEMPTS {
                        tally.gave_up = true;
                        return tally;
                    }
                    // A new subscription within 5 s of the last one is refused.
                    tokio::select! {
                        _ = shutdown.wait_for(|stop| *stop) => return tally,
                        _ = sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        tally.resubscribes += 1;
    }
}

// ----- producers ---------------------------------------------------------------------

#[derive(Deserialize)]
struct PutRecordsOutput<'a> {
    #[serde(rename = "FailedRecordCount", default)]
    failed: u64,
    #[serde(rename = "Records", default, borrow)]
    records: Vec<PutRecordsEntry<'a>>,
}

#[derive(Deserialize)]
struct PutRecordsEntry<'a> {
    #[serde(rename = "ErrorCode", default, borrow)]
    error_code: Option<Cow<'a, str>>,
}

/// What the producers share.
struct Producers {
    stream_json: String,
    epoch: Instant,
    run: u32,
    batch: usize,
    /// Bytes after the header of every record.
    padding: Vec<u8>,
    stats: Arc<Stats>,
    acked: Mutex<Bits>,
    acked_count: AtomicU64,
    /// Worst delay between a batch's scheduled and actual send time, in microseconds.
    max_lag_us: AtomicU64,
}

impl Producers {
    /// The PutRecords body of batch `ticket` sent by `lane` at `sent`.
    fn body(&self, ticket: u64, lane: usize, sent: Instant) -> Bytes {
        let sent_ns = sent.duration_since(self.epoch).as_nanos() as u64;
        let mut data = vec![0u8; RecordHeader::LEN + self.padding.len()];
        data[RecordHeader::LEN..].copy_from_slice(&self.padding);
        let encoded_len = data.len().div_ceil(3) * 4;
        let mut body =
            String::with_capacity(self.stream_json.len() + 32 + self.batch * (encoded_len + 48));
        body.push_str("{\"StreamName\":");
        body.push_str(&self.stream_json);
        body.push_str(",\"Records\":[");
        for i in 0..self.batch {
            let counter = ticket * self.batch as u64 + i as u64;
            RecordHeader {
                sent_ns,
                counter,
                run: self.run,
                lane: lane as u32,
            }
            .write(&mut data);
            if i > 0 {
                body.push(',');
            }
            body.push_str("{\"Data\":\"");
            STANDARD.encode_string(&data, &mut body);
            body.push_str("\",\"PartitionKey\":\"pk-");
            body.push_str(&counter.to_string());
            body.push_str("\"}");
        }
        body.push_str("]}");
        Bytes::from(body)
    }

    /// Notes which records of batch `ticket` were stored.
    fn acknowledge(&self, ticket: u64, response: &[u8]) -> Result<u64, String> {
        let output: PutRecordsOutput<'_> =
            serde_json::from_slice(response).map_err(|e| format!("bad response: {e}"))?;
        let first = ticket * self.batch as u64;
        let stored: Vec<u64> = if output.failed == 0 {
            (0..self.batch as u64).map(|i| first + i).collect()
        } else {
            if output.records.len() != self.batch {
                return Err(format!(
                    "bad response: {} entries for {} records",
                    output.records.len(),
                    self.batch
                ));
            }
            let codes = output
                .records
                .iter()
                .filter_map(|entry| entry.error_code.as_deref());
            self.stats.failed_records(output.failed, codes);
            output
                .records
                .iter()
                .enumerate()
                .filter(|(_, entry)| entry.error_code.is_none())
                .map(|(i, _)| first + i as u64)
                .collect()
        };
        {
            let mut acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
            for counter in &stored {
                acked.insert(*counter);
            }
        }
        self.acked_count
            .fetch_add(stored.len() as u64, Ordering::Relaxed);
        Ok(stored.len() as u64)
    }
}

/// When the batches go out: batch `n` at `start + n / requests_per_sec`, none at or after
/// `deadline`.
struct Schedule {
    next_ticket: AtomicU64,
    start: Instant,
    deadline: Instant,
    requests_per_sec: f64,
}

/// One producer lane: paced PutRecords calls, each sent after the previous one answered.
async fn produce(client: Kinesis, producers: Arc<Producers>, schedule: Arc<Schedule>, lane: usize) {
    let record_size = (RecordHeader::LEN + producers.padding.len()) as u64;
    loop {
        let ticket = schedule.next_ticket.fetch_add(1, Ordering::Relaxed);
        let scheduled =
            schedule.start + Duration::from_secs_f64(ticket as f64 / schedule.requests_per_sec);
        if scheduled >= schedule.deadline || Instant::now() >= schedule.deadline {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let sent = Instant::now();
        let lag = u64::try_from(sent.duration_since(scheduled).as_micros()).unwrap_or(u64::MAX);
        producers.max_lag_us.fetch_max(lag, Ordering::Relaxed);
        let body = producers.body(ticket, lane, sent);
        match client.call("PutRecords", body).await {
            Ok(response) => match producers.acknowledge(ticket, &response) {
                Ok(stored) => {
                    producers
                        .stats
                        .success(lane, sent.elapsed(), stored, stored * record_size)
                }
                Err(e) => producers.stats.error(e),
            },
            Err(e) => producers.stats.error(e.label()),
        }
    }
}

// ----- the measurement ---------------------------------------------------------------

async fn measure(
    client: &Kinesis,
    plan: &FanoutPlan,
    shard: &str,
    consumers: &[String],
    progress: bool,
) -> anyhow::Result<Outcome> {
    let lanes = plan.producers.max(1);
    let batch = plan.batch.max(1);
    let requests_per_sec = plan.rate / batch as f64;
    let max_tickets = (plan.duration.as_secs_f64() * requests_per_sec).ceil() as u64 + 1;
    let mut rng = rand::rng();
    let run = rng.next_u32();
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_sub(1000);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        run,
        lanes,
        counter_limit: max_tickets.saturating_mul(batch as u64),
        deliveries: Stats::new(consumers.len()),
        distinct: consumers.iter().map(|_| AtomicU64::new(0)).collect(),
        started_ms,
    });

    // Open every subscription before the first record is written.
    let mut opening = tokio::task::JoinSet::new();
    for (index, arn) in consumers.iter().enumerate() {
        let client = client.clone();
        let arn = arn.clone();
        let shard = shard.to_owned();
        opening.spawn(async move {
            let opened = subscribe(&client, &arn, &shard, &Start::Latest).await;
            (index, opened)
        });
    }
    let mut streams: Vec<Option<EventStream>> = consumers.iter().map(|_| None).collect();
    while let Some(joined) = opening.join_next().await {
        let (index, opened) = joined.context("subscription task failed")?;
        let stream = opened
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("SubscribeToShard for {}", consumers[index]))?;
        streams[index] = Some(stream);
    }
    let (stop, shutdown) = watch::channel(false);
    let mut readers = Vec::with_capacity(consumers.len());
    for (index, stream) in streams.into_iter().enumerate() {
        let Some(stream) = stream else {
            bail!("subscription {index} was not opened");
        };
        readers.push(tokio::spawn(consume(
            client.clone(),
            Arc::clone(&shared),
            index,
            consumers[index].clone(),
            shard.to_owned(),
            stream,
            shutdown.clone(),
        )));
    }

    let mut padding = vec![0u8; plan.record_size.saturating_sub(RecordHeader::LEN)];
    rng.fill_bytes(&mut padding);
    let producers = Arc::new(Producers {
        stream_json: Value::from(plan.stream.as_str()).to_string(),
        epoch: shared.epoch,
        run,
        batch,
        padding,
        stats: Stats::new(lanes),
        acked: Mutex::new(Bits::default()),
        acked_count: AtomicU64::new(0),
        max_lag_us: AtomicU64::new(0),
    });
    let display = Progress::start("subscribe (deliveries)", &shared.deliveries, progress);
    let start = Instant::now();
    let schedule = Arc::new(Schedule {
        next_ticket: AtomicU64::new(0),
        start,
        deadline: start + plan.duration,
        requests_per_sec,
    });
    let mut workers = Vec::with_capacity(lanes);
    for lane in 0..lanes {
        workers.push(tokio::spawn(produce(
            client.clone(),
            Arc::clone(&producers),
            Arc::clone(&schedule),
            lane,
        )));
    }
    for worker in workers {
        if let Err(e) = worker.await {
            producers.stats.error(format!("producer failed: {e}"));
        }
    }
    let elapsed = start.elapsed();

    // Let the consumers receive what is still on its way.
    let produced = producers.acked_count.load(Ordering::Relaxed);
    let waiting = Instant::now();
    while waiting.elapsed() < STRAGGLER_WAIT
        && shared
            .distinct
            .iter()
            .any(|d| d.load(Ordering::Relaxed) < produced)
    {
        sleep(Duration::from_millis(5)).await;
    }
    let straggler_wait = waiting.elapsed();
    drop(display);
    let _ = stop.send(true);
    let mut tallies = Vec::with_capacity(readers.len());
    for reader in readers {
        match reader.await {
            Ok(tally) => tallies.push(tally),
            Err(e) => {
                shared.deliveries.error(format!("consumer failed: {e}"));
                tallies.push(Tally::default());
            }
        }
    }

    let acked = producers
        .acked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut missing = 0;
    let mut unacknowledged = 0;
    let mut incomplete_consumers = 0;
    for tally in &tallies {
        let lost = acked.count_not_in(&tally.received);
        missing += lost;
        incomplete_consumers += usize::from(lost > 0);
        unacknowledged += tally.received.count_not_in(&acked);
    }
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let deliveries = sum(|t| t.deliveries);
    let out_of_order = sum(|t| t.out_of_order);
    let duplicates = sum(|t| t.duplicates);
    let invalid = sum(|t| t.invalid);
    let foreign = sum(|t| t.foreign);
    let resubscribes = sum(|t| t.resubscribes);
    let gave_up = tallies.iter().filter(|t| t.gave_up).count();

    let put = &producers.stats;
    let put_histogram = put.histogram();
    let put_quantile = |q: f64| {
        if put_histogram.is_empty() {
            0.0
        } else {
            ms(put_histogram.value_at_quantile(q))
        }
    };
    let mut error_kinds = BTreeMap::new();
    for (kind, count) in put.error_kinds() {
        *error_kinds.entry(format!("put: {kind}")).or_default() += count;
    }
    for (kind, count) in shared.deliveries.error_kinds() {
        *error_kinds.entry(kind).or_default() += count;
    }
    if invalid > 0 {
        error_kinds.insert("delivered record with invalid data".to_owned(), invalid);
    }
    let mut report = Report::from_stats("subscribe", put, elapsed);
    report.errors += shared.deliveries.errors() + invalid;
    report.histogram = shared.deliveries.histogram();
    report.error_kinds = error_kinds;
    report.concurrency = lanes;
    report.record_size = plan.record_size;
    report.batch = Some(batch);
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let deliveries_per_sec = deliveries as f64 / seconds;
    report.extra = vec![
        ("target_records_per_sec", json!(round3(plan.rate))),
        ("consumers", json!(consumers.len())),
        ("deliveries_per_sec", json!(round3(deliveries_per_sec))),
        ("deliveries", json!(deliveries)),
        (
            "expected_deliveries",
            json!(produced * consumers.len() as u64),
        ),
        ("missing", json!(missing)),
        ("out_of_order", json!(out_of_order)),
        ("duplicates", json!(duplicates)),
        ("unacknowledged_deliveries", json!(unacknowledged)),
        ("resubscribes", json!(resubscribes)),
        ("put_p50_ms", json!(put_quantile(0.50))),
        ("put_p99_ms", json!(put_quantile(0.99))),
        (
            "producer_lag_max_ms",
            json!(ms(producers.max_lag_us.load(Ordering::Relaxed))),
        ),
        (
            "straggler_wait_s",
            json!(round3(straggler_wait.as_secs_f64())),
        ),
    ];
    if foreign > 0 {
        report.extra.push(("foreign_records", json!(foreign)));
    }
    report.human = Some(format!(
        "{:<16} {:>10.0} records/s {:>10.0} deliveries/s | delivery p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms | missing {missing}, out of order {out_of_order}, errors {} | {} consumers, {} producers, {} B x {batch}, {:.1} s, target {:.0} records/s",
        report.workload,
        report.records_per_sec(),
        deliveries_per_sec,
        report.quantile_ms(0.50),
        report.quantile_ms(0.99),
        report.quantile_ms(0.999),
        report.max_ms(),
        report.errors + report.failed_records,
        consumers.len(),
        lanes,
        plan.record_size,
        elapsed.as_secs_f64(),
        plan.rate,
    ));

    let mut problems = Vec::new();
    if missing > 0 {
        problems.push(format!(
            "{missing} deliveries missing ({incomplete_consumers} of {} consumers incomplete)",
            consumers.len()
        ));
    }
    if out_of_order > 0 {
        problems.push(format!("{out_of_order} records delivered out of order"));
    }
    if gave_up > 0 {
        problems.push(format!("{gave_up} consumers could not resubscribe"));
    }
    Ok(Outcome { report, problems })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_gateway::eventstream::HeaderValue;

    #[test]
    fn record_header_round_trips() {
        let header = RecordHeader {
            sent_ns: 123_456_789_012,
            counter: 77,
            run: 0xdead_beef,
            lane: 3,
        };
        let mut data = vec![0xffu8; 100];
        header.write(&mut data);
        assert_eq!(RecordHeader::read(&data), Some(header));
        assert_eq!(RecordHeader::read(&data[..RecordHeader::LEN - 1]), None);
    }

    #[test]
    fn bits_count_what_is_missing() {
        let mut acked = Bits::default();
        let mut received = Bits::default();
        for i in 0..200 {
            assert!(acked.insert(i));
        }
        for i in (0..200).filter(|i| i % 10 != 0) {
            received.insert(i);
        }
        assert!(!received.insert(1));
        received.insert(500);
        assert_eq!(acked.count_not_in(&received), 20);
        assert_eq!(received.count_not_in(&acked), 1);
    }

    fn shared(run: u32) -> Shared {
        Shared {
            epoch: Instant::now(),
            run,
            lanes: 2,
            counter_limit: 1000,
            deliveries: Stats::new(1),
            distinct: vec![AtomicU64::new(0)],
            started_ms: 0,
        }
    }

    fn event(records: &[RecordHeader]) -> Message {
        let records: Vec<Value> = records
            .iter()
            .map(|h| {
                let mut data = vec![0u8; 40];
                h.write(&mut data);
                json!({ "SequenceNumber": "1", "Data": STANDARD.encode(&data), "PartitionKey": "k" })
            })
            .collect();
        let payload = json!({ "Records": records, "ContinuationSequenceNumber": "42", "MillisBehindLatest": 0 });
        Message::new(payload.to_string())
            .with_header(":event-type", "SubscribeToShardEvent")
            .with_header(":content-type", "application/x-amz-json-1.1")
            .with_header(":message-type", "event")
    }

    #[test]
    fn events_are_tallied() {
        let shared = shared(9);
        let mut tally = Tally::default();
        let h = |counter, lane, run| RecordHeader {
            sent_ns: 0,
            counter,
            run,
            lane,
        };
        let message = event(&[
            h(0, 0, 9),
            h(5, 1, 9),
            h(1, 0, 9),
            h(3, 1, 9), // behind lane 1's 5
            h(1, 0, 9), // duplicate
            h(2, 0, 8), // another run
        ]);
        tally.handle(&shared, 0, &message, Instant::now()).unwrap();
        assert_eq!(tally.deliveries, 5);
        assert_eq!(tally.duplicates, 1);
        assert_eq!(tally.out_of_order, 1);
        assert_eq!(tally.foreign, 1);
        assert_eq!(tally.continuation.as_deref(), Some("42"));
        assert_eq!(shared.distinct[0].load(Ordering::Relaxed), 4);
        assert_eq!(shared.deliveries.records(), 5);
    }

    #[test]
    fn exceptions_are_reported() {
        let shared = shared(1);
        let mut tally = Tally::default();
        let exception = Message::new("{\"message\":\"taken over\"}")
            .with_header(":exception-type", "ResourceInUseException")
            .with_header(":message-type", HeaderValue::from("exception"));
        let error = tally
            .handle(&shared, 0, &exception, Instant::now())
            .unwrap_err();
        assert_eq!(error, "exception ResourceInUseException");
    }

    #[test]
    fn put_bodies_carry_headers_and_padding() {
        let epoch = Instant::now();
        let producers = Producers {
            stream_json: "\"s\"".to_owned(),
            epoch,
            run: 7,
            batch: 3,
            padding: vec![1; 76],
            stats: Stats::new(1),
            acked: Mutex::new(Bits::default()),
            acked_count: AtomicU64::new(0),
            max_lag_us: AtomicU64::new(0),
        };
        let sent = epoch + Duration::from_millis(5);
        let body: Value = serde_json::from_slice(&producers.body(4, 2, sent)).unwrap();
        assert_eq!(body["StreamName"], "s");
        let records = body["Records"].as_array().unwrap();
        assert_eq!(records.len(), 3);
        for (i, record) in records.iter().enumerate() {
            let data = STANDARD.decode(record["Data"].as_str().unwrap()).unwrap();
            assert_eq!(data.len(), 100);
            let header = RecordHeader::read(&data).unwrap();
            assert_eq!(header.counter, 12 + i as u64);
            assert_eq!((header.run, header.lane), (7, 2));
            assert_eq!(header.sent_ns, 5_000_000);
        }
        let partial = br#"{"FailedRecordCount":1,"Records":[{"SequenceNumber":"1","ShardId":"s"},{"ErrorCode":"InternalFailure","ErrorMessage":"x"},{"SequenceNumber":"2","ShardId":"s"}]}"#;
        assert_eq!(producers.acknowledge(4, partial), Ok(2));
        assert_eq!(producers.stats.failed_record_count(), 1);
        let acked = producers.acked.lock().unwrap().clone();
        let mut expected = Bits::default();
        expected.insert(12);
        expected.insert(14);
        assert_eq!(acked.count_not_in(&expected), 0);
        assert_eq!(expected.count_not_in(&acked), 0);
    }
}
