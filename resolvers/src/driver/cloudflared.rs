//! The `cloudflared` driver: a supervised `cloudflared tunnel` process
//! ([`super::supervise`]) that connects the node's gateway to Cloudflare's
//! edge, read through cloudflared's own metrics server.
//!
//! # What it runs
//!
//! A **quick tunnel** (no Cloudflare account; [`Config::tunnel`] unset):
//!
//! ```text
//! cloudflared tunnel --no-autoupdate --metrics 127.0.0.1:M --grace-period G \
//!     --url http://GATEWAY --http-host-header HOST
//! ```
//!
//! A **named tunnel** ([`Config::tunnel`] = its name or UUID, created with
//! `cloudflared tunnel create`, its DNS route pointing the resolver's host
//! at it):
//!
//! ```text
//! cloudflared tunnel --no-autoupdate --metrics 127.0.0.1:M --grace-period G \
//!     run [--credentials-file FILE] --url http://GATEWAY --http-host-header HOST TUNNEL
//! ```
//!
//! `M` is a free loopback port picked at every (re)start unless
//! [`Config::metrics_port`] fixes it; `G` is half the supervision's stop
//! grace, so cloudflared finishes in-flight requests and exits on its own
//! before it would be killed. `--http-host-header HOST` makes cloudflared
//! send the resolver's `host` to the gateway whatever name the request
//! came in by (a quick tunnel's `*.trycloudflare.com`), so the gateway
//! routes it to the resolver's brane. (cloudflared applies `--url` and
//! `--http-host-header` only when no cloudflared config file with
//! `ingress` rules is found in its default directories — such a file wins.)
//!
//! # What it reads
//!
//! Every [`Config::poll_interval`], from the metrics server at
//! `127.0.0.1:M` (cloudflared 2021.7.0 or later):
//!
//! - `GET /quicktunnel` → `{"hostname":"NAME.trycloudflare.com"}` (quick
//!   tunnels; empty for named ones): the URL is `https://NAME…`;
//! - `GET /ready` → `200 {"status":200,"readyConnections":N,…}` once at
//!   least one connection to the edge is registered, `503` otherwise.
//!
//! The tunnel is `Up` when `/ready` says 200 and the hostname is known —
//! `https://HOSTNAME` for a quick tunnel, `https://` + the resolver's host
//! for a named tunnel (its hostname is the DNS route the operator made). A
//! `503` afterwards is `Down` ("lost its connections to the Cloudflare
//! edge") until it is 200 again. cloudflared's log lines (stderr) name
//! failures: credentials file missing or invalid, the edge refusing the
//! credentials (`Unauthorized: …`), the quick-tunnel service failing, the
//! edge unreachable; those become the error of `expose` (before the first
//! `Up`) or the `Down` reason (after).
//!
//! # Restarts
//!
//! If cloudflared exits it is restarted with backoff (see
//! [`super::supervise`]); a quick tunnel then gets a new random hostname,
//! and the watch reports the new URL.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use omega_zgraph::ResolverMode;

use super::supervise::{self, Event, Events, Launch, Program, Spec, Supervision};
use super::{Driver, DriverError, Exposure, Tunnel};
use crate::client::{self, Target};

const DRIVER: &str = "cloudflared";
/// How long one metrics request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest poll interval accepted.
const MAX_POLL: Duration = Duration::from_secs(10);
/// Longest tunnel name or UUID accepted.
const MAX_TUNNEL: usize = 253;

/// How the driver runs cloudflared (`omega node` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The program: a name looked up on `PATH` (default `cloudflared`) or
    /// a path.
    pub program: PathBuf,
    /// A named tunnel (its name or UUID) to run; unset: a quick tunnel on
    /// `trycloudflare.com`.
    pub tunnel: Option<String>,
    /// The named tunnel's credentials file (`~/.cloudflared/UUID.json`,
    /// written by `cloudflared tunnel create`); unset: cloudflared looks in
    /// its default directories.
    pub credentials: Option<PathBuf>,
    /// The metrics server's loopback port; unset: a free one at every start.
    pub metrics_port: Option<u16>,
    /// How often the metrics server is read.
    pub poll_interval: Duration,
    /// Start, restart and stop timing.
    pub supervision: Supervision,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            program: PathBuf::from("cloudflared"),
            tunnel: None,
            credentials: None,
            metrics_port: None,
            poll_interval: Duration::from_millis(500),
            supervision: Supervision::default(),
        }
    }
}

