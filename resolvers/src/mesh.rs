//! HTTP between nodes on `/omega/http/1`: each stream carries one HTTP/2
//! connection (hyper), reused for every request to that member, so
//! requests are multiplexed and flow-controlled per request (a slow reader
//! slows its own sender only). HTTP/2 keep-alive pings detect a member that
//! died without closing its connection within [`MeshLimits::ping_timeout`]
//! after [`MeshLimits::ping_interval`].
//!
//! Headers of the hop (a client of the gateway cannot set them: the
//! gateway strips every `omega-*` request header first):
//!
//! | header | meaning |
//! |---|---|
//! | `omega-brane: MANIFEST/BRANE` | the brane the request is for (required) |
//! | `omega-caller: MANIFEST/BRANE` | the brane that calls, for a name-addressed call |
//!
//! The serving side ([`serve`]) serves admitted members only, only branes
//! with a replica here (else `503`, `omega-gateway: not-here`: the sender
//! tries another replica), and authorizes again from its own copy of the
//! manifests ([`Directory::authorize`], `403` `omega-gateway: refused`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::route::{Body, BoxError, BraneName, Dialer, Directory, Io, Replica};

/// The header naming the target brane on the hop.
pub const BRANE_HEADER: &str = "omega-brane";
/// The header naming the calling brane on the hop.
pub const CALLER_HEADER: &str = "omega-caller";
/// The header on the gateway's own answers: which rule fired.
pub const GATEWAY_HEADER: &str = "omega-gateway";

/// Limits of the hop between nodes.
#[derive(Debug, Clone)]
pub struct MeshLimits {
    /// Most concurrent requests one member may have open on a connection
    /// (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`). Default 256.
    pub max_streams: u32,
    /// Largest request or response header list. Default 64 KiB.
    pub max_header_list: u32,
    /// Keep-alive ping interval. Default 2 s.
    pub ping_interval: Duration,
    /// A ping unanswered this long closes the connection. Default 3 s.
    pub ping_timeout: Duration,
    /// Opening a stream and the HTTP/2 handshake. Default 5 s.
    pub connect_timeout: Duration,
}

