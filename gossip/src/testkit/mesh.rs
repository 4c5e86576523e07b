//! A deterministic harness for whole node brains: many [`Node`]s in one
//! thread, a virtual clock, and a seeded in-memory network that carries
//! exactly what the libp2p driver carries — connections, SWIM messages,
//! requests and responses, gossip with validation and forwarding — plus a
//! durable store per node, blob reads and brane starts.
//!
//! Faults: message loss, latency jitter and a slow tail, duplication and
//! reordering, a per-node egress bandwidth, partitions (messages between
//! groups are dropped, dials between them fail; connections stay open, as
//! they would until QUIC's idle timeout), crashes (in-flight writes are
//! lost; with [`MeshSim::power_loss`] also event-store writes not yet
//! synced), restarts from what was durable, clock skew, slow nodes, slow
//! disks, and a member that sends whatever bytes it likes
//! ([`MeshSim::inject_gossip`], [`MeshSim::inject_request`]).
//!
//! Observers (the simulator's invariants) read what happened through
//! [`MeshSim::drain`] when [`MeshConfig::observe`] is set: every
//! event-store write when it is committed and again when it is durable,
//! every command reply and every node report.
//!
//! Same seed, same calls: the same output trace, byte for byte
//! ([`MeshSim::trace_hash`]). This is what the simulator grows from.
//!
//! ```
//! use omega_gossip::testkit::mesh::{MeshConfig, MeshSim};
//! use omega_gossip::Substrate;
//! let mut sim = MeshSim::new(1, MeshConfig::default());
//! for i in 0..3 {
//!     sim.add_node(&format!("n{i}"), Substrate::Habitat);
//! }
//! sim.run_for(3_000);
//! assert!(sim.all_alive());
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use omega_identity::{ContentId, Keypair};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::desired::{Authority, DesiredRecord};
use crate::events::{Emit, EventId, EventOps, Process, ProcessError, StoredEvents};
use crate::hlc::Hlc;
use crate::id::NodeId;
use crate::join::{InviteSpec, JoinToken};
use crate::membership::State;
use crate::node::{
    BraneKey, Command, CommandId, ConnId, Found, GossipRef, Identity, InboundId, Input, Node,
    Output, PersistOp, Protocol, Reply, Report, RequestId, Started, Topic, Verdict,
};
use crate::placement::{Placed, place_all};
use crate::record::{Capabilities, Profile, Resources, Substrate};
use crate::time::{Mono, Now, Unix};

/// The harness's network, disk and runtime.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Minimum one-way latency, ms. Default 1.
    pub latency: u64,
    /// Extra uniformly random latency, ms. Default 2.
    pub jitter: u64,
    /// Messages lost, per thousand. Default 0.
    pub loss_per_mille: u32,
    /// How long a request waits for an answer that was lost, ms. Default 5 000.
    pub request_timeout: u64,
    /// How long a persist takes, ms. Default 1.
    pub disk_latency: u64,
    /// How long a brane takes to start, ms. Default 5.
    pub start_latency: u64,
    /// How long a brane takes to process one event, ms. Default 1.
    /// The modelled brane emits one event of each type its outgoing edges
    /// carry (same key and payload); a payload of `poison` fails.
    pub process_latency: u64,
    /// Messages given an extra [`MeshConfig::tail_ms`], per thousand (a
    /// slow tail). Default 0.
    pub tail_per_mille: u32,
    /// The tail's extra latency, ms. Default 0.
    pub tail_ms: u64,
    /// SWIM messages and event requests delivered twice, per thousand. Default 0.
    pub dup_per_mille: u32,
    /// Messages held back by an extra [`MeshConfig::reorder_ms`] so later
    /// ones overtake them, per thousand. Default 0.
    pub reorder_per_mille: u32,
    /// How long a reordered message is held back, ms. Default 0.
    pub reorder_ms: u64,
    /// Egress bandwidth of every node, bytes per ms (0: unlimited, the
    /// default). Messages queue behind each other on the sender.
    pub bandwidth: u64,
    /// `None` (the default): an event-store write the node marks `sync` is
    /// durable when it is reported, others with the next such write (the
    /// daemon's `--event-sync always`). `Some(ms)`: every write is
    /// reported at once and sealed every `ms` (`--event-sync MS`); a
    /// [`MeshSim::power_loss`] loses what was not sealed.
    pub sync_interval: Option<u64>,
    /// Modelled branes by brane name; a brane not listed takes
    /// [`MeshConfig::process_latency`], fails only on `poison`, and emits one
    /// event per outgoing edge type.
    pub branes: BTreeMap<String, BraneModel>,
    /// Whether every output is hashed into [`MeshSim::trace_hash`]
    /// (formatting each costs time at scale). Default true.
    pub trace: bool,
    /// Whether [`MeshSim::drain`] collects observations. Default false.
    pub observe: bool,
    /// Gossip mesh degree: each node forwards a message to this many of
    /// its connections (the lowest by a per-pair hash, and every connection
    /// that picked it), as gossipsub's mesh does (its `mesh_n`). Default 6.
    pub gossip_degree: usize,
    /// Unix ms at virtual time 0. Default 1 800 000 000 000.
    pub epoch: u64,
    /// Most messages kept per kind by the wire tap ([`MeshSim::tapped`]):
    /// real SWIM messages, requests and gossip, as fuzz seeds and for
    /// replay by a hostile member. Default 0 (off).
    pub tap: usize,
    /// Whether messages and bytes are counted per link and kind
    /// ([`MeshSim::wire`]). Default false: it costs a map update per
    /// message, which the simulator at scale does not want.
    pub count_wire: bool,
    /// The node configuration (each node gets its own yrs client id).
    pub node: crate::node::Config,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            latency: 1,
            jitter: 2,
            loss_per_mille: 0,
            request_timeout: 5_000,
            disk_latency: 1,
            start_latency: 5,
            process_latency: 1,
            tail_per_mille: 0,
            tail_ms: 0,
            dup_per_mille: 0,
            reorder_per_mille: 0,
            reorder_ms: 0,
            bandwidth: 0,
            sync_interval: None,
            branes: BTreeMap::new(),
            trace: true,
            observe: false,
            gossip_degree: 6,
            epoch: 1_800_000_000_000,
            tap: 0,
            count_wire: false,
            node: crate::node::Config::default(),
        }
    }
}

/// A modelled brane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BraneModel {
    /// Processing time, ms, uniform in `[min, max]`.
    pub process_ms: (u64, u64),
    /// Processings that fail, per thousand (a payload of `poison` always fails).
    pub fail_per_mille: u32,
    /// Events emitted per outgoing edge type, per event processed.
    pub emits: u32,
}

impl Default for BraneModel {
    fn default() -> Self {
        Self {
            process_ms: (1, 1),
            fail_per_mille: 0,
            emits: 1,
        }
    }
}

