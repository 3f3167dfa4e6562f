//! A shard replica whose Raft log was damaged (entries failing their checksum, cut at
//! open by the log store) repairs itself from its group: it is an ordinary lagging
//! follower to the leader, which sends it the entries again. Until its log is back to
//! the last entry it held before the damage, it may have acknowledged entries it no
//! longer has, so it must not help a candidate missing them to a majority, nor lead:
//! [`Guarded`] refuses its vote to any candidate whose log ends before that entry and
//! refuses leadership transfers; [`Repair::active`] tells the election logic to keep it
//! from standing.

use crate::replica::{ShardMachine, ShardTypes};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use openraft::Raft;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::type_config::alias::LogIdOf;
use parking_lot::Mutex;
use sluice_proto::peer::RaftKind;
use sluice_replication::pacemaker::GroupView;
use sluice_replication::{Group, Paced, PeerNode, decode, encode};
use std::sync::Arc;
use tonic::Status;

type LogId = LogIdOf<ShardTypes>;

/// The repair state of one replica: the last entry it held before its log was damaged,
/// until its log holds that index again.
#[derive(Clone)]
pub(crate) struct Repair {
    floor: Arc<Mutex<Option<LogId>>>,
    raft: Raft<ShardTypes, ShardMachine>,
}

impl Repair {
    pub(crate) fn new(raft: Raft<ShardTypes, ShardMachine>, floor: LogId) -> Repair {
        Repair {
            floor: Arc::new(Mutex::new(Some(floor))),
            raft,
        }
    }

    /// The entry the replica must hold again before it votes freely or stands, while it
    /// is repairing; `None` once its log reached that index.
    pub(crate) fn active(&self) -> Option<LogId> {
        let mut floor = self.floor.lock();
        let reached = floor.as_ref().is_some_and(|floor| {
            self.raft.metrics().borrow_watched().last_log_index >= Some(floor.index)
        });
        if reached {
            tracing::info!(floor = ?floor.as_ref().map(|f| f.index), "a damaged shard replica caught up with its group");
            *floor = None;
        }
        *floor
    }
}

/// The peer service's view of a repairing replica's group: the group itself, but with
/// votes and leadership transfers refused while [`Repair::active`].
pub(crate) struct Guarded {
    pub(crate) inner: Arc<dyn Group>,
    pub(crate) repair: Repair,
}

impl Group for Guarded {
    fn call(&self, kind: RaftKind, payload: Bytes) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            let Some(floor) = self.repair.active() else {
                return self.inner.call(kind, payload).await;
            };
            match kind {
                RaftKind::Vote | RaftKind::PreVote => {
                    let request: VoteRequest<ShardTypes> = decode(&payload)?;
                    if request.last_log_id.as_ref() >= Some(&floor) {
                        return self.inner.call(kind, payload).await;
                    }
                    // The candidate may lack entries this replica acknowledged: no vote.
                    // Answering the floor as the last log id tells it a longer log exists.
                    let vote = self.repair.raft.metrics().borrow_watched().vote;
                    let response: Result<
                        VoteResponse<ShardTypes>,
                        openraft::error::RaftError<ShardTypes>,
                    > = Ok(VoteResponse::new(vote, Some(floor), false));
                    encode(&response)
                }
                RaftKind::TransferLeader => Err(Status::failed_precondition(
                    "the replica is repairing its log and cannot lead yet",
                )),
                _ => self.inner.call(kind, payload).await,
            }
        })
    }
}

/// The pacemaker's view of a repairing replica's group: it never campaigns while
/// [`Repair::active`].
pub(crate) struct GuardedPace {
    pub(crate) inner: Arc<dyn Paced>,
    pub(crate) repair: Repair,
}

impl Paced for GuardedPace {
    fn view(&self) -> Option<GroupView> {
        self.inner.view()
    }

    fn members(&self) -> Vec<(u64, PeerNode)> {
        self.inner.members()
    }

    fn campaign(&self) -> BoxFuture<'_, ()> {
        if self.repair.active().is_some() {
            return Box::pin(async {});
        }
        self.inner.campaign()
    }

    fn nudge(&self, followers: Vec<u64>) -> BoxFuture<'_, ()> {
        self.inner.nudge(followers)
    }
}
