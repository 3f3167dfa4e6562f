//! Model-driven request checks with AWS's messages.
//!
//! [`check_input`] runs two passes over a decoded request, guided by the
//! operation's input shape in the service model:
//!
//! 1. **Types** (first failure wins, members in declared order, depth first):
//!    a value of the wrong kind is a `SerializationException` carrying the
//!    message AWS's Coral JSON layer uses (`class java.lang.String can not be
//!    converted to an Integer`, `Start of list found where not expected`,
//!    `Expected null`, ...). The same pass **normalizes** the tree in place:
//!    * structures keep only declared members that are present and not
//!      `null`, in declaration order (unknown members are ignored, as AWS
//!      does);
//!    * blobs become [`Value::Bytes`] (JSON base64 is decoded and checked
//!      here, CBOR byte strings pass through);
//!    * timestamps become [`Value::Timestamp`] (JSON numbers are epoch
//!      seconds);
//!    * integers become [`Value::Int`] (fractions floored, `Integer` members
//!      clamped to the 32-bit range, as AWS does).
//! 2. **Constraints**: every violation is collected (at most
//!    [`MAX_VIOLATIONS`]) and reported as one `ValidationException`:
//!    `2 validation errors detected: Value null at 'records' failed to satisfy
//!    constraint: Member must not be null; Value '' at 'streamName' ...`.
//!
//! After a successful check, handlers can rely on the normalized shape of the
//! tree and read it with the [`Value`] accessors. Cross-field rules (StreamName
//! or StreamARN, ranges depending on stream state, ...) are the handlers'
//! business; [`violation`] and [`validation_exception`] let them phrase their
//! own messages the same way.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::error::{ApiError, ErrorKind};
use crate::model::{Model, Shape, ShapeId, ShapeKind, StringShape, StructureShape, model};
use crate::value::Value;

/// AWS reports at most this many constraint violations per request.
pub const MAX_VIOLATIONS: usize = 10;

const NOT_NULL: &str = "Member must not be null";
const START_OF_LIST: &str = "Start of list found where not expected";
const START_OF_MAP: &str = "Start of structure or map found where not expected.";

/// Enum value sets whose order in AWS's messages differs from the model's
/// (AWS prints them in hash-set order). Used only when the sets agree.
const AWS_ENUM_ORDER: &[(&str, &[&str])] = &[(
    "ShardIteratorType",
    &[
        "AFTER_SEQUENCE_NUMBER",
        "LATEST",
        "AT_TIMESTAMP",
        "AT_SEQUENCE_NUMBER",
        "TRIM_HORIZON",
    ],
)];

/// Checks and normalizes `input` for `operation` against the embedded model.
///
/// On success `input` is the normalized tree described in the module docs.
/// On a `SerializationException` `input` is left as `Null`; on a
/// `ValidationException` it holds the normalized tree. An operation the model
/// does not know is `UnknownOperationException`.
pub fn check_input(operation: &str, input: &mut Value) -> Result<(), ApiError> {
    check_input_with(model(), operation, input)
}

/// [`check_input`] against a given model.
pub fn check_input_with(model: &Model, operation: &str, input: &mut Value) -> Result<(), ApiError> {
    let op = model
        .operation(operation)
        .ok_or_else(|| ApiError::new(ErrorKind::UnknownOperation, ""))?;
    let Some(shape) = op.input else {
        *input = Value::empty_map();
        return Ok(());
    };
    let raw = std::mem::take(input);
    *input = normalize(model, shape, raw)?;
    let violations = constraint_violations(model, shape, input);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(validation_exception(&violations))
    }
}

/// The `ValidationException` for a list of violations (as produced by
/// [`violation`]): `N validation error(s) detected: a; b; c`.
pub fn validation_exception(violations: &[String]) -> ApiError {
    let n = violations.len();
    ApiError::validation(format!(
        "{n} validation error{} detected: {}",
        if n == 1 { "" } else { "s" },
        violations.join("; ")
    ))
}

/// One violation in AWS's words. `value` is the printed value without quotes
/// (`None` prints `null`); `path` is the member path (`records.3.member.data`).
pub fn violation(value: Option<&str>, path: &str, constraint: &str) -> String {
    match value {
        Some(v) => format!("Value '{v}' at '{path}' failed to satisfy constraint: {constraint}"),
        None => format!("Value null at '{path}' failed to satisfy constraint: {constraint}"),
    }
}

/// `StreamName` → `streamName`, as AWS names members in messages.
pub fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------
// Pass 1: types

fn ser(message: impl Into<String>) -> ApiError {
    ApiError::serialization(message)
}

/// The Java class AWS names when a value cannot be converted.
fn java_class(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "class java.lang.Boolean",
        Value::Int(_) | Value::Float(_) => {
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber"
        }
        Value::Str(_) => "class java.lang.String",
        Value::Bytes(_) => "class java.nio.HeapByteBuffer",
        Value::Timestamp(_) => "class java.util.Date",
        Value::Null | Value::List(_) | Value::Map(_) => "class java.lang.Object",
    }
}

/// The error for a value that is not the expected scalar. `target` is the
/// tail of AWS's message: `an String`, `an Integer`, `a Blob`, ...
fn not_convertible(v: &Value, target: &str) -> ApiError {
    match v {
        Value::List(_) => ser(START_OF_LIST),
        Value::Map(_) => ser(START_OF_MAP),
        _ => ser(format!(
            "{} can not be converted to {target}",
            java_class(v)
        )),
    }
}

