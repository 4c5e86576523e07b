//! Every file and standard input the CLI and the daemon read is bounded:
//! `/dev/zero` as a token, a manifest, a key (directly or behind a symlink)
//! or a component ends in an error naming it and the limit, after reading
//! at most the limit. And an `omega image push` the mesh refuses leaves no
//! local tag behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dispatch_common;
mod mesh_common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use dispatch_common::{Mesh, Node, run, wasm};

/// `omega ARGS` with `OMEGA_HOME=home` and standard input from `stdin`.
fn omega_with_stdin(home: &Path, args: &[&str], stdin: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(args)
        .env("OMEGA_HOME", home)
        .env_remove("OMEGA_KEY")
        .env_remove("OMEGA_DATA_DIR")
        .stdin(std::fs::File::open(stdin).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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

fn refused(o: &Output, limit: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", text(o));
    assert!(text(o).contains(limit), "{}", text(o));
}

#[test]
fn dev_zero_on_stdin_is_refused_at_the_limit() {
    let home = tempfile::tempdir().unwrap();
    let o = omega_with_stdin(home.path(), &["token", "inspect", "-"], "/dev/zero");
    refused(
        &o,
        "standard input: more than 131072 bytes, the limit for a token",
    );
    let o = omega_with_stdin(
        home.path(),
        &["validate", "-", "--format", "toml"],
        "/dev/zero",
    );
    // At most one byte past the limit is read; the parser refuses it with
    // its own located error.
    refused(&o, "zgraph::too_large");
    let o = omega_with_stdin(
        home.path(),
        &["--json", "validate", "-", "--format", "toml"],
        "/dev/zero",
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifests"][0]["ok"], false, "{v}");
    assert!(v.to_string().contains("zgraph::too_large"), "{v}");
}

#[test]
fn a_key_that_is_a_symlink_to_dev_zero_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let link = home.path().join("zero.key");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let o = omega_with_stdin(
        home.path(),
        &["--key", link.to_str().unwrap(), "id", "show"],
        "/dev/null",
    );
    refused(&o, "more than 1024 bytes, the limit for a key file");
    // The daemon's own key too.
    let data = home.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink("/dev/zero", data.join("node.key")).unwrap();
    let o = omega_with_stdin(
        home.path(),
        &[
            "node",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ],
        "/dev/null",
    );
    refused(&o, "more than 1024 bytes, the limit for a key file");
}

#[test]
fn a_component_over_the_image_limit_is_refused_unread() {
    let home = tempfile::tempdir().unwrap();
    assert!(
        omega_with_stdin(home.path(), &["id", "new"], "/dev/null")
            .status
            .success()
    );
    // Sparse: its size says it all, nothing is read.
    let big = home.path().join("big.wasm");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((256 << 20) + 1)
        .unwrap();
    let o = omega_with_stdin(
        home.path(),
        &["image", "push", big.to_str().unwrap(), "--name", "big:1"],
        "/dev/null",
    );
    refused(
        &o,
        "more than 268435456 bytes, the limit for a component image",
    );
}

#[test]
fn a_push_the_mesh_refuses_leaves_no_local_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let mesh = Mesh::init(&tmp.path().join("mesh"));
    let node = Node::start(
        &tmp.path().join("n1"),
        "n1",
        "habitat",
        Some(&mesh.invite("habitat")),
        &[],
    );
    let stranger = tmp.path().join("stranger.key");
    let (ok, _, e) = run(&["id", "new", "--key", stranger.to_str().unwrap()]);
    assert!(ok, "{e}");
    let (ok, _, e) = run(&[
        "--key",
        stranger.to_str().unwrap(),
        "image",
        "push",
        &wasm("ingest"),
        "--name",
        "ingest:9.9",
        "--data-dir",
        node.d(),
    ]);
    assert!(!ok, "a stranger's push was accepted: {e}");
    let (ok, ls, e) = run(&["image", "ls", "--data-dir", node.d()]);
    assert!(ok, "{e}");
    assert!(!ls.to_string().contains("ingest:9.9"), "{ls}");
    // The mesh root's push of the same name is kept, here and in the mesh.
    let (ok, v, e) = run(&[
        "--key",
        &mesh.root_key(),
        "image",
        "push",
        &wasm("ingest"),
        "--name",
        "ingest:9.9",
        "--data-dir",
        node.d(),
    ]);
    assert!(ok && v["replicated"] == true, "{e}");
    let (_, ls, _) = run(&["image", "ls", "--data-dir", node.d()]);
    assert!(ls.to_string().contains("ingest:9.9"), "{ls}");
}
