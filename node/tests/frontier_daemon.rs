//! Frontier branes in the `omega node` daemon, with real processes: which
//! backend a node picks and why (`omega status`), placement when none is
//! usable, and — under QEMU TCG, forced with `--frontier-backend qemu-tcg`
//! — a frontier brane started by the reconciler between standard branes,
//! an event flowing standard → frontier → standard, `kill -9` of the node
//! with its VM running (the restart reclaims the orphan), and `omega
//! delete` stopping the VM. The QEMU test skips with a message without
//! `qemu-system-x86_64`.
//!
//! Figures (probe, apply → running, event round trip) are printed; the
//! assertions use generous ceilings (TCG boots take seconds on a loaded
//! two-core machine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dispatch_common;
mod mesh_common;
#[path = "../../testing/prereq.rs"]
mod prereq;

#[path = "../../runtime/tests/common/frontier.rs"]
mod frontier;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dispatch_common::{Mesh, Node, brane, run, wait_for, wasm};
use serde_json::{Value, json};

const LISTEN: &str = "/ip4/127.0.0.1/udp/0/quic-v1";
const CEILING: Duration = Duration::from_secs(30);
/// Probe boot, then boot of the brane's VM, under TCG.
const BOOT_CEILING: Duration = Duration::from_secs(240);

fn start(dir: &Path, name: &str, substrate: &str, token: Option<&str>, extra: &[&str]) -> Node {
    Node::spawn_with(
        dir,
        name,
        substrate,
        token,
        &[],
        None,
        LISTEN,
        extra,
        BOOT_CEILING,
    )
}

fn host_has_vmx() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    })
}

#[test]
fn nodes_without_a_usable_backend_say_why_and_do_not_advertise_frontier() {
    let tmp = tempfile::tempdir().unwrap();
    let mesh = Mesh::init(&tmp.path().join("mesh"));
    // Habitat: never frontier, no probe.
    let h = start(&tmp.path().join("h"), "h", "habitat", None, &[]);
    let f = &h.status()["frontier"];
    assert_eq!(f["usable"], false, "{f}");
    assert!(f["reason"].as_str().unwrap().contains("habitat"), "{f}");
    assert_eq!(f["probes"].as_array().unwrap().len(), 0, "{f}");
    let text = omega_text(&["status", "--data-dir", h.d()]);
    assert!(
        text.contains("frontier   none, not usable (auto): habitat"),
        "{text}"
    );
    // --frontier-backend none: disabled.
    let n = start(
        &tmp.path().join("n"),
        "n",
        "biome",
        None,
        &["--frontier-backend", "none"],
    );
    let f = &n.status()["frontier"];
    assert_eq!(f["usable"], false, "{f}");
    assert!(
        f["reason"]
            .as_str()
            .unwrap()
            .contains("disabled by --frontier-backend none"),
        "{f}"
    );
    // A bad choice is refused.
    let (ok, _, e) = run(&[
        "node",
        "--data-dir",
        tmp.path().join("x").to_str().unwrap(),
        "--frontier-backend",
        "vmware",
    ]);
    assert!(!ok && e.contains("vmware"), "{e}");
    drop((h, n));

    // Default auto on a gaia node: without vmx/svm no probe boots, nothing
    // is advertised, and the frontier brane is unplaceable with the reason.
    let token = mesh.invite("gaia");
    let started = Instant::now();
    let g = start(&tmp.path().join("g"), "g", "gaia", Some(&token), &[]);
    eprintln!("gaia node (auto) up in {:?}", started.elapsed());
    let f = g.status()["frontier"].clone();
    if host_has_vmx() {
        prereq::hardware(&format!(
            "this host has vmx/svm: the assertions about a host without them do not apply ({f})"
        ));
        return;
    }
    assert_eq!(f["usable"], false, "{f}");
    assert_eq!(f["backend"], Value::Null, "{f}");
    assert!(f["reason"].as_str().unwrap().contains("no vmx/svm"), "{f}");
    assert!(
        f["reason"]
            .as_str()
            .unwrap()
            .contains("--frontier-backend qemu-tcg"),
        "{f}"
    );
    let manifest = tmp.path().join("vm.zgraph.toml");
    std::fs::write(
        &manifest,
        "[brane.stats]\nsubstrate = \"gaia\"\ncapability = \"frontier\"\nguest = \"shard-stats\"\n",
    )
    .unwrap();
    let (ok, _, e) = run(&[
        "--key",
        &mesh.root_key(),
        "apply",
        manifest.to_str().unwrap(),
        "--data-dir",
        g.d(),
    ]);
    assert!(ok, "{e}");
    let placed = wait_for(CEILING, || {
        brane(&g.ps(), "vm", "stats").is_some_and(|b| b["status"] == "unplaceable")
    });
    assert!(placed.is_some(), "{}", g.ps());
    let d = g.describe("stats");
    let reasons = d["ineligible"].to_string();
    assert!(reasons.contains("frontier"), "{d}");
    assert!(
        reasons.contains("this node's frontier backend: no probe passed"),
        "{d}"
    );
    assert!(reasons.contains("no vmx/svm"), "{d}");
    let text = omega_text(&["describe", "stats", "--data-dir", g.d()]);
    assert!(text.contains("no vmx/svm"), "{text}");
}

