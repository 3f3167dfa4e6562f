//! `/metrics` on the admin listener: the CloudWatch-named series move with real
//! aws-sdk-kinesis calls, per-shard series exist only while enhanced monitoring is on, and
//! the broker internals and the gateway's request histogram are exported.

use crate::{create_active, put};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    MetricsName, PutRecordsRequestEntry, ShardIteratorType, StartingPosition,
    SubscribeToShardEventStream,
};
use sluice_tests::{Node, NodeOptions, wait_for};
use std::time::Duration;

const SHARD0: &str = "shardId-000000000000";
/// An explicit hash key inside shard 0 of a two-shard stream.
const HASH_IN_SHARD0: &str = "1";

async fn scrape(node: &Node) -> String {
    let admin = node.admin_addr.expect("an admin listener");
    let (status, text) = sluice_tests::http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    text
}

/// The value of one series (`name{labels}` exactly as exported), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

fn assert_value(text: &str, series: &str, expected: f64) {
    assert_eq!(value(text, series), Some(expected), "{series} in\n{text}");
}

fn entries(count: usize, hash_key: Option<&str>) -> Vec<PutRecordsRequestEntry> {
    (0..count)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{i}"))
                .set_explicit_hash_key(hash_key.map(str::to_owned))
                .data(Blob::new(vec![b'x'; 10]))
                .build()
                .expect("a valid entry")
        })
        .collect()
}

