//! A unit-level harness: many [`Membership`] machines in one thread, a virtual
//! clock, and a seeded in-memory network with latency, loss, partitions and
//! crashes. Same seed, same calls: the same event trace, byte for byte.
//!
//! ```
//! use omega_gossip::testkit::{NetConfig, Sim};
//! let mut sim = Sim::new(7, NetConfig::default());
//! let nodes: Vec<usize> = (0..3).map(|_| sim.add_node()).collect();
//! for &n in &nodes[1..] {
//!     sim.join(n, &[nodes[0]]);
//! }
//! sim.run_for(3_000);
//! assert!(sim.all_alive());
//! ```

pub mod mesh;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::{Arc, Mutex};

use omega_identity::{Keypair, Signature};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::admission::AllowAll;
use crate::config::Config;
use crate::id::{MeshId, NodeId};
use crate::membership::{Event, LocalMember, Membership, State};
use crate::record::{Capabilities, Ed25519Verifier, Profile, Resources, Substrate, Verifier};

/// A [`Verifier`] that remembers signatures it verified, shared by every
/// machine in a simulation so that each distinct record is checked once.
#[derive(Debug, Clone, Default)]
pub struct SharedVerifier(Arc<Mutex<BTreeSet<[u8; 32]>>>);

impl Verifier for SharedVerifier {
    fn verify(&self, signer: &NodeId, message: &[u8], signature: &Signature) -> bool {
        let mut h = blake3::Hasher::new();
        h.update(signer.as_bytes());
        h.update(signature.as_bytes());
        h.update(message);
        let key = *h.finalize().as_bytes();
        let Ok(mut seen) = self.0.lock() else {
            return Ed25519Verifier.verify(signer, message, signature);
        };
        if seen.contains(&key) {
            return true;
        }
        let ok = Ed25519Verifier.verify(signer, message, signature);
        if ok {
            seen.insert(key);
        }
        ok
    }
}

/// Network behaviour of a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// Minimum one-way latency in ms (default 1).
    pub latency: u64,
    /// Extra uniformly random latency in ms (default 2).
    pub jitter: u64,
    /// Messages lost, per thousand (default 0).
    pub loss_per_mille: u32,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency: 1,
            jitter: 2,
            loss_per_mille: 0,
        }
    }
}

/// One event seen by one node at one virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Virtual ms.
    pub at: u64,
    /// The node that emitted it (index).
    pub node: usize,
    /// The event.
    pub event: Event,
}

struct SimNode {
    key: Keypair,
    machine: Option<Membership>,
    lives: u64,
    bytes_sent: u64,
}

/// A message in flight: (deliver at, sequence, from, to, bytes).
type Flight = Reverse<(u64, u64, NodeId, usize, Vec<u8>)>;

/// A deterministic simulation of many members.
pub struct Sim {
    seed: u64,
    now: u64,
    config: Config,
    net: NetConfig,
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    index: BTreeMap<NodeId, usize>,
    flights: BinaryHeap<Flight>,
    timers: BinaryHeap<Reverse<(u64, usize)>>,
    counter: u64,
    groups: Option<Vec<u32>>,
    verifier: SharedVerifier,
    trace: Vec<TraceEntry>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A simulation with the default [`Config`] (for a fixed test mesh id).
    pub fn new(seed: u64, net: NetConfig) -> Self {
        Self::with_config(seed, net, Config::new(MeshId([0x0e; 16])))
    }

    /// A simulation where every node uses `config`.
    pub fn with_config(seed: u64, net: NetConfig, config: Config) -> Self {
        Self {
            seed,
            now: 0,
            config,
            net,
            rng: ChaCha8Rng::seed_from_u64(seed),
            nodes: Vec::new(),
            index: BTreeMap::new(),
            flights: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            counter: 0,
            groups: None,
            verifier: SharedVerifier::default(),
            trace: Vec::new(),
        }
    }

    /// The key a node index gets in a simulation with `seed`.
    pub fn key_for(seed: u64, node: usize) -> Keypair {
        let mut h = blake3::Hasher::new();
        h.update(b"omega-gossip testkit key");
        h.update(&seed.to_le_bytes());
        h.update(&(node as u64).to_le_bytes());
        Keypair::from_seed(*h.finalize().as_bytes())
    }

