//! The local API's requests and responses: one schema, shared by the
//! server ([`super::serve`]) and the CLI ([`super::Client`]).

use omega_gossip::node::RefusalReport;
use omega_p2p::{PeerReport, StatusReport};
use omega_zgraph::{Brane, Replicas};
use serde::{Deserialize, Serialize};

/// Every error answer: `{"error": "…"}` with a 4xx/5xx status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong, for people.
    pub error: String,
}

/// `{"ok": true}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OkResponse {
    /// Always true on a 200.
    pub ok: bool,
}

/// One probe of a frontier backend at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeLine {
    /// The backend probed.
    pub backend: String,
    /// Whether it can run microVMs here.
    pub usable: bool,
    /// Why (not).
    pub reason: String,
}

/// This node's frontier (microVM) backend, or why it has none.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FrontierReport {
    /// `--frontier-backend`.
    pub choice: String,
    /// The backend in use, if any.
    pub backend: Option<String>,
    /// Whether the node runs frontier branes.
    pub usable: bool,
    /// Why (not).
    pub reason: String,
    /// Every probe.
    pub probes: Vec<ProbeLine>,
}

/// `GET /v0/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The node and its libp2p side.
    #[serde(flatten)]
    pub status: StatusReport,
    /// The frontier backend.
    pub frontier: FrontierReport,
}

/// `GET /v0/peers`.
pub type PeersResponse = Vec<PeerReport>;

/// `GET /v0/tick`: a fresh timestamp for a record about to be signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TickResponse {
    /// HLC wall part.
    pub wall_ms: u64,
    /// HLC counter.
    pub counter: u32,
    /// The mesh root's DID.
    pub mesh: String,
}

/// `POST /v0/records`: a signed desired-state record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The encoded record, base64 (standard alphabet, padded).
    pub record: String,
}

/// A node placed to run a brane, and how many instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Node name.
    pub node: String,
    /// Node DID.
    pub did: String,
    /// Instances.
    pub instances: u32,
}

/// What one node says it runs of a brane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actual {
    /// Node name.
    pub node: String,
    /// Node DID.
    pub did: String,
    /// `starting`, `running` or `failed`.
    pub state: String,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What membership believes about the node (`alive`, `suspect`, `dead`, `left`).
    pub node_state: String,
    /// Instances it runs.
    pub instances: u32,
    /// Whether it runs the current plan.
    pub current: bool,
    /// Where an HTTP brane is served on that node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One brane in `omega ps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PsBrane {
    /// Its name.
    pub brane: String,
    /// `gaia`, `biome` or `habitat`.
    pub substrate: String,
    /// `standard` or `frontier`.
    pub capability: String,
    /// A count or `"auto"`.
    pub replicas: Replicas,
    /// `placed`, `parked` or `unplaceable`.
    pub status: String,
    /// Whether every placed node runs it at the current plan.
    pub ready: bool,
    /// Where placement puts it.
    pub desired: Vec<Slot>,
    /// What nodes report.
    pub actual: Vec<Actual>,
}

/// One manifest in `omega ps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PsManifest {
    /// Its name.
    pub name: String,
    /// The plan hash (hex).
    pub plan: String,
    /// Who signed it.
    pub signer: String,
    /// Its HLC wall time.
    pub stamp_ms: u64,
    /// Its branes.
    pub branes: Vec<PsBrane>,
}

/// One `[resolver.NAME]` as the answering node serves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolverRow {
    /// Its manifest.
    pub manifest: String,
    /// Its name.
    pub resolver: String,
    /// The host the gateway routes by.
    pub host: String,
    /// The driver.
    pub mode: String,
    /// The brane it routes to.
    pub brane: String,
    /// Whether this node is an entry for it now (its brane has a running
    /// replica and this node runs a gateway).
    pub entry: bool,
    /// The tunnel's state (`up at URL`, `starting`, `down: …`, `failed: …`).
    pub state: String,
    /// The public URL while up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `GET /v0/ps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PsResponse {
    /// Every applied manifest.
    pub manifests: Vec<PsManifest>,
    /// Recently refused records.
    pub rejected: Vec<RefusalReport>,
    /// The encoded document size, bytes.
    pub document_bytes: usize,
    /// Event delivery as the answering node sees it: its outbox, dead
    /// letters, and every edge it sends along.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<omega_gossip::events::EventReport>,
    /// The resolvers the answering node serves as a gateway (none without
    /// `--gateway`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<ResolverRow>,
}

