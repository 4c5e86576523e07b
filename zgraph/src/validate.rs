//! Validation and normalization: spanned tree in, [`Plan`] out.
//!
//! Every check reports to a [`Sink`] and carries on, so one run finds as
//! many problems as it can. A plan is returned only when nothing was found.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use crate::ErrorKind;
use crate::bounds::{
    MAX_BRANE_NAME, MAX_CALL_GRANT, MAX_DNS_NAME, MAX_ENTRIES, MAX_EVENT_TYPE, MAX_HTTP_GRANT,
    MAX_IMAGE_REF, MAX_KEY_SELECTOR, MAX_PATH, MAX_PEERS_GLOB,
};
use crate::error::{Sink, Span, is_unsafe};
use crate::names::{self, did_you_mean};
use crate::plan::{
    Brane, Capability, DirGrant, Edge, EventType, Gpu, Grants, Limits, Plan, Replicas, Resolver,
    ResolverMode, Substrate,
};
use crate::syntax::{Key, Node, Value};

type Entries = [(Key, Node)];

const TOP_KEYS: &[&str] = &["mesh", "brane", "graph", "event", "resolver"];
const MESH_KEYS: &[&str] = &["name"];
const BRANE_KEYS: &[&str] = &[
    "substrate",
    "capability",
    "replicas",
    "image",
    "peers",
    "hosts",
    "guest",
    "gpu",
    "http",
    "config",
    "limits",
    "grants",
];
const GRANT_KEYS: &[&str] = &["dirs", "env", "http", "clocks", "call"];
const DIR_KEYS: &[&str] = &["host", "guest", "mode"];
const LIMIT_KEYS: &[&str] = &["memory", "cpu_ms", "timeout_ms"];
const GRAPH_KEYS: &[&str] = &["edges"];
/// Largest `max_attempts` an edge may declare.
const MAX_ATTEMPTS_LIMIT: i64 = 1000;
const EDGE_KEYS: &[&str] = &["from", "to", "on", "key", "ordered", "max_attempts"];
const EVENT_KEYS: &[&str] = &["schema"];
const RESOLVER_KEYS: &[&str] = &["host", "mode", "brane"];

/// Validate the tree and build the plan (only if no error was reported).
pub(crate) fn validate(root: &Node, sink: &mut Sink) -> Option<Plan> {
    let top = table(root, "the manifest", sink)?;
    check_keys(top, TOP_KEYS, "at the top level", sink);

    let mesh = get(top, "mesh").and_then(|(_, n)| mesh(n, sink));
    let branes = match get(top, "brane") {
        Some((key, node)) => branes(key, node, sink),
        None => {
            sink.push_help(
                ErrorKind::NoBranes,
                Span::new(0, 0),
                "the manifest declares no brane",
                Some("add at least one `[brane.NAME]` table with a `substrate`"),
            );
            BTreeMap::new()
        }
    };
    let edges = get(top, "graph")
        .map(|(_, n)| graph(n, &branes, sink))
        .unwrap_or_default();
    let events = get(top, "event")
        .map(|(_, n)| events(n, &edges, sink))
        .unwrap_or_default();
    let resolvers = get(top, "resolver")
        .map(|(_, n)| resolvers(n, &branes, sink))
        .unwrap_or_default();
    check_calls(top, &branes, sink);

    if !sink.is_empty() {
        return None;
    }
    let mut edges: Vec<Edge> = edges;
    edges.sort();
    Some(Plan {
        mesh,
        branes,
        edges,
        events,
        resolvers,
    })
}

// ---------------------------------------------------------------- helpers

fn get<'a>(entries: &'a Entries, name: &str) -> Option<(&'a Key, &'a Node)> {
    entries
        .iter()
        .find(|(k, _)| k.name == name)
        .map(|(k, v)| (k, v))
}

fn wrong_type(node: &Node, expected: &str, what: &str, sink: &mut Sink) {
    sink.push(
        ErrorKind::WrongType,
        node.span,
        format!(
            "{what}: expected {expected}, found {}",
            node.value.type_name()
        ),
    );
}

fn table<'a>(node: &'a Node, what: &str, sink: &mut Sink) -> Option<&'a Entries> {
    match &node.value {
        Value::Table(entries) => Some(entries),
        _ => {
            wrong_type(node, "a table", what, sink);
            None
        }
    }
}

fn string<'a>(node: &'a Node, what: &str, sink: &mut Sink) -> Option<&'a str> {
    match &node.value {
        Value::Str(s) => Some(s),
        _ => {
            wrong_type(node, "a string", what, sink);
            None
        }
    }
}

/// A string of at most `max` bytes; a longer one is a [`ErrorKind::TooLong`]
/// error (and `None`), so no later message quotes it.
fn bounded<'a>(node: &'a Node, what: &str, max: usize, sink: &mut Sink) -> Option<&'a str> {
    let s = string(node, what, sink)?;
    fits(s, node.span, what, max, sink).then_some(s)
}

