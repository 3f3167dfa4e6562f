//! The rebalancer: replicas move between nodes so that every node holds and leads its
//! share of the shards, draining nodes are emptied and then removed from the cluster, and
//! the replicas of a node unreachable for longer than the grace period are re-created on
//! other nodes.
//!
//! Three loops, each idempotent, so that a restart or a change of leader anywhere resumes
//! what was left:
//!
//! * the **planner**, on the metadata leader, proposes the moves and preferred-leader
//!   changes `MetaState::plan_moves` computes (a few moves in flight at a time) and
//!   removes drained nodes from the metadata group;
//! * the **executor**, on the leader of each shard group, carries out its shard's move one
//!   step per pass, reading the group's own membership to know where it is: the target
//!   joins as a learner (its node opens an empty replica because the metadata names it)
//!   and catches up from the Raft log, becomes a voter, leadership leaves the source, the
//!   source leaves the group, and `FinishMove` puts the target in its place among the
//!   replicas. Outside moves it hands the leadership to the shard's preferred leader once
//!   that replica is caught up;
//! * **reconcile** (in `broker.rs`) opens the replicas moving here and deletes those moved
//!   away once this node's metadata no longer places them here.
//!
//! The target is a voter before the source leaves, so the group never has fewer voters than
//! when the move began, and openraft's joint consensus makes every write acknowledged
//! during a membership change durable on a majority of both memberships. Writes continue
//! throughout; only a leadership handover makes them wait for the new leader.

use super::{Broker, ShardKey};
use crate::error::BrokerError;
use crate::replica::{Replica, ShardMachine, ShardTypes};
use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, Raft, RaftMetrics};
use sluice_meta::{Command, MetaError, Move, NodeHealth, Shard, Stream, StreamStatus};
use sluice_replication::{PeerNode, ensure_lease, renew_lease};
use sluice_types::ShardId;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the planner and the executor run.
const PASS_INTERVAL: Duration = Duration::from_secs(1);
/// A learner at most this many entries behind the leader's log is caught up: it becomes a
/// voter.
const CAUGHT_UP_LAG: u64 = 64;
/// Leadership is handed only to a voter at most this many entries behind. openraft drops a
/// handover to a node that lacks the leader's last entry while the leader, marked as handing
/// over, takes no more writes; so a leader still leading at its next pass hands over again
/// (its log no longer grows, the target has caught up by then).
const TRANSFER_LAG: u64 = 2;
/// A move whose target made no progress as a learner for this long is cancelled.
const STALLED_MOVE: Duration = Duration::from_secs(60);
/// After handing a group's leadership to its preferred leader, wait this long before
/// trying again.
const TRANSFER_COOLDOWN: Duration = Duration::from_secs(30);
/// A leader hands its group to the preferred leader only once it has led it this long:
/// leadership that just changed (an election, a new group) is left to settle, and writes
/// are not interrupted twice in a row.
const LEADERSHIP_SETTLE: Duration = Duration::from_secs(10);
/// At most this many preferred-leader handovers per pass on one node.
const TRANSFERS_PER_PASS: usize = 4;
/// A membership change waits at most this long for its commit.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

type ShardRaft = Raft<ShardTypes, ShardMachine>;

/// What the executor of this node remembers between passes.
#[derive(Default)]
struct Executor {
    /// Per moving shard: the target's last matched log index and since when it is that.
    progress: HashMap<ShardKey, (Option<u64>, Instant)>,
    /// When this node last handed each group's leadership to its preferred leader.
    handed_over: HashMap<ShardKey, Instant>,
    /// Groups whose leadership this node is handing over, to the node first chosen.
    handing_over: HashMap<ShardKey, u64>,
    /// Since when this node leads each group it leads (as first seen by a pass).
    leading_since: HashMap<ShardKey, Instant>,
}

