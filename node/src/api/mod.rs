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
//! | `POST /v0/emit` ([`EmitRequest`]) | [`EmitResponse`]: the events' ids once durable here (403 without a valid grant, 503 when the outbox is full) |
//! | `GET /v0/events` | [`omega_gossip::events::EventReport`]: outbox, dead letters, window, per outgoing edge |
//! | `GET /v0/tail?after=N[&brane=B][&type=T]` | [`TailResponse`]: events processed here after line N (waits up to 1 s) |
//! | `GET /v0/dlq`, `GET /v0/dlq/ID` | [`DlqResponse`]: dead letters on this node (with payload for one) |
//! | `POST /v0/dlq/ID/replay`, `POST /v0/dlq/ID/drop` | [`DlqResponse`] (empty) once durable |
//!
//! Errors are [`ErrorResponse`] with status 400 (bad request), 404
//! (unknown brane or route), 405 (a route asked with another method; the
//! `Allow` header names the one it takes), 408 (the body did not arrive in
//! time), 413 (body larger than [`http::MAX_BODY`], 4 MiB) or 503 (node
//! stopping).
//!
//! The server's limits are [`http::ServerConfig`]'s defaults: 32
//! connections, of which the one waiting longest for its request head is
//! closed when a new one needs the room, 5 s for the head, 5 s for the body.

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

use crate::daemon::runner::Shared;
use crate::daemon::view;

pub use self::types::*;

/// The socket's file name in the data directory.
pub const SOCKET: &str = "api.sock";

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

/// Serves the API for as long as the task runs, within
/// [`http::ServerConfig::default`]'s limits.
pub async fn serve(listener: UnixListener, api: Api) {
    http::serve(listener, http::ServerConfig::default(), move |req| {
        let api = api.clone();
        async move { route(&api, &req).await }
    })
    .await;
}

type Answer = http::Reply;

fn ok<T: Serialize>(body: &T) -> Answer {
    http::Reply::json(200, serde_json::to_vec(body).unwrap_or_default())
}

fn fail(status: u16, error: impl Into<String>) -> Answer {
    let body = ErrorResponse {
        error: error.into(),
    };
    http::Reply::json(status, serde_json::to_vec(&body).unwrap_or_default())
}

fn stopping() -> Answer {
    fail(503, "node is stopping")
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| fail(400, format!("malformed request: {e}")))
}

/// A route of the API, parsed from the path alone (the method is checked
/// against [`Route::method`] in one place).
#[derive(Debug)]
enum Route<'a> {
    Status,
    Peers,
    Tick,
    Records,
    Ps,
    Describe(&'a str),
    Emit,
    Events,
    Tail(&'a str),
    Dlq(Option<&'a str>),
    DlqAct(&'a str, &'a str),
}

impl<'a> Route<'a> {
    fn parse(path: &'a str) -> Option<Self> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        if let Some(which) = path.strip_prefix("/v0/describe/") {
            return (!which.is_empty()).then_some(Self::Describe(which));
        }
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        Some(match parts.as_slice() {
            ["v0", "status"] => Self::Status,
            ["v0", "peers"] => Self::Peers,
            ["v0", "tick"] => Self::Tick,
            ["v0", "records"] => Self::Records,
            ["v0", "ps"] => Self::Ps,
            ["v0", "emit"] => Self::Emit,
            ["v0", "events"] => Self::Events,
            ["v0", "tail"] => Self::Tail(query),
            ["v0", "dlq"] => Self::Dlq(None),
            ["v0", "dlq", id] if !id.is_empty() => Self::Dlq(Some(id)),
            ["v0", "dlq", id, act @ ("replay" | "drop")] => Self::DlqAct(id, act),
            _ => return None,
        })
    }

    /// The one method the route answers (its `Allow` header otherwise).
    fn method(&self) -> &'static str {
        match self {
            Self::Records | Self::Emit | Self::DlqAct(..) => "POST",
            _ => "GET",
        }
    }
}

