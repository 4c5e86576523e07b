//! Pictures of a [`Plan`]: a text tree, Graphviz DOT and Mermaid.
//!
//! All three are deterministic (branes and edges in plan order), so their
//! output can be snapshot-tested and diffed.

use std::fmt::Write as _;

use crate::plan::{Brane, Plan, Substrate};

/// A readable tree: the branes with substrate, capability and replicas, then
/// the edges as `from --type--> to`, then the resolvers.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    match plan.mesh() {
        Some(mesh) => out.push_str(&format!("mesh {mesh}\n")),
        None => out.push_str("mesh (unnamed)\n"),
    }
    out.push_str("branes\n");
    let count = plan.branes().len();
    for (i, (name, b)) in plan.branes().iter().enumerate() {
        let last = i + 1 == count;
        let (branch, stem) = if last {
            ("└─", "   ")
        } else {
            ("├─", "│  ")
        };
        let _ = writeln!(
            out,
            "{branch} {name}  {}/{}  replicas={}",
            b.substrate, b.capability, b.replicas
        );
        for detail in details(b) {
            let _ = writeln!(out, "{stem}   {detail}");
        }
    }
    if !plan.edges().is_empty() {
        out.push_str("edges\n");
        for e in plan.edges() {
            let key = e
                .key
                .as_deref()
                .map(|k| format!("  key {k}"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {} --{}--> {}{key}", e.from, e.on, e.to);
        }
    }
    if !plan.resolvers().is_empty() {
        out.push_str("resolvers\n");
        for (name, r) in plan.resolvers() {
            let _ = writeln!(
                out,
                "  {name}: https://{} -> {} via {}",
                r.host, r.brane, r.mode
            );
        }
    }
    out
}

fn details(b: &Brane) -> Vec<String> {
    let mut d = Vec::new();
    if let Some(image) = &b.image {
        d.push(format!("image {image}"));
    }
    if let Some(peers) = &b.peers {
        d.push(format!("peers {peers}"));
    }
    if !b.hosts.is_empty() {
        d.push(format!("hosts {}", b.hosts.join(", ")));
    }
    if let Some(guest) = &b.guest {
        d.push(format!("guest {guest}"));
    }
    if b.gpu != crate::Gpu::None {
        d.push(format!("gpu {}", b.gpu));
    }
    if b.http {
        d.push("http".to_owned());
    }
    d
}

fn substrate_colour(s: Substrate) -> &'static str {
    match s {
        Substrate::Gaia => "#cfe2ff",
        Substrate::Biome => "#d1f2d9",
        Substrate::Habitat => "#ffe5b4",
    }
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz DOT: one cluster per substrate, nodes labelled with name,
/// substrate and capability (frontier branes drawn with a double border),
/// edges labelled with the event type.
pub fn dot(plan: &Plan) -> String {
    let mut out = String::from(
        "digraph zgraph {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\"];\n",
    );
    for substrate in [Substrate::Gaia, Substrate::Biome, Substrate::Habitat] {
        let members: Vec<_> = plan
            .branes()
            .iter()
            .filter(|(_, b)| b.substrate == substrate)
            .collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  subgraph cluster_{substrate} {{");
        let _ = writeln!(out, "    label={};", dot_quote(substrate.as_str()));
        for (name, b) in members {
            let label = format!("{name}\\n{}/{}", b.substrate, b.capability);
            let peripheries = if b.capability == crate::Capability::Frontier {
                ", peripheries=2"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} [label=\"{label}\", fillcolor=\"{}\"{peripheries}];",
                dot_quote(name),
                substrate_colour(substrate)
            );
        }
        out.push_str("  }\n");
    }
    for e in plan.edges() {
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            dot_quote(&e.from),
            dot_quote(&e.to),
            dot_quote(&e.on)
        );
    }
    out.push_str("}\n");
    out
}

/// Mermaid `flowchart LR`: nodes labelled with name, substrate and
/// capability, edges labelled with the event type, one class per substrate.
pub fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for (name, b) in plan.branes() {
        let _ = writeln!(
            out,
            "  {name}[\"{name}<br/>{}/{}\"]:::{}",
            b.substrate, b.capability, b.substrate
        );
    }
    for e in plan.edges() {
        let _ = writeln!(out, "  {} -->|{}| {}", e.from, e.on, e.to);
    }
    for substrate in [Substrate::Gaia, Substrate::Biome, Substrate::Habitat] {
        if plan.branes().values().any(|b| b.substrate == substrate) {
            let _ = writeln!(
                out,
                "  classDef {substrate} fill:{}",
                substrate_colour(substrate)
            );
        }
    }
    out
}
