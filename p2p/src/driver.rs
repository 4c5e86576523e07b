//! The driver: one task that owns the swarm and runs the node brain
//! ([`omega_gossip::Node`]) on it.
//!
//! It holds only what is about libp2p: the swarm, the mapping between
//! libp2p's ids (connections, requests, response channels, gossip message
//! ids) and the node's, and the plumbing of effects. Every swarm event
//! becomes an [`Input`]; every [`Output`] becomes a swarm call, a write on
//! the store thread, a blob read on the blocking pool, a brane effect for
//! the host, or an answer to a [`NodeHandle`] call. It decides nothing
//! about the mesh: admission, strikes, bans, rates, anti-entropy, statuses,
//! revocations and what runs where are the node's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::multiaddr::Protocol as Mp;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, Swarm, gossipsub, identify, kad, mdns, noise, tcp, yamux};
use omega_gossip::node::{
    self as brain, Command as NodeCommand, CommandId, ConnId, Direction, Found, GossipRef,
    InboundId, Input, NodeReport, Output, PersistOp, Protocol, Reply, Report, RequestId, Topic,
    Verdict,
};
use omega_gossip::{MeshId, Mono, Node, NodeId, Now, Unix};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, BehaviourEvent, NetConfig};
use crate::discovery::Discovery;
use crate::handle::{BraneEffect, NodeHandle, PeerReport, REQUEST_QUEUE, Request, StatusReport};
use crate::host::{BlobSource, DesiredStore, EventSync};
use crate::keys;

