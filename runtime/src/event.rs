//! Events in and out of a brane, and where brane logs go.

use std::sync::Arc;

/// One event delivered to a brane (the WIT `event` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique id, stable across retries.
    pub id: String,
    /// Event type, e.g. `raw.batch`.
    pub ty: String,
    /// Routing key (may be empty).
    pub key: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// The emitting brane, or `external`.
    pub source: String,
    /// Delivery attempt, from 1.
    pub attempt: u32,
}

impl Event {
    /// An event from outside the graph, attempt 1.
    pub fn external(id: impl Into<String>, ty: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            id: id.into(),
            ty: ty.into(),
            key: String::new(),
            payload,
            source: "external".into(),
            attempt: 1,
        }
    }
}

/// An event a brane emitted during one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// Event type.
    pub ty: String,
    /// Routing key.
    pub key: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// What one successful `on-event` call produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The events emitted, in order.
    pub emitted: Vec<Emitted>,
    /// Emits the host refused (too many, too large, undeclared type).
    pub refused: u32,
}

/// Severity of a brane's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LogLevel {
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Trace => "TRACE",
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        })
    }
}

/// Receives every log line: (brane name, level, message). Called on the
/// thread running the brane.
pub type LogSink = Arc<dyn Fn(&str, LogLevel, &str) + Send + Sync>;

/// A sink that drops every line.
pub fn discard_logs() -> LogSink {
    Arc::new(|_, _, _| {})
}
