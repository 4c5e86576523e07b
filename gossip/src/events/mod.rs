//! Typed events across nodes: the delivery protocol.
//!
//! A manifest's `[graph] edges = [{ from, to, on }]` are typed event
//! channels. When brane `from` emits an event of type `on` while processing
//! one, one copy goes along every such edge to **one** running replica of
//! `to`, wherever it runs; branes never learn which host published. The
//! [`Delivery`] machine here decides all of it — routing, credits, retries,
//! re-routes, dead letters, deduplication — and does no I/O: the node
//! brain ([`crate::Node`]) owns one and turns its actions into the same
//! [`Output`](crate::node::Output)s as everything else (requests on
//! [`Protocol::Event`](crate::node::Protocol::Event), ordered
//! [`PersistOp::Events`](crate::node::PersistOp::Events) writes,
//! [`Output::Process`](crate::node::Output::Process) to run a brane). The
//! daemon executes them with libp2p and redb; the simulator with a seeded
//! network and an in-memory store. There is no second implementation.
//!
//! # The envelope
//!
//! [`Envelope`]: a 128-bit [`EventId`] (random for an event from outside,
//! derived for an emit — `BLAKE3(parent id, manifest, target, type, emit
//! index)` — so a re-run of the same parent emits the same ids), type,
//! key, payload (at most [`DeliveryConfig::max_payload`], 256 KiB by
//! default), [`Source`] (manifest, brane, node), attempt (from 1, raised on
//! every send after the first), a trace id carried unchanged across hops,
//! and the creation time (unix ms). Each copy along a fan-out has its own id
//! and shares the trace id.
//!
//! # What is promised
//!
//! - **Durable before acknowledged.** An emit from outside
//!   ([`Command::Emit`](crate::node::Command::Emit)) is answered with its
//!   id only once the event is in this node's durable outbox.
//! - **At-least-once delivery.** The sender keeps every event in its
//!   outbox until the receiving node answers that the target brane
//!   *processed* it (or that it had already). Lost requests, lost answers,
//!   timeouts and crashes of either side lead to a retry of the same id, to
//!   the same replica or — when it died, stopped or moved — to another.
//! - **Once per id, per replica.** The receiver keeps the ids it processed
//!   in a persisted window of the last [`DeliveryConfig::window`] ids
//!   (131 072 by default, per node) and answers a repeat `Duplicate`
//!   without running the brane again. Past the window (a retry arriving
//!   after that many newer events were processed on that node) the event is
//!   processed again. The window is per node: when a replica processed an
//!   event and died before its answer arrived, the retry goes to another
//!   replica, which runs it again. With one replica per target, or no
//!   failure of a replica between processing and answer, each id is
//!   processed once.
//! - **Atomic emits.** What a brane emits while processing an event is
//!   committed in the *same* write as "processed" (one
//!   [`EventOps`]): a brane or node failing midway leaves neither the mark
//!   nor the emits, and the event is processed again.
//! - **Per-key order on `ordered = true` edges.** Events with the same key
//!   from one source node are processed by the target in the order they
//!   were committed to that node's outbox, across retries, re-routes and
//!   restarts: at most one event per (edge, key) is in flight, and the
//!   next waits until it is acknowledged or dead-lettered. Head-of-line
//!   blocking is per key only. A dead-lettered event does not hold its key;
//!   a replayed one goes to the back.
//! - **Routing.** A keyed event goes to the replica with the highest
//!   rendezvous (HRW) score of `BLAKE3(key, node)` among the nodes that run
//!   the target, so the same key reaches the same replica while the set is
//!   stable; an event without a key goes round-robin. The key is the emit's
//!   own, or else the edge's `key` selector (`.field.sub`) applied to a JSON
//!   payload.
//! - **Failure.** A failed processing (the brane returned an error, trapped
//!   or timed out) is retried with doubling backoff (100 ms … 10 s); after
//!   the edge's `max_attempts` failures (default
//!   [`DeliveryConfig::max_attempts`], 5) the event is dead-lettered: kept in
//!   the outbox, marked dead, listed by `omega dlq ls`, replayed or dropped
//!   by hand. A transport failure, a busy receiver and a replica that does
//!   not run the target any more are retried without counting as failures.
//! - **Backpressure.** Credits bound what is in flight: per edge
//!   ([`DeliveryConfig::edge_credits`], 256) and per peer
//!   ([`DeliveryConfig::peer_credits`], 1024). A receiver queues at most
//!   [`DeliveryConfig::max_inbox`] events per brane and answers `Busy`
//!   beyond it; it runs a brane only when its own outbox has room for what
//!   the brane may emit. The outbox holds at most
//!   [`DeliveryConfig::max_outbox`] events: beyond it emits from outside are
//!   refused as busy and processing waits. A slow consumer therefore stalls
//!   its producers, all the way up, with bounded memory; the stall is
//!   visible per edge ([`EdgeReport`]: queued, in flight, lag, why stalled).
//!
//! # What is not promised
//!
//! Exactly-once *effects*: a brane's side effects outside the mesh (a file
//! written, an HTTP call) may repeat when its event is processed again.
//! Order across keys, across sources, or on unordered edges. Delivery to a
//! target no node runs: its events wait (visible as stalled) until one does.
//!
//! # Wire
//!
//! One request per batch on `/omega/event/1`: [`Deliver`] (DAG-CBOR, at most
//! [`MAX_BATCH_ITEMS`] items and [`MAX_WIRE_BYTES`]); the answer is
//! [`Acks`], one [`Ack`] per item in order, sent when every item is
//! resolved (processed and durable, refused, or found a duplicate).

