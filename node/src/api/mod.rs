//! The local API: HTTP/JSON on a unix socket in the node's data directory
//! (mode 0600, so only the node's user can talk to it).
//!
//! | request | answer |
//! |---|---|
//! | `GET /v0/status` | [`omega_p2p::StatusReport`] |
//! | `GET /v0/peers` | a list of [`omega_p2p::PeerReport`] |
//! | `POST /v0/revoke` (body: base64 of a root-signed `/mesh/revoke` invocation) | `{"revoked": DID}` |

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use omega_p2p::http::{self, HttpError};
use omega_p2p::{Command, NodeHandle};
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tracing::debug;

/// The socket's file name in the data directory.
pub const SOCKET: &str = "api.sock";
/// Most API connections served at once; further ones wait in the kernel backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// The API socket of a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Binds the socket (replacing a stale one) with mode 0600.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the API until the node stops.
pub async fn serve(listener: UnixListener, node: NodeHandle) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (status, body) = match http::read_request(&mut stream).await {
                Ok(req) => route(&node, &req).await,
                Err(e) => (400, json!({ "error": e.to_string() })),
            };
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            if let Err(e) = http::write_json(&mut stream, status, &bytes).await {
                debug!("api: {e}");
            }
        });
    }
}

async fn route(node: &NodeHandle, req: &http::Request) -> (u16, Value) {
    let stopped = (503, json!({ "error": "node is stopping" }));
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v0/status") => match node.request(Command::Status).await {
            Some(s) => (200, serde_json::to_value(s).unwrap_or_default()),
            None => stopped,
        },
        ("GET", "/v0/peers") => match node.request(Command::Peers).await {
            Some(p) => (200, serde_json::to_value(p).unwrap_or_default()),
            None => stopped,
        },
        ("POST", "/v0/revoke") => {
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(req.body.trim_ascii())
            else {
                return (400, json!({ "error": "body is not base64" }));
            };
            match node.request(|tx| Command::Revoke(bytes, tx)).await {
                Some(Ok(did)) => (200, json!({ "revoked": did })),
                Some(Err(e)) => (400, json!({ "error": e })),
                None => stopped,
            }
        }
        _ => (
            404,
            json!({ "error": format!("no route {} {}", req.method, req.path) }),
        ),
    }
}

/// Why a CLI call to the local API failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The daemon is not reachable.
    #[error("cannot reach the node at {path}: {source}")]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: HttpError,
    },
    /// The daemon answered with an error.
    #[error("the node answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Its error message.
        message: String,
    },
}

/// Calls the API of the node whose data directory is `data_dir`.
pub fn call(data_dir: &Path, method: &str, path: &str, body: &[u8]) -> Result<Value, ClientError> {
    let socket = socket_path(data_dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Unreachable {
            path: socket.clone(),
            source: HttpError::Io(e),
        })?;
    let r = rt
        .block_on(http::request(
            &socket,
            method,
            path,
            &[("Host", "omega")],
            body,
        ))
        .map_err(|source| ClientError::Unreachable {
            path: socket,
            source,
        })?;
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    if r.status != 200 {
        let message = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_owned();
        return Err(ClientError::Api {
            status: r.status,
            message,
        });
    }
    Ok(v)
}
