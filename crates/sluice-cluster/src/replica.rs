//! One shard replica on this node: an openraft group whose state machine is the shard's
//! record log ([`ShardLog`]).
//!
//! The Raft log (`sluice_replication::LogStore`, a segment log of its own beside the
//! shard's) holds the commands in the order the group committed them; every replica
//! applies the same committed commands in the same order to its `ShardLog`, so record
//! offsets, and with them sequence numbers, are the same on every replica. A write is
//! acknowledged once the leader applied it, which it does only after a majority made the
//! entry durable; readers on any replica see only applied (so committed) records.
//!
//! Each record in the `ShardLog` keeps the Raft index of its entry; a replica that
//! restarts applies committed entries again from the applied id its state file last
//! recorded and skips those whose records are already in the log.
//!
//! A shard group runs without timers of its own (no tick, heartbeats or election timer):
//! a node hosts hundreds of them, and the node's pacemaker (`sluice_replication::pacemaker`)
//! elects their leaders and catches their followers up from node-level liveness instead.

use crate::error::BrokerError;
use crate::record::Batch;
use crate::repair::{Guarded, GuardedPace, Repair};
use crate::shard::{AppendError, Appended, ShardLog};
use bytes::Bytes;
use futures_util::TryStreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::entry::RaftEntry;
use openraft::metrics::RaftMetrics;
use openraft::storage::{
    EntryResponder, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::type_config::alias::{
    LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, WatchReceiverOf,
};
use openraft::{EntryPayload, OptionalSend, Raft, StoredMembership};
use parking_lot::Mutex;
use sluice_replication::{
    GroupNetwork, Groups, LogReader, LogStore, PacedRaft, PeerCallError, PeerNode, RaftGroup,
    Router, Sealer, SnapshotBytes, ensure_lease, leader_changes_from, wait_for_leader,
};
use sluice_storage::{EncryptionKey, KeyProvider, LogConfig};
use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

openraft::declare_raft_types!(
    /// A shard group's types: record batches in, their first offset out.
    pub ShardTypes:
        D = ShardCommand,
        R = ShardResponse,
        Node = PeerNode,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

/// A command of a shard group.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ShardCommand {
    /// Append records (as entries written before record batches hold them; read, never
    /// written).
    Append {
        records: Vec<(String, Bytes)>,
        now_ms: u64,
        key_id: Option<String>,
    },
    /// Append records; `now_ms` is the leader's clock when it took them (arrival times
    /// never go backwards), `key_id` the master key to encrypt them under.
    AppendBatch {
        records: Batch,
        now_ms: u64,
        key_id: Option<String>,
    },
    /// Close the shard for writes (a split or merge): answers the last record's offset.
    Close,
    /// Open a shard again whose close was not committed to the metadata.
    Reopen,
}

impl std::fmt::Display for ShardCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardCommand::Append { records, .. } => write!(f, "append {} records", records.len()),
            ShardCommand::AppendBatch { records, .. } => {
                write!(f, "append {} records", records.len())
            }
            ShardCommand::Close => f.write_str("close"),
            ShardCommand::Reopen => f.write_str("reopen"),
        }
    }
}

/// The outcome of one applied command.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ShardResponse {
    Appended {
        first_offset: u64,
    },
    /// The shard is closed: route the records again.
    Closed,
    ClosedAt {
        last: Option<u64>,
    },
    Reopened,
    /// The records could not be written (e.g. the master key would not wrap a data key).
    Failed(String),
}

type LogId = LogIdOf<ShardTypes>;
type Membership = StoredMembershipOf<ShardTypes>;

/// What the state file beside the shard log records.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct AppliedState {
    applied: Option<LogId>,
    membership: Membership,
}

/// Where the record log goes on after the entries a snapshot covers. A shard snapshot
/// carries no records: it is taken where retention already deleted every record of the
/// entries it covers, so that the Raft log can drop them too.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct SnapshotPoint {
    /// The offset of the first record after the snapshot.
    next_offset: u64,
    /// That record's arrival time (see `ShardLog::restart_at`).
    timestamp_ms: u64,
}

/// The snapshot a replica serves, kept in `snapshot.json` beside the state file.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct StoredSnapshot {
    last_log_id: LogId,
    membership: Membership,
    point: SnapshotPoint,
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Result<SnapshotOf<ShardTypes, SnapshotBytes>, io::Error> {
        Ok(SnapshotOf::<ShardTypes, SnapshotBytes> {
            meta: SnapshotMetaOf::<ShardTypes> {
                last_log_id: Some(self.last_log_id),
                last_membership: self.membership.clone(),
            },
            snapshot: Cursor::new(serde_json::to_vec(&self.point).map_err(io::Error::other)?),
        })
    }
}

