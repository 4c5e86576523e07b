//! `omega apply|delete|ps|describe`: the mesh's desired state, from any node.
//!
//! `apply` and `delete` sign a record with your key (`--key`, else the
//! keystore) and attach the delegation chain that lets you write it
//! (`--proof`, root first; none when your key is the mesh root). The node
//! checks it, stores it and announces it; every member checks it again.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use omega_gossip::Hlc;
use omega_gossip::desired::{Authority, DesiredRecord, RecordError};
use omega_identity::Did;
use omega_zgraph::Format;
use serde_json::{Value, json};

use crate::api::{Actual, Describe, DescribeResponse, Slot};

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

fn refused(e: crate::api::ClientError) -> CliError {
    match e {
        crate::api::ClientError::Api { message, .. } => CliError::invalid(
            format!("the node refused: {message}"),
            "a record needs a chain from the mesh root granting its command \
             (`omega token issue --cmd /manifest --aud YOUR_DID` by the root), \
             given with --proof, unexpired and unrevoked",
        ),
        e => CliError::invalid(e.to_string(), "is `omega node --data-dir DIR` running?"),
    }
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
    let client = crate::api::Client::new(dir);
    let tick = client.tick().map_err(refused)?;
    let mesh: Did = tick
        .mesh
        .parse()
        .map_err(|_| CliError::plain("the node reported no mesh root"))?;
    let auth = Authority {
        signer: &key,
        mesh_root: mesh,
        proofs,
        exp: crate::unix_now().secs() + INVOCATION_TTL_SECS,
        nonce: super::token::nonce()?,
    };
    let record = make(Hlc::new(tick.wall_ms, tick.counter), auth)
        .map_err(|e| CliError::plain(format!("signing: {e}")))?;
    client.write(&record.encode()).map_err(refused)?;
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
    let source = crate::bounded::read_to_string(&a.file, crate::bounded::MANIFEST)?;
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

fn slots(rows: &[Slot]) -> String {
    let list: Vec<String> = rows
        .iter()
        .map(|r| match r.instances {
            n if n > 1 => format!("{}×{n}", r.node),
            _ => r.node.clone(),
        })
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn actuals(rows: &[Actual]) -> String {
    let list: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut s = r.node.clone();
            if r.instances > 1 {
                let _ = write!(s, "×{}", r.instances);
            }
            let _ = write!(s, "={}", r.state);
            if let Some(why) = &r.reason {
                let _ = write!(s, " ({why})");
            }
            if r.node_state != "alive" && r.node_state != "suspect" {
                let _ = write!(s, " (node {})", r.node_state);
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

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// `omega ps`.
pub(super) fn ps(dir: &NodeDir, out: &Output) -> Result<ExitCode, CliError> {
    let v = crate::api::Client::new(&dir.data_dir)
        .ps()
        .map_err(refused)?;
    let mut text = format!(
        "{:<24} {:<12} {:<12} {:<6} {:<32} {}\n",
        "MANIFEST", "BRANE", "STATUS", "READY", "DESIRED", "ACTUAL"
    );
    for m in &v.manifests {
        for b in &m.branes {
            let _ = writeln!(
                text,
                "{:<24} {:<12} {:<12} {:<6} {:<32} {}",
                m.name,
                b.brane,
                b.status,
                if b.ready { "yes" } else { "no" },
                slots(&b.desired),
                actuals(&b.actual),
            );
        }
    }
    for r in &v.rejected {
        let _ = writeln!(text, "rejected from {}: {}", r.peer, r.reason);
    }
    if let Some(ev) = v.events.as_ref().filter(|e| !e.edges.is_empty()) {
        text.push_str(&super::events::edges_table(ev));
    }
    if !v.resolvers.is_empty() {
        let _ = writeln!(
            text,
            "\n{:<24} {:<12} {:<18} {:<12} {:<6} PUBLIC",
            "MANIFEST", "RESOLVER", "MODE", "BRANE", "ENTRY"
        );
        for r in &v.resolvers {
            let _ = writeln!(
                text,
                "{:<24} {:<12} {:<18} {:<12} {:<6} {} ({})",
                r.manifest,
                r.resolver,
                r.mode,
                r.brane,
                if r.entry { "yes" } else { "no" },
                r.host,
                r.state,
            );
        }
    }
    out.print(text.trim_end(), to_json(&v));
    Ok(ExitCode::SUCCESS)
}

fn describe_text(d: &Describe) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "brane {} of manifest {} (plan {})",
        d.brane,
        d.manifest,
        d.plan.get(..12).unwrap_or("")
    );
    let _ = writeln!(
        t,
        "status: {}{}",
        d.status,
        if d.ready { ", ready" } else { "" }
    );
    let _ = writeln!(t, "placement: {}", slots(&d.placement));
    let _ = writeln!(t, "actual:    {}", actuals(&d.actual));
    let _ = writeln!(t, "ineligible:");
    for i in &d.ineligible {
        let _ = writeln!(t, "  {}: {}", i.node, i.reasons.join("; "));
    }
    if !d.resolvers.is_empty() {
        let _ = writeln!(t, "resolvers (this node's gateway):");
        for r in &d.resolvers {
            let _ = writeln!(
                t,
                "  {} {} → {} ({}{})",
                r.resolver,
                r.mode,
                r.host,
                r.state,
                if r.entry {
                    ", this node is an entry"
                } else {
                    ""
                },
            );
        }
    }
    let _ = writeln!(t, "events (this node):");
    for e in &d.events {
        let _ = writeln!(t, "  {} {}", e.at_ms, e.text);
    }
    t
}

/// `omega describe BRANE`.
pub(super) fn describe(a: &DescribeArgs, out: &Output) -> Result<ExitCode, CliError> {
    let v = crate::api::Client::new(&a.node.data_dir)
        .describe(&a.brane)
        .map_err(|e| CliError::invalid(e.to_string(), "see `omega ps` for the applied branes"))?;
    let text = match &v {
        DescribeResponse::Many { matches } => matches
            .iter()
            .map(describe_text)
            .collect::<Vec<_>>()
            .join("\n"),
        DescribeResponse::One(d) => describe_text(d),
    };
    out.print(text.trim_end(), to_json(&v));
    Ok(ExitCode::SUCCESS)
}