mod machine;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::node::BraneKey;

pub use machine::{Act, Delivery};

/// Most items one [`Deliver`] request may carry.
pub const MAX_BATCH_ITEMS: usize = 256;
/// Largest encoded [`Deliver`] or [`Acks`] message, bytes.
pub const MAX_WIRE_BYTES: usize = 8 << 20;
/// Longest event type, bytes.
pub const MAX_TYPE_BYTES: usize = 128;
/// Longest event key, bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest manifest or brane name carried in an envelope, bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// A 128-bit event id (also used for trace ids). Shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl EventId {
    /// The id derived for emit `index` of `parent` toward `to`.
    pub fn child(parent: &EventId, to: &BraneKey, ty: &str, index: usize) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(b"omega/event/child/1");
        h.update(&parent.0);
        for part in [to.manifest.as_bytes(), to.brane.as_bytes(), ty.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(&(index as u64).to_le_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Self(id)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

/// Why text is not an [`EventId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event id is 32 hex digits, found `{0}`")]
pub struct BadEventId(pub String);

impl std::str::FromStr for EventId {
    type Err = BadEventId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadEventId(s.chars().take(64).collect());
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(id))
    }
}

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The manifest.
    pub manifest: String,
    /// The emitting brane; empty for an event from outside the graph.
    pub brane: String,
    /// The node it was emitted on.
    #[serde(with = "serde_bytes")]
    pub node: [u8; 32],
}

impl Source {
    /// The emitting node.
    pub fn node(&self) -> NodeId {
        NodeId::from_bytes(self.node)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let brane = if self.brane.is_empty() {
            "external"
        } else {
            &self.brane
        };
        let node = self.node();
        let text = node.to_string();
        let short = text.get(text.len().saturating_sub(8)..).unwrap_or(&text);
        write!(f, "{}/{brane}@{short}", self.manifest)
    }
}

/// One event on its way to one target brane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per copy, stable across retries.
    pub id: EventId,
    /// The event type.
    pub ty: String,
    /// The routing key (may be empty).
    pub key: String,
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Who emitted it.
    pub source: Source,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// Carried unchanged from the first event of a cascade.
    pub trace: EventId,
    /// When it was emitted, unix ms.
    pub created_ms: u64,
}