fn normalize(m: &Model, id: ShapeId, v: Value) -> Result<Value, ApiError> {
    let Some(shape) = m.shape(id) else {
        return Ok(v);
    };
    match &shape.kind {
        ShapeKind::Structure(st) => match v {
            Value::Map(entries) => normalize_structure(m, st, entries),
            Value::List(_) => Err(ser(START_OF_LIST)),
            _ => Err(ser("Expected null")),
        },
        ShapeKind::List { member, .. } => match v {
            Value::List(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::Null => Ok(Value::Null),
                    item => normalize(m, *member, item),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List),
            Value::Map(_) => Err(ser(START_OF_MAP)),
            _ => Err(ser("Expected list or null")),
        },
        ShapeKind::Map { value, .. } => match v {
            Value::Map(entries) => entries
                .into_iter()
                .map(|(k, item)| match item {
                    Value::Null => Ok((k, Value::Null)),
                    item => normalize(m, *value, item).map(|item| (k, item)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Map),
            Value::List(_) => Err(ser(START_OF_LIST)),
            _ => Err(ser("Expected map or null")),
        },
        ShapeKind::String(_) => match v {
            Value::Str(_) => Ok(v),
            other => Err(not_convertible(&other, "an String")),
        },
        ShapeKind::Boolean => match v {
            Value::Bool(_) => Ok(v),
            Value::Str(s) => {
                if s.eq_ignore_ascii_case("true") {
                    Ok(Value::Bool(true))
                } else if s.eq_ignore_ascii_case("false") {
                    Ok(Value::Bool(false))
                } else {
                    Err(ser(format!(
                        "'{}' can not be converted to an Boolean",
                        s.to_uppercase()
                    )))
                }
            }
            other => Err(not_convertible(&other, "an Boolean")),
        },
        ShapeKind::Integer { .. } => {
            to_integer(v, "Integer", i64::from(i32::MIN), i64::from(i32::MAX))
        }
        ShapeKind::Long { .. } => to_integer(v, "Long", i64::MIN, i64::MAX),
        ShapeKind::Blob { .. } => match v {
            Value::Bytes(_) => Ok(v),
            Value::Str(s) => decode_blob(&s).map(Value::Bytes),
            other => Err(not_convertible(&other, "a Blob")),
        },
        ShapeKind::Timestamp => match v {
            Value::Timestamp(_) => Ok(v),
            Value::Int(i) => Ok(Value::Timestamp(i as f64)),
            Value::Float(f) if f.is_finite() => Ok(Value::Timestamp(f)),
            other => Err(not_convertible(&other, "milliseconds since epoch")),
        },
    }
}

fn normalize_structure(
    m: &Model,
    st: &StructureShape,
    mut entries: Vec<(String, Value)>,
) -> Result<Value, ApiError> {
    let mut out = Vec::with_capacity(st.members.len());
    for member in &st.members {
        let Some(v) = entries
            .iter_mut()
            .find(|(k, _)| *k == member.name)
            .map(|(_, v)| std::mem::take(v))
        else {
            continue;
        };
        if v.is_null() {
            continue;
        }
        out.push((member.name.clone(), normalize(m, member.shape, v)?));
    }
    Ok(Value::Map(out))
}

fn to_integer(v: Value, type_name: &str, lo: i64, hi: i64) -> Result<Value, ApiError> {
    match v {
        Value::Int(i) => Ok(Value::Int(i.clamp(lo, hi))),
        // `as` saturates (NaN becomes 0).
        Value::Float(f) => Ok(Value::Int((f.floor() as i64).clamp(lo, hi))),
        other => Err(not_convertible(&other, &format!("an {type_name}"))),
    }
}

/// Decodes a JSON blob, with the messages AWS gives for bad base64.
fn decode_blob(s: &str) -> Result<Vec<u8>, ApiError> {
    // The engine accepts exactly what the checks below accept (the alphabet, canonical
    // padding, a length that is a multiple of 4, no stray trailing bits): they only name
    // the first fault the way AWS does, so they run only when decoding fails.
    if let Ok(bytes) = BASE64.decode(s) {
        return Ok(bytes);
    }
    let bad = |why: String| ser(format!("'{s}' can not be converted to a Blob: {why}"));
    let len = s.encode_utf16().count();
    if !len.is_multiple_of(4) {
        return Err(bad(format!(
            "Base64 encoded length is expected a multiple of 4 bytes but found: {len}"
        )));
    }
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let invalid = match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '+' | '/' => false,
            // Padding may only be followed by padding.
            '=' => chars.peek().is_some_and(|next| *next != '='),
            _ => true,
        };
        if invalid {
            return Err(bad(format!("Invalid Base64 character: '{c}'")));
        }
    }
    // AWS's own spelling, typo included.
    BASE64
        .decode(s)
        .map_err(|_| bad("Invalid last non-pad Base64 character dectected".to_string()))
}

// ---------------------------------------------------------------------------
// Pass 2: constraints

/// A member path, built lazily: rendered only when a violation is reported.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Member(&'a str),
    /// 1-based list position: `records.3.member`.
    Index(usize),
    /// A map key: `tags.<key>`.
    Key(&'a str),
}

struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: Seg<'a>,
}

impl Path<'_> {
    fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut at = Some(self);
        while let Some(p) = at {
            segs.push(p.seg);
            at = p.parent;
        }
        let mut out = String::new();
        for (i, seg) in segs.iter().rev().enumerate() {
            if i > 0 {
                out.push('.');
            }
            match seg {
                Seg::Member(name) => out.push_str(&lower_first(name)),
                Seg::Index(n) => {
                    out.push_str(&n.to_string());
                    out.push_str(".member");
                }
                Seg::Key(k) => out.push_str(k),
            }
        }
        out
    }
}

fn constraint_violations(m: &Model, id: ShapeId, input: &Value) -> Vec<String> {
    let mut checker = Checker {
        model: m,
        out: Vec::new(),
    };
    if let Some(Shape {
        kind: ShapeKind::Structure(st),
        ..
    }) = m.shape(id)
    {
        checker.structure(st, input, None);
    }
    checker.out
}