#[test]
fn daemon_runs_a_frontier_brane_reclaims_orphans_and_stops_it() {
    if frontier::qemu().is_none() {
        return;
    }
    let Some(busybox) = frontier::busybox() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mesh = Mesh::init(&tmp.path().join("mesh"));
    let guest = tmp.path().join("guest");
    let agent = frontier::static_agent().display().to_string();
    let (ok, _, e) = run(&[
        "guest",
        "build",
        "--out",
        guest.to_str().unwrap(),
        "--agent",
        &agent,
        "--busybox",
        busybox.to_str().unwrap(),
        "--workload",
        frontier::repo()
            .join("examples/frontier/shard-stats.sh")
            .to_str()
            .unwrap(),
    ]);
    assert!(ok, "{e}");

    let dir = tmp.path().join("g");
    let token = mesh.invite("gaia");
    let tcg = ["--frontier-backend", "qemu-tcg"];
    let started = Instant::now();
    let g = start(&dir, "g", "gaia", Some(&token), &tcg);
    eprintln!(
        "gaia node (qemu-tcg, probe boot first) up in {:?}",
        started.elapsed()
    );
    let f = g.status()["frontier"].clone();
    assert_eq!(f["usable"], true, "{f}\n{}", g.log());
    assert_eq!(f["backend"], "qemu-tcg", "{f}");
    assert!(f["probes"][0]["usable"] == true, "{f}");
    eprintln!("probe: {}", f["probes"][0]["reason"]);
    let text = omega_text(&["status", "--data-dir", g.d()]);
    assert!(
        text.contains("frontier   qemu-tcg (qemu-tcg): a tiny boot of"),
        "{text}"
    );
    assert!(text.contains("  probe    qemu-tcg: usable"), "{text}");

    // Images: wasm branes (replicated), the guest (this node only).
    for (file, name) in [
        ("ingest", "ingest:0.1"),
        ("transform", "transform:0.1"),
        ("archive", "archive:0.1"),
    ] {
        let (ok, _, e) = run(&[
            "--key",
            &mesh.root_key(),
            "image",
            "push",
            &wasm(file),
            "--name",
            name,
            "--data-dir",
            g.d(),
        ]);
        assert!(ok, "{e}");
    }
    let archive = tmp.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    let manifest = tmp.path().join("fr.zgraph.toml");
    std::fs::write(&manifest, manifest_text(&archive)).unwrap();
    // Applied before the guest is pushed: the brane fails to start, and
    // says why.
    let (ok, _, e) = run(&[
        "--key",
        &mesh.root_key(),
        "apply",
        manifest.to_str().unwrap(),
        "--data-dir",
        g.d(),
    ]);
    assert!(ok, "{e}");
    let why = wait_for(CEILING, || {
        g.describe("stats")["events"]
            .to_string()
            .contains("not replicated across the mesh yet")
    });
    assert!(why.is_some(), "{}", g.describe("stats"));

    let pushed = Instant::now();
    let (ok, _, e) = run(&[
        "--key",
        &mesh.root_key(),
        "guest",
        "push",
        guest.to_str().unwrap(),
        "--name",
        "shard-stats:latest",
        "--data-dir",
        g.d(),
    ]);
    assert!(ok, "{e}");
    let running = wait_for(BOOT_CEILING, || stats_running(&g));
    eprintln!("guest pushed -> stats running: {:?}", pushed.elapsed());
    assert!(
        running.is_some(),
        "{}\n{}",
        serde_json::to_string_pretty(&g.ps()).unwrap(),
        g.log()
    );

    // An event flows ingest → transform → stats (the VM) → archive.
    let sent = Instant::now();
    let (ok, r, e) = run(&[
        "--key",
        &mesh.root_key(),
        "emit",
        "tick",
        "1,2,3",
        "--to",
        "ingest",
        "--data-dir",
        g.d(),
    ]);
    assert!(ok, "{e}");
    assert_eq!(r["ids"].as_array().map(Vec::len), Some(1), "{r}");
    let written = wait_for(BOOT_CEILING, || {
        std::fs::read_dir(&archive).is_ok_and(|d| d.count() == 1)
    });
    eprintln!("event round trip through the VM: {:?}", sent.elapsed());
    assert!(written.is_some(), "nothing archived; log:\n{}", g.log());
    let (_, tail, _) = run(&["tail", "stats", "--data-dir", g.d()]);
    assert_eq!(tail["emitted"], json!(["shard.stats"]), "{tail}");
    let written: Vec<PathBuf> = std::fs::read_dir(&archive)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let stats_text = std::fs::read_to_string(&written[0]).unwrap();
    assert!(
        stats_text.starts_with("bytes=12 floats=3 kernel="),
        "{stats_text}"
    );

    // kill -9 with the VM running: the restart reclaims it.
    let run_root = dir.join("frontier-run");
    let (old_dir, old_pid) = vm_dirs(&run_root).pop().expect("a VM run dir");
    assert!(alive(old_pid));
    let dir = g.kill9();
    // QEMU outlives its node (nothing ties it to the node's life).
    assert!(alive(old_pid), "qemu {old_pid} died with the node");
    let g = start(&dir, "g", "gaia", None, &tcg);
    assert!(g.log().contains("reclaimed 1 microVM(s)"), "{}", g.log());
    assert!(!old_dir.exists(), "{} still there", old_dir.display());
    let gone = wait_for(CEILING, || !alive(old_pid));
    assert!(gone.is_some(), "qemu {old_pid} still runs");
    // The restarted node starts the brane again (its desired state persisted).
    let again = wait_for(BOOT_CEILING, || {
        g.log().matches("microVM ready").count() >= 2 && stats_running(&g)
    });
    assert!(again.is_some(), "{}", g.log());
    for l in g.log().lines().filter(|l| l.contains("microVM ready")) {
        eprintln!("{l}");
    }
    let (_, new_pid) = vm_dirs(&run_root).pop().expect("a new VM run dir");

    // Delete: the VM stops and its run directory is removed.
    let (ok, _, e) = run(&[
        "--key",
        &mesh.root_key(),
        "delete",
        "fr",
        "--data-dir",
        g.d(),
    ]);
    assert!(ok, "{e}");
    let stopped = wait_for(CEILING, || vm_dirs(&run_root).is_empty() && !alive(new_pid));
    assert!(stopped.is_some(), "{:?}\n{}", vm_dirs(&run_root), g.log());
    assert!(g.log().contains("microVM stopped"), "{}", g.log());
}

