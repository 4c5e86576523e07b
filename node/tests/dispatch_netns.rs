//! A 3|2 partition of five daemons in network namespaces the test creates
//! (a bridge, one veth each, nftables drop rules inside the namespaces):
//! both sides keep applying, and after the heal every node converges to the
//! same manifests, the same winner for a name applied on both sides, and the
//! same placement, all running. Skipped, with a message, without root,
//! `ip netns` or `nft`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dispatch_common;
mod mesh_common;
#[path = "../../testing/prereq.rs"]
mod prereq;

use std::process::Command;
use std::time::{Duration, Instant};

use dispatch_common::{Mesh, Node, all_ready, placement, run, wait_for, wasm};
use mesh_common::{bridge, sh};

const CEILING: Duration = Duration::from_secs(60);

fn available() -> Result<(), String> {
    let probe = format!("odp{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .status()
        .is_ok_and(|s| s.success());
    let nft = ok
        && Command::new("ip")
            .args(["netns", "exec", &probe, "nft", "list", "ruleset"])
            .status()
            .is_ok_and(|s| s.success());
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    match (ok, nft) {
        (true, true) => Ok(()),
        (false, _) => Err("needs root and `ip netns` (iproute2)".into()),
        (true, false) => Err("needs nftables (`nft`)".into()),
    }
}

/// Drops, inside namespace `ns`, everything from and to `others`.
fn cut(ns: &str, others: &[String]) {
    let set = format!("{{ {} }}", others.join(", "));
    let nft = |rule: &str| sh(&["ip", "netns", "exec", ns, "nft", rule]);
    nft("add table inet omega_partition");
    nft(
        "add chain inet omega_partition in { type filter hook input priority 0 ; policy accept ; }",
    );
    nft(
        "add chain inet omega_partition out { type filter hook output priority 0 ; policy accept ; }",
    );
    nft(&format!(
        "add rule inet omega_partition in ip saddr {set} drop"
    ));
    nft(&format!(
        "add rule inet omega_partition out ip daddr {set} drop"
    ));
}

fn heal(ns: &str) {
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "nft",
        "delete table inet omega_partition",
    ]);
}

fn manifest(dir: &std::path::Path, name: &str, replicas: u32) -> String {
    let path = dir.join(format!("{name}.zgraph.toml"));
    std::fs::write(
        &path,
        format!(
            "[brane.web]\nsubstrate = \"habitat\"\nimage = \"hello:1.0\"\nreplicas = {replicas}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn names(n: &Node) -> Vec<String> {
    n.ps()["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            format!(
                "{}@{}",
                m["name"].as_str().unwrap(),
                m["plan"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_partitioned_mesh_converges_after_the_heal() {
    if let Err(why) = available() {
        return prereq::missing(&why);
    }
    let tag = format!("od{}", std::process::id() % 100_000);
    let _ns = bridge(&tag, 5, 79);
    let tmp = tempfile::tempdir().unwrap();
    let mesh = Mesh::init(&tmp.path().join("mesh"));
    let token = mesh.invite("habitat");
    let seed = "/ip4/10.79.0.1/udp/4001/quic-v1".to_string();
    let nodes: Vec<Node> = (0..5)
        .map(|i| {
            let listen = format!("/ip4/10.79.0.{}/udp/4001/quic-v1", i + 1);
            let peers = if i == 0 { vec![] } else { vec![seed.clone()] };
            Node::spawn(
                &tmp.path().join(format!("p{i}")),
                &format!("lab.lan/p{i}"),
                "habitat",
                Some(&token),
                &peers,
                Some(&format!("{tag}{i}")),
                &listen,
            )
        })
        .collect();
    assert!(
        wait_for(CEILING, || nodes.iter().all(|n| n.live() == 4)).is_some(),
        "mesh did not form: {}",
        nodes[4].log()
    );
    // The image is held on both future sides.
    for n in [&nodes[0], &nodes[3]] {
        let (ok, _, e) = run(&[
            "--key",
            &mesh.root_key(),
            "image",
            "push",
            &wasm("ingest"),
            "--name",
            "hello:1.0",
            "--data-dir",
            n.d(),
        ]);
        assert!(ok, "{e}");
    }
    let apply = |n: &Node, file: &str, name: &str| {
        let (ok, _, e) = run(&[
            "--key",
            &mesh.root_key(),
            "apply",
            file,
            "--name",
            name,
            "--data-dir",
            n.d(),
        ]);
        assert!(ok, "{e}");
    };
    apply(&nodes[1], &manifest(tmp.path(), "base", 3), "base");
    assert!(wait_for(CEILING, || nodes.iter().all(|n| all_ready(&n.ps(), "base"))).is_some());

    // Partition 3|2.
    let addr = |i: usize| format!("10.79.0.{}", i + 1);
    for i in 0..5 {
        let others: Vec<String> = (0..5).filter(|j| (i < 3) != (*j < 3)).map(addr).collect();
        cut(&format!("{tag}{i}"), &others);
    }
    let split = wait_for(CEILING, || {
        nodes
            .iter()
            .enumerate()
            .all(|(i, n)| n.live() == if i < 3 { 2 } else { 1 })
    });
    assert!(split.is_some(), "the partition was not seen");
    // Applies on both sides, including one name on both sides (the later wins).
    apply(&nodes[0], &manifest(tmp.path(), "left", 2), "left");
    apply(&nodes[4], &manifest(tmp.path(), "right", 2), "right");
    apply(&nodes[2], &manifest(tmp.path(), "both-a", 1), "both");
    std::thread::sleep(Duration::from_millis(20));
    apply(&nodes[3], &manifest(tmp.path(), "both-b", 4), "both");
    // Each side converges on its own and runs its placement.
    assert!(
        wait_for(CEILING, || {
            nodes[..3].iter().all(|n| all_ready(&n.ps(), "left"))
                && nodes[3..].iter().all(|n| all_ready(&n.ps(), "right"))
        })
        .is_some(),
        "{}",
        nodes[4].ps()
    );

    for i in 0..5 {
        heal(&format!("{tag}{i}"));
    }
    let healed = Instant::now();
    let converged = wait_for(CEILING, || {
        let first = names(&nodes[0]);
        let p = placement(&nodes[0].ps());
        first.len() == 4
            && nodes.iter().all(|n| {
                let ps = n.ps();
                n.live() == 4
                    && names(n) == first
                    && placement(&ps) == p
                    && ["base", "left", "right", "both"]
                        .iter()
                        .all(|m| all_ready(&ps, m))
            })
    });
    eprintln!(
        "heal -> same state, placement and running everywhere: {:?}",
        healed.elapsed()
    );
    assert!(
        converged.is_some(),
        "did not converge:\n{}\n{}",
        serde_json::to_string_pretty(&nodes[0].ps()).unwrap(),
        serde_json::to_string_pretty(&nodes[4].ps()).unwrap()
    );
    // The later apply of `both` (4 replicas) won everywhere.
    let p = placement(&nodes[1].ps());
    let both = p.iter().find(|(k, _)| k == "both/web").unwrap();
    assert_eq!(both.1.len(), 4, "{both:?}");
}
