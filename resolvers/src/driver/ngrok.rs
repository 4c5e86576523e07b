//! The `ngrok` driver: an HTTP tunnel on an ngrok agent, through the
//! agent API (<https://ngrok.com/docs/agent/api/>).
//!
//! # The agent
//!
//! [`Driver::expose`] first asks `GET http://API/api/tunnels` ([`Config::api`],
//! default `127.0.0.1:4040`, the agent's `web_addr`):
//!
//! - an ngrok agent answers → the driver uses it (whatever authtoken it
//!   runs with; [`Config::authtoken`] is then unused) and never stops it;
//! - nothing answers, and [`Config::start_agent`] is set or an authtoken
//!   is configured → the driver starts one: `PROGRAM start --none --log
//!   stdout --log-format json [--config AGENT_CONFIG] --config FILE`, where
//!   `FILE` is a configuration the driver writes (mode `0600`, in a `0700`
//!   directory of its own under the temporary directory, removed with the
//!   agent) holding `version: 3` and under `agent:` the `authtoken`,
//!   `web_addr` = [`Config::api`] (which must then be a loopback `IP:PORT`:
//!   the agent API has no authentication), `update_check: false` and
//!   `console_ui: false`. The authtoken is never on the command line (not
//!   in `ps`) nor in the environment. [`Config::agent_config`] (e.g. the
//!   file `ngrok config add-authtoken` wrote; `ngrok config check` prints
//!   where) is read first, so its authtoken serves when none is
//!   configured. The process is killed when the driver no longer needs it
//!   (kill on drop too); its JSON log records are read, bounded, for the
//!   session's errors. The driver waits at most [`START_TIMEOUT`] for the
//!   API. One started agent serves every tunnel of the driver; it is
//!   stopped with the last one.
//! - otherwise → [`DriverError::Unavailable`]: "an ngrok agent at API is
//!   not available: … start one (`ngrok start --none`) or set an authtoken
//!   (--ngrok-authtoken / NGROK_AUTHTOKEN) so Omega starts its own".
//!
//! # The tunnel
//!
//! Its name is `omega-MANIFEST-RESOLVER` ([`tunnel_name`]). If the agent
//! already has a tunnel of that name (`GET /api/tunnels/NAME`) that
//! forwards to the gateway, it is taken over (a tunnel left by an earlier
//! run); one that forwards elsewhere is someone else's: the driver fails
//! with [`DriverError::Conflict`] and leaves it alone. Otherwise it sends
//! `POST /api/tunnels`:
//!
//! ```json
//! {"name":"omega-demo-public","proto":"http","addr":"127.0.0.1:8080",
//!  "host_header":"demo.example.com","inspect":false}
//! ```
//!
//! `addr` is the gateway (an unspecified gateway address is reached on
//! loopback). `host_header` (a custom value rewrites `Host`, as ngrok's
//! `--host-header` does) makes requests reach the gateway with the
//! resolver's host, which the gateway routes by. `inspect: false` keeps the
//! agent from recording requests and bodies in memory for its inspection
//! UI. With [`Config::use_host_as_domain`] the body also carries `"domain":
//! HOST`: the public URL is then `https://HOST`, which the ngrok account
//! must have reserved (an ngrok domain, or a custom domain with its CNAME);
//! without it ngrok assigns a random `https://….ngrok-free.app` (or
//! similar) URL. `201` gives the tunnel; its `public_url` (or, if that is
//! still empty, the one `GET /api/tunnels/NAME` reports) is the URL:
//! [`TunnelState::Up`]. An agent whose session is not ready yet (`502
//! tunnel session not ready yet`, `503 … has not yet been established`) is
//! asked again until the deadline; a name taken in between (`400 tunnel
//! "NAME" already exists`, agents ≥ 3.29) is looked at again as above.
//!
//! Errors carry what ngrok said (`error_code`, `msg`, `details.err`), and
//! an `ERR_NGROK_NNN` code in it picks the kind: `4018`, `105`, `106`,
//! `107`, `300` (no or a bad authtoken) → [`DriverError::Unauthorized`];
//! `108` (agent sessions), `324` (tunnels per session), `308`, `310`,
//! `313`–`316`, `319`, `320` (domains) → [`DriverError::NotCapable`]; `334`
//! (the URL is online elsewhere) → [`DriverError::Conflict`]; anything else
//! → [`DriverError::Protocol`]. A started agent that reports such an error
//! in its log, or exits, ends the wait the same way. Everything is bounded:
//! each API exchange by [`API_TIMEOUT`], `expose` as a whole by
//! [`EXPOSE_TIMEOUT`].
//!
//! # The watch and removal
//!
//! Every [`Config::poll_interval`] the tunnel's watcher asks `GET
//! /api/tunnels/NAME`: there → `Up { url }`; gone (the agent restarted, or
//! someone deleted it) → it is created again as above; no agent → `Down
//! { reason }`. A started agent that exited is started again, with backoff
//! from [`RESTART_BACKOFF_MIN`] to [`RESTART_BACKOFF_MAX`], and its tunnels
//! created again (the URL may then change, unless it is a domain).
//! [`Tunnel::remove`] stops the watcher, sends `DELETE /api/tunnels/NAME`
//! (`204`; `404` = already gone, fine; an agent that no longer runs has no
//! tunnels either) and stops the agent if the driver started it and no
//! other tunnel uses it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use omega_zgraph::ResolverMode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Driver, DriverError, EXPOSE_TIMEOUT, Exposure, Tunnel, TunnelState};
use crate::client::{self, ClientError, Target};

const DRIVER: &str = "ngrok";

