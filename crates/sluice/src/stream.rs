//! `sluice stream …`: stream administration over the native gRPC API.

use crate::grpc::status_error;
use anyhow::Context;
use sluice_proto::v1::streams_client::StreamsClient;
use sluice_proto::v1::{GetScalingPolicyRequest, ScalingPolicy, SetScalingPolicyRequest};

/// `sluice stream` subcommands.
#[derive(clap::Subcommand)]
pub enum StreamCommand {
    /// Show, set or remove a stream's automatic scaling policy.
    ///
    /// With a policy the scaler splits a shard whose write utilisation reaches the target
    /// and merges neighbours whose combined utilisation stays below half of it, within
    /// [min, max] shards, waiting the cool-down after each step before merging. On-demand
    /// streams scale without a policy.
    Autoscale(AutoscaleArgs),
}

#[derive(clap::Args)]
pub struct AutoscaleArgs {
    /// The stream.
    stream: String,
    /// Target write utilisation in percent of the per-shard limit.
    #[arg(long, default_value_t = 70)]
    target: u32,
    #[arg(long, default_value_t = 1)]
    min: u32,
    #[arg(long, default_value_t = 64)]
    max: u32,
    /// Seconds after a scaling step before shards may be merged.
    #[arg(long, default_value_t = 300)]
    cooldown: u64,
    /// Remove the stream's policy instead of setting one.
    #[arg(long, conflicts_with_all = ["show"])]
    off: bool,
    /// Print the current policy and change nothing.
    #[arg(long)]
    show: bool,
    #[command(flatten)]
    node: crate::grpc::Target,
}

pub fn run(command: StreamCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(async move {
        match command {
            StreamCommand::Autoscale(args) => autoscale(args).await,
        }
    })
}

async fn autoscale(args: AutoscaleArgs) -> anyhow::Result<()> {
    let (channel, signer) = args.node.connect().await?;
    let mut client = StreamsClient::with_interceptor(channel, signer);
    if args.show {
        let policy = client
            .get_scaling_policy(GetScalingPolicyRequest {
                stream_name: args.stream.clone(),
            })
            .await
            .map_err(status_error)?
            .into_inner()
            .policy;
        match policy {
            Some(p) => println!(
                "{}: target {}%, shards {}..={}, cool-down {} s",
                args.stream,
                p.target_utilization_percent,
                p.min_shards,
                p.max_shards,
                p.cooldown_secs
            ),
            None => println!("{}: no scaling policy", args.stream),
        }
        return Ok(());
    }
    let policy = (!args.off).then_some(ScalingPolicy {
        target_utilization_percent: args.target,
        min_shards: args.min,
        max_shards: args.max,
        cooldown_secs: args.cooldown,
    });
    client
        .set_scaling_policy(SetScalingPolicyRequest {
            stream_name: args.stream.clone(),
            policy,
        })
        .await
        .map_err(status_error)?;
    if args.off {
        println!("{}: scaling policy removed", args.stream);
    } else {
        println!(
            "{}: scaling between {} and {} shards at {}% target, cool-down {} s",
            args.stream, args.min, args.max, args.target, args.cooldown
        );
    }
    Ok(())
}
