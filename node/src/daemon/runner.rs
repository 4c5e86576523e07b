//! The reconciler: on every change of the desired state, the membership or a
//! status (and once a second), compute what this node should run, start what
//! is missing, stop what is no longer placed here, and announce the actual
//! state.
//!
//! Starting a brane: resolve its image (`name:tag` through the document's
//! image records, else the local store's tags; or a content id as is), fetch
//! it by content id from any member that has it when it is not in the local
//! store (`/omega/image/1`, chunked, BLAKE3-verified, at most
//! [`MAX_IMAGE_BYTES`]), compile it (cached by hash) and prepare the brane.
//! A failed start is retried after [`RETRY`]. An HTTP brane (`http = true`)
//! is served on `127.0.0.1` on an ephemeral port, one fresh instance per
//! request, until it stops; its URL is in the node's status and in
//! `omega ps`/`omega describe`. Events between branes that run
//! on this node flow along the manifest's edges ([`deliver`]); events to a
//! brane placed elsewhere are reported as not delivered (cross-node delivery
//! is a later step).
//!
//! A frontier brane (`capability = "frontier"`) boots in a microVM through
//! the node's backend (chosen at start, see `omega node --frontier-backend`)
//! from its guest image in this node's guest store (`omega guest push`;
//! guest images are not replicated across the mesh yet), in a blocking task;
//! events run through it like through an event brane. Stopping it shuts the
//! VM down and removes its run directory.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use omega_identity::ContentId;
use omega_p2p::dispatch::{BraneStatus, ImageRequest, ImageResponse, NodeStatus};
use omega_p2p::{Command, DesiredView, NodeHandle};
use omega_runtime::frontier::qemu::QemuBackend;
use omega_runtime::frontier::{Backend as _, Vm};
use omega_runtime::{
    BraneLimits, BraneSpec, DirGrant, Event, Grants, HttpBrane, ImageRef, ImageStore,
    MAX_IMAGE_BYTES, Outcome, Runtime, RuntimeConfig,
};
use omega_zgraph::{Capability, PlanHash};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::view::{Events, Key, Want, wanted};

/// How long a failed start waits before the next attempt.
pub const RETRY: Duration = Duration::from_secs(2);
/// Smallest chunk a peer may send before the last one (guards the loop).
const MIN_CHUNK: usize = 4096;
/// Most members asked for one image.
const MAX_SOURCES: usize = 16;
/// Most deliveries one injected event may cause.
pub const MAX_DELIVERIES: usize = 1000;

/// A prepared brane.
pub enum Loaded {
    /// An event brane.
    Event(omega_runtime::Brane),
    /// An HTTP brane.
    Http(Arc<HttpBrane>),
    /// A frontier brane: its running microVM (one event at a time).
    Frontier(Mutex<Box<dyn Vm>>),
}

impl Loaded {
    /// Runs one event through an event or frontier brane (`None` for an
    /// HTTP brane).
    fn handle(&self, event: &Event) -> Option<Result<Outcome, String>> {
        match self {
            Self::Event(brane) => Some(brane.handle(event).map_err(|e| e.to_string())),
            Self::Frontier(vm) => Some(match vm.lock() {
                Ok(mut vm) => vm.handle(event).map_err(|e| e.to_string()),
                Err(_) => Err("the microVM's lock is poisoned".into()),
            }),
            Self::Http(_) => None,
        }
    }
}

/// Stops a removed brane: a frontier brane's VM is shut down (on a blocking
/// thread: it waits for QEMU to exit) once nothing else holds it.
fn stop(loaded: Arc<Loaded>, name: String) {
    if !matches!(loaded.as_ref(), Loaded::Frontier(_)) {
        return;
    }
    tokio::task::spawn_blocking(move || shutdown(loaded, &name));
}

fn shutdown(loaded: Arc<Loaded>, name: &str) {
    // A delivery in flight holds a clone; its drop then stops the VM.
    if let Ok(Loaded::Frontier(vm)) = Arc::try_unwrap(loaded)
        && let Ok(vm) = vm.into_inner()
    {
        match vm.shutdown() {
            Ok(()) => info!(brane = name, "microVM stopped"),
            Err(e) => warn!(brane = name, "stopping the microVM: {e}"),
        }
    }
}