async fn route(api: &Api, req: &http::Request) -> Answer {
    let Some(route) = Route::parse(&req.path) else {
        return fail(404, format!("no route {}", req.path));
    };
    if req.method != route.method() {
        let mut a = fail(
            405,
            format!(
                "{} takes {}, not {}",
                req.path.split('?').next().unwrap_or_default(),
                route.method(),
                req.method
            ),
        );
        a.headers.push(("allow", route.method().into()));
        return a;
    }
    let node = &api.node;
    match route {
        Route::Describe(which) => match node.view().await {
            Some(v) => match view::describe(&v, which) {
                Some(mut d) => {
                    note_frontier_here(api, &v, &mut d);
                    note_resolvers(api, &mut d);
                    ok(&d)
                }
                None => fail(404, format!("no brane {which:?} in any applied manifest")),
            },
            None => stopping(),
        },
        Route::Dlq(id) => dlq(api, id, None).await,
        Route::DlqAct(id, act) => dlq(api, Some(id), Some(act)).await,
        Route::Tail(query) => tail(api, query).await,
        Route::Tick => match node.tick().await {
            Some(h) => ok(&TickResponse {
                wall_ms: h.wall_ms,
                counter: h.counter,
                mesh: node.status().await.map(|s| s.node.mesh).unwrap_or_default(),
            }),
            None => stopping(),
        },
        Route::Records => {
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
        Route::Ps => match node.view().await {
            Some(v) => {
                let mut ps = view::ps(&v);
                ps.events = node.events().await;
                if let Ok(r) = api.shared.resolvers.lock() {
                    ps.resolvers = r.clone();
                }
                ok(&ps)
            }
            None => stopping(),
        },
        Route::Emit => match parse::<EmitRequest>(&req.body) {
            Ok(e) => emit(api, e).await,
            Err(a) => a,
        },
        Route::Events => match node.events().await {
            Some(r) => ok(&r),
            None => stopping(),
        },
        Route::Status => match node.status().await {
            Some(status) => ok(&StatusResponse {
                status,
                frontier: api.shared.frontier.clone(),
            }),
            None => stopping(),
        },
        Route::Peers => match node.peers().await {
            Some(p) => ok(&p),
            None => stopping(),
        },
    }
}

/// In `omega describe`, the resolvers this node's gateway serves for the
/// brane, with their tunnels' state and public URL.
fn note_resolvers(api: &Api, d: &mut DescribeResponse) {
    let Ok(rows) = api.shared.resolvers.lock() else {
        return;
    };
    for one in described(d) {
        one.resolvers = rows
            .iter()
            .filter(|r| r.manifest == one.manifest && r.brane == one.brane)
            .cloned()
            .collect();
    }
}

fn described(d: &mut DescribeResponse) -> Vec<&mut Describe> {
    match d {
        DescribeResponse::One(one) => vec![one.as_mut()],
        DescribeResponse::Many { matches } => matches.iter_mut().collect(),
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
    for one in described(d) {
        if one.spec.capability != omega_zgraph::Capability::Frontier {
            continue;
        }
        for row in one.ineligible.iter_mut().filter(|r| r.did == me) {
            row.reasons.push(why.clone());
        }
    }
}

async fn emit(api: &Api, e: EmitRequest) -> Answer {
    use omega_gossip::events::{EmitError, NewEvent};
    use omega_gossip::node::BraneKey;
    let b64 = base64::engine::general_purpose::STANDARD;
    let Ok(grant) = b64.decode(e.grant.trim()) else {
        return fail(400, "`grant` is not base64");
    };
    if e.events.is_empty() {
        return fail(400, "no events");
    }
    let Some(view) = api.node.view().await else {
        return stopping();
    };
    let mut events = Vec::with_capacity(e.events.len());
    for (i, ev) in e.events.into_iter().enumerate() {
        let to = match ev.brane.split_once('/') {
            Some((m, b)) => BraneKey::new(m, b),
            None => {
                let mut found = view
                    .manifests
                    .iter()
                    .filter(|m| m.plan.brane(&ev.brane).is_some());
                match (found.next(), found.next()) {
                    (Some(m), None) => BraneKey::new(&m.name, &ev.brane),
                    (Some(_), Some(_)) => {
                        return fail(
                            400,
                            format!(
                                "event {i}: several manifests have a brane {:?}; say MANIFEST/BRANE",
                                ev.brane
                            ),
                        );
                    }
                    (None, _) => return fail(404, format!("event {i}: no brane {:?}", ev.brane)),
                }
            }
        };
        let payload = match &ev.payload_base64 {
            Some(p) => match b64.decode(p.trim()) {
                Ok(p) => p,
                Err(_) => return fail(400, format!("event {i}: `payload_base64` is not base64")),
            },
            None => ev.payload.into_bytes(),
        };
        events.push(NewEvent {
            to,
            ty: ev.ty,
            key: ev.key,
            payload,
        });
    }
    let manifest = events[0].to.manifest.clone();
    match api.node.emit(grant, events).await {
        Some(Ok(ids)) => ok(&EmitResponse {
            manifest,
            ids: ids.iter().map(ToString::to_string).collect(),
        }),
        Some(Err(e @ EmitError::Busy(_))) => fail(503, e.to_string()),
        Some(Err(e @ EmitError::TooLarge { .. })) => fail(413, e.to_string()),
        Some(Err(e @ EmitError::Unauthorized(_))) => fail(403, e.to_string()),
        Some(Err(e)) => fail(400, e.to_string()),
        None => stopping(),
    }
}

/// `GET /v0/tail?after=N&brane=B&type=T`: waits up to a second for a line.
async fn tail(api: &Api, query: &str) -> Answer {
    let mut after = 0u64;
    let (mut brane, mut ty) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("after", v)) => match v.parse() {
                Ok(n) => after = n,
                Err(_) => return fail(400, format!("`after` is a number, not {v:?}")),
            },
            Some(("brane", v)) => brane = Some(v.to_owned()),
            Some(("type", v)) => ty = Some(v.to_owned()),
            _ => return fail(400, format!("unknown tail parameter {pair:?}")),
        }
    }
    let keep = |l: &TailLine| {
        brane
            .as_deref()
            .is_none_or(|b| l.brane == b || format!("{}/{}", l.manifest, l.brane) == b)
            && ty.as_deref().is_none_or(|t| l.ty == t)
    };
    let t = &api.shared.tail;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let wake = t.notify.notified();
        let (lines, next, skipped) = t.after(after, 1000, keep);
        if !lines.is_empty() || tokio::time::Instant::now() >= deadline {
            return ok(&TailResponse {
                next,
                skipped,
                lines,
            });
        }
        after = next;
        let _ = tokio::time::timeout_at(deadline, wake).await;
    }
}

