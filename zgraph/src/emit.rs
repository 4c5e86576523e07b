//! Writing a [`Plan`] back as a manifest in any of the three syntaxes
//! (`omega fmt FILE --to toml|json|yaml`).
//!
//! Every default is written out, so the output states the whole plan;
//! loading it again gives the same [`crate::PlanHash`].

use serde_json::{Map, Value as J};

use crate::Format;
use crate::plan::Plan;

/// The plan as a manifest in `format`.
pub(crate) fn to_format(plan: &Plan, format: Format) -> String {
    let doc = manifest_value(plan);
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Toml => toml_document(&doc),
        Format::Yaml => {
            let mut out = String::new();
            yaml_block(&doc, 0, &mut out);
            out
        }
    }
}

fn obj(entries: impl IntoIterator<Item = (&'static str, J)>) -> J {
    J::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

/// The manifest shape of a plan, keys in documentation order.
fn manifest_value(plan: &Plan) -> J {
    let mut top = Map::new();
    if let Some(name) = plan.mesh() {
        top.insert("mesh".into(), obj([("name", J::from(name))]));
    }
    let mut branes = Map::new();
    for (name, b) in plan.branes() {
        let mut m = Map::new();
        m.insert("substrate".into(), b.substrate.as_str().into());
        m.insert("capability".into(), b.capability.as_str().into());
        m.insert(
            "replicas".into(),
            match b.replicas {
                crate::Replicas::Count(n) => J::from(n),
                crate::Replicas::Auto => J::from("auto"),
            },
        );
        if let Some(image) = &b.image {
            m.insert("image".into(), image.to_string().into());
        }
        if let Some(peers) = &b.peers {
            m.insert("peers".into(), peers.as_str().into());
        }
        if !b.hosts.is_empty() {
            m.insert("hosts".into(), b.hosts.clone().into());
        }
        if let Some(guest) = &b.guest {
            m.insert("guest".into(), guest.as_str().into());
        }
        m.insert("gpu".into(), b.gpu.as_str().into());
        m.insert("http".into(), b.http.into());
        if !b.config.is_empty() {
            let config = b
                .config
                .iter()
                .map(|(k, v)| (k.clone(), J::from(v.as_str())));
            m.insert("config".into(), J::Object(config.collect()));
        }
        if !b.limits.is_empty() {
            let mut l = Map::new();
            let fields = [
                ("memory", b.limits.memory_bytes),
                ("cpu_ms", b.limits.cpu_ms),
                ("timeout_ms", b.limits.timeout_ms),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    let v = if k == "memory" { size(v) } else { v.into() };
                    l.insert(k.into(), v);
                }
            }
            m.insert("limits".into(), J::Object(l));
        }
        if !b.grants.is_empty() {
            let g = &b.grants;
            let mut m2 = Map::new();
            if !g.dirs.is_empty() {
                let dirs = g.dirs.iter().map(|d| {
                    obj([
                        ("host", d.host.as_str().into()),
                        ("guest", d.guest.as_str().into()),
                        ("mode", if d.writable { "rw" } else { "ro" }.into()),
                    ])
                });
                m2.insert("dirs".into(), J::Array(dirs.collect()));
            }
            if !g.env.is_empty() {
                let env = g.env.iter().map(|(k, v)| (k.clone(), J::from(v.as_str())));
                m2.insert("env".into(), J::Object(env.collect()));
            }
            if !g.http.is_empty() {
                m2.insert("http".into(), g.http.clone().into());
            }
            m2.insert("clocks".into(), g.clocks.into());
            if !g.call.is_empty() {
                m2.insert("call".into(), g.call.clone().into());
            }
            m.insert("grants".into(), J::Object(m2));
        }
        branes.insert(name.clone(), J::Object(m));
    }
    top.insert("brane".into(), J::Object(branes));
    if !plan.edges().is_empty() {
        let edges = plan.edges().iter().map(|e| {
            let mut m = Map::new();
            m.insert("from".into(), e.from.as_str().into());
            m.insert("to".into(), e.to.as_str().into());
            m.insert("on".into(), e.on.as_str().into());
            if let Some(k) = &e.key {
                m.insert("key".into(), k.as_str().into());
            }
            if e.ordered {
                m.insert("ordered".into(), J::Bool(true));
            }
            if let Some(n) = e.max_attempts {
                m.insert("max_attempts".into(), n.into());
            }
            J::Object(m)
        });
        top.insert("graph".into(), obj([("edges", J::Array(edges.collect()))]));
    }
    if !plan.events().is_empty() {
        let events = plan.events().iter().map(|(name, ev)| {
            let mut m = Map::new();
            if let Some(schema) = &ev.schema {
                m.insert("schema".into(), schema.clone());
            }
            (name.clone(), J::Object(m))
        });
        top.insert("event".into(), J::Object(events.collect()));
    }
    if !plan.resolvers().is_empty() {
        let resolvers = plan.resolvers().iter().map(|(name, r)| {
            let v = obj([
                ("host", r.host.as_str().into()),
                ("mode", r.mode.as_str().into()),
                ("brane", r.brane.as_str().into()),
            ]);
            (name.clone(), v)
        });
        top.insert("resolver".into(), J::Object(resolvers.collect()));
    }
    J::Object(top)
}

/// A byte count as the largest exact binary unit (`"16GiB"`), or bytes.
fn size(bytes: u64) -> J {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes.is_multiple_of(1u64 << shift) {
            return J::from(format!("{}{unit}", bytes >> shift));
        }
    }
    J::from(bytes)
}

