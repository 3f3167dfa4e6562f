//! The pacemaker on a group of three in-process nodes, each with its own router and tonic
//! server on loopback, the group configured like a shard group (no tick, heartbeats or
//! election timer). A node is taken down by a gate in front of its server that refuses
//! every call (as a dead or cut-off node would fail them), and killed by also stopping its
//! group and its background tasks.

use super::*;
use crate::{GroupNetwork, Groups, LogStore, RaftGroup, SnapshotBytes, ensure_lease};
use futures_util::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{OptionalSend, StoredMembership};
use parking_lot::Mutex;
use sluice_proto::peer::peer_server::PeerServer;
use sluice_storage::LogConfig;
use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::sync::atomic::{AtomicBool, Ordering};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

openraft::declare_raft_types!(
    /// String commands, nodes with addresses: what the transport needs.
    PacedTypes:
        D = String,
        R = String,
        Node = PeerNode,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

const GROUP: &str = "g";

/// The applied id and the membership.
type Applied = (Option<LogIdOf<PacedTypes>>, StoredMembershipOf<PacedTypes>);

/// Keeps the applied id and the membership; snapshots carry nothing else.
#[derive(Clone, Default)]
struct Machine(Arc<Mutex<Applied>>);

impl RaftSnapshotBuilder<PacedTypes> for Machine {
    type SnapshotData = SnapshotBytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<PacedTypes, SnapshotBytes>, io::Error> {
        let (applied, membership) = self.0.lock().clone();
        Ok(SnapshotOf::<PacedTypes, SnapshotBytes> {
            meta: SnapshotMetaOf::<PacedTypes> {
                last_log_id: applied,
                last_membership: membership,
            },
            snapshot: Cursor::new(Vec::new()),
        })
    }
}

impl RaftStateMachine<PacedTypes> for Machine {
    type SnapshotData = SnapshotBytes;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<Applied, io::Error> {
        Ok(self.0.lock().clone())
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<PacedTypes>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            {
                let mut state = self.0.lock();
                if let Some(membership) = entry.get_membership() {
                    state.1 = StoredMembership::new(Some(log_id), membership);
                }
                state.0 = Some(log_id);
            }
            if let Some(responder) = responder {
                responder.send(String::new());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<PacedTypes>,
        _snapshot: SnapshotBytes,
    ) -> Result<(), io::Error> {
        *self.0.lock() = (meta.last_log_id, meta.last_membership.clone());
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<PacedTypes, SnapshotBytes>>, io::Error> {
        Ok(None)
    }
}

/// Like a shard group's settings: no timers.
fn config() -> Arc<openraft::Config> {
    Arc::new(
        openraft::Config {
            enable_tick: false,
            enable_heartbeat: false,
            enable_elect: false,
            heartbeat_interval: 250,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    )
}

struct Node {
    id: u64,
    address: String,
    /// Cleared: the node's server refuses every call.
    up: Arc<AtomicBool>,
    raft: Raft<PacedTypes, Machine>,
    router: Router,
    tasks: Vec<JoinHandle<()>>,
    _dir: TempDir,
}

impl Node {
    async fn start(id: u64) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let router = Router::new(None);
        router.set_identity(id, &address);
        let groups = Groups::new(router.clone());
        let up = Arc::new(AtomicBool::new(true));
        let gate = Arc::clone(&up);
        let service = PeerServer::with_interceptor(groups.clone(), move |request| {
            if gate.load(Ordering::Acquire) {
                Ok(request)
            } else {
                Err(tonic::Status::unavailable("the node is down"))
            }
        });
        let server = tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        let dir = TempDir::new().unwrap();
        let store = LogStore::<PacedTypes>::open(dir.path().join("raft"), LogConfig::default())
            .await
            .unwrap();
        let network = GroupNetwork::new(router.clone(), GROUP);
        let raft = Raft::new(id, config(), network, store, Machine::default())
            .await
            .unwrap();
        groups.insert(
            GROUP,
            Arc::new(RaftGroup::new(GROUP, raft.clone(), router.clone(), 7)),
        );
        groups.pace(GROUP, Arc::new(PacedRaft::new(raft.clone())));
        let background = tokio::spawn(async move { groups.run_background().await });
        Node {
            id,
            address,
            up,
            raft,
            router,
            tasks: vec![server, background],
            _dir: dir,
        }
    }

    /// Writes through this node, which must lead, as the shard write path does.
    async fn write(&self, data: &str) -> u64 {
        ensure_lease(&self.raft).await;
        self.raft
            .client_write(data.to_owned())
            .await
            .expect("the leader takes the write")
            .log_id
            .index
    }

    async fn applied(&self, index: u64, within: Duration, what: &str) {
        self.raft
            .wait(Some(within))
            .applied_index_at_least(Some(index), what)
            .await
            .unwrap_or_else(|e| panic!("node {}: {what}: {e}", self.id));
    }

    fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// As `kill -9`: unreachable, its group and tasks stopped.
    async fn kill(&mut self) {
        self.up.store(false, Ordering::Release);
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.raft.shutdown().await.unwrap();
    }
}

/// Waits for `router` to report `event`.
async fn peer_event(
    events: &mut tokio::sync::broadcast::Receiver<PeerEvent>,
    event: PeerEvent,
    within: Duration,
) {
    tokio::time::timeout(within, async {
        while events.recv().await.unwrap() != event {}
    })
    .await
    .unwrap_or_else(|_| panic!("no {event:?} within {within:?}"));
}

async fn three_nodes() -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Node::start(id).await);
    }
    let members: BTreeMap<u64, PeerNode> = nodes
        .iter()
        .map(|n| {
            (
                n.id,
                PeerNode {
                    grpc: n.address.clone(),
                    kinesis: String::new(),
                    zone: None,
                },
            )
        })
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();
    nodes[0].raft.trigger().elect(false).await.unwrap();
    for node in &nodes {
        node.raft
            .wait(Some(Duration::from_secs(10)))
            .current_leader(1, "the initializer leads")
            .await
            .unwrap();
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_apply_commits_at_once_and_an_idle_leader_still_takes_writes() {
    let nodes = three_nodes().await;
    let index = nodes[0].write("a").await;
    // No heartbeat follows a commit: the commit itself reaches the followers.
    for follower in &nodes[1..] {
        follower
            .applied(
                index,
                Duration::from_millis(500),
                "applies a commit at once",
            )
            .await;
    }
    // Idle for longer than the lease: the leader renews it before the write.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = Instant::now();
    let index = nodes[0].write("b").await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a write after idling took {:?}",
        started.elapsed()
    );
    for follower in &nodes[1..] {
        follower
            .applied(
                index,
                Duration::from_millis(500),
                "applies a commit at once",
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_was_down_catches_up_without_further_writes() {
    let nodes = three_nodes().await;
    let mut events = nodes[0].router.subscribe_peers();
    nodes[2].up.store(false, Ordering::Release);
    peer_event(&mut events, PeerEvent::Suspected(3), Duration::from_secs(5)).await;
    assert!(nodes[0].router.peer_down_since(3).is_some());
    let mut last = 0;
    for n in 0..5 {
        last = nodes[0].write(&format!("while 3 is down: {n}")).await;
    }
    nodes[1]
        .applied(last, Duration::from_secs(1), "node 2 applies")
        .await;
    nodes[2].up.store(true, Ordering::Release);
    peer_event(&mut events, PeerEvent::Reachable(3), Duration::from_secs(5)).await;
    assert_eq!(nodes[0].router.peer_down_since(3), None);
    // Nothing is written any more: the leader's nudge on the peer's return catches it up.
    nodes[2]
        .applied(last, Duration::from_secs(3), "node 3 catches up")
        .await;
    assert_eq!(nodes[2].leader(), Some(1), "no election was needed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivors_elect_a_leader_soon_after_the_leader_dies() {
    let mut nodes = three_nodes().await;
    let index = nodes[0].write("before").await;
    nodes[1]
        .applied(index, Duration::from_secs(1), "applies")
        .await;
    nodes[2]
        .applied(index, Duration::from_secs(1), "applies")
        .await;

    let killed = Instant::now();
    nodes[0].kill().await;
    let deadline = Duration::from_secs(4);
    let leader = tokio::time::timeout(deadline, async {
        let mut metrics = nodes[1].raft.metrics();
        loop {
            let leader = metrics.borrow_watched().current_leader;
            if let Some(leader) = leader.filter(|l| *l != 1) {
                return leader;
            }
            metrics.changed().await.unwrap();
        }
    })
    .await
    .expect("a new leader within 4 s");
    let elected = killed.elapsed();
    // Suspected after 1 s of silence, then one Pre-Vote and one vote round.
    assert!(
        elected >= Duration::from_millis(700),
        "elected after {elected:?}"
    );
    let new_leader = nodes.iter().find(|n| n.id == leader).unwrap();
    new_leader
        .raft
        .wait(Some(Duration::from_secs(2)))
        .current_leader(leader, "the winner knows it leads")
        .await
        .unwrap();
    let index = new_leader.write("after").await;
    for node in &nodes[1..] {
        node.applied(
            index,
            Duration::from_secs(1),
            "applies under the new leader",
        )
        .await;
    }
    // Each survivor suspects the dead node within a second of silence (the voter that
    // granted the winning vote may not have yet when the new leader took the write).
    for node in &nodes[1..] {
        let suspected = tokio::time::timeout(Duration::from_secs(2), async {
            while node.router.peer_down_since(1).is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(suspected.is_ok(), "node {} never suspected node 1", node.id);
    }
}

#[test]
fn every_live_voter_has_its_own_rank_and_groups_spread_the_first_one() {
    let live = [1, 2, 3];
    let mut firsts = std::collections::BTreeSet::new();
    for shard in 0..30 {
        let group = format!("shard/s/1/{shard}");
        let mut ranks: Vec<u32> = live
            .iter()
            .map(|me| campaign_rank(&group, &live, *me))
            .collect();
        ranks.sort_unstable();
        assert_eq!(ranks, vec![0, 1, 2]);
        firsts.insert(
            live.iter()
                .find(|me| campaign_rank(&group, &live, **me) == 0)
                .copied(),
        );
    }
    assert_eq!(firsts.len(), 3, "every node goes first for some group");
    assert_eq!(campaign_rank("g", &[1, 2], 3), u32::MAX);
}