/// The driver.
#[derive(Debug)]
pub struct Cloudflared {
    config: Config,
}

impl Cloudflared {
    /// A driver with `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

#[async_trait]
impl Driver for Cloudflared {
    fn mode(&self) -> ResolverMode {
        ResolverMode::Cloudflared
    }

    async fn expose(&self, exposure: &Exposure) -> Result<Box<dyn Tunnel>, DriverError> {
        let run = Run::new(&self.config, exposure)?;
        let what = match &run.named {
            None => format!("the quick tunnel for resolver `{}`", exposure.resolver),
            Some(n) => format!(
                "named tunnel `{}` for resolver `{}`",
                n.tunnel, exposure.resolver
            ),
        };
        let spec = Spec {
            driver: DRIVER,
            program: self.config.program.clone(),
            what,
            install: "install cloudflared (https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/downloads/) or set the cloudflared driver's `program` to its path".into(),
            supervision: self.config.supervision,
        };
        let supervised = supervise::start(spec, run).await?;
        Ok(Box::new(supervised))
    }
}

#[derive(Debug, Clone)]
struct Named {
    tunnel: String,
    credentials: Option<PathBuf>,
}

/// What every start of cloudflared needs.
#[derive(Debug, Clone)]
struct Run {
    program: String,
    origin: String,
    host: String,
    named: Option<Named>,
    metrics_port: Option<u16>,
    poll: Duration,
    grace: Duration,
}

fn config_error(detail: String) -> DriverError {
    DriverError::Config {
        driver: DRIVER,
        detail,
    }
}

impl Run {
    fn new(config: &Config, exposure: &Exposure) -> Result<Self, DriverError> {
        config.supervision.validate(DRIVER)?;
        if config.poll_interval.is_zero() || config.poll_interval > MAX_POLL {
            return Err(config_error(format!(
                "poll_interval {:?} is outside (0, {} s]",
                config.poll_interval,
                MAX_POLL.as_secs()
            )));
        }
        if exposure.host.is_empty()
            || exposure.host.len() > 253
            || !exposure.host.bytes().all(is_host_byte)
        {
            return Err(config_error(format!(
                "resolver `{}` has host `{}`, which is not a DNS name cloudflared can send as the Host header",
                exposure.resolver, exposure.host
            )));
        }
        if config.program.as_os_str().is_empty() {
            return Err(config_error(
                "`program` is empty; set it to `cloudflared` or its path".into(),
            ));
        }
        let named = match (&config.tunnel, &config.credentials) {
            (None, None) => None,
            (None, Some(c)) => {
                return Err(config_error(format!(
                    "`credentials` is set ({}) but `tunnel` is not: a quick tunnel needs no credentials; set `tunnel` to the named tunnel they belong to, or remove `credentials`",
                    c.display()
                )));
            }
            (Some(t), credentials) => {
                if t.is_empty()
                    || t.len() > MAX_TUNNEL
                    || t.starts_with('-')
                    || !t.chars().all(|c| c.is_ascii_graphic())
                {
                    return Err(config_error(format!(
                        "`tunnel` `{t}` is not a tunnel name or UUID (1-{MAX_TUNNEL} visible ASCII characters, not starting with `-`)"
                    )));
                }
                if let Some(c) = credentials {
                    check_credentials(t, c)?;
                }
                Some(Named {
                    tunnel: t.clone(),
                    credentials: credentials.clone(),
                })
            }
        };
        Ok(Self {
            program: config.program.display().to_string(),
            origin: format!("http://{}", exposure.gateway),
            host: exposure.host.to_ascii_lowercase(),
            named,
            metrics_port: config.metrics_port,
            poll: config.poll_interval,
            grace: config.supervision.stop_grace,
        })
    }

