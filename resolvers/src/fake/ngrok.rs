//! A faithful fake of the ngrok agent (v3) — the part the `ngrok` driver
//! uses: `ngrok start --none` and the agent API on its `web_addr`.
//!
//! ngrok cannot be reached from where Omega is tested, so the driver is
//! tested against this. It follows the ngrok agent API documentation
//! (<https://ngrok.com/docs/agent/api/>), the agent configuration and
//! changelog, and answers of real agents as they appear in public bug
//! reports and client libraries (pyngrok, the `ngrok` npm wrapper):
//!
//! - **Request checks.** The API answers only requests whose `Host` (port
//!   stripped) is loopback — `localhost`, `127.0.0.1`, `::1` — as the agent's
//!   DNS-rebinding protection does by default (`web_allow_hosts`, agent
//!   3.1.1); others get `403 Invalid Host header` (the real agent's exact
//!   wording for this refusal was not found: the status and the rule are
//!   what matter). Bodies larger than [`MAX_REQUEST_BODY`] get `413`;
//!   unknown paths get Go's `404 page not found`; other methods `405`.
//! - **`GET /api/tunnels`** → `200 {"tunnels":[…],"uri":"/api/tunnels"}`.
//!   A tunnel is shaped like a v3 agent's, fields in its order: `name`,
//!   `ID` (32 hex digits), `uri` (`/api/tunnels/NAME`), `public_url`
//!   (`https://` + 12 hex digits + `.ngrok-free.app`, or the requested
//!   `domain`), `proto` (`https` for an `http` tunnel: v3's default scheme),
//!   `config` `{addr, inspect}` where `addr` is normalized as v3 lists it
//!   (`8080` → `http://localhost:8080`, `127.0.0.1:8080` →
//!   `http://127.0.0.1:8080`), and zeroed `metrics` `{conns, http}`.
//!   **Fake-only**, after those: `omega_fake` `{forward, host_header,
//!   domain}` (see *Forwarding* below); a real agent has no such field
//!   (new fields are allowed by the API's stability rules, and the driver
//!   ignores it).
//! - **`POST /api/tunnels`** (JSON, the tunnel-definition fields of the
//!   agent configuration) → `201` with the tunnel. Errors, all shaped
//!   `{"error_code":N,"status_code":S,"msg":M,"details":{"err":E}}`:
//!   - `400`, `102`, `invalid tunnel configuration` for a body that is not
//!     a JSON object, an unknown field (agents since 3.0.1 refuse what they
//!     do not understand), a field of the wrong type, a missing `addr` or
//!     `proto`, an unknown protocol (`invalid protocol name "…"`: pyngrok's
//!     test of a real agent checks for "protocol name") and — as agents do
//!     since 3.29.0 — a name already in use: `tunnel "NAME" already exists`
//!     (the exact body reported against the npm wrapper). The `details.err`
//!     wording other than those two is the fake's.
//!   - `502`, `103`, `failed to start tunnel` when the ngrok service
//!     refuses the bind, with the service's message in `details.err` and
//!     its code at the end (`…\r\n\r\nERR_NGROK_NNN\r\n`, as reported for
//!     real agents): without an authtoken (in-process, see below)
//!     `ERR_NGROK_4018`; a `domain` the account has not reserved
//!     ([`Options::domains`]) `ERR_NGROK_319`; a `domain` another tunnel
//!     already serves `ERR_NGROK_334`; more than [`Options::max_tunnels`]
//!     tunnels on the session `ERR_NGROK_324`.
//! - **`GET /api/tunnels/NAME`** → `200` with the tunnel, or `404`.
//! - **`DELETE /api/tunnels/NAME`** → `204` with an empty body, or `404`.
//!   The documented part of `404` is the status; its body here,
//!   `{"error_code":100,"status_code":404,"msg":"tunnel not found",
//!   "details":{"err":"tunnel \"NAME\" not found"}}`, is the fake's.
//! - **`GET /api/status`** → `{"status":"online","agent_version":…,
//!   "session":{"legs":[…]},"uri":"/api/status"}` (agent 3.9.0), plus the
//!   fake-only `omega_fake` `{pid, argv}` when it runs as a program, so a
//!   test can check what the agent was started with and that it is gone.
//!
//! # Authentication
//!
//! A real v3 agent started without an authtoken starts its web service,
//! fails to authenticate its session with `ERR_NGROK_4018` ("authentication
//! failed: Usage of ngrok requires a verified account and authtoken…"),
//! logs that at level `eror` (`failed to auth`, then `session closing`),
//! prints it on stderr as `ERROR:` lines, and exits. The program mode does
//! exactly that (exit status 1). In-process, [`serve`] with
//! [`Options::authtoken`] `None` models an agent whose session is up but
//! not authenticated (as anonymous sessions of older agents were): every
//! tunnel bind is refused with the `502`/`103` error carrying
//! `ERR_NGROK_4018` ("You must signup for ngrok and add your authtoken to
//! perform this operation"), the shape real agents give bind refusals.
//!
//! # Forwarding (fake-only)
//!
//! With [`Options::forward`] (the default), every `http` tunnel gets a
//! listener on `127.0.0.1:0` — its address is `omega_fake.forward` — that
//! plays the public URL: each request is forwarded to the tunnel's `addr`
//! with `Host` set as `host_header` says (`rewrite`: the upstream's
//! address; a name: that name; absent or `preserve`: the public host), and
//! `X-Forwarded-For`, `X-Forwarded-Host` (the public host) and
//! `X-Forwarded-Proto: https` added, as ngrok's edge does. An upstream that
//! cannot be reached gives `502` with `ERR_NGROK_8012`.
//!
//! Not modelled: the web inspection UI, captured requests
//! (`/api/requests`), the v3 `/api/endpoints` resource, TLS, traffic
//! policies, basic auth and the other HTTP options (accepted, not
//! applied), and the real service's rate limits. Unlike the real agent it
//! bounds connections ([`MAX_CONNECTIONS`]) and the time to read a request
//! ([`READ_TIMEOUT`]).
//!
//! # Running it
//!
//! `omega-fake ngrok start --none [FLAG…]` (or a symlink named `ngrok`):
//!
//! | flag | effect |
//! |---|---|
//! | `--none` | start no tunnels from the configuration (the only mode faked) |
//! | `--authtoken T` | the session's authtoken (overrides the config files) |
//! | `--config FILE` | a configuration file (repeatable; later ones win); YAML as ngrok reads it, limited to `key: value` lines and the `agent:` block, or JSON |
//! | `--log stdout\|stderr\|false\|PATH` | where log records go (default: nowhere) |
//! | `--log-format json\|logfmt\|term` | how they are written (`term` = `logfmt`) |
//! | `--log-level L`, `--region R` | accepted, ignored |
//! | `--fake-domain D` | **fake-only**: a domain the account has reserved (repeatable) |
//!
//! From the configuration it reads `version` (`2` or `3`), `authtoken` and
//! `web_addr` (top level for version 2, under `agent:` for version 3;
//! default `127.0.0.1:4040`) and `log`/`log_format`; like the real agent it
//! refuses keys it does not know (exit 1). The authtoken is **not** read
//! from the environment: the ngrok documentation does not say the agent
//! reads `NGROK_AUTHTOKEN` (its official Docker image turns that variable
//! into a configuration file). It logs as v3 does — `open config file`,
//! `starting web service` (with `addr`), `tunnel session started`,
//! `client session established`, `started tunnel` (with `name`, `addr`,
//! `url`) — and runs until SIGTERM or SIGINT (exit 0). It cannot bind its
//! address: exit 1 after a `failed to start web service` record whose
//! `err` says `address already in use`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};

