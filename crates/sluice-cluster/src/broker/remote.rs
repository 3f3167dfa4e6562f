//! Shards this node holds no replica of. Every node serves the whole Kinesis API, but a
//! cluster larger than the replication factor holds each shard on a few nodes only: reads
//! and writes of the others go to a node that holds one (`sluice.peer.v1.ShardAccess`),
//! which admits, appends and reads exactly as for its own clients. Appends still commit
//! through the shard's Raft group, so a replica that does not lead it passes them on.
//!
//! The same entry points serve hosted shards from the local log, so the put, get and
//! subscribe paths do not care where a shard lives.

use super::Broker;
use crate::error::BrokerError;
use crate::record::StoredRecord;
use crate::replica::{ShardCommand, ShardResponse, ShardTypes, WriteError, group_id};
use crate::shard::Appended;
use bytes::Bytes;
use parking_lot::RwLock;
use sluice_meta::{Stream, StreamMode};
use sluice_proto::peer::shard_access_client::ShardAccessClient;
use sluice_proto::peer::shard_access_server::{ShardAccess, ShardAccessServer};
use sluice_proto::peer::{
    AppendOutcome, AppendReply, AppendRequest, DescribeReply, DescribeRequest, ReadReply,
    ReadRequest, Record, ShardRef,
};
use sluice_replication::{PeerCallError, PeerTls, peer_channel};
use sluice_storage::EncryptionKey;
use sluice_types::ShardId;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// What became of one shard's part of a put.
pub(crate) struct ShardWrite {
    /// One flag per record: admitted (not throttled).
    pub admitted: Vec<bool>,
    /// The append of the admitted records (`None` when none was admitted).
    pub outcome: Option<Result<Appended, WriteError>>,
}

/// A shard's bounds and write totals, as the node that read them knows them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ShardStats {
    pub first_offset: u64,
    pub commit_point: u64,
    pub newest_timestamp_ms: u64,
    pub written_records: u64,
    pub written_bytes: u64,
}

/// Clients of other nodes' shard service: one lazy connection per node.
pub(super) struct Peers {
    local_ip: Option<IpAddr>,
    /// TLS for the connections, when the node's listeners speak it.
    tls: Option<PeerTls>,
    clients: RwLock<HashMap<u64, (String, ShardAccessClient<Channel>)>>,
}

/// A remote append answers within the replica's write deadline (10 s) plus transit.
const APPEND_TIMEOUT: Duration = Duration::from_secs(15);
/// A remote read answers within its wait plus this.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// What the shard service says when it holds no replica of the shard asked for.
const NOT_HOSTED: &str = "no replica of the shard on this node";

impl Peers {
    pub(super) fn new(local_ip: Option<IpAddr>, tls: Option<PeerTls>) -> Peers {
        Peers {
            local_ip: local_ip.filter(|ip| !ip.is_unspecified()),
            tls,
            clients: RwLock::new(HashMap::new()),
        }
    }

    fn client(&self, id: u64, addr: &str) -> Option<ShardAccessClient<Channel>> {
        if let Some((known, client)) = self.clients.read().get(&id)
            && known == addr
        {
            return Some(client.clone());
        }
        let channel = peer_channel(addr, self.tls.as_ref(), self.local_ip)?;
        let client = ShardAccessClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        self.clients
            .write()
            .insert(id, (addr.to_owned(), client.clone()));
        Some(client)
    }
}

/// Whether a failed call certainly did not reach the shard service, or reached a node
/// that does not hold the shard: another holder may be asked.
fn try_next(status: &Status) -> bool {
    (status.code() == Code::FailedPrecondition && status.message() == NOT_HOSTED)
        || sluice_replication::not_sent(status)
}

/// The broker error a peer's refusal stands for.
fn from_status(status: Status) -> BrokerError {
    let message = status.message().to_owned();
    match status.code() {
        Code::ResourceExhausted => BrokerError::ThroughputExceeded(message),
        Code::InvalidArgument => BrokerError::InvalidArgument(message),
        Code::NotFound => BrokerError::NotFound(message),
        _ => BrokerError::Replication(format!("shard service of another node: {message}")),
    }
}

/// The status a broker error is passed to a peer as.
fn to_status(error: BrokerError) -> Status {
    match error {
        BrokerError::ThroughputExceeded(m) => Status::resource_exhausted(m),
        BrokerError::InvalidArgument(m) => Status::invalid_argument(m),
        BrokerError::NotFound(m) => Status::not_found(m),
        other => Status::internal(other.to_string()),
    }
}