/// One group's membership as its leader sees it.
struct GroupView {
    metrics: RaftMetrics<ShardTypes>,
    voters: BTreeSet<u64>,
    nodes: BTreeSet<u64>,
}

impl GroupView {
    fn of(raft: &ShardRaft) -> GroupView {
        let metrics = raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters = membership.voter_ids().collect();
        let nodes = membership.nodes().map(|(id, _)| *id).collect();
        GroupView {
            metrics,
            voters,
            nodes,
        }
    }

    /// A membership change is appended but not committed yet.
    fn changing(&self) -> bool {
        self.metrics.membership_config.log_id() != self.metrics.committed_membership_config.log_id()
    }

    /// The voter sets while a change stopped between its joint and its final step.
    fn joint(&self) -> Option<BTreeSet<u64>> {
        let configs = self
            .metrics
            .membership_config
            .membership()
            .get_joint_config();
        (configs.len() > 1).then(|| configs.last().cloned().unwrap_or_default())
    }

    /// How many entries `node` lacks of the leader's log (`None`: nothing matched yet).
    fn lag(&self, node: u64) -> Option<u64> {
        let matched = self.matched(node)?;
        Some(
            self.metrics
                .last_log_index
                .unwrap_or(0)
                .saturating_sub(matched),
        )
    }

    /// The index of the last entry `node` is known to hold.
    fn matched(&self, node: u64) -> Option<u64> {
        self.metrics
            .replication
            .as_ref()?
            .get(&node)?
            .as_ref()
            .map(|id| id.index)
    }
}

