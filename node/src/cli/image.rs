//! `omega image push|ls`: the node's content-addressed image store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use omega_runtime::{ImageRef, ImageStore, Runtime, RuntimeConfig};
use serde_json::json;

use super::output::{CliError, Output};
use super::run::{read_wasm, rt_err};

/// Where the node keeps its data: `--data-dir`, else `$OMEGA_HOME/data`
/// (`OMEGA_HOME` defaults to `~/.omega`).
#[derive(Debug, Clone, Args)]
pub struct DataDir {
    /// The node's data directory [default: $OMEGA_HOME/data].
    #[arg(long, env = "OMEGA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDir {
    /// The resolved directory.
    pub fn path(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            crate::keystore::default_key_path()
                .parent()
                .map(|p| p.join("data"))
                .unwrap_or_else(|| PathBuf::from(".omega/data"))
        })
    }

    /// The image store in it.
    pub fn images(&self) -> Result<ImageStore, CliError> {
        ImageStore::open(self.path().join("images")).map_err(rt_err)
    }

    /// A runtime whose precompiled cache lives in it.
    pub fn runtime(&self) -> Result<Runtime, CliError> {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(self.path().join("cache")),
            ..RuntimeConfig::default()
        })
        .map_err(rt_err)
    }
}

/// `omega image` verbs.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Store a component and point `--name NAME:TAG` at it (signed by your key).
    ///
    /// A component is at most 256 MiB (`MAX_IMAGE_BYTES`), the most any
    /// member's store keeps and fetches, so the cap is not a flag: an image
    /// one node took beyond it would be one no other node could run. With a
    /// node on the data directory the tag is kept only once the mesh accepted
    /// the name.
    Push {
        /// The component file (at most 256 MiB).
        file: PathBuf,
        /// The name and tag, e.g. `ingest:1.0`.
        #[arg(long)]
        name: String,
        /// Data directory.
        #[command(flatten)]
        data: DataDir,
        /// Signing of the mesh's image record (when a node runs on this data directory).
        #[command(flatten)]
        signing: super::dispatch::Signing,
    },
    /// List stored images and their tags.
    Ls {
        /// Data directory.
        #[command(flatten)]
        data: DataDir,
    },
}

/// Run an `omega image` verb.
pub(super) fn run(cmd: &ImageCommand, key_path: &Path, out: &Output) -> Result<ExitCode, CliError> {
    match cmd {
        ImageCommand::Push {
            file,
            name,
            data,
            signing,
        } => {
            let reference: ImageRef = name.parse().map_err(|e| {
                CliError::invalid(format!("{e}"), "use lowercase NAME:TAG, e.g. ingest:1.0")
            })?;
            let key = crate::keystore::load(key_path)?;
            let bytes = read_wasm(file)?;
            let store = data.images()?;
            let rt = data.runtime()?;
            let hash = store.put(&rt, &bytes).map_err(|e| {
                CliError::invalid(
                    format!("{}: {e}", file.display()),
                    "push a WASI 0.2 component (cargo build --target wasm32-wasip2)",
                )
            })?;
            // With a node running on this data directory, the name goes into
            // the mesh's desired state and members fetch the bytes from here.
            // The local tag follows only once the mesh took the name: a push
            // refused (no authority, say) leaves no tag behind.
            let dir = data.path();
            let replicated = crate::api::socket_path(&dir).exists();
            if replicated {
                let (r, h) = (reference.to_string(), hash.to_string());
                super::dispatch::sign_and_write(&dir, key_path, signing, |hlc, auth| {
                    omega_gossip::desired::DesiredRecord::image(&r, &h, hlc, auth)
                })?;
            }
            let record = store.tag(&reference, &hash, &key).map_err(rt_err)?;
            out.print(
                format!(
                    "{reference} -> {hash} ({} bytes){}",
                    bytes.len(),
                    if replicated {
                        ", replicated to the mesh"
                    } else {
                        ""
                    }
                ),
                json!({ "ok": true, "name": reference.to_string(), "image": hash.to_string(),
                        "size": bytes.len(), "signer": record.signer, "replicated": replicated }),
            );
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Ls { data } => {
            let images = data.images()?.list().map_err(rt_err)?;
            let text = if images.is_empty() {
                "no images".to_string()
            } else {
                images
                    .iter()
                    .map(|i| format!("{}  {:>9}  {}", i.hash, i.size, i.tags.join(", ")))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let list: Vec<_> = images
                .iter()
                .map(|i| json!({ "image": i.hash.to_string(), "size": i.size, "tags": i.tags }))
                .collect();
            out.print(text, json!({ "ok": true, "images": list }));
            Ok(ExitCode::SUCCESS)
        }
    }
}