fn shard_ref(stream: &Stream, shard: u32) -> ShardRef {
    ShardRef {
        stream: stream.name.clone(),
        created_ms: stream.created_ms,
        shard,
    }
}

fn stats_from(stats: Option<sluice_proto::peer::ShardStats>) -> ShardStats {
    let stats = stats.unwrap_or_default();
    ShardStats {
        first_offset: stats.first_offset,
        commit_point: stats.commit_point,
        newest_timestamp_ms: stats.newest_timestamp_ms,
        written_records: stats.written_records,
        written_bytes: stats.written_bytes,
    }
}

fn stats_to(stats: ShardStats) -> sluice_proto::peer::ShardStats {
    sluice_proto::peer::ShardStats {
        first_offset: stats.first_offset,
        commit_point: stats.commit_point,
        newest_timestamp_ms: stats.newest_timestamp_ms,
        written_records: stats.written_records,
        written_bytes: stats.written_bytes,
    }
}

impl Broker {
    /// Whether this node holds a replica of the stream's shard `shard`.
    fn holds(&self, stream: &Stream, shard: u32) -> bool {
        stream
            .shard(ShardId(shard))
            .is_some_and(|meta| self.hosts(meta))
    }

    /// A client of each other node holding the shard, preferred leader first.
    fn holders(&self, stream: &Stream, shard: u32) -> Vec<ShardAccessClient<Channel>> {
        let placed: Vec<u64> = stream
            .shard(ShardId(shard))
            .map(|s| s.replicas.clone())
            .unwrap_or_default();
        let members = self.inner.meta.members();
        placed
            .into_iter()
            .filter(|id| *id != self.node_id())
            .filter_map(|id| {
                let member = members.iter().find(|m| m.id == id)?;
                self.inner.remote.client(id, &member.node.grpc)
            })
            .collect()
    }