struct Checker<'m> {
    model: &'m Model,
    out: Vec<String>,
}

impl Checker<'_> {
    fn full(&self) -> bool {
        self.out.len() >= MAX_VIOLATIONS
    }

    fn push(&mut self, value: Option<String>, path: &Path<'_>, constraint: &str) {
        if !self.full() {
            self.out
                .push(violation(value.as_deref(), &path.render(), constraint));
        }
    }

    fn structure(&mut self, st: &StructureShape, v: &Value, parent: Option<&Path<'_>>) {
        for member in &st.members {
            if self.full() {
                return;
            }
            let path = Path {
                parent,
                seg: Seg::Member(&member.name),
            };
            match v.get(&member.name) {
                None if member.required => self.push(None, &path, NOT_NULL),
                None => {}
                Some(value) => self.value(member.shape, value, &path),
            }
        }
    }

    fn value(&mut self, id: ShapeId, v: &Value, path: &Path<'_>) {
        let Some(shape) = self.model.shape(id) else {
            return;
        };
        match &shape.kind {
            ShapeKind::Structure(st) => self.structure(st, v, Some(path)),
            ShapeKind::List { member, min, max } => {
                let Value::List(items) = v else { return };
                self.length(id, v, items.len(), *min, *max, path);
                self.list_members(id, *member, items, path);
            }
            ShapeKind::Map {
                key,
                value,
                min,
                max,
            } => {
                let Value::Map(entries) = v else { return };
                self.length(id, v, entries.len(), *min, *max, path);
                self.map_entries(id, *key, *value, v, entries, path);
            }
            _ => {
                for constraint in scalar_violations(shape, v) {
                    self.push(Some(describe(self.model, id, v)), path, &constraint);
                }
            }
        }
    }

    fn length(
        &mut self,
        id: ShapeId,
        v: &Value,
        len: usize,
        min: Option<i64>,
        max: Option<i64>,
        path: &Path<'_>,
    ) {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        if let Some(min) = min.filter(|min| len < *min) {
            let text = format!("Member must have length greater than or equal to {min}");
            self.push(Some(describe(self.model, id, v)), path, &text);
        }
        if let Some(max) = max.filter(|max| len > *max) {
            let text = format!("Member must have length less than or equal to {max}");
            self.push(Some(describe(self.model, id, v)), path, &text);
        }
    }

    fn list_members(&mut self, list: ShapeId, member: ShapeId, items: &[Value], path: &Path<'_>) {
        let Some(shape) = self.model.shape(member) else {
            return;
        };
        match &shape.kind {
            ShapeKind::Structure(_) | ShapeKind::List { .. } | ShapeKind::Map { .. } => {
                for (i, item) in items.iter().enumerate() {
                    if self.full() {
                        return;
                    }
                    let item_path = Path {
                        parent: Some(path),
                        seg: Seg::Index(i + 1),
                    };
                    if item.is_null() {
                        self.push(None, &item_path, NOT_NULL);
                    } else {
                        self.value(member, item, &item_path);
                    }
                }
            }
            _ => {
                // Scalar members are reported once, on the list, with the
                // member's whole constraint set.
                if items
                    .iter()
                    .any(|item| !scalar_violations(shape, item).is_empty())
                {
                    let text = format!(
                        "Member must satisfy constraint: [{}]",
                        constraint_set(shape).join(", ")
                    );
                    let list_value = Value::List(items.to_vec());
                    self.push(Some(describe(self.model, list, &list_value)), path, &text);
                }
            }
        }
    }

    fn map_entries(
        &mut self,
        map: ShapeId,
        key: ShapeId,
        value: ShapeId,
        v: &Value,
        entries: &[(String, Value)],
        path: &Path<'_>,
    ) {
        if let Some(key_shape) = self.model.shape(key) {
            let bad_key = entries
                .iter()
                .any(|(k, _)| !scalar_violations(key_shape, &Value::Str(k.clone())).is_empty());
            if bad_key {
                let text = format!(
                    "Map keys must satisfy constraint: [{}]",
                    constraint_set(key_shape).join(", ")
                );
                self.push(Some(describe(self.model, map, v)), path, &text);
            }
        }
        let Some(value_shape) = self.model.shape(value) else {
            return;
        };
        match &value_shape.kind {
            ShapeKind::Structure(_) | ShapeKind::List { .. } | ShapeKind::Map { .. } => {
                for (k, item) in entries {
                    if self.full() {
                        return;
                    }
                    let item_path = Path {
                        parent: Some(path),
                        seg: Seg::Key(k),
                    };
                    if item.is_null() {
                        self.push(None, &item_path, NOT_NULL);
                    } else {
                        self.value(value, item, &item_path);
                    }
                }
            }
            _ => {
                if entries
                    .iter()
                    .any(|(_, item)| !scalar_violations(value_shape, item).is_empty())
                {
                    let text = format!(
                        "Map value must satisfy constraint: [{}]",
                        constraint_set(value_shape).join(", ")
                    );
                    self.push(Some(describe(self.model, map, v)), path, &text);
                }
            }
        }
    }
}

/// Length as Java counts it (UTF-16 code units).
fn java_length(s: &str) -> i64 {
    i64::try_from(s.encode_utf16().count()).unwrap_or(i64::MAX)
}

