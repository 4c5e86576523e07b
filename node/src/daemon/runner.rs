//! The brane runner: executes the node brain's start and stop decisions.
//!
//! The node brain (`omega_gossip::Node`) decides what runs here, when to
//! retry a failed start and with which backoff; this module only does it.
//! Starting a brane: resolve its image (the brain resolved `name:tag`
//! through the mesh's image records; a tag only in this node's store is
//! looked up here), fetch it by content id from the members the brain
//! lists when it is not in the local store (`/omega/image/1`, chunked,
//! BLAKE3-verified, at most [`MAX_IMAGE_BYTES`]), compile it (cached by
//! hash) and prepare it — on tokio's blocking pool, never on the network
//! loop. An HTTP brane (`http = true`) is served on `127.0.0.1` on an
//! ephemeral port until it stops. A frontier brane boots in a microVM from
//! this node's guest store. Every start is reported back, success or error
//! (a panic in the start task included), so the brain can retry.
//!
//! Events: the brain decides which event runs on which local brane
//! ([`BraneEffect::Process`]); this module runs it on the blocking pool and
//! reports what it emitted. Routing, durability, retries and dead letters
//! are the brain's (`omega_gossip::events`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use omega_gossip::NodeId;
use omega_gossip::node::{BraneKey, FetchError, ImageRequest, ImageResponse, StartBrane, Started};
use omega_identity::ContentId;
use omega_p2p::{BraneEffect, NodeHandle};
use omega_runtime::frontier::Backend as _;
use omega_runtime::frontier::qemu::QemuBackend;
use omega_runtime::{
    BraneLimits, BraneSpec, Event, Grants, HttpBrane, ImageRef, ImageStore, MAX_IMAGE_BYTES,
    Member, Runtime, RuntimeConfig, emits_of,
};
use omega_zgraph::Capability;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::{FrontierReport, TailLine};

/// Smallest chunk a peer may send before the last one (guards the loop).
const MIN_CHUNK: usize = 4096;
/// Most members asked for one image.
const MAX_SOURCES: usize = 16;

/// A brane running here.
struct Running {
    attempt: u64,
    member: Arc<Member>,
    /// An HTTP brane's server: dropping it stops the server.
    _http: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The branes running here, for event delivery.
#[derive(Default)]
pub struct Local {
    branes: Mutex<BTreeMap<BraneKey, Running>>,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

impl Local {
    /// Removes every running brane, shutting frontier VMs down (blocking).
    pub fn stop_all(&self) {
        let all = match self.branes.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(_) => return,
        };
        for (key, r) in all {
            shutdown(r.member, &key.brane);
        }
    }

    /// Installs attempt `r.attempt` of `key` unless a newer one runs;
    /// returns what it replaced (or `r` itself when it is the older one).
    fn install(&self, key: BraneKey, r: Running) -> Option<Running> {
        let Ok(mut l) = self.branes.lock() else {
            return Some(r);
        };
        match l.get(&key) {
            Some(cur) if cur.attempt > r.attempt => Some(r),
            _ => l.insert(key, r),
        }
    }

    /// The HTTP brane `key` running here.
    pub fn http(&self, key: &BraneKey) -> Option<Arc<HttpBrane>> {
        let l = self.branes.lock().ok()?;
        match l.get(key)?.member.as_ref() {
            Member::Http(b) => Some(b.clone()),
            _ => None,
        }
    }