struct Running {
    plan: PlanHash,
    instances: u32,
    state: String,
    attempt: u64,
    failed_at: Option<Instant>,
    edges: Vec<omega_zgraph::Edge>,
    /// An HTTP brane's URL, and the sender whose drop stops its server.
    http: Option<(String, tokio::sync::oneshot::Sender<()>)>,
}

struct Started {
    key: Key,
    attempt: u64,
    result: Result<Loaded, String>,
}

/// A running brane and its manifest's edges.
type Entry = (Arc<Loaded>, Vec<omega_zgraph::Edge>);

/// The branes running here, for event delivery.
#[derive(Default)]
pub struct Local {
    branes: Mutex<BTreeMap<Key, Entry>>,
}

impl Local {
    /// Removes every running brane, shutting frontier VMs down (blocking).
    pub fn stop_all(&self) {
        let all = match self.branes.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(_) => return,
        };
        for ((_, name), (loaded, _)) in all {
            shutdown(loaded, &name);
        }
    }
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

/// What the API shares with the reconciler.
#[derive(Debug, Default)]
pub struct Shared {
    /// Recent events.
    pub events: Events,
    /// Running branes.
    pub local: Local,
    /// This node's frontier backend, or why there is none (`omega status`).
    pub frontier: serde_json::Value,
}

struct Ctx {
    node: NodeHandle,
    data_dir: PathBuf,
    runtime: Arc<OnceLock<Result<Arc<Runtime>, String>>>,
    /// The frontier backend, or why this node has none.
    frontier: Result<Arc<QemuBackend>, String>,
}

fn runtime(ctx: &Ctx) -> Arc<OnceLock<Result<Arc<Runtime>, String>>> {
    ctx.runtime.clone()
}

/// Runs the reconciler until the node stops.
pub async fn run(
    node: NodeHandle,
    data_dir: PathBuf,
    shared: Arc<Shared>,
    frontier: Option<Arc<QemuBackend>>,
) {
    let mut changes = node.subscribe();
    let (done_tx, mut done_rx) = mpsc::channel::<Started>(64);
    let frontier = frontier.ok_or_else(|| {
        let why = shared.frontier["reason"].as_str().unwrap_or("no backend");
        format!("this node runs no frontier branes: {why}")
    });
    let ctx = Arc::new(Ctx {
        node: node.clone(),
        data_dir,
        runtime: Arc::new(OnceLock::new()),
        frontier,
    });
    let mut running: BTreeMap<Key, Running> = BTreeMap::new();
    let mut next_attempt = 0u64;
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            Some(s) = done_rx.recv() => finish(&mut running, &shared, s),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Some(view) = node.request(Command::Desired).await else {
            return;
        };
        let want = wanted(&view);
        // Stop what is no longer placed here (or runs an older plan).
        let stale: Vec<Key> = running
            .iter()
            .filter(|(k, r)| want.get(*k).is_none_or(|w| w.plan != r.plan))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            running.remove(&k);
            let removed = match shared.local.branes.lock() {
                Ok(mut l) => l.remove(&k),
                Err(_) => None,
            };
            if let Some((loaded, _)) = removed {
                stop(loaded, k.1.clone());
            }
            let why = if want.contains_key(&k) {
                "stopped: a new plan replaces it"
            } else {
                "stopped: no longer placed here"
            };
            shared.events.push(&k.0, &k.1, why.into());
        }
        for (k, w) in &want {
            let retry = match running.get_mut(k) {
                Some(r) => {
                    if r.instances != w.instances {
                        shared.events.push(
                            &k.0,
                            &k.1,
                            format!("instances here: {} -> {}", r.instances, w.instances),
                        );
                        r.instances = w.instances;
                    }
                    r.failed_at.is_some_and(|t| t.elapsed() >= RETRY)
                }
                None => true,
            };
            if !retry {
                continue;
            }
            next_attempt += 1;
            shared.events.push(
                &k.0,
                &k.1,
                format!("placed here ({} instance(s)): starting", w.instances),
            );
            running.insert(
                k.clone(),
                Running {
                    plan: w.plan,
                    instances: w.instances,
                    state: "starting".into(),
                    attempt: next_attempt,
                    failed_at: None,
                    edges: w.edges.clone(),
                    http: None,
                },
            );
            let (ctx, tx, key, want, view) = (
                ctx.clone(),
                done_tx.clone(),
                k.clone(),
                w.clone(),
                view.clone(),
            );
            let attempt = next_attempt;
            tokio::spawn(async move {
                let result = start(&ctx, &key, &want, &view).await;
                let _ = tx
                    .send(Started {
                        key,
                        attempt,
                        result,
                    })
                    .await;
            });
        }
        let status = NodeStatus {
            seq: 0,
            branes: running
                .iter()
                .map(|(k, r)| BraneStatus {
                    manifest: k.0.clone(),
                    brane: k.1.clone(),
                    plan: r.plan.to_hex(),
                    instances: r.instances,
                    state: r.state.clone(),
                    url: r.http.as_ref().map(|(u, _)| u.clone()),
                })
                .collect(),
        };
        if !node.send(Command::PublishStatus(status)).await {
            return;
        }
    }
}

