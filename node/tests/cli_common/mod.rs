//! Helpers for the tests that run `omega` verbs from the repository root
//! with a private `OMEGA_HOME`.
#![allow(dead_code, unreachable_pub, missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

#[path = "../../../runtime/tests/common/guests.rs"]
mod guests;
use guests::guests;

/// The example brane `name` built for wasm32-wasip2.
pub fn wasm(name: &str) -> String {
    guests().join(format!("{name}.wasm")).display().to_string()
}

/// Runs `omega ARGS` from the repository root with `OMEGA_HOME=home`.
pub fn omega(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("OMEGA_HOME", home)
        .env_remove("OMEGA_KEY")
        .env_remove("OMEGA_DATA_DIR")
        .output()
        .expect("omega runs")
}

/// Stdout then stderr, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
