//! What goes into a [`Node`](super::Node) and what comes out: the driver's
//! whole vocabulary.

use std::fmt;

use omega_identity::ContentId;
use omega_zgraph::{Brane, Edge, ImageRef, PlanHash};

use crate::desired::{RecordError, Revocation, WriteError};
use crate::events::{
    DeadLetter, DlqCommand, DlqError, Emit, EmitError, EventId, EventOps, NewEvent, Process,
    ProcessError,
};
use crate::hlc::Hlc;
use crate::id::NodeId;
use crate::join::Admitted;
use crate::membership::Event;
use crate::time::Mono;

use super::image::{ImageRequest, ImageResponse};

/// A request-response protocol between members. SWIM messages are one-way
/// ([`Output::Transmit`], [`Input::Swim`]); these carry an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// Admission: a join request in, a join response out (`/omega/join/1`).
    Join,
    /// Membership: one SWIM message per stream (`/omega/swim/1`); the driver
    /// answers it itself.
    Swim,
    /// Desired-state anti-entropy: a state vector in, what it lacks out (`/omega/state/1`).
    State,
    /// Images: one chunk by content id (`/omega/image/1`).
    Image,
    /// Events: a batch of events in, one ack per event out, sent once each
    /// is processed and durable (`/omega/event/1`, [`crate::events`]).
    Event,
}

/// A gossip topic of the mesh (gossipsub, with validation by the node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// Desired-state updates.
    State,
    /// Each node's [`NodeStatus`](super::NodeStatus): what it runs.
    Status,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);
    };
}

id_type!(
    /// A connection, numbered by the driver.
    ConnId
);
id_type!(
    /// An outbound request, numbered by the node.
    RequestId
);
id_type!(
    /// An inbound request, numbered by the driver (which keeps the channel
    /// to answer it on).
    InboundId
);
id_type!(
    /// A gossip message awaiting validation, numbered by the driver.
    GossipRef
);
id_type!(
    /// A local command, numbered by the driver (which keeps whoever waits
    /// for the [`Reply`]).
    CommandId
);
id_type!(
    /// A write to durable storage, numbered by the node.
    PersistId
);

/// `(manifest, brane)`: one brane of one applied manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BraneKey {
    /// The manifest name.
    pub manifest: String,
    /// The brane name within it.
    pub brane: String,
}

impl BraneKey {
    /// The key of `brane` in `manifest`.
    pub fn new(manifest: impl Into<String>, brane: impl Into<String>) -> Self {
        Self {
            manifest: manifest.into(),
            brane: brane.into(),
        }
    }
}

impl fmt::Display for BraneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.manifest, self.brane)
    }
}

/// An address a discovery provider found: a multiaddr, with the member it
/// belongs to when the address names one (`…/p2p/PEER`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// The address (without `/p2p/PEER`).
    pub addr: String,
    /// The member, if the address named one.
    pub peer: Option<NodeId>,
}

/// A local command. Each is answered by one [`Output::Reply`] with the same
/// [`CommandId`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Command {
    /// Verify, store, apply and announce an encoded desired-state record
    /// (`omega apply`, `delete`, `image push`, `node revoke`).
    Write(Vec<u8>),
    /// A fresh HLC timestamp for a record about to be signed.
    Tick,
    /// Ask `from` for one chunk of an image.
    FetchChunk {
        /// The member to ask.
        from: NodeId,
        /// What to ask for.
        request: ImageRequest,
    },
    /// Leave the mesh gracefully (keep driving the node ~300 ms afterwards
    /// so the news goes out).
    Leave,
    /// Events from outside the graph (`omega emit`), authorized by `grant`
    /// (an encoded [`crate::desired::DesiredRecord::emit_grant`] for their
    /// manifest): answered with their ids once durable in this node's outbox.
    Emit {
        /// The grant.
        grant: Vec<u8>,
        /// The events (all of the grant's manifest).
        events: Vec<NewEvent>,
    },
    /// A dead-letter queue operation (`omega dlq`).
    Dlq(DlqCommand),
}

/// Why a local write did not take effect (or did not become durable).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteFailure {
    /// The bytes are not a record.
    #[error("{0}")]
    Decode(RecordError),
    /// The record is invalid, unauthorized, superseded or does not fit.
    #[error("{0}")]
    Refused(WriteError),
    /// Applied in memory, but the store failed: nothing was announced and
    /// the write is not acknowledged.
    #[error("applied here, but not stored durably: {0}")]
    NotDurable(String),
    /// Too many writes wait for the disk; try again.
    #[error("busy: {0} writes are waiting for the disk")]
    Busy(usize),
}

