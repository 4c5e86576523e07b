//! The example manifests in `examples/` load, agree across syntaxes, render
//! and convert.

use omega_zgraph::{Capability, Format, Plan, PlanHash, Replicas, load, render};

fn example(name: &str) -> String {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load_example(name: &str) -> Plan {
    let format = Format::from_path(std::path::Path::new(name)).expect("known extension");
    match load(&example(name), name, format) {
        Ok(plan) => plan,
        Err(d) => panic!("{d}"),
    }
}

#[test]
fn pipeline_hashes_equal_in_all_syntaxes() {
    let toml = load_example("multi-substrate-pipeline.zgraph.toml");
    let json = load_example("multi-substrate-pipeline.zgraph.json");
    let yaml = load_example("multi-substrate-pipeline.zgraph.yaml");
    assert_eq!(toml, json);
    assert_eq!(toml, yaml);
    assert_eq!(toml.hash(), json.hash());
    assert_eq!(toml.hash(), yaml.hash());
}

#[test]
fn hello_renders_as_text() {
    let plan = load_example("hello.zgraph.toml");
    assert_eq!(
        render::text(&plan),
        "mesh (unnamed)\nbranes\n└─ hello  habitat/standard  replicas=1\n      image hello:1.0\n"
    );
}

#[test]
fn hello_renders_as_dot() {
    let plan = load_example("hello.zgraph.toml");
    assert_eq!(
        render::dot(&plan),
        r##"digraph zgraph {
  rankdir=LR;
  node [shape=box, style="rounded,filled"];
  subgraph cluster_habitat {
    label="habitat";
    "hello" [label="hello\nhabitat/standard", fillcolor="#ffe5b4"];
  }
}
"##
    );
}

#[test]
fn hello_renders_as_mermaid() {
    let plan = load_example("hello.zgraph.toml");
    assert_eq!(
        render::mermaid(&plan),
        "flowchart LR\n  hello[\"hello<br/>habitat/standard\"]:::habitat\n  classDef habitat fill:#ffe5b4\n"
    );
}

#[test]
fn pipeline_renders_key_lines() {
    let plan = load_example("multi-substrate-pipeline.zgraph.toml");
    let text = render::text(&plan);
    for line in [
        "mesh lab",
        "├─ ingest  habitat/standard  replicas=auto",
        "├─ train  gaia/frontier  replicas=1",
        "└─ transform  biome/standard  replicas=3",
        "  ingest --raw.batch--> transform  key .sensor",
        "  transform --tensor.shard--> train",
        "  transform --tensor.shard--> archive",
        "  train --model.checkpoint--> archive",
        "  public: https://demo.example.ts.net -> api via tailscale-funnel",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let dot = render::dot(&plan);
    for line in [
        "  subgraph cluster_biome {",
        "    \"train\" [label=\"train\\ngaia/frontier\", fillcolor=\"#cfe2ff\", peripheries=2];",
        "  \"ingest\" -> \"transform\" [label=\"raw.batch\"];",
        "  \"train\" -> \"archive\" [label=\"model.checkpoint\"];",
    ] {
        assert!(dot.lines().any(|l| l == line), "missing {line:?} in\n{dot}");
    }
    let mermaid = render::mermaid(&plan);
    assert!(mermaid.starts_with("flowchart LR\n"));
    for line in [
        "  transform[\"transform<br/>biome/standard\"]:::biome",
        "  transform -->|tensor.shard| archive",
        "  classDef gaia fill:#cfe2ff",
    ] {
        assert!(
            mermaid.lines().any(|l| l == line),
            "missing {line:?} in\n{mermaid}"
        );
    }
}

#[test]
fn pipeline_plan_is_normalized() {
    let plan = load_example("multi-substrate-pipeline.zgraph.toml");
    let names: Vec<_> = plan.branes().keys().map(String::as_str).collect();
    assert_eq!(names, ["api", "archive", "ingest", "train", "transform"]);
    let transform = &plan.branes()["transform"];
    assert_eq!(transform.limits.memory_bytes, Some(256 * 1024 * 1024));
    assert_eq!(transform.replicas, Replicas::Count(3));
    assert_eq!(plan.branes()["ingest"].replicas, Replicas::Auto);
    assert_eq!(plan.branes()["api"].capability, Capability::Standard);
    let edges: Vec<_> = plan
        .edges()
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    assert_eq!(
        edges,
        [
            ("ingest", "transform"),
            ("train", "archive"),
            ("transform", "archive"),
            ("transform", "train")
        ]
    );
    assert_eq!(plan.hash().to_string().len(), 64);
    assert_eq!(plan.hash().to_string().parse::<PlanHash>(), Ok(plan.hash()));
}

#[test]
fn conversion_round_trips_to_the_same_hash() {
    for name in ["hello.zgraph.toml", "multi-substrate-pipeline.zgraph.toml"] {
        let plan = load_example(name);
        for format in Format::ALL {
            let text = plan.to_format(format);
            let again = load(&text, &format!("converted.{format}"), format)
                .unwrap_or_else(|d| panic!("{d}\n{text}"));
            assert_eq!(again.hash(), plan.hash(), "{name} as {format}:\n{text}");
            assert_eq!(omega_zgraph::to_format(&again, format), text);
        }
    }
}

#[test]
fn plan_serde_round_trip() {
    let plan = load_example("multi-substrate-pipeline.zgraph.yaml");
    let json = serde_json::to_string(&plan).expect("serialize");
    let back: Plan = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, plan);
    assert_eq!(back.hash(), plan.hash());
}

#[test]
fn format_from_path_and_str() {
    use std::path::Path;
    assert_eq!(
        Format::from_path(Path::new("a.zgraph.yml")),
        Some(Format::Yaml)
    );
    assert_eq!(Format::from_path(Path::new("a.JSON")), Some(Format::Json));
    assert_eq!(Format::from_path(Path::new("a.txt")), None);
    assert_eq!("toml".parse::<Format>(), Ok(Format::Toml));
    assert!("xml".parse::<Format>().is_err());
}

#[test]
fn canonical_encoding_is_pinned() {
    let plan = load_example("hello.zgraph.toml");
    assert_eq!(
        plan.canonical_json(),
        r#"{"branes":{"hello":{"capability":"standard","gpu":"none","http":false,"image":"hello:1.0","replicas":1,"substrate":"habitat"}},"edges":[]}"#
    );
    let mut hasher = blake3::Hasher::new();
    hasher.update(PlanHash::DOMAIN);
    hasher.update(plan.canonical_json().as_bytes());
    assert_eq!(plan.hash().as_bytes(), hasher.finalize().as_bytes());
    assert_eq!(plan.hash().to_string(), PINNED_HELLO_HASH);
}

/// Changing this means every deployed manifest changes identity: bump the
/// `PlanHash::DOMAIN` version instead of editing it casually.
const PINNED_HELLO_HASH: &str = "eb6e9a430d0f7e2673b9b07da73a60356994731f2c1e829d1d7ca90d4f99c01f";
