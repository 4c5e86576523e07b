//! Property tests: no input makes a parser panic, and one manifest written
//! in TOML, JSON and YAML with keys in any order hashes identically.

use std::collections::BTreeMap;

use omega_zgraph::{Format, load};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn pipeline_toml() -> String {
    let path = format!(
        "{}/../examples/multi-substrate-pipeline.zgraph.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).expect("example")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(source in "\\PC*|[\\[\\]{}\":,=\\-\\n a-z0-9.#&*!|>'\\\\]*") {
        for format in Format::ALL {
            let _ = load(&source, "fuzz", format);
        }
    }

    #[test]
    fn mutated_example_never_panics(cut in 0usize..4000, len in 0usize..40, insert in "\\PC{0,8}") {
        let base = pipeline_toml();
        for format in Format::ALL {
            let text = match format {
                Format::Toml => base.clone(),
                _ => {
                    let plan = load(&base, "x", Format::Toml).expect("example is valid");
                    plan.to_format(format)
                }
            };
            let mut start = cut.min(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let mutated = format!("{}{insert}{}", &text[..start], &text[end..]);
            if let Err(d) = load(&mutated, "fuzz", format) {
                for e in d.errors() {
                    prop_assert!(e.span.0 <= e.span.1 && e.span.1 <= mutated.len());
                    prop_assert!(e.line >= 1 && e.column >= 1);
                }
            }
        }
    }

    #[test]
    fn same_manifest_same_hash_in_every_syntax(manifest in manifest(), seed in any::<u64>()) {
        let mut rng = seed;
        let json_text = serde_json::to_string_pretty(&shuffled(&manifest, &mut rng)).expect("json");
        let toml_text = toml::to_string(&shuffled(&manifest, &mut rng)).expect("toml");
        let yaml_text = yaml(&shuffled(&manifest, &mut rng));
        let load_ok = |text: &str, format| {
            load(text, "gen", format).unwrap_or_else(|d| panic!("{d}\n---\n{text}"))
        };
        let a = load_ok(&toml_text, Format::Toml);
        let b = load_ok(&json_text, Format::Json);
        let c = load_ok(&yaml_text, Format::Yaml);
        prop_assert_eq!(a.hash(), b.hash());
        prop_assert_eq!(a.hash(), c.hash());
        for format in Format::ALL {
            let again = load_ok(&a.to_format(format), format);
            prop_assert_eq!(again.hash(), a.hash());
        }
    }
}

// ------------------------------------------------------------ generators

fn brane() -> impl Strategy<Value = Value> {
    (
        0usize..3,
        any::<bool>(),
        prop_oneof![
            Just(None),
            (0u16..=1024).prop_map(Some),
            Just(Some(u16::MAX))
        ],
        proptest::option::of("[a-z][a-z0-9]{0,5}:[0-9]\\.[0-9]{1,2}"),
        proptest::option::of("lab\\.lan/[a-z]{1,5}-\\*"),
        proptest::collection::vec("[a-z]{1,5}-0[0-9]", 0..3),
        proptest::option::of(any::<bool>()),
        proptest::collection::btree_map("[a-z_]{1,6}", "\\PC{0,10}", 0..3),
        proptest::option::of(prop_oneof![Just("128MiB"), Just("2GB"), Just("4096")]),
        proptest::option::of(grants()),
    )
        .prop_map(
            |(sub, frontier, replicas, image, peers, hosts, http, config, memory, grants)| {
                let substrate = ["gaia", "biome", "habitat"][sub];
                let frontier = frontier && substrate != "habitat";
                let mut b = Map::new();
                b.insert("substrate".into(), json!(substrate));
                if frontier {
                    b.insert("capability".into(), json!("frontier"));
                    b.insert("guest".into(), json!("debian-node20"));
                    b.insert("gpu".into(), json!("passthrough"));
                }
                match replicas {
                    Some(u16::MAX) => {
                        b.insert("replicas".into(), json!("auto"));
                    }
                    Some(n) => {
                        b.insert("replicas".into(), json!(n));
                    }
                    None => {}
                }
                if let Some(image) = image {
                    b.insert("image".into(), json!(image));
                }
                match peers {
                    Some(p) => {
                        b.insert("peers".into(), json!(p));
                    }
                    None if !hosts.is_empty() => {
                        b.insert("hosts".into(), json!(hosts));
                    }
                    None => {}
                }
                if let Some(http) = http {
                    b.insert("http".into(), json!(http));
                }
                if !config.is_empty() {
                    b.insert("config".into(), json!(config));
                }
                if let Some(memory) = memory {
                    b.insert("limits".into(), json!({ "memory": memory, "cpu_ms": 50 }));
                }
                if let Some(grants) = grants {
                    b.insert("grants".into(), grants);
                }
                Value::Object(b)
            },
        )
}

fn grants() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(
            ("/[a-z]{1,6}(/[a-z0-9]{1,4})?", any::<bool>(), any::<bool>()),
            0..3,
        ),
        proptest::collection::btree_map("[A-Z_]{1,6}", "\\PC{0,10}", 0..3),
        proptest::collection::vec(
            prop_oneof![
                "[a-z]{1,6}\\.example\\.com",
                (1u16..).prop_map(|p| format!("127.0.0.1:{p}")),
            ],
            0..3,
        ),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(dirs, env, http, clocks)| {
            let mut g = Map::new();
            if !dirs.is_empty() {
                let dirs: Vec<Value> = dirs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (host, rw, explicit))| {
                        let mut d = Map::new();
                        d.insert("host".into(), json!(host));
                        d.insert("guest".into(), json!(format!("/g{i}")));
                        if rw {
                            d.insert("mode".into(), json!("rw"));
                        } else if explicit {
                            d.insert("mode".into(), json!("ro"));
                        }
                        Value::Object(d)
                    })
                    .collect();
                g.insert("dirs".into(), json!(dirs));
            }
            if !env.is_empty() {
                g.insert("env".into(), json!(env));
            }
            if !http.is_empty() {
                g.insert("http".into(), json!(http));
            }
            if let Some(clocks) = clocks {
                g.insert("clocks".into(), json!(clocks));
            }
            Value::Object(g)
        })
}