fn finish(running: &mut BTreeMap<Key, Running>, shared: &Shared, s: Started) {
    let current = running.get(&s.key).is_some_and(|r| r.attempt == s.attempt);
    let Some(r) = running.get_mut(&s.key).filter(|_| current) else {
        // Stopped (or restarted) while it started.
        if let Ok(loaded) = s.result {
            stop(Arc::new(loaded), s.key.1);
        }
        return;
    };
    match s.result {
        Ok(loaded) => {
            if let Loaded::Http(brane) = &loaded {
                match serve(brane.clone()) {
                    Ok((url, stop)) => {
                        shared
                            .events
                            .push(&s.key.0, &s.key.1, format!("serving on {url}"));
                        r.http = Some((url, stop));
                    }
                    Err(e) => {
                        r.state = format!("failed: cannot listen on loopback: {e}");
                        r.failed_at = Some(Instant::now());
                        return;
                    }
                }
            }
            r.state = "running".into();
            r.failed_at = None;
            shared.events.push(&s.key.0, &s.key.1, "running".into());
            if let Ok(mut l) = shared.local.branes.lock() {
                l.insert(s.key.clone(), (Arc::new(loaded), r.edges.clone()));
            }
        }
        Err(e) => {
            let first = !r.state.starts_with("failed");
            r.state = format!("failed: {e}");
            r.failed_at = Some(Instant::now());
            if first {
                shared
                    .events
                    .push(&s.key.0, &s.key.1, format!("failed: {e} (retrying)"));
            }
        }
    }
}

/// Serves an HTTP brane on 127.0.0.1 (ephemeral port) until the returned
/// sender is dropped.
fn serve(brane: Arc<HttpBrane>) -> std::io::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let std_listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    std_listener.set_nonblocking(true)?;
    let url = format!("http://{}", std_listener.local_addr()?);
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let name = brane.name().to_owned();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = omega_runtime::serve_http(brane, listener, shutdown).await {
            warn!(brane = %name, "http server: {e}");
        }
    });
    Ok((url, stop))
}