/// A node that may not run a brane, and every reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IneligibleRow {
    /// Node name.
    pub node: String,
    /// Node DID.
    pub did: String,
    /// Why, for people.
    pub reasons: Vec<String>,
}

/// One line of a brane's history on the asked node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRow {
    /// Unix ms.
    pub at_ms: u64,
    /// What happened.
    pub text: String,
}

/// One brane in `omega describe`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Describe {
    /// Its manifest.
    pub manifest: String,
    /// Its name.
    pub brane: String,
    /// The plan hash.
    pub plan: String,
    /// Its spec.
    pub spec: Brane,
    /// `placed`, `parked` or `unplaceable`.
    pub status: String,
    /// Whether every placed node runs it at the current plan.
    pub ready: bool,
    /// Where placement puts it.
    pub placement: Vec<Slot>,
    /// Every node that may not run it.
    pub ineligible: Vec<IneligibleRow>,
    /// What nodes report.
    pub actual: Vec<Actual>,
    /// Its history on this node.
    pub events: Vec<EventRow>,
    /// The resolvers that route to it, as the answering node's gateway
    /// serves them (none without `--gateway`): host, tunnel state, public
    /// URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<ResolverRow>,
}

/// `GET /v0/describe/BRANE`: one brane, or every brane of that name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DescribeResponse {
    /// Several manifests have a brane of that name.
    Many {
        /// Each of them.
        matches: Vec<Describe>,
    },
    /// Exactly one.
    One(Box<Describe>),
}

/// One event in an [`EmitRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmitEvent {
    /// The target: `BRANE` or `MANIFEST/BRANE`.
    pub brane: String,
    /// The event type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The routing key (empty: none).
    #[serde(default)]
    pub key: String,
    /// The payload as UTF-8 text…
    #[serde(default)]
    pub payload: String,
    /// …or as base64 (wins when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

/// `POST /v0/emit`: events from outside, into one manifest's graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmitRequest {
    /// A base64 emit grant (an invocation of `/event/emit` for the
    /// manifest, signed by the caller, with its chain from the mesh root).
    pub grant: String,
    /// The events (all for one manifest), in order.
    pub events: Vec<EmitEvent>,
}

/// `POST /v0/emit`'s answer: each event's id, once durable on this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmitResponse {
    /// The manifest.
    pub manifest: String,
    /// The ids, in the request's order.
    pub ids: Vec<String>,
}

/// One event a brane on this node processed (`omega tail`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TailLine {
    /// Its position in this node's tail (grows by one per line).
    pub seq: u64,
    /// When it was processed, unix ms.
    pub at_ms: u64,
    /// The manifest.
    pub manifest: String,
    /// The brane that ran it.
    pub brane: String,
    /// The event id.
    pub id: String,
    /// The type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The key.
    pub key: String,
    /// Who emitted it (`manifest/brane@node`).
    pub source: String,
    /// Delivery attempt.
    pub attempt: u32,
    /// Payload size.
    pub bytes: usize,
    /// The types it emitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emitted: Vec<String>,
    /// Why processing failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TailLine {
    /// The line for `event` (processed as `p`) and its result.
    pub fn new(
        p: &omega_gossip::events::Process,
        event: &omega_runtime::Event,
        result: &Result<Vec<omega_gossip::events::Emit>, omega_gossip::events::ProcessError>,
    ) -> Self {
        let (emitted, error) = match result {
            Ok(e) => (e.iter().map(|e| e.ty.clone()).collect(), None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        Self {
            seq: 0,
            at_ms: crate::unix_now().0,
            manifest: p.to.manifest.clone(),
            brane: p.to.brane.clone(),
            id: event.id.clone(),
            ty: event.ty.clone(),
            key: event.key.clone(),
            source: event.source.clone(),
            attempt: event.attempt,
            bytes: event.payload.len(),
            emitted,
            error,
        }
    }
}

/// `GET /v0/tail?after=SEQ[&brane=B][&type=T]`: lines after `after`,
/// waiting up to a second for one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TailResponse {
    /// Ask again with `after` = this.
    pub next: u64,
    /// Lines skipped because the reader fell behind the node's buffer.
    pub skipped: u64,
    /// The lines, oldest first.
    pub lines: Vec<TailLine>,
}

/// `GET /v0/dlq` and `GET /v0/dlq/ID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlqResponse {
    /// The dead letters on this node.
    pub letters: Vec<omega_gossip::events::DeadLetter>,
}
