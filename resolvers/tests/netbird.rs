//! The `netbird` driver against the fake netbird (`omega-fake` through a
//! symlink named `netbird`), on 127.0.0.1 only.

mod common;

use common::{Fake, alive, exposure, fast, origin, wait_state};
use std::time::{Duration, Instant};

use omega_resolvers::client::{self, Target};
use omega_resolvers::driver::netbird::{Config, Netbird};
use omega_resolvers::driver::supervise::Supervision;
use omega_resolvers::{Driver, DriverError, TunnelState};

fn config(fake: &Fake) -> Config {
    Config {
        program: fake.program(),
        supervision: fast(),
        ..Config::default()
    }
}

#[tokio::test]
async fn expose_is_up_at_the_printed_url_and_removed() {
    let fake = Fake::new("netbird", "");
    let gateway = origin().await;
    let driver = Netbird::new(config(&fake));
    let tunnel = driver.expose(&exposure(gateway)).await.expect("expose");
    let starts = fake.starts();
    assert_eq!(starts.len(), 1);
    let url = tunnel.watch().borrow().url().expect("up").to_owned();
    assert_eq!(url, starts[0]["url"]);
    // The resolver's name is the prefix: https://public-xxxx.DOMAIN.
    let name = url
        .strip_prefix("https://public-")
        .and_then(|r| r.strip_suffix(".eu.proxy.netbird.io"))
        .unwrap_or_else(|| panic!("{url}"));
    assert_eq!(name.len(), 4);

    // Through the (fake) reverse proxy: the peer's address as Host, the
    // public name in X-Forwarded-Host.
    let public = url.trim_start_matches("https://");
    let resp = client::request(
        &Target::Tcp(starts[0]["proxy"].clone()),
        public,
        "GET",
        "/",
        &[],
        &[],
        Duration::from_secs(5),
    )
    .await
    .expect("request through the proxy");
    assert_eq!(
        resp.text(),
        format!(
            "host=100.90.0.1:{} proto=https xfh={public}",
            gateway.port()
        )
    );

    let pid = starts[0]["pid"].clone();
    assert!(alive(&pid));
    let t0 = Instant::now();
    tunnel.remove().await.expect("remove");
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "SIGTERM suffices"
    );
    assert!(!alive(&pid), "netbird {pid} still runs");
    assert!(
        tokio::net::TcpStream::connect(&starts[0]["proxy"])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn absent_program_is_unavailable_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = dir.path().join("netbird");
    let driver = Netbird::new(Config {
        program: program.clone(),
        supervision: fast(),
        ..Config::default()
    });
    let e = driver
        .expose(&exposure("127.0.0.1:8080".parse().expect("addr")))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DriverError::Unavailable { .. }), "{text}");
    assert!(text.contains(&program.display().to_string()), "{text}");
    assert!(text.contains("v0.66.0"), "{text}");
}

#[tokio::test]
async fn daemon_not_running_is_unavailable() {
    let fake = Fake::new("netbird", "OMEGA_FAKE_FAIL=daemon\nOMEGA_FAKE_DIAL_MS=100");
    let driver = Netbird::new(Config {
        daemon_addr: Some("unix:///nonexistent/netbird.sock".into()),
        ..config(&fake)
    });
    let e = driver.expose(&exposure(origin().await)).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DriverError::Unavailable { .. }), "{text}");
    assert!(text.contains("unix:///nonexistent/netbird.sock"), "{text}");
    assert!(text.contains("connect to daemon"), "{text}");
    assert!(text.contains("netbird service start"), "{text}");
}

#[tokio::test]
async fn not_logged_in_is_unauthorized() {
    let fake = Fake::new("netbird", "OMEGA_FAKE_FAIL=needs-login");
    let driver = Netbird::new(config(&fake));
    let e = driver.expose(&exposure(origin().await)).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DriverError::Unauthorized { .. }), "{text}");
    assert!(text.contains("client is not running"), "{text}");
    assert!(text.contains("`netbird up`"), "{text}");
}

#[tokio::test]
async fn peer_expose_disabled_is_not_capable() {
    let fake = Fake::new("netbird", "OMEGA_FAKE_FAIL=expose-disabled");
    let driver = Netbird::new(config(&fake));
    let e = driver.expose(&exposure(origin().await)).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DriverError::NotCapable { .. }), "{text}");
    assert!(text.contains("peer expose"), "{text}");
}

#[tokio::test]
async fn exit_is_down_then_restarted_with_a_new_url() {
    let fake = Fake::new("netbird", "OMEGA_FAKE_FAIL=exit-after-ms=300");
    let driver = Netbird::new(config(&fake));
    let tunnel = driver
        .expose(&exposure(origin().await))
        .await
        .expect("expose");
    let first = tunnel.watch().borrow().url().expect("up").to_owned();
    fake.knobs("");
    let down = wait_state(tunnel.as_ref(), "Down", |s| {
        matches!(s, TunnelState::Down { .. })
    })
    .await;
    let TunnelState::Down { reason } = down else {
        unreachable!()
    };
    assert!(reason.contains("exited (exit status 1)"), "{reason}");
    assert!(
        reason.contains("connection to daemon closed unexpectedly"),
        "{reason}"
    );
    assert!(reason.contains("restarting in 0.1 s"), "{reason}");
    let second = wait_state(tunnel.as_ref(), "Up again", |s| s.url().is_some()).await;
    let starts = fake.starts();
    assert_eq!(starts.len(), 2);
    assert_eq!(second.url(), Some(starts[1]["url"].as_str()));
    assert_ne!(second.url(), Some(first.as_str()));
    tunnel.remove().await.expect("remove");
    assert!(!alive(&starts[1]["pid"]));
}

#[tokio::test]
async fn silent_daemon_times_out_and_leaves_nothing() {
    // The CLI waits up to 10 s for the daemon; the driver gives up first.
    let fake = Fake::new(
        "netbird",
        "OMEGA_FAKE_FAIL=daemon\nOMEGA_FAKE_DIAL_MS=60000",
    );
    let driver = Netbird::new(Config {
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
}

#[tokio::test]
async fn remove_kills_a_program_that_ignores_sigterm() {
    let fake = Fake::new("netbird", "OMEGA_FAKE_FAIL=ignore-term");
    let driver = Netbird::new(config(&fake));
    let tunnel = driver
        .expose(&exposure(origin().await))
        .await
        .expect("expose");
    let pid = fake.starts()[0]["pid"].clone();
    let t0 = Instant::now();
    tunnel.remove().await.expect("remove");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(!alive(&pid));
}

/// The fake prints what the real CLI prints, on stderr.
#[test]
fn fake_output_matches_the_cli() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omega-fake"))
        .args(["netbird", "expose", "8080", "--bogus"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: unknown flag: --bogus\n"
    );
}
