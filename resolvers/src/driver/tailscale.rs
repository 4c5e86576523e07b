//! `tailscale-funnel`: the gateway on the internet at
//! `https://NODE.TAILNET.ts.net`, through Tailscale Funnel, configured with
//! tailscaled's LocalAPI on its unix socket ([`Config::socket`], default
//! [`DEFAULT_SOCKET`]).
//!
//! # What `expose` does
//!
//! Every request has `Host: local-tailscaled.sock` and `Sec-Tailscale:
//! localapi`, and one bounded exchange per connection
//! ([`crate::client`]); the whole of `expose` (and of `remove`) takes at
//! most [`EXPOSE_TIMEOUT`].
//!
//! 1. `GET /localapi/v0/status?peers=false`. `BackendState` must be
//!    `Running` (`NeedsLogin` / `NeedsMachineAuth` → [`DriverError::Unauthorized`],
//!    `Stopped` / `Starting` / `NoState` → [`DriverError::Unavailable`]).
//!    `Self.DNSName` without its trailing dot is HOST. The node must have
//!    what `tailscale funnel` checks (`ipn.CheckFunnelAccess(443)`): the
//!    `https` capability (HTTPS certificates on for the tailnet), the
//!    `funnel` node attribute, and a
//!    `https://tailscale.com/cap/funnel-ports?ports=…` capability whose
//!    ports include 443 — else [`DriverError::NotCapable`] saying which and
//!    how to grant it.
//! 2. `GET /localapi/v0/serve-config`: the config (or `null`) and its
//!    `Etag` (no `Etag`: tailscaled older than 1.50 → `NotCapable`).
//! 3. Merged in, everything else kept as it was (the config is handled as
//!    JSON, so fields this driver does not know survive):
//!    `TCP["443"] = {"HTTPS": true}`,
//!    `Web["HOST:443"].Handlers["/"] = {"Proxy": "http://GATEWAY"}` and
//!    `AllowFunnel["HOST:443"] = true` — exactly what `tailscale funnel
//!    --bg http://GATEWAY` writes. It refuses with [`DriverError::Conflict`],
//!    changing nothing, when HOST:443 already has a handler that is not
//!    this gateway (any mount point), when port 443 serves something other
//!    than HTTPS (`TCPForward`, plain HTTP, TLS-terminated TCP), or when a
//!    foreground `tailscale serve`/`funnel` session holds port 443. When
//!    the entries are already there it writes nothing.
//! 4. `POST /localapi/v0/serve-config` with `If-Match: ETAG`. `412
//!    Precondition Failed` (another client wrote in between) → back to
//!    step 2, at most [`MAX_ATTEMPTS`] times in all, then `Conflict`.
//!
//! The tunnel is then `Up { url: "https://HOST" }`. Funnel serves only the
//! node's own name: when the resolver's `host` is another name, the tunnel
//! still serves at HOST (the URL says so, and a warning is logged); point a
//! CNAME at it only if you also give Tailscale a certificate for that
//! name, which Funnel does not do. tailscaled proxies with the original
//! `Host` (HOST), adding `X-Forwarded-Host`, `X-Forwarded-For` and
//! `Tailscale-Funnel-Request: ?1`.
//!
//! While up, the tunnel re-reads status and serve config every
//! [`CHECK_EVERY`] (see [`TailscaleFunnel::check_every`]): if the entries
//! were removed behind its back (`tailscale funnel reset`) or tailscaled
//! stopped or went away, it reports `Down { reason }`, and `Up` again when
//! they are back. It never rewrites them on its own.
//!
//! # What `remove` does
//!
//! Steps 2 and 4 again, taking out exactly what `expose` put in: the `/`
//! handler of HOST:443 if it still proxies to this gateway (and HOST:443
//! once it has no handler left), `AllowFunnel["HOST:443"]` once HOST:443
//! has no handler (it may now belong to whoever replaced ours), and
//! `TCP["443"]` once no `Web` entry on port 443 remains (and only if it
//! is the HTTPS kind). Nothing of ours left → success without a write.
//!
//! # Failures
//!
//! | cause | error |
//! |---|---|
//! | no socket / connection refused | `Unavailable`: start tailscaled, or pass `--tailscale-socket PATH` |
//! | `403` (not root, not the operator) | `Unauthorized`: `sudo tailscale set --operator=$USER` |
//! | logged out / awaiting approval | `Unauthorized`: `tailscale up` / approve the machine |
//! | missing `https` / `funnel` / port 443 | `NotCapable`: admin console / policy file `nodeAttrs` |
//! | shields up | `NotCapable`: `tailscale set --shields-up=false` |
//! | foreign entry on HOST:443 or port 443 | `Conflict`, naming it and the command that removes it |
//! | `412` more than [`MAX_ATTEMPTS`] times | `Conflict`, naming the count |
//! | any other refusal | `Protocol` with tailscaled's message |
//! | no answer in time | `Timeout` |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use omega_zgraph::ResolverMode;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::{Driver, DriverError, EXPOSE_TIMEOUT, Exposure, Tunnel, TunnelState};
use crate::client::{self, ClientError, Target};

