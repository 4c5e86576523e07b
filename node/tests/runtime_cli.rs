//! `omega run`, `omega image`, `omega dev` on the example branes.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::process::Command;

mod cli_common;
use cli_common::{omega, text, wasm};

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
fn dev_takes_directory_grants_from_the_manifest() {
    let home = tempfile::tempdir().unwrap();
    let archive = home.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    let manifest = format!(
        r#"[brane.ingest]
substrate = "habitat"
image = "ingest:0.1"

[brane.transform]
substrate = "biome"
image = "transform:0.1"

[brane.transform.config]
scale = "2"

[brane.archive]
substrate = "habitat"
image = "archive:0.1"

[brane.archive.config]
dir = "/archive"

[brane.archive.grants]
dirs = [{{ host = {:?}, guest = "/archive", mode = "rw" }}]

[graph]
edges = [
  {{ from = "ingest", to = "transform", on = "raw.batch" }},
  {{ from = "transform", to = "archive", on = "tensor.shard" }},
]
"#,
        archive.display().to_string()
    );
    let path = home.path().join("pipeline.zgraph.toml");
    std::fs::write(&path, manifest).unwrap();
    let o = omega(
        home.path(),
        &[
            "dev",
            path.to_str().unwrap(),
            "--image",
            &format!("ingest:0.1={}", wasm("ingest")),
            "--image",
            &format!("transform:0.1={}", wasm("transform")),
            "--image",
            &format!("archive:0.1={}", wasm("archive")),
            "--image",
            &format!("hello-http:0.1={}", wasm("hello_http")),
            "--event",
            "ingest:tick=1,2,3",
            "--serve-for",
            "0",
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let written = std::fs::read(only_bin(&archive)).unwrap();
    assert_eq!(written.len(), 12, "{out}");
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
            "--image",
            &format!("hello-http:0.1={}", wasm("hello_http")),
            "--dir",
            &grant,
            "--event",
            "ingest:tick=1,2,3",
            "--serve-for",
            "0",
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("skipped train: frontier"), "{out}");
    assert!(out.contains("serving hello on http://127.0.0.1:"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("[transform] INFO transform ") && l.ends_with(": 3 values x2")),
        "{out}"
    );
    assert!(
        out.contains("train <- tensor.shard: 1 event(s) not delivered (train skipped: frontier"),
        "{out}"
    );
    let written = std::fs::read(only_bin(&archive)).unwrap();
    let floats: Vec<f32> = written
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats, vec![2.0, 4.0, 6.0]);
}

/// Send one HTTP/1.1 GET to a loopback URL and return the raw response.
fn http_get(url: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.strip_prefix("http://").unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn dev_serves_http_branes_on_loopback() {
    use std::io::BufRead;
    let home = tempfile::tempdir().unwrap();
    let manifest = home.path().join("web.zgraph.toml");
    std::fs::write(
        &manifest,
        "[brane.web]\nsubstrate = \"habitat\"\nimage = \"hello-http:0.1\"\nhttp = true\n",
    )
    .unwrap();
    let refused = omega(
        home.path(),
        &[
            "dev",
            manifest.to_str().unwrap(),
            "--http-listen",
            "web=0.0.0.0:0",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("is not a loopback address"),
        "{}",
        text(&refused)
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_omega"))
        .args([
            "dev",
            manifest.to_str().unwrap(),
            "--image",
            &format!("hello-http:0.1={}", wasm("hello_http")),
            "--http-listen",
            "web=127.0.0.1:0",
            "--serve-for",
            "3",
        ])
        .env("OMEGA_HOME", home.path())
        .env_remove("OMEGA_KEY")
        .env_remove("OMEGA_DATA_DIR")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("omega dev printed a serving line")
            .unwrap();
        if let Some(url) = line.strip_prefix("serving web on ") {
            break url.to_string();
        }
    };
    let res = http_get(&url, "/from-cli");
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    assert!(res.contains("hello from omega /from-cli"), "{res}");
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{rest:?}");
}

/// The one `.bin` file archive wrote into `dir` (named by its event id).
fn only_bin(dir: &std::path::Path) -> std::path::PathBuf {
    let bins: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    assert_eq!(bins.len(), 1, "{bins:?}");
    bins[0].clone()
}
