//! The composition root of a node: typed configuration, wiring of the broker to the
//! Kinesis HTTP gateway and the gRPC services, and graceful shutdown.
//!
//! It holds no protocol or storage logic of its own. Entry points: [`Config`] and
//! [`serve`], which takes already-bound listeners and a shutdown future so tests can bind
//! port 0 and run the very same code as production. `tls` puts both listeners behind
//! rustls when the configuration names certificate files.

mod config;
mod node_id;
mod tls;
mod zone;

pub use config::{
    AdminKey, AuthMode, ClusterConfig, Config, ConfigError, LogFormat, RawConfig, TlsFiles,
    split_list,
};
pub use tls::{TlsError, error_chain};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use sluice_cluster::throttle::ShardLimitsConfig;
use sluice_cluster::{Broker, BrokerConfig, BrokerError, Identity, MetaNode, PeerNode};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("open the broker")]
    Broker(#[from] BrokerError),
    #[error("serve grpc")]
    Grpc(#[source] tonic::transport::Error),
    #[error("listener")]
    Io(#[from] std::io::Error),
    #[error("load the tls files")]
    Tls(#[from] TlsError),
    #[error("node id: {0}")]
    NodeId(String),
}

/// The listeners a node serves on, bound by the caller.
pub struct Listeners {
    pub kinesis: TcpListener,
    pub grpc: TcpListener,
    /// `/metrics`, `/healthz` and `/readyz` over plain HTTP, when configured.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let admin = match config.admin_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Listeners {
            kinesis: TcpListener::bind(config.kinesis_addr).await?,
            grpc: TcpListener::bind(config.grpc_addr).await?,
            admin,
        })
    }
}