impl Default for MeshLimits {
    fn default() -> Self {
        Self {
            max_streams: 256,
            max_header_list: 64 * 1024,
            ping_interval: Duration::from_secs(2),
            ping_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A `text/plain` answer of the gateway itself, tagged with `rule`.
pub fn answer(status: StatusCode, rule: &'static str, message: String) -> Response<Body> {
    let body = http_body_util::Full::new(hyper::body::Bytes::from(message + "\n"))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(GATEWAY_HEADER, HeaderValue::from_static(rule));
    resp
}

/// Why a request did not get a response head from a member.
#[derive(Debug)]
pub enum SendError {
    /// It never left: the request comes back untouched (try elsewhere).
    NotSent(Box<Request<Body>>, String),
    /// It was sent (maybe in part) and the exchange broke.
    Broken(String),
}

/// The sending side: one HTTP/2 connection per member, opened on first
/// use and replaced when it closes.
pub struct Client {
    dialer: Arc<dyn Dialer>,
    limits: MeshLimits,
    conns: Mutex<HashMap<String, SendRequest<Body>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client opening streams with `dialer`.
    pub fn new(dialer: Arc<dyn Dialer>, limits: MeshLimits) -> Self {
        Self {
            dialer,
            limits,
            conns: Mutex::new(HashMap::new()),
        }
    }

    async fn connection(&self, peer: &str) -> Result<SendRequest<Body>, String> {
        if let Ok(conns) = self.conns.lock()
            && let Some(c) = conns.get(peer)
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let l = &self.limits;
        let open = async {
            let io: Box<dyn Io> = self
                .dialer
                .open(peer)
                .await
                .map_err(|e| format!("opening a stream: {e}"))?;
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(l.ping_interval)
                .keep_alive_timeout(l.ping_timeout)
                .keep_alive_while_idle(true)
                .max_header_list_size(l.max_header_list)
                .handshake::<_, Body>(TokioIo::new(io))
                .await
                .map_err(|e| format!("HTTP/2 handshake: {e}"))
        };
        let (sender, conn) = tokio::time::timeout(l.connect_timeout, open)
            .await
            .map_err(|_| format!("no connection within {:?}", l.connect_timeout))??;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        if let Ok(mut conns) = self.conns.lock() {
            // Bounded by the members: a closed entry is replaced here, and
            // entries of members that left are dropped by `forget`.
            conns.insert(peer.to_owned(), sender.clone());
        }
        Ok(sender)
    }

    /// Drops the connection to `peer` (it left the mesh).
    pub fn forget(&self, peer: &str) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(peer);
        }
    }

    /// Sends `request` for `brane` (from `caller`) to `peer`; the response
    /// head, or why there is none.
    pub async fn send(
        &self,
        peer: &str,
        brane: &BraneName,
        caller: Option<&BraneName>,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let h = request.headers_mut();
        for (name, value) in [(BRANE_HEADER, Some(brane)), (CALLER_HEADER, caller)] {
            match value.map(|v| HeaderValue::from_str(&v.to_string())) {
                Some(Ok(v)) => {
                    h.insert(name, v);
                }
                _ => {
                    h.remove(name);
                }
            }
        }
        let mut sender = match self.connection(peer).await {
            Ok(s) => s,
            Err(e) => return Err(SendError::NotSent(Box::new(request), e)),
        };
        if let Err(e) = sender.ready().await {
            self.forget(peer);
            return Err(SendError::NotSent(Box::new(request), e.to_string()));
        }
        match sender.try_send_request(request).await {
            Ok(resp) => Ok(resp),
            Err(mut e) => {
                let why = e.error().to_string();
                if sender.is_closed() {
                    self.forget(peer);
                }
                match e.take_message() {
                    Some(req) => Err(SendError::NotSent(Box::new(req), why)),
                    None => Err(SendError::Broken(why)),
                }
            }
        }
    }
}

/// Serves one incoming `/omega/http/1` stream from `peer` until it closes.
pub async fn serve(io: Box<dyn Io>, peer: String, dir: Arc<dyn Directory>, limits: MeshLimits) {
    if !dir.admits(&peer) {
        tracing::debug!(%peer, "refused an http stream from a non-member");
        return;
    }
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let dir = dir.clone();
        async move { Ok::<_, Infallible>(serve_one(dir.as_ref(), req).await) }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(limits.max_header_list)
        .keep_alive_interval(limits.ping_interval)
        .keep_alive_timeout(limits.ping_timeout)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

async fn serve_one(dir: &dyn Directory, mut req: Request<Incoming>) -> Response<Body> {
    let name = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(BraneName::parse)
    };
    let target = match name(BRANE_HEADER) {
        Some(Some(t)) => t,
        _ => {
            return answer(
                StatusCode::BAD_REQUEST,
                "bad-hop",
                format!("missing or malformed `{BRANE_HEADER}: MANIFEST/BRANE`"),
            );
        }
    };
    let caller = match name(CALLER_HEADER) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => {
            return answer(
                StatusCode::BAD_REQUEST,
                "bad-hop",
                format!("malformed `{CALLER_HEADER}: MANIFEST/BRANE`"),
            );
        }
    };
    if let Err(why) = dir.authorize(caller.as_ref(), &target) {
        return answer(StatusCode::FORBIDDEN, "refused", why);
    }
    let local = dir.replicas(&target).into_iter().find_map(|r| match r {
        Replica::Local(l) => Some(l),
        Replica::Remote(_) => None,
    });
    let Some(local) = local else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-here",
            format!("no replica of brane {target} runs on this node"),
        );
    };
    let h = req.headers_mut();
    h.remove(BRANE_HEADER);
    h.remove(CALLER_HEADER);
    local
        .handle(req.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
        .await
}
