//! A minimal Kinesis JSON 1.1 client over hyper (HTTP or HTTPS with rustls): one POST per
//! operation, responses as raw bytes, errors classified into timeouts, transport failures
//! and API errors. `sluice bench` drives load with it; the CLI's `--kinesis-endpoint` uses
//! it for every command it offers over the JSON API.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sluice_server::error_chain;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, sleep};

/// Every request (headers and whole body) must finish within this time or counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long stream creation may take before giving up.
const STREAM_READY_TIMEOUT: Duration = Duration::from_secs(120);

const CONTENT_TYPE_JSON: &str = "application/x-amz-json-1.1";

/// Without credentials requests carry a well-formed SigV4 header (and the `x-amz-date` it
/// names) with a zero signature: servers that do not verify signatures accept it, and
/// those that check its shape (kinesalite wants the date header) are satisfied.
fn unsigned_authorization(date: &str) -> String {
    let day = &date[..date.len().min(8)];
    format!(
        "AWS4-HMAC-SHA256 Credential=sluice/{day}/us-east-1/kinesis/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={}",
        "0".repeat(64)
    )
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No complete response within [`REQUEST_TIMEOUT`].
    Timeout,
    /// Connection or protocol failure (refused, reset, malformed HTTP).
    Transport(String),
    /// The server answered with a non-2xx status.
    Api {
        status: u16,
        kind: String,
        message: String,
    },
    /// A 2xx response whose body could not be understood.
    BadResponse(String),
}

impl CallError {
    /// A short label used to tally errors by kind.
    pub fn label(&self) -> String {
        match self {
            CallError::Timeout => format!("timeout ({} s)", REQUEST_TIMEOUT.as_secs()),
            CallError::Transport(message) => format!("transport: {message}"),
            CallError::Api { status, kind, .. } => format!("HTTP {status} {kind}"),
            CallError::BadResponse(message) => format!("bad response: {message}"),
        }
    }