/// Why an image chunk could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The member is not admitted both ways with an open connection.
    #[error("{0} is not an admitted member")]
    NotReady(NodeId),
    /// Too many requests are in flight; try again.
    #[error("busy: too many requests in flight")]
    Busy,
    /// The request got no answer.
    #[error("{peer}: {error}")]
    NoAnswer {
        /// The member asked.
        peer: NodeId,
        /// What the transport said.
        error: String,
    },
    /// The answer does not decode.
    #[error("malformed image response: {0}")]
    Malformed(#[from] super::status::WireError),
}

/// The answer to a [`Command`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reply {
    /// [`Command::Write`]: `Ok` once the record is durable and announced.
    Written(Result<(), WriteFailure>),
    /// [`Command::Tick`].
    Tick(Hlc),
    /// [`Command::FetchChunk`].
    Chunk(Result<ImageResponse, FetchError>),
    /// [`Command::Leave`]: the leave message is queued.
    Left,
    /// [`Command::Emit`]: the events' ids, durable; or why not.
    Emitted(Result<Vec<EventId>, EmitError>),
    /// [`Command::Dlq`]: the dead letters listed or shown (empty for
    /// replay and drop), or why not.
    Dlq(Result<Vec<DeadLetter>, DlqError>),
}

/// What the effect of a completed brane start was.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Started {
    /// Where an HTTP brane serves (loopback URL), if it is one.
    pub url: Option<String>,
}

/// A change to durable storage. The driver executes them **in order** (one
/// writer) and reports each with [`Input::Persisted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistOp {
    /// Append an accepted desired-state update to the log.
    Append(Vec<u8>),
    /// Replace snapshot and log by one snapshot of the whole document.
    Compact(Vec<u8>),
    /// One transaction of the event store ([`EventOps`]): outbox rows and
    /// the processed window, all or nothing. When `ops.sync` is false the
    /// driver may report it before it is on disk (a later synced write or
    /// a periodic sync seals it).
    Events(EventOps),
}

/// An image a brane needs, as far as the node can resolve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// What the manifest names.
    pub reference: ImageRef,
    /// The content id, when the reference is one or the mesh's image
    /// records name it; `None`: the driver may still find the tag in its
    /// local image store.
    pub content: Option<ContentId>,
}

/// Start (or restart) a brane placed on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct StartBrane {
    /// Which brane.
    pub key: BraneKey,
    /// This attempt's number (report it back in [`Input::BraneStarted`]).
    pub attempt: u64,
    /// The plan it belongs to.
    pub plan: PlanHash,
    /// Its spec.
    pub brane: Brane,
    /// The plan's edges (what it may emit, and to whom).
    pub edges: Vec<Edge>,
    /// Instances placed here.
    pub instances: u32,
    /// Its image, if it names one.
    pub image: Option<ImageSource>,
    /// Members to fetch a missing image from, best first.
    pub sources: Vec<NodeId>,
}

/// Whether gossip may forward a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Not taken (rate, backpressure, stale), no fault of the sender.
    Ignore,
    /// Invalid: drop, and lower the forwarder's gossip score.
    Reject,
}

/// Why the node drops a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// We refused its join request (the reason was sent to it).
    Refused(String),
    /// It refused ours.
    RefusedByPeer(String),
    /// Neither side completed admission in time.
    AdmissionTimeout,
    /// A new connection beside one that lived a while: a restarted peer
    /// whose old connection still looks open here. Both sides redial.
    Stale,
    /// Membership declared it dead.
    Dead,
    /// The node was revoked.
    Revoked,
    /// The token it joined with was revoked.
    TokenRevoked,
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(why) => write!(f, "refused: {why}"),
            Self::RefusedByPeer(why) => write!(f, "it refused us: {why}"),
            Self::AdmissionTimeout => f.write_str("admission did not complete in time"),
            Self::Stale => f.write_str("a stale connection beside a new one"),
            Self::Dead => f.write_str("declared dead"),
            Self::Revoked => f.write_str("revoked"),
            Self::TokenRevoked => f.write_str("its join token was revoked"),
        }
    }
}

