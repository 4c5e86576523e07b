//! The node brain: one sans-IO state machine per mesh node that decides
//! everything about the mesh — who is admitted, who is struck or banned,
//! what is stored and when it is announced, whom to sync with, what runs
//! here and when to retry — while its driver only does I/O.
//!
//! [`Node`] composes the smaller machines of this crate: [`Membership`]
//! (SWIM), the join handshake and the [`crate::join::Admitter`], the
//! [`DesiredState`] document with persistence ordering and anti-entropy, the
//! status table, revocations, per-peer strikes, bans and rate limits, the
//! address book, placement and the reconciler's decisions. Its shape is
//! quinn-proto's `Endpoint` and str0m's `Rtc`: feed it [`Input`]s with the
//! time, drain [`Output`]s, sleep until [`Node::poll_timeout`].
//!
//! # Driver contract
//!
//! 1. **Create** it with [`Node::new`]: a [`Config`], the [`Identity`] (key,
//!    join token, profile), the stored desired-state updates (snapshot then
//!    log, verified again here), a 32-byte seed for all of its randomness,
//!    and the time.
//! 2. **Feed** every event as an [`Input`] to [`Node::handle_input`] with
//!    [`Now`] (monotonic *and* unix milliseconds; the node never reads a
//!    clock). When [`Node::poll_timeout`] is reached, feed [`Input::Timeout`];
//!    early or late is harmless.
//! 3. **Drain** [`Node::poll_output`] until `None` after *every* input and
//!    execute each [`Output`]:
//!    - network: [`Output::Transmit`] (SWIM, one-way), [`Output::Request`] /
//!      [`Output::Respond`] (request-response: report answers as
//!      [`Input::Response`] or [`Input::RequestFailed`] with the same
//!      [`RequestId`]), [`Output::Publish`] and [`Output::Validate`] (gossip:
//!      every [`Input::Gossip`] gets exactly one verdict, possibly later),
//!      [`Output::Dial`], [`Output::Disconnect`], [`Output::Ban`] /
//!      [`Output::Unban`] (refuse connections with a peer at the transport),
//!      [`Output::Ready`] (a member admitted both ways: routable);
//!    - storage: [`Output::Persist`] — execute them **in order**, off the
//!      network loop, and report each with [`Input::Persisted`];
//!      [`Output::ReadBlob`] — read off the loop, report [`Input::BlobRead`];
//!    - branes: [`Output::Start`] / [`Output::Stop`] — start or stop the
//!      brane and report [`Input::BraneStarted`];
//!    - [`Output::Reply`] answers the [`Input::Command`] with that id;
//!      [`Output::Report`] is for logs and metrics only.
//! 4. **Ask** it at any time: [`Node::report`], [`Node::members`],
//!    [`Node::view`] (read-only; they change nothing).
//!
//! The driver keeps no mesh state of its own: the transport-authenticated
//! [`NodeId`] of every connection and message is all it passes in.
//!
//! # What the node guarantees
//!
//! - **Persist before announce.** A local write is announced and answered,
//!   a repair announced, and a gossiped update forwarded (validated
//!   `Accept`) only after [`Input::Persisted`] reports its append durable.
//!   A failed append announces nothing and answers the write with
//!   [`WriteFailure::NotDurable`].
//! - **One gate.** Every message except a join request passes one check:
//!   the sender must be a peer this node admitted. SWIM and image traffic
//!   before that is a strike; anti-entropy before that is a benign race
//!   (answered empty); gossip before that is rejected.
//! - **Bounded.** Every table keyed by what peers send has a named limit
//!   and a defined behaviour at it ([`Limits`], [`GuardConfig`],
//!   [`BookConfig`], and the membership and desired-state configs).
//! - **Deterministic.** No clock, no OS randomness, no hash-map iteration:
//!   the same seed and inputs give the same outputs, byte for byte.

