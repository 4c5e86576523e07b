//! The gateway and name-addressed brane calls with real daemons on
//! loopback: node `a` runs the gateway and brane `web`; node `b` runs
//! brane `api`. A request for `api.example.com` at `a` is forwarded over
//! `/omega/http/1` to `b`; `web` calls `api` by name (`http://api.brane/`)
//! across the mesh because its manifest grants it; `open` has no grant and
//! is refused; an unknown host is 404; `omega ps` reports each resolver,
//! `omega describe` the ones that route to a brane.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dispatch_common;
mod mesh_common;

use std::io::{Read, Write};
use std::time::Duration;

use dispatch_common::{Mesh, Node, run, wait_for, wasm};

const MANIFEST: &str = r#"
[brane.api]
substrate = "gaia"
http = true
image = "hello-http:1"
hosts = ["b"]

[brane.web]
substrate = "gaia"
http = true
image = "hello-http:1"
hosts = ["a"]

[brane.web.grants]
call = ["api"]

[brane.open]
substrate = "gaia"
http = true
image = "hello-http:1"
hosts = ["a"]

[resolver.public]
host = "shop.example.com"
mode = "ngrok"
brane = "web"

[resolver.api]
host = "api.example.com"
mode = "ngrok"
brane = "api"

[resolver.open]
host = "open.example.com"
mode = "ngrok"
brane = "open"
"#;

/// `GET path` with `Host: host` at `addr`: (status, body).
fn get(addr: &str, host: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked bodies: keep the text lines (the sizes are hex lines).
    let text: Vec<&str> = body
        .lines()
        .filter(|l| !l.is_empty() && u64::from_str_radix(l.trim(), 16).is_err())
        .collect();
    (status, text.join("\n"))
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn the_gateway_forwards_across_the_mesh_and_branes_call_branes_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let mesh = Mesh::init(&tmp.path().join("mesh"));
    let gateway = free_port();
    let token = mesh.invite("gaia");
    let a = Node::spawn_with(
        &tmp.path().join("a"),
        "a",
        "gaia",
        Some(&token),
        &[],
        None,
        "/ip4/127.0.0.1/udp/0/quic-v1",
        &["--gateway", &gateway, "--ngrok-api", "127.0.0.1:9"],
        Duration::from_secs(30),
    );
    let b = Node::start(
        &tmp.path().join("b"),
        "b",
        "gaia",
        Some(&mesh.invite("gaia")),
        &[a.addr()],
    );
    assert!(wait_for(Duration::from_secs(60), || a.live() == 1 && b.live() == 1).is_some());
    let (ok, _, e) = run(&[
        "--key",
        &mesh.root_key(),
        "image",
        "push",
        &wasm("hello-http"),
        "--name",
        "hello-http:1",
        "--data-dir",
        a.d(),
    ]);
    assert!(ok, "{e}");
    let file = tmp.path().join("shop.zgraph.toml");
    std::fs::write(&file, MANIFEST).unwrap();
    let (ok, _, e) = run(&[
        "--key",
        &mesh.root_key(),
        "apply",
        file.to_str().unwrap(),
        "--data-dir",
        a.d(),
    ]);
    assert!(ok, "{e}");

    // api runs on b only: a forwards it over the mesh.
    let mut last = (0, String::new());
    let served = wait_for(Duration::from_secs(90), || {
        last = get(&gateway, "api.example.com", "/hi");
        last.0 == 200
    });
    assert!(
        served.is_some(),
        "{last:?}\nlog a:\n{}\nlog b:\n{}",
        a.log(),
        b.log()
    );
    assert_eq!(last.1, "hello from omega /hi");

    // web (on a) calls api (on b) by name: granted.
    let served = wait_for(Duration::from_secs(60), || {
        last = get(&gateway, "shop.example.com", "/via/api/x");
        last.0 == 200
    });
    assert!(served.is_some(), "{last:?}\nlog a:\n{}", a.log());
    assert_eq!(last.1, "via api: hello from omega /x");

    // open (on a) has no grant: the call is refused and the node says why.
    let served = wait_for(Duration::from_secs(60), || {
        last = get(&gateway, "open.example.com", "/via/api/x");
        last.0 == 502
    });
    assert!(served.is_some(), "{last:?}");
    assert_eq!(last.1, "call to api failed: ErrorCode::HttpRequestDenied");
    assert!(
        a.log()
            .contains("call to brane `api` refused: brane `open` is not granted it"),
        "{}",
        a.log()
    );

    // An unknown host.
    let (status, body) = get(&gateway, "nobody.example.com", "/");
    assert_eq!(
        (status, body.as_str()),
        (404, "no resolver serves host `nobody.example.com`")
    );

    // omega ps on a: each resolver, this node an entry, the driver's failure
    // named (no ngrok agent on 127.0.0.1:9, no authtoken).
    let mut ps = serde_json::Value::Null;
    let reported = wait_for(Duration::from_secs(30), || {
        ps = a.ps();
        ps["resolvers"].as_array().is_some_and(|r| {
            r.len() == 3
                && r.iter().all(|row| {
                    row["entry"] == true && row["state"].as_str().unwrap_or("").contains("ngrok")
                })
        })
    });
    assert!(reported.is_some(), "{ps:#}");

    // omega describe web: the resolver that routes to it, as a serves it.
    let d = a.describe("web");
    let rows = d["resolvers"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{d:#}");
    assert_eq!(rows[0]["resolver"], "public", "{d:#}");
    assert_eq!(rows[0]["host"], "shop.example.com", "{d:#}");
    assert!(
        rows[0]["state"].as_str().unwrap_or("").contains("ngrok"),
        "{d:#}"
    );
}
