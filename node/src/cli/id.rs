//! `omega id new|show`: this user's identity.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::{CliError, Output};
use crate::keystore;

/// `omega id …`
#[derive(Debug, Subcommand)]
pub enum IdCommand {
    /// Create a new Ed25519 identity key (file mode 0600) and print its did:key.
    New {
        /// Replace an existing key (its identity is lost).
        #[arg(long)]
        force: bool,
    },
    /// Print the did:key of the identity key.
    Show,
}

pub(super) fn run(cmd: &IdCommand, key_path: &Path, out: &Output) -> Result<ExitCode, CliError> {
    let (key, created) = match cmd {
        IdCommand::New { force } => {
            let key = keystore::generate().map_err(|e| {
                CliError::plain(format!("the operating system gave no randomness: {e}"))
            })?;
            keystore::save(key_path, &key, *force)?;
            (key, true)
        }
        IdCommand::Show => (keystore::load(key_path)?, false),
    };
    let did = key.did().to_string();
    let path = key_path.display().to_string();
    let human = if created {
        format!("{did}\n(new key written to {path})")
    } else {
        did.clone()
    };
    out.print(
        human,
        json!({ "did": did, "key": path, "created": created }),
    );
    Ok(ExitCode::SUCCESS)
}
