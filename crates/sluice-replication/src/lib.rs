//! Replication for Sluice: what every openraft group of a node (one for the metadata and
//! one per shard) shares, generic over the group's `RaftTypeConfig`. [`LogStore`]:
//! openraft's `RaftLogStorage` over one `sluice_storage::Log` per group (each Raft entry is
//! one log entry at a mapped index, the vote, committed and purged log ids in a small
//! fsynced state file beside it), and [`LogReader`], its `RaftLogReader`. `transport`: the
//! multiplexed node-to-node transport ([`Router`], [`Groups`], [`RaftGroup`]), over the
//! channels [`peer_channel`] builds (TLS with [`PeerTls`]).
//! [`liveness`]: which peer nodes answer, judged once per node; [`pacemaker`]: elections and
//! catch-up of the groups that run without timers of their own (the shard groups), from
//! those verdicts. It must not know Kinesis wire shapes, metadata state-machine semantics
//! or placement policy: entries are opaque Raft entries to it. Errors: [`LogStoreError`].

mod channel;
mod error;
mod leader;
pub mod liveness;
mod log_store;
mod membership;
pub mod pacemaker;
#[cfg(test)]
mod testing;
mod transport;

pub use channel::{PeerTls, peer_channel};
pub use error::LogStoreError;
pub use leader::{commit_lag, ensure_lease, leader_changes_from, renew_lease, wait_for_leader};
pub use liveness::{PeerEvent, SUSPECT_AFTER};
pub use log_store::{EntryTerm, LogReader, LogStore, Sealer};
pub use membership::{AddMember, MembershipError, add_member};
pub use pacemaker::{Paced, PacedRaft};
pub use transport::{
    Group, GroupNetwork, Groups, PeerCallError, PeerNetwork, PeerNode, RaftGroup, Router,
    SnapshotBytes, decode, encode, not_sent,
};
