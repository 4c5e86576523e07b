//! What integration tests need from the machine, and the only skips allowed.
//!
//! Included by path (`#[path = "../../testing/prereq.rs"] mod prereq;`) in
//! every test binary that needs a program, root or a fixture.
//!
//! - A missing **prerequisite** (QEMU, busybox, a kernel, the Firecracker
//!   fixture, root and `ip netns`, wireguard-go) fails the test under
//!   `CI=true`: CI installs every one of them itself (`.ci/run`). Elsewhere
//!   the test skips.
//! - A fact about the **hardware** (hardware virtualization, a usable
//!   `/dev/kvm`) skips everywhere.
//!
//! Every skip is said on stderr and appended to
//! `$CARGO_TARGET_TMPDIR/omega-skips.log`, which `scripts/test` prints after
//! the run, so a run that skipped says so in its summary.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;

fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string()
}

fn record(kind: &str, why: &str) {
    let line = format!(
        "{kind}: {} ({}): {why}",
        test_name(),
        env!("CARGO_CRATE_NAME")
    );
    eprintln!("SKIPPED {line}");
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("omega-skips.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Whether this run is CI's (`CI=true`), where nothing may be missing.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A prerequisite is missing: fails the test under `CI=true`, else records
/// the skip. The caller returns from the test after it.
pub fn missing(why: &str) {
    assert!(
        !in_ci(),
        "missing prerequisite under CI=true (CI installs it; see .ci/run): {why}"
    );
    record("missing prerequisite", why);
}

/// `found`, or `None` after [`missing`] with its reason.
pub fn require<T>(found: Result<T, String>) -> Option<T> {
    match found {
        Ok(t) => Some(t),
        Err(why) => {
            missing(&why);
            None
        }
    }
}

/// A fact about this machine's hardware makes the test (or part of it)
/// meaningless here: skipped everywhere, and listed.
pub fn hardware(why: &str) {
    record("hardware", why);
}
