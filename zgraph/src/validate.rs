//! Validation and normalization: spanned tree in, [`Plan`] out.
//!
//! Every check reports to a [`Sink`] and carries on, so one run finds as
//! many problems as it can. A plan is returned only when nothing was found.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use crate::ErrorKind;
use crate::error::{Sink, Span};
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
const GRANT_KEYS: &[&str] = &["dirs", "env", "http", "clocks"];
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
    let name = string(name, "`mesh.name`", sink).map(|s| (s, name.span))?;
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
        && let Some(s) = string(n, "`image`", sink)
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
        let s = string(n, "`peers`", sink)?;
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
        && let Some(s) = string(n, "`guest`", sink)
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
    let out_of_range = |sink: &mut Sink, shown: String| {
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
                out_of_range(sink, n.to_string());
                None
            }
        },
        Value::Str(s) if s == "auto" => Some(Replicas::Auto),
        Value::Str(s) => {
            out_of_range(sink, format!("`{s}`"));
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
    for item in items {
        let Some(h) = string(item, "a `hosts` entry", sink) else {
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
    for (k, v) in entries {
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
            Value::Int(_) => positive(n, "memory", sink),
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
                Value::Int(_) => positive(n, field, sink),
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
                for item in items {
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
        for (k, v) in vars {
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
                for item in items {
                    let Some(h) = string(item, "a `grants.http` entry", sink) else {
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
    out
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
        let s = string(n, &format!("directory grant `{name}`"), sink)?;
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
    let mut dag = Dag::default();
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
        } else if let Some(path) = dag.add(&edge.from, &edge.to) {
            sink.push_help(
                ErrorKind::Cycle,
                at,
                format!("edges form a cycle: {}", path.join(" -> ")),
                Some("a ZGraph is a DAG; remove or reverse one edge of the cycle"),
            );
        }
        out.push(edge);
    }
    out
}

fn edge(node: &Node, branes: &BTreeMap<String, Brane>, sink: &mut Sink) -> Option<Edge> {
    let entries = table(node, "an edge", sink)?;
    check_keys(entries, EDGE_KEYS, "in an edge", sink);
    let mut ok = true;
    let field = |name: &str, sink: &mut Sink| -> Option<(String, Span)> {
        match get(entries, name) {
            Some((_, n)) => {
                string(n, &format!("edge `{name}`"), sink).map(|s| (s.to_owned(), n.span))
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
        Some((_, n)) => match string(n, "edge `key`", sink) {
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
    let max_attempts = match get(entries, "max_attempts") {
        Some((_, n)) => match n.value {
            Value::Int(v) if (1..=MAX_ATTEMPTS_LIMIT).contains(&v) => u32::try_from(v).ok(),
            Value::Int(v) => {
                sink.push(
                    ErrorKind::InvalidLimit,
                    n.span,
                    format!(
                        "invalid edge `max_attempts` {v}: it must be between 1 and {MAX_ATTEMPTS_LIMIT}"
                    ),
                );
                None
            }
            _ => {
                wrong_type(n, "an integer", "edge `max_attempts`", sink);
                None
            }
        },
        None => None,
    };
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

/// Incrementally built graph that refuses edges closing a cycle.
#[derive(Default)]
struct Dag {
    out: HashMap<String, Vec<String>>,
}

impl Dag {
    /// Add `from -> to`; if `to` already reaches `from`, return the cycle
    /// `to -> … -> from -> to` (shortest path) and leave the graph unchanged.
    fn add(&mut self, from: &str, to: &str) -> Option<Vec<String>> {
        if let Some(mut path) = self.path(to, from) {
            path.push(to.to_owned());
            return Some(path);
        }
        self.out
            .entry(from.to_owned())
            .or_default()
            .push(to.to_owned());
        None
    }

    /// Breadth-first shortest path `start -> … -> goal`.
    fn path(&self, start: &str, goal: &str) -> Option<Vec<String>> {
        let mut parent: HashMap<&str, &str> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut visited = BTreeSet::from([start]);
        while let Some(n) = queue.pop_front() {
            if n == goal {
                let mut path = vec![n.to_owned()];
                let mut cur = n;
                while let Some(p) = parent.get(cur) {
                    path.push((*p).to_owned());
                    cur = p;
                }
                path.reverse();
                return Some(path);
            }
            for next in self.out.get(n).into_iter().flatten() {
                if visited.insert(next.as_str()) {
                    parent.insert(next, n);
                    queue.push_back(next);
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------- events

fn events(node: &Node, edges: &[Edge], sink: &mut Sink) -> BTreeMap<String, EventType> {
    let mut out = BTreeMap::new();
    let Some(entries) = table(node, "`event`", sink) else {
        return out;
    };
    for (key, body) in entries {
        if let Err(reason) = names::check_event_type(&key.name) {
            sink.push(
                ErrorKind::InvalidEventType,
                key.span,
                format!("invalid event type `{}`: {reason}", key.name),
            );
        } else if !edges.iter().any(|e| e.on == key.name) {
            sink.push_help(
                ErrorKind::EventWithoutProducer,
                key.span,
                format!(
                    "event type `{}` is declared but no edge carries it",
                    key.name
                ),
                did_you_mean(&key.name, edges.iter().map(|e| e.on.as_str())).or(Some(
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
    for (key, body) in entries {
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
        Some((_, n)) => string(n, "resolver `host`", sink).and_then(|h| {
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
            let name = string(n, "resolver `brane`", sink)?;
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
