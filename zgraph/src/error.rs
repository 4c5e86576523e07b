//! Errors: every problem found in a manifest is a [`ManifestError`] with a
//! stable [`ErrorKind`] code, a `file:line:col` location and a byte span;
//! [`Diagnostics`] carries all of them at once, with the source text, so a
//! caller can render them with snippets via [`miette`].

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

/// What kind of problem a [`ManifestError`] reports.
///
/// Each kind has a stable code (see [`ErrorKind::code`]) that tools and
/// documentation can rely on; the message text may change between versions.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The text is not valid TOML, JSON or YAML (as reported by the parser).
    Syntax,
    /// A key the manifest model does not know.
    UnknownKey,
    /// The same key appears twice in one table (JSON and YAML; the TOML parser
    /// reports this as a syntax error).
    DuplicateKey,
    /// A required key is absent.
    MissingKey,
    /// A value has the wrong type (for example a number where a string is expected).
    WrongType,
    /// `substrate` is not `gaia`, `biome` or `habitat`.
    UnknownSubstrate,
    /// `capability` is not `standard` or `frontier`.
    UnknownCapability,
    /// `gpu` is not `none` or `passthrough`.
    UnknownGpu,
    /// A resolver `mode` is not one of the supported tunnels.
    UnknownResolverMode,
    /// A brane asks for `capability = "frontier"` on `substrate = "habitat"`.
    FrontierOnHabitat,
    /// `guest` or `gpu = "passthrough"` on a brane that is not `frontier`.
    FrontierOnly,
    /// A name in `hosts` does not match the brane's `peers` glob.
    HostsPeersConflict,
    /// An edge names a brane that is not declared.
    UnknownBrane,
    /// An edge goes from a brane to itself.
    SelfEdge,
    /// The edges form a cycle; the graph must be a DAG.
    Cycle,
    /// Two edges with the same `from`, `to` and `on`.
    DuplicateEdge,
    /// An `[event.X]` section for an event type that no edge carries.
    EventWithoutProducer,
    /// A resolver's `brane` is not declared.
    ResolverUnknownBrane,
    /// A resolver's brane does not serve HTTP (or no brane does).
    ResolverNotHttp,
    /// A resolver has no `brane` and more than one brane serves HTTP.
    ResolverAmbiguous,
    /// A resolver `host` is not a valid DNS name.
    InvalidHostName,
    /// An entry in `hosts` is not a valid node name.
    InvalidNodeName,
    /// `replicas` is an integer below 0 or above 1024.
    ReplicasOutOfRange,
    /// A brane name does not match `[a-z][a-z0-9-]{0,62}`.
    InvalidBraneName,
    /// An event type is not dot-separated segments of `[a-z0-9_-]`.
    InvalidEventType,
    /// A mesh or resolver name is not valid.
    InvalidName,
    /// `peers` is not a valid glob.
    InvalidGlob,
    /// `image` is neither `name:tag` nor a BLAKE3 content id.
    InvalidImage,
    /// A value in `[brane.X.limits]` is not valid (unparseable size, zero).
    InvalidLimit,
    /// An edge `key` is not a valid routing key selector (`.field.sub`).
    InvalidKeySelector,
    /// A value in `[brane.X.grants]` is not valid (a relative path, an
    /// unknown `mode`, a bad HTTP host or environment variable name).
    InvalidGrant,
    /// An `[event.X]` `schema` is not an object/table.
    SchemaNotObject,
    /// The manifest declares no brane.
    NoBranes,
    /// The manifest is longer than [`crate::bounds::MAX_MANIFEST_BYTES`].
    TooLarge,
    /// A key or a named string is longer than its bound (see [`crate::bounds`]).
    TooLong,
    /// A collection has more entries than its bound (see [`crate::bounds`]).
    TooMany,
    /// A key, glob or path contains a control character.
    ControlCharacter,
}

