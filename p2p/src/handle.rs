//! The handle the host holds on a running node: typed calls in, typed
//! answers out, and the brane effects the node asks the host to carry out.

use omega_gossip::NodeId;
use omega_gossip::events::{
    DeadLetter, DlqCommand, DlqError, Emit, EmitError, EventId, EventReport, NewEvent, Process,
    ProcessError,
};
use omega_gossip::hlc::Hlc;
use omega_gossip::node::{
    BraneKey, Command as NodeCommand, FetchError, ImageRequest, ImageResponse, MemberReport,
    NodeReport, Reply, StartBrane, Started, View, WriteFailure,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// `omega status`: the node's report plus what only libp2p knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node brain's report (its `listen` carries `/p2p/PEER`).
    #[serde(flatten)]
    pub node: NodeReport,
    /// libp2p peer id.
    pub peer_id: String,
    /// Peers in the Kademlia routing table (admitted members only).
    pub kad_peers: usize,
    /// gossipsub's score of every peer it knows, by libp2p peer id: below
    /// the graylist threshold (-80) its gossip is ignored, below the
    /// publish threshold (-50) nothing is published to it.
    #[serde(default)]
    pub gossip_scores: std::collections::BTreeMap<String, f64>,
}

/// One member as `omega peers` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerReport {
    /// What the node brain knows.
    #[serde(flatten)]
    pub member: MemberReport,
    /// libp2p peer id.
    pub peer_id: String,
}

/// A brane effect for the host: start or stop; report starts back with
/// [`NodeHandle::brane_started`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BraneEffect {
    /// Start (or restart) a brane.
    Start(Box<StartBrane>),
    /// Run a brane placed here on one event; report it with
    /// [`NodeHandle::processed`] (from any thread).
    Process(Box<Process>),
    /// Stop `key` if its running attempt is `attempt` or older.
    Stop {
        /// Which brane.
        key: BraneKey,
        /// The attempt.
        attempt: u64,
    },
}

pub(crate) enum Request {
    Status(oneshot::Sender<StatusReport>),
    Peers(oneshot::Sender<Vec<PeerReport>>),
    View(oneshot::Sender<View>),
    Metrics(oneshot::Sender<String>),
    Command(NodeCommand, oneshot::Sender<Reply>),
    Started(BraneKey, u64, Result<Started, String>),
    Events(oneshot::Sender<EventReport>),
    Acks(oneshot::Sender<tokio::sync::broadcast::Receiver<EventId>>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle to a running node; cheap to clone. Every call returns `None`
/// once the node stopped.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) tx: mpsc::Sender<Request>,
    pub(crate) done: mpsc::UnboundedSender<omega_gossip::node::Input>,
    pub(crate) streams: libp2p_stream::Control,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request")
    }
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// Raw libp2p streams: open [`crate::behaviour::HTTP_PROTOCOL`] streams
    /// to a peer, or accept them (one acceptor per protocol). The acceptor
    /// must check that the peer is an admitted member before serving it:
    /// any connected peer (a joining one too) can open a stream.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    async fn command(&self, c: NodeCommand) -> Option<Reply> {
        self.ask(|tx| Request::Command(c, tx)).await
    }

    /// `omega status`.
    pub async fn status(&self) -> Option<StatusReport> {
        self.ask(Request::Status).await
    }

    /// `omega peers`.
    pub async fn peers(&self) -> Option<Vec<PeerReport>> {
        self.ask(Request::Peers).await
    }

    /// The desired state, members, statuses and history.
    pub async fn view(&self) -> Option<View> {
        self.ask(Request::View).await
    }

    /// Metrics in Prometheus text format (empty without a registry).
    pub async fn metrics(&self) -> Option<String> {
        self.ask(Request::Metrics).await
    }

    /// A fresh HLC timestamp for a record about to be signed.
    pub async fn tick(&self) -> Option<Hlc> {
        match self.command(NodeCommand::Tick).await? {
            Reply::Tick(h) => Some(h),
            _ => None,
        }
    }

    /// Verifies, stores, applies and announces an encoded desired-state record.
    pub async fn write(&self, record: Vec<u8>) -> Option<Result<(), WriteFailure>> {
        match self.command(NodeCommand::Write(record)).await? {
            Reply::Written(r) => Some(r),
            _ => None,
        }
    }

    /// Asks `from` for one chunk of an image.
    pub async fn fetch_chunk(
        &self,
        from: NodeId,
        request: ImageRequest,
    ) -> Option<Result<ImageResponse, FetchError>> {
        match self
            .command(NodeCommand::FetchChunk { from, request })
            .await?
        {
            Reply::Chunk(r) => Some(r),
            _ => None,
        }
    }

    /// Reports that a [`BraneEffect::Start`] finished; false if the node stopped.
    pub async fn brane_started(
        &self,
        key: BraneKey,
        attempt: u64,
        result: Result<Started, String>,
    ) -> bool {
        self.tx
            .send(Request::Started(key, attempt, result))
            .await
            .is_ok()
    }

    /// Events from outside (`omega emit`), authorized by `grant` (an
    /// encoded emit grant for their manifest): their ids once durable here.
    pub async fn emit(
        &self,
        grant: Vec<u8>,
        events: Vec<NewEvent>,
    ) -> Option<Result<Vec<EventId>, EmitError>> {
        match self.command(NodeCommand::Emit { grant, events }).await? {
            Reply::Emitted(r) => Some(r),
            _ => None,
        }
    }

    /// A dead-letter queue operation (`omega dlq`).
    pub async fn dlq(&self, command: DlqCommand) -> Option<Result<Vec<DeadLetter>, DlqError>> {
        match self.command(NodeCommand::Dlq(command)).await? {
            Reply::Dlq(r) => Some(r),
            _ => None,
        }
    }

    /// Every event from this node's outbox acknowledged as processed from
    /// now on (lossy for a reader more than 65 536 behind).
    pub async fn acks(&self) -> Option<tokio::sync::broadcast::Receiver<EventId>> {
        self.ask(Request::Acks).await
    }

    /// Delivery figures (outbox, dead letters, per-edge counts).
    pub async fn events(&self) -> Option<EventReport> {
        self.ask(Request::Events).await
    }

    /// Reports the result of a [`BraneEffect::Process`]. Never blocks: the
    /// result goes on the driver's own queue (bounded by the delivery
    /// machine's concurrency, which holds the tickets).
    pub fn processed(&self, ticket: u64, result: Result<Vec<Emit>, ProcessError>) -> bool {
        self.done
            .send(omega_gossip::node::Input::Processed { ticket, result })
            .is_ok()
    }

    /// Leaves the mesh gracefully and stops the node.
    pub async fn shutdown(&self) -> Option<()> {
        self.ask(Request::Shutdown).await
    }
}

/// Capacity of the handle's request channel; callers wait beyond it.
pub const REQUEST_QUEUE: usize = 64;
