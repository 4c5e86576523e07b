//! A faithful fake of tailscaled's LocalAPI — the part the
//! `tailscale-funnel` driver uses — on a unix socket.
//!
//! Tailscale cannot be reached from where Omega is tested, so the driver is
//! tested against this. It follows tailscaled's own code (`ipn/localapi`,
//! `ipn/ipnserver`, `ipn/ipnlocal/serve.go`, `ipn/serve.go`, `tsnet`) for:
//!
//! - **Request checks**, in this order:
//!   1. `Sec-Tailscale: localapi` is required, else `403` with
//!      `missing 'Sec-Tailscale: localapi' header` (what tsnet's loopback
//!      LocalAPI answers; tailscaled itself does not require the header on
//!      its unix socket — pass `--no-sec-tailscale` to behave like that —
//!      but Tailscale's clients send it and so does the driver).
//!   2. An HTTP/1.1 request without `Host` gets `400` (Go's `net/http`).
//!   3. A `Referer` or `Origin` header, or a `Host` other than
//!      `local-tailscaled.sock` (or empty), gets `403` with `invalid
//!      localapi request` (tailscaled's guard against DNS rebinding).
//!   4. Paths outside the two endpoints below get `404 page not found`.
//! - **`GET /localapi/v0/status`** (`?peers=false` drops `Peer`): a status
//!   shaped like tailscaled's (tab-indented, Go field order):
//!   `BackendState`, `Self.DNSName` with its trailing dot, `Self.CapMap`
//!   with `https`, `funnel` and
//!   `https://tailscale.com/cap/funnel-ports?ports=…` as the options say,
//!   and the deprecated `Self.Capabilities` list. Logged out
//!   (`NeedsLogin`/`NoState`), `Self` has no DNS name and no capabilities.
//! - **`GET /localapi/v0/serve-config`**: the config as Go's `json.Marshal`
//!   writes it (struct field order, map keys sorted as strings, empty
//!   fields omitted, `<`, `>`, `&` escaped), or `null` when none is set (or
//!   the node is logged out), with `Etag` = lowercase hex SHA-256 of
//!   exactly those bytes (as `generateServeConfigETag` computes it).
//! - **`POST /localapi/v0/serve-config`**: the body is decoded like Go
//!   decodes it into `ipn.ServeConfig` (the first JSON value; unknown
//!   fields dropped; `null` fields and a `null` body are empty; `TCP` keys
//!   must be port numbers) — `500 {"error":"decoding config: …"}` otherwise.
//!   Then, as `setServeConfigLocked` does: with `--shields-up`, a config
//!   that turns funnel on → `500 {"error":"updating config: Unable to turn
//!   on Funnel while shields-up is enabled"}`; logged out → `500
//!   {"error":"updating config: netMap is nil"}`; an `If-Match` that is not
//!   the current ETag → `412 etag mismatch` (**no** `If-Match` overwrites
//!   unconditionally, like the real one); `validateServeConfigUpdate`'s
//!   rules (TUN services with handlers, new foreground listeners on used
//!   ports, background listeners over foreground ones, changing a port's
//!   serve type) → `500 {"error":"updating config: …"}` with tailscaled's
//!   wording. Success is an empty `200`. `--read-only` (a client that is
//!   neither root nor the operator) turns every POST into `403 serve
//!   config denied`. Other methods → `405 method not allowed`.
//!
//! Like tailscaled, it does **not** refuse `AllowFunnel` on a node without
//! the `funnel` attribute: that check is the client's (`tailscale funnel`
//! runs `ipn.CheckFunnelAccess` on the status before it writes; the driver
//! does the same). Not modelled: foreground sessions' lifetimes (entries in
//! `Foreground` stay until rewritten), the path/unix-socket admin check,
//! config-file-locked daemons, case-insensitive JSON field names (only
//! tailscaled's exact spelling is understood), and the certificates and
//! traffic themselves. Unlike tailscaled it bounds request bodies
//! ([`MAX_REQUEST_BODY`], `413`), connections ([`MAX_CONNECTIONS`]) and the
//! time to read a request.
//!
//! # Running it
//!
//! `omega-fake tailscaled --socket PATH [FLAG…]` prints one line,
//! `omega-fake tailscaled: LocalAPI listening on PATH`, once it accepts
//! connections, and runs until SIGTERM or SIGINT. Flags:
//!
//! | flag | effect |
//! |---|---|
//! | `--socket PATH` | where to listen (required) |
//! | `--dns-name NAME.` | `Self.DNSName` (default `omega-a.tail1234.ts.net.`) |
//! | `--backend-state S` | `BackendState` (default `Running`) |
//! | `--logged-out` | `--backend-state NeedsLogin` |
//! | `--no-https` | no `https` capability (HTTPS certificates off for the tailnet) |
//! | `--no-funnel` | no `funnel` node attribute (and no `funnel-ports`) |
//! | `--funnel-ports LIST` | the `funnel-ports` capability's `ports` (default `443,8443,10000`) |
//! | `--read-only` | writes are `403 serve config denied` |
//! | `--shields-up` | funnel cannot be turned on |
//! | `--no-sec-tailscale` | do not require `Sec-Tailscale: localapi` |
//! | `--state-file F` | load the serve config from F at start, write it there after every change |
//!
//! In-process, [`serve`] starts the same server and returns a [`Handle`]
//! with which a test reads the current config, writes one as another
//! client would, makes the next POSTs race a concurrent writer (to get a
//! `412`), changes the backend state, and counts requests.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