    /// Removes `key` if its running attempt is `attempt` or older.
    fn remove(&self, key: &BraneKey, attempt: u64) -> Option<Running> {
        let mut l = self.branes.lock().ok()?;
        if l.get(key).is_some_and(|r| r.attempt <= attempt) {
            l.remove(key)
        } else {
            None
        }
    }
}

/// What the API shares with the runner.
#[derive(Debug, Default)]
pub struct Shared {
    /// Running branes.
    pub local: Local,
    /// This node's frontier backend, or why there is none (`omega status`).
    pub frontier: FrontierReport,
    /// The last events processed here, for `omega tail`.
    pub tail: Tail,
    /// Where branes' `NAME.brane` calls go (set before the runner starts).
    pub router: OnceLock<omega_runtime::CallRouter>,
    /// This node's resolvers and their tunnels, for `omega ps`.
    pub resolvers: Mutex<Vec<crate::api::ResolverRow>>,
}

/// Lines `omega tail` may fall behind before it skips.
pub const TAIL_BUFFER: usize = 4096;

/// The last [`TAIL_BUFFER`] events processed here, numbered.
#[derive(Debug, Default)]
pub struct Tail {
    lines: Mutex<(u64, std::collections::VecDeque<TailLine>)>,
    /// Woken on every new line.
    pub notify: tokio::sync::Notify,
}

impl Tail {
    /// Appends a line (numbering it).
    pub fn push(&self, mut line: TailLine) {
        if let Ok(mut l) = self.lines.lock() {
            l.0 += 1;
            line.seq = l.0;
            if l.1.len() >= TAIL_BUFFER {
                l.1.pop_front();
            }
            l.1.push_back(line);
        }
        self.notify.notify_waiters();
    }

    /// Lines after `after` that `keep` selects (at most `max`), the next
    /// cursor, and how many lines were already gone.
    pub fn after(
        &self,
        after: u64,
        max: usize,
        keep: impl Fn(&TailLine) -> bool,
    ) -> (Vec<TailLine>, u64, u64) {
        let Ok(l) = self.lines.lock() else {
            return (Vec::new(), after, 0);
        };
        let first = l.1.front().map_or(l.0 + 1, |x| x.seq);
        let skipped = first.saturating_sub(after + 1);
        let mut next = after.max(first.saturating_sub(1));
        let mut out = Vec::new();
        for line in l.1.iter().filter(|x| x.seq > after) {
            next = line.seq;
            if keep(line) {
                out.push(line.clone());
                if out.len() >= max {
                    break;
                }
            }
        }
        (out, next, skipped)
    }

    /// The newest line's number.
    pub fn last(&self) -> u64 {
        self.lines.lock().map_or(0, |l| l.0)
    }
}

struct Ctx {
    node: NodeHandle,
    data_dir: PathBuf,
    runtime: OnceLock<Result<Arc<Runtime>, String>>,
    /// The frontier backend, or why this node has none.
    frontier: Result<Arc<QemuBackend>, String>,
    shared: Arc<Shared>,
}

/// Executes the brain's brane effects until the node stops.
pub async fn run(
    node: NodeHandle,
    mut effects: mpsc::UnboundedReceiver<BraneEffect>,
    data_dir: PathBuf,
    shared: Arc<Shared>,
    frontier: Option<Arc<QemuBackend>>,
) {
    let frontier = frontier.ok_or_else(|| {
        format!(
            "this node runs no frontier branes: {}",
            shared.frontier.reason
        )
    });
    let ctx = Arc::new(Ctx {
        node,
        data_dir,
        runtime: OnceLock::new(),
        frontier,
        shared,
    });
    while let Some(effect) = effects.recv().await {
        match effect {
            BraneEffect::Start(s) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let (key, attempt) = (s.key.clone(), s.attempt);
                    let result = begin(&ctx, *s).await;
                    ctx.node.brane_started(key, attempt, result).await;
                });
            }
            BraneEffect::Stop { key, attempt } => {
                if let Some(r) = ctx.shared.local.remove(&key, attempt) {
                    stop(r.member, key.brane);
                }
            }
            BraneEffect::Process(p) => process(&ctx, *p),
            _ => {}
        }
    }
}