fn manifest_text(archive: &Path) -> String {
    format!(
        r#"
[brane.ingest]
substrate = "gaia"
image = "ingest:0.1"

[brane.transform]
substrate = "gaia"
image = "transform:0.1"

[brane.transform.config]
scale = "2"

[brane.stats]
substrate = "gaia"
capability = "frontier"
guest = "shard-stats"

[brane.stats.limits]
memory = "256MiB"
timeout_ms = 20000

[brane.archive]
substrate = "gaia"
image = "archive:0.1"

[brane.archive.config]
dir = "/archive"

[brane.archive.grants]
dirs = [{{ host = "{}", guest = "/archive", mode = "rw" }}]

[graph]
edges = [
  {{ from = "ingest", to = "transform", on = "raw.batch" }},
  {{ from = "transform", to = "stats", on = "tensor.shard" }},
  {{ from = "stats", to = "archive", on = "shard.stats" }},
]
"#,
        archive.display()
    )
}

fn stats_running(node: &Node) -> bool {
    brane(&node.ps(), "fr", "stats").is_some_and(|b| {
        b["actual"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["state"] == "running"))
    })
}

/// The VM run directories under `root` and their QEMU pids.
fn vm_dirs(root: &Path) -> Vec<(PathBuf, u32)> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = std::fs::read_to_string(e.path().join("pid")).ok()?;
            Some((e.path(), pid.trim().parse().ok()?))
        })
        .collect()
}

/// Whether `pid` runs (not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !matches!(
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('Z' | 'X') | None
        )
    })
}

/// `omega ARGS` (text output): stdout and stderr.
fn omega_text(args: &[&str]) -> String {
    let o = dispatch_common::omega().args(args).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