    fn args(&self, metrics: &str) -> Vec<OsString> {
        let grace = format!("{}ms", (self.grace / 2).as_millis().max(1));
        let mut args: Vec<OsString> = vec![
            "tunnel".into(),
            "--no-autoupdate".into(),
            "--metrics".into(),
            metrics.into(),
            "--grace-period".into(),
            grace.into(),
        ];
        if let Some(named) = &self.named {
            args.push("run".into());
            if let Some(c) = &named.credentials {
                args.push("--credentials-file".into());
                args.push(c.clone().into_os_string());
            }
        }
        args.push("--url".into());
        args.push(self.origin.clone().into());
        args.push("--http-host-header".into());
        args.push(self.host.clone().into());
        if let Some(named) = &self.named {
            args.push(named.tunnel.clone().into());
        }
        args
    }
}

fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

/// A named tunnel's credentials file must be there before cloudflared is.
fn check_credentials(tunnel: &str, path: &Path) -> Result<(), DriverError> {
    let fix = format!(
        "create the tunnel with `cloudflared tunnel login` then `cloudflared tunnel create {tunnel}` (it writes ~/.cloudflared/UUID.json), or fetch an existing tunnel's file with `cloudflared tunnel token --cred-file {} {tunnel}`",
        path.display()
    );
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(DriverError::Unauthorized {
            driver: DRIVER,
            detail: format!(
                "the credentials file {} of tunnel `{tunnel}` is not a file; {fix}",
                path.display()
            ),
        }),
        Err(e) => Err(DriverError::Unauthorized {
            driver: DRIVER,
            detail: format!(
                "the credentials file {} of tunnel `{tunnel}` cannot be read ({e}); {fix}",
                path.display()
            ),
        }),
    }
}

impl Program for Run {
    fn launch(&self, events: Events) -> Result<Launch, DriverError> {
        let port = match self.metrics_port {
            Some(p) => p,
            None => free_port()?,
        };
        let metrics = format!("127.0.0.1:{port}");
        let args = self.args(&metrics);
        let lines = Lines {
            program: self.program.clone(),
            named: self.named.clone(),
        };
        let probe = Probe {
            metrics,
            poll: self.poll,
            fixed_host: self.named.as_ref().map(|_| self.host.clone()),
            events,
        };
        Ok(Launch {
            args,
            parser: Box::new(move |line| lines.parse(line)),
            probe: Some(Box::pin(probe.run())),
        })
    }
}

fn free_port() -> Result<u16, DriverError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DriverError::Unavailable {
            driver: DRIVER,
            what: "a free loopback port for cloudflared's metrics server".into(),
            detail: e.to_string(),
        })
}

/// Reads cloudflared's metrics server for one run.
struct Probe {
    metrics: String,
    poll: Duration,
    /// A named tunnel's public host (the resolver's); `None`: ask
    /// `/quicktunnel`.
    fixed_host: Option<String>,
    events: Events,
}

/// What `GET /ready` said.
enum Ready {
    Yes,
    No(String),
    Unreachable(String),
}

impl Probe {
    async fn run(self) {
        let mut host = self.fixed_host.clone();
        let mut up: Option<String> = None;
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if host.is_none() {
                match self.quick_hostname().await {
                    Ok(h) => host = h,
                    Err(e) => {
                        if !self.events.send(Event::Fail(e)).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let event = match (self.ready().await, &host) {
                (Ready::Yes, Some(h)) => {
                    let url = format!("https://{h}");
                    (up.as_deref() != Some(url.as_str())).then(|| {
                        up = Some(url.clone());
                        Event::Up(url)
                    })
                }
                (Ready::Yes, None) => None,
                (Ready::No(why) | Ready::Unreachable(why), _) => {
                    up.take().map(|_| Event::Down(why))
                }
            };
            if let Some(e) = event
                && !self.events.send(e).await
            {
                return;
            }
        }
    }

    async fn get(&self, path: &str) -> Result<client::Response, client::ClientError> {
        client::request(
            &Target::Tcp(self.metrics.clone()),
            &self.metrics,
            "GET",
            path,
            &[],
            &[],
            PROBE_TIMEOUT,
        )
        .await
    }

    /// `Ok(None)` while the metrics server is not up or has no name yet.
    async fn quick_hostname(&self) -> Result<Option<String>, DriverError> {
        let Ok(resp) = self.get("/quicktunnel").await else {
            return Ok(None);
        };
        let what = || format!("GET http://{}/quicktunnel", self.metrics);
        if resp.status != 200 {
            return Err(DriverError::Protocol {
                driver: DRIVER,
                what: what(),
                detail: format!(
                    "status {} ({}); cloudflared 2021.7.0 or later serves the quick tunnel's hostname there",
                    resp.status,
                    resp.text()
                ),
            });
        }
        #[derive(serde::Deserialize)]
        struct Quick {
            hostname: String,
        }
        let quick: Quick =
            serde_json::from_slice(&resp.body).map_err(|e| DriverError::Protocol {
                driver: DRIVER,
                what: what(),
                detail: format!("not {{\"hostname\":…}}: {e}: {}", resp.text()),
            })?;
        let h = quick
            .hostname
            .trim()
            .trim_start_matches("https://")
            .to_ascii_lowercase();
        if h.is_empty() {
            return Ok(None);
        }
        if h.len() > 253 || !h.bytes().all(is_host_byte) || !h.contains('.') {
            return Err(DriverError::Protocol {
                driver: DRIVER,
                what: what(),
                detail: format!("hostname `{}` is not a DNS name", quick.hostname),
            });
        }
        Ok(Some(h))
    }

    async fn ready(&self) -> Ready {
        match self.get("/ready").await {
            Ok(r) if r.status == 200 => Ready::Yes,
            Ok(r) => {
                let n = serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v.get("readyConnections").and_then(|n| n.as_u64()));
                Ready::No(format!(
                    "cloudflared lost its connections to the Cloudflare edge (GET /ready: {}, readyConnections {})",
                    r.status,
                    n.map_or_else(|| "unknown".to_owned(), |n| n.to_string())
                ))
            }
            Err(e) => {
                Ready::Unreachable(format!("cloudflared's metrics server does not answer: {e}"))
            }
        }
    }
}

/// Reads cloudflared's log lines (zerolog console format on stderr:
/// `2024-05-01T10:00:00Z ERR Message key=value error="…"`, and the bare
/// text of the error it exits with).
struct Lines {
    program: String,
    named: Option<Named>,
}

impl Lines {
    fn tunnel(&self) -> &str {
        self.named.as_ref().map_or("", |n| n.tunnel.as_str())
    }

