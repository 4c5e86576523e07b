//! `omega run`, `omega image`, `omega dev` on the example branes.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::path::Path;
use std::process::{Command, Output};

#[path = "../../runtime/tests/common/guests.rs"]
mod guests;
use guests::guests;

fn wasm(name: &str) -> String {
    guests().join(format!("{name}.wasm")).display().to_string()
}

fn omega(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("OMEGA_HOME", home)
        .env_remove("OMEGA_KEY")
        .env_remove("OMEGA_DATA_DIR")
        .output()
        .expect("omega runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn run_prints_what_the_brane_emitted() {
    let home = tempfile::tempdir().unwrap();
    let o = omega(
        home.path(),
        &["run", &wasm("ingest"), "--event", "tick=4,5"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("raw.batch key=\"\" \"4,5\""),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("[ingest] INFO"), "{}", text(&o));
    let o = omega(
        home.path(),
        &["run", &wasm("transform"), "--event", "raw.batch=oops"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("bad-input"), "{}", text(&o));
}

#[test]
fn image_push_refuses_non_components_and_lists_signed_tags() {
    let home = tempfile::tempdir().unwrap();
    assert!(omega(home.path(), &["id", "new"]).status.success());
    let junk = home.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0").unwrap();
    let o = omega(
        home.path(),
        &["image", "push", junk.to_str().unwrap(), "--name", "junk:1"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("core WebAssembly module"), "{}", text(&o));
    let o = omega(
        home.path(),
        &["image", "push", &wasm("ingest"), "--name", "ingest:0.1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = omega(home.path(), &["--json", "image", "ls"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["images"][0]["tags"][0], "ingest:0.1");
    assert!(
        v["images"][0]["image"]
            .as_str()
            .unwrap()
            .starts_with("bafkr4i")
    );
}

#[test]
fn dev_runs_the_example_pipeline_end_to_end() {
    let home = tempfile::tempdir().unwrap();
    let archive = home.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    // ingest comes from the image store; the others from --image overrides.
    assert!(omega(home.path(), &["id", "new"]).status.success());
    let o = omega(
        home.path(),
        &["image", "push", &wasm("ingest"), "--name", "ingest:0.1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let grant = format!("archive={}:/archive:rw", archive.display());
    let o = omega(
        home.path(),
        &[
            "dev",
            "examples/pipeline.zgraph.toml",
            "--image",
            &format!("transform:0.1={}", wasm("transform")),
            "--image",
            &format!("archive:0.1={}", wasm("archive")),
            "--dir",
            &grant,
            "--event",
            "ingest:tick=1,2,3",
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("skipped train: frontier"), "{out}");
    assert!(out.contains("skipped hello"), "{out}");
    assert!(
        out.contains("[transform] INFO transform ev0.0: 3 values x2"),
        "{out}"
    );
    assert!(
        out.contains("train <- tensor.shard ev0.0.0: not delivered"),
        "{out}"
    );
    let written = std::fs::read(archive.join("ev0_0_0.bin")).unwrap();
    let floats: Vec<f32> = written
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats, vec![2.0, 4.0, 6.0]);
}