/// Runs one event on a local brane (on the blocking pool) and reports what
/// it emitted to the node brain, which commits it with the "processed"
/// mark and carries the emits on along the manifest's edges.
fn process(ctx: &Arc<Ctx>, p: omega_gossip::events::Process) {
    use omega_gossip::events::ProcessError;
    let member = ctx
        .shared
        .local
        .branes
        .lock()
        .ok()
        .and_then(|l| l.get(&p.to).map(|r| r.member.clone()));
    let Some(member) = member else {
        ctx.node.processed(p.ticket, Err(ProcessError::NotRunning));
        return;
    };
    let node = ctx.node.clone();
    let shared = ctx.shared.clone();
    tokio::task::spawn_blocking(move || {
        let event = brane_event(&p.event);
        let result = run_event(Some(&member), &event).map(emits);
        let line = TailLine::new(&p, &event, &result);
        node.processed(p.ticket, result);
        shared.tail.push(line);
    });
}

/// What a brane sees of an event on its way.
pub(crate) fn brane_event(e: &omega_gossip::events::Envelope) -> Event {
    Event {
        id: e.id.to_string(),
        ty: e.ty.clone(),
        key: e.key.clone(),
        payload: e.payload.clone(),
        source: e.source.to_string(),
        attempt: e.attempt,
    }
}

/// Runs `event` on `member` (`None`: it does not run here): what it
/// emitted, or why it did not complete.
pub(crate) fn run_event(
    member: Option<&Member>,
    event: &Event,
) -> Result<Vec<omega_runtime::Emitted>, omega_gossip::events::ProcessError> {
    use omega_gossip::events::ProcessError;
    match member.map(|m| m.handle(event)) {
        Some(Some(Ok(emitted))) => Ok(emitted),
        Some(Some(Err(e))) => Err(ProcessError::Failed(e.to_string())),
        Some(None) => Err(ProcessError::Failed(
            "an HTTP brane takes requests, not events".into(),
        )),
        None => Err(ProcessError::NotRunning),
    }
}

/// The runtime's emits as the delivery machine takes them.
pub(crate) fn emits(emitted: Vec<omega_runtime::Emitted>) -> Vec<omega_gossip::events::Emit> {
    emitted
        .into_iter()
        .map(|e| omega_gossip::events::Emit {
            ty: e.ty,
            key: e.key,
            payload: e.payload,
        })
        .collect()
}

/// Starts one brane and installs it; `Ok` carries its URL if it serves HTTP.
async fn begin(ctx: &Arc<Ctx>, s: StartBrane) -> Result<Started, String> {
    let member = start(ctx, &s).await?;
    let mut started = Started::default();
    let mut http = None;
    if let Member::Http(brane) = &member {
        let (url, stop) =
            serve(brane.clone()).map_err(|e| format!("cannot listen on loopback: {e}"))?;
        started.url = Some(url);
        http = Some(stop);
    }
    let running = Running {
        attempt: s.attempt,
        member: Arc::new(member),
        _http: http,
    };
    if let Some(old) = ctx.shared.local.install(s.key.clone(), running) {
        stop(old.member, s.key.brane);
    }
    Ok(started)
}

/// Stops a removed brane: a frontier brane's VM is shut down (on a blocking
/// thread: it waits for QEMU to exit) once nothing else holds it.
fn stop(member: Arc<Member>, name: String) {
    if !matches!(member.as_ref(), Member::Frontier(_)) {
        return;
    }
    tokio::task::spawn_blocking(move || shutdown(member, &name));
}