/// Something for logs and metrics. Nothing depends on the driver doing
/// anything with it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Report {
    /// A membership change, with the member's name.
    Member {
        /// The change.
        event: Event,
        /// The member's name, if known.
        name: Option<String>,
    },
    /// We admitted a peer.
    Admitted(Admitted),
    /// A member admitted us (`after`: ms since the node started, the first time).
    AdmittedBy {
        /// The member.
        peer: NodeId,
        /// Set on the first admission only.
        after: Option<u64>,
    },
    /// A refusal, either way, or of a desired-state update.
    Refusal(super::RefusalReport),
    /// A peer misbehaved.
    Strike {
        /// The peer.
        peer: NodeId,
        /// Strikes it now has.
        strikes: u32,
        /// What it did.
        why: String,
    },
    /// A peer is banned until `until` ([`Output::Ban`] went out too).
    Banned {
        /// The peer.
        peer: NodeId,
        /// Ban end.
        until: Mono,
    },
    /// Something was revoked.
    Revoked(Revocation),
    /// The desired state changed (count of changes).
    Desired {
        /// Changes.
        changes: usize,
    },
    /// A brane on this node changed state.
    Brane {
        /// Which.
        key: BraneKey,
        /// What happened.
        text: String,
    },
    /// A store operation failed.
    PersistFailed(String),
    /// The stored desired state was loaded at start.
    Loaded {
        /// Stored updates (snapshot and log) read.
        updates: usize,
        /// Winning manifests after verifying them all again.
        manifests: usize,
        /// The encoded document size.
        bytes: usize,
    },
    /// An event from this node's outbox was acknowledged as processed.
    Delivered(crate::events::EventId),
    /// A peer is being disconnected.
    Disconnecting {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: DisconnectReason,
    },
}