/// What happened, for observers ([`MeshSim::drain`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Obs {
    /// Node `node` committed an event-store write (the node was told it
    /// is done). `durable`: it is also on disk.
    Committed {
        /// The node.
        node: usize,
        /// The write.
        ops: Arc<EventOps>,
        /// Whether it is durable already.
        durable: bool,
    },
    /// An earlier committed write became durable.
    Sealed {
        /// The node.
        node: usize,
        /// The write.
        ops: Arc<EventOps>,
    },
    /// A power loss dropped this many committed writes that were not sealed.
    Lost {
        /// The node.
        node: usize,
        /// Writes lost.
        writes: usize,
    },
    /// A command's reply.
    Reply {
        /// The node.
        node: usize,
        /// The command.
        id: CommandId,
        /// The reply.
        reply: Reply,
    },
    /// Something a node reported.
    Report {
        /// The node.
        node: usize,
        /// The report.
        report: Box<Report>,
    },
}

/// Faults and paths counted by the harness itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages delivered.
    pub delivered: u64,
    /// Messages dropped (loss, partitions, closed connections).
    pub dropped: u64,
    /// Messages delivered twice.
    pub duplicated: u64,
    /// Messages held back so later ones overtook them.
    pub reordered: u64,
    /// Messages that queued behind others for bandwidth.
    pub throttled: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Processings the brane model failed (poison or its failure rate).
    pub failed_processings: u64,
}

#[derive(Debug)]
enum Ev {
    Timer(usize, u64),
    Deliver(usize, u64, Input),
    Connect(usize, usize),
    Persisted(usize, u64, crate::node::PersistId, PersistOp),
    Started(usize, u64, BraneKey, u64),
    Processed(usize, u64, Box<Process>),
    /// A request's timeout (libp2p request-response's).
    ReqTimeout(usize, u64, NodeId, RequestId),
}

/// One event a modelled brane ran (whether or not its result was then
/// committed): what [`MeshSim::processed`] lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// The node it ran on.
    pub node: usize,
    /// The brane.
    pub brane: BraneKey,
    /// The event id.
    pub id: EventId,
    /// Its key.
    pub key: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// A node's durable event store in the harness (and in the delivery
/// machine's own tests): the two tables, in memory.
#[derive(Debug, Default, Clone)]
pub struct EventStore {
    /// `outbox` rows.
    pub outbox: BTreeMap<u64, Vec<u8>>,
    /// `processed` rows.
    pub processed: BTreeMap<u64, EventId>,
}

impl EventStore {
    /// Applies one transaction.
    pub fn apply(&mut self, ops: &EventOps) {
        for (seq, bytes) in &ops.put {
            self.outbox.insert(*seq, bytes.clone());
        }
        for seq in &ops.delete {
            self.outbox.remove(seq);
        }
        for (o, id) in &ops.processed {
            self.processed.insert(*o, *id);
        }
        for o in &ops.forget {
            self.processed.remove(o);
        }
    }

    /// What a restart loads.
    pub fn stored(&self) -> StoredEvents {
        StoredEvents {
            outbox: self.outbox.iter().map(|(k, v)| (*k, v.clone())).collect(),
            processed: self.processed.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }
}

struct Gossip {
    msg: u64,
    topic: Topic,
    author: NodeId,
    bytes: Arc<[u8]>,
}

/// How long a node remembers a gossip message id (gossipsub's duplicate
/// cache), virtual ms.
const SEEN_TTL: u64 = 120_000;

/// A committed event-store write not yet on disk.
struct Pending {
    ops: Arc<EventOps>,
    /// When it is sealed (`None`: with the next synced write).
    seal_at: Option<u64>,
}

struct SimNode {
    key: Keypair,
    /// Added to this node's unix clock, ms.
    skew: i64,
    /// Added to every message to this node and to its processing, ms.
    slow: u64,
    /// This node's disk latency, ms, when not the default.
    disk: Option<u64>,
    /// When this node's egress is free again.
    egress_at: u64,
    /// When it booted (interval seals count from here).
    booted: u64,
    /// Connected neighbours.
    adjacent: BTreeSet<usize>,
    /// The neighbours this node picked for its gossip mesh, and those that picked it.
    mesh: BTreeSet<usize>,
    grafted_by: BTreeSet<usize>,
    /// What is on disk of the event store.
    synced: EventStore,
    journal: std::collections::VecDeque<Pending>,
    profile: Profile,
    addr: String,
    seeds: Vec<String>,
    node: Option<Node>,
    life: u64,
    store: Vec<Vec<u8>>,
    event_store: EventStore,
    timer: Option<u64>,
    running: BTreeMap<BraneKey, u64>,
    blobs: BTreeMap<ContentId, Vec<u8>>,
    banned: BTreeSet<usize>,
    next_id: u64,
    inbound: BTreeMap<InboundId, (usize, RequestId)>,
    /// Requests of this node not answered yet, and to whom.
    outstanding: BTreeMap<RequestId, usize>,
    gossip: BTreeMap<GossipRef, Gossip>,
    seen: BTreeSet<u64>,
    replies: BTreeMap<CommandId, Reply>,
}

/// What [`MeshSim::converged`] compares: the winning manifests, and each
/// brane's assignment.
type Summary = (Vec<String>, Vec<(String, Vec<(NodeId, u32)>)>);

/// A deterministic mesh of [`Node`]s; see the module docs.
pub struct MeshSim {
    config: MeshConfig,
    now: u64,
    rng: ChaCha8Rng,
    root: Keypair,
    tokens: BTreeMap<Substrate, JoinToken>,
    nodes: Vec<SimNode>,
    index: BTreeMap<NodeId, usize>,
    by_addr: BTreeMap<String, usize>,
    events: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    /// Open connections: (a, b) with a < b, and each side's connection id.
    conns: BTreeMap<(usize, usize), u64>,
    dialing: BTreeSet<(usize, usize)>,
    groups: Option<Vec<u32>>,
    next_conn: u64,
    next_msg: u64,
    trace: blake3::Hasher,
    trace_lines: u64,
    tapped: BTreeMap<&'static str, Vec<Vec<u8>>>,
    /// Messages and bytes sent, by (from, to, kind).
    wire: BTreeMap<(usize, usize, &'static str), (u64, u64)>,
    ran: Vec<Ran>,
    hlc_counter: u32,
    traffic: Traffic,
    obs: Vec<(u64, Obs)>,
    /// Gossip published (time, first message id), to expire `seen` ids.
    published: std::collections::VecDeque<(u64, u64)>,
    seen_floor: u64,
}

impl std::fmt::Debug for MeshSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshSim")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl MeshSim {
    /// A mesh with no nodes yet; `seed` decides every random choice.
    pub fn new(seed: u64, config: MeshConfig) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(s);
        let mut root_seed = [0u8; 32];
        rng.fill_bytes(&mut root_seed);
        let root = Keypair::from_seed(root_seed);
        let mut tokens = BTreeMap::new();
        for substrate in Substrate::ALL {
            let spec = InviteSpec {
                substrate,
                name_pattern: None,
                expires_at: config.epoch / 1000 + 30 * 86_400,
            };
            let mut invite = [0u8; 32];
            rng.fill_bytes(&mut invite);
            if let Ok(t) = JoinToken::mint(&root, &spec, invite, vec![substrate as u8]) {
                tokens.insert(substrate, t);
            }
        }
        Self {
            config,
            now: 0,
            rng,
            root,
            tokens,
            nodes: Vec::new(),
            index: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            events: BTreeMap::new(),
            seq: 0,
            conns: BTreeMap::new(),
            dialing: BTreeSet::new(),
            groups: None,
            next_conn: 0,
            next_msg: 0,
            trace: blake3::Hasher::new(),
            trace_lines: 0,
            tapped: BTreeMap::new(),
            wire: BTreeMap::new(),
            ran: Vec::new(),
            hlc_counter: 0,
            traffic: Traffic::default(),
            obs: Vec::new(),
            published: std::collections::VecDeque::new(),
            seen_floor: 0,
        }
    }

