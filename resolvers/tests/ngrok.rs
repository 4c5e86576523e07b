//! The `ngrok` driver against the faithful fake agent
//! (`omega_resolvers::fake::ngrok`): in-process on 127.0.0.1, and as the
//! `omega-fake ngrok` program started by the driver itself through a
//! symlink named `ngrok`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use omega_resolvers::client::{self, Target};
use omega_resolvers::driver::ngrok::{Config, Ngrok, tunnel_name};
use omega_resolvers::fake::ngrok::{self as fake, Options};
use omega_resolvers::{Driver, DriverError, Exposure, TunnelState};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

const HOST: &str = "demo.example.com";
const BOUND: Duration = Duration::from_secs(10);

/// A stand-in for the node's gateway: answers `HOST-HEADER PATH`.
async fn gateway() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                    let host = req
                        .headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let proto = req
                        .headers()
                        .get("x-forwarded-proto")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let body = format!("{host} {} {proto}", req.uri().path());
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn exposure(gateway: SocketAddr) -> Exposure {
    Exposure {
        resolver: "public".into(),
        manifest: "demo".into(),
        host: HOST.into(),
        gateway,
    }
}

async fn start_fake(options: Options) -> fake::Handle {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    fake::serve(listener, options)
        .await
        .expect("the fake serves")
}

fn config(api: SocketAddr) -> Config {
    Config {
        api: api.to_string(),
        ..Config::default()
    }
}

/// A port nothing listens on (bound once, then freed).
async fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("an address")
}

async fn api(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> client::Response {
    let body = body.map(|b| serde_json::to_vec(b).expect("json"));
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("content-type", "application/json")]
    } else {
        &[]
    };
    client::request(
        &Target::Tcp(addr.to_string()),
        &addr.to_string(),
        method,
        path,
        headers,
        body.as_deref().unwrap_or_default(),
        BOUND,
    )
    .await
    .expect("the agent answers")
}

fn json_of(r: &client::Response) -> Value {
    serde_json::from_slice(&r.body).expect("a JSON answer")
}

/// A request "through ngrok": to the fake's forwarder of a tunnel.
async fn through(forward: &str, path: &str) -> String {
    let r = client::request(
        &Target::Tcp(forward.to_owned()),
        "public.invalid",
        "GET",
        path,
        &[],
        b"",
        BOUND,
    )
    .await
    .expect("the forwarder answers");
    assert_eq!(r.status, 200, "{}", r.text());
    String::from_utf8(r.body).expect("text")
}

async fn wait_for(
    rx: &mut watch::Receiver<TunnelState>,
    what: &str,
    pred: impl Fn(&TunnelState) -> bool,
) -> TunnelState {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        {
            let s = rx.borrow_and_update();
            if pred(&s) {
                return s.clone();
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("no {what} within {BOUND:?}; state: {}", *rx.borrow()),
        }
    }
}

#[tokio::test]
async fn exposes_the_gateway_with_the_resolver_host_and_removes_it() {
    let gw = gateway().await;
    let agent = start_fake(Options::default()).await;
    let driver = Ngrok::new(config(agent.addr()));
    let tunnel = driver.expose(&exposure(gw)).await.expect("exposed");

    let t = agent
        .tunnel("omega-demo-public")
        .expect("the agent has the tunnel");
    assert_eq!(tunnel.watch().borrow().url(), Some(t.public_url.as_str()));
    assert!(t.public_url.starts_with("https://") && t.public_url.ends_with(".ngrok-free.app"));
    assert_eq!(t.requested_addr, gw.to_string());
    assert_eq!(t.addr, format!("http://{gw}"));
    assert_eq!(t.host_header.as_deref(), Some(HOST));
    assert_eq!(t.domain, None);
    assert!(!t.inspect, "the agent is asked not to record requests");
    assert_eq!(agent.tunnels().len(), 1);

    // A request through the tunnel reaches the gateway with the resolver's host.
    let forward = t.forward.expect("a forwarder").to_string();
    assert_eq!(
        through(&forward, "/hello").await,
        format!("{HOST} /hello https")
    );

    // The listing a real agent gives shows it the same way.
    let listed = json_of(&api(agent.addr(), "GET", "/api/tunnels", None).await);
    assert_eq!(listed["tunnels"][0]["name"], "omega-demo-public");
    assert_eq!(listed["tunnels"][0]["proto"], "https");
    assert_eq!(
        listed["tunnels"][0]["config"]["addr"],
        format!("http://{gw}")
    );

    tunnel.remove().await.expect("removed");
    assert!(agent.tunnels().is_empty(), "nothing is left on the agent");
    assert_eq!(agent.stats().deletes, 1);
    let gone = api(agent.addr(), "GET", "/api/tunnels/omega-demo-public", None).await;
    assert_eq!(gone.status, 404);
}