/// The agent API's default address (the agent's default `web_addr`).
pub const DEFAULT_API: &str = "127.0.0.1:4040";
/// How often the watcher looks at the tunnel by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Longest one agent API exchange may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a started agent may take to answer on its API.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest the driver waits for a killed agent to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// First delay before a started agent that exited is started again.
pub const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest delay between restarts.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Log lines of a started agent kept for error messages.
pub const LOG_LINES: usize = 32;
/// Longest log line read (longer ones are cut).
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// How the driver reaches the ngrok agent (`omega node` flags).
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// The agent API's `IP:PORT` (`--ngrok-api`, default `127.0.0.1:4040`).
    pub api: String,
    /// The authtoken of an agent the driver starts (`--ngrok-authtoken`,
    /// `NGROK_AUTHTOKEN`); never shown in `Debug`.
    pub authtoken: Option<String>,
    /// The agent program (`--ngrok-program`, default `ngrok` on `PATH`).
    pub program: PathBuf,
    /// Start an agent when none answers even without an authtoken (its
    /// [`Config::agent_config`] then has to provide one).
    pub start_agent: bool,
    /// An ngrok configuration file a started agent reads before the
    /// driver's own.
    pub agent_config: Option<PathBuf>,
    /// The resolver's host is a domain the ngrok account has reserved:
    /// ask for it (`domain`) instead of a random URL.
    pub use_host_as_domain: bool,
    /// How often the watcher looks at the tunnel.
    pub poll_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api: DEFAULT_API.into(),
            authtoken: None,
            program: PathBuf::from("ngrok"),
            start_agent: false,
            agent_config: None,
            use_host_as_domain: false,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("api", &self.api)
            .field("authtoken", &self.authtoken.as_ref().map(|_| "<redacted>"))
            .field("program", &self.program)
            .field("start_agent", &self.start_agent)
            .field("agent_config", &self.agent_config)
            .field("use_host_as_domain", &self.use_host_as_domain)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

/// The driver.
#[derive(Debug)]
pub struct Ngrok {
    config: Config,
    /// The agent this driver started, while a tunnel uses it.
    agent: Arc<Mutex<Weak<Agent>>>,
}

impl Ngrok {
    /// A driver with `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            agent: Arc::new(Mutex::new(Weak::new())),
        }
    }
}

/// The agent tunnel's name for `exposure`: `omega-MANIFEST-RESOLVER`.
pub fn tunnel_name(exposure: &Exposure) -> String {
    format!("omega-{}-{}", exposure.manifest, exposure.resolver)
}

#[async_trait]
impl Driver for Ngrok {
    fn mode(&self) -> ResolverMode {
        ResolverMode::Ngrok
    }

    async fn expose(&self, exposure: &Exposure) -> Result<Box<dyn Tunnel>, DriverError> {
        let started = Instant::now();
        // Inner steps get a slightly shorter deadline so that they fail
        // with their own error before the overall bound.
        let deadline = started + EXPOSE_TIMEOUT - Duration::from_secs(1);
        match tokio::time::timeout(EXPOSE_TIMEOUT, self.expose_inner(exposure, deadline)).await {
            Ok(r) => r,
            Err(_) => Err(DriverError::Timeout {
                driver: DRIVER,
                what: format!("exposing {} through the ngrok agent", exposure.host),
                secs: EXPOSE_TIMEOUT.as_secs(),
            }),
        }
    }
}

impl Ngrok {
    async fn expose_inner(
        &self,
        exposure: &Exposure,
        deadline: Instant,
    ) -> Result<Box<dyn Tunnel>, DriverError> {
        let spec = Spec::new(&self.config, exposure)?;
        let api = Api::new(&self.config.api);
        let agent = {
            let mut slot = self.agent.lock().await;
            match slot.upgrade() {
                Some(agent) => {
                    agent.ensure_running(deadline).await.map_err(|e| e.error)?;
                    Some(agent)
                }
                None => match api.probe().await? {
                    Probe::Agent => None,
                    Probe::Absent(why) => {
                        if !(self.config.start_agent || self.config.authtoken.is_some()) {
                            return Err(DriverError::Unavailable {
                                driver: DRIVER,
                                what: format!("an ngrok agent at {}", self.config.api),
                                detail: format!(
                                    "nothing answers there ({why}): start one (`ngrok start --none`) or set an authtoken (--ngrok-authtoken / NGROK_AUTHTOKEN) so Omega starts its own"
                                ),
                            });
                        }
                        let agent = Agent::start(&self.config, deadline).await?;
                        *slot = Arc::downgrade(&agent);
                        Some(agent)
                    }
                },
            }
        };
        let url = create(&api, &spec, agent.as_deref(), deadline).await?;
        let (tx, rx) = watch::channel(TunnelState::Up { url });
        let watcher = tokio::spawn(watch_loop(
            api.clone(),
            spec.clone(),
            agent.clone(),
            self.config.poll_interval,
            tx,
        ));
        Ok(Box::new(NgrokTunnel {
            api,
            spec,
            agent,
            shared: self.agent.clone(),
            watcher: Some(watcher),
            rx,
        }))
    }
}

/// What to ask the agent for.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    host: String,
    gateway: SocketAddr,
    use_domain: bool,
}

