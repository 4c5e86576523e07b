//! Peers beyond one hop, with real processes in network namespaces the test
//! creates itself (10.77.1-3.0/24; nothing appears on the host):
//!
//! - a line A — B — C where A and C have no route to each other (B is in
//!   both networks and does not forward), static discovery A → B and C → B:
//!   A and C learn each other as members through B and keep each other alive
//!   through B's indirect probes; Kademlia holds only admitted peers, so A's
//!   routing table has B and not C;
//! - A, B, C on one bridge, A and C knowing only B: A and C learn of each
//!   other through B, connect directly, admit each other, and both end up in
//!   each other's Kademlia routing table.
//!
//! Skipped, with a message, without root or `ip netns`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mesh_common;
#[path = "../../testing/prereq.rs"]
mod prereq;

use std::time::Duration;

use mesh_common::{Daemon, Namespaces, init_mesh, invite, netns_available, sh, state_of, wait_for};
use serde_json::Value;

fn skip(why: &str) {
    prereq::missing(why);
}

fn tag(kind: &str) -> String {
    format!("ok{kind}{}", std::process::id() % 100_000)
}

/// A veth pair between namespaces `a` (`ia`, `addr_a`) and `b` (`ib`,
/// `addr_b` if any).
fn link(a: &str, ia: &str, addr_a: &str, b: &str, ib: &str, addr_b: Option<&str>) {
    // Created inside the namespaces: nothing ever appears on the host.
    sh(&[
        "ip", "-n", a, "link", "add", ia, "type", "veth", "peer", "name", ib, "netns", b,
    ]);
    sh(&["ip", "-n", a, "addr", "add", addr_a, "dev", ia]);
    if let Some(addr_b) = addr_b {
        sh(&["ip", "-n", b, "addr", "add", addr_b, "dev", ib]);
    }
    sh(&["ip", "-n", a, "link", "set", ia, "up"]);
    sh(&["ip", "-n", b, "link", "set", ib, "up"]);
}

fn add_ns(all: &mut Namespaces, ns: &str) {
    sh(&["ip", "netns", "add", ns]);
    all.0.push(ns.to_owned());
    sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
}

/// The member entry `node` reports for `name`.
fn member(node: &Daemon, name: &str) -> Option<Value> {
    node.peers()
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

fn alive(node: &Daemon, name: &str) -> bool {
    state_of(node, name).is_some_and(|s| s.0 == "alive")
}

fn kad_peers(node: &Daemon) -> u64 {
    node.status()["kad_peers"].as_u64().unwrap_or(0)
}

#[test]
fn a_line_of_three_learns_its_far_end_through_the_middle() {
    if let Err(why) = netns_available() {
        return skip(&why);
    }
    let t = tag("l");
    let (na, nb, nc) = (format!("{t}a"), format!("{t}b"), format!("{t}c"));
    // The guard exists before the first namespace, so a failing step still
    // deletes whatever was created.
    let mut ns = Namespaces(Vec::new());
    for n in [&na, &nb, &nc] {
        add_ns(&mut ns, n);
    }
    link(&na, "va", "10.77.1.1/24", &nb, "vb1", Some("10.77.1.2/24"));
    link(&nc, "vc", "10.77.2.3/24", &nb, "vb2", Some("10.77.2.2/24"));
    // No forwarding on B, and A has no route to 10.77.2.0/24 anyway.
    sh(&[
        "ip",
        "netns",
        "exec",
        &nb,
        "sh",
        "-c",
        "echo 0 > /proc/sys/net/ipv4/ip_forward",
    ]);
    let unreachable = std::process::Command::new("ip")
        .args(["-n", &na, "route", "get", "10.77.2.3"])
        .output()
        .map(|o| !o.status.success())
        .unwrap();
    assert!(unreachable, "A must have no route to C");

    let tmp = tempfile::tempdir().unwrap();
    let mesh = tmp.path().join("mesh");
    init_mesh(&mesh);
    let token = invite(&mesh, &[]);
    let b = Daemon::spawn(
        &tmp.path().join("b"),
        "b",
        Some(&token),
        &[],
        Some(&nb),
        "/ip4/0.0.0.0/udp/4001/quic-v1",
        &[],
    );
    let a = Daemon::spawn(
        &tmp.path().join("a"),
        "a",
        Some(&token),
        &["/ip4/10.77.1.2/udp/4001/quic-v1".into()],
        Some(&na),
        "/ip4/10.77.1.1/udp/4001/quic-v1",
        &[],
    );
    let c = Daemon::spawn(
        &tmp.path().join("c"),
        "c",
        Some(&token),
        &["/ip4/10.77.2.2/udp/4001/quic-v1".into()],
        Some(&nc),
        "/ip4/10.77.2.3/udp/4001/quic-v1",
        &[],
    );
    let formed = wait_for(Duration::from_secs(30), || {
        alive(&a, "b") && alive(&c, "b") && alive(&a, "c") && alive(&c, "a")
    });
    assert!(
        formed.is_some(),
        "A and C did not learn each other through B\nA: {}\nC: {}\nA log:\n{}",
        a.peers(),
        c.peers(),
        a.log()
    );
    // They stay alive: B answers the indirect probes for the pair that
    // cannot reach each other. Sampled over several suspicion timeouts.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            alive(&a, "c") && alive(&c, "a"),
            "A and C marked each other not alive\nA: {}\nC: {}\nA log:\n{}",
            a.peers(),
            c.peers(),
            a.log()
        );
    }
    // A knows C's identity and address from C's member record (relayed by B),
    // but has no connection to it.
    let mc = member(&a, "c").unwrap();
    assert_eq!(mc["peer_id"], c.status()["peer_id"], "{mc}");
    assert!(mc.to_string().contains("10.77.2.3"), "{mc}");
    assert_eq!(mc["connected"], false, "{mc}");
    // Kademlia keeps admitted peers only: A's table has B, not C.
    assert_eq!(kad_peers(&a), 1, "{}", a.status());
    assert_eq!(kad_peers(&c), 1, "{}", c.status());
    assert_eq!(kad_peers(&b), 2, "{}", b.status());
    drop((a, b, c));
    drop(ns);
}

