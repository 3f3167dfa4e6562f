//! The metadata group: one openraft group over the cluster's nodes. Its Raft log and vote
//! live in the project's segment-log engine (`sluice_replication::LogStore`); its state
//! machine is [`MetaState`], applied entry by entry, with the applied state kept in the
//! `MetaStore` (sled) together with the last applied log id and membership. sled may lose
//! its unsynced writes: openraft applies again every committed entry after the applied id
//! sled kept, so nothing a command changed is lost.
//!
//! Any node proposes: the leader appends the command, a follower forwards it to the leader
//! (`sluice.peer.v1.Peer`, client write) and then waits until it applied the command
//! itself, so a caller reads its own write on the node it called.

use crate::command::Command;
use crate::error::{CommandError, MetaError};
use crate::model::{AccessKey, Stream};
use crate::state::{Change, Identity, MetaState};
use futures_util::TryStreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{ChangeMembers, EntryPayload, OptionalSend, Raft, ServerState, StoredMembership};
use parking_lot::{Mutex, RwLock};
use sluice_replication::{
    AddMember, GroupNetwork, Groups, LogStore, PeerCallError, PeerNode, RaftGroup, Router,
    SnapshotBytes, leader_changes_from, wait_for_leader,
};
use sluice_storage::{LogConfig, MetaStore, SledStore};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Cursor};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const STREAMS_TREE: &str = "streams";
const KEYS_TREE: &str = "keys";
/// Cluster-wide state beside streams and keys: the draining nodes.
const CLUSTER_TREE: &str = "cluster";
const DRAINING_KEY: &[u8] = b"draining";
const APPLIED_TREE: &str = "applied";
const APPLIED_KEY: &[u8] = b"meta";
const SNAPSHOT_KEY: &[u8] = b"snapshot";
/// The metadata group's id on the peer transport.
pub const META_GROUP: &str = "meta";
/// At most this many voters; further nodes are learners.
pub const MAX_VOTERS: usize = 5;
/// A proposal waits at most this long for a leader.
const LEADER_WAIT: Duration = Duration::from_secs(15);

openraft::declare_raft_types!(
    /// The metadata group's types: commands in, their outcome out, nodes with addresses.
    pub MetaTypes:
        D = Command,
        R = MetaResponse,
        Node = PeerNode,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

/// The outcome of one applied command: a rejection changes nothing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MetaResponse(pub Result<(), CommandError>);

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

type LogId = LogIdOf<MetaTypes>;
type Membership = StoredMembershipOf<MetaTypes>;
type SnapshotMeta = SnapshotMetaOf<MetaTypes>;

/// What sled keeps beside the applied state.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Applied {
    log_id: Option<LogId>,
    membership: Membership,
}

/// A snapshot's bytes: the whole state at its log id.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotData {
    streams: Vec<Stream>,
    keys: Vec<AccessKey>,
    #[serde(default)]
    draining: BTreeSet<u64>,
}

struct Machine {
    state: RwLock<MetaState>,
    kv: SledStore,
    applied: Mutex<Applied>,
    snapshot: Mutex<Option<(SnapshotMeta, Vec<u8>)>>,
    /// The index of the last applied entry, for waiters.
    applied_index: watch::Sender<u64>,
}

/// The state machine openraft drives; reads go to the same `Arc`.
#[derive(Clone)]
pub struct MetaMachine(Arc<Machine>);

