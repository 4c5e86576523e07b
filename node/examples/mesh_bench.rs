//! Mesh benchmark: starts three `omega node` daemons on loopback and prints
//! start-to-admitted time, idle RSS after 30 s, and membership bytes/s per
//! idle node.
//!
//! ```sh
//! cargo build --release -p omega-node --bin omega --example mesh_bench
//! target/release/examples/mesh_bench            # uses target/release/omega
//! ```
//!
//! Options: `--idle SECS` (default 30), `--omega PATH`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "bench_common/mod.rs"]
mod bench_common;
use bench_common::{omega_path, proc_kib, wait};

fn json(omega: &PathBuf, args: &[&str]) -> Value {
    let out = Command::new(omega)
        .arg("--json")
        .args(args)
        .output()
        .expect("run omega");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Memory of a process, KiB: (RSS, anonymous RSS, file-backed RSS, PSS).
/// File-backed pages are mostly the `omega` binary's code, shared by every
/// daemon on the host and reclaimable; PSS divides shared pages among the
/// processes mapping them.
fn memory_kib(pid: u32) -> (u64, u64, u64, u64) {
    let status = format!("/proc/{pid}/status");
    (
        proc_kib(&status, "VmRSS"),
        proc_kib(&status, "RssAnon"),
        proc_kib(&status, "RssFile"),
        proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss"),
    )
}

struct Node {
    dir: PathBuf,
    child: Child,
    spawned: Instant,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(omega: &PathBuf, dir: PathBuf, name: &str, token: &str, peer: Option<&str>) -> Node {
    std::fs::create_dir_all(&dir).expect("data dir");
    let mut cmd = Command::new(omega);
    cmd.args(["node", "--data-dir", dir.to_str().unwrap_or_default()])
        .args([
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--name",
            name,
            "--join",
            token,
        ])
        .args(["--discovery-interval", "1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(p) = peer {
        cmd.args(["--peer", p]);
    }
    let spawned = Instant::now();
    let child = cmd.spawn().expect("spawn omega node");
    Node {
        dir,
        child,
        spawned,
    }
}

fn status(omega: &PathBuf, n: &Node) -> Value {
    json(
        omega,
        &["status", "--data-dir", n.dir.to_str().unwrap_or_default()],
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let idle = args
        .iter()
        .position(|a| a == "--idle")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(30u64);
    let omega = omega_path(&args);
    let tmp = std::env::temp_dir().join(format!("omega-bench-{}", std::process::id()));
    let mesh = tmp.join("mesh");
    json(
        &omega,
        &[
            "mesh",
            "init",
            "--mesh-dir",
            mesh.to_str().unwrap_or_default(),
        ],
    );
    let token = json(
        &omega,
        &[
            "mesh",
            "invite",
            "--substrate",
            "habitat",
            "--mesh-dir",
            mesh.to_str().unwrap_or_default(),
        ],
    )["token"]
        .as_str()
        .expect("invite")
        .to_owned();
    let n1 = start(&omega, tmp.join("n1"), "n1", &token, None);
    assert!(
        wait(Duration::from_secs(10), || {
            status(&omega, &n1)["listen"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        })
        .is_some()
    );
    let seed = status(&omega, &n1)["listen"][0]
        .as_str()
        .expect("listen")
        .to_owned();
    let mut nodes = vec![n1];
    let mut admitted = Vec::new();
    for name in ["n2", "n3"] {
        let n = start(&omega, tmp.join(name), name, &token, Some(&seed));
        let ok = wait(Duration::from_secs(10), || {
            !status(&omega, &n)["admitted_after_ms"].is_null()
        })
        .is_some();
        assert!(ok, "{name} not admitted");
        let wall = n.spawned.elapsed();
        let internal = status(&omega, &n)["admitted_after_ms"]
            .as_u64()
            .unwrap_or(0);
        admitted.push((name, wall, internal));
        nodes.push(n);
    }
    assert!(
        wait(Duration::from_secs(15), || nodes
            .iter()
            .all(|n| status(&omega, n)["live_members"] == 2))
        .is_some()
    );
    std::thread::sleep(Duration::from_secs(idle.saturating_sub(10)));
    let before: Vec<u64> = nodes
        .iter()
        .map(|n| status(&omega, n)["swim_bytes_sent"].as_u64().unwrap_or(0))
        .collect();
    let window = Duration::from_secs(10.min(idle));
    std::thread::sleep(window);
    let after: Vec<u64> = nodes
        .iter()
        .map(|n| status(&omega, n)["swim_bytes_sent"].as_u64().unwrap_or(0))
        .collect();

    println!("omega mesh benchmark: 3 daemons on loopback (QUIC), idle {idle} s");
    println!(
        "{:<6} {:>16} {:>12} {:>12} {:>12} {:>22} {:>14} {:>18}",
        "node",
        "RSS after idle",
        "anon",
        "file",
        "PSS",
        "start->admitted (wall)",
        "(in-process)",
        "swim bytes/s sent"
    );
    for (i, n) in nodes.iter().enumerate() {
        let adm = if i == 0 {
            ("-".to_owned(), "-".to_owned())
        } else {
            let (_, wall, internal) = admitted[i - 1];
            (format!("{} ms", wall.as_millis()), format!("{internal} ms"))
        };
        let rate = (after[i] - before[i]) as f64 / window.as_secs_f64();
        let (rss, anon, file, pss) = memory_kib(n.child.id());
        println!(
            "{:<6} {:>12} KiB {:>8} KiB {:>8} KiB {:>8} KiB {:>22} {:>14} {:>18.0}",
            format!("n{}", i + 1),
            rss,
            anon,
            file,
            pss,
            adm.0,
            adm.1,
            rate
        );
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&tmp);
}
