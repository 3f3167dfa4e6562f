//! A fault-injecting TCP proxy for cutting links between cluster nodes.
//!
//! One [`NodeProxy`] stands in front of each node's gRPC listener and the node advertises the
//! proxy's address, so every peer connection *to* that node flows through it. Each node binds
//! its outgoing peer connections to its own loopback IP (node `i` on `127.0.0.{i+1}`), so the
//! proxy tells peers apart by the connection's source IP. Cutting the link from node `a` to
//! node `b` is then `proxy_of_b.block_from(ip_of_a)`; cutting both directions also blocks `b`
//! at `a`'s proxy (`cluster::Cluster::partition` does both).
//!
//! Blocking a source resets its open connections (both halves, with an RST) and accepts and
//! immediately resets its new ones, until it is unblocked. A client that does not bind its
//! socket connects from `127.0.0.1` whatever loopback address it dials, so on the proxy it
//! looks like node 0.
//!
//! Dropping the proxy closes its listener and every connection it forwards.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A TCP proxy from one listening address to one upstream address, with per-source-IP
/// blocking.
pub struct NodeProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    rules: Arc<Rules>,
    /// Owns the listener and, through its `JoinSet`, every connection task.
    accept_task: JoinHandle<()>,
}

/// Which sources are refused; every change is announced on `changed` so that open
/// connections re-check it.
struct Rules {
    blocked: Mutex<Blocked>,
    changed: watch::Sender<()>,
}

#[derive(Default)]
struct Blocked {
    sources: HashSet<IpAddr>,
    everything: bool,
}

impl Rules {
    fn is_blocked(&self, source: IpAddr) -> bool {
        let blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        blocked.everything || blocked.sources.contains(&source)
    }

    fn update(&self, change: impl FnOnce(&mut Blocked)) {
        {
            let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
            change(&mut blocked);
        }
        self.changed.send_replace(());
    }
}

impl NodeProxy {
    /// Listens on `listen` (port 0 picks a free port; see [`NodeProxy::addr`]) and forwards
    /// every accepted connection to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<NodeProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let rules = Arc::new(Rules {
            blocked: Mutex::new(Blocked::default()),
            changed: watch::Sender::new(()),
        });
        let accept_task = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&rules)));
        Ok(NodeProxy {
            addr,
            upstream,
            rules,
            accept_task,
        })
    }

    /// The address the proxy listens on (what the node advertises to its peers).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Resets every open connection from `source` and refuses new ones until
    /// [`NodeProxy::unblock_from`] or [`NodeProxy::heal`].
    pub fn block_from(&self, source: IpAddr) {
        self.rules.update(|blocked| {
            blocked.sources.insert(source);
        });
    }

    /// Lets new connections from `source` through again (unless the proxy is isolated).
    pub fn unblock_from(&self, source: IpAddr) {
        self.rules.update(|blocked| {
            blocked.sources.remove(&source);
        });
    }

    /// Blocks every source: open connections are reset and new ones refused.
    pub fn isolate(&self) {
        self.rules.update(|blocked| blocked.everything = true);
    }

    /// Lifts every block.
    pub fn heal(&self) {
        self.rules.update(|blocked| *blocked = Blocked::default());
    }

    /// Whether a connection from `source` would be refused now.
    pub fn is_blocked(&self, source: IpAddr) -> bool {
        self.rules.is_blocked(source)
    }
}

