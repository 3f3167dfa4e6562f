//! The Kinesis service model (`model/kinesis-2013-12-02.json`, trimmed from
//! botocore), embedded in the binary and parsed once into shapes.
//!
//! Shapes are referenced by [`ShapeId`], an index into the model's shape
//! table; every reference is resolved when the model loads, so a `ShapeId`
//! handed out by this module always names a shape. Patterns are compiled once
//! at load time, anchored for a full match as AWS (Java `Matcher.matches`)
//! applies them.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::value::{Value as Json, decode_json};

/// The trimmed service model as shipped.
pub const MODEL_JSON: &str = include_str!("../model/kinesis-2013-12-02.json");

static MODEL: LazyLock<Model> = LazyLock::new(|| match Model::parse(MODEL_JSON) {
    Ok(model) => model,
    Err(err) => {
        tracing::error!(error = %err, "embedded Kinesis service model failed to load");
        Model::default()
    }
});

/// The embedded Kinesis model, parsed on first use.
pub fn model() -> &'static Model {
    &MODEL
}

/// Index of a shape in [`Model`].
pub type ShapeId = usize;

/// A parsed service model: operations and the shapes they use.
#[derive(Debug, Default)]
pub struct Model {
    shapes: Vec<Shape>,
    by_name: HashMap<String, ShapeId>,
    operations: Vec<Operation>,
    target_prefix: String,
}

/// One operation of the service.
#[derive(Debug, Clone)]
pub struct Operation {
    pub name: String,
    pub input: Option<ShapeId>,
    pub output: Option<ShapeId>,
    /// Names of the error shapes the operation declares.
    pub errors: Vec<String>,
}

/// A named shape.
#[derive(Debug)]
pub struct Shape {
    pub name: String,
    pub kind: ShapeKind,
}

/// What a shape is, with its constraints.
#[derive(Debug)]
pub enum ShapeKind {
    Structure(StructureShape),
    List {
        member: ShapeId,
        min: Option<i64>,
        max: Option<i64>,
    },
    Map {
        key: ShapeId,
        value: ShapeId,
        min: Option<i64>,
        max: Option<i64>,
    },
    String(StringShape),
    Blob {
        min: Option<i64>,
        max: Option<i64>,
    },
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Long {
        min: Option<i64>,
        max: Option<i64>,
    },
    Boolean,
    Timestamp,
}

/// A structure: members in declared order.
#[derive(Debug, Default)]
pub struct StructureShape {
    pub members: Vec<Member>,
    /// The shape is an error shape (`"exception": true`).
    pub exception: bool,
    /// The shape is an event-stream union (`"eventstream": true`).
    pub event_stream: bool,
}

impl StructureShape {
    /// The member called `name`, if declared.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// One member of a structure.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub shape: ShapeId,
    pub required: bool,
}

/// A string shape and its constraints.
#[derive(Debug, Default)]
pub struct StringShape {
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub pattern: Option<Pattern>,
    /// Allowed values in model order; empty when unconstrained.
    pub enum_values: Vec<String>,
}

/// A model pattern: its text as AWS prints it, and the compiled full-match
/// regex.
#[derive(Debug)]
pub struct Pattern {
    pub source: String,
    regex: Option<Regex>,
}

impl Pattern {
    /// Compiles `source` for full-string matching.
    pub fn new(source: &str) -> Pattern {
        let anchored = format!(r"\A(?:{})\z", translate_java_regex(source));
        Pattern {
            source: source.to_string(),
            regex: Regex::new(&anchored).ok(),
        }
    }

    /// Whether the pattern compiled (every pattern in the shipped model does).
    pub fn compiles(&self) -> bool {
        self.regex.is_some()
    }

    /// Whether `s` matches the whole pattern. A pattern that failed to compile
    /// accepts everything rather than rejecting valid requests.
    pub fn full_match(&self, s: &str) -> bool {
        match &self.regex {
            Some(re) => re.is_match(s),
            None => true,
        }
    }
}

/// Rewrites the few Java regex spellings the `regex` crate reads differently:
/// `\d` is ASCII-only in Java (Unicode in `regex`), and `\/` is an identity
/// escape Java accepts.
fn translate_java_regex(src: &str) -> String {
    let mut out = String::with_capacity(src.len() + 8);
    let mut chars = src.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str("[0-9]"),
            Some('D') => out.push_str("[^0-9]"),
            Some('/') => out.push('/'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push_str(r"\\"),
        }
    }
    out
}

/// Why the model text could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service model: {0}")]
pub struct ModelError(String);

