//! The broker of one node: control-plane calls become metadata commands, data-plane calls
//! go to the shard logs this node hosts. Both front ends (Kinesis HTTP and gRPC) call only
//! this type.

use crate::error::BrokerError;
use crate::iterator::ShardIterator;
use crate::metrics::{Metrics, ShardLevel, gauge_value};
use crate::record::StoredRecord;
use crate::replica::{Replica, ShardCommand, ShardResponse, WriteError, group_id};
use crate::shard::ShardLog;
use crate::throttle::{ShardLimits, ShardLimitsConfig, rate_exceeded_message};
use bytes::Bytes;
use parking_lot::RwLock;
use sluice_meta::{
    Change, Command, EndingOffsets, Identity, Member, Meta, MetaNode, MetaState, Stream,
    StreamMode, StreamStatus,
};
use sluice_replication::{Groups, PeerNode, Router};
use sluice_storage::{KeyProvider, LocalKeyring, LogConfig, StorageError};
use sluice_types::limits::{ITERATOR_TTL_MS, MAX_GET_RECORDS_BYTES};
use sluice_types::{SequenceNumber, ShardId, partition_key_hash};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Milliseconds since the Unix epoch. Replaceable so tests control time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// What the broker needs to run.
#[derive(Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub identity: Identity,
    /// fsync appends before acknowledging them. Only tests turn this off.
    pub fsync: bool,
    pub segment_bytes: u64,
    pub retention_check_interval: Duration,
    pub clock: Clock,
    /// Per-shard throughput limits of provisioned streams (AWS's values by default).
    pub shard_limits: ShardLimitsConfig,
    /// How often the scaler looks at on-demand streams and scaling policies.
    pub autoscale_interval: Duration,
    /// Master keys for encrypted streams (see [`open_local_keyring`]). The default holds
    /// no key, so every StartStreamEncryption answers KMSNotFoundException.
    pub keys: Arc<dyn KeyProvider>,
    /// This node in the cluster: its id, how peers reach it, whom to join.
    pub node: MetaNode,
    /// Outgoing peer connections are bound to this address (the node's listen IP).
    pub peer_local_ip: Option<std::net::IpAddr>,
    /// TLS for outgoing peer connections (the node's listeners speak TLS).
    pub peer_tls: Option<sluice_replication::PeerTls>,
    /// A node the metadata leader has not heard from for this long is dead: the rebalancer
    /// re-creates its replicas on other nodes.
    pub dead_node_grace: Duration,
    /// At most this many replica moves run at once across the cluster.
    pub max_concurrent_moves: usize,
}

impl BrokerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        BrokerConfig {
            data_dir: data_dir.into(),
            identity: Identity::default(),
            fsync: true,
            segment_bytes: 64 << 20,
            retention_check_interval: Duration::from_secs(60),
            clock: system_clock(),
            shard_limits: ShardLimitsConfig::default(),
            autoscale_interval: Duration::from_secs(30),
            keys: Arc::new(LocalKeyring::empty()),
            node: MetaNode {
                id: 1,
                node: PeerNode::default(),
                join: Vec::new(),
            },
            peer_local_ip: None,
            peer_tls: None,
            dead_node_grace: Duration::from_secs(300),
            max_concurrent_moves: 2,
        }
    }
}

/// One record of a PutRecord/PutRecords call, already validated.
#[derive(Debug, Clone)]
pub struct PutRecordInput {
    pub partition_key: String,
    /// The hash key the record routes by when known: its explicit hash key, or its
    /// partition key's MD5 already computed by the caller. `None`: the MD5 is computed.
    pub explicit_hash_key: Option<u128>,
    pub data: Bytes,
}

/// Which call a put is, for its CloudWatch-named series (PutRecord.* or PutRecords.*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PutCall {
    PutRecord,
    PutRecords,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecordOutput {
    pub shard: ShardId,
    pub sequence: SequenceNumber,
}

/// A record that was not written; the rest of the request may still have been.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecordFailure {
    pub code: &'static str,
    pub message: String,
}

/// Where a new shard iterator starts.
#[derive(Debug, Clone)]
pub enum IteratorStart {
    TrimHorizon,
    Latest,
    AtSequence(String),
    AfterSequence(String),
    AtTimestampMs(u64),
}

/// Where a shard lives: its replicas and the leader of its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlacement {
    pub stream: String,
    pub shard: ShardId,
    pub replicas: Vec<u64>,
    pub leader: Option<u64>,
    /// The shard group's Raft term as this node knows it (0 without a local replica).
    pub leader_epoch: u64,
    pub closed: bool,
    /// The move of one of its replicas in progress.
    pub moving: Option<sluice_meta::Move>,
}

/// A child shard reported at the end of a closed shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildShard {
    pub shard: ShardId,
    pub parents: Vec<ShardId>,
    pub start_hash: u128,
    pub end_hash: u128,
}

#[derive(Debug, Clone)]
pub struct GetRecordsOutput {
    pub shard: ShardId,
    pub records: Vec<StoredRecord>,
    pub next_iterator: Option<String>,
    pub millis_behind_latest: u64,
    pub child_shards: Option<Vec<ChildShard>>,
}

type ShardKey = (String, u64, u32);

struct Inner {
    config: BrokerConfig,
    meta: Meta,
    shards: RwLock<HashMap<ShardKey, Arc<ShardLog>>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    subscriptions: subscribe::Registry,
    /// The groups this node hosts, served to peers.
    groups: Groups,
    router: Router,
    /// The Raft group of each hosted shard (beside its log in `shards`).
    replicas: RwLock<HashMap<ShardKey, Arc<Replica>>>,
    /// Held while a shard log is being opened.
    opening: tokio::sync::Mutex<()>,
    /// When this node, as the metadata leader, first saw each stream still DELETING.
    deleting_since: parking_lot::Mutex<HashMap<(String, u64), tokio::time::Instant>>,
    /// Clients of other nodes' shard service, for shards held elsewhere.
    remote: remote::Peers,
    scaler: parking_lot::Mutex<autoscale::ScalerState>,
    metrics: Metrics,
    /// Parsed identity and resource policies, for `authorize`.
    policy_cache: access::PolicyCache,
}

