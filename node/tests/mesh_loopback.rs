//! Real processes on loopback: three daemons with static discovery form a
//! mesh, a killed one is marked dead within 3 s and comes back with the same
//! identity, and every kind of bad join is refused with its reason logged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mesh_common;

use std::time::{Duration, Instant};

use mesh_common::{Daemon, init_mesh, invite, json, state_of, wait_for};

fn all_alive(node: &Daemon, names: &[&str]) -> bool {
    names
        .iter()
        .all(|n| state_of(node, n) == Some(("alive".into(), "habitat".into())))
}

#[test]
fn three_daemons_form_a_mesh_and_detect_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let mesh = tmp.path().join("mesh");
    init_mesh(&mesh);
    let token = invite(&mesh, &["--name-pattern", "n*"]);
    let n1 = Daemon::start(&tmp.path().join("n1"), "n1", Some(&token), &[]);
    let seed = vec![n1.addr()];
    let n2 = Daemon::start(&tmp.path().join("n2"), "n2", Some(&token), &seed);
    let n3 = Daemon::start(&tmp.path().join("n3"), "n3", Some(&token), &seed);

    let formed = wait_for(Duration::from_secs(20), || {
        all_alive(&n1, &["n2", "n3"])
            && all_alive(&n2, &["n1", "n3"])
            && all_alive(&n3, &["n1", "n2"])
    });
    assert!(
        formed.is_some(),
        "mesh did not form:\nn1 {}\nn2 {}\nn3 {}\nlog n3:\n{}",
        n1.peers(),
        n2.peers(),
        n3.peers(),
        n3.log()
    );
    // The text output shows the same.
    let text = mesh_common::omega()
        .args(["peers", "--data-dir", n1.dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("n2") && text.contains("habitat") && text.contains("alive"),
        "{text}"
    );

    // Secrets and the API socket are private to the node's user.
    for f in ["node.key", "join.token", "api.sock"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(n1.dir.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} has mode {mode:o}");
    }

    let did3 = n3.did();
    let dir3 = n3.dir.clone();
    let killed = Instant::now();
    n3.kill9();
    let dead = wait_for(Duration::from_secs(10), || {
        let s1 = state_of(&n1, "n3").map(|s| s.0);
        let s2 = state_of(&n2, "n3").map(|s| s.0);
        s1.as_deref() == Some("dead") && s2.as_deref() == Some("dead")
    });
    let took = killed.elapsed();
    assert!(
        dead.is_some(),
        "n3 not marked dead: {} {}",
        n1.peers(),
        n2.peers()
    );
    // How fast is a benchmark's question (`omega bench mesh`), not this test's.
    eprintln!("n3 marked dead on both survivors after {took:?}");

    // Restart without --join: the stored token and key are reused.
    let n3 = Daemon::start(&dir3, "n3", None, &seed);
    assert_eq!(n3.did(), did3, "same identity after restart");
    let back = wait_for(Duration::from_secs(15), || {
        all_alive(&n1, &["n3"]) && all_alive(&n2, &["n3"])
    });
    assert!(back.is_some(), "n3 not back: {} {}", n1.peers(), n2.peers());

    // Graceful shutdown: SIGTERM exits 0 and the others see it leave.
    let status = n2.terminate().expect("n2 exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    let left = wait_for(Duration::from_secs(30), || {
        matches!(
            state_of(&n1, "n2").map(|s| s.0).as_deref(),
            Some("left" | "dead")
        )
    });
    assert!(left.is_some(), "{}", n1.peers());
}

fn refused_with(member: &Daemon, joiner: &Daemon, needle: &str) {
    let ok = wait_for(Duration::from_secs(10), || {
        let inbound = member.status()["refusals"].as_array().is_some_and(|r| {
            r.iter().any(|r| {
                r["direction"] == "inbound" && r["reason"].as_str().unwrap_or("").contains(needle)
            })
        });
        let outbound = joiner.status()["refusals"].as_array().is_some_and(|r| {
            r.iter().any(|r| {
                r["direction"] == "outbound" && r["reason"].as_str().unwrap_or("").contains(needle)
            })
        });
        inbound && outbound
    });
    assert!(
        ok.is_some(),
        "no refusal {needle:?}:\nmember {}\njoiner {}\nlog:\n{}",
        member.status(),
        joiner.status(),
        member.log()
    );
    assert!(member.log().contains("refused peer"), "refusal logged");
    let peers = member.peers();
    assert!(
        !peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == joiner.name.as_str() && p["state"] == "alive"),
        "refused node became a member: {peers}"
    );
}

