//! An async client of Sluice's native gRPC API (`sluice.v1`).
//!
//! [`Client`] connects to any node, learns the cluster from it (nodes, each stream's shards
//! with their hash key ranges, each shard's leader) and keeps one channel per node.
//! [`Consumer`] reads every shard of a stream, children after their parents.
//! [`Producer`] batches records and sends each shard's records straight to the node that
//! leads it, over that node's `Produce` stream, never reordering the records of a shard (so
//! of a partition key). Every node accepts every call (a node that does not lead a shard
//! passes the write on), so routing only saves a hop: a stale map costs latency, never
//! correctness.
//!
//! ```no_run
//! # async fn example() -> Result<(), sluice_client::Error> {
//! use sluice_client::{Client, ClientConfig, ProducerConfig};
//! let client = Client::connect(ClientConfig::new("http://127.0.0.1:50051")).await?;
//! let producer = client.producer("orders", ProducerConfig::default()).await?;
//! let ack = producer.send("customer-7", &b"{\"total\": 12}"[..]).await?.await?;
//! println!("{} {}", ack.shard_id, ack.sequence_number);
//! producer.flush().await?;
//! # Ok(())
//! # }
//! ```

mod consumer;
mod producer;
mod routes;

pub use consumer::{Consumer, Position, ShardRecords};
pub use producer::{Ack, Delivery, Producer, ProducerConfig};
pub use routes::{ShardRoute, StreamRoutes};

use sluice_proto::v1 as pb;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel whose calls carry the `authorization` value when credentials are set.
pub type Signed = InterceptedService<Channel, Signer>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node answered with an error: `kind` is the Kinesis error type (e.g.
    /// `ResourceNotFoundException`) when the node named one.
    #[error("{kind}: {message}")]
    Api {
        code: tonic::Code,
        kind: String,
        message: String,
    },
    /// No connection could be made (the source says why).
    #[error("connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request cannot be made as given.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A record failed after the producer's last attempt.
    #[error("record not written after {attempts} attempts: {kind}: {message}")]
    NotWritten {
        attempts: u32,
        kind: String,
        message: String,
    },
    /// The producer stopped (closed, or its task ended) before the record's outcome was known.
    #[error("the producer stopped")]
    Closed,
}

impl Error {
    /// The Kinesis error type of an API error (`None` for other errors).
    pub fn kind(&self) -> Option<&str> {
        match self {
            Error::Api { kind, .. } | Error::NotWritten { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let kind = status
            .metadata()
            .get("x-sluice-error-type")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| format!("{:?}", status.code()), str::to_owned);
        Error::Api {
            code: status.code(),
            kind,
            message: status.message().to_owned(),
        }
    }
}

/// Signs each call for a node's `authorization` check (nodes without authentication
/// ignore it).
#[derive(Clone, Default)]
pub struct Signer {
    credentials: Option<(String, String)>,
}

impl Signer {
    /// Signs with this access key.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Signer {
            credentials: Some((access_key_id.into(), secret_access_key.into())),
        }
    }

    /// Signs with `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` when both are set.
    pub fn from_env() -> Self {
        let id = std::env::var("AWS_ACCESS_KEY_ID").ok();
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok();
        Signer {
            credentials: id.zip(secret),
        }
    }
}

impl tonic::service::Interceptor for Signer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let Some((id, secret)) = &self.credentials else {
            return Ok(request);
        };
        let path = request
            .extensions()
            .get::<tonic::GrpcMethod>()
            .map(|m| format!("/{}/{}", m.service(), m.method()))
            .unwrap_or_default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let value = sluice_auth::token::sign(id, secret, &path, now);
        let value = value
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("access key id is not valid metadata"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct ClientConfig {
    /// gRPC endpoint of any node: `http://host:port`, or `https://` for a node with TLS.
    pub endpoint: String,
    /// PEM CA bundle to trust for `https://` endpoints, besides the system roots.
    pub ca_bundle: Option<PathBuf>,
    pub signer: Signer,
}

impl ClientConfig {
    /// An endpoint, signing with the access key in the environment if there is one.
    pub fn new(endpoint: impl Into<String>) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            ca_bundle: None,
            signer: Signer::from_env(),
        }
    }
}

/// A connection to a Sluice cluster.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    seed: Channel,
    /// Channels to nodes by their advertised gRPC address.
    channels: Mutex<HashMap<String, Channel>>,
}

/// Largest message accepted from a node (a `ReadShard` batch holds up to 10 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