/// The single entry point of both front ends.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Broker {
    /// Opens the metadata and every shard log (recovering torn tails), finishes control
    /// operations a crash interrupted, and starts the retention task.
    pub async fn open(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let router = Router::with_tls(config.peer_local_ip, config.peer_tls.clone());
        let remote = remote::Peers::new(config.peer_local_ip, config.peer_tls.clone());
        router.set_identity(config.node.id, &config.node.node.grpc);
        let groups = Groups::new(router.clone());
        let meta = Meta::open(
            &config.data_dir.join("meta"),
            config.identity.clone(),
            config.fsync,
            config.node.clone(),
            router.clone(),
            &groups,
        )
        .await?;
        let broker = Broker {
            inner: Arc::new(Inner {
                config,
                meta,
                shards: RwLock::new(HashMap::new()),
                cancel: CancellationToken::new(),
                tasks: TaskTracker::new(),
                subscriptions: subscribe::Registry::default(),
                groups,
                router,
                replicas: RwLock::new(HashMap::new()),
                opening: tokio::sync::Mutex::new(()),
                deleting_since: parking_lot::Mutex::new(HashMap::new()),
                remote,
                scaler: parking_lot::Mutex::new(autoscale::ScalerState::default()),
                metrics: Metrics::default(),
                policy_cache: access::PolicyCache::default(),
            }),
        };
        // Node liveness and the pacemaker of the shard groups, which run without timers.
        let pacing = broker.inner.groups.clone();
        let cancel = broker.inner.cancel.clone();
        broker.inner.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = pacing.run_background() => {}
            }
        });
        // Shard logs open before the node serves; control operations a crash interrupted
        // are finished once the metadata group has a leader.
        let streams: Vec<Stream> = broker
            .inner
            .meta
            .read(|s| s.streams.values().cloned().collect());
        for stream in &streams {
            broker.open_local_shards(stream).await?;
        }
        let background = broker.clone();
        broker.inner.tasks.spawn(async move {
            let cancel = background.inner.cancel.clone();
            tokio::select! {
                () = cancel.cancelled() => {}
                () = background.start_in_cluster() => {}
            }
        });
        broker.spawn_retention();
        broker.spawn_raft_gauges();
        broker.spawn_autoscaler();
        Ok(broker)
    }

    /// Stops background work and waits for it to finish.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let replicas: Vec<Arc<Replica>> = self.inner.replicas.read().values().cloned().collect();
        for replica in replicas {
            replica.shutdown(&self.inner.groups).await;
        }
        self.inner.meta.shutdown().await;
    }

    /// Joins the cluster (when asked to, in the background), waits until this node is a
    /// member with a metadata leader, finishes the control operations of every stream, then
    /// follows the metadata.
    async fn start_in_cluster(&self) {
        // Joining (learner, then voter) runs beside the rest: a node that is a member
        // already hosts replicas, even while its promotion to voter is still pending.
        let joining = self.clone();
        let cancel = self.inner.cancel.clone();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = joining.inner.meta.join() => {}
            }
        });
        let mut applied = self.inner.meta.watch_applied();
        while !self.inner.meta.ready() {
            tokio::select! {
                _ = applied.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let streams: Vec<Stream> = self
            .inner
            .meta
            .read(|s| s.streams.values().cloned().collect());
        for stream in streams {
            if let Err(error) = self.settle(&stream).await {
                tracing::error!(stream = %stream.name, %error, "could not finish a control operation");
            }
        }
        // From now on, follow the metadata: open the replicas placed here, drop those of
        // streams that are gone and those moved away; the rebalancer moves replicas.
        self.spawn_rebalancer();
        loop {
            if let Err(error) = self.reconcile().await {
                tracing::warn!(%error, "could not follow the metadata yet");
            }
            tokio::select! {
                _ = applied.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Opens the replicas the metadata places (or is moving) on this node and removes
    /// those of streams that were deleted and those placed elsewhere now.
    async fn reconcile(&self) -> Result<(), BrokerError> {
        let streams: Vec<Stream> = self
            .inner
            .meta
            .read(|s| s.streams.values().cloned().collect());
        for stream in &streams {
            self.open_local_shards(stream).await?;
        }
        self.drop_moved_replicas(&streams).await?;
        let live: std::collections::HashSet<(String, u64)> = streams
            .iter()
            .filter(|s| s.status != StreamStatus::Deleting)
            .map(|s| (s.name.clone(), s.created_ms))
            .collect();
        let gone: Vec<(String, u64)> = {
            let replicas = self.inner.replicas.read();
            let mut gone: Vec<(String, u64)> = replicas
                .keys()
                .filter(|(name, created, _)| !live.contains(&(name.clone(), *created)))
                .map(|(name, created, _)| (name.clone(), *created))
                .collect();
            gone.dedup();
            gone
        };
        for (name, created_ms) in gone {
            self.drop_local_stream(&name, created_ms).await?;
        }
        self.forget_stale_deletions(&streams).await
    }

    /// A DeleteStream is settled by the node that took it; if that fails (or the node went
    /// away), the stream would stay DELETING. The metadata leader forgets a stream that
    /// has been DELETING for a while (every node drops its replicas as soon as it is
    /// DELETING).
    async fn forget_stale_deletions(&self, streams: &[Stream]) -> Result<(), BrokerError> {
        const STALE_AFTER: Duration = Duration::from_secs(30);
        let stale: Vec<(String, u64)> = {
            let mut since = self.inner.deleting_since.lock();
            if self.inner.meta.leader() != Some(self.node_id()) {
                since.clear();
                return Ok(());
            }
            let deleting: std::collections::HashSet<(String, u64)> = streams
                .iter()
                .filter(|s| s.status == StreamStatus::Deleting)
                .map(|s| (s.name.clone(), s.created_ms))
                .collect();
            since.retain(|key, _| deleting.contains(key));
            let now = tokio::time::Instant::now();
            deleting
                .into_iter()
                .filter(|key| {
                    now.duration_since(*since.entry(key.clone()).or_insert(now)) >= STALE_AFTER
                })
                .collect()
        };
        for (name, created_ms) in stale {
            tracing::warn!(stream = %name, "forgetting a stream left DELETING");
            self.propose(Command::ForgetStream {
                name: name.clone(),
                created_ms,
            })
            .await?;
            self.inner.metrics.forget_stream(&name);
        }
        Ok(())
    }

    /// Stops the replicas of a deleted stream and removes its directory.
    async fn drop_local_stream(&self, name: &str, created_ms: u64) -> Result<(), BrokerError> {
        // The settling of a DeleteStream and the reconcile loop may both drop a stream:
        // one at a time, like opens.
        let _opening = self.inner.opening.lock().await;
        let removed: Vec<Arc<Replica>> = {
            let mut replicas = self.inner.replicas.write();
            let keys: Vec<ShardKey> = replicas
                .keys()
                .filter(|(n, c, _)| n == name && *c == created_ms)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| replicas.remove(k)).collect()
        };
        for replica in removed {
            replica.shutdown(&self.inner.groups).await;
        }
        self.inner
            .shards
            .write()
            .retain(|(n, c, _), _| !(n == name && *c == created_ms));
        let dir = self
            .inner
            .config
            .data_dir
            .join("streams")
            .join(format!("{name}.{created_ms}"));
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(BrokerError::Storage(sluice_storage::StorageError::from(
                error,
            ))),
        }
    }

    /// Opens the logs of a stream's shards (and closes those the metadata says are closed).
    async fn open_local_shards(&self, stream: &Stream) -> Result<(), BrokerError> {
        if stream.status == StreamStatus::Deleting {
            return Ok(());
        }
        for shard in &stream.shards {
            if !self.keeps_replica(shard) {
                continue;
            }
            self.open_shard_log(stream, shard.id).await?;
            if let Some(ending) = shard.closed {
                // A close survives restarts: the metadata says so. A replica that does not
                // hold the shard's last record yet (a new one catching up, or one that lost
                // its unsynced tail) applies the records and then the group's close entry,
                // which closes it.
                let log = self.hosted_shard_log(stream, shard.id)?;
                if ending.is_none_or(|last| log.commit_point() > last) {
                    tokio::task::spawn_blocking(move || log.close_blocking()).await??;
                }
            }
        }
        Ok(())
    }

    /// The node-to-node gRPC service (Raft groups hosted here), for the node's gRPC server.
    pub fn peer_service(&self) -> sluice_proto::peer::peer_server::PeerServer<Groups> {
        self.inner.groups.service()
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> u64 {
        self.inner.meta.node_id()
    }

    /// Whether this node is a cluster member and the metadata group has a leader.
    pub fn ready(&self) -> bool {
        self.inner.meta.ready()
    }

    /// Every shard's placement and the leader of its group, as this node knows it.
    pub fn shard_placement(&self) -> Vec<ShardPlacement> {
        let replicas = self.inner.replicas.read();
        self.inner.meta.read(|state| {
            state
                .streams
                .values()
                .flat_map(|stream| {
                    let replicas = &replicas;
                    stream.shards.iter().map(move |shard| {
                        let replica =
                            replicas.get(&(stream.name.clone(), stream.created_ms, shard.id));
                        ShardPlacement {
                            stream: stream.name.clone(),
                            shard: ShardId(shard.id),
                            replicas: shard.replicas.clone(),
                            leader: replica.and_then(|r| r.leader()),
                            leader_epoch: replica.map_or(0, |r| r.term()),
                            closed: shard.closed.is_some(),
                            moving: shard.moving,
                        }
                    })
                })
                .collect()
        })
    }

    /// The metadata group's members, and its leader.
    pub fn cluster_members(&self) -> (Vec<Member>, Option<u64>) {
        (self.inner.meta.members(), self.inner.meta.leader())
    }

    /// The broker's counters, to register with a metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.config.identity
    }

    pub fn now_ms(&self) -> u64 {
        (self.inner.config.clock)()
    }

    pub fn stream_arn(&self, name: &str) -> String {
        let identity = &self.inner.config.identity;
        format!(
            "arn:aws:kinesis:{}:{}:stream/{name}",
            identity.region, identity.account
        )
    }

    /// Reads the metadata state.
    pub fn with_state<R>(&self, f: impl FnOnce(&MetaState) -> R) -> R {
        self.inner.meta.read(f)
    }

    pub fn stream(&self, name: &str) -> Result<Stream, BrokerError> {
        self.inner
            .meta
            .read(|state| state.streams.get(name).cloned())
            .ok_or_else(|| self.stream_not_found(name))
    }

    fn stream_not_found(&self, name: &str) -> BrokerError {
        BrokerError::NotFound(format!(
            "Stream {name} under account {} not found.",
            self.inner.config.identity.account
        ))
    }

    async fn propose(&self, command: Command) -> Result<(), BrokerError> {
        self.inner.meta.propose(&command).await?;
        Ok(())
    }

    // ----- control plane -------------------------------------------------------------

    pub async fn create_stream(
        &self,
        name: &str,
        shard_count: u32,
        mode: StreamMode,
        tags: BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        self.propose(Command::CreateStream {
            name: name.to_owned(),
            shard_count,
            mode,
            tags,
            now_ms: self.now_ms(),
        })
        .await?;
        self.settle_in_background(name);
        Ok(())
    }

    pub async fn delete_stream(
        &self,
        name: &str,
        enforce_consumer_deletion: bool,
    ) -> Result<(), BrokerError> {
        self.propose(Command::DeleteStream {
            name: name.to_owned(),
            enforce_consumer_deletion,
        })
        .await?;
        self.settle_in_background(name);
        Ok(())
    }

    pub async fn set_retention(
        &self,
        name: &str,
        hours: u32,
        increase: bool,
    ) -> Result<(), BrokerError> {
        self.propose(Command::SetRetention {
            name: name.to_owned(),
            hours,
            increase,
        })
        .await
    }

    pub async fn add_tags(
        &self,
        name: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        self.propose(Command::AddTags {
            name: name.to_owned(),
            tags,
        })
        .await
    }

    pub async fn remove_tags(&self, name: &str, keys: Vec<String>) -> Result<(), BrokerError> {
        self.propose(Command::RemoveTags {
            name: name.to_owned(),
            keys,
        })
        .await
    }

    /// Returns (metrics before, metrics after).
    pub async fn set_enhanced_metrics(
        &self,
        name: &str,
        metrics: Vec<String>,
        enable: bool,
    ) -> Result<(Vec<String>, Vec<String>), BrokerError> {
        let before = self.stream(name)?.enhanced_metrics;
        self.propose(Command::SetEnhancedMetrics {
            name: name.to_owned(),
            metrics,
            enable,
        })
        .await?;
        let after = self.stream(name)?.enhanced_metrics;
        self.inner
            .metrics
            .retain_shard_metrics(name, ShardLevel::of(&after));
        Ok((before, after))
    }

    pub async fn update_stream_mode(
        &self,
        name: &str,
        mode: StreamMode,
    ) -> Result<(), BrokerError> {
        self.propose(Command::UpdateStreamMode {
            name: name.to_owned(),
            mode,
            now_ms: self.now_ms(),
        })
        .await?;
        Ok(())
    }

    pub async fn register_consumer(&self, name: &str, consumer: &str) -> Result<(), BrokerError> {
        self.propose(Command::RegisterConsumer {
            name: name.to_owned(),
            consumer: consumer.to_owned(),
            now_ms: self.now_ms(),
        })
        .await?;
        self.settle_in_background(name);
        Ok(())
    }

    pub async fn deregister_consumer(&self, name: &str, consumer: &str) -> Result<(), BrokerError> {
        self.propose(Command::DeregisterConsumer {
            name: name.to_owned(),
            consumer: consumer.to_owned(),
        })
        .await?;
        self.settle_in_background(name);
        Ok(())
    }

    pub async fn split_shard(
        &self,
        name: &str,
        shard: ShardId,
        new_starting_hash_key: &str,
    ) -> Result<(), BrokerError> {
        let stream = self.stream(name)?;
        let command = |ending| Command::SplitShard {
            name: name.to_owned(),
            shard: shard.0,
            new_starting_hash_key: new_starting_hash_key.to_owned(),
            ending,
            now_ms: self.now_ms(),
        };
        // Check before closing anything, so a rejected split leaves the shard writable.
        self.inner
            .meta
            .read(|state| state.plan(&command(EndingOffsets::new())))?;
        self.reshard(&stream, &[shard.0], command).await
    }

    pub async fn merge_shards(
        &self,
        name: &str,
        shard: ShardId,
        adjacent: ShardId,
    ) -> Result<(), BrokerError> {
        let stream = self.stream(name)?;
        let command = |ending| Command::MergeShards {
            name: name.to_owned(),
            shard: shard.0,
            adjacent: adjacent.0,
            ending,
            now_ms: self.now_ms(),
        };
        self.inner
            .meta
            .read(|state| state.plan(&command(EndingOffsets::new())))?;
        self.reshard(&stream, &[shard.0, adjacent.0], command).await
    }

    pub async fn update_shard_count(&self, name: &str, target: u32) -> Result<(), BrokerError> {
        let stream = self.stream(name)?;
        let command = |ending| Command::UpdateShardCount {
            name: name.to_owned(),
            target,
            ending,
            now_ms: self.now_ms(),
        };
        let planned = self
            .inner
            .meta
            .read(|state| state.plan(&command(EndingOffsets::new())))?;
        // Only the shards the new layout replaces are closed: an open shard whose range
        // is already one of the target ranges stays open (and writable).
        let closing: Vec<u32> = match &planned {
            Change::Put(after) => stream
                .open_shards()
                .filter(|s| {
                    after
                        .shard(ShardId(s.id))
                        .is_some_and(|planned| planned.closed.is_some())
                })
                .map(|s| s.id)
                .collect(),
            _ => stream.open_shards().map(|s| s.id).collect(),
        };
        self.reshard(&stream, &closing, command).await
    }

    /// Closes the given shards' logs, records their last offsets in the command, and
    /// commits it; if the command is rejected after all, the shards are reopened.
    async fn reshard(
        &self,
        stream: &Stream,
        closing: &[u32],
        command: impl Fn(EndingOffsets) -> Command,
    ) -> Result<(), BrokerError> {
        let mut ending = EndingOffsets::new();
        let mut closed = Vec::new();
        for shard in closing {
            let last = match self
                .write_shard_group(stream, *shard, ShardCommand::Close)
                .await
                .map_err(write_error)?
            {
                ShardResponse::ClosedAt { last } => last,
                other => {
                    return Err(BrokerError::Replication(format!(
                        "closing a shard answered {other:?}"
                    )));
                }
            };
            ending.insert(*shard, last);
            closed.push(*shard);
        }
        if let Err(error) = self.propose(command(ending)).await {
            for shard in closed {
                if let Err(reopen) = self
                    .write_shard_group(stream, shard, ShardCommand::Reopen)
                    .await
                {
                    tracing::warn!(error = ?reopen, "could not reopen a shard");
                }
            }
            return Err(error);
        }
        self.settle_in_background(&stream.name);
        Ok(())
    }

    /// Brings one stream's on-disk state in line with its metadata: opens shard logs,
    /// activates CREATING/UPDATING streams and consumers, and removes DELETING ones.
    async fn settle(&self, stream: &Stream) -> Result<(), BrokerError> {
        match stream.status {
            StreamStatus::Deleting => {
                self.drop_local_stream(&stream.name, stream.created_ms)
                    .await?;
                self.propose(Command::ForgetStream {
                    name: stream.name.clone(),
                    created_ms: stream.created_ms,
                })
                .await?;
                self.inner.metrics.forget_stream(&stream.name);
                Ok(())
            }
            StreamStatus::Creating | StreamStatus::Updating | StreamStatus::Active => {
                self.open_local_shards(stream).await?;
                let pending_consumers = stream
                    .consumers
                    .iter()
                    .any(|c| c.status != sluice_meta::ConsumerStatus::Active);
                if stream.status != StreamStatus::Active || pending_consumers {
                    self.propose(Command::ActivateStream {
                        name: stream.name.clone(),
                        created_ms: stream.created_ms,
                    })
                    .await?;
                    for consumer in &stream.consumers {
                        if consumer.status == sluice_meta::ConsumerStatus::Deleting {
                            self.propose(Command::ForgetConsumer {
                                name: stream.name.clone(),
                                consumer: consumer.name.clone(),
                            })
                            .await?;
                        }
                    }
                }
                self.refresh_disk_usage(stream).await
            }
        }
    }

    fn settle_in_background(&self, name: &str) {
        let broker = self.clone();
        let name = name.to_owned();
        self.inner.tasks.spawn(async move {
            let Ok(stream) = broker.stream(&name) else {
                return;
            };
            if let Err(error) = broker.settle(&stream).await {
                tracing::error!(stream = %name, error = %error, "could not finish a control operation");
            }
        });
    }

    fn stream_dir(&self, stream: &Stream) -> PathBuf {
        self.inner
            .config
            .data_dir
            .join("streams")
            .join(format!("{}.{}", stream.name, stream.created_ms))
    }

    /// The shard's log, opened (and recovered) on first use: children of a split are
    /// writable as soon as the split is committed.
    async fn open_shard_log(
        &self,
        stream: &Stream,
        shard: u32,
    ) -> Result<Arc<ShardLog>, BrokerError> {
        let key = (stream.name.clone(), stream.created_ms, shard);
        if let Some(log) = self.inner.shards.read().get(&key) {
            return Ok(Arc::clone(log));
        }
        // Two instances on one directory would corrupt it: opens are serialized and the
        // map is checked again under the lock.
        let _opening = self.inner.opening.lock().await;
        if let Some(log) = self.inner.shards.read().get(&key) {
            return Ok(Arc::clone(log));
        }
        let dir = self.stream_dir(stream).join(format!("{shard:012}"));
        let config = LogConfig {
            segment_bytes: self.inner.config.segment_bytes,
            fsync: self.inner.config.fsync,
            ..LogConfig::default()
        };
        let tasks = self.inner.tasks.clone();
        let cancel = self.inner.cancel.clone();
        let runtime = tokio::runtime::Handle::current();
        let span =
            tracing::info_span!("shard.writer", stream = %stream.name, shard = %ShardId(shard));
        let limits = ShardLimits::new(&self.inner.config.shard_limits, self.now_ms());
        let keys = Arc::clone(&self.inner.config.keys);
        let fsync_duration = self.inner.metrics.fsync_duration.clone();
        let log_dir = dir.clone();
        let group_dir = dir.with_extension("group");
        let opened = tokio::task::spawn_blocking(move || {
            let open = || {
                ShardLog::open(
                    &log_dir,
                    config.clone(),
                    Arc::clone(&keys),
                    &tasks,
                    cancel.clone(),
                    &runtime,
                    span.clone(),
                    limits.clone(),
                    fsync_duration.clone(),
                )
            };
            match open() {
                // Media damage in the record log: the shard's Raft log holds every
                // entry (it is never purged), so the records are rebuilt from it — the
                // log is set aside and the group applies its entries again from the start.
                Err(BrokerError::Storage(StorageError::Corrupt {
                    segment,
                    offset,
                    reason,
                })) => {
                    tracing::error!(segment = %segment.display(), offset, reason, "a shard's record log is damaged: rebuilding it from the shard's Raft log");
                    std::fs::remove_dir_all(&log_dir)
                        .map_err(|e| BrokerError::Storage(e.into()))?;
                    match std::fs::remove_file(group_dir.join("applied.json")) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(BrokerError::Storage(e.into())),
                    }
                    open()
                }
                other => other,
            }
        })
        .await??;
        let (replicas, initializer) = self.replica_nodes(stream, shard);
        let replica = Replica::open(
            &dir.with_extension("group"),
            group_id(&stream.name, stream.created_ms, shard),
            Arc::clone(&opened),
            self.node_id(),
            &replicas,
            initializer,
            LogConfig {
                segment_bytes: self.inner.config.segment_bytes,
                fsync: self.inner.config.fsync,
                ..LogConfig::default()
            },
            Arc::clone(&self.inner.config.keys),
            self.inner.router.clone(),
            &self.inner.groups,
        )
        .await?;
        self.inner
            .replicas
            .write()
            .insert(key.clone(), Arc::new(replica));
        self.inner.shards.write().insert(key, Arc::clone(&opened));
        Ok(opened)
    }

    /// Whether this node holds a replica of `shard` (a shard placed nowhere, as before
    /// placement existed, is held by every node that has it).
    fn hosts(&self, shard: &sluice_meta::Shard) -> bool {
        shard.replicas.is_empty() || shard.replicas.contains(&self.node_id())
    }

    /// The shard's replica nodes with their addresses (this node alone for a shard
    /// placed nowhere; with the target of a move in progress), and its preferred leader.
    fn replica_nodes(&self, stream: &Stream, shard: u32) -> (BTreeMap<u64, PeerNode>, u64) {
        let placed: Vec<u64> = stream
            .shards
            .iter()
            .find(|s| s.id == shard)
            .map(|s| {
                let mut nodes = s.replicas.clone();
                nodes.extend(s.moving.and_then(|m| m.to).filter(|to| !nodes.contains(to)));
                nodes
            })
            .unwrap_or_default();
        let members = self.inner.meta.members();
        let ids = if placed.is_empty() {
            vec![self.node_id()]
        } else {
            placed
        };
        let preferred = ids[0];
        let nodes = ids
            .into_iter()
            .filter_map(|id| {
                members
                    .iter()
                    .find(|m| m.id == id)
                    .map(|m| (id, m.node.clone()))
            })
            .collect();
        (nodes, preferred)
    }

    /// The log and the Raft group of a shard hosted here (opened on first use).
    async fn replica(
        &self,
        stream: &Stream,
        shard: u32,
    ) -> Result<(Arc<ShardLog>, Arc<Replica>), BrokerError> {
        let log = self.open_shard_log(stream, shard).await?;
        let replica = self
            .inner
            .replicas
            .read()
            .get(&(stream.name.clone(), stream.created_ms, shard))
            .cloned()
            .ok_or_else(|| self.stream_not_found(&stream.name))?;
        Ok((log, replica))
    }

    /// A shard log this node has already opened.
    fn hosted_shard_log(&self, stream: &Stream, shard: u32) -> Result<Arc<ShardLog>, BrokerError> {
        self.inner
            .shards
            .read()
            .get(&(stream.name.clone(), stream.created_ms, shard))
            .cloned()
            .ok_or_else(|| self.stream_not_found(&stream.name))
    }

    /// Runs `pass` every `interval` until shutdown; a failed pass is logged and retried at
    /// the next tick.
    fn spawn_periodic<F, Fut, T>(&self, interval: Duration, what: &'static str, pass: F)
    where
        F: Fn(Broker) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, BrokerError>> + Send,
    {
        let broker = self.clone();
        self.inner.tasks.spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = broker.inner.cancel.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                if let Err(error) = pass(broker.clone()).await {
                    tracing::warn!(error = %error, pass = what, "background pass failed");
                }
            }
        });
    }

    /// Refreshes the Raft gauges from the groups hosted here.
    pub fn refresh_raft_gauges(&self) {
        let gauges = &self.inner.metrics.raft;
        gauges
            .metadata_leader_known
            .set(i64::from(self.inner.meta.leader().is_some()));
        gauges.metadata_term.set(self.inner.meta.term() as i64);
        let (moving, draining) = self.inner.meta.read(|state| {
            let moving = state
                .streams
                .values()
                .flat_map(|stream| &stream.shards)
                .filter(|shard| shard.moving.is_some())
                .count();
            (moving, state.draining.len())
        });
        gauges.moves_in_progress.set(moving as i64);
        gauges.nodes_draining.set(draining as i64);
        let replicas: Vec<Arc<Replica>> = self.inner.replicas.read().values().cloned().collect();
        let (mut leaders, mut leaderless, mut under, mut max_lag) = (0, 0, 0, 0);
        for replica in &replicas {
            let (leads, known, under_replicated, lag) = replica.health();
            leaders += i64::from(leads);
            leaderless += i64::from(!known);
            under += i64::from(under_replicated);
            max_lag = max_lag.max(lag);
        }
        gauges.shard_replicas.set(replicas.len() as i64);
        gauges.shard_leaders.set(leaders);
        gauges.shards_leaderless.set(leaderless);
        gauges.shards_under_replicated.set(under);
        gauges.replication_max_lag.set(max_lag as i64);
        self.refresh_group_gauges();
    }

    fn spawn_raft_gauges(&self) {
        self.spawn_periodic(Duration::from_secs(5), "raft gauges", |broker| async move {
            broker.refresh_raft_gauges();
            Ok::<(), BrokerError>(())
        });
    }

    fn spawn_retention(&self) {
        self.spawn_periodic(
            self.inner.config.retention_check_interval,
            "retention",
            |broker| async move { broker.enforce_retention().await },
        );
    }

    /// Deletes whole segments older than each stream's retention period.
    pub async fn enforce_retention(&self) -> Result<u64, BrokerError> {
        let now = self.now_ms();
        let streams: Vec<Stream> = self
            .inner
            .meta
            .read(|s| s.streams.values().cloned().collect());
        let mut dropped = 0;
        for stream in streams {
            let cutoff = now.saturating_sub(u64::from(stream.retention_hours) * 3_600_000);
            for shard in &stream.shards {
                let Ok(log) = self.hosted_shard_log(&stream, shard.id) else {
                    continue;
                };
                dropped +=
                    tokio::task::spawn_blocking(move || log.delete_older_than(cutoff)).await??;
                // The Raft log drops what the record log no longer holds.
                let replica = self
                    .inner
                    .replicas
                    .read()
                    .get(&(stream.name.clone(), stream.created_ms, shard.id))
                    .cloned();
                if let Some(replica) = replica
                    && let Err(error) = replica.compact().await
                {
                    tracing::warn!(stream = %stream.name, shard = shard.id, %error, "could not compact a shard's raft log");
                }
            }
            self.refresh_disk_usage(&stream).await?;
        }
        Ok(dropped)
    }

    /// Sets the stream's segment count and bytes on disk (over the shard logs this node
    /// hosts).
    async fn refresh_disk_usage(&self, stream: &Stream) -> Result<(), BrokerError> {
        if stream.status == StreamStatus::Deleting {
            return Ok(());
        }
        let logs: Vec<Arc<ShardLog>> = stream
            .shards
            .iter()
            .filter_map(|shard| self.hosted_shard_log(stream, shard.id).ok())
            .collect();
        let (segments, bytes) = tokio::task::spawn_blocking(move || {
            logs.iter()
                .map(|log| log.disk_usage())
                .fold((0u64, 0u64), |(s, b), (segments, bytes)| {
                    (s + segments, b + bytes)
                })
        })
        .await?;
        let metrics = self.inner.metrics.for_stream(&stream.name);
        metrics.segments.set(gauge_value(segments));
        metrics.disk_bytes.set(gauge_value(bytes));
        Ok(())
    }

    // ----- data plane ----------------------------------------------------------------

    /// A stream that accepts reads and writes (ACTIVE or UPDATING).
    fn writable_stream(&self, name: &str) -> Result<Stream, BrokerError> {
        let stream = self.stream(name)?;
        match stream.status {
            StreamStatus::Active | StreamStatus::Updating => Ok(stream),
            _ => Err(self.stream_not_found(name)),
        }
    }

    /// PutRecord: appends one record.
    pub async fn put_record(
        &self,
        name: &str,
        record: PutRecordInput,
    ) -> Result<Result<PutRecordOutput, PutRecordFailure>, BrokerError> {
        let mut results = self
            .put_records_as(PutCall::PutRecord, name, vec![record], false)
            .await?;
        Ok(results.pop().unwrap_or_else(|| {
            Err(PutRecordFailure {
                code: "InternalFailure",
                message: "Internal service failure.".to_owned(),
            })
        }))
    }

    /// Appends records, grouped per shard into one batch each, and answers in request
    /// order. Records of one shard keep their request order.
    pub async fn put_records(
        &self,
        name: &str,
        records: Vec<PutRecordInput>,
    ) -> Result<Vec<Result<PutRecordOutput, PutRecordFailure>>, BrokerError> {
        self.put_records_as(PutCall::PutRecords, name, records, false)
            .await
    }

    /// PutRecords where each shard's admitted records are a prefix of its records in the
    /// request: once one is refused (throttled), the later ones of that shard are refused
    /// too, so retrying the refused records in order keeps every partition key in order.
    pub async fn put_records_in_order(
        &self,
        name: &str,
        records: Vec<PutRecordInput>,
    ) -> Result<Vec<Result<PutRecordOutput, PutRecordFailure>>, BrokerError> {
        self.put_records_as(PutCall::PutRecords, name, records, true)
            .await
    }

    async fn put_records_as(
        &self,
        call: PutCall,
        name: &str,
        records: Vec<PutRecordInput>,
        in_order: bool,
    ) -> Result<Vec<Result<PutRecordOutput, PutRecordFailure>>, BrokerError> {
        let started = std::time::Instant::now();
        // Resolved once the stream is known to exist, so unknown names get no series.
        let mut stream_metrics = None;
        let mut results: Vec<Option<Result<PutRecordOutput, PutRecordFailure>>> =
            vec![None; records.len()];
        let mut pending: Vec<(usize, PutRecordInput)> = records.into_iter().enumerate().collect();
        // A split or merge may close a shard between routing and appending: route again.
        for _attempt in 0..4 {
            if pending.is_empty() {
                break;
            }
            let stream = self.writable_stream(name)?;
            let metrics = Arc::clone(
                stream_metrics.get_or_insert_with(|| self.inner.metrics.for_stream(name)),
            );
            let enhanced = ShardLevel::of(&stream.enhanced_metrics);
            // Records are encrypted under the key the stream has when they are routed.
            let key = self.stream_key(&stream)?;
            let mut open: Vec<&sluice_meta::Shard> = stream.open_shards().collect();
            open.sort_by_key(|s| s.start_hash);
            let mut batches: BTreeMap<u32, Vec<(usize, PutRecordInput)>> = BTreeMap::new();
            for (position, record) in pending.drain(..) {
                let hash = record
                    .explicit_hash_key
                    .unwrap_or_else(|| partition_key_hash(&record.partition_key));
                let index = open.partition_point(|s| s.end_hash < hash);
                let Some(shard) = open.get(index) else {
                    results[position] = Some(Err(PutRecordFailure {
                        code: "InternalFailure",
                        message: "Internal service failure.".to_owned(),
                    }));
                    continue;
                };
                batches
                    .entry(shard.id)
                    .or_default()
                    .push((position, record));
            }
            let now = self.now_ms();
            // Shared by the shard tasks rather than copied into each.
            let stream = Arc::new(stream);
            let mut appends = tokio::task::JoinSet::new();
            for (shard, batch) in batches {
                let broker = self.clone();
                let stream = Arc::clone(&stream);
                let key = key.clone();
                appends.spawn(async move {
                    let data: Vec<(String, Bytes)> = batch
                        .iter()
                        .map(|(_, r)| (r.partition_key.clone(), r.data.clone()))
                        .collect();
                    let written = broker
                        .append_shard(&stream, shard, data, now, key, in_order)
                        .await;
                    (shard, batch, written)
                });
            }
            while let Some(joined) = appends.join_next().await {
                let (shard, batch, written) = joined?;
                let written = written?;
                let (batch, throttled): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .zip(written.admitted)
                    .partition(|(_, admitted)| *admitted);
                if !throttled.is_empty() {
                    metrics
                        .write_throughput_exceeded
                        .inc_by(throttled.len() as u64);
                    if let Some(counter) = metrics.shard(shard, enhanced).write_throughput_exceeded
                    {
                        counter.inc_by(throttled.len() as u64);
                    }
                }
                for ((position, _), _) in throttled {
                    results[position] = Some(Err(PutRecordFailure {
                        code: "ProvisionedThroughputExceededException",
                        message: rate_exceeded_message(
                            &ShardId(shard).to_string(),
                            name,
                            &self.inner.config.identity.account,
                        ),
                    }));
                }
                let batch: Vec<(usize, PutRecordInput)> =
                    batch.into_iter().map(|(entry, _)| entry).collect();
                let Some(outcome) = written.outcome else {
                    continue;
                };
                match outcome {
                    Ok(appended) => {
                        let bytes = batch
                            .iter()
                            .map(|(_, r)| (r.partition_key.len() + r.data.len()) as u64)
                            .sum();
                        let count = batch.len() as u64;
                        metrics.incoming_records.inc_by(count);
                        metrics.incoming_bytes.inc_by(bytes);
                        let per_shard = metrics.shard(shard, enhanced);
                        if let Some(counter) = per_shard.incoming_records {
                            counter.inc_by(count);
                        }
                        if let Some(counter) = per_shard.incoming_bytes {
                            counter.inc_by(bytes);
                        }
                        for (i, (position, _)) in batch.into_iter().enumerate() {
                            results[position] = Some(Ok(PutRecordOutput {
                                shard: ShardId(shard),
                                sequence: SequenceNumber::of_record(
                                    ShardId(shard),
                                    appended.first_offset + i as u64,
                                ),
                            }));
                        }
                    }
                    Err(WriteError::Closed) => pending.extend(batch),
                    Err(error) => {
                        tracing::error!(stream = %name, shard, %error, "append failed");
                        for (position, _) in batch {
                            results[position] = Some(Err(PutRecordFailure {
                                code: "InternalFailure",
                                message: "Internal service failure.".to_owned(),
                            }));
                        }
                    }
                }
            }
            pending.sort_by_key(|(position, _)| *position);
        }
        let results: Vec<Result<PutRecordOutput, PutRecordFailure>> = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(PutRecordFailure {
                        code: "InternalFailure",
                        message: "Internal service failure.".to_owned(),
                    })
                })
            })
            .collect();
        let Some(metrics) = stream_metrics else {
            return Ok(results);
        };
        let written = results.iter().filter(|r| r.is_ok()).count();
        match call {
            PutCall::PutRecord => {
                if written > 0 {
                    metrics.put_record_success.inc();
                }
                metrics
                    .put_record_latency
                    .observe(started.elapsed().as_secs_f64());
            }
            PutCall::PutRecords => {
                if written > 0 {
                    metrics.put_records_success.inc();
                }
                let throttled = results
                    .iter()
                    .filter(|r| {
                        r.as_ref().is_err_and(|failure| {
                            failure.code == "ProvisionedThroughputExceededException"
                        })
                    })
                    .count();
                let failed = results.len() - written - throttled;
                metrics
                    .put_records_throttled_records
                    .inc_by(throttled as u64);
                metrics.put_records_failed_records.inc_by(failed as u64);
                metrics
                    .put_records_latency
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        Ok(results)
    }

    fn shard_not_found(&self, name: &str, shard: &str) -> BrokerError {
        BrokerError::NotFound(format!(
            "Shard {shard} in stream {name} under account {} does not exist",
            self.inner.config.identity.account
        ))
    }

    pub async fn get_shard_iterator(
        &self,
        name: &str,
        shard_text: &str,
        start: IteratorStart,
    ) -> Result<String, BrokerError> {
        let stream = self.writable_stream(name)?;
        let shard = ShardId::parse(shard_text)
            .ok()
            .filter(|id| stream.shard(*id).is_some())
            .ok_or_else(|| self.shard_not_found(name, shard_text))?;
        let offset = self.start_offset(&stream, shard, start).await?;
        Ok(ShardIterator {
            issued_ms: self.now_ms(),
            stream_created_ms: stream.created_ms,
            shard: shard.0,
            offset,
            stream: name.to_owned(),
        }
        .encode())
    }

    /// The log offset a new iterator or subscription starts at.
    async fn start_offset(
        &self,
        stream: &Stream,
        shard: ShardId,
        start: IteratorStart,
    ) -> Result<u64, BrokerError> {
        let name = &stream.name;
        let account = &self.inner.config.identity.account;
        let parse_sequence = |text: &str| -> Result<SequenceNumber, BrokerError> {
            let sequence = SequenceNumber::parse(text).map_err(|_| {
                BrokerError::InvalidArgument(format!(
                    "StartingSequenceNumber {text} used in GetShardIterator on shard {shard} in stream {name} under account {account} is invalid."
                ))
            })?;
            if sequence.shard != shard {
                return Err(BrokerError::InvalidArgument(format!(
                    "Invalid StartingSequenceNumber. It encodes {}, while it was used in a call to a shard with {shard}",
                    sequence.shard
                )));
            }
            Ok(sequence)
        };
        Ok(match start {
            IteratorStart::TrimHorizon => {
                self.describe_shard(stream, shard.0, None)
                    .await?
                    .0
                    .first_offset
            }
            IteratorStart::Latest => {
                self.describe_shard(stream, shard.0, None)
                    .await?
                    .0
                    .commit_point
            }
            IteratorStart::AtSequence(text) => parse_sequence(&text)?.record_offset().unwrap_or(0),
            IteratorStart::AfterSequence(text) => parse_sequence(&text)?.next_offset(),
            IteratorStart::AtTimestampMs(ms) => {
                let (stats, at) = self.describe_shard(stream, shard.0, Some(ms)).await?;
                at.unwrap_or(stats.commit_point)
            }
        })
    }

    pub async fn get_records(
        &self,
        iterator: &str,
        limit: usize,
    ) -> Result<GetRecordsOutput, BrokerError> {
        let started = std::time::Instant::now();
        let position = ShardIterator::decode(iterator)
            .ok_or_else(|| BrokerError::InvalidArgument("Invalid ShardIterator.".to_owned()))?;
        let now = self.now_ms();
        if now.saturating_sub(position.issued_ms) > ITERATOR_TTL_MS {
            return Err(BrokerError::ExpiredIterator(format!(
                "Iterator expired. The iterator was created at time {} while right now it is {} which is further in the future than the tolerated delay of {ITERATOR_TTL_MS} milliseconds.",
                format_time(position.issued_ms),
                format_time(now)
            )));
        }
        let stream = self.writable_stream(&position.stream)?;
        let shard_id = ShardId(position.shard);
        if stream.created_ms != position.stream_created_ms {
            return Err(self.shard_not_found(&position.stream, &shard_id.to_string()));
        }
        let shard = stream
            .shard(shard_id)
            .ok_or_else(|| self.shard_not_found(&position.stream, &shard_id.to_string()))?;
        let metrics = self.inner.metrics.for_stream(&position.stream);
        let per_shard = metrics.shard(shard_id.0, ShardLevel::of(&stream.enhanced_metrics));
        let limited = stream.mode == StreamMode::Provisioned;
        let read = self
            .read_shard(
                &stream,
                shard_id.0,
                position.offset,
                limit,
                MAX_GET_RECORDS_BYTES,
                now,
                limited,
                Duration::ZERO,
            )
            .await;
        let (records, stats) = match read {
            Err(BrokerError::ThroughputExceeded(message)) => {
                metrics.read_throughput_exceeded.inc();
                if let Some(counter) = &per_shard.read_throughput_exceeded {
                    counter.inc();
                }
                return Err(BrokerError::ThroughputExceeded(message));
            }
            other => other?,
        };
        let read_bytes: usize = records
            .iter()
            .map(|r| r.data.len() + r.partition_key.len())
            .sum();
        metrics.get_records_records.inc_by(records.len() as u64);
        metrics.get_records_bytes.inc_by(read_bytes as u64);
        if let Some(counter) = &per_shard.outgoing_records {
            counter.inc_by(records.len() as u64);
        }
        if let Some(counter) = &per_shard.outgoing_bytes {
            counter.inc_by(read_bytes as u64);
        }
        let next_offset = records
            .last()
            .map_or(position.offset.max(stats.first_offset), |r| r.offset + 1);
        let millis_behind_latest = if next_offset >= stats.commit_point {
            0
        } else {
            stats
                .newest_timestamp_ms
                .saturating_sub(records.last().map_or(now, |r| r.arrival_ms))
        };
        let finished = match shard.closed {
            Some(Some(ending)) => next_offset > ending,
            Some(None) => true,
            None => false,
        };
        let (next_iterator, child_shards) = if finished {
            (None, Some(child_shards(&stream, shard_id)))
        } else {
            let next = ShardIterator {
                issued_ms: now,
                offset: next_offset,
                ..position
            };
            (Some(next.encode()), None)
        };
        // GetRecords.IteratorAgeMilliseconds, as AWS defines it: the age of the call's last
        // record; a call that returns nothing is as far behind as MillisBehindLatest (0 at
        // the tip).
        let iterator_age = records.last().map_or(millis_behind_latest, |last| {
            now.saturating_sub(last.arrival_ms)
        });
        metrics
            .get_records_iterator_age
            .set(gauge_value(iterator_age));
        if let Some(gauge) = &per_shard.iterator_age {
            gauge.set(gauge_value(iterator_age));
        }
        metrics.get_records_success.inc();
        metrics
            .get_records_latency
            .observe(started.elapsed().as_secs_f64());
        Ok(GetRecordsOutput {
            shard: shard_id,
            records,
            next_iterator,
            millis_behind_latest,
            child_shards,
        })
    }
}

