//! Drivers: what makes the gateway reachable from the internet for a
//! `[resolver.NAME]` block.
//!
//! One trait, [`Driver`], one implementation per [`ResolverMode`]:
//!
//! | mode | module | how |
//! |---|---|---|
//! | `tailscale-funnel` | [`tailscale`] | tailscaled's LocalAPI (unix socket): the serve config, ETag + `If-Match` |
//! | `cloudflared` | [`cloudflared`] | a supervised `cloudflared tunnel` process, its metrics server |
//! | `ngrok` | [`ngrok`] | the ngrok agent API (`/api/tunnels`) |
//! | `netbird` | [`netbird`] | a supervised `netbird expose` process, its output |
//!
//! The contract, for every driver:
//!
//! - [`Driver::expose`] makes `http://GATEWAY` (the node's gateway, on
//!   loopback) reachable publicly for one resolver and returns a
//!   [`Tunnel`] at once or a typed [`DriverError`] that names the driver,
//!   what it talked to and what to fix (daemon absent, auth missing,
//!   capability missing, a conflict that did not resolve). It never blocks
//!   longer than [`EXPOSE_TIMEOUT`].
//! - [`Tunnel::watch`] reports the tunnel's [`TunnelState`]: `Starting`
//!   until the public URL is known, `Up { url }`, `Down { reason }` while a
//!   supervised process restarts (with backoff) or the service lost it.
//!   A supervised tunnel's URL may change across restarts (a cloudflared
//!   quick tunnel gets a new name); the watch says so.
//! - [`Tunnel::remove`] undoes what `expose` did (the serve-config entry,
//!   the process, the agent tunnel) and waits for it; after it returns
//!   nothing of the tunnel is left. Dropping a [`Tunnel`] without `remove`
//!   stops supervised processes too (kill on drop) but cannot undo remote
//!   state.
//!
//! None of the four services can be reached from where Omega is tested:
//! each driver is written against the service's documented behaviour and
//! tested against a faithful local fake ([`crate::fake`]).

pub mod cloudflared;
pub mod netbird;
pub mod ngrok;
pub mod supervise;
pub mod tailscale;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use omega_zgraph::ResolverMode;
use tokio::sync::watch;

/// Longest [`Driver::expose`] may take before it fails with
/// [`DriverError::Timeout`].
pub const EXPOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// What to expose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// The resolver's name (`[resolver.NAME]`), e.g. `public`.
    pub resolver: String,
    /// Its manifest.
    pub manifest: String,
    /// The resolver's `host`: the name the gateway routes by.
    pub host: String,
    /// The node's gateway (plain HTTP, on loopback).
    pub gateway: SocketAddr,
}

/// Where a tunnel stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelState {
    /// Being set up; no public URL yet.
    Starting,
    /// Reachable at `url` (e.g. `https://demo.example.ts.net`).
    Up {
        /// The public URL.
        url: String,
    },
    /// Not reachable now.
    Down {
        /// Why, for `omega ps`.
        reason: String,
    },
}

impl TunnelState {
    /// The public URL while up.
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::Up { url } => Some(url),
            _ => None,
        }
    }
}

impl std::fmt::Display for TunnelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Starting => f.write_str("starting"),
            Self::Up { url } => write!(f, "up at {url}"),
            Self::Down { reason } => write!(f, "down: {reason}"),
        }
    }
}

/// Why a driver could not expose or remove a tunnel. Every variant names
/// the driver (`tailscale-funnel`, `cloudflared`, `ngrok`, `netbird`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The service's daemon or program is not there (socket missing,
    /// connection refused, program not found).
    #[error("{driver}: {what} is not available: {detail}")]
    Unavailable {
        /// The driver.
        driver: &'static str,
        /// What was tried (`tailscaled at /var/run/tailscale/tailscaled.sock`).
        what: String,
        /// The underlying error and what to do.
        detail: String,
    },
    /// The service refused for lack of credentials.
    #[error("{driver}: not authorized: {detail}")]
    Unauthorized {
        /// The driver.
        driver: &'static str,
        /// What the service said and what to configure.
        detail: String,
    },
    /// The node or account lacks a capability the driver needs (e.g. the
    /// tailnet's `funnel` node attribute).
    #[error("{driver}: {detail}")]
    NotCapable {
        /// The driver.
        driver: &'static str,
        /// Which capability and how to grant it.
        detail: String,
    },
    /// A concurrent writer kept changing the same configuration.
    #[error("{driver}: {detail}")]
    Conflict {
        /// The driver.
        driver: &'static str,
        /// What conflicted, and how many times it was retried.
        detail: String,
    },
    /// The service answered something the driver does not understand.
    #[error("{driver}: unexpected answer from {what}: {detail}")]
    Protocol {
        /// The driver.
        driver: &'static str,
        /// Which endpoint or output.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
    /// The driver is configured wrongly.
    #[error("{driver}: {detail}")]
    Config {
        /// The driver.
        driver: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Nothing came within the time allowed.
    #[error("{driver}: {what} did not finish within {secs} s")]
    Timeout {
        /// The driver.
        driver: &'static str,
        /// What was waited for.
        what: String,
        /// How long.
        secs: u64,
    },
}

/// A tunnel that [`Driver::expose`] set up.
#[async_trait]
pub trait Tunnel: Send + Sync + std::fmt::Debug {
    /// Its state, now and as it changes.
    fn watch(&self) -> watch::Receiver<TunnelState>;
    /// Undo the exposure and wait until it is gone.
    async fn remove(self: Box<Self>) -> Result<(), DriverError>;
}

/// One way to expose the gateway publicly.
#[async_trait]
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// Which `mode` this driver implements.
    fn mode(&self) -> ResolverMode;
    /// Expose the gateway for `exposure` (see the module docs).
    async fn expose(&self, exposure: &Exposure) -> Result<Box<dyn Tunnel>, DriverError>;
}

/// How the drivers reach their services (`omega node` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriversConfig {
    /// `tailscale-funnel`.
    pub tailscale: tailscale::Config,
    /// `cloudflared`.
    pub cloudflared: cloudflared::Config,
    /// `ngrok`.
    pub ngrok: ngrok::Config,
    /// `netbird`.
    pub netbird: netbird::Config,
}

/// The driver for `mode`.
pub fn driver(mode: ResolverMode, config: &DriversConfig) -> Box<dyn Driver> {
    match mode {
        ResolverMode::TailscaleFunnel => {
            Box::new(tailscale::TailscaleFunnel::new(config.tailscale.clone()))
        }
        ResolverMode::Cloudflared => {
            Box::new(cloudflared::Cloudflared::new(config.cloudflared.clone()))
        }
        ResolverMode::Ngrok => Box::new(ngrok::Ngrok::new(config.ngrok.clone())),
        ResolverMode::Netbird => Box::new(netbird::Netbird::new(config.netbird.clone())),
    }
}
