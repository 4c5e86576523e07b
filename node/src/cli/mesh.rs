//! `omega mesh init` and `omega mesh invite`: create a mesh root and mint join tokens.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use omega_gossip::Substrate;
use omega_gossip::join::{InviteSpec, JoinToken};
use serde_json::json;

use super::{CliError, Output};
use crate::keystore;

/// `omega mesh …`.
#[derive(Debug, Subcommand)]
pub enum MeshCommand {
    /// Create a mesh: a root identity (its DID is the mesh id) and a config.
    Init(InitArgs),
    /// Print a join token for one or more nodes.
    Invite(InviteArgs),
}

/// Where a mesh root lives.
#[derive(Debug, Args)]
pub struct MeshDir {
    /// The directory holding the mesh root key and config
    /// [default: $OMEGA_HOME, OMEGA_HOME defaults to ~/.omega].
    #[arg(long, value_name = "DIR")]
    pub mesh_dir: Option<PathBuf>,
}

/// `omega mesh init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// A human name for the mesh.
    #[arg(long, default_value = "omega")]
    pub name: String,
    /// The mesh directory.
    #[command(flatten)]
    pub dir: MeshDir,
}

/// `omega mesh invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// The substrate a node joining with this token must declare.
    #[arg(long, value_parser = ["gaia", "biome", "habitat"])]
    pub substrate: String,
    /// A glob (`*`) node names must match.
    #[arg(long, value_name = "GLOB")]
    pub name_pattern: Option<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub expires: Duration,
    /// Expire at this unix time instead (for tests of expired tokens).
    #[arg(long, hide = true, value_name = "UNIX_SECS")]
    pub expires_at: Option<u64>,
    /// The mesh directory.
    #[command(flatten)]
    pub dir: MeshDir,
}

/// The mesh directory: `--mesh-dir`, else `$OMEGA_HOME` (or `~/.omega`).
pub(crate) fn mesh_dir(dir: &MeshDir) -> PathBuf {
    dir.mesh_dir.clone().unwrap_or_else(|| {
        keystore::default_key_path()
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    })
}

/// The root key file in a mesh directory.
pub(crate) fn root_key_path(dir: &Path) -> PathBuf {
    dir.join("mesh-root.key")
}

pub(super) fn run(cmd: &MeshCommand, out: &Output) -> Result<ExitCode, CliError> {
    match cmd {
        MeshCommand::Init(a) => init(a, out),
        MeshCommand::Invite(a) => invite(a, out),
    }
}

fn init(a: &InitArgs, out: &Output) -> Result<ExitCode, CliError> {
    let dir = mesh_dir(&a.dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::plain(format!("creating {}: {e}", dir.display())))?;
    let key_path = root_key_path(&dir);
    let root = keystore::generate().map_err(|e| CliError::plain(format!("random source: {e}")))?;
    keystore::save(&key_path, &root, false).map_err(|e| {
        CliError::invalid(
            e.to_string(),
            "a mesh already exists in this directory; use another --mesh-dir",
        )
    })?;
    let config = json!({ "name": a.name, "root": root.did().to_string() });
    let cfg_path = dir.join("mesh.json");
    std::fs::write(
        &cfg_path,
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )
    .map_err(|e| CliError::plain(format!("writing {}: {e}", cfg_path.display())))?;
    out.print(
        format!(
            "created mesh {:?}\n  mesh id (root DID): {}\n  root key: {}\nnext: omega mesh invite --substrate habitat",
            a.name,
            root.did(),
            key_path.display()
        ),
        json!({ "ok": true, "name": a.name, "mesh": root.did().to_string(), "root_key": key_path }),
    );
    Ok(ExitCode::SUCCESS)
}

fn invite(a: &InviteArgs, out: &Output) -> Result<ExitCode, CliError> {
    let dir = mesh_dir(&a.dir);
    let root = keystore::load(&root_key_path(&dir)).map_err(|e| match e {
        keystore::KeyStoreError::Missing { path } => CliError::invalid(
            format!(
                "no mesh in {}: {} does not exist",
                dir.display(),
                path.display()
            ),
            "create the mesh first with `omega mesh init`, or pass --mesh-dir",
        ),
        e => CliError::invalid(
            e.to_string(),
            "the mesh root key must be readable by you only (mode 0600)",
        ),
    })?;
    let substrate =
        Substrate::parse(&a.substrate).ok_or_else(|| CliError::plain("unknown substrate"))?;
    let now = crate::unix_now().secs();
    let expires_at = a.expires_at.unwrap_or(now + a.expires.as_secs());
    let mut seed = [0u8; 32];
    let mut nonce = vec![0u8; 16];
    getrandom::fill(&mut seed)
        .and_then(|()| getrandom::fill(&mut nonce))
        .map_err(|e| CliError::plain(format!("random source: {e}")))?;
    let spec = InviteSpec {
        substrate,
        name_pattern: a.name_pattern.clone(),
        expires_at,
    };
    let token =
        JoinToken::mint(&root, &spec, seed, nonce).map_err(|e| CliError::plain(e.to_string()))?;
    let text = token.encode();
    out.print(
        text.clone(),
        json!({
            "ok": true,
            "token": text,
            "mesh": root.did().to_string(),
            "substrate": a.substrate,
            "name_pattern": a.name_pattern,
            "expires_at": expires_at,
            "cid": token.delegation.cid().to_string(),
        }),
    );
    Ok(ExitCode::SUCCESS)
}
