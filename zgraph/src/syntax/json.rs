//! A small strict JSON parser (RFC 8259) that keeps byte spans.
//!
//! No comments, no trailing commas, no duplicate keys (reported as
//! [`ErrorKind::DuplicateKey`]), nesting bounded by [`crate::bounds::MAX_DEPTH`].

use super::{Key, MAX_DEPTH, Node, Value, check_duplicate_keys};
use crate::ErrorKind;
use crate::error::{Sink, Span};

pub(super) fn parse(source: &str, sink: &mut Sink) -> Option<Node> {
    // A byte order mark is allowed before the document, as TOML and YAML
    // allow it; offsets still count from the start of the text.
    let start = if source.starts_with('\u{feff}') { 3 } else { 0 };
    let mut p = Parser {
        src: source.as_bytes(),
        text: source,
        pos: start,
        depth: 0,
    };
    let result = p.document();
    match result {
        Ok(node) => {
            for_each_table(&node, &mut |entries| check_duplicate_keys(entries, sink));
            Some(node)
        }
        Err((span, message)) => {
            sink.push(ErrorKind::Syntax, span, format!("JSON syntax: {message}"));
            None
        }
    }
}

/// A visitor over the entries of each table.
type TableVisitor<'a> = dyn FnMut(&[(Key, Node)]) + 'a;

fn for_each_table(node: &Node, f: &mut TableVisitor<'_>) {
    match &node.value {
        Value::Table(entries) => {
            f(entries);
            for (_, v) in entries {
                for_each_table(v, f);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| for_each_table(v, f)),
        _ => {}
    }
}

type PResult<T> = Result<T, (Span, String)>;

struct Parser<'a> {
    src: &'a [u8],
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn document(&mut self) -> PResult<Node> {
        self.skip_ws();
        let node = self.value()?;
        self.skip_ws();
        if self.pos < self.src.len() {
            return Err(self.err_here("trailing characters after the document"));
        }
        Ok(node)
    }

    fn err_here(&self, message: &str) -> (Span, String) {
        let width = self.text[self.pos..]
            .chars()
            .next()
            .map_or(0, char::len_utf8);
        (Span::new(self.pos, self.pos + width), message.to_owned())
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8, what: &str) -> PResult<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err_here(&format!("expected {what}")))
        }
    }

    fn value(&mut self) -> PResult<Node> {
        let start = self.pos;
        let value = match self.peek() {
            Some(b'{') => self.nested(Self::object)?,
            Some(b'[') => self.nested(Self::array)?,
            Some(b'"') => Value::Str(self.string()?),
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(b't') => self.literal("true", Value::Bool(true))?,
            Some(b'f') => self.literal("false", Value::Bool(false))?,
            Some(b'n') => self.literal("null", Value::Null)?,
            Some(_) => return Err(self.err_here("expected a value")),
            None => return Err(self.err_here("unexpected end of input, expected a value")),
        };
        Ok(Node {
            value,
            span: Span::new(start, self.pos),
        })
    }

    fn nested(&mut self, f: fn(&mut Self) -> PResult<Value>) -> PResult<Value> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err_here(&format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn literal(&mut self, word: &str, value: Value) -> PResult<Value> {
        if self.src[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.err_here("expected a value"))
        }
    }

    fn object(&mut self) -> PResult<Value> {
        self.pos += 1;
        let mut entries = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Table(entries));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err_here("expected a string key"));
            }
            let start = self.pos;
            let name = self.string()?;
            let key = Key {
                name,
                span: Span::new(start, self.pos),
            };
            self.skip_ws();
            self.expect(b':', "`:` after the key")?;
            self.skip_ws();
            let v = self.value()?;
            entries.push((key, v));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Table(entries));
                }
                _ => return Err(self.err_here("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self) -> PResult<Value> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err_here("expected `,` or `]`")),
            }
        }
    }

    fn string(&mut self) -> PResult<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.err_here("unterminated string"));
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                0x00..=0x1f => return Err(self.err_here("control character in string")),
                _ => {
                    // Copy one UTF-8 character (the input is a &str, so valid).
                    let c = self.text[self.pos..].chars().next().unwrap_or('\u{fffd}');
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> PResult<()> {
        let c = match self.peek() {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                self.pos += 1;
                let hi = self.hex4()?;
                let c = if (0xD800..0xDC00).contains(&hi) {
                    if !self.src[self.pos..].starts_with(b"\\u") {
                        return Err(self.err_here("unpaired surrogate in \\u escape"));
                    }
                    self.pos += 2;
                    let lo = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(self.err_here("invalid low surrogate in \\u escape"));
                    }
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                } else {
                    char::from_u32(hi)
                };
                let Some(c) = c else {
                    return Err(self.err_here("invalid \\u escape"));
                };
                out.push(c);
                return Ok(());
            }
            _ => return Err(self.err_here("invalid escape")),
        };
        self.pos += 1;
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> PResult<u32> {
        let digits = self
            .src
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok());
        match digits {
            Some(n) => {
                self.pos += 4;
                Ok(n)
            }
            None => Err(self.err_here("expected 4 hex digits after \\u")),
        }
    }

    fn number(&mut self) -> PResult<Value> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err_here("expected a digit")),
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            is_float = true;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err_here("expected a digit after `.`"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            is_float = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err_here("expected a digit in the exponent"));
            }
            self.digits();
        }
        let text = &self.text[start..self.pos];
        if !is_float {
            return Ok(match text.parse::<i64>() {
                Ok(n) => Value::Int(n),
                Err(_) => Value::BigInt(text.to_owned()),
            });
        }
        Ok(Value::Float(text.parse().unwrap_or(f64::NAN)))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}
