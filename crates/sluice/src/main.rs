//! The `sluice` command: `sluice server` runs a node; `sluice bench` drives load at any
//! Kinesis endpoint; `sluice stream`, `put`, `tail` and `auth` talk to a node over gRPC;
//! `sluice keyring` manages the local master keys.

mod auth;
mod bench;
mod cluster;
mod grpc;
mod json_api;
mod keyring;
mod kinesis;
mod put;
mod stream;
mod tail;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_server::{Config, Listeners, LogFormat, RawConfig};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kinesis-compatible streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Server(Box<ServerArgs>),
    /// Drive load at a Kinesis endpoint and print throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// Administer streams.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Write lines from standard input or a file as records.
    Put(put::PutArgs),
    /// Follow a stream (all shards, across splits and merges) and print its records.
    Tail(tail::TailArgs),
    /// Manage access keys and their policies.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Manage the master keys of encryption at rest in a local keyring file.
    Keyring(keyring::KeyringArgs),
    /// Inspect the cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for all data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Kinesis API address (HTTP/1.1 and HTTP/2).
    #[arg(long)]
    kinesis_addr: Option<String>,
    /// gRPC API address.
    #[arg(long)]
    grpc_addr: Option<String>,
    /// Admin HTTP address for /metrics, /healthz and /readyz (off unless set).
    #[arg(long)]
    admin_addr: Option<String>,
    /// Region used in ARNs.
    #[arg(long)]
    region: Option<String>,
    /// Account id used in ARNs and messages.
    #[arg(long)]
    account_id: Option<String>,
    /// Acknowledge writes only after fsync (default true).
    #[arg(long)]
    fsync: Option<bool>,
    /// Enforce AWS's per-shard throughput limits on provisioned streams (default true).
    #[arg(long)]
    throughput_limits: Option<bool>,
    /// Log level filter, e.g. info or sluice=debug.
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// Authentication: none (any signature accepted) or sigv4.
    #[arg(long)]
    auth: Option<String>,
    /// PEM certificate chain for TLS on the Kinesis and gRPC listeners.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle: require gRPC clients to present a certificate it signed (mutual TLS).
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// PEM CA bundle other nodes' certificates must chain to when this node dials them
    /// over TLS (default: --tls-client-ca).
    #[arg(long)]
    tls_peer_ca: Option<PathBuf>,
    /// Zone (failure domain) of this node: shard replicas are spread over distinct zones.
    #[arg(long)]
    zone: Option<String>,
    /// Master keyring file for encryption at rest (default <data-dir>/keyring.json).
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// This node's id in the cluster (stable across restarts; stored in the data directory).
    #[arg(long)]
    node_id: Option<u64>,
    /// gRPC address peers and native clients dial (default: --grpc-addr).
    #[arg(long)]
    advertise_grpc_addr: Option<String>,
    /// Kinesis address other nodes name for this node (default: --kinesis-addr).
    #[arg(long)]
    advertise_kinesis_addr: Option<String>,
    /// gRPC addresses of running members to join (comma-separated). Without it, a node
    /// with no metadata bootstraps a new cluster.
    #[arg(long, value_delimiter = ',')]
    join: Option<Vec<String>>,
    /// Replicas per shard, capped by the node count (default 3).
    #[arg(long)]
    replication_factor: Option<u32>,
    /// Seconds a node may be unreachable before its replicas are re-created elsewhere (default 300).
    #[arg(long)]
    dead_node_grace_secs: Option<u64>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => run_server(*args),
        Command::Bench(args) => bench::run(args),
        Command::Stream(command) => stream::run(command),
        Command::Put(args) => put::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Auth(command) => auth::run(command),
        Command::Keyring(args) => keyring::run(args),
        Command::Cluster(command) => cluster::run(command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line: the error and its causes, without a backtrace.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let flags = RawConfig {
        data_dir: args.data_dir,
        kinesis_addr: args.kinesis_addr,
        grpc_addr: args.grpc_addr,
        admin_addr: args.admin_addr,
        region: args.region,
        account_id: args.account_id,
        fsync: args.fsync,
        throughput_limits: args.throughput_limits,
        log_level: args.log_level,
        log_format: args.log_format,
        auth: args.auth,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_client_ca: args.tls_client_ca,
        tls_peer_ca: args.tls_peer_ca,
        zone: args.zone,
        keyring: args.keyring,
        node_id: args.node_id,
        advertise_grpc_addr: args.advertise_grpc_addr,
        advertise_kinesis_addr: args.advertise_kinesis_addr,
        join: args.join,
        replication_factor: args.replication_factor,
        dead_node_grace_secs: args.dead_node_grace_secs,
        ..RawConfig::default()
    };
    let config_file = args
        .config
        .or_else(|| env.get("SLUICE_CONFIG").map(PathBuf::from));
    let file = match config_file {
        Some(path) => RawConfig::from_toml_file(&path)?,
        None => RawConfig::default(),
    };
    let raw = flags.over(RawConfig::from_env(&env)?).over(file);
    let config = Config::from_raw(raw).context("validate configuration")?;
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await.context("bind listeners")?;
        sluice_server::serve(config, listeners, shutdown_signal()).await?;
        anyhow::Ok(())
    })
}

/// Runs one client command on a current-thread runtime.
fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(future: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?
        .block_on(future)
}

fn init_tracing(config: &Config) {
    // openraft reports every election, membership step and failed heartbeat of every group
    // (one per shard): unless the filter names it, only its warnings are kept, and a peer
    // that is down is not reported once per heartbeat.
    let level = if config.log_level.contains("openraft") {
        config.log_level.clone()
    } else {
        format!(
            "{},openraft=warn,openraft::core::heartbeat=error",
            config.log_level
        )
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