impl ErrorKind {
    /// Every kind, in declaration order (for documentation and tests).
    pub const ALL: &'static [ErrorKind] = &[
        Self::Syntax,
        Self::UnknownKey,
        Self::DuplicateKey,
        Self::MissingKey,
        Self::WrongType,
        Self::UnknownSubstrate,
        Self::UnknownCapability,
        Self::UnknownGpu,
        Self::UnknownResolverMode,
        Self::FrontierOnHabitat,
        Self::FrontierOnly,
        Self::HostsPeersConflict,
        Self::UnknownBrane,
        Self::SelfEdge,
        Self::Cycle,
        Self::DuplicateEdge,
        Self::EventWithoutProducer,
        Self::ResolverUnknownBrane,
        Self::ResolverNotHttp,
        Self::ResolverAmbiguous,
        Self::InvalidHostName,
        Self::InvalidNodeName,
        Self::ReplicasOutOfRange,
        Self::InvalidBraneName,
        Self::InvalidEventType,
        Self::InvalidName,
        Self::InvalidGlob,
        Self::InvalidImage,
        Self::InvalidLimit,
        Self::InvalidKeySelector,
        Self::InvalidGrant,
        Self::SchemaNotObject,
        Self::NoBranes,
        Self::TooLarge,
        Self::TooLong,
        Self::TooMany,
        Self::ControlCharacter,
    ];

    /// The stable code of this kind, such as `zgraph::unknown_key`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Syntax => "zgraph::syntax",
            Self::UnknownKey => "zgraph::unknown_key",
            Self::DuplicateKey => "zgraph::duplicate_key",
            Self::MissingKey => "zgraph::missing_key",
            Self::WrongType => "zgraph::wrong_type",
            Self::UnknownSubstrate => "zgraph::unknown_substrate",
            Self::UnknownCapability => "zgraph::unknown_capability",
            Self::UnknownGpu => "zgraph::unknown_gpu",
            Self::UnknownResolverMode => "zgraph::unknown_resolver_mode",
            Self::FrontierOnHabitat => "zgraph::frontier_on_habitat",
            Self::FrontierOnly => "zgraph::frontier_only",
            Self::HostsPeersConflict => "zgraph::hosts_peers_conflict",
            Self::UnknownBrane => "zgraph::unknown_brane",
            Self::SelfEdge => "zgraph::self_edge",
            Self::Cycle => "zgraph::cycle",
            Self::DuplicateEdge => "zgraph::duplicate_edge",
            Self::EventWithoutProducer => "zgraph::event_without_producer",
            Self::ResolverUnknownBrane => "zgraph::resolver_unknown_brane",
            Self::ResolverNotHttp => "zgraph::resolver_not_http",
            Self::ResolverAmbiguous => "zgraph::resolver_ambiguous",
            Self::InvalidHostName => "zgraph::invalid_host_name",
            Self::InvalidNodeName => "zgraph::invalid_node_name",
            Self::ReplicasOutOfRange => "zgraph::replicas_out_of_range",
            Self::InvalidBraneName => "zgraph::invalid_brane_name",
            Self::InvalidEventType => "zgraph::invalid_event_type",
            Self::InvalidName => "zgraph::invalid_name",
            Self::InvalidGlob => "zgraph::invalid_glob",
            Self::InvalidImage => "zgraph::invalid_image",
            Self::InvalidLimit => "zgraph::invalid_limit",
            Self::InvalidKeySelector => "zgraph::invalid_key_selector",
            Self::InvalidGrant => "zgraph::invalid_grant",
            Self::SchemaNotObject => "zgraph::schema_not_object",
            Self::NoBranes => "zgraph::no_branes",
            Self::TooLarge => "zgraph::too_large",
            Self::TooLong => "zgraph::too_long",
            Self::TooMany => "zgraph::too_many",
            Self::ControlCharacter => "zgraph::control_character",
        }
    }

    /// The kind with the given code, if any.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        Self::ALL.iter().copied().find(|k| k.code() == code)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One problem in a manifest, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// What kind of problem.
    pub kind: ErrorKind,
    /// A one-line description, for people.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub help: Option<String>,
    /// The file name the caller passed to [`crate::load`].
    pub file: String,
    /// 1-based line of the start of the span.
    pub line: usize,
    /// 1-based column (in characters) of the start of the span.
    pub column: usize,
    /// Byte range `(start, end)` in the source text.
    pub span: (usize, usize),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            escape_line(&self.file),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for ManifestError {}

impl Diagnostic for ManifestError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.kind.code()))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display + 'a>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (start, end) = self.span;
        let label = LabeledSpan::new_primary_with_span(
            Some(short_label(self.kind).to_owned()),
            (start, end.saturating_sub(start)),
        );
        Some(Box::new(std::iter::once(label)))
    }
}

fn short_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Syntax => "syntax error here",
        ErrorKind::Cycle => "this edge closes the cycle",
        ErrorKind::UnknownKey => "unknown key",
        ErrorKind::MissingKey => "in this table",
        _ => "here",
    }
}

/// All the problems found in one manifest, with its source text.
///
/// Implements [`miette::Diagnostic`]: the report names the file, and each
/// [`ManifestError`] is a related diagnostic with its own label, rendered
/// against this source. The source shown in snippets has its control
/// characters written as escapes (`\u{1b}`), so a manifest cannot act on
/// the terminal that shows its errors; the labels follow the escapes.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    file: String,
    source: Arc<NamedSource<String>>,
    errors: Vec<ManifestError>,
    /// `errors` with spans into the escaped source, for rendering.
    shown: Vec<ManifestError>,
}

impl Diagnostics {
    pub(crate) fn new(file: &str, source: &str, mut errors: Vec<ManifestError>) -> Self {
        errors.sort_by_key(|e| (e.span.0, e.span.1));
        errors.dedup();
        let escaped = EscapedSource::new(source);
        let shown = errors
            .iter()
            .map(|e| ManifestError {
                span: (escaped.offset(e.span.0), escaped.offset(e.span.1)),
                ..e.clone()
            })
            .collect();
        Self {
            file: file.to_owned(),
            source: Arc::new(NamedSource::new(escape_line(file), escaped.text)),
            errors,
            shown,
        }
    }

