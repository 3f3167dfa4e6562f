//! One handler per Kinesis operation: validated input tree in, response tree out. Each
//! handler reads members, calls the broker, and shapes the answer as the AWS model does.

use crate::error::{ApiError, ErrorKind};
use crate::validate;
use crate::value::Value;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use sluice_cluster::{
    Broker, BrokerError, IteratorStart, PutRecordInput, Shard, Stream, StreamMode, StreamStatus,
};
use sluice_types::limits::{
    MAX_GET_RECORDS, MAX_PUT_RECORDS_BYTES, MAX_RECORD_BYTES, ON_DEMAND_INITIAL_SHARDS,
};
use sluice_types::{SequenceNumber, ShardId, parse_consumer_arn, parse_stream_arn};
use std::collections::BTreeMap;

/// Every operation of Kinesis_20131202 this endpoint knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    AddTagsToStream,
    CreateStream,
    DecreaseStreamRetentionPeriod,
    DeleteResourcePolicy,
    DeleteStream,
    DeregisterStreamConsumer,
    DescribeLimits,
    DescribeStream,
    DescribeStreamConsumer,
    DescribeStreamSummary,
    DisableEnhancedMonitoring,
    EnableEnhancedMonitoring,
    GetRecords,
    GetResourcePolicy,
    GetShardIterator,
    IncreaseStreamRetentionPeriod,
    ListShards,
    ListStreamConsumers,
    ListStreams,
    ListTagsForResource,
    ListTagsForStream,
    MergeShards,
    PutRecord,
    PutRecords,
    PutResourcePolicy,
    RegisterStreamConsumer,
    RemoveTagsFromStream,
    SplitShard,
    StartStreamEncryption,
    StopStreamEncryption,
    SubscribeToShard,
    TagResource,
    UntagResource,
    UpdateShardCount,
    UpdateStreamMode,
}

impl Operation {
    pub const ALL: [Operation; 35] = [
        Operation::AddTagsToStream,
        Operation::CreateStream,
        Operation::DecreaseStreamRetentionPeriod,
        Operation::DeleteResourcePolicy,
        Operation::DeleteStream,
        Operation::DeregisterStreamConsumer,
        Operation::DescribeLimits,
        Operation::DescribeStream,
        Operation::DescribeStreamConsumer,
        Operation::DescribeStreamSummary,
        Operation::DisableEnhancedMonitoring,
        Operation::EnableEnhancedMonitoring,
        Operation::GetRecords,
        Operation::GetResourcePolicy,
        Operation::GetShardIterator,
        Operation::IncreaseStreamRetentionPeriod,
        Operation::ListShards,
        Operation::ListStreamConsumers,
        Operation::ListStreams,
        Operation::ListTagsForResource,
        Operation::ListTagsForStream,
        Operation::MergeShards,
        Operation::PutRecord,
        Operation::PutRecords,
        Operation::PutResourcePolicy,
        Operation::RegisterStreamConsumer,
        Operation::RemoveTagsFromStream,
        Operation::SplitShard,
        Operation::StartStreamEncryption,
        Operation::StopStreamEncryption,
        Operation::SubscribeToShard,
        Operation::TagResource,
        Operation::UntagResource,
        Operation::UpdateShardCount,
        Operation::UpdateStreamMode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operation::AddTagsToStream => "AddTagsToStream",
            Operation::CreateStream => "CreateStream",
            Operation::DecreaseStreamRetentionPeriod => "DecreaseStreamRetentionPeriod",
            Operation::DeleteResourcePolicy => "DeleteResourcePolicy",
            Operation::DeleteStream => "DeleteStream",
            Operation::DeregisterStreamConsumer => "DeregisterStreamConsumer",
            Operation::DescribeLimits => "DescribeLimits",
            Operation::DescribeStream => "DescribeStream",
            Operation::DescribeStreamConsumer => "DescribeStreamConsumer",
            Operation::DescribeStreamSummary => "DescribeStreamSummary",
            Operation::DisableEnhancedMonitoring => "DisableEnhancedMonitoring",
            Operation::EnableEnhancedMonitoring => "EnableEnhancedMonitoring",
            Operation::GetRecords => "GetRecords",
            Operation::GetResourcePolicy => "GetResourcePolicy",
            Operation::GetShardIterator => "GetShardIterator",
            Operation::IncreaseStreamRetentionPeriod => "IncreaseStreamRetentionPeriod",
            Operation::ListShards => "ListShards",
            Operation::ListStreamConsumers => "ListStreamConsumers",
            Operation::ListStreams => "ListStreams",
            Operation::ListTagsForResource => "ListTagsForResource",
            Operation::ListTagsForStream => "ListTagsForStream",
            Operation::MergeShards => "MergeShards",
            Operation::PutRecord => "PutRecord",
            Operation::PutRecords => "PutRecords",
            Operation::PutResourcePolicy => "PutResourcePolicy",
            Operation::RegisterStreamConsumer => "RegisterStreamConsumer",
            Operation::RemoveTagsFromStream => "RemoveTagsFromStream",
            Operation::SplitShard => "SplitShard",
            Operation::StartStreamEncryption => "StartStreamEncryption",
            Operation::StopStreamEncryption => "StopStreamEncryption",
            Operation::SubscribeToShard => "SubscribeToShard",
            Operation::TagResource => "TagResource",
            Operation::UntagResource => "UntagResource",
            Operation::UpdateShardCount => "UpdateShardCount",
            Operation::UpdateStreamMode => "UpdateStreamMode",
        }
    }

    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::NotFound(m) => ApiError::new(ErrorKind::ResourceNotFound, m),
            BrokerError::InUse(m) => ApiError::new(ErrorKind::ResourceInUse, m),
            BrokerError::InvalidArgument(m) => ApiError::new(ErrorKind::InvalidArgument, m),
            BrokerError::LimitExceeded(m) => ApiError::new(ErrorKind::LimitExceeded, m),
            BrokerError::Validation(m) => ApiError::new(ErrorKind::Validation, m),
            BrokerError::ExpiredIterator(m) => ApiError::new(ErrorKind::ExpiredIterator, m),
            BrokerError::AccessDenied(m) => ApiError::new(ErrorKind::AccessDenied, m),
            BrokerError::ThroughputExceeded(m) => {
                ApiError::new(ErrorKind::ProvisionedThroughputExceeded, m)
            }
            BrokerError::KmsNotFound(m) => ApiError::new(ErrorKind::KmsNotFound, m),
            BrokerError::KmsDisabled(m) => ApiError::new(ErrorKind::KmsDisabled, m),
            internal => {
                tracing::error!(error = %internal, source = ?std::error::Error::source(&internal), "internal failure");
                ApiError::new(ErrorKind::InternalFailure, "Internal service failure.")
            }
        }
    }
}

