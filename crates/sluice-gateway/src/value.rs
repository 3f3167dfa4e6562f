//! One request/response tree for both Kinesis wire protocols: AWS JSON 1.1
//! (`application/x-amz-json-1.1`) and CBOR 1.1 (`application/x-amz-cbor-1.1`).
//!
//! Requests are decoded into a [`Value`] ([`decode_json`], [`decode_cbor`]),
//! checked and normalized against the service model by
//! [`crate::validate::check_input`], and read by handlers through the typed
//! accessors. Responses are built as a [`Value`] and encoded with
//! [`encode_json`] or [`encode_cbor`].
//!
//! Wire conventions:
//! * JSON blobs are standard base64 strings; JSON timestamps are epoch seconds
//!   as a number (fractional milliseconds allowed).
//! * CBOR blobs are byte strings; CBOR timestamps are tag 1 over an integer (or
//!   float) count of epoch **milliseconds**. AWS departs from RFC 8949 here and
//!   the AWS Java SDK both sends and expects milliseconds.
//! * Inside the tree a timestamp is [`Value::Timestamp`] holding epoch seconds.
//! * Map entries whose value is [`Value::Null`] are omitted when encoding, as
//!   AWS never sends `null` members.
//!
//! Malformed bodies are `SerializationException` with an empty message: AWS
//! (and kinesalite) answer `{"__type":"SerializationException"}` with no
//! message for them, so the wire layer should leave the message out when it
//! is empty.

use std::collections::HashSet;
use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::ApiError;

/// Deepest nesting accepted in a CBOR body (the JSON parser has its own limit
/// of 128). Kinesis inputs nest at most four levels.
pub const MAX_DEPTH: usize = 128;

/// A decoded request or a response under construction.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// JSON `null`, CBOR null/undefined, or an absent value.
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A blob: a CBOR byte string, or a JSON base64 string after validation.
    Bytes(Vec<u8>),
    /// A timestamp in epoch seconds.
    Timestamp(f64),
    List(Vec<Value>),
    /// A JSON object / CBOR map with text keys, in wire order, keys unique.
    Map(Vec<(String, Value)>),
}

// ---------------------------------------------------------------------------
// Construction

impl Value {
    /// A map from `(key, value)` pairs, in the given order.
    ///
    /// `Value::map([("StreamName", Value::from(name)), ("ShardCount", 2.into())])`
    pub fn map<K, I>(entries: I) -> Value
    where
        K: Into<String>,
        I: IntoIterator<Item = (K, Value)>,
    {
        Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// An empty map (`{}`).
    pub fn empty_map() -> Value {
        Value::Map(Vec::new())
    }

    /// A list of values.
    pub fn list<T: Into<Value>, I: IntoIterator<Item = T>>(items: I) -> Value {
        Value::List(items.into_iter().map(Into::into).collect())
    }

    /// A blob.
    pub fn bytes(data: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(data.into())
    }

    /// A timestamp from epoch seconds.
    pub fn timestamp(seconds: f64) -> Value {
        Value::Timestamp(seconds)
    }

    /// A timestamp from epoch milliseconds.
    pub fn timestamp_millis(millis: i64) -> Value {
        Value::Timestamp(millis as f64 / 1000.0)
    }

    /// Builder: this map with `key` set to `value` (replacing an existing
    /// entry). On a non-map the value is returned unchanged.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Value {
        self.insert(key, value);
        self
    }