mod book;
mod events;
mod guard;
mod image;
mod io;
mod peers;
mod reconcile;
mod report;
mod state;
mod status;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use omega_identity::{Did, Keypair};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::admission::Admission;
use crate::desired::{self, DesiredState};
use crate::events::{Delivery, DeliveryConfig};
use crate::id::{MeshId, NodeId};
use crate::join::{Admitter, JoinToken};
use crate::membership::{CommandError, Event, LocalMember, Membership, State};
use crate::placement::{Candidate, place_all};
use crate::record::{MemberRecord, Profile, Substrate};
use crate::time::{Mono, Now};

pub use self::book::BookConfig;
pub use self::guard::{GuardConfig, Rate};
pub use self::image::{ImageRequest, ImageResponse};
pub use self::io::{
    BraneKey, Command, CommandId, ConnId, DisconnectReason, FetchError, Found, GossipRef,
    ImageSource, InboundId, Input, Output, PersistId, PersistOp, Protocol, Reply, Report,
    RequestId, StartBrane, Started, Topic, Verdict, WriteFailure,
};
pub use self::reconcile::{BraneEvent, ReconcileConfig};
pub use self::report::{Direction, DispatchStats, MemberReport, NodeReport, RefusalReport, View};
pub use self::status::{BraneState, BraneStatus, MAX_STATUS_BRANES, NodeStatus, WireError};

use self::book::AddressBook;
use self::guard::Guard;
use self::peers::Peers;
use self::reconcile::{Decision, Reconciler, Want};
use self::state::Persistence;
use self::status::Statuses;

/// Bounds of the node's own tables and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most members with SWIM messages queued while a connection to them
    /// is set up. Default 256; transmits to further members are dropped
    /// (SWIM tolerates loss).
    pub max_pending_peers: usize,
    /// Most messages queued per such member. Default 32; the oldest goes.
    pub max_pending_per_peer: usize,
    /// Most recent refusals kept for `omega status` and `omega ps`. Default 32.
    pub max_refusal_log: usize,
    /// Most join invocations remembered against replay. Default 4096.
    pub max_replay: usize,
    /// Most distinct node keys this node admits with one invite (a holder
    /// of an invite minting key after key). Default 4096
    /// ([`crate::join::DEFAULT_MAX_NODES_PER_INVITE`]); further keys are
    /// refused ([`crate::join::JoinError::InviteExhausted`]).
    pub max_nodes_per_invite: usize,
    /// Most admissions remembered (the substrate each admitted node's token
    /// allowed, and nodes expelled with a revoked token). Default 16 384;
    /// entries of nodes gone from membership are pruned first.
    pub max_admissions: usize,
    /// Most writes waiting for the disk. Default 256; beyond it local writes
    /// are refused as busy and updates from peers are not taken (their
    /// gossip is ignored, anti-entropy brings them later).
    pub max_persists_in_flight: usize,
    /// Log appends after which the store is compacted to one snapshot. Default 256.
    pub compact_every: u32,
    /// Most outbound requests and inbound image reads in flight. Default 1024;
    /// beyond it image fetches are refused and anti-entropy rounds skipped.
    pub max_requests_in_flight: usize,
    /// Largest status message, bytes. Default 16 KiB.
    pub max_status_bytes: usize,
    /// Largest gossip message, bytes (updates larger than this less 1 KiB
    /// travel by anti-entropy only). Default 64 KiB.
    pub max_gossip_bytes: usize,
    /// Largest image chunk served, bytes. Default 256 KiB.
    pub image_chunk: usize,
    /// Largest record accepted through a local write, bytes. Default 1 MiB.
    pub max_local_record: usize,
    /// Most listen addresses remembered. Default 16.
    pub max_listen: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pending_peers: 256,
            max_pending_per_peer: 32,
            max_refusal_log: 32,
            max_replay: 4096,
            max_nodes_per_invite: crate::join::DEFAULT_MAX_NODES_PER_INVITE,
            max_admissions: 16_384,
            max_persists_in_flight: 256,
            compact_every: 256,
            max_requests_in_flight: 1024,
            max_status_bytes: 16 << 10,
            max_gossip_bytes: 64 << 10,
            image_chunk: 256 << 10,
            max_local_record: 1 << 20,
            max_listen: 16,
        }
    }
}

