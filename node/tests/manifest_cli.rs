//! `omega validate` and `omega graph` on hostile manifests: readers that go
//! away, control characters, huge files, bad encodings.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should abort the test

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn omega() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omega"));
    cmd.env("NO_COLOR", "1").env_remove("OMEGA_KEY");
    cmd
}

fn run(args: &[&str]) -> Output {
    omega().args(args).output().expect("omega runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Anything a terminal would act on, newlines aside.
fn has_controls(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes)
        .chars()
        .any(|c| c.is_control() && c != '\n')
}

/// A valid manifest whose `omega graph` text is far larger than a pipe's
/// buffer, so the writer is still writing when the reader goes away.
fn big_manifest(dir: &Path) -> String {
    let manifest: String = (0..1000)
        .map(|i| format!("[brane.b{i:04}-{}]\nsubstrate = \"gaia\"\n", "x".repeat(50)))
        .collect();
    let path = dir.join("big.zgraph.toml");
    std::fs::write(&path, manifest).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Run `omega ARGS | head -1` on stdout (or on stderr with `on_stderr`):
/// read one line, close the pipe, and return the exit status and the
/// other stream.
fn head_one(args: &[&str], on_stderr: bool) -> (Option<i32>, String, String) {
    let mut child = omega()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("omega runs");
    let (read, mut other): (Box<dyn std::io::Read>, Box<dyn std::io::Read>) = if on_stderr {
        (
            Box::new(child.stderr.take().unwrap()),
            Box::new(child.stdout.take().unwrap()),
        )
    } else {
        (
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        )
    };
    let mut first = String::new();
    BufReader::new(read).read_line(&mut first).unwrap();
    // `read` is dropped here: the pipe closes with most output unread.
    let mut rest = String::new();
    other.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    (status.code(), first, rest)
}

#[test]
fn graph_and_validate_end_quietly_when_the_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let big = big_manifest(dir.path());

    let (code, first, stderr) = head_one(&["graph", &big], false);
    assert_eq!(first, "mesh (unnamed)\n");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // `validate` prints a line per file: a few thousand lines.
    let small = dir.path().join("small.zgraph.toml");
    std::fs::write(&small, "[brane.a]\nsubstrate = \"gaia\"\n").unwrap();
    let mut args = vec!["validate"];
    args.extend(std::iter::repeat_n(small.to_str().unwrap(), 3000));
    let (code, first, stderr) = head_one(&args, false);
    assert!(first.starts_with("ok  "), "{first}");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn diagnostics_on_a_closed_stderr_do_not_panic() {
    // `omega validate bad… 2>&1 | head -1`: the reports go to stderr.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.zgraph.toml");
    std::fs::write(&bad, "[brane.a]\nsubstrate = \"moon\"\nreplica = 1\n").unwrap();
    let bad = bad.to_str().unwrap();
    let mut args = vec!["validate"];
    args.extend(std::iter::repeat_n(bad, 2000));
    let (code, first, stdout) = head_one(&args, true);
    assert!(first.contains("zgraph::invalid_manifest"), "{first}");
    // Invalid manifests: exit 1, and no panic (which would exit 101).
    assert_eq!(code, Some(1), "{stdout}");
}

#[test]
fn control_characters_never_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // Raw escape sequences in a string (a TOML syntax error, shown with
    // its source line) and in the file's name.
    let evil = dir.path().join("evil\x1b]0;owned\x07.zgraph.toml");
    std::fs::write(
        &evil,
        "[brane.a]\nsubstrate = \"gaia\"\npeers = \"\x1b]0;owned\x07\x1b[2J\x1bc\"\n",
    )
    .unwrap();
    let out = run(&["validate", evil.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!has_controls(&out.stdout), "{:?}", text(&out));
    assert!(!has_controls(&out.stderr), "{:?}", text(&out));
    assert!(text(&out).contains("\\u{1b}"), "{}", text(&out));

    // Escaped control characters (valid TOML) are refused in a glob, with
    // the message escaped too.
    let escaped = dir.path().join("escaped.zgraph.toml");
    std::fs::write(
        &escaped,
        "[brane.a]\nsubstrate = \"gaia\"\npeers = \"lab\\u001b]0;owned\\u0007*\"\n",
    )
    .unwrap();
    for verb in ["validate", "graph"] {
        let out = run(&[verb, escaped.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(!has_controls(&out.stderr), "{:?}", text(&out));
        assert!(
            text(&out).contains("zgraph::control_character"),
            "{}",
            text(&out)
        );
    }

    // A valid manifest's file name, echoed by `validate`.
    let named = dir.path().join("ok\x1b[2J.zgraph.toml");
    std::fs::write(&named, "[brane.a]\nsubstrate = \"gaia\"\n").unwrap();
    let out = run(&["validate", named.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!has_controls(&out.stdout), "{:?}", text(&out));
    assert!(
        text(&out).contains("ok\\u{1b}[2J.zgraph.toml"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_huge_manifest_is_refused_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.zgraph.json");
    // 8 MiB of one JSON string: far over the bound, and never parsed.
    let mut body = b"{\"brane\": \"".to_vec();
    body.resize(8 << 20, b'x');
    std::fs::write(&huge, &body).unwrap();
    let out = run(&["validate", "--json", huge.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = &doc["manifests"][0]["errors"][0];
    assert_eq!(error["code"], "zgraph::too_large", "{doc}");
    assert_eq!(
        (error["line"].as_u64(), error["column"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn invalid_utf8_is_located() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("latin1.zgraph.toml");
    std::fs::write(&bad, b"[brane.a]\nsubstrate = \"ga\xefa\"\n").unwrap();
    let out = run(&["validate", "--json", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = &doc["manifests"][0]["errors"][0];
    assert_eq!(error["code"], "zgraph::syntax", "{doc}");
    assert_eq!(
        (error["line"].as_u64(), error["column"].as_u64()),
        (Some(2), Some(16))
    );
    assert!(
        error["message"].as_str().unwrap().contains("byte 25"),
        "{doc}"
    );

    let out = run(&["validate", bad.to_str().unwrap()]);
    assert!(
        text(&out).contains("latin1.zgraph.toml:2:16"),
        "{}",
        text(&out)
    );
}
