//! The fake `netbird`: `omega-fake netbird expose PORT --protocol http …`,
//! or a symlink named `netbird` to `omega-fake`.
//!
//! # What it reproduces (from NetBird's source, `client/cmd/expose.go`,
//! `client/cmd/root.go`, `client/server/server.go`, the management
//! server's reverse-proxy service manager)
//!
//! - The command line: `expose <port>` with cobra/pflag syntax, flags
//!   anywhere: `--protocol` (default `http`; `http`, `https`, `tcp`,
//!   `udp`, `tls`), `--with-name-prefix`, `--with-pin`, `--with-password`,
//!   `--with-user-groups`, `--with-custom-domain`, `--with-external-port`
//!   and the persistent `--daemon-addr`, `--log-level`/`-l`,
//!   `--log-file`. Errors like cobra prints them, on stderr, exit 1:
//!   `Error: unknown flag: --x`, `Error: accepts 1 arg(s), received 0`,
//!   `Error: unknown command "x" for "netbird"`, `Error: invalid port
//!   number: x`, `Error: unsupported protocol "x": must be http, https,
//!   tcp, udp, or tls`.
//! - Success, on stderr (cobra's `cmd.Println` with no output set):
//!   `Service exposed successfully!`, then `  Name:     NAME`, `  URL:
//!   https://NAME.DOMAIN`, `  Domain:   NAME.DOMAIN`, `  Protocol: http`,
//!   `  Internal: PORT`, a blank line and `Press Ctrl+C to stop exposing.`;
//!   `NAME` is `PREFIX-xxxx` (4 random lowercase letters and digits) or
//!   12 random ones, as the management server generates it.
//! - SIGTERM/SIGINT: prints a blank line and `Service stopped.`, exit 0
//!   (the real daemon then deletes the service).
//! - The reverse proxy, locally: a listener on `127.0.0.1` that forwards
//!   to `127.0.0.1:PORT` (as NetBird's userspace mode delivers traffic for
//!   the peer's address) with `Host: NETBIRD-IP:PORT` and
//!   `X-Forwarded-Host: NAME.DOMAIN`, `X-Forwarded-Proto: https`,
//!   `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Port: 443`, like the
//!   real proxy for a peer target. Its address is in the state file.
//!
//! # Knobs
//!
//! As for the fake cloudflared (environment, overridden by `PROGRAM.fake`):
//!
//! - `OMEGA_FAKE_FAIL`: `daemon` (no daemon: after `OMEGA_FAKE_DIAL_MS`,
//!   default 10000 like the CLI's dial timeout, `Error: connect to daemon:
//!   context deadline exceeded`), `needs-login` (`Error: receive expose
//!   event: client is not running, run 'netbird up' first`, what the
//!   daemon answers while it needs a login or is down),
//!   `expose-disabled` (`… peer expose is not enabled for this account`),
//!   `no-proxy` (`… no cluster domains available`), `exit-after-ms=N`
//!   (`Error: connection to daemon closed unexpectedly`, exit 1, N ms
//!   after success), `ignore-term`.
//! - `OMEGA_FAKE_NETBIRD_DOMAIN`: the proxy's cluster domain (default
//!   `eu.proxy.netbird.io`); `OMEGA_FAKE_NETBIRD_IP`: the peer's NetBird
//!   address (default `100.90.0.1`).
//! - `OMEGA_FAKE_STATE`: every start appends `pid=P url=URL proxy=ADDR`.

use std::sync::Arc;
use std::time::Duration;

use super::cloudflared::{Forwarded, Knobs, Rewrite, Rng, proxy};

const FLAGS: &[(&str, Option<char>)] = &[
    ("protocol", None),
    ("with-name-prefix", None),
    ("with-pin", None),
    ("with-password", None),
    ("with-user-groups", None),
    ("with-custom-domain", None),
    ("with-external-port", None),
    ("daemon-addr", None),
    ("log-level", Some('l')),
    ("log-file", None),
];

const USAGE: &str = "Usage:
  netbird expose <port> [flags]