/// Whether a key or string is at most `max` bytes; reports it if not.
fn fits(s: &str, at: Span, what: &str, max: usize, sink: &mut Sink) -> bool {
    if s.len() <= max {
        return true;
    }
    sink.push_help(
        ErrorKind::TooLong,
        at,
        format!(
            "{what} is {} bytes long, the longest allowed is {max}",
            s.len()
        ),
        Some("the manifest reference lists every bound"),
    );
    false
}

/// The first `max` items; any more is a [`ErrorKind::TooMany`] error at
/// the first one over, and the rest are not looked at.
fn capped<'a, T>(
    items: &'a [T],
    max: usize,
    what: &str,
    span: impl Fn(&T) -> Span,
    sink: &mut Sink,
) -> &'a [T] {
    match items.get(max) {
        None => items,
        Some(first_over) => {
            crate::bounds::too_many(sink, span(first_over), items.len(), what, max);
            &items[..max]
        }
    }
}

/// Refuses control characters in a name or path.
fn no_controls(s: &str, at: Span, what: &str, sink: &mut Sink) -> bool {
    let Some(c) = s.chars().find(|c| is_unsafe(*c)) else {
        return true;
    };
    sink.push_help(
        ErrorKind::ControlCharacter,
        at,
        format!(
            "{what} `{s}` contains the control character U+{:04X}",
            u32::from(c)
        ),
        Some("names, globs and paths may not contain control characters"),
    );
    false
}

fn check_keys(entries: &Entries, allowed: &[&str], context: &str, sink: &mut Sink) {
    for (key, _) in entries {
        if !allowed.contains(&key.name.as_str()) {
            let list = allowed
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let help = did_you_mean(&key.name, allowed.iter().copied())
                .unwrap_or_else(|| format!("allowed keys here: {list}"));
            sink.push_help(
                ErrorKind::UnknownKey,
                key.span,
                format!("unknown key `{}` {context}", key.name),
                Some(help),
            );
        }
    }
}

fn missing(key: &str, at: Span, what: &str, sink: &mut Sink, help: &str) {
    sink.push_help(
        ErrorKind::MissingKey,
        at,
        format!("{what} has no `{key}`"),
        Some(help),
    );
}

/// A string keyword (`substrate`, `gpu`, …) parsed into its enum.
fn keyword<T: FromStr>(
    node: &Node,
    kind: ErrorKind,
    noun: &str,
    names: &[&str],
    sink: &mut Sink,
) -> Option<T> {
    let s = string(node, noun, sink)?;
    match s.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            let list = names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let help = match did_you_mean(s, names.iter().copied()) {
                Some(d) => format!("{d} allowed values: {list}"),
                None => format!("allowed values: {list}"),
            };
            sink.push_help(kind, node.span, format!("unknown {noun} `{s}`"), Some(help));
            None
        }
    }
}

// ---------------------------------------------------------------- sections

fn mesh(node: &Node, sink: &mut Sink) -> Option<String> {
    let entries = table(node, "`mesh`", sink)?;
    check_keys(entries, MESH_KEYS, "in `[mesh]`", sink);
    let (_, name) = get(entries, "name")?;
    let name = bounded(name, "`mesh.name`", MAX_BRANE_NAME, sink).map(|s| (s, name.span))?;
    if let Err(reason) = names::check_brane_name(name.0) {
        sink.push_help(
            ErrorKind::InvalidName,
            name.1,
            format!("invalid mesh name `{}`: {reason}", name.0),
            Some("names match `[a-z][a-z0-9-]{0,62}`"),
        );
    }
    Some(name.0.to_owned())
}

fn branes(key: &Key, node: &Node, sink: &mut Sink) -> BTreeMap<String, Brane> {
    let mut out = BTreeMap::new();
    let Some(entries) = table(node, "`brane`", sink) else {
        return out;
    };
    if entries.is_empty() {
        sink.push_help(
            ErrorKind::NoBranes,
            key.span,
            "the manifest declares no brane",
            Some("add at least one `[brane.NAME]` table with a `substrate`"),
        );
    }
    for (name, body) in entries {
        if !fits(&name.name, name.span, "a brane name", MAX_BRANE_NAME, sink) {
            continue;
        }
        if let Err(reason) = names::check_brane_name(&name.name) {
            sink.push_help(
                ErrorKind::InvalidBraneName,
                name.span,
                format!("invalid brane name `{}`: {reason}", name.name),
                Some("brane names match `[a-z][a-z0-9-]{0,62}`"),
            );
        }
        out.insert(name.name.clone(), brane(name, body, sink));
    }
    out
}

