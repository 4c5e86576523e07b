//! The `cloudflared` driver against the fake cloudflared (`omega-fake`
//! through a symlink named `cloudflared`), on 127.0.0.1 only.

mod common;

use common::{Fake, alive, exposure, fast, origin, wait_state};
use std::time::{Duration, Instant};

use omega_resolvers::client::{self, Target};
use omega_resolvers::driver::cloudflared::{Cloudflared, Config};
use omega_resolvers::driver::supervise::Supervision;
use omega_resolvers::{Driver, DriverError, TunnelState};

fn config(fake: &Fake) -> Config {
    Config {
        program: fake.program(),
        poll_interval: Duration::from_millis(50),
        supervision: fast(),
        ..Config::default()
    }
}

async fn get_through(edge: &str, host: &str) -> String {
    let resp = client::request(
        &Target::Tcp(edge.to_owned()),
        host,
        "GET",
        "/",
        &[],
        &[],
        Duration::from_secs(5),
    )
    .await
    .expect("request through the edge");
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.text()
}

async fn closed(addr: &str) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

#[tokio::test]
async fn quick_tunnel_comes_up_serves_and_is_removed() {
    let fake = Fake::new("cloudflared", "");
    let gateway = origin().await;
    let driver = Cloudflared::new(config(&fake));
    let tunnel = driver.expose(&exposure(gateway)).await.expect("expose");
    let starts = fake.starts();
    assert_eq!(starts.len(), 1);
    let hostname = &starts[0]["hostname"];
    assert!(hostname.ends_with(".trycloudflare.com"), "{hostname}");
    assert_eq!(
        *tunnel.watch().borrow(),
        TunnelState::Up {
            url: format!("https://{hostname}")
        }
    );
    // A request "from the internet" reaches the gateway with the
    // resolver's host (--http-host-header), over https.
    let seen = get_through(&starts[0]["edge"], hostname).await;
    assert_eq!(seen, "host=demo.example.com proto=https xfh=-");

    let pid = starts[0]["pid"].clone();
    assert!(alive(&pid));
    tunnel.remove().await.expect("remove");
    assert!(!alive(&pid), "cloudflared {pid} still runs");
    assert!(
        closed(&starts[0]["metrics"]).await,
        "metrics port still open"
    );
    assert!(closed(&starts[0]["edge"]).await, "edge still open");
}

#[tokio::test]
async fn named_tunnel_is_up_at_the_resolver_host() {
    let fake = Fake::new("cloudflared", "");
    let creds = fake.path("omega.json");
    std::fs::write(
        &creds,
        r#"{"AccountTag":"0123456789abcdef","TunnelSecret":"c2VjcmV0","TunnelID":"6b4b1c9e-6d5c-4b5a-9d43-0c2b2f0e5b1a"}"#,
    )
    .expect("creds");
    let gateway = origin().await;
    let driver = Cloudflared::new(Config {
        tunnel: Some("omega".into()),
        credentials: Some(creds),
        ..config(&fake)
    });
    let tunnel = driver.expose(&exposure(gateway)).await.expect("expose");
    assert_eq!(
        tunnel.watch().borrow().url(),
        Some("https://demo.example.com")
    );
    let starts = fake.starts();
    assert_eq!(starts[0]["hostname"], "-");
    let seen = get_through(&starts[0]["edge"], "demo.example.com").await;
    assert_eq!(seen, "host=demo.example.com proto=https xfh=-");
    tunnel.remove().await.expect("remove");
    assert!(!alive(&starts[0]["pid"]));
}

#[tokio::test]
async fn absent_program_is_unavailable_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = dir.path().join("cloudflared");
    let driver = Cloudflared::new(Config {
        program: program.clone(),
        supervision: fast(),
        ..Config::default()
    });
    let t0 = Instant::now();
    let e = driver
        .expose(&exposure("127.0.0.1:9".parse().expect("addr")))
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(1));
    let text = e.to_string();
    assert!(matches!(e, DriverError::Unavailable { .. }), "{text}");
    assert!(text.contains(&program.display().to_string()), "{text}");
    assert!(text.contains("install cloudflared"), "{text}");
}

