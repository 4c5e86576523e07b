//! The membership state machine: SWIM probing with Lifeguard suspicion,
//! piggybacked dissemination and push-pull anti-entropy over signed records.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use omega_identity::Keypair;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::admission::Admission;
use crate::broadcast::Broadcasts;
use crate::config::{Config, ConfigError};
use crate::id::NodeId;
use crate::message::{self, Head, Message, SyncFlags, Update};
use crate::record::{Ed25519Verifier, MemberRecord, Profile, RecordError, SignedRecord, Verifier};
use crate::wire::{DecodeError, WIRE_VERSION, Writer, varint_len};

/// What this node believes about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Answering probes (directly or indirectly).
    Alive,
    /// Missed a probe; declared dead unless it refutes before the suspicion timeout.
    Suspect,
    /// Declared dead. It can come back only with a higher incarnation.
    Dead,
    /// Left gracefully (its own signed record says so).
    Left,
}

impl State {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Alive => 0,
            Self::Suspect => 1,
            Self::Dead => 2,
            Self::Left => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            0 => Ok(Self::Alive),
            1 => Ok(Self::Suspect),
            2 => Ok(Self::Dead),
            3 => Ok(Self::Left),
            v => Err(DecodeError::UnknownValue {
                what: "member state",
                value: v.into(),
            }),
        }
    }

    /// `alive`, `suspect`, `dead` or `left`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }

    /// Alive or suspect: probed and counted in the mesh size.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }
}

/// Bytes the driver must deliver to the peer `to` (one message, one stream write
/// or datagram; loss is tolerated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The destination member.
    pub to: NodeId,
    /// The encoded message (at most `limits.max_message_size` bytes).
    pub bytes: Vec<u8>,
}

/// Why something a peer sent was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// A record's signature does not verify against its member's key.
    #[error("record of {subject:?} has a bad signature")]
    BadSignature {
        /// The member the record claims to be.
        subject: NodeId,
    },
    /// A record belongs to another mesh.
    #[error("record of {subject:?} is for another mesh")]
    WrongMesh {
        /// The member the record is about.
        subject: NodeId,
    },
    /// A record breaks the profile rules.
    #[error("record of {subject:?} is invalid: {error}")]
    InvalidRecord {
        /// The member the record is about.
        subject: NodeId,
        /// What is wrong.
        error: RecordError,
    },
    /// The admission check refused the member.
    #[error("{subject:?} is not an admitted member")]
    NotAdmitted {
        /// The member the record is about.
        subject: NodeId,
    },
    /// The table is full ([`Config::max_members`]).
    #[error("member table full; {subject:?} not added")]
    TableFull {
        /// The member that was not added.
        subject: NodeId,
    },
    /// The sender is not a member this node knows; it was asked to announce itself.
    #[error("message from a peer that is not a known member")]
    UnknownSender,
}

/// Something the driver should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The first sync answer arrived after [`Membership::join`].
    Joined,
    /// A member is up: new, or back from dead or left with a higher incarnation.
    Up {
        /// The member.
        id: NodeId,
    },
    /// A suspected member refuted the suspicion: alive again.
    Alive {
        /// The member.
        id: NodeId,
    },
    /// A live member published a new record (a new incarnation).
    Updated {
        /// The member.
        id: NodeId,
    },
    /// A member is suspected.
    Suspect {
        /// The member.
        id: NodeId,
    },
    /// A member was declared dead.
    Dead {
        /// The member.
        id: NodeId,
    },
    /// A member left gracefully.
    Left {
        /// The member.
        id: NodeId,
    },
    /// A member was removed by [`Membership::remove`].
    Removed {
        /// The member.
        id: NodeId,
    },
    /// Input from `peer` was refused. When `penalty` is set the peer misbehaved
    /// (garbage, forged or foreign records) and the driver should lower its
    /// score and disconnect it on repeat offences.
    Refused {
        /// The transport-authenticated sender.
        peer: NodeId,
        /// What was wrong.
        reason: Refusal,
        /// Whether the sender is to blame.
        penalty: bool,
    },
}

/// Errors from local commands and construction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The local profile breaks the rules or limits.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// This node has left; create a new state machine to rejoin.
    #[error("this node has left the mesh")]
    Left,
}

/// The local member: key, profile and the incarnation to start from (0, or
/// the last one the driver persisted plus one).
#[derive(Debug, Clone)]
pub struct LocalMember {
    /// The node key; its public half is the member id.
    pub keypair: Keypair,
    /// Name, axes, resources, addresses.
    pub profile: Profile,
    /// Starting incarnation. If peers remember a higher one, the node learns it
    /// by refutation and goes above it.
    pub incarnation: u64,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages handed to the driver.
    pub messages_sent: u64,
    /// Bytes handed to the driver.
    pub bytes_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Refused inputs (each also an [`Event::Refused`]).
    pub refused: u64,
    /// Transmits dropped because the queue was full.
    pub dropped_transmits: u64,
    /// Events dropped because the queue was full.
    pub dropped_events: u64,
    /// Indirect-probe requests ignored because [`Config::max_relays`] were in flight.
    pub dropped_relays: u64,
    /// Probes that failed (no direct or indirect ack).
    pub failed_probes: u64,
}

