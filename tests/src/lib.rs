//! Test harness for the black-box suites: nodes started in-process on port-0 listeners or
//! as real `sluice` processes (for `kill -9`), AWS SDK clients pointed at them, a raw HTTP
//! client for malformed requests, and `wait_for` helpers that poll a condition instead of
//! sleeping.

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod checker;
pub mod cluster;
pub mod faultproxy;
pub mod signing;

/// A node running inside the test process.
pub struct Node {
    pub kinesis_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// The admin listener, when `NodeOptions::admin` asked for one.
    pub admin_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), sluice_server::ServerError>>>,
}

/// Options for an in-process node.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    pub fsync: bool,
    pub shard_limit: Option<u32>,
    /// AWS's per-shard throughput limits; off unless a test is about them.
    pub throughput_limits: bool,
    /// Further settings (authentication, TLS, keyring); these win over the ones above.
    pub config: sluice_server::RawConfig,
    /// Serve the admin endpoints on a port of their own.
    pub admin: bool,
}

impl Node {
    /// Starts a node with a fresh data directory.
    pub async fn start() -> Node {
        Self::start_with(NodeOptions::default()).await
    }

    pub async fn start_with(options: NodeOptions) -> Node {
        let temp = tempfile::tempdir().expect("create temp dir");
        let dir = temp.path().to_owned();
        let mut node = Self::start_in(&dir, options).await;
        node._temp = Some(temp);
        node
    }

    /// Starts a node on an existing data directory (for restarts).
    pub async fn start_in(dir: &Path, options: NodeOptions) -> Node {
        let kinesis = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind kinesis");
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let kinesis_addr = kinesis.local_addr().expect("kinesis addr");
        let grpc_addr = grpc.local_addr().expect("grpc addr");
        let raw = sluice_server::RawConfig {
            data_dir: Some(dir.to_owned()),
            kinesis_addr: Some(kinesis_addr.to_string()),
            grpc_addr: Some(grpc_addr.to_string()),
            fsync: Some(options.fsync),
            shard_limit: options.shard_limit,
            throughput_limits: Some(options.throughput_limits),
            ..sluice_server::RawConfig::default()
        };
        let raw = options.config.clone().over(raw);
        let node_tls = raw.tls_cert.is_some();
        let config = sluice_server::Config::from_raw(raw).expect("valid config");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let admin = if options.admin {
            Some(TcpListener::bind("127.0.0.1:0").await.expect("bind admin"))
        } else {
            None
        };
        let admin_addr = admin
            .as_ref()
            .map(|listener| listener.local_addr().expect("admin addr"));
        let listeners = sluice_server::Listeners {
            kinesis,
            grpc,
            admin,
        };
        let task = tokio::spawn(sluice_server::serve(config, listeners, async move {
            let _ = stop_rx.await;
        }));
        let node = Node {
            kinesis_addr,
            grpc_addr,
            admin_addr,
            data_dir: dir.to_owned(),
            _temp: None,
            stop: Some(stop_tx),
            task: Some(task),
        };
        if node_tls {
            wait_until_accepting(kinesis_addr).await;
        } else {
            wait_until_ready(kinesis_addr).await;
        }
        node
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.kinesis_addr)
    }

    pub fn client(&self) -> aws_sdk_kinesis::Client {
        client_for(&self.endpoint())
    }

    /// Stops the node gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = task.await.expect("node task panicked");
            result.expect("node stopped with an error");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An AWS SDK client for an endpoint, with dummy credentials (an open node accepts any).
pub fn client_for(endpoint: &str) -> aws_sdk_kinesis::Client {
    client_with_key(endpoint, "AKIDEXAMPLE", "secret")
}

/// An AWS SDK client that signs with the given access key.
pub fn client_with_key(
    endpoint: &str,
    access_key_id: &str,
    secret: &str,
) -> aws_sdk_kinesis::Client {
    let http_client = aws_smithy_http_client::Builder::new().build_http();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key_id, secret, None, None, "tests"))
        .endpoint_url(endpoint)
        .http_client(http_client)
        // Tests see every answer as the server gave it, throttling included.
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

async fn wait_until_accepting(addr: SocketAddr) {
    wait_for(
        "the kinesis port to accept connections",
        Duration::from_secs(30),
        || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
    )
    .await;
}