impl Spec {
    fn new(config: &Config, exposure: &Exposure) -> Result<Self, DriverError> {
        let name = tunnel_name(exposure);
        if name.len() > 200
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(DriverError::Config {
                driver: DRIVER,
                detail: format!(
                    "the tunnel name {name:?} (from manifest {:?} and resolver {:?}) must be at most 200 characters of [A-Za-z0-9._-]",
                    exposure.manifest, exposure.resolver
                ),
            });
        }
        let host = &exposure.host;
        if host.is_empty()
            || host.len() > 253
            || host.starts_with(['.', '-'])
            || host.ends_with(['.', '-'])
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
        {
            return Err(DriverError::Config {
                driver: DRIVER,
                detail: format!(
                    "resolver {:?}: host {host:?} is not a DNS name (labels of [A-Za-z0-9-] separated by dots)",
                    exposure.resolver
                ),
            });
        }
        let gateway = match exposure.gateway.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), exposure.gateway.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), exposure.gateway.port())
            }
            _ => exposure.gateway,
        };
        Ok(Self {
            name,
            host: host.to_ascii_lowercase(),
            gateway,
            use_domain: config.use_host_as_domain,
        })
    }

    fn body(&self) -> Vec<u8> {
        let mut v = json!({
            "name": self.name,
            "proto": "http",
            "addr": self.gateway.to_string(),
            "host_header": self.host,
            "inspect": false,
        });
        if let (true, Value::Object(m)) = (self.use_domain, &mut v) {
            m.insert("domain".into(), json!(self.host));
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// Whether an existing tunnel is this one.
    fn is_ours(&self, t: &ApiTunnel) -> bool {
        points_at(&t.config.addr, self.gateway)
            && (!self.use_domain
                || t.public_url.is_empty()
                || url_host(&t.public_url).eq_ignore_ascii_case(&self.host))
    }
}

fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', ':']).next().unwrap_or("")
}

/// Whether a tunnel's `config.addr` (as the agent lists it: `http://H:P`,
/// `H:P` or a port) is `gateway`.
fn points_at(addr: &str, gateway: SocketAddr) -> bool {
    let rest = match addr.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return false,
        None => addr,
    };
    let rest = rest.trim_end_matches('/');
    if let Ok(port) = rest.parse::<u16>() {
        return port == gateway.port() && gateway.ip().is_loopback();
    }
    if let Ok(sa) = rest.parse::<SocketAddr>() {
        return sa == gateway;
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
            port.parse::<u16>().ok() == Some(gateway.port()) && gateway.ip().is_loopback()
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------
// The agent API.

#[derive(Debug, Deserialize)]
struct ApiTunnel {
    #[serde(default)]
    public_url: String,
    #[serde(default)]
    config: ApiTunnelConfig,
}

#[derive(Debug, Default, Deserialize)]
struct ApiTunnelConfig {
    #[serde(default)]
    addr: String,
}

#[derive(Debug, Default, Deserialize)]
struct ApiErrorBody {
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: Option<Value>,
}

/// An error answer of the agent API.
#[derive(Debug)]
struct ApiError {
    status: u16,
    code: Option<i64>,
    msg: String,
    err: String,
}

impl ApiError {
    fn of(resp: &client::Response) -> Self {
        let body: ApiErrorBody = serde_json::from_slice(&resp.body).unwrap_or_default();
        let err = match body.details {
            Some(Value::Object(m)) => match m.get("err") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None if m.is_empty() => String::new(),
                None => Value::Object(m).to_string(),
            },
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let msg = if body.msg.is_empty() && body.error_code.is_none() {
            resp.text()
        } else {
            body.msg
        };
        Self {
            status: resp.status,
            code: body.error_code,
            msg,
            err,
        }
    }

    /// The session is still coming up: ask again.
    fn not_ready(&self) -> bool {
        let e = self.err.to_ascii_lowercase();
        matches!(self.status, 502 | 503)
            && ngrok_code(&self.err).is_none()
            && (e.contains("not ready")
                || e.contains("not yet been established")
                || e.contains("reconnect"))
    }

    fn describe(&self) -> String {
        let mut s = format!("{}", self.status);
        if let Some(c) = self.code {
            s.push_str(&format!(" (error_code {c})"));
        }
        if !self.msg.is_empty() {
            s.push_str(&format!(" {}", self.msg));
        }
        if !self.err.is_empty() {
            s.push_str(&format!(": {}", tidy(&self.err)));
        }
        s
    }
}

/// The agent API at one address.
#[derive(Debug, Clone)]
struct Api {
    addr: String,
    target: Target,
}

enum Probe {
    Agent,
    /// Nothing listens (why).
    Absent(String),
}

impl Api {
    fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            target: Target::Tcp(addr.to_owned()),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<client::Response, ClientError> {
        let headers: &[(&str, &str)] = match body {
            Some(_) => &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ],
            None => &[("accept", "application/json")],
        };
        // `Host` is the API's own address: the agent answers only
        // loopback hosts (its DNS-rebinding protection).
        client::request(
            &self.target,
            &self.addr,
            method,
            path,
            headers,
            body.unwrap_or_default(),
            timeout,
        )
        .await
    }

    /// A client error as a driver error.
    fn failed(&self, method: &str, path: &str, e: ClientError) -> DriverError {
        match e {
            ClientError::Connect { error, .. } => DriverError::Unavailable {
                driver: DRIVER,
                what: format!("the ngrok agent API at {}", self.url("")),
                detail: format!("{method} {path}: {error}: is the agent running?"),
            },
            ClientError::Timeout { secs, .. } => DriverError::Timeout {
                driver: DRIVER,
                what: format!("{method} {}", self.url(path)),
                secs,
            },
            other => DriverError::Protocol {
                driver: DRIVER,
                what: format!("{method} {}", self.url(path)),
                detail: other.to_string(),
            },
        }
    }

    fn unexpected(&self, method: &str, path: &str, detail: String) -> DriverError {
        DriverError::Protocol {
            driver: DRIVER,
            what: format!("{method} {}", self.url(path)),
            detail,
        }
    }

    async fn probe(&self) -> Result<Probe, DriverError> {
        match self
            .call("GET", "/api/tunnels", None, Duration::from_secs(2))
            .await
        {
            Ok(r) => {
                let listing = serde_json::from_slice::<Value>(&r.body)
                    .ok()
                    .is_some_and(|v| v.get("tunnels").is_some_and(Value::is_array));
                if r.status == 200 && listing {
                    Ok(Probe::Agent)
                } else {
                    Err(self.unexpected(
                        "GET",
                        "/api/tunnels",
                        format!(
                            "something answers there but not as an ngrok agent ({} {}): free the address or set --ngrok-api to the agent's web_addr",
                            r.status,
                            r.text()
                        ),
                    ))
                }
            }
            Err(ClientError::Connect { error, .. }) => Ok(Probe::Absent(error.to_string())),
            Err(e) => Err(self.failed("GET", "/api/tunnels", e)),
        }
    }

    /// `GET /api/tunnels/NAME`: `None` when there is none.
    async fn get(&self, name: &str) -> Result<Result<Option<ApiTunnel>, ApiError>, DriverError> {
        let path = format!("/api/tunnels/{name}");
        let r = self
            .call("GET", &path, None, API_TIMEOUT)
            .await
            .map_err(|e| self.failed("GET", &path, e))?;
        match r.status {
            200 => serde_json::from_slice(&r.body)
                .map(|t| Ok(Some(t)))
                .map_err(|e| self.unexpected("GET", &path, format!("not a tunnel: {e}"))),
            404 => Ok(Ok(None)),
            _ => Ok(Err(ApiError::of(&r))),
        }
    }

    /// `DELETE /api/tunnels/NAME`; gone already is fine.
    async fn delete(&self, name: &str) -> Result<(), DriverError> {
        let path = format!("/api/tunnels/{name}");
        let r = self
            .call("DELETE", &path, None, API_TIMEOUT)
            .await
            .map_err(|e| self.failed("DELETE", &path, e))?;
        match r.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(classify(
                &format!("DELETE {}", self.url(&path)),
                &ApiError::of(&r),
                false,
            )),
        }
    }
}