fn child_shards(stream: &Stream, parent: ShardId) -> Vec<ChildShard> {
    stream
        .shards
        .iter()
        .filter(|s| s.parent == Some(parent.0) || s.adjacent_parent == Some(parent.0))
        .map(|s| ChildShard {
            shard: s.shard_id(),
            parents: [s.parent, s.adjacent_parent]
                .into_iter()
                .flatten()
                .map(ShardId)
                .collect(),
            start_hash: s.start_hash,
            end_hash: s.end_hash,
        })
        .collect()
}

/// AWS prints times in iterator-expiry messages as Java's `Date.toString()` does, in UTC:
/// `Tue Mar 12 21:39:46 UTC 2024`.
fn format_time(ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = ms / 1000;
    let days = seconds / 86_400;
    let (hour, minute, second) = (seconds % 86_400 / 3600, seconds % 3600 / 60, seconds % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{} {} {day:02} {hour:02}:{minute:02}:{second:02} UTC {year}",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize]
    )
}

mod access;
mod autoscale;
mod encryption;
mod raft_metrics;
mod rebalance;
mod remote;
mod subscribe;

pub use access::{AccessKeySummary, Caller, NewAccessKey};
pub use autoscale::ScalingDecision;
pub use encryption::open_local_keyring;

pub use subscribe::{Subscription, SubscriptionEvent};

#[cfg(test)]
mod tests;

/// A replicated write that failed, as a broker error (the caller answers InternalFailure).
fn write_error(error: WriteError) -> BrokerError {
    BrokerError::Replication(error.to_string())
}