/// The constraints a scalar value breaks, in the order AWS reports them
/// (pattern, then length, then enum). `null` breaks "must not be null".
fn scalar_violations(shape: &Shape, v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if v.is_null() {
        out.push(NOT_NULL.to_string());
        return out;
    }
    match (&shape.kind, v) {
        (ShapeKind::String(ss), Value::Str(s)) => {
            if let Some(p) = &ss.pattern
                && !p.full_match(s)
            {
                out.push(format!(
                    "Member must satisfy regular expression pattern: {}",
                    p.source
                ));
            }
            if ss.min.is_some() || ss.max.is_some() {
                length_violations(java_length(s), ss.min, ss.max, "length", &mut out);
            }
            if !ss.enum_values.is_empty() && !ss.enum_values.iter().any(|e| e == s) {
                out.push(enum_constraint(shape, ss));
            }
        }
        (ShapeKind::Blob { min, max }, Value::Bytes(b)) => {
            let len = i64::try_from(b.len()).unwrap_or(i64::MAX);
            length_violations(len, *min, *max, "length", &mut out);
        }
        (ShapeKind::Integer { min, max } | ShapeKind::Long { min, max }, Value::Int(i)) => {
            length_violations(*i, *min, *max, "value", &mut out);
        }
        _ => {}
    }
    out
}

fn length_violations(
    n: i64,
    min: Option<i64>,
    max: Option<i64>,
    what: &str,
    out: &mut Vec<String>,
) {
    if let Some(min) = min.filter(|min| n < *min) {
        out.push(format!(
            "Member must have {what} greater than or equal to {min}"
        ));
    }
    if let Some(max) = max.filter(|max| n > *max) {
        out.push(format!(
            "Member must have {what} less than or equal to {max}"
        ));
    }
}

/// A scalar shape's whole constraint set, as AWS lists it inside
/// `Member must satisfy constraint: [...]` (maximum first, then minimum).
fn constraint_set(shape: &Shape) -> Vec<String> {
    let mut out = Vec::new();
    let (what, min, max) = match &shape.kind {
        ShapeKind::String(ss) => ("length", ss.min, ss.max),
        ShapeKind::Blob { min, max } => ("length", *min, *max),
        ShapeKind::Integer { min, max } | ShapeKind::Long { min, max } => ("value", *min, *max),
        _ => ("value", None, None),
    };
    if let Some(max) = max {
        out.push(format!(
            "Member must have {what} less than or equal to {max}"
        ));
    }
    if let Some(min) = min {
        out.push(format!(
            "Member must have {what} greater than or equal to {min}"
        ));
    }
    if let ShapeKind::String(ss) = &shape.kind {
        if let Some(p) = &ss.pattern {
            out.push(format!(
                "Member must satisfy regular expression pattern: {}",
                p.source
            ));
        }
        if !ss.enum_values.is_empty() {
            out.push(enum_constraint(shape, ss));
        }
    }
    if out.is_empty() {
        out.push(NOT_NULL.to_string());
    }
    out
}

fn enum_constraint(shape: &Shape, ss: &StringShape) -> String {
    let aws_order = AWS_ENUM_ORDER
        .iter()
        .find(|(name, _)| *name == shape.name)
        .map(|(_, order)| *order)
        .filter(|order| {
            order.len() == ss.enum_values.len()
                && order.iter().all(|o| ss.enum_values.iter().any(|e| e == o))
        });
    let values = match aws_order {
        Some(order) => order.join(", "),
        None => ss.enum_values.join(", "),
    };
    format!("Member must satisfy enum value set: [{values}]")
}

/// Java's `String.hashCode`, used to mimic `Object.toString` identities.
fn java_hash(s: &str) -> u32 {
    s.encode_utf16()
        .fold(0u32, |h, c| h.wrapping_mul(31).wrapping_add(u32::from(c)))
}

/// How AWS prints a structure inside a list: the Java object's default
/// `toString`. The identity for `PutRecordsRequestEntry` is the one AWS was
/// observed to print.
fn structure_text(name: &str) -> String {
    let id = if name == "PutRecordsRequestEntry" {
        "c965e310".to_string()
    } else {
        format!("{:x}", java_hash(name))
    };
    format!("com.amazonaws.kinesis.v20131202.{name}@{id}")
}

