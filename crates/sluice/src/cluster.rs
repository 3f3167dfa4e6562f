//! `sluice cluster status`: the cluster as one node sees it (members, the metadata leader,
//! each shard's replicas and leader) over the native gRPC API.

use crate::grpc::{self, status_error};
use serde_json::json;
use sluice_proto::v1 as pb;
use sluice_proto::v1::node_client::NodeClient;

/// `sluice cluster` subcommands.
#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Show the nodes, the metadata leader, and where each shard lives.
    Status {
        #[command(flatten)]
        node: grpc::Target,
        /// Print JSON instead of text.
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
}

pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    crate::block_on(async move {
        match command {
            ClusterCommand::Status { node, output } => status(node, output == "json").await,
        }
    })
}

fn id_or_dash(id: u64) -> String {
    if id == 0 {
        "-".to_owned()
    } else {
        id.to_string()
    }
}

async fn status(node: grpc::Target, json: bool) -> anyhow::Result<()> {
    let (channel, signer) = node.connect().await?;
    let status = NodeClient::with_interceptor(channel, signer)
        .get_cluster_status(pb::GetClusterStatusRequest {})
        .await
        .map_err(status_error)?
        .into_inner();
    if json {
        let value = json!({
            "NodeId": status.node_id,
            "MetadataLeader": status.metadata_leader,
            "Nodes": status.nodes.iter().map(|n| json!({
                "Id": n.id,
                "GrpcAddress": n.grpc_address,
                "KinesisAddress": n.kinesis_address,
                "Voter": n.voter,
            })).collect::<Vec<_>>(),
            "Shards": status.shards.iter().map(|s| json!({
                "StreamName": s.stream_name,
                "ShardId": s.shard_id,
                "Replicas": s.replicas,
                "Leader": s.leader,
                "Closed": s.closed,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "answered by node {}; metadata leader: {}",
        status.node_id,
        id_or_dash(status.metadata_leader)
    );
    println!();
    println!(
        "{:<22} {:<8} {:<24} {:<24}",
        "NODE", "ROLE", "GRPC", "KINESIS"
    );
    for node in &status.nodes {
        let role = if node.id == status.metadata_leader {
            "leader"
        } else if node.voter {
            "voter"
        } else {
            "learner"
        };
        println!(
            "{:<22} {:<8} {:<24} {:<24}",
            node.id, role, node.grpc_address, node.kinesis_address
        );
    }
    if status.shards.is_empty() {
        return Ok(());
    }
    println!();
    println!(
        "{:<24} {:<22} {:<8} {:<22} REPLICAS",
        "STREAM", "SHARD", "STATE", "LEADER"
    );
    for shard in &status.shards {
        let replicas: Vec<String> = shard.replicas.iter().map(u64::to_string).collect();
        println!(
            "{:<24} {:<22} {:<8} {:<22} {}",
            shard.stream_name,
            shard.shard_id,
            if shard.closed { "closed" } else { "open" },
            id_or_dash(shard.leader),
            replicas.join(",")
        );
    }
    Ok(())
}
