//! The gateway: an HTTP/1.1 + HTTP/2 (cleartext) server that routes by
//! host to a brane's replicas, here or across the mesh ([`Forwarder`]),
//! within [`Limits`]. See the crate docs for the answers it gives.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use crate::mesh::{self, Client, SendError, answer};
use crate::route::{Body, BoxError, BraneName, Directory, Replica};

/// The gateway's limits. Every one has a defined answer when hit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (HTTP/1 buffer; HTTP/2 header list): `431`
    /// beyond it. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Largest request body: `413` when declared larger, the body cut (the
    /// brane sees an error) when it grows larger. Default 8 MiB.
    pub max_body: u64,
    /// Time to read a request head (slowloris): the connection is closed.
    /// Default 10 s.
    pub header_timeout: Duration,
    /// Longest pause in a request body before it is cut. Default 10 s.
    pub body_idle_timeout: Duration,
    /// Time to the response head: `504` beyond it. Default 30 s.
    pub response_timeout: Duration,
    /// Most open client connections; more wait in the listen backlog
    /// (backpressure). Default 1024.
    pub max_connections: usize,
    /// Most requests in flight; more wait up to `queue_timeout`, then
    /// `503`. Default 512.
    pub max_in_flight: usize,
    /// How long a request waits for an in-flight slot. Default 1 s.
    pub queue_timeout: Duration,
    /// Most concurrent HTTP/2 streams per client connection. Default 128.
    pub max_streams: u32,
    /// Largest idempotent request body kept for its one retry. Default 64 KiB.
    pub retry_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_body: 8 << 20,
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_in_flight: 512,
            queue_timeout: Duration::from_secs(1),
            max_streams: 128,
            retry_body: 64 * 1024,
        }
    }
}