/// Everything a node needs to run.
pub struct NodeConfig {
    /// Key, join token and profile.
    pub identity: brain::Identity,
    /// The node brain's configuration.
    pub node: brain::Config,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Polled discovery providers.
    pub providers: Vec<Box<dyn Discovery>>,
    /// How often providers are polled. Default 5 s.
    pub discovery_interval: Duration,
    /// libp2p limits and switches.
    pub net: NetConfig,
    /// Where libp2p and Omega metrics are registered (`None`: no metrics).
    pub registry: Option<Registry>,
    /// The stored desired-state updates to load (snapshot, then log).
    pub stored: Vec<Vec<u8>>,
    /// Where accepted updates and event-store writes go (`None`: memory only).
    pub store: Option<Box<dyn DesiredStore>>,
    /// The stored outbox and processed window to load.
    pub stored_events: omega_gossip::events::StoredEvents,
    /// When event-store writes reach the disk.
    pub event_sync: EventSync,
    /// The images this node serves (`None`: it serves none).
    pub blobs: Option<Arc<dyn BlobSource>>,
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
    /// The node brain refused its configuration.
    #[error(transparent)]
    Node(#[from] brain::NodeError),
}

/// Starts a node: returns its handle, the brane effects for the host
/// (bounded by construction: at most one start and one stop outstanding
/// per placed brane), and the task running it.
pub fn spawn(
    mut cfg: NodeConfig,
) -> Result<
    (
        NodeHandle,
        mpsc::UnboundedReceiver<BraneEffect>,
        tokio::task::JoinHandle<()>,
    ),
    NodeError,
> {
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let (found_tx, found_rx) = mpsc::channel(16);
    let (effects_tx, effects_rx) = mpsc::unbounded_channel();
    let providers = std::mem::take(&mut cfg.providers);
    let interval = cfg.discovery_interval;
    let driver = Driver::new(cfg, effects_tx)?;
    let done = driver.done_tx.clone();
    let streams = driver.swarm.behaviour().stream.new_control();
    tokio::spawn(discovery_task(providers, interval, found_tx));
    let task = tokio::spawn(driver.run(rx, found_rx));
    Ok((NodeHandle { tx, done, streams }, effects_rx, task))
}

async fn discovery_task(
    mut providers: Vec<Box<dyn Discovery>>,
    interval: Duration,
    tx: mpsc::Sender<Vec<Multiaddr>>,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        for p in &mut providers {
            match p.discover().await {
                Ok(found) => {
                    debug!(provider = p.name(), count = found.len(), "discovery round");
                    if tx
                        .send(found.into_iter().map(|f| f.addr).collect())
                        .await
                        .is_err()
                    {
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

fn unix_now() -> Unix {
    Unix(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

fn random_seed() -> [u8; 32] {
    let mut b = [0u8; 32];
    // The OS random source failing is not recoverable; fall back to time so
    // the node still runs (its randomness needs spread, not secrecy).
    if getrandom::fill(&mut b).is_err() {
        let t = unix_now().0 as u128 * 1_000_003;
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8;
        }
    }
    b
}

/// An address with its member when it ends in `/p2p/PEER`.
fn found(addr: Multiaddr) -> Found {
    let mut bare = addr.clone();
    match bare.pop() {
        Some(Mp::P2p(peer)) => Found {
            addr: bare.to_string(),
            peer: keys::node_id(&peer),
        },
        _ => Found {
            addr: addr.to_string(),
            peer: None,
        },
    }
}

/// The labels of one edge's figures.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EdgeLabels {
    manifest: String,
    from: String,
    to: String,
    on: String,
}

struct Metrics {
    refusals: Counter,
    edge_delivered: Family<EdgeLabels, Counter>,
    edge_retried: Family<EdgeLabels, Counter>,
    edge_dead: Family<EdgeLabels, Counter>,
    edge_in_flight: Family<EdgeLabels, Gauge>,
    edge_queued: Family<EdgeLabels, Gauge>,
    edge_lag: Family<EdgeLabels, Gauge>,
    outbox: Gauge,
    dead_letters: Gauge,
    swim_sent: Counter,
    swim_received: Counter,
    members_live: Gauge,
    connections: Gauge,
    banned: Gauge,
    p2p: libp2p::metrics::Metrics,
}

impl Metrics {
    fn new(registry: &mut Registry) -> Self {
        let m = Self {
            refusals: Counter::default(),
            edge_delivered: Family::default(),
            edge_retried: Family::default(),
            edge_dead: Family::default(),
            edge_in_flight: Family::default(),
            edge_queued: Family::default(),
            edge_lag: Family::default(),
            outbox: Gauge::default(),
            dead_letters: Gauge::default(),
            swim_sent: Counter::default(),
            swim_received: Counter::default(),
            members_live: Gauge::default(),
            connections: Gauge::default(),
            banned: Gauge::default(),
            p2p: libp2p::metrics::Metrics::new(registry),
        };
        let r = registry.sub_registry_with_prefix("omega");
        r.register(
            "admission_refusals",
            "Join requests and desired-state records refused",
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
        r.register(
            "connections",
            "Peers with an open connection",
            m.connections.clone(),
        );
        r.register("banned_peers", "Peers banned now", m.banned.clone());
        r.register(
            "event_delivered",
            "Events this node sent along an edge and saw acknowledged as processed",
            m.edge_delivered.clone(),
        );
        r.register(
            "event_retried",
            "Retries of events along an edge (failures, timeouts, busy answers, re-routes)",
            m.edge_retried.clone(),
        );
        r.register(
            "event_dead_lettered",
            "Events dead-lettered after their edge's max_attempts",
            m.edge_dead.clone(),
        );
        r.register(
            "event_in_flight",
            "Events sent along an edge and not yet acknowledged",
            m.edge_in_flight.clone(),
        );
        r.register(
            "event_queued",
            "Events waiting to be sent along an edge",
            m.edge_queued.clone(),
        );
        r.register(
            "event_lag_ms",
            "Age of the oldest unacknowledged event of an edge, ms",
            m.edge_lag.clone(),
        );
        r.register(
            "event_outbox",
            "Events in this node's durable outbox (dead letters included)",
            m.outbox.clone(),
        );
        r.register(
            "event_dead_letters",
            "Dead letters on this node",
            m.dead_letters.clone(),
        );
        m
    }

    /// Brings the event figures up to date with the delivery report.
    fn update_events(&self, r: &omega_gossip::events::EventReport) {
        let inc = |c: &Counter, to: u64| c.inc_by(to.saturating_sub(c.get()));
        self.outbox.set(r.outbox as i64);
        self.dead_letters.set(r.dead_letters as i64);
        for e in &r.edges {
            let l = EdgeLabels {
                manifest: e.manifest.clone(),
                from: e.from.clone(),
                to: e.to.clone(),
                on: e.on.clone(),
            };
            inc(&self.edge_delivered.get_or_create(&l), e.delivered);
            inc(&self.edge_retried.get_or_create(&l), e.retried);
            inc(&self.edge_dead.get_or_create(&l), e.dead_lettered);
            self.edge_in_flight
                .get_or_create(&l)
                .set(e.in_flight as i64);
            self.edge_queued.get_or_create(&l).set(e.queued as i64);
            self.edge_lag.get_or_create(&l).set(e.lag_ms as i64);
        }
    }

    /// Brings the figures up to date with the node's report.
    fn update(&self, r: &NodeReport) {
        let inc = |c: &Counter, to: u64| c.inc_by(to.saturating_sub(c.get()));
        inc(&self.swim_sent, r.swim_bytes_sent);
        inc(&self.swim_received, r.swim_bytes_received);
        self.members_live.set(r.live_members as i64);
        self.connections.set(r.connections as i64);
        self.banned.set(r.banned.len() as i64);
    }
}

struct Topics {
    state: gossipsub::IdentTopic,
    status: gossipsub::IdentTopic,
}

impl Topics {
    fn of(&self, topic: Topic) -> &gossipsub::IdentTopic {
        match topic {
            Topic::State => &self.state,
            Topic::Status => &self.status,
        }
    }

    fn named(&self, hash: &gossipsub::TopicHash) -> Option<Topic> {
        if *hash == self.state.hash() {
            Some(Topic::State)
        } else if *hash == self.status.hash() {
            Some(Topic::Status)
        } else {
            None
        }
    }
}

/// The running node.
struct Driver {
    swarm: Swarm<Behaviour>,
    node: Node,
    start: Instant,
    topics: Topics,
    listen: Vec<Multiaddr>,
    conn_ids: BTreeMap<ConnectionId, ConnId>,
    next_id: u64,
    outbound: BTreeMap<(Protocol, OutboundRequestId), (RequestId, NodeId)>,
    channels: BTreeMap<InboundId, (Protocol, ResponseChannel<Vec<u8>>)>,
    gossip: BTreeMap<GossipRef, gossipsub::MessageId>,
    commands: BTreeMap<CommandId, oneshot::Sender<Reply>>,
    store_tx: std::sync::mpsc::Sender<(brain::PersistId, PersistOp)>,
    done_tx: mpsc::UnboundedSender<Input>,
    done_rx: mpsc::UnboundedReceiver<Input>,
    blobs: Option<Arc<dyn BlobSource>>,
    effects: mpsc::UnboundedSender<BraneEffect>,
    metrics: Option<Metrics>,
    registry: Option<Registry>,
    stopping: bool,
    acks: tokio::sync::broadcast::Sender<omega_gossip::events::EventId>,
}

impl Driver {
    fn new(
        mut cfg: NodeConfig,
        effects: mpsc::UnboundedSender<BraneEffect>,
    ) -> Result<Self, NodeError> {
        let start = Instant::now();
        let key = cfg.identity.key.clone();
        let root = cfg
            .identity
            .token
            .as_ref()
            .map_or_else(|| key.did(), |t| t.mesh);
        let mesh = MeshId::from_root(&root);
        let topics = Topics {
            state: gossipsub::IdentTopic::new(format!("omega/{mesh}/state/1")),
            status: gossipsub::IdentTopic::new(format!("omega/{mesh}/status/1")),
        };
        let mut registry = cfg.registry.take();
        let metrics = registry.as_mut().map(Metrics::new);
        let swarm = build_swarm(&key, &cfg.net, &topics, registry.as_mut())?;
        let mut swarm = swarm;
        for addr in &cfg.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.clone(),
                    message: e.to_string(),
                })?;
        }
        // Gossip messages are bounded by gossipsub; the node must not try to
        // publish larger ones.
        cfg.node.limits.max_gossip_bytes = cfg.net.max_gossipsub_message;
        cfg.node.limits.image_chunk = cfg
            .node
            .limits
            .image_chunk
            .min(cfg.net.max_image_message.saturating_sub(64));
        let now = Now {
            mono: Mono(0),
            unix: unix_now(),
        };
        let mut node = Node::new(cfg.node, cfg.identity, &cfg.stored, random_seed(), now)?;
        node.restore_events(std::mem::take(&mut cfg.stored_events));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let store_tx = spawn_store(cfg.store, cfg.event_sync, done_tx.clone());
        let mut driver = Self {
            swarm,
            node,
            start,
            topics,
            listen: Vec::new(),
            conn_ids: BTreeMap::new(),
            next_id: 0,
            outbound: BTreeMap::new(),
            channels: BTreeMap::new(),
            gossip: BTreeMap::new(),
            commands: BTreeMap::new(),
            store_tx,
            done_tx,
            done_rx,
            blobs: cfg.blobs,
            effects,
            metrics,
            registry,
            stopping: false,
            acks: tokio::sync::broadcast::channel(1 << 16).0,
        };
        driver.drain();
        Ok(driver)
    }

    fn now(&self) -> Now {
        Now {
            mono: Mono(self.start.elapsed().as_millis() as u64),
            unix: unix_now(),
        }
    }

    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        self.node.handle_input(input, now);
        self.drain();
    }

    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut discovered: mpsc::Receiver<Vec<Multiaddr>>,
    ) {
        info!(did = %self.node.id(), peer = %self.swarm.local_peer_id(), "node starting");
        loop {
            let wake = self.start + Duration::from_millis(self.node.poll_timeout().0);
            let wake = wake.min(Instant::now() + Duration::from_secs(60));
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                r = requests.recv() => match r {
                    Some(Request::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(r) => self.on_request(r),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                Some(addrs) = discovered.recv() => self.input(Input::Discovered(addrs.into_iter().map(found).collect())),
                Some(done) = self.done_rx.recv() => self.input(done),
                () = tokio::time::sleep_until(wake.into()) => self.input(Input::Timeout),
            }
        }
    }

    async fn shutdown(&mut self) {
        info!("leaving the mesh");
        self.stopping = true;
        let id = CommandId(self.next());
        self.input(Input::Command {
            id,
            command: NodeCommand::Leave,
        });
        // Give the leave messages a moment to go out; bounded.
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(ev) = tokio::time::timeout_at(until, self.swarm.select_next_some()).await {
            self.on_swarm(ev);
        }
    }

    fn on_request(&mut self, r: Request) {
        match r {
            Request::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Request::Peers(tx) => {
                let peers = self
                    .node
                    .members()
                    .into_iter()
                    .map(|member| PeerReport {
                        peer_id: member
                            .did
                            .parse::<omega_identity::Did>()
                            .ok()
                            .and_then(|d| keys::peer_id(&NodeId::from(&d)))
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        member,
                    })
                    .collect();
                let _ = tx.send(peers);
            }
            Request::View(tx) => {
                let _ = tx.send(self.node.view());
            }
            Request::Metrics(tx) => {
                let mut text = String::new();
                if let (Some(m), Some(r)) = (&self.metrics, &self.registry) {
                    m.update(&self.node.report());
                    m.update_events(&self.node.events());
                    let _ = prometheus_client::encoding::text::encode(&mut text, r);
                }
                let _ = tx.send(text);
            }
            Request::Command(command, tx) => {
                let id = CommandId(self.next());
                self.commands.insert(id, tx);
                self.input(Input::Command { id, command });
            }
            Request::Started(key, attempt, result) => self.input(Input::BraneStarted {
                key,
                attempt,
                result,
            }),
            Request::Events(tx) => {
                let _ = tx.send(self.node.events());
            }
            Request::Acks(tx) => {
                let _ = tx.send(self.acks.subscribe());
            }
            Request::Shutdown(_) => {}
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
        let gs = &self.swarm.behaviour().gossipsub;
        let gossip_scores = gs
            .all_peers()
            .filter_map(|(p, _)| gs.peer_score(p).map(|s| (p.to_string(), s)))
            .collect();
        let me = *self.swarm.local_peer_id();
        let mut node = self.node.report();
        node.listen = self
            .listen
            .iter()
            .map(|a| format!("{a}/p2p/{me}"))
            .collect();
        StatusReport {
            node,
            peer_id: me.to_string(),
            kad_peers,
            gossip_scores,
        }
    }

    // ----- outputs -----------------------------------------------------------

    fn drain(&mut self) {
        while let Some(o) = self.node.poll_output() {
            self.execute(o);
        }
    }

    fn execute(&mut self, o: Output) {
        match o {
            Output::Transmit { to, bytes } => {
                if let Some(peer) = keys::peer_id(&to) {
                    self.swarm.behaviour_mut().swim.send_request(&peer, bytes);
                }
            }
            Output::Request {
                to,
                protocol,
                id,
                bytes,
            } => self.send_request(to, protocol, id, bytes),
            Output::Respond { id, bytes } => {
                if let Some((protocol, channel)) = self.channels.remove(&id) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .protocol(protocol)
                        .send_response(channel, bytes);
                }
            }
            Output::Publish { topic, bytes } => {
                let topic = self.topics.of(topic).clone();
                if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                    debug!("not published: {e}");
                }
            }
            Output::Validate {
                id,
                source,
                verdict,
            } => {
                if let (Some(msg), Some(peer)) = (self.gossip.remove(&id), keys::peer_id(&source)) {
                    let acceptance = match verdict {
                        Verdict::Accept => gossipsub::MessageAcceptance::Accept,
                        Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
                        Verdict::Reject => gossipsub::MessageAcceptance::Reject,
                    };
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(&msg, &peer, acceptance);
                }
            }
            Output::Persist { id, op } => self.persist(id, op),
            Output::ReadBlob {
                id,
                content,
                offset,
                max,
            } => {
                let blobs = self.blobs.clone();
                let done = self.done_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = match blobs {
                        Some(b) => b.read_chunk(&content, offset, max),
                        None => Ok(None),
                    };
                    let _ = done.send(Input::BlobRead { id, result });
                });
            }
            Output::Dial { peer, addrs } => self.dial(peer, &addrs),
            Output::Disconnect { peer, .. } => {
                if let Some(p) = keys::peer_id(&peer) {
                    let _ = self.swarm.disconnect_peer_id(p);
                }
            }
            Output::Ban { peer } => {
                if let Some(p) = keys::peer_id(&peer) {
                    self.swarm.behaviour_mut().blocked.block_peer(p);
                    let _ = self.swarm.disconnect_peer_id(p);
                }
            }
            Output::Unban { peer } => {
                if let Some(p) = keys::peer_id(&peer) {
                    self.swarm.behaviour_mut().blocked.unblock_peer(p);
                }
            }
            Output::Ready { peer, addrs } => {
                if let Some(p) = keys::peer_id(&peer) {
                    for a in addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
                        self.swarm.behaviour_mut().kad.add_address(&p, a);
                    }
                }
            }
            Output::Start(s) if !self.stopping => {
                let _ = self.effects.send(BraneEffect::Start(s));
            }
            Output::Start(_) => {}
            Output::Stop { key, attempt } => {
                let _ = self.effects.send(BraneEffect::Stop { key, attempt });
            }
            Output::Process(p) => {
                let ticket = p.ticket;
                if self.stopping || self.effects.send(BraneEffect::Process(p)).is_err() {
                    let _ = self.done_tx.send(Input::Processed {
                        ticket,
                        result: Err(omega_gossip::events::ProcessError::NotRunning),
                    });
                }
            }
            Output::Reply { id, reply } => {
                if let Some(tx) = self.commands.remove(&id) {
                    let _ = tx.send(reply);
                }
            }
            Output::Report(r) => self.log(r),
            _ => {}
        }
    }

    /// Hands a write to the store thread (which reports it back).
    fn persist(&mut self, id: brain::PersistId, op: PersistOp) {
        if self.store_tx.send((id, op)).is_err() {
            let _ = self.done_tx.send(Input::Persisted {
                id,
                result: Err("the store thread stopped".into()),
            });
        }
    }

    fn send_request(&mut self, to: NodeId, protocol: Protocol, id: RequestId, bytes: Vec<u8>) {
        let Some(peer) = keys::peer_id(&to) else {
            return;
        };
        let out = self
            .swarm
            .behaviour_mut()
            .protocol(protocol)
            .send_request(&peer, bytes);
        self.outbound.insert((protocol, out), (id, to));
    }

    fn dial(&mut self, peer: Option<NodeId>, addrs: &[String]) {
        let addrs: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let opts = match peer.and_then(|p| keys::peer_id(&p)) {
            Some(p) if self.swarm.is_connected(&p) => return,
            Some(p) => DialOpts::peer_id(p).addresses(addrs).build(),
            None => match addrs.into_iter().next() {
                Some(a) => DialOpts::unknown_peer_id().address(a).build(),
                None => return,
            },
        };
        if let Err(e) = self.swarm.dial(opts) {
            debug!("dial: {e}");
        }
    }

    fn log(&mut self, r: Report) {
        match r {
            Report::Member { event, name } => {
                let name = name.unwrap_or_default();
                match event {
                    omega_gossip::Event::Joined => info!("joined the mesh"),
                    omega_gossip::Event::Up { id } => info!(member = %name, did = %id, "member up"),
                    omega_gossip::Event::Alive { .. } => {
                        info!(member = %name, "member alive again")
                    }
                    omega_gossip::Event::Suspect { .. } => info!(member = %name, "member suspect"),
                    omega_gossip::Event::Dead { id } => {
                        info!(member = %name, did = %id, "member dead")
                    }
                    omega_gossip::Event::Left { .. } => info!(member = %name, "member left"),
                    omega_gossip::Event::Removed { id } => info!(did = %id, "member removed"),
                    omega_gossip::Event::Refused { peer, reason, .. } => {
                        debug!(did = %peer, "membership input refused: {reason}")
                    }
                    _ => {}
                }
            }
            Report::Admitted(a) => {
                info!(did = %a.node, name = %a.name, substrate = %a.substrate, "admitted peer")
            }
            Report::AdmittedBy { peer, after } => match after {
                Some(ms) => info!(did = %peer, ms, "admitted by member"),
                None => debug!(did = %peer, "admitted by member"),
            },
            Report::Refusal(r) => {
                if let Some(m) = &self.metrics {
                    m.refusals.inc();
                }
                match r.direction {
                    Direction::Inbound => warn!(peer = %r.peer, "refused peer: {}", r.reason),
                    Direction::Outbound => warn!(peer = %r.peer, "refused by member: {}", r.reason),
                    _ => warn!(peer = %r.peer, "refused a desired-state record: {}", r.reason),
                }
            }
            Report::Strike { peer, strikes, why } => {
                warn!(did = %peer, strikes, "peer misbehaved: {why}")
            }
            Report::Banned { peer, until } => {
                warn!(did = %peer, until_ms = until.0, "peer banned")
            }
            Report::Revoked(r) => warn!("revoked {r}"),
            Report::Desired { changes } => debug!(changes, "desired state changed"),
            Report::Brane { key, text } => {
                info!(manifest = %key.manifest, brane = %key.brane, "{text}")
            }
            Report::PersistFailed(e) => warn!("desired state: {e}"),
            Report::Loaded {
                updates,
                manifests,
                bytes,
            } => info!(updates, manifests, bytes, "desired state loaded from disk"),
            Report::Delivered(id) if self.acks.receiver_count() > 0 => {
                let _ = self.acks.send(id);
            }
            Report::Disconnecting { peer, reason } => {
                debug!(did = %peer, "disconnecting: {reason}")
            }
            _ => {}
        }
    }

    // ----- swarm events ---------------------------------------------------------

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = &self.metrics {
            libp2p::metrics::Recorder::record(&m.p2p, &ev);
        }
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.listen.push(address.clone());
                self.input(Input::Listening {
                    addr: address.to_string(),
                });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let Some(peer) = keys::node_id(&peer_id) else {
                    warn!(%peer_id, "refused peer: its key is not Ed25519, so it cannot be an Omega node");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                };
                let conn = ConnId(self.next());
                self.conn_ids.insert(connection_id, conn);
                self.input(Input::ConnectionUp {
                    peer,
                    conn,
                    remote: endpoint.get_remote_address().to_string(),
                });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                ..
            } => {
                if let (Some(conn), Some(peer)) = (
                    self.conn_ids.remove(&connection_id),
                    keys::node_id(&peer_id),
                ) {
                    self.input(Input::ConnectionDown { peer, conn });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                debug!(%peer, "dial failed: {error}");
                if let Some(peer) = keys::node_id(&peer) {
                    self.input(Input::DialFailed { peer });
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour(ev),
            _ => {}
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
            BehaviourEvent::Join(e) => self.on_rr(Protocol::Join, e),
            BehaviourEvent::Swim(e) => self.on_rr(Protocol::Swim, e),
            BehaviourEvent::State(e) => self.on_rr(Protocol::State, e),
            BehaviourEvent::Image(e) => self.on_rr(Protocol::Image, e),
            BehaviourEvent::Event(e) => self.on_rr(Protocol::Event, e),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if let Some(peer) = keys::node_id(&peer_id) {
                    let addrs = info
                        .listen_addrs
                        .iter()
                        .take(8)
                        .map(ToString::to_string)
                        .collect();
                    self.input(Input::PeerAddresses { peer, addrs });
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, addresses, ..
            }) => {
                if let Some(peer) = keys::node_id(&peer) {
                    let addrs = addresses.iter().map(ToString::to_string).collect();
                    self.input(Input::PeerAddresses { peer, addrs });
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                let found = list
                    .into_iter()
                    .map(|(peer, addr)| {
                        debug!(%peer, %addr, "mdns discovered");
                        Found {
                            addr: addr.to_string(),
                            peer: keys::node_id(&peer),
                        }
                    })
                    .collect();
                self.input(Input::Discovered(found));
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let (Some(topic), Some(source)) = (
                    self.topics.named(&message.topic),
                    keys::node_id(&propagation_source),
                ) else {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            gossipsub::MessageAcceptance::Reject,
                        );
                    return;
                };
                let id = GossipRef(self.next());
                self.gossip.insert(id, message_id);
                self.input(Input::Gossip {
                    id,
                    source,
                    author: message.source.and_then(|p| keys::node_id(&p)),
                    topic,
                    bytes: message.data,
                });
            }
            _ => {}
        }
    }

    fn on_rr(&mut self, protocol: Protocol, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, Message as M};
        match ev {
            E::Message {
                peer,
                message: M::Request {
                    request, channel, ..
                },
                ..
            } => {
                let Some(from) = keys::node_id(&peer) else {
                    return;
                };
                if protocol == Protocol::Swim {
                    // One-way: acknowledge the stream at once.
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .swim
                        .send_response(channel, Vec::new());
                    self.input(Input::Swim {
                        from,
                        bytes: request,
                    });
                    return;
                }
                let id = InboundId(self.next());
                self.channels.insert(id, (protocol, channel));
                self.input(Input::Request {
                    from,
                    protocol,
                    id,
                    bytes: request,
                });
            }
            E::Message {
                peer,
                message:
                    M::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((id, to)) = self.outbound.remove(&(protocol, request_id)) else {
                    return;
                };
                if keys::node_id(&peer) == Some(to) {
                    self.input(Input::Response {
                        from: to,
                        id,
                        bytes: response,
                    });
                }
            }
            E::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some((id, to)) = self.outbound.remove(&(protocol, request_id)) {
                    self.input(Input::RequestFailed {
                        to,
                        id,
                        error: error.to_string(),
                    });
                }
            }
            E::InboundFailure { peer, error, .. } => {
                if let Some(from) = keys::node_id(&peer) {
                    self.input(Input::StreamFailed {
                        from,
                        protocol,
                        error: error.to_string(),
                    });
                }
            }
            E::ResponseSent { .. } => {}
        }
    }
}

