//! Enhanced fan-out through aws-sdk-kinesis: SubscribeToShard pushes records put after the
//! subscription started, in order, then ends at a split with the children.

use crate::{create_active, put};
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
use sluice_tests::{Node, wait_for};
use std::time::Duration;

async fn active_consumer(client: &aws_sdk_kinesis::Client, stream_arn: &str, name: &str) -> String {
    let registered = client
        .register_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name(name)
        .send()
        .await
        .unwrap();
    let arn = registered.consumer().unwrap().consumer_arn().to_owned();
    wait_for("consumer to be ACTIVE", Duration::from_secs(10), || async {
        client
            .describe_stream_consumer()
            .consumer_arn(&arn)
            .send()
            .await
            .map(|d| d.consumer_description().unwrap().consumer_status().as_str() == "ACTIVE")
            .unwrap_or(false)
    })
    .await;
    arn
}

#[tokio::test]
async fn subscribe_to_shard_pushes_records_then_child_shards() {
    let node = Node::start().await;
    let client = node.client();
    create_active(&client, "fan", 1).await;
    let stream_arn = "arn:aws:kinesis:us-east-1:000000000000:stream/fan";
    let consumer = active_consumer(&client, stream_arn, "reader").await;

    let mut output = client
        .subscribe_to_shard()
        .consumer_arn(&consumer)
        .shard_id("shardId-000000000000")
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::Latest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            put(&client, "fan", &format!("k{i}"), format!("v{i}").as_bytes())
                .await
                .1,
        );
    }
    let mut received = Vec::new();
    let mut last_continuation = None;
    while received.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(10), output.event_stream.recv())
            .await
            .expect("an event within 10 s")
            .expect("a well-formed event")
            .expect("the stream is open");
        if let SubscribeToShardEventStream::SubscribeToShardEvent(event) = event {
            for record in event.records() {
                received.push(record.sequence_number().to_owned());
                assert_eq!(
                    record.data().as_ref(),
                    format!("v{}", received.len() - 1).as_bytes()
                );
            }
            last_continuation = Some(event.continuation_sequence_number().to_owned());
        }
    }
    assert_eq!(received, sent, "every record, in order");
    assert_eq!(
        last_continuation.as_deref(),
        sent.last().map(String::as_str)
    );

    // A second subscription for the same consumer and shard right away is refused.
    let refused = client
        .subscribe_to_shard()
        .consumer_arn(&consumer)
        .shard_id("shardId-000000000000")
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::Latest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert!(
        refused
            .as_service_error()
            .unwrap()
            .is_resource_in_use_exception(),
        "{refused:?}"
    );

    client
        .split_shard()
        .stream_name("fan")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    let children = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), output.event_stream.recv())
            .await
            .expect("an event within 10 s")
            .expect("a well-formed event")
            .expect("the stream is open");
        if let SubscribeToShardEventStream::SubscribeToShardEvent(event) = event
            && !event.child_shards().is_empty()
        {
            break event.child_shards().to_vec();
        }
    };
    let ids: Vec<_> = children.iter().map(|c| c.shard_id().to_owned()).collect();
    assert_eq!(ids, ["shardId-000000000001", "shardId-000000000002"]);
}
