//! How a node dials its peers: [`peer_channel`] builds the lazy tonic channel every
//! node-to-node client uses (the transport's [`Router`](crate::Router), and the shard
//! service's clients in `sluice-cluster`), cleartext or, with [`PeerTls`], TLS.
//!
//! With TLS the channel's connector opens the TCP connection (bound to the node's listen IP,
//! `TCP_NODELAY`) and runs the rustls handshake itself: the peer's certificate must chain
//! to the configured peer CA and name the host (DNS name or IP address) of the dialled
//! address, and the node presents its own certificate when the peer asks for one (mutual
//! TLS). tonic sees a plain connection, so the channel's URI keeps the `http` scheme.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

/// How long a connection attempt to a peer may take, TLS handshake included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The TLS client side of node-to-node calls: a rustls configuration that trusts the peer
/// CA, offers ALPN `h2` and presents the node's certificate. Cheap to clone.
#[derive(Clone)]
pub struct PeerTls {
    config: Arc<ClientConfig>,
}

impl PeerTls {
    /// Wraps a client configuration; its ALPN protocols are set to `h2`.
    pub fn new(mut config: ClientConfig) -> PeerTls {
        config.alpn_protocols = vec![b"h2".to_vec()];
        PeerTls {
            config: Arc::new(config),
        }
    }
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

/// A lazy channel to the peer at `addr` (`host:port`, the host a DNS name or an IP
/// address), or `None` when `addr` is not a URI authority. Connections are made on first
/// use and again after a failure.
pub fn peer_channel(
    addr: &str,
    tls: Option<&PeerTls>,
    local_ip: Option<IpAddr>,
) -> Option<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    // The authority must name a host and a port: the connector dials exactly that.
    let uri = endpoint.uri();
    if uri.host().is_none() || uri.port_u16().is_none() {
        return None;
    }
    Some(match tls {
        None => endpoint.local_address(local_ip).connect_lazy(),
        Some(tls) => endpoint.connect_with_connector_lazy(TlsPeerConnector {
            tls: TlsConnector::from(Arc::clone(&tls.config)),
            local_ip,
        }),
    })
}

/// Dials a peer and runs the TLS handshake (see the module documentation).
#[derive(Clone)]
struct TlsPeerConnector {
    tls: TlsConnector,
    local_ip: Option<IpAddr>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for TlsPeerConnector {
    type Response = hyper_util::rt::TokioIo<TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("a peer address without a host")?;
            let port = uri.port_u16().ok_or("a peer address without a port")?;
            // An IPv6 literal comes bracketed out of the URI.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name = ServerName::try_from(host.clone())?;
            let tcp = connect_tcp(&host, port, this.local_ip).await?;
            let tls = this.tls.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// Connects to the first address of `host` that accepts, from `local_ip` when given.
async fn connect_tcp(
    host: &str,
    port: u16,
    local_ip: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = local_ip
            && ip.is_ipv4() == addr.is_ipv4()
        {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        match socket.connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no address found for {host}"),
        )
    }))
}