impl Drop for NodeProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops the listener and its `JoinSet`, which aborts every
        // connection task and so closes both halves of every forwarded connection.
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, rules: Arc<Rules>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    connections.spawn(forward(client, peer.ip(), upstream, Arc::clone(&rules)));
                }
                // Out of file descriptors and the like: the connection is lost, the
                // listener stays (a short pause keeps the loop from spinning).
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Forwards one connection until either side closes it or its source gets blocked.
async fn forward(mut client: TcpStream, source: IpAddr, upstream: SocketAddr, rules: Arc<Rules>) {
    // Subscribe before the first check so that a block arriving in between is not missed.
    let mut changes = rules.changed.subscribe();
    if rules.is_blocked(source) {
        reset(client);
        return;
    }
    let mut server = tokio::select! {
        connected = TcpStream::connect(upstream) => match connected {
            Ok(server) => server,
            Err(_) => {
                reset(client);
                return;
            }
        },
        () = blocked(&mut changes, &rules, source) => {
            reset(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        // Either side closed (or failed): dropping both streams closes the other one.
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        () = blocked(&mut changes, &rules, source) => {
            reset(client);
            reset(server);
        }
    }
}

/// Resolves once `source` is blocked (never, if the proxy is being dropped).
async fn blocked(changes: &mut watch::Receiver<()>, rules: &Rules, source: IpAddr) {
    loop {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        if rules.is_blocked(source) {
            return;
        }
    }
}

/// Closes a stream with an RST, so that the peer sees a reset rather than an orderly end.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    const BOUND: Duration = Duration::from_secs(5);

    fn loopback(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    /// An upstream that echoes every byte back; returns its address and the task serving it.
    async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("echo addr");
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                connections.spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        (addr, task)
    }

    /// A connection to `to` whose source is `from`.
    async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("bind client source");
        tokio::time::timeout(BOUND, socket.connect(to))
            .await
            .expect("connect in time")
            .expect("connect")
    }

    /// Writes `message` and reads the echo back.
    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(message).await?;
        let mut echoed = vec![0; message.len()];
        tokio::time::timeout(BOUND, stream.read_exact(&mut echoed))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo in time"))??;
        Ok(echoed)
    }

    /// Waits until the peer has closed or reset the connection: the read returns 0 or fails.
    async fn assert_cut(stream: &mut TcpStream) {
        let mut buf = [0; 64];
        let read = tokio::time::timeout(BOUND, stream.read(&mut buf))
            .await
            .expect("the proxy cuts the connection in time");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "expected the connection to be cut, read {read:?}"
        );
    }

    /// A new connection from a blocked source is accepted by the kernel and then cut.
    async fn assert_refused(from: IpAddr, proxy: &NodeProxy) {
        let mut stream = connect_from(from, proxy.addr()).await;
        // The write may or may not fail depending on timing; the read must see the cut.
        let _ = stream.write_all(b"refused?").await;
        assert_cut(&mut stream).await;
    }

    #[tokio::test]
    async fn bytes_flow_both_ways() {
        let (upstream, _echo) = echo_server().await;
        let proxy = NodeProxy::start(SocketAddr::new(loopback(1), 0), upstream)
            .await
            .expect("start proxy");
        assert_eq!(proxy.upstream(), upstream);
        let mut stream = connect_from(loopback(2), proxy.addr()).await;
        assert_eq!(round_trip(&mut stream, b"hello").await.unwrap(), b"hello");
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        assert_eq!(round_trip(&mut stream, &big).await.unwrap(), big);
    }

    #[tokio::test]
    async fn blocking_a_source_cuts_its_connections_and_refuses_new_ones_until_unblocked() {
        let (upstream, _echo) = echo_server().await;
        let proxy = NodeProxy::start(SocketAddr::new(loopback(1), 0), upstream)
            .await
            .expect("start proxy");
        let mut blocked = connect_from(loopback(2), proxy.addr()).await;
        let mut other = connect_from(loopback(3), proxy.addr()).await;
        assert_eq!(round_trip(&mut blocked, b"one").await.unwrap(), b"one");
        assert_eq!(round_trip(&mut other, b"two").await.unwrap(), b"two");

        proxy.block_from(loopback(2));
        assert!(proxy.is_blocked(loopback(2)));
        assert!(!proxy.is_blocked(loopback(3)));
        assert_cut(&mut blocked).await;
        assert_refused(loopback(2), &proxy).await;
        // Another source keeps its open connection and can open new ones.
        assert_eq!(round_trip(&mut other, b"still").await.unwrap(), b"still");
        let mut fresh = connect_from(loopback(3), proxy.addr()).await;
        assert_eq!(round_trip(&mut fresh, b"fresh").await.unwrap(), b"fresh");

        proxy.unblock_from(loopback(2));
        assert!(!proxy.is_blocked(loopback(2)));
        let mut again = connect_from(loopback(2), proxy.addr()).await;
        assert_eq!(round_trip(&mut again, b"again").await.unwrap(), b"again");
    }

    #[tokio::test]
    async fn isolate_blocks_every_source_and_heal_lifts_every_block() {
        let (upstream, _echo) = echo_server().await;
        let proxy = NodeProxy::start(SocketAddr::new(loopback(1), 0), upstream)
            .await
            .expect("start proxy");
        let mut first = connect_from(loopback(2), proxy.addr()).await;
        let mut second = connect_from(loopback(3), proxy.addr()).await;
        assert_eq!(round_trip(&mut first, b"a").await.unwrap(), b"a");
        assert_eq!(round_trip(&mut second, b"b").await.unwrap(), b"b");
        proxy.block_from(loopback(2));
        assert_cut(&mut first).await;

        proxy.isolate();
        assert_cut(&mut second).await;
        assert_refused(loopback(3), &proxy).await;
        assert_refused(loopback(4), &proxy).await;
        // Unblocking one source does not lift the isolation.
        proxy.unblock_from(loopback(3));
        assert_refused(loopback(3), &proxy).await;

        proxy.heal();
        for source in [2, 3, 4] {
            let mut stream = connect_from(loopback(source), proxy.addr()).await;
            assert_eq!(round_trip(&mut stream, b"healed").await.unwrap(), b"healed");
        }
    }

    #[tokio::test]
    async fn an_unreachable_upstream_closes_the_client_connection() {
        // Bind and drop to get a port nobody listens on.
        let upstream = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port");
        let proxy = NodeProxy::start(SocketAddr::new(loopback(1), 0), upstream)
            .await
            .expect("start proxy");
        let mut stream = connect_from(loopback(2), proxy.addr()).await;
        assert_cut(&mut stream).await;
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections_and_its_listener() {
        let (upstream, _echo) = echo_server().await;
        let proxy = NodeProxy::start(SocketAddr::new(loopback(1), 0), upstream)
            .await
            .expect("start proxy");
        let addr = proxy.addr();
        let mut stream = connect_from(loopback(2), addr).await;
        assert_eq!(round_trip(&mut stream, b"x").await.unwrap(), b"x");
        drop(proxy);
        assert_cut(&mut stream).await;
        crate::wait_for("the proxy listener to close", BOUND, || async {
            TcpStream::connect(addr).await.is_err()
        })
        .await;
    }
}
