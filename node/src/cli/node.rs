//! `omega node`: run the daemon, or `omega node revoke NAME|DID`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use omega_gossip::desired::{DesiredRecord, Revocation};
use omega_identity::{Cid, Did};
use serde_json::json;

use super::dispatch::{Signing, sign_and_write};
use super::mesh::{MeshDir, mesh_dir, root_key_path};
use super::{CliError, Output};
use crate::daemon::{DaemonError, RunArgs};

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
    /// Revoke a member (by name or DID) or a token (a join token, or any
    /// token's CID): every member drops and refuses it, for good. Signed
    /// with the mesh root key; replicated in the mesh's desired state.
    Revoke(RevokeArgs),
}

/// `omega node revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// A member's name or DID, a token CID, or an `omega-join1.` join token.
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
            crate::daemon::run(&args.run).map_err(|e| match e {
                // Says itself what to do (`--rebuild-state`, or stop the other node).
                DaemonError::State(e) => CliError::plain(e.to_string()),
                e => CliError::invalid(
                    e.to_string(),
                    "omega node --data-dir DIR --join TOKEN --listen MULTIADDR …",
                ),
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What `omega node revoke TARGET` names.
fn target(a: &RevokeArgs) -> Result<Revocation, CliError> {
    let t = a.target.trim();
    if t.starts_with(omega_gossip::join::TOKEN_PREFIX) {
        let token = omega_gossip::join::JoinToken::decode(t).map_err(|e| {
            CliError::invalid(format!("the join token: {e}"), "paste the whole token")
        })?;
        return Ok(Revocation::Token(token.delegation.cid()));
    }
    if let Ok(cid) = t.parse::<Cid>() {
        return Ok(Revocation::Token(cid));
    }
    if let Ok(did) = t.parse::<Did>() {
        return Ok(Revocation::Node(did));
    }
    let peers = crate::api::Client::new(&a.data_dir)
        .peers()
        .map_err(|e| CliError::plain(e.to_string()))?;
    let found = peers.iter().find(|p| p.member.name == t).ok_or_else(|| {
        CliError::invalid(
            format!("no member named {t:?}, and it is not a DID, a token CID or a join token"),
            "see `omega peers`; `omega mesh invite` prints each invite's cid",
        )
    })?;
    found
        .member
        .did
        .parse()
        .map(Revocation::Node)
        .map_err(|_| CliError::plain("the node reported an invalid DID"))
}

fn revoke(a: &RevokeArgs, out: &Output) -> Result<ExitCode, CliError> {
    let target = target(a)?;
    let key = root_key_path(&mesh_dir(&a.mesh));
    let signing = Signing { proofs: Vec::new() };
    sign_and_write(&a.data_dir, &key, &signing, |hlc, auth| {
        DesiredRecord::revoke(target, hlc, auth)
    })
    .map_err(|e| match e {
        CliError::Io { .. } => CliError::invalid(
            e.to_string(),
            "revocations are signed with the mesh root key; pass --mesh-dir",
        ),
        e => e,
    })?;
    let (kind, what) = match target {
        Revocation::Node(did) => ("node", did.to_string()),
        Revocation::Token(cid) => ("token", cid.to_string()),
    };
    out.print(
        format!("revoked {kind} {what}"),
        json!({ "ok": true, "revoked": what, "kind": kind }),
    );
    Ok(ExitCode::SUCCESS)
}