    /// Builder: like [`Value::with`], but leaves the map unchanged for `None`.
    pub fn with_opt<V: Into<Value>>(self, key: impl Into<String>, value: Option<V>) -> Value {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    /// Sets `key` in a map (replacing an existing entry); no-op on non-maps.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        if let Value::Map(entries) = self {
            let key = key.into();
            let value = value.into();
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            }
        }
    }

    /// Appends to a list; no-op on non-lists.
    pub fn push(&mut self, value: impl Into<Value>) {
        if let Value::List(items) = self {
            items.push(value.into());
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Int(i64::from(v))
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Str(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Str(v.clone())
    }
}

impl From<bytes::Bytes> for Value {
    fn from(v: bytes::Bytes) -> Value {
        Value::Bytes(v.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Bytes(v.to_vec())
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Value {
        Value::List(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

// ---------------------------------------------------------------------------
// Access

impl Value {
    /// The member `key` of a map; `None` when absent, `null`, or `self` is not
    /// a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .filter(|v| !v.is_null()),
            _ => None,
        }
    }

    /// Mutable access to the member `key` of a map (present and not `null`).
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        match self {
            Value::Map(entries) => entries
                .iter_mut()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .filter(|v| !v.is_null()),
            _ => None,
        }
    }

    /// Removes and returns the member `key` of a map (e.g. to move a large
    /// blob out without copying). `None` when absent or `null`.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        match self {
            Value::Map(entries) => {
                let i = entries.iter().position(|(k, _)| k == key)?;
                let (_, v) = entries.remove(i);
                (!v.is_null()).then_some(v)
            }
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An integer. Floats are not converted ([`crate::validate::check_input`]
    /// already turned numbers for integer members into `Int`).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Any number (or timestamp seconds) as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) | Value::Timestamp(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A timestamp in epoch seconds; plain numbers count as seconds.
    pub fn as_timestamp(&self) -> Option<f64> {
        match self {
            Value::Timestamp(s) | Value::Float(s) => Some(*s).filter(|s| s.is_finite()),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// A timestamp in whole epoch milliseconds (rounded).
    pub fn as_timestamp_millis(&self) -> Option<i64> {
        self.as_timestamp().map(seconds_to_millis)
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn into_string(self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn into_list(self) -> Option<Vec<Value>> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// `get(key)` as a string.
    pub fn str_of(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// `get(key)` as an integer.
    pub fn i64_of(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(Value::as_i64)
    }

    /// `get(key)` as a boolean.
    pub fn bool_of(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    /// `get(key)` as a blob.
    pub fn bytes_of(&self, key: &str) -> Option<&[u8]> {
        self.get(key).and_then(Value::as_bytes)
    }

    /// `get(key)` as a timestamp in epoch seconds.
    pub fn timestamp_of(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_timestamp)
    }

    /// `get(key)` as a list.
    pub fn list_of(&self, key: &str) -> Option<&[Value]> {
        self.get(key).and_then(Value::as_list)
    }
}

/// Seconds to whole milliseconds, rounded, saturating.
fn seconds_to_millis(s: f64) -> i64 {
    // `as` saturates, and maps NaN to 0.
    (s * 1000.0).round() as i64
}

fn malformed() -> ApiError {
    ApiError::serialization("")
}

/// Keeps the last value for each repeated key (as `JSON.parse` does), in the
/// position of that last occurrence.
fn dedupe_keys(entries: &mut Vec<(String, Value)>) {
    if entries.len() < 2 {
        return;
    }
    let mut keep = vec![false; entries.len()];
    {
        let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
        for (i, (k, _)) in entries.iter().enumerate().rev() {
            if seen.insert(k.as_str())
                && let Some(slot) = keep.get_mut(i)
            {
                *slot = true;
            }
        }
    }
    if keep.iter().all(|k| *k) {
        return;
    }
    let mut flags = keep.into_iter();
    entries.retain(|_| flags.next().unwrap_or(true));
}

// ---------------------------------------------------------------------------
// JSON

/// Decodes an AWS JSON 1.1 request body. The top level must be an object; an
/// empty (or all-whitespace) body is `{}`. Anything else that is not a JSON
/// object is a `SerializationException`.
pub fn decode_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::empty_map());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let JsonValue(value) = JsonValue::deserialize(&mut de).map_err(|_| malformed())?;
    de.end().map_err(|_| malformed())?;
    match value {
        Value::Map(_) => Ok(value),
        _ => Err(malformed()),
    }
}

struct JsonValue(Value);

impl<'de> Deserialize<'de> for JsonValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor).map(JsonValue)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(JsonValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, JsonValue(v))) = map.next_entry::<String, JsonValue>()? {
            entries.push((k, v));
        }
        dedupe_keys(&mut entries);
        Ok(Value::Map(entries))
    }
}

/// Encodes a response as AWS JSON 1.1: blobs as standard base64, timestamps
/// as epoch seconds with up to millisecond fraction (`1700000000.123`), map
/// entries holding `Null` left out, non-finite floats as `null`.
pub fn encode_json(value: &Value) -> Vec<u8> {
    let mut out = String::with_capacity(128);
    write_json(&mut out, value);
    out.into_bytes()
}

fn write_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => {
            if f.is_finite() {
                let _ = write!(out, "{f:?}");
            } else {
                out.push_str("null");
            }
        }
        Value::Timestamp(s) => write_json_timestamp(out, *s),
        Value::Str(s) => write_json_string(out, s),
        Value::Bytes(b) => {
            out.push('"');
            BASE64.encode_string(b, out);
            out.push('"');
        }
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            let mut first = true;
            for (k, v) in entries {
                if v.is_null() {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                write_json_string(out, k);
                out.push(':');
                write_json(out, v);
            }
            out.push('}');
        }
    }
}

fn write_json_timestamp(out: &mut String, seconds: f64) {
    let millis = seconds_to_millis(seconds);
    if millis < 0 {
        out.push('-');
    }
    let abs = millis.unsigned_abs();
    let (whole, frac) = (abs / 1000, abs % 1000);
    let _ = write!(out, "{whole}");
    if frac != 0 {
        let digits = format!("{frac:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------
// CBOR

/// Decodes an AWS CBOR 1.1 request body: exactly one data item, a map with
/// text keys. Definite and indefinite lengths are accepted; tag 1 over a
/// number of epoch milliseconds becomes [`Value::Timestamp`]; bignum tags
/// become numbers; other tags are transparent. An empty body is `{}`.
pub fn decode_cbor(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::empty_map());
    }
    let mut reader = CborReader { buf: body, pos: 0 };
    let value = reader.item(0).map_err(|_| malformed())?;
    if reader.pos != body.len() {
        return Err(malformed());
    }
    match value {
        Value::Map(_) => Ok(value),
        _ => Err(malformed()),
    }
}

/// A CBOR decoding failure (details are not reported to clients).
#[derive(Debug)]
struct CborError;

type CborResult<T> = Result<T, CborError>;

enum Head {
    /// A major type with its argument.
    Arg(u8, u64),
    /// A major type with indefinite length (additional info 31).
    Indefinite(u8),
    /// The "break" stop code.
    Break,
    /// Major type 7 floats, already widened.
    Float(f64),
}

struct CborReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> CborReader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> CborResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(CborError)?;
        let slice = self.buf.get(self.pos..end).ok_or(CborError)?;
        self.pos = end;
        Ok(slice)
    }

    fn byte(&mut self) -> CborResult<u8> {
        let b = *self.buf.get(self.pos).ok_or(CborError)?;
        self.pos += 1;
        Ok(b)
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn uint(&mut self, n: usize) -> CborResult<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn head(&mut self) -> CborResult<Head> {
        let initial = self.byte()?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        if major == 7 {
            return match info {
                25 => {
                    let bits = self.uint(2)? as u16;
                    Ok(Head::Float(half_to_f64(bits)))
                }
                26 => {
                    let bits = self.uint(4)? as u32;
                    Ok(Head::Float(f64::from(f32::from_bits(bits))))
                }
                27 => Ok(Head::Float(f64::from_bits(self.uint(8)?))),
                31 => Ok(Head::Break),
                24 => Ok(Head::Arg(7, u64::from(self.byte()?))),
                28..=30 => Err(CborError),
                simple => Ok(Head::Arg(7, u64::from(simple))),
            };
        }
        let arg = match info {
            0..=23 => u64::from(info),
            24 => self.uint(1)?,
            25 => self.uint(2)?,
            26 => self.uint(4)?,
            27 => self.uint(8)?,
            31 if (2..=5).contains(&major) => return Ok(Head::Indefinite(major)),
            _ => return Err(CborError),
        };
        Ok(Head::Arg(major, arg))
    }

    fn len(&self, n: u64) -> CborResult<usize> {
        usize::try_from(n).map_err(|_| CborError)
    }

    /// One complete data item.
    fn item(&mut self, depth: usize) -> CborResult<Value> {
        if depth > MAX_DEPTH {
            return Err(CborError);
        }
        match self.head()? {
            Head::Break => Err(CborError),
            Head::Float(f) => Ok(Value::Float(f)),
            Head::Arg(0, n) => Ok(i64::try_from(n).map_or(Value::Float(n as f64), Value::Int)),
            Head::Arg(1, n) => Ok(match i64::try_from(n) {
                // -1 - n never overflows for n <= i64::MAX.
                Ok(i) => Value::Int(-1 - i),
                Err(_) => Value::Float(-1.0 - n as f64),
            }),
            Head::Arg(2, n) => {
                let n = self.len(n)?;
                Ok(Value::Bytes(self.take(n)?.to_vec()))
            }
            Head::Arg(3, n) => {
                let n = self.len(n)?;
                let s = std::str::from_utf8(self.take(n)?).map_err(|_| CborError)?;
                Ok(Value::Str(s.to_string()))
            }
            Head::Indefinite(major @ (2 | 3)) => {
                let mut buf = Vec::new();
                loop {
                    match self.head()? {
                        Head::Break => break,
                        Head::Arg(m, n) if m == major => {
                            let n = self.len(n)?;
                            buf.extend_from_slice(self.take(n)?);
                        }
                        _ => return Err(CborError),
                    }
                }
                if major == 2 {
                    Ok(Value::Bytes(buf))
                } else {
                    String::from_utf8(buf)
                        .map(Value::Str)
                        .map_err(|_| CborError)
                }
            }
            Head::Arg(4, n) => {
                let n = self.len(n)?;
                // Every item takes at least one byte.
                if n > self.remaining() {
                    return Err(CborError);
                }
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(self.item(depth + 1)?);
                }
                Ok(Value::List(items))
            }
            Head::Indefinite(4) => {
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(0xff) {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.item(depth + 1)?);
                }
                Ok(Value::List(items))
            }
            Head::Arg(5, n) => {
                let n = self.len(n)?;
                if n > self.remaining() / 2 {
                    return Err(CborError);
                }
                let mut entries = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    entries.push(self.entry(depth)?);
                }
                dedupe_keys(&mut entries);
                Ok(Value::Map(entries))
            }
            Head::Indefinite(5) => {
                let mut entries = Vec::new();
                loop {
                    if self.peek() == Some(0xff) {
                        self.pos += 1;
                        break;
                    }
                    entries.push(self.entry(depth)?);
                }
                dedupe_keys(&mut entries);
                Ok(Value::Map(entries))
            }
            Head::Arg(6, tag) => {
                let inner = self.item(depth + 1)?;
                match tag {
                    // Epoch milliseconds (the AWS convention), kept as seconds.
                    1 => match inner {
                        Value::Int(ms) => Ok(Value::Timestamp(ms as f64 / 1000.0)),
                        Value::Float(ms) if ms.is_finite() => Ok(Value::Timestamp(ms / 1000.0)),
                        _ => Err(CborError),
                    },
                    2 | 3 => match inner {
                        Value::Bytes(b) => {
                            let magnitude =
                                b.iter().fold(0f64, |acc, x| acc * 256.0 + f64::from(*x));
                            let n = if tag == 2 {
                                magnitude
                            } else {
                                -1.0 - magnitude
                            };
                            Ok(Value::Float(n))
                        }
                        _ => Err(CborError),
                    },
                    _ => Ok(inner),
                }
            }
            Head::Arg(7, simple) => match simple {
                20 => Ok(Value::Bool(false)),
                21 => Ok(Value::Bool(true)),
                22 | 23 => Ok(Value::Null),
                _ => Err(CborError),
            },
            _ => Err(CborError),
        }
    }

    fn entry(&mut self, depth: usize) -> CborResult<(String, Value)> {
        let key = match self.item(depth + 1)? {
            Value::Str(k) => k,
            _ => return Err(CborError),
        };
        let value = self.item(depth + 1)?;
        Ok((key, value))
    }
}

