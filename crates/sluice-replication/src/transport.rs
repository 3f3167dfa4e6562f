//! The multiplexed node-to-node transport: every Raft group of a node talks to a peer over
//! one tonic channel (one HTTP/2 connection per node pair, each call a stream on it).
//!
//! * [`Router`] is the client side: it keeps one channel per peer and implements
//!   `openraft_multi::GroupRouter`, so [`GroupNetwork`] (a `RaftNetworkFactory` bound to one
//!   group) hands openraft an `openraft_multi::GroupNetworkAdapter` per target. It also
//!   sends the leader-only calls: a forwarded client write and a membership request.
//! * [`Groups`] is the server side: the groups this node hosts, by id, and the
//!   `sluice.peer.v1.Peer` service that dispatches each call to its group. It also holds
//!   the groups the [pacemaker](crate::pacemaker) drives.
//! * Liveness ([`crate::liveness`]): the router pings every peer it knows over the same
//!   channels (`Peer/Ping`) and judges which ones are suspected; [`PeerNetwork`] paces a
//!   group's retries towards a peer by that verdict.
//!
//! Payloads are CBOR (ciborium) of openraft's own request and response types; a group's
//! result travels as `Result<Response, Error>` with openraft's serde forms.

use crate::channel::{PeerTls, peer_channel};
use crate::leader::ensure_lease;
use crate::liveness::{Liveness, PING_INTERVAL, PING_TIMEOUT, PeerEvent};
use crate::membership::{AddMember, MembershipError, add_member};
use crate::pacemaker::{Paced, PacedMap};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{
    ClientWriteError, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{Backoff, RPCOption};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, SnapshotResponse,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::{Raft, RaftNetworkFactory, RaftTypeConfig};
use openraft_multi::{GroupNetworkAdapter, GroupRouter};
use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_proto::peer::peer_client::PeerClient;
use sluice_proto::peer::peer_server::{Peer, PeerServer};
use sluice_proto::peer::{PingReply, PingRequest, RaftKind, RaftReply, RaftRequest};
use std::collections::HashMap;
use std::io::Cursor;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The snapshot data every group of this crate ships: its bytes, sent in one call.
pub type SnapshotBytes = Cursor<Vec<u8>>;

/// How a node is reached: what the metadata group's membership stores for each node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PeerNode {
    /// The node's gRPC address (`host:port`), where peers and native clients call it.
    pub grpc: String,
    /// The node's Kinesis address (`host:port`).
    pub kinesis: String,
    /// The zone (failure domain) the node announced, if any. Left out of the encoding when
    /// unknown, so records written before zones existed read the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl std::fmt::Display for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "grpc={} kinesis={}", self.grpc, self.kinesis)?;
        if let Some(zone) = &self.zone {
            write!(f, " zone={zone}")?;
        }
        Ok(())
    }
}

/// Serializes a value the way every peer payload is encoded.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out)
        .map_err(|e| Status::internal(format!("encode a peer payload: {e}")))?;
    Ok(out)
}

/// Decodes a peer payload.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    ciborium::from_reader(bytes)
        .map_err(|e| Status::invalid_argument(format!("decode a peer payload: {e}")))
}

/// Why a leader-only call sent to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    /// No connection to the peer could be made: the call was not sent.
    #[error("peer {0} not reachable: {1}")]
    NotSent(u64, String),
    /// The call was sent but did not complete: the outcome is unknown.
    #[error("peer {0} unreachable: {1}")]
    Unreachable(u64, String),
    /// The peer answered with a gRPC error (e.g. it does not host the group).
    #[error("peer {0} refused the call: {1}")]
    Refused(u64, String),
}

struct RouterInner {
    /// Channels by node id, with the address they were made for.
    peers: RwLock<HashMap<u64, (String, PeerClient<Channel>)>>,
    /// This node's id and advertised address, sent with every call.
    me: RwLock<(u64, String)>,
    /// Outgoing connections are bound to this address (the node's own listen IP), so a
    /// peer (or a test's fault proxy) can tell which node a connection comes from.
    local_ip: Option<IpAddr>,
    /// TLS for outgoing connections, when the node's listeners speak it.
    tls: Option<PeerTls>,
    /// Which peers answer this node's pings.
    liveness: Liveness,
}