/// How AWS prints a value in `Value '...' at ...` (without the quotes).
fn describe(m: &Model, id: ShapeId, v: &Value) -> String {
    let shape = m.shape(id);
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Timestamp(t) => t.to_string(),
        Value::Str(s) => s.clone(),
        Value::Bytes(b) => format!("java.nio.HeapByteBuffer[pos=0 lim={0} cap={0}]", b.len()),
        Value::List(items) => {
            let member = match shape.map(|s| &s.kind) {
                Some(ShapeKind::List { member, .. }) => Some(*member),
                _ => None,
            };
            let parts: Vec<String> = items
                .iter()
                .map(|item| match member {
                    Some(member) => describe(m, member, item),
                    None => describe_untyped(item),
                })
                .collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Map(entries) => match shape {
            Some(Shape {
                kind: ShapeKind::Structure(_),
                name,
            }) => structure_text(name),
            Some(Shape {
                kind: ShapeKind::Map { value, .. },
                ..
            }) => {
                let parts: Vec<String> = entries
                    .iter()
                    .map(|(k, item)| format!("{k}={}", describe(m, *value, item)))
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            _ => describe_untyped(v),
        },
    }
}

fn describe_untyped(v: &Value) -> String {
    match v {
        Value::List(items) => {
            let parts: Vec<String> = items.iter().map(describe_untyped).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Map(entries) => {
            let parts: Vec<String> = entries
                .iter()
                .map(|(k, item)| format!("{k}={}", describe_untyped(item)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) | Value::Timestamp(f) => f.to_string(),
        Value::Str(s) => s.clone(),
        Value::Bytes(b) => format!("java.nio.HeapByteBuffer[pos=0 lim={0} cap={0}]", b.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{decode_cbor, decode_json, encode_cbor};

    fn json(op: &str, body: &str) -> Result<Value, ApiError> {
        let mut v = decode_json(body.as_bytes())?;
        check_input(op, &mut v)?;
        Ok(v)
    }

    fn ser_msg(op: &str, body: &str) -> String {
        let err = json(op, body).expect_err(body);
        assert_eq!(
            err.kind,
            ErrorKind::Serialization,
            "{body}: {}",
            err.message
        );
        err.message
    }

    fn val_msg(op: &str, body: &str) -> String {
        let err = json(op, body).expect_err(body);
        assert_eq!(err.kind, ErrorKind::Validation, "{body}: {}", err.message);
        err.message
    }

    const NUM: &str = "class com.amazon.coral.value.json.numbers.TruncatingBigNumber";

    #[test]
    fn type_mismatch_messages() {
        let cases: &[(&str, &str, &str)] = &[
            // Strings.
            (
                "DescribeStream",
                r#"{"StreamName":23}"#,
                "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String",
            ),
            (
                "DescribeStream",
                r#"{"StreamName":34.56}"#,
                "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String",
            ),
            (
                "DescribeStream",
                r#"{"StreamName":true}"#,
                "class java.lang.Boolean can not be converted to an String",
            ),
            (
                "DescribeStream",
                r#"{"StreamName":[]}"#,
                "Start of list found where not expected",
            ),
            (
                "DescribeStream",
                r#"{"StreamName":{}}"#,
                "Start of structure or map found where not expected.",
            ),
            // Integers.
            (
                "DescribeStream",
                r#"{"Limit":"23"}"#,
                "class java.lang.String can not be converted to an Integer",
            ),
            (
                "DescribeStream",
                r#"{"Limit":true}"#,
                "class java.lang.Boolean can not be converted to an Integer",
            ),
            (
                "DescribeStream",
                r#"{"Limit":[]}"#,
                "Start of list found where not expected",
            ),
            (
                "DescribeStream",
                r#"{"Limit":{}}"#,
                "Start of structure or map found where not expected.",
            ),
            // Booleans.
            (
                "DeleteStream",
                r#"{"EnforceConsumerDeletion":"hello"}"#,
                "'HELLO' can not be converted to an Boolean",
            ),
            (
                "DeleteStream",
                r#"{"EnforceConsumerDeletion":23}"#,
                "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an Boolean",
            ),
            (
                "DeleteStream",
                r#"{"EnforceConsumerDeletion":[]}"#,
                "Start of list found where not expected",
            ),
            (
                "DeleteStream",
                r#"{"EnforceConsumerDeletion":{}}"#,
                "Start of structure or map found where not expected.",
            ),
            // Timestamps.
            (
                "GetShardIterator",
                r#"{"Timestamp":"23"}"#,
                "class java.lang.String can not be converted to milliseconds since epoch",
            ),
            (
                "GetShardIterator",
                r#"{"Timestamp":true}"#,
                "class java.lang.Boolean can not be converted to milliseconds since epoch",
            ),
            (
                "GetShardIterator",
                r#"{"Timestamp":[]}"#,
                "Start of list found where not expected",
            ),
            (
                "GetShardIterator",
                r#"{"Timestamp":{}}"#,
                "Start of structure or map found where not expected.",
            ),
            // Lists.
            ("PutRecords", r#"{"Records":"23"}"#, "Expected list or null"),
            ("PutRecords", r#"{"Records":23}"#, "Expected list or null"),
            ("PutRecords", r#"{"Records":true}"#, "Expected list or null"),
            (
                "PutRecords",
                r#"{"Records":{}}"#,
                "Start of structure or map found where not expected.",
            ),
            // Structures.
            ("PutRecords", r#"{"Records":["23"]}"#, "Expected null"),
            ("PutRecords", r#"{"Records":[23]}"#, "Expected null"),
            (
                "PutRecords",
                r#"{"Records":[[]]}"#,
                "Start of list found where not expected",
            ),
            (
                "CreateStream",
                r#"{"StreamModeDetails":true}"#,
                "Expected null",
            ),
            // Maps.
            (
                "AddTagsToStream",
                r#"{"Tags":"23"}"#,
                "Expected map or null",
            ),
            (
                "AddTagsToStream",
                r#"{"Tags":34.56}"#,
                "Expected map or null",
            ),
            (
                "AddTagsToStream",
                r#"{"Tags":[]}"#,
                "Start of list found where not expected",
            ),
            (
                "AddTagsToStream",
                r#"{"Tags":{"a":1}}"#,
                "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String",
            ),
            // Blobs.
            (
                "PutRecord",
                r#"{"Data":true}"#,
                "class java.lang.Boolean can not be converted to a Blob",
            ),
            (
                "PutRecord",
                r#"{"Data":23}"#,
                "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to a Blob",
            ),
            (
                "PutRecord",
                r#"{"Data":[]}"#,
                "Start of list found where not expected",
            ),
            (
                "PutRecord",
                r#"{"Data":{}}"#,
                "Start of structure or map found where not expected.",
            ),
            (
                "PutRecord",
                r#"{"Data":"23456"}"#,
                "'23456' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 5",
            ),
            (
                "PutRecord",
                r#"{"Data":"=+/="}"#,
                "'=+/=' can not be converted to a Blob: Invalid Base64 character: '='",
            ),
            (
                "PutRecord",
                r#"{"Data":"ab!d"}"#,
                "'ab!d' can not be converted to a Blob: Invalid Base64 character: '!'",
            ),
            (
                "PutRecord",
                r#"{"Data":"+/+="}"#,
                "'+/+=' can not be converted to a Blob: Invalid last non-pad Base64 character dectected",
            ),
            (
                "PutRecord",
                r#"{"Data":"a==="}"#,
                "'a===' can not be converted to a Blob: Invalid last non-pad Base64 character dectected",
            ),
            (
                "PutRecord",
                r#"{"Data":"é123"}"#,
                "'é123' can not be converted to a Blob: Invalid Base64 character: 'é'",
            ),
            (
                "PutRecords",
                r#"{"Records":[{"Data":"x"}]}"#,
                "'x' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 1",
            ),
        ];
        for (op, body, want) in cases {
            assert_eq!(ser_msg(op, body), *want, "{op} {body}");
        }
    }

    #[test]
    fn first_type_error_in_declared_order_wins() {
        // StreamName is declared before Limit in DescribeStreamInput.
        assert_eq!(
            ser_msg("DescribeStream", r#"{"Limit":"x","StreamName":1}"#),
            format!("{NUM} can not be converted to an String")
        );
        // Type errors beat constraint errors.
        assert_eq!(
            ser_msg(
                "PutRecords",
                r#"{"StreamName":"","Records":[{"PartitionKey":1}]}"#
            ),
            format!("{NUM} can not be converted to an String")
        );
    }

    #[test]
    fn normalization() {
        let v = json(
            "PutRecords",
            r#"{"Unknown":1,"StreamName":"s","Records":[{"PartitionKey":"k","Data":"aGk=","Extra":[1]}],"StreamARN":null}"#,
        )
        .expect("valid");
        assert_eq!(
            v,
            Value::map([
                (
                    "Records",
                    Value::list([Value::map([
                        ("Data", Value::bytes(&b"hi"[..])),
                        ("PartitionKey", Value::from("k")),
                    ])])
                ),
                ("StreamName", Value::from("s")),
            ])
        );
        let v = json(
            "GetShardIterator",
            r#"{"StreamName":"s","ShardId":"shardId-000000000000","ShardIteratorType":"AT_TIMESTAMP","Timestamp":1700000000.5}"#,
        )
        .expect("valid");
        assert_eq!(v.get("Timestamp"), Some(&Value::Timestamp(1_700_000_000.5)));
        let v = json(
            "CreateStream",
            r#"{"StreamName":"s","ShardCount":100000000000}"#,
        )
        .expect("valid");
        assert_eq!(v.i64_of("ShardCount"), Some(2_147_483_647));
        let v = json("CreateStream", r#"{"StreamName":"s","ShardCount":2.9}"#).expect("valid");
        assert_eq!(v.i64_of("ShardCount"), Some(2));
        let v = json(
            "DeleteStream",
            r#"{"StreamName":"s","EnforceConsumerDeletion":"TRUE"}"#,
        )
        .expect("valid");
        assert_eq!(v.bool_of("EnforceConsumerDeletion"), Some(true));
        let v = json(
            "PutRecord",
            r#"{"StreamName":"s","PartitionKey":"k","Data":""}"#,
        )
        .expect("valid");
        assert_eq!(v.bytes_of("Data").map(|b| b.len()), Some(0));
        // Operations without input members accept and normalize anything.
        let v = json("DescribeLimits", r#"{"Whatever":[1,2,3]}"#).expect("valid");
        assert_eq!(v, Value::empty_map());
    }

    #[test]
    fn unknown_operation() {
        let mut v = Value::empty_map();
        let err = check_input("Frobnicate", &mut v).expect_err("unknown");
        assert_eq!(err.kind, ErrorKind::UnknownOperation);
    }

    #[test]
    fn constraint_message_forms() {
        let long = "a".repeat(129);
        let cases: Vec<(&str, String, String)> = vec![
            (
                "PutRecords",
                r#"{"StreamName":"s"}"#.into(),
                "1 validation error detected: Value null at 'records' failed to satisfy constraint: Member must not be null".into(),
            ),
            (
                "DescribeStream",
                r#"{"StreamName":"a b"}"#.into(),
                "1 validation error detected: Value 'a b' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+".into(),
            ),
            (
                "DescribeStream",
                format!(r#"{{"StreamName":"{long}"}}"#),
                format!("1 validation error detected: Value '{long}' at 'streamName' failed to satisfy constraint: Member must have length less than or equal to 128"),
            ),
            (
                "DescribeStream",
                r#"{"StreamName":""}"#.into(),
                "2 validation errors detected: Value '' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
            ),
            (
                "DescribeStream",
                r#"{"StreamName":"s","Limit":0}"#.into(),
                "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1".into(),
            ),
            (
                "DescribeStream",
                r#"{"StreamName":"s","Limit":100000}"#.into(),
                "1 validation error detected: Value '100000' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 10000".into(),
            ),
            (
                "GetShardIterator",
                r#"{"StreamName":"s","ShardId":"shardId-000000000000","ShardIteratorType":"NOPE"}"#.into(),
                "1 validation error detected: Value 'NOPE' at 'shardIteratorType' failed to satisfy constraint: Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP, AT_SEQUENCE_NUMBER, TRIM_HORIZON]".into(),
            ),
            (
                "UpdateShardCount",
                r#"{"StreamName":"s","TargetShardCount":1,"ScalingType":"X"}"#.into(),
                "1 validation error detected: Value 'X' at 'scalingType' failed to satisfy constraint: Member must satisfy enum value set: [UNIFORM_SCALING]".into(),
            ),
            (
                "PutRecord",
                format!(r#"{{"StreamName":"s","PartitionKey":"k","Data":"{}"}}"#, "AAAA".repeat(3_495_254)),
                "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=10485762 cap=10485762]' at 'data' failed to satisfy constraint: Member must have length less than or equal to 10485760".into(),
            ),
            (
                "PutRecords",
                r#"{"StreamName":"s","Records":[]}"#.into(),
                "1 validation error detected: Value '[]' at 'records' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
            ),
            (
                "AddTagsToStream",
                r#"{"StreamName":"s","Tags":{}}"#.into(),
                "1 validation error detected: Value '{}' at 'tags' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
            ),
            (
                "AddTagsToStream",
                format!(r#"{{"StreamName":"s","Tags":{{"a":"1","{long}":"3"}}}}"#),
                format!("1 validation error detected: Value '{{a=1, {long}=3}}' at 'tags' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]"),
            ),
            (
                "AddTagsToStream",
                format!(r#"{{"StreamName":"s","Tags":{{"c":"{}"}}}}"#, "v".repeat(257)),
                format!("1 validation error detected: Value '{{c={}}}' at 'tags' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to 256, Member must have length greater than or equal to 0]", "v".repeat(257)),
            ),
            (
                "RemoveTagsFromStream",
                r#"{"StreamName":"s","TagKeys":["a",""]}"#.into(),
                "1 validation error detected: Value '[a, ]' at 'tagKeys' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]".into(),
            ),
            (
                "EnableEnhancedMonitoring",
                r#"{"StreamName":"s","ShardLevelMetrics":["ALL","Bogus"]}"#.into(),
                "1 validation error detected: Value '[ALL, Bogus]' at 'shardLevelMetrics' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [IncomingBytes, IncomingRecords, OutgoingBytes, OutgoingRecords, WriteProvisionedThroughputExceeded, ReadProvisionedThroughputExceeded, IteratorAgeMilliseconds, ALL]]".into(),
            ),
            (
                "CreateStream",
                r#"{"StreamName":"s","StreamModeDetails":{}}"#.into(),
                "1 validation error detected: Value null at 'streamModeDetails.streamMode' failed to satisfy constraint: Member must not be null".into(),
            ),
            (
                "SubscribeToShard",
                r#"{"ConsumerARN":"arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1","ShardId":"shardId-000000000000","StartingPosition":{"Type":"bad"}}"#.into(),
                "1 validation error detected: Value 'bad' at 'startingPosition.type' failed to satisfy constraint: Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP, AT_SEQUENCE_NUMBER, TRIM_HORIZON]".into(),
            ),
            (
                "DescribeStreamSummary",
                r#"{"StreamARN":"arn:aws:kinesis:us-east-1:1234:stream/s"}"#.into(),
                r"1 validation error detected: Value 'arn:aws:kinesis:us-east-1:1234:stream/s' at 'streamARN' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:aws.*:kinesis:.*:\d{12}:stream/\S+".into(),
            ),
            (
                "PutRecords",
                r#"{"StreamName":"s","Records":[null]}"#.into(),
                "1 validation error detected: Value null at 'records.1.member' failed to satisfy constraint: Member must not be null".into(),
            ),
        ];
        for (op, body, want) in cases {
            let got = val_msg(op, &body);
            assert_eq!(got, want, "{op} {}", &body[..body.len().min(200)]);
        }
    }

    #[test]
    fn multiple_errors_are_counted_in_member_order() {
        // Kinesalite's "empty StreamName" case for PutRecords, in model order
        // (Records, then StreamName); members of an entry in declared order.
        assert_eq!(
            val_msg(
                "PutRecords",
                r#"{"StreamName":"","Records":[{"PartitionKey":"","Data":"","ExplicitHashKey":""}]}"#
            ),
            "4 validation errors detected: \
             Value '' at 'records.1.member.explicitHashKey' failed to satisfy constraint: Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38}); \
             Value '' at 'records.1.member.partitionKey' failed to satisfy constraint: Member must have length greater than or equal to 1; \
             Value '' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; \
             Value '' at 'streamName' failed to satisfy constraint: Member must have length greater than or equal to 1"
        );
        assert_eq!(
            val_msg("MergeShards", "{}"),
            "2 validation errors detected: \
             Value null at 'shardToMerge' failed to satisfy constraint: Member must not be null; \
             Value null at 'adjacentShardToMerge' failed to satisfy constraint: Member must not be null"
        );
    }

    #[test]
    fn list_member_paths() {
        let body = r#"{"StreamName":"s","Records":[
            {"PartitionKey":"a","Data":"AA=="},
            {"PartitionKey":"b","Data":"AA=="},
            {"PartitionKey":"","Data":"AA=="},
            {"Data":"AA=="}
        ]}"#;
        assert_eq!(
            val_msg("PutRecords", body),
            "2 validation errors detected: \
             Value '' at 'records.3.member.partitionKey' failed to satisfy constraint: Member must have length greater than or equal to 1; \
             Value null at 'records.4.member.partitionKey' failed to satisfy constraint: Member must not be null"
        );
    }

    #[test]
    fn at_most_ten_errors_and_list_printing() {
        let records: Vec<String> = (0..501)
            .map(|_| r#"{"PartitionKey":"","Data":""}"#.to_string())
            .collect();
        let body = format!(r#"{{"StreamName":"","Records":[{}]}}"#, records.join(","));
        let msg = val_msg("PutRecords", &body);
        let entry = "com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry@c965e310";
        let list = vec![entry; 501].join(", ");
        let mut want = vec![format!(
            "Value '[{list}]' at 'records' failed to satisfy constraint: Member must have length less than or equal to 500"
        )];
        for i in 1..=9 {
            want.push(format!(
                "Value '' at 'records.{i}.member.partitionKey' failed to satisfy constraint: Member must have length greater than or equal to 1"
            ));
        }
        assert_eq!(
            msg,
            format!("10 validation errors detected: {}", want.join("; "))
        );
    }

    #[test]
    fn string_length_counts_utf16_units() {
        // 128 astral characters are 256 UTF-16 units: a valid partition key.
        let key = "😀".repeat(128);
        let body = format!(r#"{{"StreamName":"s","PartitionKey":"{key}","Data":""}}"#);
        assert!(json("PutRecord", &body).is_ok());
        let key = format!("{key}a");
        let body = format!(r#"{{"StreamName":"s","PartitionKey":"{key}","Data":""}}"#);
        assert!(
            val_msg("PutRecord", &body)
                .contains("Member must have length less than or equal to 256")
        );
    }

    #[test]
    fn cbor_requests_validate_the_same_way() {
        let body = encode_cbor(&Value::map([
            ("StreamName", Value::from("s")),
            (
                "Records",
                Value::list([
                    Value::map([
                        ("Data", Value::bytes(vec![1u8, 2, 3])),
                        ("PartitionKey", Value::from("k")),
                    ]),
                    Value::map([
                        ("Data", Value::bytes(vec![0u8; 4])),
                        ("PartitionKey", Value::from("")),
                    ]),
                ]),
            ),
        ]));
        let mut v = decode_cbor(&body).expect("decodes");
        let err = check_input("PutRecords", &mut v).expect_err("invalid");
        assert_eq!(
            err.message,
            "1 validation error detected: Value '' at 'records.2.member.partitionKey' failed to satisfy constraint: Member must have length greater than or equal to 1"
        );
        // Tag-1 timestamps pass straight through.
        let body = encode_cbor(&Value::map([
            ("StreamName", Value::from("s")),
            ("ShardId", Value::from("shardId-000000000000")),
            ("ShardIteratorType", Value::from("AT_TIMESTAMP")),
            ("Timestamp", Value::timestamp_millis(1_700_000_000_123)),
        ]));
        let mut v = decode_cbor(&body).expect("decodes");
        check_input("GetShardIterator", &mut v).expect("valid");
        assert_eq!(
            v.get("Timestamp").and_then(Value::as_timestamp_millis),
            Some(1_700_000_000_123)
        );
        // A byte string where a string is expected.
        let body = encode_cbor(&Value::map([("StreamName", Value::bytes(vec![1u8]))]));
        let mut v = decode_cbor(&body).expect("decodes");
        let err = check_input("DescribeStream", &mut v).expect_err("bad type");
        assert_eq!(
            err.message,
            "class java.nio.HeapByteBuffer can not be converted to an String"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(lower_first("StreamARN"), "streamARN");
        assert_eq!(lower_first(""), "");
        assert_eq!(
            violation(Some("x"), "streamName", "C"),
            "Value 'x' at 'streamName' failed to satisfy constraint: C"
        );
        let err = validation_exception(&[violation(None, "a", "Member must not be null")]);
        assert_eq!(err.kind, ErrorKind::Validation);
        assert_eq!(
            err.message,
            "1 validation error detected: Value null at 'a' failed to satisfy constraint: Member must not be null"
        );
        assert_eq!(java_hash("hello"), 99_162_322);
    }

    #[test]
    fn every_operation_accepts_an_empty_request_without_panicking() {
        for op in model().operations() {
            let mut v = Value::empty_map();
            match check_input(&op.name, &mut v) {
                Ok(()) => {}
                Err(e) => assert_eq!(e.kind, ErrorKind::Validation, "{}: {}", op.name, e.message),
            }
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::value::{decode_cbor, decode_json, encode_cbor, encode_json};
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            "[ -~é😀]{0,12}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::Timestamp),
            prop_oneof![
                Just("AT_TIMESTAMP"),
                Just("shardId-000000000000"),
                Just("AAAA"),
                Just(""),
                Just("arn:aws:kinesis:us-east-1:123456789012:stream/s"),
            ]
            .prop_map(Value::from),
        ];
        let names = prop_oneof![
            Just("StreamName".to_string()),
            Just("Records".to_string()),
            Just("Data".to_string()),
            Just("PartitionKey".to_string()),
            Just("ExplicitHashKey".to_string()),
            Just("Tags".to_string()),
            Just("TagKeys".to_string()),
            Just("ShardLevelMetrics".to_string()),
            Just("StartingPosition".to_string()),
            Just("StreamModeDetails".to_string()),
            Just("Type".to_string()),
            Just("Timestamp".to_string()),
            Just("Limit".to_string()),
            Just("ShardCount".to_string()),
            "[A-Za-z]{1,6}",
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
                proptest::collection::vec((names.clone(), inner), 0..6).prop_map(Value::Map),
            ]
        })
    }

    fn all_ops() -> Vec<String> {
        model()
            .operations()
            .iter()
            .map(|o| o.name.clone())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            for op in all_ops() {
                if let Ok(mut v) = decode_json(&body) {
                    let _ = check_input(&op, &mut v);
                }
                if let Ok(mut v) = decode_cbor(&body) {
                    let _ = check_input(&op, &mut v);
                }
            }
        }

        #[test]
        fn random_trees_never_panic(tree in arb_value()) {
            let top = match tree {
                Value::Map(_) => tree,
                other => Value::map([("Records", other)]),
            };
            for op in all_ops() {
                let mut v = top.clone();
                let _ = check_input(&op, &mut v);
                let _ = encode_json(&v);
                let _ = encode_cbor(&v);
            }
            // Both encodings decode again.
            prop_assert!(decode_json(&encode_json(&top)).is_ok());
            prop_assert!(decode_cbor(&encode_cbor(&top)).is_ok());
        }

        #[test]
        fn mutated_cbor_never_panics(tree in arb_value(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
            let mut bytes = encode_cbor(&Value::map([("X", tree)]));
            for (at, b) in flips {
                let len = bytes.len();
                if let Some(slot) = bytes.get_mut(at % len) {
                    *slot = b;
                }
            }
            if let Ok(mut v) = decode_cbor(&bytes) {
                for op in all_ops() {
                    let mut w = v.clone();
                    let _ = check_input(&op, &mut w);
                }
                let _ = check_input("PutRecords", &mut v);
            }
        }
    }
}
