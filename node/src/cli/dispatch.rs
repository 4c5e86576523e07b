//! `omega apply|delete|ps|describe`: the mesh's desired state, from any node.
//!
//! `apply` and `delete` sign a record with your key (`--key`, else the
//! keystore) and attach the delegation chain that lets you write it
//! (`--proof`, root first; none when your key is the mesh root). The node
//! checks it, stores it and announces it; every member checks it again.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clap::Args;
use omega_gossip::Hlc;
use omega_gossip::desired::{Authority, DesiredRecord, RecordError};
use omega_identity::Did;
use omega_zgraph::Format;
use serde_json::{Value, json};

use super::peers::NodeDir;
use super::{CliError, Output};
use crate::keystore;

/// How long a signed record's invocation is valid (it is checked at its own
/// timestamp, so this only has to cover the write).
const INVOCATION_TTL_SECS: u64 = 3600;

/// Who signs, and with which proofs.
#[derive(Debug, Args)]
pub struct Signing {
    /// A delegation of the chain that grants your key the command, root
    /// first (repeat). None when your key is the mesh root.
    #[arg(long = "proof", value_name = "TOKEN")]
    pub proofs: Vec<String>,
}

/// `omega apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The ZGraph manifest (TOML, JSON or YAML).
    pub file: PathBuf,
    /// The manifest's name in the mesh [default: the file name up to its first dot].
    #[arg(long)]
    pub name: Option<String>,
    /// Signing.
    #[command(flatten)]
    pub signing: Signing,
    /// The node to hand it to.
    #[command(flatten)]
    pub node: NodeDir,
}

/// `omega delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The manifest name.
    pub name: String,
    /// Signing.
    #[command(flatten)]
    pub signing: Signing,
    /// The node to hand it to.
    #[command(flatten)]
    pub node: NodeDir,
}

/// `omega describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The brane, or `MANIFEST/BRANE`.
    pub brane: String,
    /// The node to ask.
    #[command(flatten)]
    pub node: NodeDir,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn api(dir: &Path, method: &str, path: &str, body: &[u8]) -> Result<Value, CliError> {
    crate::api::call(dir, method, path, body).map_err(|e| match e {
        crate::api::ClientError::Api { message, .. } => CliError::invalid(
            format!("the node refused: {message}"),
            "a record needs a chain from the mesh root granting its command \
             (`omega token issue --cmd /manifest --aud YOUR_DID` by the root), \
             given with --proof, unexpired and unrevoked",
        ),
        e => CliError::invalid(e.to_string(), "is `omega node --data-dir DIR` running?"),
    })
}

/// Signs a record made by `make` and hands it to the node in `dir`.
/// Returns the signer's DID.
pub(super) fn sign_and_write(
    dir: &Path,
    key_path: &Path,
    signing: &Signing,
    make: impl FnOnce(Hlc, Authority<'_>) -> Result<DesiredRecord, RecordError>,
) -> Result<Did, CliError> {
    let key = keystore::load(key_path)?;
    let proofs = signing
        .proofs
        .iter()
        .map(|p| super::token::read_delegation(p))
        .collect::<Result<Vec<_>, _>>()?;
    let tick = api(dir, "GET", "/v0/tick", b"")?;
    let mesh: Did = tick["mesh"]
        .as_str()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| CliError::plain("the node reported no mesh root"))?;
    let hlc = Hlc::new(
        tick["wall_ms"].as_u64().unwrap_or(0),
        u32::try_from(tick["counter"].as_u64().unwrap_or(0)).unwrap_or(0),
    );
    let auth = Authority {
        signer: &key,
        mesh_root: mesh,
        proofs,
        exp: unix_secs() + INVOCATION_TTL_SECS,
        nonce: super::token::nonce()?,
    };
    let record = make(hlc, auth).map_err(|e| CliError::plain(format!("signing: {e}")))?;
    let body = base64::engine::general_purpose::STANDARD.encode(record.encode());
    api(dir, "POST", "/v0/records", body.as_bytes())?;
    Ok(key.did())
}

fn default_name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .and_then(|n| n.split('.').next().map(str::to_owned))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "manifest".into())
}

/// `omega apply FILE`.
pub(super) fn apply(a: &ApplyArgs, key_path: &Path, out: &Output) -> Result<ExitCode, CliError> {
    let source = std::fs::read_to_string(&a.file).map_err(|source| CliError::Io {
        path: a.file.display().to_string(),
        source,
    })?;
    let format = Format::from_path(&a.file).unwrap_or(Format::Toml);
    let plan = omega_zgraph::load(&source, &a.file.display().to_string(), format)
        .map_err(|d| CliError::plain(format!("{d}")))?;
    let name = a.name.clone().unwrap_or_else(|| default_name(&a.file));
    let signer = sign_and_write(&a.node.data_dir, key_path, &a.signing, |hlc, auth| {
        DesiredRecord::apply(&name, &plan, hlc, auth)
    })?;
    let hash = plan.hash().to_hex();
    out.print(
        format!(
            "applied {name} (plan {}) as {signer}\nnext: omega ps --data-dir {}",
            &hash[..12],
            a.node.data_dir.display()
        ),
        json!({ "ok": true, "name": name, "plan": hash, "signer": signer.to_string() }),
    );
    Ok(ExitCode::SUCCESS)
}