impl Broker {
    /// Starts the planner and the executor (every node runs both; each acts only where
    /// this node leads).
    pub(super) fn spawn_rebalancer(&self) {
        let planner = self.clone();
        self.inner.tasks.spawn(async move {
            let mut ticker = tokio::time::interval(PASS_INTERVAL);
            loop {
                tokio::select! {
                    _ = planner.inner.cancel.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                if let Err(error) = planner.plan_pass().await {
                    tracing::warn!(%error, "rebalance planning failed; retrying");
                }
            }
        });
        let executor = self.clone();
        self.inner.tasks.spawn(async move {
            let mut state = Executor::default();
            let mut ticker = tokio::time::interval(PASS_INTERVAL);
            loop {
                tokio::select! {
                    _ = executor.inner.cancel.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                executor.execute_pass(&mut state).await;
            }
        });
    }

    /// Starts draining `node` (`cancel`: takes it back): see `Command::SetDraining`.
    pub async fn decommission(&self, node: u64, cancel: bool) -> Result<(), BrokerError> {
        self.propose(Command::SetDraining {
            node,
            draining: !cancel,
        })
        .await
    }

    /// The nodes being drained, and those drained and removed from the cluster.
    pub fn draining_nodes(&self) -> BTreeSet<u64> {
        self.inner.meta.read(|state| state.draining.clone())
    }

    /// Whether this node keeps a replica of `shard` open: it holds one, or one is being
    /// moved here (a learner catching up, which serves no reads until the move is
    /// finished).
    pub(super) fn keeps_replica(&self, shard: &Shard) -> bool {
        self.hosts(shard)
            || shard
                .moving
                .is_some_and(|moving| moving.to == Some(self.node_id()))
    }

    /// The members' health as this node's router sees it: unreachable while suspected
    /// (no answer to its pings for a second), dead once that lasted `dead_node_grace`.
    fn node_health(&self) -> NodeHealth {
        let grace = self.inner.config.dead_node_grace;
        let mut health = NodeHealth::default();
        for member in self.inner.meta.members() {
            if member.id == self.node_id() {
                continue;
            }
            // Every member is pinged, not only those this node shares a group with.
            self.inner
                .router
                .learn_if_unknown(member.id, &member.node.grpc);
            if let Some(since) = self.inner.router.peer_down_since(member.id) {
                health.unreachable.insert(member.id);
                if since.elapsed() >= grace {
                    health.dead.insert(member.id);
                }
            }
        }
        health
    }

    /// One planner pass on the metadata leader: propose the next moves, remove drained
    /// nodes from the cluster.
    async fn plan_pass(&self) -> Result<(), BrokerError> {
        if self.inner.meta.leader() != Some(self.node_id()) || !self.inner.meta.caught_up() {
            return Ok(());
        }
        let health = self.node_health();
        let max_moves = self.inner.config.max_concurrent_moves;
        let commands = self
            .inner
            .meta
            .read(|state| state.plan_moves(&health, max_moves));
        for command in commands {
            tracing::info!(?command, unreachable = ?health.unreachable, dead = ?health.dead, "rebalancing");
            match self.inner.meta.propose(&command).await {
                Ok(()) => {}
                // The state changed since the plan was made: the next pass plans again.
                Err(MetaError::Rejected(reason)) => {
                    tracing::debug!(%reason, "a rebalancing step was refused");
                }
                Err(error) => return Err(error.into()),
            }
        }
        for node in self.drained_nodes() {
            match self.inner.meta.remove_member(node).await {
                Ok(true) => tracing::info!(node, "removed a drained node from the cluster"),
                Ok(false) => {}
                Err(error) => tracing::warn!(node, %error, "could not remove a drained node"),
            }
        }
        Ok(())
    }

    /// Draining members that no shard places or moves a replica on any more.
    fn drained_nodes(&self) -> Vec<u64> {
        self.inner.meta.read(|state| {
            let busy: HashSet<u64> = state
                .streams
                .values()
                .filter(|stream| stream.status != StreamStatus::Deleting)
                .flat_map(|stream| &stream.shards)
                .flat_map(|shard| {
                    let moving = shard.moving.map_or([None, None], |m| [m.from, m.to]);
                    shard
                        .replicas
                        .iter()
                        .copied()
                        .chain(moving.into_iter().flatten())
                })
                .collect();
            state
                .draining
                .iter()
                .filter(|node| state.nodes.contains(node) && !busy.contains(node))
                .copied()
                .collect()
        })
    }

    /// The placed shard a hosted replica belongs to, unless its stream is gone or going.
    fn placed_shard(&self, key: &ShardKey) -> Option<Shard> {
        self.inner.meta.read(|state| {
            state
                .streams
                .get(&key.0)
                .filter(|s| s.created_ms == key.1 && s.status != StreamStatus::Deleting)
                .and_then(|s| s.shard(ShardId(key.2)))
                .filter(|shard| !shard.replicas.is_empty())
                .cloned()
        })
    }

    /// One executor pass: a step of each move of a shard this node leads, and leadership
    /// handed to preferred leaders.
    async fn execute_pass(&self, executor: &mut Executor) {
        if !self.inner.meta.caught_up() {
            return;
        }
        let me = self.node_id();
        let led: Vec<(ShardKey, Arc<Replica>)> = self
            .inner
            .replicas
            .read()
            .iter()
            .filter(|(_, replica)| replica.leader() == Some(me))
            .map(|(key, replica)| (key.clone(), Arc::clone(replica)))
            .collect();
        let led_keys: HashSet<&ShardKey> = led.iter().map(|(key, _)| key).collect();
        executor.progress.retain(|key, _| led_keys.contains(key));
        executor
            .handing_over
            .retain(|key, _| led_keys.contains(key));
        executor
            .leading_since
            .retain(|key, _| led_keys.contains(key));
        let now = Instant::now();
        for key in &led_keys {
            executor.leading_since.entry((*key).clone()).or_insert(now);
        }
        executor
            .handed_over
            .retain(|_, at| at.elapsed() < TRANSFER_COOLDOWN);
        let mut transfers = 0;
        for (key, replica) in &led {
            // A handover this node started and still leads: it was dropped, start it again.
            if let Some(target) = executor.handing_over.get(key).copied() {
                let view = GroupView::of(replica.raft());
                let mut candidates = vec![target];
                candidates.extend(view.voters.iter().copied());
                if let Err(error) = self
                    .hand_over(key, replica.raft(), &view, &candidates, executor)
                    .await
                {
                    tracing::warn!(stream = %key.0, shard = %ShardId(key.2), %error, "could not hand the leadership over");
                }
                continue;
            }
            let Some(shard) = self.placed_shard(key) else {
                continue;
            };
            let outcome = match shard.moving {
                Some(moving) => self.step_move(key, replica, &shard, moving, executor).await,
                None => {
                    executor.progress.remove(key);
                    if transfers < TRANSFERS_PER_PASS
                        && self.hand_to_preferred(key, replica, &shard, executor).await
                    {
                        transfers += 1;
                    }
                    Ok(())
                }
            };
            if let Err(error) = outcome {
                tracing::warn!(stream = %key.0, shard = %ShardId(key.2), %error, "a move step failed; retrying");
            }
        }
    }

    /// Takes the shard's move one step further (see the module documentation); every step
    /// is read from the group's membership, so any leader resumes where the last stopped.
    #[tracing::instrument(name = "rebalance.move", skip_all, fields(stream = %key.0, shard = %ShardId(key.2), from = ?moving.from, to = ?moving.to))]
    async fn step_move(
        &self,
        key: &ShardKey,
        replica: &Replica,
        shard: &Shard,
        moving: Move,
        executor: &mut Executor,
    ) -> Result<(), BrokerError> {
        let raft = replica.raft();
        let view = GroupView::of(raft);
        if view.changing() {
            return Ok(());
        }
        if let Some(voters) = view.joint() {
            tracing::info!(?voters, "finishing an interrupted membership change");
            return change(raft, ChangeMembers::ReplaceAllVoters(voters), true).await;
        }
        // The target joins: a learner first, a voter once caught up.
        if let Some(to) = moving.to
            && !view.voters.contains(&to)
        {
            let now = Instant::now();
            let matched = view.matched(to);
            let progress = executor
                .progress
                .entry(key.clone())
                .or_insert((matched, now));
            if progress.0 != matched {
                *progress = (matched, now);
            }
            let stalled = now.duration_since(progress.1) >= STALLED_MOVE;
            let member = self
                .inner
                .meta
                .members()
                .into_iter()
                .find(|m| m.id == to)
                .filter(|_| !self.inner.meta.read(|s| s.draining.contains(&to)));
            let Some(member) = member.filter(|_| !stalled) else {
                executor.progress.remove(key);
                return self.cancel_move(key, raft, moving).await;
            };
            self.inner.router.learn(to, &member.node.grpc);
            if !view.nodes.contains(&to) {
                tracing::info!("adding the target to the group as a learner");
                return add_learner(raft, to, member.node).await;
            }
            if view.lag(to).is_some_and(|lag| lag <= CAUGHT_UP_LAG) {
                tracing::info!("the target caught up: making it a voter");
                executor.progress.remove(key);
                return change(raft, ChangeMembers::AddVoterIds([to].into()), true).await;
            }
            return Ok(());
        }
        executor.progress.remove(key);
        let after = moving.apply(&shard.replicas);
        if let Some(from) = moving.from {
            // Leadership leaves the source before the source leaves the group.
            if from == self.node_id() && view.voters.contains(&from) {
                tracing::info!("handing the leadership over before leaving");
                self.hand_over(key, raft, &view, &after, executor).await?;
                return Ok(());
            }
            if view.nodes.contains(&from) {
                tracing::info!("removing the source from the group");
                let members = if view.voters.contains(&from) {
                    ChangeMembers::RemoveVoters([from].into())
                } else {
                    ChangeMembers::RemoveNodes([from].into())
                };
                return change(raft, members, false).await;
            }
        }
        tracing::info!(replicas = ?after, "move finished");
        self.propose_move_end(Command::FinishMove {
            name: key.0.clone(),
            created_ms: key.1,
            shard: key.2,
            from: moving.from,
            to: moving.to,
        })
        .await
    }

    /// Abandons a move whose target cannot join (it left, is draining, or made no progress
    /// for `STALLED_MOVE`): the learner leaves the group, then the metadata forgets the move.
    /// Only a leader that just renewed its lease does so, from the membership it then has:
    /// a deposed leader's view could miss that a newer leader already made the target a
    /// voter, and a cancelled target deletes its replica.
    async fn cancel_move(
        &self,
        key: &ShardKey,
        raft: &ShardRaft,
        moving: Move,
    ) -> Result<(), BrokerError> {
        if !renew_lease(raft).await {
            return Err(raft_error("not the leader any more"));
        }
        let view = GroupView::of(raft);
        if view.changing() || moving.to.is_some_and(|to| view.voters.contains(&to)) {
            return Ok(());
        }
        if let Some(to) = moving.to
            && view.nodes.contains(&to)
        {
            tracing::info!("the target cannot join: removing it from the group");
            change(raft, ChangeMembers::RemoveNodes([to].into()), false).await?;
        }
        tracing::info!("move cancelled");
        self.propose_move_end(Command::CancelMove {
            name: key.0.clone(),
            created_ms: key.1,
            shard: key.2,
            from: moving.from,
            to: moving.to,
        })
        .await
    }

    /// Proposes a `FinishMove` or `CancelMove`; one another leader proposed first is fine.
    async fn propose_move_end(&self, command: Command) -> Result<(), BrokerError> {
        match self.inner.meta.propose(&command).await {
            Ok(()) => {
                let gauges = &self.inner.metrics.raft;
                match command {
                    Command::FinishMove { .. } => gauges.moves_finished.inc(),
                    _ => gauges.moves_cancelled.inc(),
                };
                Ok(())
            }
            Err(MetaError::Rejected(reason)) => {
                tracing::debug!(%reason, "the move had already ended");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Hands the group's leadership to the shard's preferred leader when that replica is a
    /// voter that is caught up and answering; `true` when it did.
    async fn hand_to_preferred(
        &self,
        key: &ShardKey,
        replica: &Replica,
        shard: &Shard,
        executor: &mut Executor,
    ) -> bool {
        let preferred = shard.replicas[0];
        let settled = executor
            .leading_since
            .get(key)
            .is_some_and(|since| since.elapsed() >= LEADERSHIP_SETTLE);
        if preferred == self.node_id()
            || !settled
            || executor.handed_over.contains_key(key)
            || self.inner.meta.read(|s| s.draining.contains(&preferred))
        {
            return false;
        }
        let raft = replica.raft();
        let view = GroupView::of(raft);
        if view.changing() || view.joint().is_some() {
            return false;
        }
        match self
            .hand_over(key, raft, &view, &[preferred], executor)
            .await
        {
            Ok(true) => {
                tracing::info!(stream = %key.0, shard = %ShardId(key.2), preferred, "handed the leadership to the preferred leader");
                executor.handed_over.insert(key.clone(), Instant::now());
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(%error, "could not hand the leadership over");
                false
            }
        }
    }

    /// Asks the group to hand its leadership to the first of `candidates` (other than this
    /// node) that is a voter, answers this node's pings and is at most `TRANSFER_LAG`
    /// entries behind; `Ok(false)` when none is. Remembered, so that a handover openraft
    /// dropped is started again at the next pass.
    async fn hand_over(
        &self,
        key: &ShardKey,
        raft: &ShardRaft,
        view: &GroupView,
        candidates: &[u64],
        executor: &mut Executor,
    ) -> Result<bool, BrokerError> {
        let target = candidates.iter().copied().find(|node| {
            *node != self.node_id()
                && view.voters.contains(node)
                && self.inner.router.peer_down_since(*node).is_none()
                && view.lag(*node).is_some_and(|lag| lag <= TRANSFER_LAG)
        });
        let Some(target) = target else {
            return Ok(false);
        };
        tracing::debug!(stream = %key.0, shard = %ShardId(key.2), target, "handing the leadership over");
        executor.handing_over.insert(key.clone(), target);
        raft.trigger()
            .transfer_leader(target)
            .await
            .map_err(raft_error)?;
        Ok(true)
    }

    /// Stops and deletes the replicas this node holds of shards the metadata no longer
    /// places here (moved away, or re-created elsewhere while this node was dead), once
    /// this node's metadata is up to date.
    pub(super) async fn drop_moved_replicas(&self, streams: &[Stream]) -> Result<(), BrokerError> {
        if !self.inner.meta.caught_up() {
            return Ok(());
        }
        let mut placed: HashMap<(&str, u64), HashSet<u32>> = HashMap::new();
        for stream in streams
            .iter()
            .filter(|s| s.status != StreamStatus::Deleting)
        {
            let kept = placed
                .entry((stream.name.as_str(), stream.created_ms))
                .or_default();
            kept.extend(
                stream
                    .shards
                    .iter()
                    .filter(|shard| self.keeps_replica(shard))
                    .map(|shard| shard.id),
            );
        }
        // Replicas of deleted streams are dropped with their stream, not here.
        let moved: Vec<ShardKey> = self
            .inner
            .replicas
            .read()
            .keys()
            .filter(|(name, created_ms, shard)| {
                placed
                    .get(&(name.as_str(), *created_ms))
                    .is_some_and(|kept| !kept.contains(shard))
            })
            .cloned()
            .collect();
        for key in moved {
            self.drop_local_replica(&key).await?;
        }
        Ok(())
    }

    /// Stops one replica and removes its record log and Raft group directories.
    async fn drop_local_replica(&self, key: &ShardKey) -> Result<(), BrokerError> {
        let _opening = self.inner.opening.lock().await;
        let removed = self.inner.replicas.write().remove(key);
        if let Some(replica) = removed {
            replica.shutdown(&self.inner.groups).await;
        }
        self.inner.shards.write().remove(key);
        let dir = self
            .inner
            .config
            .data_dir
            .join("streams")
            .join(format!("{}.{}", key.0, key.1))
            .join(format!("{:012}", key.2));
        for dir in [dir.with_extension("group"), dir] {
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(BrokerError::Storage(error.into())),
            }
        }
        tracing::info!(stream = %key.0, shard = %ShardId(key.2), "dropped the replica of a shard placed elsewhere");
        Ok(())
    }
}

fn raft_error(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Replication(format!("shard group: {error}"))
}

/// Adds `node` to the group as a learner, without waiting for it to catch up.
async fn add_learner(raft: &ShardRaft, node: u64, address: PeerNode) -> Result<(), BrokerError> {
    let add = async {
        // A membership change is a write: an idle group's leader renews its lease first.
        ensure_lease(raft).await;
        raft.add_learner(node, address, false).await
    };
    match tokio::time::timeout(CHANGE_TIMEOUT, add).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(raft_error(error)),
        Err(_) => Err(raft_error("adding a learner was not committed in time")),
    }
}

/// One membership change of the group, committed (both steps when it goes through a joint
/// configuration) within `CHANGE_TIMEOUT`.
async fn change(
    raft: &ShardRaft,
    members: ChangeMembers<u64, PeerNode>,
    retain: bool,
) -> Result<(), BrokerError> {
    let change = async {
        ensure_lease(raft).await;
        raft.change_membership(members, retain).await
    };
    match tokio::time::timeout(CHANGE_TIMEOUT, change).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(raft_error(error)),
        Err(_) => Err(raft_error("a membership change was not committed in time")),
    }
}