struct MachineInner {
    log: Arc<ShardLog>,
    state_path: PathBuf,
    snapshot_path: PathBuf,
    applied: Mutex<AppliedState>,
    /// The Raft index of the newest record in the log: entries up to it were applied.
    last_record_index: Mutex<u64>,
    /// The snapshot served to replicas that need entries this replica's Raft log dropped.
    snapshot: Mutex<Option<StoredSnapshot>>,
    /// The next snapshot to build (`Replica::compact` sets it, then asks openraft to build).
    next_snapshot: Mutex<Option<StoredSnapshot>>,
}

/// The state machine of a shard group: the shard's record log.
#[derive(Clone)]
pub struct ShardMachine(Arc<MachineInner>);

impl ShardMachine {
    fn open(log: Arc<ShardLog>, state_path: PathBuf) -> Result<ShardMachine, BrokerError> {
        let applied = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| BrokerError::Replication(format!("shard state file: {e}")))?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => AppliedState::default(),
            Err(error) => return Err(BrokerError::Storage(error.into())),
        };
        let last_record_index = log.last_raft_index()?;
        let snapshot_path = state_path.with_file_name("snapshot.json");
        let snapshot = match std::fs::read(&snapshot_path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| BrokerError::Replication(format!("shard snapshot file: {e}")))?,
            ),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(BrokerError::Storage(error.into())),
        };
        Ok(ShardMachine(Arc::new(MachineInner {
            log,
            state_path,
            snapshot_path,
            applied: Mutex::new(applied),
            last_record_index: Mutex::new(last_record_index),
            snapshot: Mutex::new(snapshot),
            next_snapshot: Mutex::new(None),
        })))
    }

    /// Writes the state file durably (temp file, fsync, rename).
    fn save(&self, state: &AppliedState) -> io::Result<()> {
        write_durably(
            &self.0.state_path,
            &serde_json::to_vec(state).map_err(io::Error::other)?,
        )
    }

    /// Makes `snapshot` the one served, durably.
    fn keep_snapshot(&self, snapshot: StoredSnapshot) -> io::Result<()> {
        let bytes = serde_json::to_vec(&snapshot).map_err(io::Error::other)?;
        write_durably(&self.0.snapshot_path, &bytes)?;
        *self.0.snapshot.lock() = Some(snapshot);
        Ok(())
    }

    /// The Raft index of the snapshot served, 0 without one.
    fn snapshot_index(&self) -> u64 {
        self.0
            .snapshot
            .lock()
            .as_ref()
            .map_or(0, |s| s.last_log_id.index)
    }
}

/// Writes `bytes` to `path` durably (temp file, fsync, rename).
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let temp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

impl RaftSnapshotBuilder<ShardTypes> for ShardMachine {
    type SnapshotData = SnapshotBytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<ShardTypes, SnapshotBytes>, io::Error> {
        // Snapshots are built only when `Replica::compact` asks, at the point it chose.
        let next = self.0.next_snapshot.lock().take();
        if let Some(next) = next {
            let machine = self.clone();
            let kept = next.clone();
            tokio::task::spawn_blocking(move || machine.keep_snapshot(kept))
                .await
                .map_err(io::Error::other)??;
            return next.to_snapshot();
        }
        match self.0.snapshot.lock().clone() {
            Some(current) => current.to_snapshot(),
            // Nothing to offer: a snapshot of nothing, which openraft ignores as not newer
            // than the none it has.
            None => Ok(SnapshotOf::<ShardTypes, SnapshotBytes> {
                meta: SnapshotMetaOf::<ShardTypes> {
                    last_log_id: None,
                    last_membership: Membership::default(),
                },
                snapshot: Cursor::new(Vec::new()),
            }),
        }
    }
}

/// One queued apply: where its outcome arrives.
enum Pending {
    Append(oneshot::Receiver<Result<Appended, AppendError>>),
    Done(ShardResponse),
}

