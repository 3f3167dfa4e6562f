//! The deterministic state machine: `plan` computes what a command would change without
//! touching the state, `commit` installs it. Replaying the log through `apply` rebuilds the
//! state exactly.

use crate::command::{Command, EndingOffsets};
use crate::error::CommandError;
use crate::model::{
    AccessKey, Consumer, ConsumerStatus, Move, Shard, Stream, StreamEncryption, StreamStatus,
};
use sluice_types::limits::{
    DEFAULT_RETENTION_HOURS, MAX_CONSUMERS_PER_STREAM, MAX_RETENTION_HOURS, MAX_TAGS_PER_STREAM,
    MIN_RETENTION_HOURS,
};
use sluice_types::{HashKeyRange, ShardId};
use std::collections::{BTreeMap, BTreeSet};

/// Who the state machine speaks as in AWS-style messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub account: String,
    pub region: String,
    pub shard_limit: u32,
    /// Replicas per shard, capped by the node count. Every node of a cluster must be
    /// configured with the same value (placement is computed where commands are applied).
    pub replication_factor: u32,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            account: "000000000000".to_owned(),
            region: "us-east-1".to_owned(),
            shard_limit: sluice_types::limits::DEFAULT_SHARD_LIMIT,
            replication_factor: 3,
        }
    }
}

/// The effect of one command on the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(Stream),
    Remove(String),
    PutKey(AccessKey),
    RemoveKey(String),
    /// The set of draining nodes becomes this.
    Draining(BTreeSet<u64>),
    Nothing,
}

/// A failure domain for placement: a zone a node announced, or, for a node that announced
/// none, a zone of its own (so nodes without zones are spread as before zones existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Zone<'a> {
    Named(&'a str),
    Own(u64),
}

#[derive(Debug, Clone, Default)]
pub struct MetaState {
    pub identity: Identity,
    pub streams: BTreeMap<String, Stream>,
    /// Access keys by access key id.
    pub keys: BTreeMap<String, AccessKey>,
    /// The cluster's nodes (the metadata group's members), for placement.
    pub nodes: BTreeSet<u64>,
    /// The zones the members announced (a member without one is absent). Replicas of a
    /// shard go to distinct zones where there are enough; a node without a zone counts as
    /// a zone of its own.
    pub zones: BTreeMap<u64, String>,
    /// Nodes being drained or drained (`Command::SetDraining`): nothing is placed on them.
    /// A drained node stays in the set once it left the cluster, so that it is not given
    /// replicas again if it comes back.
    pub draining: BTreeSet<u64>,
}

impl MetaState {
    pub fn new(identity: Identity) -> Self {
        MetaState {
            identity,
            streams: BTreeMap::new(),
            keys: BTreeMap::new(),
            nodes: BTreeSet::new(),
            zones: BTreeMap::new(),
            draining: BTreeSet::new(),
        }
    }