/// Sends requests to a brane's replicas: a local one directly, remote ones
/// over the mesh, with the one retry the crate docs describe. Shared by
/// the gateway and by name-addressed brane calls.
pub struct Forwarder {
    dir: Arc<dyn Directory>,
    client: Client,
    limits: Limits,
    next: AtomicUsize,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

fn strip_hop(h: &mut HeaderMap) {
    for name in HOP {
        h.remove(*name);
    }
}

/// A request whose body was read whole: it can be sent twice.
struct Replay {
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Replay {
    fn request(&self) -> Request<Body> {
        let mut r = Request::new(
            Full::new(self.body.clone())
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

impl Forwarder {
    /// A forwarder over `dir`, reaching members through `client`.
    pub fn new(dir: Arc<dyn Directory>, client: Client, limits: Limits) -> Self {
        Self {
            dir,
            client,
            limits,
            next: AtomicUsize::new(0),
        }
    }

    /// The directory.
    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.dir
    }

    /// Sends `request` to a replica of `target` (from brane `caller`, or
    /// from the gateway) and answers its response, or the gateway's own.
    pub async fn forward(
        &self,
        target: &BraneName,
        caller: Option<&BraneName>,
        mut request: Request<Body>,
    ) -> Response<Body> {
        strip_hop(request.headers_mut());
        let mut replicas = self.dir.replicas(target);
        if replicas.is_empty() {
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-replica",
                format!("brane {target} has no running replica in the mesh"),
            );
        }
        if let Some(Replica::Local(local)) = replicas.first() {
            return local.handle(request).await;
        }
        // Spread requests over the remote replicas.
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % replicas.len();
        replicas.rotate_left(turn);
        let mut replay = None;
        let method = request.method().clone();
        if idempotent(&method)
            && request
                .body()
                .size_hint()
                .exact()
                .is_some_and(|n| n <= self.limits.retry_body)
        {
            let (parts, body) = request.into_parts();
            let body = match collect(body, self.limits.retry_body).await {
                Ok(b) => b,
                Err(e) => {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        "bad-body",
                        format!("reading the request body: {e}"),
                    );
                }
            };
            let r = Replay {
                method: parts.method,
                uri: parts.uri,
                headers: parts.headers,
                body,
            };
            request = r.request();
            replay = Some(r);
        }
        let mut pending = Some(request);
        let mut broken_once = false;
        let mut last = String::new();
        // Each replica at most once; a request that reached a node and broke
        // is retried once, and only when it can be replayed.
        for replica in &replicas {
            let Replica::Remote(peer) = replica else {
                continue;
            };
            let req = match pending.take() {
                Some(r) => r,
                None => match &replay {
                    Some(r) if !broken_once => {
                        broken_once = true;
                        r.request()
                    }
                    _ => break,
                },
            };
            let sent = tokio::time::timeout(
                self.limits.response_timeout,
                self.client.send(peer, target, caller, req),
            )
            .await;
            match sent {
                Err(_) => {
                    return answer(
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        format!(
                            "brane {target} on node {peer} sent no response within {:?}",
                            self.limits.response_timeout
                        ),
                    );
                }
                Ok(Ok(resp)) => {
                    let not_here = resp.status() == StatusCode::SERVICE_UNAVAILABLE
                        && resp
                            .headers()
                            .get(mesh::GATEWAY_HEADER)
                            .is_some_and(|v| v == "not-here");
                    if not_here {
                        // Not served there: nothing ran, any request may go on
                        // (a replayable one is sent again; others cannot).
                        last = format!("node {peer} no longer runs it");
                        if replay.is_none() {
                            return resp.map(|b| {
                                b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()
                            });
                        }
                        pending = replay.as_ref().map(Replay::request);
                        continue;
                    }
                    return resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync());
                }
                Ok(Err(SendError::NotSent(req, why))) => {
                    last = format!("node {peer}: {why}");
                    pending = Some(*req);
                }
                Ok(Err(SendError::Broken(why))) => {
                    last = format!("node {peer} went away mid-request ({why})");
                    if replay.is_none() || broken_once {
                        let not = if idempotent(&method) {
                            "its body was too large to keep for a retry"
                        } else {
                            "it is not idempotent"
                        };
                        let retried = if broken_once { "after one retry" } else { "" };
                        return answer(
                            StatusCode::BAD_GATEWAY,
                            "replica-lost",
                            if broken_once {
                                format!("brane {target}: {last}, {retried}")
                            } else {
                                format!(
                                    "brane {target}: {last}; the {method} was not retried: {not}"
                                )
                            },
                        );
                    }
                }
            }
        }
        answer(
            StatusCode::BAD_GATEWAY,
            "unreachable",
            format!("brane {target}: no replica could be reached ({last})"),
        )
    }
}

/// Reads `body` whole (at most `limit` bytes).
async fn collect(mut body: Body, limit: u64) -> Result<Bytes, String> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > limit {
                return Err(format!("larger than {limit} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// A request body cut when it pauses longer than `idle`.
struct IdleBody {
    inner: Body,
    idle: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + self.idle;
                self.sleep.as_mut().reset(next);
                Poll::Ready(frame)
            }
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "the request body paused longer than {:?}",
                    self.idle
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The gateway.
pub struct Gateway {
    forwarder: Arc<Forwarder>,
    limits: Limits,
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

/// The host a request names (`:authority` or `Host`), lowercase, no port,
/// no trailing dot.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.host().to_owned(),
        None => {
            let h = req.headers().get(HOST)?.to_str().ok()?;
            let a: http::uri::Authority = h.parse().ok()?;
            a.host().to_owned()
        }
    };
    let h = raw.to_ascii_lowercase();
    Some(h.strip_suffix('.').unwrap_or(&h).to_owned())
}

impl Gateway {
    /// A gateway forwarding with `forwarder` within `limits`.
    pub fn new(forwarder: Arc<Forwarder>, limits: Limits) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            forwarder,
            limits,
        }
    }

    /// Routes and answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let permit = match tokio::time::timeout(
            self.limits.queue_timeout,
            self.in_flight.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => {
                return answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    format!(
                        "the gateway has {} requests in flight; try again",
                        self.limits.max_in_flight
                    ),
                );
            }
        };
        let Some(host) = request_host(&req) else {
            return answer(
                StatusCode::NOT_FOUND,
                "unknown-host",
                "the request names no host".into(),
            );
        };
        // A proxy in front (NetBird's) may send its own address as `Host`
        // and the public name in `X-Forwarded-Host`. Every resolver host is
        // public, so routing by it selects nothing `Host` could not.
        let forwarded = req
            .headers()
            .get("x-forwarded-host")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_ascii_lowercase());
        let dir = &self.forwarder.dir;
        let Some(target) = dir
            .host(&host)
            .or_else(|| forwarded.as_deref().and_then(|f| dir.host(f)))
        else {
            return answer(
                StatusCode::NOT_FOUND,
                "unknown-host",
                format!("no resolver serves host `{host}`"),
            );
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limits.max_body) {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!(
                    "the request body exceeds the gateway's limit of {} bytes",
                    self.limits.max_body
                ),
            );
        }
        let (mut parts, body) = req.into_parts();
        // Clients never speak for the mesh.
        let forged: Vec<_> = parts
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("omega-"))
            .cloned()
            .collect();
        for k in forged {
            parts.headers.remove(k);
        }
        // An HTTP/1 request carries its host in `Host` only; give the hop an
        // absolute URI (HTTP/2 needs an authority).
        if parts.uri.authority().is_none() {
            let pq = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            if let Ok(uri) = format!("http://{host}{pq}").parse() {
                parts.uri = uri;
            }
        }
        let limited = Limited::new(body, self.limits.max_body as usize)
            .map_err(|e| -> BoxError { e })
            .boxed_unsync();
        let idle = IdleBody {
            inner: limited,
            idle: self.limits.body_idle_timeout,
            sleep: Box::pin(tokio::time::sleep(self.limits.body_idle_timeout)),
        };
        let req = Request::from_parts(parts, idle.boxed_unsync());
        let resp = self.forwarder.forward(&target, None, req).await;
        drop(permit);
        resp
    }

    /// Serves `listener` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let conns = Arc::new(Semaphore::new(self.limits.max_connections));
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // Backpressure: at the limit, stop accepting (clients wait in
            // the kernel's backlog).
            let permit = tokio::select! {
                () = &mut shutdown => return Ok(()),
                p = conns.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return Ok(()),
                },
            };
            let (stream, _) = tokio::select! {
                () = &mut shutdown => return Ok(()),
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!("gateway accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(self.clone(), stream, permit));
        }
    }
}

/// Serves one client connection (HTTP/1.1 or HTTP/2, detected).
fn connection(
    gw: Arc<Gateway>,
    stream: tokio::net::TcpStream,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    let l = gw.limits.clone();
    let service = GatewayService(gw);
    async move {
        let _permit = permit;
        let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(l.header_timeout)
            .max_buf_size(l.max_header_bytes.max(8192))
            .keep_alive(true);
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(l.max_streams)
            .max_header_list_size(l.max_header_bytes as u32)
            .keep_alive_interval(Duration::from_secs(20));
        let _ = b.serve_connection(TokioIo::new(stream), service).await;
    }
}

/// The gateway as a hyper service.
#[derive(Clone)]
struct GatewayService(Arc<Gateway>);

impl hyper::service::Service<Request<Incoming>> for GatewayService {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let gw = self.0.clone();
        Box::pin(async move { Ok(gw.handle(req).await) })
    }
}
