//! The Kinesis control plane of `sluice.v1.Streams`: the same `Broker` calls, rules and
//! errors as the Kinesis API, with protobuf shapes.

use crate::status_of;
use sluice_cluster::{Broker, BrokerError, Shard, Stream, StreamMode, StreamStatus};
use sluice_proto::v1 as pb;
use sluice_types::limits::ON_DEMAND_INITIAL_SHARDS;
use sluice_types::{SequenceNumber, ShardId, StreamName};
use tonic::Status;

/// A `ValidationException`, phrased as AWS phrases one constraint violation.
pub(crate) fn violation(value: Option<&str>, path: &str, constraint: &str) -> Status {
    let value = match value {
        Some(v) => format!("Value '{v}'"),
        None => "Value null".to_owned(),
    };
    status_of(BrokerError::Validation(format!(
        "1 validation error detected: {value} at '{path}' failed to satisfy constraint: {constraint}"
    )))
}

/// Checks a stream name against the Kinesis constraints.
pub(crate) fn stream_name(name: &str) -> Result<&str, Status> {
    if name.is_empty() || name.len() > 128 {
        return Err(violation(
            Some(name),
            "streamName",
            "Member must have length between 1 and 128",
        ));
    }
    StreamName::parse(name).map_err(|_| {
        violation(
            Some(name),
            "streamName",
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
        )
    })?;
    Ok(name)
}

/// A shard id of a request; one that names no shard is reported as Kinesis does.
pub(crate) fn shard_id(broker: &Broker, stream: &str, text: &str) -> Result<ShardId, Status> {
    ShardId::parse(text).map_err(|_| {
        status_of(BrokerError::NotFound(format!(
            "Could not find shard {text} in stream {stream} under account {}.",
            broker.identity().account
        )))
    })
}

pub(crate) async fn create_stream(
    broker: &Broker,
    request: pb::CreateStreamRequest,
) -> Result<pb::CreateStreamResponse, Status> {
    let name = stream_name(&request.stream_name)?;
    let (mode, shard_count) = if request.on_demand {
        if request.shard_count != 0 {
            return Err(status_of(BrokerError::Validation(
                "ShardCount cannot be specified when StreamMode is ON_DEMAND.".to_owned(),
            )));
        }
        (StreamMode::OnDemand, ON_DEMAND_INITIAL_SHARDS)
    } else {
        if request.shard_count == 0 {
            return Err(violation(
                Some("0"),
                "shardCount",
                "Member must have value greater than or equal to 1",
            ));
        }
        (StreamMode::Provisioned, request.shard_count)
    };
    broker
        .create_stream(name, shard_count, mode, request.tags.into_iter().collect())
        .await
        .map_err(status_of)?;
    Ok(pb::CreateStreamResponse {})
}

pub(crate) async fn delete_stream(
    broker: &Broker,
    request: pb::DeleteStreamRequest,
) -> Result<pb::DeleteStreamResponse, Status> {
    let name = stream_name(&request.stream_name)?;
    broker
        .delete_stream(name, request.enforce_consumer_deletion)
        .await
        .map_err(status_of)?;
    Ok(pb::DeleteStreamResponse {})
}

fn shard_description(shard: &Shard) -> pb::ShardDescription {
    let id = shard.shard_id();
    pb::ShardDescription {
        shard_id: id.to_string(),
        parent_shard_id: shard.parent.map(|p| ShardId(p).to_string()),
        adjacent_parent_shard_id: shard.adjacent_parent.map(|p| ShardId(p).to_string()),
        starting_hash_key: shard.start_hash.to_string(),
        ending_hash_key: shard.end_hash.to_string(),
        starting_sequence_number: SequenceNumber::shard_start(id).to_string(),
        ending_sequence_number: shard.closed.map(|ending| {
            ending
                .map_or(SequenceNumber::shard_start(id), |last| {
                    SequenceNumber::of_record(id, last)
                })
                .to_string()
        }),
    }
}

pub(crate) fn describe_stream(
    broker: &Broker,
    request: pb::DescribeStreamRequest,
) -> Result<pb::DescribeStreamResponse, Status> {
    let name = stream_name(&request.stream_name)?;
    let stream = broker.stream(name).map_err(status_of)?;
    // A stream that is still CREATING has no shards to show yet.
    let mut shards: Vec<&Shard> = if stream.status == StreamStatus::Creating {
        Vec::new()
    } else {
        stream.shards.iter().collect()
    };
    shards.sort_by_key(|s| s.id);
    Ok(pb::DescribeStreamResponse {
        stream: Some(pb::StreamDescription {
            stream_name: stream.name.clone(),
            stream_arn: broker.stream_arn(&stream.name),
            status: stream.status.as_aws().to_owned(),
            mode: stream.mode.as_aws().to_owned(),
            retention_hours: stream.retention_hours,
            created_ms: stream.created_ms,
            open_shard_count: stream.open_shards().count() as u32,
            shards: shards.into_iter().map(shard_description).collect(),
            tags: stream.tags.clone().into_iter().collect(),
        }),
    })
}

