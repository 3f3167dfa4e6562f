//! AWS error types and messages for bad input, through the SDK and raw HTTP.

use crate::create_active;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use sluice_tests::{Node, raw_request};

const JSON: &str = "application/x-amz-json-1.1";

async fn call(node: &Node, op: &str, body: &str) -> (u16, serde_json::Value) {
    let response = raw_request(
        node.kinesis_addr,
        Some(&format!("Kinesis_20131202.{op}")),
        JSON,
        body.as_bytes().to_vec(),
    )
    .await;
    (response.status, response.json())
}

#[tokio::test]
async fn not_found_and_in_use() {
    let node = Node::start().await;
    let client = node.client();
    let missing = client
        .describe_stream()
        .stream_name("nope")
        .send()
        .await
        .unwrap_err();
    let service = missing.as_service_error().unwrap();
    assert!(service.is_resource_not_found_exception());
    assert_eq!(
        service.meta().message(),
        Some("Stream nope under account 000000000000 not found.")
    );
    create_active(&client, "dup", 1).await;
    let again = client
        .create_stream()
        .stream_name("dup")
        .shard_count(1)
        .send()
        .await
        .unwrap_err();
    assert!(
        again
            .as_service_error()
            .unwrap()
            .is_resource_in_use_exception()
    );
    let shard = client
        .get_shard_iterator()
        .stream_name("dup")
        .shard_id("shardId-000000000009")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap_err();
    assert!(
        shard
            .as_service_error()
            .unwrap()
            .is_resource_not_found_exception()
    );
}

#[tokio::test]
async fn validation_messages_follow_aws() {
    let node = Node::start().await;
    let (status, body) = call(
        &node,
        "CreateStream",
        r#"{"StreamName":"bad name!","ShardCount":0}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "ValidationException");
    assert_eq!(
        body["message"],
        "2 validation errors detected: Value 'bad name!' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; Value '0' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1"
    );
    let (status, body) = call(&node, "DescribeStream", "{}").await;
    assert_eq!(status, 400);
    assert!(
        body["__type"] == "InvalidArgumentException" || body["__type"] == "ValidationException",
        "{body}"
    );
    let (status, body) = call(
        &node,
        "PutRecords",
        r#"{"StreamName":"s","Records":[{"Data":"AA==","PartitionKey":"a"},{"Data":"AA==","PartitionKey":"b"},{"Data":"AA==","PartitionKey":""}]}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        "1 validation error detected: Value '' at 'records.3.member.partitionKey' failed to satisfy constraint: Member must have length greater than or equal to 1"
    );
}

#[tokio::test]
async fn malformed_bodies_and_unknown_operations() {
    let node = Node::start().await;
    let (status, body) = call(&node, "ListStreams", "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "SerializationException");
    let (status, body) = call(&node, "ListStreams", r#"{"Limit":"ten"}"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "SerializationException", "{body}");
    let (status, body) = call(&node, "NoSuchThing", "{}").await;
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "UnknownOperationException");
    let response = raw_request(node.kinesis_addr, None, JSON, b"{}".to_vec()).await;
    assert_eq!(response.status, 400);
    // Nothing was created by any of that.
    let (status, body) = call(&node, "ListStreams", "{}").await;
    assert_eq!(status, 200);
    assert_eq!(body["StreamNames"], serde_json::json!([]));
}

#[tokio::test]
async fn iterator_and_record_errors() {
    let node = Node::start().await;
    let client = node.client();
    create_active(&client, "e", 1).await;
    let bad = client
        .get_records()
        .shard_iterator("garbage-iterator")
        .send()
        .await
        .unwrap_err();
    assert!(
        bad.as_service_error()
            .unwrap()
            .is_invalid_argument_exception(),
        "{bad:?}"
    );
    let oversize = client
        .put_record()
        .stream_name("e")
        .partition_key("k")
        .data(Blob::new(vec![0u8; 1024 * 1024 + 1]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        oversize.as_service_error().unwrap().meta().code(),
        Some("ValidationException")
    );
    let bad_hash = client
        .put_record()
        .stream_name("e")
        .partition_key("k")
        .explicit_hash_key("340282366920938463463374607431768211456")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert!(
        bad_hash
            .as_service_error()
            .unwrap()
            .is_invalid_argument_exception()
    );
    let no_seq = client
        .get_shard_iterator()
        .stream_name("e")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .send()
        .await
        .unwrap_err();
    assert!(
        no_seq
            .as_service_error()
            .unwrap()
            .is_invalid_argument_exception()
    );
    let wrong_shard_seq = format!("49{:054}", (1u128 << 64) | 5);
    let wrong = client
        .get_shard_iterator()
        .stream_name("e")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .starting_sequence_number(wrong_shard_seq)
        .send()
        .await
        .unwrap_err();
    assert!(
        wrong
            .as_service_error()
            .unwrap()
            .is_invalid_argument_exception()
    );
    // Too much in one PutRecords: 6 records of 1 MiB minus the key.
    let entries = (0..6)
        .map(|_| {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .partition_key("k")
                .data(Blob::new(vec![1u8; 1024 * 1024 - 1]))
                .build()
                .unwrap()
        })
        .collect();
    let too_big = client
        .put_records()
        .stream_name("e")
        .set_records(Some(entries))
        .send()
        .await
        .unwrap_err();
    assert!(
        too_big
            .as_service_error()
            .unwrap()
            .is_invalid_argument_exception(),
        "{too_big:?}"
    );
    // Nothing from those calls was written.
    let records = crate::read_all(&client, "e", "shardId-000000000000").await;
    assert!(records.is_empty());
}