/// The `Host` tailscaled's clients send (`apitype.LocalAPIHost`).
pub const LOCALAPI_HOST: &str = "local-tailscaled.sock";
/// Largest request body accepted (tailscaled itself has no limit).
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Time allowed for a request head, and separately for its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The `Tailscale-Version` the fake answers with.
pub const VERSION: &str = "1.80.3-omega-fake";

const USAGE: &str = "usage: omega-fake tailscaled --socket PATH [--dns-name NAME.] \
[--backend-state STATE | --logged-out] [--no-https] [--no-funnel] [--funnel-ports LIST] \
[--read-only] [--shields-up] [--no-sec-tailscale] [--state-file FILE]";

/// How the fake node is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `Self.DNSName`, with its trailing dot (`omega-a.tail1234.ts.net.`).
    pub dns_name: String,
    /// `BackendState`: `NoState`, `NeedsLogin`, `NeedsMachineAuth`,
    /// `Stopped`, `Starting` or `Running`.
    pub backend_state: String,
    /// The node has the `https` capability (HTTPS certificates enabled).
    pub https: bool,
    /// The node has the `funnel` node attribute.
    pub funnel: bool,
    /// The `ports` of the node's `funnel-ports` capability, if it has one.
    pub funnel_ports: Option<String>,
    /// The client is neither root nor the operator: writes are refused.
    pub read_only: bool,
    /// Shields up: funnel cannot be turned on.
    pub shields_up: bool,
    /// Require `Sec-Tailscale: localapi` (tsnet does; tailscaled's unix
    /// socket does not).
    pub require_sec_tailscale: bool,
    /// Where the serve config persists (plain JSON), if anywhere.
    pub state_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dns_name: "omega-a.tail1234.ts.net.".into(),
            backend_state: "Running".into(),
            https: true,
            funnel: true,
            funnel_ports: Some("443,8443,10000".into()),
            read_only: false,
            shields_up: false,
            require_sec_tailscale: true,
            state_file: None,
        }
    }
}

/// Counts of what the fake saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// `POST /localapi/v0/serve-config` requests that got past decoding.
    pub posts: u64,
    /// Of those, the ones answered `412` (stale `If-Match`).
    pub precondition_failed: u64,
    /// Concurrent writes made because of [`Handle::interfere`].
    pub concurrent_writes: u64,
}

/// A running fake; dropping it stops the server and removes the socket.
#[derive(Debug)]
pub struct Handle {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
    socket: PathBuf,
}

impl Handle {
    /// The socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The serve config as `GET /localapi/v0/serve-config` shows it now
    /// (`null` when none).
    pub fn serve_config(&self) -> Value {
        let body = self.shared.lock().current_json();
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    }

    /// The current `Etag`.
    pub fn etag(&self) -> String {
        sha256_hex(&self.shared.lock().current_json())
    }

    /// Replaces the serve config as another LocalAPI client would (a POST
    /// without `If-Match`); `null` clears it. Errors name what tailscaled
    /// would refuse.
    pub fn set_serve_config(&self, config: &Value) -> Result<(), String> {
        let parsed = if config.is_null() {
            None
        } else {
            Some(decode_serve_config(config.to_string().as_bytes())?)
        };
        let mut st = self.shared.lock();
        if let Some(incoming) = &parsed {
            validate_update(st.effective(), incoming)?;
        }
        st.config = parsed;
        st.persist(&self.shared.options)
    }

    /// Makes each of the next `posts` serve-config POSTs race a concurrent
    /// writer: just before the fake checks the POST's `If-Match`, another
    /// client adds a handler (`Web["HOST:8443"]`, text `concurrent write
    /// N`), so that POST's ETag is stale and gets `412`.
    pub fn interfere(&self, posts: u32) {
        self.shared.lock().interfere = posts;
    }

    /// Changes `BackendState` (e.g. to `NeedsLogin` to log the node out).
    pub fn set_backend_state(&self, state: &str) {
        state.clone_into(&mut self.shared.lock().backend_state);
    }

