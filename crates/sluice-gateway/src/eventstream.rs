//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`) used by
//! SubscribeToShard, and the Kinesis messages sent over it.
//!
//! # Wire format
//!
//! Every message is one self-delimiting frame; all integers are big-endian:
//!
//! ```text
//! total length u32 | headers length u32 | prelude CRC32 u32 (of the first 8 bytes)
//! headers (headers length bytes) | payload | message CRC32 u32 (of everything before it)
//! ```
//!
//! The total length counts the whole frame, both CRCs included, so a message with no
//! headers and no payload is 16 bytes. The CRC is CRC-32/IEEE (the gzip one). Each header
//! is `name length u8 | name | value type u8 | value`, with the value types
//! 0 bool true, 1 bool false, 2 byte (i8), 3 i16, 4 i32, 5 i64, 6 byte array (u16
//! length), 7 UTF-8 string (u16 length), 8 timestamp (i64 epoch milliseconds) and
//! 9 UUID (16 bytes). [`Message::encode`] and [`decode_message`] handle all of them.
//!
//! # Kinesis conventions
//!
//! A SubscribeToShard body is a sequence of messages:
//!
//! 1. [`initial_response`]: an `initial-response` event carrying the operation's
//!    non-stream output, which for SubscribeToShard is the empty structure. botocore
//!    rejects a stream whose first message is anything else ("First event was not of
//!    type initial-response").
//! 2. One [`event_message`] per push, with event type `SubscribeToShardEvent` and the
//!    payload built by [`subscribe_to_shard_event`].
//! 3. At most one [`exception_message`] ending the stream when the subscription fails.
//!
//! Event and exception payloads are encoded like the request (JSON 1.1 or CBOR 1.1, see
//! [`PayloadEncoding`]) and labelled with a `:content-type` header. Headers are written in
//! the order the AWS documentation shows for service-sent messages (`:event-type` or
//! `:exception-type` first, then `:content-type`, then `:message-type`); clients look
//! headers up by name, so the order carries no meaning.
//!
//! Only three exceptions of the `SubscribeToShardEventStream` union have an
//! [`ErrorKind`]: `ResourceNotFoundException`, `ResourceInUseException` and
//! `InternalFailureException` (the union's name for `InternalFailure`). Those are sent as
//! `exception` messages; any other kind is not part of the union, so it is sent the way
//! AWS reports unmodeled errors, as an `error` message with `:error-code` and
//! `:error-message` headers, which every SDK surfaces with its code and message.
//!
//! # Limits
//!
//! The decoder refuses a header section over [`MAX_HEADERS_LEN`] or a payload over
//! [`MAX_PAYLOAD_LEN`] (botocore's limits), so a stream cannot make a reader buffer
//! gigabytes; the encoder applies the same limits. Callers should keep each event's
//! payload well below [`MAX_PAYLOAD_LEN`]: the AWS C runtime and some older SDKs accept
//! at most 16 MiB.

use bytes::Bytes;

use crate::error::{ApiError, ErrorKind};
use crate::value::{Value, encode_cbor, encode_json};

/// The HTTP `Content-Type` of an event-stream body.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// Largest header section accepted or produced (128 KiB, as in botocore and the AWS C
/// runtime).
pub const MAX_HEADERS_LEN: usize = 128 * 1024;

/// Largest payload accepted or produced (24 MiB, as in botocore).
pub const MAX_PAYLOAD_LEN: usize = 24 * 1024 * 1024;

/// Total length, headers length and prelude CRC.
const PRELUDE_LEN: usize = 12;
/// The message CRC at the end.
const MESSAGE_CRC_LEN: usize = 4;
/// Bytes of a message that are neither headers nor payload.
const OVERHEAD: usize = PRELUDE_LEN + MESSAGE_CRC_LEN;

const TYPE_BOOL_TRUE: u8 = 0;
const TYPE_BOOL_FALSE: u8 = 1;
const TYPE_BYTE: u8 = 2;
const TYPE_INT16: u8 = 3;
const TYPE_INT32: u8 = 4;
const TYPE_INT64: u8 = 5;
const TYPE_BYTE_ARRAY: u8 = 6;
const TYPE_STRING: u8 = 7;
const TYPE_TIMESTAMP: u8 = 8;
const TYPE_UUID: u8 = 9;

/// The encoding of event payloads: the same as the request's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadEncoding {
    /// AWS JSON 1.1.
    Json,
    /// AWS CBOR 1.1.
    Cbor,
}

impl PayloadEncoding {
    /// The `:content-type` header value of payloads in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            PayloadEncoding::Json => "application/x-amz-json-1.1",
            PayloadEncoding::Cbor => "application/x-amz-cbor-1.1",
        }
    }

    /// Encodes a payload.
    pub fn encode(self, value: &Value) -> Vec<u8> {
        match self {
            PayloadEncoding::Json => encode_json(value),
            PayloadEncoding::Cbor => encode_cbor(value),
        }
    }
}

/// A header value, one variant per wire type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 (true) and 1 (false).
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Int16(i16),
    /// Type 4.
    Int32(i32),
    /// Type 5.
    Int64(i64),
    /// Type 6, at most 65,535 bytes.
    ByteArray(Vec<u8>),
    /// Type 7, at most 65,535 bytes of UTF-8.
    String(String),
    /// Type 8: epoch milliseconds.
    Timestamp(i64),
    /// Type 9.
    Uuid([u8; 16]),
}

