//! The delivery state machine; see the module docs of [`crate::events`]
//! for what it promises.
//!
//! Sender side: every event lives in `outbox` (seq → entry) from the write
//! that made it durable until its acknowledgement. An entry not in flight is
//! in exactly one place: its edge's `ready` queue, the `delayed` set (a
//! retry waiting for its time), or — on an ordered edge — behind its key in
//! `waiting`. An ordered edge holds a key from the moment one of its events
//! enters `ready` until that event is acknowledged or dead-lettered.
//!
//! Receiver side: a delivered event waits in its brane's `inbox`, runs
//! ([`Act::Process`]), and its result is committed (processed mark and
//! emits in one [`EventOps`]) before anyone is answered. Everyone who asked
//! about the same id meanwhile (a retry, a duplicate in another batch)
//! waits for that one result.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::id::NodeId;
use crate::node::{BraneKey, CommandId, InboundId};
use crate::time::{Mono, Now};

use super::{
    Ack, Acks, DeadLetter, Deliver, DeliveryConfig, DlqCommand, DlqError, EdgeReport, Emit,
    EmitError, Envelope, EventId, EventOps, EventReport, EventWireError, Item, MAX_KEY_BYTES,
    MAX_NAME_BYTES, MAX_TYPE_BYTES, NewEvent, Process, ProcessError, Source, Stored, StoredEvents,
    Topology, routing_key,
};

/// What the machine asks its host (the node) to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Act {
    /// Send a [`Deliver`] batch to `to`; report with [`Delivery::on_acks`]
    /// or [`Delivery::on_batch_failed`] and `batch`.
    Send {
        /// The peer.
        to: NodeId,
        /// Our number for the batch.
        batch: u64,
        /// The request.
        bytes: Vec<u8>,
    },
    /// Answer inbound request `inbound` with these [`Acks`] bytes.
    Respond {
        /// The request.
        inbound: InboundId,
        /// The answer.
        bytes: Vec<u8>,
    },
    /// Run a brane on an event; report with [`Delivery::on_processed`].
    Process(Box<Process>),
    /// Apply `ops` in order with every other write; report with
    /// [`Delivery::on_persisted`] and `txn`.
    Persist {
        /// Our number for the write.
        txn: u64,
        /// What to write.
        ops: EventOps,
    },
    /// Answer an emit from outside.
    Emitted {
        /// The command.
        cmd: CommandId,
        /// The ids, durable; or why not.
        result: Result<Vec<EventId>, EmitError>,
    },
    /// Event `.0` was acknowledged as processed by its target (it left
    /// the outbox). For metrics and benchmarks.
    Acked(EventId),
    /// Answer a dead-letter command.
    Dlq {
        /// The command.
        cmd: CommandId,
        /// The answer.
        result: Result<Vec<DeadLetter>, DlqError>,
    },
}

type EdgeKey = (String, String, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In its edge's ready queue, behind its key, or delayed.
    Queued,
    /// Sent in batch `.0` to a peer (or this node).
    InFlight(u64, NodeId),
    /// Dead-lettered.
    Dead,
    /// Written, not yet durable (an emit from outside, a replay).
    Committing,
}

#[derive(Debug)]
struct Entry {
    stored: Stored,
    edge: EdgeKey,
    place: Place,
    /// When it entered the outbox (for lag).
    since: Mono,
}

#[derive(Debug, Default)]
struct EdgeQ {
    ordered: bool,
    ready: VecDeque<u64>,
    waiting: BTreeMap<String, VecDeque<u64>>,
    held: BTreeSet<String>,
    /// Queued entries (ready, delayed, waiting).
    queued: usize,
    in_flight: usize,
    rr: u64,
    stalled: Option<String>,
    delivered: u64,
    retried: u64,
    rerouted: u64,
    dead: u64,
}

#[derive(Debug)]
struct Batch {
    to: NodeId,
    seqs: Vec<u64>,
}

/// Who waits for the result of processing one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    /// Item `.1` of inbound batch `.0`.
    Remote(InboundId, usize),
    /// The local outbox entry `seq` (a target on this node).
    Local(u64),
}

#[derive(Debug)]
struct Work {
    event: Envelope,
    to: BraneKey,
}

#[derive(Debug, Default)]
struct Inbox {
    queue: VecDeque<Work>,
    running: usize,
}

#[derive(Debug)]
struct Inbound {
    acks: Vec<Option<Ack>>,
    open: usize,
}

#[derive(Debug)]
enum AfterTxn {
    /// An emit from outside: answer `cmd` with the ids.
    Emit { cmd: CommandId, seqs: Vec<u64> },
    /// `id` processed: answer the waiters, enqueue the emits.
    Processed {
        id: EventId,
        order: u64,
        children: Vec<u64>,
    },
    /// A dead letter is stored.
    DeadLettered,
    /// A replayed dead letter is stored: answer `cmd`, enqueue it.
    Replay { cmd: CommandId, seq: u64 },
    /// A dead letter is removed: answer `cmd`.
    Dropped { cmd: CommandId },
    /// Nothing waits (removals of acknowledged events).
    Nothing,
}

/// The compiled `[event.TYPE] schema`s, by (manifest, type).
#[derive(Default)]
struct Schemas(BTreeMap<(String, String), jsonschema::Validator>);

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Schemas {
    /// Compiles every schema of `t` (one that does not compile checks
    /// nothing: the manifest validator already refused malformed ones).
    fn of(t: &Topology) -> Self {
        let mut out = BTreeMap::new();
        for (manifest, types) in &t.schemas {
            for (ty, schema) in types {
                if let Ok(v) = jsonschema::validator_for(schema) {
                    out.insert((manifest.clone(), ty.clone()), v);
                }
            }
        }
        Self(out)
    }

    /// Checks `payload` of `ty` in `manifest` against its schema, if any.
    fn check(&self, manifest: &str, ty: &str, payload: &[u8]) -> Result<(), EmitError> {
        let Some(v) = self.0.get(&(manifest.to_owned(), ty.to_owned())) else {
            return Ok(());
        };
        let schema = |path: String, why: String| EmitError::Schema {
            ty: ty.to_owned(),
            path,
            why,
        };
        let value: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| schema(String::new(), format!("the payload is not JSON: {e}")))?;
        match v.validate(&value) {
            Ok(()) => Ok(()),
            Err(e) => {
                let path = e.instance_path().to_string();
                Err(schema(
                    if path.is_empty() { "/".into() } else { path },
                    e.to_string(),
                ))
            }
        }
    }
}

