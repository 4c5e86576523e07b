//! `omega bench events`: durable, acknowledged event delivery between real
//! daemons on loopback, next to NATS JetStream (file storage) in the same run.
//!
//! Omega rows: two daemons (full `omega node`, run in this process on
//! their own threads, QUIC on 127.0.0.1, redb stores in a temp dir); a
//! producer brane (`ingest`) on the first, a consumer brane (`sink`) on the
//! second, one edge between them. Each event is emitted from outside into
//! the producer (durable there), processed by it, its emit committed with
//! the "processed" mark, delivered to the consumer, processed and committed
//! there, and acknowledged back: the latency of an event is from the emit
//! call until the producer's node sees that acknowledgement. At most
//! `inflight` events are between those two points at any time. Rows for
//! both event-store modes: `always` (every write group fsynced before
//! anything in it is acknowledged) and `interval` (group commit without a
//! sync, sealed every `--sync-interval-ms`).
//!
//! Pipeline row: ingest → transform → archive, each on its own daemon, one
//! event in flight; latency from the emit until archive's processing is
//! acknowledged to transform's node.
//!
//! JetStream rows: [`super::jetstream`] (publish with ack, durable pull
//! consumer, explicit ack of each message, the same in-flight bound).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use omega_gossip::desired::{Authority, DesiredRecord};
use omega_gossip::events::{EventId, NewEvent};
use omega_gossip::node::BraneKey;
use omega_p2p::NodeHandle;
use serde_json::json;

use super::output::{CliError, Output};

/// Arguments of `omega bench events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Events per row.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    /// In-flight bounds to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,256")]
    pub inflight: Vec<usize>,
    /// The directory with `ingest.wasm`, `transform.wasm`, `archive.wasm`
    /// and `sink.wasm` (examples/branes built for wasm32-wasip2).
    #[arg(long, default_value = "examples/branes/target/wasm32-wasip2/release")]
    pub images: PathBuf,
    /// The sync interval of the `interval` rows, ms.
    #[arg(long, default_value_t = 100)]
    pub sync_interval_ms: u64,
    /// Events of the three-daemon pipeline row.
    #[arg(long, default_value_t = 2_000)]
    pub pipeline_events: usize,
    /// Skip the JetStream rows (e.g. no nats-server here).
    #[arg(long)]
    pub no_jetstream: bool,
}

/// One result row.
#[derive(Debug, Clone)]
struct Row {
    system: String,
    mode: String,
    inflight: usize,
    msgs_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::plain(format!("bench events: {e}"))
}