impl Client {
    /// Connects to the configured node.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let seed = channel(&config, &config.endpoint).await?;
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                seed,
                channels: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The unsigned channel to the node given at connect time (for clients that add
    /// their own interceptor).
    pub fn seed_channel(&self) -> Channel {
        self.inner.seed.clone()
    }

    /// The channel to the node given at connect time.
    pub fn seed(&self) -> Signed {
        InterceptedService::new(self.inner.seed.clone(), self.inner.config.signer.clone())
    }

    /// The channel to the node at `grpc_address` (`host:port`, as the cluster advertises
    /// it), made on first use with the scheme and TLS settings of the seed endpoint.
    pub async fn node(&self, grpc_address: &str) -> Result<Signed, Error> {
        let known = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(grpc_address)
            .cloned();
        let channel = match known {
            Some(channel) => channel,
            None => {
                let scheme = if self.inner.config.endpoint.starts_with("https://") {
                    "https"
                } else {
                    "http"
                };
                let made =
                    channel(&self.inner.config, &format!("{scheme}://{grpc_address}")).await?;
                self.inner
                    .channels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(grpc_address.to_owned())
                    .or_insert(made)
                    .clone()
            }
        };
        Ok(InterceptedService::new(
            channel,
            self.inner.config.signer.clone(),
        ))
    }

    /// A client of the `Streams` service on the seed node.
    pub fn streams(&self) -> pb::streams_client::StreamsClient<Signed> {
        pb::streams_client::StreamsClient::new(self.seed())
    }

    /// A client of the `Data` service on the seed node.
    pub fn data(&self) -> pb::data_client::DataClient<Signed> {
        pb::data_client::DataClient::new(self.seed()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Creates a stream with `shards` provisioned shards and waits until it is ACTIVE.
    pub async fn create_stream(&self, name: &str, shards: u32) -> Result<(), Error> {
        self.streams()
            .create_stream(pb::CreateStreamRequest {
                stream_name: name.to_owned(),
                shard_count: shards,
                ..Default::default()
            })
            .await?;
        self.wait_active(name).await
    }

    /// Waits until the stream is ACTIVE (polling every 100 ms, for at most a minute).
    pub async fn wait_active(&self, name: &str) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let stream = self.describe_stream(name).await?;
            if stream.status == "ACTIVE" {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Api {
                    code: tonic::Code::DeadlineExceeded,
                    kind: "ResourceInUseException".to_owned(),
                    message: format!("stream {name} is still {}", stream.status),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The stream's description, every shard included.
    pub async fn describe_stream(&self, name: &str) -> Result<pb::StreamDescription, Error> {
        let answer = self
            .streams()
            .describe_stream(pb::DescribeStreamRequest {
                stream_name: name.to_owned(),
            })
            .await?
            .into_inner();
        answer.stream.ok_or_else(|| Error::Api {
            code: tonic::Code::Internal,
            kind: "InternalFailure".to_owned(),
            message: "the node described no stream".to_owned(),
        })
    }

    /// Where each open shard of `stream` is written: its hash key range and the gRPC
    /// address of its leader, as the seed node knows them now.
    pub async fn routes(&self, stream: &str) -> Result<StreamRoutes, Error> {
        let description = self.describe_stream(stream).await?;
        let status = pb::node_client::NodeClient::new(self.seed())
            .get_cluster_status(pb::GetClusterStatusRequest {})
            .await?
            .into_inner();
        StreamRoutes::new(&description, &status)
    }

    /// A consumer of every shard of `stream` from `position` (see [`Consumer`]).
    pub async fn consumer(&self, stream: &str, position: Position) -> Result<Consumer, Error> {
        Consumer::start(self, stream, position).await
    }

    /// A batching producer for `stream` (see [`Producer`]).
    pub async fn producer(&self, stream: &str, config: ProducerConfig) -> Result<Producer, Error> {
        Producer::start(self.clone(), stream, config).await
    }
}

/// Opens a channel to `endpoint` with the configuration's TLS settings.
async fn channel(config: &ClientConfig, endpoint: &str) -> Result<Channel, Error> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| Error::Connect {
        endpoint: endpoint.to_owned(),
        source,
    };
    let mut builder = Channel::from_shared(endpoint.to_owned())
        .map_err(|e| failed(e.into()))?
        .tcp_nodelay(true);
    if endpoint.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(path) = &config.ca_bundle {
            let pem = std::fs::read(path)
                .map_err(|e| failed(format!("read CA bundle {}: {e}", path.display()).into()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        builder = builder.tls_config(tls).map_err(|e| failed(e.into()))?;
    }
    builder.connect().await.map_err(|e| failed(e.into()))
}