/// Where tailscaled's LocalAPI listens on Linux.
pub const DEFAULT_SOCKET: &str = "/var/run/tailscale/tailscaled.sock";
/// The `Host` the LocalAPI requires.
pub const LOCALAPI_HOST: &str = "local-tailscaled.sock";
/// The public port: Funnel's HTTPS port that needs no suffix in URLs.
pub const FUNNEL_PORT: u16 = 443;
/// Read-merge-write attempts before a lasting `412` becomes a conflict.
pub const MAX_ATTEMPTS: u32 = 5;
/// How often an up tunnel re-checks its serve-config entries by default.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

const DRIVER: &str = "tailscale-funnel";
const HTTPS_CAP: &str = "https";
const FUNNEL_CAP: &str = "funnel";
const FUNNEL_PORTS_CAP: &str = "https://tailscale.com/cap/funnel-ports";
const STATUS: &str = "/localapi/v0/status?peers=false";
const SERVE_CONFIG: &str = "/localapi/v0/serve-config";

/// How the driver reaches tailscaled (`omega node --tailscale-socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// tailscaled's LocalAPI socket.
    pub socket: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
        }
    }
}

/// The `tailscale-funnel` driver (see the module docs).
#[derive(Debug)]
pub struct TailscaleFunnel {
    config: Config,
    check_every: Duration,
}

impl TailscaleFunnel {
    /// A driver talking to the tailscaled of `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            check_every: CHECK_EVERY,
        }
    }

    /// How often an up tunnel re-checks that its entries are still there
    /// (default [`CHECK_EVERY`]; at least 10 ms).
    #[must_use]
    pub fn check_every(mut self, every: Duration) -> Self {
        self.check_every = every.max(Duration::from_millis(10));
        self
    }
}

#[async_trait]
impl Driver for TailscaleFunnel {
    fn mode(&self) -> ResolverMode {
        ResolverMode::TailscaleFunnel
    }

    async fn expose(&self, exposure: &Exposure) -> Result<Box<dyn Tunnel>, DriverError> {
        let api = LocalApi::new(&self.config);
        let work = expose(&api, exposure);
        let ours = tokio::time::timeout(EXPOSE_TIMEOUT, work)
            .await
            .map_err(|_| DriverError::Timeout {
                driver: DRIVER,
                what: format!("exposing {} through {}", exposure.gateway, api.what()),
                secs: EXPOSE_TIMEOUT.as_secs(),
            })??;
        let url = format!("https://{}", ours.host);
        if !exposure.host.eq_ignore_ascii_case(&ours.host) {
            tracing::warn!(
                resolver = %exposure.resolver,
                manifest = %exposure.manifest,
                "tailscale-funnel serves only the node's own name: resolver host {} is \
                 reachable at {url} instead",
                exposure.host
            );
        }
        tracing::info!(
            resolver = %exposure.resolver,
            manifest = %exposure.manifest,
            "tailscale-funnel: {url} → {}",
            ours.proxy
        );
        let (tx, _) = watch::channel(TunnelState::Up { url: url.clone() });
        let state = Arc::new(tx);
        let monitor = tokio::spawn(monitor(
            api.clone(),
            ours.clone(),
            url,
            state.clone(),
            self.check_every,
        ))
        .abort_handle();
        Ok(Box::new(FunnelTunnel {
            api,
            ours,
            state,
            monitor,
        }))
    }
}

/// What one exposure put into the serve config.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ours {
    /// The node's name (HOST).
    host: String,
    /// `HOST:443`.
    host_port: String,
    /// `http://GATEWAY`.
    proxy: String,
}

async fn expose(api: &LocalApi, exposure: &Exposure) -> Result<Ours, DriverError> {
    if exposure.gateway.port() == 0 {
        return Err(DriverError::Config {
            driver: DRIVER,
            detail: format!(
                "the gateway address {} has no port; give `omega node --gateway` a fixed port",
                exposure.gateway
            ),
        });
    }
    let host = api.node().await?;
    let ours = Ours {
        host_port: format!("{host}:{FUNNEL_PORT}"),
        proxy: format!("http://{}", exposure.gateway),
        host,
    };
    api.update(|config| merge_in(config, &ours)).await?;
    Ok(ours)
}

#[derive(Debug)]
struct FunnelTunnel {
    api: LocalApi,
    ours: Ours,
    state: Arc<watch::Sender<TunnelState>>,
    monitor: tokio::task::AbortHandle,
}

impl Drop for FunnelTunnel {
    fn drop(&mut self) {
        self.monitor.abort();
    }
}

#[async_trait]
impl Tunnel for FunnelTunnel {
    fn watch(&self) -> watch::Receiver<TunnelState> {
        self.state.subscribe()
    }

    async fn remove(self: Box<Self>) -> Result<(), DriverError> {
        self.monitor.abort();
        let work = self.api.update(|config| merge_out(config, &self.ours));
        tokio::time::timeout(EXPOSE_TIMEOUT, work)
            .await
            .map_err(|_| DriverError::Timeout {
                driver: DRIVER,
                what: format!(
                    "removing the funnel of {} from {}",
                    self.ours.host_port,
                    self.api.what()
                ),
                secs: EXPOSE_TIMEOUT.as_secs(),
            })??;
        self.state.send_replace(TunnelState::Down {
            reason: "removed".into(),
        });
        tracing::info!("tailscale-funnel: removed https://{}", self.ours.host);
        Ok(())
    }
}

