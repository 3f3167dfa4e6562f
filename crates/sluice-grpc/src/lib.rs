//! The tonic services of the native `sluice.v1` API, implemented over the `Broker`, and
//! the one mapping from broker errors to `tonic::Status`.
//!
//! Knows nothing of Kinesis JSON/CBOR shapes or storage. Entry functions:
//! [`node_service`], [`streams_service`], [`fan_out_service`], [`data_service`],
//! [`auth_service`], each guarded by an [`Access`].

mod access;
mod admin;
mod auth;
mod data;

pub use access::{Access, WithMethodPath};
pub use auth::{AuthApi, auth_service};
pub use data::{DataApi, data_service};

use sluice_cluster::{Broker, BrokerError, ChildShard, ScalingPolicy, StoredRecord, Subscription};
use sluice_proto::v1 as pb;
use sluice_proto::v1::fan_out_server::{FanOut, FanOutServer};
use sluice_proto::v1::node_server::{Node, NodeServer};
use sluice_proto::v1::streams_server::{Streams, StreamsServer};
use sluice_types::SequenceNumber;
use tonic::{Request, Response, Status};

/// The metadata key that carries the Kinesis error type of a failed call.
pub const ERROR_TYPE_KEY: &str = "x-sluice-error-type";

/// Maps a broker error to a status whose code fits and whose metadata names the Kinesis
/// error type, so gRPC and Kinesis clients see the same kinds.
pub fn status_of(error: BrokerError) -> Status {
    let (code, kind, message) = match error {
        BrokerError::NotFound(m) => (tonic::Code::NotFound, "ResourceNotFoundException", m),
        BrokerError::InUse(m) => (tonic::Code::FailedPrecondition, "ResourceInUseException", m),
        BrokerError::InvalidArgument(m) => {
            (tonic::Code::InvalidArgument, "InvalidArgumentException", m)
        }
        BrokerError::Validation(m) => (tonic::Code::InvalidArgument, "ValidationException", m),
        BrokerError::LimitExceeded(m) => {
            (tonic::Code::ResourceExhausted, "LimitExceededException", m)
        }
        BrokerError::ExpiredIterator(m) => (tonic::Code::OutOfRange, "ExpiredIteratorException", m),
        BrokerError::KmsNotFound(m) => (tonic::Code::NotFound, "KMSNotFoundException", m),
        BrokerError::KmsDisabled(m) => (tonic::Code::FailedPrecondition, "KMSDisabledException", m),
        BrokerError::AccessDenied(m) => (tonic::Code::PermissionDenied, "AccessDeniedException", m),
        BrokerError::ThroughputExceeded(m) => (
            tonic::Code::ResourceExhausted,
            "ProvisionedThroughputExceededException",
            m,
        ),
        internal => {
            tracing::error!(error = %internal, "internal failure");
            (
                tonic::Code::Internal,
                "InternalFailure",
                "Internal service failure.".to_owned(),
            )
        }
    };
    let mut status = Status::new(code, message);
    status.metadata_mut().insert(
        ERROR_TYPE_KEY,
        tonic::metadata::MetadataValue::from_static(kind),
    );
    status
}

/// The `sluice.v1.Node` service.
pub struct NodeApi {
    broker: Broker,
    access: Access,
    kinesis_address: String,
}

pub fn node_service(
    broker: Broker,
    access: Access,
    kinesis_address: String,
) -> WithMethodPath<NodeServer<NodeApi>> {
    WithMethodPath::new(NodeServer::new(NodeApi {
        broker,
        access,
        kinesis_address,
    }))
}

#[tonic::async_trait]
impl Node for NodeApi {
    async fn get_node_info(
        &self,
        request: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::GetNodeInfoResponse>, Status> {
        // Any authenticated caller may learn where the node's endpoints are.
        self.access.caller(&request)?;
        let identity = self.broker.identity();
        Ok(Response::new(pb::GetNodeInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kinesis_address: self.kinesis_address.clone(),
            region: identity.region.clone(),
            account_id: identity.account.clone(),
            stream_count: self.broker.with_state(|s| s.streams.len() as u32),
        }))
    }

