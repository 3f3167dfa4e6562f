//! SubscribeToShard on the Kinesis endpoint: validates the call, starts a broker
//! subscription, and answers with an `application/vnd.amazon.eventstream` body — an
//! `initial-response` event, then one `SubscribeToShardEvent` per push, and an exception
//! event if the subscription fails. The body streams over HTTP/1.1 (chunked) and HTTP/2.

use crate::endpoint::Encoding;
use crate::error::{ApiError, ErrorKind};
use crate::eventstream::{self, PayloadEncoding};
use crate::ops::{child_shards_value, member, opt_str, opt_timestamp_ms, record_value};
use crate::value::Value;
use axum::body::{Body, Bytes};
use sluice_cluster::{Broker, IteratorStart, Subscription};

/// Starts the subscription; errors found before it starts are answered as plain errors.
pub(crate) async fn subscribe_to_shard(
    broker: &Broker,
    input: &Value,
    encoding: Encoding,
) -> Result<Body, ApiError> {
    let consumer_arn = opt_str(input, "ConsumerARN").unwrap_or("");
    let shard = opt_str(input, "ShardId").unwrap_or("");
    let start = starting_position(broker, input)?;
    let subscription = broker
        .subscribe_to_shard(consumer_arn, shard, start)
        .await?;
    let encoding = match encoding {
        Encoding::Json => PayloadEncoding::Json,
        Encoding::Cbor => PayloadEncoding::Cbor,
    };
    Ok(event_body(subscription, encoding))
}

fn starting_position(broker: &Broker, input: &Value) -> Result<IteratorStart, ApiError> {
    let position = member(input, "StartingPosition");
    let kind = position.and_then(|p| opt_str(p, "Type")).unwrap_or("");
    let sequence = position.and_then(|p| opt_str(p, "SequenceNumber"));
    let timestamp = position.and_then(|p| opt_timestamp_ms(p, "Timestamp"));
    match (kind, sequence) {
        ("AT_SEQUENCE_NUMBER", Some(seq)) => Ok(IteratorStart::AtSequence(seq.to_owned())),
        ("AFTER_SEQUENCE_NUMBER", Some(seq)) => Ok(IteratorStart::AfterSequence(seq.to_owned())),
        ("AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER", None) => {
            Err(ApiError::invalid_argument(format!(
                "StartingPosition.SequenceNumber must be specified for StartingPosition.Type {kind}."
            )))
        }
        ("TRIM_HORIZON", _) => Ok(IteratorStart::TrimHorizon),
        ("LATEST", _) => Ok(IteratorStart::Latest),
        ("AT_TIMESTAMP", _) => {
            let ms = timestamp.ok_or_else(|| {
                ApiError::invalid_argument(
                    "StartingPosition.Timestamp must be specified for StartingPosition.Type AT_TIMESTAMP.",
                )
            })?;
            let now = broker.now_ms();
            if ms > now as f64 {
                return Err(ApiError::invalid_argument(format!(
                    "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. timestampInMillis: {}, currentTimestampInMillis: {now}",
                    ms as u64
                )));
            }
            Ok(IteratorStart::AtTimestampMs(ms.max(0.0) as u64))
        }
        _ => Err(ApiError::invalid_argument(format!(
            "Invalid StartingPosition.Type: {kind}"
        ))),
    }
}

/// The streamed body: `initial-response`, the subscription's events, and at most one
/// exception event at the end.
fn event_body(subscription: Subscription, encoding: PayloadEncoding) -> Body {
    enum State {
        Start(Subscription),
        Events(Subscription),
        Done,
    }
    let stream =
        futures_util::stream::unfold(State::Start(subscription), move |state| async move {
            match state {
                State::Start(subscription) => {
                    let message = Bytes::from(eventstream::initial_response(encoding));
                    Some((
                        Ok::<_, std::convert::Infallible>(message),
                        State::Events(subscription),
                    ))
                }
                State::Events(mut subscription) => match subscription.next().await {
                    Some(Ok(event)) => {
                        let records = event
                            .records
                            .iter()
                            .map(|r| record_value(event.shard, r))
                            .collect();
                        let continuation = event.continuation.map(|c| c.to_string());
                        let payload = eventstream::subscribe_to_shard_event(
                            records,
                            continuation.as_deref(),
                            event.millis_behind_latest,
                            event.child_shards.as_deref().map(child_shards_value),
                        );
                        let message =
                            eventstream::event_message("SubscribeToShardEvent", &payload, encoding);
                        Some((Ok(Bytes::from(message)), State::Events(subscription)))
                    }
                    Some(Err(error)) => {
                        let error = ApiError::from(error);
                        let error = if error.kind == ErrorKind::InternalFailure {
                            ApiError::new(ErrorKind::InternalFailure, "Internal service failure.")
                        } else {
                            error
                        };
                        let message = eventstream::exception_message(&error, encoding);
                        Some((Ok(Bytes::from(message)), State::Done))
                    }
                    None => None,
                },
                State::Done => None,
            }
        });
    Body::from_stream(stream)
}
