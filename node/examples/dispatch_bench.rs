//! Dispatch benchmark: five `omega node` daemons on loopback (two habitat,
//! two biome, one gaia) running the seed example, and a table of:
//! apply → every brane running on its nodes (P50/P99 over `--applies`),
//! kill -9 → re-placed on the survivors, restart → placement back,
//! catch-up of a node that missed applies while down, and document size,
//! node memory and dispatch bytes per node per minute at `--manifests`
//! manifests and after `--churn` applies/deletes.
//!
//! ```sh
//! cargo build --release -p omega-node --bin omega --example dispatch_bench
//! (cd examples/branes && cargo build --release --target wasm32-wasip2)
//! target/release/examples/dispatch_bench --guests examples/branes/target/wasm32-wasip2/release
//! ```
//!
//! Options: `--omega PATH`, `--guests DIR` (the example branes' `.wasm`),
//! `--applies N` (20), `--manifests N` (100), `--churn N` (10000),
//! `--window SECS` (20, the idle window bytes are measured over); the
//! daemons log at `OMEGA_BENCH_LOG` (default `warn`) into their data dirs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use omega_gossip::Hlc;
use omega_gossip::desired::{Authority, DesiredRecord};
use serde_json::Value;

#[path = "bench_common/mod.rs"]
mod bench_common;
use bench_common::{arg, omega_path, proc_kib, wait};

