//! Building `examples/branes` for `wasm32-wasip2`, shared by the runtime's
//! tests and the CLI tests (`node/tests/runtime_cli.rs` includes this file).
//! The guests get their own target dir: the outer cargo holds the main one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Build `examples/branes` (once per process; cargo's lock serialises
/// concurrent test binaries) and return the directory of the `.wasm` files.
pub(crate) fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/branes");
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../guests");
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--quiet",
                // scripts/test fetched the lock's crates: nothing downloads
                // while tests run.
                "--offline",
                "--locked",
            ])
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building examples/branes failed");
        target.join("wasm32-wasip2/release")
    })
}