/// Where the agent API listens unless configured otherwise (`web_addr`).
pub const DEFAULT_WEB_ADDR: &str = "127.0.0.1:4040";
/// Largest request body the fake reads (`413` beyond).
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// Connections served at once (API and each forwarder).
pub const MAX_CONNECTIONS: usize = 64;
/// Time allowed to read a request head or body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest configuration file read.
pub const MAX_CONFIG_FILE: u64 = 256 * 1024;
/// The `agent_version` the fake reports.
pub const VERSION: &str = "3.30.0-omega-fake";
/// The session error of a v3 agent without an authtoken (the `err` of its
/// log records).
pub const SESSION_ERROR_4018: &str = "authentication failed: Usage of ngrok requires a verified account and authtoken.\n\nSign up for an account: https://dashboard.ngrok.com/signup\nInstall your authtoken: https://dashboard.ngrok.com/get-started/your-authtoken\r\n\r\nERR_NGROK_4018\r\n";
/// The bind refusal of a session without an authtoken (`details.err`).
pub const BIND_ERROR_4018: &str = "You must signup for ngrok and add your authtoken to perform this operation.\n\nSign up for an account: https://dashboard.ngrok.com/signup\nInstall your authtoken: https://dashboard.ngrok.com/get-started/your-authtoken\r\n\r\nERR_NGROK_4018\r\n";

/// How the fake agent behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The session's authtoken; `None`: binds are refused with
    /// `ERR_NGROK_4018` (see the module docs).
    pub authtoken: Option<String>,
    /// Domains the account has reserved (usable as `domain`).
    pub domains: Vec<String>,
    /// Tunnels allowed on the session (`ERR_NGROK_324` beyond).
    pub max_tunnels: usize,
    /// Give each `http` tunnel a forwarding listener (fake-only).
    pub forward: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            authtoken: Some("omega-fake-authtoken".into()),
            domains: Vec::new(),
            max_tunnels: 32,
            forward: true,
        }
    }
}

/// A tunnel as the fake holds it (more than the API shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelRecord {
    /// `name`.
    pub name: String,
    /// `ID`.
    pub id: String,
    /// `public_url`.
    pub public_url: String,
    /// `proto` as listed (`https` for an `http` tunnel).
    pub proto: String,
    /// `config.addr` as listed (`http://127.0.0.1:8080`).
    pub addr: String,
    /// `addr` as it was posted.
    pub requested_addr: String,
    /// `host_header` as posted.
    pub host_header: Option<String>,
    /// `domain` as posted.
    pub domain: Option<String>,
    /// `config.inspect`.
    pub inspect: bool,
    /// The fake-only forwarding listener.
    pub forward: Option<SocketAddr>,
}

/// Counters of what the fake was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `POST /api/tunnels` requests.
    pub posts: u64,
    /// `DELETE /api/tunnels/NAME` requests.
    pub deletes: u64,
    /// Requests refused for their `Host`.
    pub bad_host: u64,
}