Examples:
  netbird expose --with-password safe-pass 8080
  netbird expose --protocol tcp 5432
  netbird expose --protocol tcp --with-external-port 5433 5432
  netbird expose --protocol tls --with-custom-domain tls.example.com 4443

Flags:
  -h, --help                        help for expose
      --protocol string             Protocol to use: http, https, tcp, udp, or tls (e.g. --protocol tcp) (default \"http\")
      --with-name-prefix string     Prefix for the generated service name (e.g. --with-name-prefix my-app)
";

fn error(msg: &str) -> i32 {
    eprintln!("Error: {msg}");
    1
}

struct Expose {
    port: u16,
    protocol: String,
    prefix: Option<String>,
}

/// Parses `expose …`; `Err` is the exit code (the message is printed).
fn parse(args: &[String]) -> Result<Expose, i32> {
    let mut positional = Vec::new();
    let mut values: Vec<(&str, String)> = Vec::new();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        i += 1;
        if arg == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        let (name, inline) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (long.to_owned(), None),
            }
        } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let c = short.chars().next().unwrap_or('-');
            if c == 'h' {
                eprint!("{USAGE}");
                return Err(0);
            }
            match FLAGS.iter().find(|(_, s)| *s == Some(c)) {
                Some((n, _)) => {
                    let rest = &short[c.len_utf8()..];
                    let v = rest.strip_prefix('=').unwrap_or(rest);
                    ((*n).to_owned(), (!v.is_empty()).then(|| v.to_owned()))
                }
                None => {
                    return Err(error(&format!("unknown shorthand flag: '{c}' in -{short}")));
                }
            }
        } else {
            positional.push(arg.clone());
            continue;
        };
        if name == "help" {
            eprint!("{USAGE}");
            return Err(0);
        }
        let Some((flag, _)) = FLAGS.iter().find(|(n, _)| *n == name) else {
            return Err(error(&format!("unknown flag: --{name}")));
        };
        let value = match inline {
            Some(v) => v,
            None => match args.get(i) {
                Some(v) => {
                    i += 1;
                    v.clone()
                }
                None => return Err(error(&format!("flag needs an argument: --{name}"))),
            },
        };
        values.push((flag, value));
    }
    match positional.first().map(String::as_str) {
        Some("expose") => {}
        Some(other) => {
            eprintln!(
                "Error: unknown command \"{other}\" for \"netbird\"\nRun 'netbird --help' for usage."
            );
            return Err(1);
        }
        None => {
            eprintln!("omega-fake netbird: only `netbird expose` is faked");
            return Err(2);
        }
    }
    let rest = &positional[1..];
    if rest.len() != 1 {
        return Err(error(&format!("accepts 1 arg(s), received {}", rest.len())));
    }
    let get = |k: &str| {
        values
            .iter()
            .rev()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
    };
    let protocol = get("protocol").unwrap_or_else(|| "http".into());
    // From here the real CLI shows the usage with the error.
    let with_usage = |msg: String| {
        eprintln!("Error: {msg}");
        eprint!("{USAGE}");
        1
    };
    let port = match rest[0].parse::<u64>() {
        Err(_) => return Err(with_usage(format!("invalid port number: {}", rest[0]))),
        Ok(p) if p == 0 || p > 65535 => {
            return Err(with_usage(
                "invalid port number: must be between 1 and 65535".into(),
            ));
        }
        Ok(p) => u16::try_from(p).unwrap_or(0),
    };
    if !matches!(
        protocol.to_ascii_lowercase().as_str(),
        "http" | "https" | "tcp" | "udp" | "tls"
    ) {
        return Err(with_usage(format!(
            "unsupported protocol {protocol:?}: must be http, https, tcp, udp, or tls"
        )));
    }
    let prefix = get("with-name-prefix");
    if let Some(p) = &prefix {
        let b = p.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ok = !b.is_empty()
            && b.len() <= 32
            && b.first().is_some_and(edge)
            && b.last().is_some_and(edge)
            && b.iter().all(|c| edge(c) || *c == b'-');
        if !ok {
            return Err(error(&format!(
                "receive expose event: validate expose request: invalid name prefix {p:?}: must be lowercase alphanumeric with optional hyphens, 1-32 characters"
            )));
        }
    }
    Ok(Expose {
        port,
        protocol,
        prefix,
    })
}