/// The client side of the transport, shared by every group of a node. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

/// Leader-only calls (forwarded writes, membership changes) wait at most this long.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// Seeds are known by address only: a key no node id uses (and that is never pinged).
const SEED: u64 = u64::MAX;
/// A group retries a reachable peer that failed a call after this long (openraft's default).
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// ... and a suspected peer after this long: it is nudged as soon as it answers again.
const SUSPECTED_BACKOFF: Duration = Duration::from_secs(1);

impl Router {
    pub fn new(local_ip: Option<IpAddr>) -> Router {
        Router::with_tls(local_ip, None)
    }

    /// A router whose connections to peers speak TLS when `tls` is given (see
    /// [`peer_channel`]).
    pub fn with_tls(local_ip: Option<IpAddr>, tls: Option<PeerTls>) -> Router {
        Router {
            inner: Arc::new(RouterInner {
                peers: RwLock::new(HashMap::new()),
                me: RwLock::new((0, String::new())),
                local_ip: local_ip.filter(|ip| !ip.is_unspecified()),
                tls,
                liveness: Liveness::new(),
            }),
        }
    }

    /// Since when `node` has not answered this node's pings, while it is suspected (silent
    /// for [`SUSPECT_AFTER`](crate::SUSPECT_AFTER)); `None` while it answers, and for a node
    /// this router does not know (every peer whose address it learned is pinged: members of
    /// the groups hosted here, callers, [`Router::learn`]). A peer silent since this node
    /// started counts from when it began to ping it.
    pub fn peer_down_since(&self, node: u64) -> Option<std::time::Instant> {
        self.inner.liveness.down_since(node)
    }

    /// Every peer suspected now (see [`Router::peer_down_since`]).
    pub fn suspected_peers(&self) -> Vec<u64> {
        self.inner.liveness.suspected()
    }

    /// Every later change of a peer's verdict: suspected, or answering again.
    pub fn subscribe_peers(&self) -> tokio::sync::broadcast::Receiver<PeerEvent> {
        self.inner.liveness.subscribe()
    }