struct Live {
    record: TunnelRecord,
    forwarder: Option<AbortHandle>,
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(f) = &self.forwarder {
            f.abort();
        }
    }
}

#[derive(Default)]
struct State {
    tunnels: BTreeMap<String, Live>,
    stats: Stats,
}

struct Shared {
    options: Options,
    state: Mutex<State>,
    /// `(pid, argv)` when running as a program.
    process: Option<(u32, Vec<String>)>,
    log: Log,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake agent API; dropping it stops the server and every
/// tunnel's forwarder.
pub struct Handle {
    shared: Arc<Shared>,
    task: AbortHandle,
    addr: SocketAddr,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("addr", &self.addr).finish()
    }
}

impl Handle {
    /// Where the API listens (the agent's `web_addr`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The tunnels, by name.
    pub fn tunnels(&self) -> Vec<TunnelRecord> {
        self.shared
            .lock()
            .tunnels
            .values()
            .map(|l| l.record.clone())
            .collect()
    }

    /// The tunnel called `name`.
    pub fn tunnel(&self, name: &str) -> Option<TunnelRecord> {
        self.shared
            .lock()
            .tunnels
            .get(name)
            .map(|l| l.record.clone())
    }

    /// What the fake was asked so far.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.lock().tunnels.clear();
    }
}

/// Serves the agent API on `listener` (in-process; see the module docs).
pub async fn serve(listener: TcpListener, options: Options) -> std::io::Result<Handle> {
    serve_with(listener, options, None, Log::default())
}

fn serve_with(
    listener: TcpListener,
    options: Options,
    process: Option<(u32, Vec<String>)>,
    log: Log,
) -> std::io::Result<Handle> {
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        options,
        state: Mutex::new(State::default()),
        process,
        log,
    });
    let task = tokio::spawn(api_loop(listener, shared.clone())).abort_handle();
    Ok(Handle { shared, task, addr })
}

// ---------------------------------------------------------------------
// The program.

const USAGE: &str = "usage: omega-fake ngrok start --none [--authtoken T] [--config FILE]... [--log stdout|stderr|false|PATH] [--log-format json|logfmt|term] [--fake-domain D]...";

#[derive(Debug, Default)]
struct Args {
    authtoken: Option<String>,
    configs: Vec<PathBuf>,
    log: Option<String>,
    log_format: Option<String>,
    domains: Vec<String>,
}

/// Runs `omega-fake ngrok ARGS…` (see the module docs); returns the exit
/// code: 0 after SIGTERM/SIGINT, 1 when the configuration is refused, the
/// address cannot be bound or the session fails to authenticate, 2 on
/// usage errors.
pub fn main(args: Vec<String>) -> i32 {
    let argv = std::iter::once("ngrok".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>();
    let parsed = match parse_args(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("ngrok version {VERSION}");
            return 0;
        }
        Err(msg) => {
            eprintln!("ERROR:  {msg}\n{USAGE}");
            return 2;
        }
    };
    let mut config = AgentConfig::default();
    for path in &parsed.configs {
        if let Err(e) = config.read(path) {
            eprintln!(
                "ERROR:  Error reading configuration file '{}': {e}",
                path.display()
            );
            return 1;
        }
    }
    let format = match parsed
        .log_format
        .clone()
        .or(config.log_format.clone())
        .as_deref()
    {
        None | Some("term" | "logfmt") => Format::Logfmt,
        Some("json") => Format::Json,
        Some(other) => {
            eprintln!("ERROR:  invalid log format: {other:?}");
            return 2;
        }
    };
    let log = match Log::open(parsed.log.clone().or(config.log.clone()), format) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ERROR:  cannot open the log: {e}");
            return 1;
        }
    };
    for path in &parsed.configs {
        log.record(
            "info",
            "open config file",
            "app",
            &[
                ("path", json!(path.display().to_string())),
                ("err", Value::Null),
            ],
        );
    }
    let authtoken = parsed
        .authtoken
        .clone()
        .or(config.authtoken.clone())
        .filter(|t| !t.is_empty());
    let web_addr = config
        .web_addr
        .clone()
        .unwrap_or_else(|| DEFAULT_WEB_ADDR.to_owned());
    let options = Options {
        authtoken: authtoken.clone(),
        domains: parsed.domains.clone(),
        ..Options::default()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR:  cannot start a runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(run(web_addr, options, argv, log))
}