    /// The mesh root's key (it signs records in [`MeshSim::apply`]).
    pub fn root(&self) -> &Keypair {
        &self.root
    }

    /// The join token for `substrate`.
    pub fn token(&self, substrate: Substrate) -> Option<&JoinToken> {
        self.tokens.get(&substrate)
    }

    /// Adds and starts a node named `name`; every node after the first is
    /// given the first one's address as its static peer. Returns its index.
    pub fn add_node(&mut self, name: &str, substrate: Substrate) -> usize {
        let token = self.tokens.get(&substrate).cloned();
        self.add_node_with(name, substrate, Capabilities::STANDARD, token)
    }

    /// Adds a node with the given capabilities and token (`None`: no token).
    pub fn add_node_with(
        &mut self,
        name: &str,
        substrate: Substrate,
        capabilities: Capabilities,
        token: Option<JoinToken>,
    ) -> usize {
        self.add_node_full(name, substrate, capabilities, 8 << 30, token)
    }

    /// Adds a node advertising `memory_bytes` of memory.
    pub fn add_node_full(
        &mut self,
        name: &str,
        substrate: Substrate,
        capabilities: Capabilities,
        memory_bytes: u64,
        token: Option<JoinToken>,
    ) -> usize {
        let i = self.nodes.len();
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let key = Keypair::from_seed(seed);
        let addr = format!("/sim/{i}");
        // The first live node, and one more live node at random.
        let live = self.live();
        let mut seeds: Vec<String> = live
            .first()
            .map(|&j| self.nodes[j].addr.clone())
            .into_iter()
            .collect();
        if live.len() > 1 {
            let j = live[(self.rng.next_u64() % live.len() as u64) as usize];
            if !seeds.contains(&self.nodes[j].addr) {
                seeds.push(self.nodes[j].addr.clone());
            }
        }
        self.index.insert(NodeId::from(key.public()), i);
        self.by_addr.insert(addr.clone(), i);
        self.nodes.push(SimNode {
            key,
            skew: 0,
            slow: 0,
            disk: None,
            egress_at: 0,
            booted: 0,
            adjacent: BTreeSet::new(),
            mesh: BTreeSet::new(),
            grafted_by: BTreeSet::new(),
            synced: EventStore::default(),
            journal: std::collections::VecDeque::new(),
            profile: Profile {
                name: name.into(),
                substrate,
                capabilities,
                resources: Resources {
                    cpu_millis: 4000,
                    memory_bytes,
                },
                addresses: Vec::new(),
            },
            addr,
            seeds,
            node: None,
            life: 0,
            store: Vec::new(),
            event_store: EventStore::default(),
            timer: None,
            running: BTreeMap::new(),
            blobs: BTreeMap::new(),
            banned: BTreeSet::new(),
            next_id: 0,
            inbound: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            gossip: BTreeMap::new(),
            seen: BTreeSet::new(),
            replies: BTreeMap::new(),
        });
        self.boot(i, token);
        i
    }

    fn time(&self, i: usize) -> Now {
        Now {
            mono: Mono(self.now),
            unix: Unix((self.config.epoch + self.now).saturating_add_signed(self.nodes[i].skew)),
        }
    }

    fn boot(&mut self, i: usize, token: Option<JoinToken>) {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let now = self.time(i);
        let booted = self.now;
        let n = &mut self.nodes[i];
        n.life += 1;
        n.booted = booted;
        n.egress_at = booted;
        let mut config = self.config.node.clone();
        config.desired.client_id = ((i as u64) << 20 | n.life) & ((1 << 53) - 1) | 1;
        let identity = Identity {
            key: n.key.clone(),
            token,
            profile: n.profile.clone(),
        };
        match Node::new(config, identity, &n.store, seed, now) {
            Ok(mut node) => {
                node.restore_events(n.event_store.stored());
                n.node = Some(node);
            }
            Err(e) => panic!("node {i} does not start: {e}"),
        }
        n.timer = None;
        let (addr, seeds) = (n.addr.clone(), n.seeds.clone());
        self.input(i, Input::Listening { addr });
        let found = seeds
            .into_iter()
            .map(|addr| Found { addr, peer: None })
            .collect();
        self.input(i, Input::Discovered(found));
    }

    /// Crashes node `i`: its in-flight writes are lost; peers see its
    /// connections close.
    pub fn crash(&mut self, i: usize) {
        self.crash_with(i, false);
    }

    /// Crashes node `i` as a power loss does: besides in-flight writes,
    /// event-store writes that were committed but not yet sealed are lost
    /// (only under [`MeshConfig::sync_interval`], or removals not yet
    /// followed by a synced write).
    pub fn power_loss(&mut self, i: usize) {
        self.crash_with(i, true);
    }

    fn crash_with(&mut self, i: usize, lose_unsynced: bool) {
        if self.nodes[i].node.is_none() {
            return;
        }
        if lose_unsynced {
            self.seal(i);
            let n = &mut self.nodes[i];
            let writes = n.journal.len();
            n.journal.clear();
            n.event_store = n.synced.clone();
            if writes > 0 && self.config.observe {
                self.obs.push((self.now, Obs::Lost { node: i, writes }));
            }
        } else {
            // A killed process leaves its committed writes to the OS.
            self.flush_journal(i);
        }
        self.nodes[i].node = None;
        self.nodes[i].life += 1;
        self.nodes[i].running.clear();
        self.nodes[i].inbound.clear();
        self.nodes[i].outstanding.clear();
        self.nodes[i].gossip.clear();
        let mine: Vec<usize> = self.nodes[i].adjacent.iter().copied().collect();
        for other in mine {
            self.close(i, other, false);
        }
    }

    /// Every event a modelled brane ran, in order.
    pub fn processed(&self) -> &[Ran] {
        &self.ran
    }

    /// Events from outside, submitted on node `i` (`omega emit`).
    /// The grant is signed by the mesh root for the first event's manifest.
    pub fn emit(&mut self, i: usize, events: Vec<crate::events::NewEvent>) -> CommandId {
        let manifest = events
            .first()
            .map(|e| e.to.manifest.clone())
            .unwrap_or_default();
        let grant = DesiredRecord::emit_grant(&manifest, self.authority())
            .unwrap_or_else(|e| panic!("signing an emit grant: {e}"))
            .encode();
        self.command(i, Command::Emit { grant, events })
    }