    /// Pings every known peer every [`PING_INTERVAL`] and judges them (see
    /// [`crate::liveness`]). Runs until dropped; [`Groups::run_background`] runs it.
    pub async fn run_liveness(&self) {
        let mut tick = tokio::time::interval(PING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pings = FuturesUnordered::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = std::time::Instant::now();
                    self.inner.liveness.judge(now);
                    let (me, address) = self.inner.me.read().clone();
                    let clients: Vec<(u64, PeerClient<Channel>)> = self
                        .inner
                        .peers
                        .read()
                        .iter()
                        .filter(|(id, _)| **id != me && **id != SEED)
                        .map(|(id, (_, client))| (*id, client.clone()))
                        .collect();
                    let known: Vec<u64> = clients.iter().map(|(id, _)| *id).collect();
                    let due = self.inner.liveness.due(&known, now);
                    for (id, client) in clients {
                        if due.contains(&id) {
                            pings.push(ping(client, id, me, address.clone()));
                        }
                    }
                }
                Some((id, answered)) = pings.next(), if !pings.is_empty() => {
                    self.inner.liveness.answered(id, answered, std::time::Instant::now());
                }
            }
        }
    }

    /// Names this node in outgoing calls.
    pub fn set_identity(&self, id: u64, grpc_addr: &str) {
        *self.inner.me.write() = (id, grpc_addr.to_owned());
    }

    /// Records where node `id` is reached unless an address is known already (a
    /// membership entry may be older than what the node itself announced).
    pub fn learn_if_unknown(&self, id: u64, grpc_addr: &str) {
        if !self.knows(id) {
            self.learn(id, grpc_addr);
        }
    }

    /// Whether an address of node `id` is known (and the node pinged).
    pub fn knows(&self, id: u64) -> bool {
        self.inner.peers.read().contains_key(&id)
    }

    /// Records (or updates) where node `id` is reached. Connections are made lazily.
    pub fn learn(&self, id: u64, grpc_addr: &str) {
        if let Some((addr, _)) = self.inner.peers.read().get(&id)
            && addr == grpc_addr
        {
            return;
        }
        let Some(channel) = peer_channel(grpc_addr, self.inner.tls.as_ref(), self.inner.local_ip)
        else {
            tracing::warn!(id, grpc_addr, "a peer address that is not a URI authority");
            return;
        };
        let client = PeerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        self.inner
            .peers
            .write()
            .insert(id, (grpc_addr.to_owned(), client));
    }

    /// This node's id, as it names itself in calls.
    fn id(&self) -> u64 {
        self.inner.me.read().0
    }

    fn client(&self, id: u64) -> Option<PeerClient<Channel>> {
        self.inner.peers.read().get(&id).map(|(_, c)| c.clone())
    }

    /// One call to `group` on node `target`; `Err` is a transport failure or a refusal.
    async fn call(
        &self,
        target: u64,
        group: &str,
        kind: RaftKind,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, PeerCallError> {
        let Some(mut client) = self.client(target) else {
            return Err(PeerCallError::NotSent(
                target,
                "no address known".to_owned(),
            ));
        };
        let (from_node, from_addr) = self.inner.me.read().clone();
        let mut request = Request::new(RaftRequest {
            group: group.to_owned(),
            kind: kind as i32,
            payload: Bytes::from(payload),
            from_node,
            from_addr,
        });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.raft(request)).await {
            Err(_) => Err(PeerCallError::Unreachable(target, "timed out".to_owned())),
            Ok(Ok(reply)) => Ok(reply.into_inner().payload.to_vec()),
            Ok(Err(status)) if not_sent(&status) => {
                Err(PeerCallError::NotSent(target, status.message().to_owned()))
            }
            Ok(Err(status)) => match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown => Err(PeerCallError::Unreachable(
                    target,
                    status.message().to_owned(),
                )),
                _ => Err(PeerCallError::Refused(target, status.message().to_owned())),
            },
        }
    }

    async fn raft_rpc<C, Req, Resp>(
        &self,
        target: u64,
        group: &str,
        kind: RaftKind,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<C>>
    where
        C: RaftTypeConfig<NodeId = u64>,
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let payload = encode(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let bytes = self
            .call(target, group, kind, payload, option.hard_ttl())
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let result: Result<Resp, RaftError<C>> =
            decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // The remote group failed fatally (e.g. it is shutting down): treat it as gone.
        result.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    /// Sends `data` to the leader `leader` of `group` as a client write and returns the
    /// response once the leader applied it.
    pub async fn client_write<C>(
        &self,
        leader: u64,
        group: &str,
        data: &C::D,
    ) -> Result<Result<ClientWriteResponse<C>, RaftError<C, ClientWriteError<C>>>, PeerCallError>
    where
        C: RaftTypeConfig<NodeId = u64>,
        C::D: Serialize,
        C::R: DeserializeOwned,
    {
        let payload =
            encode(data).map_err(|e| PeerCallError::Refused(leader, e.message().to_owned()))?;
        let bytes = self
            .call(
                leader,
                group,
                RaftKind::ClientWrite,
                payload,
                FORWARD_TIMEOUT,
            )
            .await?;
        decode(&bytes).map_err(|e| PeerCallError::Refused(leader, e.message().to_owned()))
    }

    /// Asks the node at `address` (any member: a follower passes it on to the leader) to
    /// add a member to `group`.
    pub async fn add_member_at<C>(
        &self,
        address: &str,
        group: &str,
        request: &AddMember<C::Node>,
    ) -> Result<Result<(), String>, PeerCallError>
    where
        C: RaftTypeConfig<NodeId = u64>,
        C::Node: Serialize,
    {
        self.learn(SEED, address);
        self.add_member::<C>(SEED, group, request).await
    }

    /// Asks the leader of `group` to add a member (see [`AddMember`]).
    pub async fn add_member<C>(
        &self,
        leader: u64,
        group: &str,
        request: &AddMember<C::Node>,
    ) -> Result<Result<(), String>, PeerCallError>
    where
        C: RaftTypeConfig<NodeId = u64>,
        C::Node: Serialize,
    {
        let payload =
            encode(request).map_err(|e| PeerCallError::Refused(leader, e.message().to_owned()))?;
        let bytes = self
            .call(leader, group, RaftKind::AddMember, payload, FORWARD_TIMEOUT)
            .await?;
        decode(&bytes).map_err(|e| PeerCallError::Refused(leader, e.message().to_owned()))
    }
}

/// One ping of `target`: whether it answered in time, as itself.
async fn ping(
    mut client: PeerClient<Channel>,
    target: u64,
    from_node: u64,
    from_addr: String,
) -> (u64, bool) {
    let mut request = Request::new(PingRequest {
        from_node,
        from_addr,
    });
    request.set_timeout(PING_TIMEOUT);
    let answered = match tokio::time::timeout(PING_TIMEOUT, client.ping(request)).await {
        // Another node at the address (the peer left and a new one took its address) is
        // not the peer.
        Ok(Ok(reply)) => {
            let node = reply.into_inner().node;
            node == target || node == 0
        }
        // A node of an earlier version, without the call, answers all the same.
        Ok(Err(status)) => status.code() == tonic::Code::Unimplemented,
        Err(_) => false,
    };
    (target, answered)
}

/// Whether a failed call never left this node: tonic answers a failed connection attempt
/// with `Unavailable` carrying the connector's error.
pub fn not_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    status.code() == tonic::Code::Unavailable
        && (status.message().contains("connect error")
            || status.message().contains("Connection refused"))
        || status.code() == tonic::Code::Unknown
            && status.message().starts_with("Service was not ready")
}

