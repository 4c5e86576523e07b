//! The local API: HTTP/JSON on a unix socket in the node's data directory
//! (mode 0600, so only the node's user can talk to it), served with hyper.
//! Every request and response is a type in [`types`], shared with the CLI's
//! [`Client`].
//!
//! | request | answer |
//! |---|---|
//! | `GET /v0/status` | [`StatusResponse`]: the node, its libp2p side, its frontier backend |
//! | `GET /v0/peers` | [`PeersResponse`]: every member in the table |
//! | `GET /v0/tick` | [`TickResponse`]: a fresh HLC stamp for a record about to be signed |
//! | `POST /v0/records` ([`WriteRequest`]) | [`OkResponse`] once the record is durable and announced, or 400 with why it was refused |
//! | `GET /v0/ps` | [`PsResponse`]: desired versus actual, per manifest, brane and node |
//! | `GET /v0/describe/BRANE` (or `MANIFEST/BRANE`) | [`DescribeResponse`]: placement, ineligible nodes and why, actual state, history |
//! | `POST /v0/emit` ([`EmitRequest`]) | [`EmitResponse`]: the event run on a brane here and along local edges |
//!
//! Errors are [`ErrorResponse`] with status 400 (bad request), 404
//! (unknown brane or route), 413 (body too large) or 503 (node stopping).

pub mod types;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use omega_p2p::NodeHandle;
use omega_p2p::http::{self, HttpError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;

use crate::daemon::runner::{self, Shared};
use crate::daemon::view;

pub use self::types::*;

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
    /// The branes running here and the frontier report.
    pub shared: Arc<Shared>,
}

/// Serves the API until the listener fails.
pub async fn serve(listener: UnixListener, api: Api) {
    http::serve(listener, MAX_CONNECTIONS, move |req| {
        let api = api.clone();
        async move { route(&api, &req).await }
    })
    .await;
}

type Answer = (u16, Vec<u8>);

fn ok<T: Serialize>(body: &T) -> Answer {
    (200, serde_json::to_vec(body).unwrap_or_default())
}

fn fail(status: u16, error: impl Into<String>) -> Answer {
    let body = ErrorResponse {
        error: error.into(),
    };
    (status, serde_json::to_vec(&body).unwrap_or_default())
}

fn stopping() -> Answer {
    fail(503, "node is stopping")
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| fail(400, format!("malformed request: {e}")))
}

async fn route(api: &Api, req: &http::Request) -> Answer {
    let node = &api.node;
    if let Some(which) = req.path.strip_prefix("/v0/describe/")
        && req.method == "GET"
    {
        return match node.view().await {
            Some(v) => match view::describe(&v, which) {
                Some(mut d) => {
                    note_frontier_here(api, &v, &mut d);
                    ok(&d)
                }
                None => fail(404, format!("no brane {which:?} in any applied manifest")),
            },
            None => stopping(),
        };
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v0/tick") => match node.tick().await {
            Some(h) => ok(&TickResponse {
                wall_ms: h.wall_ms,
                counter: h.counter,
                mesh: node.status().await.map(|s| s.node.mesh).unwrap_or_default(),
            }),
            None => stopping(),
        },
        ("POST", "/v0/records") => {
            let w: WriteRequest = match parse(&req.body) {
                Ok(w) => w,
                Err(a) => return a,
            };
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(w.record.trim())
            else {
                return fail(400, "`record` is not base64");
            };
            match node.write(bytes).await {
                Some(Ok(())) => ok(&OkResponse { ok: true }),
                Some(Err(e)) => fail(400, e.to_string()),
                None => stopping(),
            }
        }
        ("GET", "/v0/ps") => match node.view().await {
            Some(v) => ok(&view::ps(&v)),
            None => stopping(),
        },
        ("POST", "/v0/emit") => match parse::<EmitRequest>(&req.body) {
            Ok(e) => emit(api, e).await,
            Err(a) => a,
        },
        ("GET", "/v0/status") => match node.status().await {
            Some(status) => ok(&StatusResponse {
                status,
                frontier: api.shared.frontier.clone(),
            }),
            None => stopping(),
        },
        ("GET", "/v0/peers") => match node.peers().await {
            Some(p) => ok(&p),
            None => stopping(),
        },
        _ => fail(404, format!("no route {} {}", req.method, req.path)),
    }
}

