//! The Rust client's producer (`sluice-client`) against a cluster of real `sluice server`
//! processes (3 nodes, replication factor 3, fsync on): a shard leader is killed with
//! SIGKILL while records are being produced, and later restarted. No acknowledged record
//! may be lost, the acknowledged records of each partition key must have rising sequence
//! numbers in send order, and every node must end up serving the same records. Delivery
//! is at least once: a batch in flight on the killed node's connection is sent again, so
//! duplicates are allowed and counted.

use crate::faults::read_every_node;
use sluice_client::{Client, ClientConfig, Delivery, ProducerConfig};
use sluice_tests::checker::{Write, check};
use sluice_tests::cluster::{Cluster, ClusterOptions};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const STREAM: &str = "producer-faults";
const SHARDS: i32 = 3;
const KEYS: usize = 24;
/// Records sent and acknowledged before the fault.
const WARM_UP: usize = 300;
/// Records sent between two steps of the fault schedule.
const PER_STEP: usize = 400;
/// How long every delivery may take in all once sending stopped.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// One record handed to the producer.
struct Sent {
    id: String,
    key: String,
    delivery: Delivery,
}

fn record(n: usize) -> (String, String) {
    (format!("key-{}", n % KEYS), format!("r{n:06}"))
}

async fn send(producer: &sluice_client::Producer, n: usize) -> Sent {
    let (key, id) = record(n);
    let delivery = producer
        .send(key.clone(), id.clone().into_bytes())
        .await
        .expect("the producer takes the record");
    Sent { id, key, delivery }
}

/// The index of a node other than node 0 (the client's seed) that leads a shard of the
/// stream, as node 0 sees it.
async fn a_leader_other_than_the_seed(cluster: &Cluster) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = cluster.status(0).await.ok().and_then(|status| {
            status
                .shards
                .iter()
                .filter(|s| s.stream_name == STREAM)
                .map(|s| s.leader)
                .find(|leader| *leader != 0 && *leader != cluster.node(0).node_id)
        });
        if let Some(leader) = leader {
            return (0..cluster.node_count())
                .find(|i| cluster.node(*i).node_id == leader)
                .expect("the leader is a node of the cluster");
        }
        assert!(
            Instant::now() < deadline,
            "no shard is led by a node other than node 0"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until node 0 sees a leader other than `victim` for every shard of the stream.
async fn wait_failed_over(cluster: &Cluster, victim: usize) {
    let victim_id = cluster.node(victim).node_id;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let moved = cluster.status(0).await.is_ok_and(|status| {
            status
                .shards
                .iter()
                .filter(|s| s.stream_name == STREAM)
                .all(|s| s.leader != 0 && s.leader != victim_id)
        });
        if moved {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the shards of node {victim_id} got no other leader within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the sender has handed `count` records to the producer.
async fn wait_sent(sent: &AtomicUsize, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent.load(Ordering::SeqCst) < count {
        assert!(
            Instant::now() < deadline,
            "the producer took only {} of {count} records within 60 s",
            sent.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_keeps_every_acked_record_in_key_order_through_a_leaders_kill_9() {
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 3,
        replication_factor: Some(3),
        fsync: true,
        ..ClusterOptions::default()
    })
    .await;
    crate::create_active(&cluster.client(0), STREAM, SHARDS).await;
    for index in 1..cluster.node_count() {
        sluice_tests::wait_active(&cluster.client(index), STREAM).await;
    }
    let victim = a_leader_other_than_the_seed(&cluster).await;
    let client = Client::connect(ClientConfig::new(format!(
        "http://{}",
        cluster.node(0).grpc_addr
    )))
    .await
    .expect("connect to node 0");
    let producer = Arc::new(
        client
            .producer(
                STREAM,
                ProducerConfig {
                    // Enough attempts (20 ms more backoff each) to outlast an election.
                    max_attempts: 60,
                    ..ProducerConfig::default()
                },
            )
            .await
            .expect("start the producer"),
    );

    // Warm-up: every record acknowledged before anything goes wrong.
    let mut history = Vec::new();
    for n in 0..WARM_UP {
        history.push(send(&producer, n).await);
    }
    producer.flush().await.expect("flush");

    // A sender keeps producing, a few records at a time, while a leader is killed and
    // brought back.
    let sent = Arc::new(AtomicUsize::new(WARM_UP));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (producer, sent, stop) = (producer.clone(), sent.clone(), stop.clone());
        tokio::spawn(async move {
            let mut history = Vec::new();
            let mut n = WARM_UP;
            while !stop.load(Ordering::SeqCst) {
                for _ in 0..10 {
                    history.push(send(&producer, n).await);
                    n += 1;
                }
                sent.store(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            history
        })
    };
    wait_sent(&sent, WARM_UP + PER_STEP).await;
    eprintln!(
        "kill -9 of node {} (a shard leader)",
        cluster.node(victim).node_id
    );
    cluster.kill9(victim);
    // Records keep coming while its shards elect new leaders, and after.
    wait_failed_over(&cluster, victim).await;
    eprintln!(
        "every shard has a new leader; {} records sent",
        sent.load(Ordering::SeqCst)
    );
    let failed_over_at = sent.load(Ordering::SeqCst);
    wait_sent(&sent, failed_over_at + PER_STEP).await;
    cluster.restart(victim).await;
    eprintln!("node {} is back", cluster.node(victim).node_id);
    let restarted_at = sent.load(Ordering::SeqCst);
    wait_sent(&sent, restarted_at + PER_STEP).await;
    stop.store(true, Ordering::SeqCst);
    history.extend(sender.await.expect("the sender"));

    // Every record's outcome.
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let mut writes = Vec::with_capacity(history.len());
    let mut acked = 0;
    for Sent { id, key, delivery } in history {
        let outcome = tokio::time::timeout_at(deadline, delivery)
            .await
            .expect("every record has an outcome within the delivery timeout");
        match outcome {
            Ok(ack) => {
                acked += 1;
                writes.push(Write::acked(0, id, key, ack.shard_id, ack.sequence_number));
            }
            // A record the producer gave up on may still have been written (a batch on a
            // broken connection): its outcome is unknown.
            Err(error) => {
                eprintln!("{id} ({key}): {error}");
                writes.push(Write::unknown(0, id, key));
            }
        }
    }
    let total = writes.len();
    eprintln!("{acked} of {total} records acknowledged");
    assert!(
        acked * 100 >= total * 95,
        "only {acked} of {total} records were acknowledged"
    );

    let reads = read_every_node(&cluster, STREAM).await;
    let report = check(&writes, &reads);
    eprintln!("checker: {:?}", report.summary);
    // At least once: a batch in flight on the killed node's connection is sent again, so
    // its records may be there twice, one copy at the acknowledged position; nothing else
    // may be wrong.
    let duplicated: HashSet<&str> = report.duplicated.iter().map(|d| d.id.as_str()).collect();
    let copies = report
        .wrong_position
        .iter()
        .filter(|w| duplicated.contains(w.id.as_str()))
        .count();
    let anomalies = report.anomalies() - report.duplicated.len() - copies;
    assert_eq!(anomalies, 0, "{report}");
    eprintln!(
        "{} records read twice (sent again after the kill)",
        duplicated.len()
    );
}
