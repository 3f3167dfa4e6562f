//! The Rust client's `Producer` (`sluice-client`) against a cluster of real `sluice server`
//! processes (3 nodes, replication factor 3, fsync on) while the leader of a shard is killed
//! with SIGKILL in the middle of producing and later restarted on its directory.
//!
//! A sender hands numbered records (`key-K:NNNNNN`, `N` rising per key) over 40 partition
//! keys to one producer without pause, keeping every `Delivery`. The client is given a node
//! that is not the victim as its seed, so it keeps learning the shard map from a live node.
//! Every shard must get records acknowledged again after the kill and after the restart,
//! then every node is read in full once they all return the same records, and the history
//! goes to the checker (`sluice_tests::checker`): no acknowledged record lost, no divergence
//! between replicas, acknowledged sequence numbers rising in send order per key. Delivery
//! is at least once (a batch in flight on a broken connection is sent again), so a record
//! may be read twice, but one of its copies must sit where it was acknowledged, and the
//! first copies of each key's records must come in send order.

use crate::faults::read_every_node;
use sluice_client::{Ack, Client, ClientConfig, Error, Producer, ProducerConfig};
use sluice_tests::checker::{NodeRead, Outcome, Position, Write, check};
use sluice_tests::cluster::{Cluster, ClusterOptions};
use sluice_tests::wait_for;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const STREAM: &str = "produce-faults";
const SHARDS: i32 = 4;
const KEYS: usize = 40;
/// Records handed to the producer at once, then the sender pauses for [`PAUSE`]: about
/// 500 records a second, spread over the fault.
const BURST: usize = 10;
const PAUSE: Duration = Duration::from_millis(20);
/// Records acknowledged before the kill.
const ACKED_BEFORE_KILL: usize = 1_000;
/// Records of a shard the victim leads sent and not yet answered when it is killed.
const IN_FLIGHT_AT_KILL: usize = 3;
/// Records every shard must get acknowledged after the kill (so after its failover).
const ACKED_PER_SHARD_AFTER_KILL: usize = 100;
/// Records every shard must get acknowledged after the restart.
const ACKED_PER_SHARD_AFTER_RESTART: usize = 200;
/// How long each step of the schedule may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long every delivery may take in all once the sender stopped.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(40);

/// Records handed to the producer and records acknowledged so far, per shard.
#[derive(Default)]
struct Progress(Mutex<Counts>);

#[derive(Clone, Default)]
struct Counts {
    sent: HashMap<String, usize>,
    acked: HashMap<String, usize>,
}

impl Progress {
    fn sent(&self, shard_id: &str) {
        *self.lock().sent.entry(shard_id.to_owned()).or_default() += 1;
    }

    fn acked(&self, shard_id: &str) {
        *self.lock().acked.entry(shard_id.to_owned()).or_default() += 1;
    }