/// `GET /v0/dlq[/ID]`, `POST /v0/dlq/ID/replay|drop` (the method is
/// checked by [`route`]).
async fn dlq(api: &Api, id: Option<&str>, act: Option<&str>) -> Answer {
    use omega_gossip::events::{DlqCommand, DlqError, EventId};
    let command = match id.map(str::parse::<EventId>) {
        None => DlqCommand::List,
        Some(Err(e)) => return fail(400, e.to_string()),
        Some(Ok(i)) => match act {
            None => DlqCommand::Show(i),
            Some("replay") => DlqCommand::Replay(i),
            Some(_) => DlqCommand::Drop(i),
        },
    };
    match api.node.dlq(command).await {
        Some(Ok(letters)) => ok(&DlqResponse { letters }),
        Some(Err(e @ DlqError::NotFound(_))) => fail(404, e.to_string()),
        Some(Err(e)) => fail(500, e.to_string()),
        None => stopping(),
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

    /// `GET /v0/events`.
    pub fn events(&self) -> Result<omega_gossip::events::EventReport, ClientError> {
        self.get("/v0/events")
    }

    /// `GET /v0/tail?…`.
    pub fn tail(&self, query: &str) -> Result<TailResponse, ClientError> {
        self.get(&format!("/v0/tail?{query}"))
    }

    /// `GET|POST /v0/dlq…`.
    pub fn dlq(&self, method: &str, rest: &str) -> Result<DlqResponse, ClientError> {
        let path = format!("/v0/dlq{rest}");
        Self::decode(&path, &self.raw(method, &path, b"")?)
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