// ----- reading members ---------------------------------------------------------------

pub(crate) fn member<'a>(input: &'a Value, key: &str) -> Option<&'a Value> {
    match input.get(key) {
        Some(Value::Null) | None => None,
        Some(value) => Some(value),
    }
}

pub(crate) fn opt_str<'a>(input: &'a Value, key: &str) -> Option<&'a str> {
    match member(input, key) {
        Some(Value::Str(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn opt_int(input: &Value, key: &str) -> Option<i64> {
    match member(input, key) {
        Some(Value::Int(i)) => Some(*i),
        Some(Value::Float(f)) => Some(*f as i64),
        _ => None,
    }
}

fn opt_bool(input: &Value, key: &str) -> Option<bool> {
    match member(input, key) {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    }
}

pub(crate) fn opt_timestamp_ms(input: &Value, key: &str) -> Option<f64> {
    match member(input, key) {
        Some(Value::Timestamp(seconds)) => Some(seconds * 1000.0),
        Some(Value::Int(i)) => Some(*i as f64 * 1000.0),
        Some(Value::Float(f)) => Some(f * 1000.0),
        _ => None,
    }
}

fn opt_list<'a>(input: &'a Value, key: &str) -> &'a [Value] {
    match member(input, key) {
        Some(Value::List(items)) => items,
        _ => &[],
    }
}

fn str_list(input: &Value, key: &str) -> Vec<String> {
    opt_list(input, key)
        .iter()
        .filter_map(|v| match v {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn string_map(input: &Value, key: &str) -> BTreeMap<String, String> {
    match member(input, key) {
        Some(Value::Map(entries)) => entries
            .iter()
            .filter_map(|(k, v)| match v {
                Value::Str(s) => Some((k.clone(), s.clone())),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn bytes_of(input: &Value, key: &str) -> Bytes {
    match member(input, key) {
        Some(Value::Bytes(b)) => Bytes::copy_from_slice(b),
        _ => Bytes::new(),
    }
}

fn obj(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .filter(|(_, v)| !matches!(v, Value::Null))
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn s(text: impl Into<String>) -> Value {
    Value::Str(text.into())
}

fn int(n: impl Into<i64>) -> Value {
    Value::Int(n.into())
}

fn ts(ms: u64) -> Value {
    Value::Timestamp(ms as f64 / 1000.0)
}

fn opt<T>(value: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    value.map_or(Value::Null, f)
}

/// The stream a request names by `StreamName` or `StreamARN`.
fn stream_name(input: &Value) -> Result<String, ApiError> {
    let by_name = opt_str(input, "StreamName");
    let by_arn = opt_str(input, "StreamARN");
    match (by_name, by_arn) {
        (Some(name), Some(arn)) => {
            let from_arn = parse_stream_arn(arn).ok_or_else(|| invalid_arn(arn))?;
            if from_arn.as_str() != name {
                return Err(ApiError::invalid_argument(format!(
                    "StreamARN {arn} and StreamName {name} do not refer to the same stream."
                )));
            }
            Ok(name.to_owned())
        }
        (Some(name), None) => Ok(name.to_owned()),
        (None, Some(arn)) => parse_stream_arn(arn)
            .map(|n| n.as_str().to_owned())
            .ok_or_else(|| invalid_arn(arn)),
        (None, None) => Err(ApiError::invalid_argument(
            "Either StreamName or StreamARN should be provided.",
        )),
    }
}

fn invalid_arn(arn: &str) -> ApiError {
    ApiError::invalid_argument(format!("Invalid ARN: {arn}"))
}

fn not_found(message: String) -> ApiError {
    ApiError::new(ErrorKind::ResourceNotFound, message)
}

fn stream_not_found(broker: &Broker, stream: &str) -> ApiError {
    not_found(format!(
        "Stream {stream} under account {} not found.",
        broker.identity().account
    ))
}

/// A stream that takes reads and writes (ACTIVE or UPDATING); any other stream is
/// reported missing, as AWS does for PutRecord(s) on a stream that is still CREATING.
fn readable_stream(broker: &Broker, name: &str) -> Result<Stream, ApiError> {
    match broker.stream(name) {
        Ok(stream) if matches!(stream.status, StreamStatus::Active | StreamStatus::Updating) => {
            Ok(stream)
        }
        _ => Err(stream_not_found(broker, name)),
    }
}

/// Reads a shard id the way AWS does: the digits after the first `-` (or the whole text
/// when there is none) name the shard index, with any zero padding, up to 2^31-1. So
/// `shardId-000000000001`, `shardId-1`, `shard-1` and `1` all name `shardId-000000000001`.
fn resolve_shard_id(text: &str) -> Option<ShardId> {
    let digits = text
        .split('-')
        .nth(1)
        .filter(|d| !d.is_empty())
        .unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > 10 {
        return None;
    }
    let index: u64 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    u32::try_from(index)
        .ok()
        .filter(|i| *i <= i32::MAX as u32)
        .map(ShardId)
}

/// A shard id that does not resolve at all; AWS echoes the text as given.
fn could_not_find_shard(broker: &Broker, stream: &str, text: &str) -> ApiError {
    not_found(format!(
        "Could not find shard {text} in stream {stream} under account {}.",
        broker.identity().account
    ))
}

// ----- dispatch ----------------------------------------------------------------------

pub async fn handle(
    broker: &Broker,
    operation: Operation,
    input: &Value,
) -> Result<Value, ApiError> {
    match operation {
        Operation::CreateStream => create_stream(broker, input).await,
        Operation::DeleteStream => {
            let name = stream_name(input)?;
            let enforce = opt_bool(input, "EnforceConsumerDeletion").unwrap_or(false);
            broker.delete_stream(&name, enforce).await?;
            Ok(obj(vec![]))
        }
        Operation::DescribeStream => describe_stream(broker, input),
        Operation::DescribeStreamSummary => describe_stream_summary(broker, input),
        Operation::ListStreams => list_streams(broker, input),
        Operation::ListShards => list_shards(broker, input).await,
        Operation::PutRecord => put_record(broker, input).await,
        Operation::PutRecords => put_records(broker, input).await,
        Operation::GetShardIterator => get_shard_iterator(broker, input).await,
        Operation::GetRecords => get_records(broker, input).await,
        // Answered as an event stream by the endpoint, never through here.
        Operation::SubscribeToShard => Err(ApiError::new(
            ErrorKind::InternalFailure,
            "Internal service failure.",
        )),
        Operation::SplitShard => {
            let name = stream_name(input)?;
            let shard = shard_arg(broker, &name, opt_str(input, "ShardToSplit").unwrap_or(""))?;
            let key = opt_str(input, "NewStartingHashKey").unwrap_or("");
            broker.split_shard(&name, shard, key).await?;
            Ok(obj(vec![]))
        }
        Operation::MergeShards => merge_shards(broker, input).await,
        Operation::UpdateShardCount => update_shard_count(broker, input).await,
        Operation::IncreaseStreamRetentionPeriod | Operation::DecreaseStreamRetentionPeriod => {
            let name = stream_name(input)?;
            let hours = opt_int(input, "RetentionPeriodHours").unwrap_or(0);
            let hours = u32::try_from(hours).unwrap_or(u32::MAX);
            let increase = operation == Operation::IncreaseStreamRetentionPeriod;
            broker.set_retention(&name, hours, increase).await?;
            Ok(obj(vec![]))
        }
        Operation::AddTagsToStream => {
            let name = stream_name(input)?;
            broker.stream(&name)?;
            let tags = string_map(input, "Tags");
            check_tag_characters(
                broker,
                &name,
                tags.iter().flat_map(|(k, v)| [k, v]),
                "add tags to",
            )?;
            broker.add_tags(&name, tags).await?;
            Ok(obj(vec![]))
        }
        Operation::RemoveTagsFromStream => {
            let name = stream_name(input)?;
            broker.stream(&name)?;
            let keys = str_list(input, "TagKeys");
            check_tag_characters(broker, &name, keys.iter(), "remove tags from")?;
            broker.remove_tags(&name, keys).await?;
            Ok(obj(vec![]))
        }
        Operation::ListTagsForStream => list_tags_for_stream(broker, input),
        Operation::TagResource => {
            let name = resource_stream(broker, input)?;
            broker.add_tags(&name, string_map(input, "Tags")).await?;
            Ok(obj(vec![]))
        }
        Operation::UntagResource => {
            let name = resource_stream(broker, input)?;
            broker
                .remove_tags(&name, str_list(input, "TagKeys"))
                .await?;
            Ok(obj(vec![]))
        }
        Operation::ListTagsForResource => {
            let name = resource_stream(broker, input)?;
            let stream = broker.stream(&name)?;
            Ok(obj(vec![("Tags", tag_list(stream.tags.iter()))]))
        }
        Operation::DescribeLimits => describe_limits(broker),
        Operation::UpdateStreamMode => {
            let name = stream_name(input)?;
            let mode = match member(input, "StreamModeDetails").and_then(|d| d.get("StreamMode")) {
                Some(Value::Str(m)) if m == "ON_DEMAND" => StreamMode::OnDemand,
                _ => StreamMode::Provisioned,
            };
            broker.update_stream_mode(&name, mode).await?;
            Ok(obj(vec![]))
        }
        Operation::EnableEnhancedMonitoring | Operation::DisableEnhancedMonitoring => {
            let name = stream_name(input)?;
            let enable = operation == Operation::EnableEnhancedMonitoring;
            let (before, after) = broker
                .set_enhanced_metrics(&name, str_list(input, "ShardLevelMetrics"), enable)
                .await?;
            Ok(obj(vec![
                ("StreamName", s(&name)),
                (
                    "CurrentShardLevelMetrics",
                    Value::List(before.into_iter().map(s).collect()),
                ),
                (
                    "DesiredShardLevelMetrics",
                    Value::List(after.into_iter().map(s).collect()),
                ),
                ("StreamARN", s(broker.stream_arn(&name))),
            ]))
        }
        Operation::RegisterStreamConsumer => {
            let name = stream_name(input)?;
            let consumer = opt_str(input, "ConsumerName").unwrap_or("");
            broker.register_consumer(&name, consumer).await?;
            let stream = broker.stream(&name)?;
            let found = stream.consumers.iter().find(|c| c.name == consumer);
            let found = found.ok_or_else(|| {
                ApiError::new(ErrorKind::InternalFailure, "Internal service failure.")
            })?;
            Ok(obj(vec![(
                "Consumer",
                consumer_value(broker, &stream, found, false),
            )]))
        }
        Operation::DescribeStreamConsumer => {
            let (stream, consumer) = find_consumer(broker, input)?;
            let found = stream
                .consumers
                .iter()
                .find(|c| c.name == consumer)
                .ok_or_else(|| consumer_not_found(broker, &stream.name, &consumer))?;
            Ok(obj(vec![(
                "ConsumerDescription",
                consumer_value(broker, &stream, found, true),
            )]))
        }
        Operation::ListStreamConsumers => list_stream_consumers(broker, input),
        Operation::DeregisterStreamConsumer => {
            let (stream, consumer) = find_consumer(broker, input)?;
            broker.deregister_consumer(&stream.name, &consumer).await?;
            Ok(obj(vec![]))
        }
        Operation::StartStreamEncryption => encryption::start(broker, input).await,
        Operation::StopStreamEncryption => encryption::stop(broker, input).await,
        Operation::PutResourcePolicy => policy::put(broker, input).await,
        Operation::GetResourcePolicy => policy::get(broker, input),
        Operation::DeleteResourcePolicy => policy::delete(broker, input).await,
    }
}

fn shard_arg(broker: &Broker, stream: &str, text: &str) -> Result<ShardId, ApiError> {
    resolve_shard_id(text).ok_or_else(|| could_not_find_shard(broker, stream, text))
}

/// MergeShards: `ShardToMerge` must end right below where `AdjacentShardToMerge` starts
/// (AWS refuses the pair the other way round too).
async fn merge_shards(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let name = stream_name(input)?;
    let shard = shard_arg(broker, &name, opt_str(input, "ShardToMerge").unwrap_or(""))?;
    let adjacent = shard_arg(
        broker,
        &name,
        opt_str(input, "AdjacentShardToMerge").unwrap_or(""),
    )?;
    // The broker reports a missing or busy stream and missing or closed shards; the order
    // of the pair is checked here, once both shards are known to be open.
    if let Ok(stream) = broker.stream(&name)
        && stream.status == StreamStatus::Active
        && let (Some(first), Some(second)) = (stream.shard(shard), stream.shard(adjacent))
        && first.is_open()
        && second.is_open()
        && first.end_hash.checked_add(1) != Some(second.start_hash)
    {
        return Err(ApiError::invalid_argument(format!(
            "Shards {shard} and {adjacent} in stream {name} under account {} are not an adjacent pair of shards eligible for merging",
            broker.identity().account
        )));
    }
    broker.merge_shards(&name, shard, adjacent).await?;
    Ok(obj(vec![]))
}

/// Tag keys and values may hold Unicode letters, digits, white space and `_ . / = + - @ :`
/// (AWS also accepts `:`, which its documentation leaves out). `%` gets its own message.
fn check_tag_characters<'a>(
    broker: &Broker,
    stream: &str,
    texts: impl Iterator<Item = &'a String> + Clone,
    verb: &str,
) -> Result<(), ApiError> {
    let allowed = |c: char| {
        c.is_ascii_alphanumeric()
            || "_./=+-@%: ".contains(c)
            || matches!(u32::from(c), 0xC0..=0x1FFF | 0x2C00..=0xD7FF)
    };
    if texts.clone().any(|t| !t.chars().all(allowed)) {
        return Err(ApiError::invalid_argument(
            "Some tags contain invalid characters. Valid characters: Unicode letters, digits, white space, _ . / = + - % @.",
        ));
    }
    if texts.clone().any(|t| t.contains('%')) {
        return Err(ApiError::invalid_argument(format!(
            "Failed to {verb} stream {stream} under account {} because some tags contained illegal characters. The allowed characters are Unicode letters, white-spaces, '_',',','/','=','+','-','@'.",
            broker.identity().account
        )));
    }
    Ok(())
}

// ----- streams -----------------------------------------------------------------------

async fn create_stream(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let name = opt_str(input, "StreamName").unwrap_or("").to_owned();
    // Without StreamModeDetails and ShardCount AWS creates an on-demand stream (4 shards).
    let mode = match member(input, "StreamModeDetails").and_then(|d| d.get("StreamMode")) {
        Some(Value::Str(m)) if m == "ON_DEMAND" => StreamMode::OnDemand,
        Some(_) => StreamMode::Provisioned,
        None if opt_int(input, "ShardCount").is_some() => StreamMode::Provisioned,
        None => StreamMode::OnDemand,
    };
    let shard_count = match (mode, opt_int(input, "ShardCount")) {
        (StreamMode::Provisioned, Some(count)) => u32::try_from(count).unwrap_or(u32::MAX),
        (StreamMode::Provisioned, None) => {
            return Err(ApiError::validation(
                "1 validation error detected: Value null at 'shardCount' failed to satisfy constraint: Member must not be null",
            ));
        }
        (StreamMode::OnDemand, Some(_)) => {
            return Err(ApiError::validation(
                "ShardCount cannot be specified when StreamMode is ON_DEMAND.",
            ));
        }
        (StreamMode::OnDemand, None) => ON_DEMAND_INITIAL_SHARDS,
    };
    broker
        .create_stream(&name, shard_count, mode, string_map(input, "Tags"))
        .await?;
    Ok(obj(vec![]))
}

fn shard_value(shard: &Shard) -> Value {
    let id = shard.shard_id();
    obj(vec![
        ("ShardId", s(id.to_string())),
        (
            "ParentShardId",
            opt(shard.parent, |p| s(ShardId(p).to_string())),
        ),
        (
            "AdjacentParentShardId",
            opt(shard.adjacent_parent, |p| s(ShardId(p).to_string())),
        ),
        (
            "HashKeyRange",
            obj(vec![
                ("StartingHashKey", s(shard.start_hash.to_string())),
                ("EndingHashKey", s(shard.end_hash.to_string())),
            ]),
        ),
        (
            "SequenceNumberRange",
            obj(vec![
                (
                    "StartingSequenceNumber",
                    s(SequenceNumber::shard_start(id).to_string()),
                ),
                (
                    "EndingSequenceNumber",
                    opt(shard.closed, |ending| {
                        s(ending
                            .map_or(SequenceNumber::shard_start(id), |last| {
                                SequenceNumber::of_record(id, last)
                            })
                            .to_string())
                    }),
                ),
            ]),
        ),
    ])
}

fn mode_details(stream: &Stream) -> Value {
    obj(vec![("StreamMode", s(stream.mode.as_aws()))])
}

fn enhanced_monitoring(stream: &Stream) -> Value {
    Value::List(vec![obj(vec![(
        "ShardLevelMetrics",
        Value::List(stream.enhanced_metrics.iter().map(s).collect()),
    )])])
}

fn describe_stream(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let name = stream_name(input)?;
    let stream = broker.stream(&name)?;
    let limit = opt_int(input, "Limit").unwrap_or(100).clamp(1, 100) as usize;
    let start_after = opt_str(input, "ExclusiveStartShardId").map(resolve_shard_id);
    // A stream that is still CREATING has no shards to show yet.
    let mut shards: Vec<&Shard> = if stream.status == StreamStatus::Creating {
        Vec::new()
    } else {
        stream.shards.iter().collect()
    };
    shards.sort_by_key(|s| s.id);
    let shards: Vec<&Shard> = match start_after {
        Some(Some(after)) => shards.into_iter().filter(|s| s.id > after.0).collect(),
        Some(None) => Vec::new(),
        None => shards,
    };
    let has_more = shards.len() > limit;
    let listed: Vec<Value> = shards
        .iter()
        .take(limit)
        .map(|sh| shard_value(sh))
        .collect();
    Ok(obj(vec![(
        "StreamDescription",
        obj(vec![
            ("StreamName", s(&stream.name)),
            ("StreamARN", s(broker.stream_arn(&stream.name))),
            ("StreamStatus", s(stream.status.as_aws())),
            ("StreamModeDetails", mode_details(&stream)),
            ("Shards", Value::List(listed)),
            ("HasMoreShards", Value::Bool(has_more)),
            ("RetentionPeriodHours", int(stream.retention_hours)),
            ("StreamCreationTimestamp", ts(stream.created_ms)),
            ("EnhancedMonitoring", enhanced_monitoring(&stream)),
            ("EncryptionType", encryption::encryption_type(&stream)),
            ("KeyId", encryption::key_id(&stream)),
        ]),
    )]))
}

fn describe_stream_summary(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let name = stream_name(input)?;
    let stream = broker.stream(&name)?;
    let consumers = stream
        .consumers
        .iter()
        .filter(|c| c.status != sluice_cluster::ConsumerStatus::Deleting)
        .count();
    Ok(obj(vec![(
        "StreamDescriptionSummary",
        obj(vec![
            ("StreamName", s(&stream.name)),
            ("StreamARN", s(broker.stream_arn(&stream.name))),
            ("StreamStatus", s(stream.status.as_aws())),
            ("StreamModeDetails", mode_details(&stream)),
            ("RetentionPeriodHours", int(stream.retention_hours)),
            ("StreamCreationTimestamp", ts(stream.created_ms)),
            ("EnhancedMonitoring", enhanced_monitoring(&stream)),
            ("EncryptionType", encryption::encryption_type(&stream)),
            ("KeyId", encryption::key_id(&stream)),
            ("OpenShardCount", int(stream.open_shards().count() as i64)),
            ("ConsumerCount", int(consumers as i64)),
            ("MaxRecordSizeInKiB", int(stream.max_record_size_kib)),
        ]),
    )]))
}

fn list_streams(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let limit = opt_int(input, "Limit").unwrap_or(100).clamp(1, 100) as usize;
    let after = match opt_str(input, "NextToken") {
        Some(token) => Some(live_token(broker, token, "ListStreams")?),
        None => opt_str(input, "ExclusiveStartStreamName").map(str::to_owned),
    };
    let streams: Vec<Stream> = broker.with_state(|state| {
        state
            .streams
            .values()
            .filter(|s| after.as_deref().is_none_or(|a| s.name.as_str() > a))
            .cloned()
            .collect()
    });
    let has_more = streams.len() > limit;
    let page = &streams[..streams.len().min(limit)];
    let next_token = if has_more {
        page.last()
            .map(|last| s(encode_token("ListStreams", &last.name, broker.now_ms())))
    } else {
        None
    };
    Ok(obj(vec![
        (
            "StreamNames",
            Value::List(page.iter().map(|st| s(&st.name)).collect()),
        ),
        ("HasMoreStreams", Value::Bool(has_more)),
        ("NextToken", next_token.unwrap_or(Value::Null)),
        (
            "StreamSummaries",
            Value::List(
                page.iter()
                    .map(|st| {
                        obj(vec![
                            ("StreamName", s(&st.name)),
                            ("StreamARN", s(broker.stream_arn(&st.name))),
                            ("StreamStatus", s(st.status.as_aws())),
                            ("StreamModeDetails", mode_details(st)),
                            ("StreamCreationTimestamp", ts(st.created_ms)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]))
}

/// How long a pagination token stays valid.
const NEXT_TOKEN_TTL_MS: u64 = 300_000;

/// Pagination tokens: URL-safe base64 of `kind|issued ms|position`; they expire after
/// 300 seconds, as AWS's do.
fn encode_token(kind: &str, position: &str, now_ms: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}|{now_ms}|{position}"))
}

fn decode_token(token: &str, kind: &str) -> Result<(u64, String), ApiError> {
    let invalid = || ApiError::invalid_argument("Invalid NextToken.");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, '|');
    let (Some(found_kind), Some(issued), Some(position)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    if found_kind != kind {
        return Err(invalid());
    }
    let issued: u64 = issued.parse().map_err(|_| invalid())?;
    Ok((issued, position.to_owned()))
}

/// Decodes a token and checks its age: AWS's tokens are good for 300 seconds.
fn live_token(broker: &Broker, token: &str, kind: &str) -> Result<String, ApiError> {
    let (issued, position) = decode_token(token, kind)?;
    if broker.now_ms().saturating_sub(issued) > NEXT_TOKEN_TTL_MS {
        return Err(ApiError::new(
            ErrorKind::ExpiredNextToken,
            format!("The timestamp of the NextToken {token} has expired."),
        ));
    }
    Ok(position)
}

async fn list_shards(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let token = opt_str(input, "NextToken");
    let has_stream =
        opt_str(input, "StreamName").is_some() || opt_str(input, "StreamARN").is_some();
    let (name, after) = match token {
        Some(_) if has_stream => {
            return Err(ApiError::invalid_argument(
                "NextToken and StreamName cannot be provided together.",
            ));
        }
        Some(_) if member(input, "ExclusiveStartShardId").is_some() => {
            return Err(ApiError::invalid_argument(
                "NextToken and ExclusiveStartShardId cannot be provided together.",
            ));
        }
        Some(_) if member(input, "StreamCreationTimestamp").is_some() => {
            return Err(ApiError::invalid_argument(
                "NextToken and StreamCreationTimestamp cannot be provided together.",
            ));
        }
        Some(token) => {
            let position = live_token(broker, token, "ListShards")?;
            let (name, shard) = position
                .rsplit_once('|')
                .ok_or_else(|| ApiError::invalid_argument("Invalid NextToken."))?;
            (
                name.to_owned(),
                Some(
                    shard
                        .parse::<u32>()
                        .map_err(|_| ApiError::invalid_argument("Invalid NextToken."))?,
                ),
            )
        }
        None if !has_stream => {
            return Err(ApiError::invalid_argument(
                "Either NextToken or StreamName should be provided.",
            ));
        }
        None => {
            let name = stream_name(input)?;
            let after = opt_str(input, "ExclusiveStartShardId")
                .map(|text| resolve_shard_id(text).map_or(u32::MAX, |id| id.0));
            (name, after)
        }
    };
    let stream = broker.stream(&name)?;
    if !matches!(stream.status, StreamStatus::Active | StreamStatus::Updating) {
        return Err(ApiError::new(
            ErrorKind::ResourceInUse,
            format!(
                "Stream {name} under account {} not ACTIVE or UPDATING, instead in state {}",
                broker.identity().account,
                stream.status.as_aws()
            ),
        ));
    }
    // At most 1000 shards a call, whatever MaxResults asks for (the model allows 10000).
    let limit = opt_int(input, "MaxResults").unwrap_or(1000).clamp(1, 1000) as usize;
    let mut shards: Vec<&Shard> = stream
        .shards
        .iter()
        .filter(|s| after.is_none_or(|a| s.id > a))
        .collect();
    shards.sort_by_key(|s| s.id);
    if let Some(filter) = member(input, "ShardFilter") {
        shards = apply_shard_filter(broker, &stream, shards, filter)?;
    }
    let has_more = shards.len() > limit;
    let page = &shards[..shards.len().min(limit)];
    let next_token = if has_more {
        page.last().map(|last| {
            s(encode_token(
                "ListShards",
                &format!("{name}|{}", last.id),
                broker.now_ms(),
            ))
        })
    } else {
        None
    };
    Ok(obj(vec![
        (
            "Shards",
            Value::List(page.iter().map(|sh| shard_value(sh)).collect()),
        ),
        ("NextToken", next_token.unwrap_or(Value::Null)),
    ]))
}

/// When a shard stopped taking writes: when its children were created.
fn closed_at_ms(stream: &Stream, shard: &Shard) -> Option<u64> {
    shard.closed?;
    stream
        .shards
        .iter()
        .filter(|c| c.parent == Some(shard.id) || c.adjacent_parent == Some(shard.id))
        .map(|c| c.created_ms)
        .min()
        .or(Some(shard.created_ms))
}

fn apply_shard_filter<'a>(
    broker: &Broker,
    stream: &Stream,
    shards: Vec<&'a Shard>,
    filter: &Value,
) -> Result<Vec<&'a Shard>, ApiError> {
    let kind = opt_str(filter, "Type").unwrap_or("");
    let open_at = |shard: &Shard, at_ms: u64| {
        shard.created_ms <= at_ms && closed_at_ms(stream, shard).is_none_or(|closed| closed > at_ms)
    };
    let horizon = broker
        .now_ms()
        .saturating_sub(u64::from(stream.retention_hours) * 3_600_000);
    let timestamp = || -> Result<u64, ApiError> {
        opt_timestamp_ms(filter, "Timestamp")
            .map(|ms| ms.max(0.0) as u64)
            .ok_or_else(|| {
                ApiError::invalid_argument(format!(
                    "Timestamp must be specified for ShardFilter type {kind}."
                ))
            })
    };
    Ok(match kind {
        "AFTER_SHARD_ID" => {
            let after = opt_str(filter, "ShardId").ok_or_else(|| {
                ApiError::invalid_argument(
                    "ShardId must be specified for ShardFilter type AFTER_SHARD_ID.",
                )
            })?;
            let after = resolve_shard_id(after).map_or(u32::MAX, |id| id.0);
            shards.into_iter().filter(|s| s.id > after).collect()
        }
        "AT_LATEST" => shards.into_iter().filter(|s| s.is_open()).collect(),
        "AT_TRIM_HORIZON" => {
            // A stream younger than its retention period has its creation as horizon.
            let at = horizon.max(stream.created_ms);
            shards.into_iter().filter(|s| open_at(s, at)).collect()
        }
        "FROM_TRIM_HORIZON" => shards,
        "AT_TIMESTAMP" => {
            let at = timestamp()?;
            shards.into_iter().filter(|s| open_at(s, at)).collect()
        }
        "FROM_TIMESTAMP" => {
            let at = timestamp()?;
            shards
                .into_iter()
                .filter(|s| open_at(s, at) || s.created_ms > at)
                .collect()
        }
        _ => shards,
    })
}

async fn update_shard_count(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let name = stream_name(input)?;
    let target = opt_int(input, "TargetShardCount").unwrap_or(0);
    let target = u32::try_from(target).unwrap_or(u32::MAX);
    let current = broker.stream(&name)?.open_shards().count();
    broker.update_shard_count(&name, target).await?;
    Ok(obj(vec![
        ("StreamName", s(&name)),
        ("CurrentShardCount", int(current as i64)),
        ("TargetShardCount", int(target)),
        ("StreamARN", s(broker.stream_arn(&name))),
    ]))
}

fn tag_list<'a>(tags: impl Iterator<Item = (&'a String, &'a String)>) -> Value {
    Value::List(
        tags.map(|(k, v)| obj(vec![("Key", s(k)), ("Value", s(v))]))
            .collect(),
    )
}

fn list_tags_for_stream(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let name = stream_name(input)?;
    let stream = broker.stream(&name)?;
    let limit = opt_int(input, "Limit").unwrap_or(50).clamp(1, 50) as usize;
    let start = opt_str(input, "ExclusiveStartTagKey");
    let tags: Vec<(&String, &String)> = stream
        .tags
        .iter()
        .filter(|(k, _)| start.is_none_or(|st| k.as_str() > st))
        .collect();
    let has_more = tags.len() > limit;
    Ok(obj(vec![
        ("Tags", tag_list(tags.into_iter().take(limit))),
        ("HasMoreTags", Value::Bool(has_more)),
    ]))
}

/// The stream a `ResourceARN` names (a stream ARN, or a consumer ARN's stream).
fn resource_stream(broker: &Broker, input: &Value) -> Result<String, ApiError> {
    let arn = opt_str(input, "ResourceARN").unwrap_or("");
    if let Some(name) = parse_stream_arn(arn) {
        return Ok(name.as_str().to_owned());
    }
    if let Some(parts) = parse_consumer_arn(arn) {
        broker.stream(parts.stream.as_str())?;
        return Ok(parts.stream.as_str().to_owned());
    }
    Err(invalid_arn(arn))
}

fn describe_limits(broker: &Broker) -> Result<Value, ApiError> {
    let (open, on_demand) = broker.with_state(|state| {
        (
            state.open_shard_total(),
            state
                .streams
                .values()
                .filter(|s| s.mode == StreamMode::OnDemand)
                .count(),
        )
    });
    Ok(obj(vec![
        ("ShardLimit", int(broker.identity().shard_limit)),
        ("OpenShardCount", int(open)),
        ("OnDemandStreamCount", int(on_demand as i64)),
        (
            "OnDemandStreamCountLimit",
            int(sluice_types::limits::DEFAULT_ON_DEMAND_STREAM_LIMIT),
        ),
    ]))
}

// ----- consumers ---------------------------------------------------------------------

fn consumer_arn_of(broker: &Broker, stream: &str, consumer: &sluice_cluster::Consumer) -> String {
    sluice_types::consumer_arn(
        &broker.stream_arn(stream),
        &consumer.name,
        consumer.created_ms / 1000,
    )
}

fn consumer_value(
    broker: &Broker,
    stream: &Stream,
    consumer: &sluice_cluster::Consumer,
    with_stream: bool,
) -> Value {
    let mut pairs = vec![
        ("ConsumerName", s(&consumer.name)),
        (
            "ConsumerARN",
            s(consumer_arn_of(broker, &stream.name, consumer)),
        ),
        ("ConsumerStatus", s(consumer.status.as_aws())),
        ("ConsumerCreationTimestamp", ts(consumer.created_ms)),
    ];
    if with_stream {
        pairs.push(("StreamARN", s(broker.stream_arn(&stream.name))));
    }
    obj(pairs)
}

fn consumer_not_found(broker: &Broker, stream: &str, consumer: &str) -> ApiError {
    ApiError::new(
        ErrorKind::ResourceNotFound,
        format!(
            "Consumer {consumer} under stream {stream} not found for account {}.",
            broker.identity().account
        ),
    )
}

/// Resolves `ConsumerARN`, or `StreamARN` + `ConsumerName`.
fn find_consumer(broker: &Broker, input: &Value) -> Result<(Stream, String), ApiError> {
    if let Some(arn) = opt_str(input, "ConsumerARN") {
        let parts = parse_consumer_arn(arn).ok_or_else(|| invalid_arn(arn))?;
        let stream = broker.stream(parts.stream.as_str())?;
        let matches = stream.consumers.iter().any(|c| {
            c.name == parts.consumer && c.created_ms / 1000 == parts.created_epoch_seconds
        });
        if !matches {
            return Err(consumer_not_found(broker, &stream.name, &parts.consumer));
        }
        return Ok((stream, parts.consumer));
    }
    match (opt_str(input, "StreamARN"), opt_str(input, "ConsumerName")) {
        (Some(arn), Some(consumer)) => {
            let name = parse_stream_arn(arn).ok_or_else(|| invalid_arn(arn))?;
            Ok((broker.stream(name.as_str())?, consumer.to_owned()))
        }
        _ => Err(ApiError::invalid_argument(
            "Either ConsumerARN or both ConsumerName and StreamARN must be provided.",
        )),
    }
}

fn list_stream_consumers(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let arn = opt_str(input, "StreamARN").unwrap_or("");
    let name = parse_stream_arn(arn).ok_or_else(|| invalid_arn(arn))?;
    let stream = broker.stream(name.as_str())?;
    // At most 100 consumers a call, whatever MaxResults asks for (the model allows 10000).
    let limit = opt_int(input, "MaxResults").unwrap_or(100).clamp(1, 100) as usize;
    let after = match opt_str(input, "NextToken") {
        Some(token) => Some(live_token(broker, token, "ListStreamConsumers")?),
        None => None,
    };
    let consumers: Vec<&sluice_cluster::Consumer> = stream
        .consumers
        .iter()
        .filter(|c| after.as_deref().is_none_or(|a| c.name.as_str() > a))
        .collect();
    let has_more = consumers.len() > limit;
    let page = &consumers[..consumers.len().min(limit)];
    let next = if has_more {
        page.last().map(|c| {
            s(encode_token(
                "ListStreamConsumers",
                &c.name,
                broker.now_ms(),
            ))
        })
    } else {
        None
    };
    Ok(obj(vec![
        (
            "Consumers",
            Value::List(
                page.iter()
                    .map(|c| consumer_value(broker, &stream, c, false))
                    .collect(),
            ),
        ),
        ("NextToken", next.unwrap_or(Value::Null)),
    ]))
}

// ----- records -----------------------------------------------------------------------

/// Parses and range-checks an ExplicitHashKey (the model has checked its digits).
fn explicit_hash_key(input: &Value) -> Result<Option<u128>, ApiError> {
    let Some(text) = opt_str(input, "ExplicitHashKey") else {
        return Ok(None);
    };
    text.parse::<u128>().map(Some).map_err(|_| {
        ApiError::invalid_argument(format!(
            "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {text}"
        ))
    })
}

/// A record's key and data; its ExplicitHashKey is read once the stream is known.
fn record_input(input: &Value) -> PutRecordInput {
    PutRecordInput {
        partition_key: opt_str(input, "PartitionKey").unwrap_or("").to_owned(),
        explicit_hash_key: None,
        data: bytes_of(input, "Data"),
    }
}

/// A record whose data and partition key together exceed the 1 MiB record limit, in the
/// words AWS uses for the data member.
fn record_too_large(path: &str, data_len: usize) -> ApiError {
    let buffer = format!("java.nio.HeapByteBuffer[pos=0 lim={data_len} cap={data_len}]");
    validate::validation_exception(&[validate::violation(
        Some(&buffer),
        path,
        &format!("Member must have length less than or equal to {MAX_RECORD_BYTES}"),
    )])
}

async fn put_record(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let name = stream_name(input)?;
    let mut record = record_input(input);
    if record.data.len() + record.partition_key.len() > MAX_RECORD_BYTES {
        return Err(record_too_large("data", record.data.len()));
    }
    // AWS looks the stream up before it reads the hash key and the ordering number.
    readable_stream(broker, &name)?;
    record.explicit_hash_key = explicit_hash_key(input)?;
    if let Some(ordering) = opt_str(input, "SequenceNumberForOrdering") {
        // AWS only checks the number is one of its own; it orders by arrival anyway.
        if SequenceNumber::parse(ordering).is_err() {
            return Err(ApiError::invalid_argument(format!(
                "ExclusiveMinimumSequenceNumber {ordering} used in PutRecord on stream {name} under account {} is invalid.",
                broker.identity().account
            )));
        }
    }
    match Some(broker.put_record(&name, record).await?) {
        Some(Ok(out)) => Ok(obj(vec![
            ("ShardId", s(out.shard.to_string())),
            ("SequenceNumber", s(out.sequence.to_string())),
        ])),
        Some(Err(failure)) if failure.code == "ProvisionedThroughputExceededException" => Err(
            ApiError::new(ErrorKind::ProvisionedThroughputExceeded, failure.message),
        ),
        _ => Err(ApiError::new(
            ErrorKind::InternalFailure,
            "Internal service failure.",
        )),
    }
}

async fn put_records(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let name = stream_name(input)?;
    let entries = opt_list(input, "Records");
    let mut records = Vec::with_capacity(entries.len());
    let mut total = 0usize;
    for (i, item) in entries.iter().enumerate() {
        let record = record_input(item);
        let size = record.data.len() + record.partition_key.len();
        if size > MAX_RECORD_BYTES {
            return Err(record_too_large(
                &format!("records.{}.member.data", i + 1),
                record.data.len(),
            ));
        }
        total += size;
        records.push(record);
    }
    if total > MAX_PUT_RECORDS_BYTES {
        return Err(ApiError::invalid_argument(
            "Records size exceeds 5 MB limit",
        ));
    }
    readable_stream(broker, &name)?;
    for (record, item) in records.iter_mut().zip(entries) {
        record.explicit_hash_key = explicit_hash_key(item)?;
    }
    let results = broker.put_records(&name, records).await?;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let entries = results
        .into_iter()
        .map(|result| match result {
            Ok(out) => obj(vec![
                ("SequenceNumber", s(out.sequence.to_string())),
                ("ShardId", s(out.shard.to_string())),
            ]),
            Err(failure) => obj(vec![
                ("ErrorCode", s(failure.code)),
                ("ErrorMessage", s(failure.message)),
            ]),
        })
        .collect();
    Ok(obj(vec![
        ("FailedRecordCount", int(failed as i64)),
        ("Records", Value::List(entries)),
    ]))
}

const ITERATOR_TYPES_MESSAGE: &str = "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber.";

async fn get_shard_iterator(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let name = stream_name(input)?;
    let shard_text = opt_str(input, "ShardId").unwrap_or("");
    let shard = resolve_shard_id(shard_text)
        .ok_or_else(|| could_not_find_shard(broker, &name, shard_text))?;
    // A missing stream, one still CREATING, and a missing shard all read the same.
    let exists = broker
        .stream(&name)
        .ok()
        .filter(|st| matches!(st.status, StreamStatus::Active | StreamStatus::Updating))
        .is_some_and(|st| st.shard(shard).is_some());
    if !exists {
        return Err(not_found(format!(
            "Shard {shard} in stream {name} under account {} does not exist",
            broker.identity().account
        )));
    }
    let kind = opt_str(input, "ShardIteratorType").unwrap_or("");
    let sequence = opt_str(input, "StartingSequenceNumber");
    let timestamp = opt_timestamp_ms(input, "Timestamp");
    let start = match (kind, sequence) {
        ("AT_SEQUENCE_NUMBER", Some(seq)) => IteratorStart::AtSequence(seq.to_owned()),
        ("AFTER_SEQUENCE_NUMBER", Some(seq)) => IteratorStart::AfterSequence(seq.to_owned()),
        ("AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER", None) => {
            return Err(ApiError::invalid_argument(format!(
                "{ITERATOR_TYPES_MESSAGE} Request specified {kind} and no StartingSequenceNumber."
            )));
        }
        ("TRIM_HORIZON" | "LATEST" | "AT_TIMESTAMP", Some(_)) => {
            return Err(ApiError::invalid_argument(format!(
                "{ITERATOR_TYPES_MESSAGE} Request specified {kind} and also a StartingSequenceNumber."
            )));
        }
        ("TRIM_HORIZON", None) => IteratorStart::TrimHorizon,
        ("LATEST", None) => IteratorStart::Latest,
        ("AT_TIMESTAMP", None) => {
            let Some(ms) = timestamp else {
                return Err(ApiError::invalid_argument(
                    "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. Current request has no timestamp parameter.",
                ));
            };
            let now = broker.now_ms();
            if ms > now as f64 {
                return Err(ApiError::invalid_argument(format!(
                    "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. timestampInMillis: {}, currentTimestampInMillis: {now}",
                    ms as u64
                )));
            }
            IteratorStart::AtTimestampMs(ms.max(0.0) as u64)
        }
        _ => {
            return Err(ApiError::invalid_argument(format!(
                "Invalid ShardIteratorType: {kind}"
            )));
        }
    };
    let iterator = broker
        .get_shard_iterator(&name, &shard.to_string(), start)
        .await?;
    Ok(obj(vec![("ShardIterator", s(iterator))]))
}

async fn get_records(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let iterator = opt_str(input, "ShardIterator").unwrap_or("");
    let limit = opt_int(input, "Limit")
        .unwrap_or(MAX_GET_RECORDS as i64)
        .clamp(1, MAX_GET_RECORDS as i64) as usize;
    let out = broker.get_records(iterator, limit).await?;
    let records = out
        .records
        .iter()
        .map(|r| record_value(out.shard, r))
        .collect();
    let children = out.child_shards.as_deref().map(child_shards_value);
    Ok(obj(vec![
        ("Records", Value::List(records)),
        ("NextShardIterator", opt(out.next_iterator, s)),
        ("MillisBehindLatest", int(out.millis_behind_latest as i64)),
        ("ChildShards", children.unwrap_or(Value::Null)),
    ]))
}

/// One record as GetRecords and SubscribeToShard events carry it.
pub(crate) fn record_value(shard: ShardId, record: &sluice_cluster::StoredRecord) -> Value {
    obj(vec![
        (
            "SequenceNumber",
            s(SequenceNumber::of_record(shard, record.offset).to_string()),
        ),
        ("ApproximateArrivalTimestamp", ts(record.arrival_ms)),
        ("Data", Value::Bytes(record.data.to_vec())),
        ("PartitionKey", s(&record.partition_key)),
    ])
}

/// The `ChildShards` member at the end of a closed shard.
pub(crate) fn child_shards_value(children: &[sluice_cluster::ChildShard]) -> Value {
    Value::List(
        children
            .iter()
            .map(|c| {
                obj(vec![
                    ("ShardId", s(c.shard.to_string())),
                    (
                        "ParentShards",
                        Value::List(c.parents.iter().map(|p| s(p.to_string())).collect()),
                    ),
                    (
                        "HashKeyRange",
                        obj(vec![
                            ("StartingHashKey", s(c.start_hash.to_string())),
                            ("EndingHashKey", s(c.end_hash.to_string())),
                        ]),
                    ),
                ])
            })
            .collect(),
    )
}

mod encryption;
mod policy;
#[cfg(test)]
mod tests;