impl HeaderValue {
    /// The string, for a string header.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for HeaderValue {
    fn from(value: &str) -> Self {
        HeaderValue::String(value.to_owned())
    }
}

impl From<String> for HeaderValue {
    fn from(value: String) -> Self {
        HeaderValue::String(value)
    }
}

/// One decoded (or to-be-encoded) event-stream message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Headers in wire order; names are unique.
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Bytes,
}

impl Message {
    /// A message with no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// Builder: this message with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<HeaderValue>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// The value of string header `name`.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(HeaderValue::as_str)
    }

    /// Encodes the message. Fails on duplicate header names, a name over 255 bytes, a
    /// string or byte-array value over 65,535 bytes, or a header section or payload over
    /// the limits ([`MAX_HEADERS_LEN`], [`MAX_PAYLOAD_LEN`]).
    pub fn encode(&self) -> Result<Vec<u8>, EventStreamError> {
        let mut headers = Vec::new();
        for (i, (name, value)) in self.headers.iter().enumerate() {
            if self.headers[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(EventStreamError::DuplicateHeader(name.clone()));
            }
            put_header(&mut headers, name, value)?;
            if headers.len() > MAX_HEADERS_LEN {
                return Err(EventStreamError::HeadersTooLong(headers.len()));
            }
        }
        frame(&headers, &self.payload)
    }
}

/// Why a message could not be decoded (or encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventStreamError {
    #[error("prelude checksum mismatch: message says {expected:#010x}, computed {computed:#010x}")]
    PreludeChecksum { expected: u32, computed: u32 },
    #[error("message checksum mismatch: message says {expected:#010x}, computed {computed:#010x}")]
    MessageChecksum { expected: u32, computed: u32 },
    #[error("total length {0} is shorter than the 16-byte minimum")]
    MessageTooShort(u32),
    #[error("headers length {headers_len} does not fit in a message of {total_len} bytes")]
    HeadersLengthMismatch { headers_len: u32, total_len: u32 },
    #[error("header section of {0} bytes exceeds the maximum of {MAX_HEADERS_LEN}")]
    HeadersTooLong(usize),
    #[error("payload of {0} bytes exceeds the maximum of {MAX_PAYLOAD_LEN}")]
    PayloadTooLong(usize),
    #[error("header section ends inside a header")]
    TruncatedHeader,
    #[error("header name or string value is not valid UTF-8")]
    InvalidUtf8,
    #[error("unknown header value type {0}")]
    UnknownHeaderType(u8),
    #[error("duplicate header {0:?}")]
    DuplicateHeader(String),
    #[error("header name of {0} bytes exceeds the maximum of 255")]
    HeaderNameTooLong(usize),
    #[error("value of header {name:?} is {len} bytes, over the maximum of 65535")]
    HeaderValueTooLong { name: String, len: usize },
}

// ---------------------------------------------------------------------------
// Kinesis messages

/// An `event` message: `:event-type` = `event_type`, `:content-type` of `encoding`,
/// `:message-type` = `event`, and `payload` encoded as JSON or CBOR.
///
/// Never fails: an event type over 65,535 bytes is cut at a character boundary, and a
/// payload over [`MAX_PAYLOAD_LEN`] yields an `error` message (`:error-code`
/// `InternalFailure`) instead, which ends the stream on the client.
pub fn event_message(event_type: &str, payload: &Value, encoding: PayloadEncoding) -> Vec<u8> {
    let body = encoding.encode(payload);
    encode_or_error(
        &[
            (":event-type", clip(event_type)),
            (":content-type", encoding.content_type()),
            (":message-type", "event"),
        ],
        &body,
    )
}

/// The first message of every SubscribeToShard stream: the `initial-response` event
/// with the empty output structure (`{}` in JSON, an empty map in CBOR).
pub fn initial_response(encoding: PayloadEncoding) -> Vec<u8> {
    event_message("initial-response", &Value::empty_map(), encoding)
}

/// The message ending a stream with `error`.
///
/// Kinds modeled in the `SubscribeToShardEventStream` union become an `exception`
/// message (`:exception-type` = the union member, `:content-type`, `:message-type` =
/// `exception`) whose payload is `{"message": ...}`; `InternalFailure` is named
/// `InternalFailureException` there. Any other kind becomes an `error` message with
/// `:error-code` = its `__type` and `:error-message` = the message, and no payload.
pub fn exception_message(error: &ApiError, encoding: PayloadEncoding) -> Vec<u8> {
    match modeled_exception(error.kind) {
        Some(exception_type) => {
            let payload = Value::map([("message", Value::from(error.message.as_str()))]);
            let body = encoding.encode(&payload);
            encode_or_error(
                &[
                    (":exception-type", exception_type),
                    (":content-type", encoding.content_type()),
                    (":message-type", "exception"),
                ],
                &body,
            )
        }
        None => encode_or_error(
            &[
                (":error-code", error.kind.aws_type()),
                (":error-message", clip(&error.message)),
                (":message-type", "error"),
            ],
            &[],
        ),
    }
}

