//! Split, merge and UpdateShardCount: parents close with an ending sequence number, children
//! start empty, and readers walk from parents to children.

use crate::{create_active, put, read_all};
use aws_sdk_kinesis::types::{ScalingType, ShardIteratorType};
use sluice_tests::{Node, wait_active};

#[tokio::test]
async fn split_then_read_parent_to_the_end_then_children() {
    let node = Node::start().await;
    let client = node.client();
    create_active(&client, "s", 1).await;
    let mut before = Vec::new();
    for i in 0..10 {
        before.push(put(&client, "s", &format!("k{i}"), b"before").await.1);
    }
    client
        .split_shard()
        .stream_name("s")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    wait_active(&client, "s").await;
    let shards = client
        .list_shards()
        .stream_name("s")
        .send()
        .await
        .unwrap()
        .shards()
        .to_vec();
    assert_eq!(shards.len(), 3);
    let parent = &shards[0];
    assert_eq!(
        parent
            .sequence_number_range()
            .unwrap()
            .ending_sequence_number(),
        Some(before.last().unwrap().as_str()),
        "the parent's ending sequence number is its last record"
    );
    assert_eq!(shards[1].parent_shard_id(), Some("shardId-000000000000"));
    assert_eq!(
        shards[2].hash_key_range().unwrap().starting_hash_key(),
        "170141183460469231731687303715884105728"
    );

    // New writes go to the children.
    for i in 0..10 {
        let (shard, _) = put(&client, "s", &format!("k{i}"), b"after").await;
        assert_ne!(shard, "shardId-000000000000");
    }
    // The parent reads to its end, then reports its children and no next iterator.
    let mut iterator = client
        .get_shard_iterator()
        .stream_name("s")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let mut parent_records = 0;
    let children = loop {
        let out = client
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await
            .unwrap();
        parent_records += out.records().len();
        match out.next_shard_iterator() {
            Some(next) => iterator = next.to_owned(),
            None => break out.child_shards().to_vec(),
        }
    };
    assert_eq!(parent_records, 10);
    let child_ids: Vec<_> = children.iter().map(|c| c.shard_id().to_owned()).collect();
    assert_eq!(child_ids, ["shardId-000000000001", "shardId-000000000002"]);
    assert_eq!(children[0].parent_shards(), ["shardId-000000000000"]);
    let in_children: usize = futures_len(&client, &child_ids).await;
    assert_eq!(
        in_children, 10,
        "children start empty and hold only new records"
    );

    // AT_LATEST lists only open shards.
    let open = client
        .list_shards()
        .stream_name("s")
        .shard_filter(
            aws_sdk_kinesis::types::ShardFilter::builder()
                .r#type(aws_sdk_kinesis::types::ShardFilterType::AtLatest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(open.shards().len(), 2);
}

async fn futures_len(client: &aws_sdk_kinesis::Client, shards: &[String]) -> usize {
    let mut total = 0;
    for shard in shards {
        total += read_all(client, "s", shard).await.len();
    }
    total
}

#[tokio::test]
async fn merge_adjacent_shards() {
    let node = Node::start().await;
    let client = node.client();
    create_active(&client, "m", 2).await;
    put(&client, "m", "a", b"1").await;
    client
        .merge_shards()
        .stream_name("m")
        .shard_to_merge("shardId-000000000000")
        .adjacent_shard_to_merge("shardId-000000000001")
        .send()
        .await
        .unwrap();
    wait_active(&client, "m").await;
    let shards = client
        .list_shards()
        .stream_name("m")
        .send()
        .await
        .unwrap()
        .shards()
        .to_vec();
    assert_eq!(shards.len(), 3);
    let merged = &shards[2];
    assert_eq!(merged.parent_shard_id(), Some("shardId-000000000000"));
    assert_eq!(
        merged.adjacent_parent_shard_id(),
        Some("shardId-000000000001")
    );
    assert_eq!(merged.hash_key_range().unwrap().starting_hash_key(), "0");
    let (shard, _) = put(&client, "m", "b", b"2").await;
    assert_eq!(shard, "shardId-000000000002");
}

#[tokio::test]
async fn update_shard_count_scales_uniformly() {
    let node = Node::start().await;
    let client = node.client();
    create_active(&client, "u", 2).await;
    let out = client
        .update_shard_count()
        .stream_name("u")
        .target_shard_count(3)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    assert_eq!(out.current_shard_count(), Some(2));
    assert_eq!(out.target_shard_count(), Some(3));
    wait_active(&client, "u").await;
    let summary = client
        .describe_stream_summary()
        .stream_name("u")
        .send()
        .await
        .unwrap();
    assert_eq!(
        summary
            .stream_description_summary()
            .unwrap()
            .open_shard_count(),
        3
    );
    let too_many = client
        .update_shard_count()
        .stream_name("u")
        .target_shard_count(7)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap_err();
    assert!(too_many.as_service_error().is_some(), "{too_many:?}");
}

/// UpdateShardCount keeps an open shard whose range is already a target range: it stays
/// open and writable (it used to be closed without a successor, failing every write).
#[tokio::test]
async fn update_shard_count_leaves_shards_already_in_place_writable() {
    let node = Node::start().await;
    let client = node.client();
    create_active(&client, "keep", 2).await;
    // Shard 0 (the lower half) splits into the two lower quarters: 2 and 3.
    client
        .split_shard()
        .stream_name("keep")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("85070591730234615865843651857942052864")
        .send()
        .await
        .unwrap();
    wait_active(&client, "keep").await;
    // Four uniform shards: 2 and 3 are in place, only shard 1 splits.
    client
        .update_shard_count()
        .stream_name("keep")
        .target_shard_count(4)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    wait_active(&client, "keep").await;
    let shards = client
        .list_shards()
        .stream_name("keep")
        .send()
        .await
        .unwrap();
    let open: Vec<&str> = shards
        .shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .map(|s| s.shard_id())
        .collect();
    assert_eq!(
        open,
        [
            "shardId-000000000002",
            "shardId-000000000003",
            "shardId-000000000004",
            "shardId-000000000005"
        ]
    );
    // A write to the start of every open shard's range lands there.
    for shard in shards
        .shards()
        .iter()
        .filter(|s| open.contains(&s.shard_id()))
    {
        let start = shard.hash_key_range().unwrap().starting_hash_key();
        let out = client
            .put_record()
            .stream_name("keep")
            .partition_key("k")
            .explicit_hash_key(start)
            .data(aws_sdk_kinesis::primitives::Blob::new(b"after".as_slice()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("write to {}: {e:?}", shard.shard_id()));
        assert_eq!(out.shard_id(), shard.shard_id());
        let read = read_all(&client, "keep", shard.shard_id()).await;
        assert_eq!(read.len(), 1, "{}", shard.shard_id());
    }
}
