//! Provisioned-mode limits (on here, as on AWS): writes over a shard's budget fail per
//! record with AWS's code and message, reads over 5 calls/s fail, and nothing accepted is
//! lost.

use crate::{create_active, read_all};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use sluice_tests::{Node, NodeOptions};

#[tokio::test]
async fn writes_over_the_shard_budget_fail_per_record_and_nothing_accepted_is_lost() {
    let node = Node::start_with(NodeOptions {
        throughput_limits: true,
        ..NodeOptions::default()
    })
    .await;
    let client = node.client();
    create_active(&client, "limited", 1).await;
    let mut accepted = 0;
    let mut throttled = 0;
    // 2,000 records at once against a budget of 1,000 records/s with a one-second burst.
    for batch in 0..4 {
        let entries = (0..500)
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("{batch}-{i}"))
                    .data(Blob::new(format!("{batch}-{i}")))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = client
            .put_records()
            .stream_name("limited")
            .set_records(Some(entries))
            .send()
            .await
            .unwrap();
        for record in out.records() {
            match record.error_code() {
                None => accepted += 1,
                Some(code) => {
                    assert_eq!(code, "ProvisionedThroughputExceededException");
                    assert_eq!(
                        record.error_message(),
                        Some(
                            "Rate exceeded for shard shardId-000000000000 in stream limited under account 000000000000."
                        )
                    );
                    throttled += 1;
                }
            }
        }
        assert_eq!(
            out.failed_record_count(),
            Some(
                out.records()
                    .iter()
                    .filter(|r| r.error_code().is_some())
                    .count() as i32
            )
        );
    }
    assert!(throttled > 0, "some records were throttled");
    assert_eq!(accepted + throttled, 2000);
    let records = read_all(&client, "limited", "shardId-000000000000").await;
    assert_eq!(records.len(), accepted, "every accepted record is readable");

    // The CloudWatch-named series count the same records.
    let (status, metrics) = sluice_tests::http_get(node.kinesis_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!(
            "sluice_incoming_records_total{{stream=\"limited\"}} {accepted}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "sluice_write_provisioned_throughput_exceeded_total{{stream=\"limited\"}} {throttled}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "sluice_put_records_throttled_records_total{{stream=\"limited\"}} {throttled}"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn more_than_five_get_records_calls_a_second_are_throttled() {
    let node = Node::start_with(NodeOptions {
        throughput_limits: true,
        ..NodeOptions::default()
    })
    .await;
    let client = node.client();
    create_active(&client, "reads", 1).await;
    let iterator = client
        .get_shard_iterator()
        .stream_name("reads")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let mut throttled = None;
    for _ in 0..20 {
        match client.get_records().shard_iterator(&iterator).send().await {
            Ok(_) => {}
            Err(error) => {
                throttled = Some(error);
                break;
            }
        }
    }
    let error = throttled.expect("a call beyond 5 per second is refused");
    let service = error.as_service_error().unwrap();
    assert!(
        service.is_provisioned_throughput_exceeded_exception(),
        "{error:?}"
    );
    assert_eq!(
        service.meta().message(),
        Some(
            "Rate exceeded for shard shardId-000000000000 in stream reads under account 000000000000."
        )
    );
}