fn brane(name: &Key, node: &Node, sink: &mut Sink) -> Brane {
    let mut b = Brane {
        substrate: Substrate::Gaia,
        capability: Capability::default(),
        replicas: Replicas::default(),
        image: None,
        peers: None,
        hosts: Vec::new(),
        guest: None,
        gpu: Gpu::default(),
        http: false,
        config: BTreeMap::new(),
        limits: Limits::default(),
        grants: Grants::default(),
    };
    let what = format!("brane `{}`", name.name);
    let Some(entries) = table(node, &what, sink) else {
        return b;
    };
    check_keys(entries, BRANE_KEYS, &format!("in {what}"), sink);

    let substrate = match get(entries, "substrate") {
        Some((_, n)) => keyword::<Substrate>(
            n,
            ErrorKind::UnknownSubstrate,
            "substrate",
            Substrate::NAMES,
            sink,
        ),
        None => {
            missing(
                "substrate",
                name.span,
                &what,
                sink,
                "add `substrate = \"gaia\"` (or `biome`, `habitat`)",
            );
            None
        }
    };
    b.substrate = substrate.unwrap_or(Substrate::Gaia);
    let capability = get(entries, "capability").map(|(_, n)| {
        let c = keyword::<Capability>(
            n,
            ErrorKind::UnknownCapability,
            "capability",
            Capability::NAMES,
            sink,
        );
        (c, n.span)
    });
    if let Some((Some(c), _)) = capability {
        b.capability = c;
    }
    if let (Some(Substrate::Habitat), Some((Some(Capability::Frontier), at))) =
        (substrate, capability)
    {
        sink.push_help(
            ErrorKind::FrontierOnHabitat,
            at,
            format!("{what}: frontier never runs on habitat"),
            Some("use `capability = \"standard\"`, or move the brane to `gaia` or `biome`"),
        );
    }
    if let Some((_, n)) = get(entries, "replicas") {
        b.replicas = replicas(n, sink).unwrap_or_default();
    }
    if let Some((_, n)) = get(entries, "image")
        && let Some(s) = bounded(n, "`image`", MAX_IMAGE_REF, sink)
    {
        match names::parse_image(s) {
            Ok(img) => b.image = Some(img),
            Err(reason) => sink.push(
                ErrorKind::InvalidImage,
                n.span,
                format!("invalid image `{s}`: {reason}"),
            ),
        }
    }
    let glob = get(entries, "peers").and_then(|(_, n)| {
        let s = bounded(n, "`peers`", MAX_PEERS_GLOB, sink)?;
        if !no_controls(s, n.span, "`peers` glob", sink) {
            return None;
        }
        b.peers = Some(s.to_owned());
        match names::compile_glob(s) {
            Ok(g) => Some(g),
            Err(reason) => {
                sink.push(
                    ErrorKind::InvalidGlob,
                    n.span,
                    format!("invalid `peers` glob `{s}`: {reason}"),
                );
                None
            }
        }
    });
    if let Some((_, n)) = get(entries, "hosts") {
        b.hosts = hosts(n, glob.as_ref(), b.peers.as_deref(), sink);
    }
    let frontier = b.capability == Capability::Frontier;
    if let Some((key, n)) = get(entries, "guest")
        && let Some(s) = bounded(n, "`guest`", MAX_IMAGE_REF, sink)
    {
        if let Err(reason) = names::parse_image(&format!("{s}:latest")) {
            sink.push(
                ErrorKind::InvalidImage,
                n.span,
                format!("invalid guest image `{s}`: {reason}"),
            );
        }
        b.guest = Some(s.to_owned());
        if !frontier {
            frontier_only(key.span, &what, "`guest`", sink);
        }
    }
    if let Some((_, n)) = get(entries, "gpu")
        && let Some(g) = keyword::<Gpu>(n, ErrorKind::UnknownGpu, "gpu", Gpu::NAMES, sink)
    {
        b.gpu = g;
        if g == Gpu::Passthrough && !frontier {
            frontier_only(n.span, &what, "`gpu = \"passthrough\"`", sink);
        }
    }
    if let Some((_, n)) = get(entries, "http") {
        match n.value {
            Value::Bool(v) => b.http = v,
            _ => wrong_type(n, "a boolean", "`http`", sink),
        }
    }
    if let Some((_, n)) = get(entries, "config") {
        b.config = config(n, sink);
    }
    if let Some((_, n)) = get(entries, "limits") {
        b.limits = limits(n, sink);
    }
    if let Some((_, n)) = get(entries, "grants") {
        b.grants = grants(n, sink);
    }
    b
}

fn frontier_only(at: Span, what: &str, item: &str, sink: &mut Sink) {
    sink.push_help(
        ErrorKind::FrontierOnly,
        at,
        format!("{what}: {item} needs `capability = \"frontier\"`"),
        Some("guest images and GPU passthrough exist only in frontier microVMs"),
    );
}

fn replicas(node: &Node, sink: &mut Sink) -> Option<Replicas> {
    let out_of_range = |sink: &mut Sink, shown: &str| {
        sink.push_help(
            ErrorKind::ReplicasOutOfRange,
            node.span,
            format!("replicas {shown} is out of range"),
            Some("use an integer from 0 to 1024, or \"auto\" for every eligible node"),
        );
    };
    match &node.value {
        Value::Int(n) => match u16::try_from(*n) {
            Ok(n) if n <= Replicas::MAX => Some(Replicas::Count(n)),
            _ => {
                out_of_range(sink, &n.to_string());
                None
            }
        },
        Value::BigInt(written) => {
            out_of_range(sink, written);
            None
        }
        Value::Str(s) if s == "auto" => Some(Replicas::Auto),
        Value::Str(s) => {
            let shown: String = crate::bounds::prefix(s, 32).to_owned();
            let ellipsis = if shown.len() < s.len() { "…" } else { "" };
            sink.push_help(
                ErrorKind::WrongType,
                node.span,
                format!(
                    "`replicas`: expected an integer or \"auto\", found the string `{shown}{ellipsis}`"
                ),
                Some(
                    did_you_mean(s, ["auto"])
                        .map(|d| format!("{d} (or an integer from 0 to 1024)"))
                        .unwrap_or_else(|| {
                            "use an integer from 0 to 1024 (unquoted), or \"auto\" for every eligible node".to_owned()
                        }),
                ),
            );
            None
        }
        _ => {
            wrong_type(node, "an integer or \"auto\"", "`replicas`", sink);
            None
        }
    }
}

