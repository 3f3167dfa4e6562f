//! Membership requests a group's leader serves for other nodes: a node asks to join.

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::RaftStateMachine;
use openraft::{ChangeMembers, Raft, RaftTypeConfig};
use std::collections::BTreeSet;

/// A node asks to become a member: first a learner (the call waits until it caught up),
/// then a voter while the group has fewer than its maximum of voters.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AddMember<N> {
    pub node_id: u64,
    pub node: N,
}

/// Why a membership request failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// This node is not the leader; the leader it knows of, if any.
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<u64>),
    #[error("{0}")]
    Raft(String),
}

impl<C: RaftTypeConfig> From<RaftError<C, ClientWriteError<C>>> for MembershipError {
    fn from(error: RaftError<C, ClientWriteError<C>>) -> Self {
        match error.forward_to_leader() {
            Some(forward) => MembershipError::NotLeader(
                forward
                    .leader_id
                    .as_ref()
                    .and_then(|id| format!("{id}").parse().ok()),
            ),
            None => MembershipError::Raft(error.to_string()),
        }
    }
}

/// Serves [`AddMember`] on the leader of `raft`'s group. Idempotent: a node that already
/// is a voter is left as it is; its address is updated if it changed.
pub async fn add_member<C, SM>(
    raft: &Raft<C, SM>,
    request: AddMember<C::Node>,
    max_voters: usize,
) -> Result<(), MembershipError>
where
    C: RaftTypeConfig<NodeId = u64>,
    SM: RaftStateMachine<C>,
{
    let metrics = raft.metrics().borrow_watched().clone();
    if metrics.current_leader != Some(metrics.id) {
        return Err(MembershipError::NotLeader(metrics.current_leader));
    }
    // A membership change is a write: a leader without timers may need its lease renewed.
    crate::leader::ensure_lease(raft).await;
    let membership = metrics.membership_config.membership().clone();
    let known = membership
        .nodes()
        .find(|(id, _)| **id == request.node_id)
        .map(|(_, node)| node.clone());
    match known {
        None => {
            raft.add_learner(request.node_id, request.node.clone(), true)
                .await?;
        }
        Some(node) if node != request.node => {
            // The node came back at another address (a restarted pod).
            raft.change_membership(
                ChangeMembers::SetNodes([(request.node_id, request.node.clone())].into()),
                true,
            )
            .await?;
        }
        Some(_) => {}
    }
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    if !voters.contains(&request.node_id) && voters.len() < max_voters {
        raft.change_membership(ChangeMembers::AddVoterIds([request.node_id].into()), true)
            .await?;
    }
    Ok(())
}
