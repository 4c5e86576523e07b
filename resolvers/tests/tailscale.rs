//! The `tailscale-funnel` driver against the faithful fake of tailscaled's
//! LocalAPI (`omega_resolvers::fake::tailscale`), in-process on a socket in
//! a temporary directory, and once as the `omega-fake tailscaled` program.

use std::path::{Path, PathBuf};
use std::time::Duration;

use omega_resolvers::client::{self, Target};
use omega_resolvers::driver::tailscale::{Config, MAX_ATTEMPTS, TailscaleFunnel};
use omega_resolvers::fake::tailscale::{self as fake, Options};
use omega_resolvers::{Driver, DriverError, Exposure, TunnelState};
use serde_json::{Value, json};

const HOST: &str = "omega-a.tail1234.ts.net";
const BOUND: Duration = Duration::from_secs(10);

fn exposure(host: &str) -> Exposure {
    Exposure {
        resolver: "public".into(),
        manifest: "demo".into(),
        host: host.into(),
        gateway: "127.0.0.1:18080".parse().expect("an address"),
    }
}

fn driver(socket: &Path) -> TailscaleFunnel {
    TailscaleFunnel::new(Config {
        socket: socket.to_owned(),
    })
}

async fn start(options: Options) -> (tempfile::TempDir, fake::Handle) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let handle = fake::serve(&dir.path().join("tailscaled.sock"), options)
        .await
        .expect("the fake listens");
    (dir, handle)
}

/// A request as any LocalAPI client would make it (headers given).
async fn raw(
    socket: &Path,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> client::Response {
    client::request(
        &Target::Unix(socket.to_owned()),
        host,
        method,
        path,
        headers,
        body,
        BOUND,
    )
    .await
    .expect("the fake answers")
}

/// Someone else's entries, there before Omega.
fn foreign() -> Value {
    json!({
        "TCP": {"8443": {"HTTPS": true}, "10000": {"TCPForward": "127.0.0.1:22"}},
        "Web": {format!("{HOST}:8443"): {"Handlers": {"/": {"Proxy": "http://127.0.0.1:3000"}}}},
        "AllowFunnel": {format!("{HOST}:8443"): true}
    })
}

fn ours_in(config: &Value) -> bool {
    config["TCP"]["443"] == json!({"HTTPS": true})
        && config["Web"][format!("{HOST}:443")]
            == json!({"Handlers": {"/": {"Proxy": "http://127.0.0.1:18080"}}})
        && config["AllowFunnel"][format!("{HOST}:443")] == json!(true)
}

#[tokio::test]
async fn expose_merges_three_entries_and_remove_takes_exactly_them_out() {
    let (_dir, ts) = start(Options::default()).await;
    ts.set_serve_config(&foreign()).unwrap();
    let d = driver(ts.socket());
    let tunnel = d.expose(&exposure(HOST)).await.unwrap();
    assert_eq!(
        *tunnel.watch().borrow(),
        TunnelState::Up {
            url: format!("https://{HOST}")
        }
    );
    let config = ts.serve_config();
    assert!(ours_in(&config), "{config:#}");
    for (section, key) in [
        ("TCP", "8443".to_owned()),
        ("TCP", "10000".to_owned()),
        ("Web", format!("{HOST}:8443")),
        ("AllowFunnel", format!("{HOST}:8443")),
    ] {
        assert_eq!(
            config[section][&key],
            foreign()[section][&key],
            "{section}[{key}]"
        );
    }
    assert_eq!(ts.stats().posts, 1);

    // Exposing what is already there writes nothing.
    let again = d.expose(&exposure(HOST)).await.unwrap();
    assert_eq!(ts.stats().posts, 1);

    let mut watch = tunnel.watch();
    tunnel.remove().await.unwrap();
    assert_eq!(ts.serve_config(), foreign());
    assert!(matches!(
        *watch.borrow_and_update(),
        TunnelState::Down { .. }
    ));
    // Already gone: success, no write.
    again.remove().await.unwrap();
    assert_eq!(ts.stats().posts, 2);
    assert_eq!(ts.serve_config(), foreign());
}

#[tokio::test]
async fn from_an_empty_config_and_back() {
    let (_dir, ts) = start(Options::default()).await;
    assert_eq!(ts.serve_config(), Value::Null);
    let tunnel = driver(ts.socket()).expose(&exposure(HOST)).await.unwrap();
    assert!(ours_in(&ts.serve_config()));
    tunnel.remove().await.unwrap();
    assert_eq!(ts.serve_config(), json!({}));
}

#[tokio::test]
async fn another_resolver_host_is_still_served_at_the_node_name() {
    let (_dir, ts) = start(Options::default()).await;
    let tunnel = driver(ts.socket())
        .expose(&exposure("demo.example.com"))
        .await
        .unwrap();
    assert_eq!(
        tunnel.watch().borrow().url(),
        Some(format!("https://{HOST}").as_str())
    );
    assert!(ours_in(&ts.serve_config()));
    tunnel.remove().await.unwrap();
}

#[tokio::test]
async fn an_absent_daemon_is_unavailable_and_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-tailscaled.sock");
    let err = driver(&socket).expose(&exposure(HOST)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DriverError::Unavailable { .. }), "{err:?}");
    assert!(text.contains(&socket.display().to_string()), "{text}");
    assert!(text.contains("--tailscale-socket"), "{text}");
    assert!(text.starts_with("tailscale-funnel:"), "{text}");
}