    /// What the fake has seen so far.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Starts the fake LocalAPI on `socket` (a stale socket file nobody
/// listens on is replaced) and serves it on the current runtime until the
/// [`Handle`] is dropped.
pub async fn serve(socket: &Path, options: Options) -> std::io::Result<Handle> {
    let config = match &options.state_file {
        Some(file) => load_state(file)?,
        None => None,
    };
    let listener = bind(socket)?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            backend_state: options.backend_state.clone(),
            config,
            interfere: 0,
            stats: Stats::default(),
        }),
        options,
    });
    let task = tokio::spawn(accept_loop(listener, shared.clone())).abort_handle();
    Ok(Handle {
        shared,
        task,
        socket: socket.to_owned(),
    })
}

/// Runs `omega-fake tailscaled ARGS…` (see the module docs); returns the
/// exit code: 0 after SIGTERM/SIGINT, 1 if it cannot listen, 2 on usage
/// errors.
pub fn main(args: Vec<String>) -> i32 {
    let (socket, options) = match parse_args(args) {
        Ok(parsed) => parsed,
        Err(msg) => {
            eprintln!("omega-fake tailscaled: {msg}\n{USAGE}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("omega-fake tailscaled: cannot start a runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async {
        let handle = match serve(&socket, options).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!(
                    "omega-fake tailscaled: cannot listen on {}: {e}",
                    socket.display()
                );
                return 1;
            }
        };
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "omega-fake tailscaled: LocalAPI listening on {}",
            socket.display()
        );
        let _ = out.flush();
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("omega-fake tailscaled: cannot watch SIGTERM: {e}");
                    return 1;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        drop(handle);
        0
    })
}

fn parse_args(args: Vec<String>) -> Result<(PathBuf, Options), String> {
    let mut socket = None;
    let mut o = Options::default();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
            "--dns-name" => {
                let mut name = value("--dns-name")?;
                if !name.ends_with('.') {
                    name.push('.');
                }
                o.dns_name = name;
            }
            "--backend-state" => o.backend_state = value("--backend-state")?,
            "--logged-out" => o.backend_state = "NeedsLogin".into(),
            "--no-https" => o.https = false,
            "--no-funnel" => {
                o.funnel = false;
                o.funnel_ports = None;
            }
            "--funnel-ports" => o.funnel_ports = Some(value("--funnel-ports")?),
            "--read-only" => o.read_only = true,
            "--shields-up" => o.shields_up = true,
            "--no-sec-tailscale" => o.require_sec_tailscale = false,
            "--state-file" => o.state_file = Some(PathBuf::from(value("--state-file")?)),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let socket = socket.ok_or("--socket PATH is required")?;
    Ok((socket, o))
}

// ---------------------------------------------------------------------------
// State.

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    options: Options,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct State {
    backend_state: String,
    /// The stored config; `None` is "never set" (`null`).
    config: Option<ServeConfig>,
    interfere: u32,
    stats: Stats,
}

/// Whether the node has a network map (and a profile, hence a serve
/// config): not while logged out.
fn has_netmap(backend_state: &str) -> bool {
    !matches!(backend_state, "NeedsLogin" | "NoState")
}

impl State {
    /// The config tailscaled would show: none while logged out.
    fn effective(&self) -> Option<&ServeConfig> {
        if has_netmap(&self.backend_state) {
            self.config.as_ref()
        } else {
            None
        }
    }

    /// The bytes `GET serve-config` answers (and the ETag is a hash of).
    fn current_json(&self) -> Vec<u8> {
        match self.effective() {
            Some(c) => go_json(c),
            None => b"null".to_vec(),
        }
    }

    fn concurrent_write(&mut self, host: &str) {
        self.stats.concurrent_writes += 1;
        let n = self.stats.concurrent_writes;
        let config = self.config.get_or_insert_with(ServeConfig::default);
        config.tcp.insert(
            "8443".into(),
            Some(TcpPortHandler {
                https: true,
                ..TcpPortHandler::default()
            }),
        );
        let handler = HttpHandler {
            text: format!("concurrent write {n}"),
            ..HttpHandler::default()
        };
        config.web.insert(
            format!("{host}:8443"),
            Some(WebServerConfig {
                handlers: Some(BTreeMap::from([("/".to_owned(), Some(handler))])),
            }),
        );
    }

    fn persist(&self, options: &Options) -> Result<(), String> {
        let Some(file) = &options.state_file else {
            return Ok(());
        };
        let bytes = match &self.config {
            Some(c) => go_json(c),
            None => b"null".to_vec(),
        };
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, file))
            .map_err(|e| format!("writing ServeConfig to StateStore: {}: {e}", file.display()))
    }
}

