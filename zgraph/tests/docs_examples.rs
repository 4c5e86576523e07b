//! Every fenced manifest in `docs/src/manifest.md` behaves as documented:
//! ```` ```toml ```` (or `json`, `yaml`) blocks load cleanly, blocks fenced
//! ```` ```toml,bad-CODE ```` fail with that error code; every error code
//! has a documented example.

use std::collections::BTreeSet;

use omega_zgraph::{ErrorKind, Format, load};

struct Block {
    line: usize,
    format: Format,
    bad: Option<String>,
    text: String,
}

fn blocks() -> Vec<Block> {
    let path = format!("{}/../docs/src/manifest.md", env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in doc.lines().enumerate() {
        match current.take() {
            Some(block) if line.trim_start() == "```" => out.push(block),
            Some(mut block) => {
                block.text.push_str(line);
                block.text.push('\n');
                current = Some(block);
            }
            None => {
                if let Some(info) = line.trim_start().strip_prefix("```") {
                    let (lang, bad) = match info.split_once(",bad-") {
                        Some((lang, code)) => (lang, Some(code.to_owned())),
                        None => (info, None),
                    };
                    if let Ok(format) = lang.parse::<Format>() {
                        current = Some(Block {
                            line: i + 1,
                            format,
                            bad,
                            text: String::new(),
                        });
                    }
                }
            }
        }
    }
    assert!(current.is_none(), "unterminated code block in {path}");
    out
}

#[test]
fn documented_manifests_behave_as_documented() {
    let blocks = blocks();
    assert!(blocks.len() > 30, "found only {} blocks", blocks.len());
    for b in &blocks {
        let name = format!("manifest.md:{}", b.line);
        let result = load(&b.text, &name, b.format);
        match (&b.bad, result) {
            (None, Ok(_)) => {}
            (None, Err(d)) => panic!("{name} should load:\n{d}"),
            (Some(code), Ok(_)) => panic!("{name} should fail with {code}"),
            (Some(code), Err(d)) => {
                let codes: Vec<_> = d.errors().iter().map(|e| e.kind.code()).collect();
                assert!(
                    codes.contains(&code.as_str()),
                    "{name}: expected {code}, got {d}"
                );
            }
        }
    }
}

/// Codes whose example would not fit on a page (a manifest over 1 MiB,
/// over a thousand branes): documented with a section, without a block.
const TOO_BIG_TO_SHOW: &[ErrorKind] = &[ErrorKind::TooLarge, ErrorKind::TooMany];

#[test]
fn every_error_code_is_documented() {
    let documented: BTreeSet<String> = blocks().into_iter().filter_map(|b| b.bad).collect();
    let path = format!("{}/../docs/src/manifest.md", env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    for kind in ErrorKind::ALL {
        let heading = format!("### `{}`", kind.code());
        assert!(doc.contains(&heading), "no section for {}", kind.code());
        if !TOO_BIG_TO_SHOW.contains(kind) {
            assert!(
                documented.contains(kind.code()),
                "no example for {}",
                kind.code()
            );
        }
    }
}
