//! Serving `wasi:http/proxy` branes over real HTTP/1.1 on 127.0.0.1: the
//! `hello-http` example, body-size limit, traps, and the pool bound.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{OK, guest, wat_brane};
use omega_runtime::{
    BraneLimits, BraneSpec, Event, InstanceMode, Runtime, RuntimeConfig, RuntimeError,
    discard_logs, serve_http,
};

fn spec(name: &str) -> BraneSpec {
    BraneSpec {
        name: name.into(),
        ..BraneSpec::default()
    }
}

/// A running server; stops (and is joined) on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn serve(rt: &Runtime, spec: BraneSpec) -> Server {
    let image = rt.load(&guest("hello-http")).unwrap();
    let brane = Arc::new(rt.http_brane(&image, spec, discard_logs()).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            serve_http(brane, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    Server {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Send one HTTP/1.1 request and return (status, raw response text).
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading the body and close.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

#[test]
fn hello_http_is_served_over_real_http() {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let server = serve(&rt, spec("web"));
    let (status, text) = request(server.addr, "GET", "/hi?x=1", b"");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("hello from omega /hi?x=1"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/plain")
    );
    let (status, text) = request(server.addr, "POST", "/post", b"some body");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("hello from omega /post"), "{text}");
    // Every slot is back once the requests are done.
    drop(server);
    assert_eq!(rt.free_slots(), rt.config().max_instances);
}

#[test]
fn an_oversized_body_is_refused_with_413() {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let mut s = spec("web");
    s.limits = BraneLimits {
        max_payload: 16,
        ..BraneLimits::default()
    };
    let server = serve(&rt, s);
    let (status, text) = request(server.addr, "POST", "/", &[b'x'; 100]);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("exceeds the limit of 16 bytes"), "{text}");
    let (status, _) = request(server.addr, "POST", "/", &[b'x'; 16]);
    assert_eq!(status, 200);
}

#[test]
fn a_trapping_brane_answers_500_and_the_server_keeps_serving() {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let mut s = spec("web");
    // Too little memory for the guest's initial heap: instantiation traps.
    s.limits = BraneLimits {
        memory_bytes: 64 * 1024,
        ..BraneLimits::default()
    };
    let server = serve(&rt, s);
    for _ in 0..3 {
        let (status, text) = request(server.addr, "GET", "/", b"");
        assert_eq!(status, 500, "{text}");
        assert!(text.contains("brane trapped: memory"), "{text}");
    }
    drop(server);
    assert_eq!(rt.free_slots(), rt.config().max_instances);
}

#[test]
fn requests_beyond_the_pool_get_503() {
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    // A keep-warm event brane holds the only slot.
    let mut warm = spec("warm");
    warm.mode = InstanceMode::KeepWarm;
    let warm = rt
        .brane(&rt.load(&wat_brane(OK, "")).unwrap(), warm, discard_logs())
        .unwrap();
    warm.handle(&Event::external("e1", "start", Vec::new()))
        .unwrap();
    assert_eq!(rt.free_slots(), 0);
    let server = serve(&rt, spec("web"));
    let (status, text) = request(server.addr, "GET", "/", b"");
    assert_eq!(status, 503, "{text}");
    drop(warm);
    let (status, text) = request(server.addr, "GET", "/", b"");
    assert_eq!(status, 200, "{text}");
}

#[test]
fn concurrent_requests_are_bounded_by_the_pool() {
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let server = serve(&rt, spec("web"));
    let addr = server.addr;
    let clients: Vec<_> = (0..16)
        .map(|i| std::thread::spawn(move || request(addr, "GET", &format!("/{i}"), b"").0))
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    // The bound, measured: never more than two instances at once, and a
    // 503 only ever while both were taken.
    let peak = rt.peak_slots();
    assert!((1..=2).contains(&peak), "peak {peak}");
    if statuses.contains(&503) {
        assert_eq!(peak, 2, "busy before the pool was full: {statuses:?}");
    }
    drop(server);
    assert_eq!(rt.free_slots(), 2);
}

#[test]
fn an_event_brane_is_not_an_http_brane() {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let image = rt.load(&wat_brane(OK, "")).unwrap();
    assert!(matches!(
        rt.http_brane(&image, spec("x"), discard_logs()),
        Err(RuntimeError::World {
            world: "wasi:http/proxy",
            ..
        })
    ));
}
