//! The metadata group: the control-plane command enum, the deterministic state machine
//! that applies it (streams, shards and their placement, tags, consumers, retention,
//! capacity mode, draining nodes), the rebalancer's planner (`MetaState::plan_moves`), and
//! its durable home (a fsynced command log plus applied state in a `MetaStore`).
//!
//! It knows nothing of record bytes, segment contents, HTTP or who proposes commands and
//! why. Entry types: [`Command`], [`MetaState`], [`Meta`].

mod command;
mod error;
mod model;
mod rebalance;
mod state;
mod store;

pub use command::{Command, EndingOffsets};
pub use error::{CommandError, MetaError};
pub use model::{
    AccessKey, Consumer, ConsumerStatus, Move, ScalingPolicy, Shard, Stream, StreamEncryption,
    StreamMode, StreamStatus,
};
pub use rebalance::NodeHealth;
pub use state::{Change, Identity, MetaState, Zone};
pub use store::{META_GROUP, Member, Meta, MetaMachine, MetaNode, MetaResponse, MetaTypes};
