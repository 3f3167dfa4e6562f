//! Shard groups without timers of their own, on a cluster of real `sluice server` processes
//! (3 nodes, replication factor 3): the node-level liveness and the pacemaker must still
//! replace a dead leader within the 3 s the design allows, commits must still reach the
//! followers at once (no heartbeat follows them), and a follower cut off while records
//! were written must catch up once healed, with no further write to carry the news.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use sluice_tests::cluster::{Cluster, ClusterOptions};
use std::time::Duration;
use tokio::time::Instant;

const STREAM: &str = "liveness";
/// The longest write unavailability a shard leader's `kill -9` may cause.
const FAILOVER_BUDGET: Duration = Duration::from_secs(3);
/// Each put of the failover test gives up after this long (the outcome is then unknown),
/// so that one sent to the dead leader does not hide the new one.
const FAILOVER_PUT_TIMEOUT: Duration = Duration::from_millis(500);
/// Any other put gives up after this long.
const PUT_TIMEOUT: Duration = Duration::from_secs(10);

async fn start_cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        nodes: 3,
        replication_factor: Some(3),
        fsync: true,
        ..ClusterOptions::default()
    })
    .await
}

/// Creates the one-shard stream and returns the index of the node leading its group.
async fn one_shard_stream_and_its_leader(cluster: &Cluster) -> usize {
    crate::create_active(&cluster.client(0), STREAM, 1).await;
    for index in 1..cluster.node_count() {
        sluice_tests::wait_active(&cluster.client(index), STREAM).await;
    }
    cluster.leader_of(0, STREAM, "shardId-000000000000").await
}

async fn put(client: &Client, data: &str, timeout: Duration) -> Result<String, String> {
    let sent = client
        .put_record()
        .stream_name(STREAM)
        .partition_key("k")
        .data(Blob::new(data.as_bytes()))
        .send();
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(out)) => Ok(out.sequence_number().to_owned()),
        Ok(Err(error)) => Err(aws_sdk_kinesis::error::DisplayErrorContext(&error).to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// The data of every record of the shard, as `client`'s node serves them.
async fn records_on(client: &Client) -> Vec<String> {
    crate::read_all(client, STREAM, "shardId-000000000000")
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.data().as_ref()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_within_three_seconds_of_a_shard_leaders_kill_9() {
    let mut cluster = start_cluster().await;
    let leader = one_shard_stream_and_its_leader(&cluster).await;
    let survivor = (leader + 1) % cluster.node_count();
    let client = sluice_tests::client_for(&cluster.node(survivor).endpoint());
    put(&client, "before", PUT_TIMEOUT)
        .await
        .expect("a write before the kill");
    cluster.kill9(leader);
    let killed = Instant::now();
    let mut attempts = 0;
    let acked_after = loop {
        attempts += 1;
        let started = Instant::now();
        match put(&client, &format!("after-{attempts}"), FAILOVER_PUT_TIMEOUT).await {
            Ok(_) => break started.elapsed() + started.duration_since(killed),
            Err(error) => {
                assert!(
                    killed.elapsed() < Duration::from_secs(30),
                    "no write went through in 30 s; the last error: {error}"
                );
                // Refused connections and quick refusals must not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    eprintln!(
        "shard leader (node {}) killed: a write was acknowledged {acked_after:?} later ({attempts} attempts)",
        cluster.node(leader).node_id
    );
    assert!(
        acked_after <= FAILOVER_BUDGET,
        "writes were unavailable for {acked_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_serve_records_at_once_and_catch_up_after_a_partition_without_new_writes() {
    let cluster = start_cluster().await;
    let leader = one_shard_stream_and_its_leader(&cluster).await;
    let follower = (leader + 1) % cluster.node_count();
    let writer = cluster.client(leader);
    let reader = cluster.client(follower);

    // A record acknowledged by the leader is served by a follower at once: the commit
    // reaches it with no heartbeat to wait for.
    put(&writer, "first", PUT_TIMEOUT).await.expect("a write");
    let started = Instant::now();
    sluice_tests::wait_for(
        "the follower to serve the acknowledged record",
        Duration::from_secs(2),
        || async { records_on(&reader).await == ["first"] },
    )
    .await;
    eprintln!(
        "a follower served the record {:?} after its acknowledgement",
        started.elapsed()
    );

    // Cut the follower off, write while it is away, heal, and write nothing more.
    cluster.isolate(follower);
    let mut written = vec!["first".to_owned()];
    for n in 0..5 {
        let data = format!("while-isolated-{n}");
        put(&writer, &data, PUT_TIMEOUT)
            .await
            .expect("the leader and the third node still commit");
        written.push(data);
    }
    // Heal only once the leader has given the follower up (its retries then wait on the
    // follower's return rather than on a short backoff).
    let log = cluster.node(leader).log_path.clone();
    let suspected = format!("peer={}", cluster.node(follower).node_id);
    sluice_tests::wait_for(
        "the leader to suspect the isolated follower",
        Duration::from_secs(10),
        || async {
            tokio::fs::read_to_string(&log).await.is_ok_and(|text| {
                text.lines()
                    .any(|line| line.contains("peer suspected") && line.contains(&suspected))
            })
        },
    )
    .await;
    assert_eq!(
        records_on(&reader).await,
        ["first"],
        "isolated, it has nothing new"
    );
    cluster.heal();
    let healed = Instant::now();
    sluice_tests::wait_for(
        "the healed follower to serve every record",
        Duration::from_secs(10),
        || async { records_on(&reader).await == written },
    )
    .await;
    eprintln!(
        "the healed follower caught up {:?} after the heal",
        healed.elapsed()
    );
    // It did not disturb the group: the leader is unchanged.
    let status = cluster.status(follower).await.expect("cluster status");
    let shard = status
        .shards
        .iter()
        .find(|s| s.stream_name == STREAM)
        .expect("the shard");
    assert_eq!(shard.leader, cluster.node(leader).node_id);
}
