//! `omega token revoke` across real daemons on loopback.
//!
//! The mesh root delegates `/manifest`, `/image` and `/event/emit` to an
//! operator, who re-delegates them to a CI key (a chain of depth 2); a third
//! key holds its own grants from the root. All three apply, push and emit
//! through node A. The root then revokes the operator's three delegations
//! through node A; node B, once the revocation replicated (the operator's
//! and CI's manifests leave its `omega ps`), refuses every apply, push and
//! emit on either chain with an error naming the revoked delegation, while
//! the third key's still work. A revoked invite keeps a new daemon out
//! while another invite lets one in; and node B, restarted alone (no member
//! to hear it from again), still refuses the revoked chains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dispatch_common;
mod mesh_common;

use std::path::Path;
use std::time::Duration;

use dispatch_common::{Mesh, Node, run, wait_for, wasm};
use serde_json::Value;

/// Generous: a loaded two-core machine runs several daemons and builds.
const CEILING: Duration = Duration::from_secs(60);

/// A principal: its key file, its DID, and its chain from the mesh root for
/// each of the three commands (root first).
struct Principal {
    name: &'static str,
    key: String,
    did: String,
    manifest: Vec<String>,
    image: Vec<String>,
    emit: Vec<String>,
}

impl Principal {
    fn new(dir: &Path, name: &'static str) -> Self {
        let key = dir.join(format!("{name}.key")).display().to_string();
        let (ok, v, e) = run(&["--key", &key, "id", "new"]);
        assert!(ok, "{e}");
        Self {
            name,
            key,
            did: v["did"].as_str().unwrap().to_owned(),
            manifest: Vec::new(),
            image: Vec::new(),
            emit: Vec::new(),
        }
    }

    /// Runs `omega --key KEY VERB… --proof CHAIN… --data-dir NODE`.
    fn sign(&self, verb: &[&str], chain: &[String], node: &Node) -> (bool, Value, String) {
        let mut args = vec!["--key", &self.key];
        args.extend_from_slice(verb);
        for p in chain {
            args.extend_from_slice(&["--proof", p]);
        }
        args.extend_from_slice(&["--data-dir", node.d()]);
        run(&args)
    }

    /// `omega apply` of a one-brane manifest `name` (running `IMAGE:1.0`).
    fn apply(&self, dir: &Path, name: &str, image: &str, node: &Node) -> (bool, Value, String) {
        let file = dir.join(format!("{name}.zgraph.toml"));
        std::fs::write(
            &file,
            format!("[brane.b]\nsubstrate = \"habitat\"\nimage = \"{image}:1.0\"\n"),
        )
        .unwrap();
        let verb = ["apply", file.to_str().unwrap(), "--name", name];
        self.sign(&verb, &self.manifest, node)
    }

    /// `omega image push` of the sink brane as `name:1.0`.
    fn push(&self, name: &str, node: &Node) -> (bool, Value, String) {
        let (file, tag) = (wasm("sink"), format!("{name}:1.0"));
        let verb = ["image", "push", &file, "--name", &tag];
        self.sign(&verb, &self.image, node)
    }

    /// `omega emit tick` into `manifest/b`.
    fn emit(&self, manifest: &str, node: &Node) -> (bool, Value, String) {
        let to = format!("{manifest}/b");
        let verb = ["emit", "tick", "1", "--to", &to];
        self.sign(&verb, &self.emit, node)
    }
}

/// `omega token issue` (by the subject, valid 24 h) or, with a proof,
/// `omega token delegate` (valid 2 h, inside its proof's lifetime): the
/// token's base64 text.
fn grant(key: &str, proof: Option<&str>, aud: &str, cmd: &str) -> String {
    let mut args = vec!["--key", key, "token"];
    match proof {
        None => args.push("issue"),
        Some(p) => args.extend_from_slice(&["delegate", "--proof", p, "--expires", "2h"]),
    }
    args.extend_from_slice(&["--aud", aud, "--cmd", cmd]);
    let (ok, v, e) = run(&args);
    assert!(ok, "{e}");
    v["token"].as_str().unwrap().to_owned()
}

fn cid(token: &str) -> String {
    let (ok, v, e) = run(&["token", "inspect", token]);
    assert!(ok, "{e}");
    v["cid"].as_str().unwrap().to_owned()
}

