//! A deterministic harness for whole node brains: many [`Node`]s in one
//! thread, a virtual clock, and a seeded in-memory network that carries
//! exactly what the libp2p driver carries — connections, SWIM messages,
//! requests and responses, gossip with validation and forwarding — plus a
//! durable store per node, blob reads and brane starts.
//!
//! Faults: message loss, latency jitter, partitions (messages between
//! groups are dropped, dials between them fail; connections stay open, as
//! they would until QUIC's idle timeout), crashes (in-flight writes are
//! lost) and restarts from what was durable.
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
    Output, PersistOp, Protocol, Reply, RequestId, Started, Topic, Verdict,
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
    /// Unix ms at virtual time 0. Default 1 800 000 000 000.
    pub epoch: u64,
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
            epoch: 1_800_000_000_000,
            node: crate::node::Config::default(),
        }
    }
}

#[derive(Debug)]
enum Ev {
    Timer(usize, u64),
    Deliver(usize, u64, Input),
    Connect(usize, usize),
    Persisted(usize, u64, crate::node::PersistId, PersistOp),
    Started(usize, u64, BraneKey, u64),
    Processed(usize, u64, Box<Process>),
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
    bytes: Vec<u8>,
}

struct SimNode {
    key: Keypair,
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
    ran: Vec<Ran>,
    hlc_counter: u32,
    delivered: u64,
    dropped: u64,
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
            ran: Vec::new(),
            hlc_counter: 0,
            delivered: 0,
            dropped: 0,
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
        let i = self.nodes.len();
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let key = Keypair::from_seed(seed);
        let addr = format!("/sim/{i}");
        let seeds = self
            .nodes
            .first()
            .map(|n| vec![n.addr.clone()])
            .unwrap_or_default();
        self.index.insert(NodeId::from(key.public()), i);
        self.by_addr.insert(addr.clone(), i);
        self.nodes.push(SimNode {
            key,
            profile: Profile {
                name: name.into(),
                substrate,
                capabilities,
                resources: Resources {
                    cpu_millis: 4000,
                    memory_bytes: 8 << 30,
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
            gossip: BTreeMap::new(),
            seen: BTreeSet::new(),
            replies: BTreeMap::new(),
        });
        self.boot(i, token);
        i
    }

    fn time(&self) -> Now {
        Now {
            mono: Mono(self.now),
            unix: Unix(self.config.epoch + self.now),
        }
    }

    fn boot(&mut self, i: usize, token: Option<JoinToken>) {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let now = self.time();
        let n = &mut self.nodes[i];
        n.life += 1;
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
        self.nodes[i].node = None;
        self.nodes[i].life += 1;
        self.nodes[i].running.clear();
        self.nodes[i].inbound.clear();
        self.nodes[i].gossip.clear();
        let mine: Vec<(usize, usize)> = self
            .conns
            .keys()
            .filter(|(a, b)| *a == i || *b == i)
            .copied()
            .collect();
        for (a, b) in mine {
            let other = if a == i { b } else { a };
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
        if p.event.payload == b"poison" {
            return Err(ProcessError::Failed("poisoned".into()));
        }
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
            .map(|ty| Emit {
                ty: ty.to_owned(),
                key: p.event.key.clone(),
                payload: p.event.payload.clone(),
            })
            .collect())
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
            self.dropped += 1;
            return false;
        }
        let loss = self.config.loss_per_mille;
        if loss > 0 && (self.rng.next_u64() % 1000) < u64::from(loss) {
            self.dropped += 1;
            return false;
        }
        self.delivered += 1;
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
                if self.nodes[i].life == life {
                    self.input(i, input);
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
                    PersistOp::Events(ops) => self.nodes[i].event_store.apply(&ops),
                }
                self.input(i, Input::Persisted { id, result: Ok(()) });
            }
            Ev::Processed(i, life, p) => {
                if self.nodes[i].life != life {
                    return;
                }
                let result = self.model(i, &p);
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
        let now = self.time();
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
            self.trace_line(i, &o);
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

    fn deliver(&mut self, to: usize, input: Input) {
        let at = self.now + self.latency();
        let life = self.nodes[to].life;
        self.schedule(at, Ev::Deliver(to, life, input));
    }

    fn output(&mut self, i: usize, o: Output) {
        let me = self.id(i);
        match o {
            Output::Transmit { to, bytes } => {
                if let Some(j) = self.index.get(&to).copied()
                    && self.passes(i, j)
                {
                    self.deliver(j, Input::Swim { from: me, bytes });
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
                if self.passes(i, j) {
                    self.deliver(
                        j,
                        Input::Response {
                            from: me,
                            id: req,
                            bytes,
                        },
                    );
                } else {
                    self.time_out(j, me, req);
                }
            }
            Output::Publish { topic, bytes } => {
                self.next_msg += 1;
                let msg = self.next_msg;
                self.nodes[i].seen.insert(msg);
                self.forward(i, None, msg, topic, me, &bytes);
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
                    self.forward(i, from, g.msg, g.topic, g.author, &g.bytes);
                }
            }
            Output::Persist { id, op } => {
                let at = self.now + self.config.disk_latency;
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
                self.nodes[i].replies.insert(id, reply);
            }
            Output::Process(p) => {
                let at = self.now + self.config.process_latency;
                let life = self.nodes[i].life;
                self.schedule(at, Ev::Processed(i, life, p));
            }
            Output::Ready { .. } | Output::Report(_) => {}
        }
    }

    fn request(&mut self, i: usize, to: NodeId, protocol: Protocol, id: RequestId, bytes: Vec<u8>) {
        let me = self.id(i);
        let Some(j) = self.index.get(&to).copied() else {
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
        if !self.passes(i, j) {
            return self.time_out(i, to, id);
        }
        let n = &mut self.nodes[j];
        n.next_id += 1;
        let inbound = InboundId(n.next_id);
        n.inbound.insert(inbound, (i, id));
        let input = if protocol == Protocol::Swim {
            Input::Swim { from: me, bytes }
        } else {
            Input::Request {
                from: me,
                protocol,
                id: inbound,
                bytes,
            }
        };
        self.deliver(j, input);
    }

    fn time_out(&mut self, i: usize, to: NodeId, id: RequestId) {
        let at = self.now + self.config.request_timeout;
        let life = self.nodes[i].life;
        let error = "timed out".to_owned();
        self.schedule(
            at,
            Ev::Deliver(i, life, Input::RequestFailed { to, id, error }),
        );
    }

    /// Gossip: hands message `msg` to every neighbor of `i` (but `from`)
    /// that has not seen it; each validates before forwarding further.
    fn forward(
        &mut self,
        i: usize,
        from: Option<usize>,
        msg: u64,
        topic: Topic,
        author: NodeId,
        bytes: &[u8],
    ) {
        let source = self.id(i);
        let neighbors: Vec<usize> = self
            .conns
            .keys()
            .filter_map(|(a, b)| match (*a == i, *b == i) {
                (true, _) => Some(*b),
                (_, true) => Some(*a),
                _ => None,
            })
            .filter(|j| Some(*j) != from)
            .collect();
        for j in neighbors {
            if self.nodes[j].seen.contains(&msg) || !self.passes(i, j) {
                continue;
            }
            let n = &mut self.nodes[j];
            n.seen.insert(msg);
            n.next_id += 1;
            let id = GossipRef(n.next_id);
            n.gossip.insert(
                id,
                Gossip {
                    msg,
                    topic,
                    author,
                    bytes: bytes.to_vec(),
                },
            );
            self.deliver(
                j,
                Input::Gossip {
                    id,
                    source,
                    author: Some(author),
                    topic,
                    bytes: bytes.to_vec(),
                },
            );
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
        let live = self.live();
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

    /// Outputs traced so far.
    pub fn trace_len(&self) -> u64 {
        self.trace_lines
    }

    /// Messages delivered and dropped so far.
    pub fn traffic(&self) -> (u64, u64) {
        (self.delivered, self.dropped)
    }
}
