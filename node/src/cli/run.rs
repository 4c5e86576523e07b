//! `omega run FILE.wasm --event TYPE=PAYLOAD`: one brane, one event, print
//! what it emitted. Also the shared helpers of the runtime verbs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use omega_runtime::{
    BraneSpec, DirGrant, Emitted, Event, EventError, Grants, LogSink, Runtime, RuntimeConfig,
};
use serde_json::json;

use super::output::{CliError, Output};

/// Arguments of `omega run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The component (`.wasm`) to run.
    pub file: PathBuf,
    /// The event to deliver, `TYPE=PAYLOAD` (payload as UTF-8 text).
    #[arg(long, value_name = "TYPE=PAYLOAD")]
    pub event: String,
    /// The event's routing key (`--key` is the global identity-key flag).
    #[arg(long = "event-key", default_value = "")]
    pub event_key: String,
    /// A config value the brane reads with `config(name)`, `NAME=VALUE`.
    #[arg(long = "config", value_name = "NAME=VALUE")]
    pub config: Vec<String>,
    /// Grant a directory, `HOST_DIR:GUEST_DIR[:rw]` (read-only without `:rw`).
    #[arg(long = "dir", value_name = "HOST:GUEST[:rw]")]
    pub dirs: Vec<String>,
    /// Allow outbound HTTP to this host (`name` or `name:port`).
    #[arg(long = "allow-http", value_name = "HOST")]
    pub allow_http: Vec<String>,
}

/// Split `A=B` at the first `=`.
pub(crate) fn split_pair<'a>(s: &'a str, what: &str) -> Result<(&'a str, &'a str), CliError> {
    s.split_once('=').ok_or_else(|| {
        CliError::invalid(
            format!("{what} {s:?} has no `=`"),
            format!("write it as {what}"),
        )
    })
}

/// Parse `HOST:GUEST[:rw]`.
pub(crate) fn parse_dir(s: &str) -> Result<DirGrant, CliError> {
    let (rest, writable) = match s.strip_suffix(":rw") {
        Some(r) => (r, true),
        None => (s.strip_suffix(":ro").unwrap_or(s), false),
    };
    let (host, guest) = rest.split_once(':').ok_or_else(|| {
        CliError::invalid(
            format!("bad directory grant {s:?}"),
            "write HOST_DIR:GUEST_DIR[:rw]",
        )
    })?;
    Ok(DirGrant {
        host: PathBuf::from(host),
        guest: guest.to_string(),
        writable,
    })
}

/// Read a component file (at most [`crate::bounded::COMPONENT`]).
pub(crate) fn read_wasm(path: &Path) -> Result<Vec<u8>, CliError> {
    Ok(crate::bounded::read(path, crate::bounded::COMPONENT)?)
}

/// Brane logs as `[brane] LEVEL message` on stderr.
pub(crate) fn stderr_logs() -> LogSink {
    Arc::new(|brane, level, msg| eprintln!("[{brane}] {level} {msg}"))
}

/// A runtime error for people.
pub(crate) fn rt_err(e: impl std::fmt::Display) -> CliError {
    CliError::plain(e.to_string())
}

/// An emitted event as JSON (payload as text when it is UTF-8).
pub(crate) fn emitted_json(e: &Emitted) -> serde_json::Value {
    json!({
        "type": e.ty,
        "key": e.key,
        "payload": String::from_utf8(e.payload.clone()).ok(),
        "payload_len": e.payload.len(),
    })
}

/// An emitted event as one line of text.
pub(crate) fn emitted_line(e: &Emitted) -> String {
    match std::str::from_utf8(&e.payload) {
        Ok(text) => format!("{} key={:?} {text:?}", e.ty, e.key),
        Err(_) => format!("{} key={:?} <{} bytes>", e.ty, e.key, e.payload.len()),
    }
}

/// Run `omega run`.
pub(super) fn run(args: &RunArgs, out: &Output) -> Result<ExitCode, CliError> {
    let (ty, payload) = split_pair(&args.event, "--event TYPE=PAYLOAD")?;
    let mut config = BTreeMap::new();
    for c in &args.config {
        let (k, v) = split_pair(c, "--config NAME=VALUE")?;
        config.insert(k.to_string(), v.to_string());
    }
    let grants = Grants {
        dirs: args
            .dirs
            .iter()
            .map(|d| parse_dir(d))
            .collect::<Result<_, _>>()?,
        http_hosts: args.allow_http.clone(),
        ..Grants::default()
    };
    let rt = Runtime::new(RuntimeConfig::default()).map_err(rt_err)?;
    let image = rt.load(&read_wasm(&args.file)?).map_err(rt_err)?;
    let name = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "brane".into());
    let spec = BraneSpec {
        name,
        config,
        grants,
        ..BraneSpec::default()
    };
    let brane = rt.brane(&image, spec, stderr_logs()).map_err(rt_err)?;
    let mut event = Event::external("run-1", ty, payload.as_bytes().to_vec());
    event.key = args.event_key.clone();
    match brane.handle(&event) {
        Ok(outcome) => {
            let mut text: Vec<String> = outcome.emitted.iter().map(emitted_line).collect();
            if text.is_empty() {
                text.push("(no events emitted)".into());
            }
            if outcome.refused > 0 {
                text.push(format!("{} emits refused by limits", outcome.refused));
            }
            out.print(
                text.join("\n"),
                json!({
                    "ok": true,
                    "image": image.hash().to_string(),
                    "emitted": outcome.emitted.iter().map(emitted_json).collect::<Vec<_>>(),
                    "refused": outcome.refused,
                }),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(event_err(&e)),
    }
}

/// An event failure for people.
pub(crate) fn event_err(e: &EventError) -> CliError {
    CliError::plain(format!("the brane failed: {e}"))
}
