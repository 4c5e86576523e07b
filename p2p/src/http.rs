//! HTTP/1.1 over unix sockets, on hyper: the client that the Tailscale
//! provider (tailscaled's LocalAPI) and the CLI (the node's local API) use,
//! and the server of the node's local API. Bodies are bounded both ways
//! ([`MAX_BODY`]), headers by hyper's buffer ([`MAX_HEAD`]), every client
//! exchange by [`TIMEOUT`], and the server by its [`ServerConfig`]: a bound
//! on connections that slow clients cannot hold, a deadline for the request
//! head and one for the body, and 413 for a body over the limit.

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, oneshot};

/// Most header bytes either side reads.
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest body either side accepts.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// How long one exchange may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong talking HTTP over a unix socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Connecting failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The exchange broke HTTP (as hyper saw it).
    #[error("HTTP: {0}")]
    Protocol(String),
    /// The body is larger than the limit ([`MAX_BODY`] for responses).
    #[error("body larger than the limit of {MAX_BODY} bytes")]
    TooLarge,
    /// The exchange took longer than [`TIMEOUT`].
    #[error("no answer within {TIMEOUT:?}")]
    Timeout,
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// Sends one request to the server on `socket` and reads its response.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    tokio::time::timeout(TIMEOUT, exchange(socket, method, path, headers, body))
        .await
        .map_err(|_| HttpError::Timeout)?
}

async fn exchange(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    let protocol = |e: &dyn std::fmt::Display| HttpError::Protocol(e.to_string());
    let stream = UnixStream::connect(socket).await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD.max(8192))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| protocol(&e))?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header(hyper::header::HOST, "localhost");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| protocol(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| protocol(&e))?;
    let status = resp.status().as_u16();
    let body = read_body(resp.into_body()).await?;
    conn.abort();
    Ok(Response { status, body })
}

async fn read_body(mut body: Incoming) -> Result<Vec<u8>, HttpError> {
    read_limited(&mut body, MAX_BODY).await
}

/// Reads `body` whole, or stops at the first frame past `limit` (the rest
/// left in `body`).
async fn read_limited(body: &mut Incoming, limit: usize) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| HttpError::Protocol(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(HttpError::TooLarge);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// A request as the server hands it to its handler.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: String,
    /// The path (with query).
    pub path: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body (at most [`ServerConfig::max_body`]).
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a handler answers: a status, extra headers and a JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Headers besides `content-type: application/json` (e.g. `allow`).
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl Reply {
    /// `status` with a JSON `body` and no extra headers.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// `status` with body `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Self {
        let body = serde_json::json!({ "error": message }).to_string();
        Self::json(status, body.into_bytes())
    }
}

/// The server's limits.
///
/// A connection holds one of [`max_connections`](Self::max_connections)
/// slots from accept to close. When every slot is taken, the connection
/// that has waited longest for its request head is closed to make room
/// (a client that sends nothing, or a byte a second, cannot keep others
/// out); when every slot holds a request being answered, new connections
/// wait in the kernel's backlog.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Most connections at once. Default 32.
    pub max_connections: usize,
    /// How long the request head (request line and headers) may take to
    /// arrive; then the connection is closed. Default 5 s.
    pub head_timeout: Duration,
    /// How long the body may take once the head is in; then 408. Default 5 s.
    pub body_timeout: Duration,
    /// Largest request body; a larger one is answered 413 without calling
    /// the handler (before reading it when `content-length` says so).
    /// Default [`MAX_BODY`].
    pub max_body: usize,
    /// Longest one connection may live, handler included. Default 60 s.
    pub max_exchange: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 32,
            head_timeout: TIMEOUT,
            body_timeout: TIMEOUT,
            max_body: MAX_BODY,
            max_exchange: TIMEOUT * 12,
        }
    }
}

/// Connections still waiting for their request head, oldest first: sending
/// on one's channel closes it.
type Waiting = Arc<std::sync::Mutex<std::collections::BTreeMap<u64, oneshot::Sender<()>>>>;

