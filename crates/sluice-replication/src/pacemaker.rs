//! The pacemaker: elections and catch-up for the groups that run without timers of their own
//! (the shard groups), driven by node-level liveness ([`crate::liveness`]).
//!
//! openraft normally gives every group a tick, heartbeats and an election timer. With
//! hundreds of groups per node that is most of an idle node's work, spent confirming over
//! and over, group by group, that the same few nodes are alive. Here one task per node does
//! it for every registered ([`Paced`]) group, from the router's verdicts on its peers:
//!
//! * **Elections.** A voter whose group has no leader, or whose leader's node is suspected,
//!   campaigns (a Pre-Vote round first, so that a campaign a quorum would not grant changes
//!   no term). The surviving voters go in a deterministic order — the live voters sorted by
//!   id and rotated by a hash of the group's id, so that the leaders of a lost node's groups
//!   spread over the survivors — each [`STAGGER`] after the previous one and only if the
//!   group is still leaderless, so split votes are rare. A campaign that did not produce a
//!   leader is started again after [`RETRY`] (plus the voter's place in the order). A voter
//!   that sees fewer than a majority of the voters alive (itself isolated) does not
//!   campaign. The voters' leader leases still protect a live leader: its followers refuse
//!   a campaign until one lease (`election_timeout_max`) after the leader's last message.
//! * **Catch-up.** openraft sends each commit to the followers as it happens and retries
//!   replication to a follower that fails (with a backoff, [`crate::PeerNetwork`]); what a
//!   follower can miss without heartbeats is the commit index of the last writes, and
//!   entries while it was unreachable. So a leader nudges its group (resets the backoff of
//!   the followers concerned and sends one heartbeat, which carries the commit index and,
//!   answered, sets replication of anything missing going) when a suspected follower
//!   answers again and, every [`CATCH_UP`], when entries were appended since the previous
//!   nudge or a follower lags without progress.
//!
//! A look at every group (a sweep) costs a read of each group's metrics: sweeps run every
//! [`SWEEP`] while some group waits for a leader, every [`IDLE_SWEEP`] otherwise, and at once
//! when a peer is suspected or answers again.
//!
//! A leader also needs a quorum acknowledgement younger than its lease to accept a write
//! (openraft's CheckQuorum); an idle group has none, so the write path renews it first
//! ([`crate::ensure_lease`]).

use crate::liveness::PeerEvent;
use crate::transport::{PeerNode, Router};
use futures_util::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use openraft::metrics::RaftMetrics;
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::WatchReceiverOf;
use openraft::{Raft, RaftTypeConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// How often every group is looked at while one of them waits for a leader (a campaign to
/// start or to retry).
pub const SWEEP: Duration = Duration::from_millis(250);
/// How often every group is looked at otherwise: a peer's loss or return starts a look at
/// once, so this only catches groups that lost their leader without one (e.g. a campaign
/// that failed while replicas were still opening).
pub const IDLE_SWEEP: Duration = Duration::from_secs(1);
/// The delay between the campaigns of consecutive voters of a leaderless group.
pub const STAGGER: Duration = Duration::from_millis(300);
/// A campaign is started again after this long if the group still has no leader.
pub const RETRY: Duration = Duration::from_millis(700);
/// How often leaders check whether a follower needs a nudge.
pub const CATCH_UP: Duration = Duration::from_secs(2);

/// A group as one of its replicas sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// This replica's node.
    pub me: u64,
    pub leader: Option<u64>,
    /// The voters of the effective membership, sorted.
    pub voters: Vec<u64>,
    /// While this replica leads: every other member (voters and learners) with the index of
    /// the last entry it is known to hold.
    pub followers: Vec<(u64, Option<u64>)>,
    pub last_log_index: Option<u64>,
}

/// A group the pacemaker drives.
pub trait Paced: Send + Sync + 'static {
    /// The group now; `None` once it stopped.
    fn view(&self) -> Option<GroupView>;
    /// Every member with its address.
    fn members(&self) -> Vec<(u64, PeerNode)>;
    /// Starts a campaign (a Pre-Vote round, then an election if a quorum would grant it).
    fn campaign(&self) -> BoxFuture<'_, ()>;
    /// As leader: ends the replication backoff towards `followers` and sends every follower
    /// a heartbeat.
    fn nudge(&self, followers: Vec<u64>) -> BoxFuture<'_, ()>;
}

/// [`Paced`] over an openraft group.
pub struct PacedRaft<C, SM>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
{
    raft: Raft<C, SM>,
    /// Kept rather than taken from `raft` at every look (a sweep looks at every group).
    metrics: WatchReceiverOf<C, RaftMetrics<C>>,
}