fn hosts(
    node: &Node,
    glob: Option<&globset::GlobMatcher>,
    peers: Option<&str>,
    sink: &mut Sink,
) -> Vec<String> {
    let Value::Array(items) = &node.value else {
        wrong_type(node, "an array of node names", "`hosts`", sink);
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    for item in capped(items, MAX_ENTRIES, "`hosts` entries", |n| n.span, sink) {
        let Some(h) = bounded(item, "a `hosts` entry", MAX_DNS_NAME, sink) else {
            continue;
        };
        if let Err(reason) = names::check_node_name(h) {
            sink.push_help(
                ErrorKind::InvalidNodeName,
                item.span,
                format!("invalid node name `{h}`: {reason}"),
                Some("node names are a DNS name, optionally prefixed by a DNS name and `/` (`lab.lan/nas-01`)"),
            );
        } else if let (Some(g), Some(p)) = (glob, peers)
            && !g.is_match(h)
        {
            sink.push_help(
                ErrorKind::HostsPeersConflict,
                item.span,
                format!("host `{h}` does not match the `peers` glob `{p}`"),
                Some(
                    "a brane runs only on nodes that match both; drop one of them or fix the name",
                ),
            );
        }
        out.insert(h.to_owned());
    }
    out.into_iter().collect()
}

fn config(node: &Node, sink: &mut Sink) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(entries) = table(node, "`config`", sink) else {
        return out;
    };
    for (k, v) in capped(
        entries,
        MAX_ENTRIES,
        "`config` entries",
        |(k, _)| k.span,
        sink,
    ) {
        if let Some(s) = string(v, &format!("config `{}`", k.name), sink) {
            out.insert(k.name.clone(), s.to_owned());
        }
    }
    out
}

fn limits(node: &Node, sink: &mut Sink) -> Limits {
    let mut out = Limits::default();
    let Some(entries) = table(node, "`limits`", sink) else {
        return out;
    };
    check_keys(entries, LIMIT_KEYS, "in `limits`", sink);
    if let Some((_, n)) = get(entries, "memory") {
        out.memory_bytes = match &n.value {
            Value::Str(s) => match names::parse_size(s) {
                Ok(b) => Some(b),
                Err(reason) => {
                    sink.push(
                        ErrorKind::InvalidLimit,
                        n.span,
                        format!("invalid memory limit: {reason}"),
                    );
                    None
                }
            },
            Value::Int(_) | Value::BigInt(_) => positive(n, "memory", sink),
            _ => {
                wrong_type(
                    n,
                    "a size like \"128MiB\" or a byte count",
                    "`memory`",
                    sink,
                );
                None
            }
        };
    }
    for (field, slot) in [
        ("cpu_ms", &mut out.cpu_ms),
        ("timeout_ms", &mut out.timeout_ms),
    ] {
        if let Some((_, n)) = get(entries, field) {
            *slot = match n.value {
                Value::Int(_) | Value::BigInt(_) => positive(n, field, sink),
                _ => {
                    wrong_type(n, "an integer (milliseconds)", &format!("`{field}`"), sink);
                    None
                }
            };
        }
    }
    out
}