    /// The members become these (from the metadata group's membership), with their zones.
    pub fn set_members<'a>(
        &mut self,
        members: impl Iterator<Item = (&'a u64, &'a sluice_replication::PeerNode)>,
    ) {
        self.nodes.clear();
        self.zones.clear();
        for (id, node) in members {
            self.nodes.insert(*id);
            if let Some(zone) = &node.zone {
                self.zones.insert(*id, zone.clone());
            }
        }
    }

    /// The zone `node` counts in: the one it announced, or one of its own.
    pub fn zone_of(&self, node: u64) -> Zone<'_> {
        match self.zones.get(&node) {
            Some(zone) => Zone::Named(zone),
            None => Zone::Own(node),
        }
    }

    /// How many of `replicas` share a zone with an earlier one: 0 when all zones differ.
    pub fn zone_conflicts(&self, replicas: &[u64]) -> usize {
        let zones: BTreeSet<Zone<'_>> = replicas.iter().map(|n| self.zone_of(*n)).collect();
        replicas.len() - zones.len()
    }

    pub fn apply(&mut self, command: &Command) -> Result<(), CommandError> {
        let change = self.plan(command)?;
        self.commit(change);
        Ok(())
    }

    pub fn commit(&mut self, change: Change) {
        match change {
            Change::Put(stream) => {
                self.streams.insert(stream.name.clone(), stream);
            }
            Change::Remove(name) => {
                self.streams.remove(&name);
            }
            Change::PutKey(key) => {
                self.keys.insert(key.access_key_id.clone(), key);
            }
            Change::RemoveKey(id) => {
                self.keys.remove(&id);
            }
            Change::Draining(nodes) => self.draining = nodes,
            Change::Nothing => {}
        }
    }

    /// Open shards across all streams, for the account shard limit.
    pub fn open_shard_total(&self) -> u32 {
        self.streams
            .values()
            .map(|s| s.open_shards().count() as u32)
            .sum()
    }

    fn not_found(&self, name: &str) -> CommandError {
        CommandError::NotFound(format!(
            "Stream {name} under account {} not found.",
            self.identity.account
        ))
    }

    fn existing(&self, name: &str) -> Result<&Stream, CommandError> {
        self.streams.get(name).ok_or_else(|| self.not_found(name))
    }

    fn active(&self, name: &str) -> Result<Stream, CommandError> {
        let stream = self.existing(name)?;
        if stream.status != StreamStatus::Active {
            return Err(CommandError::InUse(format!(
                "Stream {name} under account {} not ACTIVE, instead in state {}",
                self.identity.account,
                stream.status.as_aws()
            )));
        }
        Ok(stream.clone())
    }

    fn check_shard_limit(&self, additional: u32) -> Result<(), CommandError> {
        let current = self.open_shard_total();
        if current + additional > self.identity.shard_limit {
            return Err(CommandError::LimitExceeded(format!(
                "This request would exceed the shard limit for the account {} in {}. Current shard count for the account: {current}. Limit: {}. Number of additional shards that would have resulted from this request: {additional}. Refer to the AWS Service Limits page (https://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) for current limits and how to request higher limits.",
                self.identity.account, self.identity.region, self.identity.shard_limit
            )));
        }
        Ok(())
    }

    /// Computes the change a command makes, or why it is rejected. Never mutates.
    pub fn plan(&self, command: &Command) -> Result<Change, CommandError> {
        let mut change = self.plan_change(command)?;
        if let Change::Put(stream) = &mut change {
            self.place(stream);
        }
        Ok(change)
    }

    /// The nodes new replicas may be placed on: the members that are not draining (all
    /// members if every one is).
    fn placeable_nodes(&self) -> BTreeSet<u64> {
        let placeable: BTreeSet<u64> = self.nodes.difference(&self.draining).copied().collect();
        if placeable.is_empty() {
            self.nodes.clone()
        } else {
            placeable
        }
    }

    /// Assigns replicas to the stream's open shards that have none: the least-loaded
    /// nodes that are not draining (replicas held across all streams, ties by id), in
    /// distinct zones as far as there are zones (see [`MetaState::zone_of`]), rotating
    /// which of them is the preferred leader. Deterministic: every node computes the same
    /// placement.
    fn place(&self, stream: &mut Stream) {
        let nodes = self.placeable_nodes();
        if nodes.is_empty() {
            return;
        }
        let factor = (self.identity.replication_factor.max(1) as usize).min(nodes.len());
        let mut load: BTreeMap<u64, (usize, usize)> =
            nodes.iter().map(|id| (*id, (0, 0))).collect();
        let others = self
            .streams
            .values()
            .filter(|s| s.name != stream.name)
            .flat_map(|s| s.open_shards());
        for shard in others.chain(stream.open_shards()) {
            for (i, node) in shard.replicas.iter().enumerate() {
                if let Some((replicas, leaders)) = load.get_mut(node) {
                    *replicas += 1;
                    if i == 0 {
                        *leaders += 1;
                    }
                }
            }
        }
        for shard in stream.shards.iter_mut() {
            if shard.closed.is_some() || !shard.replicas.is_empty() {
                continue;
            }
            let mut by_load: Vec<u64> = load.keys().copied().collect();
            by_load.sort_by_key(|id| (load[id].0, *id));
            // The least-loaded node of each zone first, then the others (by load), so the
            // replicas are in distinct zones whenever there are enough.
            let mut zones = BTreeSet::new();
            let (spread, rest): (Vec<u64>, Vec<u64>) = by_load
                .iter()
                .partition(|id| zones.insert(self.zone_of(**id)));
            let mut chosen: Vec<u64> = spread.into_iter().chain(rest).take(factor).collect();
            // The preferred leader: the chosen node leading the fewest shards.
            chosen.sort_by_key(|id| (load[id].1, *id));
            for (i, node) in chosen.iter().enumerate() {
                if let Some((replicas, leaders)) = load.get_mut(node) {
                    *replicas += 1;
                    if i == 0 {
                        *leaders += 1;
                    }
                }
            }
            shard.replicas = chosen;
        }
    }

    fn plan_change(&self, command: &Command) -> Result<Change, CommandError> {
        let account = &self.identity.account;
        match command {
            Command::CreateStream {
                name,
                shard_count,
                mode,
                tags,
                now_ms,
            } => {
                if self.streams.contains_key(name) {
                    return Err(CommandError::InUse(format!(
                        "Stream {name} under account {account} already exists."
                    )));
                }
                self.check_shard_limit(*shard_count)?;
                let shards = HashKeyRange::uniform(*shard_count)
                    .into_iter()
                    .enumerate()
                    .map(|(i, range)| Shard {
                        id: i as u32,
                        start_hash: range.start,
                        end_hash: range.end,
                        parent: None,
                        adjacent_parent: None,
                        created_ms: *now_ms,
                        closed: None,
                        replicas: Vec::new(),
                        moving: None,
                    })
                    .collect();
                Ok(Change::Put(Stream {
                    name: name.clone(),
                    created_ms: *now_ms,
                    status: StreamStatus::Creating,
                    mode: *mode,
                    retention_hours: DEFAULT_RETENTION_HOURS,
                    shards,
                    tags: tags.clone(),
                    enhanced_metrics: Vec::new(),
                    consumers: Vec::new(),
                    mode_changes_ms: Vec::new(),
                    max_record_size_kib: 1024,
                    scaling_policy: None,
                    encryption: None,
                    resource_policy: None,
                }))
            }
            Command::ActivateStream { name, created_ms } => {
                let Some(stream) = self.streams.get(name) else {
                    return Ok(Change::Nothing);
                };
                if stream.created_ms != *created_ms || stream.status == StreamStatus::Deleting {
                    return Ok(Change::Nothing);
                }
                let mut stream = stream.clone();
                stream.status = StreamStatus::Active;
                for consumer in &mut stream.consumers {
                    if consumer.status == ConsumerStatus::Creating {
                        consumer.status = ConsumerStatus::Active;
                    }
                }
                Ok(Change::Put(stream))
            }
            Command::DeleteStream {
                name,
                enforce_consumer_deletion,
            } => {
                let mut stream = self.existing(name)?.clone();
                let live_consumers = stream
                    .consumers
                    .iter()
                    .any(|c| c.status != ConsumerStatus::Deleting);
                if live_consumers && !enforce_consumer_deletion {
                    return Err(CommandError::InUse(format!(
                        "Stream {name} under account {account} has registered consumers. Use EnforceConsumerDeletion to delete the stream and its consumers."
                    )));
                }
                stream.status = StreamStatus::Deleting;
                for consumer in &mut stream.consumers {
                    consumer.status = ConsumerStatus::Deleting;
                }
                Ok(Change::Put(stream))
            }
            Command::ForgetStream { name, created_ms } => match self.streams.get(name) {
                Some(stream) if stream.created_ms == *created_ms => {
                    Ok(Change::Remove(name.clone()))
                }
                _ => Ok(Change::Nothing),
            },
            Command::SetRetention {
                name,
                hours,
                increase,
            } => {
                let mut stream = self.existing(name)?.clone();
                if *hours < MIN_RETENTION_HOURS {
                    return Err(CommandError::InvalidArgument(format!(
                        "Minimum allowed retention period is {MIN_RETENTION_HOURS} hours. Requested retention period ({hours} hours) is too short."
                    )));
                }
                if *hours > MAX_RETENTION_HOURS {
                    return Err(CommandError::InvalidArgument(format!(
                        "Maximum allowed retention period is {MAX_RETENTION_HOURS} hours. Requested retention period ({hours} hours) is too long."
                    )));
                }
                if stream.status != StreamStatus::Active {
                    return Err(self
                        .active(name)
                        .err()
                        .unwrap_or_else(|| self.not_found(name)));
                }
                if *increase && *hours < stream.retention_hours {
                    return Err(CommandError::InvalidArgument(format!(
                        "Requested retention period ({hours} hours) for stream {name} can not be shorter than existing retention period ({} hours). Use DecreaseRetentionPeriod API.",
                        stream.retention_hours
                    )));
                }
                if !*increase && *hours > stream.retention_hours {
                    return Err(CommandError::InvalidArgument(format!(
                        "Requested retention period ({hours} hours) for stream {name} can not be longer than existing retention period ({} hours). Use IncreaseRetentionPeriod API.",
                        stream.retention_hours
                    )));
                }
                stream.retention_hours = *hours;
                Ok(Change::Put(stream))
            }
            Command::AddTags { name, tags } => {
                let mut stream = self.existing(name)?.clone();
                for (key, value) in tags {
                    stream.tags.insert(key.clone(), value.clone());
                }
                if stream.tags.len() > MAX_TAGS_PER_STREAM {
                    return Err(CommandError::InvalidArgument(format!(
                        "Failed to add tags to stream {name} under account {account} because a given stream cannot have more than {MAX_TAGS_PER_STREAM} tags associated with it."
                    )));
                }
                Ok(Change::Put(stream))
            }
            Command::RemoveTags { name, keys } => {
                let mut stream = self.existing(name)?.clone();
                for key in keys {
                    stream.tags.remove(key);
                }
                Ok(Change::Put(stream))
            }
            Command::SetEnhancedMetrics {
                name,
                metrics,
                enable,
            } => {
                let mut stream = self.existing(name)?.clone();
                let all = [
                    "IncomingBytes",
                    "IncomingRecords",
                    "OutgoingBytes",
                    "OutgoingRecords",
                    "WriteProvisionedThroughputExceeded",
                    "ReadProvisionedThroughputExceeded",
                    "IteratorAgeMilliseconds",
                ];
                let requested: Vec<&str> = if metrics.iter().any(|m| m == "ALL") {
                    all.to_vec()
                } else {
                    metrics.iter().map(String::as_str).collect()
                };
                let mut current: Vec<String> = stream.enhanced_metrics.clone();
                if *enable {
                    for metric in requested {
                        if !current.iter().any(|m| m == metric) {
                            current.push(metric.to_owned());
                        }
                    }
                } else {
                    current.retain(|m| !requested.contains(&m.as_str()));
                }
                current.sort_by_key(|m| all.iter().position(|a| a == m));
                stream.enhanced_metrics = current;
                Ok(Change::Put(stream))
            }
            Command::SplitShard {
                name,
                shard,
                new_starting_hash_key,
                ending,
                now_ms,
            } => {
                let mut stream = self.active(name)?;
                let parent = self.open_shard_of(&stream, *shard, "splitting")?;
                let key: u128 = new_starting_hash_key.parse().map_err(|_| {
                    CommandError::InvalidArgument(format!(
                        "NewStartingHashKey {new_starting_hash_key} used in SplitShard() on shard {} in stream {name} under account {account} is not both greater than one plus the shard's StartingHashKey {} and less than the shard's EndingHashKey {}.",
                        ShardId(*shard), parent.start_hash, parent.end_hash
                    ))
                })?;
                if key <= parent.start_hash.saturating_add(1) || key >= parent.end_hash {
                    return Err(CommandError::InvalidArgument(format!(
                        "NewStartingHashKey {new_starting_hash_key} used in SplitShard() on shard {} in stream {name} under account {account} is not both greater than one plus the shard's StartingHashKey {} and less than the shard's EndingHashKey {}.",
                        ShardId(*shard),
                        parent.start_hash,
                        parent.end_hash
                    )));
                }
                self.check_shard_limit(1)?;
                let (start, end) = (parent.start_hash, parent.end_hash);
                let next = stream.next_shard_index();
                close(&mut stream, *shard, ending);
                stream
                    .shards
                    .push(child(next, start, key - 1, Some(*shard), None, *now_ms));
                stream
                    .shards
                    .push(child(next + 1, key, end, Some(*shard), None, *now_ms));
                stream.status = StreamStatus::Updating;
                Ok(Change::Put(stream))
            }
            Command::MergeShards {
                name,
                shard,
                adjacent,
                ending,
                now_ms,
            } => {
                let mut stream = self.active(name)?;
                let first = self.open_shard_of(&stream, *shard, "merging")?;
                let second = self.open_shard_of(&stream, *adjacent, "merging")?;
                if first.end_hash.checked_add(1) != Some(second.start_hash) {
                    return Err(CommandError::InvalidArgument(format!(
                        "Shards {} and {} in stream {name} under account {account} are not an adjacent pair of shards eligible for merging",
                        ShardId(*shard),
                        ShardId(*adjacent)
                    )));
                }
                let start = first.start_hash.min(second.start_hash);
                let end = first.end_hash.max(second.end_hash);
                let next = stream.next_shard_index();
                close(&mut stream, *shard, ending);
                close(&mut stream, *adjacent, ending);
                stream.shards.push(child(
                    next,
                    start,
                    end,
                    Some(*shard),
                    Some(*adjacent),
                    *now_ms,
                ));
                stream.status = StreamStatus::Updating;
                Ok(Change::Put(stream))
            }
            Command::UpdateShardCount {
                name,
                target,
                ending,
                now_ms,
            } => {
                let mut stream = self.active(name)?;
                let open = stream.open_shards().count() as u32;
                if *target > open.saturating_mul(2) || target.saturating_mul(2) < open {
                    return Err(CommandError::Validation(format!(
                        "UpdateShardCount target shard count {target} must be between half and double the current open shard count {open} for stream {name} under account {account}."
                    )));
                }
                if *target > open {
                    self.check_shard_limit(*target - open)?;
                }
                rescale(&mut stream, *target, ending, *now_ms);
                stream.status = StreamStatus::Updating;
                Ok(Change::Put(stream))
            }
            Command::UpdateStreamMode { name, mode, now_ms } => {
                let mut stream = self.active(name)?;
                let day_ago = now_ms.saturating_sub(24 * 3600 * 1000);
                let recent = stream
                    .mode_changes_ms
                    .iter()
                    .filter(|t| **t > day_ago)
                    .count();
                if recent >= 2 {
                    return Err(CommandError::LimitExceeded(format!(
                        "Stream {name} under account {account} has exceeded the limit of 2 capacity mode changes in a rolling 24-hour period."
                    )));
                }
                if stream.mode != *mode {
                    stream.mode = *mode;
                    stream.mode_changes_ms.retain(|t| *t > day_ago);
                    stream.mode_changes_ms.push(*now_ms);
                }
                Ok(Change::Put(stream))
            }
            Command::RegisterConsumer {
                name,
                consumer,
                now_ms,
            } => {
                let mut stream = self.active(name)?;
                if stream.consumers.iter().any(|c| &c.name == consumer) {
                    return Err(CommandError::InUse(format!(
                        "Consumer {consumer} under stream {name} already exists for account {account}."
                    )));
                }
                if stream.consumers.len() >= MAX_CONSUMERS_PER_STREAM {
                    return Err(CommandError::LimitExceeded(format!(
                        "Stream {name} under account {account} already has {MAX_CONSUMERS_PER_STREAM} registered consumers."
                    )));
                }
                stream.consumers.push(Consumer {
                    name: consumer.clone(),
                    created_ms: *now_ms,
                    status: ConsumerStatus::Creating,
                    resource_policy: None,
                });
                Ok(Change::Put(stream))
            }
            Command::DeregisterConsumer { name, consumer } => {
                let mut stream = self.existing(name)?.clone();
                let Some(entry) = stream.consumers.iter_mut().find(|c| &c.name == consumer) else {
                    return Err(self.consumer_not_found(name, consumer));
                };
                entry.status = ConsumerStatus::Deleting;
                Ok(Change::Put(stream))
            }
            Command::SetScalingPolicy { name, policy } => {
                let mut stream = self.existing(name)?.clone();
                if let Some(policy) = policy {
                    if policy.min_shards == 0 || policy.min_shards > policy.max_shards {
                        return Err(CommandError::InvalidArgument(format!(
                            "Scaling policy for stream {name} needs 1 <= min_shards <= max_shards, got {} and {}.",
                            policy.min_shards, policy.max_shards
                        )));
                    }
                    if !(1..=100).contains(&policy.target_utilization_percent) {
                        return Err(CommandError::InvalidArgument(format!(
                            "Scaling policy for stream {name} needs a target utilization between 1 and 100 percent, got {}.",
                            policy.target_utilization_percent
                        )));
                    }
                }
                stream.scaling_policy = policy.clone();
                Ok(Change::Put(stream))
            }
            Command::SetEncryption { name, key_id } => {
                let mut stream = self.active(name)?;
                stream.encryption = key_id.as_ref().map(|key_id| StreamEncryption {
                    key_id: key_id.clone(),
                });
                stream.status = StreamStatus::Updating;
                Ok(Change::Put(stream))
            }
            Command::SetResourcePolicy {
                name,
                consumer,
                policy,
            } => {
                let mut stream = self.existing(name)?.clone();
                match consumer {
                    None => stream.resource_policy = policy.clone(),
                    Some(consumer) => {
                        let Some(entry) = stream.consumers.iter_mut().find(|c| &c.name == consumer)
                        else {
                            return Err(self.consumer_not_found(name, consumer));
                        };
                        entry.resource_policy = policy.clone();
                    }
                }
                Ok(Change::Put(stream))
            }
            Command::CreateAccessKey { key } => {
                if self.keys.contains_key(&key.access_key_id) {
                    return Err(CommandError::InUse(format!(
                        "Access key {} already exists.",
                        key.access_key_id
                    )));
                }
                Ok(Change::PutKey(key.clone()))
            }
            Command::DeleteAccessKey { access_key_id } => {
                if !self.keys.contains_key(access_key_id) {
                    return Err(self.key_not_found(access_key_id));
                }
                Ok(Change::RemoveKey(access_key_id.clone()))
            }
            Command::SetKeyPolicy {
                access_key_id,
                policy_name,
                document,
            } => {
                let mut key = self
                    .keys
                    .get(access_key_id)
                    .cloned()
                    .ok_or_else(|| self.key_not_found(access_key_id))?;
                match document {
                    Some(document) => {
                        key.policies.insert(policy_name.clone(), document.clone());
                    }
                    None => {
                        if key.policies.remove(policy_name).is_none() {
                            return Err(CommandError::NotFound(format!(
                                "Policy {policy_name} is not attached to access key {access_key_id}."
                            )));
                        }
                    }
                }
                Ok(Change::PutKey(key))
            }
            Command::StartMove {
                name,
                created_ms,
                shard,
                from,
                to,
            } => {
                let mut stream = self.placed_stream(name, *created_ms)?;
                let moving = Move {
                    from: *from,
                    to: *to,
                };
                let entry = placed_shard(&mut stream, *shard)?;
                if let Some(current) = entry.moving {
                    return Err(CommandError::InUse(format!(
                        "Shard {} of stream {name} is already moving ({current:?}).",
                        ShardId(*shard)
                    )));
                }
                self.check_move(entry, moving)?;
                entry.moving = Some(moving);
                Ok(Change::Put(stream))
            }
            Command::FinishMove {
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
            } => {
                let mut stream = self.placed_stream(name, *created_ms)?;
                let moving = Move {
                    from: *from,
                    to: *to,
                };
                let entry = placed_shard(&mut stream, *shard)?;
                if entry.moving != Some(moving) {
                    return Err(CommandError::InvalidArgument(format!(
                        "Shard {} of stream {name} has no move {moving:?} in progress.",
                        ShardId(*shard)
                    )));
                }
                if matches!(command, Command::FinishMove { .. }) {
                    entry.replicas = moving.apply(&entry.replicas);
                }
                entry.moving = None;
                Ok(Change::Put(stream))
            }
            Command::PreferLeader {
                name,
                created_ms,
                shard,
                node,
            } => {
                let mut stream = self.placed_stream(name, *created_ms)?;
                let entry = placed_shard(&mut stream, *shard)?;
                let Some(position) = entry.replicas.iter().position(|n| n == node) else {
                    return Err(CommandError::InvalidArgument(format!(
                        "Node {node} holds no replica of shard {} of stream {name}.",
                        ShardId(*shard)
                    )));
                };
                if position == 0 {
                    return Ok(Change::Nothing);
                }
                entry.replicas.swap(0, position);
                Ok(Change::Put(stream))
            }
            Command::SetDraining { node, draining } => {
                let mut nodes = self.draining.clone();
                if *draining {
                    if !self.nodes.contains(node) {
                        return Err(CommandError::NotFound(format!(
                            "Node {node} is not a member of the cluster."
                        )));
                    }
                    nodes.insert(*node);
                    if self.nodes.is_subset(&nodes) {
                        return Err(CommandError::InvalidArgument(format!(
                            "Node {node} cannot be drained: no other node would be left to hold the data."
                        )));
                    }
                } else {
                    nodes.remove(node);
                }
                Ok(Change::Draining(nodes))
            }
            Command::ForgetConsumer { name, consumer } => {
                let Some(stream) = self.streams.get(name) else {
                    return Ok(Change::Nothing);
                };
                let mut stream = stream.clone();
                stream
                    .consumers
                    .retain(|c| !(&c.name == consumer && c.status == ConsumerStatus::Deleting));
                Ok(Change::Put(stream))
            }
        }
    }

    /// A stream whose shards may be moved: it exists with this creation time and is not
    /// being deleted.
    fn placed_stream(&self, name: &str, created_ms: u64) -> Result<Stream, CommandError> {
        match self.streams.get(name) {
            Some(stream) if stream.created_ms == created_ms => {
                if stream.status == StreamStatus::Deleting {
                    return Err(CommandError::InUse(format!(
                        "Stream {name} under account {} is being deleted.",
                        self.identity.account
                    )));
                }
                Ok(stream.clone())
            }
            _ => Err(self.not_found(name)),
        }
    }

    /// Whether `moving` may start on `shard`: it leaves a placed replica and/or joins a
    /// member that holds none and is not draining, and leaves at least one replica.
    fn check_move(&self, shard: &Shard, moving: Move) -> Result<(), CommandError> {
        let id = ShardId(shard.id);
        let invalid = |message: String| Err(CommandError::InvalidArgument(message));
        if moving.from.is_none() && moving.to.is_none() {
            return invalid(format!("A move of shard {id} needs a source or a target."));
        }
        if let Some(from) = moving.from
            && !shard.replicas.contains(&from)
        {
            return invalid(format!("Node {from} holds no replica of shard {id}."));
        }
        if let Some(to) = moving.to {
            if shard.replicas.contains(&to) {
                return invalid(format!("Node {to} already holds a replica of shard {id}."));
            }
            if !self.nodes.contains(&to) || self.draining.contains(&to) {
                return invalid(format!(
                    "Node {to} is not a member that can take a replica of shard {id}."
                ));
            }
        }
        if moving.to.is_none() && shard.replicas.len() <= 1 {
            return invalid(format!(
                "Shard {id} cannot lose its only replica on node {:?}.",
                moving.from
            ));
        }
        Ok(())
    }

    fn key_not_found(&self, access_key_id: &str) -> CommandError {
        CommandError::NotFound(format!("Access key {access_key_id} not found."))
    }

    pub fn consumer_not_found(&self, stream: &str, consumer: &str) -> CommandError {
        CommandError::NotFound(format!(
            "Consumer {consumer} under stream {stream} not found for account {}.",
            self.identity.account
        ))
    }

    fn open_shard_of<'a>(
        &self,
        stream: &'a Stream,
        shard: u32,
        verb: &str,
    ) -> Result<&'a Shard, CommandError> {
        let account = &self.identity.account;
        let found = stream.shard(ShardId(shard)).ok_or_else(|| {
            CommandError::NotFound(format!(
                "Could not find shard {} in stream {} under account {account}.",
                ShardId(shard),
                stream.name
            ))
        })?;
        if !found.is_open() {
            return Err(CommandError::NotFound(format!(
                "Shard {} in stream {} under account {account} has already been merged or split, and thus is not eligible for {verb}.",
                ShardId(shard),
                stream.name
            )));
        }
        Ok(found)
    }
}