impl<C, SM> PacedRaft<C, SM>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
{
    pub fn new(raft: Raft<C, SM>) -> Self {
        let metrics = raft.metrics();
        PacedRaft { raft, metrics }
    }
}

fn view_of<C>(metrics: &RaftMetrics<C>) -> Option<GroupView>
where
    C: RaftTypeConfig<NodeId = u64>,
{
    metrics.running_state.as_ref().ok()?;
    // (Not `voter_ids()`, which builds a set: this runs for every group at every sweep.)
    let configs = metrics.membership_config.membership().get_joint_config();
    let mut voters: Vec<u64> = configs.iter().flatten().copied().collect();
    if configs.len() > 1 {
        voters.sort_unstable();
        voters.dedup();
    }
    let followers = match &metrics.replication {
        Some(replication) if metrics.current_leader == Some(metrics.id) => replication
            .iter()
            .filter(|(id, _)| **id != metrics.id)
            .map(|(id, matched)| (*id, matched.as_ref().map(|log_id| log_id.index)))
            .collect(),
        _ => Vec::new(),
    };
    Some(GroupView {
        me: metrics.id,
        leader: metrics.current_leader,
        voters,
        followers,
        last_log_index: metrics.last_log_index,
    })
}

impl<C, SM> Paced for PacedRaft<C, SM>
where
    C: RaftTypeConfig<NodeId = u64, Node = PeerNode>,
    SM: RaftStateMachine<C>,
{
    fn view(&self) -> Option<GroupView> {
        view_of(&self.metrics.borrow_watched())
    }

    fn members(&self) -> Vec<(u64, PeerNode)> {
        self.metrics
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.clone()))
            .collect()
    }

    fn campaign(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Fails only once the group stopped, which the next view shows.
            let _ = self.raft.trigger().elect(true).await;
        })
    }

    fn nudge(&self, followers: Vec<u64>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let trigger = self.raft.trigger();
            let _ = trigger.reset_backoff(followers).await;
            let _ = trigger.heartbeat().await;
        })
    }
}

/// Where one group stands, as far as the pacemaker is concerned.
#[derive(Default)]
struct Pace {
    /// Since when the group has needed a leader (none, or its node is suspected).
    leaderless_since: Option<Instant>,
    last_campaign: Option<Instant>,
    /// As leader: the last log index at the previous nudge of a catch-up round.
    nudged_at: Option<Option<u64>>,
    /// As leader: the followers' matched indexes at the previous catch-up round.
    matched: Vec<(u64, Option<u64>)>,
}

/// The registered groups by id (shared with [`crate::Groups`]).
pub(crate) type PacedMap = parking_lot::RwLock<HashMap<Arc<str>, Arc<dyn Paced>>>;

/// Where a voter comes in the campaign order of `group`: 0 goes first.
fn campaign_rank(group: &str, live: &[u64], me: u64) -> u32 {
    let Some(position) = live.iter().position(|v| *v == me) else {
        return u32::MAX;
    };
    let first = crc32c::crc32c(group.as_bytes()) as usize % live.len();
    ((position + live.len() - first) % live.len()) as u32
}

/// Drives every group in `paced` until dropped; see the module documentation.
pub(crate) async fn run(router: Router, paced: Arc<PacedMap>) {
    let mut pacemaker = Pacemaker {
        router,
        paced,
        state: HashMap::new(),
    };
    let mut events = pacemaker.router.subscribe_peers();
    let mut next_sweep = tokio::time::Instant::now();
    let mut next_catch_up = tokio::time::Instant::now() + CATCH_UP;
    loop {
        let waiting = tokio::select! {
            () = tokio::time::sleep_until(next_sweep) => {
                let now = tokio::time::Instant::now();
                let catch_up = now >= next_catch_up;
                if catch_up {
                    next_catch_up = now + CATCH_UP;
                }
                pacemaker.sweep(catch_up, &[]).await
            }
            event = events.recv() => match event {
                // A leader may be gone: campaign now rather than at the next sweep.
                Ok(PeerEvent::Suspected(_)) => pacemaker.sweep(false, &[]).await,
                Ok(PeerEvent::Reachable(peer)) => pacemaker.sweep(false, &[peer]).await,
                Err(RecvError::Lagged(_)) => pacemaker.sweep(true, &[]).await,
                Err(RecvError::Closed) => return,
            },
        };
        next_sweep = tokio::time::Instant::now() + if waiting { SWEEP } else { IDLE_SWEEP };
    }
}

struct Pacemaker {
    router: Router,
    paced: Arc<PacedMap>,
    state: HashMap<Arc<str>, Pace>,
}