/// What a full snapshot call carries.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
struct SnapshotCall<C: RaftTypeConfig> {
    vote: VoteOf<C>,
    meta: SnapshotMetaOf<C>,
    data: Vec<u8>,
}

impl<C> GroupRouter<C, Arc<str>> for Router
where
    C: RaftTypeConfig<NodeId = u64>,
{
    type SnapshotData = SnapshotBytes;

    async fn append_entries(
        &self,
        target: u64,
        group_id: Arc<str>,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.raft_rpc(target, &group_id, RaftKind::AppendEntries, &rpc, &option)
            .await
    }

    async fn vote(
        &self,
        target: u64,
        group_id: Arc<str>,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.raft_rpc(target, &group_id, RaftKind::Vote, &rpc, &option)
            .await
    }

    async fn pre_vote(
        &self,
        target: u64,
        group_id: Arc<str>,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.raft_rpc(target, &group_id, RaftKind::PreVote, &rpc, &option)
            .await
    }

    async fn full_snapshot(
        &self,
        target: u64,
        group_id: Arc<str>,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SnapshotBytes>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let call = SnapshotCall::<C> {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let send = self.raft_rpc::<C, _, SnapshotResponse<C>>(
            target,
            &group_id,
            RaftKind::FullSnapshot,
            &call,
            &option,
        );
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result.map_err(|e| match e {
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&r)),
            }),
        }
    }

    async fn transfer_leader(
        &self,
        target: u64,
        group_id: Arc<str>,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.raft_rpc(target, &group_id, RaftKind::TransferLeader, &req, &option)
            .await
    }
}

/// `RaftNetworkFactory` of one group: learns each target's address from its membership
/// entry and hands out a [`PeerNetwork`] per target over the shared [`Router`].
#[derive(Clone)]
pub struct GroupNetwork {
    router: Router,
    group: Arc<str>,
}

impl GroupNetwork {
    pub fn new(router: Router, group: impl Into<Arc<str>>) -> GroupNetwork {
        GroupNetwork {
            router,
            group: group.into(),
        }
    }
}

impl<C> RaftNetworkFactory<C> for GroupNetwork
where
    C: RaftTypeConfig<NodeId = u64, Node = PeerNode>,
{
    type Network = PeerNetwork<C>;

    async fn new_client(&mut self, target: u64, node: &PeerNode) -> Self::Network {
        self.router.learn_if_unknown(target, &node.grpc);
        PeerNetwork {
            adapter: GroupNetworkAdapter::new(self.router.clone(), target, Arc::clone(&self.group)),
            router: self.router.clone(),
            target,
        }
    }
}