/// `omega delete NAME`.
pub(super) fn delete(a: &DeleteArgs, key_path: &Path, out: &Output) -> Result<ExitCode, CliError> {
    let signer = sign_and_write(&a.node.data_dir, key_path, &a.signing, |hlc, auth| {
        DesiredRecord::delete(&a.name, hlc, auth)
    })?;
    out.print(
        format!("deleted {}", a.name),
        json!({ "ok": true, "name": a.name, "signer": signer.to_string() }),
    );
    Ok(ExitCode::SUCCESS)
}

fn nodes(rows: &Value, with_state: bool) -> String {
    let list: Vec<String> = rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let n = r["instances"].as_u64().unwrap_or(0);
            let mut s = r["node"].as_str().unwrap_or("?").to_owned();
            if n > 1 {
                let _ = write!(s, "×{n}");
            }
            if with_state {
                let _ = write!(s, "={}", r["state"].as_str().unwrap_or("?"));
            }
            s
        })
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

/// `omega ps`.
pub(super) fn ps(dir: &NodeDir, out: &Output) -> Result<ExitCode, CliError> {
    let v = api(&dir.data_dir, "GET", "/v0/ps", b"")?;
    let mut text = format!(
        "{:<24} {:<12} {:<12} {:<6} {:<32} {}\n",
        "MANIFEST", "BRANE", "STATUS", "READY", "DESIRED", "ACTUAL"
    );
    for m in v["manifests"].as_array().into_iter().flatten() {
        for b in m["branes"].as_array().into_iter().flatten() {
            let _ = writeln!(
                text,
                "{:<24} {:<12} {:<12} {:<6} {:<32} {}",
                m["name"].as_str().unwrap_or(""),
                b["brane"].as_str().unwrap_or(""),
                b["status"].as_str().unwrap_or(""),
                if b["ready"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "no"
                },
                nodes(&b["desired"], false),
                nodes(&b["actual"], true),
            );
        }
    }
    for r in v["rejected"].as_array().into_iter().flatten() {
        let _ = writeln!(
            text,
            "rejected from {}: {}",
            r["peer"].as_str().unwrap_or("?"),
            r["reason"].as_str().unwrap_or("?")
        );
    }
    out.print(text.trim_end(), v);
    Ok(ExitCode::SUCCESS)
}

/// `omega describe BRANE`.
pub(super) fn describe(a: &DescribeArgs, out: &Output) -> Result<ExitCode, CliError> {
    let path = format!("/v0/describe/{}", a.brane);
    let v = crate::api::call(&a.node.data_dir, "GET", &path, b"")
        .map_err(|e| CliError::invalid(e.to_string(), "see `omega ps` for the applied branes"))?;
    let one = |d: &Value| -> String {
        let mut t = String::new();
        let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
        let _ = writeln!(
            t,
            "brane {} of manifest {} (plan {})",
            s("brane"),
            s("manifest"),
            s("plan").get(..12).unwrap_or("")
        );
        let _ = writeln!(
            t,
            "status: {}{}",
            s("status"),
            if d["ready"].as_bool().unwrap_or(false) {
                ", ready"
            } else {
                ""
            }
        );
        let _ = writeln!(t, "placement: {}", nodes(&d["placement"], false));
        let _ = writeln!(t, "actual:    {}", nodes(&d["actual"], true));
        let _ = writeln!(t, "ineligible:");
        for i in d["ineligible"].as_array().into_iter().flatten() {
            let reasons: Vec<&str> = i["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let _ = writeln!(
                t,
                "  {}: {}",
                i["node"].as_str().unwrap_or("?"),
                reasons.join("; ")
            );
        }
        let _ = writeln!(t, "events (this node):");
        for e in d["events"].as_array().into_iter().flatten() {
            let _ = writeln!(
                t,
                "  {} {}",
                e["at_ms"].as_u64().unwrap_or(0),
                e["text"].as_str().unwrap_or("")
            );
        }
        t
    };
    let text = match v["matches"].as_array() {
        Some(all) => all.iter().map(one).collect::<Vec<_>>().join("\n"),
        None => one(&v),
    };
    out.print(text.trim_end(), v);
    Ok(ExitCode::SUCCESS)
}