#[tokio::test]
async fn without_an_agent_or_an_authtoken_it_is_unavailable() {
    let nowhere = free_port().await;
    let driver = Ngrok::new(config(nowhere));
    let err = driver
        .expose(&exposure(gateway().await))
        .await
        .expect_err("no agent");
    let DriverError::Unavailable { what, detail, .. } = &err else {
        panic!("not Unavailable: {err}");
    };
    assert!(what.contains(&nowhere.to_string()), "{err}");
    assert!(
        detail.contains("start one") && detail.contains("set an authtoken"),
        "{err}"
    );
}

#[tokio::test]
async fn an_agent_without_an_authtoken_is_unauthorized() {
    let agent = start_fake(Options {
        authtoken: None,
        ..Options::default()
    })
    .await;
    let err = Ngrok::new(config(agent.addr()))
        .expose(&exposure(gateway().await))
        .await
        .expect_err("no authtoken");
    let DriverError::Unauthorized { detail, .. } = &err else {
        panic!("not Unauthorized: {err}");
    };
    assert!(detail.contains("ERR_NGROK_4018"), "{err}");
    assert!(detail.contains("failed to start tunnel"), "{err}");
    assert!(detail.contains("ngrok config add-authtoken"), "{err}");
    assert!(agent.tunnels().is_empty());
}

