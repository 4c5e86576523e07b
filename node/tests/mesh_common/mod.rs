//! Helpers for the real-process mesh tests: run `omega` and daemons.
#![allow(dead_code, unreachable_pub, missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `omega`, without the environment variables that would point it at the
/// developer's own key or node.
pub fn omega() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_omega"));
    c.env_remove("OMEGA_KEY")
        .env_remove("OMEGA_DATA_DIR")
        .env_remove("OMEGA_NODE_DIR");
    c
}

/// The `omega node` command the test harnesses start: inside `netns` if
/// given, stderr appended to `DIR/log`, discovery every second, then
/// `extra`, `--join` and the `--peer`s.
#[allow(clippy::too_many_arguments)]
pub fn node_command(
    dir: &Path,
    name: &str,
    substrate: &str,
    token: Option<&str>,
    peers: &[String],
    netns: Option<&str>,
    listen: &str,
    extra: &[&str],
) -> Command {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_omega")]);
            c
        }
        None => omega(),
    };
    cmd.args([
        "node",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        listen,
    ])
    .args(["--name", name, "--substrate", substrate])
    .args(["--discovery-interval", "1"])
    .args(extra)
    .env("RUST_LOG", "info,libp2p=warn")
    .stdout(Stdio::null())
    .stderr(log);
    if let Some(t) = token {
        cmd.args(["--join", t]);
    }
    for p in peers {
        cmd.args(["--peer", p]);
    }
    cmd
}

/// Runs `omega --json ARGS` and parses its output.
pub fn json(args: &[&str]) -> Value {
    let out = omega()
        .arg("--json")
        .args(args)
        .output()
        .expect("run omega");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

pub fn init_mesh(dir: &Path) -> String {
    let v = json(&["mesh", "init", "--mesh-dir", dir.to_str().unwrap()]);
    v["mesh"].as_str().expect("mesh init").to_owned()
}

pub fn invite(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "mesh",
        "invite",
        "--substrate",
        "habitat",
        "--mesh-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let v = json(&args);
    v["token"].as_str().expect("mesh invite").to_owned()
}

/// A daemon; killed with SIGKILL when dropped.
pub struct Daemon {
    pub dir: PathBuf,
    pub name: String,
    child: Child,
}

impl Daemon {
    pub fn start(dir: &Path, name: &str, token: Option<&str>, peers: &[String]) -> Self {
        Self::spawn(
            dir,
            name,
            token,
            peers,
            None,
            "/ip4/127.0.0.1/udp/0/quic-v1",
            &[],
        )
    }

    /// Starts `omega node`, inside network namespace `netns` if given.
    pub fn spawn(
        dir: &Path,
        name: &str,
        token: Option<&str>,
        peers: &[String],
        netns: Option<&str>,
        listen: &str,
        extra: &[&str],
    ) -> Self {
        let child = node_command(dir, name, "habitat", token, peers, netns, listen, extra)
            .spawn()
            .expect("spawn omega node");
        let d = Self {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            child,
        };
        d.wait_api();
        d
    }

    fn wait_api(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if self.status()["listen"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not come up; log:\n{}", self.name, self.log());
    }

    pub fn status(&self) -> Value {
        json(&["status", "--data-dir", self.dir.to_str().unwrap()])
    }

    pub fn peers(&self) -> Value {
        json(&["peers", "--data-dir", self.dir.to_str().unwrap()])
    }

    pub fn addr(&self) -> String {
        self.status()["listen"][0].as_str().unwrap().to_owned()
    }

    pub fn did(&self) -> String {
        self.status()["did"].as_str().unwrap().to_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    pub fn terminate(mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The state `node` reports for the member named `name`.
pub fn state_of(node: &Daemon, name: &str) -> Option<(String, String)> {
    node.peers()
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| {
            (
                p["state"].as_str().unwrap_or("").to_owned(),
                p["substrate"].as_str().unwrap_or("").to_owned(),
            )
        })
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns the time it took.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Whether this process may create network namespaces (root and `ip netns`).
pub fn netns_available() -> Result<(), String> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("omp{}x{n}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .status()
        .is_ok_and(|s| s.success());
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    if ok {
        Ok(())
    } else {
        Err("needs root and `ip netns` (iproute2)".into())
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces deleted on drop.
pub struct Namespaces(pub Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            // Kill anything still running in it, then delete it.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Namespaces `{tag}0..n` each with a veth into a bridge living in `{tag}br`,
/// addresses 10.{net}.0.{i+1}/24.
pub fn bridge(tag: &str, n: usize, net: u8) -> Namespaces {
    let br = format!("{tag}br");
    sh(&["ip", "netns", "add", &br]);
    let mut all = Namespaces(vec![br.clone()]);
    sh(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
    sh(&["ip", "-n", &br, "link", "set", "br0", "up"]);
    for i in 0..n {
        let ns = format!("{tag}{i}");
        sh(&["ip", "netns", "add", &ns]);
        all.0.push(ns.clone());
        let inner = format!("{tag}v{i}");
        let outer = format!("{tag}p{i}");
        // Created inside the namespaces: nothing ever appears on the host.
        sh(&[
            "ip", "-n", &ns, "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            "netns", &br,
        ]);
        sh(&[
            "ip", "-n", &br, "link", "set", &outer, "master", "br0", "up",
        ]);
        let addr = format!("10.{net}.0.{}/24", i + 1);
        sh(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &inner]);
        sh(&["ip", "-n", &ns, "link", "set", &inner, "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    }
    all
}
