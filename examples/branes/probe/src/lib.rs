//! `probe`: a test brane that tries what its event asks and reports the
//! outcome. Event type picks the action, the payload is its argument:
//!
//! | type | does | on success emits |
//! |---|---|---|
//! | `read-file` | reads the file at the payload path | `probe.ok` with the bytes |
//! | `write-file` | writes `probe` to the payload path | `probe.ok` |
//! | `connect` | opens a TCP connection to the payload `host:port` | `probe.ok` |
//! | `env` | reads the environment variable named by the payload | `probe.ok` with the value |
//! | `http-get` | fetches the payload URL over `wasi:http` | `probe.ok` with the body |
//!
//! A failure returns an error with code `denied` and the reason.

wit_bindgen::generate!({ path: "../../../wit", world: "omega:brane/brane" });

use exports::omega::brane::handler::{Error, Event, Guest};
use omega::brane::host::emit;

struct Probe;

fn denied(message: impl Into<String>) -> Error {
    Error {
        code: "denied".into(),
        message: message.into(),
    }
}

fn http_get(url: &str) -> Result<Vec<u8>, String> {
    use wasip2::http::outgoing_handler::handle;
    use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http)).map_err(|_| "scheme")?;
    req.set_authority(Some(authority))
        .map_err(|_| "authority")?;
    req.set_path_with_query(Some(path)).map_err(|_| "path")?;
    let future = handle(req, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let resp = future
        .get()
        .ok_or("no response")?
        .map_err(|_| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let body = resp.consume().map_err(|_| "body")?;
    let stream = body.stream().map_err(|_| "stream")?;
    let mut out = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

impl Guest for Probe {
    fn on_event(event: Event) -> Result<(), Error> {
        let arg = String::from_utf8_lossy(&event.payload).into_owned();
        let result: Result<Vec<u8>, String> = match event.type_.as_str() {
            "read-file" => std::fs::read(&arg).map_err(|e| e.to_string()),
            "write-file" => std::fs::write(&arg, b"probe")
                .map(|()| Vec::new())
                .map_err(|e| e.to_string()),
            "connect" => std::net::TcpStream::connect(&arg)
                .map(|_| Vec::new())
                .map_err(|e| e.to_string()),
            "env" => std::env::var(&arg)
                .map(String::into_bytes)
                .map_err(|e| e.to_string()),
            "http-get" => http_get(&arg),
            other => Err(format!("unknown probe {other}")),
        };
        let bytes = result.map_err(denied)?;
        emit("probe.ok", &event.key, &bytes).map_err(|e| denied(format!("{e:?}")))
    }
}

export!(Probe);
