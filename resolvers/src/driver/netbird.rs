//! The `netbird` driver: a supervised `netbird expose` process
//! ([`super::supervise`]) that publishes the node's gateway through
//! NetBird's reverse proxy.
//!
//! # What it runs
//!
//! ```text
//! netbird expose PORT --protocol http [--with-name-prefix RESOLVER] [--daemon-addr ADDR]
//! ```
//!
//! `PORT` is the gateway's port. `netbird expose` (NetBird v0.66.0 and
//! later, `client/cmd/expose.go`) asks the local NetBird daemon, which asks
//! the NetBird management server, to create an ephemeral reverse-proxy
//! service for this peer's `PORT`; it prints (to stderr, like every cobra
//! message of the netbird CLI):
//!
//! ```text
//! Service exposed successfully!
//!   Name:     public-k3x9
//!   URL:      https://public-k3x9.proxy.example.net
//!   Domain:   public-k3x9.proxy.example.net
//!   Protocol: http
//!   Internal: 8080
//!
//! Press Ctrl+C to stop exposing.
//! ```
//!
//! and keeps the session alive (the daemon renews it every 30 s) until it
//! is stopped: on SIGTERM it prints `Service stopped.` and the daemon
//! deletes the service. The driver takes the URL from the one line
//! `URL:` + spaces + an `http(s)://` URL (nothing else on the line) and
//! reports `Up` with it. The resolver's name is passed as the name prefix
//! when it is a valid one (lowercase letters, digits and inner `-`, at
//! most 32), so the public name reads `RESOLVER-xxxx.…`.
//!
//! # Reach
//!
//! The service is **public**: NetBird's reverse proxy answers on the
//! internet at the URL and forwards over the NetBird network (WireGuard)
//! to this peer's **NetBird address** at `PORT` (no `--with-pin`,
//! `--with-password` or `--with-user-groups` is passed, so it asks for no
//! authentication). This needs a NetBird management server with the
//! reverse proxy (NetBird Cloud, or self-hosted with the `proxy` service),
//! *peer expose* enabled in the account settings and this peer in one of
//! the allowed groups. Without the proxy NetBird offers only mesh-internal
//! reach (peers of the NetBird network connecting to the node's NetBird
//! address under the network's access policies) — which this driver does
//! not set up.
//!
//! Two consequences for the gateway (expose logs a warning for a
//! loopback gateway): the proxy connects to the node's NetBird address, so with the
//! kernel WireGuard interface the gateway must listen there (e.g.
//! `0.0.0.0:PORT`), not only on `127.0.0.1` — only NetBird's userspace
//! (netstack) mode forwards traffic for its own address to loopback; and
//! the proxy sends `Host: NETBIRD-IP:PORT` with the public name in
//! `X-Forwarded-Host`.
//!
//! # Failures
//!
//! The CLI's `Error: …` line (exit status 1) becomes the error of `expose`
//! (before the first `Up`) or the `Down` reason (after): daemon not
//! reachable (`connect to daemon: …`, after the CLI's own 10 s dial
//! timeout) → [`DriverError::Unavailable`]; not logged in or not up
//! (`client is not running, run 'netbird up' first`) →
//! [`DriverError::Unauthorized`]; peer expose disabled, peer not in an
//! allowed group, block-inbound set → [`DriverError::NotCapable`]; the CLI
//! refusing the arguments (older than v0.66.0) → [`DriverError::Config`].
//! When the daemon restarts, `netbird expose` exits (`connection to
//! daemon closed unexpectedly`) and is restarted with backoff; the new
//! session has a new name, and the watch reports the new URL.

use std::ffi::OsString;
use std::path::PathBuf;

use async_trait::async_trait;
use omega_zgraph::ResolverMode;

use super::supervise::{self, Event, Events, Launch, Program, Spec, Supervision};
use super::{Driver, DriverError, Exposure, Tunnel};

const DRIVER: &str = "netbird";
/// Longest URL accepted from the output.
const MAX_URL: usize = 2048;