    /// Adds a node (started, not joined). Returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let key = Self::key_for(self.seed, i);
        self.index.insert(key.public().into(), i);
        self.nodes.push(SimNode {
            key,
            machine: None,
            lives: 0,
            bytes_sent: 0,
        });
        self.start(i);
        i
    }

    fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.lives += 1;
        let mut h = blake3::Hasher::new();
        h.update(&self.seed.to_le_bytes());
        h.update(&(i as u64).to_le_bytes());
        h.update(&node.lives.to_le_bytes());
        let local = LocalMember {
            keypair: node.key.clone(),
            profile: Profile {
                name: format!("node-{i}"),
                substrate: Substrate::Gaia,
                capabilities: Capabilities::STANDARD,
                resources: Resources {
                    cpu_millis: 4000,
                    memory_bytes: 8 << 30,
                },
                addresses: vec![format!("/ip4/127.0.0.1/udp/{}/quic-v1", 4000 + i)],
            },
            incarnation: 0,
        };
        let machine = Membership::new(
            self.config.clone(),
            local,
            Box::new(AllowAll),
            *h.finalize().as_bytes(),
            self.now,
        );
        // The config is validated once by the caller's tests; a bad one is a test bug.
        #[allow(clippy::expect_used)]
        let machine = machine
            .expect("valid simulation config")
            .with_verifier(Box::new(self.verifier.clone()));
        node.machine = Some(machine);
        self.drain(i);
    }

    /// The node's id.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].key.public().into()
    }

    /// The node's machine (`None` while crashed).
    pub fn node(&self, i: usize) -> Option<&Membership> {
        self.nodes[i].machine.as_ref()
    }

    /// Number of nodes (crashed included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Virtual time in ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Every event so far.
    pub fn trace(&self) -> &[TraceEntry] {
        &self.trace
    }

    /// Bytes node `i` has sent.
    pub fn bytes_sent(&self, i: usize) -> u64 {
        self.nodes[i].bytes_sent
    }

    /// Tells node `i` to join through `seeds`.
    pub fn join(&mut self, i: usize, seeds: &[usize]) {
        let seeds: Vec<NodeId> = seeds.iter().map(|&s| self.id(s)).collect();
        let now = self.now;
        if let Some(m) = self.nodes[i].machine.as_mut() {
            // Joining is refused only after leave(); tests never do both.
            let _ = m.join(&seeds, now);
        }
        self.drain(i);
    }

    /// Node `i` leaves gracefully.
    pub fn leave(&mut self, i: usize) {
        let now = self.now;
        if let Some(m) = self.nodes[i].machine.as_mut() {
            m.leave(now);
        }
        self.drain(i);
    }

    /// Crashes node `i`: its state is lost and it stops sending and receiving.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].machine = None;
    }

    /// Restarts a crashed node with the same key and incarnation 0.
    pub fn restart(&mut self, i: usize) {
        self.start(i);
    }

    /// Splits the network: nodes in different groups cannot reach each other
    /// (nodes in no group are in group 0).
    pub fn partition(&mut self, groups: &[&[usize]]) {
        let mut g = vec![0u32; self.nodes.len()];
        for (n, group) in groups.iter().enumerate() {
            for &i in *group {
                g[i] = n as u32 + 1;
            }
        }
        self.groups = Some(g);
    }

    /// Removes the partition.
    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// Delivers raw `bytes` to node `to` as if sent by `from` (for fault injection).
    pub fn inject(&mut self, from: NodeId, to: usize, bytes: Vec<u8>) {
        let now = self.now;
        if let Some(m) = self.nodes[to].machine.as_mut() {
            m.handle_message(from, &bytes, now);
        }
        self.drain(to);
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    /// Runs until virtual time `end`.
    pub fn run_until(&mut self, end: u64) {
        loop {
            let next_flight = self.flights.peek().map(|Reverse(f)| f.0);
            let next_timer = self.timers.peek().map(|Reverse(t)| t.0);
            let next = match (next_flight, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            if next_flight == Some(next) {
                if let Some(Reverse((_, _, from, to, bytes))) = self.flights.pop() {
                    let now = self.now;
                    if let Some(m) = self.nodes[to].machine.as_mut() {
                        m.handle_message(from, &bytes, now);
                        self.drain(to);
                    }
                }
            } else if let Some(Reverse((_, i))) = self.timers.pop() {
                let now = self.now;
                let due = self.nodes[i]
                    .machine
                    .as_ref()
                    .and_then(Membership::poll_timeout);
                if let (Some(due), Some(m)) = (due, self.nodes[i].machine.as_mut())
                    && due <= now
                {
                    m.handle_timeout(now);
                    self.drain(i);
                }
            }
        }
        self.now = self.now.max(end);
    }

    /// Runs in steps of `step` ms until `done` holds or `limit` ms passed; returns
    /// the virtual time at which it held.
    pub fn run_until_true(
        &mut self,
        step: u64,
        limit: u64,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Option<u64> {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return Some(self.now);
            }
            self.run_for(step);
        }
        done(self).then_some(self.now)
    }

    fn drain(&mut self, i: usize) {
        let Some(m) = self.nodes[i].machine.as_mut() else {
            return;
        };
        let from: NodeId = m.id();
        let mut out = Vec::new();
        while let Some(t) = m.poll_transmit() {
            out.push(t);
        }
        while let Some(event) = m.poll_event() {
            self.trace.push(TraceEntry {
                at: self.now,
                node: i,
                event,
            });
        }
        if let Some(t) = m.poll_timeout() {
            self.timers.push(Reverse((t.max(self.now), i)));
        }
        for t in out {
            self.nodes[i].bytes_sent += t.bytes.len() as u64;
            let Some(&to) = self.index.get(&t.to) else {
                continue;
            };
            if self.groups.as_ref().is_some_and(|g| g[i] != g[to]) {
                continue;
            }
            if self.net.loss_per_mille > 0 && (self.rng.next_u32() % 1000) < self.net.loss_per_mille
            {
                continue;
            }
            let delay = self.net.latency + self.rng.next_u64() % (self.net.jitter + 1);
            self.counter += 1;
            self.flights
                .push(Reverse((self.now + delay, self.counter, from, to, t.bytes)));
        }
    }

    /// How node `observer` sees node `subject` (`None`: unknown or crashed observer).
    pub fn state_of(&self, observer: usize, subject: usize) -> Option<State> {
        self.node(observer)?
            .member(&self.id(subject))
            .map(|v| v.state)
    }

    /// Whether every running node sees every other running node alive.
    pub fn all_alive(&self) -> bool {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.node(i).is_some())
            .collect();
        running.iter().all(|&a| {
            running
                .iter()
                .all(|&b| a == b || self.state_of(a, b) == Some(State::Alive))
        })
    }

    /// Whether every running node other than `subject` sees it in `state`.
    pub fn all_see(&self, subject: usize, state: State) -> bool {
        (0..self.nodes.len())
            .filter(|&i| i != subject && self.node(i).is_some())
            .all(|i| self.state_of(i, subject) == Some(state))
    }
}