/// A read-only view of one member.
#[derive(Debug, Clone, Copy)]
pub struct MemberView<'a> {
    /// Its latest signed record.
    pub record: &'a SignedRecord,
    /// What this node believes.
    pub state: State,
    /// When (driver ms) it entered `state`.
    pub since: u64,
}

#[derive(Debug)]
struct Suspicion {
    start: u64,
    deadline: u64,
    confirmers: Vec<NodeId>,
}

#[derive(Debug)]
struct Member {
    record: SignedRecord,
    state: State,
    since: u64,
    suspicion: Option<Box<Suspicion>>,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    target: NodeId,
    seq: u32,
    sent: u64,
    indirect: bool,
}

#[derive(Debug, Clone, Copy)]
struct Relay {
    requester: NodeId,
    seq: u32,
    expires: u64,
}

#[derive(Debug)]
struct Join {
    seeds: Vec<NodeId>,
    next_seed: usize,
    next_try: u64,
}

/// Most seeds remembered by [`Membership::join`].
const MAX_SEEDS: usize = 16;
/// Seeds contacted per join attempt.
const SEEDS_PER_ATTEMPT: usize = 3;
/// Most confirmations tracked per suspicion (Lifeguard's k is capped here).
const MAX_CONFIRMERS: usize = 8;
/// ln(i) × 1000 for i = 0..=9 (index 0 unused), for integer-only Lifeguard scaling.
const LN_MILLI: [u64; 10] = [0, 0, 693, 1099, 1386, 1609, 1792, 1946, 2079, 2197];
/// Most recently dead members remembered for gossip-to-the-dead.
const MAX_RECENTLY_DEAD: usize = 64;