fn load_state(file: &Path) -> std::io::Result<Option<ServeConfig>> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.trim_ascii() == b"null" {
        return Ok(None);
    }
    decode_serve_config(&bytes).map(Some).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", file.display()),
        )
    })
}

// ---------------------------------------------------------------------------
// ipn.ServeConfig, as Go encodes and decodes it.

/// `ipn.ServeConfig`. Field order is Go's (it decides the JSON bytes and
/// so the ETag); maps are sorted by key as Go sorts them (as strings).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ServeConfig {
    #[serde(
        rename = "TCP",
        default,
        deserialize_with = "port_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    tcp: BTreeMap<String, Option<TcpPortHandler>>,
    #[serde(
        rename = "Web",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    web: BTreeMap<String, Option<WebServerConfig>>,
    #[serde(
        rename = "Services",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    services: BTreeMap<String, Option<ServiceConfig>>,
    #[serde(
        rename = "AllowFunnel",
        default,
        deserialize_with = "bool_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    allow_funnel: BTreeMap<String, bool>,
    #[serde(
        rename = "Foreground",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    foreground: BTreeMap<String, Option<ServeConfig>>,
}

/// `ipn.ServiceConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ServiceConfig {
    #[serde(
        rename = "TCP",
        default,
        deserialize_with = "port_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    tcp: BTreeMap<String, Option<TcpPortHandler>>,
    #[serde(
        rename = "Web",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    web: BTreeMap<String, Option<WebServerConfig>>,
    #[serde(
        rename = "Tun",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    tun: bool,
}

/// `ipn.TCPPortHandler`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TcpPortHandler {
    #[serde(
        rename = "HTTPS",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    https: bool,
    #[serde(
        rename = "HTTP",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_false"
    )]
    http: bool,
    #[serde(
        rename = "TCPForward",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    tcp_forward: String,
    #[serde(
        rename = "TerminateTLS",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    terminate_tls: String,
    #[serde(
        rename = "ProxyProtocol",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    proxy_protocol: i64,
}

/// `ipn.WebServerConfig` (`Handlers` has no `omitempty`: a nil map is
/// `null`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct WebServerConfig {
    #[serde(rename = "Handlers", default)]
    handlers: Option<BTreeMap<String, Option<HttpHandler>>>,
}

/// `ipn.HTTPHandler`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct HttpHandler {
    #[serde(
        rename = "Path",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    path: String,
    #[serde(
        rename = "Proxy",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    proxy: String,
    #[serde(
        rename = "Text",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    text: String,
    #[serde(
        rename = "AcceptAppCaps",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    accept_app_caps: Vec<String>,
    #[serde(
        rename = "Redirect",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    redirect: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Go leaves a field alone when its JSON value is `null`.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `map[HostPort]bool`: a `null` value is `false`.
fn bool_map<'de, D>(d: D) -> Result<BTreeMap<String, bool>, D::Error>
where
    D: Deserializer<'de>,
{
    let m: BTreeMap<String, Option<bool>> = nullable(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.unwrap_or(false)))
        .collect())
}

/// `map[uint16]…`: keys must be decimal port numbers; Go re-encodes them
/// canonically (`0443` → `443`).
fn port_map<'de, D>(d: D) -> Result<BTreeMap<String, Option<TcpPortHandler>>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw: BTreeMap<String, Option<TcpPortHandler>> = nullable(d)?;
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let port = if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) {
            k.parse::<u64>().ok().and_then(|p| u16::try_from(p).ok())
        } else {
            None
        };
        let Some(port) = port else {
            return Err(serde::de::Error::custom(format!(
                "json: cannot unmarshal number {k} into Go value of type uint16"
            )));
        };
        out.insert(port.to_string(), v);
    }
    Ok(out)
}

/// Decodes like Go's `json.NewDecoder(body).Decode(configIn)`: the first
/// JSON value; `null` is an empty config.
fn decode_serve_config(body: &[u8]) -> Result<ServeConfig, String> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Option<ServeConfig>>();
    match values.next() {
        None => Err("EOF".into()),
        Some(Ok(config)) => Ok(config.unwrap_or_default()),
        Some(Err(e)) => Err(e.to_string()),
    }
}

/// `json.Marshal`: compact, with Go's HTML-safe escapes.
fn go_json<T: Serialize>(value: &T) -> Vec<u8> {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    go_escape(&text).into_bytes()
}

/// Go's encoder escapes `<`, `>`, `&`, U+2028 and U+2029 (only ever inside
/// strings in JSON text, so replacing them in the text is exact).
fn go_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

impl ServeConfig {
    /// `IsFunnelOn`.
    fn is_funnel_on(&self) -> bool {
        self.allow_funnel.values().any(|on| *on)
            || self.foreground.values().flatten().any(Self::is_funnel_on)
    }

