//! What a node tells about itself: the reports behind `omega status`,
//! `omega peers`, `omega ps` and `omega describe`. Plain data with serde, so
//! the local API's server and the CLI share one schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::desired::{Image, Manifest};
use crate::id::NodeId;
use crate::placement::Candidate;

use super::reconcile::BraneEvent;
use super::status::NodeStatus;

/// Which way a refusal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This node refused the peer's join request.
    Inbound,
    /// The peer refused ours.
    Outbound,
    /// A desired-state write or update was refused.
    Desired,
}

/// A refusal, as `omega status` and `omega ps` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalReport {
    /// The peer's DID (or `local` for a write through the local API).
    pub peer: String,
    /// Which way.
    pub direction: Direction,
    /// Why.
    pub reason: String,
}

/// Desired-state and status traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchStats {
    /// Desired-state and status bytes sent (gossip and anti-entropy).
    pub bytes_sent: u64,
    /// Desired-state and status bytes received.
    pub bytes_received: u64,
    /// Updates accepted from peers.
    pub updates_accepted: u64,
    /// Updates refused.
    pub updates_refused: u64,
    /// Anti-entropy rounds started.
    pub anti_entropy_rounds: u64,
    /// Anti-entropy replies withheld because the asker was over its byte
    /// or answer budget.
    pub replies_deferred: u64,
    /// Requests and gossip from peers refused or ignored for being past one
    /// of the sender's rates ([`super::GuardConfig`]), every protocol.
    #[serde(default)]
    pub rate_limited: u64,
    /// The encoded document size, bytes.
    pub document_bytes: usize,
    /// Winning manifests.
    pub manifests: usize,
}

/// The node part of `omega status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// This node's DID.
    pub did: String,
    /// Node name.
    pub name: String,
    /// Substrate.
    pub substrate: String,
    /// The mesh root DID.
    pub mesh: String,
    /// Current incarnation.
    pub incarnation: u64,
    /// Whether a member answered our join.
    pub joined: bool,
    /// Listen addresses.
    pub listen: Vec<String>,
    /// Members alive or suspect (not counting this node).
    pub live_members: usize,
    /// Peers with an open connection.
    pub connections: usize,
    /// Milliseconds from start to the first admission by a member, if any.
    pub admitted_after_ms: Option<u64>,
    /// Membership bytes sent.
    pub swim_bytes_sent: u64,
    /// Membership bytes received.
    pub swim_bytes_received: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Peers banned now (DIDs).
    pub banned: Vec<String>,
    /// Writes waiting for the disk.
    pub persists_in_flight: usize,
    /// Recent refusals.
    pub refusals: Vec<RefusalReport>,
    /// Desired-state and status traffic.
    pub dispatch: DispatchStats,
}

/// One member as `omega peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// `did:key`.
    pub did: String,
    /// Node name.
    pub name: String,
    /// `gaia`, `biome` or `habitat`.
    pub substrate: String,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: String,
    /// Its incarnation.
    pub incarnation: u64,
    /// Whether a connection to it is open now.
    pub connected: bool,
    /// Its advertised addresses.
    pub addresses: Vec<String>,
}

/// Everything `omega ps` and `omega describe` need, in one consistent
/// snapshot of the node.
#[derive(Debug, Clone)]
pub struct View {
    /// This node.
    pub me: NodeId,
    /// The winning manifests.
    pub manifests: Vec<Manifest>,
    /// The winning image names.
    pub images: Vec<Image>,
    /// Placement candidates: every member in the table and this node.
    pub members: Vec<Candidate>,
    /// Each node's latest status (this node's included).
    pub statuses: BTreeMap<NodeId, NodeStatus>,
    /// Members admitted both ways with an open connection (image sources).
    pub peers: Vec<NodeId>,
    /// Recent refused desired-state writes and updates.
    pub refusals: Vec<RefusalReport>,
    /// The encoded document size, bytes.
    pub document_bytes: usize,
    /// This node's brane history, oldest first.
    pub events: Vec<BraneEvent>,
}
