//! Faults under load on a cluster of real `sluice server` processes (3 nodes, replication
//! factor 3, fsync on): `kill -9` of one node and of two in turn, a SIGSTOP pause, a network
//! partition isolating one node, and a restart of the whole cluster.
//!
//! Each test runs concurrent writers that put numbered records one at a time through a
//! rotating node, injects the fault while they run, heals it, waits until writes go through
//! every node again, then reads every shard in full from every node and hands the history to
//! the Jepsen-style checker (`sluice_tests::checker`): no acknowledged record lost (invariant
//! 1 of DESIGN.md), none duplicated, reordered or altered, the same sequence numbers on every
//! replica (2, 3), and every node serving every record once healed (8).
//!
//! The writers' SDK clients never retry, so an acknowledged record was written exactly once;
//! a 4xx answer is a definite failure (the record must never be read) and anything else —
//! 5xx, timeout, connection error — leaves the outcome unknown.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use sluice_tests::checker::{NodeRead, ReadRecord, Write, check};
use sluice_tests::cluster::{Cluster, ClusterOptions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

const STREAM: &str = "faults";
const SHARDS: i32 = 3;
const WRITERS: usize = 3;
/// Partition keys: in a 3-shard stream they hash into shards 0, 1, 2, 0, 1, 2, 0, 1 (eight
/// keys, so that a writer's rotations over keys and over three nodes meet every pair).
const KEYS: [&str; 8] = [
    "alpha", "delta", "bravo", "india", "juliet", "charlie", "mike", "lima",
];
/// Each call of a writer or a reader gives up after this long (the outcome is then unknown).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A writer waits this long after an error, so that refused connections do not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Acknowledged writes before a fault is injected.
const MIN_ACKED_BEFORE_FAULT: usize = 100;
/// Acknowledged writes, issued after the fault healed, before the writers stop.
const MIN_ACKED_AFTER_HEAL: usize = 100;
/// How long a condition on the writers' history may take.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the nodes may take to return the same records once the writers stopped.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an error's text [`tally`] shows.
const ERROR_TEXT_CHARS: usize = 160;
/// GetRecords pages read from one shard before the reader gives up.
const MAX_PAGES: usize = 1_000;

/// One put as a writer saw it.
#[derive(Clone, Debug)]
struct Attempt {
    write: Write,
    /// The node index the put was sent to.
    node: usize,
    started: Instant,
    finished: Instant,
    /// What went wrong, for a put that was not acknowledged (`"500 InternalFailure"`,
    /// `"timeout"`, …), and the full error text.
    error: Option<(String, String)>,
}

impl Attempt {
    fn acked_shard(&self) -> Option<&str> {
        match &self.write.outcome {
            sluice_tests::checker::Outcome::Acked { shard_id, .. } => Some(shard_id),
            _ => None,
        }
    }
}

/// Concurrent writers over every node, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    tasks: JoinSet<()>,
}