fn shutdown(member: Arc<Member>, name: &str) {
    // A delivery in flight holds a clone; its drop then stops the VM.
    if let Ok(Member::Frontier(vm)) = Arc::try_unwrap(member)
        && let Ok(vm) = vm.into_inner()
    {
        match vm.shutdown() {
            Ok(()) => info!(brane = name, "microVM stopped"),
            Err(e) => warn!(brane = name, "stopping the microVM: {e}"),
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

/// Runs `work` on the blocking pool; a panic in it is an error, not a
/// silent death.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("the start task failed: {e}"))?
}

/// Resolves, fetches, compiles and prepares one brane.
async fn start(ctx: &Arc<Ctx>, s: &StartBrane) -> Result<Member, String> {
    let b = &s.brane;
    if b.capability == Capability::Frontier {
        return start_frontier(ctx, s).await;
    }
    let source = s.image.as_ref().ok_or("the brane names no image")?;
    let text = source.reference.to_string();
    let store = ImageStore::open(ctx.data_dir.join("images")).map_err(|e| e.to_string())?;
    let content: ContentId = match source.content {
        Some(c) => c,
        None => text
            .parse::<ImageRef>()
            .ok()
            .and_then(|r| store.resolve(&r).ok())
            .ok_or_else(|| {
                format!("no image record for {text} (omega image push FILE --name {text})")
            })?,
    };
    let bytes = match store.get(&content) {
        Ok(b) => b,
        Err(_) => fetch(&ctx.node, &s.sources, content).await?,
    };
    let ctx2 = ctx.clone();
    let (name, brane, edges) = (s.key.brane.clone(), b.clone(), s.edges.clone());
    let (manifest, router) = (s.key.manifest.clone(), ctx.shared.router.get().cloned());
    blocking(move || {
        let rt = ctx2
            .runtime
            .get_or_init(|| {
                Runtime::new(RuntimeConfig {
                    cache_dir: Some(ctx2.data_dir.join("cache")),
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
        let edges: Vec<omega_runtime::Edge> = edges.iter().map(omega_runtime::Edge::from).collect();
        let mut spec = spec(&name, &brane, &edges);
        spec.manifest = manifest;
        spec.router = router;
        let log: omega_runtime::LogSink = Arc::new(move |brane: &str, level, msg: &str| {
            tracing::info!(brane, ?level, "{msg}");
        });
        if brane.http {
            rt.http_brane(&image, spec, log)
                .map(|b| Member::Http(Arc::new(b)))
                .map_err(|e| e.to_string())
        } else {
            rt.brane(&image, spec, log)
                .map(Member::Standard)
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// Resolves a frontier brane's guest in this node's guest store and boots
/// its microVM (on a blocking thread: seconds under TCG).
async fn start_frontier(ctx: &Ctx, s: &StartBrane) -> Result<Member, String> {
    let backend = ctx.frontier.clone()?;
    let (name, b, data_dir) = (s.key.brane.clone(), s.brane.clone(), ctx.data_dir.clone());
    let edges: Vec<omega_runtime::Edge> = s.edges.iter().map(omega_runtime::Edge::from).collect();
    let emits = emits_of(&edges, &name);
    blocking(move || {
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
        Ok(Member::Frontier(Mutex::new(Box::new(vm))))
    })
    .await
}

fn spec(name: &str, b: &omega_zgraph::Brane, edges: &[omega_runtime::Edge]) -> BraneSpec {
    BraneSpec {
        name: name.into(),
        config: b.config.clone(),
        limits: BraneLimits::from_manifest(&b.limits),
        grants: Grants::default().with_manifest(&b.grants),
        emits: Some(emits_of(edges, name)),
        ..BraneSpec::default()
    }
}

/// Fetches image `content` from the first of `sources` that has it.
async fn fetch(
    node: &NodeHandle,
    sources: &[NodeId],
    content: ContentId,
) -> Result<Vec<u8>, String> {
    let mut last = "no member to fetch it from".to_string();
    'peers: for peer in sources.iter().take(MAX_SOURCES) {
        let mut got: Vec<u8> = Vec::new();
        loop {
            let request = ImageRequest {
                content,
                offset: got.len() as u64,
            };
            let r = node
                .fetch_chunk(*peer, request)
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
                Err(e @ (FetchError::NotReady(_) | FetchError::NoAnswer { .. })) => {
                    last = e.to_string();
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