/// The SWIM membership and liveness state machine for one node. See the crate
/// docs for the driver contract.
pub struct Membership {
    config: Config,
    keypair: Keypair,
    local: SignedRecord,
    admission: Box<dyn Admission + Send>,
    verifier: Box<dyn Verifier + Send>,
    rng: ChaCha8Rng,
    members: BTreeMap<NodeId, Member>,
    live: usize,
    tombstones: BTreeMap<NodeId, u64>,
    tombstone_order: VecDeque<NodeId>,
    suspicions: BTreeSet<(u64, NodeId)>,
    recently_dead: VecDeque<(NodeId, u64)>,
    probe_order: Vec<NodeId>,
    probe_index: usize,
    probe: Option<Probe>,
    relays: BTreeMap<u32, Relay>,
    next_seq: u32,
    broadcasts: Broadcasts,
    next_probe_at: u64,
    next_gossip_at: u64,
    next_sync_at: u64,
    next_reconnect_at: u64,
    sync_cursor: Option<NodeId>,
    full_sync_tokens: u32,
    full_sync_refilled: u64,
    join: Option<Join>,
    joined: bool,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("id", &self.local.record.id)
            .field("incarnation", &self.local.record.incarnation)
            .field("members", &self.members.len())
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Creates the state machine for `local` at time `now`. `rng_seed` seeds all
    /// of its randomness: same seed and same inputs give the same outputs.
    pub fn new(
        config: Config,
        local: LocalMember,
        admission: Box<dyn Admission + Send>,
        rng_seed: [u8; 32],
        now: u64,
    ) -> Result<Self, CommandError> {
        config.validate()?;
        local.profile.validate(&config.limits)?;
        let record = MemberRecord {
            id: local.keypair.public().into(),
            mesh: config.mesh,
            incarnation: local.incarnation,
            leaving: false,
            profile: local.profile,
        };
        let signed = sign(record, &local.keypair);
        let mut rng = ChaCha8Rng::from_seed(rng_seed);
        let jitter = rng.next_u64() % config.probe_interval;
        let sync_jitter = rng.next_u64() % config.sync_interval;
        Ok(Self {
            next_probe_at: now + jitter,
            next_gossip_at: now + config.gossip_interval,
            next_sync_at: now + config.sync_interval / 2 + sync_jitter,
            next_reconnect_at: now + config.reconnect_interval,
            full_sync_tokens: config.full_sync_burst,
            full_sync_refilled: now,
            config,
            keypair: local.keypair,
            local: signed,
            admission,
            verifier: Box::new(Ed25519Verifier),
            rng,
            members: BTreeMap::new(),
            live: 0,
            tombstones: BTreeMap::new(),
            tombstone_order: VecDeque::new(),
            suspicions: BTreeSet::new(),
            recently_dead: VecDeque::new(),
            probe_order: Vec::new(),
            probe_index: 0,
            probe: None,
            relays: BTreeMap::new(),
            next_seq: 0,
            broadcasts: Broadcasts::default(),
            sync_cursor: None,
            join: None,
            joined: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    /// Replaces the signature verifier (default: [`Ed25519Verifier`]).
    #[must_use]
    pub fn with_verifier(mut self, verifier: Box<dyn Verifier + Send>) -> Self {
        self.verifier = verifier;
        self
    }

    // ----- local commands -------------------------------------------------

    /// Joins through `seeds` (members whose addresses the driver can reach):
    /// sends them our record and asks for their full state, retrying every
    /// [`Config::join_retry`] until one answers ([`Event::Joined`]).
    pub fn join(&mut self, seeds: &[NodeId], now: u64) -> Result<(), CommandError> {
        if self.local.record.leaving {
            return Err(CommandError::Left);
        }
        let me = self.id();
        let seeds: Vec<NodeId> = seeds
            .iter()
            .copied()
            .filter(|s| *s != me)
            .take(MAX_SEEDS)
            .collect();
        if seeds.is_empty() {
            return Ok(());
        }
        self.join = Some(Join {
            seeds,
            next_seed: 0,
            next_try: now,
        });
        self.try_join(now);
        Ok(())
    }

    /// Leaves gracefully: publishes our record with `leaving` set and a higher
    /// incarnation, and stops probing. Keep driving the machine for a few
    /// gossip intervals so the news spreads, then drop it.
    pub fn leave(&mut self, now: u64) {
        if self.local.record.leaving {
            return;
        }
        self.local.record.leaving = true;
        self.bump_incarnation(self.local.record.incarnation);
        self.join = None;
        self.probe = None;
        let update = Update::Alive(self.local.clone()).encode();
        for to in self.random_live(self.config.gossip_fanout, None) {
            self.send(to, message::encode_with_updates(Head::Gossip, &[&update]));
        }
        let _ = now;
    }

    /// Publishes a new profile (addresses, resources…) under a higher incarnation.
    pub fn update_profile(&mut self, profile: Profile, now: u64) -> Result<(), CommandError> {
        if self.local.record.leaving {
            return Err(CommandError::Left);
        }
        profile.validate(&self.config.limits)?;
        self.local.record.profile = profile;
        self.bump_incarnation(self.local.record.incarnation);
        let _ = now;
        Ok(())
    }

    /// Removes a member at once (for example after a revocation; the admission
    /// check must also refuse it from now on, or it comes back with its next
    /// incarnation). Emits [`Event::Removed`].
    pub fn remove(&mut self, id: NodeId) {
        if let Some(m) = self.members.get(&id) {
            let incarnation = m.record.record.incarnation;
            self.set_state(id, State::Dead, 0);
            self.members.remove(&id);
            self.add_tombstone(id, incarnation);
            self.push_event(Event::Removed { id });
        }
    }

    // ----- inputs -----------------------------------------------------------

    /// Handles `bytes` received from `from` (the transport-authenticated peer).
    /// Never panics; bad input yields [`Event::Refused`].
    pub fn handle_message(&mut self, from: NodeId, bytes: &[u8], now: u64) {
        self.stats.messages_received += 1;
        self.stats.bytes_received += bytes.len() as u64;
        let msg = match message::decode(bytes, &self.config.limits) {
            Ok(msg) => msg,
            Err(e) => return self.refuse(from, Refusal::Malformed(e), true),
        };
        match msg {
            Message::Ping { seq, updates } => {
                if self.apply_updates(from, updates, now) {
                    let reply = self.with_piggyback(Head::Ack { seq }, None);
                    self.send(from, reply);
                }
            }
            Message::Ack { seq, updates } => {
                if self.apply_updates(from, updates, now) {
                    self.on_ack(seq);
                }
            }
            Message::PingReq {
                seq,
                target,
                updates,
            } => {
                if self.apply_updates(from, updates, now) {
                    self.relay(from, seq, target, now);
                }
            }
            Message::Gossip { updates } => {
                self.apply_updates(from, updates, now);
            }
            Message::Sync { flags, entries } => self.on_sync(from, flags, entries, now),
            Message::Unknown => {
                if self.members.contains_key(&from) {
                    let update = Update::Alive(self.local.clone()).encode();
                    self.send(from, message::encode_with_updates(Head::Gossip, &[&update]));
                }
            }
        }
    }

    /// Runs every timer that is due at `now`: probes, indirect probes,
    /// suspicion timeouts, gossip, anti-entropy, reconnects and join retries.
    pub fn handle_timeout(&mut self, now: u64) {
        self.expire_suspicions(now);
        if let Some(p) = self.probe {
            if now >= p.sent + self.config.probe_interval {
                self.probe = None;
                self.probe_failed(p.target, now);
            } else if !p.indirect && now >= p.sent + self.config.probe_timeout {
                self.indirect_probe(p);
            }
        }
        if now >= self.next_probe_at {
            self.next_probe_at = now + self.config.probe_interval;
            self.start_probe(now);
        }
        if now >= self.next_gossip_at {
            self.next_gossip_at = now + self.config.gossip_interval;
            self.gossip_round(now);
        }
        if now >= self.next_sync_at {
            self.next_sync_at = now + self.config.sync_interval;
            self.reap(now);
            self.anti_entropy();
        }
        if now >= self.next_reconnect_at {
            self.next_reconnect_at = now + self.config.reconnect_interval;
            self.reconnect();
        }
        if self.join.as_ref().is_some_and(|j| now >= j.next_try) {
            self.try_join(now);
        }
        self.relays.retain(|_, r| r.expires > now);
    }

    // ----- outputs ----------------------------------------------------------

    /// The next message to send, if any. Drain after every input.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any. Drain after every input.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Membership::handle_timeout`] must next be called (driver ms).
    /// Always `Some` for a machine that has not left; may be in the past.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self
            .next_probe_at
            .min(self.next_sync_at)
            .min(self.next_reconnect_at);
        if self.broadcasts.len() > 0 {
            t = t.min(self.next_gossip_at);
        }
        if let Some(p) = &self.probe {
            let due = if p.indirect {
                p.sent + self.config.probe_interval
            } else {
                p.sent + self.config.probe_timeout
            };
            t = t.min(due);
        }
        if let Some(&(deadline, _)) = self.suspicions.first() {
            t = t.min(deadline);
        }
        if let Some(j) = &self.join {
            t = t.min(j.next_try);
        }
        Some(t)
    }

    // ----- queries ------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.local.record.id
    }

    /// This node's current signed record.
    pub fn local_record(&self) -> &SignedRecord {
        &self.local
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.local.record.incarnation
    }

    /// Whether a seed answered the join (or any sync answer arrived).
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// One member (not this node).
    pub fn member(&self, id: &NodeId) -> Option<MemberView<'_>> {
        self.members.get(id).map(view)
    }