#[test]
fn bad_joins_are_refused_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let mesh = tmp.path().join("mesh");
    init_mesh(&mesh);
    let token = invite(&mesh, &[]);
    let m = Daemon::start(&tmp.path().join("m"), "member", Some(&token), &[]);
    let seed = vec![m.addr()];

    let none = Daemon::start(&tmp.path().join("none"), "none", None, &seed);
    refused_with(&m, &none, "no join token");
    drop(none);

    let past = "1000000000";
    let expired = invite(&mesh, &["--expires-at", past]);
    let e = Daemon::start(&tmp.path().join("exp"), "expired", Some(&expired), &seed);
    refused_with(&m, &e, "expired");
    drop(e);

    let other = tmp.path().join("other-mesh");
    init_mesh(&other);
    let foreign = invite(&other, &[]);
    let f = Daemon::start(
        &tmp.path().join("foreign"),
        "foreign",
        Some(&foreign),
        &seed,
    );
    refused_with(&m, &f, "token is for mesh");
    drop(f);

    let tampered = tamper(&token);
    let t = Daemon::start(
        &tmp.path().join("tampered"),
        "tampered",
        Some(&tampered),
        &seed,
    );
    refused_with(&m, &t, "signature");
    drop(t);

    // A member that is revoked is dropped and refused when it comes back.
    let r = Daemon::start(&tmp.path().join("rev"), "rev", Some(&token), &seed);
    assert!(
        wait_for(Duration::from_secs(15), || all_alive(&m, &["rev"])).is_some(),
        "{}",
        m.peers()
    );
    let v = json(&[
        "node",
        "revoke",
        "rev",
        "--data-dir",
        m.dir.to_str().unwrap(),
        "--mesh-dir",
        mesh.to_str().unwrap(),
    ]);
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        wait_for(Duration::from_secs(30), || state_of(&m, "rev").is_none()).is_some(),
        "{}",
        m.peers()
    );
    let dir = r.dir.clone();
    drop(r);
    let r = Daemon::start(&dir, "rev", None, &seed);
    refused_with(&m, &r, "revoked");
    drop(r);

    // A leaked invite: revoked by its text, it expels the node that joined
    // with it and refuses every node that presents it later.
    let leaked = invite(&mesh, &[]);
    let _leak = Daemon::start(&tmp.path().join("leak"), "leak", Some(&leaked), &seed);
    assert!(
        wait_for(Duration::from_secs(15), || all_alive(&m, &["leak"])).is_some(),
        "{}",
        m.peers()
    );
    let v = json(&[
        "node",
        "revoke",
        &leaked,
        "--data-dir",
        m.dir.to_str().unwrap(),
        "--mesh-dir",
        mesh.to_str().unwrap(),
    ]);
    assert_eq!(
        (v["ok"].clone(), v["kind"].clone()),
        (true.into(), "token".into()),
        "{v}"
    );
    assert!(
        wait_for(Duration::from_secs(10), || state_of(&m, "leak").is_none()).is_some(),
        "the node admitted with the revoked invite stayed: {}",
        m.peers()
    );
    let late = Daemon::start(&tmp.path().join("late"), "late", Some(&leaked), &seed);
    refused_with(&m, &late, "revoked");
}

/// Flips one character of the policy inside the token's delegation: still
/// well-formed, but the root's signature no longer matches.
fn tamper(token: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = token.strip_prefix("omega-join1.").unwrap();
    let mut bytes = b64.decode(body).unwrap();
    let at = bytes
        .windows(7)
        .position(|w| w == b"habitat")
        .expect("policy in token");
    bytes[at + 1] = b'o';
    format!("omega-join1.{}", b64.encode(bytes))
}

#[test]
fn metrics_are_served_in_prometheus_text() {
    use std::io::{Read as _, Write as _};
    let tmp = tempfile::tempdir().unwrap();
    let mesh = tmp.path().join("mesh");
    init_mesh(&mesh);
    let token = invite(&mesh, &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let n = Daemon::spawn(
        &tmp.path().join("n"),
        "n",
        Some(&token),
        &[],
        None,
        "/ip4/127.0.0.1/udp/0/quic-v1",
        &["--metrics", &addr],
    );
    let mut body = String::new();
    let got = wait_for(Duration::from_secs(30), || {
        let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
            return false;
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        body.clear();
        let _ = s.read_to_string(&mut body);
        body.contains("omega_admission_refusals")
    });
    assert!(got.is_some(), "{body}\n{}", n.log());
    assert!(body.contains("omega_members_live"), "{body}");
    assert!(body.contains("libp2p_"), "{body}");
}
