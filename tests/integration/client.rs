//! The Rust client (`sluice-client`): its producer writes every record, in order per
//! partition key, routed to shard leaders, and carries on through a leader change.

use crate::{cluster::cluster_status, read_all, seq_key};
use sluice_client::{Client, ClientConfig, Delivery, ProducerConfig};
use sluice_tests::{Node, NodeOptions, wait_active, wait_for};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const KEYS: usize = 40;

/// Sends `count` records over `KEYS` keys, numbered per key: `key-K:N`.
async fn send_numbered(
    producer: &sluice_client::Producer,
    from: usize,
    count: usize,
) -> Vec<(String, Delivery)> {
    let mut sent = Vec::with_capacity(count);
    for i in from..from + count {
        let key = format!("key-{}", i % KEYS);
        let data = format!("{key}:{:06}", i / KEYS);
        sent.push((
            data.clone(),
            producer.send(key, data.into_bytes()).await.unwrap(),
        ));
    }
    sent
}

/// Every record of the stream's shards as `key-K:N` strings, in each shard's order.
async fn read_stream(node: &Node, stream: &str) -> Vec<String> {
    let client = node.client();
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    for shard in shards.shards() {
        for record in read_all(&client, stream, shard.shard_id()).await {
            out.push(String::from_utf8(record.data.into_inner()).unwrap());
        }
    }
    out
}

