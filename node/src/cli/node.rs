//! `omega node`: run the daemon, or `omega node revoke NAME|DID`.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use clap::{Args, Subcommand};
use omega_identity::Did;
use serde_json::json;

use super::mesh::{MeshDir, mesh_dir, root_key_path};
use super::{CliError, Output};
use crate::daemon::RunArgs;
use crate::keystore;

/// `omega node`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    /// A management verb; without one, run the daemon.
    #[command(subcommand)]
    pub command: Option<NodeCommand>,
    /// Daemon flags.
    #[command(flatten)]
    pub run: RunArgs,
}

/// `omega node …` verbs.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Revoke a member (by name or DID): every member drops and refuses it.
    /// Signed with the mesh root key.
    Revoke(RevokeArgs),
}

/// `omega node revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The member's name or DID.
    pub target: String,
    /// The data directory of a running node to hand the revocation to.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Where the mesh root key is.
    #[command(flatten)]
    pub mesh: MeshDir,
}

pub(super) fn run(args: &NodeArgs, out: &Output) -> Result<ExitCode, CliError> {
    match &args.command {
        Some(NodeCommand::Revoke(r)) => revoke(r, out),
        None => {
            crate::daemon::run(&args.run).map_err(|e| {
                CliError::invalid(
                    e.to_string(),
                    "omega node --data-dir DIR --join TOKEN --listen MULTIADDR …",
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn revoke(a: &RevokeArgs, out: &Output) -> Result<ExitCode, CliError> {
    let root = keystore::load(&root_key_path(&mesh_dir(&a.mesh))).map_err(|e| {
        CliError::invalid(
            e.to_string(),
            "revocations are signed with the mesh root key; pass --mesh-dir",
        )
    })?;
    let did: Did = match a.target.parse() {
        Ok(did) => did,
        Err(_) => {
            let peers = crate::api::call(&a.data_dir, "GET", "/v0/peers", b"")
                .map_err(|e| CliError::plain(e.to_string()))?;
            let found = peers
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == a.target.as_str());
            let did = found.and_then(|p| p["did"].as_str()).ok_or_else(|| {
                CliError::invalid(
                    format!("no member named {:?}", a.target),
                    "see `omega peers`",
                )
            })?;
            did.parse()
                .map_err(|_| CliError::plain("the node reported an invalid DID"))?
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let bytes = omega_p2p::node::sign_revocation(&root, &did, now).map_err(CliError::plain)?;
    let body = base64::engine::general_purpose::STANDARD.encode(bytes);
    let r = crate::api::call(&a.data_dir, "POST", "/v0/revoke", body.as_bytes())
        .map_err(|e| CliError::plain(e.to_string()))?;
    // The same revocation as a desired-state record: members store it and
    // hand it to nodes that join later.
    let tick = crate::api::call(&a.data_dir, "GET", "/v0/tick", b"")
        .map_err(|e| CliError::plain(e.to_string()))?;
    let hlc = omega_gossip::Hlc::new(
        tick["wall_ms"].as_u64().unwrap_or(0),
        u32::try_from(tick["counter"].as_u64().unwrap_or(0)).unwrap_or(0),
    );
    let auth = omega_gossip::desired::Authority {
        signer: &root,
        mesh_root: root.did(),
        proofs: Vec::new(),
        exp: now + 3600,
        nonce: super::token::nonce()?,
    };
    let record = omega_gossip::desired::DesiredRecord::revoke(
        omega_gossip::desired::Revocation::Node(did),
        hlc,
        auth,
    )
    .map_err(|e| CliError::plain(format!("signing: {e}")))?;
    let body = base64::engine::general_purpose::STANDARD.encode(record.encode());
    crate::api::call(&a.data_dir, "POST", "/v0/records", body.as_bytes())
        .map_err(|e| CliError::plain(e.to_string()))?;
    out.print(
        format!("revoked {did}"),
        json!({ "ok": true, "revoked": r["revoked"] }),
    );
    Ok(ExitCode::SUCCESS)
}
