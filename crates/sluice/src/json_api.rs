//! The CLI over the Kinesis JSON API (`--kinesis-endpoint`): stream administration, `put`
//! and `tail` against Sluice's Kinesis listener or any Kinesis-compatible server. Answers
//! are turned into the gRPC API's messages so both paths print alike.

use crate::kinesis::{CallError, Kinesis};
use anyhow::bail;
use base64::Engine;
use serde_json::{Value, json};
use sluice_client::{Position, ShardRecords};
use sluice_proto::v1 as pb;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;

/// Where the CLI's calls go: a node's gRPC API, or with `--kinesis-endpoint` a Kinesis
/// JSON endpoint.
#[derive(clap::Args)]
pub struct ApiTarget {
    #[command(flatten)]
    pub node: crate::grpc::Target,
    /// Use the Kinesis JSON API at this endpoint (http:// or https://) instead of gRPC:
    /// a Sluice node's Kinesis listener or any Kinesis-compatible server. Requests are
    /// signed with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and AWS_REGION when set.
    #[arg(long, env = "SLUICE_KINESIS_ENDPOINT")]
    pub kinesis_endpoint: Option<String>,
}

impl ApiTarget {
    /// The Kinesis client when `--kinesis-endpoint` is given.
    pub fn kinesis(&self) -> anyhow::Result<Option<Kinesis>> {
        self.kinesis_endpoint
            .as_deref()
            .map(|endpoint| Kinesis::new(endpoint, false, 4, self.node.ca_bundle.as_deref()))
            .transpose()
    }
}

/// A call's error in the CLI's words: the error type and the server's message.
fn failed(operation: &str, error: CallError) -> anyhow::Error {
    match error {
        CallError::Api { kind, message, .. } => anyhow::anyhow!("{kind}: {message}"),
        other => anyhow::anyhow!("{operation}: {other}"),
    }
}