/// Serves `handler` on `listener` for as long as the task runs, within the
/// limits of `config` (one request per connection); a failed accept (out of
/// file descriptors, say) is waited out, not fatal.
pub async fn serve<F, Fut>(listener: UnixListener, config: ServerConfig, handler: F)
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let handler = Arc::new(handler);
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let waiting = Waiting::default();
    for id in 0u64.. {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, say: wait for some to close.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let oldest = lock(&waiting).pop_first();
                if let Some((_, close)) = oldest {
                    let _ = close.send(());
                }
                match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        let (close, closed) = oneshot::channel();
        lock(&waiting).insert(id, close);
        let (handler, config, waiting) = (handler.clone(), config.clone(), waiting.clone());
        tokio::spawn(async move {
            let _permit = permit;
            connection(stream, id, &config, &waiting, closed, handler).await;
            lock(&waiting).remove(&id);
        });
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing can panic while the map is held: take it even if poisoned.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn connection<F, Fut>(
    stream: UnixStream,
    id: u64,
    config: &Arc<ServerConfig>,
    waiting: &Waiting,
    closed: oneshot::Receiver<()>,
    handler: Arc<F>,
) where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let service = {
        let (config, waiting) = (config.clone(), waiting.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            // The head is in: this connection is no longer one to evict
            // (dropping its sender tells `evicted` so).
            lock(&waiting).remove(&id);
            let (handler, config) = (handler.clone(), config.clone());
            async move { Ok::<_, Infallible>(answer(&*handler, &config, req).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(config.head_timeout)
        .max_buf_size(MAX_HEAD.max(8192))
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let evicted = async {
        if closed.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(config.max_exchange, conn) => {}
        () = evicted => {}
    }
}

async fn answer<F, Fut>(
    handler: &F,
    config: &ServerConfig,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Reply>,
{
    let (parts, mut body) = req.into_parts();
    let too_large = |what: String| {
        Reply::error(
            413,
            &format!(
                "request body {what}larger than {} bytes, the most this API accepts",
                config.max_body
            ),
        )
    };
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let reply = match declared {
        Some(n) if n > config.max_body as u64 => too_large(format!("of {n} bytes is ")),
        _ => match tokio::time::timeout(
            config.body_timeout,
            read_limited(&mut body, config.max_body),
        )
        .await
        {
            Err(_) => Reply::error(
                408,
                &format!(
                    "the request body took longer than {:?}",
                    config.body_timeout
                ),
            ),
            Ok(Err(HttpError::TooLarge)) => too_large(String::new()),
            Ok(Err(e)) => Reply::error(400, &e.to_string()),
            Ok(Ok(body)) => return respond(handler(handler_request(parts, body)).await),
        },
    };
    // A refusal: read and drop what the client still sends, for a while,
    // so that it is not cut off mid-write and gets to read the answer
    // (unless it waits for `100 Continue`, which it then never gets).
    let expects = parts.headers.contains_key(hyper::header::EXPECT);
    if reply.status == 413 && !expects {
        tokio::spawn(tokio::time::timeout(config.body_timeout, async move {
            while let Some(Ok(_)) = body.frame().await {}
        }));
    }
    respond(reply)
}

fn respond(reply: Reply) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    for (name, value) in reply.headers {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    resp
}

fn handler_request(parts: hyper::http::request::Parts, body: Vec<u8>) -> Request {
    Request {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.to_string()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn start(dir: &Path, config: ServerConfig) -> std::path::PathBuf {
        let sock = dir.join("s.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(serve(listener, config, |r: Request| async move {
            let seen = serde_json::json!({
                "method": r.method, "path": r.path, "len": r.body.len(),
                "x": r.header("x-test").unwrap_or(""),
            });
            let mut reply = Reply::json(200, seen.to_string().into_bytes());
            reply.headers.push(("x-seen", "yes".into()));
            reply
        }));
        sock
    }

    /// Writes `bytes` on a fresh connection and reads until the server closes it.
    async fn raw(sock: &Path, bytes: &[u8]) -> String {
        let mut s = UnixStream::connect(sock).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_request_round_trips_and_bounds_hold() {
        let dir = tempfile::tempdir().unwrap();
        let sock = start(dir.path(), ServerConfig::default());
        let r = request(&sock, "POST", "/v0/x?y=1", &[("X-Test", "ok")], b"abc")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/v0/x?y=1");
        assert_eq!(v["len"], 3);
        assert_eq!(v["x"], "ok");
        let big = vec![b'x'; MAX_BODY + 1];
        let r = request(&sock, "POST", "/", &[], &big).await.unwrap();
        assert_eq!(r.status, 413);
        let e: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            e["error"].as_str().unwrap().contains(&MAX_BODY.to_string()),
            "{e}"
        );
        assert!(matches!(
            request(&dir.path().join("nope"), "GET", "/", &[], b"").await,
            Err(HttpError::Io(_))
        ));
    }

    #[tokio::test]
    async fn extra_headers_of_a_reply_are_sent() {
        let dir = tempfile::tempdir().unwrap();
        let sock = start(dir.path(), ServerConfig::default());
        let r = raw(&sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("x-seen: yes"), "{r}");
    }

    #[tokio::test]
    async fn a_declared_oversize_body_is_refused_before_it_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let sock = start(dir.path(), ServerConfig::default());
        let head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n";
        let r = raw(&sock, head.as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 413"), "{r}");
        assert!(
            r.contains("of 104857600 bytes is larger than 4194304 bytes"),
            "{r}"
        );
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_408() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            body_timeout: Duration::from_millis(200),
            ..ServerConfig::default()
        };
        let sock = start(dir.path(), config);
        let r = raw(
            &sock,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n1",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    }

    #[tokio::test]
    async fn silent_connections_make_room_for_a_client_that_talks() {
        let dir = tempfile::tempdir().unwrap();
        // A head deadline far beyond the test: only eviction can let the
        // client in.
        let config = ServerConfig {
            max_connections: 4,
            head_timeout: Duration::from_secs(3600),
            ..ServerConfig::default()
        };
        let sock = start(dir.path(), config);
        let mut silent = Vec::new();
        for _ in 0..10 {
            let mut s = UnixStream::connect(&sock).await.unwrap();
            s.write_all(b"GET / HT").await.unwrap();
            silent.push(s);
        }
        let r = request(&sock, "GET", "/", &[], b"").await.unwrap();
        assert_eq!(r.status, 200);
        // The oldest were closed to make that room.
        let mut buf = Vec::new();
        assert_eq!(silent[0].read_to_end(&mut buf).await.unwrap(), 0);
    }
}
