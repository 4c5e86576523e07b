//! The `omega` binary end to end: exit codes, `--json`, error messages.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should abort the test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn omega(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omega"))
        .args(args)
        .current_dir(dir)
        .env("OMEGA_HOME", dir.join("home"))
        .env("NO_COLOR", "1")
        .env_remove("OMEGA_KEY")
        .output()
        .expect("omega runs")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(omega(dir.path(), &["frobnicate"]).status.code(), Some(2));
    assert_eq!(omega(dir.path(), &["validate"]).status.code(), Some(2));
    assert_eq!(
        omega(dir.path(), &["graph", "x.toml", "--format", "png"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn validate_seed_example_prints_the_plan_hash_in_every_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let mut hashes = Vec::new();
    for ext in ["toml", "json", "yaml"] {
        let file = examples().join(format!("multi-substrate-pipeline.zgraph.{ext}"));
        let out = omega(dir.path(), &["validate", "--json", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let doc = json(&out);
        hashes.push(
            doc["manifests"][0]["plan_hash"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert!(!hashes[0].is_empty());
    assert!(hashes.iter().all(|h| h == &hashes[0]), "{hashes:?}");
    let out = omega(
        dir.path(),
        &[
            "validate",
            examples()
                .join("multi-substrate-pipeline.zgraph.toml")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(text(&out).contains(&hashes[0]), "{}", text(&out));
}

#[test]
fn invalid_manifest_exits_1_with_every_error_located() {
    let dir = tempfile::tempdir().unwrap();
    let file = examples().join("invalid/cycle.zgraph.toml");
    let out = omega(dir.path(), &["validate", "--json", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    assert_eq!(doc["ok"], false);
    let errors = doc["manifests"][0]["errors"].as_array().unwrap();
    let at = |code: &str| {
        errors
            .iter()
            .find(|e| e["code"] == code)
            .map(|e| (e["line"].as_u64().unwrap(), e["column"].as_u64().unwrap()))
            .unwrap_or_else(|| panic!("no {code} in {errors:#?}"))
    };
    // `replica = 3` (line 11) is a typo for `replicas`.
    assert_eq!(at("zgraph::unknown_key").0, 11);
    // `archive` is habitat + frontier (line 16).
    assert_eq!(at("zgraph::frontier_on_habitat").0, 16);
    // The edge that closes the cycle is on line 23.
    assert_eq!(at("zgraph::cycle").0, 23);

    // For people: the location, a snippet and the cycle path.
    let out = omega(dir.path(), &["validate", file.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(t.contains("cycle.zgraph.toml:23:"), "{t}");
    assert!(
        t.contains("ingest -> transform -> archive -> ingest"),
        "{t}"
    );
    assert!(t.contains("did you mean `replicas`"), "{t}");
}

#[test]
fn unknown_extension_says_how_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.txt"),
        "[brane.a]\nsubstrate = \"gaia\"\n",
    )
    .unwrap();
    let out = omega(dir.path(), &["validate", "m.txt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--format"), "{}", text(&out));
    let out = omega(dir.path(), &["validate", "m.txt", "--format", "toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn fmt_round_trips_through_every_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let seed = examples().join("multi-substrate-pipeline.zgraph.toml");
    let hash_of = |file: &str| {
        let out = omega(dir.path(), &["validate", "--json", file]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        json(&out)["manifests"][0]["plan_hash"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let original = hash_of(seed.to_str().unwrap());
    for to in ["json", "yaml", "toml"] {
        let target = format!("out.zgraph.{to}");
        let out = omega(
            dir.path(),
            &["fmt", seed.to_str().unwrap(), "--to", to, "-o", &target],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_eq!(hash_of(&target), original, "{to}");
    }
}

#[test]
fn key_file_is_0600_and_a_readable_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = omega(dir.path(), &["id", "new", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let did = json(&out)["did"].as_str().unwrap().to_string();
    assert!(did.starts_with("did:key:z6Mk"), "{did}");
    let key = dir.path().join("home/identity.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = omega(dir.path(), &["id", "show"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), did);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = omega(dir.path(), &["id", "show"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
}

#[test]
fn tampered_token_is_reported_invalid() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    assert_eq!(omega(p, &["id", "new"]).status.code(), Some(0));
    let me = String::from_utf8(omega(p, &["id", "show"]).stdout).unwrap();
    let out = omega(
        p,
        &["token", "issue", "--aud", me.trim(), "--cmd", "/mesh/join"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(
        omega(p, &["token", "verify", &token]).status.code(),
        Some(0)
    );

    // Flip one byte of the command inside the signed payload: `/mesh/join` -> `/mesh/joio`.
    let engine = base64::engine::general_purpose::STANDARD;
    let mut bytes = engine.decode(&token).unwrap();
    let at = bytes
        .windows(10)
        .position(|w| w == b"/mesh/join")
        .expect("the command is in the token");
    bytes[at + 9] = b'o';
    let tampered = engine.encode(&bytes);
    let out = omega(p, &["token", "verify", &tampered, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(json(&out)["valid"], false);
    let out = omega(p, &["token", "inspect", &tampered, "--json"]);
    assert_eq!(json(&out)["signature_valid"], false);

    // Garbage is a typed error, not a crash.
    let out = omega(p, &["token", "inspect", "bm90IGEgdG9rZW4="]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).starts_with("error: token"), "{}", text(&out));
}

#[test]
fn shared_fixture_token_inspects_with_its_published_cid() {
    let dir = tempfile::tempdir().unwrap();
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../identity/tests/vectors/ucan-1.0.0-delegation.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let case = &fixture["valid"][0];
    let out = omega(
        dir.path(),
        &[
            "token",
            "inspect",
            "--json",
            case["token"].as_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["cid"], case["cid"]);
    assert_eq!(doc["signature_valid"], true);
    assert_eq!(doc["payload"]["cmd"], "/account");
    // It expired in 2025: verify says so.
    let out = omega(
        dir.path(),
        &["token", "verify", case["token"].as_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("expired"), "{}", text(&out));
}

/// `omega token verify` on every case of the UCAN 1.0 invocation fixture of
/// `ucan-wg/spec`, under both `--policy spec` and `--policy mesh`: valid cases
/// pass the spec and are refused by the mesh policy (their `exp` is null);
/// invalid ones are refused by the spec layer, with the same class either way.
#[test]
fn verify_reports_the_layer_and_class_for_every_fixture_case() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../identity/tests/vectors/ucan-1.0.0-invocation.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let b64 = |v: &serde_json::Value| {
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(v["/"]["bytes"].as_str().unwrap())
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    let mut checked = 0;
    for (group, valid) in [("valid", true), ("invalid", false)] {
        for case in fixture[group].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let time = case["time"].to_string();
            let inv = b64(&case["invocation"]);
            let mut args = vec!["token", "verify", "--json", "--at", &time, &inv];
            let proofs: Vec<String> = case["proofs"].as_array().unwrap().iter().map(b64).collect();
            for pr in &proofs {
                args.extend(["--proof", pr]);
            }
            let mut classes = Vec::new();
            for policy in ["spec", "mesh"] {
                let mut a = args.clone();
                a.extend(["--policy", policy]);
                let out = omega(p, &a);
                let doc = json(&out);
                let spec_ok = valid && policy == "spec";
                assert_eq!(doc["valid"], spec_ok, "{name} --policy {policy}: {doc}");
                assert_eq!(
                    out.status.code(),
                    Some(if spec_ok { 0 } else { 1 }),
                    "{name}"
                );
                if !spec_ok {
                    let want_layer = if valid { "mesh" } else { "spec" };
                    assert_eq!(doc["layer"], want_layer, "{name} --policy {policy}: {doc}");
                    classes.push(doc["class"].as_str().unwrap().to_owned());
                }
            }
            if valid {
                assert_eq!(classes, ["unbounded-invocation"], "{name}");
            } else {
                assert_eq!(
                    classes[0], classes[1],
                    "{name}: same class under both policies"
                );
                assert_ne!(classes[0], "unbounded-invocation", "{name}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
    // The human form names the layer.
    let case = &fixture["valid"][0];
    let inv = b64(&case["invocation"]);
    let time = case["time"].to_string();
    let out = omega(p, &["token", "verify", "--at", &time, &inv]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("refused by: the mesh policy (unbounded-invocation)"),
        "{}",
        text(&out)
    );
    let out = omega(
        p,
        &["token", "verify", "--at", &time, "--policy", "spec", &inv],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("(spec)"), "{}", text(&out));
}
