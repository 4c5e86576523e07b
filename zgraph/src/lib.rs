//! ZGraph manifests: parse, validate, normalize to a canonical [`Plan`], render.
//!
//! # The model
//!
//! A ZGraph manifest describes a directed acyclic graph. Its nodes are
//! **branes** (workloads); its edges are **typed events**: `from` emits events
//! of type `on`, `to` handles them. Each brane states two independent axes:
//!
//! - its placement **substrate** — `gaia` (operator nodes), `biome` (provider
//!   peers) or `habitat` (the tenant's own hardware);
//! - its **capability** profile — `standard` (WASI component) or `frontier`
//!   (microVM). Frontier never runs on habitat.
//!
//! plus how many `replicas`, which nodes may run it (`peers` glob, `hosts`),
//! its `image`, `config` and `limits`. Optional `[event.TYPE]` sections give a
//! JSON Schema for a payload type, and `[resolver.NAME]` sections expose an
//! HTTP brane on a public host name through a tunnel.
//!
//! One model, three syntaxes: TOML, JSON and YAML ([`Format`]) parse into the
//! same spanned tree, are validated by the same rules, and normalize to the
//! same [`Plan`] with the same [`PlanHash`]. The manifest reference is
//! `docs/src/manifest.md`.
//!
//! # Use
//!
//! ```
//! use omega_zgraph::{Format, load, render};
//!
//! let source = r#"
//! [brane.hello]
//! substrate = "habitat"
//! "#;
//! let plan = load(source, "hello.zgraph.toml", Format::Toml).expect("valid");
//! assert_eq!(plan.branes().len(), 1);
//! println!("{} {}", plan.hash(), render::text(&plan));
//! ```
//!
//! # Errors
//!
//! [`load`] reports every problem it can find at once, as [`Diagnostics`]:
//! a list of [`ManifestError`]s, each with a stable [`ErrorKind`] code, a
//! `file:line:col` location, a byte span and often a hint. `Diagnostics`
//! implements [`miette::Diagnostic`], so the CLI renders each error with a
//! snippet of the source.
//!
//! # Bounds
//!
//! Every size is bounded before it costs anything: the text
//! ([`bounds::MAX_MANIFEST_BYTES`], checked before parsing), nesting, every
//! key and name, and the number of branes, edges and other entries; the
//! numbers are in [`bounds`]. Text that reaches a person (messages, the
//! snippets of [`Diagnostics`]) has its control characters escaped.
//!
//! This crate does no I/O: the caller reads the file and passes its text (or
//! bytes, [`load_bytes`]) and name.

#![warn(missing_docs, unreachable_pub)]

pub mod bounds;
mod dag;
mod emit;
mod error;
mod names;
mod plan;
pub mod render;
mod syntax;
mod validate;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub use bounds::MAX_PEERS_GLOB;
pub use error::{Diagnostics, ErrorKind, ManifestError, escape_text};
pub use names::PeersGlob;
pub use plan::{
    Brane, Capability, DirGrant, Edge, EventType, Gpu, Grants, ImageRef, Limits, Plan, PlanHash,
    Replicas, Resolver, ResolverMode, Substrate,
};

/// The syntax a manifest is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// TOML 1.1 (`.toml`).
    Toml,
    /// JSON, strict RFC 8259 (`.json`).
    Json,
    /// YAML 1.2, one document, no aliases (`.yaml`, `.yml`).
    Yaml,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 3] = [Format::Toml, Format::Json, Format::Yaml];

    /// The format a path's extension names (`pipeline.zgraph.toml` → TOML).
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?;
        ext.to_ascii_lowercase().parse().ok()
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Toml => "toml",
            Format::Json => "json",
            Format::Yaml => "yaml",
        }
    }
}

impl FromStr for Format {
    type Err = String;

    /// `toml`, `json`, `yaml` or `yml`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "toml" => Ok(Format::Toml),
            "json" => Ok(Format::Json),
            "yaml" | "yml" => Ok(Format::Yaml),
            _ => Err(format!(
                "unknown manifest format `{s}` (expected toml, json or yaml)"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// Parse, validate and normalize a manifest.
///
/// `file_name` is used only in error locations. On failure every problem
/// found is returned at once, in source order. A text longer than
/// [`bounds::MAX_MANIFEST_BYTES`] is refused before it is parsed.
pub fn load(source: &str, file_name: &str, format: Format) -> Result<Plan, Diagnostics> {
    if source.len() > bounds::MAX_MANIFEST_BYTES {
        return Err(too_large(source, file_name));
    }
    load_unbounded(source, file_name, format)
}

/// [`load`] for bytes as read from a file: the size is checked first, then
/// the encoding (invalid UTF-8 is an [`ErrorKind::Syntax`] error at the
/// first bad byte, with its byte offset in the message).
pub fn load_bytes(source: &[u8], file_name: &str, format: Format) -> Result<Plan, Diagnostics> {
    if source.len() > bounds::MAX_MANIFEST_BYTES {
        let prefix = &source[..source.len().min(256)];
        return Err(too_large(&String::from_utf8_lossy(prefix), file_name));
    }
    match std::str::from_utf8(source) {
        Ok(text) => load_unbounded(text, file_name, format),
        Err(e) => {
            let at = e.valid_up_to();
            let text = String::from_utf8_lossy(source);
            let mut sink = error::Sink::default();
            sink.push_help(
                ErrorKind::Syntax,
                error::Span::new(at, at + '\u{fffd}'.len_utf8()),
                format!(
                    "the text is not valid UTF-8: byte {at} (0x{:02x}) does not belong here",
                    source[at]
                ),
                Some("manifests are UTF-8 text; re-encode the file"),
            );
            Err(sink.into_diagnostics(file_name, &text))
        }
    }
}

fn too_large(source: &str, file_name: &str) -> Diagnostics {
    let mut sink = error::Sink::default();
    sink.push_help(
        ErrorKind::TooLarge,
        error::Span::new(0, 0),
        format!(
            "the manifest is longer than {} bytes (1 MiB), the largest allowed",
            bounds::MAX_MANIFEST_BYTES
        ),
        Some("split it into several manifests"),
    );
    let first_line = source.lines().next().unwrap_or_default();
    sink.into_diagnostics(file_name, first_line)
}

/// [`load`] without the bound on the text's length (every other bound
/// holds): for a plan that is already in memory, whose text form may be
/// longer than the manifest it came from.
pub(crate) fn load_unbounded(
    source: &str,
    file_name: &str,
    format: Format,
) -> Result<Plan, Diagnostics> {
    let mut sink = error::Sink::default();
    let plan = syntax::parse(source, format, &mut sink)
        .filter(|_| sink.is_empty())
        .filter(|root| {
            bounds::check_counts(root, &mut sink);
            bounds::check_keys(root, &mut sink);
            sink.is_empty()
        })
        .and_then(|root| validate::validate(&root, &mut sink));
    match plan {
        Some(plan) if sink.is_empty() => Ok(plan),
        _ => Err(sink.into_diagnostics(file_name, source)),
    }
}

/// Write a plan as a manifest in `format`; same as [`Plan::to_format`].
pub fn to_format(plan: &Plan, format: Format) -> String {
    plan.to_format(format)
}
