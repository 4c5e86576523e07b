//! The node's side of `omega-resolvers`: the mesh directory the gateway
//! and brane calls route with, libp2p streams for `/omega/http/1`, the
//! gateway server (`--gateway ADDR`), and the resolver drivers.
//!
//! The directory is a snapshot of the node's view, refreshed every
//! [`REFRESH`]: resolver hosts (and the public hosts their tunnels
//! report) → brane; brane → the members whose status says its HTTP
//! replica runs; the admitted members; every brane's `grants.call`.
//! Replicas on this node come from the runner's table at request time.
//!
//! Resolvers: on a node with a gateway, every `[resolver.NAME]` whose
//! brane has a running replica somewhere is exposed with its driver; a
//! resolver whose brane has none, or that left the manifest, is removed
//! (the node stops advertising itself as its entry). A failed exposure is
//! retried every [`RETRY`]. What each resolver's tunnel reports is in
//! `omega ps`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use omega_gossip::node::{BraneKey, View};
use omega_p2p::NodeHandle;
use omega_p2p::behaviour::HTTP_PROTOCOL;
use omega_resolvers::route::{BoxError, BoxFuture, Io};
use omega_resolvers::{
    Body, BraneName, Client, Dialer, Directory, DriversConfig, Exposure, Forwarder, Gateway,
    Limits, LocalBrane, MeshLimits, Replica, Tunnel, TunnelState,
};
use omega_runtime::{BraneCalls, CallFuture, CallTarget, HttpBrane};
use tokio_util::compat::FuturesAsyncReadCompatExt as _;
use tracing::{info, warn};

use super::runner::Shared;
use crate::api::ResolverRow;

/// How often the directory snapshot is rebuilt from the node's view.
pub const REFRESH: Duration = Duration::from_millis(500);
/// How long a failed exposure waits before it is tried again.
pub const RETRY: Duration = Duration::from_secs(10);
/// Most `/omega/http/1` streams served at once.
pub const MAX_SERVED_STREAMS: usize = 512;

#[derive(Default)]
struct Snapshot {
    hosts: HashMap<String, BraneName>,
    remote: HashMap<BraneName, Vec<String>>,
    members: HashSet<String>,
    calls: HashMap<BraneName, Vec<String>>,
    public: HashSet<BraneName>,
    /// (manifest, resolver) → (host, mode, brane).
    resolvers: BTreeMap<(String, String), (String, omega_zgraph::ResolverMode, String)>,
}

/// The node's [`Directory`].
pub struct MeshDirectory {
    shared: Arc<Shared>,
    snap: RwLock<Snapshot>,
    /// Public hosts reported by this node's tunnels → brane.
    aliases: Mutex<HashMap<String, BraneName>>,
}

impl MeshDirectory {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            snap: RwLock::new(Snapshot::default()),
            aliases: Mutex::new(HashMap::new()),
        }
    }

    fn refresh(&self, view: &View) {
        let mut s = Snapshot::default();
        for m in &view.manifests {
            for (name, b) in m.plan.branes() {
                if !b.grants.call.is_empty() {
                    s.calls
                        .insert(BraneName::new(&m.name, name), b.grants.call.clone());
                }
            }
            for (name, r) in m.plan.resolvers() {
                let brane = BraneName::new(&m.name, &r.brane);
                s.hosts.insert(r.host.to_ascii_lowercase(), brane.clone());
                s.public.insert(brane);
                s.resolvers.insert(
                    (m.name.clone(), name.clone()),
                    (r.host.clone(), r.mode, r.brane.clone()),
                );
            }
        }
        for c in &view.members {
            if let Some(p) = omega_p2p::keys::peer_id(&c.id) {
                s.members.insert(p.to_string());
            }
        }
        for (node, status) in &view.statuses {
            if *node == view.me {
                continue;
            }
            let Some(peer) = omega_p2p::keys::peer_id(node) else {
                continue;
            };
            for b in &status.branes {
                let running = matches!(b.state, omega_gossip::node::BraneState::Running);
                if running && b.url.is_some() {
                    s.remote
                        .entry(BraneName::new(&b.manifest, &b.brane))
                        .or_default()
                        .push(peer.to_string());
                }
            }
        }
        if let Ok(mut snap) = self.snap.write() {
            *snap = s;
        }
    }

    fn local(&self, brane: &BraneName) -> Option<Arc<HttpBrane>> {
        self.shared.local.http(&BraneKey {
            manifest: brane.manifest.clone(),
            brane: brane.brane.clone(),
        })
    }

    /// Whether `brane` has a running replica anywhere.
    fn healthy(&self, brane: &BraneName) -> bool {
        self.local(brane).is_some()
            || self
                .snap
                .read()
                .is_ok_and(|s| s.remote.get(brane).is_some_and(|r| !r.is_empty()))
    }
}

impl Directory for MeshDirectory {
    fn host(&self, host: &str) -> Option<BraneName> {
        if let Some(b) = self.snap.read().ok()?.hosts.get(host) {
            return Some(b.clone());
        }
        self.aliases.lock().ok()?.get(host).cloned()
    }