/// The node's timers, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// How often discovered candidates are dialed and lost join requests
    /// sent again. Default 500.
    pub dial_interval: u64,
    /// How often a random member is asked for what this node lacks. Default 1 000.
    pub anti_entropy_interval: u64,
    /// How often an unchanged status is announced again. Default 3 000.
    pub status_republish: u64,
    /// How long a connection may stay without admission both ways. Default 10 000.
    pub admission_timeout: u64,
    /// How long a refused peer stays connected so the refusal reaches it. Default 500.
    pub refusal_grace: u64,
    /// A second connection beside one older than this resets the peer
    /// (a restarted peer whose old connection still looks open). Default 1 000.
    pub stale_connection: u64,
    /// How long a member that refused our join request is left alone
    /// before this node tries it again. Default 10 000.
    pub refused_backoff: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            dial_interval: 500,
            anti_entropy_interval: 1_000,
            status_republish: 3_000,
            admission_timeout: 10_000,
            refusal_grace: 500,
            stale_connection: 1_000,
            refused_backoff: 10_000,
        }
    }
}

/// Everything a [`Node`] is configured with; every field has documented defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Membership (SWIM); its `mesh` is set from the mesh root.
    pub membership: crate::Config,
    /// The desired-state document's limits and yrs client id.
    pub desired: desired::Config,
    /// Strikes, bans and per-peer rates.
    pub guard: GuardConfig,
    /// The address book.
    pub book: BookConfig,
    /// Retries of failed brane starts.
    pub reconcile: ReconcileConfig,
    /// The node's own bounds.
    pub limits: Limits,
    /// The node's timers.
    pub timers: Timers,
    /// Event delivery: credits, bounds, retries.
    pub delivery: DeliveryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            membership: crate::Config::new(MeshId([0; 16])),
            desired: desired::Config::default(),
            guard: GuardConfig::default(),
            book: BookConfig::default(),
            reconcile: ReconcileConfig::default(),
            limits: Limits::default(),
            timers: Timers::default(),
            delivery: DeliveryConfig::default(),
        }
    }
}

/// Who a node is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The node key: its DID, [`NodeId`] and libp2p peer id.
    pub key: Keypair,
    /// The join token; `None` makes a node every member refuses (and the
    /// root of a mesh of its own).
    pub token: Option<JoinToken>,
    /// Name, substrate, capabilities, resources (addresses are filled in
    /// from [`Input::Listening`]).
    pub profile: Profile,
}

