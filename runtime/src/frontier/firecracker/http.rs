//! A small HTTP/1.1 client for the Firecracker API over its unix socket:
//! one connection per request, `Connection: close`, bounded in time and
//! size.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

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

/// Serialize `req` as HTTP/1.1 bytes.
pub(crate) fn encode(req: &ApiRequest) -> Vec<u8> {
    let body = req.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
    let mut out = format!(
        "{} {} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n",
        req.method.as_str(),
        req.path
    );
    if req.body.is_some() {
        out.push_str("Content-Type: application/json\r\n");
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// Send `req` over the socket at `socket`, waiting at most `timeout` in all.
pub(crate) fn send(socket: &Path, req: &ApiRequest, timeout: Duration) -> io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(socket)?;
    let left = |d: Instant| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream.set_write_timeout(Some(left(deadline)))?;
    stream.write_all(&encode(req))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // Read until the head is complete, then the body by Content-Length.
    let (head_len, status, content_length) = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            let (status, cl) = parse_head(&buf[..pos])?;
            break (pos + 4, status, cl);
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("response head too large"));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response head timed out",
            ));
        }
        stream.set_read_timeout(Some(left(deadline)))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let want = match content_length {
        Some(n) if n > MAX_BODY => {
            return Err(invalid(format!("response body of {n} bytes too large")));
        }
        Some(n) => n,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        // No length: read to EOF (we asked for `Connection: close`), bounded.
        None => MAX_BODY + 1,
    };
    while buf.len() - head_len < want {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "response body timed out",
            ));
        }
        stream.set_read_timeout(Some(left(deadline)))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            if content_length.is_none() {
                break;
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "response body truncated",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() - head_len > MAX_BODY {
            return Err(invalid("response body too large"));
        }
    }
    let end = (head_len + want).min(buf.len());
    Ok(Response {
        status,
        body: buf[head_len..end].to_vec(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parse the status line and `Content-Length` from a response head.
pub(crate) fn parse_head(head: &[u8]) -> io::Result<(u16, Option<usize>)> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut content_length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                let n = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid("bad Content-Length"))?;
                content_length = Some(n);
            } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
                return Err(invalid("chunked responses are not supported"));
            }
        }
    }
    Ok((status, content_length))
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
    use super::*;
    use crate::frontier::firecracker::api;

    #[test]
    fn encodes_put_with_length() {
        let bytes = encode(&api::action(api::Action::InstanceStart));
        let text = String::from_utf8(bytes).unwrap_or_default();
        assert!(text.starts_with("PUT /actions HTTP/1.1\r\n"));
        assert!(text.contains("Content-Length: 31\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"action_type\":\"InstanceStart\"}"));
    }

    #[test]
    fn parses_heads_and_rejects_garbage() {
        assert_eq!(
            parse_head(b"HTTP/1.1 204 No Content").ok(),
            Some((204, None))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12").ok(),
            Some((400, Some(12)))
        );
        assert!(parse_head(b"SSH-2.0 hello").is_err());
        assert!(parse_head(b"HTTP/1.1 abc").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1").is_err());
    }

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
