//! The local API of a real daemon under abuse: a 100 MB request is refused
//! with 413 and a message that names the limit, 50 connections that send one
//! byte a second do not lock a normal client out, and a known route asked
//! with the wrong method is 405 with an `Allow` header.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mesh_common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mesh_common::{Daemon, init_mesh, invite, json};
use omega_node::api::ClientError;

fn daemon(tmp: &Path) -> Daemon {
    let mesh = tmp.join("mesh");
    init_mesh(&mesh);
    let token = invite(&mesh, &[]);
    Daemon::start(&tmp.join("n1"), "n1", Some(&token), &[])
}

/// One raw HTTP/1.1 exchange on the node's socket: the whole response text.
fn raw(dir: &Path, request: &str) -> String {
    let mut s = UnixStream::connect(omega_node::api::socket_path(dir)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_100_mb_request_is_refused_with_413_naming_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(tmp.path());
    let body = vec![b'{'; 100 << 20];
    let err = omega_node::api::call(&d.dir, "POST", "/v0/records", &body).unwrap_err();
    match &err {
        ClientError::Api { status, message } => {
            assert_eq!(*status, 413, "{err}");
            assert!(message.contains("4194304 bytes"), "{err}");
        }
        other => panic!("not the node's 413: {other}"),
    }
    // Said with a length up front, the refusal comes before any body byte.
    let head = raw(
        &d.dir,
        "POST /v0/records HTTP/1.1\r\nHost: omega\r\nContent-Length: 104857600\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("larger than"), "{head}");
    // The node still answers.
    assert!(d.status()["did"].is_string());
}

#[test]
fn fifty_slow_connections_do_not_lock_out_a_normal_client() {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(tmp.path());
    let sock = omega_node::api::socket_path(&d.dir);
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow = Vec::new();
    for _ in 0..50 {
        slow.push(UnixStream::connect(&sock).unwrap());
    }
    let dripper = {
        let stop = stop.clone();
        let mut conns: Vec<UnixStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            let request = b"GET /v0/status HTTP/1.1\r\nHost: omega\r\nX-Slow: ";
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let byte = request.get(i).copied().unwrap_or(b'x');
                // A connection the server closed is fine: that is the point.
                conns.retain_mut(|c| c.write_all(&[byte]).is_ok());
                i += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // An `omega ps` and an `omega status` still get their answers.
    let ps = json(&["ps", "--data-dir", d.dir.to_str().unwrap()]);
    assert!(ps["manifests"].is_array(), "{ps}");
    assert!(d.status()["did"].is_string());
    // And the server ends the slow ones instead of waiting on them for ever.
    let mut first = slow.swap_remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    // Ended: closed (maybe after a 408), or reset when the server closed it
    // while the dripper's bytes were still unread (an evicted connection).
    match first.read_to_end(&mut rest) {
        Ok(n) => assert!(n == 0 || String::from_utf8_lossy(&rest).contains("408")),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    stop.store(true, Ordering::Relaxed);
    dripper.join().unwrap();
}

#[test]
fn a_wrong_method_is_405_with_allow() {
    let tmp = tempfile::tempdir().unwrap();
    let d = daemon(tmp.path());
    for (request, allow) in [
        ("DELETE /v0/ps", "GET"),
        ("POST /v0/status", "GET"),
        ("GET /v0/records", "POST"),
        ("PUT /v0/describe/x", "GET"),
        ("GET /v0/dlq/0123/replay", "POST"),
    ] {
        let r = raw(
            &d.dir,
            &format!("{request} HTTP/1.1\r\nHost: omega\r\nContent-Length: 0\r\n\r\n"),
        );
        assert!(r.starts_with("HTTP/1.1 405"), "{request}: {r}");
        assert!(
            r.to_ascii_lowercase()
                .contains(&format!("allow: {}", allow.to_ascii_lowercase())),
            "{request}: {r}"
        );
    }
    let r = raw(&d.dir, "GET /v0/nope HTTP/1.1\r\nHost: omega\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let err = omega_node::api::call(&d.dir, "DELETE", "/v0/peers", b"").unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 405, .. }), "{err}");
}