/// How the driver runs netbird (`omega node` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The program: a name looked up on `PATH` (default `netbird`) or a
    /// path.
    pub program: PathBuf,
    /// The daemon's address (`--daemon-addr`, e.g.
    /// `unix:///var/run/netbird.sock`); unset: the CLI's default.
    pub daemon_addr: Option<String>,
    /// Pass the resolver's name as `--with-name-prefix` (when it is a
    /// valid prefix).
    pub name_prefix: bool,
    /// Start, restart and stop timing.
    pub supervision: Supervision,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            program: PathBuf::from("netbird"),
            daemon_addr: None,
            name_prefix: true,
            supervision: Supervision::default(),
        }
    }
}

/// The driver.
#[derive(Debug)]
pub struct Netbird {
    config: Config,
}

impl Netbird {
    /// A driver with `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

#[async_trait]
impl Driver for Netbird {
    fn mode(&self) -> ResolverMode {
        ResolverMode::Netbird
    }

    async fn expose(&self, exposure: &Exposure) -> Result<Box<dyn Tunnel>, DriverError> {
        let run = Run::new(&self.config, exposure)?;
        if exposure.gateway.ip().is_loopback() {
            tracing::warn!(
                resolver = %exposure.resolver,
                gateway = %exposure.gateway,
                "netbird: NetBird's reverse proxy connects to this node's NetBird address on port {}; \
                 a gateway listening on loopback only is reached that way only in NetBird's userspace (netstack) mode",
                exposure.gateway.port()
            );
        }
        let spec = Spec {
            driver: DRIVER,
            program: self.config.program.clone(),
            what: format!("`netbird expose` for resolver `{}`", exposure.resolver),
            install: "install the NetBird client v0.66.0 or later (https://docs.netbird.io/get-started/install) or set the netbird driver's `program` to its path".into(),
            supervision: self.config.supervision,
        };
        let supervised = supervise::start(spec, run).await?;
        Ok(Box::new(supervised))
    }
}

/// What every start of `netbird expose` needs.
#[derive(Debug, Clone)]
struct Run {
    program: String,
    port: u16,
    prefix: Option<String>,
    daemon_addr: Option<String>,
}

impl Run {
    fn new(config: &Config, exposure: &Exposure) -> Result<Self, DriverError> {
        config.supervision.validate(DRIVER)?;
        if config.program.as_os_str().is_empty() {
            return Err(DriverError::Config {
                driver: DRIVER,
                detail: "`program` is empty; set it to `netbird` or its path".into(),
            });
        }
        if let Some(a) = &config.daemon_addr
            && (a.is_empty()
                || a.len() > 1024
                || a.starts_with('-')
                || !a.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(DriverError::Config {
                driver: DRIVER,
                detail: format!(
                    "`daemon_addr` `{a}` is not an address like unix:///var/run/netbird.sock or tcp://127.0.0.1:41731"
                ),
            });
        }
        if exposure.gateway.port() == 0 {
            return Err(DriverError::Config {
                driver: DRIVER,
                detail: format!(
                    "the gateway address {} has no port to expose",
                    exposure.gateway
                ),
            });
        }
        let prefix = (config.name_prefix && valid_prefix(&exposure.resolver))
            .then(|| exposure.resolver.clone());
        Ok(Self {
            program: config.program.display().to_string(),
            port: exposure.gateway.port(),
            prefix,
            daemon_addr: config.daemon_addr.clone(),
        })
    }

    fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "expose".into(),
            self.port.to_string().into(),
            "--protocol".into(),
            "http".into(),
        ];
        if let Some(p) = &self.prefix {
            args.push("--with-name-prefix".into());
            args.push(p.into());
        }
        if let Some(a) = &self.daemon_addr {
            args.push("--daemon-addr".into());
            args.push(a.into());
        }
        args
    }
}

/// NetBird's rule for a name prefix: `^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`.
fn valid_prefix(p: &str) -> bool {
    let b = p.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 32
        && b.first().is_some_and(|c| edge(*c))
        && b.last().is_some_and(|c| edge(*c))
        && b.iter().all(|c| edge(*c) || *c == b'-')
}