    fn credentials(&self) -> String {
        match self.named.as_ref().and_then(|n| n.credentials.as_ref()) {
            Some(c) => c.display().to_string(),
            None => "its default directories (~/.cloudflared, /etc/cloudflared, …)".into(),
        }
    }

    fn parse(&self, line: &str) -> Option<Event> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        let unauthorized = |detail: String| {
            Some(Event::Fail(DriverError::Unauthorized {
                driver: DRIVER,
                detail: supervise::bounded(detail),
            }))
        };
        let config = |detail: String| {
            Some(Event::Fail(DriverError::Config {
                driver: DRIVER,
                detail: supervise::bounded(detail),
            }))
        };
        let (level, message) = split_level(line);
        let error = field(line, "error");
        let said = || match &error {
            Some(e) => format!("{message}: {e}"),
            None => message.to_owned(),
        };
        if line.starts_with("Incorrect Usage:") {
            return config(format!(
                "`{}` refused its arguments ({line}): it is not cloudflared or is too old; Omega needs cloudflared 2021.7.0 or later",
                self.program
            ));
        }
        let tunnel = self.tunnel();
        if message.contains("doesn't exist or is not a file")
            || message.contains("tunnel credentials file not found")
        {
            return unauthorized(format!(
                "cloudflared found no credentials for tunnel `{tunnel}` in {} ({}); create the tunnel with `cloudflared tunnel login` then `cloudflared tunnel create {tunnel}`, and set `credentials` to the file it writes",
                self.credentials(),
                said()
            ));
        }
        if message.contains("Cannot determine default origin certificate path")
            || message.contains("Error locating origin cert")
            || message.contains("cannot find a valid certificate")
        {
            return unauthorized(format!(
                "cloudflared needs the account certificate to look tunnel `{tunnel}` up by name ({}); run `cloudflared tunnel login`, or give the tunnel's UUID with its credentials file",
                said()
            ));
        }
        if message.contains("Invalid JSON when parsing tunnel credentials file")
            || message.contains("should be .json but you gave a .pem")
        {
            return config(format!(
                "the credentials file {} of tunnel `{tunnel}` is not a tunnel credentials file ({}); it is the JSON file `cloudflared tunnel create` wrote, not cert.pem",
                self.credentials(),
                said()
            ));
        }
        if message.contains("is neither the ID nor the name of any of your tunnels") {
            return config(format!(
                "there is no tunnel `{tunnel}` in the account ({}); create it with `cloudflared tunnel create {tunnel}`",
                said()
            ));
        }
        if let Some(e) = &error
            && e.contains("Unauthorized")
        {
            if self.named.is_none() {
                // A new quick tunnel can be refused until the edge knows
                // it; cloudflared retries by itself.
                return Some(Event::Note(supervise::bounded(format!(
                    "the Cloudflare edge refused the quick tunnel for now: {}",
                    said()
                ))));
            }
            let file = match self.named.as_ref().and_then(|n| n.credentials.as_ref()) {
                Some(c) => c.display().to_string(),
                None => "FILE".into(),
            };
            return unauthorized(format!(
                "the Cloudflare edge refused the credentials of tunnel `{tunnel}` ({}); the credentials file ({}) does not belong to this tunnel, or the tunnel was deleted: fetch its file with `cloudflared tunnel token --cred-file {file} {tunnel}`, or create a new tunnel with `cloudflared tunnel create NAME`",
                said(),
                self.credentials()
            ));
        }
        if message.contains("failed to request quick Tunnel")
            || message.contains("failed to unmarshal quick Tunnel")
            || message.contains("Error unmarshaling QuickTunnel response")
            || message.contains("failed to parse quick Tunnel ID")
        {
            return Some(Event::Fail(DriverError::Unavailable {
                driver: DRIVER,
                what: "the quick tunnel service (api.trycloudflare.com)".into(),
                detail: supervise::bounded(format!(
                    "{}; it may be unreachable from here or rate-limiting this address: try again later, or use a named tunnel",
                    said()
                )),
            }));
        }
        if level == Some("ERR") || level == Some("FTL") {
            let edge = [
                "Failed to dial",
                "Serve tunnel error",
                "Unable to establish connection",
                "Connection terminated",
                "edge",
            ]
            .iter()
            .any(|m| message.contains(m));
            return Some(Event::Note(supervise::bounded(if edge {
                format!("cloudflared cannot reach the Cloudflare edge: {}", said())
            } else {
                format!("cloudflared: {}", said())
            })));
        }
        None
    }
}