    fn replicas(&self, brane: &BraneName) -> Vec<Replica> {
        let mut out = Vec::new();
        if let Some(b) = self.local(brane) {
            out.push(Replica::Local(Arc::new(LocalHttp(b))));
        }
        if let Ok(s) = self.snap.read()
            && let Some(r) = s.remote.get(brane)
        {
            out.extend(r.iter().cloned().map(Replica::Remote));
        }
        out
    }

    fn admits(&self, peer: &str) -> bool {
        self.snap.read().is_ok_and(|s| s.members.contains(peer))
    }

    fn authorize(&self, caller: Option<&BraneName>, target: &BraneName) -> Result<(), String> {
        let s = self
            .snap
            .read()
            .map_err(|_| "directory unavailable".to_string())?;
        match caller {
            None if s.public.contains(target) => Ok(()),
            None => Err(format!("no resolver routes to brane {target}")),
            Some(c) => {
                let t = CallTarget {
                    manifest: Some(target.manifest.clone()),
                    brane: target.brane.clone(),
                };
                let calls = s.calls.get(c).map(Vec::as_slice).unwrap_or_default();
                if t.granted(&c.manifest, calls) {
                    Ok(())
                } else {
                    Err(format!(
                        "brane {c} is not granted calls to {target} by this node's copy of its manifest"
                    ))
                }
            }
        }
    }
}

/// An HTTP brane replica on this node.
struct LocalHttp(Arc<HttpBrane>);

/// A body error as a `std::error::Error` (a boxed one is not).
#[derive(Debug)]
struct BodyError(BoxError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BodyError {}

impl LocalBrane for LocalHttp {
    fn handle(&self, request: http::Request<Body>) -> BoxFuture<http::Response<Body>> {
        let brane = self.0.clone();
        Box::pin(async move {
            let req = request.map(|b| b.map_err(BodyError));
            brane
                .handle(req)
                .await
                .map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync())
        })
    }
}

/// Opens `/omega/http/1` streams with libp2p.
struct StreamDialer(libp2p_stream::Control);

impl Dialer for StreamDialer {
    fn open(&self, peer: &str) -> BoxFuture<std::io::Result<Box<dyn Io>>> {
        let mut control = self.0.clone();
        let peer = peer.parse::<libp2p::PeerId>();
        Box::pin(async move {
            let peer = peer.map_err(std::io::Error::other)?;
            let stream = control
                .open_stream(peer, HTTP_PROTOCOL)
                .await
                .map_err(std::io::Error::other)?;
            Ok(Box::new(stream.compat()) as Box<dyn Io>)
        })
    }
}

/// Brane calls by name, through the same forwarder as the gateway.
struct MeshCalls {
    forwarder: Arc<Forwarder>,
    runtime: tokio::runtime::Handle,
}

impl BraneCalls for MeshCalls {
    fn call(
        &self,
        manifest: &str,
        caller: &str,
        target: CallTarget,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
    ) -> CallFuture {
        let forwarder = self.forwarder.clone();
        let caller = BraneName::new(manifest, caller);
        let target = BraneName::new(
            target.manifest.unwrap_or_else(|| manifest.to_owned()),
            target.brane,
        );
        let req = request.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync());
        // Run on the daemon's runtime (the guest's thread only waits).
        let task = self
            .runtime
            .spawn(async move { forwarder.forward(&target, Some(&caller), req).await });
        Box::pin(async move {
            let resp = task.await.map_err(|e| {
                wasmtime_wasi_http::Error::InternalError(Some(format!("brane call: {e}")))
            })?;
            Ok(resp.map(|b| {
                b.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
                    .boxed_unsync()
            }))
        })
    }
}

/// What the daemon starts: the directory refresher, the stream acceptor,
/// the call router and, with `gateway`, the gateway and the resolvers.
pub fn start(
    node: &NodeHandle,
    shared: &Arc<Shared>,
    gateway: Option<std::net::TcpListener>,
    drivers: DriversConfig,
) -> std::io::Result<Option<SocketAddr>> {
    let dir = Arc::new(MeshDirectory::new(shared.clone()));
    let control = node.streams();
    let client = Client::new(
        Arc::new(StreamDialer(control.clone())),
        MeshLimits::default(),
    );
    let forwarder = Arc::new(Forwarder::new(dir.clone(), client, Limits::default()));
    let _ = shared
        .router
        .set(omega_runtime::CallRouter(Arc::new(MeshCalls {
            forwarder: forwarder.clone(),
            runtime: tokio::runtime::Handle::current(),
        })));
    tokio::spawn(refresh(node.clone(), dir.clone()));
    tokio::spawn(accept(control, dir.clone()));
    let Some(listener) = gateway else {
        return Ok(None);
    };
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let gw = Arc::new(Gateway::new(forwarder, Limits::default()));
    tokio::spawn(async move {
        if let Err(e) = gw.serve(listener, std::future::pending()).await {
            warn!("gateway: {e}");
        }
    });
    info!(%addr, "gateway listening");
    tokio::spawn(resolvers(dir, shared.clone(), addr, drivers));
    Ok(Some(addr))
}

