//! Stream lifecycle and control-plane operations through aws-sdk-kinesis.

use crate::create_active;
use aws_sdk_kinesis::types::{MetricsName, StreamMode, StreamModeDetails};
use sluice_tests::{Node, NodeOptions, wait_for, wait_gone};
use std::time::Duration;

#[tokio::test]
async fn create_describe_list_delete() {
    let node = Node::start().await;
    let client = node.client();
    create_active(&client, "alpha", 3).await;
    create_active(&client, "beta", 1).await;

    let described = client
        .describe_stream()
        .stream_name("alpha")
        .send()
        .await
        .unwrap();
    let description = described.stream_description().unwrap();
    assert_eq!(description.stream_name(), "alpha");
    assert_eq!(
        description.stream_arn(),
        "arn:aws:kinesis:us-east-1:000000000000:stream/alpha"
    );
    assert_eq!(description.shards().len(), 3);
    assert_eq!(description.retention_period_hours(), 24);
    assert_eq!(description.shards()[0].shard_id(), "shardId-000000000000");
    assert_eq!(
        description.shards()[0]
            .hash_key_range()
            .unwrap()
            .starting_hash_key(),
        "0"
    );
    assert_eq!(
        description.shards()[2]
            .hash_key_range()
            .unwrap()
            .ending_hash_key(),
        "340282366920938463463374607431768211455"
    );
    assert!(!description.has_more_shards());

    let limited = client
        .describe_stream()
        .stream_name("alpha")
        .limit(2)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.stream_description().unwrap().shards().len(), 2);
    assert!(limited.stream_description().unwrap().has_more_shards());

    let listed = client.list_streams().send().await.unwrap();
    assert_eq!(listed.stream_names(), ["alpha", "beta"]);
    assert_eq!(listed.stream_summaries().len(), 2);
    let paged = client.list_streams().limit(1).send().await.unwrap();
    assert_eq!(paged.stream_names(), ["alpha"]);
    assert!(paged.has_more_streams());
    let next = client
        .list_streams()
        .next_token(paged.next_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(next.stream_names(), ["beta"]);

    let by_arn = client
        .describe_stream_summary()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/beta")
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_arn
            .stream_description_summary()
            .unwrap()
            .open_shard_count(),
        1
    );

    client
        .delete_stream()
        .stream_name("alpha")
        .send()
        .await
        .unwrap();
    wait_gone(&client, "alpha").await;
    let listed = client.list_streams().send().await.unwrap();
    assert_eq!(listed.stream_names(), ["beta"]);
}

#[tokio::test]
async fn on_demand_streams_start_with_four_shards() {
    let node = Node::start().await;
    let client = node.client();
    client
        .create_stream()
        .stream_name("od")
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    sluice_tests::wait_active(&client, "od").await;
    let summary = client
        .describe_stream_summary()
        .stream_name("od")
        .send()
        .await
        .unwrap();
    let summary = summary.stream_description_summary().unwrap();
    assert_eq!(summary.open_shard_count(), 4);
    assert_eq!(
        summary.stream_mode_details().unwrap().stream_mode(),
        &StreamMode::OnDemand
    );
    let limits = client.describe_limits().send().await.unwrap();
    assert_eq!(limits.on_demand_stream_count(), 1);
    assert_eq!(limits.open_shard_count(), 4);
}

