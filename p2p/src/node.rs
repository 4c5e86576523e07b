//! The driver: one task that owns the swarm and the membership core.
//!
//! Every input (a swarm event, a timer, a discovery result, a local command)
//! is handed to its owner, then the core's outputs are drained: transmits go
//! out on `/omega/swim/1`, events update logs, metrics and connections.
//!
//! A peer is *admitted* once it has presented a valid join request on
//! `/omega/join/1` over an authenticated connection to this node. Until then
//! its membership messages are dropped and its gossipsub messages rejected; a
//! refused peer gets the reason in the response and is disconnected.
//! Membership records of members this node never met directly are accepted
//! when an admitted member relays them (each member checked the record's owner
//! on its own connection); the record's owner must still not be revoked, and
//! a node this node admitted must keep the substrate its token allowed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify, kad, mdns, noise, request_response, tcp, yamux,
};
use omega_gossip::desired::{
    Change, DesiredRecord, Refusal as DesiredRefusal, Revocation, WriteError,
};
use omega_gossip::{
    Admission, Candidate, Capabilities, DesiredState, Event, Hlc, LocalMember, MemberRecord,
    Membership, MeshId, NodeId, Profile, Resources, State, Substrate,
};
use omega_identity::chain::{ReplayGuard, RevocationSet, Validator, ValidatorConfig};
use omega_identity::ucan::{Invocation, Signed};
use omega_identity::{Did, Ipld, Keypair};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, BehaviourEvent, NetConfig};
use crate::discovery::{AddressBook, AddressBookConfig, Discovery, Found};
use crate::dispatch::{
    BlobSource, DesiredStore, DesiredView, DispatchConfig, DispatchStats, ImageRequest,
    ImageResponse, NodeStatus,
};
use crate::join::{
    Admitted, Admitter, JoinError, JoinRequest, JoinResponse, JoinToken, substrate_name, truncate,
};
use crate::keys;

/// The command a revocation invocation invokes.
pub const REVOKE_COMMAND: &str = "/mesh/revoke";

/// Everything a node needs to run.
pub struct NodeConfig {
    /// The node key (its DID, NodeId and PeerId).
    pub key: Keypair,
    /// The join token; `None` makes a node every member refuses.
    pub token: Option<JoinToken>,
    /// The node name.
    pub name: String,
    /// The substrate it declares.
    pub substrate: Substrate,
    /// The capability profiles it runs.
    pub capabilities: Capabilities,
    /// What it offers.
    pub resources: Resources,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Polled discovery providers.
    pub providers: Vec<Box<dyn Discovery>>,
    /// How often providers are polled and candidate addresses dialed. Default 5 s.
    pub discovery_interval: Duration,
    /// The membership core's configuration (its `mesh` is overwritten with the token's).
    pub gossip: Option<omega_gossip::Config>,
    /// libp2p limits and switches.
    pub net: NetConfig,
    /// Address book limits.
    pub address_book: AddressBookConfig,
    /// Driver queue limits.
    pub limits: DriverLimits,
    /// Revocations (signed `/mesh/revoke` invocations) to apply at start.
    pub revocations: Vec<Vec<u8>>,
    /// A file applied revocations are appended to (base64, one a line).
    pub revocation_log: Option<std::path::PathBuf>,
    /// Where libp2p and Omega metrics are registered (`None`: no metrics).
    pub registry: Option<Registry>,
    /// The desired-state document, its storage, image serving, and limits.
    pub dispatch: DispatchConfig,
}

/// Bounds of the driver's own queues and tables.
#[derive(Debug, Clone, Copy)]
pub struct DriverLimits {
    /// Most peers with membership messages queued while their connection is
    /// set up. Default 256; transmits to further peers are dropped.
    pub max_pending_peers: usize,
    /// Most messages queued per such peer. Default 32; the oldest is dropped.
    pub max_pending_per_peer: usize,
    /// Misbehaviour strikes before a peer is disconnected. Default 3.
    pub max_strikes: u32,
    /// Most recent refusals kept for `status`. Default 32.
    pub max_refusal_log: usize,
    /// Most invocations remembered against replay. Default 4096.
    pub max_replay: usize,
    /// Capacity of the command channel. Default 64.
    pub command_queue: usize,
}

impl Default for DriverLimits {
    fn default() -> Self {
        Self {
            max_pending_peers: 256,
            max_pending_per_peer: 32,
            max_strikes: 3,
            max_refusal_log: 32,
            max_replay: 4096,
            command_queue: 64,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The transport or behaviour could not be built.
    #[error("libp2p: {0}")]
    Build(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {message}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        message: String,
    },
    /// The membership core refused the configuration or profile.
    #[error("membership: {0}")]
    Membership(#[from] omega_gossip::CommandError),
    /// The join token could not be used.
    #[error("join token: {0}")]
    Join(#[from] Box<JoinError>),
}

/// One member as `omega peers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    /// `did:key`.
    pub did: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// Node name.
    pub name: String,
    /// `gaia`, `biome` or `habitat`.
    pub substrate: String,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// Whether a connection to it is open now.
    pub connected: bool,
    /// Its advertised addresses.
    pub addresses: Vec<String>,
}

/// A refusal, as `omega status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalReport {
    /// The peer.
    pub peer: String,
    /// `inbound` (we refused it) or `outbound` (it refused us).
    pub direction: &'static str,
    /// Why.
    pub reason: String,
}

/// `omega status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// This node's DID.
    pub did: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// Node name.
    pub name: String,
    /// Substrate.
    pub substrate: String,
    /// The mesh root DID.
    pub mesh: String,
    /// Current incarnation.
    pub incarnation: u64,
    /// Whether a member answered our join.
    pub joined: bool,
    /// Listen addresses (with `/p2p/PEER`).
    pub listen: Vec<String>,
    /// Members alive or suspect (not counting this node).
    pub live_members: usize,
    /// Open connections.
    pub connections: usize,
    /// Peers in the Kademlia routing table (admitted members only).
    pub kad_peers: usize,
    /// Milliseconds from start to the first admission by a member, if any.
    pub admitted_after_ms: Option<u64>,
    /// Membership bytes sent.
    pub swim_bytes_sent: u64,
    /// Membership bytes received.
    pub swim_bytes_received: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Recent refusals.
    pub refusals: Vec<RefusalReport>,
    /// Desired-state and status traffic.
    pub dispatch: DispatchStats,
}

/// Requests to a running node.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Report the node's status.
    Status(oneshot::Sender<StatusReport>),
    /// Report members.
    Peers(oneshot::Sender<Vec<PeerReport>>),
    /// Apply and spread a revocation (a root-signed `/mesh/revoke` invocation).
    Revoke(Vec<u8>, oneshot::Sender<Result<String, String>>),
    /// Metrics in Prometheus text format (empty without a registry).
    Metrics(oneshot::Sender<String>),
    /// Leave gracefully and stop.
    Shutdown(oneshot::Sender<()>),
    /// A snapshot of the desired state, members and statuses.
    Desired(oneshot::Sender<DesiredView>),
    /// A fresh HLC timestamp for a record about to be signed.
    Tick(oneshot::Sender<Hlc>),
    /// Verify, store, apply and announce an encoded [`DesiredRecord`].
    Write(Vec<u8>, oneshot::Sender<Result<(), String>>),
    /// Announce this node's actual state.
    PublishStatus(NodeStatus),
    /// Ask `peer` for one chunk of an image.
    ImageChunk {
        /// The peer.
        peer: PeerId,
        /// What to ask.
        request: ImageRequest,
        /// Its answer, or why there is none.
        reply: oneshot::Sender<Result<ImageResponse, String>>,
    },
}