#[tokio::test]
async fn missing_credentials_file_names_it_and_the_fix() {
    let fake = Fake::new("cloudflared", "");
    let creds = fake.path("missing.json");
    let driver = Cloudflared::new(Config {
        tunnel: Some("omega".into()),
        credentials: Some(creds.clone()),
        ..config(&fake)
    });
    let e = driver.expose(&exposure(origin().await)).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DriverError::Unauthorized { .. }), "{text}");
    assert!(text.contains(&creds.display().to_string()), "{text}");
    assert!(text.contains("cloudflared tunnel login"), "{text}");
    assert!(text.contains("cloudflared tunnel create omega"), "{text}");
    assert!(fake.starts().is_empty(), "cloudflared must not be started");
}

#[tokio::test]
async fn tunnel_by_name_without_id_needs_the_account_certificate() {
    let fake = Fake::new("cloudflared", "");
    let creds = fake.path("old.json");
    std::fs::write(&creds, r#"{"AccountTag":"a","TunnelSecret":"c2VjcmV0"}"#).expect("creds");
    let driver = Cloudflared::new(Config {
        tunnel: Some("omega".into()),
        credentials: Some(creds),
        ..config(&fake)
    });
    let e = driver.expose(&exposure(origin().await)).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DriverError::Unauthorized { .. }), "{text}");
    assert!(text.contains("cloudflared tunnel login"), "{text}");
    assert!(text.contains("origincert"), "{text}");
}

#[tokio::test]
async fn credentials_refused_by_the_edge_are_unauthorized() {
    let fake = Fake::new("cloudflared", "OMEGA_FAKE_FAIL=auth");
    let creds = fake.path("omega.json");
    std::fs::write(&creds, r#"{"AccountTag":"a","TunnelSecret":"c2VjcmV0","TunnelID":"6b4b1c9e-6d5c-4b5a-9d43-0c2b2f0e5b1a"}"#)
        .expect("creds");
    let driver = Cloudflared::new(Config {
        tunnel: Some("6b4b1c9e-6d5c-4b5a-9d43-0c2b2f0e5b1a".into()),
        credentials: Some(creds.clone()),
        ..config(&fake)
    });
    let t0 = Instant::now();
    let e = driver.expose(&exposure(origin().await)).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let text = e.to_string();
    assert!(matches!(e, DriverError::Unauthorized { .. }), "{text}");
    assert!(
        text.contains("Unauthorized: Invalid tunnel secret"),
        "{text}"
    );
    assert!(text.contains(&creds.display().to_string()), "{text}");
    let pid = &fake.starts()[0]["pid"];
    assert!(
        !alive(pid),
        "cloudflared {pid} left running after a failed expose"
    );
}

#[tokio::test]
async fn exit_is_down_then_restarted_with_a_new_hostname() {
    let fake = Fake::new("cloudflared", "OMEGA_FAKE_FAIL=exit-after-ms=300");
    let driver = Cloudflared::new(config(&fake));
    let tunnel = driver
        .expose(&exposure(origin().await))
        .await
        .expect("expose");
    let first = tunnel.watch().borrow().url().expect("up").to_owned();
    // The next start behaves.
    fake.knobs("");
    let down = wait_state(tunnel.as_ref(), "Down", |s| {
        matches!(s, TunnelState::Down { .. })
    })
    .await;
    let TunnelState::Down { reason } = down else {
        unreachable!()
    };
    assert!(reason.contains("exited (exit status 1)"), "{reason}");
    assert!(reason.contains("restarting in 0.1 s"), "{reason}");
    let second = wait_state(tunnel.as_ref(), "Up again", |s| s.url().is_some()).await;
    let second = second.url().expect("url").to_owned();
    let starts = fake.starts();
    assert_eq!(starts.len(), 2);
    assert_ne!(first, second, "a restarted quick tunnel gets a new name");
    assert_eq!(second, format!("https://{}", starts[1]["hostname"]));
    assert_ne!(starts[0]["pid"], starts[1]["pid"]);
    assert!(!alive(&starts[0]["pid"]));
    tunnel.remove().await.expect("remove");
    assert!(!alive(&starts[1]["pid"]));
}

#[tokio::test]
async fn repeated_exits_back_off() {
    let fake = Fake::new(
        "cloudflared",
        "OMEGA_FAKE_FAIL=exit-after-ms=50\nOMEGA_FAKE_CONNECT_MS=20",
    );
    let driver = Cloudflared::new(config(&fake));
    let tunnel = driver
        .expose(&exposure(origin().await))
        .await
        .expect("expose");
    // Delays 100, 200, 400, 400 ms after runs of ~70 ms.
    wait_state(
        tunnel.as_ref(),
        "the fourth restart",
        |s| matches!(s, TunnelState::Down { reason } if reason.contains("(restart 4)")),
    )
    .await;
    let TunnelState::Down { reason } = tunnel.watch().borrow().clone() else {
        panic!("down");
    };
    assert!(
        reason.contains("restarting in 0.4 s (restart 4)"),
        "{reason}"
    );
    tunnel.remove().await.expect("remove");
    for s in fake.starts() {
        assert!(!alive(&s["pid"]));
    }
}

#[tokio::test]
async fn never_ready_times_out_and_leaves_nothing() {
    let fake = Fake::new("cloudflared", "OMEGA_FAKE_FAIL=never-ready");
    let driver = Cloudflared::new(Config {
        supervision: Supervision {
            ready_timeout: Duration::from_millis(800),
            ..fast()
        },
        ..config(&fake)
    });
    let t0 = Instant::now();
    let e = driver.expose(&exposure(origin().await)).await.unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(e, DriverError::Timeout { .. }), "{e}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let start = &fake.starts()[0];
    assert!(!alive(&start["pid"]));
    assert!(closed(&start["metrics"]).await);
}

#[tokio::test]
async fn unreachable_edge_is_named_in_the_timeout() {
    let fake = Fake::new("cloudflared", "OMEGA_FAKE_FAIL=edge");
    let driver = Cloudflared::new(Config {
        supervision: Supervision {
            ready_timeout: Duration::from_millis(800),
            ..fast()
        },
        ..config(&fake)
    });
    let e = driver.expose(&exposure(origin().await)).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DriverError::Timeout { .. }), "{text}");
    assert!(text.contains("cannot reach the Cloudflare edge"), "{text}");
    assert!(text.contains("no recent network activity"), "{text}");
}