async fn monitor(
    api: LocalApi,
    ours: Ours,
    url: String,
    state: Arc<watch::Sender<TunnelState>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = match check(&api, &ours).await {
            Ok(()) => TunnelState::Up { url: url.clone() },
            Err(reason) => TunnelState::Down { reason },
        };
        state.send_if_modified(|s| {
            if *s == now {
                false
            } else {
                tracing::warn!("tailscale-funnel {}: {now}", ours.host_port);
                *s = now;
                true
            }
        });
    }
}

/// Whether the exposure still stands; else why not.
async fn check(api: &LocalApi, ours: &Ours) -> Result<(), String> {
    let check = async {
        let host = api.node().await.map_err(|e| e.to_string())?;
        if host != ours.host {
            return Err(format!(
                "the node is now called {host}, not {}; re-apply the resolver",
                ours.host
            ));
        }
        let (config, _) = api.serve_config().await.map_err(|e| e.to_string())?;
        if has_ours(&config, ours) {
            Ok(())
        } else {
            Err(format!(
                "tailscaled's serve config no longer funnels {} to {} (changed outside \
                 Omega, e.g. `tailscale funnel reset`); re-apply the resolver to restore it",
                ours.host_port, ours.proxy
            ))
        }
    };
    tokio::time::timeout(EXPOSE_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err(format!("{} did not answer in time", api.what())))
}

// ---------------------------------------------------------------------------
// The LocalAPI.

#[derive(Debug, Clone)]
struct LocalApi {
    socket: PathBuf,
    target: Target,
}

/// How a serve-config POST went.
enum Posted {
    Done,
    /// `412`: the ETag was stale.
    Stale,
}

impl LocalApi {
    fn new(config: &Config) -> Self {
        Self {
            socket: config.socket.clone(),
            target: Target::Unix(config.socket.clone()),
        }
    }

    fn what(&self) -> String {
        format!("tailscaled at {}", self.socket.display())
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Result<client::Response, DriverError> {
        let mut headers = vec![("Sec-Tailscale", "localapi")];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        headers.extend_from_slice(extra);
        let r = client::request(
            &self.target,
            LOCALAPI_HOST,
            method,
            path,
            &headers,
            body,
            client::TIMEOUT,
        )
        .await
        .map_err(|e| self.client_error(method, path, e))?;
        if r.status == 403 {
            return Err(DriverError::Unauthorized {
                driver: DRIVER,
                detail: format!(
                    "{} refused {method} {path}: {}; the LocalAPI lets only root and the \
                     tailscale operator do this: run `sudo tailscale set \
                     --operator=$USER` as the user omega runs as (or run omega as root)",
                    self.what(),
                    message(&r)
                ),
            });
        }
        if r.status == 401 {
            return Err(DriverError::Unauthorized {
                driver: DRIVER,
                detail: format!("{} refused {method} {path}: {}", self.what(), message(&r)),
            });
        }
        Ok(r)
    }

    fn client_error(&self, method: &str, path: &str, e: ClientError) -> DriverError {
        match e {
            ClientError::Connect { error, .. }
                if error.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                DriverError::Unauthorized {
                    driver: DRIVER,
                    detail: format!(
                        "cannot open {}: {error}; run omega as a user that may connect to \
                         it (root, or after `sudo tailscale set --operator=$USER`)",
                        self.socket.display()
                    ),
                }
            }
            ClientError::Connect { error, .. } => DriverError::Unavailable {
                driver: DRIVER,
                what: self.what(),
                detail: format!(
                    "{error}; start tailscaled (`sudo systemctl start tailscaled`) or, if it \
                     listens elsewhere, pass `omega node --tailscale-socket PATH`"
                ),
            },
            ClientError::Timeout { secs, .. } => DriverError::Timeout {
                driver: DRIVER,
                what: format!("{} answering {method} {path}", self.what()),
                secs,
            },
            other => DriverError::Protocol {
                driver: DRIVER,
                what: format!("{method} {path} on {}", self.what()),
                detail: other.to_string(),
            },
        }
    }

    /// Step 1: the node's name, once it is running and may funnel on 443.
    async fn node(&self) -> Result<String, DriverError> {
        let r = self.call("GET", STATUS, &[], b"").await?;
        if r.status != 200 {
            return Err(self.refused("GET", STATUS, &r));
        }
        let status: Value = serde_json::from_slice(&r.body).map_err(|e| DriverError::Protocol {
            driver: DRIVER,
            what: format!("GET {STATUS} on {}", self.what()),
            detail: format!("not JSON: {e}"),
        })?;
        parse_status(&status).map_err(|e| self.status_error(e))
    }