fn positive(node: &Node, field: &str, sink: &mut Sink) -> Option<u64> {
    match node.value {
        Value::Int(n) if n > 0 => u64::try_from(n).ok(),
        Value::Int(n) => {
            sink.push(
                ErrorKind::InvalidLimit,
                node.span,
                format!("invalid `{field}` limit {n}: it must be at least 1"),
            );
            None
        }
        Value::BigInt(ref written) => {
            sink.push(
                ErrorKind::InvalidLimit,
                node.span,
                format!(
                    "invalid `{field}` limit {written}: it must be at most {}",
                    i64::MAX
                ),
            );
            None
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- grants

fn grants(node: &Node, sink: &mut Sink) -> Grants {
    let mut out = Grants::default();
    let Some(entries) = table(node, "`grants`", sink) else {
        return out;
    };
    check_keys(entries, GRANT_KEYS, "in `grants`", sink);
    if let Some((_, n)) = get(entries, "dirs") {
        match &n.value {
            Value::Array(items) => {
                let mut guests = BTreeSet::new();
                for item in capped(items, MAX_ENTRIES, "directory grants", |n| n.span, sink) {
                    if let Some(d) = dir_grant(item, sink) {
                        if guests.insert(d.guest.clone()) {
                            out.dirs.push(d);
                        } else {
                            sink.push(
                                ErrorKind::InvalidGrant,
                                item.span,
                                format!("guest path `{}` is granted twice", d.guest),
                            );
                        }
                    }
                }
            }
            _ => wrong_type(n, "an array of directory grants", "`grants.dirs`", sink),
        }
    }
    if let Some((_, n)) = get(entries, "env")
        && let Some(vars) = table(n, "`grants.env`", sink)
    {
        for (k, v) in capped(
            vars,
            MAX_ENTRIES,
            "`grants.env` entries",
            |(k, _)| k.span,
            sink,
        ) {
            if k.name.is_empty() || k.name.contains(['=', '\0']) {
                sink.push_help(
                    ErrorKind::InvalidGrant,
                    k.span,
                    format!("invalid environment variable name `{}`", k.name),
                    Some("names are non-empty and contain no `=` or NUL"),
                );
            }
            if let Some(s) = string(v, &format!("env `{}`", k.name), sink) {
                out.env.insert(k.name.clone(), s.to_owned());
            }
        }
    }
    if let Some((_, n)) = get(entries, "http") {
        match &n.value {
            Value::Array(items) => {
                let mut hosts = BTreeSet::new();
                for item in capped(
                    items,
                    MAX_ENTRIES,
                    "`grants.http` entries",
                    |n| n.span,
                    sink,
                ) {
                    let Some(h) = bounded(item, "a `grants.http` entry", MAX_HTTP_GRANT, sink)
                    else {
                        continue;
                    };
                    if let Err(reason) = check_http_host(h) {
                        sink.push_help(
                            ErrorKind::InvalidGrant,
                            item.span,
                            format!("invalid HTTP host `{h}`: {reason}"),
                            Some("write a host name or IP address, optionally with `:PORT` (`api.example.com`, `127.0.0.1:8080`)"),
                        );
                    }
                    hosts.insert(h.to_owned());
                }
                out.http = hosts.into_iter().collect();
            }
            _ => wrong_type(n, "an array of hosts", "`grants.http`", sink),
        }
    }
    if let Some((_, n)) = get(entries, "clocks") {
        match n.value {
            Value::Bool(v) => out.clocks = v,
            _ => wrong_type(n, "a boolean", "`grants.clocks`", sink),
        }
    }
    if let Some((_, n)) = get(entries, "call") {
        match &n.value {
            Value::Array(items) => {
                let mut targets = BTreeSet::new();
                for item in capped(
                    items,
                    MAX_ENTRIES,
                    "`grants.call` entries",
                    |n| n.span,
                    sink,
                ) {
                    let Some(t) = bounded(item, "a `grants.call` entry", MAX_CALL_GRANT, sink)
                    else {
                        continue;
                    };
                    let checked = match t.split_once('/') {
                        Some((m, b)) => names::check_brane_name(m)
                            .map_err(|r| format!("manifest name `{m}`: {r}"))
                            .and_then(|()| {
                                names::check_brane_name(b)
                                    .map_err(|r| format!("brane name `{b}`: {r}"))
                            }),
                        None => names::check_brane_name(t),
                    };
                    if let Err(reason) = checked {
                        sink.push_help(
                            ErrorKind::InvalidGrant,
                            item.span,
                            format!("invalid `grants.call` entry `{t}`: {reason}"),
                            Some("name a brane of this manifest (`api`) or of another one (`MANIFEST/BRANE`)"),
                        );
                    }
                    targets.insert(t.to_owned());
                }
                out.call = targets.into_iter().collect();
            }
            _ => wrong_type(n, "an array of brane names", "`grants.call`", sink),
        }
    }
    out
}

/// Each `grants.call` entry naming a brane of this manifest names one that
/// is declared and serves HTTP (a second walk, for the entries' spans).
fn check_calls(top: &[(Key, Node)], branes: &BTreeMap<String, Brane>, sink: &mut Sink) {
    let Some((
        _,
        Node {
            value: Value::Table(all),
            ..
        },
    )) = get(top, "brane")
    else {
        return;
    };
    for (_, body) in all {
        let Node {
            value: Value::Table(entries),
            ..
        } = body
        else {
            continue;
        };
        let Some((
            _,
            Node {
                value: Value::Table(grants),
                ..
            },
        )) = get(entries, "grants")
        else {
            continue;
        };
        let Some((
            _,
            Node {
                value: Value::Array(items),
                ..
            },
        )) = get(grants, "call")
        else {
            continue;
        };
        for item in items.iter().take(MAX_ENTRIES) {
            let Value::Str(target) = &item.value else {
                continue;
            };
            if target.contains('/') || names::check_brane_name(target).is_err() {
                continue;
            }
            match branes.get(target.as_str()) {
                None => sink.push_help(
                    ErrorKind::InvalidGrant,
                    item.span,
                    format!("`grants.call` names unknown brane `{target}`"),
                    did_you_mean(target, branes.keys().map(String::as_str)),
                ),
                Some(b) if !b.http => sink.push_help(
                    ErrorKind::InvalidGrant,
                    item.span,
                    format!("`grants.call` names brane `{target}`, which does not serve HTTP"),
                    Some(format!("set `http = true` on brane `{target}`")),
                ),
                Some(_) => {}
            }
        }
    }
}

fn dir_grant(node: &Node, sink: &mut Sink) -> Option<DirGrant> {
    let entries = table(node, "a directory grant", sink)?;
    check_keys(entries, DIR_KEYS, "in a directory grant", sink);
    let path = |name: &str, sink: &mut Sink| -> Option<String> {
        let Some((_, n)) = get(entries, name) else {
            missing(
                name,
                node.span,
                "this directory grant",
                sink,
                "a directory grant is `{ host = \"/srv/data\", guest = \"/data\", mode = \"ro\" }`",
            );
            return None;
        };
        let what = format!("directory grant `{name}`");
        let s = bounded(n, &what, MAX_PATH, sink)?;
        if !no_controls(s, n.span, &what, sink) {
            return None;
        }
        if !std::path::Path::new(s).is_absolute() || !s.starts_with('/') {
            sink.push_help(
                ErrorKind::InvalidGrant,
                n.span,
                format!("directory grant `{name}` `{s}` is not an absolute path"),
                Some("write an absolute path starting with `/`"),
            );
            return None;
        }
        Some(s.to_owned())
    };
    let host = path("host", sink);
    let guest = path("guest", sink);
    let writable = match get(entries, "mode") {
        None => Some(false),
        Some((_, n)) => match string(n, "directory grant `mode`", sink)? {
            "ro" => Some(false),
            "rw" => Some(true),
            other => {
                sink.push_help(
                    ErrorKind::InvalidGrant,
                    n.span,
                    format!("unknown directory grant mode `{other}`"),
                    Some("allowed values: `ro` (read-only, the default), `rw` (read-write)"),
                );
                None
            }
        },
    };
    Some(DirGrant {
        host: host?,
        guest: guest?,
        writable: writable?,
    })
}

/// `host` or `host:port`, where host is a DNS name, an IPv4 address or a
/// bracketed IPv6 address.
fn check_http_host(s: &str) -> Result<(), String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
        _ => (s, None),
    };
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with(['+', '0']) => {}
            _ => return Err(format!("`{p}` is not a port (1 to 65535)")),
        }
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("`{v6}` is not an IPv6 address"));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    names::check_dns_name(host)
}