async fn run(web_addr: String, options: Options, argv: Vec<String>, log: Log) -> i32 {
    let listener = match TcpListener::bind(&web_addr).await {
        Ok(l) => l,
        Err(e) => {
            let err = if e.kind() == std::io::ErrorKind::AddrInUse {
                format!("listen tcp {web_addr}: bind: address already in use")
            } else {
                format!("listen tcp {web_addr}: {e}")
            };
            log.record(
                "eror",
                "failed to start web service",
                "web",
                &[("err", json!(err))],
            );
            eprintln!("ERROR:  {err}");
            return 1;
        }
    };
    log.record(
        "info",
        "starting web service",
        "web",
        &[("addr", json!(web_addr)), ("allow_hosts", json!([]))],
    );
    if options.authtoken.is_none() {
        // What a v3 agent does: the session cannot authenticate; it says
        // so and exits (pending API connections are reset).
        for msg in ["failed to auth", "session closing"] {
            log.record(
                "eror",
                msg,
                "tunnels.session",
                &[("err", json!(SESSION_ERROR_4018))],
            );
        }
        let mut err = std::io::stderr();
        for line in SESSION_ERROR_4018.lines() {
            let _ = writeln!(err, "ERROR:  {}", line.trim_end_matches('\r'));
        }
        let _ = writeln!(err, "ERROR:  https://ngrok.com/docs/errors/err_ngrok_4018");
        drop(listener);
        return 1;
    }
    log.record("info", "tunnel session started", "tunnels.session", &[]);
    log.record("info", "client session established", "tunnels.session", &[]);
    let handle = match serve_with(listener, options, Some((std::process::id(), argv)), log) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ERROR:  {e}");
            return 1;
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ERROR:  cannot watch SIGTERM: {e}");
            return 1;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(handle);
    0
}

/// `Ok(None)`: `ngrok version`.
fn parse_args(args: Vec<String>) -> Result<Option<Args>, String> {
    let mut it = args.into_iter();
    match it.next().as_deref() {
        Some("start") => {}
        Some("version" | "--version" | "-v") => return Ok(None),
        Some(other) => {
            return Err(format!(
                "omega-fake ngrok fakes only `ngrok start --none`, not `{other}`"
            ));
        }
        None => return Err("a command is required".into()),
    }
    let mut a = Args::default();
    let mut none = false;
    while let Some(arg) = it.next() {
        // Both `--flag value` and `--flag=value`, as the real CLI takes.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| match inline.clone() {
            Some(v) => Ok(v),
            None => it
                .next()
                .ok_or_else(|| format!("flag needs an argument: {name}")),
        };
        match flag.as_str() {
            "--none" => none = true,
            "--all" => return Err("omega-fake ngrok does not fake --all".into()),
            "--authtoken" => a.authtoken = Some(value("--authtoken")?),
            "--config" => a.configs.push(PathBuf::from(value("--config")?)),
            "--log" => a.log = Some(value("--log")?),
            "--log-format" => a.log_format = Some(value("--log-format")?),
            "--log-level" => drop(value("--log-level")?),
            "--region" => drop(value("--region")?),
            "--fake-domain" => a.domains.push(value("--fake-domain")?),
            other if other.starts_with('-') => return Err(format!("unknown flag: {other}")),
            other => {
                return Err(format!(
                    "omega-fake ngrok does not fake starting configured tunnels (`{other}`)"
                ));
            }
        }
    }
    if !none {
        return Err("omega-fake ngrok fakes only `ngrok start --none`".into());
    }
    Ok(Some(a))
}

/// What the fake reads of the agent configuration files.
#[derive(Debug, Default)]
struct AgentConfig {
    authtoken: Option<String>,
    web_addr: Option<String>,
    log: Option<String>,
    log_format: Option<String>,
}

/// The `agent:` keys of the v3 configuration (also the top-level keys of
/// v2), from the configuration reference.
const AGENT_KEYS: &[&str] = &[
    "api_key",
    "authtoken",
    "connect_cas",
    "connect_interface",
    "connect_timeout",
    "connect_url",
    "console_ui",
    "console_ui_color",
    "crl_noverify",
    "dns_resolver_ips",
    "heartbeat_interval",
    "heartbeat_tolerance",
    "inspect_db_size",
    "log_level",
    "log_format",
    "log",
    "metadata",
    "proxy_url",
    "remote_management",
    "update_channel",
    "update_check",
    "web_addr",
    "web_allow_hosts",
];

