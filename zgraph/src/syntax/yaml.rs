//! YAML via `saphyr-parser` events, built into the spanned tree.
//!
//! Plain scalars are resolved with the YAML 1.2 core schema (null, booleans,
//! integers, floats, otherwise strings); quoted and block scalars are strings.
//! One document only; aliases are refused (no billion-laughs expansion);
//! tags other than the core schema's are refused.

use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan, Tag};

use super::{Key, MAX_DEPTH, Node, Value, check_duplicate_keys};
use crate::ErrorKind;
use crate::error::{Sink, Span};

pub(super) fn parse(source: &str, sink: &mut Sink) -> Option<Node> {
    let offsets = CharOffsets::new(source);
    match build(source, &offsets) {
        Ok(node) => {
            let node = node.unwrap_or(Node {
                value: Value::Table(Vec::new()),
                span: Span::new(0, 0),
            });
            check_tree(&node, sink);
            Some(node)
        }
        Err((span, message)) => {
            sink.push(ErrorKind::Syntax, span, format!("YAML syntax: {message}"));
            None
        }
    }
}

fn check_tree(node: &Node, sink: &mut Sink) {
    match &node.value {
        Value::Table(entries) => {
            check_duplicate_keys(entries, sink);
            entries.iter().for_each(|(_, v)| check_tree(v, sink));
        }
        Value::Array(items) => items.iter().for_each(|v| check_tree(v, sink)),
        _ => {}
    }
}

/// Byte offset of every character index (saphyr markers count characters).
struct CharOffsets(Vec<usize>);

impl CharOffsets {
    fn new(s: &str) -> Self {
        let mut v: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
        v.push(s.len());
        Self(v)
    }

    fn byte(&self, char_index: usize) -> usize {
        self.0
            .get(char_index)
            .or(self.0.last())
            .copied()
            .unwrap_or(0)
    }

    fn span(&self, s: YSpan) -> Span {
        Span::new(self.byte(s.start.index()), self.byte(s.end.index()))
    }
}

/// A container being built.
enum Frame {
    Map {
        start: usize,
        entries: Vec<(Key, Node)>,
        pending: Option<Key>,
    },
    Seq {
        start: usize,
        items: Vec<Node>,
    },
}

type BResult<T> = Result<T, (Span, String)>;

fn build(source: &str, offsets: &CharOffsets) -> BResult<Option<Node>> {
    let mut parser = Parser::new_from_str(source);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    while let Some(next) = parser.next_event() {
        let (event, yspan) = match next {
            Ok(ev) => ev,
            Err(e) => {
                let at = offsets.byte(e.marker().index());
                let width = source[at..].chars().next().map_or(0, char::len_utf8);
                return Err((Span::new(at, at + width), e.info().to_owned()));
            }
        };
        let span = offsets.span(yspan);
        let done = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err((span, "more than one YAML document".to_owned()));
                }
                None
            }
            Event::Alias(_) => {
                return Err((span, "YAML aliases are not supported".to_owned()));
            }
            Event::Scalar(text, style, _, tag) => Some(Node {
                value: scalar(&text, style, tag.as_deref()).map_err(|m| (span, m))?,
                span,
            }),
            Event::MappingStart(_, tag) | Event::SequenceStart(_, tag) if tag.is_some() => {
                return Err((
                    span,
                    "YAML tags on collections are not supported".to_owned(),
                ));
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err((span, format!("nesting deeper than {MAX_DEPTH} levels")));
                }
                let start = span.start;
                stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map {
                        start,
                        entries: Vec::new(),
                        pending: None,
                    }
                } else {
                    Frame::Seq {
                        start,
                        items: Vec::new(),
                    }
                });
                None
            }
            Event::MappingEnd | Event::SequenceEnd => match stack.pop() {
                Some(Frame::Map { start, entries, .. }) => Some(Node {
                    value: Value::Table(entries),
                    span: Span::new(start, span.end),
                }),
                Some(Frame::Seq { start, items }) => Some(Node {
                    value: Value::Array(items),
                    span: Span::new(start, span.end),
                }),
                None => return Err((span, "unbalanced collection end".to_owned())),
            },
        };
        if let Some(node) = done {
            attach(&mut stack, &mut root, node)?;
        }
    }
    Ok(root)
}

fn attach(stack: &mut [Frame], root: &mut Option<Node>, node: Node) -> BResult<()> {
    match stack.last_mut() {
        None => *root = Some(node),
        Some(Frame::Seq { items, .. }) => items.push(node),
        Some(Frame::Map {
            entries, pending, ..
        }) => match pending.take() {
            Some(key) => entries.push((key, node)),
            None => {
                let name = match node.value {
                    Value::Str(s) => s,
                    Value::Int(n) => n.to_string(),
                    Value::BigInt(s) => s,
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err((
                            node.span,
                            format!(
                                "mapping keys must be strings, found {}",
                                node.value.type_name()
                            ),
                        ));
                    }
                };
                *pending = Some(Key {
                    name,
                    span: node.span,
                });
            }
        },
    }
    Ok(())
}

fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            return Err(format!("unsupported YAML tag `{tag}`"));
        }
        return match tag.suffix.as_str() {
            "str" => Ok(Value::Str(text.to_owned())),
            "int" | "float" | "bool" | "null" => Ok(resolve_plain(text)),
            other => Err(format!("unsupported YAML tag `!!{other}`")),
        };
    }
    Ok(match style {
        ScalarStyle::Plain => resolve_plain(text),
        _ => Value::Str(text.to_owned()),
    })
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(int) = resolve_int(text) {
        return int;
    }
    if is_core_float(text)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_owned())
}

fn resolve_int(text: &str) -> Option<Value> {
    let big = || Value::BigInt(text.to_owned());
    let (digits, radix) = if let Some(h) = text.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = text.strip_prefix("0o") {
        (o, 8)
    } else {
        let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
        if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return Some(text.parse::<i64>().map_or_else(|_| big(), Value::Int));
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    Some(i64::from_str_radix(digits, radix).map_or_else(|_| big(), Value::Int))
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    let all_digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => all_digits(int) && all_digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && all_digits(int),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}
