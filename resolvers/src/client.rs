//! The small HTTP/1.1 client the drivers use to talk to their services'
//! local APIs (tailscaled's unix socket, cloudflared's metrics server, the
//! ngrok agent API): one request per connection, bounded body, bounded time.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Longest response body read.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Default time one exchange may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Where a local API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP address (`127.0.0.1:4040`).
    Tcp(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "{}", p.display()),
            Self::Tcp(a) => write!(f, "http://{a}"),
        }
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting failed (socket missing, connection refused).
    #[error("cannot connect to {target}: {error}")]
    Connect {
        /// Where.
        target: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The exchange broke HTTP.
    #[error("HTTP exchange with {target}: {detail}")]
    Protocol {
        /// Where.
        target: String,
        /// What hyper said.
        detail: String,
    },
    /// The body exceeded [`MAX_BODY`].
    #[error("the answer of {target} exceeds {MAX_BODY} bytes")]
    TooLarge {
        /// Where.
        target: String,
    },
    /// No answer in time.
    #[error("{target} did not answer within {secs} s")]
    Timeout {
        /// Where.
        target: String,
        /// How long.
        secs: u64,
    },
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values (those that are text).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy), trimmed, for error messages.
    pub fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.body).trim().to_owned();
        s.truncate(s.floor_char_boundary(300));
        s
    }
}

/// Sends one request (`host` is the `Host` header) and reads the response
/// within `timeout`.
pub async fn request(
    target: &Target,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, ClientError> {
    let name = target.to_string();
    let work = async {
        match target {
            Target::Unix(socket) => {
                let s = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|error| ClientError::Connect {
                        target: name.clone(),
                        error,
                    })?;
                exchange(s, &name, host, method, path, headers, body).await
            }
            Target::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|error| ClientError::Connect {
                        target: name.clone(),
                        error,
                    })?;
                exchange(s, &name, host, method, path, headers, body).await
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ClientError::Timeout {
            target: name.clone(),
            secs: timeout.as_secs().max(1),
        })?
}

async fn exchange<S>(
    stream: S,
    name: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let protocol = |e: &dyn std::fmt::Display| ClientError::Protocol {
        target: name.to_owned(),
        detail: e.to_string(),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| protocol(&e))?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| protocol(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| protocol(&e))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let mut incoming = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| protocol(&e))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY {
                return Err(ClientError::TooLarge {
                    target: name.to_owned(),
                });
            }
            out.extend_from_slice(&data);
        }
    }
    conn.abort();
    Ok(Response {
        status,
        headers,
        body: out,
    })
}