async fn call(kinesis: &Kinesis, operation: &str, input: Value) -> anyhow::Result<Value> {
    kinesis
        .call_json(operation, &input)
        .await
        .map_err(|e| failed(operation, e))
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// Epoch milliseconds of a Kinesis timestamp (epoch seconds with fractions).
fn epoch_ms(value: &Value) -> u64 {
    value
        .as_f64()
        .map(|seconds| (seconds * 1000.0).max(0.0) as u64)
        .unwrap_or(0)
}

pub async fn create_stream(
    kinesis: &Kinesis,
    stream: &str,
    shards: u32,
    on_demand: bool,
    tags: HashMap<String, String>,
) -> anyhow::Result<()> {
    let mut input = json!({ "StreamName": stream });
    if on_demand {
        input["StreamModeDetails"] = json!({ "StreamMode": "ON_DEMAND" });
    } else {
        input["ShardCount"] = json!(shards);
    }
    if !tags.is_empty() {
        input["Tags"] = json!(tags);
    }
    call(kinesis, "CreateStream", input).await.map(drop)
}

pub async fn delete_stream(kinesis: &Kinesis, stream: &str, force: bool) -> anyhow::Result<()> {
    let mut input = json!({ "StreamName": stream });
    if force {
        input["EnforceConsumerDeletion"] = json!(true);
    }
    call(kinesis, "DeleteStream", input).await.map(drop)
}

pub async fn split_shard(
    kinesis: &Kinesis,
    stream: &str,
    shard: &str,
    at: &str,
) -> anyhow::Result<()> {
    let input = json!({ "StreamName": stream, "ShardToSplit": shard, "NewStartingHashKey": at });
    call(kinesis, "SplitShard", input).await.map(drop)
}

pub async fn merge_shards(
    kinesis: &Kinesis,
    stream: &str,
    shard: &str,
    adjacent: &str,
) -> anyhow::Result<()> {
    let input =
        json!({ "StreamName": stream, "ShardToMerge": shard, "AdjacentShardToMerge": adjacent });
    call(kinesis, "MergeShards", input).await.map(drop)
}

/// UpdateShardCount (uniform scaling): the current and target counts.
pub async fn update_shard_count(
    kinesis: &Kinesis,
    stream: &str,
    target: u32,
) -> anyhow::Result<pb::UpdateShardCountResponse> {
    let input = json!({
        "StreamName": stream,
        "TargetShardCount": target,
        "ScalingType": "UNIFORM_SCALING",
    });
    let answer = call(kinesis, "UpdateShardCount", input).await?;
    let count = |field: &str| answer[field].as_u64().unwrap_or(0) as u32;
    Ok(pb::UpdateShardCountResponse {
        current_shard_count: count("CurrentShardCount"),
        target_shard_count: count("TargetShardCount"),
    })
}

/// Every stream, following ListStreams pages. Servers without `StreamSummaries` (older
/// API versions) give names only.
pub async fn list_streams(kinesis: &Kinesis) -> anyhow::Result<Vec<pb::StreamSummary>> {
    let mut streams: Vec<pb::StreamSummary> = Vec::new();
    loop {
        let mut input = json!({ "Limit": 100 });
        if let Some(last) = streams.last() {
            input["ExclusiveStartStreamName"] = json!(last.stream_name);
        }
        let page = call(kinesis, "ListStreams", input).await?;
        let before = streams.len();
        match page["StreamSummaries"].as_array() {
            Some(summaries) => streams.extend(summaries.iter().map(|s| pb::StreamSummary {
                stream_name: text(&s["StreamName"]),
                stream_arn: text(&s["StreamARN"]),
                status: text(&s["StreamStatus"]),
                mode: text(&s["StreamModeDetails"]["StreamMode"]),
                created_ms: epoch_ms(&s["StreamCreationTimestamp"]),
            })),
            None => streams.extend(page["StreamNames"].as_array().into_iter().flatten().map(
                |name| pb::StreamSummary {
                    stream_name: text(name),
                    ..Default::default()
                },
            )),
        }
        if page["HasMoreStreams"].as_bool() != Some(true) || streams.len() == before {
            return Ok(streams);
        }
    }
}

/// Every shard of a stream (open and closed), following ListShards pages.
async fn list_shards(kinesis: &Kinesis, stream: &str) -> anyhow::Result<Vec<pb::ShardDescription>> {
    let mut shards = Vec::new();
    let mut input = json!({ "StreamName": stream });
    loop {
        let page = call(kinesis, "ListShards", input).await?;
        shards.extend(page["Shards"].as_array().into_iter().flatten().map(shard));
        match page["NextToken"].as_str() {
            Some(token) if !token.is_empty() => input = json!({ "NextToken": token }),
            _ => return Ok(shards),
        }
    }
}

fn shard(value: &Value) -> pb::ShardDescription {
    let optional = |v: &Value| v.as_str().map(str::to_owned);
    pb::ShardDescription {
        shard_id: text(&value["ShardId"]),
        parent_shard_id: optional(&value["ParentShardId"]),
        adjacent_parent_shard_id: optional(&value["AdjacentParentShardId"]),
        starting_hash_key: text(&value["HashKeyRange"]["StartingHashKey"]),
        ending_hash_key: text(&value["HashKeyRange"]["EndingHashKey"]),
        starting_sequence_number: text(&value["SequenceNumberRange"]["StartingSequenceNumber"]),
        ending_sequence_number: optional(&value["SequenceNumberRange"]["EndingSequenceNumber"]),
    }
}

/// The stream's status from DescribeStreamSummary; `None` when it does not exist.
pub async fn stream_status(kinesis: &Kinesis, stream: &str) -> anyhow::Result<Option<String>> {
    let input = json!({ "StreamName": stream });
    match kinesis.call_json("DescribeStreamSummary", &input).await {
        Ok(answer) => Ok(Some(text(
            &answer["StreamDescriptionSummary"]["StreamStatus"],
        ))),
        Err(error) if error.api_kind() == Some("ResourceNotFoundException") => Ok(None),
        Err(error) => Err(failed("DescribeStreamSummary", error)),
    }
}

/// DescribeStreamSummary, the shards from ListShards (not while CREATING or DELETING, when
/// ListShards refuses) and the tags.
pub async fn describe_stream(
    kinesis: &Kinesis,
    stream: &str,
) -> anyhow::Result<pb::StreamDescription> {
    let answer = call(
        kinesis,
        "DescribeStreamSummary",
        json!({ "StreamName": stream }),
    )
    .await?;
    let summary = &answer["StreamDescriptionSummary"];
    let status = text(&summary["StreamStatus"]);
    let shards = if status == "CREATING" || status == "DELETING" {
        Vec::new()
    } else {
        list_shards(kinesis, stream).await?
    };
    let tags = call(
        kinesis,
        "ListTagsForStream",
        json!({ "StreamName": stream }),
    )
    .await?;
    let tags = tags["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|tag| (text(&tag["Key"]), text(&tag["Value"])))
        .collect();
    Ok(pb::StreamDescription {
        stream_name: text(&summary["StreamName"]),
        stream_arn: text(&summary["StreamARN"]),
        status,
        mode: text(&summary["StreamModeDetails"]["StreamMode"]),
        retention_hours: summary["RetentionPeriodHours"].as_u64().unwrap_or(0) as u32,
        created_ms: epoch_ms(&summary["StreamCreationTimestamp"]),
        open_shard_count: summary["OpenShardCount"].as_u64().unwrap_or(0) as u32,
        shards,
        tags,
    })
}

/// Records PutRecords takes in one call.
const MAX_BATCH_RECORDS: usize = 500;
/// Bytes (data and partition keys) PutRecords takes in one call.
const MAX_BATCH_BYTES: usize = 5 << 20;

/// One record to write (a line of `sluice put`'s input).
pub struct Outgoing {
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// Writes `records` with PutRecords, one call at a time of up to 500 records and 5 MiB.
/// Records a call refuses (throttled, internal failure) go first into the next call, in
/// their order, up to `max_attempts` times each. Returns after every record is written;
/// otherwise fails naming how many were written and the first record (as its 1-based
/// input line) that was not. `progress` is told how many records each call wrote.
pub async fn put_records(
    kinesis: &Kinesis,
    stream: &str,
    records: Vec<Outgoing>,
    max_attempts: u32,
    progress: &dyn Fn(u64),
) -> anyhow::Result<()> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut waiting: std::collections::VecDeque<(usize, u32)> =
        (0..records.len()).map(|index| (index, 0)).collect();
    let mut written = 0usize;
    let mut backoff = Backoff::new(Duration::from_millis(50));
    while !waiting.is_empty() {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(&(index, _)) = waiting.front() {
            let record = &records[index];
            let size = record.data.len() + record.partition_key.len();
            if batch.len() == MAX_BATCH_RECORDS
                || (!batch.is_empty() && bytes + size > MAX_BATCH_BYTES)
            {
                break;
            }
            bytes += size;
            batch.extend(waiting.pop_front());
        }
        let entries: Vec<Value> = batch
            .iter()
            .map(|&(index, _)| {
                json!({
                    "PartitionKey": records[index].partition_key,
                    "Data": engine.encode(&records[index].data),
                })
            })
            .collect();
        let input = json!({ "StreamName": stream, "Records": entries });
        // The records to send again, and why they were not written.
        let (refused, reason) = match kinesis.call_json("PutRecords", &input).await {
            Ok(answer) => {
                let results = answer["Records"].as_array().map_or(&[][..], Vec::as_slice);
                if results.len() != batch.len() {
                    bail!(
                        "PutRecords answered {} results for {} records",
                        results.len(),
                        batch.len()
                    );
                }
                let mut refused = Vec::new();
                let mut reason = String::new();
                for (&entry, result) in batch.iter().zip(results) {
                    if result["SequenceNumber"].is_string() {
                        written += 1;
                    } else {
                        if refused.is_empty() {
                            reason = format!(
                                "{}: {}",
                                text(&result["ErrorCode"]),
                                text(&result["ErrorMessage"])
                            );
                        }
                        refused.push(entry);
                    }
                }
                (refused, reason)
            }
            // A throttled or failed call wrote nothing it acknowledged; an error without an
            // answer (timeout, lost connection) may have written some: sending them again
            // may duplicate, never lose.
            Err(error) if retryable(&error) => {
                (batch.clone(), failed("PutRecords", error).to_string())
            }
            Err(error) => bail!(
                "{written} of {} records written; line {} and maybe others were not: {}",
                records.len(),
                batch[0].0 + 1,
                failed("PutRecords", error)
            ),
        };
        progress((batch.len() - refused.len()) as u64);
        if refused.is_empty() {
            backoff.reset();
            continue;
        }
        if let Some(&(index, _)) = refused
            .iter()
            .find(|&&(_, attempts)| attempts + 1 >= max_attempts)
        {
            bail!(
                "{written} of {} records written; line {} and maybe others were not: {reason}",
                records.len(),
                index + 1,
            );
        }
        for &(index, attempts) in refused.iter().rev() {
            waiting.push_front((index, attempts + 1));
        }
        backoff.wait().await;
    }
    Ok(())
}

/// Doubling waits between attempts, at most 2 s.
struct Backoff {
    first: Duration,
    next: Duration,
}

impl Backoff {
    fn new(first: Duration) -> Backoff {
        Backoff { first, next: first }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(2));
    }

    fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Follows every shard of a stream with GetShardIterator and GetRecords, like the client's
/// `Consumer` over gRPC: a closed shard's children are read once all of their parents are
/// read to the end.
pub struct JsonConsumer {
    events: mpsc::Receiver<anyhow::Result<ShardRecords>>,
    task: tokio::task::JoinHandle<()>,
}

impl JsonConsumer {
    pub async fn start(
        kinesis: Kinesis,
        stream: &str,
        position: Position,
    ) -> anyhow::Result<JsonConsumer> {
        let shards = list_shards(&kinesis, stream).await?;
        let (events, receiver) = mpsc::channel(16);
        let follower = Follower {
            kinesis,
            stream: stream.to_owned(),
            position,
            events,
            started: HashSet::new(),
            finished: HashSet::new(),
        };
        let task = tokio::spawn(follower.run(shards));
        Ok(JsonConsumer {
            events: receiver,
            task,
        })
    }

    /// The next batch of some shard's records; `None` once every shard is finished and no
    /// open shard remains (a deleted stream).
    pub async fn next(&mut self) -> Option<anyhow::Result<ShardRecords>> {
        self.events.recv().await
    }
}

impl Drop for JsonConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The consumer's task: starts readers, learns when shards end, starts children.
struct Follower {
    kinesis: Kinesis,
    stream: String,
    position: Position,
    events: mpsc::Sender<anyhow::Result<ShardRecords>>,
    started: HashSet<String>,
    finished: HashSet<String>,
}

/// How long a reader waits after an empty answer at the tip of its shard.
const IDLE_POLL: Duration = Duration::from_millis(200);

impl Follower {
    async fn run(mut self, mut shards: Vec<pb::ShardDescription>) {
        let (done, mut ended) = mpsc::unbounded_channel::<String>();
        let mut relist = tokio::time::interval(Duration::from_secs(1));
        relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            let known: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
            let mut to_start = Vec::new();
            for shard in &shards {
                if self.started.contains(&shard.shard_id) || self.finished.contains(&shard.shard_id)
                {
                    continue;
                }
                let parents: Vec<&String> = shard
                    .parent_shard_id
                    .iter()
                    .chain(shard.adjacent_parent_shard_id.iter())
                    .filter(|p| known.contains(p.as_str()))
                    .collect();
                let roots = parents.is_empty();
                if first && self.position == Position::Latest {
                    // From now on: closed shards have nothing new.
                    if shard.ending_sequence_number.is_some() {
                        self.finished.insert(shard.shard_id.clone());
                        continue;
                    }
                    to_start.push((shard.shard_id.clone(), "LATEST"));
                    continue;
                }
                if roots || parents.iter().all(|p| self.finished.contains(*p)) {
                    let from = match (first && roots, self.position) {
                        (true, Position::AtTimestamp(_)) => "AT_TIMESTAMP",
                        _ => "TRIM_HORIZON",
                    };
                    to_start.push((shard.shard_id.clone(), from));
                }
            }
            first = false;
            for (shard_id, from) in to_start {
                self.started.insert(shard_id.clone());
                let reader = Reader {
                    kinesis: self.kinesis.clone(),
                    stream: self.stream.clone(),
                    shard_id,
                    events: self.events.clone(),
                };
                let done = done.clone();
                let timestamp = match self.position {
                    Position::AtTimestamp(ms) => ms,
                    _ => 0,
                };
                tokio::spawn(async move {
                    let shard_id = reader.shard_id.clone();
                    if reader.run(from, timestamp).await {
                        let _ = done.send(shard_id);
                    }
                });
            }
            // A shard ends when it is closed and read; its children appear in ListShards.
            tokio::select! {
                Some(shard_id) = ended.recv() => {
                    self.started.remove(&shard_id);
                    self.finished.insert(shard_id);
                }
                _ = relist.tick() => {}
                _ = self.events.closed() => return,
            }
            match list_shards(&self.kinesis, &self.stream).await {
                Ok(listed) => shards = listed,
                Err(error) => {
                    let _ = self.events.send(Err(error)).await;
                    return;
                }
            }
            if self.started.is_empty() && shards.iter().all(|s| self.finished.contains(&s.shard_id))
            {
                return;
            }
        }
    }
}

/// Reads one shard to its end (true) or until the consumer is dropped or fails (false).
struct Reader {
    kinesis: Kinesis,
    stream: String,
    shard_id: String,
    events: mpsc::Sender<anyhow::Result<ShardRecords>>,
}

impl Reader {
    async fn iterator(&self, input: Value) -> Result<String, CallError> {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        loop {
            match self.kinesis.call_json("GetShardIterator", &input).await {
                Ok(answer) => return Ok(text(&answer["ShardIterator"])),
                Err(e) if throttled(&e) => backoff.wait().await,
                Err(e) => return Err(e),
            }
        }
    }

    async fn run(self, from: &str, timestamp_ms: u64) -> bool {
        let mut input = json!({
            "StreamName": self.stream,
            "ShardId": self.shard_id,
            "ShardIteratorType": from,
        });
        if from == "AT_TIMESTAMP" {
            input["Timestamp"] = json!(timestamp_ms as f64 / 1000.0);
        }
        let mut iterator = match self.iterator(input).await {
            Ok(iterator) => iterator,
            Err(error) => return self.fail(error).await,
        };
        let mut last_sequence: Option<String> = None;
        let mut backoff = Backoff::new(Duration::from_millis(100));
        let engine = &base64::engine::general_purpose::STANDARD;
        loop {
            let input = json!({ "ShardIterator": iterator, "Limit": 10000 });
            let answer = match self.kinesis.call_json("GetRecords", &input).await {
                Ok(answer) => answer,
                Err(e) if throttled(&e) => {
                    backoff.wait().await;
                    continue;
                }
                Err(e) if e.api_kind() == Some("ExpiredIteratorException") => {
                    // Five minutes without a call (a consumer that was not read from):
                    // go on after the last record given out.
                    let mut input = json!({
                        "StreamName": self.stream,
                        "ShardId": self.shard_id,
                        "ShardIteratorType": "TRIM_HORIZON",
                    });
                    if let Some(sequence) = &last_sequence {
                        input["ShardIteratorType"] = json!("AFTER_SEQUENCE_NUMBER");
                        input["StartingSequenceNumber"] = json!(sequence);
                    }
                    match self.iterator(input).await {
                        Ok(fresh) => iterator = fresh,
                        Err(error) => return self.fail(error).await,
                    }
                    continue;
                }
                Err(error) => return self.fail(error).await,
            };
            backoff.reset();
            let mut records = Vec::new();
            for record in answer["Records"].as_array().into_iter().flatten() {
                let data = match engine.decode(record["Data"].as_str().unwrap_or_default()) {
                    Ok(data) => data,
                    Err(error) => {
                        let error = CallError::BadResponse(format!("record data: {error}"));
                        return self.fail(error).await;
                    }
                };
                records.push(pb::Record {
                    sequence_number: text(&record["SequenceNumber"]),
                    approximate_arrival_timestamp_ms: epoch_ms(
                        &record["ApproximateArrivalTimestamp"],
                    ),
                    data: data.into(),
                    partition_key: text(&record["PartitionKey"]),
                });
            }
            let behind = answer["MillisBehindLatest"].as_u64().unwrap_or(0);
            if let Some(last) = records.last() {
                last_sequence = Some(last.sequence_number.clone());
                let batch = ShardRecords {
                    shard_id: self.shard_id.clone(),
                    records,
                    millis_behind_latest: behind,
                };
                if self.events.send(Ok(batch)).await.is_err() {
                    return false;
                }
            } else if behind == 0 {
                tokio::time::sleep(IDLE_POLL).await;
            }
            match answer["NextShardIterator"].as_str() {
                Some(next) if !next.is_empty() => iterator = next.to_owned(),
                _ => return true,
            }
        }
    }

    async fn fail(&self, error: CallError) -> bool {
        let error = failed("GetRecords", error).context(format!("read shard {}", self.shard_id));
        let _ = self.events.send(Err(error)).await;
        false
    }
}

/// Errors a PutRecords call is sent again after: throttling, a server failure, or no
/// answer at all.
fn retryable(error: &CallError) -> bool {
    throttled(error)
        || matches!(
            error.api_kind(),
            None | Some("ThrottlingException" | "InternalFailure" | "ServiceUnavailable")
        )
}

fn throttled(error: &CallError) -> bool {
    matches!(
        error.api_kind(),
        Some("ProvisionedThroughputExceededException" | "LimitExceededException")
    )
}
