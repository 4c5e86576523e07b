//! The HTTP/1.1 client of the Firecracker API over its unix socket, on
//! hyper: one connection per request, bounded in time ([`send`]'s timeout
//! covers connecting, the head and the whole body) and size ([`MAX_HEAD`],
//! [`MAX_BODY`]). The machine code is synchronous, so each exchange runs on
//! a current-thread runtime of its own thread (never inside the caller's).

use std::io;
use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use tokio::net::UnixStream;
use wasmtime_wasi_http::io::TokioIo;

use super::api::ApiRequest;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest response body accepted.
pub(crate) const MAX_BODY: usize = 256 * 1024;

/// A parsed response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Send `req` over the socket at `socket`, waiting at most `timeout` in all.
pub(crate) fn send(socket: &Path, req: &ApiRequest, timeout: Duration) -> io::Result<Response> {
    let body = req.body.as_ref().map(|b| b.to_string());
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()?;
                rt.block_on(async {
                    tokio::time::timeout(timeout, exchange(socket, req, body))
                        .await
                        .map_err(|_| {
                            io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!("no complete answer within {timeout:?}"),
                            )
                        })?
                })
            })
            .join()
            .map_err(|_| io::Error::other("the API client thread panicked"))?
    })
}

async fn exchange(socket: &Path, req: &ApiRequest, body: Option<String>) -> io::Result<Response> {
    let stream = UnixStream::connect(socket).await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD.max(8192))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| invalid(format!("HTTP: {e}")))?;
    let conn = tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(req.method.as_str())
        .uri(req.path.as_str())
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::ACCEPT, "application/json");
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| invalid(format!("request: {e}")))?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| invalid(format!("HTTP: {e}")))?;
    let status = resp.status().as_u16();
    let declared = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > MAX_BODY as u64) {
        conn.abort();
        return Err(invalid(format!("response body of {n} bytes too large")));
    }
    let body = match Limited::new(resp.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            conn.abort();
            return Err(invalid("response body too large"));
        }
        Err(e) => {
            conn.abort();
            return Err(invalid(format!("response body: {e}")));
        }
    };
    conn.abort();
    Ok(Response { status, body })
}

/// The `fault_message` of an error body, or the body itself (trimmed and
/// bounded) when it is not the API's error object.
pub(crate) fn fault_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(m) = v.get("fault_message").and_then(|m| m.as_str())
    {
        return m.to_string();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "(empty response body)".into()
    } else {
        text.chars().take(1024).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::frontier::firecracker::api;

    #[test]
    fn fault_message_extracted() {
        assert_eq!(
            fault_message(br#"{"fault_message":"bad vcpus"}"#),
            "bad vcpus"
        );
        assert_eq!(fault_message(b"  plain "), "plain");
        assert_eq!(fault_message(b""), "(empty response body)");
    }

    #[test]
    fn talks_to_a_fake_server_with_limits() {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            for reply in [
                &b"HTTP/1.1 400 Bad Request\r\nContent-Length: 24\r\n\r\n{\"fault_message\":\"nope\"}"[..],
                &b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n"[..],
                &b"SSH-2.0 not http\r\n\r\n"[..],
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40001\r\n"[..],
                &b""[..],
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req);
                if reply.is_empty() {
                    // Never answer: the client must time out.
                    std::thread::sleep(Duration::from_millis(400));
                } else {
                    let _ = s.write_all(reply);
                }
            }
        });
        let r = send(&sock, &api::describe_instance(), Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(fault_message(&r.body), "nope");
        let e = send(&sock, &api::describe_instance(), Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("too large"), "{e}");
        let e = send(&sock, &api::describe_instance(), Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "not HTTP: {e}");
        let e = send(&sock, &api::describe_instance(), Duration::from_secs(5)).unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::InvalidData,
            "a chunk beyond the limit: {e}"
        );
        let e = send(&sock, &api::describe_instance(), Duration::from_millis(100)).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{e}"
        );
        server.join().unwrap();
    }
}