// ---------------------------------------------------------------- graph

fn graph(node: &Node, branes: &BTreeMap<String, Brane>, sink: &mut Sink) -> Vec<Edge> {
    let Some(entries) = table(node, "`graph`", sink) else {
        return Vec::new();
    };
    check_keys(entries, GRAPH_KEYS, "in `[graph]`", sink);
    let Some((_, list)) = get(entries, "edges") else {
        return Vec::new();
    };
    let Value::Array(items) = &list.value else {
        wrong_type(list, "an array of edges", "`graph.edges`", sink);
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let index: HashMap<&str, usize> = branes
        .keys()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    let names: Vec<&str> = branes.keys().map(String::as_str).collect();
    // Edges between distinct branes, as brane indices, and where each is.
    let mut links = Vec::new();
    let mut spans = Vec::new();
    for item in items {
        let Some(edge) = edge(item, branes, sink) else {
            continue;
        };
        let at = item.span;
        if edge.from == edge.to {
            sink.push(
                ErrorKind::SelfEdge,
                at,
                format!("edge from `{}` to itself on `{}`", edge.from, edge.on),
            );
        } else if !seen.insert((edge.from.clone(), edge.to.clone(), edge.on.clone())) {
            sink.push(
                ErrorKind::DuplicateEdge,
                at,
                format!(
                    "duplicate edge `{}` --{}--> `{}`",
                    edge.from, edge.on, edge.to
                ),
            );
        } else if let (Some(&from), Some(&to)) =
            (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
        {
            links.push((from, to));
            spans.push(at);
        }
        out.push(edge);
    }
    let (cycles, _) = crate::dag::cycles(names.len(), &links);
    for cycle in cycles {
        let mut path: Vec<&str> = cycle.path.iter().map(|&i| names[i]).collect();
        path.push(path[0]);
        sink.push_help(
            ErrorKind::Cycle,
            spans[cycle.edge],
            format!("edges form a cycle: {}", shorten_path(&path)),
            Some("a ZGraph is a DAG; remove or reverse one edge of the cycle"),
        );
    }
    out
}

/// A cycle for a message: at most 16 names, the middle elided.
fn shorten_path(path: &[&str]) -> String {
    const SHOWN: usize = 16;
    if path.len() <= SHOWN {
        return path.join(" -> ");
    }
    let (head, tail) = (&path[..SHOWN / 2], &path[path.len() - SHOWN / 2..]);
    format!(
        "{} -> … ({} more) … -> {}",
        head.join(" -> "),
        path.len() - SHOWN,
        tail.join(" -> ")
    )
}

fn edge(node: &Node, branes: &BTreeMap<String, Brane>, sink: &mut Sink) -> Option<Edge> {
    let entries = table(node, "an edge", sink)?;
    check_keys(entries, EDGE_KEYS, "in an edge", sink);
    let mut ok = true;
    let field = |name: &str, sink: &mut Sink| -> Option<(String, Span)> {
        match get(entries, name) {
            Some((_, n)) => {
                let max = if name == "on" {
                    MAX_EVENT_TYPE
                } else {
                    MAX_BRANE_NAME
                };
                bounded(n, &format!("edge `{name}`"), max, sink).map(|s| (s.to_owned(), n.span))
            }
            None => {
                missing(
                    name,
                    node.span,
                    "this edge",
                    sink,
                    "an edge is `{ from = \"a\", to = \"b\", on = \"event.type\" }`",
                );
                None
            }
        }
    };
    let from = field("from", sink);
    let to = field("to", sink);
    let on = field("on", sink);
    for (name, at) in [&from, &to].into_iter().flatten() {
        if !branes.contains_key(name) {
            ok = false;
            sink.push_help(
                ErrorKind::UnknownBrane,
                *at,
                format!("edge names unknown brane `{name}`"),
                did_you_mean(name, branes.keys().map(String::as_str)),
            );
        }
    }
    if let Some((on, at)) = &on
        && let Err(reason) = names::check_event_type(on)
    {
        sink.push(
            ErrorKind::InvalidEventType,
            *at,
            format!("invalid event type `{on}`: {reason}"),
        );
    }
    let key = match get(entries, "key") {
        Some((_, n)) => match bounded(n, "edge `key`", MAX_KEY_SELECTOR, sink) {
            Some(k) => {
                if let Err(reason) = names::check_key_selector(k) {
                    sink.push(
                        ErrorKind::InvalidKeySelector,
                        n.span,
                        format!("invalid routing key `{k}`: {reason}"),
                    );
                }
                Some(k.to_owned())
            }
            None => None,
        },
        None => None,
    };
    let mut ordered = false;
    if let Some((_, n)) = get(entries, "ordered") {
        match n.value {
            Value::Bool(v) => ordered = v,
            _ => wrong_type(n, "a boolean", "edge `ordered`", sink),
        }
    }
    let max_attempts = get(entries, "max_attempts").and_then(|(_, n)| {
        let written = match &n.value {
            Value::Int(v) if (1..=MAX_ATTEMPTS_LIMIT).contains(v) => return u32::try_from(*v).ok(),
            Value::Int(v) => v.to_string(),
            Value::BigInt(w) => w.clone(),
            _ => {
                wrong_type(n, "an integer", "edge `max_attempts`", sink);
                return None;
            }
        };
        sink.push(
            ErrorKind::InvalidLimit,
            n.span,
            format!(
                "invalid edge `max_attempts` {written}: it must be between 1 and {MAX_ATTEMPTS_LIMIT}"
            ),
        );
        None
    });
    let (from, to, on) = (from?, to?, on?);
    ok.then_some(Edge {
        from: from.0,
        to: to.0,
        on: on.0,
        key,
        ordered,
        max_attempts,
    })
}

// ---------------------------------------------------------------- events

fn events(node: &Node, edges: &[Edge], sink: &mut Sink) -> BTreeMap<String, EventType> {
    let mut out = BTreeMap::new();
    let Some(entries) = table(node, "`event`", sink) else {
        return out;
    };
    let carried: HashSet<&str> = edges.iter().map(|e| e.on.as_str()).collect();
    for (key, body) in capped(
        entries,
        MAX_ENTRIES,
        "event sections",
        |(k, _)| k.span,
        sink,
    ) {
        if !fits(&key.name, key.span, "an event type", MAX_EVENT_TYPE, sink) {
            continue;
        }
        if let Err(reason) = names::check_event_type(&key.name) {
            sink.push(
                ErrorKind::InvalidEventType,
                key.span,
                format!("invalid event type `{}`: {reason}", key.name),
            );
        } else if !carried.contains(key.name.as_str()) {
            sink.push_help(
                ErrorKind::EventWithoutProducer,
                key.span,
                format!(
                    "event type `{}` is declared but no edge carries it",
                    key.name
                ),
                did_you_mean(&key.name, carried.iter().copied()).or(Some(
                    "add an edge with `on = \"…\"` for it, or remove the section".into(),
                )),
            );
        }
        let what = format!("event `{}`", key.name);
        let Some(fields) = table(body, &what, sink) else {
            continue;
        };
        check_keys(fields, EVENT_KEYS, &format!("in {what}"), sink);
        let schema = get(fields, "schema").and_then(|(_, s)| {
            if !matches!(s.value, Value::Table(_)) {
                sink.push(
                    ErrorKind::SchemaNotObject,
                    s.span,
                    format!(
                        "the schema of {what} must be an object, found {}",
                        s.value.type_name()
                    ),
                );
                return None;
            }
            to_json(s, sink)
        });
        out.insert(key.name.clone(), EventType { schema });
    }
    out
}

/// Convert a schema subtree to JSON; null, date-times and non-finite floats
/// have no equivalent in all three syntaxes and are refused.
fn to_json(node: &Node, sink: &mut Sink) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match &node.value {
        Value::Table(entries) => {
            let sorted: BTreeMap<&str, &Node> =
                entries.iter().map(|(k, v)| (k.name.as_str(), v)).collect();
            let mut map = serde_json::Map::new();
            for (k, v) in sorted {
                if let Some(j) = to_json(v, sink) {
                    map.insert(k.to_owned(), j);
                }
            }
            J::Object(map)
        }
        Value::Array(items) => J::Array(items.iter().filter_map(|v| to_json(v, sink)).collect()),
        Value::Str(s) => J::String(s.clone()),
        Value::Int(n) => J::from(*n),
        Value::BigInt(written) => match written.parse::<u64>() {
            Ok(n) => J::from(n),
            Err(_) => {
                wrong_type(
                    node,
                    "an integer that fits in 64 bits",
                    "schema value",
                    sink,
                );
                return None;
            }
        },
        Value::Bool(b) => J::Bool(*b),
        Value::Float(f) if f.is_finite() => J::from(*f),
        Value::Float(_) | Value::Null | Value::Datetime => {
            wrong_type(
                node,
                "a string, number, boolean, array or table",
                "schema value",
                sink,
            );
            return None;
        }
    })
}