/// An event submitted from outside the graph (`omega emit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The target brane.
    pub to: BraneKey,
    /// The event type.
    pub ty: String,
    /// The routing key (may be empty).
    pub key: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// An event a brane emitted while processing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    /// The type (one of its outgoing edges').
    pub ty: String,
    /// The key (may be empty).
    pub key: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Why processing did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The brane ran and failed (error, trap, timeout): counts as an attempt.
    #[error("{0}")]
    Failed(String),
    /// The brane does not run here (any more): the event is re-routed.
    #[error("the brane does not run here")]
    NotRunning,
}

/// A brane to run on one event ([`crate::node::Output::Process`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Report the result with this ticket ([`crate::node::Input::Processed`]).
    pub ticket: u64,
    /// The brane.
    pub to: BraneKey,
    /// The event.
    pub event: Envelope,
}

/// One event in a [`Deliver`] request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The target brane's manifest.
    pub manifest: String,
    /// The target brane.
    pub to: String,
    /// The event.
    pub event: Envelope,
}

/// A batch of events for branes on the receiving node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// The events.
    pub items: Vec<Item>,
}

/// What became of one delivered event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Ack {
    /// Processed, and its emits are durable on the receiver.
    Processed,
    /// Processed before (found in the window).
    Duplicate,
    /// The brane failed on it; retried, dead-lettered after `max_attempts`.
    Failed(String),
    /// The target does not run on the receiver: re-route.
    NotHere,
    /// The receiver's queue for the target is full: try again later.
    Busy,
    /// The event is invalid for the target (never retried).
    Refused(String),
}

/// The answer to a [`Deliver`]: one [`Ack`] per item, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acks {
    /// The acks.
    pub acks: Vec<Ack>,
}

/// Why a message of the event protocol does not decode (the node's one
/// wire error).
pub use crate::node::WireError as EventWireError;

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Strings, integers and byte strings only: encoding cannot fail.
    serde_ipld_dagcbor::to_vec(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, EventWireError> {
    if bytes.len() > MAX_WIRE_BYTES {
        return Err(EventWireError::TooLarge {
            what,
            len: bytes.len(),
            max: MAX_WIRE_BYTES,
        });
    }
    serde_ipld_dagcbor::from_slice(bytes).map_err(|e| EventWireError::Malformed {
        what,
        why: e.to_string(),
    })
}

impl Deliver {
    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a request, checking every bound.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EventWireError> {
        let d: Self = decode(bytes, "event batch")?;
        if d.items.len() > MAX_BATCH_ITEMS {
            return Err(EventWireError::TooLarge {
                what: "event batch items",
                len: d.items.len(),
                max: MAX_BATCH_ITEMS,
            });
        }
        Ok(d)
    }
}

impl Acks {
    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes an answer.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EventWireError> {
        decode(bytes, "event acks")
    }
}

/// An outbox entry as stored (the value of one `outbox` row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The target brane's manifest.
    pub manifest: String,
    /// The target brane.
    pub to: String,
    /// The event.
    pub event: Envelope,
    /// Whether its edge is ordered.
    pub ordered: bool,
    /// Failures before it is dead-lettered.
    pub max_attempts: u32,
    /// Failures so far.
    pub failures: u32,
    /// Why it was dead-lettered, if it was.
    pub dead: Option<String>,
}

impl Stored {
    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a stored row.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EventWireError> {
        decode(bytes, "stored event")
    }

    /// The target.
    pub fn target(&self) -> BraneKey {
        BraneKey::new(&self.manifest, &self.to)
    }
}

/// One transaction of the event store: the driver applies all of it
/// atomically, in order with every other [`crate::node::PersistOp`].
///
/// Tables: `outbox` (seq → [`Stored`] bytes) and `processed` (order → id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventOps {
    /// Outbox rows to insert or replace.
    pub put: Vec<(u64, Vec<u8>)>,
    /// Outbox rows to remove.
    pub delete: Vec<u64>,
    /// Ids to add to the processed window, with their order.
    pub processed: Vec<(u64, EventId)>,
    /// Window entries to drop (by order), oldest first.
    pub forget: Vec<u64>,
    /// Whether the write must be durable before it is reported (false for
    /// removals of acknowledged events only: losing one means a resend,
    /// which the receiver deduplicates).
    pub sync: bool,
}

