//! The fake `cloudflared`: `omega-fake cloudflared tunnel …`, or a symlink
//! named `cloudflared` to `omega-fake`.
//!
//! # What it reproduces (from cloudflared's source, `cmd/cloudflared/tunnel`,
//! `metrics/`, `connection/`, `supervisor/`)
//!
//! - The command line: `tunnel [TUNNEL FLAGS] [run [RUN FLAGS] [TUNNEL]]`
//!   with Go/urfave flag syntax (`-f`, `--f`, `--f=v`, `--f v`); flags
//!   before `run` are the tunnel command's, after it `run`'s. An unknown
//!   flag prints `Incorrect Usage: flag provided but not defined: -NAME`
//!   and the command's help to stdout and exits 0 (cloudflared ignores
//!   the error `app.Run` returns on Linux). The fake knows the flags the
//!   drivers use and a few more, not all of the real ones.
//! - A quick tunnel (`--url` without `run`): the disclaimer, `Requesting
//!   new quick Tunnel on trycloudflare.com...`, the boxed `Your quick
//!   Tunnel has been created! Visit it at …` banner with a random
//!   `WORD-WORD-WORD-WORD.trycloudflare.com`, the start-up lines, `Starting
//!   metrics server on ADDR/metrics`, then after a short delay one
//!   `Registered tunnel connection connIndex=0 connection=UUID event=0
//!   ip=… location=… protocol=quic` line (a named tunnel registers four).
//!   All log lines go to stderr in zerolog's console format without
//!   colour (`2006-01-02T15:04:05Z INF message key=value`).
//! - A named tunnel (`run … TUNNEL`): the credentials file must exist
//!   (else `Tunnel credentials file 'F' doesn't exist or is not a file`,
//!   exit status 1) and be JSON with `AccountTag`, `TunnelSecret`,
//!   `TunnelID` (else `Invalid JSON when parsing tunnel credentials
//!   file`); a tunnel given by name rather than UUID needs the file to
//!   carry `TunnelID`, else cloudflared would need cert.pem (`error
//!   parsing tunnel ID: Error locating origin cert: client didn't specify
//!   origincert path`).
//! - The metrics server on `--metrics` (default `localhost:20241`):
//!   `GET /ready` → `503 {"status":503,"readyConnections":0,"connectorId":…}`
//!   until connected, then `200 {"status":200,"readyConnections":N,…}`;
//!   `GET /quicktunnel` → `{"hostname":"…"}` (empty for a named tunnel);
//!   `GET /healthcheck` → `OK`; anything else → `404 page not found`.
//! - SIGTERM/SIGINT: `Initiating graceful shutdown due to signal
//!   terminated ...`, then exit 0.
//! - The edge, locally: a listener on `127.0.0.1` that forwards each
//!   request to `--url` with `Host` set to `--http-host-header` (else the
//!   tunnel's hostname, or for a named tunnel the request's own), adding
//!   `Cf-Connecting-Ip`, `X-Forwarded-For`, `X-Forwarded-Proto: https` and
//!   `Cf-Ray`, so a test can send a request "through the tunnel"; an
//!   unreachable origin answers 502. Its address is in the state file.
//!
//! # Knobs
//!
//! From the environment, or — overriding it, one `KEY=VALUE` a line — from
//! a file next to the program it is run as, named `PROGRAM.fake` (e.g.
//! `/tmp/x/cloudflared.fake` for a symlink `/tmp/x/cloudflared`), read at
//! every start, so a test can change the next run's behaviour:
//!
//! - `OMEGA_FAKE_FAIL`: comma-separated failures: `auth` (the edge refuses
//!   the credentials: `Register tunnel error from server side
//!   error="Unauthorized: Invalid tunnel secret"`, retried forever, never
//!   ready), `edge` (`Failed to dial a quic connection error="failed to
//!   dial to edge with quic: timeout: no recent network activity"`,
//!   retried, never ready), `never-ready` (silent, never ready),
//!   `quick-service` (`failed to request quick Tunnel: …`, exit 1),
//!   `exit-after-ms=N` (exit 1 N ms after connecting), `ignore-term`
//!   (log the signal but keep running, to test the kill after the grace).
//! - `OMEGA_FAKE_CONNECT_MS`: delay before connecting (default 200).
//! - `OMEGA_FAKE_STATE`: a file to which every start appends `pid=P
//!   hostname=H metrics=ADDR edge=ADDR`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// The fake's knobs: `OMEGA_FAKE_*` variables, overridden by
/// `ARGV0.fake`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Knobs(BTreeMap<String, String>);