    /// The errors, in source order (never empty).
    pub fn errors(&self) -> &[ManifestError] {
        &self.errors
    }

    /// The file name the manifest was loaded under.
    pub fn file(&self) -> &str {
        &self.file
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "{}: {} error{} in manifest",
            escape_line(&self.file),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl Diagnostic for Diagnostics {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("zgraph::invalid_manifest"))
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&*self.source)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.shown.iter().map(|e| e as &dyn Diagnostic)))
    }
}

/// Characters a terminal may act on: C0 and C1 controls, DEL, and the
/// Unicode bidirectional controls that reorder what is shown.
pub(crate) fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character in `escaped` written as `\u{…}`.
fn escape_with(text: &str, escaped: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One line of text safe to print on a terminal: control characters
/// (newlines and tabs too) and bidirectional controls written as `\u{…}`.
pub(crate) fn escape_line(text: &str) -> Cow<'_, str> {
    escape_with(text, is_unsafe)
}

/// Text of several lines safe to print on a terminal: as [`escape_line`],
/// but newlines and tabs are kept.
pub fn escape_text(text: &str) -> Cow<'_, str> {
    escape_with(text, |c| is_unsafe(c) && !matches!(c, '\n' | '\t'))
}

/// A source text with its unsafe characters escaped, and the way back from
/// offsets in the original to offsets in the escaped text.
struct EscapedSource {
    text: String,
    /// `(end, extra)`: after the original offset `end`, offsets grow by `extra`.
    shifts: Vec<(usize, usize)>,
}

impl EscapedSource {
    fn new(source: &str) -> Self {
        let mut text = String::with_capacity(source.len());
        let mut shifts = Vec::new();
        let mut extra = 0;
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let line_end = c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n');
            if is_unsafe(c) && !matches!(c, '\n' | '\t') && !line_end {
                let before = text.len();
                let _ = write!(text, "\\u{{{:x}}}", u32::from(c));
                extra += text.len() - before - c.len_utf8();
                shifts.push((i + c.len_utf8(), extra));
            } else {
                text.push(c);
            }
        }
        Self { text, shifts }
    }

    /// The offset in the escaped text of an original offset (a char boundary).
    fn offset(&self, original: usize) -> usize {
        match self.shifts.partition_point(|&(end, _)| end <= original) {
            0 => original,
            i => original + self.shifts[i - 1].1,
        }
    }
}

/// Maps byte offsets to 1-based line and column (in characters).
pub(crate) struct LineIndex<'a> {
    source: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(source: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            source,
            line_starts,
        }
    }

    /// 1-based (line, column) of a byte offset, clamped to the text.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(self.source, offset);
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let mut start = self.line_starts[line - 1];
        // A byte order mark is not a column: editors do not show it.
        if start == 0 && self.source.starts_with('\u{feff}') {
            start = offset.min('\u{feff}'.len_utf8());
        }
        let column = self.source[start..offset].chars().count() + 1;
        (line, column)
    }
}

/// The largest char boundary at or before `offset` (clamped to the text).
pub(crate) fn floor_char_boundary(s: &str, offset: usize) -> usize {
    let mut o = offset.min(s.len());
    while !s.is_char_boundary(o) {
        o -= 1;
    }
    o
}

/// Collects errors with byte spans, then resolves locations at the end.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    raw: Vec<RawError>,
}

#[derive(Debug)]
struct RawError {
    kind: ErrorKind,
    message: String,
    help: Option<String>,
    span: (usize, usize),
}

impl Sink {
    pub(crate) fn push(&mut self, kind: ErrorKind, span: Span, message: impl Into<String>) {
        self.push_help(kind, span, message, None::<String>);
    }

    pub(crate) fn push_help(
        &mut self,
        kind: ErrorKind,
        span: Span,
        message: impl Into<String>,
        help: Option<impl Into<String>>,
    ) {
        // Messages quote the manifest; whoever prints them gets text that
        // cannot act on a terminal.
        let safe = |text: String| escape_line(&text).into_owned();
        self.raw.push(RawError {
            kind,
            message: safe(message.into()),
            help: help.map(|h| safe(h.into())),
            span: (span.start, span.end),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub(crate) fn into_diagnostics(self, file: &str, source: &str) -> Diagnostics {
        let index = LineIndex::new(source);
        let errors = self
            .raw
            .into_iter()
            .map(|r| {
                let start = floor_char_boundary(source, r.span.0);
                let end = floor_char_boundary(source, r.span.1.max(start));
                let (line, column) = index.line_col(start);
                ManifestError {
                    kind: r.kind,
                    message: r.message,
                    help: r.help,
                    file: file.to_owned(),
                    line,
                    column,
                    span: (start, end),
                }
            })
            .collect();
        Diagnostics::new(file, source, errors)
    }
}

/// A byte range in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Self {
        Self {
            start,
            end: end.max(start),
        }
    }
}

impl From<std::ops::Range<usize>> for Span {
    fn from(r: std::ops::Range<usize>) -> Self {
        Self::new(r.start, r.end)
    }
}
