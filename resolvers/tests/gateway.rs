//! The gateway and the mesh hop with in-memory members: each "node" has
//! its own directory and serves `/omega/http/1` on in-memory duplex
//! streams; the gateway listens on real TCP on 127.0.0.1.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step aborts the test

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use omega_resolvers::route::{BoxFuture, Io};
use omega_resolvers::{
    Body, BraneName, Client, Dialer, Directory, Forwarder, Gateway, Limits, LocalBrane, MeshLimits,
    Replica,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "demo.example.com";

fn api() -> BraneName {
    BraneName::new("shop", "api")
}

fn text(status: StatusCode, s: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(s))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

/// A replica: answers `from NODE METHOD PATH BODY`; `/hang` waits forever
/// after saying it started.
struct Replica_ {
    node: &'static str,
    started: Arc<tokio::sync::Notify>,
}

impl LocalBrane for Replica_ {
    fn handle(&self, req: Request<Body>) -> BoxFuture<Response<Body>> {
        let node = self.node;
        let started = self.started.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            if parts.uri.path() == "/hang" || (parts.uri.path() == "/hang-b" && node == "b") {
                started.notify_one();
                std::future::pending::<()>().await;
            }
            let body = match body.collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("body: {e}")),
            };
            let host = parts
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .or_else(|| parts.uri.host().map(str::to_owned))
                .unwrap_or_default();
            text(
                StatusCode::OK,
                format!(
                    "from {node} {} {} {host} {body}",
                    parts.method,
                    parts.uri.path()
                ),
            )
        })
    }
}

/// One node's view: which members run the brane, which are admitted.
struct Dir {
    local: Option<Arc<dyn LocalBrane>>,
    remote: Mutex<Vec<String>>,
    members: BTreeSet<String>,
    calls: BTreeMap<BraneName, Vec<BraneName>>,
}

impl Directory for Dir {
    fn host(&self, host: &str) -> Option<BraneName> {
        (host == HOST).then(api)
    }
    fn replicas(&self, brane: &BraneName) -> Vec<Replica> {
        if *brane != api() {
            return Vec::new();
        }
        let mut out: Vec<Replica> = self.local.iter().cloned().map(Replica::Local).collect();
        out.extend(
            self.remote
                .lock()
                .unwrap()
                .iter()
                .cloned()
                .map(Replica::Remote),
        );
        out
    }
    fn admits(&self, peer: &str) -> bool {
        self.members.contains(peer)
    }
    fn authorize(&self, caller: Option<&BraneName>, target: &BraneName) -> Result<(), String> {
        match caller {
            None if *target == api() => Ok(()),
            None => Err(format!("no resolver routes to {target}")),
            Some(c) if self.calls.get(c).is_some_and(|t| t.contains(target)) => Ok(()),
            Some(c) => Err(format!("brane {c} is not granted calls to {target}")),
        }
    }
}

/// In-memory members: opening a stream to one spawns its server on the
/// other end; `kill` aborts every server task of a member.
#[derive(Default)]
struct Net {
    nodes: Mutex<BTreeMap<String, Arc<Dir>>>,
    tasks: Mutex<BTreeMap<String, Vec<tokio::task::JoinHandle<()>>>>,
    dead: Mutex<BTreeSet<String>>,
}

struct Dial {
    net: Arc<Net>,
    me: &'static str,
}

impl Dialer for Dial {
    fn open(&self, peer: &str) -> BoxFuture<std::io::Result<Box<dyn Io>>> {
        let net = self.net.clone();
        let (me, peer) = (self.me.to_owned(), peer.to_owned());
        Box::pin(async move {
            if net.dead.lock().unwrap().contains(&peer) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "member is gone",
                ));
            }
            let dir = net
                .nodes
                .lock()
                .unwrap()
                .get(&peer)
                .cloned()
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such member")
                })?;
            let (a, b) = tokio::io::duplex(64 * 1024);
            let task = tokio::spawn(omega_resolvers::mesh::serve(
                Box::new(b),
                me,
                dir,
                MeshLimits::default(),
            ));
            net.tasks
                .lock()
                .unwrap()
                .entry(peer)
                .or_default()
                .push(task);
            Ok(Box::new(a) as Box<dyn Io>)
        })
    }
}

