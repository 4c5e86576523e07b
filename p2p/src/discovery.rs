//! Discovery providers: each finds candidate addresses for the node brain's
//! address book (`omega_gossip::node`, fed as `Input::Discovered`).
//! Discovery finds addresses; admission decides who is a member.
//!
//! Polled providers implement [`Discovery`]: [`Static`] (multiaddrs from flags),
//! [`Tailscale`] (LocalAPI status over its unix socket), [`NetBird`] (the
//! daemon's status via `netbird status --json`) and [`WireGuard`]
//! (`wg show IFACE dump`). mDNS (`lan`) and Kademlia are libp2p behaviours in
//! the swarm; their results go into the same book.
//!
//! Overlay providers know peers' IP addresses, not their Omega ports: they
//! produce `/ip4/IP/udp/PORT/quic-v1` (and `/tcp/PORT`) with the configured
//! overlay port, by convention the port this node listens on.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::Deserialize;

/// What one discovery round produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// An address to dial.
    pub addr: Multiaddr,
    /// A human label from the provider (host name), if any.
    pub label: Option<String>,
}

/// Why a provider failed this round (it is retried next round).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The provider's API or command could not be reached or failed.
    #[error("{provider}: {message}")]
    Unavailable {
        /// Provider name.
        provider: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The provider answered something we could not parse.
    #[error("{provider}: unexpected answer: {message}")]
    Malformed {
        /// Provider name.
        provider: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// A source of candidate addresses, polled every discovery interval.
#[async_trait]
pub trait Discovery: Send {
    /// The provider's name (`static`, `tailscale`, …).
    fn name(&self) -> &'static str;
    /// One round of discovery.
    async fn discover(&mut self) -> Result<Vec<Found>, DiscoveryError>;
}

/// Addresses given on the command line or in config.
#[derive(Debug, Clone)]
pub struct Static(pub Vec<Multiaddr>);

#[async_trait]
impl Discovery for Static {
    fn name(&self) -> &'static str {
        "static"
    }

    async fn discover(&mut self) -> Result<Vec<Found>, DiscoveryError> {
        Ok(self
            .0
            .iter()
            .map(|a| Found {
                addr: a.clone(),
                label: None,
            })
            .collect())
    }
}

/// The multiaddrs for an overlay IP and the Omega port.
pub fn overlay_addrs(ip: IpAddr, port: u16) -> [Multiaddr; 2] {
    let base = Multiaddr::empty().with(match ip {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    });
    [
        base.clone()
            .with(Protocol::Udp(port))
            .with(Protocol::QuicV1),
        base.with(Protocol::Tcp(port)),
    ]
}

fn found_for(ips: impl IntoIterator<Item = IpAddr>, port: u16, label: Option<&str>) -> Vec<Found> {
    ips.into_iter()
        .flat_map(|ip| overlay_addrs(ip, port))
        .map(|addr| Found {
            addr,
            label: label.map(str::to_owned),
        })
        .collect()
}

/// Tailscale: `GET /localapi/v0/status` on tailscaled's unix socket.
#[derive(Debug, Clone)]
pub struct Tailscale {
    /// The LocalAPI socket (default `/var/run/tailscale/tailscaled.sock`).
    pub socket: PathBuf,
    /// The Omega port on peers.
    pub port: u16,
}

/// The default tailscaled socket on Linux.
pub const TAILSCALE_SOCKET: &str = "/var/run/tailscale/tailscaled.sock";

#[derive(Deserialize)]
struct TsStatus {
    #[serde(rename = "Peer", default)]
    peer: Option<BTreeMap<String, TsPeer>>,
}

#[derive(Deserialize)]
struct TsPeer {
    #[serde(rename = "HostName", default)]
    host_name: String,
    #[serde(rename = "TailscaleIPs", default)]
    tailscale_ips: Option<Vec<String>>,
    #[serde(rename = "Online", default)]
    online: bool,
}

/// Parses a LocalAPI status document into online peers' tailnet addresses.
pub fn parse_tailscale_status(json: &[u8], port: u16) -> Result<Vec<Found>, DiscoveryError> {
    let st: TsStatus = serde_json::from_slice(json).map_err(|e| DiscoveryError::Malformed {
        provider: "tailscale",
        message: e.to_string(),
    })?;
    Ok(st
        .peer
        .unwrap_or_default()
        .values()
        .filter(|p| p.online)
        .flat_map(|p| {
            let ips = p
                .tailscale_ips
                .iter()
                .flatten()
                .filter_map(|s| s.parse::<IpAddr>().ok());
            found_for(ips, port, Some(&p.host_name))
        })
        .collect())
}

#[async_trait]
impl Discovery for Tailscale {
    fn name(&self) -> &'static str {
        "tailscale"
    }

    async fn discover(&mut self) -> Result<Vec<Found>, DiscoveryError> {
        let headers = [
            ("Host", "local-tailscaled.sock"),
            ("Sec-Tailscale", "localapi"),
        ];
        let r = crate::http::request(&self.socket, "GET", "/localapi/v0/status", &headers, b"")
            .await
            .map_err(|e| DiscoveryError::Unavailable {
                provider: "tailscale",
                message: format!("{}: {e}", self.socket.display()),
            })?;
        if r.status != 200 {
            return Err(DiscoveryError::Unavailable {
                provider: "tailscale",
                message: format!("LocalAPI status {}", r.status),
            });
        }
        parse_tailscale_status(&r.body, self.port)
    }
}

