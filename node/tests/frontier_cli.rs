//! `omega guest build|push` and `omega dev` with a frontier brane: the
//! example graph ingest → transform (wasm) → stats (a Linux microVM under
//! QEMU TCG) → archive (wasm). Skips with a message without
//! `qemu-system-x86_64`.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod cli_common;
#[path = "../../testing/prereq.rs"]
mod prereq;
use cli_common::{omega, text, wasm};

#[path = "../../runtime/tests/common/frontier.rs"]
mod frontier;

fn images() -> Vec<String> {
    ["ingest", "transform", "archive"]
        .iter()
        .flat_map(|b| ["--image".to_string(), format!("{b}:0.1={}", wasm(b))])
        .collect()
}

#[test]
fn dev_runs_standard_frontier_standard() {
    if frontier::qemu().is_none() {
        return;
    }
    let Some(busybox) = frontier::busybox() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    assert!(omega(home.path(), &["id", "new"]).status.success());
    let guest = home.path().join("guest");
    let agent = frontier::static_agent().display().to_string();
    let o = omega(
        home.path(),
        &[
            "guest",
            "build",
            "--out",
            guest.to_str().unwrap(),
            "--agent",
            &agent,
            "--busybox",
            busybox.to_str().unwrap(),
            "--workload",
            "examples/frontier/shard-stats.sh",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("workload /workload/shard-stats.sh"),
        "{}",
        text(&o)
    );
    // A dynamically linked agent is refused with the fix.
    let o = omega(
        home.path(),
        &[
            "guest",
            "build",
            "--out",
            home.path().join("bad").to_str().unwrap(),
            "--agent",
            env!("CARGO_BIN_EXE_omega"),
            "--workload",
            "examples/frontier/shard-stats.sh",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("dynamically linked"), "{}", text(&o));
    // Push it as shard-stats:latest (what `guest = "shard-stats"` means).
    let o = omega(
        home.path(),
        &[
            "guest",
            "push",
            guest.to_str().unwrap(),
            "--name",
            "shard-stats:latest",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("kernel bafkr4i"), "{}", text(&o));
    let archive = home.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    let dir = format!("archive={}:/archive:rw", archive.display());
    let mut args = vec![
        "dev",
        "examples/frontier.zgraph.toml",
        "--frontier-backend",
        "qemu-tcg",
        "--dir",
        &dir,
        "--event",
        "ingest:tick=1,2,3",
    ];
    let images = images();
    args.extend(images.iter().map(String::as_str));
    let o = omega(home.path(), &args);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("stats: qemu-tcg microVM ready"), "{out}");
    let has = |start: &str, part: &str| {
        out.lines()
            .any(|l| l.starts_with(start) && l.contains(part))
    };
    assert!(
        has("stats <- tensor.shard ", ": emitted shard.stats"),
        "{out}"
    );
    assert!(has("archive <- shard.stats ", ": ok"), "{out}");
    assert!(
        out.contains("[stats] INFO shard from dev/transform@") && out.contains(": 12 bytes"),
        "{out}"
    );
    let bin = std::fs::read_dir(&archive)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "bin"))
        .expect("one archived shard");
    let stats = std::fs::read_to_string(bin).unwrap();
    assert!(stats.starts_with("bytes=12 floats=3 kernel="), "{stats}");
    // Every VM is gone when omega dev exits.
    let run = home.path().join("data/frontier-run");
    let left = std::fs::read_dir(&run).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "run dirs left in {}", run.display());
}

#[test]
fn dev_skips_frontier_without_a_backend_and_refuses_missing_gpus() {
    let home = tempfile::tempdir().unwrap();
    let mut args = vec![
        "dev",
        "examples/frontier.zgraph.toml",
        "--frontier-backend",
        "none",
        "--event",
        "ingest:tick=1",
    ];
    let images = images();
    args.extend(images.iter().map(String::as_str));
    let o = omega(home.path(), &args);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(
            "skipped stats: frontier (microVM) brane: disabled by --frontier-backend none"
        ),
        "{out}"
    );
    assert!(
        out.contains("stats <- tensor.shard: 1 event(s) not delivered (stats skipped: frontier"),
        "{out}"
    );
    // gpu = "passthrough" on a host without a GPU in its own IOMMU group:
    // refused with the reason, never run on the CPU.
    if omega_runtime_refuses_gpu() {
        let manifest = home.path().join("gpu.zgraph.toml");
        std::fs::write(
            &manifest,
            "[brane.train]\nsubstrate = \"gaia\"\ncapability = \"frontier\"\nguest = \"x\"\ngpu = \"passthrough\"\n",
        )
        .unwrap();
        let o = omega(home.path(), &["dev", manifest.to_str().unwrap()]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(
            out.contains(
                "skipped train: frontier (microVM) brane: gpu = \"passthrough\" refused: "
            ),
            "{out}"
        );
    }
    let o = omega(
        home.path(),
        &[
            "dev",
            "examples/frontier.zgraph.toml",
            "--frontier-backend",
            "vmware",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("unknown --frontier-backend"),
        "{}",
        text(&o)
    );
}

/// Whether this host has no GPU that could be passed through (the usual
/// case on CI machines).
fn omega_runtime_refuses_gpu() -> bool {
    let has_groups = std::fs::read_dir("/sys/kernel/iommu_groups")
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    let has_gpu = std::fs::read_dir("/sys/bus/pci/devices")
        .map(|d| {
            d.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("class"))
                    .is_ok_and(|c| c.trim().starts_with("0x03"))
            })
        })
        .unwrap_or(false);
    !(has_groups && has_gpu)
}