/// Resolves, fetches, compiles and prepares one brane.
async fn start(ctx: &Ctx, key: &Key, want: &Want, view: &DesiredView) -> Result<Loaded, String> {
    let b = &want.brane;
    if b.capability == Capability::Frontier {
        return start_frontier(ctx, key, want).await;
    }
    let image_ref = b.image.as_ref().ok_or("the brane names no image")?;
    let text = image_ref.to_string();
    let store = ImageStore::open(ctx.data_dir.join("images")).map_err(|e| e.to_string())?;
    let content: ContentId = match text.parse() {
        Ok(c) => c,
        Err(_) => match view.images.iter().find(|i| i.name == text) {
            Some(i) => i
                .content
                .parse()
                .map_err(|_| format!("image record {text} names a bad content id"))?,
            None => text
                .parse::<ImageRef>()
                .ok()
                .and_then(|r| store.resolve(&r).ok())
                .ok_or_else(|| {
                    format!("no image record for {text} (omega image push FILE --name {text})")
                })?,
        },
    };
    let bytes = match store.get(&content) {
        Ok(b) => b,
        Err(_) => fetch(&ctx.node, &view.peers, content).await?,
    };
    let cell = runtime(ctx);
    let cache = ctx.data_dir.join("cache");
    let (name, brane, edges) = (key.1.clone(), b.clone(), want.edges.clone());
    tokio::task::spawn_blocking(move || {
        let rt = cell
            .get_or_init(|| {
                Runtime::new(RuntimeConfig {
                    cache_dir: Some(cache),
                    ..RuntimeConfig::default()
                })
                .map(Arc::new)
                .map_err(|e| e.to_string())
            })
            .clone()?;
        if store.get(&content).is_err() {
            store.put(&rt, &bytes).map_err(|e| e.to_string())?;
        }
        let image = rt.load(&bytes).map_err(|e| e.to_string())?;
        let spec = spec(&name, &brane, &edges);
        let log: omega_runtime::LogSink = Arc::new(move |brane: &str, level, msg: &str| {
            tracing::info!(brane, ?level, "{msg}");
        });
        if brane.http {
            rt.http_brane(&image, spec, log)
                .map(|b| Loaded::Http(Arc::new(b)))
                .map_err(|e| e.to_string())
        } else {
            rt.brane(&image, spec, log)
                .map(Loaded::Event)
                .map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| format!("start task: {e}"))?
}

/// Resolves a frontier brane's guest in this node's guest store and boots
/// its microVM (on a blocking thread: seconds under TCG).
async fn start_frontier(ctx: &Ctx, key: &Key, want: &Want) -> Result<Loaded, String> {
    let backend = ctx.frontier.clone()?;
    let (name, b, data_dir) = (key.1.clone(), want.brane.clone(), ctx.data_dir.clone());
    let emits = emits_of(&want.edges, &name);
    tokio::task::spawn_blocking(move || {
        let (guest, gpu) = crate::frontier::requirements(&b)?;
        let image = crate::frontier::resolve_stored(&data_dir, guest).map_err(|e| {
            format!(
                "{e}: guest images are not replicated across the mesh yet; \
                 push it to this node: omega guest push DIR --name {guest} --data-dir {}",
                data_dir.display()
            )
        })?;
        let spec = crate::frontier::vm_spec(&name, &b, image, emits);
        let vm = crate::frontier::boot(&backend, &spec, gpu)?;
        info!(
            brane = %name,
            pid = vm.pid(),
            run_dir = %vm.run_dir().display(),
            "{} microVM ready in {} ms ({})",
            backend.name(),
            vm.booted_in().as_millis(),
            vm.agent()
        );
        Ok(Loaded::Frontier(Mutex::new(Box::new(vm))))
    })
    .await
    .map_err(|e| format!("start task: {e}"))?
}

/// The event types `name` may emit: its outgoing edges' types.
fn emits_of(edges: &[omega_zgraph::Edge], name: &str) -> Vec<String> {
    let mut emits: Vec<String> = edges
        .iter()
        .filter(|e| e.from == name)
        .map(|e| e.on.clone())
        .collect();
    emits.sort();
    emits.dedup();
    emits
}

fn spec(name: &str, b: &omega_zgraph::Brane, edges: &[omega_zgraph::Edge]) -> BraneSpec {
    let d = BraneLimits::default();
    let limits = BraneLimits {
        memory_bytes: b.limits.memory_bytes.unwrap_or(d.memory_bytes),
        cpu: b.limits.cpu_ms.map(Duration::from_millis).unwrap_or(d.cpu),
        timeout: b
            .limits
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(d.timeout),
        ..d
    };
    let grants = Grants {
        dirs: b
            .grants
            .dirs
            .iter()
            .map(|g| DirGrant {
                host: PathBuf::from(&g.host),
                guest: g.guest.clone(),
                writable: g.writable,
            })
            .collect(),
        env: b.grants.env.clone().into_iter().collect(),
        http_hosts: b.grants.http.clone(),
        clocks: b.grants.clocks,
        ..Grants::default()
    };
    BraneSpec {
        name: name.into(),
        config: b.config.clone(),
        limits,
        grants,
        emits: Some(emits_of(edges, name)),
        ..BraneSpec::default()
    }
}

/// Fetches image `content` from the first of `peers` that has it.
async fn fetch(
    node: &NodeHandle,
    peers: &[libp2p::PeerId],
    content: ContentId,
) -> Result<Vec<u8>, String> {
    let mut last = "no member to fetch it from".to_string();
    'peers: for peer in peers.iter().take(MAX_SOURCES) {
        let mut got: Vec<u8> = Vec::new();
        loop {
            let request = ImageRequest {
                content,
                offset: got.len() as u64,
            };
            let r = node
                .request(|reply| Command::ImageChunk {
                    peer: *peer,
                    request,
                    reply,
                })
                .await
                .ok_or("the node is stopping")?;
            match r {
                Ok(ImageResponse::Chunk { total, bytes }) => {
                    if total > MAX_IMAGE_BYTES {
                        last = format!("{peer}: image of {total} bytes exceeds {MAX_IMAGE_BYTES}");
                        continue 'peers;
                    }
                    let n = bytes.len();
                    got.extend(bytes);
                    let have = got.len() as u64;
                    if have == total {
                        if ContentId::of(&got) == content {
                            return Ok(got);
                        }
                        warn!(%peer, %content, "image from peer does not match its hash");
                        last = format!("{peer}: sent bytes that do not match {content}");
                        continue 'peers;
                    }
                    if have > total || n < MIN_CHUNK {
                        last = format!("{peer}: inconsistent chunks");
                        continue 'peers;
                    }
                }
                Ok(ImageResponse::NotFound) => {
                    last = format!("no member holds {content}");
                    continue 'peers;
                }
                Ok(ImageResponse::Refused(why)) => {
                    last = format!("{peer}: {why}");
                    continue 'peers;
                }
                Err(e) => {
                    last = format!("{peer}: {e}");
                    continue 'peers;
                }
            }
        }
    }
    Err(format!("image {content}: {last}"))
}

/// Runs `event` on brane `key` here and delivers what it emits along the
/// manifest's edges to branes running on this node, breadth first, at most
/// [`MAX_DELIVERIES`]. Returns one line per delivery or non-delivery.
pub fn deliver(shared: &Shared, key: &Key, event: Event) -> Result<Vec<serde_json::Value>, String> {
    let branes = shared.local.branes.lock().map_err(|_| "poisoned")?.clone();
    if !branes.contains_key(key) {
        return Err(format!("{}/{} is not running on this node", key.0, key.1));
    }
    let mut queue = VecDeque::from([(key.1.clone(), event)]);
    let mut out = Vec::new();
    let mut n = 0;
    while let Some((to, ev)) = queue.pop_front() {
        n += 1;
        if n > MAX_DELIVERIES {
            out.push(serde_json::json!({ "error": "delivery limit reached" }));
            break;
        }
        let Some((loaded, edges)) = branes.get(&(key.0.clone(), to.clone())) else {
            out.push(serde_json::json!({
                "brane": to, "event": ev.id, "type": ev.ty,
                "delivered": false,
                "why": "runs on another node (cross-node delivery is not carried yet)",
            }));
            continue;
        };
        let Some(result) = loaded.handle(&ev) else {
            out.push(
                serde_json::json!({ "brane": to, "delivered": false, "why": "an HTTP brane" }),
            );
            continue;
        };
        match result {
            Ok(outcome) => {
                out.push(serde_json::json!({
                    "brane": to, "event": ev.id, "type": ev.ty, "delivered": true,
                    "emitted": outcome.emitted.iter().map(|e| e.ty.clone()).collect::<Vec<_>>(),
                }));
                for (i, e) in outcome.emitted.into_iter().enumerate() {
                    for edge in edges.iter().filter(|x| x.from == to && x.on == e.ty) {
                        queue.push_back((
                            edge.to.clone(),
                            Event {
                                id: format!("{}.{i}", ev.id),
                                ty: e.ty.clone(),
                                key: e.key.clone(),
                                payload: e.payload.clone(),
                                source: to.clone(),
                                attempt: 1,
                            },
                        ));
                    }
                }
            }
            Err(e) => out.push(serde_json::json!({
                "brane": to, "event": ev.id, "type": ev.ty, "delivered": true, "error": e,
            })),
        }
    }
    Ok(out)
}
