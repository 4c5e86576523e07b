//! The UCAN 1.0 policy language: predicates a delegation places on the
//! arguments of any invocation it authorises.
//!
//! A [`Policy`] is a list of statements that must all hold. Statements:
//!
//! | form | meaning |
//! |---|---|
//! | `["==", sel, v]`, `["!=", sel, v]` | deep equality; integers and floats compare by value (`1 == 1.0`) |
//! | `["<", sel, n]`, `["<=", …]`, `[">", …]`, `[">=", …]` | numeric order; non-numbers never match |
//! | `["like", sel, "glob"]` | whole-string glob: `*` matches any run of characters, `\*` a literal `*` |
//! | `["not", s]`, `["and", [s…]]`, `["or", [s…]]` | logic; `and []` and `or []` are both true |
//! | `["all", sel, s]`, `["any", sel, s]` | `s` holds for all / some items of a list, or values of a map |
//!
//! Selectors are jq-like: `.` (the whole value), `.a`, `.a.b`, `.["key"]`, `.[0]`,
//! `.[-1]` (from the end), a trailing `?` on a segment (`.a?`) to make it optional,
//! and `.[]` (iterate) as the last segment of an `all`/`any` selector, where it
//! means the same as leaving it out. Slices are not supported.
//!
//! Missing data: a non-optional selector that does not resolve (a missing key, an
//! index out of range, a key into a non-map) makes its statement *undecided*. An
//! undecided statement is not true: `not` keeps it undecided, `and` fails with it,
//! `or` and `any` skip it, `all` fails with it, and a policy whose result is
//! undecided does not match. An optional selector that does not resolve yields `null`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ipld_core::ipld::Ipld;

/// Deepest nesting of statements (and of literal values) accepted.
pub const MAX_DEPTH: usize = 32;
/// Most statements one policy may contain.
pub const MAX_STATEMENTS: usize = 1024;
/// Most evaluation steps one [`Policy::matches`] call may take.
pub const MAX_EVAL_STEPS: usize = 1_000_000;

/// A list of statements that must all hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy(Vec<Statement>);

/// One policy statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`.
    Compare {
        /// The operator.
        op: CmpOp,
        /// What to compare.
        selector: Selector,
        /// The literal to compare with.
        value: Ipld,
    },
    /// `like`: glob match of a string.
    Like {
        /// What to match.
        selector: Selector,
        /// The glob, as written (`*` wildcard, `\*` literal star).
        pattern: String,
    },
    /// `not`.
    Not(Box<Statement>),
    /// `and`.
    And(Vec<Statement>),
    /// `or`.
    Or(Vec<Statement>),
    /// `all`: the statement holds for every item.
    All {
        /// The collection.
        selector: Selector,
        /// Evaluated with each item as `.`.
        statement: Box<Statement>,
    },
    /// `any`: the statement holds for at least one item.
    Any {
        /// The collection.
        selector: Selector,
        /// Evaluated with each item as `.`.
        statement: Box<Statement>,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

/// A parsed jq-like selector; keeps its source text for re-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Field(String, bool),
    Index(i64, bool),
    Iterate,
}

/// Why a policy is malformed. `at` is a path into the policy such as `pol[1][2]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A statement (or the policy itself) is not a list.
    #[error("{at}: expected a list")]
    NotAList {
        /// Where.
        at: String,
    },
    /// The operator is not one of the language's.
    #[error("{at}: unknown operator `{op}`")]
    UnknownOperator {
        /// Where.
        at: String,
        /// The operator found.
        op: String,
    },
    /// Wrong number of elements for the operator.
    #[error("{at}: `{op}` takes {expected} elements, found {found}")]
    Arity {
        /// Where.
        at: String,
        /// The operator.
        op: String,
        /// Elements expected, counting the operator.
        expected: usize,
        /// Elements found.
        found: usize,
    },
    /// An element has the wrong kind.
    #[error("{at}: expected {expected}")]
    WrongKind {
        /// Where.
        at: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A selector does not parse or is used where it is not allowed.
    #[error("{at}: bad selector `{selector}`: {reason}")]
    BadSelector {
        /// Where.
        at: String,
        /// The selector text.
        selector: String,
        /// Why.
        reason: &'static str,
    },
    /// More than [`MAX_DEPTH`] levels of nesting.
    #[error("{at}: nested deeper than {MAX_DEPTH} levels")]
    TooDeep {
        /// Where.
        at: String,
    },
    /// More than [`MAX_STATEMENTS`] statements.
    #[error("policy has more than {MAX_STATEMENTS} statements")]
    TooLarge,
    /// The text is not JSON.
    #[error("policy is not valid JSON: {0}")]
    Json(String),
}