impl Program for Run {
    fn launch(&self, _events: Events) -> Result<Launch, DriverError> {
        let lines = Lines {
            program: self.program.clone(),
            daemon: self
                .daemon_addr
                .clone()
                .unwrap_or_else(|| "unix:///var/run/netbird.sock".into()),
        };
        Ok(Launch {
            args: self.args(),
            parser: Box::new(move |line| lines.parse(line)),
            probe: None,
        })
    }
}

/// Reads `netbird expose`'s output.
struct Lines {
    program: String,
    daemon: String,
}

impl Lines {
    fn parse(&self, line: &str) -> Option<Event> {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("URL:") {
            return Some(match url(rest) {
                Some(u) => Event::Up(u.to_owned()),
                None => Event::Fail(DriverError::Protocol {
                    driver: DRIVER,
                    what: "the output of `netbird expose`".into(),
                    detail: supervise::bounded(format!(
                        "its URL line `{line}` does not hold one http(s) URL"
                    )),
                }),
            });
        }
        let message = line.strip_prefix("Error: ")?;
        let has = |s: &str| message.contains(s);
        let detail =
            |fix: &str| supervise::bounded(format!("`netbird expose` said `{message}`; {fix}"));
        let error = if has("connect to daemon") {
            DriverError::Unavailable {
                driver: DRIVER,
                what: format!("the NetBird daemon at {}", self.daemon),
                detail: detail(
                    "start it (`sudo netbird service install && sudo netbird service start`), then `netbird up`",
                ),
            }
        } else if has("client is not running")
            || has("netbird up")
            || has("NeedsLogin")
            || has("needs login")
            || has("login")
            || has("session expired")
        {
            DriverError::Unauthorized {
                driver: DRIVER,
                detail: detail(
                    "this peer is not connected to its NetBird network: run `netbird up` (it logs in if needed)",
                ),
            }
        } else if has("peer expose is not enabled") {
            DriverError::NotCapable {
                driver: DRIVER,
                detail: detail(
                    "enable peer expose in the NetBird dashboard's account settings (it needs a management server with the reverse proxy)",
                ),
            }
        } else if has("no cluster domains available") || has("unable to get cluster domain") {
            DriverError::NotCapable {
                driver: DRIVER,
                detail: detail(
                    "the NetBird management server has no reverse proxy cluster to expose through (NetBird Cloud has one; a self-hosted management needs the `proxy` service)",
                ),
            }
        } else if has("not in an allowed expose group") || has("no group is set for peer expose") {
            DriverError::NotCapable {
                driver: DRIVER,
                detail: detail(
                    "add this peer to a group allowed to expose services in the NetBird dashboard's account settings",
                ),
            }
        } else if has("block inbound") {
            DriverError::NotCapable {
                driver: DRIVER,
                detail: detail(
                    "turn off block-inbound for this peer (`netbird up --block-inbound=false`)",
                ),
            }
        } else if has("unknown command")
            || has("unknown flag")
            || has("unknown shorthand")
            || has("invalid port")
            || has("unsupported protocol")
            || has("arg(s)")
        {
            DriverError::Config {
                driver: DRIVER,
                detail: supervise::bounded(format!(
                    "`{}` refused `expose PORT --protocol http` (`{message}`): `netbird expose` needs the NetBird client v0.66.0 or later",
                    self.program
                )),
            }
        } else if has("connection to daemon closed") || has("stream error") {
            return Some(Event::Note(supervise::bounded(format!(
                "the NetBird daemon ended the expose session: {message}"
            ))));
        } else {
            DriverError::Unavailable {
                driver: DRIVER,
                what: "the NetBird reverse proxy service".into(),
                detail: detail("see `netbird status` and the daemon's log"),
            }
        };
        Some(Event::Fail(error))
    }
}