#[tokio::test]
async fn cloudwatch_named_series_count_calls_exactly() {
    let node = Node::start_with(NodeOptions {
        admin: true,
        ..NodeOptions::default()
    })
    .await;
    let client = node.client();
    create_active(&client, "metered", 2).await;

    for i in 0..3 {
        put(&client, "metered", &format!("k{i}"), b"0123456789").await;
    }
    for count in [4, 1] {
        let out = client
            .put_records()
            .stream_name("metered")
            .set_records(Some(entries(count, None)))
            .send()
            .await
            .expect("put records");
        assert_eq!(out.failed_record_count(), Some(0));
    }
    let missing = client
        .put_record()
        .stream_name("absent")
        .partition_key("k")
        .data(Blob::new("v"))
        .send()
        .await
        .expect_err("no such stream");
    assert!(
        missing
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception())
    );

    // A shard's record log is fsynced behind the Raft log, within a second of a write.
    sluice_tests::wait_for(
        "a record-log fsync",
        std::time::Duration::from_secs(10),
        || async {
            value(&scrape(&node).await, "sluice_fsync_duration_seconds_count")
                .is_some_and(|n| n >= 1.0)
        },
    )
    .await;
    let text = scrape(&node).await;
    let stream = "{stream=\"metered\"}";
    assert_value(
        &text,
        &format!("sluice_put_record_success_total{stream}"),
        3.0,
    );
    assert_value(
        &text,
        &format!("sluice_put_records_success_total{stream}"),
        2.0,
    );
    assert_value(
        &text,
        &format!("sluice_put_records_failed_records_total{stream}"),
        0.0,
    );
    assert_value(
        &text,
        &format!("sluice_put_records_throttled_records_total{stream}"),
        0.0,
    );
    assert_value(
        &text,
        &format!("sluice_incoming_records_total{stream}"),
        8.0,
    );
    assert_value(
        &text,
        &format!("sluice_put_record_latency_seconds_count{stream}"),
        3.0,
    );
    assert_value(
        &text,
        &format!("sluice_put_records_latency_seconds_count{stream}"),
        2.0,
    );
    assert_value(
        &text,
        "sluice_gateway_request_duration_seconds_count{op=\"PutRecord\",status=\"200\"}",
        3.0,
    );
    assert_value(
        &text,
        "sluice_gateway_request_duration_seconds_count{op=\"PutRecord\",status=\"400\"}",
        1.0,
    );
    assert_value(
        &text,
        "sluice_gateway_request_duration_seconds_count{op=\"PutRecords\",status=\"200\"}",
        2.0,
    );
    assert!(
        value(&text, "sluice_fsync_duration_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // Two shards, one (active) segment each, from the moment the stream is ACTIVE.
    assert_value(&text, &format!("sluice_segments{stream}"), 2.0);
    assert!(
        value(&text, &format!("sluice_disk_bytes{stream}")).is_some(),
        "{text}"
    );
    // No shard-level series without enhanced monitoring.
    assert!(!text.contains("sluice_shard_"), "{text}");
    assert!(!text.contains("stream=\"absent\""), "{text}");
}

#[tokio::test]
async fn shard_level_series_follow_enhanced_monitoring_and_iterator_age_is_set() {
    let node = Node::start_with(NodeOptions {
        admin: true,
        ..NodeOptions::default()
    })
    .await;
    let client = node.client();
    create_active(&client, "watched", 2).await;
    client
        .enable_enhanced_monitoring()
        .stream_name("watched")
        .shard_level_metrics(MetricsName::IncomingRecords)
        .shard_level_metrics(MetricsName::OutgoingRecords)
        .shard_level_metrics(MetricsName::IteratorAgeMilliseconds)
        .send()
        .await
        .expect("enable enhanced monitoring");

    client
        .put_records()
        .stream_name("watched")
        .set_records(Some(entries(3, Some(HASH_IN_SHARD0))))
        .send()
        .await
        .expect("put records");
    let mut iterator = client
        .get_shard_iterator()
        .stream_name("watched")
        .shard_id(SHARD0)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("get shard iterator")
        .shard_iterator
        .expect("an iterator");
    let mut read = 0;
    for _ in 0..2 {
        let out = client
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await
            .expect("get records");
        read += out.records().len();
        iterator = out.next_shard_iterator.expect("an open shard");
    }
    assert_eq!(read, 3);

    let text = scrape(&node).await;
    let shard0 = format!("{{stream=\"watched\",shard=\"{SHARD0}\"}}");
    assert_value(
        &text,
        &format!("sluice_shard_incoming_records_total{shard0}"),
        3.0,
    );
    assert_value(
        &text,
        &format!("sluice_shard_outgoing_records_total{shard0}"),
        3.0,
    );
    // The second GetRecords reached the tip: the reader is not behind.
    assert_value(
        &text,
        &format!("sluice_shard_iterator_age_milliseconds{shard0}"),
        0.0,
    );
    assert_value(
        &text,
        "sluice_get_records_iterator_age_milliseconds{stream=\"watched\"}",
        0.0,
    );
    assert_value(
        &text,
        "sluice_get_records_success_total{stream=\"watched\"}",
        2.0,
    );
    assert_value(
        &text,
        "sluice_get_records_latency_seconds_count{stream=\"watched\"}",
        2.0,
    );
    // Only the metrics that were enabled, and only for shards that saw traffic.
    assert!(
        !text.contains("sluice_shard_incoming_bytes_total"),
        "{text}"
    );
    assert!(!text.contains("shard=\"shardId-000000000001\""), "{text}");

    client
        .disable_enhanced_monitoring()
        .stream_name("watched")
        .shard_level_metrics(MetricsName::All)
        .send()
        .await
        .expect("disable enhanced monitoring");
    let text = scrape(&node).await;
    assert!(!text.contains("sluice_shard_"), "{text}");
    assert_value(
        &text,
        "sluice_incoming_records_total{stream=\"watched\"}",
        3.0,
    );

    // Deleting the stream removes its series.
    client
        .delete_stream()
        .stream_name("watched")
        .send()
        .await
        .expect("delete stream");
    wait_for(
        "the deleted stream's series to go",
        Duration::from_secs(10),
        || async { !scrape(&node).await.contains("stream=\"watched\"") },
    )
    .await;
}

#[tokio::test]
async fn fan_out_series_count_refusals_and_report_millis_behind_latest() {
    let node = Node::start_with(NodeOptions {
        admin: true,
        ..NodeOptions::default()
    })
    .await;
    let client = node.client();
    create_active(&client, "fanned", 1).await;
    let registered = client
        .register_stream_consumer()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/fanned")
        .consumer_name("app")
        .send()
        .await
        .expect("register consumer");
    let consumer = registered
        .consumer()
        .expect("a consumer")
        .consumer_arn()
        .to_owned();
    wait_for(
        "the consumer to be ACTIVE",
        Duration::from_secs(10),
        || async {
            client
                .describe_stream_consumer()
                .consumer_arn(&consumer)
                .send()
                .await
                .is_ok_and(|d| {
                    d.consumer_description()
                        .is_some_and(|c| c.consumer_status().as_str() == "ACTIVE")
                })
        },
    )
    .await;
    let subscribe = || {
        client
            .subscribe_to_shard()
            .consumer_arn(&consumer)
            .shard_id(SHARD0)
            .starting_position(
                StartingPosition::builder()
                    .r#type(ShardIteratorType::TrimHorizon)
                    .build()
                    .expect("a starting position"),
            )
            .send()
    };
    let mut output = subscribe().await.expect("subscribe");
    let event = tokio::time::timeout(Duration::from_secs(10), output.event_stream.recv())
        .await
        .expect("an event within 10 s")
        .expect("a well-formed event")
        .expect("the stream is open");
    assert!(matches!(
        event,
        SubscribeToShardEventStream::SubscribeToShardEvent(_)
    ));
    for _ in 0..2 {
        let refused = subscribe()
            .await
            .expect_err("a second subscription is refused");
        assert!(
            refused
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()),
            "{refused:?}"
        );
    }

    let text = scrape(&node).await;
    let labels = "{stream=\"fanned\",consumer=\"app\"}";
    assert_value(
        &text,
        &format!("sluice_subscribe_to_shard_rate_exceeded_total{labels}"),
        2.0,
    );
    // Nothing was put: the first event is at the tip.
    assert_value(
        &text,
        &format!("sluice_subscribe_to_shard_event_millis_behind_latest{labels}"),
        0.0,
    );
    // The first event, and a heartbeat if the test ran for more than 5 s.
    assert!(
        value(
            &text,
            "sluice_subscribe_to_shard_events_total{stream=\"fanned\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[tokio::test]
async fn per_group_raft_series_name_each_hosted_shard_and_go_with_it() {
    let node = Node::start_with(NodeOptions {
        admin: true,
        ..NodeOptions::default()
    })
    .await;
    let client = node.client();
    create_active(&client, "grouped", 2).await;
    put(&client, "grouped", "key-1", b"one").await;
    let series = |name: &str, shard: u32| {
        format!("sluice_raft_shard_{name}{{stream=\"grouped\",shard=\"shardId-{shard:012}\"}}")
    };

    // The gauges are refreshed every 5 s: wait until both groups have their series.
    wait_for("per-group raft series", Duration::from_secs(30), || async {
        let text = scrape(&node).await;
        (0..2).all(|shard| value(&text, &series("is_leader", shard)) == Some(1.0))
    })
    .await;
    let text = scrape(&node).await;
    for shard in 0..2 {
        // A single node leads both groups; it has been elected in some term.
        assert!(
            value(&text, &series("term", shard)).is_some_and(|t| t >= 1.0),
            "{text}"
        );
        let lag = value(&text, &series("commit_lag_entries", shard));
        assert!(lag.is_some_and(|lag| lag >= 0.0), "{text}");
    }
    // Only the groups hosted here: no third shard.
    assert_eq!(value(&text, &series("term", 2)), None, "{text}");
    assert!(
        value(&text, "sluice_raft_metadata_term").is_some_and(|t| t >= 1.0),
        "{text}"
    );
    assert!(
        value(&text, "sluice_raft_metadata_commit_lag_entries").is_some(),
        "{text}"
    );

    // Deleted: the groups are no longer hosted and their series go.
    client
        .delete_stream()
        .stream_name("grouped")
        .send()
        .await
        .expect("delete stream");
    wait_for(
        "per-group series removed",
        Duration::from_secs(30),
        || async {
            let text = scrape(&node).await;
            !text.contains("stream=\"grouped\",shard=")
        },
    )
    .await;
    node.stop().await;
}