    fn status_error(&self, e: StatusError) -> DriverError {
        let what = self.what();
        match e {
            StatusError::Malformed(detail) => DriverError::Protocol {
                driver: DRIVER,
                what: format!("GET {STATUS} on {what}"),
                detail,
            },
            StatusError::LoggedOut(state) => DriverError::Unauthorized {
                driver: DRIVER,
                detail: format!(
                    "{what} is not logged in (BackendState {state}): log this node in with \
                     `sudo tailscale up`"
                ),
            },
            StatusError::AwaitingApproval => DriverError::Unauthorized {
                driver: DRIVER,
                detail: format!(
                    "{what} waits for a tailnet admin to approve this machine \
                     (BackendState NeedsMachineAuth): approve it in the admin console's \
                     Machines page"
                ),
            },
            StatusError::NotRunning(state) => DriverError::Unavailable {
                driver: DRIVER,
                what,
                detail: format!(
                    "Tailscale is not running (BackendState {state}): run `sudo tailscale up`"
                ),
            },
            StatusError::NotCapable(detail) => DriverError::NotCapable {
                driver: DRIVER,
                detail: format!("{what}: {detail}"),
            },
        }
    }

    /// Step 2: the serve config (an object; `null` is an empty one) and
    /// its ETag.
    async fn serve_config(&self) -> Result<(Map<String, Value>, String), DriverError> {
        let r = self.call("GET", SERVE_CONFIG, &[], b"").await?;
        if r.status == 404 {
            return Err(self.no_serve_config());
        }
        if r.status != 200 {
            return Err(self.refused("GET", SERVE_CONFIG, &r));
        }
        let Some(etag) = r.header("etag").map(str::to_owned) else {
            return Err(DriverError::NotCapable {
                driver: DRIVER,
                detail: format!(
                    "{} answers GET {SERVE_CONFIG} without an Etag, so a change cannot be \
                     made safely beside other clients: upgrade Tailscale to 1.50 or newer",
                    self.what()
                ),
            });
        };
        let malformed = |detail: String| DriverError::Protocol {
            driver: DRIVER,
            what: format!("GET {SERVE_CONFIG} on {}", self.what()),
            detail,
        };
        let config = match serde_json::from_slice::<Value>(&r.body) {
            Ok(Value::Null) => Map::new(),
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return Err(malformed(format!(
                    "not a serve config: {}",
                    clip(&other.to_string(), 60)
                )));
            }
            Err(e) => return Err(malformed(format!("not JSON: {e}"))),
        };
        Ok((config, etag))
    }

    fn no_serve_config(&self) -> DriverError {
        DriverError::NotCapable {
            driver: DRIVER,
            detail: format!(
                "{} has no {SERVE_CONFIG} (a build without serve support, or too old): \
                 install a current Tailscale",
                self.what()
            ),
        }
    }

    /// Step 4.
    async fn post(&self, config: &Map<String, Value>, etag: &str) -> Result<Posted, DriverError> {
        let body = serde_json::to_vec(config).unwrap_or_else(|_| b"{}".to_vec());
        let r = self
            .call("POST", SERVE_CONFIG, &[("If-Match", etag)], &body)
            .await?;
        match r.status {
            200 => Ok(Posted::Done),
            412 => Ok(Posted::Stale),
            404 => Err(self.no_serve_config()),
            _ => Err(self.post_refused(&r)),
        }
    }

    fn post_refused(&self, r: &client::Response) -> DriverError {
        let msg = message(r);
        let what = self.what();
        if msg.contains("shields-up") {
            DriverError::NotCapable {
                driver: DRIVER,
                detail: format!(
                    "{what}: {msg}: allow incoming connections with `sudo tailscale set \
                     --shields-up=false`"
                ),
            }
        } else if msg.contains("netMap is nil") {
            DriverError::Unauthorized {
                driver: DRIVER,
                detail: format!(
                    "{what} has no network map ({msg}): the node is logged out or still \
                     starting; log it in with `sudo tailscale up`"
                ),
            }
        } else if msg.contains("config file is locked") {
            DriverError::NotCapable {
                driver: DRIVER,
                detail: format!(
                    "{what}: {msg}: tailscaled runs from a config file; put the funnel in \
                     that file or run tailscaled without --config"
                ),
            }
        } else if msg.contains("listener already exists") || msg.contains("already serving") {
            DriverError::Conflict {
                driver: DRIVER,
                detail: format!(
                    "{what} refused the serve config: {msg}; stop the other `tailscale \
                     serve`/`tailscale funnel` on port {FUNNEL_PORT} (`tailscale funnel \
                     status` shows it)"
                ),
            }
        } else {
            DriverError::Protocol {
                driver: DRIVER,
                what: format!("POST {SERVE_CONFIG} on {what}"),
                detail: format!("HTTP {}: {msg}", r.status),
            }
        }
    }

    fn refused(&self, method: &str, path: &str, r: &client::Response) -> DriverError {
        DriverError::Protocol {
            driver: DRIVER,
            what: format!("{method} {path} on {}", self.what()),
            detail: format!("HTTP {}: {}", r.status, message(r)),
        }
    }

    /// Steps 2–4 with `edit`, retried on `412` up to [`MAX_ATTEMPTS`]
    /// times. `edit` says whether it changed anything (nothing → no write).
    async fn update(
        &self,
        edit: impl Fn(&mut Map<String, Value>) -> Result<bool, Refusal>,
    ) -> Result<(), DriverError> {
        for _ in 0..MAX_ATTEMPTS {
            let (mut config, etag) = self.serve_config().await?;
            let changed = edit(&mut config).map_err(|r| match r {
                Refusal::Conflict(detail) => DriverError::Conflict {
                    driver: DRIVER,
                    detail: format!("{}: {detail}", self.what()),
                },
                Refusal::Malformed(detail) => DriverError::Protocol {
                    driver: DRIVER,
                    what: format!("GET {SERVE_CONFIG} on {}", self.what()),
                    detail,
                },
            })?;
            if !changed {
                return Ok(());
            }
            match self.post(&config, &etag).await? {
                Posted::Done => return Ok(()),
                Posted::Stale => {
                    tracing::debug!("tailscale-funnel: serve config changed meanwhile; again")
                }
            }
        }
        Err(DriverError::Conflict {
            driver: DRIVER,
            detail: format!(
                "{}: the serve config changed between reading and writing it {MAX_ATTEMPTS} \
                 times in a row (`412 Precondition Failed`: another client, such as \
                 `tailscale serve`, keeps writing it); try again when it is done",
                self.what()
            ),
        })
    }
}

