//! Runs every ```console example in the book (`docs/src/*.md`) against the
//! real `omega` binary, so the documentation cannot drift from the tool.
//!
//! Format of an example block:
//! - a line starting with `$ ` is a command, run with `bash -c` in a scratch
//!   directory shared by all the blocks of one page (it holds a copy of
//!   `examples/`), with this build's `omega` first on `PATH`;
//! - the lines after it are the expected output: each must match a line of the
//!   command's stdout+stderr, where `…` stands for any text;
//! - every command must exit 0, except the last one of a block fenced
//!   ```console,exit=N, which must exit N;
//! - `$GUESTS` is the directory of the example branes built for
//!   `wasm32-wasip2` (built once per test run).

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should abort the test

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../../runtime/tests/common/guests.rs"]
mod guests;

struct Example {
    command: String,
    expected: Vec<String>,
    exit: i32,
    line: usize,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent")
        .to_path_buf()
}

fn parse(page: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut in_block: Option<i32> = None;
    let mut block: Vec<Example> = Vec::new();
    for (i, line) in page.lines().enumerate() {
        if let Some(exit) = in_block {
            if line.trim_start().starts_with("```") {
                if let Some(last) = block.last_mut() {
                    last.exit = exit;
                }
                examples.append(&mut block);
                in_block = None;
            } else if let Some(cmd) = line.strip_prefix("$ ") {
                block.push(Example {
                    command: cmd.to_string(),
                    expected: Vec::new(),
                    exit: 0,
                    line: i + 1,
                });
            } else if let Some(last) = block.last_mut() {
                last.expected.push(line.to_string());
            }
        } else if let Some(info) = line.trim_start().strip_prefix("```console") {
            let exit = info
                .split(',')
                .find_map(|opt| opt.trim().strip_prefix("exit="))
                .map(|n| n.parse().expect("exit=N takes a number"))
                .unwrap_or(0);
            in_block = Some(exit);
        }
    }
    examples
}

/// Does `line` match `pattern`, where `…` in the pattern stands for any text?
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.trim().split('…').collect();
    let line = line.trim();
    let mut rest = line;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        let found = if i == 0 {
            rest.starts_with(part).then_some(0)
        } else {
            rest.find(part)
        };
        match found {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    parts.last().is_some_and(|p| p.is_empty()) || rest.is_empty()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn run_page(name: &str) -> usize {
    let root = repo_root();
    let page = std::fs::read_to_string(root.join("docs/src").join(name)).unwrap();
    let examples = parse(&page);
    let scratch = tempfile::tempdir().unwrap();
    copy_dir(&root.join("examples"), &scratch.path().join("examples"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_omega")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for ex in &examples {
        let out = Command::new("bash")
            .arg("-c")
            .arg(&ex.command)
            .current_dir(scratch.path())
            .env("PATH", &path)
            .env("OMEGA_HOME", scratch.path().join("home"))
            .env("NO_COLOR", "1")
            .env("GUESTS", guests::guests())
            .env_remove("OMEGA_KEY")
            .env_remove("OMEGA_DATA_DIR")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let where_ = format!("docs/src/{name}:{}: `{}`", ex.line, ex.command);
        assert_eq!(
            out.status.code(),
            Some(ex.exit),
            "{where_} exited {:?}, expected {}; output:\n{text}",
            out.status.code(),
            ex.exit
        );
        for pattern in ex.expected.iter().filter(|p| !p.trim().is_empty()) {
            assert!(
                text.lines().any(|l| matches(pattern, l)),
                "{where_}: no output line matches `{pattern}`; output:\n{text}"
            );
        }
    }
    examples.len()
}

#[test]
fn pattern_matching_rules() {
    assert!(matches("valid  bafyrei…", "valid  bafyreiabc"));
    assert!(matches("…cycle…", "  × cycle: a -> b -> a"));
    assert!(!matches("valid  bafyrei…", "invalid  bafyreiabc"));
    assert!(matches("wrote x", "wrote x"));
    assert!(!matches("wrote x", "wrote xy"));
}

#[test]
fn cli_reference_examples_run() {
    assert!(run_page("cli.md") >= 15);
}

#[test]
fn token_chapter_examples_run() {
    assert!(run_page("tokens.md") >= 10);
}

#[test]
fn mesh_chapter_examples_run() {
    assert!(run_page("mesh.md") >= 3);
}

#[test]
fn simulate_chapter_examples_run() {
    assert!(run_page("simulate.md") >= 4);
}

#[test]
fn security_chapter_examples_run() {
    assert!(run_page("security.md") >= 1);
}

#[test]
fn every_verb_has_a_tested_example() {
    let page = std::fs::read_to_string(repo_root().join("docs/src/cli.md")).unwrap();
    let commands: Vec<String> = parse(&page).into_iter().map(|e| e.command).collect();
    for verb in [
        "omega id new",
        "omega id show",
        "omega validate",
        "omega graph",
        "omega fmt",
        "omega token issue",
        "omega token inspect",
        "omega token verify",
        "omega token invoke",
        "omega run",
        "omega image push",
        "omega image ls",
        "omega bench coldstart",
        "omega bench simulate",
        "omega simulate",
    ] {
        assert!(
            commands.iter().any(|c| c.starts_with(verb)),
            "docs/src/cli.md has no tested example of `{verb}`"
        );
    }
    let tokens = std::fs::read_to_string(repo_root().join("docs/src/tokens.md")).unwrap();
    assert!(
        parse(&tokens)
            .iter()
            .any(|e| e.command.starts_with("omega token delegate"))
    );
}
