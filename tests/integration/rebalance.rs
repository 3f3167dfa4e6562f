//! The rebalancer on clusters of real `sluice server` processes (replication factor 3, fsync
//! on), under load: a node that joins gets its share of the replicas and leads some shards,
//! a decommissioned node is drained (a closed shard's replica too) and leaves the cluster,
//! and the replicas of a node dead for longer than the grace period are re-created on the
//! others (and it takes its share back when it returns).
//!
//! Writers put numbered records one at a time, each to a shard named by explicit hash key,
//! through one of the first three nodes that holds a replica of the open shard holding that
//! key as the latest cluster status says (any of them when none does). Once the placement settled, every
//! shard is read in full from each of its replicas and the history goes to the checker
//! (`sluice_tests::checker`): no acknowledged record lost, none duplicated, reordered or
//! altered, the same sequence numbers on every replica. The writers' SDK clients never
//! retry; a 4xx answer is a definite failure and anything else leaves the outcome unknown.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use sluice_proto::v1 as pb;
use sluice_tests::checker::{NodeRead, Outcome, ReadRecord, Write, check};
use sluice_tests::cluster::{Cluster, ClusterOptions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

const STREAM: &str = "rebalance";
/// Twelve replicas: three per node in a cluster of four, four per node in one of three.
const SHARDS: usize = 4;
const WRITERS: usize = 3;
/// The nodes writers go through: the first three.
const WRITE_NODES: [usize; 3] = [0, 1, 2];
/// Each call of a writer or a reader gives up after this long (the outcome is then unknown).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A writer waits this long after an error, so that refused connections do not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Acknowledged writes before the cluster changes, and again once it settled.
const MIN_ACKED: usize = 100;
/// How long the writers may take to reach a number of acknowledged writes.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the placement may take to settle after a change of the cluster.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the replicas may take to return the same records once the writers stopped.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the cluster status is polled while waiting.
const POLL: Duration = Duration::from_millis(250);
/// GetRecords pages read from one shard before the reader gives up.
const MAX_PAGES: usize = 1_000;

/// Where writers send a record, as last seen: the open shard whose range holds its hash
/// key, and the nodes holding a replica of that shard.
#[derive(Default)]
struct Routes {
    /// Open shards: first and last hash key, shard id.
    open: Vec<(u128, u128, String)>,
    /// Node indexes holding a replica, by shard id.
    hosts: BTreeMap<String, Vec<usize>>,
}

type Placement = Arc<Mutex<Routes>>;

/// A hash key in the middle of shard `shard` of a stream of `SHARDS` uniform shards.
fn hash_key(shard: usize) -> u128 {
    let width = u128::MAX / SHARDS as u128;
    width * shard as u128 + width / 2
}

/// Starts `nodes` nodes (replication factor 3, fsync on) with `extra` arguments each.
async fn start_cluster(nodes: usize, extra: &[&str]) -> Cluster {
    Cluster::start(ClusterOptions {
        nodes,
        replication_factor: Some(3),
        fsync: true,
        extra_args: extra.iter().map(|a| (*a).to_owned()).collect(),
        ..ClusterOptions::default()
    })
    .await
}

/// Creates the stream through node 0 and waits until the writers' nodes see it ACTIVE.
async fn create_stream(cluster: &Cluster) {
    cluster
        .client(0)
        .create_stream()
        .stream_name(STREAM)
        .shard_count(SHARDS as i32)
        .send()
        .await
        .expect("create the stream");
    for index in WRITE_NODES {
        sluice_tests::wait_active(&cluster.client(index), STREAM).await;
    }
}

/// The stream's shards in `status`, by shard id.
fn shards(status: &pb::GetClusterStatusResponse) -> BTreeMap<&str, &pb::ShardPlacement> {
    status
        .shards
        .iter()
        .filter(|s| s.stream_name == STREAM)
        .map(|s| (s.shard_id.as_str(), s))
        .collect()
}

/// Replicas of open shards per node among `members` (each listed, zero when it holds none).
fn replica_counts(status: &pb::GetClusterStatusResponse, members: &[u64]) -> BTreeMap<u64, usize> {
    let mut counts: BTreeMap<u64, usize> = members.iter().map(|id| (*id, 0)).collect();
    for shard in shards(status).values().filter(|s| !s.closed) {
        for replica in &shard.replicas {
            *counts.entry(*replica).or_default() += 1;
        }
    }
    counts
}

/// No move in progress, every shard on three of `members`, and replica counts of open
/// shards within one.
fn settled(status: &pb::GetClusterStatusResponse, members: &[u64]) -> bool {
    let shards = shards(status);
    let counts = replica_counts(status, members);
    shards.len() >= SHARDS
        && shards.values().all(|s| {
            s.moving.is_none()
                && s.replicas.len() == 3
                && s.replicas.iter().all(|r| members.contains(r))
        })
        && counts.len() == members.len()
        && counts.values().max().unwrap_or(&0) - counts.values().min().unwrap_or(&0) <= 1
}

/// Records the placement in `status`, and the open shards node 0 lists, for the writers.
async fn update_placement(
    cluster: &Cluster,
    placement: &Placement,
    status: &pb::GetClusterStatusResponse,
) {
    let hosts = shards(status)
        .into_iter()
        .map(|(id, s)| {
            let nodes = s.replicas.iter().map(|id| (*id - 1) as usize).collect();
            (id.to_owned(), nodes)
        })
        .collect();
    let listed = tokio::time::timeout(
        CALL_TIMEOUT,
        cluster.client(0).list_shards().stream_name(STREAM).send(),
    )
    .await;
    let mut routes = placement.lock().unwrap_or_else(PoisonError::into_inner);
    routes.hosts = hosts;
    if let Ok(Ok(listed)) = listed {
        routes.open = listed
            .shards()
            .iter()
            .filter(|s| {
                s.sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_none())
            })
            .filter_map(|s| {
                let range = s.hash_key_range()?;
                let start = range.starting_hash_key().parse().ok()?;
                let end = range.ending_hash_key().parse().ok()?;
                Some((start, end, s.shard_id().to_owned()))
            })
            .collect();
    }
}