    /// Node `i`'s delivery figures, if it runs.
    pub fn events(&self, i: usize) -> Option<crate::events::EventReport> {
        self.nodes[i].node.as_ref().map(Node::events)
    }

    /// The modelled brane: one emit per outgoing edge type, `poison` fails.
    fn model(&self, i: usize, p: &Process) -> Result<Vec<Emit>, ProcessError> {
        let Some(node) = self.nodes[i].node.as_ref() else {
            return Err(ProcessError::NotRunning);
        };
        if !self.nodes[i].running.contains_key(&p.to) {
            return Err(ProcessError::NotRunning);
        }
        let model = self.config.branes.get(&p.to.brane);
        if p.event.payload == b"poison" {
            return Err(ProcessError::Failed("poisoned".into()));
        }
        let emits = model.map_or(1, |m| m.emits) as usize;
        let mut types: Vec<&str> = node
            .event_topology()
            .edges
            .get(&p.to.manifest)
            .map(|es| {
                es.iter()
                    .filter(|e| e.from == p.to.brane)
                    .map(|e| e.on.as_str())
                    .collect()
            })
            .unwrap_or_default();
        types.sort_unstable();
        types.dedup();
        Ok(types
            .into_iter()
            .flat_map(|ty| std::iter::repeat_n(ty, emits))
            .map(|ty| Emit {
                ty: ty.to_owned(),
                key: p.event.key.clone(),
                payload: p.event.payload.clone(),
            })
            .collect())
    }

    /// Whether the brane model fails this processing (its failure rate).
    fn model_fails(&mut self, brane: &str) -> bool {
        let rate = self
            .config
            .branes
            .get(brane)
            .map_or(0, |m| m.fail_per_mille);
        rate > 0 && (self.rng.next_u64() % 1000) < u64::from(rate)
    }

    fn process_time(&mut self, i: usize, brane: &str) -> u64 {
        let (lo, hi) = self.config.branes.get(brane).map_or(
            (self.config.process_latency, self.config.process_latency),
            |m| m.process_ms,
        );
        let span = hi.saturating_sub(lo);
        let t = lo
            + if span == 0 {
                0
            } else {
                self.rng.next_u64() % (span + 1)
            };
        t + self.nodes[i].slow
    }

    /// Sets node `i`'s clock skew (ms added to its unix clock; its
    /// monotonic clock is unaffected). Takes effect with its next input.
    pub fn set_skew(&mut self, i: usize, ms: i64) {
        self.nodes[i].skew = ms;
    }

    /// Makes node `i` slow: `ms` more for every message it receives and
    /// every event it processes (0: normal again).
    pub fn set_slow(&mut self, i: usize, ms: u64) {
        self.nodes[i].slow = ms;
    }

    /// Sets node `i`'s disk latency, ms (`None`: the configured default).
    pub fn set_disk(&mut self, i: usize, ms: Option<u64>) {
        self.nodes[i].disk = ms;
    }

    /// Node `i` publishes `bytes` on `topic` as their author, whatever
    /// they are: a member misbehaving. Its neighbours validate them as they
    /// would anything else.
    pub fn inject_gossip(&mut self, i: usize, topic: Topic, bytes: Vec<u8>) {
        if self.nodes[i].node.is_none() {
            return;
        }
        let msg = self.new_msg();
        self.nodes[i].seen.insert(msg);
        let me = self.id(i);
        self.forward(i, None, msg, topic, me, bytes.into());
    }

    /// Node `i` sends `bytes` as a request on `protocol` to node `j`
    /// (the answer travels back, counted in [`MeshSim::wire`], and `i`'s
    /// brain never sees it).
    pub fn inject_request(&mut self, i: usize, j: usize, protocol: Protocol, bytes: Vec<u8>) {
        if self.nodes[i].node.is_none() || !self.passes(i, j) {
            return;
        }
        let me = self.id(i);
        let n = &mut self.nodes[j];
        n.next_id += 1;
        let id = InboundId(n.next_id);
        // An id `i` never issued: the answer is dropped on arrival.
        n.inbound.insert(id, (i, RequestId(u64::MAX)));
        let input = if protocol == Protocol::Swim {
            Input::Swim { from: me, bytes }
        } else {
            Input::Request {
                from: me,
                protocol,
                id,
                bytes,
            }
        };
        let size = input_size(&input);
        self.send(i, j, input, size);
    }

    /// What happened since the last call (with [`MeshConfig::observe`]),
    /// each with its virtual time.
    pub fn drain(&mut self) -> Vec<(u64, Obs)> {
        std::mem::take(&mut self.obs)
    }

