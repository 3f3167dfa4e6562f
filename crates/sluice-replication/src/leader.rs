//! Waiting on a group's leadership, as every proposer needs: for a leader to exist, and for
//! it to change (a call in flight to a leader that froze is given up once another leads);
//! and keeping a leader's lease, without which it refuses writes.

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use openraft::{Instant as _, LinearizerOption, Raft, RaftTypeConfig};
use std::time::Duration;

/// The group's leader as this node knows it, once there is one; `None` at `deadline`.
pub async fn wait_for_leader<C, SM>(
    raft: &Raft<C, SM>,
    deadline: tokio::time::Instant,
) -> Option<u64>
where
    C: RaftTypeConfig<NodeId = u64>,
    SM: RaftStateMachine<C>,
{
    let mut metrics = raft.metrics();
    loop {
        if let Some(leader) = metrics.borrow_watched().current_leader {
            return Some(leader);
        }
        match tokio::time::timeout_at(deadline, metrics.changed()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
}

/// Completes once this node knows of a leader other than `leader` (never, if the group
/// shuts down first).
pub async fn leader_changes_from<C, SM>(raft: &Raft<C, SM>, leader: u64)
where
    C: RaftTypeConfig<NodeId = u64>,
    SM: RaftStateMachine<C>,
{
    let mut metrics = raft.metrics();
    loop {
        let current = metrics.borrow_watched().current_leader;
        if current.is_some() && current != Some(leader) {
            return;
        }
        if metrics.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// A lease this close to its end is renewed before a write rather than risked.
const LEASE_MARGIN: Duration = Duration::from_millis(100);

/// Makes sure this node, if it leads `raft`'s group, holds a leader lease a write can use.
///
/// openraft's leader accepts a write only while a quorum acknowledged one of its messages
/// less than a lease (`election_timeout_max`) ago (CheckQuorum). Heartbeats keep that true
/// for a group with timers; a group the pacemaker drives sends none, so after a lease
/// without writes its leader would refuse the next one (`ForwardToLeader`, reason
/// `LeaseExpired`). This renews the lease first: one heartbeat round a quorum acknowledges
/// (one round trip), waited for at most one lease; nothing when the lease is fresh, when
/// this node does not lead, or when it is the group's only voter. If the round fails (a
/// leader cut off from its quorum), the write is refused as before.
pub async fn ensure_lease<C, SM>(raft: &Raft<C, SM>)
where
    C: RaftTypeConfig<NodeId = u64>,
    SM: RaftStateMachine<C>,
{
    let lease = Duration::from_millis(raft.config().election_timeout_max);
    let fresh = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.current_leader != Some(metrics.id)
            // The group's only voter is its own quorum.
            || metrics
                .membership_config
                .membership()
                .get_joint_config()
                .iter()
                .flatten()
                .all(|voter| *voter == metrics.id)
            || metrics
                .last_quorum_acked
                .as_ref()
                .is_some_and(|acked| acked.elapsed() + LEASE_MARGIN < lease)
    };
    if !fresh {
        renew_lease(raft).await;
    }
}

/// Renews this leader's lease: at once if it is still valid, else after one heartbeat round
/// a quorum acknowledged (waited for at most one lease). Whether the lease is valid now.
pub async fn renew_lease<C, SM>(raft: &Raft<C, SM>) -> bool
where
    C: RaftTypeConfig<NodeId = u64>,
    SM: RaftStateMachine<C>,
{
    raft.get_read_linearizer(LinearizerOption::new(None, true))
        .await
        .is_ok()
}

/// How far behind a group member is, in entries, by its own Raft metrics: on the leader,
/// the entries of its log not committed yet; on another member, the entries it knows the
/// group committed (as the leader last reported) but has not applied yet.
pub fn commit_lag<C>(metrics: &openraft::RaftMetrics<C>) -> u64
where
    C: RaftTypeConfig<NodeId = u64>,
{
    let count = |id: Option<u64>| id.map_or(0, |index| index + 1);
    let local = count(metrics.local_committed.as_ref().map(|id| id.index()));
    if metrics.current_leader == Some(metrics.id) {
        count(metrics.last_log_index).saturating_sub(local)
    } else {
        let cluster = count(metrics.cluster_committed.as_ref().map(|id| id.index()));
        let applied = count(metrics.last_applied.as_ref().map(|id| id.index()));
        local.max(cluster).saturating_sub(applied)
    }
}