/// A public URL as the agent reports it, checked.
fn public_url(url: &str) -> Option<String> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && !url_host(url).is_empty()
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then(|| url.to_owned())
}

/// Creates the tunnel (or takes over ours) and returns its public URL.
async fn create(
    api: &Api,
    spec: &Spec,
    agent: Option<&Agent>,
    deadline: Instant,
) -> Result<String, DriverError> {
    let post = format!("POST {}", api.url("/api/tunnels"));
    // Times the name was found taken by a tunnel of ours or another's.
    let mut again = 0;
    loop {
        if let Some(agent) = agent {
            agent.check().await?;
        }
        let waiting = match api.get(&spec.name).await? {
            Ok(Some(t)) if spec.is_ours(&t) => match public_url(&t.public_url) {
                Some(url) => return Ok(url),
                None if t.public_url.is_empty() => {
                    format!("tunnel {} has no public URL yet", spec.name)
                }
                None => {
                    return Err(api.unexpected(
                        "GET",
                        &format!("/api/tunnels/{}", spec.name),
                        format!("public_url {:?} is not a URL", t.public_url),
                    ));
                }
            },
            Ok(Some(t)) if points_at(&t.config.addr, spec.gateway) && again < 3 => {
                // Ours from an earlier run, but not for this domain.
                again += 1;
                api.delete(&spec.name).await?;
                continue;
            }
            Ok(Some(t)) => {
                return Err(DriverError::Conflict {
                    driver: DRIVER,
                    detail: format!(
                        "the ngrok agent at {} already has a tunnel named {} that forwards to {:?} ({}), not to the gateway {}: stop it (`curl -X DELETE {}`) or free the name",
                        api.addr,
                        spec.name,
                        t.config.addr,
                        t.public_url,
                        spec.gateway,
                        api.url(&format!("/api/tunnels/{}", spec.name))
                    ),
                });
            }
            Ok(None) => {
                let r = api
                    .call("POST", "/api/tunnels", Some(&spec.body()), API_TIMEOUT)
                    .await
                    .map_err(|e| api.failed("POST", "/api/tunnels", e))?;
                match r.status {
                    200 | 201 => {
                        let t: ApiTunnel = serde_json::from_slice(&r.body).map_err(|e| {
                            api.unexpected("POST", "/api/tunnels", format!("not a tunnel: {e}"))
                        })?;
                        match public_url(&t.public_url) {
                            Some(url) => return Ok(url),
                            None => format!("tunnel {} has no public URL yet", spec.name),
                        }
                    }
                    _ => {
                        let e = ApiError::of(&r);
                        if e.status == 400 && e.err.contains("already exists") && again < 3 {
                            // Taken in between: look at it again.
                            again += 1;
                            continue;
                        }
                        if !e.not_ready() {
                            return Err(classify(&post, &e, agent.is_some()));
                        }
                        format!("the agent's session is not ready: {}", e.describe())
                    }
                }
            }
            Err(e) if e.not_ready() => {
                format!("the agent's session is not ready: {}", e.describe())
            }
            Err(e) => {
                return Err(classify(
                    &format!("GET {}", api.url(&format!("/api/tunnels/{}", spec.name))),
                    &e,
                    agent.is_some(),
                ));
            }
        };
        if Instant::now() + Duration::from_millis(200) >= deadline {
            return Err(DriverError::Timeout {
                driver: DRIVER,
                what: format!(
                    "the ngrok agent at {} to start tunnel {} ({waiting})",
                    api.addr, spec.name
                ),
                secs: EXPOSE_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `ERR_NGROK_NNN` code in an ngrok message.
fn ngrok_code(text: &str) -> Option<u32> {
    let at = text.find("ERR_NGROK_")? + "ERR_NGROK_".len();
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

/// An ngrok message on one line, bounded.
fn tidy(text: &str) -> String {
    let mut s = text
        .lines()
        .map(|l| l.trim_matches(|c: char| c == '\r' || c.is_whitespace()))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if s.len() > 600 {
        s.truncate(s.floor_char_boundary(600));
        s.push('…');
    }
    s
}

/// The driver error for an ngrok error in `context`; `started`: the
/// driver runs the agent (and so controls its authtoken).
fn classify(context: &str, e: &ApiError, started: bool) -> DriverError {
    let said = e.describe();
    match ngrok_code(&e.err).or_else(|| ngrok_code(&e.msg)) {
        Some(code) => session_error(code, &format!("{context}: {said}"), started),
        None => DriverError::Protocol {
            driver: DRIVER,
            what: context.to_owned(),
            detail: said,
        },
    }
}

/// The driver error for ngrok's `ERR_NGROK_code`, described by `said`.
fn session_error(code: u32, said: &str, started: bool) -> DriverError {
    match code {
        4018 | 105 | 106 | 107 | 300 => DriverError::Unauthorized {
            driver: DRIVER,
            detail: if started {
                format!(
                    "{said} — set --ngrok-authtoken / NGROK_AUTHTOKEN to an authtoken from https://dashboard.ngrok.com/get-started/your-authtoken"
                )
            } else {
                format!(
                    "{said} — the running agent has no valid authtoken: run `ngrok config add-authtoken TOKEN` and restart it, or stop it and set --ngrok-authtoken / NGROK_AUTHTOKEN so Omega starts its own"
                )
            },
        },
        108 => DriverError::NotCapable {
            driver: DRIVER,
            detail: format!(
                "{said} — the account runs as many agent sessions as it may: point --ngrok-api at the agent already running, stop another agent, or upgrade the plan"
            ),
        },
        324 => DriverError::NotCapable {
            driver: DRIVER,
            detail: format!(
                "{said} — the agent's session has as many tunnels as the account allows: stop one or upgrade the plan"
            ),
        },
        308 | 310 | 313..=316 | 319 | 320 => DriverError::NotCapable {
            driver: DRIVER,
            detail: format!(
                "{said} — the account cannot use this domain: reserve it at https://dashboard.ngrok.com/domains (a custom domain also needs its CNAME) or turn use_host_as_domain off for a random ngrok URL"
            ),
        },
        334 => DriverError::Conflict {
            driver: DRIVER,
            detail: format!(
                "{said} — another agent already serves this URL: stop that tunnel, or use another host"
            ),
        },
        _ => DriverError::Protocol {
            driver: DRIVER,
            what: "the ngrok service".into(),
            detail: said.to_owned(),
        },
    }
}

// ---------------------------------------------------------------------
// An agent the driver started.

/// A directory of the driver's own (mode 0700), removed on drop.
#[derive(Debug)]
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let base = std::env::temp_dir();
        let mut last = None;
        for _ in 0..8 {
            let dir = base.join(format!(
                "omega-ngrok-{}-{:016x}",
                std::process::id(),
                nonce()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Self(dir)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no directory")))
    }

    fn write_private(&self, name: &str, contents: &[u8]) -> std::io::Result<PathBuf> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.0.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(contents)?;
        Ok(path)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nonce() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// What a started agent logged.
#[derive(Debug, Default)]
struct AgentLog {
    inner: StdMutex<AgentLogInner>,
}

#[derive(Debug, Default)]
struct AgentLogInner {
    lines: VecDeque<String>,
    /// The first error record naming an `ERR_NGROK_` code: `(code, text)`.
    fatal: Option<(u32, String)>,
}

impl AgentLog {
    fn push(&self, line: &str, from_stdout: bool) {
        let mut st = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if from_stdout
            && st.fatal.is_none()
            && let Ok(Value::Object(rec)) = serde_json::from_str::<Value>(line)
            && matches!(
                rec.get("lvl").and_then(Value::as_str),
                Some("eror" | "crit" | "error")
            )
            && let Some(err) = rec.get("err").and_then(Value::as_str)
            && let Some(code) = ngrok_code(err)
        {
            let msg = rec.get("msg").and_then(Value::as_str).unwrap_or("error");
            st.fatal = Some((code, format!("{msg}: {}", tidy(err))));
        }
        let mut kept = compact(line);
        kept.truncate(kept.floor_char_boundary(400));
        if st.lines.len() == LOG_LINES {
            st.lines.pop_front();
        }
        st.lines.push_back(kept);
    }

    fn fatal(&self) -> Option<(u32, String)> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fatal
            .clone()
    }

    /// The last lines, or an `ERR_NGROK_` code seen in them.
    fn last(&self, n: usize) -> (Option<u32>, String) {
        let st = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let code = st.lines.iter().rev().find_map(|l| ngrok_code(l));
        let tail = st
            .lines
            .iter()
            .skip(st.lines.len().saturating_sub(n))
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ");
        (code, tail)
    }
}

/// A log line for messages: a JSON record as `msg` (and `err`), other
/// lines tidied.
fn compact(line: &str) -> String {
    if let Ok(Value::Object(rec)) = serde_json::from_str::<Value>(line)
        && let Some(msg) = rec.get("msg").and_then(Value::as_str)
    {
        return match rec.get("err").and_then(Value::as_str) {
            Some(err) => format!("{msg}: {}", tidy(err)),
            None => msg.to_owned(),
        };
    }
    tidy(line)
}

async fn read_lines<R: AsyncRead + Unpin>(stream: R, log: Arc<AgentLog>, from_stdout: bool) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LOG_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => log.push(String::from_utf8_lossy(&buf).trim_end(), from_stdout),
        }
    }
}

/// A started agent's process.
#[derive(Debug)]
struct Proc {
    child: Option<Child>,
    log: Arc<AgentLog>,
    readers: Vec<JoinHandle<()>>,
    /// Why it is not running, once it exited.
    down: Option<String>,
    backoff: Duration,
    next_start: Option<Instant>,
}

/// An agent the driver started, shared by the driver's tunnels.
#[derive(Debug)]
struct Agent {
    api: Api,
    program: PathBuf,
    args: Vec<OsString>,
    proc: Mutex<Proc>,
    _dir: PrivateDir,
}

/// Why an agent is not running, and the error to report.
struct AgentDown {
    error: DriverError,
}

/// How a started agent process ended.
struct Exit {
    status: String,
    /// The session error it logged.
    fatal: Option<(u32, String)>,
    /// An `ERR_NGROK_` code in its last lines.
    code: Option<u32>,
    tail: String,
}

/// What an error says, without the driver's prefix (for `down` reasons
/// that are wrapped again).
fn down_detail(e: &DriverError) -> String {
    match e {
        DriverError::Unavailable { detail, .. }
        | DriverError::Unauthorized { detail, .. }
        | DriverError::NotCapable { detail, .. }
        | DriverError::Conflict { detail, .. }
        | DriverError::Config { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

impl Agent {
    async fn start(config: &Config, deadline: Instant) -> Result<Arc<Self>, DriverError> {
        let web: SocketAddr = config.api.parse().map_err(|_| DriverError::Config {
            driver: DRIVER,
            detail: format!(
                "--ngrok-api {:?} is not an IP:PORT; to start an agent Omega needs a loopback address such as {DEFAULT_API}",
                config.api
            ),
        })?;
        if !web.ip().is_loopback() {
            return Err(DriverError::Config {
                driver: DRIVER,
                detail: format!(
                    "--ngrok-api {web} is not a loopback address: the agent API has no authentication, so Omega starts agents only on loopback (e.g. {DEFAULT_API})"
                ),
            });
        }
        let private = |e: std::io::Error| DriverError::Unavailable {
            driver: DRIVER,
            what: format!(
                "a private directory under {}",
                std::env::temp_dir().display()
            ),
            detail: format!(
                "{e}: the started agent's configuration goes there; make the temporary directory writable"
            ),
        };
        let dir = PrivateDir::new().map_err(private)?;
        let mut agent = json!({
            "web_addr": web.to_string(),
            "update_check": false,
            "console_ui": false,
        });
        if let (Some(token), Value::Object(m)) = (&config.authtoken, &mut agent) {
            m.insert("authtoken".into(), json!(token));
        }
        // JSON is YAML: the agent reads it as its configuration file.
        let file = json!({ "version": "3", "agent": agent });
        let path = dir
            .write_private("agent.yml", &serde_json::to_vec(&file).unwrap_or_default())
            .map_err(private)?;
        let mut args: Vec<OsString> =
            ["start", "--none", "--log", "stdout", "--log-format", "json"]
                .iter()
                .map(OsString::from)
                .collect();
        if let Some(extra) = &config.agent_config {
            args.push("--config".into());
            args.push(extra.into());
        }
        args.push("--config".into());
        args.push(path.into());
        let agent = Self {
            api: Api::new(&config.api),
            program: config.program.clone(),
            args,
            proc: Mutex::new(Proc {
                child: None,
                log: Arc::default(),
                readers: Vec::new(),
                down: None,
                backoff: RESTART_BACKOFF_MIN,
                next_start: None,
            }),
            _dir: dir,
        };
        {
            let mut proc = agent.proc.lock().await;
            agent.spawn(&mut proc, deadline).await?;
        }
        Ok(Arc::new(agent))
    }

    fn what(&self) -> String {
        format!("the ngrok agent `{}`", self.program.display())
    }

    /// Starts the process and waits for its API.
    async fn spawn(&self, proc: &mut Proc, deadline: Instant) -> Result<(), DriverError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DriverError::Unavailable {
                driver: DRIVER,
                what: self.what(),
                detail: match e.kind() {
                    std::io::ErrorKind::NotFound => format!(
                        "{e}: install the ngrok agent (https://ngrok.com/download) or set --ngrok-program"
                    ),
                    _ => format!("cannot run it: {e}"),
                },
            })?;
        let log = Arc::new(AgentLog::default());
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(read_lines(out, log.clone(), true)));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(read_lines(err, log.clone(), false)));
        }
        proc.child = Some(child);
        proc.log = log;
        proc.readers = readers;
        proc.down = None;
        let ready = self.wait_ready(proc, deadline).await;
        if ready.is_err() {
            Self::kill(proc).await;
        }
        ready
    }

    async fn wait_ready(&self, proc: &mut Proc, deadline: Instant) -> Result<(), DriverError> {
        loop {
            if let Some(exit) = Self::exit(proc).await {
                return Err(self.exit_error(&exit, true));
            }
            if let Ok(r) = self
                .api
                .call("GET", "/api/tunnels", None, Duration::from_secs(1))
                .await
                && r.status == 200
            {
                return Ok(());
            }
            if Instant::now() + Duration::from_millis(50)
                >= deadline.min(Instant::now() + START_TIMEOUT)
            {
                let (_, tail) = proc.log.last(4);
                return Err(DriverError::Timeout {
                    driver: DRIVER,
                    what: format!(
                        "{} to answer on its API at {} (its last log lines: {tail})",
                        self.what(),
                        self.api.url("")
                    ),
                    secs: START_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `Some` if the process logged a session error or exited (the
    /// process is then reaped or killed).
    async fn exit(proc: &mut Proc) -> Option<Exit> {
        let status = match proc.child.as_mut().map(Child::try_wait) {
            None => "not running".to_owned(),
            Some(Ok(None)) => {
                let fatal = proc.log.fatal()?;
                Self::kill(proc).await;
                return Some(Exit {
                    status: "killed after a session error".into(),
                    fatal: Some(fatal),
                    code: None,
                    tail: String::new(),
                });
            }
            Some(Ok(Some(status))) => status.to_string(),
            Some(Err(e)) => e.to_string(),
        };
        // Let the readers take what it wrote last (bounded).
        for r in proc.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
        }
        proc.child = None;
        let (code, tail) = proc.log.last(3);
        Some(Exit {
            status,
            fatal: proc.log.fatal(),
            code,
            tail,
        })
    }

    /// The error for `exit`; `starting`: before the API answered.
    fn exit_error(&self, exit: &Exit, starting: bool) -> DriverError {
        let what = self.what();
        if let Some((code, text)) = &exit.fatal {
            return session_error(*code, &format!("{what}: {text}"), true);
        }
        let when = if starting {
            format!(" before its API at {} answered", self.api.url(""))
        } else {
            String::new()
        };
        let said = format!(
            "it exited ({}){when}; its last log lines: {}",
            exit.status, exit.tail
        );
        match exit.code {
            Some(code) => session_error(code, &format!("{what}: {said}"), true),
            None => DriverError::Unavailable {
                driver: DRIVER,
                what,
                detail: said,
            },
        }
    }

    async fn kill(proc: &mut Proc) {
        if let Some(mut child) = proc.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(STOP_TIMEOUT, child.wait()).await;
        }
        for r in proc.readers.drain(..) {
            r.abort();
        }
    }

    /// Fails if the process logged a session error or exited.
    async fn check(&self) -> Result<(), DriverError> {
        let mut proc = self.proc.lock().await;
        if proc.child.is_none() {
            return Err(DriverError::Unavailable {
                driver: DRIVER,
                what: self.what(),
                detail: proc
                    .down
                    .clone()
                    .unwrap_or_else(|| "it is not running".into()),
            });
        }
        match Self::exit(&mut proc).await {
            Some(exit) => {
                let e = self.exit_error(&exit, false);
                proc.down = Some(down_detail(&e));
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Starts the agent again if it exited (with backoff); `Ok(true)` if
    /// it did.
    async fn ensure_running(&self, deadline: Instant) -> Result<bool, AgentDown> {
        let mut proc = self.proc.lock().await;
        if proc.child.is_some() {
            match Self::exit(&mut proc).await {
                None => return Ok(false),
                Some(exit) => {
                    proc.down = Some(down_detail(&self.exit_error(&exit, false)));
                    proc.next_start = Some(Instant::now() + proc.backoff);
                }
            }
        }
        let now = Instant::now();
        if let Some(at) = proc.next_start
            && at > now
        {
            return Err(AgentDown {
                error: DriverError::Unavailable {
                    driver: DRIVER,
                    what: self.what(),
                    detail: format!(
                        "{}; starting it again in {} s",
                        proc.down.as_deref().unwrap_or("it exited"),
                        (at - now).as_secs_f64().ceil()
                    ),
                },
            });
        }
        match self.spawn(&mut proc, deadline).await {
            Ok(()) => {
                proc.backoff = RESTART_BACKOFF_MIN;
                proc.next_start = None;
                Ok(true)
            }
            Err(e) => {
                proc.down = Some(down_detail(&e));
                proc.next_start = Some(Instant::now() + proc.backoff);
                proc.backoff = (proc.backoff * 2).min(RESTART_BACKOFF_MAX);
                Err(AgentDown { error: e })
            }
        }
    }

    async fn stop(&self) {
        let mut proc = self.proc.lock().await;
        Self::kill(&mut proc).await;
    }
}

// ---------------------------------------------------------------------
// The tunnel.

/// A tunnel on an ngrok agent.
#[derive(Debug)]
struct NgrokTunnel {
    api: Api,
    spec: Spec,
    agent: Option<Arc<Agent>>,
    shared: Arc<Mutex<Weak<Agent>>>,
    watcher: Option<JoinHandle<()>>,
    rx: watch::Receiver<TunnelState>,
}

impl Drop for NgrokTunnel {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

fn set(tx: &watch::Sender<TunnelState>, state: TunnelState) {
    tx.send_if_modified(|s| {
        if *s == state {
            false
        } else {
            *s = state;
            true
        }
    });
}

async fn watch_loop(
    api: Api,
    spec: Spec,
    agent: Option<Arc<Agent>>,
    every: Duration,
    tx: watch::Sender<TunnelState>,
) {
    let every = every.max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let deadline = Instant::now() + EXPOSE_TIMEOUT;
        if let Some(agent) = &agent
            && let Err(down) = agent.ensure_running(deadline).await
        {
            set(
                &tx,
                TunnelState::Down {
                    reason: down.error.to_string(),
                },
            );
            continue;
        }
        let state = match api.get(&spec.name).await {
            Ok(Ok(Some(t))) if points_at(&t.config.addr, spec.gateway) => {
                match public_url(&t.public_url) {
                    Some(url) => TunnelState::Up { url },
                    None => TunnelState::Starting,
                }
            }
            Ok(Ok(Some(t))) => TunnelState::Down {
                reason: format!(
                    "the agent's tunnel {} now forwards to {:?}, not to the gateway {}",
                    spec.name, t.config.addr, spec.gateway
                ),
            },
            Ok(Ok(None)) => match create(&api, &spec, agent.as_deref(), deadline).await {
                Ok(url) => TunnelState::Up { url },
                Err(e) => TunnelState::Down {
                    reason: format!("the tunnel is gone and could not be started again: {e}"),
                },
            },
            Ok(Err(e)) => TunnelState::Down {
                reason: format!("the agent answers {}", e.describe()),
            },
            Err(e) => TunnelState::Down {
                reason: e.to_string(),
            },
        };
        set(&tx, state);
    }
}

#[async_trait]
impl Tunnel for NgrokTunnel {
    fn watch(&self) -> watch::Receiver<TunnelState> {
        self.rx.clone()
    }

    async fn remove(mut self: Box<Self>) -> Result<(), DriverError> {
        if let Some(w) = self.watcher.take() {
            w.abort();
            let _ = w.await;
        }
        let agent = self.agent.take();
        let result = match self.api.delete(&self.spec.name).await {
            Ok(()) => Ok(()),
            // The agent is not running: its tunnels went with it.
            Err(DriverError::Unavailable { .. }) => Ok(()),
            // Ours: stopping it below ends the tunnel anyway.
            Err(_) if agent.is_some() => Ok(()),
            Err(e) => Err(e),
        };
        if let Some(agent) = agent {
            let slot = self.shared.lock().await;
            if let Some(last) = Arc::into_inner(agent) {
                last.stop().await;
            }
            drop(slot);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure() -> Exposure {
        Exposure {
            resolver: "public".into(),
            manifest: "demo".into(),
            host: "demo.example.com".into(),
            gateway: "127.0.0.1:18080".parse().expect("an address"),
        }
    }

    #[test]
    fn the_name_comes_from_manifest_and_resolver() {
        assert_eq!(tunnel_name(&exposure()), "omega-demo-public");
        let mut bad = exposure();
        bad.resolver = "pub lic".into();
        assert!(matches!(
            Spec::new(&Config::default(), &bad),
            Err(DriverError::Config { .. })
        ));
        let mut bad = exposure();
        bad.host = "demo.example.com/evil".into();
        assert!(matches!(
            Spec::new(&Config::default(), &bad),
            Err(DriverError::Config { .. })
        ));
    }

    #[test]
    fn the_request_carries_the_gateway_and_host() {
        let spec = Spec::new(&Config::default(), &exposure()).expect("valid");
        let body: Value = serde_json::from_slice(&spec.body()).expect("json");
        assert_eq!(
            body,
            json!({"name":"omega-demo-public","proto":"http","addr":"127.0.0.1:18080","host_header":"demo.example.com","inspect":false})
        );
        let config = Config {
            use_host_as_domain: true,
            ..Config::default()
        };
        let mut e = exposure();
        e.gateway = "0.0.0.0:18080".parse().expect("an address");
        let spec = Spec::new(&config, &e).expect("valid");
        let body: Value = serde_json::from_slice(&spec.body()).expect("json");
        assert_eq!(body["domain"], "demo.example.com");
        assert_eq!(body["addr"], "127.0.0.1:18080");
    }

    #[test]
    fn addresses_match_as_the_agent_lists_them() {
        let gw: SocketAddr = "127.0.0.1:18080".parse().expect("an address");
        assert!(points_at("http://127.0.0.1:18080", gw));
        assert!(points_at("127.0.0.1:18080", gw));
        assert!(points_at("http://localhost:18080", gw));
        assert!(points_at("18080", gw));
        assert!(!points_at("https://127.0.0.1:18080", gw));
        assert!(!points_at("http://127.0.0.1:18081", gw));
        assert!(!points_at("http://10.0.0.1:18080", gw));
        assert!(!points_at("", gw));
    }

    #[test]
    fn ngrok_codes_pick_the_error() {
        let e = |status, err: &str| ApiError {
            status,
            code: Some(103),
            msg: "failed to start tunnel".into(),
            err: err.into(),
        };
        let c = |err: &str| classify("POST x", &e(502, err), true);
        assert!(matches!(
            c("You must signup…\r\n\r\nERR_NGROK_4018\r\n"),
            DriverError::Unauthorized { .. }
        ));
        assert!(matches!(
            c("ERR_NGROK_107"),
            DriverError::Unauthorized { .. }
        ));
        assert!(matches!(
            c("limited\r\n\r\nERR_NGROK_108\r\n"),
            DriverError::NotCapable { .. }
        ));
        assert!(matches!(c("ERR_NGROK_319"), DriverError::NotCapable { .. }));
        assert!(matches!(c("ERR_NGROK_334"), DriverError::Conflict { .. }));
        assert!(matches!(c("session closed"), DriverError::Protocol { .. }));
        assert!(e(502, "tunnel session not ready yet").not_ready());
        assert!(
            e(
                503,
                "a successful ngrok tunnel session has not yet been established"
            )
            .not_ready()
        );
        assert!(!e(400, "tunnel session not ready yet").not_ready());
        let DriverError::Unauthorized { detail, .. } = c("x\r\n\r\nERR_NGROK_4018\r\n") else {
            unreachable!("classified above");
        };
        assert!(detail.contains("ERR_NGROK_4018") && detail.contains("NGROK_AUTHTOKEN"));
    }

    #[test]
    fn the_authtoken_is_not_shown() {
        let c = Config {
            authtoken: Some("s3cret-token".into()),
            ..Config::default()
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn session_errors_are_read_from_the_log() {
        let log = AgentLog::default();
        log.push(
            r#"{"lvl":"info","msg":"starting web service","obj":"web"}"#,
            true,
        );
        assert!(log.fatal().is_none());
        log.push(
            r#"{"err":"authentication failed: Usage of ngrok requires a verified account and authtoken.\r\n\r\nERR_NGROK_4018\r\n","lvl":"eror","msg":"failed to auth","obj":"tunnels.session"}"#,
            true,
        );
        let (code, text) = log.fatal().expect("a session error");
        assert_eq!(code, 4018);
        assert!(text.starts_with("failed to auth: authentication failed"));
    }
}