    fn counts(&self) -> Counts {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Counts {
    fn total_sent(&self) -> usize {
        self.sent.values().sum()
    }

    fn total_acked(&self) -> usize {
        self.acked.values().sum()
    }

    /// Records of the shard sent and not acknowledged (yet).
    fn unanswered(&self, shard_id: &str) -> usize {
        let sent = self.sent.get(shard_id).copied().unwrap_or(0);
        sent.saturating_sub(self.acked.get(shard_id).copied().unwrap_or(0))
    }
}

/// One record handed to the producer, and the task awaiting its delivery.
struct Sent {
    key: String,
    /// Also the record's data: `key-K:NNNNNN`.
    id: String,
    sent_at: Instant,
    outcome: JoinHandle<(Result<Ack, Error>, Instant)>,
}

/// Sends `BURST` records every `PAUSE` until `stop`; `shard_of` maps each key to the shard
/// it hashes to, for the counts of `progress`.
fn start_sender(
    producer: Arc<Producer>,
    shard_of: HashMap<String, String>,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<Sent>> {
    tokio::spawn(async move {
        let mut history = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            for _ in 0..BURST {
                let key = format!("key-{}", n % KEYS);
                let id = format!("{key}:{:06}", n / KEYS);
                let delivery = producer
                    .send(key.clone(), id.clone().into_bytes())
                    .await
                    .expect("the producer takes the record");
                let sent_at = Instant::now();
                progress.sent(&shard_of[&key]);
                let progress = progress.clone();
                let outcome = tokio::spawn(async move {
                    let outcome = delivery.await;
                    if let Ok(ack) = &outcome {
                        progress.acked(&ack.shard_id);
                    }
                    (outcome, Instant::now())
                });
                history.push(Sent {
                    key,
                    id,
                    sent_at,
                    outcome,
                });
                n += 1;
            }
            tokio::time::sleep(PAUSE).await;
        }
        history
    })
}

/// The index of the node with this node id.
fn index_of(cluster: &Cluster, node_id: u64) -> usize {
    (0..cluster.node_count())
        .find(|&i| cluster.node(i).node_id == node_id)
        .unwrap_or_else(|| panic!("no node has id {node_id}"))
}

/// Each shard of the stream with its leader's node id (0 when unknown), as node `index`
/// sees it.
async fn leaders(cluster: &Cluster, index: usize) -> BTreeMap<String, u64> {
    cluster
        .status(index)
        .await
        .map(|status| {
            status
                .shards
                .into_iter()
                .filter(|s| s.stream_name == STREAM)
                .map(|s| (s.shard_id, s.leader))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until every shard has at least `more` acknowledged records beyond `before`.
async fn wait_every_shard_acked(
    progress: &Progress,
    shards: &[String],
    before: &HashMap<String, usize>,
    more: usize,
    what: &str,
) {
    wait_for(what, STEP_TIMEOUT, || async {
        let now = progress.counts().acked;
        shards.iter().all(|shard| {
            now.get(shard).copied().unwrap_or(0) >= before.get(shard).copied().unwrap_or(0) + more
        })
    })
    .await;
}

/// Checks, on every node's read, that the first copy of each key's records comes in send
/// order (`NNNNNN` rising); returns the offending pairs.
fn first_copies_out_of_send_order(reads: &[NodeRead]) -> Vec<String> {
    let mut problems = Vec::new();
    for read in reads {
        let mut seen = HashSet::new();
        let mut last: HashMap<&str, &str> = HashMap::new();
        for shard in &read.shards {
            for record in &shard.records {
                if !seen.insert(record.data.as_str()) {
                    continue;
                }
                let Some((key, number)) = record.data.split_once(':') else {
                    problems.push(format!("{}: malformed data {:?}", read.node, record.data));
                    continue;
                };
                if let Some(previous) = last.insert(key, number)
                    && previous >= number
                {
                    problems.push(format!(
                        "{} {}: {key}:{previous} read before {key}:{number} (at {})",
                        read.node, shard.shard_id, record.sequence_number
                    ));
                }
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_keeps_every_acked_record_in_order_through_a_leaders_kill_9_and_restart() {
    let started = Instant::now();
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

    // The victim leads the first shard, whichever node it is; the client's seed is another
    // node, which stays up all along.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let placement = loop {
        let placement = leaders(&cluster, 0).await;
        if placement.len() == SHARDS as usize && placement.values().all(|&leader| leader != 0) {
            break placement;
        }
        assert!(
            Instant::now() < deadline,
            "not every shard had a leader within {STEP_TIMEOUT:?}: {placement:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let shards: Vec<String> = placement.keys().cloned().collect();
    let victim_id = placement[&shards[0]];
    let victim = index_of(&cluster, victim_id);
    let seed = (victim + 1) % cluster.node_count();
    let victim_shards: Vec<&String> = placement
        .iter()
        .filter(|(_, leader)| **leader == victim_id)
        .map(|(shard, _)| shard)
        .collect();
    eprintln!(
        "leaders {placement:?}: node {victim_id} will be killed (it leads {victim_shards:?}); \
         the client's seed is node {}",
        cluster.node(seed).node_id
    );

    let client = Client::connect(ClientConfig::new(format!(
        "http://{}",
        cluster.node(seed).grpc_addr
    )))
    .await
    .expect("connect to the seed node");
    let producer = Arc::new(
        client
            .producer(
                STREAM,
                ProducerConfig {
                    // 20 ms more backoff per attempt (up to 500 ms): ~18 s in all, well
                    // beyond an election.
                    max_attempts: 50,
                    refresh_interval: Duration::from_millis(500),
                    ..ProducerConfig::default()
                },
            )
            .await
            .expect("start the producer"),
    );

    let routes = client.routes(STREAM).await.expect("the stream's routes");
    let shard_of: HashMap<String, String> = (0..KEYS)
        .map(|k| {
            let key = format!("key-{k}");
            let shard = routes
                .shard_for(&key, None)
                .expect("every key has a shard")
                .shard_id
                .clone();
            (key, shard)
        })
        .collect();
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sender = start_sender(producer.clone(), shard_of, progress.clone(), stop.clone());

    // The kill lands while records of the victim's shards wait for their answer.
    wait_for(
        &format!(
            "{ACKED_BEFORE_KILL} records acknowledged, then records of {victim_shards:?} in flight"
        ),
        STEP_TIMEOUT,
        || async {
            let counts = progress.counts();
            counts.total_acked() >= ACKED_BEFORE_KILL
                && victim_shards
                    .iter()
                    .any(|shard| counts.unanswered(shard) >= IN_FLIGHT_AT_KILL)
        },
    )
    .await;
    let killed_at = Instant::now();
    cluster.kill9(victim);
    let at_kill = progress.counts();
    eprintln!(
        "{:.1?}: kill -9 of node {victim_id} after {} records sent, {} acknowledged",
        started.elapsed(),
        at_kill.total_sent(),
        at_kill.total_acked()
    );
    wait_every_shard_acked(
        &progress,
        &shards,
        &at_kill.acked,
        ACKED_PER_SHARD_AFTER_KILL,
        "every shard to take records again after the kill",
    )
    .await;
    eprintln!(
        "{:.1?}: every shard took records again {:.1?} after the kill; leaders as node {} sees \
         them: {:?}",
        started.elapsed(),
        killed_at.elapsed(),
        cluster.node(seed).node_id,
        leaders(&cluster, seed).await
    );

    cluster.restart(victim).await;
    let at_restart = progress.counts();
    eprintln!(
        "{:.1?}: node {victim_id} is back, {} records sent",
        started.elapsed(),
        at_restart.total_sent()
    );
    wait_every_shard_acked(
        &progress,
        &shards,
        &at_restart.acked,
        ACKED_PER_SHARD_AFTER_RESTART,
        "every shard to take records after the restart",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let history = sender.await.expect("the sender");
    eprintln!(
        "{:.1?}: {} records sent; leaders as node {} sees them: {:?}",
        started.elapsed(),
        history.len(),
        cluster.node(seed).node_id,
        leaders(&cluster, seed).await
    );

    // Every record's outcome. A producer error leaves it unknown: earlier attempts on a
    // broken connection may have written it.
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let mut writes = Vec::with_capacity(history.len());
    let mut acked = 0;
    let mut in_flight_at_kill = 0;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for Sent {
        key,
        id,
        sent_at,
        outcome,
    } in history
    {
        let (outcome, finished_at) = tokio::time::timeout_at(deadline, outcome)
            .await
            .expect("every record has an outcome within the delivery timeout")
            .expect("the delivery task");
        if sent_at < killed_at && finished_at > killed_at {
            in_flight_at_kill += 1;
        }
        match outcome {
            Ok(ack) => {
                acked += 1;
                writes.push(Write::acked(0, id, key, ack.shard_id, ack.sequence_number));
            }
            Err(error) => {
                *errors.entry(error.to_string()).or_default() += 1;
                writes.push(Write::unknown(0, id, key));
            }
        }
    }
    let total = writes.len();
    eprintln!(
        "{acked} of {total} records acknowledged; {in_flight_at_kill} were sent before the kill \
         and answered after it; errors: {errors:?}"
    );
    assert!(
        acked * 100 > total * 90,
        "only {acked} of {total} records were acknowledged: {errors:?}"
    );

    // Waits until every node returns the same records, then judges the history.
    let reads = read_every_node(&cluster, STREAM).await;
    let report = check(&writes, &reads);
    eprintln!("checker: {:?}", report.summary);
    // At least once: a duplicated record is no anomaly, but an acknowledged one must have a
    // copy where it was acknowledged (its other copies are then at "wrong" positions).
    let acked_at: HashMap<&str, Position> = writes
        .iter()
        .filter_map(|write| match &write.outcome {
            Outcome::Acked {
                shard_id,
                sequence_number,
            } => Some((
                write.id.as_str(),
                Position {
                    shard_id: shard_id.clone(),
                    sequence_number: sequence_number.clone(),
                },
            )),
            _ => None,
        })
        .collect();
    let duplicated: HashMap<(&str, &str), &Vec<Position>> = report
        .duplicated
        .iter()
        .map(|d| ((d.node.as_str(), d.id.as_str()), &d.read))
        .collect();
    let copies_elsewhere = report
        .wrong_position
        .iter()
        .filter(|w| {
            duplicated
                .get(&(w.node.as_str(), w.id.as_str()))
                .is_some_and(|read| {
                    acked_at
                        .get(w.id.as_str())
                        .is_some_and(|p| read.contains(p))
                })
        })
        .count();
    let anomalies = report.anomalies() - report.duplicated.len() - copies_elsewhere;
    assert_eq!(
        anomalies, 0,
        "anomalies beside at-least-once duplicates: {report}"
    );
    for copy in report.duplicated.iter().take(10) {
        eprintln!("read twice: {copy}");
    }
    let out_of_order = first_copies_out_of_send_order(&reads);
    assert!(
        out_of_order.is_empty(),
        "first copies out of send order: {out_of_order:#?}"
    );
    eprintln!(
        "{:.1?}: no acknowledged record lost or reordered; {} records read twice on some node \
         (sent again after a broken connection)",
        started.elapsed(),
        report
            .duplicated
            .iter()
            .map(|d| d.id.as_str())
            .collect::<HashSet<_>>()
            .len()
    );
}