/// A handle to a running node.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    changes: watch::Receiver<u64>,
}

impl NodeHandle {
    /// A receiver that changes whenever the desired state, membership or a
    /// node's status does (the value is a generation counter).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Sends a command that has no reply; false if the node stopped.
    pub async fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// Sends a command; `None` if the node stopped.
    pub async fn request<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Admission as the membership core sees it: revoked nodes never, and a node
/// this node admitted only with the substrate its token allowed.
#[derive(Debug, Default)]
struct SharedAdmission {
    revoked: HashSet<NodeId>,
    substrates: HashMap<NodeId, Substrate>,
}

#[derive(Debug, Clone, Default)]
struct AdmissionView(Arc<Mutex<SharedAdmission>>);

impl Admission for AdmissionView {
    fn is_admitted(&self, record: &MemberRecord) -> bool {
        let Ok(a) = self.0.lock() else { return false };
        if a.revoked.contains(&record.id) {
            return false;
        }
        a.substrates
            .get(&record.id)
            .is_none_or(|s| *s == record.profile.substrate)
    }
}

struct Metrics {
    refusals: Counter,
    swim_sent: Counter,
    swim_received: Counter,
    members_live: Gauge,
    connections: Gauge,
    p2p: libp2p::metrics::Metrics,
}

impl Metrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self {
            refusals: Counter::default(),
            swim_sent: Counter::default(),
            swim_received: Counter::default(),
            members_live: Gauge::default(),
            connections: Gauge::default(),
            p2p: libp2p::metrics::Metrics::new(registry),
        };
        let r = registry.sub_registry_with_prefix("omega");
        r.register(
            "admission_refusals",
            "Join requests refused, both directions",
            m.refusals.clone(),
        );
        r.register(
            "swim_bytes_sent",
            "Membership bytes sent",
            m.swim_sent.clone(),
        );
        r.register(
            "swim_bytes_received",
            "Membership bytes received",
            m.swim_received.clone(),
        );
        r.register(
            "members_live",
            "Members alive or suspect, not counting this node",
            m.members_live.clone(),
        );
        r.register("connections", "Open connections", m.connections.clone());
        m
    }
}

/// The running node.
struct Driver {
    swarm: Swarm<Behaviour>,
    membership: Membership,
    admission: AdmissionView,
    admitter: Admitter,
    token: Option<JoinToken>,
    key: Keypair,
    name: String,
    substrate: Substrate,
    topic: gossipsub::IdentTopic,
    book: AddressBook,
    limits: DriverLimits,
    start: Instant,
    admitted: HashMap<PeerId, Admitted>,
    /// Peers that admitted this node (answered our join request with ok):
    /// requests go only to peers in both `admitted` and here.
    accepted_by: HashSet<PeerId>,
    join_sent: HashSet<PeerId>,
    pending: BTreeMap<PeerId, VecDeque<Vec<u8>>>,
    strikes: HashMap<PeerId, u32>,
    connections: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    conn_since: HashMap<ConnectionId, Instant>,
    closing: VecDeque<(Instant, PeerId)>,
    refusals: VecDeque<RefusalReport>,
    admitted_after: Option<Duration>,
    listen: Vec<Multiaddr>,
    revocations: RevocationSet,
    revoke_seen: ReplayGuard,
    metrics: Option<Metrics>,
    registry: Option<Registry>,
    revocation_log: Option<std::path::PathBuf>,
    profile: Profile,
    desired: DesiredState,
    dx: Dispatch,
}

/// The driver's dispatch state (see [`crate::dispatch`]).
struct Dispatch {
    state_topic: gossipsub::IdentTopic,
    status_topic: gossipsub::IdentTopic,
    store: Option<Box<dyn DesiredStore>>,
    blobs: Option<Arc<dyn BlobSource>>,
    anti_entropy_interval: Duration,
    max_updates_per_peer_per_sec: u32,
    compact_every: u32,
    image_chunk: usize,
    max_status_bytes: usize,
    status_republish: Duration,
    since_compact: u32,
    statuses: HashMap<NodeId, NodeStatus>,
    own_status: Option<(NodeStatus, Instant)>,
    refusals: VecDeque<RefusalReport>,
    changes: watch::Sender<u64>,
    chunk_waiters: HashMap<OutboundRequestId, oneshot::Sender<Result<ImageResponse, String>>>,
    rates: HashMap<PeerId, (Instant, u32)>,
    stats: DispatchStats,
    max_gossip: usize,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS random source failing is not recoverable; fall back to time so
    // the node still runs (nonces need uniqueness, not secrecy).
    if getrandom::fill(&mut b).is_err() {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8;
        }
    }
    b
}

/// Starts a node; returns its handle and the task running it.
pub fn spawn(cfg: NodeConfig) -> Result<(NodeHandle, tokio::task::JoinHandle<()>), NodeError> {
    let (tx, rx) = mpsc::channel(cfg.limits.command_queue);
    let (found_tx, found_rx) = mpsc::channel(16);
    let interval = cfg.discovery_interval;
    let mut providers = Vec::new();
    let mut cfg = cfg;
    std::mem::swap(&mut providers, &mut cfg.providers);
    let driver = Driver::new(cfg)?;
    let changes = driver.dx.changes.subscribe();
    tokio::spawn(discovery_task(providers, interval, found_tx));
    let task = tokio::spawn(driver.run(rx, found_rx));
    Ok((NodeHandle { tx, changes }, task))
}

