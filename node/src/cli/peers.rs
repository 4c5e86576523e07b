//! `omega peers` and `omega status`: ask a running node over its local API.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{CliError, Output};

/// Which node to ask.
#[derive(Debug, Args)]
pub struct NodeDir {
    /// The node's data directory (its API socket is there).
    #[arg(long, value_name = "DIR", env = "OMEGA_NODE_DIR")]
    pub data_dir: PathBuf,
}

fn client_err(e: crate::api::ClientError) -> CliError {
    CliError::invalid(e.to_string(), "is `omega node --data-dir DIR` running?")
}

pub(super) fn peers(dir: &NodeDir, out: &Output) -> Result<ExitCode, CliError> {
    let peers = crate::api::Client::new(&dir.data_dir)
        .peers()
        .map_err(client_err)?;
    let mut text = format!(
        "{:<16} {:<8} {:<8} {:<10} {}\n",
        "NAME", "STATE", "LINK", "SUBSTRATE", "DID"
    );
    for p in &peers {
        let m = &p.member;
        let link = if m.connected { "direct" } else { "-" };
        let _ = writeln!(
            text,
            "{:<16} {:<8} {:<8} {:<10} {}",
            m.name, m.state, link, m.substrate, m.did
        );
    }
    out.print(
        text.trim_end(),
        serde_json::to_value(&peers).unwrap_or_default(),
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn status(dir: &NodeDir, out: &Output) -> Result<ExitCode, CliError> {
    let s = crate::api::Client::new(&dir.data_dir)
        .status()
        .map_err(client_err)?;
    let n = &s.status.node;
    let mut text = format!(
        "node       {} ({})\nDID        {}\nmesh       {}\njoined     {}\nmembers    {} live\nlisten     {}\n",
        n.name,
        n.substrate,
        n.did,
        n.mesh,
        n.joined,
        n.live_members,
        n.listen.join("\n           "),
    );
    let f = &s.frontier;
    let _ = writeln!(
        text,
        "frontier   {}{} ({}): {}",
        f.backend.as_deref().unwrap_or("none"),
        if f.usable { "" } else { ", not usable" },
        f.choice,
        f.reason
    );
    for p in &f.probes {
        let _ = writeln!(
            text,
            "  probe    {}: {} ({})",
            p.backend,
            if p.usable { "usable" } else { "not usable" },
            p.reason
        );
    }
    for b in &n.banned {
        let _ = writeln!(text, "banned     {b}");
    }
    for r in &n.refusals {
        let dir = serde_json::to_value(r.direction).unwrap_or_default();
        let _ = writeln!(
            text,
            "refused    {} {}: {}",
            dir.as_str().unwrap_or(""),
            r.peer,
            r.reason
        );
    }
    out.print(
        text.trim_end(),
        serde_json::to_value(&s).unwrap_or_default(),
    );
    Ok(ExitCode::SUCCESS)
}