#[test]
fn two_nodes_that_only_know_a_third_connect_to_each_other() {
    if let Err(why) = netns_available() {
        return skip(&why);
    }
    let t = tag("s");
    let br = format!("{t}br");
    let mut ns = Namespaces(Vec::new());
    add_ns(&mut ns, &br);
    sh(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
    sh(&["ip", "-n", &br, "link", "set", "br0", "up"]);
    for i in 1..=3 {
        let n = format!("{t}{i}");
        add_ns(&mut ns, &n);
        let (inner, outer) = (format!("{t}v{i}"), format!("{t}p{i}"));
        link(&n, &inner, &format!("10.77.3.{i}/24"), &br, &outer, None);
        sh(&["ip", "-n", &br, "link", "set", &outer, "master", "br0"]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let mesh = tmp.path().join("mesh");
    init_mesh(&mesh);
    let token = invite(&mesh, &[]);
    let spawn = |i: u8, name: &str, peers: &[String]| {
        Daemon::spawn(
            &tmp.path().join(name),
            name,
            Some(&token),
            peers,
            Some(&format!("{t}{i}")),
            &format!("/ip4/10.77.3.{i}/udp/4001/quic-v1"),
            &[],
        )
    };
    let b = spawn(2, "b", &[]);
    let via_b = ["/ip4/10.77.3.2/udp/4001/quic-v1".to_owned()];
    let a = spawn(1, "a", &via_b);
    let c = spawn(3, "c", &via_b);
    let connected = |n: &Daemon, name: &str| {
        member(n, name).is_some_and(|m| m["state"] == "alive" && m["connected"] == true)
    };
    let formed = wait_for(Duration::from_secs(30), || {
        connected(&a, "c") && connected(&c, "a") && kad_peers(&a) == 2 && kad_peers(&c) == 2
    });
    assert!(
        formed.is_some(),
        "A and C did not connect through what B told them\nA: {} {}\nC: {}\nA log:\n{}",
        a.status(),
        a.peers(),
        c.peers(),
        a.log()
    );
    let mc = member(&a, "c").unwrap();
    assert_eq!(mc["peer_id"], c.status()["peer_id"], "{mc}");
    assert!(mc.to_string().contains("10.77.3.3"), "{mc}");
    drop((a, b, c));
    drop(ns);
}
