//! Replication for Sluice: the openraft groups of a node (one for the metadata and one
//! per shard). Today this crate owns the Raft log storage: [`LogStore`], openraft's
//! `RaftLogStorage` over one `sluice_storage::Log` per group (each Raft entry is one log
//! entry at a mapped index, the vote, committed and purged log ids in a small fsynced
//! state file beside it), and [`LogReader`], its `RaftLogReader`. It is generic over the
//! group's `RaftTypeConfig`; the state machines, snapshots and the multiplexed transport
//! come later. It must not know Kinesis wire shapes, metadata state-machine semantics or
//! placement policy: entries are opaque Raft entries to it. Errors: [`LogStoreError`].
//! Nothing uses this crate yet.

mod error;
mod leader;
mod log_store;
mod membership;
#[cfg(test)]
mod testing;
mod transport;

pub use error::LogStoreError;
pub use leader::{leader_changes_from, wait_for_leader};
pub use log_store::{EntryTerm, LogReader, LogStore, Sealer};
pub use membership::{AddMember, MembershipError, add_member};
pub use transport::{
    Group, GroupNetwork, Groups, PeerCallError, PeerNode, RaftGroup, Router, SnapshotBytes, decode,
    encode,
};
