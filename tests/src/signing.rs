//! Signed requests for the authentication suites: raw Kinesis requests signed by the AWS
//! SDK's own signer (aws-sigv4) at any time and with any key, and a gRPC interceptor that
//! signs native calls the way `sluice` clients do.

use crate::{RawResponse, send};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http_body_util::Full;
use std::net::SocketAddr;
use std::time::SystemTime;

/// An access key id and its secret.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: String,
    pub secret: String,
}

impl Key {
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Key {
        Key {
            id: id.into(),
            secret: secret.into(),
        }
    }
}

/// A Kinesis JSON request signed with `key` as of `time` for `region`.
pub fn signed_kinesis_request(
    addr: SocketAddr,
    key: &Key,
    operation: &str,
    body: &[u8],
    time: SystemTime,
    region: &str,
) -> hyper::Request<Vec<u8>> {
    let mut request = hyper::Request::post(format!("http://{addr}/"))
        .header("host", addr.to_string())
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", format!("Kinesis_20131202.{operation}"))
        .body(body.to_vec())
        .expect("request");
    let identity =
        aws_credential_types::Credentials::new(&key.id, &key.secret, None, None, "tests").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kinesis")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let signable = SignableRequest::new(
        "POST",
        request.uri().to_string(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .expect("signable request");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    instructions.apply_to_request_http1x(&mut request);
    request
}

/// Sends a prepared request.
pub async fn send_request(request: hyper::Request<Vec<u8>>) -> RawResponse {
    let (parts, body) = request.into_parts();
    send(
        hyper::Request::from_parts(parts, Full::new(bytes::Bytes::from(body))),
        false,
    )
    .await
}

/// Signs and sends one Kinesis JSON request now, in us-east-1.
pub async fn signed_call(addr: SocketAddr, key: &Key, operation: &str, body: &str) -> RawResponse {
    let request = signed_kinesis_request(
        addr,
        key,
        operation,
        body.as_bytes(),
        SystemTime::now(),
        "us-east-1",
    );
    send_request(request).await
}

/// Signs every gRPC call with `key`.
#[derive(Clone)]
pub struct GrpcSigner(pub Option<Key>);

impl tonic::service::Interceptor for GrpcSigner {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(key) = &self.0 else {
            return Ok(request);
        };
        let path = request
            .extensions()
            .get::<tonic::GrpcMethod>()
            .map(|m| format!("/{}/{}", m.service(), m.method()))
            .unwrap_or_default();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let value = sluice_auth::token::sign(&key.id, &key.secret, &path, now);
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii metadata"));
        Ok(request)
    }
}