#[tokio::test]
async fn quick_tunnel_service_failure_is_unavailable() {
    let fake = Fake::new("cloudflared", "OMEGA_FAKE_FAIL=quick-service");
    let driver = Cloudflared::new(config(&fake));
    let e = driver.expose(&exposure(origin().await)).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DriverError::Unavailable { .. }), "{text}");
    assert!(text.contains("api.trycloudflare.com"), "{text}");
}

#[tokio::test]
async fn remove_kills_a_program_that_ignores_sigterm() {
    let fake = Fake::new("cloudflared", "OMEGA_FAKE_FAIL=ignore-term");
    let driver = Cloudflared::new(config(&fake));
    let tunnel = driver
        .expose(&exposure(origin().await))
        .await
        .expect("expose");
    let start = fake.starts()[0].clone();
    let t0 = Instant::now();
    tunnel.remove().await.expect("remove");
    let took = t0.elapsed();
    // SIGTERM, the 1 s grace, then SIGKILL.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(!alive(&start["pid"]));
    assert!(closed(&start["metrics"]).await);
}

#[tokio::test]
async fn dropping_the_tunnel_stops_cloudflared() {
    let fake = Fake::new("cloudflared", "");
    let driver = Cloudflared::new(config(&fake));
    let tunnel = driver
        .expose(&exposure(origin().await))
        .await
        .expect("expose");
    let pid = fake.starts()[0]["pid"].clone();
    drop(tunnel);
    let t0 = Instant::now();
    while alive(&pid) {
        assert!(t0.elapsed() < Duration::from_secs(3), "{pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fake refuses an unknown flag the way cloudflared does: usage on
/// stdout, exit status 0 (cloudflared ignores app.Run's error).
#[test]
fn fake_refuses_unknown_flags_like_cloudflared() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omega-fake"))
        .args([
            "cloudflared",
            "tunnel",
            "--no-such-flag",
            "--url",
            "http://127.0.0.1:1",
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("Incorrect Usage: flag provided but not defined: -no-such-flag"),
        "{stdout}"
    );
}