/// Everything the node feeds itself: network events, local commands, and
/// the completion of every effect it asked for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input {
    /// The driver listens on `addr` (a multiaddr, without `/p2p/`).
    Listening {
        /// The address.
        addr: String,
    },
    /// A transport-authenticated connection to `peer` is up.
    ConnectionUp {
        /// Who (its key authenticated the connection).
        peer: NodeId,
        /// The driver's number for it.
        conn: ConnId,
        /// Its remote address.
        remote: String,
    },
    /// A connection closed.
    ConnectionDown {
        /// Who.
        peer: NodeId,
        /// Which connection.
        conn: ConnId,
    },
    /// Dialing `peer` failed.
    DialFailed {
        /// Who.
        peer: NodeId,
    },
    /// A SWIM message from `from`.
    Swim {
        /// The sender.
        from: NodeId,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A request from `from`; answer with [`Output::Respond`] and `id`.
    Request {
        /// The sender.
        from: NodeId,
        /// Which protocol (never [`Protocol::Swim`]).
        protocol: Protocol,
        /// The driver's number for it.
        id: InboundId,
        /// The request.
        bytes: Vec<u8>,
    },
    /// The answer to our [`Output::Request`] `id`.
    Response {
        /// The answering member.
        from: NodeId,
        /// Our request.
        id: RequestId,
        /// The response.
        bytes: Vec<u8>,
    },
    /// Our request `id` got no answer (timeout, closed connection).
    RequestFailed {
        /// The member asked.
        to: NodeId,
        /// Our request.
        id: RequestId,
        /// Why.
        error: String,
    },
    /// A peer's stream broke the protocol (oversized, unreadable).
    StreamFailed {
        /// The sender.
        from: NodeId,
        /// Which protocol.
        protocol: Protocol,
        /// What was wrong.
        error: String,
    },
    /// A gossip message on one of the mesh's topics; answer with
    /// [`Output::Validate`] and `id` (possibly later: after a persist).
    Gossip {
        /// The driver's number for it.
        id: GossipRef,
        /// The peer that forwarded it to us.
        source: NodeId,
        /// Its author (signed by the author's key), if any.
        author: Option<NodeId>,
        /// The topic.
        topic: Topic,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Discovery providers found addresses.
    Discovered(Vec<Found>),
    /// A peer says it listens on these addresses (identify, Kademlia).
    /// Kept only for peers this node admitted.
    PeerAddresses {
        /// The peer.
        peer: NodeId,
        /// Its addresses.
        addrs: Vec<String>,
    },
    /// A local command.
    Command {
        /// The driver's number for it.
        id: CommandId,
        /// What to do.
        command: Command,
    },
    /// [`Output::Persist`] `id` is done.
    Persisted {
        /// Which write.
        id: PersistId,
        /// Whether it is durable.
        result: Result<(), String>,
    },
    /// [`Output::ReadBlob`] `id` is done: `(total size, bytes)`, or `None`
    /// when this node does not hold the image.
    BlobRead {
        /// The request it answers.
        id: InboundId,
        /// The chunk.
        result: Result<Option<(u64, Vec<u8>)>, String>,
    },
    /// [`Output::Start`] of `key`, attempt `attempt`, is done.
    BraneStarted {
        /// Which brane.
        key: BraneKey,
        /// Which attempt.
        attempt: u64,
        /// Running, or why not.
        result: Result<Started, String>,
    },
    /// [`Output::Process`] `ticket` is done: what the brane emitted, or why
    /// it did not complete.
    Processed {
        /// The ticket.
        ticket: u64,
        /// The emits, in order; or the failure.
        result: Result<Vec<Emit>, ProcessError>,
    },
    /// Nothing happened but time passed (a timer from [`Node::poll_timeout`](super::Node::poll_timeout)).
    Timeout,
}

/// Everything the node asks its driver to do.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Output {
    /// Send a SWIM message (one-way; loss is tolerated).
    Transmit {
        /// The member.
        to: NodeId,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Send a request; report the answer as [`Input::Response`] or
    /// [`Input::RequestFailed`] with `id`.
    Request {
        /// The member.
        to: NodeId,
        /// Which protocol.
        protocol: Protocol,
        /// Our number for it.
        id: RequestId,
        /// The request.
        bytes: Vec<u8>,
    },
    /// Answer inbound request `id`.
    Respond {
        /// The request.
        id: InboundId,
        /// The answer.
        bytes: Vec<u8>,
    },
    /// Publish on a topic.
    Publish {
        /// The topic.
        topic: Topic,
        /// The message.
        bytes: Vec<u8>,
    },
    /// The verdict on gossip message `id`.
    Validate {
        /// The message.
        id: GossipRef,
        /// Who forwarded it.
        source: NodeId,
        /// Forward, drop, or drop and penalize.
        verdict: Verdict,
    },
    /// Make a change durable, in order; report [`Input::Persisted`].
    Persist {
        /// Our number for it.
        id: PersistId,
        /// What to write.
        op: PersistOp,
    },
    /// Read up to `max` bytes of image `content` from `offset` (off the
    /// network loop); report [`Input::BlobRead`] with `id`.
    ReadBlob {
        /// The inbound request it is for.
        id: InboundId,
        /// The image.
        content: ContentId,
        /// Byte offset.
        offset: u64,
        /// Most bytes.
        max: usize,
    },
    /// Connect to `peer` (if given) at any of `addrs`.
    Dial {
        /// The member, when known.
        peer: Option<NodeId>,
        /// Where.
        addrs: Vec<String>,
    },
    /// Close every connection to `peer`.
    Disconnect {
        /// The peer.
        peer: NodeId,
        /// Why (a [`Report::Disconnecting`] carries it too).
        reason: DisconnectReason,
    },
    /// Refuse every connection to and from `peer` until [`Output::Unban`]
    /// (closing the open ones).
    Ban {
        /// The peer.
        peer: NodeId,
    },
    /// Accept connections with `peer` again.
    Unban {
        /// The peer.
        peer: NodeId,
    },
    /// `peer` and this node admitted each other; `addrs` are what it said
    /// it listens on (for routing tables such as Kademlia's).
    Ready {
        /// The member.
        peer: NodeId,
        /// Its addresses.
        addrs: Vec<String>,
    },
    /// Start a brane placed here; report [`Input::BraneStarted`].
    Start(Box<StartBrane>),
    /// Stop `key` if its running attempt is `attempt` or older.
    Stop {
        /// Which brane.
        key: BraneKey,
        /// The attempt to stop.
        attempt: u64,
    },
    /// Run a brane placed here on one event; report [`Input::Processed`].
    /// Several may run at once (never more per brane than the delivery
    /// configuration's concurrency).
    Process(Box<Process>),
    /// The answer to a local command.
    Reply {
        /// The command.
        id: CommandId,
        /// The answer.
        reply: Reply,
    },
    /// For logs and metrics.
    Report(Report),
}