/// At most `n` bytes of `s` (on a character boundary).
fn clip(s: &str, n: usize) -> &str {
    &s[..s.floor_char_boundary(n)]
}

/// What the LocalAPI said: the `error` of a JSON error, else the text.
fn message(r: &client::Response) -> String {
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&r.body)
        && let Some(Value::String(e)) = m.get("error")
        && !e.is_empty()
    {
        let mut e = e.clone();
        e.truncate(e.floor_char_boundary(300));
        return e;
    }
    match r.text() {
        t if t.is_empty() => "(no message)".into(),
        t => t,
    }
}

// ---------------------------------------------------------------------------
// The status.

#[derive(Debug, PartialEq, Eq)]
enum StatusError {
    Malformed(String),
    LoggedOut(String),
    AwaitingApproval,
    NotRunning(String),
    NotCapable(String),
}

/// The node's name from a status, once it is `Running` and may funnel on
/// port 443 (`ipn.CheckFunnelAccess`).
fn parse_status(status: &Value) -> Result<String, StatusError> {
    let state = status
        .get("BackendState")
        .and_then(Value::as_str)
        .ok_or_else(|| StatusError::Malformed("no BackendState".into()))?;
    match state {
        "Running" => {}
        "NeedsLogin" => return Err(StatusError::LoggedOut(state.into())),
        "NeedsMachineAuth" => return Err(StatusError::AwaitingApproval),
        "Stopped" | "Starting" | "NoState" => return Err(StatusError::NotRunning(state.into())),
        other => {
            return Err(StatusError::Malformed(format!(
                "unknown BackendState {:?}",
                clip(other, 40)
            )));
        }
    }
    let me = status
        .get("Self")
        .and_then(Value::as_object)
        .ok_or_else(|| StatusError::Malformed("no Self".into()))?;
    let dns = me.get("DNSName").and_then(Value::as_str).unwrap_or("");
    let host = dns.strip_suffix('.').unwrap_or(dns).to_ascii_lowercase();
    if !valid_dns_name(&host) {
        return Err(StatusError::Malformed(format!(
            "Self.DNSName {:?} is not a DNS name",
            clip(dns, 80)
        )));
    }
    let mut caps: Vec<&str> = me
        .get("CapMap")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    // Tailscale before CapMap (1.60) sent only the list.
    if let Some(list) = me.get("Capabilities").and_then(Value::as_array) {
        caps.extend(list.iter().filter_map(Value::as_str));
    }
    check_funnel_access(&caps, FUNNEL_PORT).map_err(StatusError::NotCapable)?;
    Ok(host)
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `ipn.NodeCanFunnel` + `ipn.CheckFunnelPort`, with advice.
fn check_funnel_access(caps: &[&str], port: u16) -> Result<(), String> {
    if !caps.contains(&HTTPS_CAP) {
        return Err(
            "Funnel needs HTTPS certificates, which are off for this tailnet (the \
                    node lacks the `https` capability): enable HTTPS in the admin console \
                    (DNS → HTTPS Certificates, https://tailscale.com/s/https)"
                .into(),
        );
    }
    if !caps.contains(&FUNNEL_CAP) {
        return Err(
            "this node lacks the `funnel` node attribute: add it in the tailnet \
                    policy file, e.g. \"nodeAttrs\": [{\"target\": [\"autogroup:member\"], \
                    \"attr\": [\"funnel\"]}] (https://tailscale.com/s/no-funnel)"
                .into(),
        );
    }
    let ports = caps.iter().find_map(|c| {
        let (cap, query) = c.split_once('?')?;
        if cap != FUNNEL_PORTS_CAP {
            return None;
        }
        query.split('&').find_map(|kv| kv.strip_prefix("ports="))
    });
    let Some(ports) = ports.map(|p| p.replace("%2C", ",").replace("%2c", ",")) else {
        return Err(format!(
            "port {port} is not allowed for funnel (the node has no funnel-ports \
             capability): the tailnet policy's `funnel` node attribute grants it"
        ));
    };
    let allowed = ports.split(',').any(|range| match range.split_once('-') {
        None => range.parse::<u16>() == Ok(port),
        Some((first, last)) => match (first.parse::<u16>(), last.parse::<u16>()) {
            (Ok(first), Ok(last)) => (first..=last).contains(&port),
            _ => false,
        },
    });
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "port {port} is not allowed for funnel; allowed ports are: {ports}"
        ))
    }
}