pub(crate) fn list_streams(
    broker: &Broker,
    request: pb::ListStreamsRequest,
) -> Result<pb::ListStreamsResponse, Status> {
    let limit = match request.limit {
        0 => 100,
        n @ 1..=100 => n as usize,
        n => {
            return Err(violation(
                Some(&n.to_string()),
                "limit",
                "Member must have value less than or equal to 100",
            ));
        }
    };
    let after = request.exclusive_start_stream_name;
    let streams: Vec<Stream> = broker.with_state(|state| {
        state
            .streams
            .values()
            .filter(|s| after.is_empty() || s.name > after)
            .cloned()
            .collect()
    });
    let has_more_streams = streams.len() > limit;
    Ok(pb::ListStreamsResponse {
        streams: streams
            .iter()
            .take(limit)
            .map(|s| pb::StreamSummary {
                stream_name: s.name.clone(),
                stream_arn: broker.stream_arn(&s.name),
                status: s.status.as_aws().to_owned(),
                mode: s.mode.as_aws().to_owned(),
                created_ms: s.created_ms,
            })
            .collect(),
        has_more_streams,
    })
}

pub(crate) async fn split_shard(
    broker: &Broker,
    request: pb::SplitShardRequest,
) -> Result<pb::SplitShardResponse, Status> {
    let name = stream_name(&request.stream_name)?;
    let shard = shard_id(broker, name, &request.shard_id)?;
    broker
        .split_shard(name, shard, &request.new_starting_hash_key)
        .await
        .map_err(status_of)?;
    Ok(pb::SplitShardResponse {})
}

pub(crate) async fn merge_shards(
    broker: &Broker,
    request: pb::MergeShardsRequest,
) -> Result<pb::MergeShardsResponse, Status> {
    let name = stream_name(&request.stream_name)?;
    let shard = shard_id(broker, name, &request.shard_id)?;
    let adjacent = shard_id(broker, name, &request.adjacent_shard_id)?;
    // The broker reports a missing or busy stream and missing or closed shards; the order
    // of the pair is checked here, once both shards are known to be open (as the Kinesis
    // front end does).
    if let Ok(stream) = broker.stream(name)
        && stream.status == StreamStatus::Active
        && let (Some(first), Some(second)) = (stream.shard(shard), stream.shard(adjacent))
        && first.is_open()
        && second.is_open()
        && first.end_hash.checked_add(1) != Some(second.start_hash)
    {
        return Err(status_of(BrokerError::InvalidArgument(format!(
            "Shards {shard} and {adjacent} in stream {name} under account {} are not an adjacent pair of shards eligible for merging",
            broker.identity().account
        ))));
    }
    broker
        .merge_shards(name, shard, adjacent)
        .await
        .map_err(status_of)?;
    Ok(pb::MergeShardsResponse {})
}

pub(crate) async fn update_shard_count(
    broker: &Broker,
    request: pb::UpdateShardCountRequest,
) -> Result<pb::UpdateShardCountResponse, Status> {
    let name = stream_name(&request.stream_name)?;
    let current = broker
        .stream(name)
        .map_err(status_of)?
        .open_shards()
        .count() as u32;
    broker
        .update_shard_count(name, request.target_shard_count)
        .await
        .map_err(status_of)?;
    Ok(pb::UpdateShardCountResponse {
        current_shard_count: current,
        target_shard_count: request.target_shard_count,
    })
}

pub(crate) async fn set_retention(
    broker: &Broker,
    request: pb::SetRetentionRequest,
) -> Result<pb::SetRetentionResponse, Status> {
    let name = stream_name(&request.stream_name)?;
    let current = broker.stream(name).map_err(status_of)?.retention_hours;
    let increase = request.retention_hours >= current;
    broker
        .set_retention(name, request.retention_hours, increase)
        .await
        .map_err(status_of)?;
    Ok(pb::SetRetentionResponse {})
}

pub(crate) async fn add_tags(
    broker: &Broker,
    request: pb::AddTagsRequest,
) -> Result<pb::AddTagsResponse, Status> {
    let name = stream_name(&request.stream_name)?;
    broker.stream(name).map_err(status_of)?;
    broker
        .add_tags(name, request.tags.into_iter().collect())
        .await
        .map_err(status_of)?;
    Ok(pb::AddTagsResponse {})
}

pub(crate) async fn remove_tags(
    broker: &Broker,
    request: pb::RemoveTagsRequest,
) -> Result<pb::RemoveTagsResponse, Status> {
    let name = stream_name(&request.stream_name)?;
    broker.stream(name).map_err(status_of)?;
    broker
        .remove_tags(name, request.tag_keys)
        .await
        .map_err(status_of)?;
    Ok(pb::RemoveTagsResponse {})
}