impl Load {
    /// Starts `WRITERS` writers; writer `w`'s `n`th put goes to node `(w + n) % nodes` with
    /// data `w{w}-{n}`.
    fn start(cluster: &Cluster, stream: &str) -> Load {
        let clients: Arc<Vec<Client>> = Arc::new(
            cluster
                .nodes()
                .map(|node| sluice_tests::client_for(&node.endpoint()))
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        for writer in 0..WRITERS {
            tasks.spawn(write_until_stopped(
                writer,
                Arc::clone(&clients),
                stream.to_owned(),
                Arc::clone(&stop),
                Arc::clone(&attempts),
            ));
        }
        Load {
            stop,
            attempts,
            tasks,
        }
    }

    fn snapshot(&self) -> Vec<Attempt> {
        self.attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Polls the history until `condition` holds; panics after `HISTORY_TIMEOUT` (the
    /// cluster, still alive, prints its logs as the panic unwinds).
    async fn wait_for(&self, what: &str, condition: impl Fn(&[Attempt]) -> bool) {
        let deadline = Instant::now() + HISTORY_TIMEOUT;
        loop {
            {
                let attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
                if condition(&attempts) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {HISTORY_TIMEOUT:?} waiting for {what}; writes so far: {}",
                tally(&self.snapshot())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for `MIN_ACKED_BEFORE_FAULT` acknowledged writes covering every shard.
    async fn wait_warmed_up(&self, shards: &[String]) {
        self.wait_for("acknowledged writes to every shard before the fault", |a| {
            acked_count(a, |_| true) >= MIN_ACKED_BEFORE_FAULT
                && shards
                    .iter()
                    .all(|shard| a.iter().any(|a| a.acked_shard() == Some(shard.as_str())))
        })
        .await;
    }

    /// Waits until writes issued after `healed_at` were acknowledged: `MIN_ACKED_AFTER_HEAL`
    /// in all, through every node, to every shard.
    async fn wait_resumed(&self, healed_at: Instant, nodes: usize, shards: &[String]) {
        self.wait_for(
            "writes through every node to every shard after the heal",
            |a| {
                let after = |attempt: &Attempt| attempt.started >= healed_at;
                acked_count(a, after) >= MIN_ACKED_AFTER_HEAL
                    && (0..nodes).all(|node| acked_count(a, |x| after(x) && x.node == node) > 0)
                    && shards.iter().all(|shard| {
                        acked_count(a, |x| after(x) && x.acked_shard() == Some(shard.as_str())) > 0
                    })
            },
        )
        .await;
    }

    /// Stops the writers (each finishes its current put, bounded by `CALL_TIMEOUT`) and
    /// returns every attempt, each writer's in the order it issued them.
    async fn stop(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Release);
        let joined = tokio::time::timeout(CALL_TIMEOUT * 2, async {
            while let Some(done) = self.tasks.join_next().await {
                done.expect("a writer panicked");
            }
        })
        .await;
        assert!(joined.is_ok(), "the writers did not stop");
        self.snapshot()
    }
}

async fn write_until_stopped(
    writer: usize,
    clients: Arc<Vec<Client>>,
    stream: String,
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::Acquire) {
        let node = (writer + n) % clients.len();
        let key = KEYS[(writer * 3 + n) % KEYS.len()];
        let id = format!("w{writer}-{n}");
        n += 1;
        let started = Instant::now();
        let answer = tokio::time::timeout(
            CALL_TIMEOUT,
            clients[node]
                .put_record()
                .stream_name(&stream)
                .partition_key(key)
                .data(Blob::new(id.as_bytes()))
                .send(),
        )
        .await;
        let finished = Instant::now();
        let (write, error) = match answer {
            Ok(Ok(out)) => (
                Write::acked(writer, id, key, out.shard_id(), out.sequence_number()),
                None,
            ),
            Err(_elapsed) => (
                Write::unknown(writer, id, key),
                Some((
                    "timeout".to_owned(),
                    format!("no answer in {CALL_TIMEOUT:?}"),
                )),
            ),
            Ok(Err(error)) => {
                let text = aws_sdk_kinesis::error::DisplayErrorContext(&error).to_string();
                match &error {
                    SdkError::ServiceError(service) => {
                        let status = service.raw().status().as_u16();
                        let kind = format!(
                            "{status} {}",
                            service.err().code().unwrap_or("(no error type)")
                        );
                        if (400..500).contains(&status) {
                            (Write::failed(writer, id, key), Some((kind, text)))
                        } else {
                            (Write::unknown(writer, id, key), Some((kind, text)))
                        }
                    }
                    SdkError::DispatchFailure(_) => (
                        Write::unknown(writer, id, key),
                        Some(("dispatch failure".to_owned(), text)),
                    ),
                    SdkError::TimeoutError(_) => (
                        Write::unknown(writer, id, key),
                        Some(("sdk timeout".to_owned(), text)),
                    ),
                    SdkError::ResponseError(_) => (
                        Write::unknown(writer, id, key),
                        Some(("unreadable response".to_owned(), text)),
                    ),
                    _ => (
                        Write::unknown(writer, id, key),
                        Some(("other client error".to_owned(), text)),
                    ),
                }
            }
        };
        let failed = error.is_some();
        attempts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Attempt {
                write,
                node,
                started,
                finished,
                error,
            });
        if failed {
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}

fn acked_count(attempts: &[Attempt], filter: impl Fn(&Attempt) -> bool) -> usize {
    attempts
        .iter()
        .filter(|a| a.acked_shard().is_some() && filter(a))
        .count()
}

/// `N acked, M not: 12 × 500 InternalFailure (first: …), …`.
fn tally(attempts: &[Attempt]) -> String {
    let acked = acked_count(attempts, |_| true);
    let mut kinds: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (kind, text) in attempts.iter().filter_map(|a| a.error.as_ref()) {
        kinds.entry(kind).or_insert((0, text)).0 += 1;
    }
    let mut out = format!("{acked} acked, {} not", attempts.len() - acked);
    for (kind, (count, first)) in kinds {
        let first: String = first.chars().take(ERROR_TEXT_CHARS).collect();
        out.push_str(&format!("; {count} × {kind} (first: {first})"));
    }
    out
}

/// Prints the writes acknowledged through the other nodes, per shard, since the fault began.
fn print_acked_during(
    attempts: &[Attempt],
    since: Instant,
    victim: usize,
    shards: &[String],
    fault: &str,
) {
    let per_shard: Vec<(&str, usize)> = shards
        .iter()
        .map(|shard| {
            let acked = acked_count(attempts, |a| {
                a.started >= since && a.node != victim && a.acked_shard() == Some(shard.as_str())
            });
            (shard.as_str(), acked)
        })
        .collect();
    eprintln!(
        "while node {} was {fault} for {:?}, the other nodes acknowledged {per_shard:?} (writers wait up to {CALL_TIMEOUT:?} on the {fault} node)",
        victim + 1,
        since.elapsed()
    );
}

/// Every attempt, one line each in the order they finished, with times from the first start.
fn print_timeline(attempts: &[Attempt]) {
    let Some(origin) = attempts.iter().map(|a| a.started).min() else {
        return;
    };
    let mut sorted: Vec<&Attempt> = attempts.iter().collect();
    sorted.sort_by_key(|a| a.finished);
    for a in sorted {
        let outcome = match (&a.write.outcome, &a.error) {
            (_, Some((kind, _))) => format!("{:?}: {kind}", a.write.outcome),
            (outcome, None) => format!("{outcome:?}"),
        };
        eprintln!(
            "{:>8.3}s +{:.3}s node {} {} key {}: {outcome}",
            (a.started - origin).as_secs_f64(),
            (a.finished - a.started).as_secs_f64(),
            a.node + 1,
            a.write.id,
            a.write.partition_key,
        );
    }
}

/// Three nodes, replication factor 3, fsync on.
async fn start_cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        nodes: 3,
        replication_factor: Some(3),
        fsync: true,
        ..ClusterOptions::default()
    })
    .await
}

/// Creates the stream through node 0, waits until every node sees it ACTIVE, and returns
/// its shard ids.
async fn create_stream(cluster: &Cluster) -> Vec<String> {
    cluster
        .client(0)
        .create_stream()
        .stream_name(STREAM)
        .shard_count(SHARDS)
        .send()
        .await
        .expect("create the stream");
    for index in 0..cluster.node_count() {
        sluice_tests::wait_active(&cluster.client(index), STREAM).await;
    }
    let shards = cluster
        .client(0)
        .list_shards()
        .stream_name(STREAM)
        .send()
        .await
        .expect("list shards");
    let ids: Vec<String> = shards
        .shards()
        .iter()
        .map(|s| s.shard_id().to_owned())
        .collect();
    assert_eq!(ids.len(), SHARDS as usize, "{ids:?}");
    ids
}

/// Reads every shard of the stream from one node, from TRIM_HORIZON to the end.
async fn read_stream(
    client: &Client,
    stream: &str,
) -> Result<Vec<(String, Vec<ReadRecord>)>, String> {
    let listed = tokio::time::timeout(
        CALL_TIMEOUT,
        client.list_shards().stream_name(stream).send(),
    )
    .await
    .map_err(|_| "ListShards timed out".to_owned())?
    .map_err(|e| {
        format!(
            "ListShards: {}",
            aws_sdk_kinesis::error::DisplayErrorContext(&e)
        )
    })?;
    let mut shards = Vec::new();
    for shard in listed.shards() {
        let records = read_shard(client, stream, shard.shard_id()).await?;
        shards.push((shard.shard_id().to_owned(), records));
    }
    shards.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(shards)
}

/// GetRecords pages until an empty page that is not behind the latest record.
async fn read_shard(client: &Client, stream: &str, shard: &str) -> Result<Vec<ReadRecord>, String> {
    let iterator = tokio::time::timeout(
        CALL_TIMEOUT,
        client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send(),
    )
    .await
    .map_err(|_| format!("GetShardIterator {shard} timed out"))?
    .map_err(|e| {
        format!(
            "GetShardIterator {shard}: {}",
            aws_sdk_kinesis::error::DisplayErrorContext(&e)
        )
    })?;
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
        .map_err(|e| {
            format!(
                "GetRecords {shard}: {}",
                aws_sdk_kinesis::error::DisplayErrorContext(&e)
            )
        })?;
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

/// Reads the whole stream from every node until every node returns the same records (or
/// `CONVERGE_TIMEOUT` passes: the checker then reports how they differ).
pub(crate) async fn read_every_node(cluster: &Cluster, stream: &str) -> Vec<NodeRead> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let started = Instant::now();
    loop {
        let mut reads = Vec::new();
        let mut errors = Vec::new();
        for node in cluster.nodes() {
            match read_stream(&cluster.client(node.index), stream).await {
                Ok(shards) => reads.push((node.node_id, shards)),
                Err(error) => errors.push(format!("node {}: {error}", node.node_id)),
            }
        }
        let converged = errors.is_empty() && reads.windows(2).all(|pair| pair[0].1 == pair[1].1);
        if converged || Instant::now() >= deadline {
            assert!(
                errors.is_empty(),
                "nodes still failed to serve reads {CONVERGE_TIMEOUT:?} after the writers stopped: {errors:#?}"
            );
            if converged {
                eprintln!(
                    "every node returned the same records {:?} after the writers stopped",
                    started.elapsed()
                );
            } else {
                eprintln!(
                    "the nodes still returned different records {CONVERGE_TIMEOUT:?} after the writers stopped"
                );
            }
            return reads
                .into_iter()
                .map(|(node_id, shards)| {
                    shards.into_iter().fold(
                        NodeRead::new(format!("node-{node_id}")),
                        |read, (shard, records)| read.shard(shard, records),
                    )
                })
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the writers, reads every node and asserts that the history has no anomaly.
async fn stop_and_check(load: Load, cluster: &Cluster) {
    let attempts = load.stop().await;
    eprintln!("writes: {}", tally(&attempts));
    let reads = read_every_node(cluster, STREAM).await;
    let writes: Vec<Write> = attempts.iter().map(|a| a.write.clone()).collect();
    let report = check(&writes, &reads);
    eprintln!("checker: {:?}", report.summary);
    if !report.is_ok() {
        print_timeline(&attempts);
    }
    // A failed assertion unwinds while `cluster` lives: its drop prints every node's log.
    assert!(report.is_ok(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv1_acked_records_survive_kill_9_of_one_node_and_it_catches_up() {
    let mut cluster = start_cluster().await;
    let shards = create_stream(&cluster).await;
    let load = Load::start(&cluster, STREAM);
    load.wait_warmed_up(&shards).await;

    // Node 0 bootstrapped the cluster: the first metadata leader.
    let victim = 0;
    let killed_at = Instant::now();
    cluster.kill9(victim);
    load.wait_for("every shard to take a write after the kill", |a| {
        shards.iter().all(|shard| {
            a.iter()
                .any(|x| x.started >= killed_at && x.acked_shard() == Some(shard.as_str()))
        })
    })
    .await;
    let attempts = load.snapshot();
    let first_ack = attempts
        .iter()
        .filter(|a| a.started >= killed_at && a.node != victim && a.acked_shard().is_some())
        .map(|a| a.finished - killed_at)
        .min()
        .expect("an acknowledged write after the kill");
    let per_shard: Vec<(String, Duration)> = shards
        .iter()
        .map(|shard| {
            let first = attempts
                .iter()
                .filter(|a| a.started >= killed_at && a.acked_shard() == Some(shard.as_str()))
                .map(|a| a.finished - killed_at)
                .min()
                .expect("waited for above");
            (shard.clone(), first)
        })
        .collect();
    let every_shard = per_shard.iter().map(|(_, d)| *d).max().unwrap_or_default();
    eprintln!(
        "after kill -9 of node {}: first acknowledged write through a surviving node after {first_ack:?}; every shard took a write again after {every_shard:?} ({per_shard:?})",
        victim + 1
    );
    assert!(
        every_shard < Duration::from_secs(30),
        "failover took {every_shard:?}"
    );

    // The node stays down for two seconds while the writers run.
    tokio::time::sleep_until(killed_at + Duration::from_secs(2)).await;
    cluster.restart(victim).await;
    let healed_at = Instant::now();
    load.wait_resumed(healed_at, cluster.node_count(), &shards)
        .await;
    stop_and_check(load, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv1_acked_records_survive_kill_9_of_two_nodes_in_turn() {
    let mut cluster = start_cluster().await;
    let shards = create_stream(&cluster).await;
    let load = Load::start(&cluster, STREAM);
    load.wait_warmed_up(&shards).await;

    for victim in [0, 2] {
        let killed_at = Instant::now();
        cluster.kill9(victim);
        tokio::time::sleep_until(killed_at + Duration::from_secs(2)).await;
        cluster.restart(victim).await;
        // The restarted node takes writes again before the next one goes down.
        let healed_at = Instant::now();
        load.wait_resumed(healed_at, cluster.node_count(), &shards)
            .await;
        eprintln!(
            "node {} was down {:?}; writes through every node resumed {:?} after its restart",
            victim + 1,
            healed_at - killed_at,
            healed_at.elapsed()
        );
    }
    stop_and_check(load, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv1_acked_records_survive_a_sigstop_pause_of_one_node() {
    let mut cluster = start_cluster().await;
    let shards = create_stream(&cluster).await;
    let load = Load::start(&cluster, STREAM);
    load.wait_warmed_up(&shards).await;

    let victim = 1;
    let paused_at = Instant::now();
    cluster.pause(victim);
    // Three seconds: longer than an election, so the groups it led elect other leaders
    // while it sleeps, and it wakes up believing it still leads them.
    tokio::time::sleep_until(paused_at + Duration::from_secs(3)).await;
    print_acked_during(&load.snapshot(), paused_at, victim, &shards, "paused");
    cluster.resume(victim);
    let healed_at = Instant::now();
    load.wait_resumed(healed_at, cluster.node_count(), &shards)
        .await;
    stop_and_check(load, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv1_acked_records_survive_a_partition_isolating_one_node() {
    let cluster = start_cluster().await;
    let shards = create_stream(&cluster).await;
    let load = Load::start(&cluster, STREAM);
    load.wait_warmed_up(&shards).await;

    // The bootstrap node: the first metadata leader. Its Kinesis port stays reachable, so
    // writers keep sending it puts it cannot commit.
    let victim = 0;
    let isolated_at = Instant::now();
    cluster.isolate(victim);
    tokio::time::sleep_until(isolated_at + Duration::from_secs(3)).await;
    print_acked_during(&load.snapshot(), isolated_at, victim, &shards, "isolated");
    cluster.heal();
    let healed_at = Instant::now();
    load.wait_resumed(healed_at, cluster.node_count(), &shards)
        .await;
    stop_and_check(load, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv1_acked_records_survive_kill_9_of_the_whole_cluster() {
    let mut cluster = start_cluster().await;
    let shards = create_stream(&cluster).await;
    let load = Load::start(&cluster, STREAM);
    load.wait_warmed_up(&shards).await;

    for index in 0..cluster.node_count() {
        cluster.kill9(index);
    }
    let killed_at = Instant::now();
    // No node can be ready alone (it needs a metadata leader): start all, then wait.
    for index in 0..cluster.node_count() {
        cluster.restart_without_waiting(index);
    }
    for index in 0..cluster.node_count() {
        cluster.wait_ready(index).await;
    }
    let healed_at = Instant::now();
    eprintln!(
        "every node was ready {:?} after the restart",
        healed_at - killed_at
    );
    // New writes work through every node, to every shard.
    load.wait_resumed(healed_at, cluster.node_count(), &shards)
        .await;
    stop_and_check(load, &cluster).await;
}

/// Liveness of forwarded writes (invariant 8): a write sent through a healthy node to a shard
/// whose leader froze is answered within seconds — it gives up on the frozen leader once the
/// other replicas elect a new one — and the next write goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_to_a_frozen_leader_is_answered_once_a_new_leader_is_elected() {
    let mut cluster = start_cluster().await;
    let shards = create_stream(&cluster).await;
    let frozen = cluster.leader_of(0, STREAM, &shards[0]).await;
    let leader = cluster.node(frozen).node_id;
    let healthy = (frozen + 1) % cluster.node_count();
    let client = sluice_tests::client_for(&cluster.node(healthy).endpoint());
    // Shard 0 starts at hash key 0.
    let put = |data: &'static str| {
        let client = client.clone();
        async move {
            client
                .put_record()
                .stream_name(STREAM)
                .partition_key("frozen")
                .explicit_hash_key("0")
                .data(Blob::new(data))
                .send()
                .await
        }
    };
    put("before").await.expect("a write before the freeze");
    cluster.pause(frozen);
    let started = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(30), put("during"))
        .await
        .expect("the write is answered");
    let answered_after = started.elapsed();
    eprintln!(
        "write through node {healthy} while shard leader {leader} is frozen: answered after {answered_after:?} ({})",
        if first.is_ok() {
            "written"
        } else {
            "outcome unknown"
        }
    );
    assert!(
        answered_after < Duration::from_secs(8),
        "answered only after {answered_after:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if put("after").await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write went through the new leader"
        );
        tokio::time::sleep(ERROR_BACKOFF).await;
    }
    cluster.resume(frozen);
}

/// Every segment file (`*.log`) under `dir` whose path contains `part`, largest first.
fn segment_files(dir: &std::path::Path, part: &str) -> Vec<(u64, std::path::PathBuf)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "log")
                && path.to_string_lossy().contains(part)
            {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                found.push((len, path));
            }
        }
    }
    found.sort_by(|a, b| b.cmp(a));
    found
}

/// Flips one bit at `fraction` of the file's length: media damage inside a batch that
/// valid batches follow.
fn flip_bit(path: &std::path::Path, fraction: f64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open a segment");
    let len = file.metadata().expect("segment metadata").len();
    let at = (len as f64 * fraction) as u64;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at)).expect("seek");
    file.read_exact(&mut byte).expect("read a byte");
    byte[0] ^= 0x10;
    file.seek(SeekFrom::Start(at)).expect("seek");
    file.write_all(&byte).expect("write the flipped byte");
    file.sync_all().expect("sync the damage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inv5_a_damaged_replica_repairs_itself_from_its_peers() {
    let mut cluster = start_cluster().await;
    let shards = create_stream(&cluster).await;
    let load = Load::start(&cluster, STREAM);
    load.wait_warmed_up(&shards).await;

    // A power loss on one node: it dies at once, then its disk turns out damaged — a bit
    // flipped inside a Raft log segment and inside a record log segment of every shard,
    // and the newest bytes of each record log (written, not yet synced) gone.
    let victim = 1;
    cluster.kill9(victim);
    let dir = cluster.node(victim).data_dir.join("streams");
    let raft_segments: Vec<_> = segment_files(&dir, ".group")
        .into_iter()
        .filter(|(len, _)| *len > 1024)
        .collect();
    let record_segments: Vec<_> = segment_files(&dir, "")
        .into_iter()
        .filter(|(len, path)| *len > 1024 && !path.to_string_lossy().contains(".group"))
        .collect();
    assert!(
        !raft_segments.is_empty() && !record_segments.is_empty(),
        "segments under {}: {:?}",
        dir.display(),
        segment_files(&dir, "")
    );
    for (_, path) in &raft_segments {
        flip_bit(path, 0.4);
    }
    for (len, path) in &record_segments {
        flip_bit(path, 0.3);
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open a record segment")
            .set_len(len - 100)
            .expect("cut the unsynced tail");
    }
    // The writers go on through the two others meanwhile.
    let damaged_at = Instant::now();
    load.wait_for("writes while the damaged node is down", |a| {
        acked_count(a, |x| x.started >= damaged_at) >= 30
    })
    .await;

    cluster.restart(victim).await;
    let restarted_at = Instant::now();
    // The node found both kinds of damage on its own.
    let log = std::fs::read_to_string(&cluster.node(victim).log_path).expect("the node's log");
    assert!(
        log.contains("raft log entries fail their checksum: cut the log"),
        "the damaged Raft log was not detected"
    );
    assert!(
        log.contains("a shard's record log is damaged: rebuilding it"),
        "the damaged record log was not detected"
    );
    load.wait_resumed(restarted_at, cluster.node_count(), &shards)
        .await;
    // The repaired node now carries a majority with one other: losing the third node
    // must not stop the writes, nor lose what was acknowledged.
    let other = (victim + 1) % cluster.node_count();
    cluster.kill9(other);
    let killed_at = Instant::now();
    load.wait_for("every shard to take a write with the repaired node", |a| {
        shards.iter().all(|shard| {
            a.iter()
                .any(|x| x.started >= killed_at && x.acked_shard() == Some(shard.as_str()))
        })
    })
    .await;
    cluster.restart(other).await;
    let healed_at = Instant::now();
    load.wait_resumed(healed_at, cluster.node_count(), &shards)
        .await;
    stop_and_check(load, &cluster).await;
}