/// NetBird: the daemon's status as printed by `netbird status --json`.
#[derive(Debug, Clone)]
pub struct NetBird {
    /// The `netbird` program (default `netbird` on `PATH`).
    pub program: PathBuf,
    /// The Omega port on peers.
    pub port: u16,
}

#[derive(Deserialize)]
struct NbStatus {
    #[serde(default)]
    peers: Option<NbPeers>,
}

#[derive(Deserialize)]
struct NbPeers {
    #[serde(default)]
    details: Option<Vec<NbPeer>>,
}

#[derive(Deserialize)]
struct NbPeer {
    #[serde(default)]
    fqdn: String,
    #[serde(rename = "netbirdIp", default)]
    netbird_ip: String,
    #[serde(default)]
    status: String,
}

/// Parses `netbird status --json` into connected peers' overlay addresses.
pub fn parse_netbird_status(json: &[u8], port: u16) -> Result<Vec<Found>, DiscoveryError> {
    let st: NbStatus = serde_json::from_slice(json).map_err(|e| DiscoveryError::Malformed {
        provider: "netbird",
        message: e.to_string(),
    })?;
    Ok(st
        .peers
        .and_then(|p| p.details)
        .unwrap_or_default()
        .iter()
        .filter(|p| p.status.eq_ignore_ascii_case("connected"))
        .flat_map(|p| {
            let ip = p
                .netbird_ip
                .split('/')
                .next()
                .and_then(|s| s.parse::<IpAddr>().ok());
            found_for(ip, port, Some(&p.fqdn))
        })
        .collect())
}

async fn run_capped(
    provider: &'static str,
    program: &std::path::Path,
    args: &[&str],
) -> Result<Vec<u8>, DiscoveryError> {
    let unavailable = |message: String| DiscoveryError::Unavailable { provider, message };
    let out = tokio::time::timeout(
        crate::http::TIMEOUT,
        tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| unavailable(format!("{} timed out", program.display())))?
    .map_err(|e| unavailable(format!("{}: {e}", program.display())))?;
    if !out.status.success() {
        return Err(unavailable(format!(
            "{} exited with {}: {}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if out.stdout.len() > crate::http::MAX_BODY {
        return Err(unavailable("output too large".into()));
    }
    Ok(out.stdout)
}

#[async_trait]
impl Discovery for NetBird {
    fn name(&self) -> &'static str {
        "netbird"
    }

    async fn discover(&mut self) -> Result<Vec<Found>, DiscoveryError> {
        let out = run_capped("netbird", &self.program, &["status", "--json"]).await?;
        parse_netbird_status(&out, self.port)
    }
}

/// WireGuard: peers' allowed IPs from `wg show IFACE dump`.
#[derive(Debug, Clone)]
pub struct WireGuard {
    /// The `wg` program (default `wg` on `PATH`).
    pub program: PathBuf,
    /// The WireGuard interface.
    pub interface: String,
    /// The Omega port on peers.
    pub port: u16,
}

/// Parses `wg show IFACE dump`: the first line is the interface, each further
/// line a peer (public key, preshared key, endpoint, allowed IPs, latest
/// handshake, rx, tx, keepalive), tab-separated. Host routes (/32, /128) among
/// the allowed IPs are the peers' overlay addresses.
pub fn parse_wg_dump(text: &str, port: u16) -> Vec<Found> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            (cols.len() >= 8).then(|| (cols[0], cols[3]))
        })
        .flat_map(|(key, allowed)| {
            let ips: Vec<IpAddr> = allowed
                .split(',')
                .filter_map(|net| {
                    let (ip, len) = net.trim().split_once('/')?;
                    let ip: IpAddr = ip.parse().ok()?;
                    let host = match ip {
                        IpAddr::V4(_) => "32",
                        IpAddr::V6(_) => "128",
                    };
                    (len == host).then_some(ip)
                })
                .collect();
            let label = key.chars().take(8).collect::<String>();
            found_for(ips, port, Some(&label))
        })
        .collect()
}

