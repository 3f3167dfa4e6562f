//! The metadata the control plane keeps: streams, shards, consumers.

use serde::{Deserialize, Serialize};
use sluice_types::{HashKeyRange, ShardId};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamStatus {
    Creating,
    Deleting,
    Active,
    Updating,
}

impl StreamStatus {
    pub fn as_aws(self) -> &'static str {
        match self {
            StreamStatus::Creating => "CREATING",
            StreamStatus::Deleting => "DELETING",
            StreamStatus::Active => "ACTIVE",
            StreamStatus::Updating => "UPDATING",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamMode {
    Provisioned,
    OnDemand,
}

impl StreamMode {
    pub fn as_aws(self) -> &'static str {
        match self {
            StreamMode::Provisioned => "PROVISIONED",
            StreamMode::OnDemand => "ON_DEMAND",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerStatus {
    Creating,
    Deleting,
    Active,
}

impl ConsumerStatus {
    pub fn as_aws(self) -> &'static str {
        match self {
            ConsumerStatus::Creating => "CREATING",
            ConsumerStatus::Deleting => "DELETING",
            ConsumerStatus::Active => "ACTIVE",
        }
    }
}

/// One shard of a stream. Hash keys are kept as decimal strings in the serialized form so
/// the JSON stays portable; in memory they are u128.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub id: ShardIdRepr,
    #[serde(with = "u128_string")]
    pub start_hash: u128,
    #[serde(with = "u128_string")]
    pub end_hash: u128,
    pub parent: Option<u32>,
    pub adjacent_parent: Option<u32>,
    pub created_ms: u64,
    /// Set when the shard is closed: the log offset of its last record, or `None` inside
    /// `Some` when it was closed without any record.
    pub closed: Option<Option<u64>>,
    /// The nodes holding a replica (the first is the preferred leader), assigned when the
    /// shard is created and changed by moves.
    #[serde(default)]
    pub replicas: Vec<u64>,
    /// The move of one replica in progress, if any (at most one per shard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<Move>,
}

/// A replica of a shard on its way from one node to another (`Command::StartMove`): `to`
/// joins the shard's group as a learner, catches up and becomes a voter, then `from` leaves
/// the group, and `Command::FinishMove` puts `to` in `from`'s place among the replicas.
/// Either side may be absent: a move without `from` adds a replica (a shard below its
/// replication factor), one without `to` removes one (a drained node whose replicas no
/// other node can take).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: Option<u64>,
    pub to: Option<u64>,
}

impl Move {
    /// The replicas once the move is finished: `to` in `from`'s place (so a preferred
    /// leader's slot passes to its successor), appended when there is no `from`, and
    /// `from` left out when there is no `to`.
    pub fn apply(&self, replicas: &[u64]) -> Vec<u64> {
        let mut after: Vec<u64> = Vec::with_capacity(replicas.len() + 1);
        for node in replicas {
            if Some(*node) == self.from {
                after.extend(self.to);
            } else {
                after.push(*node);
            }
        }
        if self.from.is_none()
            && let Some(to) = self.to
            && !after.contains(&to)
        {
            after.push(to);
        }
        after
    }
}

/// Serialized shard id (its index).
pub type ShardIdRepr = u32;

impl Shard {
    pub fn shard_id(&self) -> ShardId {
        ShardId(self.id)
    }
    pub fn range(&self) -> HashKeyRange {
        HashKeyRange {
            start: self.start_hash,
            end: self.end_hash,
        }
    }
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    pub name: String,
    pub created_ms: u64,
    pub status: ConsumerStatus,
    /// The consumer's resource policy (a JSON policy document).
    #[serde(default)]
    pub resource_policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    pub name: String,
    pub created_ms: u64,
    pub status: StreamStatus,
    pub mode: StreamMode,
    pub retention_hours: u32,
    pub shards: Vec<Shard>,
    pub tags: BTreeMap<String, String>,
    pub enhanced_metrics: Vec<String>,
    pub consumers: Vec<Consumer>,
    /// Times (ms) of UpdateStreamMode calls, to enforce AWS's twice-per-24h rule.
    pub mode_changes_ms: Vec<u64>,
    pub max_record_size_kib: u32,
    /// Automatic scaling for a provisioned stream (on-demand streams always scale).
    #[serde(default)]
    pub scaling_policy: Option<ScalingPolicy>,
    /// Server-side encryption (EncryptionType KMS) with this master key.
    #[serde(default)]
    pub encryption: Option<StreamEncryption>,
    /// The stream's resource policy (a JSON policy document), as PutResourcePolicy set it.
    #[serde(default)]
    pub resource_policy: Option<String>,
}

/// A stream's server-side encryption setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEncryption {
    /// The master key as the caller named it (ARN, alias, alias ARN or key id).
    pub key_id: String,
}

/// An access key: the id callers sign with, its secret, and the identity policies attached
/// to it. The secret is needed to verify signatures; it is never answered or logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The IAM-style user the key belongs to (principal `arn:aws:iam::<account>:user/<user>`).
    pub user: String,
    pub created_ms: u64,
    /// Allowed everything, policies or not (the bootstrap key).
    pub admin: bool,
    /// Named identity policy documents (JSON).
    pub policies: BTreeMap<String, String>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("user", &self.user)
            .field("created_ms", &self.created_ms)
            .field("admin", &self.admin)
            .field("policies", &self.policies)
            .finish()
    }
}

/// When the scaler splits and merges a stream's shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingPolicy {
    /// Split a shard whose write utilisation (of 1 MiB/s or 1,000 records/s) reaches this
    /// many percent; merge neighbours whose combined utilisation stays below half of it.
    pub target_utilization_percent: u32,
    pub min_shards: u32,
    pub max_shards: u32,
    /// No merge sooner than this after the stream's last scaling step.
    pub cooldown_secs: u64,
}

impl Stream {
    pub fn shard(&self, id: ShardId) -> Option<&Shard> {
        self.shards.iter().find(|s| s.id == id.0)
    }
    pub fn open_shards(&self) -> impl Iterator<Item = &Shard> {
        self.shards.iter().filter(|s| s.is_open())
    }
    pub fn next_shard_index(&self) -> u32 {
        self.shards.iter().map(|s| s.id + 1).max().unwrap_or(0)
    }
}

mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
