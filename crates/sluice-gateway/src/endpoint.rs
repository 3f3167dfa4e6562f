//! The HTTP face of the gateway: `POST /` with `X-Amz-Target: Kinesis_20131202.<Op>`, a
//! JSON 1.1 or CBOR 1.1 body, answered in the same encoding, errors as AWS shapes them.

use crate::auth::{self, Authentication};
use crate::error::{ApiError, ErrorKind};
use crate::metrics::GatewayMetrics;
use crate::ops::{self, Operation};
use crate::subscribe;
use crate::validate;
use crate::value::{self, Value};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode};
use sluice_cluster::{Broker, Caller};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Instrument;

const TARGET_PREFIX: &str = "Kinesis_20131202.";
/// Room for a 10 MiB PutRecords request after base64 and JSON framing.
const MAX_BODY_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Json,
    Cbor,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/x-amz-json-1.1",
            Encoding::Cbor => "application/x-amz-cbor-1.1",
        }
    }
}

#[derive(Clone)]
struct AppState {
    broker: Broker,
    authentication: Authentication,
    request_ids: std::sync::Arc<AtomicU64>,
    metrics: GatewayMetrics,
}

/// The Kinesis endpoint as an axum router; each request's duration goes to `metrics`.
pub fn router(broker: Broker, authentication: Authentication, metrics: GatewayMetrics) -> Router {
    let state = AppState {
        broker,
        authentication,
        request_ids: std::sync::Arc::new(AtomicU64::new(0)),
        metrics,
    };
    Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn request_id(state: &AppState) -> String {
    let n = state.request_ids.fetch_add(1, Ordering::Relaxed);
    let now = state.broker.now_ms();
    // Shaped like AWS's (a UUID), unique per node and run.
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (now >> 16) as u32,
        (now & 0xffff) as u16,
        0x4000 | ((n >> 48) as u16 & 0x0fff),
        0x8000 | ((n >> 32) as u16 & 0x3fff),
        n & 0xffff_ffff_ffff
    )
}

async fn handle(
    State(state): State<AppState>,
    parts: http::request::Parts,
    body: Bytes,
) -> Response {
    let started = std::time::Instant::now();
    let request_id = request_id(&state);
    let headers: &HeaderMap = &parts.headers;
    let encoding = match headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(ct) if ct.starts_with("application/x-amz-cbor-1.1") => Encoding::Cbor,
        _ => Encoding::Json,
    };
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let operation = target
        .strip_prefix(TARGET_PREFIX)
        .and_then(Operation::from_name);
    let op_name = operation.map_or("unknown", Operation::name);
    let span = tracing::info_span!("kinesis.request", op = op_name, request_id = %request_id, stream = tracing::field::Empty);
    let metrics = state.metrics.clone();
    let response = async move {
        let authenticated = match state.authentication {
            Authentication::Open => Ok((None, body)),
            Authentication::SigV4 => auth::authenticate(&state.broker, &parts, body)
                .map(|(caller, body)| (Some(caller), body)),
        };
        let result = match (&parts.method, operation, authenticated) {
            (_, _, Err(error)) => Err(error),
            (&http::Method::POST, Some(operation), Ok((caller, body))) => {
                dispatch(&state.broker, caller.as_ref(), operation, encoding, &body).await
            }
            _ => Err(ApiError::new(ErrorKind::UnknownOperation, "")),
        };
        match result {
            Ok(Reply::Value(output)) => respond(
                StatusCode::OK,
                encoding,
                &request_id,
                encode(encoding, &output),
            ),
            Ok(Reply::EventStream(body)) => {
                let mut response = Response::new(body);
                let headers = response.headers_mut();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/vnd.amazon.eventstream"),
                );
                if let Ok(id) = HeaderValue::from_str(&request_id) {
                    headers.insert("x-amzn-requestid", id);
                }
                response
            }
            Err(error) => {
                if error.kind == ErrorKind::InternalFailure {
                    tracing::error!(error = %error, "request failed");
                } else {
                    tracing::debug!(error = %error, "request rejected");
                }
                let mut response = respond(
                    error.kind.status(),
                    encoding,
                    &request_id,
                    error_body(encoding, &error),
                );
                // AWS names the error in a header too; some SDKs read it from there.
                response.headers_mut().insert(
                    "x-amzn-errortype",
                    HeaderValue::from_static(error.kind.aws_type()),
                );
                response
            }
        }
    }
    .instrument(span)
    .await;
    metrics.observe(op_name, response.status(), started.elapsed());
    response
}

/// What an operation answers: one body, or an event stream (SubscribeToShard).
enum Reply {
    Value(Value),
    EventStream(Body),
}

async fn dispatch(
    broker: &Broker,
    caller: Option<&Caller>,
    operation: Operation,
    encoding: Encoding,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let mut input = match encoding {
        Encoding::Json => value::decode_json(body)?,
        Encoding::Cbor => value::decode_cbor(body)?,
    };
    validate::check_input(operation.name(), &mut input)?;
    if let Some(caller) = caller {
        auth::authorize(broker, caller, operation, &input)?;
    }
    if let Some(Value::Str(stream)) = input.get("StreamName") {
        tracing::Span::current().record("stream", stream.as_str());
    }
    if operation == Operation::SubscribeToShard {
        let stream = subscribe::subscribe_to_shard(broker, &input, encoding).await?;
        return Ok(Reply::EventStream(stream));
    }
    ops::handle(broker, operation, &input)
        .await
        .map(Reply::Value)
}

fn encode(encoding: Encoding, value: &Value) -> Vec<u8> {
    match encoding {
        Encoding::Json => value::encode_json(value),
        Encoding::Cbor => value::encode_cbor(value),
    }
}

/// `{"__type": ..., "message": ...}`; SerializationException spells it `Message`.
fn error_body(encoding: Encoding, error: &ApiError) -> Vec<u8> {
    let mut pairs = vec![(
        "__type".to_owned(),
        Value::Str(error.kind.aws_type().to_owned()),
    )];
    if !error.message.is_empty() {
        let key = if error.kind == ErrorKind::Serialization {
            "Message"
        } else {
            "message"
        };
        pairs.push((key.to_owned(), Value::Str(error.message.clone())));
    }
    encode(encoding, &Value::Map(pairs))
}

fn respond(status: StatusCode, encoding: Encoding, request_id: &str, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}