/// The URL in the rest of a `URL:` line: one `http(s)://HOST…` token.
fn url(rest: &str) -> Option<&str> {
    let u = rest.trim();
    let host = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))?;
    let host_end = host.find(['/', ':']).unwrap_or(host.len());
    let h = &host[..host_end];
    let ok = !u.is_empty()
        && u.len() <= MAX_URL
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
        && !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then_some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Lines {
        Lines {
            program: "netbird".into(),
            daemon: "unix:///var/run/netbird.sock".into(),
        }
    }

    #[test]
    fn arguments() {
        let exposure = Exposure {
            resolver: "public".into(),
            manifest: "demo".into(),
            host: "demo.example.com".into(),
            gateway: "127.0.0.1:8080".parse().expect("addr"),
        };
        let run = Run::new(&Config::default(), &exposure).expect("run");
        let args: Vec<String> = run
            .args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "expose",
                "8080",
                "--protocol",
                "http",
                "--with-name-prefix",
                "public"
            ]
        );
        let long = Exposure {
            resolver: "a-resolver-name-that-is-longer-than-32".into(),
            ..exposure
        };
        let run = Run::new(
            &Config {
                daemon_addr: Some("unix:///tmp/nb.sock".into()),
                ..Config::default()
            },
            &long,
        )
        .expect("run");
        let args: Vec<String> = run
            .args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "expose",
                "8080",
                "--protocol",
                "http",
                "--daemon-addr",
                "unix:///tmp/nb.sock"
            ]
        );
    }

    #[test]
    fn prefix_rule() {
        assert!(valid_prefix("public"));
        assert!(valid_prefix("a"));
        assert!(valid_prefix("api-2"));
        assert!(!valid_prefix("api-"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix(&"a".repeat(33)));
        assert!(!valid_prefix("Api"));
    }

    #[test]
    fn url_line_is_exact() {
        let l = lines();
        assert_eq!(
            l.parse("  URL:      https://public-k3x9.proxy.example.net"),
            Some(Event::Up("https://public-k3x9.proxy.example.net".into()))
        );
        assert!(matches!(
            l.parse("  URL:      https://a.example two"),
            Some(Event::Fail(DriverError::Protocol { .. }))
        ));
        assert!(matches!(
            l.parse("  URL:      tcp://a.example:5432"),
            Some(Event::Fail(DriverError::Protocol { .. }))
        ));
        assert_eq!(l.parse("  Domain:   public-k3x9.proxy.example.net"), None);
        assert_eq!(l.parse("Service exposed successfully!"), None);
        assert_eq!(l.parse("the URL: https://x.example"), None);
    }

    #[test]
    fn real_error_lines_are_classified() {
        let l = lines();
        let cases = [
            (
                "Error: connect to daemon: context deadline exceeded",
                "Unavailable",
            ),
            (
                "Error: receive expose event: client is not running, run 'netbird up' first",
                "Unauthorized",
            ),
            (
                "Error: receive expose event: peer expose is not enabled for this account",
                "NotCapable",
            ),
            (
                "Error: receive expose event: peer is not in an allowed expose group",
                "NotCapable",
            ),
            (
                "Error: unknown command \"expose\" for \"netbird\"",
                "Config",
            ),
            ("Error: unknown flag: --protocol", "Config"),
            (
                "Error: receive expose event: no cluster domains available",
                "NotCapable",
            ),
        ];
        for (line, kind) in cases {
            let got = l.parse(line);
            let name = match &got {
                Some(Event::Fail(DriverError::Unavailable { .. })) => "Unavailable",
                Some(Event::Fail(DriverError::Unauthorized { .. })) => "Unauthorized",
                Some(Event::Fail(DriverError::NotCapable { .. })) => "NotCapable",
                Some(Event::Fail(DriverError::Config { .. })) => "Config",
                _ => "other",
            };
            assert_eq!(name, kind, "{line}: {got:?}");
        }
        assert!(matches!(
            l.parse("Error: connection to daemon closed unexpectedly"),
            Some(Event::Note(_))
        ));
    }
}
