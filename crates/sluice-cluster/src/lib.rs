//! The node's broker: the `Broker` service both front ends call, routing each record to
//! its shard by hash key, shard logs with group-committed appends and reads up to the
//! commit point, shard iterators, and the control operations that become metadata
//! commands. The cluster issue adds membership, forwarding and the rebalancer here.
//!
//! It knows nothing of JSON, CBOR, SigV4, gRPC messages or segment file formats. Entry
//! types: [`Broker`], [`BrokerConfig`], [`BrokerError`].

mod broker;
mod error;
mod iterator;
pub mod metrics;
mod record;
mod repair;
mod replica;
mod shard;
pub mod throttle;

pub use broker::open_local_keyring;
pub use broker::{
    AccessKeySummary, Broker, BrokerConfig, Caller, ChildShard, Clock, GetRecordsOutput,
    IteratorStart, NewAccessKey, PutRecordFailure, PutRecordInput, PutRecordOutput,
    ScalingDecision, ShardPlacement, Subscription, SubscriptionEvent, system_clock,
};
pub use error::BrokerError;
pub use record::StoredRecord;
pub use sluice_meta::{
    Consumer, ConsumerStatus, Identity, Member, MetaNode, ScalingPolicy, Shard, Stream, StreamMode,
    StreamStatus,
};
pub use sluice_replication::{PeerNode, PeerTls};
pub use sluice_storage::{KeyProvider, LocalKeyring};