/// Why evaluation stopped before reaching a verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// More than [`MAX_EVAL_STEPS`] steps.
    #[error("policy evaluation exceeded {MAX_EVAL_STEPS} steps")]
    BudgetExceeded,
}

// ------------------------------------------------------------------ parsing

fn kind_err(at: &str, expected: &'static str) -> PolicyError {
    PolicyError::WrongKind {
        at: at.to_owned(),
        expected,
    }
}

struct Parser {
    count: usize,
}

impl Parser {
    fn statement(&mut self, v: &Ipld, at: &str, depth: usize) -> Result<Statement, PolicyError> {
        if depth > MAX_DEPTH {
            return Err(PolicyError::TooDeep { at: at.to_owned() });
        }
        self.count += 1;
        if self.count > MAX_STATEMENTS {
            return Err(PolicyError::TooLarge);
        }
        let Ipld::List(items) = v else {
            return Err(PolicyError::NotAList { at: at.to_owned() });
        };
        let Some(Ipld::String(op)) = items.first() else {
            return Err(kind_err(&format!("{at}[0]"), "an operator string"));
        };
        let arity = |expected: usize| {
            if items.len() == expected {
                Ok(())
            } else {
                Err(PolicyError::Arity {
                    at: at.to_owned(),
                    op: op.clone(),
                    expected,
                    found: items.len(),
                })
            }
        };
        let selector = |iterable: bool| -> Result<Selector, PolicyError> {
            let sel_at = format!("{at}[1]");
            let Some(Ipld::String(s)) = items.get(1) else {
                return Err(kind_err(&sel_at, "a selector string"));
            };
            let sel = Selector::parse(s).map_err(|reason| PolicyError::BadSelector {
                at: sel_at.clone(),
                selector: s.clone(),
                reason,
            })?;
            let iter_pos = sel.segments.iter().position(|s| *s == Segment::Iterate);
            match iter_pos {
                None => Ok(sel),
                Some(p) if iterable && p + 1 == sel.segments.len() => Ok(sel),
                Some(_) => Err(PolicyError::BadSelector {
                    at: sel_at,
                    selector: s.clone(),
                    reason: "`[]` is only allowed at the end of an `all`/`any` selector",
                }),
            }
        };
        let cmp = match op.as_str() {
            "==" => Some(CmpOp::Eq),
            "!=" => Some(CmpOp::Ne),
            "<" => Some(CmpOp::Lt),
            "<=" => Some(CmpOp::Le),
            ">" => Some(CmpOp::Gt),
            ">=" => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = cmp {
            arity(3)?;
            let selector = selector(false)?;
            let value = items[2].clone();
            check_depth(&value, &format!("{at}[2]"), depth + 1)?;
            if !matches!(op, CmpOp::Eq | CmpOp::Ne)
                && !matches!(value, Ipld::Integer(_) | Ipld::Float(_))
            {
                return Err(kind_err(&format!("{at}[2]"), "a number"));
            }
            return Ok(Statement::Compare {
                op,
                selector,
                value,
            });
        }
        match op.as_str() {
            "like" => {
                arity(3)?;
                let selector = selector(false)?;
                let Ipld::String(pattern) = &items[2] else {
                    return Err(kind_err(&format!("{at}[2]"), "a glob string"));
                };
                Ok(Statement::Like {
                    selector,
                    pattern: pattern.clone(),
                })
            }
            "not" => {
                arity(2)?;
                let inner = self.statement(&items[1], &format!("{at}[1]"), depth + 1)?;
                Ok(Statement::Not(Box::new(inner)))
            }
            "and" | "or" => {
                arity(2)?;
                let Ipld::List(list) = &items[1] else {
                    return Err(kind_err(&format!("{at}[1]"), "a list of statements"));
                };
                let mut out = Vec::with_capacity(list.len().min(MAX_STATEMENTS));
                for (i, s) in list.iter().enumerate() {
                    out.push(self.statement(s, &format!("{at}[1][{i}]"), depth + 1)?);
                }
                Ok(if op == "and" {
                    Statement::And(out)
                } else {
                    Statement::Or(out)
                })
            }
            "all" | "any" => {
                arity(3)?;
                let selector = selector(true)?;
                let inner = Box::new(self.statement(&items[2], &format!("{at}[2]"), depth + 1)?);
                Ok(if op == "all" {
                    Statement::All {
                        selector,
                        statement: inner,
                    }
                } else {
                    Statement::Any {
                        selector,
                        statement: inner,
                    }
                })
            }
            _ => Err(PolicyError::UnknownOperator {
                at: at.to_owned(),
                op: op.clone(),
            }),
        }
    }
}

fn check_depth(v: &Ipld, at: &str, depth: usize) -> Result<(), PolicyError> {
    if depth > MAX_DEPTH {
        return Err(PolicyError::TooDeep { at: at.to_owned() });
    }
    match v {
        Ipld::List(items) => items.iter().try_for_each(|i| check_depth(i, at, depth + 1)),
        Ipld::Map(m) => m.values().try_for_each(|i| check_depth(i, at, depth + 1)),
        _ => Ok(()),
    }
}

fn json_to_ipld(v: &serde_json::Value, depth: usize) -> Result<Ipld, PolicyError> {
    use serde_json::Value;
    if depth > 2 * MAX_DEPTH {
        return Err(PolicyError::TooDeep { at: "pol".into() });
    }
    Ok(match v {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ipld::Integer(i.into())
            } else if let Some(u) = n.as_u64() {
                Ipld::Integer(u.into())
            } else {
                Ipld::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Ipld::String(s.clone()),
        Value::Array(a) => Ipld::List(
            a.iter()
                .map(|x| json_to_ipld(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Ipld::Map(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), json_to_ipld(x, depth + 1)?)))
                .collect::<Result<_, PolicyError>>()?,
        ),
    })
}