impl Pacemaker {
    /// Looks at every group once. `catch_up`: also the leaders' periodic catch-up check;
    /// `returned`: peers that answer again after they were suspected. Whether some group
    /// is waiting for a leader.
    async fn sweep(&mut self, catch_up: bool, returned: &[u64]) -> bool {
        let groups: Vec<(Arc<str>, Arc<dyn Paced>)> = self
            .paced
            .read()
            .iter()
            .map(|(id, group)| (Arc::clone(id), Arc::clone(group)))
            .collect();
        if self.state.len() > groups.len() {
            let live: std::collections::HashSet<&Arc<str>> =
                groups.iter().map(|(id, _)| id).collect();
            self.state.retain(|id, _| live.contains(id));
        }
        let suspected = self.router.suspected_peers();
        let mut waiting = false;
        for (id, group) in groups {
            let Some(view) = group.view() else {
                continue;
            };
            // Memberships change (replicas move): keep every member's address known, so
            // that its liveness is judged.
            let unknown = |node: &u64| *node != view.me && !self.router.knows(*node);
            if catch_up
                && (view.voters.iter().any(unknown)
                    || view.followers.iter().any(|(node, _)| unknown(node)))
            {
                for (node, address) in group.members() {
                    if node != view.me {
                        self.router.learn_if_unknown(node, &address.grpc);
                    }
                }
            }
            let pace = self.state.entry(Arc::clone(&id)).or_default();
            if view.leader == Some(view.me) {
                pace.leaderless_since = None;
                lead(&suspected, &*group, &view, pace, catch_up, returned).await;
            } else {
                waiting |= follow(&suspected, &id, &*group, &view, pace).await;
            }
        }
        waiting
    }
}

/// A voter's side: campaign when the group needs a leader and it is this node's turn.
/// Whether the group waits for a leader that this node may campaign for.
async fn follow(
    suspected: &[u64],
    id: &str,
    group: &dyn Paced,
    view: &GroupView,
    pace: &mut Pace,
) -> bool {
    pace.nudged_at = None;
    pace.matched.clear();
    let leader_lost = match view.leader {
        None => true,
        Some(leader) => suspected.contains(&leader),
    };
    if !leader_lost || !view.voters.contains(&view.me) {
        pace.leaderless_since = None;
        return false;
    }
    let now = Instant::now();
    let since = *pace.leaderless_since.get_or_insert(now);
    let live: Vec<u64> = view
        .voters
        .iter()
        .copied()
        .filter(|v| *v == view.me || !suspected.contains(v))
        .collect();
    if live.len() * 2 <= view.voters.len() {
        // No majority reachable from here: a campaign could not succeed. A peer's return
        // starts the next look, and the campaign order from then on.
        pace.leaderless_since = None;
        return false;
    }
    let rank = campaign_rank(id, &live, view.me);
    if now < since + STAGGER * rank {
        return true;
    }
    // Retries keep the order too: two voters that campaigned together and split the vote
    // must not keep doing so.
    if pace
        .last_campaign
        .is_some_and(|at| now < at + RETRY + STAGGER * rank)
    {
        return true;
    }
    pace.last_campaign = Some(now);
    tracing::debug!(group = id, leader = ?view.leader, rank, "campaigning for the group's leadership");
    group.campaign().await;
    true
}

/// A leader's side: nudge the group when a follower may have missed entries or the commit
/// index.
async fn lead(
    suspected: &[u64],
    group: &dyn Paced,
    view: &GroupView,
    pace: &mut Pace,
    catch_up: bool,
    returned: &[u64],
) {
    if view.followers.is_empty() {
        // A group of one replica: nobody to catch up.
        return;
    }
    let mut nudge: Vec<u64> = view
        .followers
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| returned.contains(id))
        .collect();
    let mut heartbeat = !nudge.is_empty();
    if catch_up {
        let last = view.last_log_index;
        // Entries appended since the previous round: one heartbeat tells every follower the
        // commit index of the last of them (a commit sent while a follower was unreachable
        // is not sent again).
        if pace.nudged_at != Some(last) {
            heartbeat = true;
        }
        for &(follower, matched) in &view.followers {
            if suspected.contains(&follower) {
                continue;
            }
            let lagging = matched < last;
            let stalled = pace
                .matched
                .iter()
                .any(|(id, m)| *id == follower && *m == matched);
            if lagging && stalled && !nudge.contains(&follower) {
                nudge.push(follower);
                heartbeat = true;
            }
        }
        pace.matched.clone_from(&view.followers);
        if heartbeat {
            pace.nudged_at = Some(last);
        }
    }
    if heartbeat {
        group.nudge(nudge).await;
    }
}

#[cfg(test)]
mod tests;