/// Runs a node until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // Unusable certificate files stop the node before it opens anything.
    let tls = match &config.tls {
        Some(files) => Some(tls::Tls::load(files).await?),
        None => None,
    };
    let broker = Broker::open(BrokerConfig {
        identity: Identity {
            account: config.account_id.clone(),
            region: config.region.clone(),
            shard_limit: config.shard_limit,
            replication_factor: config.cluster.replication_factor,
        },
        fsync: config.fsync,
        segment_bytes: config.segment_bytes,
        retention_check_interval: config.retention_check_interval,
        shard_limits: if config.throughput_limits {
            ShardLimitsConfig::default()
        } else {
            ShardLimitsConfig::disabled()
        },
        keys: sluice_cluster::open_local_keyring(&config.keyring_path).await?,
        node: MetaNode {
            id: node_id::resolve(&config.data_dir, &config.cluster).await?,
            node: PeerNode {
                grpc: config.cluster.advertise_grpc_addr.clone(),
                kinesis: config.cluster.advertise_kinesis_addr.clone(),
                zone: zone::resolve(&config.cluster).await,
            },
            join: config.cluster.join.clone(),
        },
        peer_local_ip: Some(config.grpc_addr.ip()),
        peer_tls: tls.as_ref().map(tls::Tls::peer_tls),
        dead_node_grace: config.cluster.dead_node_grace,
        ..BrokerConfig::new(&config.data_dir)
    })
    .await?;
    let authentication = authentication_mode(&config);
    let kinesis_addr = listeners.kinesis.local_addr()?;
    let grpc_addr = listeners.grpc.local_addr()?;
    tracing::info!(
        kinesis = %kinesis_addr,
        grpc = %grpc_addr,
        data_dir = %config.data_dir.display(),
        fsync = config.fsync,
        throughput_limits = config.throughput_limits,
        "sluice node serving"
    );
    match authentication {
        sluice_gateway::Authentication::Open => tracing::warn!(
            "authentication is off: any signature is accepted (start with --auth sigv4 to require signed requests)"
        ),
        sluice_gateway::Authentication::SigV4 => tracing::info!(
            access_keys = broker.list_access_keys().len(),
            "authentication is on: requests must be signed (SigV4 on the Kinesis API, SLUICE1-HMAC-SHA256 on gRPC) and are checked against policies"
        ),
    }
    match &config.tls {
        Some(files) => tracing::info!(
            cert = %files.cert.display(),
            key = %files.key.display(),
            client_ca = files.client_ca.as_ref().map(|ca| ca.display().to_string()),
            reload_interval_secs = tls::RELOAD_INTERVAL.as_secs(),
            "tls is on for the kinesis and grpc listeners"
        ),
        None => tracing::info!("tls is off: the listeners speak plain http"),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let (kinesis_tls, grpc_tls) = match tls {
        Some(tls) => {
            let acceptors = (Some(tls.kinesis_acceptor()), Some(tls.grpc_acceptor()));
            let reloader = tls.into_reloader();
            let stop = stop_rx.clone();
            tasks.spawn(async move {
                reloader.run(stop).await;
                Ok(())
            });
            acceptors
        }
        None => (None, None),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    broker.metrics().register(&mut registry);
    let gateway_metrics = sluice_gateway::GatewayMetrics::default();
    gateway_metrics.register(&mut registry);
    let registry = std::sync::Arc::new(registry);
    let ready = std::sync::Arc::new(AtomicBool::new(false));
    let kinesis_router = sluice_gateway::router(broker.clone(), authentication, gateway_metrics)
        .merge(admin_routes(
            std::sync::Arc::clone(&registry),
            std::sync::Arc::clone(&ready),
        ));
    if let Some(admin) = listeners.admin {
        let router = admin_routes(
            std::sync::Arc::clone(&registry),
            std::sync::Arc::clone(&ready),
        );
        let mut stop = stop_rx.clone();
        tracing::info!(admin = %admin.local_addr()?, "admin endpoints: /metrics /healthz /readyz");
        tasks.spawn(async move {
            axum::serve(admin, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await
                .map_err(ServerError::Io)
        });
    }
    tasks.spawn(serve_kinesis(
        listeners.kinesis,
        kinesis_tls,
        kinesis_router,
        stop_rx.clone(),
    ));
    let access = sluice_grpc::Access::new(
        broker.clone(),
        authentication == sluice_gateway::Authentication::SigV4,
    );
    let grpc_service =
        sluice_grpc::node_service(broker.clone(), access.clone(), kinesis_addr.to_string());
    let streams_service = sluice_grpc::streams_service(broker.clone(), access.clone());
    let fan_out_service = sluice_grpc::fan_out_service(broker.clone(), access.clone());
    let data_service = sluice_grpc::data_service(broker.clone(), access.clone());
    let auth_service = sluice_grpc::auth_service(broker.clone(), access);
    let peer_service = broker.peer_service();
    let shard_service = broker.shard_service();
    let mut grpc_stop = stop_rx.clone();
    tasks.spawn(async move {
        let router = tonic::transport::Server::builder()
            .add_service(grpc_service)
            .add_service(streams_service)
            .add_service(fan_out_service)
            .add_service(data_service)
            .add_service(auth_service)
            .add_service(peer_service)
            .add_service(shard_service);
        let accept_stop = grpc_stop.clone();
        let mut grace_stop = grpc_stop.clone();
        let stopped = async move {
            let _ = grpc_stop.wait_for(|stop| *stop).await;
        };
        let served = async move { match grpc_tls {
            None => {
                // Small answers (acks, Raft replies) must not wait for the peer's delayed ACK.
                let incoming = tonic::transport::server::TcpIncoming::from(listeners.grpc)
                    .with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, stopped).await
            }
            Some(acceptor) => {
                let (ready, mut handshaken) = mpsc::channel(64);
                let incoming = futures_util::stream::poll_fn(move |cx| {
                    handshaken
                        .poll_recv(cx)
                        .map(|stream| stream.map(Ok::<_, std::io::Error>))
                });
                let accept = accept_grpc_tls(listeners.grpc, acceptor, ready, accept_stop);
                let (_, served) = tokio::join!(
                    accept,
                    router.serve_with_incoming_shutdown(incoming, stopped)
                );
                served
            }
        } };
        // Streams a client keeps open (Produce, ReadShard, SubscribeToShard) would hold a
        // graceful shutdown forever: they are cut after a grace period.
        let grace = async move {
            let _ = grace_stop.wait_for(|stop| *stop).await;
            tokio::time::sleep(GRPC_SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            served = served => served.map_err(ServerError::Grpc),
            () = grace => {
                tracing::info!("closing the gRPC streams still open after the shutdown grace period");
                Ok(())
            }
        }
    });

    // Ready once the node is a cluster member with a metadata leader and the configured
    // admin key exists.
    {
        let broker = broker.clone();
        let ready = std::sync::Arc::clone(&ready);
        let admin_key = config.admin_key.clone();
        let auth = config.auth;
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = become_ready(broker, admin_key, auth, ready) => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
            Ok(())
        });
    }
    shutdown.await;
    ready.store(false, Ordering::Release);
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

fn authentication_mode(config: &Config) -> sluice_gateway::Authentication {
    match config.auth {
        AuthMode::Open => sluice_gateway::Authentication::Open,
        AuthMode::SigV4 => sluice_gateway::Authentication::SigV4,
    }
}

/// Waits until the node is a member of a cluster with a metadata leader, installs the
/// configured bootstrap admin key (retrying while the cluster cannot take it), then marks
/// the node ready.
async fn become_ready(
    broker: Broker,
    admin_key: Option<config::AdminKey>,
    auth: AuthMode,
    ready: std::sync::Arc<AtomicBool>,
) {
    let mut delay = std::time::Duration::from_millis(20);
    while !broker.ready() {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_millis(250));
    }
    if let Some(admin) = &admin_key {
        while let Err(error) = broker
            .ensure_admin_key(&admin.access_key_id, &admin.secret_access_key)
            .await
        {
            tracing::warn!(%error, "could not install the admin access key yet; retrying");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    if auth == AuthMode::SigV4 && broker.list_access_keys().is_empty() {
        tracing::warn!(
            "authentication is on but no access key exists: set SLUICE_ADMIN_ACCESS_KEY_ID and SLUICE_ADMIN_SECRET_ACCESS_KEY to create the first one"
        );
    }
    let (members, leader) = broker.cluster_members();
    tracing::info!(
        node_id = broker.node_id(),
        members = members.len(),
        leader,
        "node ready"
    );
    ready.store(true, Ordering::Release);
}

/// `/metrics`, `/healthz` (the process answers) and `/readyz` (the node serves and is not
/// shutting down), for the admin listener and the Kinesis port alike.
fn admin_routes(
    registry: std::sync::Arc<prometheus_client::registry::Registry>,
    ready: std::sync::Arc<AtomicBool>,
) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || metrics_page(std::sync::Arc::clone(&registry))),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready.load(Ordering::Acquire);
                async move {
                    if ready {
                        (axum::http::StatusCode::OK, "ready\n")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
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

/// Serves the Kinesis API over HTTP/1.1 and HTTP/2 on one port: h2c with prior knowledge,
/// or, with `tls`, HTTP/2 or HTTP/1.1 as ALPN chose.
async fn serve_kinesis(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut connections = JoinSet::new();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = accept(&listener) => accepted,
        };
        // Taken before a handshake, so a connection that completes one after shutdown
        // began is still told to close.
        let watcher = graceful.watcher();
        match &tls {
            None => {
                connections.spawn(http_connection(stream, router.clone(), watcher));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let router = router.clone();
                let mut stop = stop.clone();
                connections.spawn(async move {
                    let handshaken = tokio::select! {
                        _ = stop.wait_for(|stop| *stop) => None,
                        handshaken = tls::handshake(&acceptor, stream, peer, "kinesis") => handshaken,
                    };
                    if let Some(stream) = handshaken {
                        http_connection(stream, router, watcher).await;
                    }
                });
            }
        }
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

/// One Kinesis connection, HTTP/1.1 or HTTP/2 (told apart by the HTTP/2 preface).
fn http_connection<IO>(
    io: IO,
    router: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
) -> impl Future<Output = ()> + Send + 'static
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(1000)
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let connection = watcher.watch(connection.into_owned());
    async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %error, "connection ended with an error");
        }
    }
}

/// Accepts gRPC connections and hands each completed TLS handshake to tonic through
/// `ready`; handshakes run concurrently, so a slow client never holds up the others. Ends
/// when `stop` turns true or tonic stops taking connections; in-flight handshakes are then
/// dropped.
async fn accept_grpc_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<tokio_rustls::server::TlsStream<TcpStream>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = ready.closed() => break,
            accepted = accept(&listener) => accepted,
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        handshakes.spawn(async move {
            if let Some(stream) = tls::handshake(&acceptor, stream, peer, "grpc").await {
                // Refused only when tonic has stopped; the connection is dropped then.
                let _ = ready.send(stream).await;
            }
        });
        while handshakes.try_join_next().is_some() {}
    }
}

/// The next TCP connection, with Nagle off.
/// How long a stopping node lets open gRPC calls finish before it closes them.
const GRPC_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