fn manifest() -> impl Strategy<Value = Value> {
    (
        proptest::collection::btree_map("[a-z][a-z0-9-]{0,8}", brane(), 1..6),
        proptest::collection::vec((0usize..6, 0usize..6, 0usize..3, any::<bool>()), 0..8),
        proptest::option::of("[a-z]{1,8}"),
        any::<bool>(),
    )
        .prop_map(|(branes, edge_picks, mesh, with_schema)| {
            let names: Vec<&String> = branes.keys().collect();
            let types = ["raw.batch", "x", "a.b-c_d"];
            let mut edges = BTreeMap::new();
            for (i, j, t, keyed) in edge_picks {
                let (i, j) = (i % names.len(), j % names.len());
                if i < j {
                    let mut e = Map::new();
                    e.insert("from".into(), json!(names[i]));
                    e.insert("to".into(), json!(names[j]));
                    e.insert("on".into(), json!(types[t]));
                    if keyed {
                        e.insert("key".into(), json!(".sensor.id"));
                    }
                    edges.insert((i, j, t), Value::Object(e));
                }
            }
            let mut top = Map::new();
            if let Some(mesh) = mesh {
                top.insert("mesh".into(), json!({ "name": mesh }));
            }
            let http: Vec<String> = branes
                .iter()
                .filter(|(_, b)| b["http"] == json!(true))
                .map(|(n, _)| n.clone())
                .collect();
            top.insert("brane".into(), json!(branes));
            if !edges.is_empty() {
                let used: Vec<&str> = edges.keys().map(|k| types[k.2]).collect();
                top.insert("graph".into(), json!({ "edges": edges.into_values().collect::<Vec<_>>() }));
                if with_schema {
                    let schema = json!({
                        "type": "object",
                        "required": ["sensor"],
                        "properties": { "sensor": { "type": "string", "maxLength": 64 },
                                        "ratio": { "type": "number", "minimum": 0.5 } }
                    });
                    top.insert("event".into(), json!({ used[0]: { "schema": schema } }));
                }
            }
            if let Some(first) = http.first() {
                top.insert(
                    "resolver".into(),
                    json!({ "public": { "host": "demo.example.ts.net", "mode": "ngrok", "brane": first } }),
                );
            }
            Value::Object(top)
        })
}

/// A copy with every object's keys in a pseudo-random order.
fn shuffled(v: &Value, rng: &mut u64) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            for i in (1..entries.len()).rev() {
                *rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let j = (*rng >> 33) as usize % (i + 1);
                entries.swap(i, j);
            }
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), shuffled(v, rng)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| shuffled(i, rng)).collect()),
        other => other.clone(),
    }
}

/// A block-style YAML writer, independent of the crate's own.
fn yaml(v: &Value) -> String {
    let mut out = String::new();
    yaml_into(v, 0, &mut out);
    out
}

fn yaml_into(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = serde_json::to_string(k).expect("key");
                if matches!(v, Value::Object(m) if !m.is_empty())
                    || matches!(v, Value::Array(a) if !a.is_empty())
                {
                    out.push_str(&format!("{pad}{key}:\n"));
                    yaml_into(v, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}{key}: {v}\n"));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}-\n"));
                        yaml_into(item, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}- {item}\n")),
                }
            }
        }
        other => out.push_str(&format!("{pad}{other}\n")),
    }
}