/// Longest knob file read.
const MAX_KNOBS: u64 = 64 * 1024;

impl Knobs {
    /// Reads the environment and the file next to `argv[0]`.
    pub(crate) fn load() -> Self {
        let mut map: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("OMEGA_FAKE_"))
            .collect();
        if let Some(argv0) = std::env::args_os().next() {
            let mut path = argv0;
            path.push(".fake");
            if let Ok(f) = std::fs::File::open(&path) {
                use std::io::Read as _;
                let mut text = String::new();
                let _ = f.take(MAX_KNOBS).read_to_string(&mut text);
                for line in text.lines() {
                    let line = line.trim();
                    if line.starts_with('#') {
                        continue;
                    }
                    if let Some((k, v)) = line.split_once('=') {
                        map.insert(k.trim().to_owned(), v.trim().to_owned());
                    }
                }
            }
        }
        Self(map)
    }

    /// A knob's value.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether `OMEGA_FAKE_FAIL` lists `mode` (or `mode=…`).
    pub(crate) fn fails(&self, mode: &str) -> bool {
        self.fail_value(mode).is_some()
    }

    /// The value of `mode=VALUE` in `OMEGA_FAKE_FAIL` (`""` for a bare
    /// `mode`).
    pub(crate) fn fail_value(&self, mode: &str) -> Option<&str> {
        self.get("OMEGA_FAKE_FAIL")?.split(',').find_map(|m| {
            let m = m.trim();
            match m.split_once('=') {
                Some((k, v)) if k == mode => Some(v),
                None if m == mode => Some(""),
                _ => None,
            }
        })
    }

    /// A number of milliseconds.
    pub(crate) fn millis(&self, key: &str, default: u64) -> Duration {
        Duration::from_millis(
            self.get(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default),
        )
    }

    /// Appends `line` to the `OMEGA_FAKE_STATE` file, if set.
    pub(crate) fn record(&self, line: &str) {
        if let Some(path) = self.get("OMEGA_FAKE_STATE")
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// A small random source (xorshift, seeded from the clock and the pid):
/// names and ids only, nothing secret.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Self {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self(t ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub(crate) fn uuid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

/// Now as RFC 3339 UTC seconds, the way cloudflared's console log shows it.
pub(crate) fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
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

fn log(level: &str, message: &str) {
    eprintln!("{} {level} {message}", timestamp());
}

const WORDS: &[&str] = &[
    "buffalo", "marco", "cardiff", "motel", "emission", "wines", "changing", "framed", "river",
    "lamp", "garden", "orbit", "silver", "pencil", "harbor", "meadow", "copper", "velvet",
    "canyon", "thunder", "maple", "lantern", "pixel", "summit", "cobalt", "falcon", "ember",
    "willow", "quartz", "prairie", "tango", "violet", "glacier", "saddle", "beacon", "juniper",
    "mosaic", "nickel", "oasis", "ribbon", "sierra", "timber", "umbrella", "walnut", "yonder",
    "zephyr",
];

/// How the parse of the command line ended.
enum Parsed {
    Tunnel(Box<Cmd>),
    Exit(i32),
}

#[derive(Debug, Default)]
struct Cmd {
    url: Option<String>,
    metrics: Option<String>,
    host_header: Option<String>,
    credentials: Option<String>,
    grace: Option<Duration>,
    /// `Some` for `run`: the tunnel argument, if given.
    run: Option<Option<String>>,
    settings: BTreeMap<String, String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Text,
    Duration,
}

const TUNNEL_FLAGS: &[(&str, Kind)] = &[
    ("no-autoupdate", Kind::Bool),
    ("autoupdate-freq", Kind::Duration),
    ("metrics", Kind::Text),
    ("url", Kind::Text),
    ("http-host-header", Kind::Text),
    ("origin-server-name", Kind::Text),
    ("no-tls-verify", Kind::Bool),
    ("credentials-file", Kind::Text),
    ("cred-file", Kind::Text),
    ("grace-period", Kind::Duration),
    ("loglevel", Kind::Text),
    ("transport-loglevel", Kind::Text),
    ("logfile", Kind::Text),
    ("protocol", Kind::Text),
    ("edge-ip-version", Kind::Text),
    ("region", Kind::Text),
    ("config", Kind::Text),
    ("origincert", Kind::Text),
    ("pidfile", Kind::Text),
    ("name", Kind::Text),
    ("hello-world", Kind::Bool),
];

const RUN_FLAGS: &[(&str, Kind)] = &[
    ("credentials-file", Kind::Text),
    ("cred-file", Kind::Text),
    ("credentials-contents", Kind::Text),
    ("token", Kind::Text),
    ("token-file", Kind::Text),
    ("protocol", Kind::Text),
    ("url", Kind::Text),
    ("http-host-header", Kind::Text),
    ("origin-server-name", Kind::Text),
    ("no-tls-verify", Kind::Bool),
    ("hello-world", Kind::Bool),
];

const TUNNEL_HELP: &str = "NAME:
   cloudflared tunnel - Use Cloudflare Tunnel to expose private services to the Internet or to Cloudflare connected private users.

USAGE:
   cloudflared tunnel command [command options]

COMMANDS:
   run      Proxy a local web server by running the given tunnel

OPTIONS:
   --url URL                        Connect to the local webserver at URL. (default: \"http://localhost:8080\") [$TUNNEL_URL]
   --metrics value                  Listen address for metrics reporting. (default: \"localhost:0\") [$TUNNEL_METRICS]
   --no-autoupdate                  Disable periodic check for updates, restarting the server with the new version. (default: false) [$NO_AUTOUPDATE]
   --http-host-header value         Sets the HTTP Host header for the local webserver. [$TUNNEL_HTTP_HOST_HEADER]
   --grace-period value             When cloudflared receives SIGINT/SIGTERM it will stop accepting new requests, wait for in-progress requests to terminate, then shutdown. (default: 30s) [$TUNNEL_GRACE_PERIOD]
   --help, -h                       show help
";

const RUN_HELP: &str = "NAME:
   cloudflared tunnel run - Proxy a local web server by running the given tunnel

USAGE:
   cloudflared tunnel [tunnel command options] run [subcommand options] [TUNNEL]

OPTIONS:
   --credentials-file value, --cred-file value  Filepath at which to read/write the tunnel credentials [$TUNNEL_CRED_FILE]
   --url URL                                    Connect to the local webserver at URL. (default: \"http://localhost:8080\") [$TUNNEL_URL]
   --http-host-header value                     Sets the HTTP Host header for the local webserver. [$TUNNEL_HTTP_HOST_HEADER]
   --help, -h                                   show help
";

/// Go's `time.ParseDuration` for the forms flags use (`30s`, `2500ms`,
/// `1m30s`, `1.5s`).
fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Parses Go-style flags from `args[*i..]` until the first non-flag.
fn parse_flags(
    args: &[String],
    i: &mut usize,
    known: &[(&str, Kind)],
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    while let Some(arg) = args.get(*i) {
        if arg == "--" {
            *i += 1;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        if name == "help" || name == "h" {
            return Err(String::new());
        }
        let Some((_, kind)) = known.iter().find(|(n, _)| *n == name) else {
            return Err(format!("flag provided but not defined: -{name}"));
        };
        *i += 1;
        let value = match (kind, inline) {
            (Kind::Bool, None) => "true".to_owned(),
            (Kind::Bool, Some(v)) => {
                if v != "true" && v != "false" {
                    return Err(format!(
                        "invalid boolean value {v:?} for -{name}: parse error"
                    ));
                }
                v
            }
            (_, Some(v)) => v,
            (_, None) => match args.get(*i) {
                Some(v) => {
                    *i += 1;
                    v.clone()
                }
                None => return Err(format!("flag needs an argument: -{name}")),
            },
        };
        if *kind == Kind::Duration && parse_duration(&value).is_none() {
            return Err(format!(
                "invalid value {value:?} for flag -{name}: parse error"
            ));
        }
        out.push((name.to_owned(), value));
    }
    Ok(())
}

fn usage_error(err: &str, help: &str) -> Parsed {
    if err.is_empty() {
        print!("{help}");
    } else {
        println!("Incorrect Usage: {err}\n");
        print!("{help}");
    }
    // cloudflared's main ignores the error app.Run returns: exit 0.
    Parsed::Exit(0)
}

fn parse(args: &[String]) -> Parsed {
    match args.first().map(String::as_str) {
        Some("tunnel") => {}
        Some(other) => {
            eprintln!("omega-fake cloudflared: only `cloudflared tunnel` is faked, not `{other}`");
            return Parsed::Exit(2);
        }
        None => {
            eprintln!("omega-fake cloudflared: only `cloudflared tunnel` is faked");
            return Parsed::Exit(2);
        }
    }
    let mut i = 1;
    let mut flags = Vec::new();
    if let Err(e) = parse_flags(args, &mut i, TUNNEL_FLAGS, &mut flags) {
        return usage_error(&e, TUNNEL_HELP);
    }
    let mut cmd = Cmd::default();
    match args.get(i).map(String::as_str) {
        None => {}
        Some("run") => {
            i += 1;
            if let Err(e) = parse_flags(args, &mut i, RUN_FLAGS, &mut flags) {
                return usage_error(&e, RUN_HELP);
            }
            let rest = &args[i..];
            if rest.len() > 1 {
                eprintln!(
                    "\"cloudflared tunnel run\" accepts only one argument, the ID or name of the tunnel to run.\nSee 'cloudflared tunnel run --help'."
                );
                return Parsed::Exit(255);
            }
            cmd.run = Some(rest.first().cloned());
        }
        Some(other) => {
            eprintln!(
                "omega-fake cloudflared: only `cloudflared tunnel [run]` is faked, not `tunnel {other}`"
            );
            return Parsed::Exit(2);
        }
    }
    for (name, value) in flags {
        match name.as_str() {
            "url" => cmd.url = Some(value.clone()),
            "metrics" => cmd.metrics = Some(value.clone()),
            "http-host-header" => cmd.host_header = Some(value.clone()),
            "credentials-file" | "cred-file" => cmd.credentials = Some(value.clone()),
            "grace-period" => cmd.grace = parse_duration(&value),
            _ => {}
        }
        cmd.settings.insert(name, value);
    }
    Parsed::Tunnel(Box::new(cmd))
}

/// Runs the fake; returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    let knobs = Knobs::load();
    let cmd = match parse(&args) {
        Parsed::Tunnel(c) => c,
        Parsed::Exit(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("omega-fake cloudflared: cannot start a runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run(*cmd, knobs))
}

/// A named tunnel's identity.
struct Named {
    id: String,
}

#[derive(serde::Deserialize)]
#[allow(non_snake_case, dead_code)]
struct Credentials {
    AccountTag: String,
    TunnelSecret: String,
    #[serde(default)]
    TunnelID: String,
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The named-tunnel checks cloudflared makes before it starts; `Err` is
/// the exit code (the message is printed).
fn named_tunnel(cmd: &Cmd, reference: &str) -> Result<Named, i32> {
    let read = |path: &str| -> Result<Credentials, &'static str> {
        let meta = std::fs::metadata(path).map_err(|_| "missing")?;
        if !meta.is_file() {
            return Err("missing");
        }
        let body = std::fs::read(path).map_err(|_| "unreadable")?;
        serde_json::from_slice::<Credentials>(&body).map_err(|_| "json")
    };
    let invalid_json = |path: &str| {
        log(
            "ERR",
            &format!(
                "The credentials file at {path} contained invalid JSON. This is probably caused by passing the wrong filepath. Reminder: the credentials file is a .json file created via `cloudflared tunnel create`."
            ),
        );
        log(
            "ERR",
            "Invalid JSON when parsing credentials file: unexpected end of JSON input",
        );
        eprintln!("Invalid JSON when parsing tunnel credentials file");
        1
    };
    if is_uuid(reference) {
        let Some(path) = &cmd.credentials else {
            eprintln!("tunnel credentials file not found");
            return Err(1);
        };
        return match read(path) {
            Ok(_) => Ok(Named {
                id: reference.to_ascii_lowercase(),
            }),
            Err("json") => Err(invalid_json(path)),
            Err(_) => {
                eprintln!("Tunnel credentials file '{path}' doesn't exist or is not a file");
                Err(1)
            }
        };
    }
    // By name: the credentials file's TunnelID, else a lookup that needs
    // the account certificate (which the fake never has).
    let from_file = cmd.credentials.as_deref().and_then(|p| read(p).ok());
    match from_file {
        Some(c) if is_uuid(&c.TunnelID) => Ok(Named {
            id: c.TunnelID.to_ascii_lowercase(),
        }),
        _ => {
            log(
                "ERR",
                "Cannot determine default origin certificate path. No file cert.pem in [~/.cloudflared ~/.cloudflare-warp ~/cloudflare-warp /etc/cloudflared /usr/local/etc/cloudflared]. You need to specify the origin certificate path by specifying the origincert option in the configuration file, or set TUNNEL_ORIGIN_CERT environment variable originCertPath=",
            );
            eprintln!(
                "error parsing tunnel ID: Error locating origin cert: client didn't specify origincert path"
            );
            Err(1)
        }
    }
}

/// The tunnel's shared state for the metrics server.
struct Shared {
    hostname: String,
    connector: String,
    ready: AtomicU32,
}

async fn run(cmd: Cmd, knobs: Knobs) -> i32 {
    let caught = catch_signals();
    let mut rng = Rng::new();
    let named = match &cmd.run {
        Some(None) => {
            eprintln!(
                "\"cloudflared tunnel run\" requires the ID or name of the tunnel to run as the last command line argument or in the configuration file.\nSee 'cloudflared tunnel run --help'."
            );
            return 255;
        }
        Some(Some(reference)) => match named_tunnel(&cmd, reference) {
            Ok(n) => Some(n),
            Err(code) => return code,
        },
        None => None,
    };
    let Some(origin) = cmd.url.clone() else {
        if named.is_none() {
            eprint!(
                "You did not specify any valid additional argument to the cloudflared tunnel command.

If you are trying to run a Quick Tunnel then you need to explicitly pass the --url flag.
Eg. cloudflared tunnel --url localhost:8080/.

Please note that Quick Tunnels are meant to be ephemeral and should only be used for testing purposes.
For production usage, we recommend creating Named Tunnels. (https://developers.cloudflare.com/cloudflare-one/connections/connect-apps/install-and-setup/tunnel-guide/)
"
            );
            return 1;
        }
        eprintln!(
            "omega-fake cloudflared: a named tunnel needs --url (the fake has no ingress rules)"
        );
        return 2;
    };
    let Some(origin_addr) = origin_addr(&origin) else {
        eprintln!(
            "omega-fake cloudflared: --url {origin}: only http://HOST:PORT origins are faked"
        );
        return 2;
    };
    let hostname = match &named {
        Some(n) => {
            log("INF", &format!("Starting tunnel tunnelID={}", n.id));
            String::new()
        }
        None => {
            log(
                "INF",
                "Thank you for trying Cloudflare Tunnel. Doing so, without a Cloudflare account, is a quick way to experiment and try it out. However, be aware that these account-less Tunnels have no uptime guarantee, are subject to the Cloudflare Online Services Terms of Use (https://www.cloudflare.com/website-terms/), and Cloudflare reserves the right to investigate your use of Tunnels for violations of such terms. If you intend to use Tunnels in production you should use a pre-created named tunnel by following: https://developers.cloudflare.com/cloudflare-one/connections/connect-apps",
            );
            log("INF", "Requesting new quick Tunnel on trycloudflare.com...");
            if knobs.fails("quick-service") {
                eprintln!(
                    "failed to request quick Tunnel: Post \"https://api.trycloudflare.com/tunnel\": dial tcp: lookup api.trycloudflare.com: no such host"
                );
                return 1;
            }
            let words: Vec<&str> = (0..4).map(|_| WORDS[rng.below(WORDS.len())]).collect();
            let hostname = format!("{}.trycloudflare.com", words.join("-"));
            for line in ascii_box(&[
                "Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):",
                &format!("https://{hostname}"),
            ]) {
                log("INF", &line);
            }
            hostname
        }
    };
    log(
        "INF",
        "Cannot determine default configuration path. No file [config.yml config.yaml] in [~/.cloudflared ~/.cloudflare-warp ~/cloudflare-warp /etc/cloudflared /usr/local/etc/cloudflared]",
    );
    log("INF", "Version 2026.8.0 (Checksum omega-fake)");
    log(
        "INF",
        &format!(
            "GOOS: {}, GOVersion: go1.24.0, GoArch: {}",
            std::env::consts::OS,
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            }
        ),
    );
    let mut settings = cmd.settings.clone();
    if named.is_none() {
        settings.insert("ha-connections".into(), "1".into());
        settings.insert("protocol".into(), "quic".into());
    }
    let settings: Vec<String> = settings.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    log("INF", &format!("Settings: map[{}]", settings.join(" ")));
    let connector = rng.uuid();
    log("INF", &format!("Generated Connector ID: {connector}"));
    log("INF", "Initial protocol quic");
    let metrics_addr = cmd
        .metrics
        .clone()
        .unwrap_or_else(|| "localhost:20241".into());
    let metrics = match TcpListener::bind(metrics_addr.as_str()).await {
        Ok(l) => l,
        Err(e) => {
            let detail = format!(
                "failed to bind to address ({metrics_addr}): listen tcp {metrics_addr}: bind: {e}"
            );
            log(
                "ERR",
                &format!("Error opening metrics server listener error=\"{detail}\""),
            );
            eprintln!("Error opening metrics server listener: {detail}");
            return 1;
        }
    };
    let metrics_local = metrics
        .local_addr()
        .map_or(metrics_addr.clone(), |a| a.to_string());
    let edge = match TcpListener::bind(("127.0.0.1", 0)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("omega-fake cloudflared: cannot listen for the local edge: {e}");
            return 2;
        }
    };
    let edge_local = edge
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    knobs.record(&format!(
        "pid={} hostname={} metrics={metrics_local} edge={edge_local}",
        std::process::id(),
        if hostname.is_empty() { "-" } else { &hostname },
    ));
    let shared = Arc::new(Shared {
        hostname: hostname.clone(),
        connector: connector.clone(),
        ready: AtomicU32::new(0),
    });
    tokio::spawn(serve(metrics, {
        let shared = shared.clone();
        move |req| metrics_answer(&shared, req.uri().path())
    }));
    log(
        "INF",
        &format!("Starting metrics server on {metrics_local}/metrics"),
    );
    let rewrite = Rewrite {
        origin: origin_addr,
        host: cmd
            .host_header
            .clone()
            .or_else(|| (!hostname.is_empty()).then(|| hostname.clone())),
        forwarded: Forwarded::Cloudflare,
    };
    tokio::spawn(proxy(edge, Arc::new(rewrite)));
    let conns = if named.is_some() { 4 } else { 1 };
    let connect = knobs.millis("OMEGA_FAKE_CONNECT_MS", 200);
    let exit_after = knobs
        .fail_value("exit-after-ms")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let tunnel = connect_loop(
        shared.clone(),
        knobs.clone(),
        conns,
        connect,
        exit_after,
        rng,
    );
    let ignore_term = knobs.fails("ignore-term");
    tokio::select! {
        code = tunnel => code,
        code = signals(caught, ignore_term) => code,
    }
}

/// Connects (or fails to) as the knobs say; returns only to exit.
async fn connect_loop(
    shared: Arc<Shared>,
    knobs: Knobs,
    conns: u32,
    delay: Duration,
    exit_after: Option<Duration>,
    mut rng: Rng,
) -> i32 {
    tokio::time::sleep(delay).await;
    let ip = [
        "198.41.192.7",
        "198.41.200.193",
        "198.41.192.167",
        "198.41.200.13",
    ];
    let location = ["ams08", "fra15", "lhr01", "cdg02"];
    let retry_forever = |error: &'static str, message: &'static str| async move {
        let mut wait = Duration::from_secs(1);
        loop {
            log(
                "ERR",
                &format!(
                    "{message} error=\"{error}\" connIndex=0 event=0 ip={}",
                    ip[0]
                ),
            );
            log(
                "INF",
                &format!(
                    "Retrying connection in up to {}s connIndex=0 event=0 ip={}",
                    wait.as_secs(),
                    ip[0]
                ),
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(64));
        }
    };
    if knobs.fails("auth") {
        return retry_forever(
            "Unauthorized: Invalid tunnel secret",
            "Register tunnel error from server side",
        )
        .await;
    }
    if knobs.fails("edge") {
        return retry_forever(
            "failed to dial to edge with quic: timeout: no recent network activity",
            "Failed to dial a quic connection",
        )
        .await;
    }
    if knobs.fails("never-ready") {
        return std::future::pending().await;
    }
    for i in 0..conns as usize {
        log(
            "INF",
            &format!(
                "Registered tunnel connection connIndex={i} connection={} event=0 ip={} location={} protocol=quic",
                rng.uuid(),
                ip[i % ip.len()],
                location[i % location.len()]
            ),
        );
        shared.ready.fetch_add(1, Ordering::AcqRel);
    }
    match exit_after {
        Some(after) => {
            tokio::time::sleep(after).await;
            shared.ready.store(0, Ordering::Release);
            log(
                "ERR",
                &format!(
                    "Connection terminated error=\"omega-fake: exiting {} ms after connecting (OMEGA_FAKE_FAIL=exit-after-ms)\" connIndex=0",
                    after.as_millis()
                ),
            );
            eprintln!("omega-fake: exiting as OMEGA_FAKE_FAIL=exit-after-ms asks");
            1
        }
        None => std::future::pending().await,
    }
}

/// SIGTERM/SIGINT as cloudflared handles them; returns the exit code.
/// SIGTERM and SIGINT, caught from now on (installed before the fake
/// says it is up, so a signal right after cannot kill it by default).
pub(crate) fn catch_signals() -> Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>
{
    use tokio::signal::unix::{SignalKind, signal};
    Some((
        signal(SignalKind::terminate()).ok()?,
        signal(SignalKind::interrupt()).ok()?,
    ))
}

pub(crate) async fn signals(
    caught: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
    ignore: bool,
) -> i32 {
    let Some((mut term, mut int)) = caught else {
        return std::future::pending().await;
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "terminated",
            _ = int.recv() => "interrupt",
        };
        log(
            "INF",
            &format!("Initiating graceful shutdown due to signal {name} ..."),
        );
        if ignore {
            continue;
        }
        log("INF", "Tunnel server stopped");
        log("INF", "Metrics server stopped");
        return 0;
    }
}

/// cloudflared's `asciiBox` (cliutil/logger.go) with padding 2.
fn ascii_box(lines: &[&str]) -> Vec<String> {
    let max = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    let border = format!("+{}+", "-".repeat(max + 4));
    let mut out = vec![border.clone()];
    for l in lines {
        out.push(format!("|  {l}{}  |", " ".repeat(max - l.len())));
    }
    out.push(border);
    out
}

fn origin_addr(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.contains("://") {
        return None;
    }
    let authority = rest.split('/').next()?;
    if authority.is_empty() {
        return None;
    }
    Some(
        if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        },
    )
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn metrics_answer(shared: &Shared, path: &str) -> Response<Body> {
    match path {
        "/ready" => {
            let n = shared.ready.load(Ordering::Acquire);
            let status = if n > 0 { 200 } else { 503 };
            full(
                status,
                format!(
                    "{{\"status\":{status},\"readyConnections\":{n},\"connectorId\":\"{}\"}}",
                    shared.connector
                ),
            )
        }
        "/quicktunnel" => full(200, format!("{{\"hostname\":\"{}\"}}", shared.hostname)),
        "/healthcheck" => full(200, "OK\n"),
        "/metrics" => full(
            200,
            format!(
                "# HELP cloudflared_tunnel_ha_connections Number of active ha connections\n# TYPE cloudflared_tunnel_ha_connections gauge\ncloudflared_tunnel_ha_connections {}\n",
                shared.ready.load(Ordering::Acquire)
            ),
        ),
        _ => full(404, "404 page not found\n"),
    }
}

/// Serves HTTP/1.1 on `listener` with a synchronous answer function.
async fn serve<F>(listener: TcpListener, answer: F)
where
    F: Fn(&Request<Incoming>) -> Response<Body> + Clone + Send + Sync + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = answer(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Which forwarding headers the local edge adds.
#[derive(Debug, Clone)]
pub(crate) enum Forwarded {
    /// Cloudflare's: `Cf-Connecting-Ip`, `X-Forwarded-For`,
    /// `X-Forwarded-Proto: https`, `Cf-Ray`, `Cf-Visitor`.
    Cloudflare,
    /// NetBird's reverse proxy: `X-Forwarded-For`, `X-Real-IP`,
    /// `X-Forwarded-Host` (the public name), `X-Forwarded-Proto: https`,
    /// `X-Forwarded-Port: 443`.
    Netbird {
        /// The public name.
        public: String,
    },
}

/// How the local edge forwards.
#[derive(Debug, Clone)]
pub(crate) struct Rewrite {
    /// `HOST:PORT` to connect to.
    pub(crate) origin: String,
    /// The `Host` to send (`None`: the request's own).
    pub(crate) host: Option<String>,
    /// Headers to add.
    pub(crate) forwarded: Forwarded,
}

/// The local edge: forwards every request on `listener` to the origin.
pub(crate) async fn proxy(listener: TcpListener, rewrite: Arc<Rewrite>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let rewrite = rewrite.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let rewrite = rewrite.clone();
                async move { Ok::<_, Infallible>(forward(&rewrite, peer, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn forward(rewrite: &Rewrite, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let client = peer.ip().to_string();
    {
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
                parts.headers.insert(name, v);
            }
        };
        if let Some(h) = &rewrite.host {
            set("host", h);
        }
        match &rewrite.forwarded {
            Forwarded::Cloudflare => {
                set("cf-connecting-ip", &client);
                set("x-forwarded-for", &client);
                set("x-forwarded-proto", "https");
                set("cf-visitor", "{\"scheme\":\"https\"}");
                set("cf-ray", "8f0c0ffee0000000-AMS");
            }
            Forwarded::Netbird { public } => {
                set("x-forwarded-for", &client);
                set("x-real-ip", &client);
                set("x-forwarded-host", public);
                set("x-forwarded-proto", "https");
                set("x-forwarded-port", "443");
            }
        }
    }
    let upstream = match TcpStream::connect(rewrite.origin.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            log(
                "ERR",
                &format!(
                    " error=\"Unable to reach the origin service. The service may be down or it may not be responding to traffic from cloudflared: dial tcp {}: {e}\"",
                    rewrite.origin
                ),
            );
            return full(502, "Bad Gateway: the origin is unreachable\n");
        }
    };
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await
    else {
        return full(502, "Bad Gateway: the origin broke the exchange\n");
    };
    tokio::spawn(conn);
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(BodyExt::boxed),
        Err(e) => full(502, format!("Bad Gateway: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags_parse_like_urfave() {
        let Parsed::Tunnel(c) = parse(&args(
            "tunnel --no-autoupdate --metrics 127.0.0.1:1 --grace-period=2500ms --url http://127.0.0.1:8080 --http-host-header demo.example.com",
        )) else {
            panic!("parsed");
        };
        assert_eq!(c.url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(c.host_header.as_deref(), Some("demo.example.com"));
        assert_eq!(c.grace, Some(Duration::from_millis(2500)));
        assert!(c.run.is_none());
        let Parsed::Tunnel(c) = parse(&args(
            "tunnel -metrics 127.0.0.1:1 run --credentials-file /x.json --url http://127.0.0.1:8080 omega",
        )) else {
            panic!("parsed");
        };
        assert_eq!(c.run, Some(Some("omega".into())));
        assert_eq!(c.credentials.as_deref(), Some("/x.json"));
        assert!(matches!(parse(&args("tunnel --bogus")), Parsed::Exit(0)));
        assert!(matches!(
            parse(&args("tunnel run --no-autoupdate x")),
            Parsed::Exit(0)
        ));
        assert!(matches!(parse(&args("tunnel run a b")), Parsed::Exit(255)));
    }

    #[test]
    fn durations_like_go() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("x"), None);
    }

    #[test]
    fn the_banner_matches_cloudflared() {
        let b = ascii_box(&[
            "Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):",
            "https://buffalo-marco-cardiff-motel.trycloudflare.com",
        ]);
        assert_eq!(
            b[0],
            "+--------------------------------------------------------------------------------------------+"
        );
        assert_eq!(
            b[2],
            "|  https://buffalo-marco-cardiff-motel.trycloudflare.com                                     |"
        );
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = timestamp();
        assert_eq!(t.len(), 20, "{t}");
        assert_eq!(&t[10..11], "T");
        assert!(t.ends_with('Z'));
        assert!(t.starts_with("20"), "{t}");
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_addr("http://127.0.0.1:8080").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            origin_addr("localhost:8080/").as_deref(),
            Some("localhost:8080")
        );
        assert_eq!(origin_addr("http://example").as_deref(), Some("example:80"));
        assert_eq!(origin_addr("https://x:1"), None);
    }
}