    async fn get_cluster_status(
        &self,
        request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::GetClusterStatusResponse>, Status> {
        // Where shards live is what any client needs to reach their owners.
        self.access.caller(&request)?;
        let (members, leader) = self.broker.cluster_members();
        let draining = self.broker.draining_nodes();
        Ok(Response::new(pb::GetClusterStatusResponse {
            node_id: self.broker.node_id(),
            metadata_leader: leader.unwrap_or(0),
            nodes: members
                .into_iter()
                .map(|m| pb::ClusterNode {
                    id: m.id,
                    grpc_address: m.node.grpc,
                    kinesis_address: m.node.kinesis,
                    zone: m.node.zone.unwrap_or_default(),
                    voter: m.voter,
                    draining: draining.contains(&m.id),
                })
                .collect(),
            shards: self
                .broker
                .shard_placement()
                .into_iter()
                .map(|p| pb::ShardPlacement {
                    stream_name: p.stream,
                    shard_id: p.shard.to_string(),
                    replicas: p.replicas,
                    leader: p.leader.unwrap_or(0),
                    leader_epoch: p.leader_epoch,
                    closed: p.closed,
                    moving: p.moving.map(|m| pb::ShardMove {
                        from: m.from.unwrap_or(0),
                        to: m.to.unwrap_or(0),
                    }),
                })
                .collect(),
            draining: draining.into_iter().collect(),
        }))
    }

    #[tracing::instrument(name = "grpc.decommission_node", skip_all, fields(node = request.get_ref().node_id))]
    async fn decommission_node(
        &self,
        request: Request<pb::DecommissionNodeRequest>,
    ) -> Result<Response<pb::DecommissionNodeResponse>, Status> {
        self.access
            .check(&request, "sluice:DecommissionNode", "*")?;
        let request = request.into_inner();
        self.broker
            .decommission(request.node_id, request.cancel)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::DecommissionNodeResponse {}))
    }
}

/// The `sluice.v1.Streams` service.
pub struct StreamsApi {
    broker: Broker,
    access: Access,
}

pub fn streams_service(
    broker: Broker,
    access: Access,
) -> WithMethodPath<StreamsServer<StreamsApi>> {
    WithMethodPath::new(StreamsServer::new(StreamsApi { broker, access }))
}

