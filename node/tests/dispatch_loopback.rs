//! Leaderless dispatch with real daemons on loopback: five nodes on three
//! substrates agree on the seed example's placement and run it; a killed
//! node's replicas move to the survivors and come back when it returns; and
//! only records whose chain leads to this mesh's root with the right command,
//! name, time and no revocation take effect.
//!
//! The time figures are printed (the goal is ≤ 1 s to running, ≤ 3 s to
//! re-placement; `node/examples/dispatch_bench.rs` measures them); the assertions use
//! ceilings generous enough for a loaded two-core machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dispatch_common;
mod mesh_common;

use std::time::{Duration, Instant};

use dispatch_common::{
    Mesh, Node, all_ready, brane, hello, placement, push_seed_images, run, seed, wait_for,
};

const CEILING: Duration = Duration::from_secs(30);
const MANIFEST: &str = "multi-substrate-pipeline";

fn everyone_agrees(nodes: &[&Node]) -> bool {
    let first = placement(&nodes[0].ps());
    !first.is_empty() && nodes.iter().all(|n| placement(&n.ps()) == first)
}

fn desired_of(node: &Node, b: &str) -> Vec<String> {
    placement(&node.ps())
        .into_iter()
        .find(|(k, _)| k == &format!("{MANIFEST}/{b}"))
        .map(|(_, v)| v)
        .unwrap_or_default()
}

