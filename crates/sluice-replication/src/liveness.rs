//! Node-level liveness: which peer nodes answer, judged once for every group of the node.
//!
//! A node hosts one Raft group per shard replica, often hundreds. Letting each group run
//! its own heartbeats and election timers costs a timer wake-up and an RPC per group and
//! per peer several times a second, most of it on groups that carry no traffic. Instead,
//! the [`Router`](crate::Router) pings every peer node it knows (`sluice.peer.v1.Peer/Ping`,
//! over the same channel the groups use) every [`PING_INTERVAL`], each ping bounded by
//! [`PING_TIMEOUT`] so that a frozen process (SIGSTOP) is noticed as surely as a dead one,
//! and a peer that has not answered for [`SUSPECT_AFTER`] is *suspected*. The
//! [`Pacemaker`](crate::pacemaker) turns those verdicts into elections and catch-up of the
//! shard groups, which run without timers of their own.
//!
//! A verdict is this node's view only: a peer another node cannot reach may answer here.
//! Nothing depends on the views agreeing; an election a wrong verdict starts is a Pre-Vote
//! round that the peers refuse while their leader's lease holds.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How often every peer is pinged.
pub const PING_INTERVAL: Duration = Duration::from_millis(250);
/// How long one ping may take before it counts as unanswered.
pub const PING_TIMEOUT: Duration = Duration::from_millis(400);
/// A peer that has not answered for this long is suspected.
pub const SUSPECT_AFTER: Duration = Duration::from_secs(1);

/// A change in what this node knows of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// The peer has not answered for [`SUSPECT_AFTER`].
    Suspected(u64),
    /// A suspected peer answers again.
    Reachable(u64),
}

/// What is known of one peer.
struct PeerState {
    /// Its last answer, or when this node began to track it.
    heard: Instant,
    /// Set while it is suspected: since when it has not answered (`heard` then).
    down_since: Option<Instant>,
    /// A ping to it is in flight (one at a time per peer).
    pinging: bool,
}

/// The verdicts on every peer a node pings, and the stream of their changes.
pub(crate) struct Liveness {
    peers: Mutex<HashMap<u64, PeerState>>,
    events: broadcast::Sender<PeerEvent>,
}

/// Transitions a subscriber may fall behind by before it is told it lagged (it then
/// re-reads every verdict).
const EVENT_BUFFER: usize = 1024;

impl Liveness {
    pub(crate) fn new() -> Liveness {
        Liveness {
            peers: Mutex::new(HashMap::new()),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    /// Since when `node` has not answered, while it is suspected; `None` for a peer that
    /// answers or that this node does not track.
    pub(crate) fn down_since(&self, node: u64) -> Option<Instant> {
        self.peers.lock().get(&node).and_then(|p| p.down_since)
    }

    /// Every peer suspected now.
    pub(crate) fn suspected(&self) -> Vec<u64> {
        self.peers
            .lock()
            .iter()
            .filter(|(_, p)| p.down_since.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    /// Of `known` (the peers the router has an address for), those to ping now: every
    /// one without a ping in flight. Peers seen for the first time start being tracked;
    /// peers no longer known are forgotten.
    pub(crate) fn due(&self, known: &[u64], now: Instant) -> Vec<u64> {
        let mut peers = self.peers.lock();
        peers.retain(|id, _| known.contains(id));
        let mut due = Vec::with_capacity(known.len());
        for &id in known {
            let peer = peers.entry(id).or_insert(PeerState {
                heard: now,
                down_since: None,
                pinging: false,
            });
            if !peer.pinging {
                peer.pinging = true;
                due.push(id);
            }
        }
        due
    }

    /// Records the outcome of a ping to `node`.
    pub(crate) fn answered(&self, node: u64, answered: bool, now: Instant) {
        let came_back = {
            let mut peers = self.peers.lock();
            let Some(peer) = peers.get_mut(&node) else {
                return;
            };
            peer.pinging = false;
            if !answered {
                return;
            }
            peer.heard = now;
            peer.down_since.take().is_some()
        };
        if came_back {
            tracing::info!(peer = node, "peer answers again");
            // No subscriber is not an error: nothing needs to act on it.
            let _ = self.events.send(PeerEvent::Reachable(node));
        }
    }

    /// Suspects every peer silent for [`SUSPECT_AFTER`] that is not suspected yet.
    pub(crate) fn judge(&self, now: Instant) {
        let suspected: Vec<(u64, Instant)> = {
            let mut peers = self.peers.lock();
            peers
                .iter_mut()
                .filter(|(_, p)| {
                    p.down_since.is_none() && now.duration_since(p.heard) >= SUSPECT_AFTER
                })
                .map(|(id, p)| {
                    p.down_since = Some(p.heard);
                    (*id, p.heard)
                })
                .collect()
        };
        for (node, heard) in suspected {
            tracing::warn!(
                peer = node,
                silent_ms = now.duration_since(heard).as_millis() as u64,
                "peer suspected: it does not answer"
            );
            let _ = self.events.send(PeerEvent::Suspected(node));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_is_suspected_once_and_reachable_again_when_it_answers() {
        let liveness = Liveness::new();
        let mut events = liveness.subscribe();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(liveness.due(&[2, 3], t0), vec![2, 3]);
        // A ping in flight is not sent again.
        assert!(liveness.due(&[2, 3], t0).is_empty());
        liveness.answered(2, true, t0 + ms(10));
        liveness.answered(3, false, t0 + ms(400));
        liveness.judge(t0 + ms(900));
        assert!(events.try_recv().is_err());
        assert_eq!(liveness.down_since(3), None);

        liveness.judge(t0 + SUSPECT_AFTER);
        assert_eq!(events.try_recv().unwrap(), PeerEvent::Suspected(3));
        assert_eq!(liveness.down_since(3), Some(t0));
        assert_eq!(liveness.down_since(2), None);
        // Judged again: no second event (node 2 answered 10 ms after node 3 went silent).
        liveness.judge(t0 + SUSPECT_AFTER + ms(5));
        assert!(events.try_recv().is_err());

        assert_eq!(liveness.due(&[2, 3], t0 + ms(1005)), vec![2, 3]);
        liveness.answered(3, true, t0 + ms(1010));
        assert_eq!(liveness.down_since(3), None);
        assert_eq!(events.try_recv().unwrap(), PeerEvent::Reachable(3));
    }

    #[test]
    fn peers_no_longer_known_are_forgotten() {
        let liveness = Liveness::new();
        let t0 = Instant::now();
        liveness.due(&[2], t0);
        liveness.judge(t0 + SUSPECT_AFTER);
        assert!(liveness.down_since(2).is_some());
        liveness.due(&[3], t0 + SUSPECT_AFTER);
        assert_eq!(liveness.down_since(2), None);
    }
}