#[tonic::async_trait]
impl Streams for StreamsApi {
    #[tracing::instrument(name = "grpc.set_scaling_policy", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn set_scaling_policy(
        &self,
        request: Request<pb::SetScalingPolicyRequest>,
    ) -> Result<Response<pb::SetScalingPolicyResponse>, Status> {
        self.access.check_stream(
            &request,
            "sluice:SetScalingPolicy",
            &request.get_ref().stream_name,
        )?;
        let request = request.into_inner();
        let policy = request.policy.map(|p| ScalingPolicy {
            target_utilization_percent: p.target_utilization_percent,
            min_shards: p.min_shards,
            max_shards: p.max_shards,
            cooldown_secs: p.cooldown_secs,
        });
        self.broker
            .set_scaling_policy(&request.stream_name, policy)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::SetScalingPolicyResponse {}))
    }

    #[tracing::instrument(name = "grpc.get_scaling_policy", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn get_scaling_policy(
        &self,
        request: Request<pb::GetScalingPolicyRequest>,
    ) -> Result<Response<pb::GetScalingPolicyResponse>, Status> {
        self.access.check_stream(
            &request,
            "sluice:GetScalingPolicy",
            &request.get_ref().stream_name,
        )?;
        let stream = self
            .broker
            .stream(&request.get_ref().stream_name)
            .map_err(status_of)?;
        Ok(Response::new(pb::GetScalingPolicyResponse {
            policy: stream.scaling_policy.map(|p| pb::ScalingPolicy {
                target_utilization_percent: p.target_utilization_percent,
                min_shards: p.min_shards,
                max_shards: p.max_shards,
                cooldown_secs: p.cooldown_secs,
            }),
        }))
    }

    #[tracing::instrument(name = "grpc.create_stream", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn create_stream(
        &self,
        request: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::CreateStreamResponse>, Status> {
        self.access.check_stream(
            &request,
            "kinesis:CreateStream",
            &request.get_ref().stream_name,
        )?;
        admin::create_stream(&self.broker, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "grpc.delete_stream", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn delete_stream(
        &self,
        request: Request<pb::DeleteStreamRequest>,
    ) -> Result<Response<pb::DeleteStreamResponse>, Status> {
        self.access.check_stream(
            &request,
            "kinesis:DeleteStream",
            &request.get_ref().stream_name,
        )?;
        admin::delete_stream(&self.broker, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "grpc.describe_stream", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn describe_stream(
        &self,
        request: Request<pb::DescribeStreamRequest>,
    ) -> Result<Response<pb::DescribeStreamResponse>, Status> {
        self.access.check_stream(
            &request,
            "kinesis:DescribeStream",
            &request.get_ref().stream_name,
        )?;
        admin::describe_stream(&self.broker, request.into_inner()).map(Response::new)
    }

    #[tracing::instrument(name = "grpc.list_streams", skip_all)]
    async fn list_streams(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        self.access.check(&request, "kinesis:ListStreams", "*")?;
        admin::list_streams(&self.broker, request.into_inner()).map(Response::new)
    }

    #[tracing::instrument(name = "grpc.split_shard", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn split_shard(
        &self,
        request: Request<pb::SplitShardRequest>,
    ) -> Result<Response<pb::SplitShardResponse>, Status> {
        self.access.check_stream(
            &request,
            "kinesis:SplitShard",
            &request.get_ref().stream_name,
        )?;
        admin::split_shard(&self.broker, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "grpc.merge_shards", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn merge_shards(
        &self,
        request: Request<pb::MergeShardsRequest>,
    ) -> Result<Response<pb::MergeShardsResponse>, Status> {
        self.access.check_stream(
            &request,
            "kinesis:MergeShards",
            &request.get_ref().stream_name,
        )?;
        admin::merge_shards(&self.broker, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "grpc.update_shard_count", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn update_shard_count(
        &self,
        request: Request<pb::UpdateShardCountRequest>,
    ) -> Result<Response<pb::UpdateShardCountResponse>, Status> {
        self.access.check_stream(
            &request,
            "kinesis:UpdateShardCount",
            &request.get_ref().stream_name,
        )?;
        admin::update_shard_count(&self.broker, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "grpc.set_retention", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn set_retention(
        &self,
        request: Request<pb::SetRetentionRequest>,
    ) -> Result<Response<pb::SetRetentionResponse>, Status> {
        let wanted = request.get_ref();
        let action = match self.broker.stream(&wanted.stream_name) {
            Ok(stream) if wanted.retention_hours < stream.retention_hours => {
                "kinesis:DecreaseStreamRetentionPeriod"
            }
            _ => "kinesis:IncreaseStreamRetentionPeriod",
        };
        self.access
            .check_stream(&request, action, &request.get_ref().stream_name)?;
        admin::set_retention(&self.broker, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "grpc.add_tags", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn add_tags(
        &self,
        request: Request<pb::AddTagsRequest>,
    ) -> Result<Response<pb::AddTagsResponse>, Status> {
        self.access.check_stream(
            &request,
            "kinesis:AddTagsToStream",
            &request.get_ref().stream_name,
        )?;
        admin::add_tags(&self.broker, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "grpc.remove_tags", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn remove_tags(
        &self,
        request: Request<pb::RemoveTagsRequest>,
    ) -> Result<Response<pb::RemoveTagsResponse>, Status> {
        self.access.check_stream(
            &request,
            "kinesis:RemoveTagsFromStream",
            &request.get_ref().stream_name,
        )?;
        admin::remove_tags(&self.broker, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// The `sluice.v1.FanOut` service.
pub struct FanOutApi {
    broker: Broker,
    access: Access,
}

pub fn fan_out_service(broker: Broker, access: Access) -> WithMethodPath<FanOutServer<FanOutApi>> {
    WithMethodPath::new(FanOutServer::new(FanOutApi { broker, access }))
}

type EventStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<pb::SubscribeToShardEvent, Status>> + Send>,
>;

#[tonic::async_trait]
impl FanOut for FanOutApi {
    type SubscribeToShardStream = EventStream;

    #[tracing::instrument(name = "grpc.subscribe_to_shard", skip_all, fields(shard = %request.get_ref().shard_id))]
    async fn subscribe_to_shard(
        &self,
        request: Request<pb::SubscribeToShardRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.access.check(
            &request,
            "kinesis:SubscribeToShard",
            &request.get_ref().consumer_arn,
        )?;
        let request = request.into_inner();
        let position = request.starting_position.unwrap_or_default();
        let start = data::iterator_start(position)?;
        let subscription = self
            .broker
            .subscribe_to_shard(&request.consumer_arn, &request.shard_id, start)
            .await
            .map_err(status_of)?;
        Ok(Response::new(Box::pin(events(subscription))))
    }
}

/// The subscription's events as protobuf messages; an error ends the stream.
fn events(
    subscription: Subscription,
) -> impl futures_core::Stream<Item = Result<pb::SubscribeToShardEvent, Status>> + Send {
    futures_util::stream::unfold(Some(subscription), |state| async move {
        let mut subscription = state?;
        match subscription.next().await? {
            Ok(event) => {
                let message = pb::SubscribeToShardEvent {
                    records: event
                        .records
                        .iter()
                        .map(|r| record_pb(event.shard, r))
                        .collect(),
                    continuation_sequence_number: event.continuation.map(|c| c.to_string()),
                    millis_behind_latest: event.millis_behind_latest,
                    child_shards: event
                        .child_shards
                        .unwrap_or_default()
                        .iter()
                        .map(child_shard_pb)
                        .collect(),
                };
                Some((Ok(message), Some(subscription)))
            }
            Err(error) => Some((Err(status_of(error)), None)),
        }
    })
}

/// A stored record as the protobuf API carries it.
pub(crate) fn record_pb(shard: sluice_types::ShardId, record: &StoredRecord) -> pb::Record {
    pb::Record {
        sequence_number: SequenceNumber::of_record(shard, record.offset).to_string(),
        approximate_arrival_timestamp_ms: record.arrival_ms,
        data: record.data.clone(),
        partition_key: record.partition_key.clone(),
    }
}

/// A child shard reported at the end of a closed shard.
pub(crate) fn child_shard_pb(child: &ChildShard) -> pb::ChildShard {
    pb::ChildShard {
        shard_id: child.shard.to_string(),
        parent_shards: child.parents.iter().map(|p| p.to_string()).collect(),
        starting_hash_key: child.start_hash.to_string(),
        ending_hash_key: child.end_hash.to_string(),
    }
}