    /// All known members (not this node), in id order.
    pub fn members(&self) -> impl Iterator<Item = MemberView<'_>> + '_ {
        self.members.values().map(view)
    }

    /// Members in the table, any state.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Alive or suspect members (not counting this node).
    pub fn live_count(&self) -> usize {
        self.live
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// An estimate of the heap and inline bytes held by the member table and
    /// its indexes (B-tree node overhead included as a factor of 3/2).
    pub fn memory_estimate(&self) -> usize {
        let entry = std::mem::size_of::<NodeId>() + std::mem::size_of::<Member>();
        let members: usize = self
            .members
            .values()
            .map(|m| {
                entry * 3 / 2
                    + m.record.heap_bytes()
                    + m.suspicion.as_ref().map_or(0, |s| {
                        std::mem::size_of::<Suspicion>() + s.confirmers.capacity() * 32
                    })
            })
            .sum();
        members
            + self.probe_order.capacity() * std::mem::size_of::<NodeId>()
            + self.tombstones.len() * 48 * 3 / 2
            + self.tombstone_order.capacity() * 32
            + self.suspicions.len() * 40 * 3 / 2
            + self.broadcasts.heap_bytes()
    }
}

fn view(m: &Member) -> MemberView<'_> {
    MemberView {
        record: &m.record,
        state: m.state,
        since: m.since,
    }
}

fn sign(record: MemberRecord, key: &Keypair) -> SignedRecord {
    // Only called with the local record, whose id is derived from `key`.
    record.sign_own(key)
}

// ----- internals -----------------------------------------------------------------

impl Membership {
    /// Applies piggybacked updates. Returns false if the message must not be
    /// answered (the sender misbehaved or is unknown).
    fn apply_updates(&mut self, from: NodeId, updates: Vec<Update>, now: u64) -> bool {
        for update in updates {
            let ok = match update {
                Update::Alive(record) => self.apply_record(from, record, now),
                Update::Suspect {
                    id,
                    incarnation,
                    from: by,
                } => {
                    self.apply_claim(id, incarnation, State::Suspect, by, now);
                    true
                }
                Update::Dead {
                    id,
                    incarnation,
                    from: by,
                } => {
                    self.apply_claim(id, incarnation, State::Dead, by, now);
                    true
                }
            };
            if !ok {
                return false;
            }
        }
        self.check_sender(from)
    }

    /// Whether `from` is a member; if not, refuses and asks it to announce itself.
    fn check_sender(&mut self, from: NodeId) -> bool {
        if self.members.contains_key(&from) {
            return true;
        }
        self.refuse(from, Refusal::UnknownSender, false);
        self.send(from, message::encode_with_updates(Head::Unknown, &[]));
        false
    }

    /// Applies a signed record. Returns false on a penalized refusal.
    fn apply_record(&mut self, from: NodeId, sr: SignedRecord, now: u64) -> bool {
        let id = sr.record.id;
        if id == self.id() {
            return self.apply_own_record(from, &sr);
        }
        if sr.record.mesh != self.config.mesh {
            self.refuse(from, Refusal::WrongMesh { subject: id }, true);
            return false;
        }
        let incarnation = sr.record.incarnation;
        if let Some(m) = self.members.get(&id) {
            // Equal incarnation: the same record, or an equivocation we ignore.
            if incarnation <= m.record.record.incarnation {
                return true;
            }
        } else if let Some(&dead_at) = self.tombstones.get(&id)
            && incarnation <= dead_at
        {
            // A member we buried: tell it, so it can come back above `dead_at`.
            if from == id {
                let me = self.id();
                let claim = Update::Dead {
                    id,
                    incarnation: dead_at,
                    from: me,
                }
                .encode();
                self.send(from, message::encode_with_updates(Head::Gossip, &[&claim]));
            }
            return true;
        }
        if let Err(error) = sr.record.profile.validate(&self.config.limits) {
            self.refuse(from, Refusal::InvalidRecord { subject: id, error }, true);
            return false;
        }
        if !sr.verify(self.verifier.as_ref()) {
            self.refuse(from, Refusal::BadSignature { subject: id }, true);
            return false;
        }
        if !self.admission.is_admitted(&sr.record) {
            self.refuse(from, Refusal::NotAdmitted { subject: id }, from == id);
            return from != id;
        }
        if !self.members.contains_key(&id) && self.members.len() >= self.config.max_members {
            self.refuse(from, Refusal::TableFull { subject: id }, false);
            return true;
        }
        let new_state = if sr.record.leaving {
            State::Left
        } else {
            State::Alive
        };
        let update = Update::Alive(sr.clone()).encode();
        let old_state = match self.members.get_mut(&id) {
            Some(m) => {
                m.record = sr;
                Some(m.state)
            }
            None => {
                self.tombstones.remove(&id);
                self.members.insert(
                    id,
                    Member {
                        record: sr,
                        state: State::Left,
                        since: now,
                        suspicion: None,
                    },
                );
                None
            }
        };
        self.set_state(id, new_state, now);
        let event = match (old_state, new_state) {
            (None, State::Left) => None,
            (_, State::Left) => Some(Event::Left { id }),
            (Some(State::Alive), _) => Some(Event::Updated { id }),
            (Some(State::Suspect), _) => Some(Event::Alive { id }),
            _ => Some(Event::Up { id }),
        };
        if let Some(e) = event {
            self.push_event(e);
        }
        self.broadcast(id, update);
        true
    }

