//! Real daemons that find each other only through overlay discovery:
//! Tailscale's LocalAPI (a local fake tailscaled on a unix socket, one per
//! node, answering like the real one) and `netbird status --json` (a fake
//! `netbird` program). Tailscale and NetBird cannot run here, so the
//! overlay "IPs" are loopback addresses 127.0.0.2–4 and every node listens
//! on the same overlay port, as nodes on a tailnet do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mesh_common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use mesh_common::{Daemon, init_mesh, invite, state_of, wait_for};

const PORT: u16 = 47_311;

/// A LocalAPI `/localapi/v0/status` answer listing `peers` (host name, IP).
fn tailscale_status(me: (&str, &str), peers: &[(&str, &str)]) -> String {
    let peer = |(i, (name, ip)): (usize, &(&str, &str))| {
        format!(
            r#""nodekey:{i:04x}": {{"ID": "n{i}CNTRL", "PublicKey": "nodekey:{i:04x}",
              "HostName": "{name}", "DNSName": "{name}.tail1234.ts.net.", "OS": "linux",
              "UserID": 1, "TailscaleIPs": ["{ip}"], "AllowedIPs": ["{ip}/32"],
              "CurAddr": "", "Relay": "fra", "Online": true, "Active": true,
              "InNetworkMap": true, "InMagicSock": true, "InEngine": true}}"#
        )
    };
    let peers: Vec<String> = peers.iter().enumerate().map(peer).collect();
    format!(
        r#"{{"Version": "1.76.6", "BackendState": "Running", "TailscaleIPs": ["{ip}"],
            "Self": {{"ID": "nSELF", "HostName": "{name}", "TailscaleIPs": ["{ip}"], "Online": true}},
            "MagicDNSSuffix": "tail1234.ts.net", "Peer": {{{peers}}}}}"#,
        name = me.0,
        ip = me.1,
        peers = peers.join(",")
    )
}

/// A fake tailscaled: answers `GET /localapi/v0/status` on `socket` when the
/// request carries `Sec-Tailscale: localapi` (403 otherwise, like the real
/// daemon). Serves a bounded number of requests on a background thread.
fn fake_tailscaled(socket: &Path, status: String) {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(2_000) {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            let mut localapi = false;
            let _ = reader.read_line(&mut request_line);
            for _ in 0..64 {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                localapi |= lower.starts_with("sec-tailscale:") && lower.contains("localapi");
            }
            let (code, body) = if !localapi {
                (
                    "403 Forbidden",
                    r#"{"error":"missing Sec-Tailscale header"}"#.to_owned(),
                )
            } else if request_line.starts_with("GET /localapi/v0/status ") {
                ("200 OK", status.clone())
            } else {
                ("404 Not Found", r#"{"error":"not found"}"#.to_owned())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

/// A fake `netbird` program printing a `status --json` that lists `peers`.
fn fake_netbird(dir: &Path, peers: &[(&str, &str)]) -> std::path::PathBuf {
    let details: Vec<String> = peers
        .iter()
        .map(|(name, ip)| {
            format!(
                r#"{{"fqdn": "{name}.netbird.cloud", "netbirdIp": "{ip}", "publicKey": "k=",
                    "status": "Connected", "connectionType": "P2P", "latency": 1200000}}"#
            )
        })
        .collect();
    let json = dir.join("netbird-status.json");
    std::fs::write(
        &json,
        format!(
            r#"{{"peers": {{"total": {n}, "connected": {n}, "details": [{d}]}},
                "cliVersion": "0.36.5", "daemonVersion": "0.36.5",
                "management": {{"url": "https://api.netbird.io:443", "connected": true}},
                "netbirdIp": "100.92.10.1/16", "fqdn": "omega.netbird.cloud"}}"#,
            n = peers.len(),
            d = details.join(",")
        ),
    )
    .unwrap();
    let program = dir.join("netbird");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"status --json\" ] || {{ echo usage >&2; exit 2; }}\ncat '{}'\n",
            json.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    program
}

fn listen(ip: &str) -> String {
    format!("/ip4/{ip}/udp/{PORT}/quic-v1")
}

#[test]
fn daemons_find_each_other_through_tailscale_and_netbird_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mesh = tmp.path().join("mesh");
    init_mesh(&mesh);
    let token = invite(&mesh, &[]);
    let (a, b, c) = (
        ("ts-a", "127.0.0.2"),
        ("ts-b", "127.0.0.3"),
        ("nb-c", "127.0.0.4"),
    );
    let port = PORT.to_string();

    // a and b see each other on their tailnet; c is on a NetBird network
    // with a and b. No node is given a --peer.
    let mut daemons = Vec::new();
    for (me, peers) in [(a, [b]), (b, [a])] {
        let dir = tmp.path().join(me.0);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("tailscaled.sock");
        fake_tailscaled(&socket, tailscale_status(me, &peers));
        daemons.push(Daemon::spawn(
            &dir,
            me.0,
            Some(&token),
            &[],
            None,
            &listen(me.1),
            &[
                "--discover",
                "tailscale",
                "--tailscale-socket",
                socket.to_str().unwrap(),
                "--overlay-port",
                &port,
            ],
        ));
    }
    let dir = tmp.path().join(c.0);
    std::fs::create_dir_all(&dir).unwrap();
    let netbird = fake_netbird(&dir, &[a, b]);
    daemons.push(Daemon::spawn(
        &dir,
        c.0,
        Some(&token),
        &[],
        None,
        &listen(c.1),
        &[
            "--discover",
            "netbird",
            "--netbird-bin",
            netbird.to_str().unwrap(),
            "--overlay-port",
            &port,
        ],
    ));

    let names = [a.0, b.0, c.0];
    let formed = wait_for(Duration::from_secs(30), || {
        daemons.iter().all(|d| {
            names
                .iter()
                .filter(|n| **n != d.name)
                .all(|n| state_of(d, n).is_some_and(|s| s.0 == "alive"))
        })
    });
    assert!(
        formed.is_some(),
        "mesh did not form through overlay discovery:\n{}",
        daemons
            .iter()
            .map(|d| format!("{}: {}\n{}", d.name, d.peers(), d.log()))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