    /// Sends a call that changes nothing to the shard's holders in turn until one answers:
    /// a holder that is not reached, does not hold the shard, or does not answer within
    /// `timeout` is skipped.
    async fn ask_holders<Req, Reply, F, Fut>(
        &self,
        stream: &Stream,
        shard: u32,
        request: Req,
        timeout: Duration,
        send: F,
    ) -> Result<Reply, BrokerError>
    where
        Req: Clone,
        F: Fn(ShardAccessClient<Channel>, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<Reply>, Status>>,
    {
        for client in self.holders(stream, shard) {
            let mut call = Request::new(request.clone());
            call.set_timeout(timeout);
            match tokio::time::timeout(timeout, send(client, call)).await {
                Err(_) => continue,
                Ok(Err(status)) if try_next(&status) || status.code() == Code::Unavailable => {
                    continue;
                }
                Ok(Err(status)) => return Err(from_status(status)),
                Ok(Ok(reply)) => return Ok(reply.into_inner()),
            }
        }
        Err(Self::no_holder(stream, shard))
    }

    fn no_holder(stream: &Stream, shard: u32) -> BrokerError {
        BrokerError::Replication(format!(
            "no node holding shard {} of stream {} answered",
            ShardId(shard),
            stream.name
        ))
    }

    /// Admits and appends one shard's records (in request order), here or on a node that
    /// holds the shard.
    pub(super) async fn append_shard(
        &self,
        stream: &Stream,
        shard: u32,
        records: Vec<(String, Bytes)>,
        now_ms: u64,
        key: Option<EncryptionKey>,
        in_order: bool,
    ) -> Result<ShardWrite, BrokerError> {
        let limited = stream.mode == StreamMode::Provisioned;
        if self.holds(stream, shard) {
            return self
                .append_hosted(stream, shard, records, now_ms, key, in_order, limited)
                .await;
        }
        let request = AppendRequest {
            shard: Some(shard_ref(stream, shard)),
            records: records
                .into_iter()
                .map(|(partition_key, data)| Record {
                    partition_key,
                    data,
                    ..Record::default()
                })
                .collect(),
            now_ms,
            in_order,
            limited,
            key_id: key.map(|k| k.key_id().to_owned()),
        };
        let count = request.records.len();
        for mut client in self.holders(stream, shard) {
            let mut call = Request::new(request.clone());
            call.set_timeout(APPEND_TIMEOUT);
            let reply = match tokio::time::timeout(APPEND_TIMEOUT, client.append(call)).await {
                Err(_) => {
                    return Ok(ShardWrite {
                        admitted: vec![true; count],
                        outcome: Some(Err(WriteError::Unknown(
                            "the holding node did not answer in time".to_owned(),
                        ))),
                    });
                }
                Ok(Err(status)) if try_next(&status) => continue,
                Ok(Err(status)) => return Err(from_status(status)),
                Ok(Ok(reply)) => reply.into_inner(),
            };
            return Ok(write_from_reply(reply, count));
        }
        Err(Self::no_holder(stream, shard))
    }

    #[allow(clippy::too_many_arguments)]
    async fn append_hosted(
        &self,
        stream: &Stream,
        shard: u32,
        records: Vec<(String, Bytes)>,
        now_ms: u64,
        key: Option<EncryptionKey>,
        in_order: bool,
        limited: bool,
    ) -> Result<ShardWrite, BrokerError> {
        let (log, replica) = self.replica(stream, shard).await?;
        let sizes: Vec<u64> = records
            .iter()
            .map(|(key, data)| (key.len() + data.len()) as u64)
            .collect();
        // On-demand streams scale instead of throttling.
        let admitted = if !limited {
            vec![true; sizes.len()]
        } else if in_order {
            log.admit_writes_in_order(&sizes, now_ms)
        } else {
            log.admit_writes(&sizes, now_ms)
        };
        let records: Vec<(String, Bytes)> = records
            .into_iter()
            .zip(&admitted)
            .filter(|(_, admitted)| **admitted)
            .map(|(record, _)| record)
            .collect();
        let outcome = if records.is_empty() {
            None
        } else {
            Some(replica.append(records, now_ms, key).await)
        };
        Ok(ShardWrite { admitted, outcome })
    }

    /// Reads up to `limit` committed records from `offset` (at most `max_bytes`), here or
    /// on a node holding the shard; with `wait`, a read that finds nothing waits up to
    /// that long for a record to be committed. `limited` charges the shard's read limits.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn read_shard(
        &self,
        stream: &Stream,
        shard: u32,
        offset: u64,
        limit: usize,
        max_bytes: usize,
        now_ms: u64,
        limited: bool,
        wait: Duration,
    ) -> Result<(Vec<StoredRecord>, ShardStats), BrokerError> {
        if self.holds(stream, shard) {
            return self
                .read_hosted(
                    stream, shard, offset, limit, max_bytes, now_ms, limited, wait,
                )
                .await;
        }
        let request = ReadRequest {
            shard: Some(shard_ref(stream, shard)),
            offset,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            max_bytes: max_bytes as u64,
            limited,
            wait_ms: wait.as_millis() as u64,
            now_ms,
        };
        let reply = self
            .ask_holders(
                stream,
                shard,
                request,
                wait + READ_TIMEOUT,
                |mut client, call| async move { client.read(call).await },
            )
            .await?;
        let records = reply
            .records
            .into_iter()
            .map(|r| StoredRecord {
                offset: r.offset,
                arrival_ms: r.arrival_ms,
                partition_key: r.partition_key,
                data: r.data,
            })
            .collect();
        Ok((records, stats_from(reply.stats)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn read_hosted(
        &self,
        stream: &Stream,
        shard: u32,
        offset: u64,
        limit: usize,
        max_bytes: usize,
        now_ms: u64,
        limited: bool,
        wait: Duration,
    ) -> Result<(Vec<StoredRecord>, ShardStats), BrokerError> {
        let log = self.open_shard_log(stream, shard).await?;
        if limited && !log.admit_read_call(now_ms) {
            return Err(BrokerError::ThroughputExceeded(
                crate::throttle::rate_exceeded_message(
                    &ShardId(shard).to_string(),
                    &stream.name,
                    &self.inner.config.identity.account,
                ),
            ));
        }
        if !wait.is_zero() && log.commit_point() <= offset {
            let mut commits = log.watch_commit_point();
            // Nothing new within the wait is an empty answer, not an error.
            let _ = tokio::time::timeout(wait, commits.wait_for(|point| *point > offset)).await;
        }
        let records = if limit == 0 {
            Vec::new()
        } else {
            log.read(offset, limit, max_bytes).await?
        };
        if limited {
            let bytes: usize = records
                .iter()
                .map(|r| r.data.len() + r.partition_key.len())
                .sum();
            log.charge_read_bytes(bytes as u64, now_ms);
        }
        Ok((records, Self::stats_of(&log)))
    }

    fn stats_of(log: &crate::shard::ShardLog) -> ShardStats {
        let (written_records, written_bytes) = log.written_totals();
        ShardStats {
            first_offset: log.first_offset(),
            commit_point: log.commit_point(),
            newest_timestamp_ms: log.newest_timestamp_ms(),
            written_records,
            written_bytes,
        }
    }

    /// Returns once a record at `offset` or later is committed, or after `wait` (or at
    /// once if the shard cannot be read).
    pub(super) async fn wait_for_commit(
        &self,
        stream: &Stream,
        shard: u32,
        offset: u64,
        wait: Duration,
    ) {
        if self.holds(stream, shard) {
            let Ok(log) = self.open_shard_log(stream, shard).await else {
                return;
            };
            let mut commits = log.watch_commit_point();
            let _ = tokio::time::timeout(wait, commits.wait_for(|point| *point > offset)).await;
            return;
        }
        let read = self
            .read_shard(stream, shard, offset, 0, 0, self.now_ms(), false, wait)
            .await;
        if read.is_err() {
            // Do not spin on a shard no holder of which answers.
            tokio::time::sleep(Duration::from_millis(200).min(wait)).await;
        }
    }

    /// The shard's bounds and totals, and the offset of the first record at or after
    /// `timestamp_ms` when asked for, here or on a node holding the shard.
    pub(super) async fn describe_shard(
        &self,
        stream: &Stream,
        shard: u32,
        timestamp_ms: Option<u64>,
    ) -> Result<(ShardStats, Option<u64>), BrokerError> {
        if self.holds(stream, shard) {
            let log = self.open_shard_log(stream, shard).await?;
            let at = match timestamp_ms {
                Some(ms) => Some(log.offset_at_timestamp(ms).await?),
                None => None,
            };
            return Ok((Self::stats_of(&log), at));
        }
        let request = DescribeRequest {
            shard: Some(shard_ref(stream, shard)),
            timestamp_ms,
        };
        let reply = self
            .ask_holders(
                stream,
                shard,
                request,
                READ_TIMEOUT,
                |mut client, call| async move { client.describe(call).await },
            )
            .await?;
        Ok((stats_from(reply.stats), reply.timestamp_offset))
    }

    /// Commits a command in the shard's Raft group, through the local replica or, from a
    /// node holding none, through the group's leader (found by asking its replicas).
    pub(super) async fn write_shard_group(
        &self,
        stream: &Stream,
        shard: u32,
        command: ShardCommand,
    ) -> Result<ShardResponse, WriteError> {
        if self.holds(stream, shard) {
            let (_, replica) = self
                .replica(stream, shard)
                .await
                .map_err(|e| WriteError::Failed(e.to_string()))?;
            return replica.write(command).await;
        }
        let group = group_id(&stream.name, stream.created_ms, shard);
        let placed: Vec<u64> = stream
            .shard(ShardId(shard))
            .map(|s| s.replicas.clone())
            .unwrap_or_default();
        for member in self.inner.meta.members() {
            if placed.contains(&member.id) {
                self.inner
                    .router
                    .learn_if_unknown(member.id, &member.node.grpc);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut target = placed.first().copied();
        let mut tried = 0;
        while let Some(node) = target {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let outcome = tokio::time::timeout_at(
                deadline,
                self.inner
                    .router
                    .client_write::<ShardTypes>(node, &group, &command),
            )
            .await;
            match outcome {
                Err(_) => return Err(WriteError::Unknown("not committed in time".to_owned())),
                Ok(Ok(Ok(response))) => return Ok(response.data),
                Ok(Ok(Err(error))) => match error.forward_to_leader() {
                    Some(forward) if forward.leader_id.is_some_and(|l| l != node) => {
                        target = forward.leader_id;
                        continue;
                    }
                    Some(_) => {}
                    None => return Err(WriteError::Unknown(error.to_string())),
                },
                Ok(Err(PeerCallError::Unreachable(_, reason))) => {
                    return Err(WriteError::Unknown(reason));
                }
                Ok(Err(PeerCallError::NotSent(..) | PeerCallError::Refused(..))) => {}
            }
            // This replica knows no leader or cannot be reached: ask the next one.
            tried += 1;
            target = placed.get(tried % placed.len().max(1)).copied();
            if tried % placed.len().max(1) == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Err(WriteError::Failed("no leader took the write".to_owned()))
    }

    /// The node-to-node shard service, for the node's gRPC server.
    pub fn shard_service(&self) -> ShardAccessServer<ShardService> {
        ShardAccessServer::new(ShardService(self.clone()))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// The stream and shard a peer's call names, if this node holds a replica of it.
    fn held_shard(&self, shard: Option<ShardRef>) -> Result<(Stream, u32), Status> {
        let shard = shard.ok_or_else(|| Status::invalid_argument("no shard named"))?;
        let stream = self
            .inner
            .meta
            .read(|state| state.streams.get(&shard.stream).cloned())
            .filter(|s| s.created_ms == shard.created_ms)
            .ok_or_else(|| Status::failed_precondition(NOT_HOSTED))?;
        if !self.holds(&stream, shard.shard) {
            return Err(Status::failed_precondition(NOT_HOSTED));
        }
        Ok((stream, shard.shard))
    }
}

fn write_from_reply(reply: AppendReply, count: usize) -> ShardWrite {
    let mut admitted = reply.admitted;
    admitted.resize(count, false);
    let outcome = match AppendOutcome::try_from(reply.outcome) {
        Ok(AppendOutcome::Appended) => Some(Ok(Appended {
            first_offset: reply.first_offset,
        })),
        Ok(AppendOutcome::Throttled) => None,
        Ok(AppendOutcome::Closed) => Some(Err(WriteError::Closed)),
        Ok(AppendOutcome::Failed) => Some(Err(WriteError::Failed(reply.message))),
        _ => Some(Err(WriteError::Unknown(reply.message))),
    };
    ShardWrite { admitted, outcome }
}

/// `sluice.peer.v1.ShardAccess` on this node: serves the shards it holds.
pub struct ShardService(Broker);

#[tonic::async_trait]
impl ShardAccess for ShardService {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendReply>, Status> {
        let request = request.into_inner();
        let (stream, shard) = self.0.held_shard(request.shard)?;
        let records: Vec<(String, Bytes)> = request
            .records
            .into_iter()
            .map(|r| (r.partition_key, r.data))
            .collect();
        let written = self
            .0
            .append_hosted(
                &stream,
                shard,
                records,
                request.now_ms,
                request.key_id.map(EncryptionKey::new),
                request.in_order,
                request.limited,
            )
            .await
            .map_err(to_status)?;
        let (outcome, first_offset, message) = match written.outcome {
            None => (AppendOutcome::Throttled, 0, String::new()),
            Some(Ok(appended)) => (
                AppendOutcome::Appended,
                appended.first_offset,
                String::new(),
            ),
            Some(Err(WriteError::Closed)) => (AppendOutcome::Closed, 0, String::new()),
            Some(Err(WriteError::Failed(m))) => (AppendOutcome::Failed, 0, m),
            Some(Err(WriteError::Unknown(m))) => (AppendOutcome::Unknown, 0, m),
        };
        Ok(Response::new(AppendReply {
            outcome: outcome as i32,
            admitted: written.admitted,
            first_offset,
            message,
        }))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadReply>, Status> {
        let request = request.into_inner();
        let (stream, shard) = self.0.held_shard(request.shard)?;
        let (records, stats) = self
            .0
            .read_hosted(
                &stream,
                shard,
                request.offset,
                request.limit as usize,
                usize::try_from(request.max_bytes).unwrap_or(usize::MAX),
                request.now_ms,
                request.limited,
                Duration::from_millis(request.wait_ms.min(60_000)),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(ReadReply {
            records: records
                .into_iter()
                .map(|r| Record {
                    partition_key: r.partition_key,
                    data: r.data,
                    offset: r.offset,
                    arrival_ms: r.arrival_ms,
                })
                .collect(),
            stats: Some(stats_to(stats)),
        }))
    }

    async fn describe(
        &self,
        request: Request<DescribeRequest>,
    ) -> Result<Response<DescribeReply>, Status> {
        let request = request.into_inner();
        let (stream, shard) = self.0.held_shard(request.shard)?;
        let (stats, timestamp_offset) = self
            .0
            .describe_shard(&stream, shard, request.timestamp_ms)
            .await
            .map_err(to_status)?;
        Ok(Response::new(DescribeReply {
            stats: Some(stats_to(stats)),
            timestamp_offset,
        }))
    }
}