/// Most writes taken into one group commit.
const MAX_GROUP: usize = 4096;

/// The store thread: executes persists in order and reports each. Event
/// writes queued together are applied as one transaction with one sync
/// (group commit); a desired-state write between them ends the group, so
/// the order of all writes is kept.
fn spawn_store(
    store: Option<Box<dyn DesiredStore>>,
    sync: EventSync,
    done: mpsc::UnboundedSender<Input>,
) -> std::sync::mpsc::Sender<(brain::PersistId, PersistOp)> {
    use std::sync::mpsc::RecvTimeoutError;
    let (tx, rx) = std::sync::mpsc::channel::<(brain::PersistId, PersistOp)>();
    let spawned = std::thread::Builder::new()
        .name("omega-store".into())
        .spawn(move || {
            let mut store = store;
            let interval = match sync {
                EventSync::Always => None,
                EventSync::Interval(ms) => Some(Duration::from_millis(ms.max(1))),
            };
            let mut unsynced = false;
            let mut group: Vec<(brain::PersistId, omega_gossip::events::EventOps)> = Vec::new();
            loop {
                let first = match interval {
                    Some(every) if unsynced => match rx.recv_timeout(every) {
                        Ok(x) => x,
                        Err(RecvTimeoutError::Timeout) => {
                            if let Some(s) = &mut store
                                && let Err(e) = s.sync()
                            {
                                warn!("event store: sync failed: {e}");
                            }
                            unsynced = false;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    },
                    _ => match rx.recv() {
                        Ok(x) => x,
                        Err(_) => return,
                    },
                };
                let mut batch = vec![first];
                while batch.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(x) => batch.push(x),
                        Err(_) => break,
                    }
                }
                let mut reports = Vec::with_capacity(batch.len());
                for (id, op) in batch {
                    match op {
                        PersistOp::Events(ops) => group.push((id, ops)),
                        other => {
                            flush(
                                &mut store,
                                &mut group,
                                interval,
                                &mut unsynced,
                                &mut reports,
                            );
                            let result = match (&mut store, &other) {
                                (None, _) => Ok(()),
                                (Some(s), PersistOp::Append(u)) => s.append(u),
                                (Some(s), PersistOp::Compact(doc)) => s.compact(doc),
                                (Some(_), _) => Ok(()),
                            };
                            reports.push((id, result));
                        }
                    }
                }
                flush(
                    &mut store,
                    &mut group,
                    interval,
                    &mut unsynced,
                    &mut reports,
                );
                for (id, result) in reports {
                    if done.send(Input::Persisted { id, result }).is_err() {
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the store thread: {e}");
    }
    tx
}

/// Commits the event writes gathered so far as one transaction.
fn flush(
    store: &mut Option<Box<dyn DesiredStore>>,
    group: &mut Vec<(brain::PersistId, omega_gossip::events::EventOps)>,
    interval: Option<Duration>,
    unsynced: &mut bool,
    reports: &mut Vec<(brain::PersistId, Result<(), String>)>,
) {
    if group.is_empty() {
        return;
    }
    let (ids, ops): (Vec<brain::PersistId>, Vec<omega_gossip::events::EventOps>) =
        group.drain(..).unzip();
    let durable = interval.is_none() && ops.iter().any(|o| o.sync);
    let result = match store {
        None => Ok(()),
        Some(s) => s.events(&ops, durable),
    };
    if result.is_ok() && !durable {
        *unsynced = true;
    }
    for id in ids {
        reports.push((id, result.clone()));
    }
}

fn build_swarm(
    key: &omega_identity::Keypair,
    net: &NetConfig,
    topics: &Topics,
    registry: Option<&mut Registry>,
) -> Result<Swarm<Behaviour>, NodeError> {
    let lp_key = keys::libp2p_keypair(key);
    let build = |e: &dyn std::fmt::Display| NodeError::Build(e.to_string());
    let builder = libp2p::SwarmBuilder::with_existing_identity(lp_key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| build(&e))?
        .with_quic();
    let behaviour = |key: &libp2p::identity::Keypair| {
        Behaviour::new(key, net, &[&topics.state, &topics.status])
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    };
    let idle = net.idle_connection_timeout;
    Ok(match registry {
        Some(r) => builder
            .with_bandwidth_metrics(r)
            .with_behaviour(behaviour)
            .map_err(|e| build(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        None => builder
            .with_behaviour(behaviour)
            .map_err(|e| build(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    })
}
