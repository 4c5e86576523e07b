//! Helpers shared by the benchmark programs in `node/examples/`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The value after flag `name` in `args`, parsed, or `default`.
pub(crate) fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

/// `--omega PATH`, or the `omega` binary of the target directory this
/// example was built into (`target/PROFILE/examples/X` → `target/PROFILE/omega`).
pub(crate) fn omega_path(args: &[String]) -> PathBuf {
    if let Some(p) = args
        .iter()
        .position(|a| a == "--omega")
        .and_then(|i| args.get(i + 1))
    {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("omega"))
        .expect("target dir")
}

/// Polls `cond` every 5 ms until it holds or `limit` passes; returns how
/// long it took.
pub(crate) fn wait(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// A `KEY:   N kB` field of a /proc file, in KiB (0 when absent).
pub(crate) fn proc_kib(path: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
