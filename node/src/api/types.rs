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

/// `GET /v0/ps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PsResponse {
    /// Every applied manifest.
    pub manifests: Vec<PsManifest>,
    /// Recently refused records.
    pub rejected: Vec<RefusalReport>,
    /// The encoded document size, bytes.
    pub document_bytes: usize,
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

/// `POST /v0/emit`: run an event on a brane here and along local edges.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmitRequest {
    /// `BRANE` or `MANIFEST/BRANE`.
    pub brane: String,
    /// The event type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The payload (UTF-8).
    #[serde(default)]
    pub payload: String,
}

/// One delivery (or non-delivery) of an emitted event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryLine {
    /// The target brane.
    pub brane: String,
    /// The event id.
    pub event: String,
    /// The event type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether the brane ran it.
    pub delivered: bool,
    /// The types it emitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emitted: Vec<String>,
    /// Why running it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it was not delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// `POST /v0/emit`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmitResponse {
    /// Every delivery, in order, then what was not delivered.
    pub deliveries: Vec<DeliveryLine>,
}