#[tokio::test]
async fn a_foreign_tunnel_with_our_name_is_a_conflict_and_is_left_alone() {
    let gw = gateway().await;
    let agent = start_fake(Options::default()).await;
    let name = tunnel_name(&exposure(gw));
    let r = api(
        agent.addr(),
        "POST",
        "/api/tunnels",
        Some(&json!({"name": name, "proto": "http", "addr": "127.0.0.1:9"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let foreign = agent.tunnel(&name).expect("the foreign tunnel");

    let err = Ngrok::new(config(agent.addr()))
        .expose(&exposure(gw))
        .await
        .expect_err("a conflict");
    let DriverError::Conflict { detail, .. } = &err else {
        panic!("not Conflict: {err}");
    };
    assert!(
        detail.contains(&name) && detail.contains("127.0.0.1:9"),
        "{err}"
    );
    assert_eq!(
        agent.tunnel(&name),
        Some(foreign),
        "the other tunnel is untouched"
    );
}

#[tokio::test]
async fn our_tunnel_from_an_earlier_run_is_taken_over() {
    let gw = gateway().await;
    let agent = start_fake(Options::default()).await;
    let name = tunnel_name(&exposure(gw));
    let r = api(
        agent.addr(),
        "POST",
        "/api/tunnels",
        Some(&json!({"name": name, "proto": "http", "addr": gw.to_string(), "host_header": HOST})),
    )
    .await;
    let earlier = json_of(&r)["public_url"]
        .as_str()
        .expect("a URL")
        .to_owned();

    let tunnel = Ngrok::new(config(agent.addr()))
        .expose(&exposure(gw))
        .await
        .expect("exposed");
    assert_eq!(tunnel.watch().borrow().url(), Some(earlier.as_str()));
    assert_eq!(agent.stats().posts, 1, "no second tunnel was asked for");
    tunnel.remove().await.expect("removed");
    assert!(agent.tunnels().is_empty());
}

#[tokio::test]
async fn the_agent_refuses_duplicate_names_as_agents_since_3_29_do() {
    let agent = start_fake(Options::default()).await;
    let body = json!({"name": "x", "proto": "http", "addr": "8080"});
    assert_eq!(
        api(agent.addr(), "POST", "/api/tunnels", Some(&body))
            .await
            .status,
        201
    );
    let again = api(agent.addr(), "POST", "/api/tunnels", Some(&body)).await;
    assert_eq!(again.status, 400);
    assert_eq!(
        json_of(&again),
        json!({"error_code":102,"status_code":400,"msg":"invalid tunnel configuration","details":{"err":"tunnel \"x\" already exists"}})
    );
    let bad = api(
        agent.addr(),
        "POST",
        "/api/tunnels",
        Some(&json!({"name": "y", "proto": "invalid-proto", "addr": "8080"})),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("protocol name"), "{}", bad.text());
    let unknown = api(
        agent.addr(),
        "POST",
        "/api/tunnels",
        Some(&json!({"name": "z", "proto": "http", "addr": "8080", "bind_tls": true})),
    )
    .await;
    assert_eq!(
        unknown.status, 400,
        "v3 agents refuse fields they do not know"
    );
    // And its API answers only loopback hosts.
    let foreign_host = client::request(
        &Target::Tcp(agent.addr().to_string()),
        "evil.example",
        "GET",
        "/api/tunnels",
        &[],
        b"",
        BOUND,
    )
    .await
    .expect("an answer");
    assert_eq!(foreign_host.status, 403);
}

#[tokio::test]
async fn removing_a_tunnel_that_is_already_gone_is_fine() {
    let gw = gateway().await;
    let agent = start_fake(Options::default()).await;
    let driver = Ngrok::new(config(agent.addr()));
    let tunnel = driver.expose(&exposure(gw)).await.expect("exposed");
    let r = api(
        agent.addr(),
        "DELETE",
        "/api/tunnels/omega-demo-public",
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    tunnel.remove().await.expect("already gone is removed");

    // And with the agent itself gone: its tunnels went with it.
    let tunnel = driver.expose(&exposure(gw)).await.expect("exposed again");
    drop(agent);
    tunnel.remove().await.expect("no agent, no tunnel");
}

#[tokio::test]
async fn a_reserved_domain_is_the_public_url_and_an_unreserved_one_is_refused() {
    let gw = gateway().await;
    let agent = start_fake(Options {
        domains: vec![HOST.into()],
        ..Options::default()
    })
    .await;
    let driver = Ngrok::new(Config {
        use_host_as_domain: true,
        ..config(agent.addr())
    });
    let tunnel = driver.expose(&exposure(gw)).await.expect("exposed");
    assert_eq!(
        tunnel.watch().borrow().url(),
        Some(format!("https://{HOST}").as_str())
    );
    let t = agent.tunnel("omega-demo-public").expect("the tunnel");
    assert_eq!(t.domain.as_deref(), Some(HOST));
    tunnel.remove().await.expect("removed");

    let unreserved = start_fake(Options::default()).await;
    let err = Ngrok::new(Config {
        use_host_as_domain: true,
        ..config(unreserved.addr())
    })
    .expose(&exposure(gw))
    .await
    .expect_err("not reserved");
    let DriverError::NotCapable { detail, .. } = &err else {
        panic!("not NotCapable: {err}");
    };
    assert!(
        detail.contains("ERR_NGROK_319") && detail.contains("use_host_as_domain"),
        "{err}"
    );
}

#[tokio::test]
async fn the_watch_sees_the_agent_go_and_puts_the_tunnel_back() {
    let gw = gateway().await;
    let agent = start_fake(Options::default()).await;
    let addr = agent.addr();
    let driver = Ngrok::new(Config {
        poll_interval: Duration::from_millis(50),
        ..config(addr)
    });
    let tunnel = driver.expose(&exposure(gw)).await.expect("exposed");
    let mut rx = tunnel.watch();
    let first = rx.borrow().url().expect("up").to_owned();

    // Someone deletes it: it is started again (a new random URL).
    api(addr, "DELETE", "/api/tunnels/omega-demo-public", None).await;
    let again = wait_for(&mut rx, "a new URL", |s| {
        s.url().is_some_and(|u| u != first)
    })
    .await;
    assert_eq!(
        agent.tunnel("omega-demo-public").map(|t| t.public_url),
        again.url().map(str::to_owned)
    );

    // The agent goes away: down; it comes back (restarted, empty): up again.
    drop(agent);
    let down = wait_for(&mut rx, "down", |s| matches!(s, TunnelState::Down { .. })).await;
    assert!(down.to_string().contains(&addr.to_string()), "{down}");
    let back = fake::serve(
        TcpListener::bind(addr).await.expect("rebind"),
        Options::default(),
    )
    .await
    .expect("serves");
    wait_for(&mut rx, "up", |s| s.url().is_some()).await;
    assert!(back.tunnel("omega-demo-public").is_some());
    tunnel.remove().await.expect("removed");
    assert!(back.tunnels().is_empty());
}

// ---------------------------------------------------------------------
// The driver starts the agent itself.

/// `DIR/ngrok` → the `omega-fake` program.
fn ngrok_program(dir: &Path) -> PathBuf {
    let program = dir.join("ngrok");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_omega-fake"), &program).expect("symlink");
    program
}

async fn status(api_addr: SocketAddr) -> Value {
    json_of(&api(api_addr, "GET", "/api/status", None).await)
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn refused(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn the_driver_starts_an_agent_with_its_authtoken_and_stops_it_on_removal() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let gw = gateway().await;
    let web = free_port().await;
    let token = "2omegaFakeAuthtoken_secret";
    let driver = Ngrok::new(Config {
        api: web.to_string(),
        authtoken: Some(token.into()),
        program: ngrok_program(dir.path()),
        ..Config::default()
    });
    let tunnel = driver.expose(&exposure(gw)).await.expect("exposed");
    let url = tunnel.watch().borrow().url().expect("up").to_owned();

    let st = status(web).await;
    let pid = st["omega_fake"]["pid"].as_u64().expect("a pid");
    let argv: Vec<String> = serde_json::from_value(st["omega_fake"]["argv"].clone()).expect("argv");
    assert_eq!(
        &argv[..7],
        [
            "ngrok",
            "start",
            "--none",
            "--log",
            "stdout",
            "--log-format",
            "json"
        ]
    );
    assert!(
        !argv.iter().any(|a| a.contains(token)),
        "the authtoken is not in argv: {argv:?}"
    );
    // The token is in the driver's own private configuration file.
    let file = PathBuf::from(argv.last().expect("a config file"));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().expect("its directory")), 0o700);
    assert!(
        std::fs::read_to_string(&file)
            .expect("readable")
            .contains(token)
    );

    let listed = json_of(&api(web, "GET", "/api/tunnels/omega-demo-public", None).await);
    assert_eq!(listed["public_url"], url);
    let forward = listed["omega_fake"]["forward"]
        .as_str()
        .expect("a forwarder");
    assert_eq!(through(forward, "/").await, format!("{HOST} / https"));

    tunnel.remove().await.expect("removed");
    assert!(!alive(pid), "the agent process is gone");
    assert!(refused(web).await, "nothing answers on its API");
    assert!(!file.exists(), "its configuration is removed");
}

#[tokio::test]
async fn a_started_agent_without_an_authtoken_is_unauthorized() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let web = free_port().await;
    let err = Ngrok::new(Config {
        api: web.to_string(),
        program: ngrok_program(dir.path()),
        start_agent: true,
        ..Config::default()
    })
    .expose(&exposure(gateway().await))
    .await
    .expect_err("no authtoken");
    let DriverError::Unauthorized { detail, .. } = &err else {
        panic!("not Unauthorized: {err}");
    };
    assert!(detail.contains("ERR_NGROK_4018"), "{err}");
    assert!(
        detail.contains("--ngrok-authtoken / NGROK_AUTHTOKEN"),
        "{err}"
    );
    assert!(refused(web).await, "no agent is left running");
}

#[tokio::test]
async fn a_missing_program_is_unavailable() {
    let err = Ngrok::new(Config {
        api: free_port().await.to_string(),
        authtoken: Some("t".into()),
        program: "/nonexistent/omega/ngrok".into(),
        ..Config::default()
    })
    .expose(&exposure(gateway().await))
    .await
    .expect_err("no program");
    let DriverError::Unavailable { what, detail, .. } = &err else {
        panic!("not Unavailable: {err}");
    };
    assert!(what.contains("/nonexistent/omega/ngrok"), "{err}");
    assert!(detail.contains("--ngrok-program"), "{err}");
}

#[tokio::test]
async fn one_started_agent_serves_every_tunnel_and_stops_with_the_last() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let gw = gateway().await;
    let web = free_port().await;
    let driver = Ngrok::new(Config {
        api: web.to_string(),
        authtoken: Some("t0ken".into()),
        program: ngrok_program(dir.path()),
        ..Config::default()
    });
    let a = driver.expose(&exposure(gw)).await.expect("a");
    let pid = status(web).await["omega_fake"]["pid"]
        .as_u64()
        .expect("a pid");
    let mut other = exposure(gw);
    other.resolver = "admin".into();
    other.host = "admin.example.com".into();
    let b = driver.expose(&other).await.expect("b");
    assert_eq!(status(web).await["omega_fake"]["pid"].as_u64(), Some(pid));
    let listed = json_of(&api(web, "GET", "/api/tunnels", None).await);
    assert_eq!(listed["tunnels"].as_array().map(Vec::len), Some(2));

    a.remove().await.expect("a removed");
    assert!(alive(pid), "b still needs the agent");
    let left = json_of(&api(web, "GET", "/api/tunnels", None).await);
    assert_eq!(left["tunnels"][0]["name"], "omega-demo-admin");
    b.remove().await.expect("b removed");
    assert!(!alive(pid));
}

#[tokio::test]
async fn a_started_agent_that_dies_is_started_again() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let gw = gateway().await;
    let web = free_port().await;
    let driver = Ngrok::new(Config {
        api: web.to_string(),
        authtoken: Some("t0ken".into()),
        program: ngrok_program(dir.path()),
        poll_interval: Duration::from_millis(100),
        ..Config::default()
    });
    let tunnel = driver.expose(&exposure(gw)).await.expect("exposed");
    let mut rx = tunnel.watch();
    let first = rx.borrow().url().expect("up").to_owned();
    let pid = status(web).await["omega_fake"]["pid"]
        .as_u64()
        .expect("a pid");

    // The agent (a child of this test's driver) is killed from outside.
    let killed = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let down = wait_for(&mut rx, "down", |s| matches!(s, TunnelState::Down { .. })).await;
    assert!(down.to_string().contains("ngrok agent"), "{down}");
    let up = wait_for(&mut rx, "up again", |s| s.url().is_some()).await;
    assert_ne!(
        up.url(),
        Some(first.as_str()),
        "a new agent, a new random URL"
    );
    let again = status(web).await["omega_fake"]["pid"]
        .as_u64()
        .expect("a pid");
    assert_ne!(again, pid);
    tunnel.remove().await.expect("removed");
    assert!(!alive(again));
}
