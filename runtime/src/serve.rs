//! Serving incoming HTTP to `wasi:http/proxy` branes: an [`HttpBrane`] per
//! manifest brane with `http = true`, and [`serve_http`], an HTTP/1.1
//! server (hyper) that runs each request in a fresh instance.
//!
//! Every request gets its own store built exactly like an event's (the
//! brane's grants, memory/table limiter, CPU and wall-clock limits), holds
//! one pool slot while it runs (`503` when the pool is full), may carry at
//! most `max_payload` bytes of body (`413`), and answers `504` when it runs
//! out of time or CPU and `500` when the guest traps or sends no response.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes};
use wasmtime::Engine;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::sync::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::config::BraneSpec;
use crate::error::{EventError, RuntimeError, TrapKind};
use crate::event::{LogLevel, LogSink};
use crate::host::{BraneShared, HostState};
use crate::runtime::{Image, Runtime, Slots, classify, new_store, shared};

/// Extra wall-clock time given to a request past the brane's timeout before
/// the server gives up on it (the epoch check normally stops the guest
/// first).
const TIMEOUT_GRACE: Duration = Duration::from_millis(250);

/// The body of responses from [`HttpBrane::handle`].
pub type HttpBody = HyperOutgoingBody;

/// A brane serving `wasi:http/incoming-handler`, prepared with its
/// manifest's limits, grants and config.
pub struct HttpBrane {
    pre: ProxyPre<HostState>,
    shared: Arc<BraneShared>,
    slots: Arc<Slots>,
    engine: Engine,
}

impl std::fmt::Debug for HttpBrane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBrane")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl Runtime {
    /// Prepare an HTTP brane: check it fits the `wasi:http/proxy` world and
    /// its limits, resolve its grants, and pre-instantiate it.
    pub fn http_brane(
        &self,
        image: &Image,
        spec: BraneSpec,
        log: LogSink,
    ) -> Result<HttpBrane, RuntimeError> {
        self.check_limits(&spec)?;
        let world = |reason: String| RuntimeError::World {
            world: "wasi:http/proxy",
            reason,
        };
        let pre = self
            .linker()
            .instantiate_pre(image.component())
            .map_err(|e| world(format!("{e:#}")))?;
        let pre = ProxyPre::new(pre).map_err(|e| world(format!("{e:#}")))?;
        Ok(HttpBrane {
            pre,
            shared: shared(spec, log)?,
            slots: self.slots().clone(),
            engine: self.engine().clone(),
        })
    }
}

impl HttpBrane {
    /// The brane's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Handle one request in a fresh instance. Never fails: limits and
    /// guest failures become `413`, `503`, `504` or `500` responses with a
    /// short text body. Must be called inside a Tokio runtime.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<HttpBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let limit = self.shared.limits.max_payload;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the limit of {limit} bytes"),
            );
        }
        let slot = match self.slots.acquire(false) {
            Ok(slot) => slot,
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
        let mut store = match new_store(&self.engine, &self.shared) {
            Ok(store) => store,
            Err(e) => return self.failed(StatusCode::INTERNAL_SERVER_ERROR, &e),
        };
        // A body without a declared length is cut at the limit: the guest
        // sees a body-size error on read.
        let req = req.map(|b| {
            Limited::new(b, limit).map_err(move |e| {
                if e.is::<LengthLimitError>() {
                    wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit as u64))
                } else {
                    wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))
                }
            })
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let resources = (|| -> wasmtime::Result<_> {
            let mut http = store.data_mut().http();
            let req = http.new_incoming_request(Scheme::Http, req)?;
            let out = http.new_response_outparam(tx)?;
            Ok((req, out))
        })();
        let (req, out) = match resources {
            Ok(r) => r,
            Err(e) => {
                return self.failed(
                    StatusCode::BAD_REQUEST,
                    &EventError::Instantiate(format!("{e:#}")),
                );
            }
        };
        let pre = self.pre.clone();
        // The guest runs synchronously on a blocking thread (its CPU time
        // is that thread's), holding its pool slot until it returns, which
        // may be after the response head went out while it streams the body.
        let task = tokio::task::spawn_blocking(move || {
            // The store (and the pooled instance it holds) goes before the
            // slot: a slot freed first let the next request instantiate
            // into a pool that was still full (a 500 instead of a 503).
            let slot = slot;
            let mut store = store;
            store.data_mut().begin_call();
            let result = pre
                .instantiate(&mut store)
                .map_err(|e| to_event_error(&e, true))
                .and_then(|proxy| {
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, req, out)
                        .map_err(|e| to_event_error(&e, false))
                });
            drop(store);
            drop(slot);
            result
        });
        let wait = self.shared.limits.timeout + TIMEOUT_GRACE;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(resp))) => resp,
            Ok(Ok(Err(code))) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("brane error: {code:?}"),
            ),
            // The outparam was dropped unset: the guest returned or failed.
            Ok(Err(_)) => match task.await {
                Ok(Ok(())) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "brane sent no response".into(),
                ),
                Ok(Err(e)) => {
                    let status = match &e {
                        EventError::Trap {
                            kind: TrapKind::Timeout | TrapKind::Cpu,
                            ..
                        } => StatusCode::GATEWAY_TIMEOUT,
                        _ => StatusCode::INTERNAL_SERVER_ERROR,
                    };
                    self.failed(status, &e)
                }
                Err(e) => self.failed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &EventError::Instantiate(format!("request task: {e}")),
                ),
            },
            Err(_) => text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("brane timed out after {:?}", self.shared.limits.timeout),
            ),
        }
    }

    /// Log a failed request and answer it with a short text.
    fn failed(&self, status: StatusCode, e: &EventError) -> Response<HttpBody> {
        (self.shared.log)(
            &self.shared.name,
            LogLevel::Warn,
            &format!("http request failed: {e}"),
        );
        let short = match e {
            EventError::Trap { kind, .. } => format!("brane trapped: {kind}"),
            other => {
                let mut s = other.to_string();
                s.truncate(s.floor_char_boundary(200));
                s
            }
        };
        text(status, short)
    }
}

fn to_event_error(e: &wasmtime::Error, instantiating: bool) -> EventError {
    classify(e).unwrap_or_else(|| {
        if instantiating {
            EventError::Instantiate(format!("{e:#}"))
        } else {
            EventError::Trap {
                kind: TrapKind::Other,
                message: format!("{e:#}"),
            }
        }
    })
}

/// A `text/plain` response.
fn text(status: StatusCode, message: String) -> Response<HttpBody> {
    let body = Full::new(Bytes::from(message + "\n"))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// Serve HTTP/1.1 on `listener` with `brane`, one fresh instance per
/// request, until `shutdown` completes. Connections are served on Tokio
/// tasks, guests on Tokio's blocking threads; must run inside a Tokio
/// runtime with I/O and time enabled. Connections still open at shutdown
/// are left to finish on the runtime.
pub async fn serve_http(
    brane: Arc<HttpBrane>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Per-connection failures (e.g. the peer reset before
                // accept) do not stop the server.
                Err(e) if is_transient(&e) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        // Without it a response's last segment waits on the client's
        // delayed ACK (Nagle): ~45 requests/s on one keep-alive connection.
        let _ = stream.set_nodelay(true);
        let brane = brane.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let brane = brane.clone();
                async move { Ok::<_, Infallible>(brane.handle(req).await) }
            });
            // A connection error (client gone, malformed request) ends
            // only that connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error() == Some(libc::EMFILE)
        || e.raw_os_error() == Some(libc::ENFILE)
}