#[tokio::test]
async fn a_stale_socket_nobody_listens_on_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tailscaled.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let err = driver(&socket).expose(&exposure(HOST)).await.unwrap_err();
    assert!(matches!(err, DriverError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("start tailscaled"), "{err}");
}

#[tokio::test]
async fn the_fake_enforces_the_localapi_request_rules() {
    let (_dir, ts) = start(Options::default()).await;
    let s = ts.socket();
    let sec = ("Sec-Tailscale", "localapi");
    let status = "/localapi/v0/status";

    let r = raw(s, "local-tailscaled.sock", "GET", status, &[], b"").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "missing 'Sec-Tailscale: localapi' header");

    let r = raw(s, "evil.example", "GET", status, &[sec], b"").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (403, "invalid localapi request")
    );
    let r = raw(s, "localhost:80", "GET", status, &[sec], b"").await;
    assert_eq!(
        r.status, 403,
        "only local-tailscaled.sock (no password here)"
    );
    let origin = ("Origin", "http://evil.example");
    let r = raw(
        s,
        "local-tailscaled.sock",
        "GET",
        status,
        &[sec, origin],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);

    let r = raw(s, "local-tailscaled.sock", "GET", status, &[sec], b"").await;
    assert_eq!(r.status, 200);
    let st: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(st["BackendState"], "Running");
    assert_eq!(st["Self"]["DNSName"], format!("{HOST}."));
    assert!(st["Self"]["CapMap"].get("funnel").is_some());
    assert!(st["Peer"].is_object());
    let r = raw(
        s,
        "local-tailscaled.sock",
        "GET",
        "/localapi/v0/status?peers=false",
        &[sec],
        b"",
    )
    .await;
    let st: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(st["Peer"].is_null());

    let sc = "/localapi/v0/serve-config";
    let r = raw(s, "local-tailscaled.sock", "GET", sc, &[sec], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"null".as_slice()));
    // sha256("null"), as tailscaled computes it.
    let null_etag = "74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b";
    assert_eq!(r.header("etag"), Some(null_etag));

    // A stale If-Match is refused; no If-Match overwrites, like tailscaled.
    let stale = ("If-Match", "0000");
    let body = br#"{"TCP":{"443":{"HTTPS":true}}}"#;
    let r = raw(s, "local-tailscaled.sock", "POST", sc, &[sec, stale], body).await;
    assert_eq!((r.status, r.text().as_str()), (412, "etag mismatch"));
    let r = raw(s, "local-tailscaled.sock", "POST", sc, &[sec], body).await;
    assert_eq!(r.status, 200);
    let r = raw(s, "local-tailscaled.sock", "GET", sc, &[sec], b"").await;
    assert_eq!(r.body, body);
    assert_eq!(r.header("etag"), Some(ts.etag().as_str()));
    let good = ("If-Match", r.header("etag").unwrap());
    let r = raw(
        s,
        "local-tailscaled.sock",
        "POST",
        sc,
        &[sec, good],
        b"null",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(ts.serve_config(), json!({}));

    let r = raw(s, "local-tailscaled.sock", "POST", sc, &[sec], b"{nope").await;
    assert_eq!(r.status, 500);
    let e: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        e["error"].as_str().unwrap().starts_with("decoding config:"),
        "{e}"
    );
    let r = raw(s, "local-tailscaled.sock", "PUT", sc, &[sec], b"{}").await;
    assert_eq!(r.status, 405);
    let r = raw(
        s,
        "local-tailscaled.sock",
        "GET",
        "/localapi/v0/nope",
        &[sec],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);
    let big = vec![b' '; fake::MAX_REQUEST_BODY + 1];
    let r = raw(s, "local-tailscaled.sock", "POST", sc, &[sec], &big).await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn no_funnel_attribute_is_not_capable_and_says_where_to_add_it() {
    let (_dir, ts) = start(Options {
        funnel: false,
        funnel_ports: None,
        ..Options::default()
    })
    .await;
    let err = driver(ts.socket())
        .expose(&exposure(HOST))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DriverError::NotCapable { .. }), "{err:?}");
    assert!(
        text.contains("`funnel` node attribute") && text.contains("policy file"),
        "{text}"
    );
    assert_eq!(ts.stats().posts, 0);
    assert_eq!(ts.serve_config(), Value::Null);
}