fn json_err(e: serde_json::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn store_err(e: sluice_storage::StorageError) -> io::Error {
    io::Error::other(e)
}

impl MetaMachine {
    fn open(dir: &Path, identity: Identity) -> Result<MetaMachine, MetaError> {
        let kv = SledStore::open(&dir.join("state")).map_err(MetaError::Store)?;
        let mut state = MetaState::new(identity);
        for (_, value) in kv
            .scan_prefix(STREAMS_TREE, b"")
            .map_err(MetaError::Store)?
        {
            let stream: Stream = serde_json::from_slice(&value).map_err(MetaError::Codec)?;
            state.streams.insert(stream.name.clone(), stream);
        }
        for (_, value) in kv.scan_prefix(KEYS_TREE, b"").map_err(MetaError::Store)? {
            let key: AccessKey = serde_json::from_slice(&value).map_err(MetaError::Codec)?;
            state.keys.insert(key.access_key_id.clone(), key);
        }
        if let Some(bytes) = kv
            .get(CLUSTER_TREE, DRAINING_KEY)
            .map_err(MetaError::Store)?
        {
            state.draining = serde_json::from_slice(&bytes).map_err(MetaError::Codec)?;
        }
        let applied: Applied = match kv
            .get(APPLIED_TREE, APPLIED_KEY)
            .map_err(MetaError::Store)?
        {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(MetaError::Codec)?,
            None => Applied::default(),
        };
        let snapshot = match kv
            .get(APPLIED_TREE, SNAPSHOT_KEY)
            .map_err(MetaError::Store)?
        {
            Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(MetaError::Codec)?),
            None => None,
        };
        let index = applied.log_id.as_ref().map_or(0, |id| id.index);
        state.set_members(applied.membership.nodes());
        Ok(MetaMachine(Arc::new(Machine {
            state: RwLock::new(state),
            kv,
            applied: Mutex::new(applied),
            snapshot: Mutex::new(snapshot),
            applied_index: watch::channel(index).0,
        })))
    }

    /// Writes one applied entry's change with the new applied id, in one sled batch.
    fn persist(&self, change: &Change, applied: &Applied) -> io::Result<()> {
        let mut batch = Vec::new();
        match change {
            Change::Put(stream) => batch.push((
                STREAMS_TREE,
                stream.name.as_bytes().to_vec(),
                Some(serde_json::to_vec(stream).map_err(json_err)?),
            )),
            Change::Remove(name) => batch.push((STREAMS_TREE, name.as_bytes().to_vec(), None)),
            Change::PutKey(key) => batch.push((
                KEYS_TREE,
                key.access_key_id.as_bytes().to_vec(),
                Some(serde_json::to_vec(key).map_err(json_err)?),
            )),
            Change::RemoveKey(id) => batch.push((KEYS_TREE, id.as_bytes().to_vec(), None)),
            Change::Draining(nodes) => batch.push((
                CLUSTER_TREE,
                DRAINING_KEY.to_vec(),
                Some(serde_json::to_vec(nodes).map_err(json_err)?),
            )),
            Change::Nothing => {}
        }
        batch.push((
            APPLIED_TREE,
            APPLIED_KEY.to_vec(),
            Some(serde_json::to_vec(applied).map_err(json_err)?),
        ));
        self.0.kv.apply_batch(batch).map_err(store_err)
    }

    fn snapshot_data(&self) -> io::Result<Vec<u8>> {
        let state = self.0.state.read();
        serde_json::to_vec(&SnapshotData {
            streams: state.streams.values().cloned().collect(),
            keys: state.keys.values().cloned().collect(),
            draining: state.draining.clone(),
        })
        .map_err(json_err)
    }
}