    /// `FindForegroundTCP`.
    fn find_foreground_tcp(&self, port: &str) -> Option<Option<&TcpPortHandler>> {
        self.foreground
            .values()
            .flatten()
            .find_map(|fg| fg.tcp.get(port).map(Option::as_ref))
    }

    /// `FindTCP`: foreground first.
    fn find_tcp(&self, port: &str) -> Option<Option<&TcpPortHandler>> {
        self.find_foreground_tcp(port)
            .or_else(|| self.tcp.get(port).map(Option::as_ref))
    }
}

/// `serveTypeFromPortHandler(…).String()`.
fn serve_type(h: Option<&TcpPortHandler>) -> &'static str {
    match h {
        Some(h) if h.http => "http",
        Some(h) if h.https => "https",
        Some(h) if !h.terminate_tls.is_empty() => "tls-terminated-tcp",
        Some(h) if !h.tcp_forward.is_empty() => "tcp",
        _ => "unknownServeType",
    }
}

/// `validateServeConfigUpdate`, with tailscaled's messages.
fn validate_update(existing: Option<&ServeConfig>, incoming: &ServeConfig) -> Result<(), String> {
    for (name, svc) in &incoming.services {
        if let Some(svc) = svc
            && svc.tun
            && (!svc.tcp.is_empty() || !svc.web.is_empty())
        {
            return Err(format!(
                "cannot configure TUN mode in combination with TCP or web handlers for {name}"
            ));
        }
    }
    let Some(existing) = existing else {
        return Ok(());
    };
    for (session, fg) in &incoming.foreground {
        if existing.foreground.contains_key(session) {
            continue;
        }
        for port in fg.iter().flat_map(|fg| fg.tcp.keys()) {
            if existing.find_tcp(port).is_some() {
                return Err(format!("listener already exists for port {port}"));
            }
        }
    }
    for port in incoming.tcp.keys() {
        if existing.find_foreground_tcp(port).is_some() {
            return Err(format!(
                "foreground listener already exists for port {port}"
            ));
        }
    }
    for (port, handler) in &incoming.tcp {
        if let Some(old) = existing.find_tcp(port) {
            let (new, old) = (serve_type(handler.as_ref()), serve_type(old));
            if new != old {
                return Err(format!(
                    "want to serve {new:?}, but port {port} is already serving {old:?}"
                ));
            }
        }
    }
    for (name, svc) in &incoming.services {
        let (Some(svc), Some(Some(old))) = (svc, existing.services.get(name)) else {
            continue;
        };
        for (port, handler) in &svc.tcp {
            if let Some(old) = old.tcp.get(port) {
                let (new, old) = (serve_type(handler.as_ref()), serve_type(old.as_ref()));
                if new != old {
                    return Err(format!(
                        "want to serve {new:?}, but port {port} is already serving {old:?} for {name}"
                    ));
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The server.

fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    let listener = match UnixListener::bind(socket) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another server is listening there",
                ));
            }
            std::fs::remove_file(socket)?;
            UnixListener::bind(socket)?
        }
        Err(e) => return Err(e),
    };
    // tailscaled makes its socket world-connectable; permissions are
    // checked per request.
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666));
    Ok(listener)
}

async fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Err(e) => {
                // Out of descriptors and the like: wait a little, go on.
                tracing::warn!("omega-fake tailscaled: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            r.headers_mut().append(k, v);
        }
    }
    r
}

/// Go's `http.Error`.
fn http_error(status: u16, msg: &str) -> Reply {
    reply(
        status,
        &[
            ("content-type", "text/plain; charset=utf-8"),
            ("x-content-type-options", "nosniff"),
            ("tailscale-version", VERSION),
        ],
        format!("{msg}\n").into_bytes(),
    )
}