fn manifests(node: &Node) -> Vec<String> {
    let mut names: Vec<String> = node.ps()["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// The members `node` sees alive, by name.
fn alive(node: &Node) -> Vec<String> {
    run(&["peers", "--data-dir", node.d()])
        .1
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["state"] == "alive")
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// Whether `node` reports a join refusal in `direction` whose reason
/// contains `needle`.
fn refusal(node: &Node, direction: &str, needle: &str) -> bool {
    node.status()["refusals"].as_array().is_some_and(|r| {
        r.iter().any(|r| {
            r["direction"] == direction && r["reason"].as_str().unwrap_or("").contains(needle)
        })
    })
}

/// Asserts that every apply, push and emit `who` signs through `node` is
/// refused, each error naming the revoked delegation `revoked` (a CID).
fn all_refused(who: &Principal, tmp: &Path, node: &Node, revoked: &[String; 3], round: &str) {
    let name = format!("{}-{round}", who.name);
    let needle = |cid: &str| format!("{cid}: revoked");
    let (ok, _, e) = who.apply(tmp, &name, &name, node);
    assert!(!ok && e.contains(&needle(&revoked[0])), "apply: {e}");
    let (ok, _, e) = who.push(&name, node);
    assert!(!ok && e.contains(&needle(&revoked[1])), "push: {e}");
    // Into a manifest that is still there (the third key's), so the
    // revocation is the only reason to refuse.
    let (ok, _, e) = who.emit("other", node);
    assert!(!ok && e.contains(&needle(&revoked[2])), "emit: {e}");
    eprintln!("{} ({round}), emit refused: {}", who.name, e.trim());
}

/// Asserts that `who` applies, pushes and emits through `node`.
fn all_accepted(who: &Principal, tmp: &Path, node: &Node, manifest: &str, image: &str) {
    let (ok, v, e) = who.push(image, node);
    assert!(ok && v["replicated"] == true, "push: {e}");
    let (ok, _, e) = who.apply(tmp, manifest, image, node);
    assert!(ok, "apply: {e}");
    let listed = wait_for(CEILING, || manifests(node).iter().any(|m| m == manifest));
    assert!(listed.is_some(), "{manifest} not listed: {}", node.ps());
    let (ok, v, e) = who.emit(manifest, node);
    assert!(
        ok && v["ids"].as_array().is_some_and(|i| i.len() == 1),
        "emit: {e}"
    );
}

#[test]
fn a_revoked_delegation_and_every_chain_through_it_are_refused_on_every_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mesh = Mesh::init(&t.join("mesh"));
    let root = mesh.root_key();
    let a = Node::start(
        &t.join("a"),
        "a",
        "habitat",
        Some(&mesh.invite("habitat")),
        &[],
    );
    let seed = vec![a.addr()];
    let b = Node::start(
        &t.join("b"),
        "b",
        "habitat",
        Some(&mesh.invite("habitat")),
        &seed,
    );
    let formed = wait_for(CEILING, || a.live() == 1 && b.live() == 1);
    assert!(formed.is_some(), "mesh did not form:\n{}", b.log());

    // 1. root → operator, for each command; 2. operator → ci (depth 2);
    // and root → other, a delegation the revocation must not touch.
    let cmds = ["/manifest", "/image", "/event/emit"];
    let mut op = Principal::new(t, "op");
    let mut ci = Principal::new(t, "ci");
    let mut other = Principal::new(t, "other");
    for (i, cmd) in cmds.iter().enumerate() {
        let op_grant = grant(&root, None, &op.did, cmd);
        let ci_grant = grant(&op.key, Some(&op_grant), &ci.did, cmd);
        let other_grant = grant(&root, None, &other.did, cmd);
        for (p, chain) in [
            (&mut op, vec![op_grant.clone()]),
            (&mut ci, vec![op_grant, ci_grant]),
            (&mut other, vec![other_grant]),
        ] {
            match i {
                0 => p.manifest = chain,
                1 => p.image = chain,
                _ => p.emit = chain,
            }
        }
    }

    // The baseline, through node A: every chain works, so the refusals
    // below are not vacuous.
    for p in [&op, &ci, &other] {
        all_accepted(p, t, &a, p.name, &format!("{}-img", p.name));
    }
    let everywhere = wait_for(CEILING, || manifests(&b) == strings(&["ci", "op", "other"]));
    assert!(everywhere.is_some(), "{}", b.ps());

    // Neither the revoked delegation's audience nor its own delegate issued
    // a delegation of its chain: neither may revoke it.
    for who in [&op, &ci] {
        let (ok, _, e) = run(&[
            "--key",
            &who.key,
            "token",
            "revoke",
            &op.manifest[0],
            "--data-dir",
            a.d(),
        ]);
        assert!(!ok && e.contains("may not revoke"), "{}: {e}", who.name);
    }

    // 3. The root, which issued them, revokes the operator's delegations
    // through node A.
    let revoked: [String; 3] = [&op.manifest, &op.image, &op.emit].map(|c| cid(&c[0]));
    for (chain, cid) in [&op.manifest, &op.image, &op.emit].iter().zip(&revoked) {
        let (ok, v, e) = run(&[
            "--key",
            &root,
            "token",
            "revoke",
            &chain[0],
            "--data-dir",
            a.d(),
        ]);
        assert!(ok, "{e}");
        assert_eq!(v["revoked"].as_str(), Some(cid.as_str()), "{v}");
    }

    // 4. Replicated to node B: what the revoked chains had written leaves
    // its desired state (the third key's stays)…
    let dropped = wait_for(CEILING, || manifests(&b) == strings(&["other"]));
    assert!(dropped.is_some(), "{}", b.ps());
    // …and B refuses both chains through the revoked delegations, each
    // error naming the delegation revoked.
    all_refused(&op, t, &b, &revoked, "after");
    all_refused(&ci, t, &b, &revoked, "after");
    // The revocation is precise: the other delegation still works there.
    all_accepted(&other, t, &b, "other-2", "other-img2");
    let on_a = wait_for(CEILING, || manifests(&a) == strings(&["other", "other-2"]));
    assert!(on_a.is_some(), "{}", a.ps());

    // 5. Joins: an invite revoked with `omega token revoke` (the join
    // token itself names it) expels the daemon admitted with it and keeps
    // out a new daemon presenting it, at node B; a daemon with another
    // invite is admitted.
    let (leaked, spare) = (mesh.invite("habitat"), mesh.invite("habitat"));
    let early = Node::start(&t.join("e"), "e", "habitat", Some(&leaked), &[b.addr()]);
    let joined = wait_for(CEILING, || {
        [&a, &b].iter().all(|n| alive(n).contains(&"e".to_owned()))
    });
    assert!(joined.is_some(), "{}", early.status());
    let (ok, v, e) = run(&[
        "--key",
        &root,
        "token",
        "revoke",
        &leaked,
        "--data-dir",
        a.d(),
    ]);
    assert!(ok, "{e}");
    let invite_cid = v["revoked"].as_str().unwrap().to_owned();
    let expelled = wait_for(CEILING, || {
        [&a, &b].iter().all(|n| !alive(n).contains(&"e".to_owned()))
    });
    assert!(expelled.is_some(), "{}\n{}", a.status(), b.status());
    drop(early);
    let c = Node::start(&t.join("c"), "c", "habitat", Some(&leaked), &[b.addr()]);
    let refused = wait_for(CEILING, || {
        refusal(&b, "inbound", &invite_cid) && refusal(&c, "outbound", "revoked")
    });
    assert!(
        refused.is_some(),
        "no refusal naming {invite_cid}:\nb {}\nc {}",
        b.status(),
        c.status()
    );
    assert_eq!(c.live(), 0, "{}", c.status());
    drop(c);
    let d = Node::start(&t.join("d"), "d", "habitat", Some(&spare), &[b.addr()]);
    let admitted = wait_for(CEILING, || {
        [&a, &b].iter().all(|n| alive(n).contains(&"d".to_owned()))
    });
    assert!(admitted.is_some(), "{}", d.status());
    drop(d);

    // 6. Node B restarted with nobody to hear the revocations from again:
    // they come back from its own disk.
    drop(a);
    let dir = b.kill9();
    // The document is loaded before the API answers: refused from the
    // first request on.
    let b = Node::start(&dir, "b", "habitat", None, &[]);
    all_refused(&op, t, &b, &revoked, "restarted");
    all_refused(&ci, t, &b, &revoked, "restarted");
    assert_eq!(manifests(&b), strings(&["other", "other-2"]), "{}", b.ps());
    let (ok, _, e) = other.apply(t, "other-3", "other-img", &b);
    assert!(ok, "{e}");
}