#[tokio::test]
async fn https_off_or_port_443_not_allowed_is_not_capable() {
    let (_dir, ts) = start(Options {
        https: false,
        ..Options::default()
    })
    .await;
    let err = driver(ts.socket())
        .expose(&exposure(HOST))
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::NotCapable { .. }), "{err:?}");
    assert!(err.to_string().contains("HTTPS"), "{err}");

    let (_dir, ts) = start(Options {
        funnel_ports: Some("8443,10000".into()),
        ..Options::default()
    })
    .await;
    let err = driver(ts.socket())
        .expose(&exposure(HOST))
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::NotCapable { .. }), "{err:?}");
    assert!(err.to_string().contains("port 443 is not allowed"), "{err}");
}

#[tokio::test]
async fn logged_out_is_unauthorized() {
    let (_dir, ts) = start(Options {
        backend_state: "NeedsLogin".into(),
        ..Options::default()
    })
    .await;
    let err = driver(ts.socket())
        .expose(&exposure(HOST))
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("tailscale up"), "{err}");

    ts.set_backend_state("Stopped");
    let err = driver(ts.socket())
        .expose(&exposure(HOST))
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn not_root_nor_operator_is_unauthorized_with_advice() {
    let (_dir, ts) = start(Options {
        read_only: true,
        ..Options::default()
    })
    .await;
    let err = driver(ts.socket())
        .expose(&exposure(HOST))
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Unauthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("serve config denied"), "{text}");
    assert!(text.contains("tailscale set --operator=$USER"), "{text}");
}

#[tokio::test]
async fn shields_up_is_not_capable() {
    let (_dir, ts) = start(Options {
        shields_up: true,
        ..Options::default()
    })
    .await;
    let err = driver(ts.socket())
        .expose(&exposure(HOST))
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::NotCapable { .. }), "{err:?}");
    assert!(err.to_string().contains("--shields-up=false"), "{err}");
}

#[tokio::test]
async fn one_412_is_retried_and_keeps_the_concurrent_write() {
    let (_dir, ts) = start(Options::default()).await;
    ts.interfere(1);
    let tunnel = driver(ts.socket()).expose(&exposure(HOST)).await.unwrap();
    assert_eq!(
        ts.stats(),
        fake::Stats {
            posts: 2,
            precondition_failed: 1,
            concurrent_writes: 1
        }
    );
    let config = ts.serve_config();
    assert!(ours_in(&config), "{config:#}");
    let theirs = &config["Web"][format!("{HOST}:8443")]["Handlers"]["/"]["Text"];
    assert_eq!(theirs, "concurrent write 1", "{config:#}");

    // Removal retries the same way, and leaves the other writer's entry.
    ts.interfere(1);
    tunnel.remove().await.unwrap();
    assert_eq!(ts.stats().precondition_failed, 2);
    let config = ts.serve_config();
    assert!(
        config["Web"].get(format!("{HOST}:443")).is_none(),
        "{config:#}"
    );
    assert!(config.get("AllowFunnel").is_none(), "{config:#}");
    assert_eq!(config["TCP"], json!({"8443": {"HTTPS": true}}));
    assert_eq!(
        config["Web"][format!("{HOST}:8443")]["Handlers"]["/"]["Text"],
        "concurrent write 2"
    );
}