async fn discovery_task(
    mut providers: Vec<Box<dyn Discovery>>,
    interval: Duration,
    tx: mpsc::Sender<Vec<Found>>,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        for p in &mut providers {
            match p.discover().await {
                Ok(found) => {
                    debug!(provider = p.name(), count = found.len(), "discovery round");
                    if tx.send(found).await.is_err() {
                        return;
                    }
                }
                Err(e) => debug!(provider = p.name(), "discovery failed: {e}"),
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

impl Driver {
    fn new(mut cfg: NodeConfig) -> Result<Self, NodeError> {
        let lp_key = keys::libp2p_keypair(&cfg.key);
        let mesh_root: Did = cfg.token.as_ref().map_or_else(|| cfg.key.did(), |t| t.mesh);
        let mesh = MeshId::from_root(&mesh_root);
        let topic = gossipsub::IdentTopic::new(format!("omega/{mesh}/announce/1"));
        let state_topic = gossipsub::IdentTopic::new(format!("omega/{mesh}/state/1"));
        let status_topic = gossipsub::IdentTopic::new(format!("omega/{mesh}/status/1"));
        let mut registry = cfg.registry.take();
        let metrics = registry.as_mut().map(Metrics::new);
        let net = cfg.net.clone();
        let build = |e: &dyn std::fmt::Display| NodeError::Build(e.to_string());
        let builder = libp2p::SwarmBuilder::with_existing_identity(lp_key.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| build(&e))?
            .with_quic();
        let behaviour = |key: &libp2p::identity::Keypair| {
            Behaviour::new(key, &net, &[&topic, &state_topic, &status_topic])
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        };
        let mut swarm = match registry.as_mut() {
            Some(r) => builder
                .with_bandwidth_metrics(r)
                .with_behaviour(behaviour)
                .map_err(|e| build(&e))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(net.idle_connection_timeout))
                .build(),
            None => builder
                .with_behaviour(behaviour)
                .map_err(|e| build(&e))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(net.idle_connection_timeout))
                .build(),
        };
        for addr in &cfg.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.clone(),
                    message: e.to_string(),
                })?;
        }
        let mut gcfg = cfg
            .gossip
            .take()
            .unwrap_or_else(|| omega_gossip::Config::new(mesh));
        gcfg.mesh = mesh;
        let admission = AdmissionView::default();
        let profile = Profile {
            name: cfg.name.clone(),
            substrate: cfg.substrate,
            capabilities: cfg.capabilities,
            resources: cfg.resources,
            addresses: Vec::new(),
        };
        // Incarnations start from the wall clock in milliseconds, so a node
        // restarted after `kill -9` always comes back above its old self.
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let membership = Membership::new(
            gcfg,
            LocalMember {
                keypair: cfg.key.clone(),
                profile: profile.clone(),
                incarnation,
            },
            Box::new(admission.clone()),
            random::<32>(),
            0,
        )?;
        let dcfg = std::mem::take(&mut cfg.dispatch);
        let desired = DesiredState::new(mesh_root, dcfg.desired)
            .map_err(|e| NodeError::Build(format!("desired state: {e}")))?;
        let dx = Dispatch {
            state_topic,
            status_topic,
            store: dcfg.store,
            blobs: dcfg.blobs,
            anti_entropy_interval: dcfg.anti_entropy_interval,
            max_updates_per_peer_per_sec: dcfg.max_updates_per_peer_per_sec,
            compact_every: dcfg.compact_every.max(1),
            image_chunk: dcfg
                .image_chunk
                .min(net.max_image_message.saturating_sub(64)),
            max_status_bytes: dcfg.max_status_bytes,
            status_republish: dcfg.status_republish,
            since_compact: 0,
            statuses: HashMap::new(),
            own_status: None,
            refusals: VecDeque::new(),
            changes: watch::Sender::new(0),
            chunk_waiters: HashMap::new(),
            rates: HashMap::new(),
            stats: DispatchStats::default(),
            max_gossip: net.max_gossipsub_message,
        };
        let initial = dcfg.initial;
        let mut driver = Self {
            swarm,
            membership,
            admission,
            admitter: Admitter::new(mesh_root, cfg.limits.max_replay),
            token: cfg.token,
            key: cfg.key,
            name: cfg.name,
            substrate: cfg.substrate,
            topic,
            book: AddressBook::new(cfg.address_book),
            limits: cfg.limits,
            start: Instant::now(),
            admitted: HashMap::new(),
            accepted_by: HashSet::new(),
            join_sent: HashSet::new(),
            pending: BTreeMap::new(),
            strikes: HashMap::new(),
            connections: HashMap::new(),
            conn_since: HashMap::new(),
            closing: VecDeque::new(),
            refusals: VecDeque::new(),
            admitted_after: None,
            listen: Vec::new(),
            revocations: RevocationSet::new(),
            revoke_seen: ReplayGuard::new(cfg.limits.max_replay),
            metrics,
            registry,
            revocation_log: None,
            profile,
            desired,
            dx,
        };
        driver.load_desired(initial);
        for r in cfg.revocations {
            if let Err(e) = driver.apply_revocation(&r, false) {
                warn!("stored revocation not applied: {e}");
            }
        }
        driver.revocation_log = cfg.revocation_log;
        Ok(driver)
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut found: mpsc::Receiver<Vec<Found>>,
    ) {
        info!(did = %self.key.did(), peer = %self.swarm.local_peer_id(), name = %self.name, "node starting");
        let mut dial_tick = tokio::time::interval(Duration::from_millis(500));
        let mut ae_tick = tokio::time::interval(self.dx.anti_entropy_interval);
        loop {
            let wake = self.membership.poll_timeout().unwrap_or(u64::MAX / 2);
            let deadline = self.start + Duration::from_millis(wake.min(self.now_ms() + 60_000));
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                f = found.recv() => if let Some(f) = f {
                    for x in f { self.book.add(x.addr); }
                },
                _ = dial_tick.tick() => self.dial_candidates(),
                _ = ae_tick.tick() => {
                    self.anti_entropy(None);
                    self.republish_status();
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = self.now_ms();
                    self.membership.handle_timeout(now);
                }
            }
            self.drain();
        }
    }

    async fn shutdown(&mut self) {
        info!("leaving the mesh");
        let now = self.now_ms();
        self.membership.leave(now);
        self.drain();
        // Give the leave messages a moment to go out; bounded.
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(ev) = tokio::time::timeout_at(until, self.swarm.select_next_some()).await {
            self.on_swarm(ev);
        }
    }

    fn dial_candidates(&mut self) {
        let now = Instant::now();
        while self.closing.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, peer)) = self.closing.pop_front()
                && !self.admitted.contains_key(&peer)
            {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
        let unjoined: Vec<PeerId> = self
            .connections
            .values()
            .map(|(p, _)| *p)
            .filter(|p| !self.join_sent.contains(p))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for peer in unjoined {
            self.on_connected(peer);
        }
        let me = *self.swarm.local_peer_id();
        let connected: HashSet<&Multiaddr> = self.connections.values().map(|(_, a)| a).collect();
        let mut todo = Vec::new();
        for addr in self.book.candidates() {
            match addr.iter().last() {
                Some(Protocol::P2p(p)) if p == me || self.swarm.is_connected(&p) => {}
                Some(Protocol::P2p(p)) => {
                    todo.push(DialOpts::peer_id(p).addresses(vec![addr.clone()]).build())
                }
                _ if connected.contains(addr) || self.listen.contains(addr) => {}
                _ => todo.push(DialOpts::unknown_peer_id().address(addr.clone()).build()),
            }
        }
        for opts in todo {
            if let Err(e) = self.swarm.dial(opts) {
                debug!("dial: {e}");
            }
        }
    }

    // ----- membership outputs ------------------------------------------------

    fn drain(&mut self) {
        while let Some(t) = self.membership.poll_transmit() {
            self.transmit(t.to, t.bytes);
        }
        while let Some(ev) = self.membership.poll_event() {
            self.on_membership(ev);
        }
        if let Some(m) = &self.metrics {
            m.members_live.set(self.membership.live_count() as i64);
        }
    }

    fn transmit(&mut self, to: NodeId, bytes: Vec<u8>) {
        let Some(peer) = keys::peer_id(&to) else {
            return;
        };
        if let Some(m) = &self.metrics {
            m.swim_sent.inc_by(bytes.len() as u64);
        }
        if self.ready(&peer) {
            self.swarm.behaviour_mut().swim.send_request(&peer, bytes);
            return;
        }
        // Not admitted here yet: connect, run admission, then flush.
        if !self.pending.contains_key(&peer) && self.pending.len() >= self.limits.max_pending_peers
        {
            return;
        }
        let q = self.pending.entry(peer).or_default();
        if q.len() >= self.limits.max_pending_per_peer {
            q.pop_front();
        }
        q.push_back(bytes);
        if !self.swarm.is_connected(&peer) {
            let mut addrs: Vec<Multiaddr> = self.book.addrs(&peer).to_vec();
            if let Some(m) = self.membership.member(&to) {
                addrs.extend(
                    m.record
                        .record
                        .profile
                        .addresses
                        .iter()
                        .filter_map(|a| a.parse().ok()),
                );
            }
            let opts = DialOpts::peer_id(peer).addresses(addrs).build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, "dial: {e}");
            }
        }
    }

    fn member_name(&self, id: &NodeId) -> String {
        self.membership
            .member(id)
            .map_or_else(|| id.to_string(), |m| m.record.record.profile.name.clone())
    }

    fn on_membership(&mut self, ev: Event) {
        if !matches!(ev, Event::Refused { .. }) {
            self.bump();
        }
        if let Event::Removed { id } | Event::Left { id } | Event::Dead { id } = &ev {
            self.dx.statuses.remove(id);
        }
        // A dead member's connection is dead too, though QUIC only notices at
        // its idle timeout: drop it now, so that when the member comes back
        // it meets a clean slate (requests and gossip on a fresh connection).
        if let Event::Dead { id } = &ev
            && let Some(p) = keys::peer_id(id)
        {
            let _ = self.swarm.disconnect_peer_id(p);
        }
        match ev {
            Event::Joined => info!("joined the mesh"),
            Event::Up { id } => info!(member = %self.member_name(&id), did = %id, "member up"),
            Event::Alive { id } => info!(member = %self.member_name(&id), "member alive again"),
            Event::Suspect { id } => info!(member = %self.member_name(&id), "member suspect"),
            Event::Dead { id } => info!(member = %self.member_name(&id), did = %id, "member dead"),
            Event::Left { id } => info!(member = %self.member_name(&id), "member left"),
            Event::Removed { id } => info!(did = %id, "member removed"),
            Event::Refused {
                peer,
                reason,
                penalty,
            } => {
                debug!(did = %peer, "membership input refused: {reason}");
                if penalty && let Some(p) = keys::peer_id(&peer) {
                    self.strike(p, &reason.to_string());
                }
            }
            _ => {}
        }
    }

    fn strike(&mut self, peer: PeerId, why: &str) {
        let n = self.strikes.entry(peer).or_default();
        *n += 1;
        warn!(%peer, strikes = *n, "peer misbehaved: {why}");
        if *n >= self.limits.max_strikes {
            warn!(%peer, "disconnecting misbehaving peer");
            self.strikes.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn log_refusal(&mut self, peer: PeerId, direction: &'static str, reason: String) {
        if let Some(m) = &self.metrics {
            m.refusals.inc();
        }
        if self.refusals.len() >= self.limits.max_refusal_log {
            self.refusals.pop_front();
        }
        self.refusals.push_back(RefusalReport {
            peer: keys::did(&peer).map_or_else(|| peer.to_string(), |d| d.to_string()),
            direction,
            reason,
        });
    }

    // ----- swarm ----------------------------------------------------------------

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = &self.metrics {
            libp2p::metrics::Recorder::record(&m.p2p, &ev);
        }
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen.push(address);
                self.publish_addresses();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                // A new connection next to one that has lived a while is a
                // restarted peer whose old connection still looks open here
                // (QUIC notices only at its idle timeout): requests would go
                // down the dead one and gossipsub would not announce our
                // topics on the new one. Drop the peer entirely; it redials
                // (and so do we), and everything starts afresh.
                let restarted = self.connections.iter().any(|(id, (p, _))| {
                    *p == peer_id
                        && self
                            .conn_since
                            .get(id)
                            .is_some_and(|t| t.elapsed() > Duration::from_secs(1))
                });
                self.connections.insert(connection_id, (peer_id, addr));
                self.conn_since.insert(connection_id, Instant::now());
                if restarted {
                    info!(%peer_id, "peer reconnected while an old connection looked open: resetting");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if let Some(m) = &self.metrics {
                    m.connections.set(self.connections.len() as i64);
                }
                self.on_connected(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.connections.remove(&connection_id);
                self.conn_since.remove(&connection_id);
                if let Some(m) = &self.metrics {
                    m.connections.set(self.connections.len() as i64);
                }
                if num_established == 0 {
                    self.dx.rates.remove(&peer_id);
                    self.accepted_by.remove(&peer_id);
                    self.admitted.remove(&peer_id);
                    self.strikes.remove(&peer_id);
                    self.join_sent.remove(&peer_id);
                    self.pending.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                debug!(%peer, "dial failed: {error}");
                self.pending.remove(&peer);
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            _ => {}
        }
    }

    fn publish_addresses(&mut self) {
        let max = self.membership.config().limits.max_addresses;
        let addrs: Vec<String> = self
            .listen
            .iter()
            .filter(|a| {
                !a.iter()
                    .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_unspecified()))
            })
            .take(max)
            .map(ToString::to_string)
            .collect();
        if addrs == self.profile.addresses {
            return;
        }
        self.profile.addresses = addrs;
        let now = self.now_ms();
        if let Err(e) = self.membership.update_profile(self.profile.clone(), now) {
            warn!("cannot publish addresses: {e}");
        }
    }

    fn on_connected(&mut self, peer: PeerId) {
        if keys::node_id(&peer).is_none() {
            warn!(%peer, "refused peer: its key is not Ed25519, so it cannot be an Omega node");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        if self.join_sent.insert(peer) {
            let req = match &self.token {
                Some(t) => t.invoke(
                    &self.key.did(),
                    &self.name,
                    self.substrate,
                    unix_now(),
                    random::<16>().to_vec(),
                ),
                None => Ok(JoinRequest::default()),
            };
            match req {
                Ok(req) => {
                    self.swarm
                        .behaviour_mut()
                        .join
                        .send_request(&peer, req.to_bytes());
                }
                Err(e) => warn!("cannot sign join request: {e}"),
            }
        }
    }

    fn on_behaviour(&mut self, ev: BehaviourEvent) {
        if let Some(m) = &self.metrics {
            match &ev {
                BehaviourEvent::Identify(e) => libp2p::metrics::Recorder::record(&m.p2p, e),
                BehaviourEvent::Ping(e) => libp2p::metrics::Recorder::record(&m.p2p, e),
                BehaviourEvent::Kad(e) => libp2p::metrics::Recorder::record(&m.p2p, e),
                BehaviourEvent::Gossipsub(e) => libp2p::metrics::Recorder::record(&m.p2p, e),
                _ => {}
            }
        }
        match ev {
            BehaviourEvent::Join(e) => self.on_join(e),
            BehaviourEvent::Swim(e) => self.on_swim(e),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for a in info.listen_addrs.into_iter().take(8) {
                    self.book.add_peer_addr(peer_id, a);
                }
                if self.admitted.contains_key(&peer_id) {
                    self.add_to_kad(peer_id);
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) => {
                for a in addresses.iter() {
                    self.book.add_peer_addr(peer, a.clone());
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    debug!(%peer, %addr, "mdns discovered");
                    if self.book.add_peer_addr(peer, addr.clone())
                        && !self.swarm.is_connected(&peer)
                    {
                        let _ = self
                            .swarm
                            .dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
                    }
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                if message.topic == self.dx.state_topic.hash() {
                    self.on_state_gossip(propagation_source, &message_id, &message.data);
                } else if message.topic == self.dx.status_topic.hash() {
                    self.on_status_gossip(propagation_source, &message_id, &message);
                } else {
                    self.on_gossip(propagation_source, &message_id, &message.data);
                }
            }
            BehaviourEvent::State(e) => self.on_state_rr(e),
            BehaviourEvent::Image(e) => self.on_image_rr(e),
            _ => {}
        }
    }

    fn on_join(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, Message as M};
        match ev {
            E::Message {
                peer,
                message: M::Request {
                    request, channel, ..
                },
                ..
            } => {
                let verdict = match keys::node_id(&peer) {
                    None => Err(JoinError::BadArgument("peer key")),
                    Some(node) => JoinRequest::from_bytes(&request)
                        .and_then(|r| self.admitter.admit(&node, &r, unix_now())),
                };
                let resp = match verdict {
                    Ok(a) => {
                        info!(%peer, name = %a.name, substrate = substrate_name(a.substrate), "admitted peer");
                        if let Ok(mut s) = self.admission.0.lock() {
                            s.substrates.insert(a.node, a.substrate);
                        }
                        let node = a.node;
                        self.admitted.insert(peer, a);
                        self.add_to_kad(peer);
                        if self.ready(&peer) {
                            self.flush_pending(peer);
                            self.anti_entropy(Some(peer));
                        }
                        let now = self.now_ms();
                        if let Err(e) = self.membership.join(&[node], now) {
                            warn!("membership join: {e}");
                        }
                        JoinResponse {
                            ok: true,
                            reason: String::new(),
                        }
                    }
                    Err(e) => {
                        let mut reason = e.to_string();
                        truncate(&mut reason, crate::join::MAX_REASON_LEN);
                        warn!(%peer, did = ?keys::did(&peer).map(|d| d.to_string()), "refused peer: {reason}");
                        self.log_refusal(peer, "inbound", reason.clone());
                        JoinResponse { ok: false, reason }
                    }
                };
                let ok = resp.ok;
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .join
                    .send_response(channel, resp.to_bytes());
                if !ok {
                    // Let the response go out, then drop the peer.
                    self.pending.remove(&peer);
                    self.disconnect_soon(peer);
                }
            }
            E::Message {
                peer,
                message: M::Response { response, .. },
                ..
            } => match JoinResponse::from_bytes(&response) {
                Ok(r) if r.ok => {
                    self.accepted_by.insert(peer);
                    if self.ready(&peer) {
                        self.flush_pending(peer);
                        self.anti_entropy(Some(peer));
                    }
                    if self.admitted_after.is_none() {
                        let t = self.start.elapsed();
                        self.admitted_after = Some(t);
                        info!(%peer, ms = t.as_millis() as u64, "admitted by member");
                    }
                }
                Ok(r) => {
                    warn!(%peer, "refused by member: {}", r.reason);
                    self.log_refusal(peer, "outbound", r.reason);
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                Err(e) => self.strike(peer, &format!("malformed join response: {e}")),
            },
            E::InboundFailure { peer, error, .. } => {
                debug!(%peer, "join inbound failure: {error}");
                if !self.admitted.contains_key(&peer) {
                    self.strike(peer, &format!("bad join request: {error}"));
                }
            }
            E::OutboundFailure { peer, error, .. } => {
                // Lost (e.g. sent down a connection that was closing): the
                // next dial tick sends it again while the peer is connected.
                debug!(%peer, "join outbound failure: {error}");
                self.join_sent.remove(&peer);
            }
            _ => {}
        }
    }

    /// Closes the peer's connections half a second from now, so the refusal
    /// reaches it first. A refused peer is not admitted, so nothing else is
    /// exchanged with it meanwhile.
    fn disconnect_soon(&mut self, peer: PeerId) {
        if self.closing.len() >= self.limits.max_pending_peers {
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        self.closing
            .push_back((Instant::now() + Duration::from_millis(500), peer));
    }

    /// Whether requests may go to `peer`: each side admitted the other.
    fn ready(&self, peer: &PeerId) -> bool {
        self.admitted.contains_key(peer) && self.accepted_by.contains(peer)
    }

    /// Only admitted members enter the Kademlia routing table.
    fn add_to_kad(&mut self, peer: PeerId) {
        let addrs = self.book.addrs(&peer).to_vec();
        for a in addrs {
            self.swarm.behaviour_mut().kad.add_address(&peer, a);
        }
    }

    fn flush_pending(&mut self, peer: PeerId) {
        if let Some(q) = self.pending.remove(&peer) {
            for bytes in q {
                self.swarm.behaviour_mut().swim.send_request(&peer, bytes);
            }
        }
    }

    fn on_swim(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, Message as M};
        match ev {
            E::Message {
                peer,
                message: M::Request {
                    request, channel, ..
                },
                ..
            } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .swim
                    .send_response(channel, Vec::new());
                let Some(node) = keys::node_id(&peer).filter(|_| self.admitted.contains_key(&peer))
                else {
                    self.strike(peer, "membership message before admission");
                    return;
                };
                if let Some(m) = &self.metrics {
                    m.swim_received.inc_by(request.len() as u64);
                }
                let now = self.now_ms();
                self.membership.handle_message(node, &request, now);
            }
            E::InboundFailure { peer, error, .. } => {
                self.strike(peer, &format!("bad membership stream: {error}"));
            }
            E::OutboundFailure { peer, error, .. } => {
                debug!(%peer, "swim outbound failure: {error}")
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: &gossipsub::MessageId, data: &[u8]) {
        let acceptance = if !self.admitted.contains_key(&source) {
            gossipsub::MessageAcceptance::Reject
        } else {
            match self.apply_revocation(data, false) {
                Ok(_) => gossipsub::MessageAcceptance::Accept,
                Err(e) => {
                    warn!(%source, "rejected announcement: {e}");
                    gossipsub::MessageAcceptance::Reject
                }
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &source, acceptance);
    }

    /// Validates a root-signed `/mesh/revoke` invocation and applies it.
    /// Returns the revoked DID.
    fn apply_revocation(&mut self, bytes: &[u8], publish: bool) -> Result<String, String> {
        if bytes.len() > crate::join::MAX_TOKEN_LEN {
            return Err("revocation too large".into());
        }
        let inv = Signed::<Invocation>::decode(bytes).map_err(|e| e.to_string())?;
        let p = inv.payload();
        if p.cmd.as_str() != REVOKE_COMMAND {
            return Err(format!(
                "command is {}, expected {REVOKE_COMMAND}",
                p.cmd.as_str()
            ));
        }
        if &p.sub != self.admitter.mesh() || &p.iss != self.admitter.mesh() {
            return Err("a revocation must be issued by the mesh root".into());
        }
        let Some(Ipld::String(target)) = p.args.get("node") else {
            return Err("argument `node` missing".into());
        };
        let did: Did = target
            .parse()
            .map_err(|_| "argument `node` is not a DID".to_owned())?;
        // Revocations stay valid after the invocation's exp: check the
        // signature and shape as of its own issue time.
        let at = p.exp.map_or(unix_now(), |e| e.min(unix_now()));
        let validator = Validator::new(ValidatorConfig::default());
        let no_proofs: [omega_identity::ucan::Signed<omega_identity::ucan::Delegation>; 0] = [];
        match validator.validate(
            &inv,
            &no_proofs[..],
            at,
            &self.revocations,
            &mut self.revoke_seen,
        ) {
            Ok(_) => {}
            Err(omega_identity::chain::ChainError::Replayed { .. }) => return Ok(did.to_string()),
            Err(e) => return Err(e.to_string()),
        }
        self.revoke_node(&did);
        if let Some(path) = &self.revocation_log {
            use base64::Engine as _;
            use std::io::Write as _;
            let line = base64::engine::general_purpose::STANDARD.encode(bytes);
            let written = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                warn!(path = %path.display(), "cannot store revocation: {e}");
            }
        }
        if publish {
            let topic = self.topic.clone();
            if let Err(e) = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic, bytes.to_vec())
            {
                debug!("revocation not published: {e}");
            }
        }
        Ok(did.to_string())
    }

    // ----- commands -------------------------------------------------------------

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::Peers(tx) => {
                let _ = tx.send(self.peers());
            }
            Command::Revoke(bytes, tx) => {
                let _ = tx.send(self.apply_revocation(&bytes, true));
            }
            Command::Metrics(tx) => {
                let mut text = String::new();
                if let Some(r) = &self.registry {
                    let _ = prometheus_client::encoding::text::encode(&mut text, r);
                }
                let _ = tx.send(text);
            }
            Command::Shutdown(_) => {}
            Command::Desired(tx) => {
                let _ = tx.send(self.desired_view());
            }
            Command::Tick(tx) => {
                let _ = tx.send(self.desired.tick(unix_ms()));
            }
            Command::Write(bytes, tx) => {
                let _ = tx.send(self.write_record(&bytes));
            }
            Command::PublishStatus(status) => self.set_own_status(status),
            Command::ImageChunk {
                peer,
                request,
                reply,
            } => {
                if !self.ready(&peer) {
                    let _ = reply.send(Err(format!("{peer} is not an admitted member")));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .image
                    .send_request(&peer, request.to_bytes());
                self.dx.chunk_waiters.insert(id, reply);
            }
        }
    }

    fn status(&mut self) -> StatusReport {
        let kad_peers = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        let me = self.swarm.local_peer_id();
        let stats = self.membership.stats();
        StatusReport {
            did: self.key.did().to_string(),
            peer_id: me.to_string(),
            name: self.name.clone(),
            substrate: substrate_name(self.substrate).into(),
            mesh: self.admitter.mesh().to_string(),
            incarnation: self.membership.incarnation(),
            joined: self.membership.is_joined(),
            listen: self
                .listen
                .iter()
                .map(|a| format!("{a}/p2p/{me}"))
                .collect(),
            live_members: self.membership.live_count(),
            connections: self.connections.len(),
            kad_peers,
            admitted_after_ms: self.admitted_after.map(|d| d.as_millis() as u64),
            swim_bytes_sent: stats.bytes_sent,
            swim_bytes_received: stats.bytes_received,
            uptime_secs: self.start.elapsed().as_secs(),
            refusals: self.refusals.iter().cloned().collect(),
            dispatch: DispatchStats {
                document_bytes: self.desired.encoded_len(),
                manifests: self.desired.manifests().count(),
                ..self.dx.stats.clone()
            },
        }
    }

    fn peers(&self) -> Vec<PeerReport> {
        self.membership
            .members()
            .map(|m| {
                let r = &m.record.record;
                let peer = keys::peer_id(&r.id);
                PeerReport {
                    did: r.id.to_string(),
                    peer_id: peer.map(|p| p.to_string()).unwrap_or_default(),
                    name: r.profile.name.clone(),
                    substrate: substrate_name(r.profile.substrate).into(),
                    state: match m.state {
                        State::Alive => "alive",
                        State::Suspect => "suspect",
                        State::Dead => "dead",
                        State::Left => "left",
                    }
                    .into(),
                    incarnation: r.incarnation,
                    connected: peer.is_some_and(|p| self.swarm.is_connected(&p)),
                    addresses: r.profile.addresses.clone(),
                }
            })
            .collect()
    }
}

// ----- dispatch -------------------------------------------------------------------

type Acceptance = gossipsub::MessageAcceptance;

fn peer_label(peer: &PeerId) -> String {
    keys::did(peer).map_or_else(|| peer.to_string(), |d| d.to_string())
}

impl Driver {
    fn bump(&self) {
        self.dx.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Loads the stored document (snapshot, then log), verifying every record again.
    fn load_desired(&mut self, initial: Vec<Vec<u8>>) {
        let me = self.membership.id();
        let now = unix_ms();
        for (i, u) in initial.iter().enumerate() {
            if let Err(e) = self.desired.handle_update(me, u, now) {
                warn!(entry = i, "stored desired-state update not loaded: {e}");
            }
        }
        self.drain_repairs();
        self.sync_revocations();
        if !initial.is_empty() {
            info!(
                manifests = self.desired.manifests().count(),
                bytes = self.desired.encoded_len(),
                "desired state loaded from disk"
            );
        }
    }

    /// Applies node revocations of the document this node has not applied yet.
    fn sync_revocations(&mut self) {
        let new: Vec<Did> = self
            .desired
            .revocations()
            .nodes
            .iter()
            .filter(|d| !self.admitter.is_revoked(&NodeId::from(*d)))
            .copied()
            .collect();
        for d in new {
            self.revoke_node(&d);
        }
    }

    fn revoke_node(&mut self, did: &Did) {
        let node = NodeId::from(did);
        self.admitter.revoke_node(node);
        if let Ok(mut s) = self.admission.0.lock() {
            s.revoked.insert(node);
        }
        self.membership.remove(node);
        self.dx.statuses.remove(&node);
        if let Some(peer) = keys::peer_id(&node) {
            self.admitted.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        warn!(did = %did, "node revoked");
        self.bump();
    }

    /// Hands an accepted update to the store; compacts now and then.
    fn persist(&mut self, update: &[u8]) -> Result<(), String> {
        let Some(store) = self.dx.store.as_mut() else {
            return Ok(());
        };
        store.append(update)?;
        self.dx.since_compact += 1;
        if self.dx.since_compact >= self.dx.compact_every {
            match store.compact(&self.desired.encode()) {
                Ok(()) => self.dx.since_compact = 0,
                Err(e) => warn!("desired state: compaction failed: {e}"),
            }
        }
        Ok(())
    }

    /// Announces an update on the state topic (anti-entropy carries the ones
    /// too large for gossipsub).
    fn publish_update(&mut self, update: &[u8]) {
        if update.len() + 1024 > self.swarm_net_max_gossip() {
            debug!(
                len = update.len(),
                "update left to anti-entropy (too large to gossip)"
            );
            return;
        }
        let topic = self.dx.state_topic.clone();
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, update.to_vec())
        {
            Ok(_) => self.dx.stats.bytes_sent += update.len() as u64,
            Err(e) => debug!("desired-state update not published: {e}"),
        }
    }

    fn swarm_net_max_gossip(&self) -> usize {
        self.dx.max_gossip
    }

    fn drain_repairs(&mut self) {
        while let Some(u) = self.desired.poll_update() {
            if let Err(e) = self.persist(&u) {
                warn!("desired state: repair not stored: {e}");
            }
            self.publish_update(&u);
        }
    }

    fn log_desired_refusal(&mut self, peer: String, reason: String) {
        self.dx.stats.updates_refused += 1;
        if self.dx.refusals.len() >= self.limits.max_refusal_log {
            self.dx.refusals.pop_front();
        }
        self.dx.refusals.push_back(RefusalReport {
            peer,
            direction: "desired",
            reason,
        });
        self.bump();
    }

    /// A record written through the local API.
    fn write_record(&mut self, bytes: &[u8]) -> Result<(), String> {
        let written = DesiredRecord::decode(bytes, 1 << 20)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                self.desired
                    .write_local(&r, unix_ms())
                    .map_err(|e| match e {
                        // A local write has no document key yet: name just the problem.
                        WriteError::Refused(DesiredRefusal::InvalidRecord { error, .. }) => {
                            error.to_string()
                        }
                        e => e.to_string(),
                    })
            });
        match written {
            Ok(update) => {
                let stored = self.persist(&update);
                self.publish_update(&update);
                self.drain_repairs();
                self.sync_revocations();
                self.bump();
                stored.map_err(|e| format!("applied here, but not stored durably: {e}"))
            }
            Err(e) => {
                warn!("refused a local desired-state write: {e}");
                self.log_desired_refusal("local".into(), e.clone());
                Err(e)
            }
        }
    }

    /// Accepts an update from `peer` (gossip or anti-entropy).
    fn accept_update(&mut self, peer: PeerId, bytes: &[u8]) -> Result<(), DesiredRefusal> {
        let Some(node) = keys::node_id(&peer) else {
            return Err(DesiredRefusal::Malformed(
                "the sender's key is not Ed25519".into(),
            ));
        };
        let before = self.desired.state_vector();
        let changes: Vec<Change> = self.desired.handle_update(node, bytes, unix_ms())?;
        if self.desired.has_news_for(&before) {
            if let Err(e) = self.persist(bytes) {
                warn!("desired state: update not stored: {e}");
            }
            self.dx.stats.updates_accepted += 1;
            self.bump();
        }
        if !changes.is_empty() {
            debug!(%peer, changes = changes.len(), "desired state changed");
            if changes
                .iter()
                .any(|c| matches!(c, Change::Revoked(Revocation::Node(_))))
            {
                self.sync_revocations();
            }
            self.bump();
        }
        self.drain_repairs();
        Ok(())
    }

    fn refused_update(&mut self, peer: PeerId, r: &DesiredRefusal) {
        if r.penalty() {
            self.log_desired_refusal(peer_label(&peer), r.to_string());
            self.strike(peer, &format!("invalid desired-state update: {r}"));
        } else if matches!(r, DesiredRefusal::MissingDependencies) {
            self.anti_entropy(Some(peer));
        } else {
            debug!(%peer, "desired-state update not taken: {r}");
        }
    }

    fn rate_ok(&mut self, peer: PeerId) -> bool {
        let now = Instant::now();
        let e = self.dx.rates.entry(peer).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(1) {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
        e.1 <= self.dx.max_updates_per_peer_per_sec
    }

    fn on_state_gossip(&mut self, source: PeerId, id: &gossipsub::MessageId, data: &[u8]) {
        self.dx.stats.bytes_received += data.len() as u64;
        let acceptance = if !self.admitted.contains_key(&source) {
            Acceptance::Reject
        } else if !self.rate_ok(source) {
            Acceptance::Ignore
        } else {
            match self.accept_update(source, data) {
                Ok(()) => Acceptance::Accept,
                Err(r) => {
                    self.refused_update(source, &r);
                    if r.penalty() {
                        Acceptance::Reject
                    } else {
                        Acceptance::Ignore
                    }
                }
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &source, acceptance);
    }

    fn on_status_gossip(
        &mut self,
        source: PeerId,
        id: &gossipsub::MessageId,
        message: &gossipsub::Message,
    ) {
        self.dx.stats.bytes_received += message.data.len() as u64;
        let author = message.source.and_then(|p| keys::node_id(&p));
        let acceptance = match author {
            _ if !self.admitted.contains_key(&source) => Acceptance::Reject,
            Some(node) if node == self.membership.id() => Acceptance::Ignore,
            Some(node) if self.membership.member(&node).is_some() => {
                // Any member in the table, whatever this node believes about
                // its liveness: a restarted member announces itself before
                // everyone has seen it come back (`omega ps` marks non-live
                // nodes).
                match NodeStatus::from_bytes(&message.data, self.dx.max_status_bytes) {
                    Ok(st) => {
                        let old = self.dx.statuses.get(&node);
                        if old.is_none_or(|o| st.seq > o.seq) {
                            let changed = old.is_none_or(|o| o.branes != st.branes);
                            self.dx.statuses.insert(node, st);
                            if changed {
                                self.bump();
                            }
                        }
                        Acceptance::Accept
                    }
                    Err(e) => {
                        self.strike(source, &format!("bad status: {e}"));
                        Acceptance::Reject
                    }
                }
            }
            Some(_) => Acceptance::Ignore,
            None => Acceptance::Reject,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &source, acceptance);
    }

    fn set_own_status(&mut self, mut status: NodeStatus) {
        if self
            .dx
            .own_status
            .as_ref()
            .is_some_and(|(old, _)| old.branes == status.branes)
        {
            return;
        }
        // Strictly growing, even for two changes within one millisecond
        // (receivers keep only a newer sequence number).
        let last = self.dx.own_status.as_ref().map_or(0, |(s, _)| s.seq);
        status.seq = status.seq.max(unix_ms()).max(last + 1);
        self.dx
            .statuses
            .insert(self.membership.id(), status.clone());
        self.publish_status(status);
        self.bump();
    }

    fn publish_status(&mut self, status: NodeStatus) {
        let bytes = status.to_bytes();
        if bytes.len() <= self.dx.max_status_bytes {
            let topic = self.dx.status_topic.clone();
            let len = bytes.len() as u64;
            match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                Ok(_) => self.dx.stats.bytes_sent += len,
                Err(e) => debug!("status not published: {e}"),
            }
        } else {
            warn!(len = bytes.len(), "status too large to announce");
        }
        self.dx.own_status = Some((status, Instant::now()));
    }

    fn republish_status(&mut self) {
        if let Some((s, t)) = &self.dx.own_status
            && t.elapsed() >= self.dx.status_republish
        {
            let s = s.clone();
            self.publish_status(s);
        }
    }

    /// Sends our state vector to `peer` (or a random admitted member).
    fn anti_entropy(&mut self, peer: Option<PeerId>) {
        let peer = match peer {
            Some(p) => p,
            None => {
                let peers: Vec<PeerId> = self
                    .admitted
                    .keys()
                    .filter(|p| self.ready(p) && self.swarm.is_connected(p))
                    .copied()
                    .collect();
                if peers.is_empty() {
                    return;
                }
                let i = u64::from_le_bytes(random::<8>()) % peers.len() as u64;
                peers[i as usize]
            }
        };
        let sv = self.desired.state_vector();
        self.dx.stats.bytes_sent += sv.len() as u64;
        self.dx.stats.anti_entropy_rounds += 1;
        self.swarm.behaviour_mut().state.send_request(&peer, sv);
    }

    fn on_state_rr(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, Message as M};
        match ev {
            E::Message {
                peer,
                message: M::Request {
                    request, channel, ..
                },
                ..
            } => {
                self.dx.stats.bytes_received += request.len() as u64;
                // Before admission (a benign race while both sides run the
                // join protocol): nothing for it, and no strike.
                let resp = if !self.admitted.contains_key(&peer)
                    || !self.rate_ok(peer)
                    || !self.desired.has_news_for(&request)
                {
                    Vec::new()
                } else {
                    match self.desired.diff_since(&request) {
                        Ok(d) => d,
                        Err(e) => {
                            self.strike(peer, &format!("bad state vector: {e}"));
                            Vec::new()
                        }
                    }
                };
                self.dx.stats.bytes_sent += resp.len() as u64;
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .state
                    .send_response(channel, resp);
            }
            E::Message {
                peer,
                message: M::Response { response, .. },
                ..
            } => {
                self.dx.stats.bytes_received += response.len() as u64;
                if response.is_empty() || !self.admitted.contains_key(&peer) {
                    return;
                }
                if let Err(r) = self.accept_update(peer, &response) {
                    self.refused_update(peer, &r);
                }
            }
            E::InboundFailure { peer, error, .. } => {
                debug!(%peer, "state inbound failure: {error}");
            }
            E::OutboundFailure { peer, error, .. } => {
                debug!(%peer, "state outbound failure: {error}");
            }
            _ => {}
        }
    }

    fn on_image_rr(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, Message as M};
        match ev {
            E::Message {
                peer,
                message: M::Request {
                    request, channel, ..
                },
                ..
            } => {
                let resp = if !self.admitted.contains_key(&peer) {
                    ImageResponse::Refused("not an admitted member".into())
                } else {
                    match ImageRequest::from_bytes(&request) {
                        Err(e) => {
                            self.strike(peer, &e.to_string());
                            ImageResponse::Refused(e.to_string())
                        }
                        Ok(r) => match &self.dx.blobs {
                            None => ImageResponse::NotFound,
                            Some(b) => {
                                match b.read_chunk(&r.content, r.offset, self.dx.image_chunk) {
                                    Ok(Some((total, bytes))) => {
                                        ImageResponse::Chunk { total, bytes }
                                    }
                                    Ok(None) => ImageResponse::NotFound,
                                    Err(e) => ImageResponse::Refused(e),
                                }
                            }
                        },
                    }
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .image
                    .send_response(channel, resp.to_bytes());
            }
            E::Message {
                message:
                    M::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(tx) = self.dx.chunk_waiters.remove(&request_id) {
                    let _ =
                        tx.send(ImageResponse::from_bytes(&response).map_err(|e| e.to_string()));
                }
            }
            E::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(tx) = self.dx.chunk_waiters.remove(&request_id) {
                    let _ = tx.send(Err(error.to_string()));
                }
            }
            E::InboundFailure { peer, error, .. } => {
                debug!(%peer, "image inbound failure: {error}");
            }
            _ => {}
        }
    }

    fn desired_view(&self) -> DesiredView {
        let me = self.membership.id();
        let local = &self.membership.local_record().record;
        let mut members: Vec<Candidate> = self
            .membership
            .members()
            .map(|v| Candidate::from_view(&v))
            .collect();
        members.push(Candidate {
            id: me,
            name: local.profile.name.clone(),
            substrate: local.profile.substrate,
            capabilities: local.profile.capabilities,
            free_memory_bytes: local.profile.resources.memory_bytes,
            state: State::Alive,
        });
        DesiredView {
            me,
            manifests: self.desired.manifests().collect(),
            images: self.desired.images().collect(),
            members,
            statuses: self
                .dx
                .statuses
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            peers: self
                .admitted
                .keys()
                .filter(|p| self.ready(p) && self.swarm.is_connected(p))
                .copied()
                .collect(),
            refusals: self.dx.refusals.iter().cloned().collect(),
            document_bytes: self.desired.encoded_len(),
        }
    }
}

/// Signs a revocation of `node` with the mesh root key.
pub fn sign_revocation(root: &Keypair, node: &Did, now: u64) -> Result<Vec<u8>, String> {
    let args = [("node".to_owned(), Ipld::String(node.to_string()))]
        .into_iter()
        .collect();
    let cmd = REVOKE_COMMAND
        .parse()
        .map_err(|e: omega_identity::ucan::CommandError| e.to_string())?;
    let inv = Invocation::new(root.did(), root.did(), cmd, random::<16>().to_vec())
        .with_args(args)
        .with_exp(now + crate::join::INVOCATION_TTL_SECS);
    Signed::sign(inv, root)
        .map(|s| s.to_bytes())
        .map_err(|e| e.to_string())
}