    /// The API error type without namespace, if the server sent one.
    pub fn api_kind(&self) -> Option<&str> {
        match self {
            CallError::Api { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Api {
                status,
                kind,
                message,
            } => write!(f, "HTTP {status} {kind}: {message}"),
            other => f.write_str(&other.label()),
        }
    }
}

impl std::error::Error for CallError {}

/// Real SigV4 credentials, from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` and
/// `AWS_REGION` (or `AWS_DEFAULT_REGION`, else us-east-1).
#[derive(Clone)]
struct Credentials {
    access_key_id: String,
    secret: String,
    region: String,
}

impl Credentials {
    fn from_env() -> Option<Credentials> {
        let access_key_id = std::env::var("AWS_ACCESS_KEY_ID").ok()?;
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok()?;
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".to_owned());
        Some(Credentials {
            access_key_id,
            secret,
            region,
        })
    }
}

/// A cloneable handle on a pool of connections to one endpoint.
#[derive(Clone)]
pub struct Kinesis {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    /// `host:port`, as signed.
    host: String,
    /// Sign every request, as AWS clients do; without credentials a dummy header is sent.
    credentials: Option<Credentials>,
}

impl Kinesis {
    /// `endpoint` is `http://host:port` or `https://host[:port]` (a path, if any, is
    /// ignored). With `http2`, one h2c (prior knowledge) connection carries every request
    /// (over TLS, HTTP/2 when the server offers it); otherwise HTTP/1.1 keep-alive
    /// connections are pooled, one per concurrent caller up to `pool`. HTTPS trusts the
    /// system roots and the PEM certificates in `ca_bundle`.
    pub fn new(
        endpoint: &str,
        http2: bool,
        pool: usize,
        ca_bundle: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let parsed: Uri = endpoint
            .parse()
            .with_context(|| format!("parse endpoint {endpoint:?}"))?;
        let scheme = match parsed.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme.to_owned(),
            _ => bail!("endpoint {endpoint:?} must look like http://host:port or https://host"),
        };
        let Some(authority) = parsed.authority() else {
            bail!("endpoint {endpoint:?} has no host");
        };
        let uri: Uri = format!("{scheme}://{authority}/")
            .parse()
            .context("build request URI")?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.enforce_http(false);
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca_bundle)?)
            .https_or_http()
            .enable_http1();
        let connector = if http2 {
            tls.enable_http2().wrap_connector(connector)
        } else {
            tls.wrap_connector(connector)
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(pool.max(1))
            .pool_idle_timeout(Duration::from_secs(60));
        if http2 {
            builder
                .http2_only(true)
                .http2_initial_stream_window_size(8 << 20)
                .http2_initial_connection_window_size(32 << 20);
        }
        Ok(Self {
            client: builder.build(connector),
            uri,
            host: authority.to_string(),
            credentials: Credentials::from_env(),
        })
    }

    /// The POST request of one operation.
    fn request(&self, op: &str, body: Bytes) -> Result<Request<Full<Bytes>>, CallError> {
        let target = format!("Kinesis_20131202.{op}");
        let target_value =
            HeaderValue::from_str(&target).map_err(|e| CallError::Transport(e.to_string()))?;
        let builder = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, CONTENT_TYPE_JSON)
            .header("x-amz-target", target_value);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let builder = match &self.credentials {
            None => {
                let date = sluice_auth::format_amz_date(now);
                builder
                    .header(AUTHORIZATION, unsigned_authorization(&date))
                    .header("x-amz-date", date)
            }
            Some(credentials) => {
                let (authorization, date) = sluice_auth::sigv4::sign(
                    "POST",
                    "/",
                    &self.host,
                    &[
                        ("content-type", CONTENT_TYPE_JSON),
                        ("x-amz-target", &target),
                    ],
                    &body,
                    &credentials.access_key_id,
                    &credentials.secret,
                    &credentials.region,
                    "kinesis",
                    now,
                );
                builder
                    .header(AUTHORIZATION, authorization)
                    .header("x-amz-date", date)
            }
        };
        builder
            .body(Full::new(body))
            .map_err(|e| CallError::Transport(e.to_string()))
    }

    /// Sends one operation and returns the answer's status and (unread) body.
    async fn exchange(&self, op: &str, body: Bytes) -> Result<(u16, Incoming), CallError> {
        let request = self.request(op, body)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| CallError::Transport(error_chain(&e)))?;
        Ok((response.status().as_u16(), response.into_body()))
    }

    /// Sends one operation whose 2xx answer is a long-lived stream (SubscribeToShard) and
    /// returns the body as soon as the response headers arrive; only the headers (and an
    /// error body) are subject to [`REQUEST_TIMEOUT`]. The caller reads the body frame by
    /// frame; dropping it closes the stream.
    pub async fn open_stream(&self, op: &str, body: Bytes) -> Result<Incoming, CallError> {
        let exchange = async {
            let (status, body) = self.exchange(op, body).await?;
            if (200..300).contains(&status) {
                return Ok(body);
            }
            Err(api_error(status, &read_body(body).await?))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Err(_) => Err(CallError::Timeout),
            Ok(result) => result,
        }
    }

    /// Sends one operation with a pre-encoded JSON body; returns the 2xx response body.
    pub async fn call(&self, op: &str, body: Bytes) -> Result<Bytes, CallError> {
        let exchange = async {
            let (status, body) = self.exchange(op, body).await?;
            Ok::<_, CallError>((status, read_body(body).await?))
        };
        let (status, body) = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Err(_) => return Err(CallError::Timeout),
            Ok(result) => result?,
        };
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(api_error(status, &body))
        }
    }

    /// Sends one operation with a JSON value and parses the JSON answer.
    pub async fn call_json(&self, op: &str, input: &Value) -> Result<Value, CallError> {
        let body = Bytes::from(input.to_string());
        let response = self.call(op, body).await?;
        if response.is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&response).map_err(|e| CallError::BadResponse(e.to_string()))
    }

    /// Makes sure `stream` exists and is ACTIVE, creating it with `shards` shards if missing.
    /// Returns the number of open shards.
    pub async fn ensure_stream(
        &self,
        stream: &str,
        shards: u32,
        log: &dyn Fn(&str),
    ) -> anyhow::Result<u64> {
        let deadline = Instant::now() + STREAM_READY_TIMEOUT;
        let mut created = false;
        let mut announced = false;
        loop {
            match self
                .call_json("DescribeStreamSummary", &json!({ "StreamName": stream }))
                .await
            {
                Ok(answer) => {
                    let summary = &answer["StreamDescriptionSummary"];
                    let status = summary["StreamStatus"].as_str().unwrap_or("");
                    let open = summary["OpenShardCount"].as_u64().unwrap_or(0);
                    if status == "ACTIVE" {
                        if !created && open != u64::from(shards) {
                            log(&format!(
                                "stream {stream} already exists with {open} open shards; using it as is"
                            ));
                        }
                        return Ok(open);
                    }
                    if !announced {
                        log(&format!(
                            "waiting for stream {stream} ({status}) to become ACTIVE"
                        ));
                        announced = true;
                    }
                }
                Err(e) if e.api_kind() == Some("ResourceNotFoundException") => {
                    if !created {
                        log(&format!("creating stream {stream} with {shards} shards"));
                        let input = json!({ "StreamName": stream, "ShardCount": shards });
                        match self.call_json("CreateStream", &input).await {
                            Ok(_) => {}
                            Err(e) if e.api_kind() == Some("ResourceInUseException") => {}
                            Err(e) => return Err(e).context(format!("create stream {stream}")),
                        }
                        created = true;
                    }
                }
                Err(e) if e.api_kind() == Some("LimitExceededException") => {}
                Err(e) => return Err(e).context(format!("describe stream {stream}")),
            }
            if Instant::now() >= deadline {
                bail!(
                    "stream {stream} did not become ACTIVE within {} s",
                    STREAM_READY_TIMEOUT.as_secs()
                );
            }
            sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every shard id of `stream` (open and closed), following ListShards pages.
    pub async fn list_shards(&self, stream: &str) -> anyhow::Result<Vec<String>> {
        let mut shards = Vec::new();
        let mut input = json!({ "StreamName": stream });
        for _ in 0..1000 {
            let answer = self
                .call_json("ListShards", &input)
                .await
                .with_context(|| format!("list shards of {stream}"))?;
            if let Some(list) = answer["Shards"].as_array() {
                shards.extend(
                    list.iter()
                        .filter_map(|s| s["ShardId"].as_str().map(str::to_owned)),
                );
            }
            match answer["NextToken"].as_str() {
                Some(token) if !token.is_empty() => input = json!({ "NextToken": token }),
                _ => return Ok(shards),
            }
        }
        bail!("ListShards of {stream} did not end after 1000 pages")
    }

    /// A TRIM_HORIZON iterator on one shard.
    pub async fn trim_horizon_iterator(
        &self,
        stream: &str,
        shard: &str,
    ) -> Result<String, CallError> {
        let input = json!({
            "StreamName": stream,
            "ShardId": shard,
            "ShardIteratorType": "TRIM_HORIZON",
        });
        let answer = self.call_json("GetShardIterator", &input).await?;
        answer["ShardIterator"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                CallError::BadResponse("GetShardIterator returned no ShardIterator".into())
            })
    }
}

/// rustls trusting the system's roots and the PEM certificates of `ca_bundle`.
fn tls_config(ca_bundle: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped, as browsers do; the bundle must be whole.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_bundle {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("read CA bundle {}", path.display()))?;
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("use CA bundle {}", path.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

/// A whole answer body.
async fn read_body(body: Incoming) -> Result<Bytes, CallError> {
    body.collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| CallError::Transport(error_chain(&e)))
}

/// Reads `{"__type": "...#Kind", "message": "..."}` (the Kinesis JSON error shape).
fn api_error(status: u16, body: &[u8]) -> CallError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |names: &[&str]| -> Option<String> {
        let value = parsed.as_ref()?;
        names
            .iter()
            .find_map(|name| value.get(*name).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let kind = field(&["__type", "code", "Code"])
        .map(|t| t.rsplit_once('#').map_or(t.clone(), |(_, k)| k.to_owned()))
        .unwrap_or_else(|| "UnknownError".to_owned());
    let message = field(&["message", "Message"])
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    CallError::Api {
        status,
        kind,
        message,
    }
}