/// The `SubscribeToShardEvent` payload, members in model order: `Records`,
/// `ContinuationSequenceNumber` (left out when `None`, as at the end of a closed shard),
/// `MillisBehindLatest` and `ChildShards` (left out when `None`; a list of ChildShard
/// maps otherwise). Each record is a map with `SequenceNumber`,
/// `ApproximateArrivalTimestamp`, `Data` and `PartitionKey`.
pub fn subscribe_to_shard_event(
    records: Vec<Value>,
    continuation_sequence_number: Option<&str>,
    millis_behind_latest: u64,
    child_shards: Option<Value>,
) -> Value {
    let mut entries = Vec::with_capacity(4);
    entries.push(("Records".to_owned(), Value::List(records)));
    if let Some(sequence) = continuation_sequence_number {
        entries.push((
            "ContinuationSequenceNumber".to_owned(),
            Value::from(sequence),
        ));
    }
    entries.push((
        "MillisBehindLatest".to_owned(),
        Value::from(millis_behind_latest),
    ));
    if let Some(children) = child_shards {
        entries.push(("ChildShards".to_owned(), children));
    }
    Value::Map(entries)
}

/// The `SubscribeToShardEventStream` member naming `kind`, if the union models it.
fn modeled_exception(kind: ErrorKind) -> Option<&'static str> {
    match kind {
        ErrorKind::ResourceNotFound => Some("ResourceNotFoundException"),
        ErrorKind::ResourceInUse => Some("ResourceInUseException"),
        ErrorKind::InternalFailure => Some("InternalFailureException"),
        _ => None,
    }
}

