//! The `omega node` daemon: the node key and join token in the data
//! directory, the p2p driver, the local API, metrics, and signal handling.
//!
//! Data directory layout:
//!
//! | file | what |
//! |---|---|
//! | `node.key` | the node key (mode 0600); the same identity across restarts |
//! | `join.token` | the join token last given with `--join` (mode 0600) |
//! | `state.redb` | the desired-state document (snapshot and update log; see [`store`]) |
//! | `state.redb.damaged-UNIXMS` | a damaged store that `--rebuild-state` moved aside |
//! | `images/` | the content-addressed image store (served to members by content id) |
//! | `cache/` | precompiled images |
//! | `api.sock` | the local API (mode 0600) |
//! | `frontier-run/` | one run directory per microVM (reclaimed at start) |
//!
//! Revocations of nodes and tokens live in the desired-state document only
//! (signed `/revoke` records that every member keeps): one path, so a token
//! or node revoked anywhere stops admitting and authorizing everywhere.
//!
//! The daemon wires three tasks around the node brain: the p2p driver (it
//! runs the brain), the brane runner ([`runner`]: it executes the brain's
//! start and stop decisions) and the local API. If the driver or the runner
//! stops — a panic included — the daemon says why and exits non-zero, so a
//! supervisor restarts it from its durable state; it never runs on with a
//! dead task.

pub mod gateway;
pub mod runner;
pub mod store;
pub mod view;

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use libp2p::Multiaddr;
use omega_gossip::join::JoinToken;
use omega_gossip::node::Identity;
use omega_gossip::{Capabilities, Profile, Resources, Substrate};
use omega_p2p::discovery::{Discovery, NetBird, Static, TAILSCALE_SOCKET, Tailscale, WireGuard};
use omega_p2p::{NetConfig, NodeConfig};
use prometheus_client::registry::Registry;
use tracing::{error, info, warn};

use omega_runtime::frontier::qemu::{QemuBackend, QemuConfig};
use omega_runtime::frontier::{Backend as _, ProbeReport, reclaim_orphans};

use crate::api::{FrontierReport, ProbeLine};
use crate::keystore;