/// Checks that the first occurrence of each record comes in send order per key and that
/// every acknowledged record is there (a batch sent again after a lost connection may
/// show twice: delivery is at least once).
fn check_per_key_order(read: &[String], acked: &[String]) {
    let mut last: HashMap<&str, &str> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for record in read {
        if !seen.insert(record.as_str()) {
            continue;
        }
        let (key, number) = record.split_once(':').unwrap();
        if let Some(previous) = last.insert(key, number) {
            assert!(previous < number, "{key}: {previous} read before {number}");
        }
    }
    for record in acked {
        assert!(
            seen.contains(record.as_str()),
            "acknowledged {record} was not read"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_writes_every_record_in_order_per_key() {
    let node = Node::start().await;
    let client = Client::connect(ClientConfig::new(format!("http://{}", node.grpc_addr)))
        .await
        .unwrap();
    client.create_stream("produced", 4).await.unwrap();
    let producer = client
        .producer(
            "produced",
            ProducerConfig {
                batch_max_records: 100,
                ..ProducerConfig::default()
            },
        )
        .await
        .unwrap();
    let sent = send_numbered(&producer, 0, 2_000).await;
    producer.flush().await.unwrap();
    let mut acked = Vec::new();
    let mut by_key: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for (data, delivery) in sent {
        let ack = delivery.await.unwrap();
        let key = data.split_once(':').unwrap().0.to_owned();
        by_key
            .entry(key)
            .or_default()
            .push(seq_key(&ack.sequence_number));
        acked.push(data);
    }
    // Sequence numbers grow with send order for each key (a key stays on its shard).
    for (key, sequences) in &by_key {
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key}: {sequences:?}"
        );
    }
    let read = read_stream(&node, "produced").await;
    assert_eq!(read.len(), 2_000, "each record written once");
    check_per_key_order(&read, &acked);
    // Bad input is refused before it is queued.
    assert!(producer.send("", b"x".to_vec()).await.is_err());
    assert!(producer.send("k", vec![0u8; 1 << 20]).await.is_err());
}

/// Many keys, a few of them hot, in small batches with several in flight per node: each
/// hot key's records come out in send order, and every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_keeps_hot_keys_in_order_among_many_keys() {
    let node = Node::start().await;
    let client = Client::connect(ClientConfig::new(format!("http://{}", node.grpc_addr)))
        .await
        .unwrap();
    client.create_stream("hot-keys", 2).await.unwrap();
    let producer = client
        .producer(
            "hot-keys",
            ProducerConfig {
                batch_max_records: 50,
                max_in_flight: 8,
                ..ProducerConfig::default()
            },
        )
        .await
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..20_000usize {
        // One record in 100 has one of three hot keys, numbered per key.
        let (key, data) = if i % 100 == 0 {
            let key = format!("hot-{}", (i / 100) % 3);
            let data = format!("{key}:{:06}", i / 300);
            (key, data)
        } else {
            (format!("u{i}"), format!("u{i}:000000"))
        };
        let delivery = producer.send(key, data.clone().into_bytes()).await.unwrap();
        sent.push((data, delivery));
    }
    producer.flush().await.unwrap();
    let mut acked = Vec::new();
    let mut hot: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    for (data, delivery) in sent {
        let ack = delivery.await.unwrap();
        if data.starts_with("hot-") {
            let key = data.split_once(':').unwrap().0.to_owned();
            hot.entry(key)
                .or_default()
                .push(seq_key(&ack.sequence_number));
        }
        acked.push(data);
    }
    assert_eq!(hot.values().map(Vec::len).sum::<usize>(), 200);
    for (key, sequences) in &hot {
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key}: {sequences:?}"
        );
    }
    let read = read_stream(&node, "hot-keys").await;
    assert_eq!(read.len(), 20_000, "each record written once");
    check_per_key_order(&read, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_routes_to_leaders_and_survives_a_leader_change() {
    let options = |join: Option<&Node>| NodeOptions {
        config: sluice_server::RawConfig {
            join: join.map(|seed| vec![seed.grpc_addr.to_string()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let first = Node::start_with(options(None)).await;
    let second = Node::start_with(options(Some(&first))).await;
    let third = Node::start_with(options(Some(&first))).await;
    wait_for("three members", Duration::from_secs(20), || async {
        cluster_status(&format!("http://{}", first.grpc_addr)).await["Nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3)
    })
    .await;
    let client = Client::connect(ClientConfig::new(format!("http://{}", first.grpc_addr)))
        .await
        .unwrap();
    client.create_stream("routed", 3).await.unwrap();
    for node in [&second, &third] {
        wait_active(&node.client(), "routed").await;
    }
    wait_for(
        "a leader for every shard",
        Duration::from_secs(20),
        || async {
            client
                .routes("routed")
                .await
                .is_ok_and(|r| r.shards().iter().all(|s| s.leader.is_some()))
        },
    )
    .await;
    let routes = client.routes("routed").await.unwrap();
    let leaders: std::collections::BTreeSet<String> = routes
        .shards()
        .iter()
        .filter_map(|s| s.leader.clone())
        .collect();
    assert!(!leaders.is_empty());
    let producer = client
        .producer(
            "routed",
            ProducerConfig {
                batch_max_records: 50,
                refresh_interval: Duration::from_millis(500),
                ..ProducerConfig::default()
            },
        )
        .await
        .unwrap();
    let mut sent = send_numbered(&producer, 0, 600).await;
    producer.flush().await.unwrap();
    // Stop a node that leads a shard (not the one the client was given): its shards elect
    // new leaders while the producer goes on.
    let victim = [&second, &third]
        .into_iter()
        .find(|n| leaders.contains(&n.grpc_addr.to_string()))
        .map(|n| n.grpc_addr);
    let (second, third) = match victim {
        Some(addr) if addr == second.grpc_addr => {
            let writer = tokio::spawn(async move {
                second.stop().await;
            });
            sent.extend(send_numbered(&producer, 600, 600).await);
            writer.await.unwrap();
            (None, Some(third))
        }
        Some(_) => {
            let writer = tokio::spawn(async move {
                third.stop().await;
            });
            sent.extend(send_numbered(&producer, 600, 600).await);
            writer.await.unwrap();
            (Some(second), None)
        }
        None => {
            sent.extend(send_numbered(&producer, 600, 600).await);
            (Some(second), Some(third))
        }
    };
    sent.extend(send_numbered(&producer, 1_200, 600).await);
    producer.flush().await.unwrap();
    let mut acked = Vec::new();
    for (data, delivery) in sent {
        match delivery.await {
            Ok(_) => acked.push(data),
            Err(error) => panic!("{data} was not written: {error}"),
        }
    }
    assert_eq!(acked.len(), 1_800);
    // The shards the stopped node led have new leaders, in a later epoch.
    if let Some(victim) = victim.map(|addr| addr.to_string()) {
        let after = client.routes("routed").await.unwrap();
        for before in routes.shards() {
            if before.leader.as_deref() != Some(victim.as_str()) {
                continue;
            }
            let now = after
                .shards()
                .iter()
                .find(|s| s.shard_id == before.shard_id)
                .expect("the shard is still open");
            assert_ne!(now.leader.as_deref(), Some(victim.as_str()));
            assert!(
                now.leader_epoch > before.leader_epoch,
                "{}: epoch {} after the change, {} before",
                now.shard_id,
                now.leader_epoch,
                before.leader_epoch
            );
        }
    }
    let read = read_stream(&first, "routed").await;
    check_per_key_order(&read, &acked);
    drop((second, third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_parents_before_children_across_a_split_and_a_merge() {
    let node = Node::start().await;
    let client = Client::connect(ClientConfig::new(format!("http://{}", node.grpc_addr)))
        .await
        .unwrap();
    client.create_stream("followed", 1).await.unwrap();
    let producer = client
        .producer("followed", ProducerConfig::default())
        .await
        .unwrap();
    let mut acked = Vec::new();
    let mut send_all = async |from: usize| {
        let sent = send_numbered(&producer, from, 200).await;
        producer.flush().await.unwrap();
        for (data, delivery) in sent {
            delivery.await.unwrap();
            acked.push(data);
        }
    };
    send_all(0).await;
    let kinesis = node.client();
    kinesis
        .split_shard()
        .stream_name("followed")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((u128::MAX / 2).to_string())
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, "followed").await;
    send_all(200).await;
    kinesis
        .merge_shards()
        .stream_name("followed")
        .shard_to_merge("shardId-000000000001")
        .adjacent_shard_to_merge("shardId-000000000002")
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, "followed").await;
    send_all(400).await;

    let mut consumer = client
        .consumer("followed", sluice_client::Position::TrimHorizon)
        .await
        .unwrap();
    let mut read = Vec::new();
    let mut shards_seen: Vec<String> = Vec::new();
    while read.len() < acked.len() {
        let batch = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("records keep coming")
            .expect("shards left to read")
            .unwrap();
        if shards_seen.last() != Some(&batch.shard_id) {
            shards_seen.push(batch.shard_id.clone());
        }
        for record in batch.records {
            read.push(String::from_utf8(record.data.to_vec()).unwrap());
        }
    }
    assert_eq!(read.len(), acked.len());
    check_per_key_order(&read, &acked);
    // The parent first, then its children, then the merged shard.
    assert_eq!(
        shards_seen.first().map(String::as_str),
        Some("shardId-000000000000")
    );
    assert_eq!(
        shards_seen.last().map(String::as_str),
        Some("shardId-000000000003")
    );
}

/// Records in flight, several batches per node, while the stream is split and then merged
/// under them: every record is written once and each key's records come out in send order
/// (shards read in id order, parents before children).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_keeps_each_keys_order_while_the_stream_splits_and_merges() {
    let node = Node::start().await;
    let client = Client::connect(ClientConfig::new(format!("http://{}", node.grpc_addr)))
        .await
        .unwrap();
    client.create_stream("reshaped", 2).await.unwrap();
    let producer = client
        .producer(
            "reshaped",
            ProducerConfig {
                batch_max_records: 50,
                linger: Duration::from_millis(1),
                refresh_interval: Duration::from_millis(100),
                ..ProducerConfig::default()
            },
        )
        .await
        .unwrap();
    let kinesis = node.client();
    let mut sent = send_numbered(&producer, 0, 3_000).await;
    // Split while those are still being written.
    kinesis
        .split_shard()
        .stream_name("reshaped")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((u128::MAX / 4).to_string())
        .send()
        .await
        .unwrap();
    sent.extend(send_numbered(&producer, 3_000, 3_000).await);
    wait_active(&kinesis, "reshaped").await;
    // Shards 2 and 3 are the split's children (adjacent): merge them back.
    kinesis
        .merge_shards()
        .stream_name("reshaped")
        .shard_to_merge("shardId-000000000002")
        .adjacent_shard_to_merge("shardId-000000000003")
        .send()
        .await
        .unwrap();
    sent.extend(send_numbered(&producer, 6_000, 3_000).await);
    wait_active(&kinesis, "reshaped").await;
    sent.extend(send_numbered(&producer, 9_000, 1_000).await);
    producer.flush().await.unwrap();
    let mut acked = Vec::with_capacity(sent.len());
    let mut shards = std::collections::HashSet::new();
    for (data, delivery) in sent {
        let ack = delivery.await.unwrap();
        shards.insert(ack.shard_id);
        acked.push(data);
    }
    assert!(
        shards.contains("shardId-000000000004"),
        "records reached the merged shard: {shards:?}"
    );
    let read = read_stream(&node, "reshaped").await;
    assert_eq!(read.len(), acked.len(), "each record written once");
    check_per_key_order(&read, &acked);
}

/// `send` waits while the producer's buffer is full instead of growing it, and goes on once
/// the buffered records are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_producer_buffer_makes_send_wait() {
    let node = Node::start().await;
    let client = Client::connect(ClientConfig::new(format!("http://{}", node.grpc_addr)))
        .await
        .unwrap();
    client.create_stream("buffered", 1).await.unwrap();
    let producer = client
        .producer(
            "buffered",
            ProducerConfig {
                // Records stay buffered until a flush.
                linger: Duration::from_secs(600),
                buffer_bytes: 1 << 20,
                ..ProducerConfig::default()
            },
        )
        .await
        .unwrap();
    let record = vec![7u8; 100 << 10];
    let mut deliveries = Vec::new();
    for _ in 0..9 {
        deliveries.push(producer.send("k".to_owned(), record.clone()).await.unwrap());
    }
    // A tenth and an eleventh 100 KiB record exceed the 1 MiB buffer.
    let blocked = tokio::time::timeout(Duration::from_millis(500), async {
        for _ in 0..2 {
            producer.send("k".to_owned(), record.clone()).await.unwrap();
        }
    })
    .await;
    assert!(blocked.is_err(), "send went on with a full buffer");
    producer.flush().await.unwrap();
    for delivery in deliveries {
        tokio::time::timeout(Duration::from_secs(10), delivery)
            .await
            .expect("buffered record acknowledged")
            .unwrap();
    }
    let after = tokio::time::timeout(
        Duration::from_secs(10),
        producer.send("k".to_owned(), record.clone()),
    )
    .await
    .expect("send goes on once the buffer drained")
    .unwrap();
    producer.flush().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), after)
        .await
        .expect("last record acknowledged")
        .unwrap();
}