/// Waits until `GET /readyz` on the (plain HTTP) Kinesis port answers 200: the node is a
/// member of a cluster with a metadata leader.
pub async fn wait_until_ready(addr: SocketAddr) {
    wait_for(
        "the node to be ready",
        Duration::from_secs(60),
        || async move {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return false;
            }
            http_get(addr, "/readyz").await.0 == 200
        },
    )
    .await;
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until a stream is ACTIVE.
pub async fn wait_active(client: &aws_sdk_kinesis::Client, stream: &str) {
    wait_for(
        &format!("stream {stream} to be ACTIVE"),
        Duration::from_secs(30),
        || async {
            client
                .describe_stream_summary()
                .stream_name(stream)
                .send()
                .await
                .map(|out| {
                    out.stream_description_summary()
                        .map(|d| d.stream_status().as_str() == "ACTIVE")
                        .unwrap_or(false)
                })
                .unwrap_or(false)
        },
    )
    .await;
}

/// Waits until a stream no longer exists.
pub async fn wait_gone(client: &aws_sdk_kinesis::Client, stream: &str) {
    wait_for(
        &format!("stream {stream} to be deleted"),
        Duration::from_secs(30),
        || async {
            matches!(
                client.describe_stream_summary().stream_name(stream).send().await,
                Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception())
            )
        },
    )
    .await;
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends one Kinesis request with an arbitrary body (HTTP/1.1).
pub async fn raw_request(
    addr: SocketAddr,
    target: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> RawResponse {
    raw_request_version(addr, target, content_type, body, false).await
}

/// Sends one request over HTTP/1.1 or cleartext HTTP/2 with prior knowledge.
pub async fn raw_request_version(
    addr: SocketAddr,
    target: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
    http2: bool,
) -> RawResponse {
    let mut request =
        hyper::Request::post(format!("http://{addr}/")).header("content-type", content_type);
    if let Some(target) = target {
        request = request.header("x-amz-target", target);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .expect("request");
    send(request, http2).await
}

/// Sends a prepared request over HTTP/1.1 or cleartext HTTP/2 with prior knowledge.
pub async fn send(request: hyper::Request<Full<bytes::Bytes>>, http2: bool) -> RawResponse {
    let mut builder =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    if http2 {
        builder.http2_only(true);
    }
    let client = builder.build_http::<Full<bytes::Bytes>>();
    let response = client.request(request).await.expect("send request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes()
        .to_vec();
    RawResponse {
        status,
        content_type,
        body,
    }
}

/// A `sluice server` process, for crash tests.
pub struct ProcessNode {
    child: Option<Child>,
    pub kinesis_addr: SocketAddr,
    pub data_dir: PathBuf,
}

/// The `sluice` binary next to the test executable (built by `make test` first).
pub fn sluice_binary() -> PathBuf {
    if let Ok(path) = std::env::var("SLUICE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/integration-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    profile_dir.join("sluice")
}

/// Free ports on one address, held until dropped: the ports of one node are picked
/// together, so no two of them are the same (a port bound and released at once can be
/// handed out again by the next bind).
pub struct PortReservation<const N: usize> {
    listeners: [std::net::TcpListener; N],
}

impl<const N: usize> PortReservation<N> {
    /// Binds `N` ports on `ip`.
    pub fn new(ip: std::net::IpAddr) -> PortReservation<N> {
        let listeners = std::array::from_fn(|_| {
            std::net::TcpListener::bind(SocketAddr::new(ip, 0)).expect("pick a free port")
        });
        PortReservation { listeners }
    }

    /// The reserved addresses, in the order they were bound.
    pub fn addrs(&self) -> [SocketAddr; N] {
        self.listeners
            .each_ref()
            .map(|listener| listener.local_addr().expect("reserved address"))
    }
}

impl ProcessNode {
    /// Starts `sluice server` on `dir` with fsync on, and waits until it serves.
    pub async fn start(dir: &Path) -> ProcessNode {
        let binary = sluice_binary();
        assert!(
            binary.exists(),
            "{} is missing: build it with `cargo build -p sluice`",
            binary.display()
        );
        let [kinesis_addr, grpc_addr] = PortReservation::new([127, 0, 0, 1].into()).addrs();
        let grpc = grpc_addr.to_string();
        let child = Command::new(binary)
            .args(["server", "--data-dir"])
            .arg(dir)
            .args([
                "--kinesis-addr",
                &kinesis_addr.to_string(),
                "--grpc-addr",
                &grpc,
                "--fsync",
                "true",
                "--throughput-limits",
                "false",
            ])
            .env("SLUICE_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sluice");
        wait_until_ready(kinesis_addr).await;
        ProcessNode {
            child: Some(child),
            kinesis_addr,
            data_dir: dir.to_owned(),
        }
    }

    pub fn client(&self) -> aws_sdk_kinesis::Client {
        client_for(&format!("http://{}", self.kinesis_addr))
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `GET path` on the node's Kinesis port; returns the body as text.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = hyper::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(bytes::Bytes::new()))
        .expect("request");
    let response = client.request(request).await.expect("send request");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