#[test]
fn five_daemons_agree_run_the_seed_and_re_place_after_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let mesh = Mesh::init(&tmp.path().join("mesh"));
    let specs = [
        ("n1", "lab.lan/sensor-1", "habitat"),
        ("n2", "lab.lan/nas-01", "habitat"),
        ("n3", "lab.lan/transform-pool-1", "biome"),
        ("n4", "lab.lan/transform-pool-2", "biome"),
        ("n5", "lab.lan/gaia-1", "gaia"),
    ];
    let mut nodes: Vec<Node> = Vec::new();
    let mut seed_addr: Vec<String> = Vec::new();
    for (dir, name, substrate) in specs {
        let token = mesh.invite(substrate);
        let n = Node::start(
            &tmp.path().join(dir),
            name,
            substrate,
            Some(&token),
            &seed_addr,
        );
        if seed_addr.is_empty() {
            seed_addr.push(n.addr());
        }
        nodes.push(n);
    }
    let formed = wait_for(CEILING, || nodes.iter().all(|n| n.live() == 4));
    assert!(formed.is_some(), "mesh did not form");

    push_seed_images(&nodes[0], &mesh);
    // Apply from a node that holds none of the images.
    let applied = Instant::now();
    let (ok, v, e) = run(&[
        "--key",
        &mesh.root_key(),
        "apply",
        &seed(),
        "--data-dir",
        nodes[3].d(),
    ]);
    assert!(ok, "{e}");
    assert_eq!(v["name"], MANIFEST);
    let all: Vec<&Node> = nodes.iter().collect();
    let running = wait_for(CEILING, || {
        nodes.iter().all(|n| all_ready(&n.ps(), MANIFEST)) && everyone_agrees(&all)
    });
    eprintln!(
        "apply -> every brane running on its nodes: {:?}",
        applied.elapsed()
    );
    assert!(
        running.is_some(),
        "not running everywhere:\n{}\nlog n5:\n{}",
        serde_json::to_string_pretty(&nodes[0].ps()).unwrap(),
        nodes[4].log()
    );

    // The placement the seed asks for, on every node.
    let ps = nodes[2].ps();
    assert_eq!(desired_of(&nodes[2], "ingest"), vec!["lab.lan/sensor-1:1"]);
    assert_eq!(desired_of(&nodes[2], "archive"), vec!["lab.lan/nas-01:1"]);
    assert_eq!(desired_of(&nodes[2], "api"), vec!["lab.lan/gaia-1:2"]);
    let transform = desired_of(&nodes[2], "transform");
    assert_eq!(transform.len(), 2, "{transform:?}");
    // The frontier brane is reported, not dropped: unplaceable, with reasons.
    assert_eq!(
        brane(&ps, MANIFEST, "train").unwrap()["status"],
        "unplaceable"
    );
    let d = nodes[0].describe("train");
    let reasons = d["ineligible"].to_string();
    assert!(
        reasons.contains("frontier branes never run on habitat"),
        "{d}"
    );
    assert!(reasons.contains("the brane wants gaia"), "{d}");
    assert_eq!(d["ineligible"].as_array().unwrap().len(), 5, "{d}");
    // The HTTP brane is served on its node's loopback, one URL per node.
    let api = brane(&ps, MANIFEST, "api").unwrap();
    let url = api["actual"][0]["url"].as_str().expect("api has a URL");
    let hello = http_get(url, "/hi");
    assert!(hello.contains("hello from omega /hi"), "{hello}");
    let d = nodes[3].describe("transform");
    assert!(
        d["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["text"] == "running"),
        "{d}"
    );

    // kill -9 a node hosting transform replicas: the survivor takes all three.
    let before = transform.clone();
    let dir4 = nodes.remove(3).kill9();
    let killed = Instant::now();
    let moved = wait_for(CEILING, || {
        nodes.iter().all(|n| {
            let ps = n.ps();
            placement(&ps).iter().any(|(k, v)| {
                k == &format!("{MANIFEST}/transform") && v == &["lab.lan/transform-pool-1:3"]
            }) && all_ready(&ps, MANIFEST)
        })
    });
    eprintln!(
        "kill -9 -> re-placed and running on the survivors: {:?}",
        killed.elapsed()
    );
    assert!(
        moved.is_some(),
        "{}",
        serde_json::to_string_pretty(&nodes[0].ps()).unwrap()
    );

    // Restart it: its state comes from disk, and placement moves back to
    // exactly the assignment from before the crash (minimal movement).
    let n4 = Node::start(&dir4, "lab.lan/transform-pool-2", "biome", None, &seed_addr);
    assert!(
        n4.log().contains("desired state loaded from disk"),
        "{}",
        n4.log()
    );
    nodes.insert(3, n4);
    let back = wait_for(CEILING, || {
        nodes
            .iter()
            .all(|n| desired_of(n, "transform") == before && all_ready(&n.ps(), MANIFEST))
    });
    assert!(
        back.is_some(),
        "{}\nps of the restarted node:\n{}\nits log:\n{}",
        serde_json::to_string_pretty(&nodes[0].ps()).unwrap(),
        serde_json::to_string_pretty(&nodes[3].ps()).unwrap(),
        nodes[3].log()
    );
    for b in ["ingest", "archive", "api"] {
        assert_eq!(desired_of(&nodes[0], b).len(), 1, "{b} moved");
    }

    // Delete: every node stops everything.
    let (ok, _, e) = run(&[
        "--key",
        &mesh.root_key(),
        "delete",
        MANIFEST,
        "--data-dir",
        nodes[1].d(),
    ]);
    assert!(ok, "{e}");
    let gone = wait_for(CEILING, || {
        nodes.iter().all(|n| {
            let ps = n.ps();
            ps["manifests"].as_array().is_some_and(Vec::is_empty)
        }) && nodes
            .iter()
            .all(|n| n.log().contains("stopped: no longer placed here"))
    });
    assert!(gone.is_some(), "{}", nodes[0].ps());
}

/// A plain HTTP/1.1 GET on loopback; the whole response as text.
fn http_get(url: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn user(tmp: &std::path::Path, name: &str) -> (String, String) {
    let key = tmp.join(format!("{name}.key")).display().to_string();
    let (ok, v, e) = run(&["--key", &key, "id", "new"]);
    assert!(ok, "{e}");
    (key, v["did"].as_str().unwrap().to_owned())
}

fn delegate(root_key: &str, aud: &str, cmd: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "--key", root_key, "token", "issue", "--aud", aud, "--cmd", cmd,
    ];
    args.extend_from_slice(extra);
    let (ok, v, e) = run(&args);
    assert!(ok, "{e}");
    v["token"].as_str().unwrap().to_owned()
}

