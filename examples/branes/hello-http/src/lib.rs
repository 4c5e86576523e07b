//! `hello-http`: a `wasi:http/proxy` brane that answers every request with
//! `hello from omega` and the request path, and shows name-addressed calls:
//! `/via/NAME/REST` calls brane NAME as `http://NAME.brane/REST` and answers
//! `via NAME: ` and what NAME answered (`502` and the error when the call
//! fails, e.g. `HttpRequestDenied` when the manifest grants no such call).

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

/// `GET http://NAME.brane/PATH`: the response body, or the error.
fn call(name: &str, path: &str) -> Result<Vec<u8>, String> {
    use wasip2::http::outgoing_handler::handle;
    use wasip2::http::types::{OutgoingRequest, Scheme};
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http)).map_err(|_| "scheme")?;
    req.set_authority(Some(&format!("{name}.brane")))
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

fn respond(out: ResponseOutparam, status: u16, text: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
    let resp = OutgoingResponse::new(headers);
    let _ = resp.set_status_code(status);
    let Ok(body) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(stream) = body.write() {
        let _ = stream.blocking_write_and_flush(text);
    }
    let _ = OutgoingBody::finish(body, None);
}

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if let Some(rest) = path.strip_prefix("/via/") {
            let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
            match call(name, &format!("/{tail}")) {
                Ok(body) => {
                    let mut text = format!("via {name}: ").into_bytes();
                    text.extend_from_slice(&body);
                    respond(out, 200, &text);
                }
                Err(e) => respond(out, 502, format!("call to {name} failed: {e}\n").as_bytes()),
            }
            return;
        }
        respond(out, 200, format!("hello from omega {path}\n").as_bytes());
    }
}

wasip2::http::proxy::export!(Hello);
