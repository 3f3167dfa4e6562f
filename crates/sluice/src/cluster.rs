//! `sluice cluster status`: the cluster as one node sees it (members, the metadata leader,
//! each shard's replicas, leader and move in progress, draining nodes), and `sluice
//! cluster decommission`: drain a node, over the native gRPC API.

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
    /// Drain a node: nothing new is placed on it, its replicas move to the other nodes, and
    /// it leaves the cluster once it holds none (stop it then). In a cluster no larger than
    /// the replication factor, its shards keep one replica fewer until a node joins.
    Decommission {
        /// The node's id, as `sluice cluster status` lists it.
        node_id: u64,
        /// Take the node back instead (replicas already moved stay where they are).
        #[arg(long)]
        cancel: bool,
        #[command(flatten)]
        node: grpc::Target,
    },
}

pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    crate::block_on(async move {
        match command {
            ClusterCommand::Status { node, output } => status(node, output == "json").await,
            ClusterCommand::Decommission {
                node_id,
                cancel,
                node,
            } => decommission(node, node_id, cancel).await,
        }
    })
}

async fn decommission(node: grpc::Target, node_id: u64, cancel: bool) -> anyhow::Result<()> {
    let (channel, signer) = node.connect().await?;
    NodeClient::with_interceptor(channel, signer)
        .decommission_node(pb::DecommissionNodeRequest { node_id, cancel })
        .await
        .map_err(status_error)?;
    if cancel {
        println!("node {node_id} is no longer draining");
    } else {
        println!(
            "node {node_id} is draining: its replicas move to the other nodes, then it leaves the cluster (follow with `sluice cluster status`)"
        );
    }
    Ok(())
}

/// `from→to` of a move, `-` for an absent side.
fn move_text(moving: &pb::ShardMove) -> String {
    format!("{}->{}", id_or_dash(moving.from), id_or_dash(moving.to))
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
                "Zone": n.zone,
                "Voter": n.voter,
                "Draining": n.draining,
            })).collect::<Vec<_>>(),
            "Shards": status.shards.iter().map(|s| json!({
                "StreamName": s.stream_name,
                "ShardId": s.shard_id,
                "Replicas": s.replicas,
                "Leader": s.leader,
                "LeaderEpoch": s.leader_epoch,
                "Closed": s.closed,
                "Move": s.moving.as_ref().map(|m| json!({"From": m.from, "To": m.to})),
            })).collect::<Vec<_>>(),
            "Draining": status.draining,
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
        "{:<22} {:<8} {:<24} {:<24} {:<16}",
        "NODE", "ROLE", "GRPC", "KINESIS", "ZONE"
    );
    for node in &status.nodes {
        let role = if node.id == status.metadata_leader {
            "leader"
        } else if node.voter {
            "voter"
        } else {
            "learner"
        };
        let state = if node.draining { "draining" } else { "" };
        let line = format!(
            "{:<22} {:<8} {:<24} {:<24} {:<16} {state}",
            node.id,
            role,
            node.grpc_address,
            node.kinesis_address,
            if node.zone.is_empty() {
                "-"
            } else {
                &node.zone
            }
        );
        println!("{}", line.trim_end());
    }
    let gone: Vec<String> = status
        .draining
        .iter()
        .filter(|id| !status.nodes.iter().any(|n| n.id == **id))
        .map(u64::to_string)
        .collect();
    if !gone.is_empty() {
        println!("drained and removed: {}", gone.join(","));
    }
    if status.shards.is_empty() {
        return Ok(());
    }
    println!();
    println!(
        "{:<24} {:<22} {:<8} {:<8} {:<6} {:<12} MOVING",
        "STREAM", "SHARD", "STATE", "LEADER", "EPOCH", "REPLICAS"
    );
    for shard in &status.shards {
        let replicas: Vec<String> = shard.replicas.iter().map(u64::to_string).collect();
        let line = format!(
            "{:<24} {:<22} {:<8} {:<8} {:<6} {:<12} {}",
            shard.stream_name,
            shard.shard_id,
            if shard.closed { "closed" } else { "open" },
            id_or_dash(shard.leader),
            id_or_dash(shard.leader_epoch),
            replicas.join(","),
            shard.moving.as_ref().map_or_else(String::new, move_text)
        );
        println!("{}", line.trim_end());
    }
    Ok(())
}