/// `omega node` flags.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The node's data directory (key, token, API socket).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen multiaddrs (repeatable).
    #[arg(
        long,
        value_name = "MULTIADDR",
        default_value = "/ip4/0.0.0.0/udp/4001/quic-v1"
    )]
    pub listen: Vec<Multiaddr>,
    /// The join token from `omega mesh invite` (stored; later starts may omit it).
    #[arg(long, value_name = "TOKEN")]
    pub join: Option<String>,
    /// The node name.
    #[arg(long)]
    pub name: Option<String>,
    /// The substrate this node declares.
    #[arg(long, value_parser = ["gaia", "biome", "habitat"], default_value = "habitat")]
    pub substrate: String,
    /// Discovery providers, comma-separated: static, lan, tailscale, netbird, wireguard.
    #[arg(long, value_delimiter = ',', default_value = "static")]
    pub discover: Vec<String>,
    /// Static peer multiaddrs (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    pub peer: Vec<Multiaddr>,
    /// The Omega port on overlay peers (tailscale, netbird, wireguard).
    #[arg(long, default_value_t = 4001)]
    pub overlay_port: u16,
    /// The tailscaled LocalAPI socket.
    #[arg(long, default_value = TAILSCALE_SOCKET)]
    pub tailscale_socket: PathBuf,
    /// The `netbird` program.
    #[arg(long, default_value = "netbird")]
    pub netbird_bin: PathBuf,
    /// The `wg` program.
    #[arg(long, default_value = "wg")]
    pub wg_bin: PathBuf,
    /// The WireGuard interface to read peers from.
    #[arg(long, default_value = "wg0")]
    pub wg_interface: String,
    /// Seconds between discovery rounds.
    #[arg(long, default_value_t = 5)]
    pub discovery_interval: u64,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Memory this node offers to branes, in MiB [default: MemAvailable].
    #[arg(long, value_name = "MIB")]
    pub memory_mib: Option<u64>,
    /// Refuse new connections while this process's resident memory is
    /// above this many MiB (0: no limit).
    #[arg(long, value_name = "MIB", default_value_t = 512)]
    pub max_memory_mib: u64,
    /// Seconds between anti-entropy rounds with a random member.
    #[arg(long, default_value_t = 1)]
    pub anti_entropy_interval: u64,
    /// Frontier (microVM) backend: `auto` (QEMU with KVM, only if the CPU
    /// has vmx/svm and a probe boot passes; never an emulated CPU),
    /// `qemu-tcg` or `qemu-kvm` (forced, still probed), or `none`. The node
    /// advertises `frontier` only when a probe passes and the substrate is
    /// not habitat.
    #[arg(long, value_name = "BACKEND", default_value = "auto",
          value_parser = crate::frontier::CHOICES)]
    pub frontier_backend: String,
    /// When event writes reach the disk: `always` (every write group is
    /// fsynced before its events are acknowledged) or a sync interval in
    /// ms, e.g. `100ms` (group commit without a sync; a crash loses what
    /// was acknowledged in the last interval).
    #[arg(long, value_name = "always|MS", default_value = "always",
          value_parser = parse_event_sync)]
    pub event_sync: omega_p2p::host::EventSync,
    /// Most events this node's outbox holds (dead letters included); a full
    /// outbox refuses emits as busy and holds back processing that would
    /// emit, so a slow consumer slows its producers.
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    pub event_outbox: usize,
    /// Serve the HTTP gateway on this address (e.g. `127.0.0.1:8080`):
    /// requests are routed by `Host` to the brane of the `[resolver.NAME]`
    /// with that `host`, here or on another member; the resolvers are
    /// exposed publicly with their drivers.
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<SocketAddr>,
    /// The `cloudflared` program (resolver mode `cloudflared`).
    #[arg(long, default_value = "cloudflared")]
    pub cloudflared_bin: PathBuf,
    /// A named Cloudflare tunnel to run instead of a quick tunnel.
    #[arg(long, value_name = "NAME")]
    pub cloudflared_tunnel: Option<String>,
    /// The named tunnel's credentials file.
    #[arg(long, value_name = "FILE")]
    pub cloudflared_credentials: Option<PathBuf>,
    /// The ngrok agent API (resolver mode `ngrok`).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4040")]
    pub ngrok_api: String,
    /// The ngrok authtoken: with it, the node starts an ngrok agent when
    /// none answers on `--ngrok-api`.
    #[arg(long, env = "NGROK_AUTHTOKEN", hide_env_values = true)]
    pub ngrok_authtoken: Option<String>,
    /// The `ngrok` program.
    #[arg(long, default_value = "ngrok")]
    pub ngrok_bin: PathBuf,
    /// Move a damaged `state.redb` aside (to `state.redb.damaged-UNIXMS`)
    /// and start with an empty store: the desired state (manifests, images,
    /// revocations) re-syncs from the mesh's peers, `node.key` and
    /// `join.token` are kept. Events in this node's outbox and dead-letter
    /// queue that had not been delivered are lost with the old file.
    #[arg(long)]
    pub rebuild_state: bool,
}

