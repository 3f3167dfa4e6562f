//! The tonic services of the native `sluice.v1` API, implemented over the `Broker`.
//!
//! Knows nothing of Kinesis JSON/CBOR shapes or storage. Entry function: [`node_service`].

use sluice_cluster::Broker;
use sluice_proto::v1::node_server::{Node, NodeServer};
use sluice_proto::v1::{GetNodeInfoRequest, GetNodeInfoResponse};
use tonic::{Request, Response, Status};

/// The `sluice.v1.Node` service.
pub struct NodeApi {
    broker: Broker,
    kinesis_address: String,
}

pub fn node_service(broker: Broker, kinesis_address: String) -> NodeServer<NodeApi> {
    NodeServer::new(NodeApi {
        broker,
        kinesis_address,
    })
}

#[tonic::async_trait]
impl Node for NodeApi {
    async fn get_node_info(
        &self,
        _request: Request<GetNodeInfoRequest>,
    ) -> Result<Response<GetNodeInfoResponse>, Status> {
        let identity = self.broker.identity();
        Ok(Response::new(GetNodeInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kinesis_address: self.kinesis_address.clone(),
            region: identity.region.clone(),
            account_id: identity.account.clone(),
            stream_count: self.broker.with_state(|s| s.streams.len() as u32),
        }))
    }
}