impl Net {
    fn kill(&self, node: &str) {
        self.dead.lock().unwrap().insert(node.to_owned());
        for t in self.tasks.lock().unwrap().remove(node).unwrap_or_default() {
            t.abort();
        }
    }
}

struct Mesh {
    net: Arc<Net>,
    started: Arc<tokio::sync::Notify>,
    addr: std::net::SocketAddr,
}

/// Node `a` runs the gateway; `local` says whether `a` runs a replica,
/// `remote` lists the other members that do.
async fn mesh(local: bool, remote: &[&'static str], limits: Limits) -> Mesh {
    let net = Arc::new(Net::default());
    let started = Arc::new(tokio::sync::Notify::new());
    let members: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let replica = |node| -> Arc<dyn LocalBrane> {
        Arc::new(Replica_ {
            node,
            started: started.clone(),
        })
    };
    for node in remote {
        net.nodes.lock().unwrap().insert(
            node.to_string(),
            Arc::new(Dir {
                local: Some(replica(node)),
                remote: Mutex::new(Vec::new()),
                members: members.clone(),
                calls: BTreeMap::from([(BraneName::new("shop", "web"), vec![api()])]),
            }),
        );
    }
    let dir = Arc::new(Dir {
        local: local.then(|| replica("a")),
        remote: Mutex::new(remote.iter().map(|s| s.to_string()).collect()),
        members,
        calls: BTreeMap::new(),
    });
    let client = Client::new(
        Arc::new(Dial {
            net: net.clone(),
            me: "a",
        }),
        MeshLimits::default(),
    );
    let fwd = Arc::new(Forwarder::new(dir, client, limits.clone()));
    let gw = Arc::new(Gateway::new(fwd, limits));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gw.serve(listener, std::future::pending()));
    Mesh { net, started, addr }
}

/// One HTTP/1.1 request to the gateway: status, `omega-gateway`, body.
async fn send(addr: std::net::SocketAddr, req: Request<Full<Bytes>>) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = s.send_request(req).await.unwrap();
    read(resp).await
}

async fn read(resp: Response<hyper::body::Incoming>) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let rule = resp
        .headers()
        .get("omega-gateway")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        rule,
        String::from_utf8_lossy(&body).trim().to_owned(),
    )
}

fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn post(path: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", HOST)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn within<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(Duration::from_secs(20), f)
}

#[tokio::test]
async fn routes_by_host_to_the_local_replica_and_refuses_unknown_hosts() {
    let m = mesh(true, &["b"], Limits::default()).await;
    let (s, _, body) = send(m.addr, get("Demo.Example.com:8080", "/x")).await;
    assert_eq!(
        (s, body.as_str()),
        (200, "from a GET /x Demo.Example.com:8080")
    );
    let (s, rule, body) = send(m.addr, get("other.example.com", "/")).await;
    assert_eq!((s, rule.as_str()), (404, "unknown-host"));
    assert_eq!(body, "no resolver serves host `other.example.com`");
}

#[tokio::test]
async fn a_proxy_s_x_forwarded_host_routes_when_host_is_its_own_address() {
    let m = mesh(true, &[], Limits::default()).await;
    let req = Request::get("/nb")
        .header("host", "100.90.0.1:8080")
        .header("x-forwarded-host", "demo.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (s, _, body) = send(m.addr, req).await;
    assert_eq!((s, body.as_str()), (200, "from a GET /nb 100.90.0.1:8080"));
}

#[tokio::test]
async fn forwards_to_a_remote_replica_with_the_body_both_ways() {
    let m = mesh(false, &["b"], Limits::default()).await;
    let (s, _, body) = send(m.addr, post("/orders", "two apples")).await;
    assert_eq!(
        (s, body.as_str()),
        (200, "from b POST /orders demo.example.com two apples")
    );
    // A client cannot speak for the mesh: forged hop headers are dropped.
    let forged = Request::get("/")
        .header("host", HOST)
        .header("omega-caller", "shop/web")
        .header("omega-brane", "shop/secret")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (s, _, body) = send(m.addr, forged).await;
    assert_eq!((s, body.as_str()), (200, "from b GET / demo.example.com"));
}

#[tokio::test]
async fn spreads_requests_over_remote_replicas() {
    let m = mesh(false, &["b", "c"], Limits::default()).await;
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let (_, _, body) = send(m.addr, get(HOST, "/")).await;
        seen.insert(body[..6].to_owned());
    }
    assert_eq!(seen, BTreeSet::from(["from b".into(), "from c".into()]));
}

