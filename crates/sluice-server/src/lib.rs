//! The composition root of a node: typed configuration, wiring of the broker to the
//! Kinesis HTTP gateway and the gRPC services, and graceful shutdown.
//!
//! It holds no protocol or storage logic of its own. Entry points: [`Config`] and
//! [`serve`], which takes already-bound listeners and a shutdown future so tests can bind
//! port 0 and run the very same code as production.

mod config;

pub use config::{AdminKey, AuthMode, Config, ConfigError, LogFormat, RawConfig, TlsFiles};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use sluice_cluster::throttle::ShardLimitsConfig;
use sluice_cluster::{Broker, BrokerConfig, BrokerError, Identity};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("open the broker")]
    Broker(#[from] BrokerError),
    #[error("serve grpc")]
    Grpc(#[source] tonic::transport::Error),
    #[error("listener")]
    Io(#[from] std::io::Error),
}

/// The listeners a node serves on, bound by the caller.
pub struct Listeners {
    pub kinesis: TcpListener,
    pub grpc: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        Ok(Listeners {
            kinesis: TcpListener::bind(config.kinesis_addr).await?,
            grpc: TcpListener::bind(config.grpc_addr).await?,
        })
    }
}

/// Runs a node until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let broker = Broker::open(BrokerConfig {
        identity: Identity {
            account: config.account_id.clone(),
            region: config.region.clone(),
            shard_limit: config.shard_limit,
        },
        fsync: config.fsync,
        segment_bytes: config.segment_bytes,
        retention_check_interval: config.retention_check_interval,
        shard_limits: if config.throughput_limits {
            ShardLimitsConfig::default()
        } else {
            ShardLimitsConfig::disabled()
        },
        ..BrokerConfig::new(&config.data_dir)
    })
    .await?;
    let kinesis_addr = listeners.kinesis.local_addr()?;
    let grpc_addr = listeners.grpc.local_addr()?;
    tracing::info!(
        kinesis = %kinesis_addr,
        grpc = %grpc_addr,
        data_dir = %config.data_dir.display(),
        fsync = config.fsync,
        throughput_limits = config.throughput_limits,
        "sluice node serving; authentication is off: any signature is accepted"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut registry = prometheus_client::registry::Registry::default();
    broker.metrics().register(&mut registry);
    let registry = std::sync::Arc::new(registry);
    let kinesis_router = sluice_gateway::router(broker.clone()).route(
        "/metrics",
        axum::routing::get(move || metrics_page(std::sync::Arc::clone(&registry))),
    );
    tasks.spawn(serve_kinesis(
        listeners.kinesis,
        kinesis_router,
        stop_rx.clone(),
    ));
    let grpc_service = sluice_grpc::node_service(broker.clone(), kinesis_addr.to_string());
    let streams_service = sluice_grpc::streams_service(broker.clone());
    let fan_out_service = sluice_grpc::fan_out_service(broker.clone());
    let data_service = sluice_grpc::data_service(broker.clone());
    let mut grpc_stop = stop_rx.clone();
    tasks.spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listeners.grpc);
        tonic::transport::Server::builder()
            .add_service(grpc_service)
            .add_service(streams_service)
            .add_service(fan_out_service)
            .add_service(data_service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grpc_stop.wait_for(|stop| *stop).await;
            })
            .await
            .map_err(ServerError::Grpc)
    });

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Err(error)) = joined {
            result = Err(error);
        }
    }
    broker.shutdown().await;
    result
}

/// `GET /metrics`: Prometheus text exposition of the broker's counters.
async fn metrics_page(
    registry: std::sync::Arc<prometheus_client::registry::Registry>,
) -> axum::response::Response {
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::error!(error = %error, "encode metrics");
    }
    let mut response = axum::response::Response::new(axum::body::Body::from(text));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}

/// Serves the Kinesis API over HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port.
async fn serve_kinesis(
    listener: TcpListener,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut connections = JoinSet::new();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http2()
            .max_concurrent_streams(1000)
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10 s; closing them");
        }
    }
    Ok(())
}
