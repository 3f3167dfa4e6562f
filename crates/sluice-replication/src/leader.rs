//! Waiting on a group's leadership, as every proposer needs: for a leader to exist, and for
//! it to change (a call in flight to a leader that froze is given up once another leads).

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use openraft::{Raft, RaftTypeConfig};

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