/// `always`, or a sync interval (`100`, `100ms`, `1s`).
fn parse_event_sync(s: &str) -> Result<omega_p2p::host::EventSync, String> {
    use omega_p2p::host::EventSync;
    if s == "always" {
        return Ok(EventSync::Always);
    }
    let ms = match s.parse::<u64>() {
        Ok(ms) => ms,
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("`{s}`: `always` or an interval such as `100ms` ({e})"))?
            .as_millis() as u64,
    };
    if ms == 0 {
        return Err("a sync interval must be at least 1 ms (or `always`)".into());
    }
    Ok(EventSync::Interval(ms))
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// A file in the data directory.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file given to the node could not be read within its limit.
    #[error(transparent)]
    Read(#[from] crate::bounded::ReadError),
    /// A flag is wrong.
    #[error("{0}")]
    Usage(String),
    /// The state store is damaged or cannot be used.
    #[error(transparent)]
    State(#[from] store::StateError),
    /// The node failed to start.
    #[error(transparent)]
    Node(#[from] omega_p2p::NodeError),
    /// A task of the daemon stopped while the node ran.
    #[error("{0}; exiting so that a supervisor restarts the node")]
    Stopped(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> DaemonError {
    DaemonError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Loads the node key, creating it (mode 0600) on first start.
pub fn node_key(data_dir: &Path) -> Result<omega_identity::Keypair, DaemonError> {
    let path = data_dir.join("node.key");
    if path.exists() {
        return keystore::load(&path).map_err(|e| file_err(&path, e));
    }
    let key = keystore::generate().map_err(|e| file_err(&path, e))?;
    keystore::save(&path, &key, false).map_err(|e| file_err(&path, e))?;
    Ok(key)
}

fn write_private(path: &Path, text: &str) -> Result<(), DaemonError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| file_err(path, e))
}

fn join_token(args: &RunArgs, data_dir: &Path) -> Result<Option<JoinToken>, DaemonError> {
    let path = data_dir.join("join.token");
    let text = match &args.join {
        Some(t) => {
            write_private(&path, t)?;
            t.clone()
        }
        None => match crate::bounded::read_to_string(&path, crate::bounded::JOIN_TOKEN) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        },
    };
    JoinToken::decode(&text)
        .map(Some)
        .map_err(|e| DaemonError::Usage(format!("--join: {e}")))
}

fn providers(args: &RunArgs) -> Result<(Vec<Box<dyn Discovery>>, bool), DaemonError> {
    let mut out: Vec<Box<dyn Discovery>> = Vec::new();
    let mut lan = false;
    for d in &args.discover {
        match d.as_str() {
            "static" => out.push(Box::new(Static(args.peer.clone()))),
            "lan" => lan = true,
            "tailscale" => out.push(Box::new(Tailscale {
                socket: args.tailscale_socket.clone(),
                port: args.overlay_port,
            })),
            "netbird" => out.push(Box::new(NetBird {
                program: args.netbird_bin.clone(),
                port: args.overlay_port,
            })),
            "wireguard" => out.push(Box::new(WireGuard {
                program: args.wg_bin.clone(),
                interface: args.wg_interface.clone(),
                port: args.overlay_port,
            })),
            other => {
                return Err(DaemonError::Usage(format!(
                    "--discover: unknown provider {other:?} (static, lan, tailscale, netbird, wireguard)"
                )));
            }
        }
    }
    if !args.discover.iter().any(|d| d == "static") && !args.peer.is_empty() {
        out.push(Box::new(Static(args.peer.clone())));
    }
    Ok((out, lan))
}

fn capabilities(frontier: bool) -> Capabilities {
    if frontier {
        Capabilities::STANDARD.with(Capabilities::FRONTIER)
    } else {
        Capabilities::STANDARD
    }
}

/// Reclaims what a crashed run left in `DATA_DIR/frontier-run`, then
/// chooses the frontier backend: none on habitat (no probe), else
/// [`crate::frontier::select`] with `choice` (never TCG under `auto`).
/// Returns the backend and the report `omega status` shows.
fn frontier(
    choice: &str,
    substrate: Substrate,
    data_dir: &Path,
) -> (Option<std::sync::Arc<QemuBackend>>, FrontierReport) {
    let run_root = crate::frontier::run_root(data_dir);
    match reclaim_orphans(&run_root) {
        Ok(n) => info!(
            "frontier: reclaimed {n} microVM(s) left in {}",
            run_root.display()
        ),
        Err(e) => warn!("frontier: reclaiming {}: {e}", run_root.display()),
    }
    let report = |backend: Option<&str>, reason: &str, probes: &[ProbeReport]| FrontierReport {
        choice: choice.into(),
        backend: backend.map(str::to_owned),
        usable: backend.is_some(),
        reason: reason.into(),
        probes: probes
            .iter()
            .map(|p| ProbeLine {
                backend: p.backend.to_string(),
                usable: p.usable,
                reason: p.reason.clone(),
            })
            .collect(),
    };
    if substrate == Substrate::Habitat {
        let why = "habitat: frontier branes never run on habitat nodes";
        info!("frontier: {why}");
        return (None, report(None, why, &[]));
    }
    let log: omega_runtime::LogSink = std::sync::Arc::new(|brane: &str, level, msg: &str| {
        info!(brane, ?level, "{msg}");
    });
    let config = QemuConfig {
        run_root,
        log,
        ..QemuConfig::default()
    };
    let started = std::time::Instant::now();
    let selection = crate::frontier::select(choice, config, false);
    for p in &selection.probes {
        info!(
            "frontier probe {}: {} ({})",
            p.backend,
            if p.usable { "usable" } else { "not usable" },
            p.reason
        );
    }
    let summary = selection.summary();
    info!(
        "frontier: {summary} [selection took {} ms]",
        started.elapsed().as_millis()
    );
    match selection.backend {
        Ok(b) => {
            let why = selection
                .probes
                .iter()
                .rfind(|p| p.usable)
                .map_or(summary.as_str(), |p| p.reason.as_str());
            let r = report(Some(b.name()), why, &selection.probes);
            (Some(std::sync::Arc::new(b)), r)
        }
        Err(why) => (None, report(None, &why, &selection.probes)),
    }
}

/// The yrs client id: 53 bits of BLAKE3(node key ‖ start count), never 0,
/// so two starts of one node never write under the same client id.
fn client_id(key: &omega_identity::Keypair, restarts: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(key.did().to_string().as_bytes());
    h.update(&restarts.to_le_bytes());
    let b = h.finalize();
    let mut x = [0u8; 8];
    x.copy_from_slice(&b.as_bytes()[..8]);
    (u64::from_le_bytes(x) & ((1 << 53) - 1)).max(1)
}

/// What this node offers: `--memory-mib`, else the kernel's MemAvailable;
/// CPU from the available parallelism.
fn resources(memory_mib: Option<u64>) -> Resources {
    let memory_bytes = memory_mib.map_or_else(
        || {
            std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find(|l| l.starts_with("MemAvailable:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|kb| kb.parse::<u64>().ok())
                })
                .map_or(1 << 30, |kb| kb * 1024)
        },
        |m| m << 20,
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    Resources {
        cpu_millis: cpus * 1000,
        memory_bytes,
    }
}

/// Runs the daemon until SIGTERM or SIGINT (or until one of its tasks
/// stops: then with an error).
pub fn run(args: &RunArgs) -> Result<(), DaemonError> {
    run_with(args, |_| {})
}

/// [`run`], handing the running node's handle to `ready` first (for
/// benchmarks that drive daemons in one process).
pub fn run_with(
    args: &RunArgs,
    ready: impl FnOnce(omega_p2p::NodeHandle),
) -> Result<(), DaemonError> {
    let Some(data_dir) = args.data_dir.clone() else {
        return Err(DaemonError::Usage("missing --data-dir DIR".into()));
    };
    init_tracing();
    std::fs::create_dir_all(&data_dir).map_err(|e| file_err(&data_dir, e))?;
    let key = node_key(&data_dir)?;
    let token = join_token(args, &data_dir)?;
    if token.is_none() {
        warn!("no join token: members will refuse this node (pass --join TOKEN)");
    }
    let substrate = Substrate::parse(&args.substrate)
        .ok_or_else(|| DaemonError::Usage("--substrate".into()))?;
    let (providers, lan) = providers(args)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| key.did().to_string().chars().rev().take(8).collect());
    let metrics_addr = args.metrics;
    let (frontier_backend, frontier_report) =
        frontier(&args.frontier_backend, substrate, &data_dir);
    if args.rebuild_state {
        rebuild_state(&data_dir)?;
    }
    let store::Loaded {
        db,
        restarts,
        desired: stored,
        events: stored_events,
    } = store::Loaded::open(&data_dir)?;
    let images = data_dir.join("images");
    let _ = std::fs::create_dir_all(images.join("blobs"));
    let mut node = omega_gossip::node::Config::default();
    node.desired.client_id = client_id(&key, restarts);
    node.timers.anti_entropy_interval = args.anti_entropy_interval.max(1) * 1000;
    node.delivery.max_outbox = args.event_outbox.max(node.delivery.emit_reserve * 2);
    let cfg = NodeConfig {
        identity: Identity {
            key,
            token,
            profile: Profile {
                name,
                substrate,
                capabilities: capabilities(frontier_backend.is_some()),
                resources: resources(args.memory_mib),
                addresses: Vec::new(),
            },
        },
        node,
        listen: args.listen.clone(),
        providers,
        discovery_interval: Duration::from_secs(args.discovery_interval.max(1)),
        net: NetConfig {
            mdns: lan,
            max_memory_bytes: (args.max_memory_mib > 0).then(|| {
                usize::try_from(args.max_memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
            }),
            ..NetConfig::default()
        },
        registry: metrics_addr.map(|_| Registry::default()),
        stored,
        store: Some(Box::new(db)),
        stored_events,
        event_sync: args.event_sync,
        blobs: Some(std::sync::Arc::new(store::FileBlobs {
            dir: images.join("blobs"),
        })),
    };
    let gateway_listener = match args.gateway {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|e| DaemonError::Usage(format!("--gateway {addr}: {e}")))?,
        ),
        None => None,
    };
    let drivers = drivers_config(args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| file_err(&data_dir, e))?;
    rt.block_on(async move {
        let (node, effects, mut driver) = omega_p2p::spawn(cfg)?;
        ready(node.clone());
        let listener = crate::api::bind(&data_dir)
            .map_err(|e| file_err(&crate::api::socket_path(&data_dir), e))?;
        let shared = std::sync::Arc::new(runner::Shared {
            frontier: frontier_report,
            ..Default::default()
        });
        let gateway_addr = gateway::start(&node, &shared, gateway_listener, drivers)
            .map_err(|e| DaemonError::Usage(format!("gateway: {e}")))?;
        if let Some(addr) = gateway_addr {
            info!(%addr, "gateway ready");
        }
        let mut runner = tokio::spawn(runner::run(
            node.clone(),
            effects,
            data_dir.clone(),
            shared.clone(),
            frontier_backend,
        ));
        tokio::spawn(crate::api::serve(
            listener,
            crate::api::Api {
                node: node.clone(),
                shared: shared.clone(),
            },
        ));
        if let Some(addr) = metrics_addr {
            tokio::spawn(serve_metrics(addr, node.clone()));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| DaemonError::Usage(format!("signal handler: {e}")))?;
        let stopped = tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); None }
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: shutting down"); None }
            r = &mut driver => Some(ended("the p2p driver", r)),
            r = &mut runner => Some(ended("the brane runner", r)),
        };
        if let Some(why) = stopped {
            error!("{why}");
            let _ = std::fs::remove_file(crate::api::socket_path(&data_dir));
            return Err(DaemonError::Stopped(why));
        }
        let _ = node.shutdown().await;
        let _ = driver.await;
        // Stop the microVMs (and remove their run directories).
        let _ = tokio::task::spawn_blocking(move || shared.local.stop_all()).await;
        let _ = std::fs::remove_file(crate::api::socket_path(&data_dir));
        Ok(())
    })
}