fn run(omega: &Path, args: &[&str]) -> Value {
    let out = Command::new(omega)
        .arg("--json")
        .args(args)
        .output()
        .expect("run omega");
    if !out.status.success() {
        panic!(
            "omega {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn api(dir: &Path, method: &str, path: &str, body: &[u8]) -> Value {
    omega_node::api::call(dir, method, path, body).unwrap_or(Value::Null)
}

struct Node {
    dir: PathBuf,
    name: String,
    substrate: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(
    omega: &Path,
    dir: &Path,
    name: &str,
    substrate: &str,
    token: Option<&str>,
    peer: Option<&str>,
) -> Node {
    std::fs::create_dir_all(dir).expect("data dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .expect("log");
    let mut cmd = Command::new(omega);
    cmd.args(["node", "--data-dir", dir.to_str().unwrap_or_default()])
        .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--name", name])
        .args([
            "--substrate",
            substrate,
            "--discovery-interval",
            "1",
            "--memory-mib",
            "2048",
        ])
        .env(
            "RUST_LOG",
            std::env::var("OMEGA_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(t) = token {
        cmd.args(["--join", t]);
    }
    if let Some(p) = peer {
        cmd.args(["--peer", p]);
    }
    let child = cmd.spawn().expect("spawn omega node");
    let node = Node {
        dir: dir.to_path_buf(),
        name: name.into(),
        substrate: substrate.into(),
        child,
    };
    wait(Duration::from_secs(20), || {
        api(&node.dir, "GET", "/v0/status", b"")["listen"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    })
    .expect("daemon came up");
    node
}

/// Every placed brane of `manifest` runs its current plan where placed.
fn ready(ps: &Value, manifest: &str, plan: Option<&str>) -> bool {
    ps["manifests"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == manifest))
        .filter(|m| plan.is_none_or(|p| m["plan"] == p))
        .and_then(|m| m["branes"].as_array())
        .is_some_and(|bs| {
            bs.iter()
                .filter(|b| b["status"] == "placed")
                .all(|b| b["ready"] == true)
        })
}

fn transform_on(ps: &Value, manifest: &str) -> Vec<String> {
    let mut v: Vec<String> = ps["manifests"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == manifest))
        .and_then(|m| m["branes"].as_array())
        .and_then(|bs| bs.iter().find(|b| b["brane"] == "transform"))
        .and_then(|b| b["desired"].as_array())
        .map(|d| {
            d.iter()
                .map(|x| format!("{}:{}", x["node"].as_str().unwrap_or(""), x["instances"]))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn rss_mib(pid: u32) -> f64 {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS") as f64 / 1024.0
}

fn dispatch_bytes(nodes: &[Node]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| {
            let d = &api(&n.dir, "GET", "/v0/status", b"")["dispatch"];
            d["bytes_sent"].as_u64().unwrap_or(0) + d["bytes_received"].as_u64().unwrap_or(0)
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Signs and writes a record in-process (no CLI process per write).
fn write(
    node: &Path,
    root: &omega_identity::Keypair,
    make: impl FnOnce(Hlc, Authority<'_>) -> DesiredRecord,
) {
    let tick = api(node, "GET", "/v0/tick", b"");
    let hlc = Hlc::new(
        tick["wall_ms"].as_u64().unwrap_or(0),
        u32::try_from(tick["counter"].as_u64().unwrap_or(0)).unwrap_or(0),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rec = make(
        hlc,
        Authority {
            signer: root,
            mesh_root: root.did(),
            proofs: Vec::new(),
            exp: now + 3600,
            nonce: hlc.wall_ms.to_le_bytes().to_vec(),
        },
    );
    let _ = omega_node::api::Client::new(node).write(&rec.encode());
}

fn parked_plan(i: usize) -> omega_zgraph::Plan {
    let src = format!(
        "[brane.b{i}]\nsubstrate = \"habitat\"\nimage = \"hello:1.0\"\nreplicas = 0\n\n[brane.b{i}.config]\nn = \"{i}\"\n"
    );
    omega_zgraph::load(&src, "churn.toml", omega_zgraph::Format::Toml).expect("plan")
}

fn idle_rate(nodes: &[Node], window: u64) -> f64 {
    let before = dispatch_bytes(nodes);
    std::thread::sleep(Duration::from_secs(window));
    let after = dispatch_bytes(nodes);
    let total: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .sum();
    total as f64 / nodes.len() as f64 * 60.0 / window as f64
}

fn memory(nodes: &[Node]) -> (f64, f64) {
    let rss: Vec<f64> = nodes.iter().map(|n| rss_mib(n.child.id())).collect();
    (
        rss.iter().sum::<f64>() / rss.len() as f64,
        rss.iter().copied().fold(0.0, f64::max),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let omega = omega_path(&args);
    let applies: usize = arg(&args, "--applies", 20);
    let manifests: usize = arg(&args, "--manifests", 100);
    let churn: usize = arg(&args, "--churn", 10_000);
    let window: u64 = arg(&args, "--window", 20);
    let guests: PathBuf = arg(
        &args,
        "--guests",
        PathBuf::from("examples/branes/target/wasm32-wasip2/release"),
    );
    let tmp = std::env::temp_dir().join(format!("omega-dispatch-bench-{}", std::process::id()));
    let mesh = tmp.join("mesh");
    let m = mesh.to_str().unwrap_or_default().to_owned();
    run(&omega, &["mesh", "init", "--mesh-dir", &m]);
    let root_key = mesh.join("mesh-root.key");
    let rk = root_key.to_str().unwrap_or_default().to_owned();
    let root = omega_node::keystore::load(&root_key).expect("root key");
    let specs = [
        ("lab.lan/sensor-1", "habitat"),
        ("lab.lan/nas-01", "habitat"),
        ("lab.lan/transform-pool-1", "biome"),
        ("lab.lan/transform-pool-2", "biome"),
        ("lab.lan/gaia-1", "gaia"),
    ];
    let mut nodes: Vec<Node> = Vec::new();
    let mut seed_addr = None::<String>;
    for (i, (name, substrate)) in specs.iter().enumerate() {
        let token = run(
            &omega,
            &["mesh", "invite", "--substrate", substrate, "--mesh-dir", &m],
        )["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let n = start(
            &omega,
            &tmp.join(format!("n{i}")),
            name,
            substrate,
            Some(&token),
            seed_addr.as_deref(),
        );
        if seed_addr.is_none() {
            seed_addr = api(&n.dir, "GET", "/v0/status", b"")["listen"][0]
                .as_str()
                .map(str::to_owned);
        }
        nodes.push(n);
    }
    wait(Duration::from_secs(60), || {
        nodes
            .iter()
            .all(|n| api(&n.dir, "GET", "/v0/status", b"")["live_members"] == 4)
    })
    .expect("mesh formed");
    let d0 = nodes[0].dir.to_str().unwrap_or_default().to_owned();
    for (file, name) in [
        ("ingest", "ingest:1.0"),
        ("transform", "transform:2.4.1"),
        ("archive", "archive:1.2"),
        ("hello_http", "api:0.9"),
        ("ingest", "hello:1.0"),
    ] {
        let path = guests.join(format!("{file}.wasm"));
        run(
            &omega,
            &[
                "--key",
                &rk,
                "image",
                "push",
                path.to_str().unwrap_or_default(),
                "--name",
                name,
                "--data-dir",
                &d0,
            ],
        );
    }

    // Apply -> running, each apply a new plan (config changes) of one manifest.
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/multi-substrate-pipeline.zgraph.toml"),
    )
    .expect("seed example");
    let mut times = Vec::new();
    for i in 0..applies {
        let file = tmp.join(format!("seed-{i}.zgraph.toml"));
        std::fs::write(
            &file,
            seed.replace("/dev/ttyUSB0", &format!("/dev/ttyUSB{i}")),
        )
        .expect("write");
        let from = nodes[i % nodes.len()]
            .dir
            .to_str()
            .unwrap_or_default()
            .to_owned();
        let t = Instant::now();
        let v = run(
            &omega,
            &[
                "--key",
                &rk,
                "apply",
                file.to_str().unwrap_or_default(),
                "--name",
                "seed",
                "--data-dir",
                &from,
            ],
        );
        let plan = v["plan"].as_str().unwrap_or_default().to_owned();
        let took = wait(Duration::from_secs(60), || {
            nodes
                .iter()
                .all(|n| ready(&api(&n.dir, "GET", "/v0/ps", b""), "seed", Some(&plan)))
        });
        match took {
            Some(_) => times.push(t.elapsed()),
            None => {
                eprintln!("apply {i} (plan {plan}) did not reach running within 60 s:");
                for n in &nodes {
                    let ps = api(&n.dir, "GET", "/v0/ps", b"");
                    for m in ps["manifests"].as_array().into_iter().flatten() {
                        eprintln!("  {}: {} plan {}", n.name, m["name"], m["plan"]);
                        for b in m["branes"].as_array().into_iter().flatten() {
                            eprintln!(
                                "    {} ready={} desired={} actual={}",
                                b["brane"], b["ready"], b["desired"], b["actual"]
                            );
                        }
                    }
                }
            }
        }
    }
    times.sort();

    // kill -9 a transform host; restart it.
    let before = transform_on(&api(&nodes[0].dir, "GET", "/v0/ps", b""), "seed");
    let victim = nodes.remove(3);
    let (vdir, vname, vsub) = (
        victim.dir.clone(),
        victim.name.clone(),
        victim.substrate.clone(),
    );
    drop(victim);
    let t = Instant::now();
    let replaced = wait(Duration::from_secs(60), || {
        nodes.iter().all(|n| {
            let ps = api(&n.dir, "GET", "/v0/ps", b"");
            transform_on(&ps, "seed") == ["lab.lan/transform-pool-1:3"] && ready(&ps, "seed", None)
        })
    })
    .map(|_| t.elapsed());
    let t = Instant::now();
    nodes.insert(
        3,
        start(&omega, &vdir, &vname, &vsub, None, seed_addr.as_deref()),
    );
    let back = wait(Duration::from_secs(60), || {
        nodes.iter().all(|n| {
            let ps = api(&n.dir, "GET", "/v0/ps", b"");
            transform_on(&ps, "seed") == before && ready(&ps, "seed", None)
        })
    })
    .map(|_| t.elapsed());

    // Catch-up: a node misses ten applies while down.
    let down = nodes.remove(1);
    let (ddir, dname, dsub) = (down.dir.clone(), down.name.clone(), down.substrate.clone());
    drop(down);
    for i in 0..10 {
        write(&nodes[0].dir, &root, |h, a| {
            DesiredRecord::apply(&format!("missed-{i}"), &parked_plan(i), h, a).expect("sign")
        });
    }
    let t = Instant::now();
    nodes.insert(
        1,
        start(&omega, &ddir, &dname, &dsub, None, seed_addr.as_deref()),
    );
    let caught_up = wait(Duration::from_secs(60), || {
        let ps = api(&nodes[1].dir, "GET", "/v0/ps", b"");
        ps["manifests"].as_array().map_or(0, Vec::len) == 11
    })
    .map(|_| t.elapsed());

    // 100 manifests: size, memory, idle bytes.
    let t = Instant::now();
    for i in 0..manifests {
        let d = &nodes[i % nodes.len()].dir;
        write(d, &root, |h, a| {
            DesiredRecord::apply(&format!("m-{i}"), &parked_plan(i), h, a).expect("sign")
        });
    }
    let expected = 11 + manifests;
    wait(Duration::from_secs(120), || {
        nodes.iter().all(|n| {
            api(&n.dir, "GET", "/v0/ps", b"")["manifests"]
                .as_array()
                .map_or(0, Vec::len)
                == expected
        })
    });
    let fill = t.elapsed();
    let doc_at = api(&nodes[0].dir, "GET", "/v0/status", b"")["dispatch"]["document_bytes"]
        .as_u64()
        .unwrap_or(0);
    let mem_at = memory(&nodes);
    let rate_at = idle_rate(&nodes, window);

    // Churn: applies and deletes of 100 names, spread over the nodes.
    let t = Instant::now();
    for i in 0..churn {
        let d = &nodes[i % nodes.len()].dir;
        let name = format!("churn-{}", i % 100);
        if (i / 100) % 2 == 0 {
            write(d, &root, |h, a| {
                DesiredRecord::apply(&name, &parked_plan(i), h, a).expect("sign")
            });
        } else {
            write(d, &root, |h, a| {
                DesiredRecord::delete(&name, h, a).expect("sign")
            });
        }
    }
    let churn_time = t.elapsed();
    let t = Instant::now();
    // Every node shows the same manifests at the same plans.
    let names = |n: &Node| -> Vec<String> {
        api(&n.dir, "GET", "/v0/ps", b"")["manifests"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| format!("{}@{}", m["name"], m["plan"]))
                    .collect()
            })
            .unwrap_or_default()
    };
    let converged = wait(Duration::from_secs(300), || {
        let first = names(&nodes[0]);
        nodes.iter().all(|n| names(n) == first)
    })
    .map(|_| t.elapsed());
    let doc_after = api(&nodes[0].dir, "GET", "/v0/status", b"")["dispatch"]["document_bytes"]
        .as_u64()
        .unwrap_or(0);
    let mem_after = memory(&nodes);
    let rate_after = idle_rate(&nodes, window);

    let ms =
        |d: Option<Duration>| d.map_or("timeout".to_string(), |d| format!("{} ms", d.as_millis()));
    println!("{:<58} value", "metric (5 daemons on loopback)");
    println!(
        "{:<58} {}",
        format!("apply -> all branes running, P50 over {}", times.len()),
        ms(Some(percentile(&times, 0.5)))
    );
    println!(
        "{:<58} {}",
        format!("apply -> all branes running, P99 over {}", times.len()),
        ms(Some(percentile(&times, 0.99)))
    );
    println!(
        "{:<58} {}",
        "kill -9 -> re-placed and running on survivors",
        ms(replaced)
    );
    println!(
        "{:<58} {}",
        "restart -> placement back (minimal movement)",
        ms(back)
    );
    println!(
        "{:<58} {}",
        "restart -> caught up on 10 applies missed while down",
        ms(caught_up)
    );
    println!(
        "{:<58} {}",
        format!("write {manifests} manifests -> on every node"),
        ms(Some(fill))
    );
    println!(
        "{:<58} {} B",
        format!("document size at {} manifests", expected),
        doc_at
    );
    println!(
        "{:<58} {:.1} / {:.1} MiB",
        "node RSS there (mean / max)", mem_at.0, mem_at.1
    );
    println!(
        "{:<58} {:.0} B",
        "dispatch bytes per node per minute there (idle)", rate_at
    );
    println!(
        "{:<58} {:.0} writes/s ({} in {:?})",
        "churn write rate (applies + deletes)",
        churn as f64 / churn_time.as_secs_f64(),
        churn,
        churn_time
    );
    println!(
        "{:<58} {}",
        "churn done -> every node agrees",
        ms(converged)
    );
    println!(
        "{:<58} {} B",
        format!("document size after {churn} churn writes"),
        doc_after
    );
    println!(
        "{:<58} {:.1} / {:.1} MiB",
        "node RSS after churn (mean / max)", mem_after.0, mem_after.1
    );
    println!(
        "{:<58} {:.0} B",
        "dispatch bytes per node per minute after churn (idle)", rate_after
    );
    drop(nodes);
    if times.len() == applies && replaced.is_some() && back.is_some() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        eprintln!("kept {} for inspection", tmp.display());
    }
}
