//! `sluice stream …`: stream administration over the native gRPC API (or the Kinesis JSON
//! API with `--kinesis-endpoint`), with human tables by default and `--output json` for
//! scripts.

use crate::grpc::{self, status_error};
use crate::json_api;
use crate::kinesis::Kinesis;
use anyhow::Context;
use serde_json::json;
use sluice_proto::v1 as pb;
use sluice_proto::v1::streams_client::StreamsClient;
use sluice_proto::v1::{GetScalingPolicyRequest, ScalingPolicy, SetScalingPolicyRequest};
use std::collections::HashMap;

/// `sluice stream` subcommands.
#[derive(clap::Subcommand)]
pub enum StreamCommand {
    /// Create a stream (provisioned with --shards, or --on-demand).
    Create {
        stream: String,
        /// Open shards of a provisioned stream.
        #[arg(long, default_value_t = 1, conflicts_with = "on_demand")]
        shards: u32,
        /// Capacity mode ON_DEMAND: starts with 4 shards and scales with traffic.
        #[arg(long)]
        on_demand: bool,
        /// Tags as KEY=VALUE (repeatable).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        #[command(flatten)]
        common: Common,
    },
    /// List streams.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Show a stream and its shards.
    Describe {
        stream: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a stream.
    Delete {
        stream: String,
        /// Also deregister its enhanced fan-out consumers.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Split a shard in two (at the middle of its hash-key range unless --at is given).
    Split {
        stream: String,
        /// The shard, e.g. shardId-000000000000 or 0.
        shard: String,
        /// Decimal hash key where the second child starts.
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Merge a shard with the adjacent one that follows it.
    Merge {
        stream: String,
        shard: String,
        adjacent: String,
        #[command(flatten)]
        common: Common,
    },
    /// Reshard to a number of open shards (uniform scaling).
    Scale {
        stream: String,
        #[arg(long)]
        shards: u32,
        #[command(flatten)]
        common: Common,
    },
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

/// Options every administration command takes.
#[derive(clap::Args)]
pub struct Common {
    #[command(flatten)]
    node: json_api::ApiTarget,
    /// Print JSON instead of text.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    output: String,
    /// After a change (create, delete, split, merge, scale), wait until the stream is
    /// ACTIVE again (gone, after delete) before answering.
    #[arg(long)]
    wait: bool,
}

impl Common {
    fn json(&self) -> bool {
        self.output == "json"
    }

    async fn api(&self) -> anyhow::Result<Api> {
        if let Some(kinesis) = self.node.kinesis()? {
            return Ok(Api::Json(kinesis));
        }
        let (channel, signer) = self.node.node.connect().await?;
        Ok(Api::Grpc(StreamsClient::with_interceptor(channel, signer)))
    }
}

/// The API a command goes through.
#[allow(clippy::large_enum_variant)] // one value per command
enum Api {
    Grpc(StreamsClient<grpc::Signed>),
    Json(Kinesis),
}

impl Api {
    async fn create(
        &mut self,
        stream: &str,
        shards: u32,
        on_demand: bool,
        tags: HashMap<String, String>,
    ) -> anyhow::Result<()> {
        match self {
            Api::Json(kinesis) => {
                json_api::create_stream(kinesis, stream, shards, on_demand, tags).await
            }
            Api::Grpc(client) => client
                .create_stream(pb::CreateStreamRequest {
                    stream_name: stream.to_owned(),
                    shard_count: if on_demand { 0 } else { shards },
                    on_demand,
                    tags,
                })
                .await
                .map(drop)
                .map_err(status_error),
        }
    }

    async fn delete(&mut self, stream: &str, force: bool) -> anyhow::Result<()> {
        match self {
            Api::Json(kinesis) => json_api::delete_stream(kinesis, stream, force).await,
            Api::Grpc(client) => client
                .delete_stream(pb::DeleteStreamRequest {
                    stream_name: stream.to_owned(),
                    enforce_consumer_deletion: force,
                })
                .await
                .map(drop)
                .map_err(status_error),
        }
    }

    async fn split(&mut self, stream: &str, shard: &str, at: &str) -> anyhow::Result<()> {
        match self {
            Api::Json(kinesis) => json_api::split_shard(kinesis, stream, shard, at).await,
            Api::Grpc(client) => client
                .split_shard(pb::SplitShardRequest {
                    stream_name: stream.to_owned(),
                    shard_id: shard.to_owned(),
                    new_starting_hash_key: at.to_owned(),
                })
                .await
                .map(drop)
                .map_err(status_error),
        }
    }

    async fn merge(&mut self, stream: &str, shard: &str, adjacent: &str) -> anyhow::Result<()> {
        match self {
            Api::Json(kinesis) => json_api::merge_shards(kinesis, stream, shard, adjacent).await,
            Api::Grpc(client) => client
                .merge_shards(pb::MergeShardsRequest {
                    stream_name: stream.to_owned(),
                    shard_id: shard.to_owned(),
                    adjacent_shard_id: adjacent.to_owned(),
                })
                .await
                .map(drop)
                .map_err(status_error),
        }
    }

    async fn scale(
        &mut self,
        stream: &str,
        shards: u32,
    ) -> anyhow::Result<pb::UpdateShardCountResponse> {
        match self {
            Api::Json(kinesis) => json_api::update_shard_count(kinesis, stream, shards).await,
            Api::Grpc(client) => client
                .update_shard_count(pb::UpdateShardCountRequest {
                    stream_name: stream.to_owned(),
                    target_shard_count: shards,
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(status_error),
        }
    }

    async fn list(&mut self) -> anyhow::Result<Vec<pb::StreamSummary>> {
        let client = match self {
            Api::Json(kinesis) => return json_api::list_streams(kinesis).await,
            Api::Grpc(client) => client,
        };
        let mut streams = Vec::new();
        loop {
            let page = client
                .list_streams(pb::ListStreamsRequest {
                    exclusive_start_stream_name: streams
                        .last()
                        .map(|s: &pb::StreamSummary| s.stream_name.clone())
                        .unwrap_or_default(),
                    limit: 100,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let more = page.has_more_streams && !page.streams.is_empty();
            streams.extend(page.streams);
            if !more {
                return Ok(streams);
            }
        }
    }

    async fn describe(&mut self, stream: &str) -> anyhow::Result<pb::StreamDescription> {
        match self {
            Api::Json(kinesis) => json_api::describe_stream(kinesis, stream).await,
            Api::Grpc(client) => client
                .describe_stream(pb::DescribeStreamRequest {
                    stream_name: stream.to_owned(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .stream
                .context("the node answered without a stream description"),
        }
    }

    /// The stream's status; `None` when it does not exist.
    async fn status(&mut self, stream: &str) -> anyhow::Result<Option<String>> {
        match self {
            Api::Json(kinesis) => json_api::stream_status(kinesis, stream).await,
            Api::Grpc(client) => {
                let request = pb::DescribeStreamRequest {
                    stream_name: stream.to_owned(),
                };
                match client.describe_stream(request).await {
                    Ok(answer) => Ok(answer.into_inner().stream.map(|s| s.status)),
                    Err(status)
                        if grpc::error_kind(&status) == Some("ResourceNotFoundException") =>
                    {
                        Ok(None)
                    }
                    Err(status) => Err(status_error(status)),
                }
            }
        }
    }
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

pub fn run(command: StreamCommand) -> anyhow::Result<()> {
    crate::block_on(async move {
        match command {
            StreamCommand::Autoscale(args) => autoscale(args).await,
            StreamCommand::Create {
                stream,
                shards,
                on_demand,
                tags,
                common,
            } => {
                let tags = tags.into_iter().collect();
                let mut api = common.api().await?;
                api.create(&stream, shards, on_demand, tags).await?;
                settle(&common, &mut api, &stream, false).await?;
                done(&common, &stream, "created")
            }
            StreamCommand::List { common } => list(common).await,
            StreamCommand::Describe { stream, common } => describe(&stream, common).await,
            StreamCommand::Delete {
                stream,
                force,
                common,
            } => {
                let mut api = common.api().await?;
                api.delete(&stream, force).await?;
                settle(&common, &mut api, &stream, true).await?;
                done(
                    &common,
                    &stream,
                    if common.wait { "deleted" } else { "deleting" },
                )
            }
            StreamCommand::Split {
                stream,
                shard,
                at,
                common,
            } => split(&stream, &shard, at, common).await,
            StreamCommand::Merge {
                stream,
                shard,
                adjacent,
                common,
            } => {
                let mut api = common.api().await?;
                api.merge(&stream, &shard_id(&shard), &shard_id(&adjacent))
                    .await?;
                settle(&common, &mut api, &stream, false).await?;
                done(
                    &common,
                    &stream,
                    if common.wait { "merged" } else { "merging" },
                )
            }
            StreamCommand::Scale {
                stream,
                shards,
                common,
            } => {
                let mut api = common.api().await?;
                let answer = api.scale(&stream, shards).await?;
                settle(&common, &mut api, &stream, false).await?;
                if common.json() {
                    println!(
                        "{}",
                        json!({
                            "StreamName": stream,
                            "CurrentShardCount": answer.current_shard_count,
                            "TargetShardCount": answer.target_shard_count,
                        })
                    );
                } else {
                    println!(
                        "{stream}: scaling from {} to {} shards",
                        answer.current_shard_count, answer.target_shard_count
                    );
                }
                Ok(())
            }
        }
    })
}

/// A field a server did not give (older Kinesis-compatible servers lack some) as `-`.
fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

/// `shardId-000000000003` for `3`; other text unchanged.
fn shard_id(text: &str) -> String {
    match text.parse::<u32>() {
        Ok(n) => format!("shardId-{n:012}"),
        Err(_) => text.to_owned(),
    }
}

/// With `--wait`: polls the stream until it is ACTIVE (or, when `gone`, until it no longer
/// exists), with a spinner on a terminal; gives up after ten minutes.
async fn settle(common: &Common, api: &mut Api, stream: &str, gone: bool) -> anyhow::Result<()> {
    if !common.wait {
        return Ok(());
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let status = match api.status(stream).await? {
            Some(status) => status,
            None if gone => break,
            None => anyhow::bail!("stream {stream} no longer exists"),
        };
        if status == "ACTIVE" && !gone {
            break;
        }
        spinner.set_message(format!("{stream}: {status}"));
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("{stream} is still {status} after ten minutes");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    spinner.finish_and_clear();
    Ok(())
}

fn done(common: &Common, stream: &str, status: &str) -> anyhow::Result<()> {
    if common.json() {
        println!("{}", json!({"StreamName": stream, "Status": status}));
    } else {
        println!("{stream}: {status}");
    }
    Ok(())
}

async fn list(common: Common) -> anyhow::Result<()> {
    let streams = common.api().await?.list().await?;
    if common.json() {
        let items: Vec<_> = streams
            .iter()
            .map(|s| {
                json!({
                    "StreamName": s.stream_name,
                    "StreamARN": s.stream_arn,
                    "StreamStatus": s.status,
                    "StreamMode": s.mode,
                    "CreatedMs": s.created_ms,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
        return Ok(());
    }
    println!("{:<32} {:<10} {:<12}", "STREAM", "STATUS", "MODE");
    for s in streams {
        println!(
            "{:<32} {:<10} {:<12}",
            s.stream_name,
            or_dash(&s.status),
            or_dash(&s.mode)
        );
    }
    Ok(())
}

async fn describe_stream(common: &Common, stream: &str) -> anyhow::Result<pb::StreamDescription> {
    common.api().await?.describe(stream).await
}

async fn describe(stream: &str, common: Common) -> anyhow::Result<()> {
    let description = describe_stream(&common, stream).await?;
    if common.json() {
        let shards: Vec<_> = description
            .shards
            .iter()
            .map(|s| {
                json!({
                    "ShardId": s.shard_id,
                    "ParentShardId": s.parent_shard_id,
                    "AdjacentParentShardId": s.adjacent_parent_shard_id,
                    "HashKeyRange": {
                        "StartingHashKey": s.starting_hash_key,
                        "EndingHashKey": s.ending_hash_key,
                    },
                    "SequenceNumberRange": {
                        "StartingSequenceNumber": s.starting_sequence_number,
                        "EndingSequenceNumber": s.ending_sequence_number,
                    },
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "StreamName": description.stream_name,
                "StreamARN": description.stream_arn,
                "StreamStatus": description.status,
                "StreamMode": description.mode,
                "RetentionPeriodHours": description.retention_hours,
                "OpenShardCount": description.open_shard_count,
                "CreatedMs": description.created_ms,
                "Tags": description.tags,
                "Shards": shards,
            })
        );
        return Ok(());
    }
    println!("stream     {}", description.stream_name);
    println!("arn        {}", description.stream_arn);
    println!("status     {}", or_dash(&description.status));
    println!("mode       {}", or_dash(&description.mode));
    println!("retention  {} h", description.retention_hours);
    println!("open       {} shards", description.open_shard_count);
    println!();
    println!(
        "{:<22} {:<7} {:<22} {:>40}  {:>40}",
        "SHARD", "STATE", "PARENTS", "STARTING HASH KEY", "ENDING HASH KEY"
    );
    for s in &description.shards {
        let parents: Vec<&str> = s
            .parent_shard_id
            .iter()
            .chain(s.adjacent_parent_shard_id.iter())
            .map(String::as_str)
            .collect();
        println!(
            "{:<22} {:<7} {:<22} {:>40}  {:>40}",
            s.shard_id,
            if s.ending_sequence_number.is_some() {
                "closed"
            } else {
                "open"
            },
            parents.join(","),
            s.starting_hash_key,
            s.ending_hash_key
        );
    }
    Ok(())
}

async fn split(
    stream: &str,
    shard: &str,
    at: Option<String>,
    common: Common,
) -> anyhow::Result<()> {
    let shard = shard_id(shard);
    let at = match at {
        Some(at) => at,
        None => {
            let description = describe_stream(&common, stream).await?;
            let found = description
                .shards
                .iter()
                .find(|s| s.shard_id == shard)
                .with_context(|| format!("stream {stream} has no shard {shard}"))?;
            let start: u128 = found
                .starting_hash_key
                .parse()
                .context("starting hash key")?;
            let end: u128 = found.ending_hash_key.parse().context("ending hash key")?;
            (start + (end - start) / 2 + 1).to_string()
        }
    };
    let mut api = common.api().await?;
    api.split(stream, &shard, &at).await?;
    settle(&common, &mut api, stream, false).await?;
    if common.json() {
        println!(
            "{}",
            json!({"StreamName": stream, "ShardId": shard, "NewStartingHashKey": at, "Status": "splitting"})
        );
    } else {
        println!("{stream}: splitting {shard} at {at}");
    }
    Ok(())
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