/// One node's event delivery machine.
#[derive(Debug)]
pub struct Delivery {
    config: DeliveryConfig,
    me: NodeId,
    rng: ChaCha8Rng,
    topology: Topology,
    schemas: Schemas,
    outbox: BTreeMap<u64, Entry>,
    next_seq: u64,
    edges: BTreeMap<EdgeKey, EdgeQ>,
    delayed: BTreeSet<(Mono, u64)>,
    dead: BTreeMap<EventId, u64>,
    peer_in_flight: BTreeMap<NodeId, usize>,
    batches: BTreeMap<u64, Batch>,
    next_batch: u64,
    /// Processed window: id → order, and order → id for eviction.
    window: BTreeMap<EventId, u64>,
    window_order: VecDeque<(u64, EventId)>,
    next_order: u64,
    /// Ids being processed or committed, and who waits for them.
    waiters: BTreeMap<EventId, Vec<Waiter>>,
    inbox: BTreeMap<BraneKey, Inbox>,
    inbox_len: usize,
    inbound: BTreeMap<InboundId, Inbound>,
    tickets: BTreeMap<u64, (Work, usize)>,
    next_ticket: u64,
    txns: BTreeMap<u64, AfterTxn>,
    next_txn: u64,
    /// Outbox rows promised to writes in flight.
    reserved: usize,
    acts: VecDeque<Act>,
    processed: u64,
    failed: u64,
    duplicates: u64,
    unrouted: u64,
    held_back: Option<String>,
    now: Now,
}

impl Delivery {
    /// A machine for node `me`, its randomness from `seed`.
    pub fn new(config: DeliveryConfig, me: NodeId, seed: [u8; 32], now: Now) -> Self {
        Self {
            config,
            me,
            rng: ChaCha8Rng::from_seed(seed),
            topology: Topology::default(),
            schemas: Schemas::default(),
            outbox: BTreeMap::new(),
            next_seq: 1,
            edges: BTreeMap::new(),
            delayed: BTreeSet::new(),
            dead: BTreeMap::new(),
            peer_in_flight: BTreeMap::new(),
            batches: BTreeMap::new(),
            next_batch: 1,
            window: BTreeMap::new(),
            window_order: VecDeque::new(),
            next_order: 1,
            waiters: BTreeMap::new(),
            inbox: BTreeMap::new(),
            inbox_len: 0,
            inbound: BTreeMap::new(),
            tickets: BTreeMap::new(),
            next_ticket: 1,
            txns: BTreeMap::new(),
            next_txn: 1,
            reserved: 0,
            acts: VecDeque::new(),
            processed: 0,
            failed: 0,
            duplicates: 0,
            unrouted: 0,
            held_back: None,
            now,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// Loads what the store holds (before any other call). Returns how
    /// many rows did not decode (they are left in the store and skipped).
    pub fn restore(&mut self, stored: StoredEvents) -> usize {
        let mut bad = 0;
        let mut processed = stored.processed;
        processed.sort_unstable_by_key(|(o, _)| *o);
        for (order, id) in processed {
            self.window.insert(id, order);
            self.window_order.push_back((order, id));
            self.next_order = self.next_order.max(order + 1);
        }
        let mut rows = stored.outbox;
        rows.sort_unstable_by_key(|(s, _)| *s);
        for (seq, bytes) in rows {
            self.next_seq = self.next_seq.max(seq + 1);
            match Stored::from_bytes(&bytes) {
                Ok(s) => {
                    let dead = s.dead.is_some();
                    self.insert(seq, s, if dead { Place::Dead } else { Place::Queued });
                    if !dead {
                        self.enqueue(seq, false);
                    }
                }
                Err(_) => bad += 1,
            }
        }
        self.pump();
        bad
    }

    /// New routing facts (after a status, membership or manifest change).
    pub fn set_topology(&mut self, topology: Topology) {
        if topology != self.topology {
            if topology.schemas != self.topology.schemas {
                self.schemas = Schemas::of(&topology);
            }
            self.topology = topology;
            self.pump();
        }
    }

    /// The routing facts in use.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The next thing to do, if any.
    pub fn poll_act(&mut self) -> Option<Act> {
        self.acts.pop_front()
    }

    /// When [`Delivery::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Mono> {
        self.delayed.first().map(|(t, _)| *t)
    }

    /// Time passed: due retries go out.
    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now;
        while let Some(&(t, seq)) = self.delayed.first() {
            if t > now.mono {
                break;
            }
            self.delayed.pop_first();
            if let Some(e) = self.outbox.get(&seq)
                && e.place == Place::Queued
            {
                let edge = e.edge.clone();
                if let Some(q) = self.edges.get_mut(&edge) {
                    q.ready.push_front(seq);
                }
            }
        }
        self.pump();
    }

    /// Sets the time for what follows.
    pub fn tick(&mut self, now: Now) {
        self.now = now;
    }

    // ----- emits from outside -------------------------------------------------

