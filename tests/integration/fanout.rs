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

/// SubscribeToShard on shard 0 from LATEST.
async fn subscribe_latest(
    client: &aws_sdk_kinesis::Client,
    consumer: &str,
) -> Result<
    aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardOutput,
    aws_sdk_kinesis::error::SdkError<
        aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardError,
    >,
> {
    let position = StartingPosition::builder()
        .r#type(ShardIteratorType::Latest)
        .build()
        .expect("a valid starting position");
    client
        .subscribe_to_shard()
        .consumer_arn(consumer)
        .shard_id("shardId-000000000000")
        .starting_position(position)
        .send()
        .await
}

#[tokio::test]
async fn subscribe_to_shard_pushes_records_then_child_shards() {
    let node = Node::start().await;
    let client = node.client();
    create_active(&client, "fan", 1).await;
    let stream_arn = "arn:aws:kinesis:us-east-1:000000000000:stream/fan";
    let consumer = active_consumer(&client, stream_arn, "reader").await;

    let mut output = subscribe_latest(&client, &consumer).await.unwrap();
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
    let refused = subscribe_latest(&client, &consumer).await.unwrap_err();
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

#[tokio::test]
async fn the_same_push_delivery_over_grpc() {
    use sluice_proto::v1::fan_out_client::FanOutClient;
    use sluice_proto::v1::{StartingPositionType, SubscribeToShardRequest};

    let node = Node::start().await;
    let client = node.client();
    create_active(&client, "grpc-fan", 1).await;
    let consumer = active_consumer(
        &client,
        "arn:aws:kinesis:us-east-1:000000000000:stream/grpc-fan",
        "g",
    )
    .await;
    put(&client, "grpc-fan", "before", b"0").await;
    let mut fan_out = FanOutClient::connect(format!("http://{}", node.grpc_addr))
        .await
        .unwrap();
    let mut events = fan_out
        .subscribe_to_shard(SubscribeToShardRequest {
            consumer_arn: consumer.clone(),
            shard_id: "shardId-000000000000".into(),
            starting_position: Some(sluice_proto::v1::StartingPosition {
                r#type: StartingPositionType::TrimHorizon as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut sent = vec![];
    for i in 1..=3 {
        sent.push(
            put(
                &client,
                "grpc-fan",
                &format!("k{i}"),
                format!("{i}").as_bytes(),
            )
            .await
            .1,
        );
    }
    let mut received = vec![];
    while received.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("stream open");
        received.extend(
            event
                .records
                .into_iter()
                .map(|r| (r.sequence_number, r.data)),
        );
    }
    let data: Vec<&[u8]> = received.iter().map(|(_, d)| d.as_ref()).collect();
    assert_eq!(data, [b"0", b"1", b"2", b"3"]);
    assert_eq!(
        received[1..]
            .iter()
            .map(|(s, _)| s.clone())
            .collect::<Vec<_>>(),
        sent
    );

    // Errors carry the Kinesis error type.
    let status = fan_out
        .subscribe_to_shard(SubscribeToShardRequest {
            consumer_arn: consumer.replace("/consumer/g:", "/consumer/nobody:"),
            shard_id: "shardId-000000000000".into(),
            starting_position: Some(sluice_proto::v1::StartingPosition {
                r#type: StartingPositionType::Latest as i32,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("x-sluice-error-type")
            .and_then(|v| v.to_str().ok()),
        Some("ResourceNotFoundException")
    );
}
