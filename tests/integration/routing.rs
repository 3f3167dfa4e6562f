//! A cluster larger than the replication factor: every node serves every shard, the ones
//! it holds no replica of through a node that does (puts split by shard and answered in
//! the caller's order, iterators, GetRecords, SubscribeToShard, a split).

use crate::cluster::cluster_status;
use crate::{create_active, read_all, seq_key};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use sluice_tests::{Node, NodeOptions, wait_active, wait_for};
use std::collections::BTreeMap;
use std::time::Duration;

fn one_replica(join: Option<&Node>) -> NodeOptions {
    NodeOptions {
        config: sluice_server::RawConfig {
            join: join.map(|seed| vec![seed.grpc_addr.to_string()]),
            replication_factor: Some(1),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The first hash key of each of three equal shards.
fn start_hash(shard: usize) -> u128 {
    (u128::MAX / 3) * shard as u128 + u128::from(shard > 0)
}

fn node_id(node: &Node) -> u64 {
    std::fs::read_to_string(node.data_dir.join("node-id"))
        .expect("node id file")
        .trim()
        .parse()
        .expect("a node id")
}

fn shard_id(shard: usize) -> String {
    format!("shardId-{shard:012}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_shards_it_holds_no_replica_of() {
    let first = Node::start_with(one_replica(None)).await;
    let second = Node::start_with(one_replica(Some(&first))).await;
    let third = Node::start_with(one_replica(Some(&first))).await;
    let nodes = [&first, &second, &third];
    wait_for("three members", Duration::from_secs(20), || async {
        cluster_status(&format!("http://{}", first.grpc_addr)).await["Nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3)
    })
    .await;
    create_active(&first.client(), "routed", 3).await;
    for node in nodes {
        wait_active(&node.client(), "routed").await;
    }
    // One replica per shard, on three different nodes: each node holds one shard only.
    let status = cluster_status(&format!("http://{}", first.grpc_addr)).await;
    let holders: BTreeMap<String, u64> = status["Shards"]
        .as_array()
        .expect("shards")
        .iter()
        .filter(|s| s["StreamName"] == "routed")
        .map(|s| {
            let replicas = s["Replicas"].as_array().expect("replicas");
            assert_eq!(replicas.len(), 1, "{s}");
            (
                s["ShardId"].as_str().expect("shard").to_owned(),
                replicas[0].as_u64().expect("id"),
            )
        })
        .collect();
    assert_eq!(holders.len(), 3);
    let distinct: std::collections::BTreeSet<u64> = holders.values().copied().collect();
    assert_eq!(distinct.len(), 3, "{holders:?}");

    // PutRecords through every node, records of all three shards interleaved: each answer
    // sits at its record's position and names the record's shard.
    let mut written: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for (n, node) in nodes.iter().enumerate() {
        let entries: Vec<PutRecordsRequestEntry> = (0..30)
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key("ignored")
                    .explicit_hash_key((start_hash(i % 3) + i as u128).to_string())
                    .data(Blob::new(format!("node{n}-record{i}")))
                    .build()
                    .expect("entry")
            })
            .collect();
        let out = node
            .client()
            .put_records()
            .stream_name("routed")
            .set_records(Some(entries))
            .send()
            .await
            .expect("put records");
        assert_eq!(out.failed_record_count(), Some(0));
        for (i, record) in out.records().iter().enumerate() {
            assert_eq!(record.shard_id(), Some(shard_id(i % 3).as_str()));
            written.entry(shard_id(i % 3)).or_default().push((
                record.sequence_number().expect("sequence").to_owned(),
                format!("node{n}-record{i}").into_bytes(),
            ));
        }
    }
    // Every node reads every shard whole, in order, with the sequence numbers acknowledged.
    for (shard, expected) in &mut written {
        expected.sort_by_key(|(seq, _)| seq_key(seq));
        for node in nodes {
            let read: Vec<(String, Vec<u8>)> = read_all(&node.client(), "routed", shard)
                .await
                .into_iter()
                .map(|r| (r.sequence_number().to_owned(), r.data().as_ref().to_vec()))
                .collect();
            assert_eq!(&read, expected, "{shard} through {}", node.kinesis_addr);
        }
    }

    // A node that does not hold shard 0: LATEST through it, a write through another
    // node that does not hold it, then GetRecords returns exactly that record.
    let holder0 = holders[&shard_id(0)];
    let others: Vec<&Node> = nodes
        .iter()
        .copied()
        .filter(|n| node_id(n) != holder0)
        .collect();
    assert_eq!(others.len(), 2);
    let iterator = others[0]
        .client()
        .get_shard_iterator()
        .stream_name("routed")
        .shard_id(shard_id(0))
        .shard_iterator_type(ShardIteratorType::Latest)
        .send()
        .await
        .expect("iterator")
        .shard_iterator
        .expect("an iterator");
    let latest = others[1]
        .client()
        .put_record()
        .stream_name("routed")
        .partition_key("k")
        .explicit_hash_key("0")
        .data(Blob::new("after-latest"))
        .send()
        .await
        .expect("put record");
    let page = others[0]
        .client()
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .expect("get records");
    let sequences: Vec<&str> = page.records().iter().map(|r| r.sequence_number()).collect();
    assert_eq!(sequences, vec![latest.sequence_number()]);

    // SubscribeToShard through a node that does not hold the shard.
    let stream_arn = first
        .client()
        .describe_stream_summary()
        .stream_name("routed")
        .send()
        .await
        .expect("describe")
        .stream_description_summary()
        .expect("summary")
        .stream_arn()
        .to_owned();
    let consumer = others[0]
        .client()
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name("remote-reader")
        .send()
        .await
        .expect("register")
        .consumer()
        .expect("consumer")
        .consumer_arn()
        .to_owned();
    wait_for("the consumer ACTIVE", Duration::from_secs(20), || async {
        others[0]
            .client()
            .describe_stream_consumer()
            .consumer_arn(&consumer)
            .send()
            .await
            .is_ok_and(|d| {
                d.consumer_description()
                    .is_some_and(|c| c.consumer_status().as_str() == "ACTIVE")
            })
    })
    .await;
    let mut output = others[0]
        .client()
        .subscribe_to_shard()
        .consumer_arn(&consumer)
        .shard_id(shard_id(0))
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::Latest)
                .build()
                .expect("position"),
        )
        .send()
        .await
        .expect("subscribe");
    let mut sent = Vec::new();
    for i in 0..3 {
        let out = others[1]
            .client()
            .put_record()
            .stream_name("routed")
            .partition_key("k")
            .explicit_hash_key(i.to_string())
            .data(Blob::new(format!("pushed-{i}")))
            .send()
            .await
            .expect("put record");
        sent.push(out.sequence_number().to_owned());
    }
    let mut received = Vec::new();
    while received.len() < sent.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), output.event_stream.recv())
            .await
            .expect("an event within 10 s")
            .expect("a well-formed event")
            .expect("the subscription is open");
        if let SubscribeToShardEventStream::SubscribeToShardEvent(event) = event {
            received.extend(
                event
                    .records()
                    .iter()
                    .map(|r| r.sequence_number().to_owned()),
            );
        }
    }
    assert_eq!(received, sent);

    // A split asked of a node that holds neither the shard nor its children.
    others[0]
        .client()
        .split_shard()
        .stream_name("routed")
        .shard_to_split(shard_id(0))
        .new_starting_hash_key((u128::MAX / 6).to_string())
        .send()
        .await
        .expect("split through a node without the shard");
    wait_active(&others[1].client(), "routed").await;
    let child = others[1]
        .client()
        .put_record()
        .stream_name("routed")
        .partition_key("k")
        .explicit_hash_key("5")
        .data(Blob::new("in-a-child"))
        .send()
        .await
        .expect("put into a child");
    assert_eq!(child.shard_id(), "shardId-000000000003");
    // The parent ends at its last record: a reader through any node sees it closed.
    for node in nodes {
        let records = read_all(&node.client(), "routed", &shard_id(0)).await;
        assert_eq!(
            records.last().map(|r| r.sequence_number().to_owned()),
            sent.last().cloned()
        );
    }
}
