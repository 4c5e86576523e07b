//! Real processes in Linux network namespaces the test creates itself:
//! four nodes on a bridge find each other by mDNS only, and two nodes find
//! each other through real (userspace, wireguard-go) WireGuard interfaces.
//! Traffic never leaves these namespaces; mDNS never runs on the host's
//! interfaces. Skipped, with a message, without root, `ip netns`,
//! `wireguard-go` or `wg`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mesh_common;
#[path = "../../testing/prereq.rs"]
mod prereq;

use std::process::Command;
use std::time::Duration;

use mesh_common::{Daemon, bridge, init_mesh, invite, netns_available, sh, state_of, wait_for};

fn skip(why: &str) {
    prereq::missing(why);
}

#[test]
fn four_namespaces_find_each_other_by_mdns_only() {
    if let Err(why) = netns_available() {
        return skip(&why);
    }
    let tag = format!("om{}", std::process::id() % 100_000);
    let _ns = bridge(&tag, 4, 77);
    let tmp = tempfile::tempdir().unwrap();
    let mesh = tmp.path().join("mesh");
    init_mesh(&mesh);
    let token = invite(&mesh, &[]);
    let names = ["lan0", "lan1", "lan2", "lan3"];
    let nodes: Vec<Daemon> = (0..4)
        .map(|i| {
            let ns = format!("{tag}{i}");
            let listen = format!("/ip4/10.77.0.{}/udp/4001/quic-v1", i + 1);
            Daemon::spawn(
                &tmp.path().join(names[i]),
                names[i],
                Some(&token),
                &[],
                Some(&ns),
                &listen,
                &["--discover", "lan"],
            )
        })
        .collect();
    let formed = wait_for(Duration::from_secs(30), || {
        nodes.iter().all(|n| {
            names
                .iter()
                .filter(|m| **m != n.name)
                .all(|m| state_of(n, m).is_some_and(|s| s.0 == "alive"))
        })
    });
    assert!(
        formed.is_some(),
        "mDNS mesh did not form: {}\nlog:\n{}",
        nodes[0].peers(),
        nodes[0].log()
    );
    assert!(
        nodes[0].log().contains("mdns") || nodes[0].log().contains("admitted"),
        "{}",
        nodes[0].log()
    );
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn wg_key() -> (String, String) {
    let out = Command::new("wg").arg("genkey").output().unwrap();
    let private = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let public = String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    (private, public)
}

#[test]
fn two_namespaces_find_each_other_over_wireguard() {
    if let Err(why) = netns_available() {
        return skip(&why);
    }
    if !have("wireguard-go") || !have("wg") {
        return skip("needs wireguard-go and wg (apt-get install wireguard-go wireguard-tools)");
    }
    let tag = format!("ow{}", std::process::id() % 100_000);
    let _ns = bridge(&tag, 2, 78);
    let tmp = tempfile::tempdir().unwrap();
    let keys = [wg_key(), wg_key()];
    let ifaces = [format!("{tag}g0"), format!("{tag}g1")];
    for i in 0..2 {
        let ns = format!("{tag}{i}");
        let j = 1 - i;
        // Userspace WireGuard; it forks into the background inside the namespace.
        sh(&["ip", "netns", "exec", &ns, "wireguard-go", &ifaces[i]]);
        let keyfile = tmp.path().join(format!("wg{i}.key"));
        std::fs::write(&keyfile, &keys[i].0).unwrap();
        let endpoint = format!("10.78.0.{}:51820", j + 1);
        let allowed = format!("10.99.0.{}/32", j + 1);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "wg",
            "set",
            &ifaces[i],
            "private-key",
            keyfile.to_str().unwrap(),
            "listen-port",
            "51820",
            "peer",
            &keys[j].1,
            "allowed-ips",
            &allowed,
            "endpoint",
            &endpoint,
        ]);
        let addr = format!("10.99.0.{}/24", i + 1);
        sh(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &ifaces[i]]);
        sh(&["ip", "-n", &ns, "link", "set", &ifaces[i], "up"]);
    }
    let mesh = tmp.path().join("mesh");
    init_mesh(&mesh);
    let token = invite(&mesh, &[]);
    let nodes: Vec<Daemon> = (0..2)
        .map(|i| {
            let ns = format!("{tag}{i}");
            let name = format!("wg{i}");
            let listen = format!("/ip4/10.99.0.{}/udp/4001/quic-v1", i + 1);
            let extra = [
                "--discover",
                "wireguard",
                "--wg-interface",
                ifaces[i].as_str(),
                "--overlay-port",
                "4001",
            ];
            Daemon::spawn(
                &tmp.path().join(&name),
                &name,
                Some(&token),
                &[],
                Some(&ns),
                &listen,
                &extra,
            )
        })
        .collect();
    let formed = wait_for(Duration::from_secs(30), || {
        state_of(&nodes[0], "wg1").is_some_and(|s| s.0 == "alive")
            && state_of(&nodes[1], "wg0").is_some_and(|s| s.0 == "alive")
    });
    assert!(
        formed.is_some(),
        "WireGuard mesh did not form: {}\nlog:\n{}",
        nodes[0].peers(),
        nodes[0].log()
    );
    // The member's advertised address is its WireGuard address.
    let peers = nodes[0].peers();
    assert!(peers.to_string().contains("10.99.0.2"), "{peers}");
}