    /// Seals, on every live node, the event-store writes whose sync is due.
    pub fn seal_due(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].node.is_some() {
                self.seal(i);
            }
        }
    }

    fn seal(&mut self, i: usize) {
        self.seal_where(i, false);
    }

    /// Moves every committed write of node `i` to disk.
    fn flush_journal(&mut self, i: usize) {
        self.seal_where(i, true);
    }

    /// Moves node `i`'s committed writes to disk, oldest first: those whose
    /// seal is due, or (`all`) every one.
    fn seal_where(&mut self, i: usize, all: bool) {
        let now = self.now;
        while let Some(p) = self.nodes[i].journal.front() {
            if !all && p.seal_at.is_none_or(|t| t > now) {
                break;
            }
            let Some(p) = self.nodes[i].journal.pop_front() else {
                break;
            };
            self.nodes[i].synced.apply(&p.ops);
            if self.config.observe {
                self.obs.push((
                    now,
                    Obs::Sealed {
                        node: i,
                        ops: p.ops,
                    },
                ));
            }
        }
    }

    /// Commits one event-store write on node `i` (it is reported done).
    fn commit_events(&mut self, i: usize, ops: EventOps) {
        self.seal(i);
        let ops = Arc::new(ops);
        let now = self.now;
        let interval = self.config.sync_interval;
        self.nodes[i].event_store.apply(&ops);
        let durable = match interval {
            None if ops.sync => {
                // A synced write seals everything before it.
                self.flush_journal(i);
                self.nodes[i].synced.apply(&ops);
                true
            }
            None => {
                self.nodes[i].journal.push_back(Pending {
                    ops: ops.clone(),
                    seal_at: None,
                });
                false
            }
            Some(ms) => {
                // Each node seals on its own phase (not all on round times).
                let n = &mut self.nodes[i];
                let ms = ms.max(1);
                let origin = n.booted + ((i as u64 + 1) * 7_919 + n.life * 131) % ms;
                let since = now.saturating_sub(origin);
                let seal_at = origin + since.div_ceil(ms).max(1) * ms;
                n.journal.push_back(Pending {
                    ops: ops.clone(),
                    seal_at: Some(seal_at),
                });
                false
            }
        };
        if self.config.observe {
            self.obs.push((
                self.now,
                Obs::Committed {
                    node: i,
                    ops,
                    durable,
                },
            ));
        }
    }

    /// Restarts a crashed node from what it had made durable.
    pub fn restart(&mut self, i: usize) {
        let token = self.tokens.get(&self.nodes[i].profile.substrate).cloned();
        self.boot(i, token);
    }

    /// Splits the nodes into groups (`groups[i]` for node `i`): messages
    /// between groups are dropped and dials between them fail.
    pub fn partition(&mut self, groups: Vec<u32>) {
        self.groups = Some(groups);
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// Runs a local command on node `i`; its reply shows in [`MeshSim::reply`].
    pub fn command(&mut self, i: usize, command: Command) -> CommandId {
        let n = &mut self.nodes[i];
        n.next_id += 1;
        let id = CommandId(n.next_id);
        self.input(i, Input::Command { id, command });
        id
    }

    /// The reply to command `id` on node `i`, once there is one.
    pub fn reply(&self, i: usize, id: CommandId) -> Option<&Reply> {
        self.nodes[i].replies.get(&id)
    }

    /// Signs `manifest` (TOML) as manifest `name` with the mesh root and
    /// writes it through node `i`.
    pub fn apply(&mut self, i: usize, name: &str, manifest: &str) -> CommandId {
        let plan = omega_zgraph::load(manifest, name, omega_zgraph::Format::Toml)
            .unwrap_or_else(|e| panic!("test manifest {name}: {e}"));
        let hlc = self.next_hlc();
        let record = DesiredRecord::apply(name, &plan, hlc, self.authority())
            .unwrap_or_else(|e| panic!("signing {name}: {e}"));
        self.command(i, Command::Write(record.encode()))
    }

    /// Writes a signed `/manifest/delete` of `name` through node `i`.
    pub fn delete(&mut self, i: usize, name: &str) -> CommandId {
        let hlc = self.next_hlc();
        let record = DesiredRecord::delete(name, hlc, self.authority())
            .unwrap_or_else(|e| panic!("signing delete {name}: {e}"));
        self.command(i, Command::Write(record.encode()))
    }

    /// Writes a root-signed revocation through node `i`.
    pub fn revoke(&mut self, i: usize, target: crate::desired::Revocation) -> CommandId {
        let hlc = self.next_hlc();
        let record = DesiredRecord::revoke(target, hlc, self.authority())
            .unwrap_or_else(|e| panic!("signing a revocation: {e}"));
        self.command(i, Command::Write(record.encode()))
    }

    fn next_hlc(&mut self) -> Hlc {
        self.hlc_counter += 1;
        Hlc::new(self.config.epoch + self.now, self.hlc_counter)
    }

    fn authority(&mut self) -> Authority<'_> {
        let mut nonce = vec![0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        Authority {
            signer: &self.root,
            mesh_root: self.root.did(),
            proofs: Vec::new(),
            exp: self.config.epoch / 1000 + 86_400,
            nonce,
        }
    }

    /// Gives node `i` an image blob to serve.
    pub fn add_blob(&mut self, i: usize, bytes: Vec<u8>) -> ContentId {
        let id = ContentId::of(&bytes);
        self.nodes[i].blobs.insert(id, bytes);
        id
    }

    // ----- running ---------------------------------------------------------------

    /// Runs until virtual time `now + ms`.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        while let Some((&(at, seq), _)) = self.events.first_key_value() {
            if at > until {
                break;
            }
            let Some(ev) = self.events.remove(&(at, seq)) else {
                break;
            };
            self.now = self.now.max(at);
            self.fire(ev);
        }
        self.now = until;
    }

    /// Runs until `done` holds (checked every 100 ms) or `max_ms` pass;
    /// returns whether it held.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + max_ms;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.run_for(100.min(end - self.now));
        }
        done(self)
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert((at, self.seq), ev);
    }

    fn latency(&mut self) -> u64 {
        let j = self.config.jitter;
        self.config.latency
            + if j == 0 {
                0
            } else {
                self.rng.next_u64() % (j + 1)
            }
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[a].node.is_some()
            && self.nodes[b].node.is_some()
            && self.groups.as_ref().is_none_or(|g| g.get(a) == g.get(b))
    }

    /// Whether a message from `a` to `b` gets through now.
    fn passes(&mut self, a: usize, b: usize) -> bool {
        if !self.reachable(a, b) || !self.connected(a, b) {
            self.traffic.dropped += 1;
            return false;
        }
        let loss = self.config.loss_per_mille;
        if loss > 0 && (self.rng.next_u64() % 1000) < u64::from(loss) {
            self.traffic.dropped += 1;
            return false;
        }
        self.traffic.delivered += 1;
        true
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        self.conns.contains_key(&(a.min(b), a.max(b)))
    }

    fn id(&self, i: usize) -> NodeId {
        NodeId::from(self.nodes[i].key.public())
    }

    fn fire(&mut self, ev: Ev) {
        match ev {
            Ev::Timer(i, at) => {
                if self.nodes[i].timer == Some(at) {
                    self.nodes[i].timer = None;
                    self.input(i, Input::Timeout);
                }
            }
            Ev::Deliver(i, life, input) => {
                if self.nodes[i].life != life {
                    return;
                }
                // An answer to a request that already failed goes nowhere.
                if let Input::Response { id, .. } = &input
                    && self.nodes[i].outstanding.remove(id).is_none()
                {
                    return;
                }
                self.input(i, input);
            }
            Ev::ReqTimeout(i, life, to, id) => {
                if self.nodes[i].life == life && self.nodes[i].outstanding.remove(&id).is_some() {
                    let error = "timed out".to_owned();
                    self.input(i, Input::RequestFailed { to, id, error });
                }
            }
            Ev::Connect(a, b) => {
                self.dialing.remove(&(a, b));
                if !self.reachable(a, b) || self.nodes[b].banned.contains(&a) {
                    self.fail_dial(a, b);
                    return;
                }
                let key = (a.min(b), a.max(b));
                if self.conns.contains_key(&key) {
                    return;
                }
                self.next_conn += 1;
                let conn = self.next_conn;
                self.conns.insert(key, conn);
                self.nodes[a].adjacent.insert(b);
                self.nodes[b].adjacent.insert(a);
                self.remesh(a);
                self.remesh(b);
                let (ida, idb) = (self.id(a), self.id(b));
                let (addr_a, addr_b) = (self.nodes[a].addr.clone(), self.nodes[b].addr.clone());
                self.input(
                    a,
                    Input::ConnectionUp {
                        peer: idb,
                        conn: ConnId(conn),
                        remote: addr_b,
                    },
                );
                self.input(
                    b,
                    Input::ConnectionUp {
                        peer: ida,
                        conn: ConnId(conn),
                        remote: addr_a,
                    },
                );
            }
            Ev::Persisted(i, life, id, op) => {
                if self.nodes[i].life != life {
                    return; // crashed before the write completed
                }
                match op {
                    PersistOp::Append(u) => self.nodes[i].store.push(u),
                    PersistOp::Compact(doc) => self.nodes[i].store = vec![doc],
                    PersistOp::Events(ops) => self.commit_events(i, ops),
                }
                self.input(i, Input::Persisted { id, result: Ok(()) });
            }
            Ev::Processed(i, life, p) => {
                if self.nodes[i].life != life {
                    return;
                }
                let result = if self.model_fails(&p.to.brane) {
                    Err(ProcessError::Failed("the brane model failed".into()))
                } else {
                    self.model(i, &p)
                };
                if result.is_err() {
                    self.traffic.failed_processings += 1;
                }
                self.ran.push(Ran {
                    node: i,
                    brane: p.to.clone(),
                    id: p.event.id,
                    key: p.event.key.clone(),
                    payload: p.event.payload.clone(),
                });
                self.input(
                    i,
                    Input::Processed {
                        ticket: p.ticket,
                        result,
                    },
                );
            }
            Ev::Started(i, life, key, attempt) => {
                if self.nodes[i].life != life {
                    return;
                }
                self.nodes[i].running.insert(key.clone(), attempt);
                self.input(
                    i,
                    Input::BraneStarted {
                        key,
                        attempt,
                        result: Ok(Started::default()),
                    },
                );
            }
        }
    }

    fn fail_dial(&mut self, a: usize, b: usize) {
        let peer = self.id(b);
        let life = self.nodes[a].life;
        let at = self.now + self.config.latency;
        self.schedule(at, Ev::Deliver(a, life, Input::DialFailed { peer }));
    }

    fn close(&mut self, a: usize, b: usize, tell_a: bool) {
        let key = (a.min(b), a.max(b));
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        self.nodes[a].adjacent.remove(&b);
        self.nodes[b].adjacent.remove(&a);
        self.remesh(a);
        self.remesh(b);
        self.fail_requests(a, b);
        self.fail_requests(b, a);
        let (ida, idb) = (self.id(a), self.id(b));
        if tell_a {
            self.input(
                a,
                Input::ConnectionDown {
                    peer: idb,
                    conn: ConnId(conn),
                },
            );
        }
        let at = self.now + self.latency();
        let life = self.nodes[b].life;
        self.schedule(
            at,
            Ev::Deliver(
                b,
                life,
                Input::ConnectionDown {
                    peer: ida,
                    conn: ConnId(conn),
                },
            ),
        );
    }

    /// Feeds one input to node `i` and carries out everything it outputs.
    fn input(&mut self, i: usize, input: Input) {
        let now = self.time(i);
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        node.handle_input(input, now);
        let mut outputs = Vec::new();
        while let Some(o) = node.poll_output() {
            outputs.push(o);
        }
        let next = node.poll_timeout().0.max(self.now + 1);
        for o in outputs {
            if self.config.trace {
                self.trace_line(i, &o);
            }
            self.output(i, o);
        }
        let n = &mut self.nodes[i];
        if n.node.is_some() && n.timer.is_none_or(|t| next < t) {
            n.timer = Some(next);
            self.schedule(next, Ev::Timer(i, next));
        }
    }

    fn trace_line(&mut self, i: usize, o: &Output) {
        self.trace_lines += 1;
        let line = format!("{} {i} {o:?}\n", self.now);
        self.trace.update(line.as_bytes());
    }

    fn output(&mut self, i: usize, o: Output) {
        let me = self.id(i);
        match o {
            Output::Transmit { to, bytes } => {
                if let Some(j) = self.index.get(&to).copied()
                    && self.passes(i, j)
                {
                    let size = bytes.len();
                    let input = Input::Swim { from: me, bytes };
                    if self.chance(self.config.dup_per_mille) {
                        self.traffic.duplicated += 1;
                        self.send(i, j, input.clone(), size);
                    }
                    self.send(i, j, input, size);
                }
            }
            Output::Request {
                to,
                protocol,
                id,
                bytes,
            } => self.request(i, to, protocol, id, bytes),
            Output::Respond { id, bytes } => {
                let Some((j, req)) = self.nodes[i].inbound.remove(&id) else {
                    return;
                };
                // A lost answer: the requester's timeout fires.
                if self.passes(i, j) {
                    let size = bytes.len();
                    let input = Input::Response {
                        from: me,
                        id: req,
                        bytes,
                    };
                    self.send(i, j, input, size);
                }
            }
            Output::Publish { topic, bytes } => {
                let msg = self.new_msg();
                self.nodes[i].seen.insert(msg);
                self.forward(i, None, msg, topic, me, bytes.into());
            }
            Output::Validate {
                id,
                source,
                verdict,
            } => {
                let Some(g) = self.nodes[i].gossip.remove(&id) else {
                    return;
                };
                if verdict == Verdict::Accept {
                    let from = self.index.get(&source).copied();
                    self.forward(i, from, g.msg, g.topic, g.author, g.bytes);
                }
            }
            Output::Persist { id, op } => {
                let at = self.now + self.nodes[i].disk.unwrap_or(self.config.disk_latency);
                let life = self.nodes[i].life;
                self.schedule(at, Ev::Persisted(i, life, id, op));
            }
            Output::ReadBlob {
                id,
                content,
                offset,
                max,
            } => {
                let result = Ok(self.nodes[i].blobs.get(&content).map(|b| {
                    let start = (offset as usize).min(b.len());
                    let end = start.saturating_add(max).min(b.len());
                    (b.len() as u64, b[start..end].to_vec())
                }));
                let at = self.now + self.config.disk_latency;
                let life = self.nodes[i].life;
                self.schedule(at, Ev::Deliver(i, life, Input::BlobRead { id, result }));
            }
            Output::Dial { peer, addrs } => {
                let target = peer
                    .and_then(|p| self.index.get(&p).copied())
                    .or_else(|| addrs.iter().find_map(|a| self.by_addr.get(a).copied()));
                let Some(j) = target.filter(|j| *j != i) else {
                    return;
                };
                if self.connected(i, j) || !self.dialing.insert((i, j)) {
                    return;
                }
                let at = self.now + self.latency();
                if self.reachable(i, j) {
                    self.schedule(at, Ev::Connect(i, j));
                } else {
                    self.dialing.remove(&(i, j));
                    self.fail_dial(i, j);
                }
            }
            Output::Disconnect { peer, .. } => {
                if let Some(j) = self.index.get(&peer).copied() {
                    self.close(i, j, true);
                }
            }
            Output::Ban { peer } => {
                if let Some(j) = self.index.get(&peer).copied() {
                    self.nodes[i].banned.insert(j);
                    self.close(i, j, true);
                }
            }
            Output::Unban { peer } => {
                if let Some(j) = self.index.get(&peer).copied() {
                    self.nodes[i].banned.remove(&j);
                }
            }
            Output::Start(s) => {
                let at = self.now + self.config.start_latency;
                let life = self.nodes[i].life;
                self.schedule(at, Ev::Started(i, life, s.key, s.attempt));
            }
            Output::Stop { key, attempt } => {
                let running = &mut self.nodes[i].running;
                if running.get(&key).is_some_and(|a| *a <= attempt) {
                    running.remove(&key);
                }
            }
            Output::Reply { id, reply } => {
                if self.config.observe {
                    self.obs.push((
                        self.now,
                        Obs::Reply {
                            node: i,
                            id,
                            reply: reply.clone(),
                        },
                    ));
                }
                self.nodes[i].replies.insert(id, reply);
            }
            Output::Process(p) => {
                let at = self.now + self.process_time(i, &p.to.brane);
                let life = self.nodes[i].life;
                self.schedule(at, Ev::Processed(i, life, p));
            }
            Output::Report(report) => {
                if self.config.observe && observed(&report) {
                    self.obs.push((
                        self.now,
                        Obs::Report {
                            node: i,
                            report: Box::new(report),
                        },
                    ));
                }
            }
            Output::Ready { .. } => {}
        }
    }

    fn request(&mut self, i: usize, to: NodeId, protocol: Protocol, id: RequestId, bytes: Vec<u8>) {
        let me = self.id(i);
        let Some(j) = self.index.get(&to).copied() else {
            self.nodes[i].outstanding.insert(id, usize::MAX);
            return self.time_out(i, to, id);
        };
        if !self.connected(i, j) {
            let life = self.nodes[i].life;
            let at = self.now + 1;
            let error = "not connected".to_owned();
            return self.schedule(
                at,
                Ev::Deliver(i, life, Input::RequestFailed { to, id, error }),
            );
        }
        if protocol != Protocol::Swim {
            self.nodes[i].outstanding.insert(id, j);
            self.time_out(i, to, id);
        }
        if !self.passes(i, j) {
            return;
        }
        let copies = if protocol == Protocol::Event && self.chance(self.config.dup_per_mille) {
            self.traffic.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let n = &mut self.nodes[j];
            n.next_id += 1;
            let inbound = InboundId(n.next_id);
            n.inbound.insert(inbound, (i, id));
            let size = bytes.len();
            let input = if protocol == Protocol::Swim {
                Input::Swim {
                    from: me,
                    bytes: bytes.clone(),
                }
            } else {
                Input::Request {
                    from: me,
                    protocol,
                    id: inbound,
                    bytes: bytes.clone(),
                }
            };
            self.send(i, j, input, size);
        }
    }

    fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && (self.rng.next_u64() % 1000) < u64::from(per_mille)
    }

    /// Carries a message of `size` bytes from `i` to `j`: bandwidth, the
    /// latency with its tail, reordering, and `j`'s slowness.
    fn send(&mut self, i: usize, j: usize, input: Input, size: usize) {
        if self.config.tap > 0 {
            self.tap(&input);
        }
        let kind = match &input {
            _ if !self.config.count_wire => None,
            Input::Response { .. } => Some("response"),
            other => tap_kind(other).map(|(kind, _)| kind),
        };
        if let Some(kind) = kind {
            let w = self.wire.entry((i, j, kind)).or_default();
            w.0 += 1;
            w.1 += size as u64;
        }
        self.traffic.bytes += size as u64;
        let mut at = self.now;
        let bw = self.config.bandwidth;
        if bw > 0 {
            let n = &mut self.nodes[i];
            let start = n.egress_at.max(self.now);
            if start > self.now {
                self.traffic.throttled += 1;
            }
            n.egress_at = start + (size as u64).div_ceil(bw);
            at = n.egress_at;
        }
        at += self.latency() + self.nodes[j].slow;
        if self.chance(self.config.tail_per_mille) {
            at += self.config.tail_ms;
        }
        if self.chance(self.config.reorder_per_mille) {
            self.traffic.reordered += 1;
            at += self.config.reorder_ms;
        }
        let life = self.nodes[j].life;
        self.schedule(at, Ev::Deliver(j, life, input));
    }

    fn time_out(&mut self, i: usize, to: NodeId, id: RequestId) {
        let at = self.now + self.config.request_timeout;
        let life = self.nodes[i].life;
        self.schedule(at, Ev::ReqTimeout(i, life, to, id));
    }

    /// A closed connection fails every request still open on it, both
    /// ways (as libp2p's request-response does).
    fn fail_requests(&mut self, x: usize, y: usize) {
        let to = self.id(y);
        let open: Vec<RequestId> = self.nodes[x]
            .outstanding
            .iter()
            .filter(|(_, t)| **t == y)
            .map(|(id, _)| *id)
            .collect();
        let life = self.nodes[x].life;
        for id in open {
            self.nodes[x].outstanding.remove(&id);
            let error = "connection closed".to_owned();
            self.schedule(
                self.now,
                Ev::Deliver(x, life, Input::RequestFailed { to, id, error }),
            );
        }
    }

    fn new_msg(&mut self) -> u64 {
        self.next_msg += 1;
        let msg = self.next_msg;
        self.published.push_back((self.now, msg));
        while let Some(&(t, m)) = self.published.front() {
            if self.now.saturating_sub(t) <= SEEN_TTL {
                break;
            }
            self.published.pop_front();
            self.seen_floor = m + 1;
        }
        msg
    }

    /// Re-picks node `i`'s gossip mesh after its connections changed: its
    /// `gossip_degree` neighbours with the lowest per-pair hash.
    fn remesh(&mut self, i: usize) {
        let d = self.config.gossip_degree.max(1);
        let mix = |a: usize, b: usize| {
            let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
            (lo.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ hi.wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
                .rotate_left(29)
                .wrapping_mul(0x1656_67b1_9e37_79f9)
        };
        let mut ranked: Vec<(u64, usize)> = self.nodes[i]
            .adjacent
            .iter()
            .map(|&j| (mix(i, j), j))
            .collect();
        ranked.sort_unstable();
        let new: BTreeSet<usize> = ranked.into_iter().take(d).map(|(_, j)| j).collect();
        let old = std::mem::take(&mut self.nodes[i].mesh);
        for j in old.difference(&new) {
            self.nodes[*j].grafted_by.remove(&i);
        }
        for j in new.difference(&old) {
            self.nodes[*j].grafted_by.insert(i);
        }
        self.nodes[i].mesh = new;
    }

    /// Gossip: hands message `msg` to the neighbours in `i`'s mesh (but
    /// `from`) that have not seen it; each validates before forwarding.
    fn forward(
        &mut self,
        i: usize,
        from: Option<usize>,
        msg: u64,
        topic: Topic,
        author: NodeId,
        bytes: Arc<[u8]>,
    ) {
        let source = self.id(i);
        let n = &self.nodes[i];
        let neighbors: Vec<usize> = n
            .mesh
            .union(&n.grafted_by)
            .copied()
            .filter(|j| Some(*j) != from)
            .collect();
        let floor = self.seen_floor;
        for j in neighbors {
            if self.nodes[j].seen.contains(&msg) || !self.passes(i, j) {
                continue;
            }
            let n = &mut self.nodes[j];
            n.seen.insert(msg);
            if n.seen.first().is_some_and(|m| *m < floor) && n.seen.len().is_multiple_of(64) {
                n.seen = n.seen.split_off(&floor);
            }
            n.next_id += 1;
            let id = GossipRef(n.next_id);
            n.gossip.insert(
                id,
                Gossip {
                    msg,
                    topic,
                    author,
                    bytes: bytes.clone(),
                },
            );
            let input = Input::Gossip {
                id,
                source,
                author: Some(author),
                topic,
                bytes: bytes.to_vec(),
            };
            self.send(i, j, input, bytes.len());
        }
    }

    // ----- queries -------------------------------------------------------------

    /// Virtual ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Nodes added (live or crashed).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s brain, unless it is crashed.
    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].node.as_ref()
    }

    /// Node `i`'s id.
    pub fn node_id(&self, i: usize) -> NodeId {
        self.id(i)
    }

    /// The branes node `i` runs now.
    pub fn running(&self, i: usize) -> BTreeSet<BraneKey> {
        self.nodes[i].running.keys().cloned().collect()
    }

    /// Nodes that are not crashed.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].node.is_some())
            .collect()
    }

    /// Whether every live node sees every other live node alive.
    pub fn all_alive(&self) -> bool {
        let live = self.live();
        live.iter().all(|&i| {
            let Some(n) = self.node(i) else { return false };
            live.iter().filter(|j| **j != i).all(|&j| {
                n.membership()
                    .member(&self.id(j))
                    .is_some_and(|m| m.state == State::Alive)
            })
        })
    }

    /// Whether every live node holds the same winning manifests and
    /// computes the same placement, and every live node runs exactly what
    /// that placement gives it.
    pub fn converged(&self) -> bool {
        self.converged_among(&self.live())
    }

    /// [`MeshSim::converged`] judged by the live nodes in `sample` only (at
    /// scale, comparing every node with every other is the costly part).
    pub fn converged_among(&self, sample: &[usize]) -> bool {
        let live: Vec<usize> = sample
            .iter()
            .copied()
            .filter(|i| self.nodes[*i].node.is_some())
            .collect();
        let Some(&first) = live.first() else {
            return true;
        };
        let summary = |i: usize| -> Option<Summary> {
            let view = self.node(i)?.view();
            let manifests = view
                .manifests
                .iter()
                .map(|m| format!("{}:{}", m.name, m.plan_hash))
                .collect();
            let mut placed: Vec<(String, Vec<(NodeId, u32)>)> =
                place_all(&view.manifests, &view.members)
                    .into_iter()
                    .map(|p: Placed<'_>| {
                        let mut a = p.placement.assignment.clone();
                        a.sort();
                        (format!("{}/{}", p.manifest.name, p.name), a)
                    })
                    .collect();
            placed.sort();
            Some((manifests, placed))
        };
        let Some(reference) = summary(first) else {
            return false;
        };
        if !live
            .iter()
            .all(|&i| summary(i).as_ref() == Some(&reference))
        {
            return false;
        }
        live.iter().all(|&i| {
            let me = self.id(i);
            let want: BTreeSet<BraneKey> = reference
                .1
                .iter()
                .filter(|(_, a)| a.iter().any(|(n, c)| *n == me && *c > 0))
                .filter_map(|(k, _)| k.split_once('/').map(|(m, b)| BraneKey::new(m, b)))
                .collect();
            self.running(i) == want
        })
    }

    /// BLAKE3 of every output of every node with its virtual time, in order.
    pub fn trace_hash(&self) -> [u8; 32] {
        *self.trace.clone().finalize().as_bytes()
    }

    fn tap(&mut self, input: &Input) {
        if let Some((kind, bytes)) = tap_kind(input) {
            let kept = self.tapped.entry(kind).or_default();
            if kept.len() < self.config.tap && !kept.iter().any(|b| b == bytes) {
                kept.push(bytes.to_vec());
            }
        }
    }

    /// What the wire tap kept ([`MeshConfig::tap`]), by kind: `swim`,
    /// `join`, `state`, `image`, `event`, `gossip-state`, `gossip-status`.
    /// Each kind keeps its first distinct messages.
    pub fn tapped(&self) -> &BTreeMap<&'static str, Vec<Vec<u8>>> {
        &self.tapped
    }

    /// Messages and bytes node `from` sent to node `to` so far, of one
    /// kind: those of [`MeshSim::tapped`], or `response` (answers to
    /// requests). Counted when sent, whether or not they arrive, and only
    /// with [`MeshConfig::count_wire`].
    pub fn wire(&self, from: usize, to: usize, kind: &str) -> (u64, u64) {
        self.wire
            .iter()
            .filter(|((f, t, k), _)| *f == from && *t == to && *k == kind)
            .fold((0, 0), |acc, (_, w)| (acc.0 + w.0, acc.1 + w.1))
    }

    /// Outputs traced so far.
    pub fn trace_len(&self) -> u64 {
        self.trace_lines
    }

    /// Messages delivered and dropped so far.
    pub fn traffic(&self) -> (u64, u64) {
        (self.traffic.delivered, self.traffic.dropped)
    }

    /// Everything the harness counted.
    pub fn counters(&self) -> Traffic {
        self.traffic
    }

    /// Node `i`'s key.
    pub fn key(&self, i: usize) -> &Keypair {
        &self.nodes[i].key
    }

    /// Node `i`'s event store as committed (what a process restart loads).
    pub fn event_store(&self, i: usize) -> &EventStore {
        &self.nodes[i].event_store
    }

    /// A fresh hybrid-clock timestamp for a record signed outside the mesh.
    pub fn hlc(&mut self) -> Hlc {
        self.next_hlc()
    }

    /// Node `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].profile.name
    }

    /// Node `i`'s profile as configured (what it really is, whatever it claims).
    pub fn profile(&self, i: usize) -> &Profile {
        &self.nodes[i].profile
    }

    /// The index of node `id`.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Whether the network is split now.
    pub fn partitioned(&self) -> bool {
        self.groups.is_some()
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

/// The reports observers get: suspicions, refutations, deaths, refusals,
/// strikes, bans and brane changes (not the many routine ones: joins,
/// admissions, desired-state changes).
fn observed(report: &Report) -> bool {
    use crate::membership::Event;
    match report {
        Report::Member { event, .. } => matches!(
            event,
            Event::Suspect { .. } | Event::Alive { .. } | Event::Dead { .. }
        ),
        Report::Refusal(_)
        | Report::Strike { .. }
        | Report::Banned { .. }
        | Report::Revoked(_)
        | Report::Brane { .. } => true,
        _ => false,
    }
}

/// Bytes a network input carries (for bandwidth accounting).
/// The wire tap's kind of a message, and its bytes.
fn tap_kind(input: &Input) -> Option<(&'static str, &[u8])> {
    Some(match input {
        Input::Swim { bytes, .. } => ("swim", bytes),
        Input::Request {
            protocol, bytes, ..
        } => (
            match protocol {
                Protocol::Join => "join",
                Protocol::Swim => "swim",
                Protocol::State => "state",
                Protocol::Image => "image",
                Protocol::Event => "event",
            },
            bytes,
        ),
        Input::Gossip { topic, bytes, .. } => (
            match topic {
                Topic::State => "gossip-state",
                Topic::Status => "gossip-status",
            },
            bytes,
        ),
        _ => return None,
    })
}

fn input_size(input: &Input) -> usize {
    match input {
        Input::Swim { bytes, .. }
        | Input::Request { bytes, .. }
        | Input::Response { bytes, .. }
        | Input::Gossip { bytes, .. } => bytes.len(),
        _ => 0,
    }
}