    /// A record about ourselves: an older life of ours, or a forgery.
    fn apply_own_record(&mut self, from: NodeId, sr: &SignedRecord) -> bool {
        if sr.signature == self.local.signature
            || sr.record.incarnation < self.local.record.incarnation
        {
            return true;
        }
        if !sr.verify(self.verifier.as_ref()) {
            self.refuse(
                from,
                Refusal::BadSignature {
                    subject: sr.record.id,
                },
                true,
            );
            return false;
        }
        self.bump_incarnation(sr.record.incarnation);
        true
    }

    /// Applies a suspect or dead claim made by `by`.
    fn apply_claim(&mut self, id: NodeId, incarnation: u64, claim: State, by: NodeId, now: u64) {
        if id == self.id() {
            if incarnation >= self.local.record.incarnation {
                self.bump_incarnation(incarnation);
            }
            return;
        }
        let k = self.confirmations_wanted();
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        // Claims only ever concern the incarnation we hold: an older one is
        // stale, a newer one arrives with its record.
        if incarnation != m.record.record.incarnation {
            return;
        }
        match (m.state, claim) {
            (State::Dead | State::Left, _) => {}
            (_, State::Dead) => self.declare_dead(id, by, now),
            (State::Alive, _) => {
                self.set_state(id, State::Suspect, now);
                let timeout = self.suspicion_timeout(0);
                if let Some(m) = self.members.get_mut(&id) {
                    let deadline = now + timeout;
                    m.suspicion = Some(Box::new(Suspicion {
                        start: now,
                        deadline,
                        confirmers: vec![by],
                    }));
                    self.suspicions.insert((deadline, id));
                }
                self.push_event(Event::Suspect { id });
                let update = Update::Suspect {
                    id,
                    incarnation,
                    from: by,
                }
                .encode();
                self.broadcast(id, update);
            }
            (State::Suspect, _) => {
                let Some(s) = m.suspicion.as_mut() else {
                    return;
                };
                if s.confirmers.contains(&by) || s.confirmers.len() > k.min(MAX_CONFIRMERS) {
                    return;
                }
                s.confirmers.push(by);
                let (start, old_deadline, confirmations) =
                    (s.start, s.deadline, s.confirmers.len() - 1);
                let deadline = start + self.suspicion_timeout(confirmations);
                if deadline < old_deadline {
                    self.suspicions.remove(&(old_deadline, id));
                    self.suspicions.insert((deadline, id));
                    if let Some(s) = self.members.get_mut(&id).and_then(|m| m.suspicion.as_mut()) {
                        s.deadline = deadline;
                    }
                }
                let update = Update::Suspect {
                    id,
                    incarnation,
                    from: by,
                }
                .encode();
                self.broadcast(id, update);
            }
        }
    }

    fn declare_dead(&mut self, id: NodeId, by: NodeId, now: u64) {
        let Some(m) = self.members.get(&id) else {
            return;
        };
        let incarnation = m.record.record.incarnation;
        self.set_state(id, State::Dead, now);
        self.push_event(Event::Dead { id });
        let update = Update::Dead {
            id,
            incarnation,
            from: by,
        }
        .encode();
        self.broadcast(id, update);
    }

    /// Raises our incarnation above `seen`, re-signs and disseminates our record.
    fn bump_incarnation(&mut self, seen: u64) {
        let mut record = self.local.record.clone();
        record.incarnation = seen.max(record.incarnation).saturating_add(1);
        self.local = sign(record, &self.keypair);
        let me = self.id();
        let update = Update::Alive(self.local.clone()).encode();
        self.broadcast(me, update);
    }

    /// Moves `id` to `new`, keeping counts, suspicion timers and the probe list in step.
    fn set_state(&mut self, id: NodeId, new: State, now: u64) {
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        let old = m.state;
        if let Some(s) = m.suspicion.take() {
            self.suspicions.remove(&(s.deadline, id));
        }
        m.state = new;
        if old != new {
            m.since = now;
        }
        match (old.is_live(), new.is_live()) {
            (true, false) => self.live -= 1,
            (false, true) => {
                self.live += 1;
                let at = self.rand_below(self.probe_order.len() + 1);
                self.probe_order.insert(at, id);
            }
            _ => {}
        }
        if new == State::Dead && old != State::Dead {
            if self.recently_dead.len() >= MAX_RECENTLY_DEAD {
                self.recently_dead.pop_front();
            }
            self.recently_dead
                .push_back((id, now + self.config.gossip_to_dead));
        }
    }

