//! Writes the seed corpus of every fuzz target from real messages:
//! `seeds/TARGET/BLAKE3` files. Mesh messages come from a three-node
//! [`MeshSim`] running a manifest with event edges, with the wire tap on
//! (SWIM, join, anti-entropy, image and event requests, gossip on both
//! topics); manifests from `examples/`; tokens and policies from the
//! published UCAN 1.0 vectors and from a minted join token.
//!
//! `cargo +nightly fuzz run` does not run this; `scripts/fuzz seeds` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use omega_gossip::Substrate;
use omega_gossip::events::NewEvent;
use omega_gossip::join::{InviteSpec, JoinToken};
use omega_gossip::node::{BraneKey, ImageRequest, ImageResponse, Reply};
use omega_gossip::testkit::mesh::{MeshConfig, MeshSim};
use omega_identity::{ContentId, Keypair};

const PIPELINE: &str = r#"
[brane.ingest]
substrate = "habitat"
image = "ingest:1.0"
hosts = ["n0"]

[brane.archive]
substrate = "habitat"
image = "archive:1.0"
hosts = ["n1"]

[graph]
edges = [{ from = "ingest", to = "archive", on = "raw.batch", ordered = true }]
"#;

fn main() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let repo = fuzz
        .parent()
        .expect("fuzz/ is inside the repository")
        .to_path_buf();
    let mut seeds: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();

    // Mesh messages, tapped off the wire of a running mesh.
    let mut sim = MeshSim::new(
        3,
        MeshConfig {
            tap: 12,
            ..MeshConfig::default()
        },
    );
    for i in 0..3 {
        sim.add_node(&format!("n{i}"), Substrate::Habitat);
    }
    assert!(sim.run_until(20_000, MeshSim::all_alive), "the mesh forms");
    let w = sim.apply(0, "lab", PIPELINE);
    assert!(
        sim.run_until(10_000, |s| matches!(
            s.reply(0, w),
            Some(Reply::Written(Ok(())))
        )),
        "the manifest is written"
    );
    sim.run_for(10_000);
    for n in 0..20u32 {
        let id = sim.emit(
            0,
            vec![NewEvent {
                to: BraneKey::new("lab", "ingest"),
                ty: "raw.batch".into(),
                key: format!("k{}", n % 3),
                payload: format!("batch {n}").into_bytes(),
            }],
        );
        sim.run_until(5_000, |s| s.reply(0, id).is_some());
    }
    sim.run_for(5_000);
    let tapped = sim.tapped();
    let kind = |k: &str| tapped.get(k).cloned().unwrap_or_default();
    seeds.insert("swim", kind("swim"));
    seeds.insert("join", kind("join"));
    seeds.insert("status", kind("gossip-status"));
    let mut desired = kind("gossip-state");
    desired.extend(kind("state"));
    seeds.insert("desired", desired);
    seeds.insert("events", kind("event"));
    let content = ContentId::of(b"an image");
    seeds.insert(
        "image",
        vec![
            ImageRequest { content, offset: 0 }.to_bytes(),
            ImageRequest {
                content,
                offset: 4096,
            }
            .to_bytes(),
            ImageResponse::Chunk {
                total: 8,
                bytes: b"an image".to_vec(),
            }
            .to_bytes(),
            ImageResponse::NotFound.to_bytes(),
            ImageResponse::Refused("rate".into()).to_bytes(),
        ],
    );
    // The node target: every tapped message as a frame of its own kind.
    let kinds = [
        "swim",
        "join",
        "state",
        "image",
        "event",
        "gossip-state",
        "gossip-status",
    ];
    let mut node = Vec::new();
    for (k, name) in kinds.iter().enumerate() {
        for m in kind(name).iter().filter(|m| m.len() < 256) {
            let mut frame = vec![k as u8, m.len() as u8];
            frame.extend_from_slice(m);
            node.push(frame);
        }
    }
    seeds.insert("node", node);

    // Manifests, each in its own syntax's target.
    for (target, ext) in [
        ("manifest_toml", "toml"),
        ("manifest_json", "json"),
        ("manifest_yaml", "yaml"),
    ] {
        let mut list = Vec::new();
        for dir in [repo.join("examples"), repo.join("examples/invalid")] {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == ext) && p.to_string_lossy().contains("zgraph")
                {
                    list.push(std::fs::read(&p).expect("an example manifest reads"));
                }
            }
        }
        if ext == "toml" {
            list.push(PIPELINE.as_bytes().to_vec());
        }
        seeds.insert(target, list);
    }

    // Tokens: the published vectors, and a minted join token (text and bytes).
    let vectors = repo
        .parent()
        .map(|p| p.join("shared/vectors"))
        .unwrap_or_default();
    let mut ucan = strings_named(&vectors.join("ucan-1.0.0-delegation.json"), "token");
    let root = Keypair::from_seed([9; 32]);
    let spec = InviteSpec {
        substrate: Substrate::Habitat,
        name_pattern: Some("n*".into()),
        expires_at: 2_000_000_000,
    };
    let token = JoinToken::mint(&root, &spec, [4; 32], vec![1; 16]).expect("a join token mints");
    let text = token.encode();
    seeds
        .get_mut("join")
        .expect("join seeds")
        .push(text.clone().into_bytes());
    ucan.push(text.into_bytes());
    // The tokens real join requests carry.
    for req in kind("join") {
        if let Ok(req) = omega_gossip::join::JoinRequest::from_bytes(&req) {
            ucan.extend(
                req.invocation
                    .into_iter()
                    .chain(req.delegation)
                    .map(Vec::from),
            );
        }
    }
    seeds.insert("ucan", ucan);
    let mut policy = policy_vectors(&vectors.join("ucan-1.0.0-policy.json"));
    policy.push(br#"[["==", ".substrate", "habitat"], ["like", ".name", "n*"]]"#.to_vec());
    policy.push(br#"[["all", ".a", ["or", [[">", ".", 1], ["not", ["==", ".", 3]]]]]]"#.to_vec());
    policy.push(b"[[\"==\", \".a.b[0]\", 1]]\0{\"a\": {\"b\": [1]}}".to_vec());
    seeds.insert("policy", policy);

    // Agent frames: a real session of host and guest messages, each
    // direction framed as the channel carries it.
    use omega_agent::proto::{
        GuestMsg, HostMsg, Limits, PROTOCOL_VERSION, WireEmit, WireEvent, encode,
    };
    let host = [
        HostMsg::Hello {
            version: PROTOCOL_VERSION,
            max_frame: 1 << 20,
        },
        HostMsg::Start {
            workload: vec!["/bin/transform".into(), "--fast".into()],
            env: vec![("MODE".into(), "prod".into())],
            emits: vec!["tensor.shard".into()],
            limits: Limits::default(),
        },
        HostMsg::Event(WireEvent {
            id: "01J0000000000000000000000".into(),
            ty: "raw.batch".into(),
            key: "k1".into(),
            payload_b64: omega_agent::proto::b64(b"batch 1"),
            source: "ingest".into(),
            attempt: 1,
        }),
        HostMsg::Shutdown,
    ];
    let guest = [
        GuestMsg::Hello {
            version: PROTOCOL_VERSION,
            max_frame: 1 << 20,
            agent: "omega-agent 0.1.0".into(),
        },
        GuestMsg::Ready,
        GuestMsg::Emit(WireEmit {
            ty: "tensor.shard".into(),
            key: "k1".into(),
            payload_b64: omega_agent::proto::b64(b"shard"),
        }),
        GuestMsg::Log {
            message: "processing".into(),
        },
        GuestMsg::Done {
            id: "01J0000000000000000000000".into(),
            refused: 0,
        },
    ];
    let mut frames = Vec::new();
    let mut session = Vec::new();
    for m in &host {
        let f = encode(m).expect("a frame encodes");
        session.extend_from_slice(&f);
        frames.push(f);
    }
    frames.push(std::mem::take(&mut session));
    for m in &guest {
        let f = encode(m).expect("a frame encodes");
        session.extend_from_slice(&f);
        frames.push(f);
    }
    frames.push(session);
    seeds.insert("agent_frames", frames);

    let out = fuzz.join("seeds");
    for (target, list) in &seeds {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("the seed directory is writable");
        for bytes in list {
            let name = blake3::hash(bytes).to_hex();
            std::fs::write(dir.join(&name[..16]), bytes).expect("a seed writes");
        }
        println!("{target:>14}: {} seeds", list.len());
    }
}

/// Every JSON string value of a field `name` in the file (the vectors are
/// JSON with comments and trailing commas, so they are scanned, not parsed);
/// base64 strings are decoded, others kept as text.
fn strings_named(path: &Path, name: &str) -> Vec<Vec<u8>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("no vectors at {}", path.display());
        return Vec::new();
    };
    let key = format!("\"{name}\":");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(&key) {
        rest = rest[at + key.len()..].trim_start();
        if let Some(s) = rest.strip_prefix('"') {
            if let Some(end) = s.find('"') {
                let value = &s[..end];
                match omega_identity::ucan::decode_base64(value) {
                    Ok(bytes) => out.push(bytes),
                    Err(_) => out.push(value.as_bytes().to_vec()),
                }
            }
        }
    }
    out
}

/// The balanced JSON value (array or object) at the start of `s`, with
/// brackets inside strings ignored.
fn balanced(s: &str) -> Option<&str> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (i, c) in s.char_indices() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' => depth += 1,
            ']' | '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(&s[..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The policy vectors: each policy of each `policies` list, NUL, then the
/// `args` it is evaluated against (the file is scanned, not parsed).
fn policy_vectors(path: &Path) -> Vec<Vec<u8>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("no vectors at {}", path.display());
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("\"args\":") {
        rest = rest[at + 7..].trim_start();
        let Some(args) = balanced(rest) else { break };
        let Some(p) = rest.find("\"policies\":") else {
            break;
        };
        let list = rest[p + 11..].trim_start();
        let Some(list) = balanced(list) else { break };
        // The list's elements: each a policy (an array of statements).
        let mut inner = list[1..].trim_start();
        while let Some(one) = balanced(inner) {
            let mut seed = one.as_bytes().to_vec();
            seed.push(0);
            seed.extend_from_slice(args.as_bytes());
            out.push(seed);
            inner = inner[one.len()..]
                .trim_start()
                .trim_start_matches(',')
                .trim_start();
        }
        rest = &rest[p + 11..];
    }
    out
}
