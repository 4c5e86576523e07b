//! The three syntaxes, reduced to one spanned tree.
//!
//! Each parser turns source text into a [`Node`] tree in which every value
//! and every key carries its byte span, or reports syntax errors with their
//! location. Validation works on this tree only, so TOML, JSON and YAML get
//! the same rules and the same kind of locations.

mod json;
mod toml;
mod yaml;

use crate::Format;
use crate::bounds::MAX_DEPTH;
use crate::error::{Sink, Span};

/// A value with its byte span.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) span: Span,
}

/// A table key with its byte span.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) span: Span,
}

/// The value kinds the three syntaxes share.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Table(Vec<(Key, Node)>),
    Array(Vec<Node>),
    Str(String),
    Int(i64),
    /// An integer outside `i64`, as written (so errors can quote it).
    BigInt(String),
    Float(f64),
    Bool(bool),
    /// JSON/YAML `null`: not part of the model (TOML has no null).
    Null,
    /// A TOML date-time: not part of the model.
    Datetime,
}

impl Value {
    /// The type name used in "expected X, found Y" messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Table(_) => "a table",
            Value::Array(_) => "an array",
            Value::Str(_) => "a string",
            Value::Int(_) | Value::BigInt(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
            Value::Datetime => "a date-time",
        }
    }
}

/// Parse `source` in `format`; syntax errors go to `sink`. Returns `None`
/// when nothing usable could be parsed.
pub(crate) fn parse(source: &str, format: Format, sink: &mut Sink) -> Option<Node> {
    match format {
        Format::Toml => toml::parse(source, sink),
        Format::Json => json::parse(source, sink),
        Format::Yaml => yaml::parse(source, sink),
    }
}

/// Report keys that appear twice in a table (JSON and YAML).
fn check_duplicate_keys(entries: &[(Key, Node)], sink: &mut Sink) {
    let mut seen = std::collections::HashSet::new();
    for (key, _) in entries {
        if !seen.insert(key.name.as_str()) {
            sink.push(
                crate::ErrorKind::DuplicateKey,
                key.span,
                format!("duplicate key `{}`", key.name),
            );
        }
    }
}