impl RaftStateMachine<ShardTypes> for ShardMachine {
    type SnapshotData = SnapshotBytes;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        let state = self.0.applied.lock().clone();
        Ok((state.applied, state.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<ShardTypes>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        // Appends are queued back to back and awaited together: one write and one fsync
        // for the whole run of entries.
        let mut queued = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let pending = match entry.payload {
                EntryPayload::Normal(
                    command @ (ShardCommand::Append { .. } | ShardCommand::AppendBatch { .. }),
                ) => {
                    let (records, now_ms, key_id) = match command {
                        ShardCommand::Append {
                            records,
                            now_ms,
                            key_id,
                        } => (
                            Batch::from_records(records.iter().map(|(k, d)| (k.as_str(), &d[..]))),
                            now_ms,
                            key_id,
                        ),
                        ShardCommand::AppendBatch {
                            records,
                            now_ms,
                            key_id,
                        } => (records, now_ms, key_id),
                        _ => unreachable!("matched above"),
                    };
                    let replayed = {
                        let mut last = self.0.last_record_index.lock();
                        let replayed = log_id.index <= *last && *last > 0;
                        if !replayed {
                            *last = log_id.index;
                        }
                        replayed
                    };
                    if replayed {
                        // Applied before a restart: the records are in the log already.
                        Pending::Done(ShardResponse::Failed(
                            "the entry was applied before".to_owned(),
                        ))
                    } else {
                        let key = key_id.map(EncryptionKey::new);
                        match self.0.log.submit(records, now_ms, key, log_id.index).await {
                            Ok(answer) => Pending::Append(answer),
                            Err(_) => Pending::Done(ShardResponse::Closed),
                        }
                    }
                }
                EntryPayload::Normal(command @ (ShardCommand::Close | ShardCommand::Reopen)) => {
                    // Everything queued before the close is written first.
                    finish(std::mem::take(&mut queued)).await;
                    let log = Arc::clone(&self.0.log);
                    let response = match command {
                        ShardCommand::Close => {
                            match tokio::task::spawn_blocking(move || log.close_blocking()).await {
                                Ok(Ok(last)) => ShardResponse::ClosedAt { last },
                                Ok(Err(error)) => ShardResponse::Failed(error.to_string()),
                                Err(error) => ShardResponse::Failed(error.to_string()),
                            }
                        }
                        _ => {
                            log.reopen();
                            ShardResponse::Reopened
                        }
                    };
                    Pending::Done(response)
                }
                EntryPayload::Membership(membership) => {
                    finish(std::mem::take(&mut queued)).await;
                    let state = {
                        let mut state = self.0.applied.lock();
                        state.membership = StoredMembership::new(Some(log_id), membership);
                        state.applied = Some(log_id);
                        state.clone()
                    };
                    // The applied id recorded must never be ahead of the records on disk.
                    let machine = self.clone();
                    tokio::task::spawn_blocking(move || {
                        machine.0.log.sync_written().map_err(io::Error::other)?;
                        machine.save(&state)
                    })
                    .await
                    .map_err(io::Error::other)??;
                    Pending::Done(ShardResponse::Reopened)
                }
                EntryPayload::Blank => Pending::Done(ShardResponse::Reopened),
            };
            self.0.applied.lock().applied = Some(log_id);
            queued.push((pending, responder));
        }
        finish(queued).await;
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<ShardTypes>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let state = AppliedState {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let data = snapshot.into_inner();
        let stored = match (meta.last_log_id, data.is_empty()) {
            (Some(last_log_id), false) => Some(StoredSnapshot {
                last_log_id,
                membership: meta.last_membership.clone(),
                point: serde_json::from_slice(&data).map_err(io::Error::other)?,
            }),
            _ => None,
        };
        let machine = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(stored) = stored {
                // The records of the entries the snapshot covers are gone by retention where
                // it was taken: the record log goes on where they end. A replica holding
                // more than the snapshot keeps it (its later entries are recognised as
                // applied when they come again).
                let point = stored.point;
                let restarted = machine
                    .0
                    .log
                    .restart_at(point.next_offset, point.timestamp_ms)
                    .map_err(io::Error::other)?;
                if restarted {
                    *machine.0.last_record_index.lock() = stored.last_log_id.index;
                }
                machine.keep_snapshot(stored)?;
            }
            *machine.0.applied.lock() = state.clone();
            machine.save(&state)
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<ShardTypes, SnapshotBytes>>, io::Error> {
        let current = self.0.snapshot.lock().clone();
        current.map(|s| s.to_snapshot()).transpose()
    }
}

/// Waits for queued appends in order and answers each entry's client.
async fn finish(
    queued: Vec<(
        Pending,
        Option<openraft::storage::ApplyResponder<ShardTypes>>,
    )>,
) {
    for (pending, responder) in queued {
        let response = match pending {
            Pending::Done(response) => response,
            Pending::Append(answer) => match answer.await {
                Ok(Ok(appended)) => ShardResponse::Appended {
                    first_offset: appended.first_offset,
                },
                Ok(Err(AppendError::Closed)) | Err(_) => ShardResponse::Closed,
                Ok(Err(AppendError::Failed(error))) => ShardResponse::Failed(error.to_string()),
            },
        };
        if let Some(responder) = responder {
            responder.send(response);
        }
    }
}

/// openraft settings of a shard group. No timers: no tick, heartbeats or election timer,
/// so that an idle group costs nothing; the node's pacemaker campaigns when the leader's
/// node is suspected (silent for 1 s) and nudges followers that may lag
/// (`sluice_replication::pacemaker`). What the timings still mean here:
/// `election_timeout_max` (1 s) is the leader lease — followers refuse a campaign for that
/// long after the leader's last message, and a leader accepts writes only that long after a
/// quorum's last acknowledgement (renewed before a write, `ensure_lease`);
/// `heartbeat_interval` bounds each replication and heartbeat call (250 ms) and
/// `election_timeout_min` each vote call (500 ms).
fn raft_config() -> Result<Arc<openraft::Config>, BrokerError> {
    let config = openraft::Config {
        enable_tick: false,
        enable_heartbeat: false,
        enable_elect: false,
        cluster_name: "sluice-shard".to_owned(),
        heartbeat_interval: 250,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        // Snapshots are taken where retention deleted records (`Replica::compact`); the
        // Raft log then drops the entries they cover at once.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        max_payload_entries: 64,
        // A replica whose Raft log was damaged comes back with fewer entries than it
        // acknowledged (`crate::repair`): its leader starts it over from where it matches.
        allow_log_reversion: Some(true),
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| BrokerError::Replication(e.to_string()))
}

/// A write waits at most this long for a leader and its commit.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// One hosted shard replica: its record log and its Raft group.
pub(crate) struct Replica {
    raft: Raft<ShardTypes, ShardMachine>,
    machine: ShardMachine,
    raft_log: LogReader<ShardTypes>,
    /// The group's metrics, kept: background passes read every replica's every second.
    metrics: WatchReceiverOf<ShardTypes, RaftMetrics<ShardTypes>>,
    group: Arc<str>,
    node_id: u64,
    router: Router,
}

/// The transport id of a shard's group.
pub(crate) fn group_id(stream: &str, created_ms: u64, shard: u32) -> String {
    format!("shard/{stream}/{created_ms}/{shard}")
}

/// Why a replicated write did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// The shard is closed: route again.
    #[error("the shard is closed")]
    Closed,
    /// The write may or may not have been committed.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The write was not made.
    #[error("not written: {0}")]
    Failed(String),
}

impl Replica {
    /// Opens the replica's Raft group over `log` in `dir` (`raft/` and `applied.json`
    /// beside the shard's segments) and registers it with `groups` (served to peers, and
    /// driven by the pacemaker). The shard's preferred leader (`initializer`, the first
    /// replica placed) starts the group with every replica as a voter and campaigns at once,
    /// and so leads it first (the pacemaker campaigns again while replicas still open).
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        dir: &Path,
        group: String,
        log: Arc<ShardLog>,
        node_id: u64,
        replicas: &BTreeMap<u64, PeerNode>,
        initializer: u64,
        raft_log_config: LogConfig,
        keys: Arc<dyn KeyProvider>,
        router: Router,
        groups: &Groups,
    ) -> Result<Replica, BrokerError> {
        let machine = {
            let log = Arc::clone(&log);
            let path = dir.join("applied.json");
            tokio::task::spawn_blocking(move || ShardMachine::open(log, path)).await??
        };
        // Records of an encrypted stream are sealed in the Raft log too, under the same key.
        let sealer: Sealer<ShardTypes> = Arc::new(|entry| match &entry.payload {
            EntryPayload::Normal(
                ShardCommand::Append {
                    key_id: Some(key_id),
                    ..
                }
                | ShardCommand::AppendBatch {
                    key_id: Some(key_id),
                    ..
                },
            ) => Some(EncryptionKey::new(key_id.clone())),
            _ => None,
        });
        let mut store =
            LogStore::<ShardTypes>::open_sealed(dir.join("raft"), raft_log_config, keys, sealer)
                .await
                .map_err(|e| BrokerError::Replication(e.to_string()))?;
        // Entries cut from a damaged Raft log: the replica repairs itself from its group.
        let damage = store.damage();
        let raft_log = store.get_log_reader().await;
        let group: Arc<str> = group.into();
        let network = GroupNetwork::new(router.clone(), Arc::clone(&group));
        let raft = Raft::new(node_id, raft_config()?, network, store, machine.clone())
            .await
            .map_err(|e| BrokerError::Replication(e.to_string()))?;
        // Every replica's node is pinged from now on, so that its loss is noticed.
        for (id, node) in replicas {
            if *id != node_id {
                router.learn_if_unknown(*id, &node.grpc);
            }
        }
        // Only a replica whose log was damaged pays for the guard on every call.
        let repair = damage.map(|floor| Repair::new(raft.clone(), floor));
        let mut served: Arc<dyn sluice_replication::Group> = Arc::new(RaftGroup::new(
            Arc::clone(&group),
            raft.clone(),
            router.clone(),
            7,
        ));
        let mut paced: Arc<dyn sluice_replication::Paced> = Arc::new(PacedRaft::new(raft.clone()));
        if let Some(repair) = repair {
            served = Arc::new(Guarded {
                inner: served,
                repair: repair.clone(),
            });
            paced = Arc::new(GuardedPace {
                inner: paced,
                repair,
            });
        }
        groups.insert(Arc::clone(&group), served);
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| BrokerError::Replication(e.to_string()))?;
        let initializes = !initialized && initializer == node_id;
        if initializes {
            raft.initialize(replicas.clone())
                .await
                .map_err(|e| BrokerError::Replication(e.to_string()))?;
        }
        // A group of one replica leads from its start (openraft elects its only voter by
        // itself: campaigning again at once would only start a second term); a new group's
        // first leader is its initializer.
        let sole_leader = replicas.len() == 1
            && raft
                .wait(Some(Duration::from_millis(500)))
                .current_leader(node_id, "sole replica leads")
                .await
                .is_ok();
        if (initializes || replicas.len() == 1)
            && !sole_leader
            && raft.metrics().borrow_watched().current_leader != Some(node_id)
        {
            raft.trigger()
                .elect(false)
                .await
                .map_err(|e| BrokerError::Replication(e.to_string()))?;
        }
        groups.pace(Arc::clone(&group), paced);
        Ok(Replica {
            metrics: raft.metrics(),
            raft,
            machine,
            raft_log,
            group,
            node_id,
            router,
        })
    }

    /// This replica's view of its group: (is leader, knows a leader, under-replicated as
    /// its leader, largest follower lag in entries).
    pub fn health(&self) -> (bool, bool, bool, u64) {
        let metrics = self.metrics.borrow_watched();
        let leads = metrics.current_leader == Some(self.node_id);
        let mut under = false;
        let mut max_lag = 0;
        if leads && let Some(replication) = &metrics.replication {
            let last = metrics.last_log_index.unwrap_or(0);
            for matched in replication.values() {
                let lag = match matched {
                    Some(log_id) => last.saturating_sub(log_id.index),
                    None => last + 1,
                };
                max_lag = max_lag.max(lag);
                if matched.is_none() || lag > crate::metrics::UNDER_REPLICATED_LAG {
                    under = true;
                }
            }
        }
        (leads, metrics.current_leader.is_some(), under, max_lag)
    }

    /// The replica's Raft handle (membership changes and leadership transfers).
    #[allow(dead_code)]
    pub(crate) fn raft(&self) -> &Raft<ShardTypes, ShardMachine> {
        &self.raft
    }

    /// The group's transport id.
    #[allow(dead_code)]
    pub(crate) fn group(&self) -> &Arc<str> {
        &self.group
    }

    /// The group's leader as this replica knows it.
    pub fn leader(&self) -> Option<u64> {
        self.metrics.borrow_watched().current_leader
    }

    /// The group's current Raft term as this replica knows it.
    pub fn term(&self) -> u64 {
        self.metrics.borrow_watched().current_term
    }

    /// Commits `command` through the group's leader (this node or another) and returns
    /// the leader's answer once it applied it.
    pub async fn write(&self, command: ShardCommand) -> Result<ShardResponse, WriteError> {
        let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
        loop {
            let leader = wait_for_leader(&self.raft, deadline)
                .await
                .ok_or_else(|| WriteError::Failed("the shard has no leader".to_owned()))?;
            if leader == self.node_id {
                let write = async {
                    ensure_lease(&self.raft).await;
                    self.raft.client_write(command.clone()).await
                };
                match tokio::time::timeout_at(deadline, write).await {
                    Ok(Ok(response)) => return Ok(response.data),
                    Ok(Err(error)) if error.forward_to_leader().is_some() => {}
                    Ok(Err(error)) => return Err(WriteError::Unknown(error.to_string())),
                    Err(_) => {
                        return Err(WriteError::Unknown("not committed in time".to_owned()));
                    }
                }
            } else {
                let forward = self
                    .router
                    .client_write::<ShardTypes>(leader, &self.group, &command);
                // A leader that froze or lost its group would hold the write until the
                // connection times out: give up as soon as another leader is known (the
                // outcome is unknown then) or the deadline passes.
                let outcome = tokio::select! {
                    outcome = tokio::time::timeout_at(deadline, forward) => outcome,
                    () = leader_changes_from(&self.raft, leader) => {
                        return Err(WriteError::Unknown(
                            "the shard's leader changed while the write was in flight".to_owned(),
                        ));
                    }
                };
                let Ok(outcome) = outcome else {
                    return Err(WriteError::Unknown("not committed in time".to_owned()));
                };
                match outcome {
                    Ok(Ok(response)) => return Ok(response.data),
                    Ok(Err(error)) if error.forward_to_leader().is_some() => {}
                    Ok(Err(error)) => return Err(WriteError::Unknown(error.to_string())),
                    Err(PeerCallError::Unreachable(_, reason)) => {
                        return Err(WriteError::Unknown(reason));
                    }
                    Err(PeerCallError::NotSent(..) | PeerCallError::Refused(..)) => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WriteError::Failed("no leader took the write".to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Appends records through the leader.
    pub async fn append(
        &self,
        records: Vec<(String, Bytes)>,
        now_ms: u64,
        key: Option<EncryptionKey>,
    ) -> Result<Appended, WriteError> {
        let command = ShardCommand::AppendBatch {
            records: Batch::from_records(records.iter().map(|(k, d)| (k.as_str(), &d[..]))),
            now_ms,
            key_id: key.map(|k| k.key_id().to_owned()),
        };
        match self.write(command).await? {
            ShardResponse::Appended { first_offset } => Ok(Appended { first_offset }),
            ShardResponse::Closed => Err(WriteError::Closed),
            ShardResponse::Failed(reason) => Err(WriteError::Failed(reason)),
            other => Err(WriteError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    /// Lets the Raft log drop the entries whose records retention deleted from the record
    /// log: takes a snapshot just before the entry of the oldest retained record (see
    /// [`SnapshotPoint`]), which openraft then purges up to. A replica that later needs
    /// those entries (one behind, or a new one) installs the snapshot instead and starts its
    /// record log where the retained records begin. Returns the snapshot's Raft index, if
    /// one was taken.
    pub async fn compact(&self) -> Result<Option<u64>, BrokerError> {
        let log = Arc::clone(&self.machine.0.log);
        let Some(start) = tokio::task::spawn_blocking(move || log.retained_start()).await?? else {
            return Ok(None);
        };
        let index = start.raft_index - 1;
        if index <= self.machine.snapshot_index() {
            return Ok(None);
        }
        let mut reader = self.raft_log.clone();
        let entries = reader
            .try_get_log_entries(index..index + 1)
            .await
            .map_err(|e| BrokerError::Replication(e.to_string()))?;
        let Some(entry) = entries.first() else {
            return Ok(None);
        };
        let last_log_id = entry.log_id();
        // The snapshot's membership must be the one in force at its index: wait while a
        // newer change is applied (retention passes it soon).
        let membership = self.machine.0.applied.lock().membership.clone();
        if membership.log_id().as_ref() > Some(&last_log_id) {
            return Ok(None);
        }
        *self.machine.0.next_snapshot.lock() = Some(StoredSnapshot {
            last_log_id,
            membership,
            point: SnapshotPoint {
                next_offset: start.offset,
                timestamp_ms: start.timestamp_ms,
            },
        });
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| BrokerError::Replication(e.to_string()))?;
        Ok(Some(index))
    }

    /// Stops the group and forgets it on the transport and in the pacemaker.
    pub async fn shutdown(&self, groups: &Groups) {
        groups.remove(&self.group);
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(group = %self.group, %error, "shard group did not shut down cleanly");
        }
    }
}