impl AgentConfig {
    fn read(&mut self, path: &std::path::Path) -> Result<(), String> {
        use std::io::Read as _;
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let mut text = String::new();
        file.take(MAX_CONFIG_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        if text.len() as u64 > MAX_CONFIG_FILE {
            return Err(format!("larger than {MAX_CONFIG_FILE} bytes"));
        }
        let entries = if text.trim_start().starts_with('{') {
            json_entries(&text)?
        } else {
            yaml_entries(&text)?
        };
        let version = entries
            .iter()
            .find(|(section, key, _)| section.is_none() && key == "version")
            .map(|(_, _, v)| v.clone());
        let v3 = match version.as_deref() {
            Some("3") => true,
            Some("2") => false,
            Some(other) => return Err(format!("invalid configuration version {other:?}")),
            None => return Err("the `version` property is required".into()),
        };
        for (section, key, value) in entries {
            let agent_key = match (v3, section.as_deref()) {
                (_, None) if key == "version" => continue,
                (true, None) if matches!(key.as_str(), "agent" | "tunnels" | "endpoints") => {
                    continue;
                }
                (false, None) if key == "tunnels" => continue,
                (true, Some("agent")) | (false, None) => key,
                (_, Some("tunnels" | "endpoints")) => continue,
                (_, Some(s)) => return Err(format!("field {s}.{key} not found")),
                (_, None) => return Err(format!("field {key} not found")),
            };
            if !AGENT_KEYS.contains(&agent_key.as_str()) {
                return Err(format!("field {agent_key} not found"));
            }
            let slot = match agent_key.as_str() {
                "authtoken" => &mut self.authtoken,
                "web_addr" => &mut self.web_addr,
                "log" => &mut self.log,
                "log_format" => &mut self.log_format,
                _ => continue,
            };
            *slot = Some(value);
        }
        Ok(())
    }
}

/// `(section, key, scalar)` of a JSON configuration: the top level and one
/// level of objects.
type Entries = Vec<(Option<String>, String, String)>;

fn json_entries(text: &str) -> Result<Entries, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Value::Object(top) = value else {
        return Err("the configuration is not a mapping".into());
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = Vec::new();
    for (k, v) in &top {
        out.push((None, k.clone(), scalar(v)));
        if let Value::Object(inner) = v {
            for (ik, iv) in inner {
                out.push((Some(k.clone()), ik.clone(), scalar(iv)));
            }
        }
    }
    Ok(out)
}

/// `(section, key, scalar)` of a YAML configuration written as `key:
/// value` lines and one level of indented blocks (`agent:`); list items
/// and anything deeper (tunnel and endpoint definitions) are skipped.
fn yaml_entries(text: &str) -> Result<Entries, String> {
    let mut out = Vec::new();
    // The open block and the indentation of its direct children.
    let mut section: Option<(String, Option<usize>)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or("").trim_end();
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') || body == "---" {
            continue;
        }
        let indent = line.len() - body.len();
        if indent == 0 {
            let Some((key, value)) = body.split_once(':') else {
                return Err(format!("line {}: not a `key: value` line", n + 1));
            };
            let (key, value) = (key.trim().to_owned(), unquote(value.trim()));
            section = value.is_empty().then(|| (key.clone(), None));
            out.push((None, key, value));
            continue;
        }
        let Some((name, child)) = &mut section else {
            return Err(format!("line {}: unexpected indentation", n + 1));
        };
        let child = *child.get_or_insert(indent);
        if indent != child
            || body.starts_with('-')
            || matches!(name.as_str(), "tunnels" | "endpoints")
        {
            continue;
        }
        let Some((key, value)) = body.split_once(':') else {
            return Err(format!("line {}: not a `key: value` line", n + 1));
        };
        out.push((
            Some(name.clone()),
            key.trim().to_owned(),
            unquote(value.trim()),
        ));
    }
    Ok(out)
}

fn unquote(v: &str) -> String {
    let bytes = v.as_bytes();
    if bytes.len() >= 2
        && ((bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"')
            || (bytes[0] == b'\'' && bytes[bytes.len() - 1] == b'\''))
    {
        v[1..v.len() - 1].to_owned()
    } else {
        v.to_owned()
    }
}

// ---------------------------------------------------------------------
// Logging, as the agent does with `--log` and `--log-format`.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Format {
    Json,
    #[default]
    Logfmt,
}

#[derive(Clone, Default)]
struct Log {
    sink: Option<Arc<Mutex<Box<dyn std::io::Write + Send>>>>,
    format: Format,
}

impl Log {
    fn open(target: Option<String>, format: Format) -> std::io::Result<Self> {
        let sink: Option<Box<dyn std::io::Write + Send>> = match target.as_deref() {
            None | Some("false" | "") => None,
            Some("stdout") => Some(Box::new(std::io::stdout())),
            Some("stderr") => Some(Box::new(std::io::stderr())),
            Some(path) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        };
        Ok(Self {
            sink: sink.map(|s| Arc::new(Mutex::new(s))),
            format,
        })
    }

    /// One record: the level (`info`, `eror`, `crit`…), the message, the
    /// component (`obj`) and fields.
    fn record(&self, lvl: &str, msg: &str, obj: &str, fields: &[(&str, Value)]) {
        let Some(sink) = &self.sink else {
            return;
        };
        let t = rfc3339(SystemTime::now());
        let line = match self.format {
            Format::Json => {
                // Keys sorted, as the agent's JSON records are.
                let mut m = BTreeMap::new();
                m.insert("lvl", json!(lvl));
                m.insert("msg", json!(msg));
                m.insert("obj", json!(obj));
                m.insert("t", json!(t));
                for (k, v) in fields {
                    m.insert(k, v.clone());
                }
                serde_json::to_string(&m).unwrap_or_default()
            }
            Format::Logfmt => {
                let mut s = format!("t={t} lvl={lvl} msg={} obj={obj}", logfmt(&json!(msg)));
                for (k, v) in fields {
                    s.push_str(&format!(" {k}={}", logfmt(v)));
                }
                s
            }
        };
        let mut w = sink.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(w, "{line}");
        let _ = w.flush();
    }
}