/// Splits `TIMESTAMP LVL message…` into the level and the rest; a line
/// in another shape is all message.
fn split_level(line: &str) -> (Option<&str>, &str) {
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(ts), Some(lvl), Some(rest))
            if ts.len() >= 20
                && ts.as_bytes().get(10) == Some(&b'T')
                && lvl.len() == 3
                && lvl.bytes().all(|b| b.is_ascii_uppercase()) =>
        {
            (Some(lvl), without_fields(rest))
        }
        _ => (None, line),
    }
}

/// A log message without the `key=value` fields zerolog appends.
fn without_fields(rest: &str) -> &str {
    let mut at = 0;
    while let Some(i) = rest[at..].find(' ') {
        let start = at + i + 1;
        let word: &str = rest[start..].split(' ').next().unwrap_or_default();
        if let Some((key, _)) = word.split_once('=')
            && !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return rest[..at + i].trim_end();
        }
        at = start;
    }
    rest
}

/// The value of ` NAME=` in a zerolog console line (quoted or bare).
fn field(line: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=");
    let start = line.find(&key)? + key.len();
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                c => out.push(c),
            }
        }
        Some(out)
    } else {
        Some(rest.split(' ').next().unwrap_or_default().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(named: bool) -> Lines {
        Lines {
            program: "cloudflared".into(),
            named: named.then(|| Named {
                tunnel: "omega".into(),
                credentials: Some("/etc/omega/tunnel.json".into()),
            }),
        }
    }

    fn exposure() -> Exposure {
        Exposure {
            resolver: "public".into(),
            manifest: "demo".into(),
            host: "Demo.Example.com".into(),
            gateway: "127.0.0.1:8080".parse().expect("addr"),
        }
    }

    #[test]
    fn quick_tunnel_arguments() {
        let run = Run::new(&Config::default(), &exposure()).expect("run");
        let args: Vec<String> = run
            .args("127.0.0.1:9999")
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "tunnel",
                "--no-autoupdate",
                "--metrics",
                "127.0.0.1:9999",
                "--grace-period",
                "2500ms",
                "--url",
                "http://127.0.0.1:8080",
                "--http-host-header",
                "demo.example.com"
            ]
        );
    }

    #[test]
    fn named_tunnel_arguments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let creds = dir.path().join("t.json");
        std::fs::write(&creds, "{}").expect("write");
        let config = Config {
            tunnel: Some("omega".into()),
            credentials: Some(creds.clone()),
            ..Config::default()
        };
        let run = Run::new(&config, &exposure()).expect("run");
        let args: Vec<String> = run
            .args("127.0.0.1:9999")
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let creds = creds.display().to_string();
        assert_eq!(
            args,
            [
                "tunnel",
                "--no-autoupdate",
                "--metrics",
                "127.0.0.1:9999",
                "--grace-period",
                "2500ms",
                "run",
                "--credentials-file",
                creds.as_str(),
                "--url",
                "http://127.0.0.1:8080",
                "--http-host-header",
                "demo.example.com",
                "omega"
            ]
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = Run::new(
            &Config {
                credentials: Some("/x.json".into()),
                ..Config::default()
            },
            &exposure(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`tunnel` is not"), "{e}");
        let e = Run::new(
            &Config {
                tunnel: Some("--url".into()),
                ..Config::default()
            },
            &exposure(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a tunnel name"), "{e}");
        let e = Run::new(
            &Config {
                tunnel: Some("omega".into()),
                credentials: Some("/nonexistent/omega.json".into()),
                ..Config::default()
            },
            &exposure(),
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, DriverError::Unauthorized { .. }), "{text}");
        assert!(text.contains("/nonexistent/omega.json"), "{text}");
        assert!(text.contains("cloudflared tunnel create omega"), "{text}");
    }

    #[test]
    fn real_failure_lines_are_classified() {
        let l = lines(true);
        let unauthorized = l.parse(
            r#"2021-08-02T13:44:44Z ERR Register tunnel error from server side error="Unauthorized: Invalid tunnel secret" connIndex=0 event=0 ip=198.41.192.7"#,
        );
        match unauthorized {
            Some(Event::Fail(DriverError::Unauthorized { detail, .. })) => {
                assert!(
                    detail.contains("Unauthorized: Invalid tunnel secret"),
                    "{detail}"
                );
                assert!(detail.contains("/etc/omega/tunnel.json"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        let missing = l.parse(
            "Tunnel credentials file '/etc/omega/tunnel.json' doesn't exist or is not a file",
        );
        assert!(
            matches!(missing, Some(Event::Fail(DriverError::Unauthorized { .. }))),
            "{missing:?}"
        );
        let usage = l.parse("Incorrect Usage: flag provided but not defined: -http-host-header");
        assert!(
            matches!(usage, Some(Event::Fail(DriverError::Config { .. }))),
            "{usage:?}"
        );
        let edge = l.parse(
            r#"2024-05-01T10:00:00Z ERR Failed to dial a quic connection error="failed to dial to edge with quic: timeout: no recent network activity" connIndex=0 event=0 ip=198.41.192.167"#,
        );
        match edge {
            Some(Event::Note(n)) => {
                assert!(n.contains("cannot reach the Cloudflare edge"), "{n}");
                assert!(n.contains("no recent network activity"), "{n}");
            }
            other => panic!("{other:?}"),
        }
        let quick = lines(false).parse(
            r#"failed to request quick Tunnel: Post "https://api.trycloudflare.com/tunnel": dial tcp: lookup api.trycloudflare.com: no such host"#,
        );
        assert!(
            matches!(quick, Some(Event::Fail(DriverError::Unavailable { .. }))),
            "{quick:?}"
        );
        assert_eq!(
            l.parse("2024-05-01T10:00:00Z INF Registered tunnel connection connIndex=0 connection=6b4b1c9e-6d5c-4b5a-9d43-0c2b2f0e5b1a event=0 ip=198.41.200.193 location=ams08 protocol=quic"),
            None
        );
    }

    #[test]
    fn fields_are_read_quoted_or_bare() {
        let line = r#"2024-05-01T10:00:00Z ERR x error="a \"b\" c" connIndex=0"#;
        assert_eq!(field(line, "error").as_deref(), Some(r#"a "b" c"#));
        assert_eq!(field(line, "connIndex").as_deref(), Some("0"));
        assert_eq!(field(line, "ip"), None);
        assert_eq!(split_level(line), (Some("ERR"), "x"));
        assert_eq!(
            split_level("2024-05-01T10:00:00Z INF Retrying connection in up to 2s connIndex=0"),
            (Some("INF"), "Retrying connection in up to 2s")
        );
        assert_eq!(split_level("plain text here").0, None);
    }
}