/// In `omega describe` of a frontier brane, this node's ineligibility row
/// also says why it does not advertise `frontier` (the probe's reason).
fn note_frontier_here(api: &Api, v: &omega_gossip::node::View, d: &mut DescribeResponse) {
    let frontier = &api.shared.frontier;
    if frontier.usable {
        return;
    }
    let me = v.me.to_string();
    let why = format!("this node's frontier backend: {}", frontier.reason);
    let all: Vec<&mut Describe> = match d {
        DescribeResponse::One(one) => vec![one.as_mut()],
        DescribeResponse::Many { matches } => matches.iter_mut().collect(),
    };
    for one in all {
        if one.spec.capability != omega_zgraph::Capability::Frontier {
            continue;
        }
        for row in one.ineligible.iter_mut().filter(|r| r.did == me) {
            row.reasons.push(why.clone());
        }
    }
}

async fn emit(api: &Api, e: EmitRequest) -> Answer {
    let Some(view) = api.node.view().await else {
        return stopping();
    };
    let key = match e.brane.split_once('/') {
        Some((m, b)) => omega_gossip::node::BraneKey::new(m, b),
        None => match view
            .manifests
            .iter()
            .find(|m| m.plan.brane(&e.brane).is_some())
        {
            Some(m) => omega_gossip::node::BraneKey::new(&m.name, &e.brane),
            None => return fail(404, format!("no brane {:?}", e.brane)),
        },
    };
    let event = omega_runtime::Event::external(
        format!("api-{}", crate::unix_now().0),
        &e.ty,
        e.payload.into_bytes(),
    );
    let shared = api.shared.clone();
    match tokio::task::spawn_blocking(move || runner::deliver(&shared, &key, event)).await {
        Ok(Ok(deliveries)) => ok(&EmitResponse { deliveries }),
        Ok(Err(e)) => fail(400, e),
        Err(e) => fail(500, format!("the delivery task failed: {e}")),
    }
}

/// Why a call to the local API failed.
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
    /// The answer is not what this CLI expects (a different version?).
    #[error("the node's answer to {path} does not parse: {message}")]
    Malformed {
        /// The request path.
        path: String,
        /// Why.
        message: String,
    },
}

/// A client of one node's local API.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// The API of the node whose data directory is `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            socket: socket_path(data_dir),
        }
    }

    fn raw(&self, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            path: self.socket.clone(),
            source,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unreachable(HttpError::Io(e)))?;
        let r = rt
            .block_on(http::request(
                &self.socket,
                method,
                path,
                &[("Host", "omega"), ("Content-Type", "application/json")],
                body,
            ))
            .map_err(unreachable)?;
        if r.status != 200 {
            let message = serde_json::from_slice::<ErrorResponse>(&r.body).map_or_else(
                |_| String::from_utf8_lossy(&r.body).into_owned(),
                |e| e.error,
            );
            return Err(ClientError::Api {
                status: r.status,
                message,
            });
        }
        Ok(r.body)
    }

    fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|e| ClientError::Malformed {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// `GET path`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        Self::decode(path, &self.raw("GET", path, b"")?)
    }

    /// `POST path` with a JSON body.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Malformed {
            path: path.into(),
            message: e.to_string(),
        })?;
        Self::decode(path, &self.raw("POST", path, &body)?)
    }

    /// `GET /v0/status`.
    pub fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get("/v0/status")
    }

    /// `GET /v0/peers`.
    pub fn peers(&self) -> Result<PeersResponse, ClientError> {
        self.get("/v0/peers")
    }

    /// `GET /v0/tick`.
    pub fn tick(&self) -> Result<TickResponse, ClientError> {
        self.get("/v0/tick")
    }

    /// `POST /v0/records` with an encoded record.
    pub fn write(&self, record: &[u8]) -> Result<OkResponse, ClientError> {
        let record = base64::engine::general_purpose::STANDARD.encode(record);
        self.post("/v0/records", &WriteRequest { record })
    }

    /// `GET /v0/ps`.
    pub fn ps(&self) -> Result<PsResponse, ClientError> {
        self.get("/v0/ps")
    }

    /// `GET /v0/describe/WHICH`.
    pub fn describe(&self, which: &str) -> Result<DescribeResponse, ClientError> {
        self.get(&format!("/v0/describe/{which}"))
    }

    /// `POST /v0/emit`.
    pub fn emit(&self, request: &EmitRequest) -> Result<EmitResponse, ClientError> {
        self.post("/v0/emit", request)
    }
}

/// Calls the API of the node in `data_dir` and returns its JSON answer as
/// is (for tests and benchmarks that read a few fields).
pub fn call(
    data_dir: &Path,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<serde_json::Value, ClientError> {
    let c = Client::new(data_dir);
    let bytes = c.raw(method, path, body)?;
    Client::decode(path, &bytes)
}