/// What a node loads back at start: every outbox row, the processed window.
#[derive(Debug, Clone, Default)]
pub struct StoredEvents {
    /// `outbox` rows (seq, bytes).
    pub outbox: Vec<(u64, Vec<u8>)>,
    /// `processed` rows (order, id).
    pub processed: Vec<(u64, EventId)>,
}

/// Bounds and timers of the delivery machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Most events in flight per edge. Default 256.
    pub edge_credits: usize,
    /// Most events in flight to one peer. Default 1024.
    pub peer_credits: usize,
    /// Most events per request. Default 64.
    pub max_batch: usize,
    /// Most payload bytes per request. Default 1 MiB.
    pub max_batch_bytes: usize,
    /// Most events in this node's outbox (dead letters included). Default 16 384.
    pub max_outbox: usize,
    /// Most processed ids remembered for deduplication. Default 131 072.
    pub window: usize,
    /// Failures before an event is dead-lettered, unless its edge says. Default 5.
    pub max_attempts: u32,
    /// Largest payload, bytes. Default 256 KiB.
    pub max_payload: usize,
    /// Most events queued per local brane. Default 1024.
    pub max_inbox: usize,
    /// Most inbound batches waiting for their answers. Default 4096;
    /// beyond it a batch is answered `Busy` for every event at once.
    pub max_open_batches: usize,
    /// Most events one local brane processes at once. Default 4.
    pub concurrency: usize,
    /// Most emits one processing may produce (outbox room kept for them). Default 64.
    pub emit_reserve: usize,
    /// First retry delay after a failure, ms (doubling). Default 100.
    pub retry_base_ms: u64,
    /// Longest retry delay, ms. Default 10 000.
    pub retry_max_ms: u64,
    /// Delay before retrying a busy receiver or a missing replica, ms. Default 50.
    pub busy_retry_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            edge_credits: 256,
            peer_credits: 1024,
            max_batch: 64,
            max_batch_bytes: 1 << 20,
            max_outbox: 16_384,
            window: 131_072,
            max_attempts: 5,
            max_payload: 256 << 10,
            max_inbox: 1024,
            max_open_batches: 4096,
            concurrency: 4,
            emit_reserve: 64,
            retry_base_ms: 100,
            retry_max_ms: 10_000,
            busy_retry_ms: 50,
        }
    }
}

/// Why an emit from outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// No applied manifest has that name.
    #[error("no manifest `{0}` is applied")]
    NoManifest(String),
    /// The manifest has no such brane.
    #[error("manifest `{manifest}` has no brane `{brane}`")]
    NoBrane {
        /// The manifest.
        manifest: String,
        /// The brane.
        brane: String,
    },
    /// The target serves HTTP and takes no events.
    #[error("`{0}` is an HTTP brane: it takes requests, not events")]
    HttpBrane(String),
    /// The target's incoming edges carry other types.
    #[error("`{brane}` takes {expected}, not `{ty}`")]
    WrongType {
        /// The target.
        brane: String,
        /// The type offered.
        ty: String,
        /// The types its edges carry.
        expected: String,
    },
    /// A field (or a batch) is too large.
    #[error("{what} of {len} exceeds the maximum of {max}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload does not satisfy the event type's schema.
    #[error("payload of `{ty}` does not match its schema at `{path}`: {why}")]
    Schema {
        /// The type.
        ty: String,
        /// JSON pointer of the first violation.
        path: String,
        /// What is wrong there.
        why: String,
    },
    /// No valid grant of `/event/emit` for the manifest.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The outbox is full: a consumer downstream is slow. Try again.
    #[error("busy: the outbox holds {0} events; a consumer downstream is slow")]
    Busy(usize),
    /// Accepted in memory, but the store failed: not acknowledged.
    #[error("not stored durably: {0}")]
    NotDurable(String),
}