/// The resolver drivers' settings from the flags.
fn drivers_config(args: &RunArgs) -> omega_resolvers::DriversConfig {
    use omega_resolvers::driver::{cloudflared, netbird, ngrok, tailscale};
    omega_resolvers::DriversConfig {
        tailscale: tailscale::Config {
            socket: args.tailscale_socket.clone(),
        },
        cloudflared: cloudflared::Config {
            program: args.cloudflared_bin.clone(),
            tunnel: args.cloudflared_tunnel.clone(),
            credentials: args.cloudflared_credentials.clone(),
            ..cloudflared::Config::default()
        },
        ngrok: ngrok::Config {
            api: args.ngrok_api.clone(),
            authtoken: args.ngrok_authtoken.clone(),
            program: args.ngrok_bin.clone(),
            ..ngrok::Config::default()
        },
        netbird: netbird::Config {
            program: args.netbird_bin.clone(),
            ..netbird::Config::default()
        },
    }
}

/// `--rebuild-state`: refused while a node answers on this data directory
/// (it holds the file), else [`store::rebuild`].
fn rebuild_state(data_dir: &Path) -> Result<(), DaemonError> {
    let socket = crate::api::socket_path(data_dir);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(DaemonError::Usage(format!(
            "--rebuild-state: a node is running on {} (its API answers at {}); stop it first",
            data_dir.display(),
            socket.display()
        )));
    }
    match store::rebuild(data_dir)? {
        Some(aside) => warn!(
            "--rebuild-state: moved the old state to {}; starting empty, re-syncing from peers",
            aside.display()
        ),
        None => info!("--rebuild-state: no state to move aside; starting empty"),
    }
    Ok(())
}

/// Why a task that should run for the node's life ended.
fn ended(what: &str, r: Result<(), tokio::task::JoinError>) -> String {
    match r {
        Ok(()) => format!("{what} stopped"),
        Err(e) if e.is_panic() => {
            let p = e.into_panic();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            format!("{what} panicked: {msg}")
        }
        Err(e) => format!("{what} failed: {e}"),
    }
}

/// Serves Prometheus text on `addr` (hyper, one response per connection).
async fn serve_metrics(addr: SocketAddr, node: omega_p2p::NodeHandle) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%addr, "metrics: cannot listen: {e}");
            return;
        }
    };
    info!(%addr, "serving metrics");
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |_req| {
                let node = node.clone();
                async move {
                    let body = node.metrics().await.unwrap_or_default();
                    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        });
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn,omega_p2p=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