// ---------------------------------------------------------------- resolvers

fn resolvers(
    node: &Node,
    branes: &BTreeMap<String, Brane>,
    sink: &mut Sink,
) -> BTreeMap<String, Resolver> {
    let mut out = BTreeMap::new();
    let Some(entries) = table(node, "`resolver`", sink) else {
        return out;
    };
    let http: Vec<&str> = branes
        .iter()
        .filter(|(_, b)| b.http)
        .map(|(n, _)| n.as_str())
        .collect();
    for (key, body) in capped(entries, MAX_ENTRIES, "resolvers", |(k, _)| k.span, sink) {
        if !fits(&key.name, key.span, "a resolver name", MAX_BRANE_NAME, sink) {
            continue;
        }
        if let Err(reason) = names::check_brane_name(&key.name) {
            sink.push(
                ErrorKind::InvalidName,
                key.span,
                format!("invalid resolver name `{}`: {reason}", key.name),
            );
        }
        if let Some(r) = resolver(key, body, branes, &http, sink) {
            out.insert(key.name.clone(), r);
        }
    }
    out
}

fn resolver(
    key: &Key,
    node: &Node,
    branes: &BTreeMap<String, Brane>,
    http: &[&str],
    sink: &mut Sink,
) -> Option<Resolver> {
    let what = format!("resolver `{}`", key.name);
    let entries = table(node, &what, sink)?;
    check_keys(entries, RESOLVER_KEYS, &format!("in {what}"), sink);
    let host = match get(entries, "host") {
        Some((_, n)) => bounded(n, "resolver `host`", MAX_DNS_NAME, sink).and_then(|h| {
            match names::check_dns_name(h) {
                Ok(()) => Some(h.to_owned()),
                Err(reason) => {
                    sink.push_help(
                        ErrorKind::InvalidHostName,
                        n.span,
                        format!("invalid host name `{h}`: {reason}"),
                        Some("a DNS name: labels of 1-63 characters `a`-`z`, `0`-`9`, `-`, not starting or ending with `-`"),
                    );
                    None
                }
            }
        }),
        None => {
            missing("host", key.span, &what, sink, "add `host = \"demo.example.ts.net\"`");
            None
        }
    };
    let mode = match get(entries, "mode") {
        Some((_, n)) => keyword::<ResolverMode>(
            n,
            ErrorKind::UnknownResolverMode,
            "resolver mode",
            ResolverMode::NAMES,
            sink,
        ),
        None => {
            missing(
                "mode",
                key.span,
                &what,
                sink,
                "add `mode = \"tailscale-funnel\"` (or `cloudflared`, `ngrok`, `netbird`)",
            );
            None
        }
    };
    let brane = match get(entries, "brane") {
        Some((_, n)) => {
            let name = bounded(n, "resolver `brane`", MAX_BRANE_NAME, sink)?;
            match branes.get(name) {
                None => {
                    sink.push_help(
                        ErrorKind::ResolverUnknownBrane,
                        n.span,
                        format!("{what} routes to unknown brane `{name}`"),
                        did_you_mean(name, branes.keys().map(String::as_str)),
                    );
                    None
                }
                Some(b) if !b.http => {
                    sink.push_help(
                        ErrorKind::ResolverNotHttp,
                        n.span,
                        format!("{what} routes to brane `{name}`, which does not serve HTTP"),
                        Some(format!("set `http = true` on brane `{name}`")),
                    );
                    None
                }
                Some(_) => Some(name.to_owned()),
            }
        }
        None => match http {
            [one] => Some((*one).to_owned()),
            [] => {
                sink.push_help(
                    ErrorKind::ResolverNotHttp,
                    key.span,
                    format!("{what} has no brane to route to: no brane has `http = true`"),
                    Some("set `http = true` on the brane that serves HTTP"),
                );
                None
            }
            many => {
                sink.push_help(
                    ErrorKind::ResolverAmbiguous,
                    key.span,
                    format!("{what} has no `brane` and several branes serve HTTP"),
                    Some(format!("add `brane = ` one of: {}", many.join(", "))),
                );
                None
            }
        },
    };
    Some(Resolver {
        host: host?,
        mode: mode?,
        brane: brane?,
    })
}