// ---------------------------------------------------------------------------
// The serve config, as JSON.

/// Why an edit was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Someone else's entry is in the way.
    Conflict(String),
    /// The config is not shaped like a serve config.
    Malformed(String),
}

/// `config[key]` as an object, created if absent or `null`.
fn object<'a>(
    config: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>, Refusal> {
    let slot = config.entry(key).or_insert_with(|| json!({}));
    if slot.is_null() {
        *slot = json!({});
    }
    slot.as_object_mut()
        .ok_or_else(|| Refusal::Malformed(format!("`{key}` is not an object")))
}

fn is_ours(handler: &Value, proxy: &str) -> bool {
    let Some(h) = handler.as_object() else {
        return false;
    };
    let set = |k: &str| {
        h.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    h.get("Proxy")
        .and_then(Value::as_str)
        .is_some_and(|p| p.trim_end_matches('/') == proxy)
        && !set("Path")
        && !set("Text")
        && !set("Redirect")
}

fn describe(handler: &Value) -> String {
    for kind in ["Proxy", "Path", "Text", "Redirect"] {
        if let Some(v) = handler.get(kind).and_then(Value::as_str)
            && !v.is_empty()
        {
            return format!("{} {}", kind.to_ascii_lowercase(), clip(v, 80));
        }
    }
    clip(&handler.to_string(), 80).to_owned()
}

/// The kind of a `TCPPortHandler` (`serveTypeFromPortHandler`).
fn serve_type(handler: &Value) -> &'static str {
    let flag = |k: &str| handler.get(k).and_then(Value::as_bool) == Some(true);
    let text = |k: &str| {
        handler
            .get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if flag("HTTP") {
        "http"
    } else if flag("HTTPS") {
        "https"
    } else if text("TerminateTLS") {
        "tls-terminated-tcp"
    } else if text("TCPForward") {
        "tcp"
    } else {
        "nothing"
    }
}

/// Whether the config funnels `ours` (what `merge_in` makes true).
fn has_ours(config: &Map<String, Value>, ours: &Ours) -> bool {
    let port = FUNNEL_PORT.to_string();
    let tcp = config
        .get("TCP")
        .and_then(|t| t.get(&port))
        .is_some_and(|h| serve_type(h) == "https");
    let web = config
        .get("Web")
        .and_then(|w| w.get(&ours.host_port))
        .and_then(|w| w.get("Handlers"))
        .and_then(|h| h.get("/"))
        .is_some_and(|h| is_ours(h, &ours.proxy));
    let funnel = config
        .get("AllowFunnel")
        .and_then(|f| f.get(&ours.host_port))
        .and_then(Value::as_bool)
        == Some(true);
    tcp && web && funnel
}

/// Adds our three entries, refusing to replace anyone else's.
fn merge_in(config: &mut Map<String, Value>, ours: &Ours) -> Result<bool, Refusal> {
    let port = FUNNEL_PORT.to_string();
    let hp = &ours.host_port;
    // A foreground session's listener on 443 would make tailscaled refuse.
    if let Some(Value::Object(sessions)) = config.get("Foreground") {
        for (id, session) in sessions {
            if session.get("TCP").and_then(|t| t.get(&port)).is_some() {
                return Err(Refusal::Conflict(format!(
                    "a foreground `tailscale serve`/`tailscale funnel` session ({}) \
                     holds port {port}; stop it (Ctrl-C where it runs)",
                    clip(id, 40)
                )));
            }
        }
    }
    if let Some(existing) = config.get("TCP").and_then(|t| t.get(&port))
        && !existing.is_null()
        && serve_type(existing) != "https"
    {
        let kind = serve_type(existing);
        let off = match kind {
            "http" => format!("--http={port}"),
            "tls-terminated-tcp" => format!("--tls-terminated-tcp={port}"),
            _ => format!("--tcp={port}"),
        };
        return Err(Refusal::Conflict(format!(
            "port {port} already serves {kind} ({}), not HTTPS, so Funnel cannot \
             serve {hp} there; remove it with `tailscale serve {off} off`",
            clip(&existing.to_string(), 80)
        )));
    }
    if let Some(web) = config.get("Web").and_then(|w| w.get(hp))
        && let Some(Value::Object(handlers)) = web.get("Handlers")
    {
        let foreign: Vec<String> = handlers
            .iter()
            .filter(|(mount, h)| !(mount.as_str() == "/" && is_ours(h, &ours.proxy)))
            .map(|(mount, h)| format!("{mount} → {}", describe(h)))
            .collect();
        if !foreign.is_empty() {
            return Err(Refusal::Conflict(format!(
                "{hp} already serves {}, not this node's gateway ({}); remove it with \
                 `tailscale funnel --https={port} off` (or `tailscale serve --https={port} \
                 off`) and apply again",
                foreign.join(", "),
                ours.proxy
            )));
        }
    }
    let mut changed = false;
    let tcp = object(config, "TCP")?;
    if tcp.get(&port).is_none_or(Value::is_null) {
        tcp.insert(port.clone(), json!({ "HTTPS": true }));
        changed = true;
    }
    let web = object(config, "Web")?;
    let entry = web.entry(hp.clone()).or_insert_with(|| json!({}));
    if entry.is_null() {
        *entry = json!({});
    }
    let entry = entry
        .as_object_mut()
        .ok_or_else(|| Refusal::Malformed(format!("`Web[{hp}]` is not an object")))?;
    let handlers = object(entry, "Handlers")?;
    if !handlers.get("/").is_some_and(|h| is_ours(h, &ours.proxy)) {
        handlers.insert("/".into(), json!({ "Proxy": ours.proxy }));
        changed = true;
    }
    let funnel = object(config, "AllowFunnel")?;
    if funnel.get(hp).and_then(Value::as_bool) != Some(true) {
        funnel.insert(hp.clone(), Value::Bool(true));
        changed = true;
    }
    Ok(changed)
}

/// Takes out what `merge_in` added, and nothing anyone else owns.
fn merge_out(config: &mut Map<String, Value>, ours: &Ours) -> Result<bool, Refusal> {
    let port = FUNNEL_PORT.to_string();
    let hp = &ours.host_port;
    let mut changed = false;
    if let Some(Value::Object(web)) = config.get_mut("Web") {
        if let Some(Value::Object(entry)) = web.get_mut(hp) {
            if let Some(Value::Object(handlers)) = entry.get_mut("Handlers")
                && handlers.get("/").is_some_and(|h| is_ours(h, &ours.proxy))
            {
                handlers.shift_remove("/");
                changed = true;
            }
            if entry
                .get("Handlers")
                .is_none_or(|h| h.as_object().is_none_or(Map::is_empty))
            {
                web.shift_remove(hp);
                changed = true;
            }
        } else if web.get(hp).is_some_and(Value::is_null) {
            web.shift_remove(hp);
            changed = true;
        }
    }
    let web_has = |config: &Map<String, Value>, key: &str| {
        config
            .get("Web")
            .and_then(Value::as_object)
            .is_some_and(|w| w.contains_key(key))
    };
    let suffix = format!(":{port}");
    let web_on_port = config
        .get("Web")
        .and_then(Value::as_object)
        .is_some_and(|w| w.keys().any(|k| k.ends_with(&suffix)));
    if !web_has(config, hp)
        && let Some(Value::Object(funnel)) = config.get_mut("AllowFunnel")
        && funnel.shift_remove(hp).is_some()
    {
        changed = true;
    }
    if !web_on_port
        && let Some(Value::Object(tcp)) = config.get_mut("TCP")
        && tcp.get(&port).is_some_and(|h| serve_type(h) == "https")
    {
        tcp.shift_remove(&port);
        changed = true;
    }
    for key in ["TCP", "Web", "AllowFunnel"] {
        if config
            .get(key)
            .is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
        {
            config.shift_remove(key);
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> Ours {
        Ours {
            host: "n.t.ts.net".into(),
            host_port: "n.t.ts.net:443".into(),
            proxy: "http://127.0.0.1:8080".into(),
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn merge_adds_three_entries_and_keeps_the_rest() {
        let mut c = obj(json!({
            "TCP": {"8443": {"HTTPS": true}},
            "Web": {"n.t.ts.net:8443": {"Handlers": {"/": {"Text": "hi"}}}},
            "Services": {"svc:x": {"Tun": true}},
            "FutureField": [1, 2]
        }));
        let before = c.clone();
        assert_eq!(merge_in(&mut c, &ours()), Ok(true));
        assert!(has_ours(&c, &ours()));
        assert_eq!(c["TCP"]["8443"], before["TCP"]["8443"]);
        assert_eq!(
            c["Web"]["n.t.ts.net:8443"],
            before["Web"]["n.t.ts.net:8443"]
        );
        assert_eq!(c["Services"], before["Services"]);
        assert_eq!(c["FutureField"], json!([1, 2]));
        assert_eq!(merge_in(&mut c, &ours()), Ok(false), "idempotent");
        assert_eq!(merge_out(&mut c, &ours()), Ok(true));
        assert_eq!(c, before);
        assert_eq!(merge_out(&mut c, &ours()), Ok(false), "already gone");
    }

    #[test]
    fn merge_from_null_and_back_to_empty() {
        let mut c = Map::new();
        assert_eq!(merge_in(&mut c, &ours()), Ok(true));
        assert_eq!(
            Value::Object(c.clone()),
            json!({
                "TCP": {"443": {"HTTPS": true}},
                "Web": {"n.t.ts.net:443": {"Handlers": {"/": {"Proxy": "http://127.0.0.1:8080"}}}},
                "AllowFunnel": {"n.t.ts.net:443": true}
            })
        );
        assert_eq!(merge_out(&mut c, &ours()), Ok(true));
        assert!(c.is_empty());
    }

    #[test]
    fn merge_refuses_foreign_entries() {
        let foreign = |v: Value| {
            let mut c = obj(v);
            let before = c.clone();
            let r = merge_in(&mut c, &ours());
            assert_eq!(c, before, "nothing changed on refusal");
            match r {
                Err(Refusal::Conflict(d)) => d,
                other => panic!("{other:?}"),
            }
        };
        let d = foreign(
            json!({"Web": {"n.t.ts.net:443": {"Handlers": {"/": {"Proxy": "http://127.0.0.1:3000"}}}}}),
        );
        assert!(d.contains("proxy http://127.0.0.1:3000"), "{d}");
        let d =
            foreign(json!({"Web": {"n.t.ts.net:443": {"Handlers": {"/api": {"Path": "/srv"}}}}}));
        assert!(d.contains("/api → path /srv"), "{d}");
        let d = foreign(json!({"TCP": {"443": {"TCPForward": "127.0.0.1:22"}}}));
        assert!(
            d.contains("already serves tcp") && d.contains("--tcp=443 off"),
            "{d}"
        );
        let d = foreign(json!({"Foreground": {"sess1": {"TCP": {"443": {"HTTPS": true}}}}}));
        assert!(d.contains("foreground"), "{d}");
        let mut c = obj(json!({"TCP": []}));
        assert!(matches!(
            merge_in(&mut c, &ours()),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn remove_leaves_what_others_own() {
        // Someone replaced our handler: theirs stays, and so does funnel.
        let theirs = json!({
            "TCP": {"443": {"HTTPS": true}},
            "Web": {"n.t.ts.net:443": {"Handlers": {"/": {"Proxy": "http://127.0.0.1:3000"}}}},
            "AllowFunnel": {"n.t.ts.net:443": true}
        });
        let mut c = obj(theirs.clone());
        assert_eq!(merge_out(&mut c, &ours()), Ok(false));
        assert_eq!(Value::Object(c), theirs);
        // Another name still on 443 keeps TCP 443.
        let mut c = obj(json!({
            "TCP": {"443": {"HTTPS": true}},
            "Web": {
                "n.t.ts.net:443": {"Handlers": {"/": {"Proxy": "http://127.0.0.1:8080/"}}},
                "svc.t.ts.net:443": {"Handlers": {"/": {"Text": "x"}}}
            },
            "AllowFunnel": {"n.t.ts.net:443": true}
        }));
        assert_eq!(merge_out(&mut c, &ours()), Ok(true));
        assert_eq!(
            Value::Object(c),
            json!({
                "TCP": {"443": {"HTTPS": true}},
                "Web": {"svc.t.ts.net:443": {"Handlers": {"/": {"Text": "x"}}}}
            })
        );
    }

    fn status(state: &str, caps: &[&str]) -> Value {
        let cap_map: Map<String, Value> = caps
            .iter()
            .map(|c| ((*c).to_owned(), Value::Null))
            .collect();
        json!({"BackendState": state, "Self": {"DNSName": "Omega-A.tail1234.ts.net.", "CapMap": cap_map}})
    }

    const ALL: [&str; 3] = [
        "https",
        "funnel",
        "https://tailscale.com/cap/funnel-ports?ports=443,8443,10000",
    ];

    #[test]
    fn status_gives_the_name_once_the_node_may_funnel() {
        assert_eq!(
            parse_status(&status("Running", &ALL)),
            Ok("omega-a.tail1234.ts.net".into())
        );
        let old = json!({"BackendState": "Running",
            "Self": {"DNSName": "a.b.ts.net.", "Capabilities": ALL}});
        assert_eq!(parse_status(&old), Ok("a.b.ts.net".into()));
        assert_eq!(
            parse_status(&status("NeedsLogin", &ALL)),
            Err(StatusError::LoggedOut("NeedsLogin".into()))
        );
        assert_eq!(
            parse_status(&status("NeedsMachineAuth", &ALL)),
            Err(StatusError::AwaitingApproval)
        );
        assert_eq!(
            parse_status(&status("Stopped", &ALL)),
            Err(StatusError::NotRunning("Stopped".into()))
        );
        assert!(matches!(
            parse_status(&status("Weird", &ALL)),
            Err(StatusError::Malformed(_))
        ));
        assert!(matches!(
            parse_status(&json!({"BackendState": "Running", "Self": {"DNSName": "bad name."}})),
            Err(StatusError::Malformed(_))
        ));
        assert!(matches!(
            parse_status(&json!([])),
            Err(StatusError::Malformed(_))
        ));
    }

    #[test]
    fn funnel_access_is_checked_like_the_cli() {
        assert!(check_funnel_access(&ALL, 443).is_ok());
        let e = check_funnel_access(&ALL[1..], 443).unwrap_err();
        assert!(e.contains("`https`"), "{e}");
        let e = check_funnel_access(&[ALL[0], ALL[2]], 443).unwrap_err();
        assert!(
            e.contains("`funnel` node attribute") && e.contains("policy file"),
            "{e}"
        );
        let e = check_funnel_access(&ALL[..2], 443).unwrap_err();
        assert!(e.contains("no funnel-ports"), "{e}");
        let e = check_funnel_access(
            &[
                ALL[0],
                ALL[1],
                "https://tailscale.com/cap/funnel-ports?ports=8443",
            ],
            443,
        )
        .unwrap_err();
        assert!(e.contains("allowed ports are: 8443"), "{e}");
        let range = "https://tailscale.com/cap/funnel-ports?ports=80%2C400-500";
        assert!(check_funnel_access(&[ALL[0], ALL[1], range], 443).is_ok());
        let bogus = "https://tailscale.com/cap/funnel-portsX?ports=443";
        assert!(check_funnel_access(&[ALL[0], ALL[1], bogus], 443).is_err());
    }
}