#[tokio::test]
async fn lasting_412s_end_in_a_conflict_naming_the_count() {
    let (_dir, ts) = start(Options::default()).await;
    ts.interfere(u32::MAX);
    let err = driver(ts.socket())
        .expose(&exposure(HOST))
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Conflict { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("{MAX_ATTEMPTS} times")),
        "{err}"
    );
    let stats = ts.stats();
    assert_eq!(stats.posts, u64::from(MAX_ATTEMPTS));
    assert_eq!(stats.precondition_failed, u64::from(MAX_ATTEMPTS));
    assert!(!ours_in(&ts.serve_config()));
}

#[tokio::test]
async fn a_foreign_handler_on_the_node_name_is_a_conflict() {
    let (_dir, ts) = start(Options::default()).await;
    let theirs = json!({
        "TCP": {"443": {"HTTPS": true}},
        "Web": {format!("{HOST}:443"): {"Handlers": {"/": {"Proxy": "http://127.0.0.1:3000"}}}},
        "AllowFunnel": {format!("{HOST}:443"): true}
    });
    ts.set_serve_config(&theirs).unwrap();
    let err = driver(ts.socket())
        .expose(&exposure(HOST))
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Conflict { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("http://127.0.0.1:3000") && text.contains("off"),
        "{text}"
    );
    assert_eq!(ts.serve_config(), theirs);
    assert_eq!(ts.stats().posts, 0);

    // Port 443 forwarding raw TCP is one too.
    let tcp = json!({"TCP": {"443": {"TCPForward": "127.0.0.1:22"}}});
    let change = ts.set_serve_config(&tcp).unwrap_err();
    assert_eq!(
        change, r#"want to serve "tcp", but port 443 is already serving "https""#,
        "the fake refuses a serve-type change, as tailscaled does"
    );
    ts.set_serve_config(&Value::Null).unwrap();
    ts.set_serve_config(&tcp).unwrap();
    let err = driver(ts.socket())
        .expose(&exposure(HOST))
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Conflict { .. }), "{err:?}");
    assert_eq!(ts.serve_config(), tcp);
}

#[tokio::test]
async fn the_watch_reports_entries_lost_behind_its_back_and_their_return() {
    let (_dir, ts) = start(Options::default()).await;
    let d = driver(ts.socket()).check_every(Duration::from_millis(20));
    let tunnel = d.expose(&exposure(HOST)).await.unwrap();
    let mut watch = tunnel.watch();
    let kept = ts.serve_config();

    ts.set_serve_config(&json!({})).unwrap(); // `tailscale funnel reset`
    let down = tokio::time::timeout(
        BOUND,
        watch.wait_for(|s| matches!(s, TunnelState::Down { .. })),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert!(
        down.to_string().contains("tailscale funnel reset"),
        "{down}"
    );

    ts.set_serve_config(&kept).unwrap();
    tokio::time::timeout(BOUND, watch.wait_for(|s| s.url().is_some()))
        .await
        .unwrap()
        .unwrap();
    tunnel.remove().await.unwrap();
}

/// The `omega-fake tailscaled` program, run as tailscaled would be.
#[tokio::test]
async fn against_the_omega_fake_program() {
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tailscaled.sock");
    let state: PathBuf = dir.path().join("serve.json");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_omega-fake"))
        .args(["tailscaled", "--socket"])
        .arg(&socket)
        .args(["--dns-name", "node-b.tail9876.ts.net.", "--state-file"])
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(BOUND, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ready.contains("LocalAPI listening on"), "{ready}");

    let tunnel = driver(&socket).expose(&exposure(HOST)).await.unwrap();
    assert_eq!(
        tunnel.watch().borrow().url(),
        Some("https://node-b.tail9876.ts.net")
    );
    let written: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        written,
        json!({
            "TCP": {"443": {"HTTPS": true}},
            "Web": {"node-b.tail9876.ts.net:443": {"Handlers": {"/": {"Proxy": "http://127.0.0.1:18080"}}}},
            "AllowFunnel": {"node-b.tail9876.ts.net:443": true}
        })
    );
    tunnel.remove().await.unwrap();
    let r = raw(
        &socket,
        "local-tailscaled.sock",
        "GET",
        "/localapi/v0/serve-config",
        &[("Sec-Tailscale", "localapi")],
        b"",
    )
    .await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"{}".as_slice()));

    // SIGTERM ends it cleanly.
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