    fn on_ack(&mut self, seq: u32) {
        if self.probe.is_some_and(|p| p.seq == seq) {
            self.probe = None;
        } else if let Some(relay) = self.relays.remove(&seq) {
            let ack = self.with_piggyback(Head::Ack { seq: relay.seq }, None);
            self.send(relay.requester, ack);
        }
    }

    fn relay(&mut self, from: NodeId, seq: u32, target: NodeId, now: u64) {
        if target == self.id() {
            let ack = self.with_piggyback(Head::Ack { seq }, None);
            return self.send(from, ack);
        }
        if !self.members.contains_key(&target) {
            return;
        }
        if self.relays.len() >= self.config.max_relays {
            self.stats.dropped_relays += 1;
            return;
        }
        let my_seq = self.next_seq();
        self.relays.insert(
            my_seq,
            Relay {
                requester: from,
                seq,
                expires: now + self.config.probe_interval,
            },
        );
        let ping = self.with_piggyback(Head::Ping { seq: my_seq }, None);
        self.send(target, ping);
    }

    fn on_sync(
        &mut self,
        from: NodeId,
        flags: SyncFlags,
        entries: Vec<(State, SignedRecord)>,
        now: u64,
    ) {
        for (state, record) in entries {
            let (id, incarnation) = (record.record.id, record.record.incarnation);
            if !self.apply_record(from, record, now) {
                return;
            }
            if matches!(state, State::Suspect | State::Dead) {
                self.apply_claim(id, incarnation, state, from, now);
            }
        }
        if !self.check_sender(from) {
            return;
        }
        if flags.reply {
            if !self.joined {
                self.joined = true;
                self.join = None;
                self.push_event(Event::Joined);
            }
            return;
        }
        self.refill_full_sync(now);
        if flags.join && self.full_sync_tokens > 0 {
            self.full_sync_tokens -= 1;
            for bytes in self.full_state() {
                self.send(from, bytes);
            }
        } else {
            let page = self.page(SyncFlags {
                reply: true,
                join: false,
                last: true,
            });
            self.send(from, page);
        }
    }

    fn refill_full_sync(&mut self, now: u64) {
        let refill = self.config.full_sync_refill;
        let earned =
            (now.saturating_sub(self.full_sync_refilled) / refill).min(u64::from(u32::MAX)) as u32;
        if earned > 0 {
            self.full_sync_tokens = self
                .full_sync_tokens
                .saturating_add(earned)
                .min(self.config.full_sync_burst);
            self.full_sync_refilled += u64::from(earned) * refill;
        }
    }

    // ----- probing ---------------------------------------------------------------

    fn start_probe(&mut self, now: u64) {
        if self.local.record.leaving {
            return;
        }
        let Some(target) = self.next_probe_target() else {
            return;
        };
        let seq = self.next_seq();
        // Lifeguard's buddy system: tell a suspect first that it is suspected.
        let buddy = self.members.get(&target).and_then(|m| {
            (m.state == State::Suspect).then(|| {
                Update::Suspect {
                    id: target,
                    incarnation: m.record.record.incarnation,
                    from: self.local.record.id,
                }
                .encode()
            })
        });
        let ping = self.with_piggyback(Head::Ping { seq }, buddy);
        self.send(target, ping);
        self.probe = Some(Probe {
            target,
            seq,
            sent: now,
            indirect: false,
        });
    }

    fn next_probe_target(&mut self) -> Option<NodeId> {
        if self.live == 0 {
            return None;
        }
        for _ in 0..2 {
            while self.probe_index < self.probe_order.len() {
                let id = self.probe_order[self.probe_index];
                self.probe_index += 1;
                if self.members.get(&id).is_some_and(|m| m.state.is_live()) {
                    return Some(id);
                }
            }
            self.rebuild_probe_order();
        }
        None
    }

