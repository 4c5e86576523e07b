//! HTTP/1.1 over unix sockets, on hyper: the client that the Tailscale
//! provider (tailscaled's LocalAPI) and the CLI (the node's local API) use,
//! and the server of the node's local API. Bodies are bounded both ways
//! ([`MAX_BODY`]), headers by hyper's buffer ([`MAX_HEAD`]), and every
//! exchange by [`TIMEOUT`].

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{UnixListener, UnixStream};

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
    /// The body is larger than [`MAX_BODY`].
    #[error("body larger than {MAX_BODY} bytes")]
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

async fn read_body(body: Incoming) -> Result<Vec<u8>, HttpError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes().to_vec()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(HttpError::TooLarge)
        }
        Err(e) => Err(HttpError::Protocol(e.to_string())),
    }
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
    /// The body (at most [`MAX_BODY`]).
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

/// Serves `handler` on `listener` until the listener fails: at most
/// `max_connections` at once (further ones wait in the kernel's backlog),
/// each exchange within [`TIMEOUT`]. The handler answers a status and a
/// JSON body; a body over [`MAX_BODY`] is answered 413 without calling it.
pub async fn serve<F, Fut>(listener: UnixListener, max_connections: usize, handler: F)
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (u16, Vec<u8>)> + Send + 'static,
{
    let handler = Arc::new(handler);
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(answer(&*handler, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(TIMEOUT)
                .max_buf_size(MAX_HEAD.max(8192))
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(TIMEOUT * 12, conn).await;
        });
    }
}

async fn answer<F, Fut>(handler: &F, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = (u16, Vec<u8>)>,
{
    let (parts, body) = req.into_parts();
    let (status, body) = match read_body(body).await {
        Ok(body) => {
            let request = Request {
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
            };
            handler(request).await
        }
        Err(HttpError::TooLarge) => (413, br#"{"error":"request body too large"}"#.to_vec()),
        Err(e) => (
            400,
            format!(r#"{{"error":{:?}}}"#, e.to_string()).into_bytes(),
        ),
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_request_round_trips_and_bounds_hold() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        tokio::spawn(serve(listener, 4, |r: Request| async move {
            let seen = format!(
                r#"{{"method":"{}","path":"{}","len":{},"x":"{}"}}"#,
                r.method,
                r.path,
                r.body.len(),
                r.header("x-test").unwrap_or("")
            );
            (200, seen.into_bytes())
        }));
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
        assert!(matches!(
            request(&dir.path().join("nope"), "GET", "/", &[], b"").await,
            Err(HttpError::Io(_))
        ));
    }
}
