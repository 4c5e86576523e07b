//! `omega peers` and `omega status`: ask a running node over its local API.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::{CliError, Output};

/// Which node to ask.
#[derive(Debug, Args)]
pub struct NodeDir {
    /// The node's data directory (its API socket is there).
    #[arg(long, value_name = "DIR", env = "OMEGA_NODE_DIR")]
    pub data_dir: PathBuf,
}

fn call(dir: &NodeDir, path: &str) -> Result<Value, CliError> {
    crate::api::call(&dir.data_dir, "GET", path, b"")
        .map_err(|e| CliError::invalid(e.to_string(), "is `omega node --data-dir DIR` running?"))
}

pub(super) fn peers(dir: &NodeDir, out: &Output) -> Result<ExitCode, CliError> {
    let v = call(dir, "/v0/peers")?;
    let mut text = format!(
        "{:<16} {:<8} {:<8} {:<10} {}\n",
        "NAME", "STATE", "LINK", "SUBSTRATE", "DID"
    );
    for p in v.as_array().into_iter().flatten() {
        let s = |k: &str| p[k].as_str().unwrap_or("").to_owned();
        let link = if p["connected"].as_bool().unwrap_or(false) {
            "direct"
        } else {
            "-"
        };
        let _ = writeln!(
            text,
            "{:<16} {:<8} {:<8} {:<10} {}",
            s("name"),
            s("state"),
            link,
            s("substrate"),
            s("did")
        );
    }
    out.print(text.trim_end(), v);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn status(dir: &NodeDir, out: &Output) -> Result<ExitCode, CliError> {
    let v = call(dir, "/v0/status")?;
    let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
    let mut text = format!(
        "node       {} ({})\nDID        {}\nmesh       {}\njoined     {}\nmembers    {} live\nlisten     {}\n",
        s("name"),
        s("substrate"),
        s("did"),
        s("mesh"),
        v["joined"],
        v["live_members"],
        v["listen"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n           "),
    );
    let f = &v["frontier"];
    if f.is_object() {
        let which = f["backend"].as_str().unwrap_or("none");
        let _ = writeln!(
            text,
            "frontier   {which}{} ({}): {}",
            if f["usable"] == true {
                ""
            } else {
                ", not usable"
            },
            f["choice"].as_str().unwrap_or("?"),
            f["reason"].as_str().unwrap_or("")
        );
        for p in f["probes"].as_array().into_iter().flatten() {
            let _ = writeln!(
                text,
                "  probe    {}: {} ({})",
                p["backend"].as_str().unwrap_or("?"),
                if p["usable"] == true {
                    "usable"
                } else {
                    "not usable"
                },
                p["reason"].as_str().unwrap_or("")
            );
        }
    }
    for r in v["refusals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            text,
            "refused    {} {}: {}",
            r["direction"].as_str().unwrap_or(""),
            r["peer"].as_str().unwrap_or(""),
            r["reason"].as_str().unwrap_or("")
        );
    }
    out.print(text.trim_end(), v);
    Ok(ExitCode::SUCCESS)
}