impl Model {
    /// Parses a botocore-format service model.
    pub fn parse(text: &str) -> Result<Model, ModelError> {
        // Parsed with the crate's own decoder, which keeps object keys in
        // document order: member order matters for validation messages.
        let root = decode_json(text.as_bytes()).map_err(|_| ModelError("invalid JSON".into()))?;
        let shapes_json = root
            .get("shapes")
            .and_then(Json::as_map)
            .ok_or_else(|| ModelError("no shapes".into()))?;

        let mut by_name = HashMap::with_capacity(shapes_json.len());
        for (i, (name, _)) in shapes_json.iter().enumerate() {
            by_name.insert(name.clone(), i);
        }
        let resolve = |parent: &str, node: Option<&Json>| -> Result<ShapeId, ModelError> {
            let target = node
                .and_then(|n| n.get("shape"))
                .and_then(Json::as_str)
                .ok_or_else(|| ModelError(format!("{parent}: missing shape reference")))?;
            by_name
                .get(target)
                .copied()
                .ok_or_else(|| ModelError(format!("{parent}: unknown shape {target}")))
        };

        let mut shapes = Vec::with_capacity(shapes_json.len());
        for (name, def) in shapes_json {
            let kind = match def.get("type").and_then(Json::as_str) {
                Some("structure") => {
                    let required: Vec<&str> = def
                        .get("required")
                        .and_then(Json::as_list)
                        .map(|r| r.iter().filter_map(Json::as_str).collect())
                        .unwrap_or_default();
                    let mut members = Vec::new();
                    if let Some(ms) = def.get("members").and_then(Json::as_map) {
                        for (member, mdef) in ms {
                            members.push(Member {
                                name: member.clone(),
                                shape: resolve(&format!("{name}.{member}"), Some(mdef))?,
                                required: required.contains(&member.as_str()),
                            });
                        }
                    }
                    ShapeKind::Structure(StructureShape {
                        members,
                        exception: flag(def, "exception"),
                        event_stream: flag(def, "eventstream"),
                    })
                }
                Some("list") => ShapeKind::List {
                    member: resolve(name, def.get("member"))?,
                    min: int(def, "min"),
                    max: int(def, "max"),
                },
                Some("map") => ShapeKind::Map {
                    key: resolve(name, def.get("key"))?,
                    value: resolve(name, def.get("value"))?,
                    min: int(def, "min"),
                    max: int(def, "max"),
                },
                Some("string") => ShapeKind::String(StringShape {
                    min: int(def, "min"),
                    max: int(def, "max"),
                    pattern: def.get("pattern").and_then(Json::as_str).map(Pattern::new),
                    enum_values: def
                        .get("enum")
                        .and_then(Json::as_list)
                        .map(|e| {
                            e.iter()
                                .filter_map(Json::as_str)
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some("blob") => ShapeKind::Blob {
                    min: int(def, "min"),
                    max: int(def, "max"),
                },
                Some("integer") => ShapeKind::Integer {
                    min: int(def, "min"),
                    max: int(def, "max"),
                },
                Some("long") => ShapeKind::Long {
                    min: int(def, "min"),
                    max: int(def, "max"),
                },
                Some("boolean") => ShapeKind::Boolean,
                Some("timestamp") => ShapeKind::Timestamp,
                other => {
                    return Err(ModelError(format!("{name}: unsupported type {other:?}")));
                }
            };
            shapes.push(Shape {
                name: name.clone(),
                kind,
            });
        }

        let mut operations = Vec::new();
        if let Some(ops) = root.get("operations").and_then(Json::as_map) {
            for (name, def) in ops {
                let input = match def.get("input") {
                    Some(node) => Some(resolve(name, Some(node))?),
                    None => None,
                };
                let output = match def.get("output") {
                    Some(node) => Some(resolve(name, Some(node))?),
                    None => None,
                };
                let errors = def
                    .get("errors")
                    .and_then(Json::as_list)
                    .map(|e| {
                        e.iter()
                            .filter_map(|x| x.get("shape").and_then(Json::as_str))
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                operations.push(Operation {
                    name: name.clone(),
                    input,
                    output,
                    errors,
                });
            }
        }
        operations.sort_by(|a, b| a.name.cmp(&b.name));

        let target_prefix = root
            .get("metadata")
            .and_then(|m| m.get("targetPrefix"))
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string();

        Ok(Model {
            shapes,
            by_name,
            operations,
            target_prefix,
        })
    }

    /// The operation called `name` (e.g. `PutRecords`).
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations
            .binary_search_by(|op| op.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.operations.get(i))
    }

    /// All operations, sorted by name.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The shape with this id.
    pub fn shape(&self, id: ShapeId) -> Option<&Shape> {
        self.shapes.get(id)
    }

    /// The shape called `name`.
    pub fn shape_named(&self, name: &str) -> Option<(ShapeId, &Shape)> {
        let id = *self.by_name.get(name)?;
        Some((id, self.shapes.get(id)?))
    }

    /// All shapes.
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// The `X-Amz-Target` prefix (`Kinesis_20131202`).
    pub fn target_prefix(&self) -> &str {
        &self.target_prefix
    }
}

fn int(def: &Json, key: &str) -> Option<i64> {
    let v = def.get(key)?;
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

fn flag(def: &Json, key: &str) -> bool {
    def.get(key).and_then(Json::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_model_loads() {
        let m = Model::parse(MODEL_JSON).expect("model parses");
        assert_eq!(m.target_prefix(), "Kinesis_20131202");
        assert!(m.operations().len() >= 39, "{}", m.operations().len());
        assert!(model().operation("PutRecords").is_some());
        assert!(model().operation("Nope").is_none());
    }

    #[test]
    fn every_operation_has_an_input_structure() {
        let m = model();
        assert!(!m.operations().is_empty());
        for op in m.operations() {
            let id = op
                .input
                .unwrap_or_else(|| panic!("{} has no input", op.name));
            let shape = m.shape(id).expect("resolved");
            assert!(
                matches!(shape.kind, ShapeKind::Structure(_)),
                "{} input is not a structure",
                op.name
            );
        }
    }

    #[test]
    fn every_pattern_compiles_and_anchors() {
        let mut count = 0;
        for shape in model().shapes() {
            if let ShapeKind::String(StringShape {
                pattern: Some(p), ..
            }) = &shape.kind
            {
                assert!(p.compiles(), "{}: {}", shape.name, p.source);
                count += 1;
            }
        }
        assert!(count >= 6);
        let (_, name) = model().shape_named("StreamName").expect("StreamName");
        let ShapeKind::String(s) = &name.kind else {
            panic!("StreamName is a string")
        };
        let p = s.pattern.as_ref().expect("pattern");
        assert_eq!(p.source, "[a-zA-Z0-9_.-]+");
        assert!(p.full_match("my-stream_1.0"));
        assert!(!p.full_match("bad name"));
        assert!(!p.full_match(""));
    }

    #[test]
    fn arn_and_number_patterns() {
        let get = |n: &str| {
            let (_, s) = model().shape_named(n).expect(n);
            match &s.kind {
                ShapeKind::String(StringShape {
                    pattern: Some(p), ..
                }) => p,
                _ => panic!("{n} has a pattern"),
            }
        };
        let arn = get("StreamARN");
        assert!(arn.full_match("arn:aws:kinesis:us-east-1:123456789012:stream/s"));
        assert!(!arn.full_match("arn:aws:kinesis:us-east-1:12345678901:stream/s"));
        // Java's \d is ASCII only.
        assert!(!arn.full_match("arn:aws:kinesis:r:١٢٣٤٥٦٧٨٩٠١٢:stream/s"));
        let consumer = get("ConsumerARN");
        assert!(
            consumer.full_match(
                "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1700000000"
            )
        );
        assert!(!consumer.full_match("arn:aws:kinesis:us-east-1:123456789012:stream/s"));
        let hash = get("HashKey");
        assert!(hash.full_match("0"));
        assert!(hash.full_match("340282366920938463463374607431768211455"));
        assert!(!hash.full_match("01"));
        assert!(!hash.full_match(""));
        let seq = get("SequenceNumber");
        assert!(seq.full_match("49590338271490256608559692538361571095921575989136588898"));
        assert!(!seq.full_match("x"));
    }

    #[test]
    fn members_keep_declared_order_and_required() {
        let (_, s) = model()
            .shape_named("PutRecordsRequestEntry")
            .expect("entry");
        let ShapeKind::Structure(st) = &s.kind else {
            panic!("structure")
        };
        let names: Vec<_> = st.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["Data", "ExplicitHashKey", "PartitionKey"]);
        assert!(st.member("Data").expect("Data").required);
        assert!(!st.member("ExplicitHashKey").expect("hash key").required);
    }

    #[test]
    fn java_regex_translation() {
        assert_eq!(translate_java_regex(r"a\d{2}\/b\S"), r"a[0-9]{2}/b\S");
        assert_eq!(translate_java_regex(r"\\d"), r"\\d");
        assert!(!Pattern::new("(").compiles());
        assert!(Pattern::new("(").full_match("anything"));
    }

    #[test]
    fn bad_models_are_errors_not_panics() {
        assert!(Model::parse("").is_err());
        assert!(Model::parse("{}").is_err());
        assert!(
            Model::parse(r#"{"shapes":{"A":{"type":"list","member":{"shape":"B"}}}}"#).is_err()
        );
        assert!(Model::parse(r#"{"shapes":{"A":{"type":"weird"}}}"#).is_err());
    }
}