    /// Events from outside (`omega emit`): checked, made durable, answered
    /// with [`Act::Emitted`] once they are.
    pub fn emit(&mut self, cmd: CommandId, events: Vec<NewEvent>) {
        let result = self.check_new(&events);
        if let Err(e) = result {
            self.acts.push_back(Act::Emitted {
                cmd,
                result: Err(e),
            });
            return;
        }
        // Room for what processing emits is kept free of outside emits, so
        // a full outbox always drains.
        let most = self
            .config
            .max_outbox
            .saturating_sub(self.config.emit_reserve)
            .max(1);
        if events.len() > most {
            self.acts.push_back(Act::Emitted {
                cmd,
                result: Err(EmitError::TooLarge {
                    what: "batch (events)",
                    len: events.len(),
                    max: most,
                }),
            });
            return;
        }
        let room = self.room();
        if events.len() + self.config.emit_reserve > room {
            self.acts.push_back(Act::Emitted {
                cmd,
                result: Err(EmitError::Busy(self.outbox.len())),
            });
            return;
        }
        let mut ops = EventOps {
            sync: true,
            ..EventOps::default()
        };
        let mut seqs = Vec::with_capacity(events.len());
        for e in events {
            let mut id = [0u8; 16];
            self.rng.fill_bytes(&mut id);
            let id = EventId(id);
            let (ordered, max_attempts) = self.edge_rules(&e.to, &e.ty);
            let stored = Stored {
                manifest: e.to.manifest.clone(),
                to: e.to.brane.clone(),
                event: Envelope {
                    id,
                    ty: e.ty,
                    key: e.key,
                    payload: e.payload,
                    source: Source {
                        manifest: e.to.manifest,
                        brane: String::new(),
                        node: *self.me.as_bytes(),
                    },
                    attempt: 1,
                    trace: id,
                    created_ms: self.now.unix.0,
                },
                ordered,
                max_attempts,
                failures: 0,
                dead: None,
            };
            seqs.push(self.stage(stored, &mut ops));
        }
        self.persist(ops, AfterTxn::Emit { cmd, seqs });
    }