/// A group's connection to one peer: the shared [`Router`] bound to (peer, group), whose
/// retries after a failed call are paced by the peer's liveness. A reachable peer is
/// retried after [`RETRY_BACKOFF`], a suspected one only every [`SUSPECTED_BACKOFF`]: a
/// group that keeps writing while a replica's node is down would otherwise call it five
/// times a second, for every such group. When the peer answers again, the
/// [pacemaker](crate::pacemaker) ends the backoff of the groups led here at once.
pub struct PeerNetwork<C>
where
    C: RaftTypeConfig<NodeId = u64>,
{
    adapter: GroupNetworkAdapter<C, Arc<str>, Router>,
    router: Router,
    target: u64,
}

impl<C> RaftNetworkV2<C> for PeerNetwork<C>
where
    C: RaftTypeConfig<NodeId = u64>,
{
    type SnapshotData = SnapshotBytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.adapter.append_entries(rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.adapter.vote(rpc, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.adapter.pre_vote(rpc, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SnapshotBytes>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        self.adapter
            .full_snapshot(vote, snapshot, cancel, option)
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        self.adapter.transfer_leader(req, option).await
    }

    fn backoff(&self) -> Option<Backoff> {
        let router = self.router.clone();
        let target = self.target;
        Some(Backoff::new(std::iter::repeat_with(move || {
            if router.peer_down_since(target).is_some() {
                SUSPECTED_BACKOFF
            } else {
                RETRY_BACKOFF
            }
        })))
    }
}

/// One hosted group as the peer service sees it.
pub trait Group: Send + Sync + 'static {
    fn call(&self, kind: RaftKind, payload: Bytes) -> BoxFuture<'_, Result<Vec<u8>, Status>>;
}

/// A `Raft` handle served to peers: Raft RPCs and the leader-only calls.
pub struct RaftGroup<C, SM>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
{
    group: Arc<str>,
    raft: Raft<C, SM>,
    /// Forwards membership requests that reach a follower to the leader.
    router: Router,
    /// At most this many voters; further members stay learners.
    max_voters: usize,
}

impl<C, SM> RaftGroup<C, SM>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
{
    pub fn new(
        group: impl Into<Arc<str>>,
        raft: Raft<C, SM>,
        router: Router,
        max_voters: usize,
    ) -> Self {
        RaftGroup {
            group: group.into(),
            raft,
            router,
            max_voters,
        }
    }
}

impl<C, SM> Group for RaftGroup<C, SM>
where
    C: RaftTypeConfig<NodeId = u64, Node = PeerNode>,
    SM: RaftStateMachine<C, SnapshotData = SnapshotBytes>,
{
    fn call(&self, kind: RaftKind, payload: Bytes) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            let raft = &self.raft;
            match kind {
                RaftKind::AppendEntries => {
                    let rpc: AppendEntriesRequest<C> = decode(&payload)?;
                    encode(&raft.append_entries(rpc).await)
                }
                RaftKind::Vote => {
                    let rpc: VoteRequest<C> = decode(&payload)?;
                    encode(&raft.vote(rpc).await)
                }
                RaftKind::PreVote => {
                    let rpc: VoteRequest<C> = decode(&payload)?;
                    encode(&raft.pre_vote(rpc).await)
                }
                RaftKind::FullSnapshot => {
                    let call: SnapshotCall<C> = decode(&payload)?;
                    let snapshot = SnapshotOf::<C, SnapshotBytes> {
                        meta: call.meta,
                        snapshot: Cursor::new(call.data),
                    };
                    let result: Result<SnapshotResponse<C>, RaftError<C>> = raft
                        .install_full_snapshot(call.vote, snapshot)
                        .await
                        .map_err(RaftError::Fatal);
                    encode(&result)
                }
                RaftKind::TransferLeader => {
                    let rpc: TransferLeaderRequest<C> = decode(&payload)?;
                    let result: Result<TransferLeaderResponse<C>, RaftError<C>> = raft
                        .handle_transfer_leader(rpc)
                        .await
                        .map_err(RaftError::Fatal);
                    encode(&result)
                }
                RaftKind::ClientWrite => {
                    let data: C::D = decode(&payload)?;
                    ensure_lease(raft).await;
                    encode(&raft.client_write(data).await)
                }
                RaftKind::AddMember => {
                    let request: AddMember<C::Node> = decode(&payload)?;
                    let result = match add_member(raft, request.clone(), self.max_voters).await {
                        // A follower passes the request on to the leader it knows.
                        Err(MembershipError::NotLeader(Some(leader))) => {
                            let metrics = raft.metrics().borrow_watched().clone();
                            let address = metrics
                                .membership_config
                                .membership()
                                .nodes()
                                .find(|(id, _)| **id == leader)
                                .map(|(_, node)| node.grpc.clone());
                            match address {
                                Some(address) => {
                                    self.router.learn(leader, &address);
                                    match self
                                        .router
                                        .add_member::<C>(leader, &self.group, &request)
                                        .await
                                    {
                                        Ok(result) => result,
                                        Err(error) => Err(error.to_string()),
                                    }
                                }
                                None => Err(format!("leader {leader} has no known address")),
                            }
                        }
                        other => other.map_err(|e| e.to_string()),
                    };
                    encode(&result)
                }
                RaftKind::Unspecified => Err(Status::invalid_argument("no call kind")),
            }
        })
    }
}