#[tokio::test]
async fn a_replica_dying_mid_request_retries_a_get_once_on_another() {
    let m = mesh(false, &["b", "c"], Limits::default()).await;
    // The gateway alternates b, c, b…: after two requests the next goes to b.
    for _ in 0..2 {
        send(m.addr, get(HOST, "/")).await;
    }
    let addr = m.addr;
    // `/hang-b` hangs on b only; b dies while it hangs.
    let hung = tokio::spawn(async move { send(addr, get(HOST, "/hang-b")).await });
    within(m.started.notified()).await.unwrap();
    m.net.kill("b");
    let (s, _, body) = within(hung).await.unwrap().unwrap();
    assert_eq!(
        (s, body.as_str()),
        (200, "from c GET /hang-b demo.example.com")
    );
}

#[tokio::test]
async fn retry_goes_to_the_other_replica_and_a_post_is_not_retried() {
    let m = mesh(false, &["b", "c"], Limits::default()).await;
    // Node `b` breaks every exchange once its stream is open: kill it after
    // the connection exists but before the request is answered.
    for _ in 0..2 {
        send(m.addr, get(HOST, "/")).await;
    }
    // Kill `b` while a request hangs on it; a GET that then lands on `b`
    // finds its connection broken or refused and goes to `c`.
    let addr = m.addr;
    let hung = tokio::spawn(async move { send(addr, post("/hang", "x")).await });
    within(m.started.notified()).await.unwrap();
    m.net.kill("b");
    let (s, rule, body) = within(hung).await.unwrap().unwrap();
    assert_eq!((s, rule.as_str()), (502, "replica-lost"), "{body}");
    assert!(
        body.contains("the POST was not retried: it is not idempotent"),
        "{body}"
    );
    for _ in 0..4 {
        let (s, _, body) = send(m.addr, get(HOST, "/after")).await;
        assert_eq!(
            (s, body.as_str()),
            (200, "from c GET /after demo.example.com")
        );
    }
}

#[tokio::test]
async fn a_get_in_flight_on_a_dying_replica_is_answered_by_the_other() {
    let m = mesh(false, &["b", "c"], Limits::default()).await;
    for _ in 0..2 {
        send(m.addr, get(HOST, "/")).await;
    }
    // `/hang` hangs on whichever node gets it; the GET goes to `b` first
    // (even turn). Killing `b` makes the gateway replay it on `c`, where it
    // hangs again: the retry is observed by `c` starting it.
    let addr = m.addr;
    let hung = tokio::spawn(async move { send(addr, get(HOST, "/hang")).await });
    within(m.started.notified()).await.unwrap();
    m.net.kill("b");
    within(m.started.notified())
        .await
        .expect("the GET was retried on c");
    m.net.kill("c");
    let (s, rule, body) = within(hung).await.unwrap().unwrap();
    assert_eq!((s, rule.as_str()), (502, "replica-lost"), "{body}");
    assert!(body.contains("after one retry"), "{body}");
}

#[tokio::test]
async fn no_replica_anywhere_is_503() {
    let m = mesh(false, &[], Limits::default()).await;
    let (s, rule, body) = send(m.addr, get(HOST, "/")).await;
    assert_eq!((s, rule.as_str()), (503, "no-replica"));
    assert_eq!(body, "brane shop/api has no running replica in the mesh");
}