// ---------------------------------------------------------------- TOML

fn toml_document(doc: &J) -> String {
    let mut out = String::new();
    if let J::Object(map) = doc {
        toml_table(&mut Vec::new(), map, &mut out);
    }
    out
}

fn toml_table(path: &mut Vec<String>, map: &Map<String, J>, out: &mut String) {
    let (tables, inline): (Vec<_>, Vec<_>) = map.iter().partition(|(_, v)| v.is_object());
    if !path.is_empty() && (!inline.is_empty() || tables.is_empty()) {
        if !out.is_empty() {
            out.push('\n');
        }
        let header: Vec<String> = path.iter().map(|k| toml_key(k)).collect();
        out.push_str(&format!("[{}]\n", header.join(".")));
    }
    for (k, v) in inline {
        out.push_str(&toml_key(k));
        out.push_str(" = ");
        match v {
            J::Array(items) if items.iter().any(J::is_object) => {
                out.push_str("[\n");
                for item in items {
                    out.push_str("  ");
                    toml_inline(item, out);
                    out.push_str(",\n");
                }
                out.push(']');
            }
            _ => toml_inline(v, out),
        }
        out.push('\n');
    }
    for (k, v) in tables {
        if let J::Object(sub) = v {
            path.push(k.clone());
            toml_table(path, sub, out);
            path.pop();
        }
    }
}

fn toml_inline(v: &J, out: &mut String) {
    match v {
        J::Null => out.push_str("\"\""),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => number(n, out),
        J::String(s) => quoted(s, out, |c| c == '\u{7f}'),
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                toml_inline(item, out);
            }
            out.push(']');
        }
        J::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                out.push_str(if i > 0 { ", " } else { " " });
                out.push_str(&toml_key(k));
                out.push_str(" = ");
                toml_inline(v, out);
            }
            out.push_str(if map.is_empty() { "}" } else { " }" });
        }
    }
}

fn toml_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_owned()
    } else {
        let mut s = String::new();
        quoted(k, &mut s, |c| c == '\u{7f}');
        s
    }
}

fn number(n: &serde_json::Number, out: &mut String) {
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) => out.push_str(&i.to_string()),
        (None, Some(u)) => out.push_str(&u.to_string()),
        _ => out.push_str(&format!("{:?}", n.as_f64().unwrap_or(0.0))),
    }
}

/// A double-quoted string with JSON-style escapes, valid in TOML basic
/// strings, YAML double-quoted scalars and JSON. `extra` selects further
/// characters to write as `\uXXXX`.
fn quoted(s: &str, out: &mut String, extra: impl Fn(char) -> bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || extra(c) => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------- YAML

/// Characters a YAML double-quoted scalar must escape (outside `c-printable`,
/// plus the byte-order mark).
fn yaml_escape(c: char) -> bool {
    matches!(c, '\u{7f}'..='\u{84}' | '\u{86}'..='\u{9f}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}')
}

fn yaml_key(k: &str) -> String {
    const RESERVED: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    let bare = k.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !RESERVED.contains(&k.to_ascii_lowercase().as_str());
    if bare {
        k.to_owned()
    } else {
        let mut s = String::new();
        quoted(k, &mut s, yaml_escape);
        s
    }
}

fn yaml_scalar(v: &J, out: &mut String) {
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => number(n, out),
        J::String(s) => quoted(s, out, yaml_escape),
        J::Array(_) => out.push_str("[]"),
        J::Object(_) => out.push_str("{}"),
    }
}

fn is_block(v: &J) -> bool {
    match v {
        J::Array(a) => !a.is_empty(),
        J::Object(m) => !m.is_empty(),
        _ => false,
    }
}

/// Write `v` as block YAML, every line indented by `indent` spaces.
fn yaml_block(v: &J, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        J::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                out.push_str(&pad);
                out.push_str(&yaml_key(k));
                out.push(':');
                if is_block(v) {
                    out.push('\n');
                    yaml_block(v, indent + 2, out);
                } else {
                    out.push(' ');
                    yaml_scalar(v, out);
                    out.push('\n');
                }
            }
        }
        J::Array(items) if !items.is_empty() => {
            for item in items {
                if is_block(item) {
                    let mut inner = String::new();
                    yaml_block(item, indent + 2, &mut inner);
                    // Turn the first line's indentation into the "- " marker.
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&inner[indent + 2..]);
                } else {
                    out.push_str(&pad);
                    out.push_str("- ");
                    yaml_scalar(item, out);
                    out.push('\n');
                }
            }
        }
        _ => {
            out.push_str(&pad);
            yaml_scalar(v, out);
            out.push('\n');
        }
    }
}