impl RaftSnapshotBuilder<MetaTypes> for MetaMachine {
    type SnapshotData = SnapshotBytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<MetaTypes, SnapshotBytes>, io::Error> {
        // Entries are applied under `applied`'s lock, so state and id agree.
        let (meta, data) = {
            let applied = self.0.applied.lock();
            let data = self.snapshot_data()?;
            let meta = SnapshotMeta {
                last_log_id: applied.log_id,
                last_membership: applied.membership.clone(),
            };
            (meta, data)
        };
        self.0
            .kv
            .apply_batch(vec![(
                APPLIED_TREE,
                SNAPSHOT_KEY.to_vec(),
                Some(serde_json::to_vec(&(&meta, &data)).map_err(json_err)?),
            )])
            .map_err(store_err)?;
        *self.0.snapshot.lock() = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<MetaTypes, SnapshotBytes> {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<MetaTypes> for MetaMachine {
    type SnapshotData = SnapshotBytes;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        let applied = self.0.applied.lock();
        Ok((applied.log_id, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<MetaTypes>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let response = {
                let mut applied = self.0.applied.lock();
                let (change, response) = match &entry.payload {
                    EntryPayload::Normal(command) => {
                        match self.0.state.read().plan(command) {
                            Ok(change) => (change, Ok(())),
                            // A rejected command changes nothing, wherever it is applied.
                            Err(rejected) => (Change::Nothing, Err(rejected)),
                        }
                    }
                    EntryPayload::Membership(membership) => {
                        applied.membership =
                            StoredMembership::new(Some(log_id), membership.clone());
                        self.0.state.write().set_members(membership.nodes());
                        (Change::Nothing, Ok(()))
                    }
                    EntryPayload::Blank => (Change::Nothing, Ok(())),
                };
                applied.log_id = Some(log_id);
                self.persist(&change, &applied)?;
                self.0.state.write().commit(change);
                response
            };
            self.0.applied_index.send_replace(log_id.index);
            if let Some(responder) = responder {
                responder.send(MetaResponse(response));
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData = serde_json::from_slice(&bytes).map_err(json_err)?;
        let mut applied = self.0.applied.lock();
        let mut batch = Vec::new();
        for tree in [STREAMS_TREE, KEYS_TREE] {
            for (key, _) in self.0.kv.scan_prefix(tree, b"").map_err(store_err)? {
                batch.push((tree, key, None));
            }
        }
        for stream in &data.streams {
            batch.push((
                STREAMS_TREE,
                stream.name.as_bytes().to_vec(),
                Some(serde_json::to_vec(stream).map_err(json_err)?),
            ));
        }
        for key in &data.keys {
            batch.push((
                KEYS_TREE,
                key.access_key_id.as_bytes().to_vec(),
                Some(serde_json::to_vec(key).map_err(json_err)?),
            ));
        }
        batch.push((
            CLUSTER_TREE,
            DRAINING_KEY.to_vec(),
            Some(serde_json::to_vec(&data.draining).map_err(json_err)?),
        ));
        applied.log_id = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        batch.push((
            APPLIED_TREE,
            APPLIED_KEY.to_vec(),
            Some(serde_json::to_vec(&*applied).map_err(json_err)?),
        ));
        batch.push((
            APPLIED_TREE,
            SNAPSHOT_KEY.to_vec(),
            Some(serde_json::to_vec(&(meta, &bytes)).map_err(json_err)?),
        ));
        self.0.kv.apply_batch(batch).map_err(store_err)?;
        {
            let mut state = self.0.state.write();
            state.streams = data
                .streams
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect::<BTreeMap<_, _>>();
            state.keys = data
                .keys
                .into_iter()
                .map(|k| (k.access_key_id.clone(), k))
                .collect();
            state.draining = data.draining;
            state.set_members(meta.last_membership.nodes());
        }
        *self.0.snapshot.lock() = Some((meta.clone(), bytes));
        drop(applied);
        self.0
            .applied_index
            .send_replace(meta.last_log_id.as_ref().map_or(0, |id| id.index));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<MetaTypes, SnapshotBytes>>, io::Error> {
        Ok(self
            .0
            .snapshot
            .lock()
            .as_ref()
            .map(|(meta, data)| SnapshotOf::<MetaTypes, SnapshotBytes> {
                meta: meta.clone(),
                snapshot: Cursor::new(data.clone()),
            }))
    }
}

/// How this node takes part in the metadata group.
#[derive(Debug, Clone)]
pub struct MetaNode {
    /// This node's id, stable across restarts.
    pub id: u64,
    /// How peers reach this node.
    pub node: PeerNode,
    /// gRPC addresses of running members to join through; empty: bootstrap a new cluster
    /// when this node has no metadata yet.
    pub join: Vec<String>,
}

/// One node as the metadata group's membership knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub node: PeerNode,
    pub voter: bool,
}

/// The metadata group of this node: proposals, reads, membership.
pub struct Meta {
    raft: Raft<MetaTypes, MetaMachine>,
    machine: MetaMachine,
    router: Router,
    node: MetaNode,
}

/// openraft settings of the metadata group.
fn raft_config() -> Result<Arc<openraft::Config>, MetaError> {
    let config = openraft::Config {
        cluster_name: "sluice-meta".to_owned(),
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| MetaError::Raft(e.to_string()))
}

impl Meta {
    /// Opens the metadata group in `dir` and registers it with `groups`. A node with no
    /// metadata and no `join` addresses bootstraps a one-node cluster; one with `join`
    /// addresses asks to join in the background (see [`Meta::join`]).
    pub async fn open(
        dir: &Path,
        identity: Identity,
        fsync: bool,
        node: MetaNode,
        router: Router,
        groups: &Groups,
    ) -> Result<Meta, MetaError> {
        let machine = {
            let dir = dir.to_owned();
            tokio::task::spawn_blocking(move || MetaMachine::open(&dir, identity))
                .await
                .map_err(|e| MetaError::Raft(e.to_string()))??
        };
        let store = LogStore::<MetaTypes>::open(
            dir.join("raft"),
            LogConfig {
                fsync,
                ..LogConfig::default()
            },
        )
        .await
        .map_err(|e| MetaError::Raft(e.to_string()))?;
        let network = GroupNetwork::new(router.clone(), META_GROUP);
        let raft = Raft::new(node.id, raft_config()?, network, store, machine.clone())
            .await
            .map_err(|e| MetaError::Raft(e.to_string()))?;
        groups.insert(
            META_GROUP,
            Arc::new(RaftGroup::new(
                META_GROUP,
                raft.clone(),
                router.clone(),
                MAX_VOTERS,
            )),
        );
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| MetaError::Raft(e.to_string()))?;
        if !initialized && node.join.is_empty() {
            tracing::info!(node_id = node.id, "bootstrapping a new cluster");
            raft.initialize(BTreeMap::from([(node.id, node.node.clone())]))
                .await
                .map_err(|e| MetaError::Raft(e.to_string()))?;
        }
        Ok(Meta {
            raft,
            machine,
            router,
            node,
        })
    }

    /// Asks the members at the `join` addresses to add this node, until one accepts. Runs
    /// until it succeeds; a node that already is a member passes at once. Without `join`
    /// addresses, a member whose recorded address changed asks the other members to
    /// record the new one.
    pub async fn join(&self) {
        let seeds = if self.node.join.is_empty() {
            // A member that came back at another address asks the others to update it.
            let members = self.members();
            let recorded = members.iter().find(|m| m.id == self.node.id);
            match recorded {
                Some(me) if me.node != self.node.node => members
                    .iter()
                    .filter(|m| m.id != self.node.id)
                    .map(|m| m.node.grpc.clone())
                    .collect(),
                _ => return,
            }
        } else {
            self.node.join.clone()
        };
        let request = AddMember {
            node_id: self.node.id,
            node: self.node.node.clone(),
        };
        let mut delay = Duration::from_millis(200);
        loop {
            for seed in &seeds {
                match self
                    .router
                    .add_member_at::<MetaTypes>(seed, META_GROUP, &request)
                    .await
                {
                    Ok(Ok(())) => {
                        tracing::info!(node_id = self.node.id, seed, "joined the cluster");
                        return;
                    }
                    Ok(Err(reason)) => tracing::info!(seed, reason, "join refused; retrying"),
                    Err(error) => tracing::info!(seed, %error, "join failed; retrying"),
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    pub fn node_id(&self) -> u64 {
        self.node.id
    }

    /// The current leader, if this node knows one.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Whether this node is a member of a group that has a leader.
    pub fn ready(&self) -> bool {
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics.current_leader.is_some()
            && metrics
                .membership_config
                .membership()
                .nodes()
                .any(|(id, _)| *id == self.node.id)
    }

    /// Every member with its address and role.
    pub fn members(&self) -> Vec<Member> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                node: node.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    /// The metadata group's current term on this node.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// How far this node's metadata group lags, in entries: on the leader, what it has
    /// not committed yet; elsewhere, what it knows committed but has not applied.
    pub fn commit_lag(&self) -> u64 {
        sluice_replication::commit_lag(&self.raft.metrics().borrow_watched())
    }

    /// This node's role in the metadata group (`Leader`, `Follower`, `Learner`, …).
    pub fn server_state(&self) -> ServerState {
        self.raft.metrics().borrow_watched().state
    }

    /// Watches the index of the last applied entry (bumped after every applied command).
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.machine.0.applied_index.subscribe()
    }

    /// Commits `command` through the leader and returns once this node applied it.
    pub async fn propose(&self, command: &Command) -> Result<(), MetaError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let outcome = if leader == self.node.id {
                let write = self.raft.client_write(command.clone());
                match tokio::time::timeout_at(deadline, write).await {
                    Ok(Ok(response)) => Ok((response.log_id.index, response.data)),
                    Ok(Err(error)) => Err(error),
                    // Appended but not committed in time (no quorum): the outcome is unknown.
                    Err(_) => {
                        return Err(MetaError::Unavailable(
                            "the command was not committed in time".to_owned(),
                        ));
                    }
                }
            } else {
                if let Some(node) = self.member_node(leader) {
                    self.router.learn(leader, &node.grpc);
                }
                let forward = self
                    .router
                    .client_write::<MetaTypes>(leader, META_GROUP, command);
                // Give up on a leader that froze as soon as another one is known, or at the
                // deadline: the outcome is unknown then.
                let outcome = tokio::select! {
                    outcome = tokio::time::timeout_at(deadline, forward) => outcome,
                    () = leader_changes_from(&self.raft, leader) => {
                        return Err(MetaError::Unavailable(
                            "the metadata leader changed while the command was in flight".to_owned(),
                        ));
                    }
                };
                let Ok(outcome) = outcome else {
                    return Err(MetaError::Unavailable(
                        "the command was not committed in time".to_owned(),
                    ));
                };
                match outcome {
                    Ok(Ok(response)) => Ok((response.log_id.index, response.data)),
                    Ok(Err(error)) => Err(error),
                    // The command may or may not have been committed.
                    Err(error @ PeerCallError::Unreachable(..)) => {
                        return Err(MetaError::Unavailable(error.to_string()));
                    }
                    Err(error @ (PeerCallError::Refused(..) | PeerCallError::NotSent(..))) => {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(MetaError::Unavailable(error.to_string()));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            };
            match outcome {
                Ok((index, MetaResponse(result))) => {
                    self.wait_applied(index, deadline).await?;
                    return result.map_err(MetaError::Rejected);
                }
                Err(error) if error.forward_to_leader().is_some() => {
                    // Leadership moved before the command was appended: try the new leader.
                    if tokio::time::Instant::now() >= deadline {
                        return Err(MetaError::Unavailable(error.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => return Err(MetaError::Unavailable(error.to_string())),
            }
        }
    }

    async fn wait_for_leader(&self, deadline: tokio::time::Instant) -> Result<u64, MetaError> {
        wait_for_leader(&self.raft, deadline)
            .await
            .ok_or_else(|| MetaError::Unavailable("the metadata group has no leader".to_owned()))
    }

    fn member_node(&self, id: u64) -> Option<PeerNode> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .find(|(nid, _)| **nid == id)
            .map(|(_, node)| node.clone())
    }

    async fn wait_applied(
        &self,
        index: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), MetaError> {
        let mut applied = self.watch_applied();
        match tokio::time::timeout_at(deadline, applied.wait_for(|i| *i >= index)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(MetaError::Unavailable(
                "the command was committed but not yet applied on this node".to_owned(),
            )),
        }
    }

    /// Runs `f` against the state this node applied.
    pub fn read<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        f(&self.machine.0.state.read())
    }

    /// Whether this node knows a leader and applied everything that leader last reported
    /// committed: decisions that must not be taken on an old view (moving a replica,
    /// deleting one) wait for it, e.g. after a restart that lost sled's unsynced writes.
    pub fn caught_up(&self) -> bool {
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics.current_leader.is_some()
            && metrics.last_applied.map(|id| id.index)
                >= metrics.cluster_committed.map(|id| id.index)
    }

    /// On the leader, removes node `id` from the group (the end of a decommission): a
    /// voter's place goes to a learner that is not draining, if there is one. `Ok(true)`
    /// once `id` is no member; `Ok(false)` when this node is `id` itself: it handed the
    /// leadership to the most up-to-date other voter, and the next leader removes it.
    pub async fn remove_member(&self, id: u64) -> Result<bool, MetaError> {
        let raft_error =
            |e: openraft::error::RaftError<MetaTypes, _>| MetaError::Unavailable(e.to_string());
        let metrics = self.raft.metrics().borrow_watched().clone();
        if metrics.current_leader != Some(self.node.id) {
            return Err(MetaError::Unavailable(
                "only the metadata leader removes members".to_owned(),
            ));
        }
        let membership = metrics.membership_config.membership().clone();
        if !membership.nodes().any(|(node, _)| *node == id) {
            return Ok(true);
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        if !voters.contains(&id) {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                .await
                .map_err(raft_error)?;
            return Ok(true);
        }
        if id == self.node.id {
            let successor = voters
                .iter()
                .filter(|voter| **voter != id)
                .max_by_key(|voter| {
                    metrics
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(*voter).cloned().flatten())
                        .map(|matched| matched.index)
                });
            if let Some(successor) = successor {
                tracing::info!(
                    successor,
                    "handing the metadata leadership over before leaving"
                );
                self.raft
                    .trigger()
                    .transfer_leader(*successor)
                    .await
                    .map_err(|e| MetaError::Raft(e.to_string()))?;
            }
            return Ok(false);
        }
        let draining = self.read(|state| state.draining.clone());
        let mut next: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != id).collect();
        if let Some(learner) = membership
            .learner_ids()
            .find(|learner| *learner != id && !draining.contains(learner))
        {
            next.insert(learner);
        }
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(next), false)
            .await
            .map_err(raft_error)?;
        Ok(true)
    }

    /// Stops the group's Raft tasks.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "metadata group did not shut down cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StreamMode;

    fn create(name: &str, now_ms: u64) -> Command {
        Command::CreateStream {
            name: name.to_owned(),
            shard_count: 2,
            mode: StreamMode::Provisioned,
            tags: BTreeMap::new(),
            now_ms,
        }
    }

    async fn open(dir: &Path) -> Meta {
        let router = Router::new(None);
        let groups = Groups::new(router.clone());
        let node = MetaNode {
            id: 1,
            node: PeerNode::default(),
            join: Vec::new(),
        };
        let meta = Meta::open(dir, Identity::default(), true, node, router, &groups)
            .await
            .expect("open meta");
        // A one-voter group elects itself.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        meta.wait_for_leader(deadline).await.expect("a leader");
        meta
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let meta = open(dir.path()).await;
            meta.propose(&create("a", 1)).await.unwrap();
            meta.propose(&create("b", 2)).await.unwrap();
            meta.propose(&Command::ActivateStream {
                name: "a".into(),
                created_ms: 1,
            })
            .await
            .unwrap();
            // A rejected command is answered with its reason and changes nothing.
            assert!(matches!(
                meta.propose(&create("a", 3)).await,
                Err(MetaError::Rejected(CommandError::InUse(_)))
            ));
            meta.shutdown().await;
        }
        let meta = open(dir.path()).await;
        let (names, status) = meta.read(|s| {
            (
                s.streams.keys().cloned().collect::<Vec<_>>(),
                s.streams["a"].status,
            )
        });
        assert_eq!(names, ["a", "b"]);
        assert_eq!(status, crate::StreamStatus::Active);
        assert_eq!(meta.members().len(), 1);
        meta.shutdown().await;
    }

    #[test]
    fn state_written_before_the_rebalancer_still_loads() {
        let shard = r#"{"id":0,"start_hash":"0","end_hash":"9","parent":null,
            "adjacent_parent":null,"created_ms":1,"closed":null,"replicas":[1,2,3]}"#;
        let shard: crate::Shard = serde_json::from_str(shard).expect("an older shard");
        assert_eq!(shard.moving, None);
        let snapshot: SnapshotData =
            serde_json::from_str(r#"{"streams":[],"keys":[]}"#).expect("an older snapshot");
        assert!(snapshot.draining.is_empty());
        // A shard that is not moving is written as before.
        assert!(!serde_json::to_string(&shard).unwrap().contains("moving"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn applied_state_is_rebuilt_from_the_raft_log_when_sled_lost_it() {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let meta = open(dir.path()).await;
            for i in 0..5 {
                meta.propose(&create(&format!("s{i}"), i)).await.unwrap();
            }
            meta.propose(&Command::AddTags {
                name: "s3".into(),
                tags: [("k".to_owned(), "v".to_owned())].into(),
            })
            .await
            .unwrap();
            let expected = meta.read(|s| s.streams.clone());
            meta.shutdown().await;
            expected
        };
        // sled's writes are not durable syncs: model losing all of them.
        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        let meta = open(dir.path()).await;
        let mut applied = meta.watch_applied();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // Committed entries are applied again after the restart.
        tokio::time::timeout_at(
            deadline,
            applied.wait_for(|_| meta.read(|s| s.streams == expected)),
        )
        .await
        .expect("state rebuilt in time")
        .expect("watch open");
        meta.shutdown().await;
    }
}