/// A dead-lettered event (`omega dlq ls|show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event id.
    pub id: String,
    /// The target brane's manifest.
    pub manifest: String,
    /// The target brane.
    pub to: String,
    /// The type.
    pub ty: String,
    /// The key.
    pub key: String,
    /// Who emitted it.
    pub source: String,
    /// Failures.
    pub failures: u32,
    /// The last error.
    pub error: String,
    /// When it was emitted, unix ms.
    pub created_ms: u64,
    /// Payload size.
    pub bytes: usize,
    /// The payload, for `show` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Vec<u8>>,
}

/// A dead-letter queue operation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DlqCommand {
    /// Every dead letter on this node (without payloads).
    List,
    /// One, with its payload.
    Show(EventId),
    /// Put it back in the outbox with its failures reset.
    Replay(EventId),
    /// Remove it for good.
    Drop(EventId),
}

/// Why a dead-letter operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// No dead letter has that id on this node.
    #[error("no dead letter {0} on this node")]
    NotFound(EventId),
    /// The store failed.
    #[error("not stored durably: {0}")]
    NotDurable(String),
}

/// Delivery figures of one edge, as seen by this (sending) node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeReport {
    /// The manifest.
    pub manifest: String,
    /// The emitting brane (empty: events from outside).
    pub from: String,
    /// The target brane.
    pub to: String,
    /// The type.
    pub on: String,
    /// Whether the edge is ordered.
    pub ordered: bool,
    /// Events acknowledged as processed.
    pub delivered: u64,
    /// Retries (failures, timeouts, busy answers, re-routes).
    pub retried: u64,
    /// Re-routes (the replica did not run the target any more).
    pub rerouted: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// In flight now.
    pub in_flight: usize,
    /// Waiting to be sent (ready, delayed, or behind their key).
    pub queued: usize,
    /// Age of the oldest event not yet acknowledged, ms.
    pub lag_ms: u64,
    /// Why nothing moves, when nothing can — or why it moves slowly (the
    /// oldest unacknowledged event is older than [`SLOW_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
}

/// An edge whose oldest unacknowledged event is older than this (ms) is
/// reported as slow.
pub const SLOW_MS: u64 = 1_000;

/// The event part of `omega status` and `omega ps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReport {
    /// Events in this node's outbox (dead letters included).
    pub outbox: usize,
    /// Dead letters on this node.
    pub dead_letters: usize,
    /// Ids in the processed window.
    pub window: usize,
    /// Events processed here (since start).
    pub processed: u64,
    /// Processings that failed here (since start).
    pub failed: u64,
    /// Duplicates answered without processing (since start).
    pub duplicates: u64,
    /// Events queued for local branes.
    pub inbox: usize,
    /// Emits that matched no edge and went nowhere (since start).
    pub unrouted: u64,
    /// Why events for local branes wait, when they do (backpressure from
    /// a full outbox: a consumer downstream is slow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
    /// Per outgoing edge.
    pub edges: Vec<EdgeReport>,
}

/// The routing facts the node hands the machine whenever they change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Nodes that run each brane (this node included), sorted.
    pub replicas: std::collections::BTreeMap<BraneKey, Vec<NodeId>>,
    /// Each applied manifest's edges.
    pub edges: std::collections::BTreeMap<String, Vec<omega_zgraph::Edge>>,
    /// Each applied manifest's event branes (HTTP branes excluded), with
    /// their processing concurrency.
    pub branes: std::collections::BTreeMap<BraneKey, usize>,
    /// Each applied manifest's HTTP branes.
    pub http: std::collections::BTreeSet<BraneKey>,
    /// Each applied manifest's event schemas (type → JSON Schema).
    pub schemas:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, serde_json::Value>>,
}

/// The key of an emit along `edge`: its own, else the edge's selector
/// (`.field.sub`) applied to a JSON payload, else empty.
pub fn routing_key(own: &str, selector: Option<&str>, payload: &[u8]) -> String {
    if !own.is_empty() {
        return own.to_owned();
    }
    let Some(sel) = selector else {
        return String::new();
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return String::new();
    };
    let mut at = &value;
    for part in sel.split('.').filter(|p| !p.is_empty()) {
        match at.get(part) {
            Some(v) => at = v,
            None => return String::new(),
        }
    }
    match at {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}