pub(super) fn nearest_rank(sorted: &[f64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs `omega ARGS` (this binary) and returns stdout; an error names the verb.
pub(super) fn omega(args: &[&str]) -> Result<String, CliError> {
    let exe = std::env::current_exe().map_err(fail)?;
    let out = std::process::Command::new(exe)
        .args(args)
        .output()
        .map_err(fail)?;
    if !out.status.success() {
        return Err(fail(format!(
            "omega {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `omega node` flags, parsed the way the CLI parses them.
#[derive(Debug, Parser)]
struct NodeFlags {
    #[command(flatten)]
    run: crate::daemon::RunArgs,
}

/// A daemon running on its own thread in this process.
pub(super) struct Daemon {
    pub(super) handle: NodeHandle,
    dir: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start(
        dir: &Path,
        name: &str,
        substrate: &str,
        token: &str,
        peer: Option<&str>,
        sync: &str,
        extra: &[String],
    ) -> Result<Self, CliError> {
        let mut argv = vec![
            "node".to_owned(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            "/ip4/127.0.0.1/udp/0/quic-v1".into(),
            "--name".into(),
            name.into(),
            "--substrate".into(),
            substrate.into(),
            "--join".into(),
            token.into(),
            "--discovery-interval".into(),
            "1".into(),
            "--frontier-backend".into(),
            "none".into(),
            "--event-sync".into(),
            sync.into(),
        ];
        if let Some(p) = peer {
            argv.extend(["--peer".into(), p.into()]);
        }
        argv.extend(extra.iter().cloned());
        let flags = NodeFlags::try_parse_from(&argv).map_err(fail)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("bench-{name}"))
            .spawn(move || {
                let _ = crate::daemon::run_with(&flags.run, move |h| {
                    let _ = tx.send(h);
                });
            })
            .map_err(fail)?;
        let handle = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| fail(format!("daemon {name} did not start")))?;
        Ok(Self {
            handle,
            dir: dir.to_path_buf(),
            thread: Some(thread),
        })
    }

    async fn addr(&self) -> Result<String, CliError> {
        for _ in 0..200 {
            if let Some(s) = self.handle.status().await
                && let Some(a) = s.node.listen.first()
            {
                return Ok(a.clone());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(fail("a daemon does not listen"))
    }

    fn d(&self) -> String {
        self.dir.display().to_string()
    }

    pub(super) async fn stop(mut self) {
        let _ = self.handle.shutdown().await;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// A mesh of daemons in a temp dir, with the example images pushed.
pub(super) struct Lab {
    pub(super) root: PathBuf,
    root_key: PathBuf,
    pub(super) daemons: Vec<Daemon>,
}

impl Lab {
    /// Daemons `nodes` (name, substrate; the first gets `first_flags`),
    /// the images `names` from `images` pushed as `NAME:bench`, and
    /// `manifest` applied as `bench`; returns when every brane runs.
    pub(super) async fn start(
        nodes: &[(&str, &str)],
        sync: &str,
        (images, names): (&Path, &[&str]),
        manifest: &str,
        first_flags: &[String],
    ) -> Result<Self, CliError> {
        let root = std::env::temp_dir().join(format!(
            "omega-bench-events-{}-{}",
            std::process::id(),
            crate::unix_now().0
        ));
        let mesh = root.join("mesh");
        let mesh_s = mesh.display().to_string();
        omega(&["mesh", "init", "--mesh-dir", &mesh_s])?;
        let mut daemons: Vec<Daemon> = Vec::new();
        let mut seed: Option<String> = None;
        for (name, substrate) in nodes {
            let token = omega(&[
                "mesh",
                "invite",
                "--substrate",
                substrate,
                "--mesh-dir",
                &mesh_s,
            ])?;
            let d = Daemon::start(
                &root.join(name),
                name,
                substrate,
                &token,
                seed.as_deref(),
                sync,
                if seed.is_none() { first_flags } else { &[] },
            )?;
            if seed.is_none() {
                seed = Some(d.addr().await?);
            }
            daemons.push(d);
        }
        let root_key = mesh.join("mesh-root.key");
        let key = root_key.display().to_string();
        let first = daemons[0].d();
        // Membership first (image names replicate to members).
        for _ in 0..600 {
            let live = match daemons[0].handle.status().await {
                Some(s) => s.node.live_members,
                None => 0,
            };
            if live + 1 >= daemons.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for b in names {
            let wasm = image_file(images, b);
            omega(&[
                "--key",
                &key,
                "image",
                "push",
                &wasm.display().to_string(),
                "--name",
                &format!("{b}:bench"),
                "--data-dir",
                &first,
            ])?;
        }
        let file = root.join("bench.zgraph.toml");
        std::fs::write(
            &file,
            manifest.replace("ARCHIVE_DIR", &root.join("archive").display().to_string()),
        )
        .map_err(fail)?;
        std::fs::create_dir_all(root.join("archive")).map_err(fail)?;
        omega(&[
            "--key",
            &key,
            "apply",
            &file.display().to_string(),
            "--name",
            "bench",
            "--data-dir",
            &first,
        ])?;
        let lab = Self {
            root,
            root_key,
            daemons,
        };
        lab.wait_running().await?;
        Ok(lab)
    }

    /// Until every brane runs and every node knows where.
    async fn wait_running(&self) -> Result<(), CliError> {
        for _ in 0..1200 {
            let mut ok = true;
            for d in &self.daemons {
                let running = match d.handle.view().await {
                    Some(v) => {
                        let branes: usize = v.manifests.iter().map(|m| m.plan.branes().len()).sum();
                        let up = v
                            .statuses
                            .values()
                            .flat_map(|s| s.branes.iter())
                            .filter(|b| b.state == omega_gossip::node::BraneState::Running)
                            .count();
                        branes > 0 && up >= branes
                    }
                    None => false,
                };
                ok &= running;
            }
            if ok {
                // Statuses reach the delivery machines with the next input.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(fail("the bench manifest does not run everywhere"))
    }

    fn grant(&self) -> Result<Vec<u8>, CliError> {
        let key = crate::keystore::load(&self.root_key)?;
        Ok(DesiredRecord::emit_grant(
            "bench",
            Authority {
                signer: &key,
                mesh_root: key.did(),
                proofs: Vec::new(),
                exp: crate::unix_now().secs() + 3600,
                nonce: super::token::nonce()?,
            },
        )
        .map_err(fail)?
        .encode())
    }

    pub(super) async fn stop(self) {
        for d in self.daemons {
            d.stop().await;
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The example branes the events rows use.
const IMAGES: [&str; 4] = ["ingest", "transform", "archive", "sink"];

const TWO_NODES: &str = r#"
[brane.src]
substrate = "habitat"
image = "ingest:bench"
hosts = ["a"]

[brane.sink]
substrate = "habitat"
image = "sink:bench"
hosts = ["b"]

[graph]
edges = [{ from = "src", to = "sink", on = "raw.batch" }]
"#;

const PIPELINE: &str = r#"
[brane.ingest]
substrate = "habitat"
image = "ingest:bench"
hosts = ["a"]

[brane.transform]
substrate = "biome"
image = "transform:bench"
hosts = ["b"]

[brane.archive]
substrate = "habitat"
image = "archive:bench"
hosts = ["c"]

[brane.archive.config]
dir = "/archive"

[brane.archive.grants]
dirs = [{ host = "ARCHIVE_DIR", guest = "/archive", mode = "rw" }]

[graph]
edges = [
  { from = "ingest", to = "transform", on = "raw.batch" },
  { from = "transform", to = "archive", on = "tensor.shard" },
]
"#;

/// One measured workload.
struct Workload<'a> {
    /// Where events are emitted.
    emit_on: &'a NodeHandle,
    /// Where the last hop's acknowledgement shows.
    acks_on: &'a NodeHandle,
    grant: &'a [u8],
    /// The entry brane.
    entry: &'a str,
    payload: &'a [u8],
}

/// Emits `events` into the entry brane, keeping at most `inflight`
/// unacknowledged, and times each until `acks_on` sees `done_id(id)`
/// acknowledged. Returns (wall time, sorted latencies in µs).
async fn drive(
    w: &Workload<'_>,
    events: usize,
    inflight: usize,
    done_id: impl Fn(&EventId) -> EventId,
) -> Result<(Duration, Vec<f64>), CliError> {
    let Workload {
        emit_on,
        acks_on,
        grant,
        entry,
        payload,
    } = *w;
    let mut acks = acks_on.acks().await.ok_or_else(|| fail("node stopped"))?;
    let mut pending: std::collections::HashMap<EventId, Instant> = std::collections::HashMap::new();
    let mut lat = Vec::with_capacity(events);
    let mut emitting = FuturesUnordered::new();
    let (mut sent, mut outstanding) = (0usize, 0usize);
    let started = Instant::now();
    let mut last_progress = Instant::now();
    while lat.len() < events {
        while sent < events && outstanding < inflight {
            let e = NewEvent {
                to: BraneKey::new("bench", entry),
                ty: "tick".into(),
                key: String::new(),
                payload: payload.to_vec(),
            };
            let h = emit_on.clone();
            let g = grant.to_vec();
            emitting.push(async move { (Instant::now(), h.emit(g, vec![e]).await) });
            sent += 1;
            outstanding += 1;
        }
        if last_progress.elapsed() > Duration::from_secs(30) {
            return Err(fail(format!(
                "no progress for 30 s ({} of {events} done)",
                lat.len()
            )));
        }
        tokio::select! {
            Some((t0, r)) = emitting.next(), if !emitting.is_empty() => {
                match r {
                    Some(Ok(ids)) => {
                        for id in ids {
                            pending.insert(done_id(&id), t0);
                        }
                    }
                    Some(Err(e)) if e.to_string().starts_with("busy") => {
                        // Backpressure: try that one again.
                        sent -= 1;
                        outstanding -= 1;
                    }
                    Some(Err(e)) => return Err(fail(e)),
                    None => return Err(fail("node stopped")),
                }
            }
            a = acks.recv() => match a {
                Ok(id) => {
                    if let Some(t0) = pending.remove(&id) {
                        lat.push(t0.elapsed().as_secs_f64() * 1e6);
                        outstanding -= 1;
                        last_progress = Instant::now();
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    return Err(fail(format!("the ack stream lagged by {n}")));
                }
                Err(e) => return Err(fail(e)),
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let wall = started.elapsed();
    if std::env::var_os("OMEGA_BENCH_DEBUG").is_some()
        && let Some(r) = emit_on.events().await
    {
        eprintln!("{}", serde_json::to_string(&r).unwrap_or_default());
    }
    lat.sort_by(f64::total_cmp);
    Ok((wall, lat))
}

fn row(
    system: &str,
    mode: &str,
    inflight: usize,
    events: usize,
    wall: Duration,
    lat: &[f64],
) -> Row {
    Row {
        system: system.into(),
        mode: mode.into(),
        inflight,
        msgs_per_s: events as f64 / wall.as_secs_f64().max(1e-9),
        p50_us: nearest_rank(lat, 50.0),
        p99_us: nearest_rank(lat, 99.0),
    }
}

/// Text payload of `n` bytes (`ingest` takes UTF-8 numbers).
fn payload(n: usize) -> Vec<u8> {
    let mut p = b"1".to_vec();
    while p.len() + 2 <= n {
        p.extend_from_slice(b",1");
    }
    p.resize(n.max(1), b'1');
    p
}

/// Where example brane `name` is in `dir` (cargo names the component of
/// `hello-http` hello_http.wasm).
pub(super) fn image_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}.wasm", name.replace('-', "_")))
}

/// Every example brane of `names` is in `dir`, or the error says how to
/// build them.
pub(super) fn check_images(dir: &Path, names: &[&str]) -> Result<(), CliError> {
    for b in names {
        let p = image_file(dir, b);
        if !p.is_file() {
            return Err(CliError::invalid(
                format!("no {}", p.display()),
                "build the example branes: cargo build --release --target wasm32-wasip2 \
                 --manifest-path examples/branes/Cargo.toml, or pass --images DIR",
            ));
        }
    }
    Ok(())
}

/// The bench's own runtime (the daemons run on their own threads).
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(fail)
}

/// `omega bench events`.
pub(super) fn run(a: &EventsArgs, out: &Output) -> Result<ExitCode, CliError> {
    check_images(&a.images, &IMAGES)?;
    let rows = runtime()?.block_on(measure(a))?;
    let mut text = format!(
        "durable, acknowledged events end to end: {} events of {} bytes per row (pipeline: {})\n\n| system | mode | in flight | msgs/s | P50 µs | P99 µs |\n|---|---|---:|---:|---:|---:|\n",
        a.events, a.payload, a.pipeline_events
    );
    for r in &rows {
        text.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} |\n",
            r.system, r.mode, r.inflight, r.msgs_per_s, r.p50_us, r.p99_us
        ));
    }
    let machine = json!({
        "ok": true,
        "events": a.events,
        "payload_bytes": a.payload,
        "rows": rows.iter().map(|r| json!({
            "system": r.system,
            "mode": r.mode,
            "inflight": r.inflight,
            "msgs_per_s": r.msgs_per_s,
            "p50_us": r.p50_us,
            "p99_us": r.p99_us,
        })).collect::<Vec<_>>(),
    });
    out.print(text.trim_end(), machine);
    Ok(ExitCode::SUCCESS)
}

async fn measure(a: &EventsArgs) -> Result<Vec<Row>, CliError> {
    let mut rows = Vec::new();
    let body = payload(a.payload);
    let interval = format!("{}", a.sync_interval_ms.max(1));
    for (mode, sync) in [
        ("fsync per write group", "always"),
        ("group commit, sync every", interval.as_str()),
    ] {
        let label = if sync == "always" {
            mode.to_owned()
        } else {
            format!("{mode} {sync} ms")
        };
        let lab = Lab::start(
            &[("a", "habitat"), ("b", "habitat")],
            sync,
            (&a.images, &IMAGES),
            TWO_NODES,
            &[],
        )
        .await?;
        let grant = lab.grant()?;
        let to = BraneKey::new("bench", "sink");
        let child = |id: &EventId| EventId::child(id, &to, "raw.batch", 0);
        let h = &lab.daemons[0].handle;
        let w = Workload {
            emit_on: h,
            acks_on: h,
            grant: &grant,
            entry: "src",
            payload: &body,
        };
        // Warm up (compile caches, connections).
        drive(&w, 200, 16, child).await?;
        for &inflight in &a.inflight {
            let (wall, lat) = drive(&w, a.events, inflight.max(1), child).await?;
            rows.push(row("omega", &label, inflight, a.events, wall, &lat));
        }
        lab.stop().await;
    }
    // The example pipeline over three daemons, one in flight.
    let lab = Lab::start(
        &[("a", "habitat"), ("b", "biome"), ("c", "habitat")],
        "always",
        (&a.images, &IMAGES),
        PIPELINE,
        &[],
    )
    .await?;
    let grant = lab.grant()?;
    let (t, ar) = (
        BraneKey::new("bench", "transform"),
        BraneKey::new("bench", "archive"),
    );
    let last = |id: &EventId| {
        EventId::child(
            &EventId::child(id, &t, "raw.batch", 0),
            &ar,
            "tensor.shard",
            0,
        )
    };
    let w = Workload {
        emit_on: &lab.daemons[0].handle,
        acks_on: &lab.daemons[1].handle,
        grant: &grant,
        entry: "ingest",
        payload: b"1,2,3",
    };
    drive(&w, 50, 1, last).await?;
    let (wall, lat) = drive(&w, a.pipeline_events, 1, last).await?;
    rows.push(row(
        "omega",
        "pipeline ingest→transform→archive, 3 daemons, fsync per write group",
        1,
        a.pipeline_events,
        wall,
        &lat,
    ));
    lab.stop().await;
    if !a.no_jetstream {
        use super::jetstream::AckMode;
        for (&inflight, ack) in a
            .inflight
            .iter()
            .flat_map(|i| [(i, AckMode::DoubleAck), (i, AckMode::Ack)])
        {
            let r = super::jetstream::run_with_ack(a.events, a.payload, inflight.max(1), ack)
                .await
                .map_err(|e| {
                    CliError::invalid(
                        format!("jetstream: {e}"),
                        "install nats-server (apt-get install nats-server) or pass --no-jetstream",
                    )
                })?;
            rows.push(Row {
                system: r.system.into(),
                mode: r.mode,
                inflight: r.inflight,
                msgs_per_s: r.msgs_per_s,
                p50_us: r.p50_us,
                p99_us: r.p99_us,
            });
        }
    }
    Ok(rows)
}
