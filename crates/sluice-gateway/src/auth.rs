//! Authentication (SigV4) and authorization of Kinesis requests.
//!
//! With [`Authentication::SigV4`], every request's signature is checked against the access
//! keys in the metadata state before its body is decoded, and once the input is validated
//! the caller's policies are asked whether `kinesis:<Operation>` is allowed on the resource
//! the request names. [`Authentication::Open`] accepts any request, as local emulators do.

use crate::error::{ApiError, ErrorKind};
use crate::ops::{Operation, opt_str};
use crate::value::Value;
use axum::body::Bytes;
use sluice_auth::sigv4::{self, RequestParts, SigV4Error};
use sluice_cluster::{Broker, Caller};
use sluice_types::parse_stream_arn;

/// How the Kinesis endpoint authenticates callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Authentication {
    /// Any signature, or none, is accepted.
    #[default]
    Open,
    /// AWS Signature Version 4 against the node's access keys, then policies.
    SigV4,
}

impl From<SigV4Error> for ApiError {
    fn from(error: SigV4Error) -> Self {
        match error {
            SigV4Error::MissingAuthenticationToken(m) => {
                ApiError::new(ErrorKind::MissingAuthenticationToken, m)
            }
            SigV4Error::IncompleteSignature(m) => ApiError::new(ErrorKind::IncompleteSignature, m),
            SigV4Error::InvalidSignature(m) => ApiError::new(ErrorKind::InvalidSignature, m),
            SigV4Error::UnrecognizedClient(m) => ApiError::new(ErrorKind::UnrecognizedClient, m),
        }
    }
}

/// Verifies a request's signature; answers the caller and the body to decode.
pub(crate) fn authenticate(
    broker: &Broker,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<(Caller, Bytes), ApiError> {
    let request = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        authority: parts.uri.authority().map(|a| a.as_str()),
        headers: &parts.headers,
        body: &body,
    };
    let now_secs = i64::try_from(broker.now_ms() / 1000).unwrap_or(i64::MAX);
    let verified = sigv4::verify(
        &request,
        &broker.identity().region,
        "kinesis",
        now_secs,
        |id| broker.secret_of(id),
    )?;
    let caller = broker.caller(&verified.access_key_id).ok_or_else(|| {
        ApiError::new(
            ErrorKind::UnrecognizedClient,
            "The security token included in the request is invalid.",
        )
    })?;
    let body = match verified.body {
        std::borrow::Cow::Borrowed(_) => body,
        std::borrow::Cow::Owned(decoded) => Bytes::from(decoded),
    };
    Ok((caller, body))
}

/// Asks the caller's policies whether it may run `operation` with this (validated) input.
pub(crate) fn authorize(
    broker: &Broker,
    caller: &Caller,
    operation: Operation,
    input: &Value,
) -> Result<(), ApiError> {
    let action = format!("kinesis:{}", operation.name());
    let resource = resource_of(broker, input);
    broker.authorize(caller, &action, &resource)?;
    Ok(())
}

/// The ARN an operation acts on, as IAM sees it: the consumer, the tagged or policed
/// resource, or the stream; `*` for account-wide operations such as ListStreams.
fn resource_of(broker: &Broker, input: &Value) -> String {
    if let Some(arn) = opt_str(input, "ConsumerARN") {
        return arn.to_owned();
    }
    if let Some(arn) = opt_str(input, "ResourceARN") {
        return arn.to_owned();
    }
    let stream = opt_str(input, "StreamName")
        .map(str::to_owned)
        .or_else(|| {
            opt_str(input, "StreamARN").and_then(|arn| parse_stream_arn(arn).map(|n| n.to_string()))
        })
        .or_else(|| opt_str(input, "ShardIterator").and_then(|it| broker.iterator_stream(it)));
    let Some(stream) = stream else {
        return "*".to_owned();
    };
    if let Some(consumer) = opt_str(input, "ConsumerName")
        && let Ok(found) = broker.stream(&stream)
        && let Some(entry) = found.consumers.iter().find(|c| c.name == consumer)
    {
        return broker.consumer_arn(&stream, entry);
    }
    broker.stream_arn(&stream)
}