/// `s` cut to at most 65,535 bytes at a character boundary.
fn clip(s: &str) -> &str {
    let max = usize::from(u16::MAX);
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Frames string headers and a payload; on failure (only an oversize payload is
/// possible for the callers above) frames an `InternalFailure` error message instead.
fn encode_or_error(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let framed = string_headers(headers).and_then(|section| frame(&section, payload));
    match framed {
        Ok(bytes) => bytes,
        Err(error) => {
            let message = error.to_string();
            string_headers(&[
                (":error-code", ErrorKind::InternalFailure.aws_type()),
                (":error-message", clip(&message)),
                (":message-type", "error"),
            ])
            .and_then(|section| frame(&section, &[]))
            .unwrap_or_default()
        }
    }
}

// ---------------------------------------------------------------------------
// Encoding

fn string_headers(headers: &[(&str, &str)]) -> Result<Vec<u8>, EventStreamError> {
    let mut out = Vec::with_capacity(128);
    for (name, value) in headers {
        put_name(&mut out, name)?;
        out.push(TYPE_STRING);
        put_short_bytes(&mut out, name, value.as_bytes())?;
    }
    Ok(out)
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), EventStreamError> {
    let len =
        u8::try_from(name.len()).map_err(|_| EventStreamError::HeaderNameTooLong(name.len()))?;
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// A u16 length prefix and the bytes.
fn put_short_bytes(out: &mut Vec<u8>, name: &str, bytes: &[u8]) -> Result<(), EventStreamError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EventStreamError::HeaderValueTooLong {
        name: name.to_owned(),
        len: bytes.len(),
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn put_header(out: &mut Vec<u8>, name: &str, value: &HeaderValue) -> Result<(), EventStreamError> {
    put_name(out, name)?;
    match value {
        HeaderValue::Bool(true) => out.push(TYPE_BOOL_TRUE),
        HeaderValue::Bool(false) => out.push(TYPE_BOOL_FALSE),
        HeaderValue::Byte(v) => {
            out.push(TYPE_BYTE);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Int16(v) => {
            out.push(TYPE_INT16);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Int32(v) => {
            out.push(TYPE_INT32);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Int64(v) => {
            out.push(TYPE_INT64);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::ByteArray(bytes) => {
            out.push(TYPE_BYTE_ARRAY);
            put_short_bytes(out, name, bytes)?;
        }
        HeaderValue::String(s) => {
            out.push(TYPE_STRING);
            put_short_bytes(out, name, s.as_bytes())?;
        }
        HeaderValue::Timestamp(ms) => {
            out.push(TYPE_TIMESTAMP);
            out.extend_from_slice(&ms.to_be_bytes());
        }
        HeaderValue::Uuid(uuid) => {
            out.push(TYPE_UUID);
            out.extend_from_slice(uuid);
        }
    }
    Ok(())
}

/// Prelude, prelude CRC, headers, payload, message CRC.
fn frame(headers: &[u8], payload: &[u8]) -> Result<Vec<u8>, EventStreamError> {
    if headers.len() > MAX_HEADERS_LEN {
        return Err(EventStreamError::HeadersTooLong(headers.len()));
    }
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(EventStreamError::PayloadTooLong(payload.len()));
    }
    // Both bounded above, so neither the sum nor the conversions can overflow.
    let total = OVERHEAD + headers.len() + payload.len();
    let total_u32 =
        u32::try_from(total).map_err(|_| EventStreamError::PayloadTooLong(payload.len()))?;
    let headers_u32 = u32::try_from(headers.len())
        .map_err(|_| EventStreamError::HeadersTooLong(headers.len()))?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&total_u32.to_be_bytes());
    out.extend_from_slice(&headers_u32.to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    Ok(out)
}

// ---------------------------------------------------------------------------
// Decoding

/// Decodes the message at the front of `buf`.
///
/// Returns `Ok(None)` while `buf` holds less than a whole message (the prelude is
/// checked as soon as its 12 bytes are there, so a corrupt length is reported without
/// waiting for the rest), and `Ok(Some((message, consumed)))` once it holds one, where
/// `consumed` is the message's length; bytes after it are left for the next call.
pub fn decode_message(buf: &[u8]) -> Result<Option<(Message, usize)>, EventStreamError> {
    let Some(prelude) = buf.first_chunk::<PRELUDE_LEN>() else {
        return Ok(None);
    };
    let [t0, t1, t2, t3, h0, h1, h2, h3, c0, c1, c2, c3] = *prelude;
    let total_len = u32::from_be_bytes([t0, t1, t2, t3]);
    let headers_len = u32::from_be_bytes([h0, h1, h2, h3]);
    let expected = u32::from_be_bytes([c0, c1, c2, c3]);
    let computed = crc32fast::hash(&[t0, t1, t2, t3, h0, h1, h2, h3]);
    if expected != computed {
        return Err(EventStreamError::PreludeChecksum { expected, computed });
    }

    let total =
        usize::try_from(total_len).map_err(|_| EventStreamError::PayloadTooLong(usize::MAX))?;
    let headers_size =
        usize::try_from(headers_len).map_err(|_| EventStreamError::HeadersTooLong(usize::MAX))?;
    if total < OVERHEAD {
        return Err(EventStreamError::MessageTooShort(total_len));
    }
    let Some(payload_size) = (total - OVERHEAD).checked_sub(headers_size) else {
        return Err(EventStreamError::HeadersLengthMismatch {
            headers_len,
            total_len,
        });
    };
    if headers_size > MAX_HEADERS_LEN {
        return Err(EventStreamError::HeadersTooLong(headers_size));
    }
    if payload_size > MAX_PAYLOAD_LEN {
        return Err(EventStreamError::PayloadTooLong(payload_size));
    }

    let Some(message) = buf.get(..total) else {
        return Ok(None);
    };
    let Some((body, crc)) = message.split_last_chunk::<MESSAGE_CRC_LEN>() else {
        return Err(EventStreamError::MessageTooShort(total_len));
    };
    let expected = u32::from_be_bytes(*crc);
    let computed = crc32fast::hash(body);
    if expected != computed {
        return Err(EventStreamError::MessageChecksum { expected, computed });
    }

    let rest = body.get(PRELUDE_LEN..).unwrap_or_default();
    let Some((header_bytes, payload)) = rest.split_at_checked(headers_size) else {
        return Err(EventStreamError::HeadersLengthMismatch {
            headers_len,
            total_len,
        });
    };
    let headers = parse_headers(header_bytes)?;
    Ok(Some((
        Message {
            headers,
            payload: Bytes::copy_from_slice(payload),
        },
        total,
    )))
}

/// Reads the header section, which must hold whole headers only.
fn parse_headers(bytes: &[u8]) -> Result<Vec<(String, HeaderValue)>, EventStreamError> {
    let mut reader = Reader { rest: bytes };
    let mut headers: Vec<(String, HeaderValue)> = Vec::new();
    while !reader.rest.is_empty() {
        let name_len = usize::from(reader.byte()?);
        let name = utf8(reader.take(name_len)?)?;
        let value = match reader.byte()? {
            TYPE_BOOL_TRUE => HeaderValue::Bool(true),
            TYPE_BOOL_FALSE => HeaderValue::Bool(false),
            TYPE_BYTE => HeaderValue::Byte(i8::from_be_bytes(reader.array()?)),
            TYPE_INT16 => HeaderValue::Int16(i16::from_be_bytes(reader.array()?)),
            TYPE_INT32 => HeaderValue::Int32(i32::from_be_bytes(reader.array()?)),
            TYPE_INT64 => HeaderValue::Int64(i64::from_be_bytes(reader.array()?)),
            TYPE_BYTE_ARRAY => HeaderValue::ByteArray(reader.short_bytes()?.to_vec()),
            TYPE_STRING => HeaderValue::String(utf8(reader.short_bytes()?)?),
            TYPE_TIMESTAMP => HeaderValue::Timestamp(i64::from_be_bytes(reader.array()?)),
            TYPE_UUID => HeaderValue::Uuid(reader.array()?),
            other => return Err(EventStreamError::UnknownHeaderType(other)),
        };
        if headers.iter().any(|(existing, _)| *existing == name) {
            return Err(EventStreamError::DuplicateHeader(name));
        }
        headers.push((name, value));
    }
    Ok(headers)
}

fn utf8(bytes: &[u8]) -> Result<String, EventStreamError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| EventStreamError::InvalidUtf8)
}

/// A bounds-checked cursor over the header section.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EventStreamError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or(EventStreamError::TruncatedHeader)?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EventStreamError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(EventStreamError::TruncatedHeader)?;
        self.rest = tail;
        Ok(*head)
    }

    fn byte(&mut self) -> Result<u8, EventStreamError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    fn short_bytes(&mut self) -> Result<&'a [u8], EventStreamError> {
        let len = u16::from_be_bytes(self.array()?);
        self.take(usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// aws-c-event-stream `test_outgoing_no_op_valid`: no headers, no payload.
    const EMPTY: [u8; 16] = [
        0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8,
        0xff,
    ];

    /// aws-c-event-stream `test_outgoing_application_data_no_headers_valid`.
    const PAYLOAD_ONLY: [u8; 29] = [
        0x00, 0x00, 0x00, 0x1d, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x52, 0x8c, 0x5a, b'{', b'\'', b'f',
        b'o', b'o', b'\'', b':', b'\'', b'b', b'a', b'r', b'\'', b'}', 0xc3, 0x65, 0x39, 0x36,
    ];

    /// aws-c-event-stream `test_outgoing_application_one_compressed_header_pair_valid`:
    /// one string header `content-type: application/json` and a payload.
    fn one_header_vector() -> Vec<u8> {
        let mut v = vec![
            0x00, 0x00, 0x00, 0x3d, 0x00, 0x00, 0x00, 0x20, 0x07, 0xfd, 0x83, 0x96, 0x0c,
        ];
        v.extend_from_slice(b"content-type");
        v.extend_from_slice(&[0x07, 0x00, 0x10]);
        v.extend_from_slice(b"application/json");
        v.extend_from_slice(b"{'foo':'bar'}");
        v.extend_from_slice(&[0x8d, 0x9c, 0x08, 0xb1]);
        v
    }

    fn decode_one(bytes: &[u8]) -> Message {
        match decode_message(bytes) {
            Ok(Some((message, consumed))) => {
                assert_eq!(consumed, bytes.len());
                message
            }
            other => panic!("expected one whole message, got {other:?}"),
        }
    }

    fn string_headers_of(message: &Message) -> Vec<(&str, &str)> {
        message
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str().unwrap_or("<not a string>")))
            .collect()
    }

    fn all_types() -> Message {
        Message::new(&b"payload"[..])
            .with_header("true", HeaderValue::Bool(true))
            .with_header("false", HeaderValue::Bool(false))
            .with_header("byte", HeaderValue::Byte(i8::MIN))
            .with_header("short", HeaderValue::Int16(-12_345))
            .with_header("int", HeaderValue::Int32(i32::MAX))
            .with_header("long", HeaderValue::Int64(i64::MIN))
            .with_header("bytes", HeaderValue::ByteArray(vec![0, 1, 2, 0xff]))
            .with_header("empty-bytes", HeaderValue::ByteArray(Vec::new()))
            .with_header("string", "héllo ✓")
            .with_header("empty-string", "")
            .with_header("timestamp", HeaderValue::Timestamp(1_700_000_000_123))
            .with_header(
                "uuid",
                HeaderValue::Uuid([
                    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x0f, 0xed, 0xcb, 0xa9, 0x87,
                    0x65, 0x43, 0x21,
                ]),
            )
    }

    #[test]
    fn known_vector_empty_message() {
        let message = decode_one(&EMPTY);
        assert!(message.headers.is_empty());
        assert!(message.payload.is_empty());
        assert_eq!(Message::default().encode().unwrap(), EMPTY);
    }

    #[test]
    fn known_vector_payload_without_headers() {
        let message = decode_one(&PAYLOAD_ONLY);
        assert!(message.headers.is_empty());
        assert_eq!(&message.payload[..], b"{'foo':'bar'}");
        assert_eq!(
            Message::new(&b"{'foo':'bar'}"[..]).encode().unwrap(),
            PAYLOAD_ONLY
        );
    }

    #[test]
    fn known_vector_header_and_payload() {
        let vector = one_header_vector();
        let message = decode_one(&vector);
        assert_eq!(
            string_headers_of(&message),
            [("content-type", "application/json")]
        );
        assert_eq!(&message.payload[..], b"{'foo':'bar'}");
        let encoded = Message::new(&b"{'foo':'bar'}"[..])
            .with_header("content-type", "application/json")
            .encode()
            .unwrap();
        assert_eq!(encoded, vector);
    }

    #[test]
    fn every_header_type_round_trips() {
        let message = all_types();
        let bytes = message.encode().unwrap();
        assert_eq!(decode_one(&bytes), message);
    }

    #[test]
    fn header_type_codes_on_the_wire() {
        // One header per type: name "h", then the type byte, then the value.
        let cases: [(HeaderValue, &[u8]); 10] = [
            (HeaderValue::Bool(true), &[0]),
            (HeaderValue::Bool(false), &[1]),
            (HeaderValue::Byte(-2), &[2, 0xfe]),
            (HeaderValue::Int16(0x0102), &[3, 1, 2]),
            (HeaderValue::Int32(0x0102_0304), &[4, 1, 2, 3, 4]),
            (
                HeaderValue::Int64(0x0102_0304_0506_0708),
                &[5, 1, 2, 3, 4, 5, 6, 7, 8],
            ),
            (HeaderValue::ByteArray(vec![9, 8]), &[6, 0, 2, 9, 8]),
            (HeaderValue::String("ab".into()), &[7, 0, 2, b'a', b'b']),
            (
                HeaderValue::Timestamp(-1),
                &[8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
            (
                HeaderValue::Uuid([7; 16]),
                &[9, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7],
            ),
        ];
        for (value, wire) in cases {
            let bytes = Message::default()
                .with_header("h", value.clone())
                .encode()
                .unwrap();
            let headers = &bytes[PRELUDE_LEN..bytes.len() - MESSAGE_CRC_LEN];
            assert_eq!(&headers[..2], &[1, b'h']);
            assert_eq!(&headers[2..], wire, "{value:?}");
            assert_eq!(decode_one(&bytes).header("h"), Some(&value));
        }
    }

    #[test]
    fn consecutive_messages_decode_in_turn() {
        let mut stream = initial_response(PayloadEncoding::Json);
        let first_len = stream.len();
        stream.extend_from_slice(&EMPTY);
        stream.extend_from_slice(&PAYLOAD_ONLY[..10]);
        let (first, consumed) = decode_message(&stream).unwrap().unwrap();
        assert_eq!(consumed, first_len);
        assert_eq!(first.header_str(":event-type"), Some("initial-response"));
        let rest = &stream[consumed..];
        let (second, consumed) = decode_message(rest).unwrap().unwrap();
        assert_eq!(consumed, EMPTY.len());
        assert_eq!(second, Message::default());
        assert_eq!(decode_message(&rest[consumed..]), Ok(None));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let bytes = all_types().encode().unwrap();
        for end in 0..bytes.len() {
            assert_eq!(decode_message(&bytes[..end]), Ok(None), "prefix {end}");
        }
    }

    #[test]
    fn corrupt_prelude_crc_is_rejected() {
        let mut bytes = EMPTY;
        bytes[8] ^= 0x01;
        assert!(matches!(
            decode_message(&bytes),
            Err(EventStreamError::PreludeChecksum {
                expected: 0x04c2_48eb,
                computed: 0x05c2_48eb
            })
        ));
        // Detected from the prelude alone, before the rest arrives.
        assert!(matches!(
            decode_message(&bytes[..PRELUDE_LEN]),
            Err(EventStreamError::PreludeChecksum { .. })
        ));
        // A changed length breaks the prelude CRC too.
        let mut bytes = PAYLOAD_ONLY;
        bytes[3] = 0x1c;
        assert!(matches!(
            decode_message(&bytes),
            Err(EventStreamError::PreludeChecksum { .. })
        ));
    }

    #[test]
    fn corrupt_message_crc_or_body_is_rejected() {
        let mut bytes = PAYLOAD_ONLY;
        bytes[28] ^= 0x80;
        assert!(matches!(
            decode_message(&bytes),
            Err(EventStreamError::MessageChecksum {
                expected: 0xc365_39b6,
                computed: 0xc365_3936
            })
        ));
        let mut bytes = PAYLOAD_ONLY;
        bytes[15] = b'F';
        assert!(matches!(
            decode_message(&bytes),
            Err(EventStreamError::MessageChecksum { .. })
        ));
    }

    /// A prelude with a correct CRC over arbitrary lengths.
    fn prelude(total_len: u32, headers_len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&total_len.to_be_bytes());
        out.extend_from_slice(&headers_len.to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// A whole message around a raw header section, with correct CRCs.
    fn raw_message(headers: &[u8], payload: &[u8]) -> Vec<u8> {
        let total = u32::try_from(OVERHEAD + headers.len() + payload.len()).unwrap();
        let mut out = prelude(total, u32::try_from(headers.len()).unwrap());
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn impossible_lengths_are_rejected() {
        assert_eq!(
            decode_message(&prelude(15, 0)),
            Err(EventStreamError::MessageTooShort(15))
        );
        assert_eq!(
            decode_message(&prelude(0, 0)),
            Err(EventStreamError::MessageTooShort(0))
        );
        assert_eq!(
            decode_message(&prelude(20, 5)),
            Err(EventStreamError::HeadersLengthMismatch {
                headers_len: 5,
                total_len: 20
            })
        );
        assert_eq!(
            decode_message(&prelude(u32::MAX, u32::MAX)),
            Err(EventStreamError::HeadersLengthMismatch {
                headers_len: u32::MAX,
                total_len: u32::MAX
            })
        );
        assert!(matches!(
            decode_message(&prelude(u32::MAX, 0)),
            Err(EventStreamError::PayloadTooLong(_))
        ));
        assert!(matches!(
            decode_message(&prelude(1 << 20, 256 * 1024)),
            Err(EventStreamError::HeadersTooLong(_))
        ));
        // A plausible length just waits for more bytes.
        assert_eq!(decode_message(&prelude(1000, 10)), Ok(None));
    }

    #[test]
    fn malformed_header_sections_are_rejected() {
        let cases: [(&[u8], EventStreamError); 7] = [
            // Name runs past the section.
            (&[5, b'a'], EventStreamError::TruncatedHeader),
            // Name but no type.
            (&[1, b'a'], EventStreamError::TruncatedHeader),
            // i32 value cut short.
            (&[1, b'a', 4, 0, 0], EventStreamError::TruncatedHeader),
            // String length past the section.
            (&[1, b'a', 7, 0, 9, b'x'], EventStreamError::TruncatedHeader),
            (&[1, b'a', 10], EventStreamError::UnknownHeaderType(10)),
            (&[1, 0xff, 0], EventStreamError::InvalidUtf8),
            (
                &[1, b'a', 0, 1, b'a', 1],
                EventStreamError::DuplicateHeader("a".into()),
            ),
        ];
        for (headers, expected) in cases {
            let bytes = raw_message(headers, b"x");
            assert_eq!(decode_message(&bytes), Err(expected), "{headers:?}");
        }
        let bytes = raw_message(&[1, b'a', 7, 0, 2, 0xc3, 0x28], b"");
        assert_eq!(decode_message(&bytes), Err(EventStreamError::InvalidUtf8));
    }

    #[test]
    fn encoder_refuses_what_it_cannot_frame() {
        let long_name = "n".repeat(256);
        assert_eq!(
            Message::default()
                .with_header(long_name, true_value())
                .encode(),
            Err(EventStreamError::HeaderNameTooLong(256))
        );
        let long_value = "v".repeat(65_536);
        assert!(matches!(
            Message::default().with_header("a", long_value).encode(),
            Err(EventStreamError::HeaderValueTooLong { len: 65_536, .. })
        ));
        assert_eq!(
            Message::default()
                .with_header("a", true_value())
                .with_header("a", true_value())
                .encode(),
            Err(EventStreamError::DuplicateHeader("a".into()))
        );
        assert!(matches!(
            Message::new(vec![0u8; MAX_PAYLOAD_LEN + 1]).encode(),
            Err(EventStreamError::PayloadTooLong(_))
        ));
        // The limits themselves are fine.
        let max = Message::default().with_header("n".repeat(255), "v".repeat(65_535));
        assert_eq!(decode_one(&max.encode().unwrap()), max);
    }

    fn true_value() -> HeaderValue {
        HeaderValue::Bool(true)
    }

    #[test]
    fn initial_response_json() {
        let message = decode_one(&initial_response(PayloadEncoding::Json));
        assert_eq!(
            string_headers_of(&message),
            [
                (":event-type", "initial-response"),
                (":content-type", "application/x-amz-json-1.1"),
                (":message-type", "event"),
            ]
        );
        let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(body, serde_json::json!({}));
    }

    #[test]
    fn initial_response_cbor() {
        let message = decode_one(&initial_response(PayloadEncoding::Cbor));
        assert_eq!(
            message.header_str(":content-type"),
            Some("application/x-amz-cbor-1.1")
        );
        assert_eq!(message.header_str(":event-type"), Some("initial-response"));
        let body: ciborium::Value = ciborium::de::from_reader(&message.payload[..]).unwrap();
        assert_eq!(body, ciborium::Value::Map(Vec::new()));
    }

    fn sample_record(sequence: &str, data: &[u8]) -> Value {
        Value::map([
            ("SequenceNumber", Value::from(sequence)),
            (
                "ApproximateArrivalTimestamp",
                Value::timestamp_millis(1_700_000_000_123),
            ),
            ("Data", Value::bytes(data)),
            ("PartitionKey", Value::from("pk")),
        ])
    }

    fn sample_child_shards() -> Value {
        Value::list([Value::map([
            ("ShardId", Value::from("shardId-000000000001")),
            ("ParentShards", Value::list(["shardId-000000000000"])),
            (
                "HashKeyRange",
                Value::map([
                    ("StartingHashKey", Value::from("0")),
                    ("EndingHashKey", Value::from("1")),
                ]),
            ),
        ])])
    }

    #[test]
    fn subscribe_to_shard_event_json() {
        let payload = subscribe_to_shard_event(
            vec![sample_record(
                "49590338271490256608559692538361571095921575989136588898",
                b"hello",
            )],
            Some("49590338271490256608559692538361571095921575989136588898"),
            42,
            None,
        );
        let bytes = event_message("SubscribeToShardEvent", &payload, PayloadEncoding::Json);
        let message = decode_one(&bytes);
        assert_eq!(
            string_headers_of(&message),
            [
                (":event-type", "SubscribeToShardEvent"),
                (":content-type", "application/x-amz-json-1.1"),
                (":message-type", "event"),
            ]
        );
        let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "Records": [{
                    "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                    "ApproximateArrivalTimestamp": 1_700_000_000.123,
                    "Data": "aGVsbG8=",
                    "PartitionKey": "pk",
                }],
                "ContinuationSequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                "MillisBehindLatest": 42,
            })
        );
        // Members in model order.
        let text = std::str::from_utf8(&message.payload).unwrap();
        let order: Vec<usize> = [
            "\"Records\"",
            "\"ContinuationSequenceNumber\"",
            "\"MillisBehindLatest\"",
        ]
        .iter()
        .map(|key| text.find(key).unwrap())
        .collect();
        assert!(order.is_sorted(), "{text}");
    }

    #[test]
    fn subscribe_to_shard_event_at_shard_end() {
        let payload = subscribe_to_shard_event(Vec::new(), None, 0, Some(sample_child_shards()));
        let message = decode_one(&event_message(
            "SubscribeToShardEvent",
            &payload,
            PayloadEncoding::Json,
        ));
        let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "Records": [],
                "MillisBehindLatest": 0,
                "ChildShards": [{
                    "ShardId": "shardId-000000000001",
                    "ParentShards": ["shardId-000000000000"],
                    "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "1"},
                }],
            })
        );
    }

    fn cbor_get<'a>(map: &'a ciborium::Value, key: &str) -> &'a ciborium::Value {
        map.as_map()
            .and_then(|entries| {
                entries
                    .iter()
                    .find(|(k, _)| k.as_text() == Some(key))
                    .map(|(_, v)| v)
            })
            .unwrap_or_else(|| panic!("no {key} in {map:?}"))
    }

    #[test]
    fn subscribe_to_shard_event_cbor() {
        let payload = subscribe_to_shard_event(
            vec![sample_record("1", &[0, 159, 255])],
            Some("1"),
            7,
            Some(sample_child_shards()),
        );
        let message = decode_one(&event_message(
            "SubscribeToShardEvent",
            &payload,
            PayloadEncoding::Cbor,
        ));
        assert_eq!(
            string_headers_of(&message),
            [
                (":event-type", "SubscribeToShardEvent"),
                (":content-type", "application/x-amz-cbor-1.1"),
                (":message-type", "event"),
            ]
        );
        let body: ciborium::Value = ciborium::de::from_reader(&message.payload[..]).unwrap();
        let records = cbor_get(&body, "Records").as_array().unwrap();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(
            cbor_get(record, "Data"),
            &ciborium::Value::Bytes(vec![0, 159, 255])
        );
        assert_eq!(cbor_get(record, "PartitionKey").as_text(), Some("pk"));
        // Tag 1 (epoch time) over milliseconds, as AWS CBOR does.
        match cbor_get(record, "ApproximateArrivalTimestamp") {
            ciborium::Value::Tag(1, _) => {}
            other => panic!("timestamp not tagged: {other:?}"),
        }
        assert_eq!(
            cbor_get(&body, "ContinuationSequenceNumber").as_text(),
            Some("1")
        );
        assert_eq!(
            cbor_get(&body, "MillisBehindLatest"),
            &ciborium::Value::Integer(7.into())
        );
        assert_eq!(
            cbor_get(&body, "ChildShards").as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn modeled_exceptions() {
        let cases = [
            (ErrorKind::ResourceNotFound, "ResourceNotFoundException"),
            (ErrorKind::ResourceInUse, "ResourceInUseException"),
            (ErrorKind::InternalFailure, "InternalFailureException"),
        ];
        for (kind, exception_type) in cases {
            let error = ApiError::new(kind, "Consumer arn:aws:kinesis:x not found.");
            let message = decode_one(&exception_message(&error, PayloadEncoding::Json));
            assert_eq!(
                string_headers_of(&message),
                [
                    (":exception-type", exception_type),
                    (":content-type", "application/x-amz-json-1.1"),
                    (":message-type", "exception"),
                ]
            );
            let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"message": "Consumer arn:aws:kinesis:x not found."})
            );

            let message = decode_one(&exception_message(&error, PayloadEncoding::Cbor));
            assert_eq!(message.header_str(":exception-type"), Some(exception_type));
            let body: ciborium::Value = ciborium::de::from_reader(&message.payload[..]).unwrap();
            assert_eq!(
                cbor_get(&body, "message").as_text(),
                Some("Consumer arn:aws:kinesis:x not found.")
            );
        }
    }

    #[test]
    fn unmodeled_errors_use_error_messages() {
        let error = ApiError::new(ErrorKind::LimitExceeded, "Too many subscriptions.");
        let message = decode_one(&exception_message(&error, PayloadEncoding::Cbor));
        assert_eq!(
            string_headers_of(&message),
            [
                (":error-code", "LimitExceededException"),
                (":error-message", "Too many subscriptions."),
                (":message-type", "error"),
            ]
        );
        assert!(message.payload.is_empty());

        // A message too long for a header is cut at a character boundary.
        let error = ApiError::validation("é".repeat(40_000));
        let message = decode_one(&exception_message(&error, PayloadEncoding::Json));
        let text = message.header_str(":error-message").unwrap();
        assert_eq!(text.len(), 65_534);
        assert!(text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn oversize_event_becomes_an_error_message() {
        let payload = Value::map([("Data", Value::bytes(vec![0u8; MAX_PAYLOAD_LEN]))]);
        let message = decode_one(&event_message(
            "SubscribeToShardEvent",
            &payload,
            PayloadEncoding::Cbor,
        ));
        assert_eq!(message.header_str(":message-type"), Some("error"));
        assert_eq!(message.header_str(":error-code"), Some("InternalFailure"));
        assert!(message.payload.is_empty());
    }

    #[test]
    fn long_event_type_is_clipped() {
        let event_type = "x".repeat(70_000);
        let message = decode_one(&event_message(
            &event_type,
            &Value::empty_map(),
            PayloadEncoding::Json,
        ));
        assert_eq!(
            message.header_str(":event-type").map(str::len),
            Some(65_535)
        );
    }

    fn header_value() -> impl Strategy<Value = HeaderValue> {
        prop_oneof![
            any::<bool>().prop_map(HeaderValue::Bool),
            any::<i8>().prop_map(HeaderValue::Byte),
            any::<i16>().prop_map(HeaderValue::Int16),
            any::<i32>().prop_map(HeaderValue::Int32),
            any::<i64>().prop_map(HeaderValue::Int64),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(HeaderValue::ByteArray),
            ".{0,32}".prop_map(HeaderValue::String),
            any::<i64>().prop_map(HeaderValue::Timestamp),
            any::<[u8; 16]>().prop_map(HeaderValue::Uuid),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            proptest::collection::btree_map("[:a-zA-Z0-9-]{0,24}", header_value(), 0..8),
            proptest::collection::vec(any::<u8>(), 0..256),
        )
            .prop_map(|(headers, payload)| Message {
                headers: headers.into_iter().collect(),
                payload: payload.into(),
            })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some((_, consumed))) = decode_message(&bytes) {
                prop_assert!(consumed <= bytes.len());
            }
        }

        #[test]
        fn random_bodies_behind_valid_preludes_never_panic(
            headers_len in 0u32..64,
            payload_len in 0u32..64,
            body in proptest::collection::vec(any::<u8>(), 0..160),
        ) {
            let mut bytes = prelude(16 + headers_len + payload_len, headers_len);
            bytes.extend_from_slice(&body);
            let _ = decode_message(&bytes);
            // With a valid message CRC the header parser sees the random bytes.
            let total = (16 + headers_len + payload_len) as usize;
            if bytes.len() >= total {
                bytes.truncate(total - 4);
                let crc = crc32fast::hash(&bytes);
                bytes.extend_from_slice(&crc.to_be_bytes());
                let _ = decode_message(&bytes);
            }
        }

        #[test]
        fn messages_round_trip(message in message(), trailing in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut bytes = message.encode().unwrap();
            let len = bytes.len();
            bytes.extend_from_slice(&trailing);
            let (decoded, consumed) = decode_message(&bytes).unwrap().unwrap();
            prop_assert_eq!(consumed, len);
            prop_assert_eq!(decoded, message);
        }

        #[test]
        fn any_single_bit_flip_is_detected(message in message(), bit in any::<proptest::sample::Index>()) {
            let mut bytes = message.encode().unwrap();
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_message(&bytes).is_err());
        }
    }
}