/// LocalAPI's `WriteErrorJSON`: always 500.
fn json_error(msg: &str) -> Reply {
    let mut body = go_json(&json!({ "error": msg }));
    body.push(b'\n');
    reply(
        500,
        &[
            ("content-type", "application/json"),
            ("tailscale-version", VERSION),
        ],
        body,
    )
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Reply {
    let headers = req.headers();
    if shared.options.require_sec_tailscale
        && headers.get("sec-tailscale").map(|v| v.as_bytes()) != Some(b"localapi".as_slice())
    {
        // tsnet's localSecHandler: WriteHeader(403) + the text, no newline.
        return reply(
            403,
            &[("content-type", "text/plain; charset=utf-8")],
            b"missing 'Sec-Tailscale: localapi' header".to_vec(),
        );
    }
    let host = match headers.get(hyper::header::HOST) {
        Some(h) => h.to_str().ok(),
        None if req.version() == hyper::Version::HTTP_11 => {
            return reply(
                400,
                &[
                    ("content-type", "text/plain; charset=utf-8"),
                    ("connection", "close"),
                ],
                b"400 Bad Request: missing required Host header".to_vec(),
            );
        }
        None => Some(req.uri().authority().map_or("", |a| a.as_str())),
    };
    if headers.contains_key(hyper::header::REFERER)
        || headers.contains_key(hyper::header::ORIGIN)
        || !matches!(host, Some("" | LOCALAPI_HOST))
    {
        return http_error(403, "invalid localapi request");
    }
    match req.uri().path() {
        "/localapi/v0/status" => status(shared, &req),
        "/localapi/v0/serve-config" => match *req.method() {
            hyper::Method::GET => get_serve_config(shared),
            hyper::Method::POST => post_serve_config(shared, req).await,
            _ => http_error(405, "method not allowed"),
        },
        _ => http_error(404, "404 page not found"),
    }
}

/// `serveStatus` (any method, as in tailscaled).
fn status(shared: &Shared, req: &Request<Incoming>) -> Reply {
    let peers = !req.uri().query().unwrap_or("").split('&').any(|kv| {
        matches!(
            kv,
            "peers=false" | "peers=0" | "peers=f" | "peers=F" | "peers=FALSE" | "peers=False"
        )
    });
    let backend_state = shared.lock().backend_state.clone();
    let status = status_json(&shared.options, &backend_state, peers);
    let mut body = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut body, formatter);
    if status.serialize(&mut ser).is_err() {
        return http_error(500, "encoding status");
    }
    let mut body = go_escape(&String::from_utf8_lossy(&body)).into_bytes();
    body.push(b'\n');
    reply(
        200,
        &[
            ("content-type", "application/json"),
            ("tailscale-version", VERSION),
        ],
        body,
    )
}

/// An `ipnstate.Status` like tailscaled's (abridged: one peer).
fn status_json(o: &Options, backend_state: &str, peers: bool) -> Value {
    let logged_in = has_netmap(backend_state);
    let fqdn = o.dns_name.trim_end_matches('.');
    let (short, suffix) = fqdn.split_once('.').unwrap_or((fqdn, ""));
    let mut caps = BTreeSet::from([
        "https://tailscale.com/cap/file-sharing".to_owned(),
        "https://tailscale.com/cap/ssh".to_owned(),
    ]);
    if o.https {
        caps.insert("https".into());
    }
    if o.funnel {
        caps.insert("funnel".into());
    }
    if let Some(ports) = &o.funnel_ports {
        caps.insert(format!(
            "https://tailscale.com/cap/funnel-ports?ports={ports}"
        ));
    }
    let cap_map: serde_json::Map<String, Value> =
        caps.iter().map(|c| (c.clone(), Value::Null)).collect();
    if !logged_in {
        return json!({
            "Version": VERSION,
            "TUN": true,
            "BackendState": backend_state,
            "AuthURL": "",
            "TailscaleIPs": null,
            "Self": {
                "ID": "", "PublicKey": "nodekey:0000000000000000000000000000000000000000000000000000000000000000",
                "HostName": short, "DNSName": "", "OS": "linux", "UserID": 0,
                "TailscaleIPs": null, "AllowedIPs": null, "Addrs": null, "CurAddr": "", "Relay": "",
                "RxBytes": 0, "TxBytes": 0, "Created": "0001-01-01T00:00:00Z",
                "LastWrite": "0001-01-01T00:00:00Z", "LastSeen": "0001-01-01T00:00:00Z",
                "LastHandshake": "0001-01-01T00:00:00Z", "Online": false, "ExitNode": false,
                "ExitNodeOption": false, "Active": false, "PeerAPIURL": null,
                "InNetworkMap": false, "InMagicSock": false, "InEngine": false
            },
            "Health": ["You are logged out."],
            "MagicDNSSuffix": "",
            "CurrentTailnet": null,
            "CertDomains": null,
            "Peer": null,
            "User": null,
            "ClientVersion": null
        });
    }
    let mut st = json!({
        "Version": VERSION,
        "TUN": true,
        "BackendState": backend_state,
        "HaveNodeKey": true,
        "AuthURL": "",
        "TailscaleIPs": ["100.101.1.1", "fd7a:115c:a1e0::1"],
        "Self": {
            "ID": "nSELF1CNTRL", "PublicKey": "nodekey:aa01aa01aa01aa01aa01aa01aa01aa01aa01aa01aa01aa01aa01aa01aa01aa01",
            "HostName": short, "DNSName": o.dns_name, "OS": "linux", "UserID": 123,
            "TailscaleIPs": ["100.101.1.1", "fd7a:115c:a1e0::1"],
            "AllowedIPs": ["100.101.1.1/32", "fd7a:115c:a1e0::1/128"],
            "Addrs": ["192.168.1.10:41641"], "CurAddr": "", "Relay": "fra",
            "RxBytes": 0, "TxBytes": 0, "Created": "2024-01-01T00:00:00Z",
            "LastWrite": "0001-01-01T00:00:00Z", "LastSeen": "0001-01-01T00:00:00Z",
            "LastHandshake": "0001-01-01T00:00:00Z", "Online": true, "ExitNode": false,
            "ExitNodeOption": false, "Active": false,
            "PeerAPIURL": ["http://100.101.1.1:40123", "http://[fd7a:115c:a1e0::1]:40123"],
            "Capabilities": caps.iter().collect::<Vec<_>>(),
            "CapMap": cap_map,
            "InNetworkMap": true, "InMagicSock": false, "InEngine": false,
            "KeyExpiry": "2030-01-01T00:00:00Z"
        },
        "Health": [],
        "MagicDNSSuffix": suffix,
        "CurrentTailnet": {"Name": "user@example.com", "MagicDNSSuffix": suffix, "MagicDNSEnabled": true},
        "CertDomains": if o.https { json!([fqdn]) } else { Value::Null },
        "Peer": null,
        "User": {"123": {"ID": 123, "LoginName": "user@example.com", "DisplayName": "User", "ProfilePicURL": ""}},
        "ClientVersion": {"RunningLatest": true}
    });
    if peers {
        st["Peer"] = json!({
            "nodekey:bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02": {
                "ID": "nB2CNTRL", "PublicKey": "nodekey:bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02bb02",
                "HostName": "nas-01", "DNSName": format!("nas-01.{suffix}."), "OS": "linux", "UserID": 123,
                "TailscaleIPs": ["100.101.1.2", "fd7a:115c:a1e0::2"],
                "AllowedIPs": ["100.101.1.2/32", "fd7a:115c:a1e0::2/128"],
                "Addrs": ["192.168.1.20:41641"], "CurAddr": "192.168.1.20:41641", "Relay": "fra",
                "RxBytes": 1024, "TxBytes": 2048, "Created": "2024-01-01T00:00:00Z",
                "LastWrite": "2024-06-01T12:00:00Z", "LastSeen": "2024-06-01T12:00:00Z",
                "LastHandshake": "2024-06-01T12:00:00Z", "Online": true, "ExitNode": false,
                "ExitNodeOption": false, "Active": true, "InNetworkMap": true, "InMagicSock": true,
                "InEngine": true
            }
        });
    }
    st
}