/// Runs the fake; returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    let knobs = Knobs::load();
    let expose = match parse(&args) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("omega-fake netbird: cannot start a runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run(expose, knobs))
}

async fn run(expose: Expose, knobs: Knobs) -> i32 {
    let caught = catch_signals();
    if knobs.fails("daemon") {
        tokio::time::sleep(knobs.millis("OMEGA_FAKE_DIAL_MS", 10_000)).await;
        return error("connect to daemon: context deadline exceeded");
    }
    if knobs.fails("needs-login") {
        return error("receive expose event: client is not running, run 'netbird up' first");
    }
    if knobs.fails("expose-disabled") {
        return error("receive expose event: peer expose is not enabled for this account");
    }
    if knobs.fails("no-proxy") {
        return error("receive expose event: no cluster domains available");
    }
    let mut rng = Rng::new();
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(ALNUM[rng.below(ALNUM.len())]))
            .collect()
    };
    let name = match &expose.prefix {
        Some(p) => format!("{p}-{}", random(4)),
        None => random(12),
    };
    let domain = format!(
        "{name}.{}",
        knobs
            .get("OMEGA_FAKE_NETBIRD_DOMAIN")
            .unwrap_or("eu.proxy.netbird.io")
    );
    let url = format!("https://{domain}");
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("omega-fake netbird: cannot listen for the local proxy: {e}");
            return 2;
        }
    };
    let proxy_addr = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let nb_ip = knobs.get("OMEGA_FAKE_NETBIRD_IP").unwrap_or("100.90.0.1");
    tokio::spawn(proxy(
        listener,
        Arc::new(Rewrite {
            origin: format!("127.0.0.1:{}", expose.port),
            host: Some(format!("{nb_ip}:{}", expose.port)),
            forwarded: Forwarded::Netbird {
                public: domain.clone(),
            },
        }),
    ));
    knobs.record(&format!(
        "pid={} url={url} proxy={proxy_addr}",
        std::process::id()
    ));
    eprintln!("Service exposed successfully!");
    eprintln!("  Name:     {name}");
    eprintln!("  URL:      {url}");
    eprintln!("  Domain:   {domain}");
    eprintln!("  Protocol: {}", expose.protocol);
    eprintln!("  Internal: {}", expose.port);
    eprintln!();
    eprintln!("Press Ctrl+C to stop exposing.");
    let exit_after = knobs
        .fail_value("exit-after-ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let ignore = knobs.fails("ignore-term");
    let stream = async {
        match exit_after {
            Some(d) => {
                tokio::time::sleep(d).await;
                error("connection to daemon closed unexpectedly")
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        code = stream => code,
        code = signals(caught, ignore) => code,
    }
}

/// SIGTERM and SIGINT, caught from now on (installed before the fake
/// says it is up, so a signal right after cannot kill it by default).
fn catch_signals() -> Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)> {
    use tokio::signal::unix::{SignalKind, signal};
    Some((
        signal(SignalKind::terminate()).ok()?,
        signal(SignalKind::interrupt()).ok()?,
    ))
}

async fn signals(
    caught: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
    ignore: bool,
) -> i32 {
    let Some((mut term, mut int)) = caught else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if !ignore {
            eprintln!("\nService stopped.");
            return 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_like_cobra() {
        let e = parse(&args(
            "expose 8080 --protocol http --with-name-prefix public",
        ))
        .expect("ok");
        assert_eq!(e.port, 8080);
        assert_eq!(e.prefix.as_deref(), Some("public"));
        let e = parse(&args("expose --protocol=http 8080")).expect("ok");
        assert_eq!(e.protocol, "http");
        assert_eq!(parse(&args("expose 8080 --bogus")).err(), Some(1));
        assert_eq!(parse(&args("expose")).err(), Some(1));
        assert_eq!(parse(&args("expose 0")).err(), Some(1));
        assert_eq!(parse(&args("expose 80 --protocol gopher")).err(), Some(1));
        assert_eq!(parse(&args("frobnicate")).err(), Some(1));
    }
}
