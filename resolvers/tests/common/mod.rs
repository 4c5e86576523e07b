//! Helpers shared by the supervised drivers' tests (cloudflared, netbird).
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use omega_resolvers::driver::supervise::Supervision;
use omega_resolvers::{Exposure, Tunnel, TunnelState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn fast() -> Supervision {
    Supervision {
        ready_timeout: Duration::from_secs(5),
        stop_grace: Duration::from_secs(1),
        restart_initial: Duration::from_millis(100),
        restart_max: Duration::from_millis(400),
        restart_reset: Duration::from_secs(60),
    }
}

/// An origin that answers with the `Host`, `X-Forwarded-Proto` and
/// `X-Forwarded-Host` it saw.
pub async fn origin() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                        .unwrap_or("-")
                        .trim()
                        .to_owned()
                };
                let body = format!(
                    "host={} proto={} xfh={}",
                    header("host"),
                    header("x-forwarded-proto"),
                    header("x-forwarded-host")
                );
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

pub fn exposure(gateway: SocketAddr) -> Exposure {
    Exposure {
        resolver: "public".into(),
        manifest: "demo".into(),
        host: "demo.example.com".into(),
        gateway,
    }
}

pub fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

pub async fn wait_state(
    tunnel: &dyn Tunnel,
    what: &str,
    ok: impl Fn(&TunnelState) -> bool,
) -> TunnelState {
    let mut rx = tunnel.watch();
    let got = match tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| ok(s))).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    got.unwrap_or_else(|| panic!("no {what} within 10 s; state: {}", *rx.borrow()))
}

/// A temp dir with `NAME` → omega-fake, its knob file (`NAME.fake`, read
/// at every start) and its state file (one line per start).
pub struct Fake {
    pub dir: tempfile::TempDir,
    name: &'static str,
}

impl Fake {
    pub fn new(name: &'static str, knobs: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_omega-fake"), dir.path().join(name))
            .expect("symlink");
        let fake = Self { dir, name };
        fake.knobs(knobs);
        fake
    }

    pub fn program(&self) -> PathBuf {
        self.dir.path().join(self.name)
    }

    /// Replaces the knobs the next start reads (atomically).
    pub fn knobs(&self, knobs: &str) {
        let state = self.dir.path().join("state");
        let text = format!("OMEGA_FAKE_STATE={}\n{knobs}\n", state.display());
        let tmp = self.dir.path().join("knobs.tmp");
        std::fs::write(&tmp, text).expect("write knobs");
        std::fs::rename(&tmp, self.dir.path().join(format!("{}.fake", self.name))).expect("rename");
    }

    /// One map per start (`pid`, and what the fake recorded).
    pub fn starts(&self) -> Vec<HashMap<String, String>> {
        std::fs::read_to_string(self.dir.path().join("state"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                l.split(' ')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
