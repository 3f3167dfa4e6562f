//! Control-plane commands. Each is one entry in the metadata log; applying the same sequence
//! of commands to an empty state always yields the same state (time comes in the command).

use crate::model::{AccessKey, ScalingPolicy, StreamMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Offsets of the last record of shards being closed, as observed by the proposer.
pub type EndingOffsets = BTreeMap<u32, Option<u64>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateStream {
        name: String,
        shard_count: u32,
        mode: StreamMode,
        tags: BTreeMap<String, String>,
        now_ms: u64,
    },
    /// CREATING/UPDATING → ACTIVE (and consumers CREATING → ACTIVE).
    ActivateStream {
        name: String,
        created_ms: u64,
    },
    /// → DELETING
    DeleteStream {
        name: String,
        enforce_consumer_deletion: bool,
    },
    /// Removes a DELETING stream once its data is gone.
    ForgetStream {
        name: String,
        created_ms: u64,
    },
    SetRetention {
        name: String,
        hours: u32,
        increase: bool,
    },
    AddTags {
        name: String,
        tags: BTreeMap<String, String>,
    },
    RemoveTags {
        name: String,
        keys: Vec<String>,
    },
    SetEnhancedMetrics {
        name: String,
        metrics: Vec<String>,
        enable: bool,
    },
    SplitShard {
        name: String,
        shard: u32,
        new_starting_hash_key: String,
        ending: EndingOffsets,
        now_ms: u64,
    },
    MergeShards {
        name: String,
        shard: u32,
        adjacent: u32,
        ending: EndingOffsets,
        now_ms: u64,
    },
    UpdateShardCount {
        name: String,
        target: u32,
        ending: EndingOffsets,
        now_ms: u64,
    },
    UpdateStreamMode {
        name: String,
        mode: StreamMode,
        now_ms: u64,
    },
    RegisterConsumer {
        name: String,
        consumer: String,
        now_ms: u64,
    },
    DeregisterConsumer {
        name: String,
        consumer: String,
    },
    /// Drops a consumer that finished deregistering.
    ForgetConsumer {
        name: String,
        consumer: String,
    },
    /// Sets or clears a stream's automatic scaling policy.
    SetScalingPolicy {
        name: String,
        policy: Option<ScalingPolicy>,
    },
    /// StartStreamEncryption (`Some` master key) or StopStreamEncryption (`None`); the
    /// stream is UPDATING until the change settles.
    SetEncryption {
        name: String,
        key_id: Option<String>,
    },
    /// PutResourcePolicy / DeleteResourcePolicy on a stream or one of its consumers.
    SetResourcePolicy {
        name: String,
        consumer: Option<String>,
        policy: Option<String>,
    },
    /// Creates an access key (the secret is kept for signature checks, never answered).
    CreateAccessKey {
        key: AccessKey,
    },
    DeleteAccessKey {
        access_key_id: String,
    },
    /// Attaches (`Some`) or detaches (`None`) a named identity policy to an access key.
    SetKeyPolicy {
        access_key_id: String,
        policy_name: String,
        document: Option<String>,
    },
    /// Starts moving a replica of a shard (see [`Move`](crate::Move)); the leader of the
    /// shard's group carries it out. Rejected while the shard has a move in progress.
    StartMove {
        name: String,
        created_ms: u64,
        shard: u32,
        from: Option<u64>,
        to: Option<u64>,
    },
    /// The shard's group has `to` and no longer `from` among its voters: the move becomes
    /// the shard's placement.
    FinishMove {
        name: String,
        created_ms: u64,
        shard: u32,
        from: Option<u64>,
        to: Option<u64>,
    },
    /// Abandons a move whose target never became a voter of the shard's group.
    CancelMove {
        name: String,
        created_ms: u64,
        shard: u32,
        from: Option<u64>,
        to: Option<u64>,
    },
    /// Makes `node`, one of the shard's replicas, its preferred leader (it swaps places with
    /// the first replica).
    PreferLeader {
        name: String,
        created_ms: u64,
        shard: u32,
        node: u64,
    },
    /// Starts draining a node (`sluice cluster decommission`): no replica is placed on it
    /// any more, the rebalancer moves its replicas away and then removes it from the
    /// cluster. `draining == false` takes it back.
    SetDraining {
        node: u64,
        draining: bool,
    },
}

impl Command {
    /// The move a `StartMove`, `FinishMove` or `CancelMove` names.
    pub fn shard_move(&self) -> Option<(&str, u64, u32, crate::Move)> {
        match self {
            Command::StartMove {
                name,
                created_ms,
                shard,
                from,
                to,
            }
            | Command::FinishMove {
                name,
                created_ms,
                shard,
                from,
                to,
            }
            | Command::CancelMove {
                name,
                created_ms,
                shard,
                from,
                to,
            } => Some((
                name,
                *created_ms,
                *shard,
                crate::Move {
                    from: *from,
                    to: *to,
                },
            )),
            _ => None,
        }
    }
}
