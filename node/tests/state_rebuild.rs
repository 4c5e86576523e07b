//! A node whose `state.redb` was damaged while it was down: it refuses to
//! start with an error that names the file and the way back, and with
//! `--rebuild-state` it starts empty under the same identity, re-syncs the
//! mesh's manifests from its peer, and its own writes reach the peer again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dispatch_common;
mod mesh_common;

use std::time::{Duration, Instant};

use dispatch_common::{Mesh, Node, hello, run, wait_for};
use mesh_common::node_command;

const CEILING: Duration = Duration::from_secs(60);
const LISTEN: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

fn has_manifest(n: &Node, name: &str) -> bool {
    n.ps()["manifests"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m["name"] == name))
}

#[test]
fn a_damaged_store_is_refused_then_rebuilt_from_the_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let mesh = Mesh::init(&tmp.path().join("mesh"));
    let n1 = Node::start(
        &tmp.path().join("n1"),
        "n1",
        "habitat",
        Some(&mesh.invite("habitat")),
        &[],
    );
    let peers = [n1.addr()];
    let dir2 = tmp.path().join("n2");
    let n2 = Node::start(
        &dir2,
        "n2",
        "habitat",
        Some(&mesh.invite("habitat")),
        &peers,
    );
    // One manifest written through each node: n2's own yrs client wrote too.
    for (node, name) in [(&n1, "hello"), (&n2, "hello-from-n2")] {
        let (ok, _, e) = run(&[
            "--key",
            &mesh.root_key(),
            "apply",
            &hello(),
            "--name",
            name,
            "--data-dir",
            node.d(),
        ]);
        assert!(ok, "{e}");
    }
    assert!(
        wait_for(CEILING, || has_manifest(&n2, "hello")
            && has_manifest(&n1, "hello-from-n2"))
        .is_some(),
        "the manifests did not spread:\n{}\n{}",
        n1.ps(),
        n2.ps()
    );
    let did = n2.status()["did"].clone();
    n2.kill9();

    // Every page after the file header overwritten.
    let file = dir2.join("state.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[4096..].fill(0x5a);
    std::fs::write(&file, &bytes).unwrap();

    let mut child = node_command(&dir2, "n2", "habitat", None, &peers, None, LISTEN, &[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > CEILING {
            let _ = child.kill();
            panic!("a node on a damaged store kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("is damaged"), "{err}");
    assert!(err.contains("--rebuild-state"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let n2 = Node::spawn_with(
        &dir2,
        "n2",
        "habitat",
        None,
        &peers,
        None,
        LISTEN,
        &["--rebuild-state"],
        Duration::from_secs(20),
    );
    assert_eq!(n2.status()["did"], did, "the node key is kept");
    let aside: Vec<_> = std::fs::read_dir(&dir2)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.redb.damaged-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept aside");
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), bytes);
    assert!(
        wait_for(CEILING, || has_manifest(&n2, "hello")
            && has_manifest(&n2, "hello-from-n2"))
        .is_some(),
        "the rebuilt node did not re-sync:\n{}\nlog:\n{}",
        n2.ps(),
        n2.log()
    );
    // What the rebuilt node writes reaches its peer (under a yrs client id
    // it never wrote under before: the old ones' updates are in the mesh).
    let (ok, _, e) = run(&[
        "--key",
        &mesh.root_key(),
        "apply",
        &hello(),
        "--name",
        "hello-again",
        "--data-dir",
        n2.d(),
    ]);
    assert!(ok, "{e}");
    assert!(
        wait_for(CEILING, || has_manifest(&n1, "hello-again")).is_some(),
        "n1 never saw the rebuilt node's write:\n{}",
        n1.ps()
    );
}