type GroupMap = HashMap<Arc<str>, Arc<dyn Group>>;

/// The groups this node hosts, by id; also the `sluice.peer.v1.Peer` service.
#[derive(Clone)]
pub struct Groups {
    map: Arc<RwLock<GroupMap>>,
    /// The hosted groups without timers of their own, which the pacemaker drives.
    paced: Arc<PacedMap>,
    /// Learns callers' current addresses.
    router: Router,
}

impl Groups {
    pub fn new(router: Router) -> Groups {
        Groups {
            map: Arc::default(),
            paced: Arc::default(),
            router,
        }
    }

    pub fn insert(&self, id: impl Into<Arc<str>>, group: Arc<dyn Group>) {
        self.map.write().insert(id.into(), group);
    }

    /// Hands a hosted group (already inserted) to the pacemaker: its raft config has no
    /// tick, heartbeats or election timer (see [`crate::pacemaker`]).
    pub fn pace(&self, id: impl Into<Arc<str>>, group: Arc<dyn Paced>) {
        self.paced.write().insert(id.into(), group);
    }

    pub fn remove(&self, id: &str) {
        self.map.write().remove(id);
        self.paced.write().remove(id);
    }

    /// Node liveness ([`Router::run_liveness`]) and the pacemaker of the paced groups.
    /// Runs until dropped: the node runs it for as long as it serves.
    pub async fn run_background(&self) {
        tokio::join!(
            self.router.run_liveness(),
            crate::pacemaker::run(self.router.clone(), Arc::clone(&self.paced)),
        );
    }

    /// The tonic service to add to the node's gRPC server.
    pub fn service(&self) -> PeerServer<Groups> {
        PeerServer::new(self.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }
}

#[tonic::async_trait]
impl Peer for Groups {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        let request = request.into_inner();
        if !request.from_addr.is_empty() {
            self.router.learn(request.from_node, &request.from_addr);
        }
        Ok(Response::new(PingReply {
            node: self.router.id(),
        }))
    }

    async fn raft(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        if !request.from_addr.is_empty() {
            self.router.learn(request.from_node, &request.from_addr);
        }
        let group = self.map.read().get(request.group.as_str()).cloned();
        let Some(group) = group else {
            return Err(Status::not_found(format!(
                "group {} is not hosted here",
                request.group
            )));
        };
        let kind = RaftKind::try_from(request.kind)
            .map_err(|_| Status::invalid_argument("unknown call kind"))?;
        let payload = group.call(kind, request.payload).await?;
        Ok(Response::new(RaftReply {
            payload: Bytes::from(payload),
        }))
    }
}