#[tokio::test]
async fn a_member_that_cannot_be_reached_is_skipped() {
    let m = mesh(false, &["b", "c"], Limits::default()).await;
    m.net.kill("b");
    for _ in 0..3 {
        let (s, _, body) = send(m.addr, post("/p", "z")).await;
        assert_eq!(
            (s, body.as_str()),
            (200, "from c POST /p demo.example.com z")
        );
    }
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused() {
    let limits = Limits {
        max_body: 1024,
        ..Limits::default()
    };
    let m = mesh(true, &[], limits).await;
    let big = Request::post("/")
        .header("host", HOST)
        .body(Full::new(Bytes::from(vec![b'x'; 2048])))
        .unwrap();
    let (s, rule, _) = send(m.addr, big).await;
    assert_eq!((s, rule.as_str()), (413, "too-large"));
    // A head over the limit: hyper answers 431.
    let mut raw = tokio::net::TcpStream::connect(m.addr).await.unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {}\r\n\r\n",
        "y".repeat(64 * 1024)
    );
    let _ = raw.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = within(raw.read_to_end(&mut answer)).await.unwrap();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A chunked body that grows past the limit is cut: the replica sees an error.
    let stream = tokio::net::TcpStream::connect(m.addr).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let chunks = futures::stream::iter((0..4).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'z'; 512])))
    }));
    let req = Request::post("/")
        .header("host", HOST)
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let (status, _, body) = read(s.send_request(req).await.unwrap()).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("length limit exceeded"), "{body}");
}

#[tokio::test]
async fn slowloris_heads_and_stalled_bodies_are_cut() {
    let limits = Limits {
        header_timeout: Duration::from_millis(300),
        body_idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let m = mesh(true, &[], limits).await;
    let mut raw = tokio::net::TcpStream::connect(m.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: demo.exa")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The gateway closes the connection: read ends (maybe with a 408 head).
    within(raw.read_to_end(&mut buf)).await.unwrap().unwrap();
    // A body that stops arriving is cut after the idle timeout.
    let mut raw = tokio::net::TcpStream::connect(m.addr).await.unwrap();
    raw.write_all(
        format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\nabc").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = within(raw.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    assert!(answer.contains("paused longer than"), "{answer}");
}

#[tokio::test]
async fn http2_clients_are_served_too() {
    let m = mesh(false, &["b"], Limits::default()).await;
    let stream = tokio::net::TcpStream::connect(m.addr).await.unwrap();
    let (mut s, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{HOST}/h2"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (s, _, body) = read(s.send_request(req).await.unwrap()).await;
    assert_eq!((s, body.as_str()), (200, "from b GET /h2 demo.example.com"));
}

#[tokio::test]
async fn the_serving_side_checks_membership_authorization_and_presence() {
    let net = Arc::new(Net::default());
    let started = Arc::new(tokio::sync::Notify::new());
    let dir = Arc::new(Dir {
        local: Some(Arc::new(Replica_ { node: "b", started })),
        remote: Mutex::new(Vec::new()),
        members: BTreeSet::from(["a".to_string()]),
        calls: BTreeMap::from([(BraneName::new("shop", "web"), vec![api()])]),
    });
    net.nodes.lock().unwrap().insert("b".into(), dir);
    let client = |me| {
        Client::new(
            Arc::new(Dial {
                net: net.clone(),
                me,
            }),
            MeshLimits::default(),
        )
    };
    let req = || {
        Request::get(format!("http://{HOST}/"))
            .body(
                Full::new(Bytes::new())
                    .map_err(|n| match n {})
                    .boxed_unsync(),
            )
            .unwrap()
    };
    let a = client("a");
    // A call granted by the caller's grants.
    let r = a
        .send("b", &api(), Some(&BraneName::new("shop", "web")), req())
        .await
        .unwrap();
    assert_eq!(read(r).await.0, 200);
    // A caller without the grant.
    let r = a
        .send("b", &api(), Some(&BraneName::new("shop", "admin")), req())
        .await
        .unwrap();
    let (s, rule, body) = read(r).await;
    assert_eq!((s, rule.as_str()), (403, "refused"));
    assert_eq!(body, "brane shop/admin is not granted calls to shop/api");
    // A brane no resolver publishes, from the gateway.
    let other = BraneName::new("shop", "secret");
    let (s, rule, _) = read(a.send("b", &other, None, req()).await.unwrap()).await;
    assert_eq!((s, rule.as_str()), (403, "refused"));
    // A non-member's stream is closed unserved.
    let stranger = client("z");
    assert!(stranger.send("b", &api(), None, req()).await.is_err());
}