fn child(
    id: u32,
    start: u128,
    end: u128,
    parent: Option<u32>,
    adjacent_parent: Option<u32>,
    now_ms: u64,
) -> Shard {
    Shard {
        id,
        start_hash: start,
        end_hash: end,
        parent,
        adjacent_parent,
        created_ms: now_ms,
        closed: None,
        replicas: Vec::new(),
        moving: None,
    }
}

/// The shard of a stream that has a placement (the rebalancer moves only those).
fn placed_shard(stream: &mut Stream, shard: u32) -> Result<&mut Shard, CommandError> {
    let name = stream.name.clone();
    match stream.shards.iter_mut().find(|s| s.id == shard) {
        Some(entry) if !entry.replicas.is_empty() => Ok(entry),
        _ => Err(CommandError::NotFound(format!(
            "Could not find a placed shard {} in stream {name}.",
            ShardId(shard)
        ))),
    }
}

fn close(stream: &mut Stream, shard: u32, ending: &EndingOffsets) {
    if let Some(s) = stream.shards.iter_mut().find(|s| s.id == shard) {
        s.closed = Some(ending.get(&shard).copied().flatten());
    }
}

/// UNIFORM_SCALING: reshapes the open shards into `target` equal ranges using only two-way
/// splits and merges, so every shard keeps at most a parent and an adjacent parent (as AWS,
/// intermediate shards are created closed and empty).
fn rescale(stream: &mut Stream, target: u32, ending: &EndingOffsets, now_ms: u64) {
    let mut open: Vec<Shard> = stream.open_shards().cloned().collect();
    open.sort_by_key(|s| s.start_hash);
    let targets = HashKeyRange::uniform(target);
    if open.len() == targets.len()
        && open
            .iter()
            .zip(&targets)
            .all(|(s, t)| s.start_hash == t.start && s.end_hash == t.end)
    {
        return;
    }
    let mut next = stream.next_shard_index();
    let boundaries: Vec<u128> = targets.iter().skip(1).map(|t| t.start).collect();
    // Split each open shard at every target boundary strictly inside it.
    let mut pieces: Vec<u32> = Vec::new();
    let mut created: Vec<Shard> = Vec::new();
    for shard in &open {
        let inside: Vec<u128> = boundaries
            .iter()
            .copied()
            .filter(|b| *b > shard.start_hash && *b <= shard.end_hash)
            .collect();
        if inside.is_empty() {
            pieces.push(shard.id);
            continue;
        }
        close(stream, shard.id, ending);
        let mut current = (shard.id, shard.start_hash, shard.end_hash);
        for (i, boundary) in inside.iter().enumerate() {
            let left = child(next, current.1, boundary - 1, Some(current.0), None, now_ms);
            let right = child(
                next + 1,
                *boundary,
                current.2,
                Some(current.0),
                None,
                now_ms,
            );
            next += 2;
            pieces.push(left.id);
            let right_id = right.id;
            created.push(left);
            created.push(right);
            if i + 1 < inside.len() {
                // The right half is split again: it is an intermediate, closed and empty.
                if let Some(last) = created.last_mut() {
                    last.closed = Some(None);
                }
            } else {
                pieces.push(right_id);
            }
            current = (right_id, *boundary, current.2);
        }
    }
    stream.shards.extend(created);
    // Merge the pieces that make up each target range, pairwise from the left.
    let range_of = |stream: &Stream, id: u32| {
        stream
            .shard(ShardId(id))
            .map(|s| (s.start_hash, s.end_hash))
            .unwrap_or((0, 0))
    };
    let mut cursor = 0;
    for target_range in &targets {
        let mut group = Vec::new();
        while cursor < pieces.len() && range_of(stream, pieces[cursor]).1 <= target_range.end {
            group.push(pieces[cursor]);
            cursor += 1;
        }
        let Some(&first) = group.first() else {
            continue;
        };
        let mut accumulated = first;
        for piece in group.iter().skip(1) {
            let (start, _) = range_of(stream, accumulated);
            let (_, end) = range_of(stream, *piece);
            close(stream, accumulated, ending);
            close(stream, *piece, ending);
            stream.shards.push(child(
                next,
                start,
                end,
                Some(accumulated),
                Some(*piece),
                now_ms,
            ));
            accumulated = next;
            next += 1;
        }
    }
    debug_assert_eq!(stream.open_shards().count(), targets.len());
}

#[cfg(test)]
pub(crate) mod tests;