#[tokio::test]
async fn tags_retention_monitoring_and_mode() {
    let node = Node::start().await;
    let client = node.client();
    create_active(&client, "t", 1).await;
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/t";

    client
        .add_tags_to_stream()
        .stream_name("t")
        .tags("b", "2")
        .tags("a", "1")
        .send()
        .await
        .unwrap();
    client
        .tag_resource()
        .resource_arn(arn)
        .tags("c", "3")
        .send()
        .await
        .unwrap();
    let tags = client
        .list_tags_for_stream()
        .stream_name("t")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = tags.tags().iter().map(|t| t.key()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    client
        .remove_tags_from_stream()
        .stream_name("t")
        .tag_keys("a")
        .send()
        .await
        .unwrap();
    client
        .untag_resource()
        .resource_arn(arn)
        .tag_keys("c")
        .send()
        .await
        .unwrap();
    let tags = client
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags().len(), 1);
    assert_eq!(tags.tags()[0].value(), Some("2"));

    client
        .increase_stream_retention_period()
        .stream_name("t")
        .retention_period_hours(48)
        .send()
        .await
        .unwrap();
    let summary = client
        .describe_stream_summary()
        .stream_name("t")
        .send()
        .await
        .unwrap();
    assert_eq!(
        summary
            .stream_description_summary()
            .unwrap()
            .retention_period_hours(),
        48
    );
    let err = client
        .decrease_stream_retention_period()
        .stream_name("t")
        .retention_period_hours(72)
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .unwrap()
            .is_invalid_argument_exception()
    );
    client
        .decrease_stream_retention_period()
        .stream_name("t")
        .retention_period_hours(24)
        .send()
        .await
        .unwrap();

    let enabled = client
        .enable_enhanced_monitoring()
        .stream_name("t")
        .shard_level_metrics(MetricsName::IncomingBytes)
        .send()
        .await
        .unwrap();
    assert!(enabled.current_shard_level_metrics().is_empty());
    assert_eq!(
        enabled.desired_shard_level_metrics(),
        [MetricsName::IncomingBytes]
    );
    let disabled = client
        .disable_enhanced_monitoring()
        .stream_name("t")
        .shard_level_metrics(MetricsName::All)
        .send()
        .await
        .unwrap();
    assert!(disabled.desired_shard_level_metrics().is_empty());

    client
        .update_stream_mode()
        .stream_arn(arn)
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let summary = client
        .describe_stream_summary()
        .stream_name("t")
        .send()
        .await
        .unwrap();
    assert_eq!(
        summary
            .stream_description_summary()
            .unwrap()
            .stream_mode_details()
            .unwrap()
            .stream_mode(),
        &StreamMode::OnDemand
    );
}

#[tokio::test]
async fn consumers_register_describe_list_deregister() {
    let node = Node::start().await;
    let client = node.client();
    create_active(&client, "c", 1).await;
    let stream_arn = "arn:aws:kinesis:us-east-1:000000000000:stream/c";
    let registered = client
        .register_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name("app")
        .send()
        .await
        .unwrap();
    let consumer = registered.consumer().unwrap();
    assert!(
        consumer
            .consumer_arn()
            .starts_with(&format!("{stream_arn}/consumer/app:"))
    );
    let consumer_arn = consumer.consumer_arn().to_owned();
    wait_for("consumer to be ACTIVE", Duration::from_secs(10), || async {
        client
            .describe_stream_consumer()
            .consumer_arn(&consumer_arn)
            .send()
            .await
            .map(|d| d.consumer_description().unwrap().consumer_status().as_str() == "ACTIVE")
            .unwrap_or(false)
    })
    .await;
    let by_name = client
        .describe_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name("app")
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_name.consumer_description().unwrap().stream_arn(),
        stream_arn
    );
    let listed = client
        .list_stream_consumers()
        .stream_arn(stream_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.consumers().len(), 1);
    let again = client
        .register_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name("app")
        .send()
        .await
        .unwrap_err();
    assert!(
        again
            .as_service_error()
            .unwrap()
            .is_resource_in_use_exception()
    );

    // A stream with consumers is only deleted when the caller says so.
    let refused = client
        .delete_stream()
        .stream_name("c")
        .send()
        .await
        .unwrap_err();
    assert!(
        refused
            .as_service_error()
            .unwrap()
            .is_resource_in_use_exception()
    );

    client
        .deregister_stream_consumer()
        .consumer_arn(&consumer_arn)
        .send()
        .await
        .unwrap();
    wait_for("consumer to be gone", Duration::from_secs(10), || async {
        client
            .list_stream_consumers()
            .stream_arn(stream_arn)
            .send()
            .await
            .map(|l| l.consumers().is_empty())
            .unwrap_or(false)
    })
    .await;
}

#[tokio::test]
async fn shard_limit_is_reported_and_enforced() {
    let node = Node::start_with(NodeOptions {
        shard_limit: Some(5),
        ..NodeOptions::default()
    })
    .await;
    let client = node.client();
    create_active(&client, "a", 4).await;
    let err = client
        .create_stream()
        .stream_name("b")
        .shard_count(2)
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .unwrap()
            .is_limit_exceeded_exception(),
        "{err:?}"
    );
    let limits = client.describe_limits().send().await.unwrap();
    assert_eq!(limits.shard_limit(), 5);
    assert_eq!(limits.open_shard_count(), 4);
}