fn get_serve_config(shared: &Shared) -> Reply {
    let body = shared.lock().current_json();
    let etag = sha256_hex(&body);
    reply(
        200,
        &[
            ("etag", &etag),
            ("content-type", "application/json"),
            ("tailscale-version", VERSION),
        ],
        body,
    )
}

async fn post_serve_config(shared: &Shared, req: Request<Incoming>) -> Reply {
    if shared.options.read_only {
        return http_error(403, "serve config denied");
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY as u64) {
        return http_error(413, "http: request body too large");
    }
    // Go's Header.Get: the first value, "" when absent.
    let if_match = req
        .headers()
        .get(hyper::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = Limited::new(req.into_body(), MAX_REQUEST_BODY).collect();
    let body = match tokio::time::timeout(READ_TIMEOUT, body).await {
        Err(_) => return http_error(408, "timeout reading the request body"),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return http_error(413, "http: request body too large");
        }
        Ok(Err(e)) => return json_error(&format!("decoding config: {e}")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let incoming = match decode_serve_config(&body) {
        Ok(c) => c,
        Err(e) => return json_error(&format!("decoding config: {e}")),
    };
    let options = &shared.options;
    let host = options.dns_name.trim_end_matches('.');
    let mut st = shared.lock();
    st.stats.posts += 1;
    if st.interfere > 0 {
        st.interfere -= 1;
        st.concurrent_write(host);
        if let Err(e) = st.persist(options) {
            return json_error(&format!("updating config: {e}"));
        }
    }
    if incoming.is_funnel_on() && options.shields_up {
        return json_error("updating config: Unable to turn on Funnel while shields-up is enabled");
    }
    if !has_netmap(&st.backend_state) {
        return json_error("updating config: netMap is nil");
    }
    if !if_match.is_empty() && if_match != sha256_hex(&st.current_json()) {
        st.stats.precondition_failed += 1;
        return http_error(412, "etag mismatch");
    }
    if let Err(e) = validate_update(st.effective(), &incoming) {
        return json_error(&format!("updating config: {e}"));
    }
    st.config = Some(incoming);
    if let Err(e) = st.persist(options) {
        return json_error(&format!("updating config: {e}"));
    }
    reply(200, &[("tailscale-version", VERSION)], Vec::new())
}

// ---------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), for the ETag: small enough to carry here.

fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let bits = (data.len() as u64).wrapping_mul(8);
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (wi, word) in w.iter_mut().zip(block.chunks_exact(4)) {
            *wi = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for (k, wi) in K.iter().zip(w.iter()) {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(*k)
                .wrapping_add(*wi);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *hi = hi.wrapping_add(v);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            sha256_hex(long),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn serve_config_encodes_like_go() {
        let c = decode_serve_config(
            br#"{"Web":{"a.ts.net:443":{"Handlers":{"/":{"Proxy":"http://127.0.0.1:1<2"}}}},
                "TCP":{"8443":{"HTTPS":true},"443":{"HTTPS":true,"HTTP":false},"0080":null},
                "AllowFunnel":{"a.ts.net:443":true,"b:1":null},"Unknown":1,"Services":null}
               trailing garbage is ignored, like Go's Decoder"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(go_json(&c)).unwrap(),
            r#"{"TCP":{"443":{"HTTPS":true},"80":null,"8443":{"HTTPS":true}},"Web":{"a.ts.net:443":{"Handlers":{"/":{"Proxy":"http://127.0.0.1:1\u003c2"}}}},"AllowFunnel":{"a.ts.net:443":true,"b:1":false}}"#
        );
        assert_eq!(
            String::from_utf8(go_json(&decode_serve_config(b"null").unwrap())).unwrap(),
            "{}"
        );
        assert_eq!(
            String::from_utf8(go_json(
                &decode_serve_config(br#"{"Web":{"h:1":{}}}"#).unwrap()
            ))
            .unwrap(),
            r#"{"Web":{"h:1":{"Handlers":null}}}"#
        );
        assert!(decode_serve_config(b"").unwrap_err().contains("EOF"));
        assert!(decode_serve_config(br#"{"TCP":{"x":{}}}"#).is_err());
        assert!(decode_serve_config(br#"{"TCP":{"70000":{}}}"#).is_err());
        assert!(decode_serve_config(br#"{"TCP":{"+443":{}}}"#).is_err());
        assert!(decode_serve_config(b"[1]").is_err());
    }

    #[test]
    fn updates_are_validated_like_tailscaled() {
        let existing = decode_serve_config(
            br#"{"TCP":{"443":{"TCPForward":"127.0.0.1:22"}},
                "Foreground":{"s1":{"TCP":{"8443":{"HTTPS":true}}}}}"#,
        )
        .unwrap();
        let https = decode_serve_config(br#"{"TCP":{"443":{"HTTPS":true}}}"#).unwrap();
        assert_eq!(
            validate_update(Some(&existing), &https).unwrap_err(),
            r#"want to serve "https", but port 443 is already serving "tcp""#
        );
        let over_fg = decode_serve_config(br#"{"TCP":{"8443":{"HTTPS":true}}}"#).unwrap();
        assert_eq!(
            validate_update(Some(&existing), &over_fg).unwrap_err(),
            "foreground listener already exists for port 8443"
        );
        let new_fg =
            decode_serve_config(br#"{"Foreground":{"s2":{"TCP":{"443":{"HTTPS":true}}}}}"#)
                .unwrap();
        assert_eq!(
            validate_update(Some(&existing), &new_fg).unwrap_err(),
            "listener already exists for port 443"
        );
        assert!(validate_update(None, &https).is_ok());
        let tun =
            decode_serve_config(br#"{"Services":{"svc:x":{"Tun":true,"TCP":{"1":{}}}}}"#).unwrap();
        assert!(
            validate_update(None, &tun)
                .unwrap_err()
                .contains("TUN mode")
        );
    }

    #[test]
    fn funnel_on_counts_foreground_sessions() {
        let c =
            decode_serve_config(br#"{"Foreground":{"s":{"AllowFunnel":{"h:443":true}}}}"#).unwrap();
        assert!(c.is_funnel_on());
        let off = decode_serve_config(br#"{"AllowFunnel":{"h:443":false}}"#).unwrap();
        assert!(!off.is_funnel_on());
    }

    #[test]
    fn flags_parse() {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let (socket, o) = parse_args(args(
            "--socket /s --dns-name x.y.ts.net --no-funnel --logged-out",
        ))
        .unwrap();
        assert_eq!(socket, PathBuf::from("/s"));
        assert_eq!(o.dns_name, "x.y.ts.net.");
        assert!(!o.funnel && o.funnel_ports.is_none());
        assert_eq!(o.backend_state, "NeedsLogin");
        assert!(parse_args(args("--dns-name x.")).is_err());
        assert!(parse_args(args("--socket")).is_err());
        assert!(parse_args(args("--socket /s --bogus")).is_err());
    }
}