/// Why a node cannot be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The membership configuration or profile is invalid.
    #[error("membership: {0}")]
    Membership(#[from] CommandError),
    /// The desired-state configuration is invalid.
    #[error("desired state: {0}")]
    Desired(#[from] desired::ConfigError),
}

/// The admission facts membership checks every new record against: revoked
/// nodes never, nodes expelled with a revoked token not until admitted
/// again, and a node this node admitted only with the substrate its token
/// allowed. Shared with [`Membership`] (which asks through [`Admission`]).
#[derive(Debug, Default)]
struct AdmissionTable {
    revoked: BTreeSet<NodeId>,
    expelled: BTreeSet<NodeId>,
    substrates: BTreeMap<NodeId, Substrate>,
}

#[derive(Debug, Clone, Default)]
struct AdmissionView(Arc<Mutex<AdmissionTable>>);

impl Admission for AdmissionView {
    fn is_admitted(&self, record: &MemberRecord) -> bool {
        let Ok(t) = self.0.lock() else { return false };
        !t.revoked.contains(&record.id)
            && !t.expelled.contains(&record.id)
            && t.substrates
                .get(&record.id)
                .is_none_or(|s| *s == record.profile.substrate)
    }
}

impl AdmissionView {
    fn with<T>(&self, f: impl FnOnce(&mut AdmissionTable) -> T) -> Option<T> {
        self.0.lock().ok().map(|mut t| f(&mut t))
    }
}

/// One mesh node's brain; see the module docs for the driver contract.
pub struct Node {
    config: Config,
    key: Keypair,
    me: NodeId,
    root: Did,
    token: Option<JoinToken>,
    profile: Profile,
    rng: ChaCha8Rng,
    membership: Membership,
    admission: AdmissionView,
    admitter: Admitter,
    desired: DesiredState,
    peers: Peers,
    guard: Guard,
    book: AddressBook,
    listen: Vec<String>,
    statuses: Statuses,
    own_status: Option<(NodeStatus, Mono)>,
    reconciler: Reconciler,
    persistence: Persistence,
    refusals: VecDeque<RefusalReport>,
    desired_refusals: VecDeque<RefusalReport>,
    revoked_applied: BTreeSet<Did>,
    revoked_tokens_seen: usize,
    outputs: VecDeque<Output>,
    started: Mono,
    admitted_after: Option<u64>,
    next_dial: Mono,
    next_anti_entropy: Mono,
    stats: DispatchStats,
    placement_dirty: bool,
    delivery: Delivery,
    topology_dirty: bool,
    topology_generation: u64,
    /// Verified emit grants by hash.
    grants: BTreeMap<[u8; 32], events::CachedGrant>,
    /// Whether the reconciler may have changed since this node's status
    /// was last compared (a start report, a timer, a placement change).
    reconciler_touched: bool,
    now: Now,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me)
            .field("peers", &self.peers.len())
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Creates the node at `now`, loading `stored` (the persisted snapshot
    /// and log, in order; every record is verified again). `seed` seeds all
    /// of its randomness.
    pub fn new(
        mut config: Config,
        identity: Identity,
        stored: &[Vec<u8>],
        seed: [u8; 32],
        now: Now,
    ) -> Result<Self, NodeError> {
        let Identity {
            key,
            token,
            mut profile,
        } = identity;
        profile.addresses.clear();
        let root = token.as_ref().map_or_else(|| key.did(), |t| t.mesh);
        config.membership.mesh = MeshId::from_root(&root);
        let mut rng = ChaCha8Rng::from_seed(seed);
        let mut membership_seed = [0u8; 32];
        rng.fill_bytes(&mut membership_seed);
        let mut delivery_seed = [0u8; 32];
        rng.fill_bytes(&mut delivery_seed);
        let admission = AdmissionView::default();
        // Incarnations start from the wall clock, so a node restarted after
        // `kill -9` always comes back above its old self.
        let membership = Membership::new(
            config.membership.clone(),
            LocalMember {
                keypair: key.clone(),
                profile: profile.clone(),
                incarnation: now.unix.0,
            },
            Box::new(admission.clone()),
            membership_seed,
            now.mono.0,
        )?;
        let desired = DesiredState::new(root, config.desired.clone())?;
        let me = NodeId::from(key.public());
        let timers = config.timers.clone();
        let delivery = Delivery::new(config.delivery.clone(), me, delivery_seed, now);
        let mut node = Self {
            admitter: Admitter::new(root, config.limits.max_replay)
                .with_max_nodes_per_invite(config.limits.max_nodes_per_invite),
            peers: Peers::default(),
            guard: Guard::new(config.guard.clone()),
            book: AddressBook::new(config.book.clone()),
            reconciler: Reconciler::new(config.reconcile.clone()),
            persistence: Persistence::default(),
            config,
            key,
            me,
            root,
            token,
            profile,
            rng,
            membership,
            admission,
            desired,
            listen: Vec::new(),
            statuses: Statuses::default(),
            own_status: None,
            refusals: VecDeque::new(),
            desired_refusals: VecDeque::new(),
            revoked_applied: BTreeSet::new(),
            revoked_tokens_seen: 0,
            outputs: VecDeque::new(),
            started: now.mono,
            admitted_after: None,
            next_dial: now.mono,
            next_anti_entropy: now.mono.plus(timers.anti_entropy_interval),
            stats: DispatchStats::default(),
            placement_dirty: true,
            delivery,
            topology_dirty: true,
            topology_generation: 0,
            grants: BTreeMap::new(),
            reconciler_touched: true,
            now,
        };
        node.load(stored);
        node.after_input();
        Ok(node)
    }

    /// Handles one input at `now`. Drain [`Node::poll_output`] afterwards.
    /// Never panics on remote input.
    pub fn handle_input(&mut self, input: Input, now: Now) {
        self.now = Now {
            mono: now.mono.max(self.now.mono),
            unix: now.unix,
        };
        self.delivery.tick(self.now);
        if matches!(input, Input::BraneStarted { .. } | Input::Timeout) {
            self.reconciler_touched = true;
        }
        match input {
            Input::Listening { addr } => self.on_listening(addr),
            Input::ConnectionUp { peer, conn, remote } => self.on_connection_up(peer, conn, remote),
            Input::ConnectionDown { peer, conn } => self.on_connection_down(peer, conn),
            Input::DialFailed { peer } => self.peers.dial_failed(&peer),
            Input::Swim { from, bytes } => {
                if self.gate(from, Protocol::Swim) && self.spend(from, guard::Spend::Swim, 1, true)
                {
                    self.membership
                        .handle_message(from, &bytes, self.now.mono.0);
                }
            }
            Input::Request {
                from,
                protocol,
                id,
                bytes,
            } => self.on_request(from, protocol, id, bytes),
            Input::Response { from, id, bytes } => self.on_response(from, id, bytes),
            Input::RequestFailed { to, id, error } => self.on_request_failed(to, id, error),
            Input::StreamFailed {
                from,
                protocol,
                error,
            } => self.on_stream_failed(from, protocol, error),
            Input::Gossip {
                id,
                source,
                author,
                topic,
                bytes,
            } => self.on_gossip(id, source, author, topic, &bytes),
            Input::Discovered(found) => {
                for f in found.into_iter().filter(|f| f.peer != Some(self.me)) {
                    self.book.add_candidate(f, self.now.mono);
                }
            }
            Input::PeerAddresses { peer, addrs } => self.on_peer_addresses(peer, addrs),
            Input::Command { id, command } => self.on_command(id, command),
            Input::Persisted { id, result } => self.on_persisted(id, result),
            Input::BlobRead { id, result } => self.on_blob_read(id, result),
            Input::BraneStarted {
                key,
                attempt,
                result,
            } => {
                let now = self.now;
                let d = self.reconciler.started(key, attempt, result, now);
                self.decide(d);
            }
            Input::Processed { ticket, result } => self.delivery.on_processed(ticket, result),
            Input::Timeout => self.on_timeout(),
        }
        self.after_input();
    }

    /// The next thing for the driver to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to feed [`Input::Timeout`] next (may be in the past).
    pub fn poll_timeout(&self) -> Mono {
        let t = &self.config.timers;
        let mut next = self.next_dial.min(self.next_anti_entropy);
        if let Some(m) = self.membership.poll_timeout() {
            next = next.min(Mono(m));
        }
        if let Some((_, at)) = &self.own_status {
            next = next.min(at.plus(t.status_republish));
        }
        for x in [
            self.guard.next_expiry(),
            self.reconciler.next_retry(),
            self.peers.next_deadline(),
            self.delivery.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(x);
        }
        next
    }

    // ----- queries -------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// The mesh root's DID.
    pub fn mesh_root(&self) -> &Did {
        &self.root
    }

    /// The node part of `omega status`.
    pub fn report(&self) -> NodeReport {
        let stats = self.membership.stats();
        let now = self.now.mono;
        NodeReport {
            did: self.key.did().to_string(),
            name: self.profile.name.clone(),
            substrate: self.profile.substrate.as_str().into(),
            mesh: self.root.to_string(),
            incarnation: self.membership.incarnation(),
            joined: self.membership.is_joined(),
            listen: self.listen.clone(),
            live_members: self.membership.live_count(),
            connections: self.peers.connected().count(),
            admitted_after_ms: self.admitted_after,
            swim_bytes_sent: stats.bytes_sent,
            swim_bytes_received: stats.bytes_received,
            uptime_secs: now.since(self.started) / 1000,
            banned: self.guard.banned(now).map(|id| id.to_string()).collect(),
            persists_in_flight: self.persistence.in_flight(),
            refusals: self.refusals.iter().cloned().collect(),
            dispatch: DispatchStats {
                document_bytes: self.desired.encoded_len(),
                manifests: self.desired.manifests().count(),
                ..self.stats.clone()
            },
        }
    }

    /// Every member in the table (`omega peers`).
    pub fn members(&self) -> Vec<MemberReport> {
        self.membership
            .members()
            .map(|m| {
                let r = &m.record.record;
                MemberReport {
                    did: r.id.to_string(),
                    name: r.profile.name.clone(),
                    substrate: r.profile.substrate.as_str().into(),
                    state: m.state.name().into(),
                    incarnation: r.incarnation,
                    connected: self.peers.is_connected(&r.id),
                    addresses: r.profile.addresses.clone(),
                }
            })
            .collect()
    }

    /// A snapshot of the desired state, members, statuses and history.
    pub fn view(&self) -> View {
        View {
            me: self.me,
            manifests: self.desired.manifests().collect(),
            images: self.desired.images().collect(),
            members: self.candidates(),
            statuses: self.statuses.all().clone(),
            peers: self.peers.ready().collect(),
            refusals: self.desired_refusals.iter().cloned().collect(),
            document_bytes: self.desired.encoded_len(),
            events: self.reconciler.events().cloned().collect(),
        }
    }

    /// The membership state machine (read-only).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The desired-state document (read-only).
    pub fn desired(&self) -> &DesiredState {
        &self.desired
    }

    // ----- internals ------------------------------------------------------------

    fn emit(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    fn report_out(&mut self, report: Report) {
        self.emit(Output::Report(report));
    }

    fn random_index(&mut self, n: usize) -> usize {
        if n <= 1 {
            0
        } else {
            (self.rng.next_u64() % n as u64) as usize
        }
    }

    /// Placement candidates: every member in the table and this node.
    fn candidates(&self) -> Vec<Candidate> {
        let mut members: Vec<Candidate> = self
            .membership
            .members()
            .map(|v| Candidate::from_view(&v))
            .collect();
        let local = &self.membership.local_record().record;
        members.push(Candidate {
            id: self.me,
            name: local.profile.name.clone(),
            substrate: local.profile.substrate,
            capabilities: local.profile.capabilities,
            free_memory_bytes: local.profile.resources.memory_bytes,
            state: State::Alive,
        });
        members
    }

    /// What comes after every input: membership's outputs, placement, the
    /// reconciler's history, this node's status.
    fn after_input(&mut self) {
        self.drain_membership();
        if self.placement_dirty {
            self.placement_dirty = false;
            self.reconciler_touched = true;
            self.reconcile();
        }
        for (key, text) in self.reconciler.take_fresh() {
            self.report_out(Report::Brane { key, text });
        }
        if std::mem::take(&mut self.reconciler_touched) {
            self.publish_status_if_changed();
        }
        self.refresh_topology();
        self.drain_delivery();
    }

    fn drain_membership(&mut self) {
        while let Some(t) = self.membership.poll_transmit() {
            self.transmit(t.to, t.bytes);
        }
        while let Some(event) = self.membership.poll_event() {
            let name = match &event {
                Event::Up { id }
                | Event::Alive { id }
                | Event::Updated { id }
                | Event::Suspect { id }
                | Event::Dead { id }
                | Event::Left { id }
                | Event::Removed { id } => self
                    .membership
                    .member(id)
                    .map(|m| m.record.record.profile.name.clone()),
                _ => None,
            };
            match &event {
                Event::Up { .. } | Event::Updated { .. } => self.placement_dirty = true,
                Event::Dead { id } => {
                    self.placement_dirty = true;
                    self.statuses.forget(id);
                    // A dead member's connection is dead too, though QUIC
                    // notices only at its idle timeout: drop it now, so a
                    // member that comes back meets a clean slate.
                    if self.peers.is_connected(id) {
                        self.disconnect(*id, DisconnectReason::Dead);
                    }
                }
                Event::Left { id } | Event::Removed { id } => {
                    self.placement_dirty = true;
                    self.statuses.forget(id);
                }
                Event::Refused {
                    peer,
                    reason,
                    penalty: true,
                } => self.strike(*peer, &format!("membership: {reason}")),
                _ => {}
            }
            self.report_out(Report::Member { event, name });
        }
    }

    fn reconcile(&mut self) {
        let members = self.candidates();
        let manifests: Vec<desired::Manifest> = self.desired.manifests().collect();
        let mut want = BTreeMap::new();
        for p in place_all(&manifests, &members) {
            let instances = p.placement.instances_on(&self.me);
            if instances > 0 {
                want.insert(
                    BraneKey::new(&p.manifest.name, p.name),
                    Want {
                        plan: p.manifest.plan_hash,
                        instances,
                        brane: p.brane.clone(),
                        edges: p.manifest.plan.edges().to_vec(),
                    },
                );
            }
        }
        let now = self.now;
        let decisions = self.reconciler.apply(want, now);
        self.decide(decisions);
    }

    fn decide(&mut self, decisions: Vec<Decision>) {
        for d in decisions {
            let out = match d {
                Decision::Start { key, attempt, want } => Output::Start(Box::new(StartBrane {
                    image: self.resolve_image(&want.brane),
                    sources: self.peers.ready().collect(),
                    key,
                    attempt,
                    plan: want.plan,
                    brane: want.brane,
                    edges: want.edges,
                    instances: want.instances,
                })),
                Decision::Stop { key, attempt } => Output::Stop { key, attempt },
            };
            self.emit(out);
        }
    }

    /// A brane's image: a content id as is, a `name:tag` through the mesh's
    /// image records (the driver may still find it in its local store).
    fn resolve_image(&self, brane: &omega_zgraph::Brane) -> Option<ImageSource> {
        let reference = brane.image.clone()?;
        let content = match &reference {
            omega_zgraph::ImageRef::Content(cid) => cid.parse().ok(),
            tagged => {
                let name = tagged.to_string();
                self.desired
                    .images()
                    .find(|i| i.name == name)
                    .and_then(|i| i.content.parse().ok())
            }
        };
        Some(ImageSource { reference, content })
    }

    fn on_timeout(&mut self) {
        let now = self.now;
        self.membership.handle_timeout(now.mono.0);
        for peer in self.guard.expire(now.mono) {
            self.emit(Output::Unban { peer });
        }
        self.expire_peers();
        if now.mono >= self.next_dial {
            self.next_dial = now.mono.plus(self.config.timers.dial_interval);
            self.dial_round();
        }
        if now.mono >= self.next_anti_entropy {
            self.next_anti_entropy = now.mono.plus(self.config.timers.anti_entropy_interval);
            self.anti_entropy(None);
            self.prune_admissions();
        }
        self.republish_status();
        if self.delivery.poll_timeout().is_some_and(|t| t <= now.mono) {
            self.delivery.handle_timeout(now);
        }
        let decisions = self.reconciler.due(now);
        self.decide(decisions);
    }

    fn log_refusal(&mut self, peer: String, direction: Direction, reason: String) {
        let max = self.config.limits.max_refusal_log.max(1);
        let log = match direction {
            Direction::Desired => &mut self.desired_refusals,
            _ => &mut self.refusals,
        };
        if log.len() >= max {
            log.pop_front();
        }
        let r = RefusalReport {
            peer,
            direction,
            reason,
        };
        log.push_back(r.clone());
        self.report_out(Report::Refusal(r));
    }
}