async fn refresh(node: NodeHandle, dir: Arc<MeshDirectory>) {
    let mut tick = tokio::time::interval(REFRESH);
    loop {
        tick.tick().await;
        let Some(view) = node.view().await else {
            return;
        };
        dir.refresh(&view);
    }
}

async fn accept(mut control: libp2p_stream::Control, dir: Arc<MeshDirectory>) {
    let mut incoming = match control.accept(HTTP_PROTOCOL) {
        Ok(i) => i,
        Err(e) => {
            warn!("cannot accept {HTTP_PROTOCOL} streams: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SERVED_STREAMS));
    while let Some((peer, stream)) = incoming.next().await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(%peer, "refused an http stream: {MAX_SERVED_STREAMS} are open");
            continue;
        };
        let dir: Arc<dyn Directory> = dir.clone();
        tokio::spawn(async move {
            omega_resolvers::mesh::serve(
                Box::new(stream.compat()),
                peer.to_string(),
                dir,
                MeshLimits::default(),
            )
            .await;
            drop(slot);
        });
    }
}

struct Exposed {
    tunnel: Option<Box<dyn Tunnel>>,
    /// When and why the last exposure failed.
    failed: Option<(Instant, String)>,
}

/// Keeps every healthy resolver exposed and the others removed; publishes
/// their state for `omega ps`.
async fn resolvers(
    dir: Arc<MeshDirectory>,
    shared: Arc<Shared>,
    gateway: SocketAddr,
    drivers: DriversConfig,
) {
    let mut exposed: BTreeMap<(String, String), Exposed> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let wanted: BTreeMap<_, _> = match dir.snap.read() {
            Ok(s) => s.resolvers.clone(),
            Err(_) => continue,
        };
        let mut rows = Vec::new();
        // Remove what left the manifest or lost every replica.
        let gone: Vec<_> = exposed
            .keys()
            .filter(|k| {
                wanted
                    .get(*k)
                    .is_none_or(|(_, _, b)| !dir.healthy(&BraneName::new(&k.0, b)))
            })
            .cloned()
            .collect();
        for key in gone {
            if let Some(e) = exposed.remove(&key)
                && let Some(t) = e.tunnel
            {
                let url = t.watch().borrow().url().map(str::to_owned);
                match t.remove().await {
                    Ok(()) => info!(manifest = %key.0, resolver = %key.1, "resolver removed"),
                    Err(err) => {
                        warn!(manifest = %key.0, resolver = %key.1, "removing the resolver: {err}")
                    }
                }
                if let (Some(url), Ok(mut a)) = (url, dir.aliases.lock()) {
                    a.remove(&public_host(&url));
                }
            }
        }
        for ((manifest, name), (host, mode, brane)) in &wanted {
            let key = (manifest.clone(), name.clone());
            let target = BraneName::new(manifest, brane);
            let healthy = dir.healthy(&target);
            let mut row = ResolverRow {
                manifest: manifest.clone(),
                resolver: name.clone(),
                host: host.clone(),
                mode: mode.to_string(),
                brane: brane.clone(),
                entry: healthy,
                state: "waiting for a running replica".into(),
                url: None,
            };
            if healthy {
                let retry = exposed.get(&key).is_none_or(|e| {
                    e.tunnel.is_none()
                        && e.failed.as_ref().is_none_or(|(t, _)| t.elapsed() >= RETRY)
                });
                if retry {
                    let driver = omega_resolvers::driver::driver(*mode, &drivers);
                    let exposure = Exposure {
                        resolver: name.clone(),
                        manifest: manifest.clone(),
                        host: host.clone(),
                        gateway,
                    };
                    let e = match driver.expose(&exposure).await {
                        Ok(t) => {
                            info!(%manifest, resolver = %name, "resolver exposed: {}", *t.watch().borrow());
                            Exposed {
                                tunnel: Some(t),
                                failed: None,
                            }
                        }
                        Err(err) => {
                            warn!(%manifest, resolver = %name, "exposing the resolver: {err}");
                            Exposed {
                                tunnel: None,
                                failed: Some((Instant::now(), err.to_string())),
                            }
                        }
                    };
                    exposed.insert(key.clone(), e);
                }
                if let Some(Exposed {
                    tunnel: Some(t), ..
                }) = exposed.get(&key)
                {
                    let state = t.watch().borrow().clone();
                    if let TunnelState::Up { url } = &state {
                        row.url = Some(url.clone());
                        if let Ok(mut a) = dir.aliases.lock() {
                            a.insert(public_host(url), target.clone());
                        }
                    }
                    row.state = state.to_string();
                } else if let Some(Exposed {
                    failed: Some((_, why)),
                    ..
                }) = exposed.get(&key)
                {
                    row.state = format!("failed (retried every {RETRY:?}): {why}");
                }
            }
            rows.push(row);
        }
        if let Ok(mut r) = shared.resolvers.lock() {
            *r = rows;
        }
    }
}

/// The host of a public URL (`https://HOST[:PORT]/…` → `host`).
fn public_host(url: &str) -> String {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_ascii_lowercase))
        .unwrap_or_default()
}
