//! Printing for people and for machines, and the CLI's error type.

use std::fmt::Display;

use serde_json::{Value, json};

/// Where a verb's results go: text for people, or one JSON document.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    /// `json`: print JSON documents instead of text.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Whether `--json` was given.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Print a result: `human` as text, or `machine` as pretty JSON.
    /// A reader that went away (`omega tail … | head`) ends the process
    /// quietly instead of a panic on the broken pipe.
    pub fn print(&self, human: impl Display, machine: Value) {
        if self.json {
            stdout_line(&serde_json::to_string_pretty(&machine).unwrap_or_default());
        } else {
            self.say(human);
        }
    }

    /// Print one line of text for people on stdout (nothing with `--json`),
    /// as [`Output::print`] does: control characters escaped, a closed pipe
    /// ends the process quietly.
    pub fn say(&self, human: impl Display) {
        if !self.json {
            stdout_line(&omega_zgraph::escape_text(&human.to_string()));
        }
    }

    /// Report an error: JSON on stdout with `--json`, text on stderr otherwise.
    pub fn error(&self, err: &CliError) {
        if self.json {
            stdout_line(
                &serde_json::to_string_pretty(&json!({ "ok": false, "error": err.to_json() }))
                    .unwrap_or_default(),
            );
        } else {
            let mut text = format!("error: {err}");
            if let Some(help) = err.help() {
                text.push_str(&format!("\n  help: {help}"));
            }
            stderr_text(&omega_zgraph::escape_text(&text));
        }
    }
}

/// Write `text` and a newline to stdout. Every verb's stdout goes through
/// here: a reader that went away (`omega graph … | head -1`) ends the
/// process with status 0, since all the reader wanted was printed.
pub(super) fn stdout_line(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        stderr_text(&format!("error: writing to stdout: {e}"));
    }
}

/// Write `text` and a newline to stderr; a stderr that cannot be written
/// (closed, a broken pipe) is ignored, where `eprintln!` would panic. The
/// exit code still says what happened.
pub(super) fn stderr_text(text: &str) {
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}").and_then(|()| err.flush());
}

/// An error a verb reports to the user (exit code 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Input that is not valid, with an optional hint on how to fix it.
    #[error("{message}")]
    Invalid {
        /// What is wrong and where.
        message: String,
        /// How to fix it.
        help: Option<String>,
    },
    /// The key store failed.
    #[error(transparent)]
    Key(#[from] crate::keystore::KeyStoreError),
    /// A file or standard input could not be read within its limit.
    #[error(transparent)]
    Read(#[from] crate::bounded::ReadError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// An invalid-input error with a hint.
    pub fn invalid(message: impl Into<String>, help: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            help: Some(help.into()),
        }
    }

    /// An invalid-input error without a hint.
    pub fn plain(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            help: None,
        }
    }

    fn help(&self) -> Option<&str> {
        match self {
            Self::Invalid { help, .. } => help.as_deref(),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        let kind = match self {
            Self::Invalid { .. } => "invalid",
            Self::Key(_) => "key",
            Self::Io { .. } | Self::Read(crate::bounded::ReadError::Io { .. }) => "io",
            Self::Read(_) => "too_large",
        };
        json!({ "kind": kind, "message": self.to_string(), "help": self.help() })
    }
}
