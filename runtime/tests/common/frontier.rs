//! Frontier test support, shared by the runtime's QEMU tests and the CLI
//! tests (`node/tests/frontier_cli.rs` includes this file): whether QEMU
//! is here, the static guest agent (built once, in its own target dir: the
//! outer cargo holds the main one), and a test guest image.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

// The including test crate declares `mod prereq` (testing/prereq.rs).
use crate::prereq;

/// The QEMU binary, or `None` after `prereq::missing`.
pub fn qemu() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("qemu-system-x86_64"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        prereq::missing(
            "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86 busybox-static)",
        );
    }
    found
}

/// A static busybox, or `None` after `prereq::missing`.
pub fn busybox() -> Option<PathBuf> {
    let found = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            std::fs::read(p)
                .is_ok_and(|b| omega_runtime::frontier::image::check_static_elf(&b).is_ok())
        });
    if found.is_none() {
        prereq::missing("no static busybox (apt-get install busybox-static)");
    }
    found
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Build `omega-agent` statically (once per process) and return its path.
pub fn static_agent() -> &'static Path {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../guest-agent");
        let status = Command::new(env!("CARGO"))
            .current_dir(repo())
            .args([
                "build",
                "-p",
                "omega-agent",
                "--bin",
                "omega-agent",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--quiet",
                "--offline",
                "--locked",
            ])
            .env("CARGO_TARGET_DIR", &target)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the static omega-agent failed");
        target.join("x86_64-unknown-linux-gnu/release/omega-agent")
    })
}