    fn check_new(&self, events: &[NewEvent]) -> Result<(), EmitError> {
        for e in events {
            let key = &e.to;
            let Some(edges) = self.topology.edges.get(&key.manifest) else {
                return Err(EmitError::NoManifest(key.manifest.clone()));
            };
            if self.topology.http.contains(key) {
                return Err(EmitError::HttpBrane(key.brane.clone()));
            }
            if !self.topology.branes.contains_key(key) {
                return Err(EmitError::NoBrane {
                    manifest: key.manifest.clone(),
                    brane: key.brane.clone(),
                });
            }
            let incoming: BTreeSet<&str> = edges
                .iter()
                .filter(|x| x.to == key.brane)
                .map(|x| x.on.as_str())
                .collect();
            if !incoming.is_empty() && !incoming.contains(e.ty.as_str()) {
                return Err(EmitError::WrongType {
                    brane: key.brane.clone(),
                    ty: e.ty.clone(),
                    expected: incoming
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            for (what, len, max) in [
                ("event type (bytes)", e.ty.len(), MAX_TYPE_BYTES),
                ("event key (bytes)", e.key.len(), MAX_KEY_BYTES),
                ("payload (bytes)", e.payload.len(), self.config.max_payload),
            ] {
                if len > max {
                    return Err(EmitError::TooLarge { what, len, max });
                }
            }
            if e.ty.is_empty() {
                return Err(EmitError::WrongType {
                    brane: key.brane.clone(),
                    ty: String::new(),
                    expected: "a non-empty type".into(),
                });
            }
            self.schemas.check(&key.manifest, &e.ty, &e.payload)?;
        }
        Ok(())
    }

    /// `ordered` and `max_attempts` for an event from outside to `to`: its
    /// first incoming edge of `ty` says how often to try; it keeps per-key
    /// order when any edge out of `to` is ordered (order asked for
    /// downstream is kept from the entry on).
    fn edge_rules(&self, to: &BraneKey, ty: &str) -> (bool, u32) {
        let edges = self.topology.edges.get(&to.manifest);
        let max = edges
            .and_then(|es| es.iter().find(|e| e.to == to.brane && e.on == ty))
            .and_then(|e| e.max_attempts)
            .unwrap_or(self.config.max_attempts)
            .max(1);
        let ordered = edges.is_some_and(|es| es.iter().any(|e| e.from == to.brane && e.ordered));
        (ordered, max)
    }

    /// A new outbox entry, written by `ops` and not in line until they are
    /// durable; returns its seq.
    fn stage(&mut self, stored: Stored, ops: &mut EventOps) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        ops.put.push((seq, stored.to_bytes()));
        self.insert(seq, stored, Place::Committing);
        seq
    }

    fn room(&self) -> usize {
        self.config
            .max_outbox
            .saturating_sub(self.outbox.len() + self.reserved)
    }

    // ----- the outbox ----------------------------------------------------------

    fn insert(&mut self, seq: u64, stored: Stored, place: Place) {
        let from = if stored.event.source.brane.is_empty() {
            String::new()
        } else {
            stored.event.source.brane.clone()
        };
        let edge: EdgeKey = (
            stored.manifest.clone(),
            from,
            stored.to.clone(),
            stored.event.ty.clone(),
        );
        let q = self.edges.entry(edge.clone()).or_default();
        q.ordered = stored.ordered;
        if place == Place::Dead {
            self.dead.insert(stored.event.id, seq);
        }
        self.outbox.insert(
            seq,
            Entry {
                stored,
                edge,
                place,
                since: self.now.mono,
            },
        );
    }

    /// Puts a queued entry in line: `ready`, or behind its key.
    fn enqueue(&mut self, seq: u64, front: bool) {
        let Some(e) = self.outbox.get_mut(&seq) else {
            return;
        };
        e.place = Place::Queued;
        let key = e.stored.event.key.clone();
        let ordered = e.stored.ordered && !key.is_empty();
        let Some(q) = self.edges.get_mut(&e.edge) else {
            return;
        };
        q.queued += 1;
        if ordered {
            if q.held.contains(&key) {
                q.waiting.entry(key).or_default().push_back(seq);
                return;
            }
            q.held.insert(key);
        }
        if front {
            q.ready.push_front(seq);
        } else {
            q.ready.push_back(seq);
        }
    }

    /// An entry leaves line for good (acknowledged, dead): its key's next
    /// event may go.
    fn release(&mut self, edge: &EdgeKey, key: &str, ordered: bool) {
        if !ordered || key.is_empty() {
            return;
        }
        let Some(q) = self.edges.get_mut(edge) else {
            return;
        };
        let next = q.waiting.get_mut(key).and_then(VecDeque::pop_front);
        if q.waiting.get(key).is_some_and(VecDeque::is_empty) {
            q.waiting.remove(key);
        }
        match next {
            Some(seq) => q.ready.push_back(seq),
            None => {
                q.held.remove(key);
            }
        }
    }

    /// The replica of `to` for `key`: HRW when keyed, round-robin when not.
    fn route(&mut self, edge: &EdgeKey, to: &BraneKey, key: &str) -> Option<NodeId> {
        let replicas = self.topology.replicas.get(to)?;
        if replicas.is_empty() {
            return None;
        }
        if key.is_empty() {
            let q = self.edges.get_mut(edge)?;
            q.rr = q.rr.wrapping_add(1);
            return replicas
                .get((q.rr % replicas.len() as u64) as usize)
                .copied();
        }
        replicas.iter().copied().max_by_key(|n| {
            let mut h = blake3::Hasher::new();
            h.update(key.as_bytes());
            h.update(n.as_bytes());
            let mut score = [0u8; 8];
            score.copy_from_slice(&h.finalize().as_bytes()[..8]);
            u64::from_be_bytes(score)
        })
    }

    /// Sends what credits allow, along every edge.
    fn pump(&mut self) {
        let mut out: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
        let keys: Vec<EdgeKey> = self
            .edges
            .iter()
            .filter(|(_, q)| !q.ready.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for edge in keys {
            let target = BraneKey::new(&edge.0, &edge.2);
            while let Some(q) = self.edges.get(&edge) {
                if q.in_flight >= self.config.edge_credits {
                    let s = format!(
                        "{} events in flight: waiting for acknowledgements",
                        q.in_flight
                    );
                    if let Some(q) = self.edges.get_mut(&edge) {
                        q.stalled = Some(s);
                    }
                    break;
                }
                let Some(&seq) = q.ready.front() else { break };
                let Some(entry) = self.outbox.get(&seq) else {
                    if let Some(q) = self.edges.get_mut(&edge) {
                        q.ready.pop_front();
                    }
                    continue;
                };
                let key = entry.stored.event.key.clone();
                let Some(to) = self.route(&edge, &target, &key) else {
                    if let Some(q) = self.edges.get_mut(&edge) {
                        q.stalled = Some(format!("no node runs {target}"));
                    }
                    break;
                };
                let local = to == self.me;
                let busy = if local {
                    self.inbox
                        .get(&target)
                        .is_some_and(|i| i.queue.len() >= self.config.max_inbox)
                } else {
                    self.peer_in_flight.get(&to).copied().unwrap_or(0) >= self.config.peer_credits
                };
                if busy {
                    if let Some(q) = self.edges.get_mut(&edge) {
                        q.stalled = Some(if local {
                            format!("{target} here has {} events queued", self.config.max_inbox)
                        } else {
                            format!("{to}: {} events in flight to it", self.config.peer_credits)
                        });
                    }
                    break;
                }
                if let Some(q) = self.edges.get_mut(&edge) {
                    q.ready.pop_front();
                    q.queued = q.queued.saturating_sub(1);
                    q.in_flight += 1;
                    q.stalled = None;
                }
                *self.peer_in_flight.entry(to).or_default() += 1;
                if local {
                    // Straight into the brane's inbox, no network.
                    self.mark_in_flight(seq, 0, to);
                    self.take_local(seq);
                } else {
                    out.entry(to).or_default().push(seq);
                }
            }
        }
        for (to, seqs) in out {
            self.send(to, seqs);
        }
        self.dispatch();
    }

    fn mark_in_flight(&mut self, seq: u64, batch: u64, to: NodeId) {
        if let Some(e) = self.outbox.get_mut(&seq) {
            e.place = Place::InFlight(batch, to);
        }
    }

    fn send(&mut self, to: NodeId, seqs: Vec<u64>) {
        let mut items: Vec<Item> = Vec::new();
        let mut batch_seqs = Vec::new();
        let mut bytes = 0usize;
        for seq in seqs {
            let Some(len) = self.outbox.get(&seq).map(|e| e.stored.event.payload.len()) else {
                continue;
            };
            if !items.is_empty()
                && (items.len() >= self.config.max_batch.clamp(1, super::MAX_BATCH_ITEMS)
                    || bytes + len > self.config.max_batch_bytes)
            {
                let full = std::mem::take(&mut items);
                let s = std::mem::take(&mut batch_seqs);
                self.send_batch(to, full, s);
                bytes = 0;
            }
            bytes += len;
            let Some(e) = self.outbox.get(&seq) else {
                continue;
            };
            items.push(Item {
                manifest: e.stored.manifest.clone(),
                to: e.stored.to.clone(),
                event: e.stored.event.clone(),
            });
            batch_seqs.push(seq);
        }
        if !items.is_empty() {
            self.send_batch(to, items, batch_seqs);
        }
    }

    fn send_batch(&mut self, to: NodeId, items: Vec<Item>, seqs: Vec<u64>) {
        let batch = self.next_batch;
        self.next_batch += 1;
        for &seq in &seqs {
            self.mark_in_flight(seq, batch, to);
        }
        let bytes = Deliver { items }.to_bytes();
        self.batches.insert(batch, Batch { to, seqs });
        self.acts.push_back(Act::Send { to, batch, bytes });
    }

    /// The answer to batch `batch`.
    pub fn on_acks(&mut self, batch: u64, bytes: &[u8]) -> Result<(), EventWireError> {
        let Some(b) = self.batches.remove(&batch) else {
            return Ok(());
        };
        let acks = match Acks::from_bytes(bytes) {
            Ok(a) if a.acks.len() == b.seqs.len() => a.acks,
            Ok(a) => {
                let why = format!("{} acks for {} events", a.acks.len(), b.seqs.len());
                self.batch_failed(b, "answer of the wrong length");
                return Err(EventWireError::Malformed {
                    what: "event acks",
                    why,
                });
            }
            Err(e) => {
                self.batch_failed(b, "malformed answer");
                return Err(e);
            }
        };
        let mut delete = Vec::new();
        for (seq, ack) in b.seqs.into_iter().zip(acks) {
            self.settle(seq, b.to, ack, &mut delete);
        }
        self.delete(delete);
        self.pump();
        Ok(())
    }

    /// Batch `batch` got no answer (timeout, closed connection, refused stream).
    pub fn on_batch_failed(&mut self, batch: u64, error: &str) {
        if let Some(b) = self.batches.remove(&batch) {
            self.batch_failed(b, error);
        }
        self.pump();
    }

    fn batch_failed(&mut self, b: Batch, error: &str) {
        let mut delete = Vec::new();
        for seq in b.seqs {
            if let Some(e) = self.outbox.get(&seq)
                && let Some(q) = self.edges.get_mut(&e.edge)
            {
                q.stalled = Some(format!("{}: {error}", b.to));
            }
            self.settle(seq, b.to, Ack::Busy, &mut delete);
        }
        self.delete(delete);
    }

    /// What one ack means for entry `seq` (in flight to `to`).
    fn settle(&mut self, seq: u64, to: NodeId, ack: Ack, delete: &mut Vec<u64>) {
        let Some(e) = self.outbox.get_mut(&seq) else {
            return;
        };
        if !matches!(e.place, Place::InFlight(..)) {
            return;
        }
        if let Some(n) = self.peer_in_flight.get_mut(&to) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.peer_in_flight.remove(&to);
            }
        }
        let edge = e.edge.clone();
        let key = e.stored.event.key.clone();
        let ordered = e.stored.ordered;
        if let Some(q) = self.edges.get_mut(&edge) {
            q.in_flight = q.in_flight.saturating_sub(1);
        }
        match ack {
            Ack::Processed | Ack::Duplicate => {
                if let Some(q) = self.edges.get_mut(&edge) {
                    q.delivered += 1;
                }
                self.acts.push_back(Act::Acked(e.stored.event.id));
                self.outbox.remove(&seq);
                delete.push(seq);
                self.release(&edge, &key, ordered);
            }
            Ack::Failed(why) => {
                e.stored.failures += 1;
                if e.stored.failures >= e.stored.max_attempts {
                    self.dead_letter(seq, why);
                    self.release(&edge, &key, ordered);
                } else {
                    let n = e.stored.failures.min(20);
                    let delay = self
                        .config
                        .retry_base_ms
                        .saturating_mul(1 << (n - 1))
                        .min(self.config.retry_max_ms);
                    self.retry(seq, delay, false);
                }
            }
            Ack::NotHere | Ack::Busy => {
                let reroute = ack == Ack::NotHere;
                self.retry(seq, self.config.busy_retry_ms, reroute);
            }
            Ack::Refused(why) => {
                self.dead_letter(seq, format!("refused by {to}: {why}"));
                self.release(&edge, &key, ordered);
            }
        }
    }

    fn retry(&mut self, seq: u64, delay: u64, reroute: bool) {
        let Some(e) = self.outbox.get_mut(&seq) else {
            return;
        };
        e.place = Place::Queued;
        e.stored.event.attempt = e.stored.event.attempt.saturating_add(1);
        if let Some(q) = self.edges.get_mut(&e.edge) {
            q.retried += 1;
            q.queued += 1;
            if reroute {
                q.rerouted += 1;
            }
        }
        let at = self.now.mono.plus(delay);
        self.delayed.insert((at, seq));
    }

    fn dead_letter(&mut self, seq: u64, why: String) {
        let Some(e) = self.outbox.get_mut(&seq) else {
            return;
        };
        e.place = Place::Dead;
        e.stored.dead = Some(why);
        if let Some(q) = self.edges.get_mut(&e.edge) {
            q.dead += 1;
        }
        self.dead.insert(e.stored.event.id, seq);
        let ops = EventOps {
            put: vec![(seq, e.stored.to_bytes())],
            sync: true,
            ..EventOps::default()
        };
        self.persist(ops, AfterTxn::DeadLettered);
    }

    fn delete(&mut self, seqs: Vec<u64>) {
        if seqs.is_empty() {
            return;
        }
        let ops = EventOps {
            delete: seqs,
            sync: false,
            ..EventOps::default()
        };
        self.persist(ops, AfterTxn::Nothing);
    }

    fn persist(&mut self, ops: EventOps, after: AfterTxn) {
        let txn = self.next_txn;
        self.next_txn += 1;
        if let AfterTxn::Emit { seqs, .. } = &after {
            self.reserved += seqs.len();
        }
        self.txns.insert(txn, after);
        self.acts.push_back(Act::Persist { txn, ops });
    }

    // ----- the receiving side -------------------------------------------------

    /// A [`Deliver`] request from `from`. `Err`: it did not decode (answered
    /// with nothing; the caller may strike the sender).
    pub fn on_deliver(
        &mut self,
        from: NodeId,
        inbound: InboundId,
        bytes: &[u8],
    ) -> Result<(), EventWireError> {
        let d = Deliver::from_bytes(bytes)?;
        if self.inbound.len() >= self.config.max_open_batches {
            let acks = vec![Ack::Busy; d.items.len()];
            self.acts.push_back(Act::Respond {
                inbound,
                bytes: Acks { acks }.to_bytes(),
            });
            return Ok(());
        }
        let mut acks: Vec<Option<Ack>> = Vec::with_capacity(d.items.len());
        let mut open = 0;
        for (i, item) in d.items.into_iter().enumerate() {
            let to = BraneKey::new(item.manifest, item.to);
            // Events travel only from the outbox of the node that emitted them.
            let ack = if item.event.source.node() != from {
                Some(Ack::Refused("sent by another node than its source".into()))
            } else {
                self.receive(to, item.event, Waiter::Remote(inbound, i))
            };
            if ack.is_none() {
                open += 1;
            }
            acks.push(ack);
        }
        if open == 0 {
            let acks = acks.into_iter().flatten().collect();
            self.acts.push_back(Act::Respond {
                inbound,
                bytes: Acks { acks }.to_bytes(),
            });
        } else {
            self.inbound.insert(inbound, Inbound { acks, open });
        }
        self.dispatch();
        Ok(())
    }

    /// Takes one event for a local brane; `Some` when it is answered at once.
    fn receive(&mut self, to: BraneKey, event: Envelope, waiter: Waiter) -> Option<Ack> {
        if let Some(why) = self.invalid(&to, &event) {
            return Some(Ack::Refused(why));
        }
        if !self
            .topology
            .replicas
            .get(&to)
            .is_some_and(|r| r.contains(&self.me))
        {
            return Some(Ack::NotHere);
        }
        if self.window.contains_key(&event.id) {
            self.duplicates += 1;
            return Some(Ack::Duplicate);
        }
        if let Some(w) = self.waiters.get_mut(&event.id) {
            w.push(waiter);
            return None;
        }
        let inbox = self.inbox.entry(to.clone()).or_default();
        if inbox.queue.len() >= self.config.max_inbox {
            return Some(Ack::Busy);
        }
        self.waiters.insert(event.id, vec![waiter]);
        inbox.queue.push_back(Work { event, to });
        self.inbox_len += 1;
        None
    }

    /// Why `event` can never be valid for `to`, if it cannot.
    fn invalid(&self, to: &BraneKey, event: &Envelope) -> Option<String> {
        if to.manifest.len() > MAX_NAME_BYTES || to.brane.len() > MAX_NAME_BYTES {
            return Some("name too long".into());
        }
        if event.ty.len() > MAX_TYPE_BYTES || event.key.len() > MAX_KEY_BYTES {
            return Some("type or key too long".into());
        }
        if event.payload.len() > self.config.max_payload {
            return Some(format!(
                "payload of {} bytes exceeds {}",
                event.payload.len(),
                self.config.max_payload
            ));
        }
        let edges = self.topology.edges.get(&to.manifest)?;
        let from = &event.source.brane;
        let fits = edges
            .iter()
            .any(|e| e.to == to.brane && e.on == event.ty && (from.is_empty() || e.from == *from));
        let source_brane = !from.is_empty();
        let any_incoming = edges.iter().any(|e| e.to == to.brane);
        if !fits && (source_brane || any_incoming) {
            return Some(format!(
                "no edge of manifest `{}` carries `{}` from `{}` to `{}`",
                to.manifest,
                event.ty,
                if source_brane { from } else { "outside" },
                to.brane
            ));
        }
        None
    }

    /// An event for a local target taken from the outbox directly.
    fn take_local(&mut self, seq: u64) {
        let Some(e) = self.outbox.get(&seq) else {
            return;
        };
        let to = e.stored.target();
        let event = e.stored.event.clone();
        if let Some(ack) = self.receive(to, event, Waiter::Local(seq)) {
            let mut delete = Vec::new();
            self.settle(seq, self.me, ack, &mut delete);
            self.delete(delete);
        }
    }

    /// Runs queued events on local branes as concurrency and outbox room allow.
    fn dispatch(&mut self) {
        self.held_back = None;
        let keys: Vec<BraneKey> = self
            .inbox
            .iter()
            .filter(|(_, i)| !i.queue.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let concurrency = self
                .topology
                .branes
                .get(&key)
                .copied()
                .unwrap_or(1)
                .clamp(1, self.config.concurrency.max(1));
            // A brane with no outgoing edge emits nothing: it needs no room,
            // so the tail of a pipeline always drains.
            let emits = self
                .topology
                .edges
                .get(&key.manifest)
                .is_some_and(|es| es.iter().any(|e| e.from == key.brane));
            let reserve = if emits { self.config.emit_reserve } else { 0 };
            loop {
                if self.room() < reserve {
                    if self.inbox.get(&key).is_some_and(|i| !i.queue.is_empty()) {
                        self.held_back = Some(format!(
                            "{} event(s) wait to be processed here: the outbox holds {} of {} \
                             ({} more promised to processings in flight) and has no room for \
                             what they may emit; a consumer downstream is slow",
                            self.inbox_len,
                            self.outbox.len(),
                            self.config.max_outbox,
                            self.reserved
                        ));
                    }
                    break;
                }
                let Some(inbox) = self.inbox.get_mut(&key) else {
                    break;
                };
                if inbox.running >= concurrency {
                    break;
                }
                let Some(work) = inbox.queue.pop_front() else {
                    break;
                };
                inbox.running += 1;
                self.inbox_len = self.inbox_len.saturating_sub(1);
                self.reserved += reserve;
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                self.acts.push_back(Act::Process(Box::new(Process {
                    ticket,
                    to: work.to.clone(),
                    event: work.event.clone(),
                })));
                self.tickets.insert(ticket, (work, reserve));
            }
        }
    }

    /// The result of [`Act::Process`] `ticket`.
    pub fn on_processed(&mut self, ticket: u64, result: Result<Vec<Emit>, ProcessError>) {
        let Some((work, reserve)) = self.tickets.remove(&ticket) else {
            return;
        };
        self.reserved = self.reserved.saturating_sub(reserve);
        if let Some(i) = self.inbox.get_mut(&work.to) {
            i.running = i.running.saturating_sub(1);
        }
        match result {
            Ok(emits) => self.commit(work, emits),
            Err(ProcessError::Failed(why)) => {
                self.failed += 1;
                self.answer(work.event.id, Ack::Failed(why));
            }
            Err(ProcessError::NotRunning) => self.answer(work.event.id, Ack::NotHere),
        }
        self.pump();
    }

    /// Commits "processed" and the emits in one write. An emit whose
    /// payload does not match its type's schema fails the processing (with
    /// the path of the first violation): nothing of it is committed.
    fn commit(&mut self, work: Work, emits: Vec<Emit>) {
        if let Some(e) = emits.iter().find_map(|e| {
            self.schemas
                .check(&work.to.manifest, &e.ty, &e.payload)
                .err()
        }) {
            self.failed += 1;
            self.answer(
                work.event.id,
                Ack::Failed(format!("{} emitted {e}", work.to.brane)),
            );
            return;
        }
        let parent = &work.event;
        let mut ops = EventOps {
            sync: true,
            ..EventOps::default()
        };
        let mut children = Vec::new();
        let edges = self
            .topology
            .edges
            .get(&work.to.manifest)
            .cloned()
            .unwrap_or_default();
        for (index, emit) in emits.into_iter().enumerate() {
            let mut routed = false;
            for edge in edges
                .iter()
                .filter(|e| e.from == work.to.brane && e.on == emit.ty)
            {
                routed = true;
                let to = BraneKey::new(&work.to.manifest, &edge.to);
                let id = EventId::child(&parent.id, &to, &emit.ty, index);
                let stored = Stored {
                    manifest: to.manifest.clone(),
                    to: to.brane.clone(),
                    event: Envelope {
                        id,
                        ty: emit.ty.clone(),
                        key: routing_key(&emit.key, edge.key.as_deref(), &emit.payload),
                        payload: emit.payload.clone(),
                        source: Source {
                            manifest: work.to.manifest.clone(),
                            brane: work.to.brane.clone(),
                            node: *self.me.as_bytes(),
                        },
                        attempt: 1,
                        trace: parent.trace,
                        created_ms: self.now.unix.0,
                    },
                    ordered: edge.ordered,
                    max_attempts: edge.max_attempts.unwrap_or(self.config.max_attempts).max(1),
                    failures: 0,
                    dead: None,
                };
                children.push(self.stage(stored, &mut ops));
            }
            if !routed {
                self.unrouted += 1;
            }
        }
        let order = self.next_order;
        self.next_order += 1;
        ops.processed.push((order, parent.id));
        self.window.insert(parent.id, order);
        self.window_order.push_back((order, parent.id));
        while self.window_order.len() > self.config.window.max(1) {
            if let Some((o, id)) = self.window_order.pop_front() {
                self.window.remove(&id);
                ops.forget.push(o);
            }
        }
        // A local parent leaves the outbox in the same write.
        if let Some(ws) = self.waiters.get(&parent.id) {
            for w in ws {
                if let Waiter::Local(seq) = w {
                    ops.delete.push(*seq);
                }
            }
        }
        self.reserved += children.len();
        self.persist(
            ops,
            AfterTxn::Processed {
                id: parent.id,
                order,
                children,
            },
        );
    }

    /// Answers everyone waiting for `id`.
    fn answer(&mut self, id: EventId, ack: Ack) {
        let Some(waiters) = self.waiters.remove(&id) else {
            return;
        };
        let mut delete = Vec::new();
        for w in waiters {
            match w {
                Waiter::Local(seq) if ack == Ack::Processed => {
                    // Its row went out in the processed write already.
                    let mut gone = Vec::new();
                    self.settle(seq, self.me, Ack::Processed, &mut gone);
                }
                Waiter::Local(seq) => self.settle(seq, self.me, ack.clone(), &mut delete),
                Waiter::Remote(inbound, i) => {
                    let Some(b) = self.inbound.get_mut(&inbound) else {
                        continue;
                    };
                    if let Some(slot) = b.acks.get_mut(i)
                        && slot.is_none()
                    {
                        *slot = Some(ack.clone());
                        b.open = b.open.saturating_sub(1);
                    }
                    if b.open == 0
                        && let Some(b) = self.inbound.remove(&inbound)
                    {
                        let acks = b.acks.into_iter().flatten().collect();
                        self.acts.push_back(Act::Respond {
                            inbound,
                            bytes: Acks { acks }.to_bytes(),
                        });
                    }
                }
            }
        }
        self.delete(delete);
    }

    /// Write `txn` is done.
    pub fn on_persisted(&mut self, txn: u64, result: Result<(), String>) {
        let Some(after) = self.txns.remove(&txn) else {
            return;
        };
        match after {
            AfterTxn::Emit { cmd, seqs } => {
                self.reserved = self.reserved.saturating_sub(seqs.len());
                match result {
                    Ok(()) => {
                        let mut ids = Vec::with_capacity(seqs.len());
                        for seq in seqs {
                            if let Some(e) = self.outbox.get(&seq) {
                                ids.push(e.stored.event.id);
                            }
                            self.enqueue(seq, false);
                        }
                        self.acts.push_back(Act::Emitted {
                            cmd,
                            result: Ok(ids),
                        });
                    }
                    Err(e) => {
                        for seq in seqs {
                            self.outbox.remove(&seq);
                        }
                        self.acts.push_back(Act::Emitted {
                            cmd,
                            result: Err(EmitError::NotDurable(e)),
                        });
                    }
                }
            }
            AfterTxn::Processed {
                id,
                order,
                children,
            } => {
                self.reserved = self.reserved.saturating_sub(children.len());
                match result {
                    Ok(()) => {
                        self.processed += 1;
                        for seq in children {
                            self.enqueue(seq, false);
                        }
                        self.answer(id, Ack::Processed);
                    }
                    Err(e) => {
                        for seq in children {
                            self.outbox.remove(&seq);
                        }
                        if self.window.get(&id) == Some(&order) {
                            self.window.remove(&id);
                        }
                        self.answer(id, Ack::Failed(format!("not stored durably: {e}")));
                    }
                }
            }
            AfterTxn::Replay { cmd, seq } => {
                let result = match result {
                    Ok(()) => {
                        self.enqueue(seq, false);
                        Ok(Vec::new())
                    }
                    Err(e) => Err(DlqError::NotDurable(e)),
                };
                self.acts.push_back(Act::Dlq { cmd, result });
            }
            AfterTxn::Dropped { cmd } => {
                let result = result.map(|()| Vec::new()).map_err(DlqError::NotDurable);
                self.acts.push_back(Act::Dlq { cmd, result });
            }
            AfterTxn::DeadLettered | AfterTxn::Nothing => {}
        }
        self.pump();
    }

    // ----- dead letters -------------------------------------------------------

    /// A dead-letter command; answered with [`Act::Dlq`].
    pub fn dlq(&mut self, cmd: CommandId, command: DlqCommand) {
        let found = |d: &Self, id: &EventId| d.dead.get(id).copied().ok_or(DlqError::NotFound(*id));
        let result = match command {
            DlqCommand::List => Ok(self
                .dead
                .values()
                .filter_map(|s| self.outbox.get(s))
                .map(|e| letter(&e.stored, false))
                .collect()),
            DlqCommand::Show(id) => found(self, &id).map(|seq| {
                self.outbox
                    .get(&seq)
                    .map(|e| vec![letter(&e.stored, true)])
                    .unwrap_or_default()
            }),
            DlqCommand::Replay(id) => match found(self, &id) {
                Ok(seq) => {
                    self.dead.remove(&id);
                    let Some(e) = self.outbox.get_mut(&seq) else {
                        return;
                    };
                    e.stored.dead = None;
                    e.stored.failures = 0;
                    e.stored.event.attempt += 1;
                    e.place = Place::Committing;
                    e.since = self.now.mono;
                    let ops = EventOps {
                        put: vec![(seq, e.stored.to_bytes())],
                        sync: true,
                        ..EventOps::default()
                    };
                    self.persist(ops, AfterTxn::Replay { cmd, seq });
                    return;
                }
                Err(e) => Err(e),
            },
            DlqCommand::Drop(id) => match found(self, &id) {
                Ok(seq) => {
                    self.dead.remove(&id);
                    self.outbox.remove(&seq);
                    let ops = EventOps {
                        delete: vec![seq],
                        sync: true,
                        ..EventOps::default()
                    };
                    self.persist(ops, AfterTxn::Dropped { cmd });
                    return;
                }
                Err(e) => Err(e),
            },
        };
        self.acts.push_back(Act::Dlq { cmd, result });
    }

    // ----- reports ------------------------------------------------------------

    /// Figures for `omega status` and `omega ps`.
    pub fn report(&self) -> EventReport {
        let mut oldest: BTreeMap<&EdgeKey, Mono> = BTreeMap::new();
        for e in self.outbox.values() {
            if matches!(e.place, Place::Queued | Place::InFlight(..)) {
                let t = oldest.entry(&e.edge).or_insert(e.since);
                *t = (*t).min(e.since);
            }
        }
        let edges = self
            .edges
            .iter()
            .map(|(k, q)| EdgeReport {
                manifest: k.0.clone(),
                from: k.1.clone(),
                to: k.2.clone(),
                on: k.3.clone(),
                ordered: q.ordered,
                delivered: q.delivered,
                retried: q.retried,
                rerouted: q.rerouted,
                dead_lettered: q.dead,
                in_flight: q.in_flight,
                queued: q.queued,
                lag_ms: oldest.get(k).map_or(0, |t| self.now.mono.since(*t)),
                stalled: {
                    let lag = oldest.get(k).map_or(0, |t| self.now.mono.since(*t));
                    if q.queued > 0 && q.stalled.is_some() {
                        q.stalled.clone()
                    } else if q.in_flight > 0 && lag > super::SLOW_MS {
                        Some(format!(
                            "slow: {} in flight, the oldest unacknowledged for {lag} ms",
                            q.in_flight
                        ))
                    } else {
                        None
                    }
                },
            })
            .collect();
        EventReport {
            outbox: self.outbox.len(),
            dead_letters: self.dead.len(),
            window: self.window.len(),
            processed: self.processed,
            failed: self.failed,
            duplicates: self.duplicates,
            inbox: self.inbox_len,
            unrouted: self.unrouted,
            stalled: self.held_back.clone(),
            edges,
        }
    }

    /// Events in the outbox (dead letters included).
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Whether nothing is pending: no event queued, in flight, or being processed.
    pub fn is_idle(&self) -> bool {
        self.outbox.len() == self.dead.len() && self.tickets.is_empty() && self.txns.is_empty()
    }
}

fn letter(s: &Stored, payload: bool) -> DeadLetter {
    DeadLetter {
        id: s.event.id.to_string(),
        manifest: s.manifest.clone(),
        to: s.to.clone(),
        ty: s.event.ty.clone(),
        key: s.event.key.clone(),
        source: s.event.source.to_string(),
        failures: s.failures,
        error: s.dead.clone().unwrap_or_default(),
        created_ms: s.event.created_ms,
        bytes: s.event.payload.len(),
        payload: payload.then(|| s.event.payload.clone()),
    }
}
