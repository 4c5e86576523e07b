//! The local API: HTTP/JSON on a unix socket in the node's data directory
//! (mode 0600, so only the node's user can talk to it).
//!
//! | request | answer |
//! |---|---|
//! | `GET /v0/status` | [`omega_p2p::StatusReport`] plus `frontier`: `{choice, backend, usable, reason, probes}` |
//! | `GET /v0/peers` | a list of [`omega_p2p::PeerReport`] |
//! | `POST /v0/revoke` (body: base64 of a root-signed `/mesh/revoke` invocation) | `{"revoked": DID}` |
//! | `GET /v0/tick` | a fresh HLC stamp for a record about to be signed, `{"wall_ms", "counter", "mesh"}` |
//! | `POST /v0/records` (body: base64 of a signed desired-state record) | `{"ok": true}`, or 400 with the reason it was refused |
//! | `GET /v0/ps` | desired versus actual, per manifest, brane and node ([`crate::daemon::view::ps`]) |
//! | `GET /v0/describe/BRANE` (or `MANIFEST/BRANE`) | placement, ineligible nodes and why, actual state, recent events |
//! | `POST /v0/emit` (body: `{"brane", "type", "payload"}`) | run an event on a brane here and along local edges |

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use omega_p2p::http::{self, HttpError};
use omega_p2p::{Command, NodeHandle};

use crate::daemon::reconcile::{self, Shared};
use crate::daemon::view;
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

/// What the API talks to.
#[derive(Debug, Clone)]
pub struct Api {
    /// The p2p driver.
    pub node: NodeHandle,
    /// The reconciler's events and running branes.
    pub shared: std::sync::Arc<Shared>,
}

/// Serves the API until the node stops.
pub async fn serve(listener: UnixListener, api: Api) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let api = api.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (status, body) = match http::read_request(&mut stream).await {
                Ok(req) => route(&api, &req).await,
                Err(e) => (400, json!({ "error": e.to_string() })),
            };
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            if let Err(e) = http::write_json(&mut stream, status, &bytes).await {
                debug!("api: {e}");
            }
        });
    }
}

async fn route(api: &Api, req: &http::Request) -> (u16, Value) {
    let node = &api.node;
    let stopped = (503, json!({ "error": "node is stopping" }));
    if let Some(which) = req.path.strip_prefix("/v0/describe/")
        && req.method == "GET"
    {
        return match node.request(Command::Desired).await {
            Some(v) => match view::describe(&v, &api.shared.events, which) {
                Some(mut d) => {
                    note_frontier_here(api, &v, &mut d).await;
                    (200, d)
                }
                None => (
                    404,
                    json!({ "error": format!("no brane {which:?} in any applied manifest") }),
                ),
            },
            None => stopped,
        };
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v0/tick") => {
            let mesh = node.request(Command::Status).await.map(|s| s.mesh);
            match (node.request(Command::Tick).await, mesh) {
                (Some(h), Some(mesh)) => (
                    200,
                    json!({ "wall_ms": h.wall_ms, "counter": h.counter, "mesh": mesh }),
                ),
                _ => stopped,
            }
        }
        ("POST", "/v0/records") => {
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(req.body.trim_ascii())
            else {
                return (400, json!({ "error": "body is not base64" }));
            };
            match node.request(|tx| Command::Write(bytes, tx)).await {
                Some(Ok(())) => (200, json!({ "ok": true })),
                Some(Err(e)) => (400, json!({ "error": e })),
                None => stopped,
            }
        }
        ("GET", "/v0/ps") => match node.request(Command::Desired).await {
            Some(v) => (200, view::ps(&v)),
            None => stopped,
        },
        ("POST", "/v0/emit") => emit(api, &req.body).await,
        ("GET", "/v0/status") => match node.request(Command::Status).await {
            Some(s) => {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("frontier".into(), api.shared.frontier.clone());
                }
                (200, v)
            }
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

/// In `omega describe` of a frontier brane, this node's ineligibility row
/// also says why it does not advertise `frontier` (the probe's reason).
async fn note_frontier_here(api: &Api, v: &omega_p2p::DesiredView, d: &mut Value) {
    let frontier = &api.shared.frontier;
    if frontier["usable"] == true {
        return;
    }
    let is_frontier = v
        .manifests
        .iter()
        .find(|m| d["manifest"] == m.name.as_str())
        .and_then(|m| m.plan.brane(d["brane"].as_str().unwrap_or("")))
        .is_some_and(|b| b.capability == omega_zgraph::Capability::Frontier);
    if !is_frontier {
        return;
    }
    let Some(me) = api.node.request(Command::Status).await.map(|s| s.did) else {
        return;
    };
    let why = format!(
        "this node's frontier backend: {}",
        frontier["reason"].as_str().unwrap_or("none")
    );
    for row in d["ineligible"].as_array_mut().into_iter().flatten() {
        if row["did"] == me.as_str()
            && let Some(reasons) = row["reasons"].as_array_mut()
        {
            reasons.push(Value::String(why.clone()));
        }
    }
}

async fn emit(api: &Api, body: &[u8]) -> (u16, Value) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (400, json!({ "error": "body is not JSON" }));
    };
    let (Some(brane), Some(ty)) = (v["brane"].as_str(), v["type"].as_str()) else {
        return (400, json!({ "error": "`brane` and `type` are required" }));
    };
    let payload = v["payload"].as_str().unwrap_or("").as_bytes().to_vec();
    let Some(view) = api.node.request(Command::Desired).await else {
        return (503, json!({ "error": "node is stopping" }));
    };
    let key = match brane.split_once('/') {
        Some((m, b)) => (m.to_owned(), b.to_owned()),
        None => match view
            .manifests
            .iter()
            .find(|m| m.plan.brane(brane).is_some())
        {
            Some(m) => (m.name.clone(), brane.to_owned()),
            None => return (404, json!({ "error": format!("no brane {brane:?}") })),
        },
    };
    let event = omega_runtime::Event::external(format!("api-{}", view::unix_ms()), ty, payload);
    let shared = api.shared.clone();
    match tokio::task::spawn_blocking(move || reconcile::deliver(&shared, &key, event)).await {
        Ok(Ok(lines)) => (200, json!({ "deliveries": lines })),
        Ok(Err(e)) => (400, json!({ "error": e })),
        Err(e) => (500, json!({ "error": e.to_string() })),
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