fn logfmt(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::String(s) if !s.is_empty() && !s.contains([' ', '"', '=', '\n', '\r']) => s.clone(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// `2006-01-02T15:04:05Z` (UTC).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------
// The API.

type Body = BoxBody<Bytes, hyper::Error>;
type Reply = Response<Body>;

async fn api_loop(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
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
                tracing::warn!("omega-fake ngrok: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn reply(status: u16, content_type: Option<&str>, body: Vec<u8>) -> Reply {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type.and_then(|c| hyper::header::HeaderValue::from_str(c).ok()) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    r
}

fn json_reply(status: u16, value: &Value) -> Reply {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    reply(status, Some("application/json"), body)
}

/// The agent API's error body.
fn api_error(status: u16, code: u32, msg: &str, err: &str) -> Reply {
    json_reply(
        status,
        &json!({
            "error_code": code,
            "status_code": status,
            "msg": msg,
            "details": { "err": err },
        }),
    )
}

fn invalid_config(err: &str) -> Reply {
    api_error(400, 102, "invalid tunnel configuration", err)
}

fn bind_refused(err: &str) -> Reply {
    api_error(502, 103, "failed to start tunnel", err)
}

fn not_found(name: &str) -> Reply {
    api_error(
        404,
        100,
        "tunnel not found",
        &format!("tunnel {name:?} not found"),
    )
}

fn text(status: u16, msg: &str) -> Reply {
    reply(
        status,
        Some("text/plain; charset=utf-8"),
        format!("{msg}\n").into_bytes(),
    )
}

fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None if host.matches(':').count() > 1 => host,
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Reply {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !loopback_host(host) {
        shared.lock().stats.bad_host += 1;
        return text(403, "Invalid Host header");
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match path.trim_end_matches('/') {
        "/api/tunnels" => match method {
            hyper::Method::GET => list(shared),
            hyper::Method::POST => start(shared, req).await,
            _ => text(405, "Method Not Allowed"),
        },
        "/api/status" if method == hyper::Method::GET => status(shared),
        "/api/status" => text(405, "Method Not Allowed"),
        p if p.starts_with("/api/tunnels/") => {
            let Some(name) = percent_decode(&p["/api/tunnels/".len()..]) else {
                return text(400, "Bad Request");
            };
            match method {
                hyper::Method::GET => match shared.lock().tunnels.get(&name) {
                    Some(l) => json_reply(200, &tunnel_json(&l.record)),
                    None => not_found(&name),
                },
                hyper::Method::DELETE => stop(shared, &name),
                _ => text(405, "Method Not Allowed"),
            }
        }
        _ => text(404, "404 page not found"),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn list(shared: &Shared) -> Reply {
    let st = shared.lock();
    let tunnels = st
        .tunnels
        .values()
        .map(|l| tunnel_json(&l.record))
        .collect::<Vec<_>>();
    json_reply(200, &json!({ "tunnels": tunnels, "uri": "/api/tunnels" }))
}

fn status(shared: &Shared) -> Reply {
    let mut v = json!({
        "status": "online",
        "agent_version": VERSION,
        "session": { "legs": [ { "region": "local", "latency": "0ms" } ] },
        "uri": "/api/status",
    });
    if let (Some((pid, argv)), Value::Object(m)) = (&shared.process, &mut v) {
        m.insert("omega_fake".into(), json!({ "pid": pid, "argv": argv }));
    }
    json_reply(200, &v)
}

fn metrics() -> Value {
    let conns = json!({
        "count": 0, "gauge": 0, "rate1": 0, "rate5": 0, "rate15": 0,
        "p50": 0, "p90": 0, "p95": 0, "p99": 0,
    });
    let http = json!({
        "count": 0, "rate1": 0, "rate5": 0, "rate15": 0,
        "p50": 0, "p90": 0, "p95": 0, "p99": 0,
    });
    json!({ "conns": conns, "http": http })
}

fn tunnel_json(t: &TunnelRecord) -> Value {
    json!({
        "name": t.name,
        "ID": t.id,
        "uri": format!("/api/tunnels/{}", t.name),
        "public_url": t.public_url,
        "proto": t.proto,
        "config": { "addr": t.addr, "inspect": t.inspect },
        "metrics": metrics(),
        "omega_fake": {
            "forward": t.forward.map(|a| a.to_string()),
            "host_header": t.host_header,
            "domain": t.domain,
        },
    })
}

/// Tunnel-definition fields a `POST` may carry (the agent configuration's
/// tunnel options).
const TUNNEL_FIELDS: &[&str] = &[
    "name",
    "proto",
    "addr",
    "host_header",
    "domain",
    "hostname",
    "subdomain",
    "inspect",
    "schemes",
    "basic_auth",
    "circuit_breaker",
    "compression",
    "metadata",
    "request_header",
    "response_header",
    "ip_restriction",
    "oauth",
    "oidc",
    "webhook_verification",
    "mutual_tls_cas",
    "proxy_proto",
    "traffic_policy",
    "remote_addr",
    "crt",
    "key",
    "terminate_at",
    "labels",
    "app_protocol",
    "verify_upstream_tls",
];

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY as u64) {
        return Err(text(413, "http: request body too large"));
    }
    let body = Limited::new(req.into_body(), MAX_REQUEST_BODY).collect();
    match tokio::time::timeout(READ_TIMEOUT, body).await {
        Err(_) => Err(text(408, "timeout reading the request body")),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(text(413, "http: request body too large"))
        }
        Ok(Err(e)) => Err(text(400, &format!("reading the request body: {e}"))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn string_field(m: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("invalid value for {key}: {other}")),
    }
}

async fn start(shared: &Shared, req: Request<Incoming>) -> Reply {
    shared.lock().stats.posts += 1;
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return invalid_config(&format!("invalid JSON: {e}")),
    };
    let Value::Object(m) = value else {
        return invalid_config("the tunnel configuration must be a JSON object");
    };
    if let Some(unknown) = m.keys().find(|k| !TUNNEL_FIELDS.contains(&k.as_str())) {
        return invalid_config(&format!("json: unknown field {unknown:?}"));
    }
    let parsed = (|| {
        let name = string_field(&m, "name")?;
        let proto = string_field(&m, "proto")?;
        let addr = match m.get("addr") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => return Err(format!("invalid value for addr: {other}")),
        };
        let host_header = string_field(&m, "host_header")?;
        let domain = string_field(&m, "domain")?
            .or(string_field(&m, "hostname")?)
            .filter(|d| !d.is_empty());
        let inspect = match m.get("inspect") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(format!("invalid value for inspect: {other}")),
        };
        Ok((name, proto, addr, host_header, domain, inspect))
    })();
    let (name, proto, addr, host_header, domain, inspect) = match parsed {
        Ok(p) => p,
        Err(e) => return invalid_config(&e),
    };
    let Some(proto) = proto.filter(|p| !p.is_empty()) else {
        return invalid_config("a tunnel must define `proto`");
    };
    if !matches!(proto.as_str(), "http" | "tcp" | "tls") {
        return invalid_config(&format!("invalid protocol name {proto:?}"));
    }
    let Some(requested_addr) = addr.filter(|a| !a.is_empty()) else {
        return invalid_config("a tunnel must define `addr`");
    };
    let Some(listed_addr) = normalize_addr(&proto, &requested_addr) else {
        return invalid_config(&format!("invalid address {requested_addr:?}"));
    };
    let name = name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| hex(random_u64()));
    if name.len() > 256 || name.chars().any(|c| c.is_control() || c == '/') {
        return invalid_config(&format!("invalid tunnel name {name:?}"));
    }
    let options = &shared.options;
    let public_url = {
        let st = shared.lock();
        if st.tunnels.contains_key(&name) {
            return invalid_config(&format!("tunnel {name:?} already exists"));
        }
        if options.authtoken.is_none() {
            return bind_refused(BIND_ERROR_4018);
        }
        if st.tunnels.len() >= options.max_tunnels {
            let running = st
                .tunnels
                .values()
                .map(|l| l.record.public_url.clone())
                .collect::<Vec<_>>()
                .join(" ");
            return bind_refused(&format!(
                "Your account may not run more than {} tunnels over a single ngrok agent session.\nThe tunnels already running on this session are:\n[{running}]\n\r\n\r\nERR_NGROK_324\r\n",
                options.max_tunnels
            ));
        }
        match (&domain, proto.as_str()) {
            (Some(d), _) => {
                if !options.domains.iter().any(|o| o.eq_ignore_ascii_case(d)) {
                    return bind_refused(&format!(
                        "You must reserve a custom hostname for your account before it can be used to create endpoints.\nFailed to create an endpoint with the domain '{d}' for the account 'omega-fake'.\nReserve this name on your dashboard: https://dashboard.ngrok.com/domains/new\r\n\r\nERR_NGROK_319\r\n"
                    ));
                }
                let url = format!("https://{}", d.to_ascii_lowercase());
                if st.tunnels.values().any(|l| l.record.public_url == url) {
                    return bind_refused(&format!(
                        "The endpoint '{url}' is already online. Either\n1. stop your existing endpoint first, or\n2. start both endpoints with `--pooling-enabled` to load balance between them.\r\n\r\nERR_NGROK_334\r\n"
                    ));
                }
                url
            }
            (None, "tcp") => format!("tcp://0.tcp.ngrok.io:{}", 10_000 + random_u64() % 50_000),
            (None, "tls") => format!("tls://{}.ngrok-free.app", &hex(random_u64())[..12]),
            (None, _) => format!("https://{}.ngrok-free.app", &hex(random_u64())[..12]),
        }
    };
    let mut record = TunnelRecord {
        name: name.clone(),
        id: format!("{}{}", hex(random_u64()), hex(random_u64())),
        public_url,
        proto: if proto == "http" {
            "https".into()
        } else {
            proto.clone()
        },
        addr: listed_addr,
        requested_addr,
        host_header,
        domain,
        inspect,
        forward: None,
    };
    let mut forwarder = None;
    if proto == "http" && options.forward {
        match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => {
                record.forward = l.local_addr().ok();
                let rule = Forward::of(&record);
                forwarder = Some(tokio::spawn(forward_loop(l, rule)).abort_handle());
            }
            Err(e) => tracing::warn!("omega-fake ngrok: cannot bind a forwarder: {e}"),
        }
    }
    let mut st = shared.lock();
    if st.tunnels.contains_key(&name) {
        // Lost a race with a concurrent POST of the same name.
        if let Some(f) = forwarder {
            f.abort();
        }
        return invalid_config(&format!("tunnel {name:?} already exists"));
    }
    shared.log.record(
        "info",
        "started tunnel",
        "tunnels",
        &[
            ("addr", json!(record.addr)),
            ("name", json!(record.name)),
            ("url", json!(record.public_url)),
        ],
    );
    let out = tunnel_json(&record);
    st.tunnels.insert(name, Live { record, forwarder });
    json_reply(201, &out)
}

