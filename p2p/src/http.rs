//! A minimal HTTP/1.1 client and server over unix sockets, for JSON APIs on
//! one host (the Tailscale LocalAPI, Omega's own local API). One request per
//! connection (`Connection: close`), bounded sizes, no chunked uploads.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest request head (request line and headers) a server accepts.
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest body either side accepts.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// How long one exchange may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong talking HTTP over a unix socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The exchange took longer than [`TIMEOUT`].
    #[error("timed out")]
    Timeout,
    /// The peer did not speak HTTP/1.1 as expected.
    #[error("malformed HTTP: {0}")]
    Malformed(&'static str),
    /// More than [`MAX_BODY`] bytes.
    #[error("response larger than {MAX_BODY} bytes")]
    TooLarge,
}

/// A response: status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// Sends `method path` with `headers` and `body` to the server on `socket`.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, HttpError> {
    tokio::time::timeout(TIMEOUT, async {
        let mut s = UnixStream::connect(socket).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut buf = Vec::new();
        (&mut s)
            .take((MAX_HEAD + MAX_BODY + 1) as u64)
            .read_to_end(&mut buf)
            .await?;
        if buf.len() > MAX_HEAD + MAX_BODY {
            return Err(HttpError::TooLarge);
        }
        parse_response(&buf)
    })
    .await
    .map_err(|_| HttpError::Timeout)?
}

fn split_head(buf: &[u8]) -> Option<(&str, &[u8])> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    Some((head, &buf[end + 4..]))
}

fn parse_response(buf: &[u8]) -> Result<Response, HttpError> {
    let (head, rest) = split_head(buf).ok_or(HttpError::Malformed("no end of headers"))?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or(HttpError::Malformed("bad status line"))?;
    let len = content_length(head);
    let body = match len {
        Some(n) if n <= rest.len() => rest[..n].to_vec(),
        Some(_) => return Err(HttpError::Malformed("body shorter than Content-Length")),
        None => rest.to_vec(),
    };
    Ok(Response { status, body })
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// A request as a server sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: String,
    /// The path (with query).
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request from `s` (bounded by [`MAX_HEAD`], [`MAX_BODY`], [`TIMEOUT`]).
pub async fn read_request(s: &mut UnixStream) -> Result<Request, HttpError> {
    tokio::time::timeout(TIMEOUT, async {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let (head, mut body) = loop {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(HttpError::Malformed(
                    "connection closed before end of headers",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some((head, rest)) = split_head(&buf) {
                break (head.to_owned(), rest.to_vec());
            }
            if buf.len() > MAX_HEAD {
                return Err(HttpError::Malformed("request head too large"));
            }
        };
        let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
        let method = parts
            .next()
            .ok_or(HttpError::Malformed("no method"))?
            .to_owned();
        let path = parts
            .next()
            .ok_or(HttpError::Malformed("no path"))?
            .to_owned();
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len = content_length(&head).unwrap_or(0);
        if len > MAX_BODY {
            return Err(HttpError::TooLarge);
        }
        while body.len() < len {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
        Ok(Request {
            method,
            path,
            headers,
            body,
        })
    })
    .await
    .map_err(|_| HttpError::Timeout)?
}

/// Writes a JSON response and closes.
pub async fn write_json(s: &mut UnixStream, status: u16, body: &[u8]) -> Result<(), HttpError> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.shutdown().await?;
    Ok(())
}
