//! Every bound on a manifest, in one place.
//!
//! A manifest comes from a user's file or, as a signed plan, from another
//! node of the mesh; either way its size must not decide how much memory or
//! time a node spends on it. The bounds, checked in this order:
//!
//! 1. the whole text: at most [`MAX_MANIFEST_BYTES`], checked before
//!    anything is parsed ([`crate::ErrorKind::TooLarge`]);
//! 2. nesting: at most [`MAX_DEPTH`] levels (a syntax error);
//! 3. before validation, on the whole tree: the number of branes
//!    ([`MAX_BRANES`]) and edges ([`MAX_EDGES`]) ([`crate::ErrorKind::TooMany`]),
//!    and every table key: at most [`MAX_KEY_BYTES`], no control characters
//!    ([`crate::ErrorKind::TooLong`], [`crate::ErrorKind::ControlCharacter`]);
//! 4. during validation, each named string its own length (brane names,
//!    event types, globs, host and node names, selectors, images, paths)
//!    ([`crate::ErrorKind::TooLong`]), and every other collection
//!    [`MAX_ENTRIES`] ([`crate::ErrorKind::TooMany`]).
//!
//! Free-form values (`config` and `env` values, strings inside an event
//! schema) have no bound of their own beyond the manifest's size.
//! The manifest reference (`docs/src/manifest.md`) lists the same numbers.

use crate::ErrorKind;
use crate::error::{Sink, Span, is_unsafe};
use crate::syntax::{Node, Value};

/// Largest manifest, in bytes (1 MiB). A parsed tree takes about twenty
/// times its text in memory, so this keeps a manifest's cost near 20 MiB.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// Deepest nesting of tables and arrays in JSON and YAML (TOML's parser
/// has its own, lower, bound).
pub const MAX_DEPTH: usize = 128;
/// Most branes in one manifest (the same as the most a node reports in its
/// status).
pub const MAX_BRANES: usize = 1024;
/// Most edges in one manifest.
pub const MAX_EDGES: usize = 4096;
/// Most entries in any other collection: `[event.*]` sections,
/// `[resolver.*]` sections, and a brane's `hosts`, `config`,
/// `grants.dirs`, `grants.env` and `grants.http`.
pub const MAX_ENTRIES: usize = 1024;
/// Longest table key, in bytes, of any table (names with a tighter bound
/// of their own, such as brane names, are checked against that too).
pub const MAX_KEY_BYTES: usize = 256;
/// Longest brane, mesh or resolver name.
pub const MAX_BRANE_NAME: usize = 63;
/// Longest event type.
pub const MAX_EVENT_TYPE: usize = 255;
/// Longest DNS name, node name (`hosts` entry) or resolver `host`.
pub const MAX_DNS_NAME: usize = 253;
/// Longest `grants.http` entry: a DNS name and `:PORT`.
pub const MAX_HTTP_GRANT: usize = MAX_DNS_NAME + ":65535".len();
/// Longest `grants.call` entry: `MANIFEST/BRANE`.
pub const MAX_CALL_GRANT: usize = 2 * MAX_BRANE_NAME + 1;
/// Longest `peers` glob, in bytes. Compiling a glob costs time and memory
/// that grow with its length (a glob of ~90,000 `*` makes the regex engine
/// give up), and a glob arrives from the mesh in signed records, so its
/// length is bounded before it is compiled.
pub const MAX_PEERS_GLOB: usize = 256;
/// Longest routing key selector (`key = ".meta.region"`).
pub const MAX_KEY_SELECTOR: usize = 255;
/// Longest `image` or `guest` reference (a 255-byte name, `:`, a 128-byte tag).
pub const MAX_IMAGE_REF: usize = 255 + 1 + 128;
/// Longest path in a directory grant (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;

/// Check the number of branes and of edges, before validation: with
/// entries cut off, every edge to a brane past the bound would be reported
/// as naming an unknown brane.
pub(crate) fn check_counts(root: &Node, sink: &mut Sink) {
    let Value::Table(top) = &root.value else {
        return;
    };
    let section = |name: &str| top.iter().find(|(k, _)| k.name == name).map(|(_, v)| v);
    if let Some(Value::Table(branes)) = section("brane").map(|n| &n.value)
        && let Some((first_over, _)) = branes.get(MAX_BRANES)
    {
        too_many(sink, first_over.span, branes.len(), "branes", MAX_BRANES);
    }
    if let Some(Value::Table(graph)) = section("graph").map(|n| &n.value)
        && let Some((_, edges)) = graph.iter().find(|(k, _)| k.name == "edges")
        && let Value::Array(edges) = &edges.value
        && let Some(first_over) = edges.get(MAX_EDGES)
    {
        too_many(sink, first_over.span, edges.len(), "edges", MAX_EDGES);
    }
}

/// Report a collection of `count` entries over its bound `max`, at the
/// first entry over.
pub(crate) fn too_many(sink: &mut Sink, at: Span, count: usize, what: &str, max: usize) {
    sink.push_help(
        ErrorKind::TooMany,
        at,
        format!("{count} {what}, the most allowed is {max}"),
        Some("split the manifest, or merge entries"),
    );
}

/// Check every key of the tree: bounded length, no control characters.
pub(crate) fn check_keys(node: &Node, sink: &mut Sink) {
    match &node.value {
        Value::Table(entries) => {
            for (key, value) in entries {
                if key.name.len() > MAX_KEY_BYTES {
                    sink.push_help(
                        ErrorKind::TooLong,
                        key.span,
                        format!(
                            "key `{}…` is {} bytes long, the longest allowed is {MAX_KEY_BYTES}",
                            prefix(&key.name, 32),
                            key.name.len()
                        ),
                        Some("keys name things; shorten it"),
                    );
                } else if let Some(c) = key.name.chars().find(|c| is_unsafe(*c)) {
                    sink.push_help(
                        ErrorKind::ControlCharacter,
                        key.span,
                        format!(
                            "key `{}` contains the control character U+{:04X}",
                            key.name, c as u32
                        ),
                        Some("names may not contain control characters"),
                    );
                }
                check_keys(value, sink);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| check_keys(v, sink)),
        _ => {}
    }
}

/// The first `chars` characters of `s`.
pub(crate) fn prefix(s: &str, chars: usize) -> &str {
    s.char_indices().nth(chars).map_or(s, |(i, _)| &s[..i])
}