#[test]
fn only_authorized_records_take_effect() {
    let tmp = tempfile::tempdir().unwrap();
    let mesh = Mesh::init(&tmp.path().join("mesh"));
    let other = Mesh::init(&tmp.path().join("other"));
    let n1 = Node::start(
        &tmp.path().join("n1"),
        "a",
        "habitat",
        Some(&mesh.invite("habitat")),
        &[],
    );
    let n2 = Node::start(
        &tmp.path().join("n2"),
        "b",
        "habitat",
        Some(&mesh.invite("habitat")),
        &[n1.addr()],
    );
    assert!(wait_for(CEILING, || n1.live() == 1 && n2.live() == 1).is_some());
    let (alice, alice_did) = user(tmp.path(), "alice");
    let hello_path = hello();
    let apply = |key: &str, name: &str, proofs: &[&str]| {
        let mut args = vec![
            "--key",
            key,
            "apply",
            &hello_path,
            "--name",
            name,
            "--data-dir",
            n1.d(),
        ];
        for p in proofs {
            args.extend_from_slice(&["--proof", p]);
        }
        run(&args)
    };

    // No right at all: refused where it is written, with the reason, and
    // visible as rejected; nothing reaches the other node.
    let (ok, _, e) = apply(&alice, "x", &[]);
    assert!(!ok && e.contains("not authorized"), "{e}");
    let ps = n1.ps();
    assert!(
        ps["rejected"].to_string().contains("not authorized"),
        "{ps}"
    );

    // A token of another mesh is worthless here, and so is that mesh's root.
    let foreign = delegate(&other.root_key(), &alice_did, "/manifest", &[]);
    let (ok, _, e) = apply(&alice, "x", &[&foreign]);
    assert!(!ok && e.contains("not authorized"), "{e}");
    let (ok, _, e) = apply(&other.root_key(), "x", &[]);
    assert!(!ok && e.contains("mesh root"), "{e}");

    // An expired delegation takes nothing new.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = delegate(
        &mesh.root_key(),
        &alice_did,
        "/manifest",
        &["--exp", &(now - 3600).to_string()],
    );
    let (ok, _, e) = apply(&alice, "x", &[&expired]);
    assert!(!ok && e.contains("not authorized"), "{e}");

    // A delegation scoped by name: team-a-* only.
    let scoped = delegate(
        &mesh.root_key(),
        &alice_did,
        "/manifest",
        &["--pol", r#"[["like", ".name", "team-a-*"]]"#],
    );
    let (ok, _, e) = apply(&alice, "team-b-hello", &[&scoped]);
    assert!(!ok && e.contains("not authorized"), "{e}");
    let (ok, _, e) = apply(&alice, "team-a-hello", &[&scoped]);
    assert!(ok, "{e}");
    let seen = wait_for(CEILING, || {
        brane(&n2.ps(), "team-a-hello", "hello").is_some()
    });
    assert!(seen.is_some(), "{}", n2.ps());
    for n in [&n1, &n2] {
        let names: Vec<String> = n.ps()["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, vec!["team-a-hello"], "only the authorized manifest");
    }

    // Revoking alice takes her manifest away everywhere, and her chain
    // writes nothing new.
    let (ok, _, e) = run(&[
        "node",
        "revoke",
        &alice_did,
        "--data-dir",
        n2.d(),
        "--mesh-dir",
        mesh.dir.to_str().unwrap(),
    ]);
    assert!(ok, "{e}");
    let gone = wait_for(CEILING, || {
        [&n1, &n2]
            .iter()
            .all(|n| n.ps()["manifests"].as_array().is_some_and(Vec::is_empty))
    });
    assert!(gone.is_some(), "{}", n1.ps());
    let (ok, _, e) = apply(&alice, "team-a-again", &[&scoped]);
    assert!(!ok && e.contains("revoked"), "{e}");
}