/// Polls node 0's cluster status (keeping the writers' placement current) until `condition`
/// holds; panics after `timeout` with the last status.
async fn wait_status(
    cluster: &Cluster,
    placement: &Placement,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&pb::GetClusterStatusResponse) -> bool,
) -> pb::GetClusterStatusResponse {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        match cluster.status(0).await {
            Ok(status) => {
                update_placement(cluster, placement, &status).await;
                if condition(&status) {
                    eprintln!("{what}: after {:?}", started.elapsed());
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {what}; last status: {status:#?}"
                );
            }
            Err(error) => assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last error: {error}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Concurrent writers through `WRITE_NODES`, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Vec<Write>>>,
    tasks: JoinSet<()>,
}

impl Load {
    fn start(cluster: &Cluster, placement: &Placement) -> Load {
        let clients: Arc<Vec<(usize, Client)>> = Arc::new(
            WRITE_NODES
                .iter()
                .map(|index| {
                    (
                        *index,
                        sluice_tests::client_for(&cluster.node(*index).endpoint()),
                    )
                })
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        for writer in 0..WRITERS {
            tasks.spawn(write_until_stopped(
                writer,
                Arc::clone(&clients),
                Arc::clone(placement),
                Arc::clone(&stop),
                Arc::clone(&writes),
            ));
        }
        Load {
            stop,
            writes,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|w| matches!(w.outcome, Outcome::Acked { .. }))
            .count()
    }

    /// Waits until at least `count` writes were acknowledged, keeping the placement current.
    async fn wait_acked(&self, cluster: &Cluster, placement: &Placement, count: usize) {
        let deadline = Instant::now() + LOAD_TIMEOUT;
        while self.acked() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} writes acknowledged after {LOAD_TIMEOUT:?}",
                self.acked()
            );
            if let Ok(status) = cluster.status(0).await {
                update_placement(cluster, placement, &status).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the writers (each finishes its current put) and returns every write, each
    /// writer's in the order it issued them.
    async fn stop(mut self) -> Vec<Write> {
        self.stop.store(true, Ordering::Release);
        let joined = tokio::time::timeout(CALL_TIMEOUT * 2, async {
            while let Some(done) = self.tasks.join_next().await {
                done.expect("a writer panicked");
            }
        })
        .await;
        assert!(joined.is_ok(), "the writers did not stop");
        self.writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Writer `w`'s `n`th put has data `w{w}-{n}` and the hash key of shard `(w + n) % SHARDS`
/// of the stream as created (the open shard holding it after a split), and goes through a
/// writing node that holds that shard, rotating among them.
async fn write_until_stopped(
    writer: usize,
    clients: Arc<Vec<(usize, Client)>>,
    placement: Placement,
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Vec<Write>>>,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::Acquire) {
        let shard = (writer + n) % SHARDS;
        let hash = hash_key(shard);
        let hosts = {
            let routes = placement.lock().unwrap_or_else(PoisonError::into_inner);
            routes
                .open
                .iter()
                .find(|(start, end, _)| (*start..=*end).contains(&hash))
                .and_then(|(_, _, id)| routes.hosts.get(id))
                .cloned()
                .unwrap_or_default()
        };
        let through: Vec<&Client> = clients
            .iter()
            .filter(|(index, _)| hosts.contains(index))
            .map(|(_, client)| client)
            .collect();
        let client = if through.is_empty() {
            &clients[n % clients.len()].1
        } else {
            through[n / SHARDS % through.len()]
        };
        let key = format!("key-{shard}");
        let id = format!("w{writer}-{n}");
        n += 1;
        let answer = tokio::time::timeout(
            CALL_TIMEOUT,
            client
                .put_record()
                .stream_name(STREAM)
                .partition_key(&key)
                .explicit_hash_key(hash.to_string())
                .data(Blob::new(id.as_bytes()))
                .send(),
        )
        .await;
        let write = match answer {
            Ok(Ok(out)) => Write::acked(writer, id, key, out.shard_id(), out.sequence_number()),
            Ok(Err(SdkError::ServiceError(service)))
                if (400..500).contains(&service.raw().status().as_u16()) =>
            {
                Write::failed(writer, id, key)
            }
            Ok(Err(_)) | Err(_) => Write::unknown(writer, id, key),
        };
        let failed = !matches!(write.outcome, Outcome::Acked { .. });
        writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(write);
        if failed {
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}

/// GetRecords pages from TRIM_HORIZON until an empty page that is not behind the latest.
async fn read_shard(client: &Client, shard: &str) -> Result<Vec<ReadRecord>, String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let iterator = tokio::time::timeout(
        CALL_TIMEOUT,
        client
            .get_shard_iterator()
            .stream_name(STREAM)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send(),
    )
    .await
    .map_err(|_| format!("GetShardIterator {shard} timed out"))?
    .map_err(|e| text(&aws_sdk_kinesis::error::DisplayErrorContext(&e)))?;
    let mut iterator = iterator
        .shard_iterator
        .ok_or_else(|| format!("no iterator for {shard}"))?;
    let mut records = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = tokio::time::timeout(
            CALL_TIMEOUT,
            client.get_records().shard_iterator(&iterator).send(),
        )
        .await
        .map_err(|_| format!("GetRecords {shard} timed out"))?
        .map_err(|e| text(&aws_sdk_kinesis::error::DisplayErrorContext(&e)))?;
        let empty = page.records().is_empty();
        records.extend(page.records().iter().map(|record| {
            ReadRecord::new(
                record.sequence_number(),
                record.partition_key().unwrap_or_default(),
                String::from_utf8_lossy(record.data().as_ref()),
            )
        }));
        let caught_up = page.millis_behind_latest().unwrap_or(0) == 0;
        match page.next_shard_iterator {
            Some(next) if !(empty && caught_up) => iterator = next,
            _ => return Ok(records),
        }
    }
    Err(format!("{shard} has more than {MAX_PAGES} pages"))
}

/// Reads every shard from each of its replicas (as `status` places them): one read per
/// replica position, so that each covers every shard. Retries until every replica of a
/// shard returns the same records, or `CONVERGE_TIMEOUT` passes (the checker then reports
/// how they differ).
async fn read_every_replica(
    cluster: &Cluster,
    status: &pb::GetClusterStatusResponse,
) -> Vec<NodeRead> {
    let placed: Vec<(String, Vec<u64>)> = shards(status)
        .into_iter()
        .map(|(id, shard)| (id.to_owned(), shard.replicas.clone()))
        .collect();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let mut reads: Vec<NodeRead> = (0..3)
            .map(|k| NodeRead::new(format!("replica-{k}")))
            .collect();
        let mut converged = true;
        for (shard, replicas) in &placed {
            let mut seen: Vec<Vec<ReadRecord>> = Vec::new();
            for (k, node_id) in replicas.iter().enumerate().take(3) {
                let client = cluster.client((*node_id - 1) as usize);
                let records = match read_shard(&client, shard).await {
                    Ok(records) => records,
                    Err(error) => {
                        assert!(
                            Instant::now() < deadline,
                            "node {node_id} still fails to serve {shard}: {error}"
                        );
                        converged = false;
                        Vec::new()
                    }
                };
                seen.push(records.clone());
                let read = std::mem::take(&mut reads[k]);
                reads[k] = read.shard(shard.clone(), records);
            }
            converged &= seen.windows(2).all(|pair| pair[0] == pair[1]);
        }
        if converged || Instant::now() >= deadline {
            return reads;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the writers, reads every replica and asserts that the history has no anomaly.
async fn stop_and_check(load: Load, cluster: &Cluster, status: &pb::GetClusterStatusResponse) {
    let writes = load.stop().await;
    let acked = writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Acked { .. }))
        .count();
    eprintln!("writes: {} attempted, {acked} acknowledged", writes.len());
    let reads = read_every_replica(cluster, status).await;
    let report = check(&writes, &reads);
    eprintln!("checker: {:?}", report.summary);
    // A failed assertion unwinds while `cluster` lives: its drop prints every node's log.
    assert!(report.is_ok(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_under_load_gets_its_share_of_replicas_and_leaders() {
    let mut cluster = start_cluster(3, &[]).await;
    create_stream(&cluster).await;
    let placement = Placement::default();
    wait_status(
        &cluster,
        &placement,
        "the stream placed",
        REBALANCE_TIMEOUT,
        |s| settled(s, &[1, 2, 3]),
    )
    .await;
    let load = Load::start(&cluster, &placement);
    load.wait_acked(&cluster, &placement, MIN_ACKED).await;

    let added = cluster.add_node().await;
    let new_id = cluster.node(added).node_id;
    let members = [1, 2, 3, new_id];
    // Three replicas each, and each node the preferred leader of one shard.
    let status = wait_status(
        &cluster,
        &placement,
        "the new node holding its share of the replicas and preferred leaders",
        REBALANCE_TIMEOUT,
        |s| {
            let mut preferred: Vec<u64> = shards(s).values().map(|s| s.replicas[0]).collect();
            preferred.sort_unstable();
            settled(s, &members)
                && replica_counts(s, &members)[&new_id] == 3
                && preferred == members
        },
    )
    .await;
    // The new node comes to lead its shard.
    let deadline = Instant::now() + REBALANCE_TIMEOUT;
    loop {
        let leads = cluster
            .status(added)
            .await
            .is_ok_and(|own| shards(&own).values().any(|s| s.leader == new_id));
        if leads {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {new_id} leads no shard after {REBALANCE_TIMEOUT:?}"
        );
        load.wait_acked(&cluster, &placement, load.acked() + 1)
            .await;
    }

    load.wait_acked(&cluster, &placement, load.acked() + MIN_ACKED)
        .await;
    // The moves show on /metrics: the shard leaders that finished them count them.
    let mut finished = 0.0;
    for index in 0..=added {
        let (status, text) =
            sluice_tests::http_get(cluster.node(index).admin_addr, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        finished += text
            .lines()
            .find_map(|line| line.strip_prefix("sluice_rebalance_moves_finished_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .expect("a moves-finished series");
    }
    assert!(finished >= 1.0, "no node counted a finished move");
    stop_and_check(load, &cluster, &status).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_node_is_drained_and_leaves_the_cluster() {
    let cluster = start_cluster(4, &[]).await;
    create_stream(&cluster).await;
    let placement = Placement::default();
    wait_status(
        &cluster,
        &placement,
        "the stream placed",
        REBALANCE_TIMEOUT,
        |s| settled(s, &[1, 2, 3, 4]),
    )
    .await;
    let load = Load::start(&cluster, &placement);
    load.wait_acked(&cluster, &placement, MIN_ACKED).await;

    // A closed shard with records moves too: split shard 0 under load.
    let parent = "shardId-000000000000";
    cluster
        .client(0)
        .split_shard()
        .stream_name(STREAM)
        .shard_to_split(parent)
        .new_starting_hash_key((u128::MAX / SHARDS as u128 / 4).to_string())
        .send()
        .await
        .expect("split shard 0");
    sluice_tests::wait_active(&cluster.client(0), STREAM).await;
    load.wait_acked(&cluster, &placement, load.acked() + MIN_ACKED)
        .await;
    // Drain a node holding the closed parent (not node 0, which answers the status calls).
    let status = cluster.status(0).await.expect("cluster status");
    let drained = shards(&status)[parent]
        .replicas
        .iter()
        .copied()
        .filter(|id| *id != 1)
        .max()
        .expect("a replica of the parent beside node 1");
    let members: Vec<u64> = (1..=4).filter(|id| *id != drained).collect();
    let endpoint = format!("http://{}", cluster.node(0).grpc_addr);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(sluice_tests::sluice_binary())
            .args([
                "cluster",
                "decommission",
                &drained.to_string(),
                "--endpoint",
                &endpoint,
            ])
            .output()
            .expect("run sluice cluster decommission")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = wait_status(
        &cluster,
        &placement,
        "the drained node emptied and out of the cluster",
        REBALANCE_TIMEOUT,
        |s| settled(s, &members) && !s.nodes.iter().any(|n| n.id == drained),
    )
    .await;
    assert_eq!(status.draining, [drained]);
    assert_eq!(shards(&status).len(), SHARDS + 2);
    // `sluice cluster status` names it among the drained nodes.
    let json =
        crate::cluster::cluster_status(&format!("http://{}", cluster.node(0).grpc_addr)).await;
    assert_eq!(json["Draining"], serde_json::json!([drained]), "{json}");
    // The drained node deleted its replicas.
    let streams = cluster
        .node((drained - 1) as usize)
        .data_dir
        .join("streams");
    let deadline = Instant::now() + REBALANCE_TIMEOUT;
    loop {
        let left: Vec<String> = std::fs::read_dir(&streams)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|stream| {
                std::fs::read_dir(stream.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|entry| entry.path().display().to_string())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drained node still holds {left:?}"
        );
        tokio::time::sleep(POLL).await;
    }

    load.wait_acked(&cluster, &placement, load.acked() + MIN_ACKED)
        .await;
    stop_and_check(load, &cluster, &status).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_of_a_node_dead_past_the_grace_period_are_recreated_elsewhere() {
    let mut cluster = start_cluster(4, &["--dead-node-grace-secs", "3"]).await;
    create_stream(&cluster).await;
    let placement = Placement::default();
    let status = wait_status(
        &cluster,
        &placement,
        "the stream placed",
        REBALANCE_TIMEOUT,
        |s| settled(s, &[1, 2, 3, 4]),
    )
    .await;
    assert_eq!(replica_counts(&status, &[1, 2, 3, 4])[&4], 3);
    let load = Load::start(&cluster, &placement);
    load.wait_acked(&cluster, &placement, MIN_ACKED).await;

    let victim = 3;
    let killed_at = Instant::now();
    cluster.kill9(victim);
    wait_status(
        &cluster,
        &placement,
        "the dead node's replicas re-created on the others",
        REBALANCE_TIMEOUT,
        |s| settled(s, &[1, 2, 3]),
    )
    .await;
    eprintln!(
        "replicas re-created {:?} after the kill",
        killed_at.elapsed()
    );
    load.wait_acked(&cluster, &placement, load.acked() + MIN_ACKED)
        .await;

    // It comes back: it drops the stale replicas and takes its share again.
    cluster.restart(victim).await;
    let status = wait_status(
        &cluster,
        &placement,
        "the returning node holding its share again",
        REBALANCE_TIMEOUT,
        |s| settled(s, &[1, 2, 3, 4]) && replica_counts(s, &[1, 2, 3, 4])[&4] == 3,
    )
    .await;
    load.wait_acked(&cluster, &placement, load.acked() + MIN_ACKED)
        .await;
    stop_and_check(load, &cluster, &status).await;
}