fn stop(shared: &Shared, name: &str) -> Reply {
    let mut st = shared.lock();
    st.stats.deletes += 1;
    match st.tunnels.remove(name) {
        Some(live) => {
            drop(live);
            reply(204, None, Vec::new())
        }
        None => not_found(name),
    }
}

/// `addr` as a v3 agent lists it, or `None` if it is not an address.
fn normalize_addr(proto: &str, addr: &str) -> Option<String> {
    if addr.contains("://") {
        return Some(addr.to_owned());
    }
    let host_port = if addr.bytes().all(|b| b.is_ascii_digit()) {
        format!("localhost:{addr}")
    } else {
        addr.to_owned()
    };
    let (_, port) = host_port.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    Some(match proto {
        "http" => format!("http://{host_port}"),
        _ => host_port,
    })
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn hex(n: u64) -> String {
    format!("{n:016x}")
}

// ---------------------------------------------------------------------
// Forwarding (fake-only).

#[derive(Debug, Clone)]
struct Forward {
    /// `host:port` to connect to.
    upstream: String,
    /// The `Host` upstream requests carry.
    host: String,
    /// The public host.
    public_host: String,
}

impl Forward {
    fn of(t: &TunnelRecord) -> Self {
        let upstream = t
            .addr
            .split_once("://")
            .map_or(t.addr.as_str(), |(_, rest)| rest)
            .trim_end_matches('/')
            .to_owned();
        let public_host = t
            .public_url
            .split_once("://")
            .map_or(t.public_url.as_str(), |(_, rest)| rest)
            .to_owned();
        let host = match t.host_header.as_deref() {
            None | Some("" | "preserve") => public_host.clone(),
            Some("rewrite") => upstream.clone(),
            Some(custom) => custom.to_owned(),
        };
        Self {
            upstream,
            host,
            public_host,
        }
    }
}

async fn forward_loop(listener: TcpListener, rule: Forward) {
    let rule = Arc::new(rule);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let rule = rule.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let rule = rule.clone();
                async move { Ok::<_, Infallible>(forward(&rule, peer, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(rule: &Forward, peer: SocketAddr, req: Request<Incoming>) -> Reply {
    let failed = |e: &dyn std::fmt::Display| {
        text(
            502,
            &format!(
                "Traffic successfully made it to the ngrok agent, but the agent failed to establish a connection to the upstream web service at {}. ({e})\n\nERR_NGROK_8012",
                rule.upstream
            ),
        )
    };
    let stream = match tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(&rule.upstream)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return failed(&e),
        Err(_) => return failed(&"connect timed out"),
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return failed(&e),
        };
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    let set = |headers: &mut hyper::HeaderMap, k: &'static str, v: &str| {
        if let Ok(v) = hyper::header::HeaderValue::from_str(v) {
            headers.insert(k, v);
        }
    };
    set(headers, "host", &rule.host);
    set(headers, "x-forwarded-for", &peer.ip().to_string());
    set(headers, "x-forwarded-host", &rule.public_host);
    set(headers, "x-forwarded-proto", "https");
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(BodyExt::boxed),
        Err(e) => failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_listed_as_v3_lists_them() {
        assert_eq!(
            normalize_addr("http", "8080").as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(
            normalize_addr("http", "127.0.0.1:18080").as_deref(),
            Some("http://127.0.0.1:18080")
        );
        assert_eq!(
            normalize_addr("http", "https://localhost:8443").as_deref(),
            Some("https://localhost:8443")
        );
        assert_eq!(normalize_addr("tcp", "22").as_deref(), Some("localhost:22"));
        assert_eq!(normalize_addr("http", "nonsense"), None);
    }

    #[test]
    fn only_loopback_hosts_are_served() {
        for ok in [
            "localhost",
            "localhost:4040",
            "127.0.0.1:4040",
            "[::1]:4040",
            "::1",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "example.com",
            "evil.localhost.example:4040",
            "10.0.0.1:4040",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn configurations_are_read_like_the_agent_reads_them() {
        let dir = std::env::temp_dir().join(format!("omega-fake-ngrok-{}", hex(random_u64())));
        std::fs::create_dir_all(&dir).expect("a directory");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("written");
            p
        };
        let mut c = AgentConfig::default();
        c.read(&write(
            "v3.yml",
            "version: \"3\"\nagent:\n  authtoken: abc # a comment\n  web_addr: 127.0.0.1:4999\ntunnels:\n  web:\n    proto: http\n    addr: 80\n",
        ))
        .expect("v3 read");
        assert_eq!(c.authtoken.as_deref(), Some("abc"));
        assert_eq!(c.web_addr.as_deref(), Some("127.0.0.1:4999"));
        let mut c = AgentConfig::default();
        c.read(&write(
            "v3.json",
            r#"{"version":"3","agent":{"authtoken":"t","web_addr":"127.0.0.1:5000","update_check":false}}"#,
        ))
        .expect("json read");
        assert_eq!(c.authtoken.as_deref(), Some("t"));
        let mut c = AgentConfig::default();
        c.read(&write("v2.yml", "version: 2\nauthtoken: old\n"))
            .expect("v2 read");
        assert_eq!(c.authtoken.as_deref(), Some("old"));
        let mut c = AgentConfig::default();
        assert!(
            c.read(&write("bad.yml", "version: 3\nagent:\n  nonsense: 1\n"))
                .is_err()
        );
        assert!(
            c.read(&write("none.yml", "agent:\n  authtoken: x\n"))
                .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }
}
