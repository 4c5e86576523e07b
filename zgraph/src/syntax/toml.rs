//! TOML via the `toml` crate's spanned document parser.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Key, Node, Value};
use crate::ErrorKind;
use crate::error::{Sink, Span};

pub(super) fn parse(source: &str, sink: &mut Sink) -> Option<Node> {
    let (doc, errors) = DeTable::parse_recoverable(source);
    if !errors.is_empty() {
        for e in errors {
            let span = e.span().map(Span::from).unwrap_or_default();
            let message = e.message().trim().to_owned();
            sink.push(ErrorKind::Syntax, span, format!("TOML syntax: {message}"));
        }
        return None;
    }
    let span = Span::from(doc.span());
    Some(Node {
        value: table(doc.get_ref(), source),
        span,
    })
}

fn table(t: &DeTable<'_>, source: &str) -> Value {
    Value::Table(
        t.iter()
            .map(|(k, v)| {
                (
                    Key {
                        name: k.get_ref().to_string(),
                        span: k.span().into(),
                    },
                    node(v, source),
                )
            })
            .collect(),
    )
}

fn node(v: &Spanned<DeValue<'_>>, source: &str) -> Node {
    let value = match v.get_ref() {
        DeValue::String(s) => Value::Str(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Value::Int(n),
            // Out of i64 range: keep it as written, for the error message.
            Err(_) => Value::BigInt(
                source
                    .get(v.span())
                    .map_or_else(|| i.as_str().to_owned(), str::to_owned),
            ),
        },
        DeValue::Float(f) => Value::Float(f.as_str().parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(_) => Value::Datetime,
        DeValue::Array(a) => Value::Array(a.iter().map(|v| node(v, source)).collect()),
        DeValue::Table(t) => table(t, source),
    };
    Node {
        value,
        span: v.span().into(),
    }
}