    /// A fresh shuffled round over the live members (also drops stale entries).
    fn rebuild_probe_order(&mut self) {
        let mut order: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.state.is_live())
            .map(|(id, _)| *id)
            .collect();
        for i in (1..order.len()).rev() {
            let j = self.rand_below(i + 1);
            order.swap(i, j);
        }
        self.probe_order = order;
        self.probe_index = 0;
    }

    fn indirect_probe(&mut self, mut p: Probe) {
        p.indirect = true;
        self.probe = Some(p);
        for via in self.random_live(self.config.indirect_checks, Some(p.target)) {
            let req = self.with_piggyback(
                Head::PingReq {
                    seq: p.seq,
                    target: p.target,
                },
                None,
            );
            self.send(via, req);
        }
    }

    fn probe_failed(&mut self, target: NodeId, now: u64) {
        self.stats.failed_probes += 1;
        let Some(m) = self.members.get(&target) else {
            return;
        };
        let incarnation = m.record.record.incarnation;
        let me = self.id();
        self.apply_claim(target, incarnation, State::Suspect, me, now);
    }

    fn expire_suspicions(&mut self, now: u64) {
        while let Some(&(deadline, id)) = self.suspicions.first() {
            if deadline > now {
                break;
            }
            self.suspicions.pop_first();
            if self
                .members
                .get(&id)
                .is_some_and(|m| m.state == State::Suspect)
            {
                let me = self.id();
                self.declare_dead(id, me, now);
            }
        }
    }

    /// Lifeguard's k: independent suspicions that shorten the timeout to its minimum.
    fn confirmations_wanted(&self) -> usize {
        self.config
            .indirect_checks
            .min(self.live.saturating_sub(1))
            .min(MAX_CONFIRMERS)
    }

    /// Suspicion timeout after `c` independent confirmations: from
    /// `max = suspicion_max_mult × min` down to `min = suspicion_mult ×
    /// probe_interval × max(1, log10 n)`, following Lifeguard's log curve.
    /// Integer arithmetic only, so every platform computes the same value.
    fn suspicion_timeout(&self, c: usize) -> u64 {
        let n = (self.live + 1) as u64;
        let log10_milli = (u64::from(n.ilog2()) * 301).max(1000);
        let min = self.config.suspicion_mult * self.config.probe_interval * log10_milli / 1000;
        let max = min * self.config.suspicion_max_mult;
        let k = self.confirmations_wanted();
        if k == 0 || max <= min {
            return min;
        }
        let frac_milli = LN_MILLI[c.min(k) + 1] * 1000 / LN_MILLI[k + 1];
        (max - (max - min) * frac_milli / 1000).max(min)
    }

    // ----- dissemination -------------------------------------------------------

    fn retransmit_limit(&self) -> u32 {
        let n = (self.live + 1) as u64;
        self.config.retransmit_mult * (n.ilog10() + 1)
    }

    fn broadcast(&mut self, subject: NodeId, update: Vec<u8>) {
        self.broadcasts
            .push(subject, update, self.config.max_broadcasts);
    }

    /// Encodes `head` with piggybacked updates (an optional first one included).
    fn with_piggyback(&mut self, head: Head, first: Option<Vec<u8>>) -> Vec<u8> {
        let limit = self.retransmit_limit();
        let mut budget = self.config.piggyback_budget;
        let mut max = self.config.limits.max_updates_per_message;
        let mut updates = Vec::new();
        if let Some(u) = first {
            budget = budget.saturating_sub(u.len());
            max -= 1;
            updates.push(u);
        }
        updates.extend(self.broadcasts.take(budget, max, limit));
        let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
        message::encode_with_updates(head, &refs)
    }

    fn gossip_round(&mut self, now: u64) {
        if self.broadcasts.len() == 0 {
            return;
        }
        self.recently_dead.retain(|(_, until)| *until > now);
        let mut targets = self.random_live(self.config.gossip_fanout, None);
        if !self.recently_dead.is_empty() {
            let pick = self.rand_below(self.recently_dead.len());
            let (id, _) = self.recently_dead[pick];
            if self
                .members
                .get(&id)
                .is_some_and(|m| m.state == State::Dead)
            {
                targets.push(id);
            }
        }
        for to in targets {
            let msg = self.with_piggyback(Head::Gossip, None);
            self.send(to, msg);
        }
    }

    // ----- anti-entropy -----------------------------------------------------------

    fn anti_entropy(&mut self) {
        if self.local.record.leaving {
            return;
        }
        if let Some(to) = self.random_live(1, None).pop() {
            let page = self.page(SyncFlags::default());
            self.send(to, page);
        }
    }

    /// Sends our page to one random dead (not left) member: if it is alive
    /// after all (a healed partition), it refutes and both sides converge.
    fn reconnect(&mut self) {
        if self.local.record.leaving {
            return;
        }
        let dead: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.state == State::Dead)
            .map(|(id, _)| *id)
            .collect();
        if dead.is_empty() {
            return;
        }
        let to = dead[self.rand_below(dead.len())];
        let page = self.page(SyncFlags::default());
        self.send(to, page);
    }

    /// One anti-entropy page: our record plus the next `sync_page_entries - 1`
    /// members after the cursor, wrapping around.
    fn page(&mut self, flags: SyncFlags) -> Vec<u8> {
        let want = self
            .config
            .sync_page_entries
            .saturating_sub(1)
            .min(self.members.len());
        let mut ids = Vec::with_capacity(want);
        let start = self.sync_cursor;
        let after = start.map_or_else(
            || self.members.range(..),
            |c| {
                self.members
                    .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
            },
        );
        ids.extend(after.take(want).map(|(id, _)| *id));
        if ids.len() < want {
            let more = want - ids.len();
            let wrap: Vec<NodeId> = self
                .members
                .keys()
                .take_while(|id| Some(**id) != ids.first().copied())
                .take(more)
                .copied()
                .collect();
            ids.extend(wrap);
        }
        self.sync_cursor = ids.last().copied();
        let mut w = Writer::default();
        Head::Sync { flags }.write(&mut w);
        w.varint((ids.len() + 1) as u64);
        message::encode_entry(&mut w, State::Alive, &self.local);
        for id in ids {
            if let Some(m) = self.members.get(&id) {
                message::encode_entry(&mut w, m.state, &m.record);
            }
        }
        w.buf
    }

    /// The whole table split into sync replies that each fit the message limit.
    fn full_state(&self) -> Vec<Vec<u8>> {
        let max_size = self.config.limits.max_message_size - 8;
        let max_entries = self.config.limits.max_sync_entries_per_message;
        let mut pages: Vec<Vec<u8>> = Vec::new();
        let mut body = Writer::default();
        let mut count = 0usize;
        let flush = |pages: &mut Vec<Vec<u8>>, body: &mut Writer, count: &mut usize, last: bool| {
            let mut w = Writer::default();
            let flags = SyncFlags {
                reply: true,
                join: false,
                last,
            };
            Head::Sync { flags }.write(&mut w);
            w.varint(*count as u64);
            w.bytes(&body.buf);
            pages.push(w.buf);
            body.buf.clear();
            *count = 0;
        };
        let entries = std::iter::once((State::Alive, &self.local))
            .chain(self.members.values().map(|m| (m.state, &m.record)));
        for (state, record) in entries {
            let mut e = Writer::default();
            message::encode_entry(&mut e, state, record);
            let head = 2 + 1 + varint_len(count as u64 + 1);
            if count > 0 && (head + body.buf.len() + e.buf.len() > max_size || count >= max_entries)
            {
                flush(&mut pages, &mut body, &mut count, false);
            }
            body.bytes(&e.buf);
            count += 1;
        }
        flush(&mut pages, &mut body, &mut count, true);
        pages
    }

    fn try_join(&mut self, now: u64) {
        let Some(join) = self.join.as_mut() else {
            return;
        };
        join.next_try = now + self.config.join_retry;
        let n = join.seeds.len();
        let picks: Vec<NodeId> = (0..SEEDS_PER_ATTEMPT.min(n))
            .map(|i| join.seeds[(join.next_seed + i) % n])
            .collect();
        join.next_seed = (join.next_seed + picks.len()) % n;
        for seed in picks {
            let mut w = Writer::default();
            let flags = SyncFlags {
                reply: false,
                join: true,
                last: true,
            };
            Head::Sync { flags }.write(&mut w);
            w.varint(1);
            message::encode_entry(&mut w, State::Alive, &self.local);
            self.send(seed, w.buf);
        }
    }

    /// Moves long-dead and left members to tombstones.
    fn reap(&mut self, now: u64) {
        let retention = self.config.dead_retention;
        let old: Vec<(NodeId, u64)> = self
            .members
            .iter()
            .filter(|(_, m)| !m.state.is_live() && m.since + retention <= now)
            .map(|(id, m)| (*id, m.record.record.incarnation))
            .collect();
        for (id, incarnation) in old {
            self.members.remove(&id);
            self.add_tombstone(id, incarnation);
        }
    }

    fn add_tombstone(&mut self, id: NodeId, incarnation: u64) {
        if self.tombstones.insert(id, incarnation).is_none() {
            self.tombstone_order.push_back(id);
        }
        while self.tombstones.len() > self.config.max_tombstones {
            match self.tombstone_order.pop_front() {
                Some(old) => {
                    self.tombstones.remove(&old);
                }
                None => break,
            }
        }
        // Entries whose tombstone was replaced by a live member again are skipped here.
        while self.tombstone_order.len() > 2 * self.config.max_tombstones {
            self.tombstone_order.pop_front();
        }
    }

    // ----- plumbing --------------------------------------------------------------

    /// Up to `n` distinct random live members, excluding `except`.
    fn random_live(&mut self, n: usize, except: Option<NodeId>) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::with_capacity(n);
        if self.probe_order.is_empty() || n == 0 {
            return out;
        }
        let available = self.live
            - usize::from(
                except.is_some_and(|e| self.members.get(&e).is_some_and(|m| m.state.is_live())),
            );
        let want = n.min(available);
        let mut tries = 0;
        while out.len() < want && tries < 8 * n + 16 {
            tries += 1;
            let pick = self.rand_below(self.probe_order.len());
            let id = self.probe_order[pick];
            if Some(id) != except
                && !out.contains(&id)
                && self.members.get(&id).is_some_and(|m| m.state.is_live())
            {
                out.push(id);
            }
        }
        out
    }

    fn rand_below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        (self.rng.next_u64() % n as u64) as usize
    }

    fn next_seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    fn send(&mut self, to: NodeId, bytes: Vec<u8>) {
        if self.transmits.len() >= self.config.max_transmits {
            self.stats.dropped_transmits += 1;
            return;
        }
        debug_assert!(bytes.len() <= self.config.limits.max_message_size);
        debug_assert!(bytes.first() == Some(&WIRE_VERSION));
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += bytes.len() as u64;
        self.transmits.push_back(Transmit { to, bytes });
    }

    fn refuse(&mut self, peer: NodeId, reason: Refusal, penalty: bool) {
        self.stats.refused += 1;
        self.push_event(Event::Refused {
            peer,
            reason,
            penalty,
        });
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= self.config.max_events {
            self.events.pop_front();
            self.stats.dropped_events += 1;
        }
        self.events.push_back(event);
    }
}