#[async_trait]
impl Discovery for WireGuard {
    fn name(&self) -> &'static str {
        "wireguard"
    }

    async fn discover(&mut self) -> Result<Vec<Found>, DiscoveryError> {
        let out = run_capped(
            "wireguard",
            &self.program,
            &["show", &self.interface, "dump"],
        )
        .await?;
        Ok(parse_wg_dump(&String::from_utf8_lossy(&out), self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Abridged from a real `tailscale status --json` / LocalAPI answer.
    pub(crate) const TAILSCALE_STATUS: &str = r#"{
  "Version": "1.76.6-t1a2b3c4d",
  "TUN": true,
  "BackendState": "Running",
  "AuthURL": "",
  "TailscaleIPs": ["100.101.1.1", "fd7a:115c:a1e0::1"],
  "Self": {"ID": "nSELF", "PublicKey": "nodekey:aa01", "HostName": "omega-a", "DNSName": "omega-a.tail1234.ts.net.",
           "OS": "linux", "TailscaleIPs": ["100.101.1.1", "fd7a:115c:a1e0::1"], "Online": true},
  "Health": [],
  "MagicDNSSuffix": "tail1234.ts.net",
  "CurrentTailnet": {"Name": "user@example.com", "MagicDNSSuffix": "tail1234.ts.net", "MagicDNSEnabled": true},
  "Peer": {
    "nodekey:bb02": {"ID": "nB", "PublicKey": "nodekey:bb02", "HostName": "nas-01", "DNSName": "nas-01.tail1234.ts.net.",
       "OS": "linux", "UserID": 123, "TailscaleIPs": ["100.101.1.2", "fd7a:115c:a1e0::2"], "Relay": "fra",
       "RxBytes": 1024, "TxBytes": 2048, "Created": "2024-01-01T00:00:00Z", "LastSeen": "0001-01-01T00:00:00Z",
       "Online": true, "ExitNode": false, "Active": true, "CurAddr": "192.168.1.20:41641"},
    "nodekey:cc03": {"ID": "nC", "PublicKey": "nodekey:cc03", "HostName": "phone", "DNSName": "phone.tail1234.ts.net.",
       "OS": "android", "TailscaleIPs": ["100.101.1.3"], "Online": false}
  },
  "User": {"123": {"ID": 123, "LoginName": "user@example.com", "DisplayName": "User"}}
}"#;

    #[test]
    fn tailscale_status_yields_online_peers() {
        let f = parse_tailscale_status(TAILSCALE_STATUS.as_bytes(), 4001).unwrap();
        let addrs: Vec<String> = f.iter().map(|f| f.addr.to_string()).collect();
        assert_eq!(
            addrs,
            [
                "/ip4/100.101.1.2/udp/4001/quic-v1",
                "/ip4/100.101.1.2/tcp/4001",
                "/ip6/fd7a:115c:a1e0::2/udp/4001/quic-v1",
                "/ip6/fd7a:115c:a1e0::2/tcp/4001"
            ]
        );
        assert_eq!(f[0].label.as_deref(), Some("nas-01"));
    }

    #[test]
    fn netbird_status_yields_connected_peers() {
        let json = br#"{"peers":{"total":2,"connected":1,"details":[
          {"fqdn":"nas.netbird.cloud","netbirdIp":"100.92.0.2","publicKey":"x","status":"Connected","connectionType":"P2P"},
          {"fqdn":"pi.netbird.cloud","netbirdIp":"100.92.0.3","publicKey":"y","status":"Idle","connectionType":"-"}]},
          "netbirdIp":"100.92.0.1/16","fqdn":"me.netbird.cloud"}"#;
        let f = parse_netbird_status(json, 7).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].addr.to_string(), "/ip4/100.92.0.2/udp/7/quic-v1");
    }

    #[test]
    fn wg_dump_yields_host_routes() {
        let dump = "PRIV\tPUB\t51820\toff\nPEERKEY1=\t(none)\t10.0.0.2:51820\t10.99.0.2/32,192.168.0.0/24\t0\t0\t0\toff\n";
        let f = parse_wg_dump(dump, 9);
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].addr.to_string(), "/ip4/10.99.0.2/tcp/9");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_tailscale_status(b"\xff{", 1).is_err());
        assert!(parse_netbird_status(b"\"x\"", 1).is_err());
        assert!(parse_wg_dump("x\n\t\t\t", 1).is_empty());
    }
}