fn half_to_f64(bits: u16) -> f64 {
    let exp = i32::from((bits >> 10) & 0x1f);
    let mant = f64::from(bits & 0x3ff);
    let magnitude = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (mant + 1024.0) * 2f64.powi(exp - 25),
    };
    if bits & 0x8000 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// Encodes a response as AWS CBOR 1.1: definite lengths, blobs as byte
/// strings, timestamps as tag 1 over integer epoch milliseconds, floats as
/// 64-bit, map entries holding `Null` left out.
pub fn encode_cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_cbor(&mut out, value);
    out
}

fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u64::from(u8::MAX) {
        out.push(m | 24);
        out.push(n as u8);
    } else if n <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn cbor_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        cbor_head(out, 0, i.unsigned_abs());
    } else {
        // -1 - i, computed without overflow.
        cbor_head(out, 1, !(i as u64));
    }
}

fn write_cbor(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(0xf6),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Int(i) => cbor_int(out, *i),
        Value::Float(f) => {
            out.push(0xfb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Value::Timestamp(s) => {
            out.push(0xc1);
            cbor_int(out, seconds_to_millis(*s));
        }
        Value::Str(s) => {
            cbor_head(out, 3, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            cbor_head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::List(items) => {
            cbor_head(out, 4, items.len() as u64);
            for item in items {
                write_cbor(out, item);
            }
        }
        Value::Map(entries) => {
            let present = entries.iter().filter(|(_, v)| !v.is_null()).count();
            cbor_head(out, 5, present as u64);
            for (k, v) in entries.iter().filter(|(_, v)| !v.is_null()) {
                cbor_head(out, 3, k.len() as u64);
                out.extend_from_slice(k.as_bytes());
                write_cbor(out, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn cbor_of(v: &ciborium::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).expect("ciborium encodes");
        out
    }

    fn cbor_parse(bytes: &[u8]) -> ciborium::Value {
        ciborium::de::from_reader(bytes).expect("ciborium decodes")
    }

    fn sample() -> Value {
        Value::map([
            ("StreamName", Value::from("s-1")),
            ("Count", Value::from(42)),
            ("Negative", Value::from(-7)),
            ("Big", Value::Int(i64::MIN)),
            ("Ratio", Value::Float(0.25)),
            ("Flag", Value::from(true)),
            ("Data", Value::bytes(&b"\x00\x01hello\xff"[..])),
            ("At", Value::timestamp_millis(1_700_000_000_123)),
            (
                "Nested",
                Value::list([Value::map([("K", Value::from("v"))])]),
            ),
            ("Empty", Value::empty_map()),
            (
                "Text",
                Value::from("quote\" slash\\ nl\n tab\t ctl\u{1} é 😀"),
            ),
        ])
    }

    #[test]
    fn json_decode_basics() {
        let v = decode_json(
            br#"{"A":"x","B":1,"C":-2,"D":1.5,"E":true,"F":null,"G":[1,"y"],"H":{"I":{}}}"#,
        )
        .expect("decodes");
        assert_eq!(v.str_of("A"), Some("x"));
        assert_eq!(v.i64_of("B"), Some(1));
        assert_eq!(v.i64_of("C"), Some(-2));
        assert_eq!(v.get("D"), Some(&Value::Float(1.5)));
        assert_eq!(v.bool_of("E"), Some(true));
        assert_eq!(v.get("F"), None, "null reads as absent");
        assert_eq!(v.list_of("G").map(<[Value]>::len), Some(2));
        assert!(v.get("H").and_then(|h| h.get("I")).is_some());
        // Key order is preserved.
        let keys: Vec<_> = v
            .as_map()
            .expect("map")
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["A", "B", "C", "D", "E", "F", "G", "H"]);
    }

    #[test]
    fn json_large_numbers_and_duplicates() {
        let v = decode_json(br#"{"U":18446744073709551615,"E":1e400,"K":1,"K":2}"#);
        // 1e400 is out of f64 range: serde_json rejects it.
        assert!(v.is_err());
        let v = decode_json(br#"{"U":18446744073709551615,"K":1,"J":0,"K":2}"#).expect("decodes");
        assert_eq!(v.get("U"), Some(&Value::Float(18446744073709551615.0)));
        assert_eq!(v.i64_of("K"), Some(2));
        assert_eq!(v.as_map().map(<[_]>::len), Some(3));
    }

    #[test]
    fn empty_bodies_are_empty_maps() {
        assert_eq!(decode_json(b"").expect("empty"), Value::empty_map());
        assert_eq!(decode_json(b" \n").expect("blank"), Value::empty_map());
        assert_eq!(decode_cbor(b"").expect("empty"), Value::empty_map());
    }

    #[test]
    fn malformed_json_is_serialization_exception() {
        let cases: &[&[u8]] = &[
            b"hello",
            b"{",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"[]",
            b"\"str\"",
            b"5",
            b"null",
            b"{} {}",
            b"{\"a\":\"\\ud800\"}",
            b"\xff\xfe",
            b"{\"a\":\"\xff\"}",
        ];
        for body in cases {
            let err = decode_json(body).expect_err(&String::from_utf8_lossy(body));
            assert_eq!(err.kind, ErrorKind::Serialization);
            assert_eq!(err.message, "");
        }
        let deep = "[".repeat(10_000);
        let err = decode_json(format!("{{\"a\":{deep}").as_bytes()).expect_err("deep");
        assert_eq!(err.kind, ErrorKind::Serialization);
    }

    #[test]
    fn json_encoding() {
        let text = String::from_utf8(encode_json(&sample())).expect("utf8");
        assert_eq!(
            text,
            concat!(
                r#"{"StreamName":"s-1","Count":42,"Negative":-7,"Big":-9223372036854775808,"#,
                r#""Ratio":0.25,"Flag":true,"Data":"AAFoZWxsb/8=","At":1700000000.123,"#,
                r#""Nested":[{"K":"v"}],"Empty":{},"#,
                r#""Text":"quote\" slash\\ nl\n tab\t ctl\u0001 é 😀"}"#
            )
        );
        // And serde_json reads it back.
        let back: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(back["At"].as_f64(), Some(1700000000.123));
        assert_eq!(
            back["Text"].as_str(),
            Some("quote\" slash\\ nl\n tab\t ctl\u{1} é 😀")
        );
    }

    #[test]
    fn json_timestamps() {
        let cases = [
            (1_700_000_000_000i64, "1700000000"),
            (1_700_000_000_100, "1700000000.1"),
            (1_700_000_000_120, "1700000000.12"),
            (1_700_000_000_123, "1700000000.123"),
            (1, "0.001"),
            (0, "0"),
            (-1_500, "-1.5"),
        ];
        for (ms, text) in cases {
            assert_eq!(
                encode_json(&Value::timestamp_millis(ms)),
                text.as_bytes(),
                "{ms}"
            );
        }
        assert_eq!(encode_json(&Value::Float(f64::NAN)), b"null");
    }

    #[test]
    fn json_skips_null_members() {
        let v = Value::map([("A", Value::Null), ("B", Value::from(1))])
            .with_opt("C", None::<&str>)
            .with_opt("D", Some("d"));
        assert_eq!(encode_json(&v), br#"{"B":1,"D":"d"}"#);
        assert_eq!(encode_json(&Value::list([Value::Null])), b"[null]");
    }

    #[test]
    fn json_round_trip() {
        let v = Value::map([
            ("S", Value::from("x\u{2028}y")),
            ("I", Value::from(-3)),
            ("F", Value::Float(1e300)),
            ("L", Value::list([Value::from(true), Value::from("z")])),
        ]);
        assert_eq!(decode_json(&encode_json(&v)).expect("round trip"), v);
    }

    #[test]
    fn cbor_round_trip() {
        let v = sample();
        let bytes = encode_cbor(&v);
        assert_eq!(decode_cbor(&bytes).expect("round trip"), v);
    }

    #[test]
    fn cbor_timestamps_are_tag_1_milliseconds() {
        let v = Value::map([("T", Value::timestamp_millis(1_700_000_000_123))]);
        let bytes = encode_cbor(&v);
        let parsed = cbor_parse(&bytes);
        let ciborium::Value::Map(entries) = parsed else {
            panic!("map")
        };
        assert_eq!(
            entries,
            vec![(
                ciborium::Value::Text("T".into()),
                ciborium::Value::Tag(
                    1,
                    Box::new(ciborium::Value::Integer(1_700_000_000_123i64.into()))
                )
            )]
        );
        // Incoming: integer and float milliseconds.
        for inner in [
            ciborium::Value::Integer(1_700_000_000_123i64.into()),
            ciborium::Value::Float(1_700_000_000_123.0),
        ] {
            let body = cbor_of(&ciborium::Value::Map(vec![(
                ciborium::Value::Text("Timestamp".into()),
                ciborium::Value::Tag(1, Box::new(inner)),
            )]));
            let v = decode_cbor(&body).expect("decodes");
            let secs = v.timestamp_of("Timestamp").expect("timestamp");
            assert!((secs - 1_700_000_000.123).abs() < 1e-6, "{secs}");
            assert_eq!(
                v.get("Timestamp").and_then(Value::as_timestamp_millis),
                Some(1_700_000_000_123)
            );
        }
        // A tag 1 over something that is not a number is malformed.
        let body = cbor_of(&ciborium::Value::Map(vec![(
            ciborium::Value::Text("T".into()),
            ciborium::Value::Tag(1, Box::new(ciborium::Value::Text("x".into()))),
        )]));
        assert_eq!(
            decode_cbor(&body).expect_err("bad tag").kind,
            ErrorKind::Serialization
        );
    }

    #[test]
    fn cbor_blobs_are_byte_strings() {
        let v = Value::map([("Data", Value::bytes(vec![0u8, 1, 2, 255]))]);
        let parsed = cbor_parse(&encode_cbor(&v));
        let ciborium::Value::Map(entries) = parsed else {
            panic!("map")
        };
        assert_eq!(entries[0].1, ciborium::Value::Bytes(vec![0, 1, 2, 255]));
    }

    #[test]
    fn cbor_from_ciborium() {
        let body = cbor_of(&ciborium::Value::Map(vec![
            (
                ciborium::Value::Text("StreamName".into()),
                ciborium::Value::Text("s".into()),
            ),
            (
                ciborium::Value::Text("Limit".into()),
                ciborium::Value::Integer(10.into()),
            ),
            (
                ciborium::Value::Text("Neg".into()),
                ciborium::Value::Integer((-300).into()),
            ),
            (
                ciborium::Value::Text("F32".into()),
                ciborium::Value::Float(1.5),
            ),
            (
                ciborium::Value::Text("Data".into()),
                ciborium::Value::Bytes(vec![1, 2, 3]),
            ),
            (ciborium::Value::Text("Null".into()), ciborium::Value::Null),
            (
                ciborium::Value::Text("List".into()),
                ciborium::Value::Array(vec![ciborium::Value::Bool(false)]),
            ),
        ]));
        let v = decode_cbor(&body).expect("decodes");
        assert_eq!(v.str_of("StreamName"), Some("s"));
        assert_eq!(v.i64_of("Limit"), Some(10));
        assert_eq!(v.i64_of("Neg"), Some(-300));
        assert_eq!(v.get("F32"), Some(&Value::Float(1.5)));
        assert_eq!(v.bytes_of("Data"), Some(&[1u8, 2, 3][..]));
        assert_eq!(v.get("Null"), None);
        assert_eq!(v.list_of("List"), Some(&[Value::Bool(false)][..]));
    }

    #[test]
    fn cbor_indefinite_lengths_and_half_floats() {
        // {_ "A": (_ h'0102', h'03'), "B": [_ 1, -1], "C": (_ "ab", "c"), "D": 1.5 (half), "E": undefined}
        let body = [
            0xbf, // indefinite map
            0x61, b'A', 0x5f, 0x42, 1, 2, 0x41, 3, 0xff, // indefinite bytes
            0x61, b'B', 0x9f, 0x01, 0x20, 0xff, // indefinite array
            0x61, b'C', 0x7f, 0x62, b'a', b'b', 0x61, b'c', 0xff, // indefinite text
            0x61, b'D', 0xf9, 0x3e, 0x00, // half 1.5
            0x61, b'E', 0xf7, // undefined
            0xff,
        ];
        let v = decode_cbor(&body).expect("decodes");
        assert_eq!(v.bytes_of("A").map(|b| b.to_vec()), Some(vec![1, 2, 3]));
        assert_eq!(v.list_of("B"), Some(&[Value::Int(1), Value::Int(-1)][..]));
        assert_eq!(v.str_of("C"), Some("abc"));
        assert_eq!(v.get("D"), Some(&Value::Float(1.5)));
        assert_eq!(v.get("E"), None);
        assert_eq!(half_to_f64(0x7c00), f64::INFINITY);
        assert!(half_to_f64(0x7e00).is_nan());
        assert_eq!(half_to_f64(0x0001), 2f64.powi(-24));
        assert_eq!(half_to_f64(0xc000), -2.0);
    }

    #[test]
    fn cbor_integer_edges() {
        for i in [
            0,
            23,
            24,
            255,
            256,
            65535,
            65536,
            u32::MAX as i64,
            i64::MAX,
            -1,
            -24,
            -25,
            -256,
            -257,
            i64::MIN,
        ] {
            let v = Value::map([("I", Value::Int(i))]);
            let bytes = encode_cbor(&v);
            assert_eq!(decode_cbor(&bytes).expect("decodes"), v, "{i}");
            let ciborium::Value::Map(e) = cbor_parse(&bytes) else {
                panic!("map")
            };
            assert_eq!(e[0].1, ciborium::Value::Integer(i.into()), "{i}");
        }
        // 2^64 - 1 and -2^64 do not fit i64: they become floats.
        let v = decode_cbor(&[
            0xa1, 0x61, b'I', 0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ])
        .expect("u64");
        assert_eq!(v.get("I"), Some(&Value::Float(u64::MAX as f64)));
        let v = decode_cbor(&[
            0xa1, 0x61, b'I', 0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ])
        .expect("neg");
        assert_eq!(v.get("I"), Some(&Value::Float(-(u64::MAX as f64) - 1.0)));
    }

    #[test]
    fn malformed_cbor_is_serialization_exception() {
        let cases: &[&[u8]] = &[
            &[0xa1],                                           // map missing entry
            &[0xa1, 0x01, 0x02],                               // non-text key
            &[0x80],                                           // top-level array
            &[0x61, b'a'],                                     // top-level text
            &[0xa0, 0x00],                                     // trailing bytes
            &[0xff],                                           // stray break
            &[0xa1, 0x61, b'a', 0x7a, 0xff, 0xff, 0xff, 0xff], // huge text length
            &[
                0xa1, 0x61, b'a', 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ], // huge array
            &[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // huge map
            &[0xa1, 0x61, b'a', 0x62, 0xc3, 0x28],             // invalid UTF-8
            &[0xa1, 0x61, b'a', 0x5f, 0x61, b'x', 0xff],       // text chunk in byte string
            &[0xa1, 0x61, b'a', 0xfc],                         // reserved
            &[0xa1, 0x61, b'a', 0xf8, 0x20],                   // unknown simple value
            &[0xa1, 0x61, b'a', 0x1c],                         // reserved additional info
            &[0xbf, 0x61, b'a', 0x01],                         // unterminated indefinite map
            &[0xa1, 0x61, b'a', 0xc1, 0xf6],                   // tag 1 over null
        ];
        for body in cases {
            let err = decode_cbor(body).expect_err(&format!("{body:02x?}"));
            assert_eq!(err.kind, ErrorKind::Serialization);
        }
        let mut deep = vec![0xa1, 0x61, b'a'];
        deep.extend(std::iter::repeat_n(0x81, 100_000));
        deep.push(0x00);
        assert!(decode_cbor(&deep).is_err());
        let mut tags = vec![0xa1, 0x61, b'a'];
        tags.extend(std::iter::repeat_n(0xc6, 100_000));
        tags.push(0x00);
        assert!(decode_cbor(&tags).is_err());
    }

    #[test]
    fn accessors_and_builders() {
        let mut v = Value::empty_map()
            .with("A", "a")
            .with("N", 5u64)
            .with("B", Value::bytes(&b"xy"[..]))
            .with("A", "again");
        assert_eq!(v.str_of("A"), Some("again"));
        assert_eq!(v.as_map().map(<[_]>::len), Some(3));
        assert_eq!(v.get("N").and_then(Value::as_f64), Some(5.0));
        assert_eq!(
            v.take("B").and_then(Value::into_bytes).map(|b| b.to_vec()),
            Some(b"xy".to_vec())
        );
        assert!(v.get("B").is_none());
        assert!(Value::from("s").get("x").is_none());
        assert_eq!(Value::from(u64::MAX), Value::Int(i64::MAX));
        assert_eq!(Value::from(None::<i64>), Value::Null);
        let mut l = Value::list(Vec::<Value>::new());
        l.push(1);
        assert_eq!(l.as_list().map(<[_]>::len), Some(1));
        assert_eq!(Value::Int(7).as_timestamp(), Some(7.0));
        assert_eq!(Value::Float(f64::NAN).as_timestamp(), None);
    }
}