/// Converts JSON to IPLD the way policies and invocation arguments read it:
/// integers stay integers, other numbers become floats. Fails past a fixed depth.
pub fn ipld_from_json(v: &serde_json::Value) -> Result<Ipld, PolicyError> {
    json_to_ipld(v, 0)
}

impl Policy {
    /// The empty policy, which matches everything.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// A policy from statements.
    pub fn from_statements(statements: Vec<Statement>) -> Self {
        Self(statements)
    }

    /// The statements.
    pub fn statements(&self) -> &[Statement] {
        &self.0
    }

    /// True when there are no statements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the IPLD form (the `pol` field: a list of statements).
    pub fn from_ipld(v: &Ipld) -> Result<Self, PolicyError> {
        let Ipld::List(items) = v else {
            return Err(PolicyError::NotAList { at: "pol".into() });
        };
        let mut p = Parser { count: 0 };
        let statements = items
            .iter()
            .enumerate()
            .map(|(i, s)| p.statement(s, &format!("pol[{i}]"), 1))
            .collect::<Result<_, _>>()?;
        Ok(Self(statements))
    }

    /// Parses the JSON form, for example `[["==", ".substrate", "habitat"]]`.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, PolicyError> {
        Self::from_ipld(&json_to_ipld(v, 0)?)
    }

    /// The IPLD form.
    pub fn to_ipld(&self) -> Ipld {
        Ipld::List(self.0.iter().map(Statement::to_ipld).collect())
    }

    /// Evaluates the policy against invocation arguments.
    pub fn matches(&self, args: &BTreeMap<String, Ipld>) -> Result<bool, EvalError> {
        let mut ev = Eval { steps: 0 };
        let root = Cur::Args(args);
        for s in &self.0 {
            if ev.statement(s, root)? != Tri::True {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Evaluates the policy against any IPLD value as `.`.
    pub fn matches_value(&self, value: &Ipld) -> Result<bool, EvalError> {
        let mut ev = Eval { steps: 0 };
        for s in &self.0 {
            if ev.statement(s, Cur::Val(value))? != Tri::True {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl FromStr for Policy {
    type Err = PolicyError;

    /// Parses policy JSON text.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| PolicyError::Json(e.to_string()))?;
        Self::from_json(&v)
    }
}

impl Statement {
    /// The IPLD form of this statement.
    pub fn to_ipld(&self) -> Ipld {
        let s = |x: &str| Ipld::String(x.to_owned());
        let sel = |x: &Selector| Ipld::String(x.source.clone());
        Ipld::List(match self {
            Self::Compare {
                op,
                selector,
                value,
            } => vec![s(op.as_str()), sel(selector), value.clone()],
            Self::Like { selector, pattern } => vec![s("like"), sel(selector), s(pattern)],
            Self::Not(inner) => vec![s("not"), inner.to_ipld()],
            Self::And(list) => vec![
                s("and"),
                Ipld::List(list.iter().map(Self::to_ipld).collect()),
            ],
            Self::Or(list) => vec![
                s("or"),
                Ipld::List(list.iter().map(Self::to_ipld).collect()),
            ],
            Self::All {
                selector,
                statement,
            } => vec![s("all"), sel(selector), statement.to_ipld()],
            Self::Any {
                selector,
                statement,
            } => vec![s("any"), sel(selector), statement.to_ipld()],
        })
    }
}

impl Selector {
    /// Parses selector text such as `.a.b`, `.["k"]`, `.[-1]`, `.a?`.
    pub fn parse(src: &str) -> Result<Self, &'static str> {
        let b = src.as_bytes();
        if b.first() != Some(&b'.') {
            return Err("must start with `.`");
        }
        let mut segments = Vec::new();
        let mut i = 1;
        if b.len() == 1 {
            return Ok(Self {
                source: src.to_owned(),
                segments,
            });
        }
        let mut after_dot = true;
        while i < b.len() {
            let c = b[i];
            let seg = if c == b'.' && !after_dot {
                after_dot = true;
                i += 1;
                continue;
            } else if c == b'[' {
                i += 1;
                parse_bracket(b, &mut i)?
            } else if after_dot && (c.is_ascii_alphabetic() || c == b'_') {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                Segment::Field(src[start..i].to_owned(), false)
            } else {
                return Err("unexpected character");
            };
            let optional = b.get(i) == Some(&b'?');
            if optional {
                i += 1;
            }
            segments.push(match seg {
                Segment::Field(f, _) => Segment::Field(f, optional),
                Segment::Index(n, _) => Segment::Index(n, optional),
                Segment::Iterate => Segment::Iterate,
            });
            after_dot = false;
        }
        if after_dot {
            return Err("ends with `.`");
        }
        Ok(Self {
            source: src.to_owned(),
            segments,
        })
    }

    fn select<'a>(&self, root: Cur<'a>) -> Option<Cur<'a>> {
        let mut cur = root;
        for seg in &self.segments {
            let next = match (seg, cur) {
                (Segment::Field(k, _), Cur::Args(m)) => m.get(k).map(Cur::Val),
                (Segment::Field(k, _), Cur::Val(Ipld::Map(m))) => m.get(k).map(Cur::Val),
                (Segment::Index(n, _), Cur::Val(Ipld::List(l))) => {
                    let idx = if *n < 0 {
                        usize::try_from(n.unsigned_abs())
                            .ok()
                            .and_then(|k| l.len().checked_sub(k))
                    } else {
                        usize::try_from(*n).ok()
                    };
                    idx.and_then(|i| l.get(i)).map(Cur::Val)
                }
                (Segment::Iterate, c) => Some(c),
                _ => None,
            };
            cur = match (next, seg) {
                (Some(c), _) => c,
                (None, Segment::Field(_, true) | Segment::Index(_, true)) => {
                    return Some(Cur::Val(&NULL));
                }
                (None, _) => return None,
            };
        }
        Some(cur)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_bracket(b: &[u8], i: &mut usize) -> Result<Segment, &'static str> {
    match b.get(*i) {
        Some(b']') => {
            *i += 1;
            Ok(Segment::Iterate)
        }
        Some(b'"') => {
            *i += 1;
            let mut key = Vec::new();
            loop {
                match b.get(*i) {
                    None => return Err("unterminated string"),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        match b.get(*i + 1) {
                            Some(&c @ (b'"' | b'\\')) => key.push(c),
                            _ => return Err("bad escape in string"),
                        }
                        *i += 2;
                    }
                    Some(&c) => {
                        key.push(c);
                        *i += 1;
                    }
                }
            }
            if b.get(*i + 1) != Some(&b']') {
                return Err("expected `]` after the key");
            }
            *i += 2;
            let key = String::from_utf8(key).map_err(|_| "key is not UTF-8")?;
            Ok(Segment::Field(key, false))
        }
        Some(c) if c.is_ascii_digit() || *c == b'-' => {
            let start = *i;
            *i += 1;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            let text = std::str::from_utf8(&b[start..*i]).map_err(|_| "bad index")?;
            let n: i64 = text.parse().map_err(|_| "bad index")?;
            if b.get(*i) != Some(&b']') {
                return Err("expected `]` after the index");
            }
            *i += 1;
            Ok(Segment::Index(n, false))
        }
        _ => Err("expected `]`, a quoted key or an index after `[`"),
    }
}

// --------------------------------------------------------------- evaluation

static NULL: Ipld = Ipld::Null;

/// The value under evaluation: the top-level arguments map, or a value inside it.
#[derive(Clone, Copy)]
enum Cur<'a> {
    Args(&'a BTreeMap<String, Ipld>),
    Val(&'a Ipld),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Undecided,
}

impl From<bool> for Tri {
    fn from(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }
}

struct Eval {
    steps: usize,
}

impl Eval {
    fn statement(&mut self, s: &Statement, cur: Cur<'_>) -> Result<Tri, EvalError> {
        self.steps += 1;
        if self.steps > MAX_EVAL_STEPS {
            return Err(EvalError::BudgetExceeded);
        }
        Ok(match s {
            Statement::Compare {
                op,
                selector,
                value,
            } => match selector.select(cur) {
                None => Tri::Undecided,
                Some(v) => compare(*op, v, value).into(),
            },
            Statement::Like { selector, pattern } => match selector.select(cur) {
                None => Tri::Undecided,
                Some(Cur::Val(Ipld::String(text))) => glob(pattern, text).into(),
                Some(_) => Tri::False,
            },
            Statement::Not(inner) => match self.statement(inner, cur)? {
                Tri::True => Tri::False,
                Tri::False => Tri::True,
                Tri::Undecided => Tri::Undecided,
            },
            Statement::And(list) => {
                let mut out = Tri::True;
                for s in list {
                    match self.statement(s, cur)? {
                        Tri::True => {}
                        Tri::False => return Ok(Tri::False),
                        Tri::Undecided => out = Tri::Undecided,
                    }
                }
                out
            }
            Statement::Or(list) => {
                if list.is_empty() {
                    return Ok(Tri::True);
                }
                let mut out = Tri::False;
                for s in list {
                    match self.statement(s, cur)? {
                        Tri::True => return Ok(Tri::True),
                        Tri::False => {}
                        Tri::Undecided => out = Tri::Undecided,
                    }
                }
                out
            }
            Statement::All {
                selector,
                statement,
            } => self.quantify(selector, statement, cur, true)?,
            Statement::Any {
                selector,
                statement,
            } => self.quantify(selector, statement, cur, false)?,
        })
    }

    fn quantify(
        &mut self,
        selector: &Selector,
        statement: &Statement,
        cur: Cur<'_>,
        all: bool,
    ) -> Result<Tri, EvalError> {
        let items: Box<dyn Iterator<Item = &Ipld>> = match selector.select(cur) {
            None => return Ok(Tri::Undecided),
            Some(Cur::Args(m)) => Box::new(m.values()),
            Some(Cur::Val(Ipld::List(l))) => Box::new(l.iter()),
            Some(Cur::Val(Ipld::Map(m))) => Box::new(m.values()),
            Some(Cur::Val(_)) => return Ok(Tri::False),
        };
        let mut undecided = false;
        for item in items {
            match (self.statement(statement, Cur::Val(item))?, all) {
                (Tri::True, false) => return Ok(Tri::True),
                (Tri::False, true) => return Ok(Tri::False),
                (Tri::Undecided, true) => undecided = true,
                _ => {}
            }
        }
        Ok(match (all, undecided) {
            (true, true) => Tri::Undecided,
            (true, false) => Tri::True,
            (false, _) => Tri::False,
        })
    }
}

fn compare(op: CmpOp, left: Cur<'_>, right: &Ipld) -> bool {
    match op {
        CmpOp::Eq => cur_eq(left, right),
        CmpOp::Ne => !cur_eq(left, right),
        _ => {
            let Cur::Val(left) = left else { return false };
            match num_cmp(left, right) {
                None => false,
                Some(o) => match op {
                    CmpOp::Lt => o == Ordering::Less,
                    CmpOp::Le => o != Ordering::Greater,
                    CmpOp::Gt => o == Ordering::Greater,
                    _ => o != Ordering::Less,
                },
            }
        }
    }
}

fn num_cmp(a: &Ipld, b: &Ipld) -> Option<Ordering> {
    match (a, b) {
        (Ipld::Integer(x), Ipld::Integer(y)) => Some(x.cmp(y)),
        (Ipld::Integer(x), Ipld::Float(y)) => (*x as f64).partial_cmp(y),
        (Ipld::Float(x), Ipld::Integer(y)) => x.partial_cmp(&(*y as f64)),
        (Ipld::Float(x), Ipld::Float(y)) => x.partial_cmp(y),
        _ => None,
    }
}

fn cur_eq(a: Cur<'_>, b: &Ipld) -> bool {
    match (a, b) {
        (Cur::Args(m), Ipld::Map(n)) => map_eq(m, n),
        (Cur::Args(_), _) => false,
        (Cur::Val(a), b) => value_eq(a, b),
    }
}

fn map_eq(a: &BTreeMap<String, Ipld>, b: &BTreeMap<String, Ipld>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && value_eq(va, vb))
}

/// Deep equality where integers and floats compare by numeric value.
fn value_eq(a: &Ipld, b: &Ipld) -> bool {
    match (a, b) {
        (Ipld::List(x), Ipld::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| value_eq(p, q))
        }
        (Ipld::Map(x), Ipld::Map(y)) => map_eq(x, y),
        (Ipld::Integer(_) | Ipld::Float(_), Ipld::Integer(_) | Ipld::Float(_)) => {
            num_cmp(a, b) == Some(Ordering::Equal)
        }
        _ => a == b,
    }
}

/// Whole-string glob: `*` matches any run of characters, `\*` a literal `*`.
fn glob(pattern: &str, text: &str) -> bool {
    #[derive(PartialEq)]
    enum Tok {
        Star,
        Char(char),
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'*') => {
                chars.next();
                toks.push(Tok::Char('*'));
            }
            '*' => toks.push(Tok::Star),
            c => toks.push(Tok::Char(c)),
        }
    }
    let text: Vec<char> = text.chars().collect();
    // Iterative wildcard matching with single-star backtracking: O(n * m).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            Some(Tok::Star) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol(s: &str) -> Policy {
        s.parse().unwrap()
    }

    fn args(s: &str) -> BTreeMap<String, Ipld> {
        match ipld_from_json(&serde_json::from_str(s).unwrap()).unwrap() {
            Ipld::Map(m) => m,
            _ => panic!("args must be a map"),
        }
    }

    #[test]
    fn selectors() {
        let a = args(r#"{"a": {"b": [10, 20, 30]}, "k e y": 1}"#);
        assert!(pol(r#"[["==", ".a.b[0]", 10]]"#).matches(&a).unwrap());
        assert!(pol(r#"[["==", ".a.b.[-1]", 30]]"#).matches(&a).unwrap());
        assert!(pol(r#"[["==", ".[\"k e y\"]", 1]]"#).matches(&a).unwrap());
        assert!(pol(r#"[["==", ".missing?", null]]"#).matches(&a).unwrap());
        assert!(!pol(r#"[["==", ".missing", null]]"#).matches(&a).unwrap());
        assert!(
            !pol(r#"[["not", ["==", ".missing", 1]]]"#)
                .matches(&a)
                .unwrap()
        );
        assert!(
            pol(r#"[["all", ".a.b[]", [">", ".", 5]]]"#)
                .matches(&a)
                .unwrap()
        );
        assert!(!pol(r#"[["==", ".a.b[9]", 1]]"#).matches(&a).unwrap());
        assert!(!pol(r#"[["==", ".a.b[-9]", 1]]"#).matches(&a).unwrap());
    }

    #[test]
    fn malformed() {
        let bad = [
            (r#"{"a": 1}"#, "NotAList"),
            (r#"[["=~", ".a", 1]]"#, "UnknownOperator"),
            (r#"[["==", ".a"]]"#, "Arity"),
            (r#"[["<", ".a", "x"]]"#, "WrongKind"),
            (r#"[["like", ".a", 1]]"#, "WrongKind"),
            (r#"[["==", "a", 1]]"#, "BadSelector"),
            (r#"[["==", ".a.", 1]]"#, "BadSelector"),
            (r#"[["==", ".a[]", 1]]"#, "BadSelector"),
            (r#"[["==", ".[\"x]", 1]]"#, "BadSelector"),
            (r#"[["and", {}]]"#, "WrongKind"),
            (r#"[[1, 2]]"#, "WrongKind"),
            ("[", "Json"),
        ];
        for (text, kind) in bad {
            let err = text.parse::<Policy>().unwrap_err();
            assert!(format!("{err:?}").starts_with(kind), "{text}: {err:?}");
        }
        let mut deep = String::from(r#"["==", ".a", 1]"#);
        for _ in 0..40 {
            deep = format!(r#"["not", {deep}]"#);
        }
        assert!(matches!(
            format!("[{deep}]").parse::<Policy>(),
            Err(PolicyError::TooDeep { .. })
        ));
    }

    #[test]
    fn evaluation_is_bounded() {
        // `any` over 1000 items of an `or` of 1000 false statements: over the budget.
        let stmts: Vec<String> = (0..1000)
            .map(|i| format!(r#"["==", ".", {}]"#, -1 - i))
            .collect();
        let p = pol(&format!(
            r#"[["any", ".a", ["or", [{}]]]]"#,
            stmts.join(",")
        ));
        let mut a = BTreeMap::new();
        a.insert(
            "a".to_owned(),
            Ipld::List((0..1000).map(Ipld::Integer).collect()),
        );
        assert_eq!(p.matches(&a), Err(EvalError::BudgetExceeded));
    }

    #[test]
    fn globbing() {
        assert!(glob("*", ""));
        assert!(glob("a*c", "abbbc"));
        assert!(!glob("a*c", "abbbd"));
        assert!(glob("\\*x", "*x"));
        assert!(!glob("\\*x", "ax"));
        assert!(glob("*@example.com", "bob@example.com"));
        assert!(!glob("*@example.com", "carol@elsewhere.example.comx"));
    }

    #[test]
    fn round_trips_through_ipld() {
        let p =
            pol(r#"[["any", ".to", ["like", ".", "*@x"]], ["not", ["or", [[">=", ".n", 1.5]]]]]"#);
        assert_eq!(Policy::from_ipld(&p.to_ipld()).unwrap(), p);
    }
}
