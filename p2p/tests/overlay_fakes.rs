//! The Tailscale and NetBird providers against local fakes that speak their
//! documented interfaces: a LocalAPI server on a unix socket, and a `netbird`
//! program that prints `netbird status --json`.

use std::os::unix::fs::PermissionsExt;

use omega_p2p::discovery::{Discovery, NetBird, Tailscale};
use omega_p2p::http;
use tokio::net::UnixListener;

/// Abridged from a real LocalAPI `/localapi/v0/status` answer.
const STATUS: &str = r#"{
  "Version": "1.76.6-t1a2b3c4d-g5e6f7a8b9",
  "TUN": true,
  "BackendState": "Running",
  "HaveNodeKey": true,
  "AuthURL": "",
  "TailscaleIPs": ["100.101.1.1", "fd7a:115c:a1e0::1"],
  "Self": {"ID": "nSELF1CNTRL", "PublicKey": "nodekey:aa01", "HostName": "omega-a",
           "DNSName": "omega-a.tail1234.ts.net.", "OS": "linux", "UserID": 123,
           "TailscaleIPs": ["100.101.1.1", "fd7a:115c:a1e0::1"], "Online": true, "Active": false},
  "Health": [],
  "MagicDNSSuffix": "tail1234.ts.net",
  "CurrentTailnet": {"Name": "user@example.com", "MagicDNSSuffix": "tail1234.ts.net", "MagicDNSEnabled": true},
  "CertDomains": ["omega-a.tail1234.ts.net"],
  "Peer": {
    "nodekey:bb02": {"ID": "nB2CNTRL", "PublicKey": "nodekey:bb02", "HostName": "nas-01",
       "DNSName": "nas-01.tail1234.ts.net.", "OS": "linux", "UserID": 123,
       "TailscaleIPs": ["100.101.1.2", "fd7a:115c:a1e0::2"], "AllowedIPs": ["100.101.1.2/32", "fd7a:115c:a1e0::2/128"],
       "Addrs": ["192.168.1.20:41641"], "CurAddr": "192.168.1.20:41641", "Relay": "fra",
       "RxBytes": 1024, "TxBytes": 2048, "Created": "2024-01-01T00:00:00Z",
       "LastWrite": "2024-06-01T12:00:00Z", "LastSeen": "2024-06-01T12:00:00Z", "LastHandshake": "2024-06-01T12:00:00Z",
       "Online": true, "ExitNode": false, "ExitNodeOption": false, "Active": true, "InNetworkMap": true, "InMagicSock": true, "InEngine": true},
    "nodekey:cc03": {"ID": "nC3CNTRL", "PublicKey": "nodekey:cc03", "HostName": "phone",
       "DNSName": "phone.tail1234.ts.net.", "OS": "android", "UserID": 123,
       "TailscaleIPs": ["100.101.1.3", "fd7a:115c:a1e0::3"], "Online": false, "Active": false}
  },
  "User": {"123": {"ID": 123, "LoginName": "user@example.com", "DisplayName": "User", "ProfilePicURL": ""}}
}"#;

/// A fake tailscaled: answers `GET /localapi/v0/status` only when the request
/// carries the headers the real LocalAPI requires, like tailscaled does.
async fn fake_tailscaled(listener: UnixListener) {
    let config = http::ServerConfig {
        max_connections: 4,
        ..http::ServerConfig::default()
    };
    http::serve(listener, config, |req: http::Request| async move {
        let (status, body) = if req.header("sec-tailscale") != Some("localapi") {
            (403, r#"{"error":"localapi: missing Sec-Tailscale header"}"#)
        } else if req.method == "GET" && req.path == "/localapi/v0/status" {
            (200, STATUS)
        } else {
            (404, r#"{"error":"not found"}"#)
        };
        http::Reply::json(status, body.as_bytes().to_vec())
    })
    .await;
}

#[tokio::test]
async fn tailscale_provider_reads_the_local_api() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tailscaled.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    tokio::spawn(fake_tailscaled(listener));
    let mut ts = Tailscale { socket, port: 4001 };
    let found = ts.discover().await.unwrap();
    let addrs: Vec<String> = found.iter().map(|f| f.addr.to_string()).collect();
    assert!(
        addrs.contains(&"/ip4/100.101.1.2/udp/4001/quic-v1".to_owned()),
        "{addrs:?}"
    );
    assert!(
        !addrs.iter().any(|a| a.contains("100.101.1.3")),
        "offline peer skipped: {addrs:?}"
    );
    assert_eq!(found[0].label.as_deref(), Some("nas-01"));
}

#[tokio::test]
async fn tailscale_provider_reports_an_absent_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut ts = Tailscale {
        socket: dir.path().join("missing.sock"),
        port: 1,
    };
    let err = ts.discover().await.unwrap_err().to_string();
    assert!(err.contains("tailscale"), "{err}");
}

/// Shaped like `netbird status --json` of NetBird 0.3x.
const NETBIRD: &str = r#"{
  "peers": {
    "total": 2, "connected": 1,
    "details": [
      {"fqdn": "nas-01.netbird.cloud", "netbirdIp": "100.92.10.2", "publicKey": "B2x…=", "status": "Connected",
       "lastStatusUpdate": "2024-06-01T12:00:00Z", "connectionType": "P2P", "iceCandidateType": {"local": "host", "remote": "srflx"},
       "iceCandidateEndpoint": {"local": "192.168.1.10:51820", "remote": "203.0.113.5:51820"}, "relayAddress": "",
       "lastWireguardHandshake": "2024-06-01T12:00:00Z", "transferReceived": 1024, "transferSent": 2048,
       "latency": 1200000, "quantumResistance": false, "networks": []},
      {"fqdn": "pi.netbird.cloud", "netbirdIp": "100.92.10.3", "publicKey": "C3y…=", "status": "Idle",
       "lastStatusUpdate": "2024-06-01T11:00:00Z", "connectionType": "-", "networks": []}
    ]
  },
  "cliVersion": "0.36.5", "daemonVersion": "0.36.5",
  "management": {"url": "https://api.netbird.io:443", "connected": true, "error": ""},
  "signal": {"url": "https://signal.netbird.io:443", "connected": true, "error": ""},
  "relays": {"total": 1, "available": 1, "details": []},
  "netbirdIp": "100.92.10.1/16", "publicKey": "A1z…=", "usesKernelInterface": true,
  "fqdn": "omega-a.netbird.cloud", "quantumResistance": false, "networks": [], "dnsServers": []
}"#;

#[tokio::test]
async fn netbird_provider_reads_the_daemon_status() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("netbird");
    let json = dir.path().join("status.json");
    std::fs::write(&json, NETBIRD).unwrap();
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"status --json\" ] || {{ echo usage >&2; exit 2; }}\ncat '{}'\n",
            json.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut nb = NetBird {
        program,
        port: 4001,
    };
    let found = nb.discover().await.unwrap();
    let addrs: Vec<String> = found.iter().map(|f| f.addr.to_string()).collect();
    assert_eq!(
        addrs,
        [
            "/ip4/100.92.10.2/udp/4001/quic-v1",
            "/ip4/100.92.10.2/tcp/4001"
        ]
    );
}
