//! Leaderless dispatch on the wire: the desired-state document, node status
//! and image transfer.
//!
//! | channel | what | bound |
//! |---|---|---|
//! | gossipsub `omega/MESH/state/1` | every accepted desired-state update, at once | [`NetConfig::max_gossipsub_message`](crate::NetConfig); larger ones travel by anti-entropy only; [`DispatchConfig::max_updates_per_peer_per_sec`] |
//! | `/omega/state/1` | anti-entropy: request = our yrs state vector, response = what we lack | [`NetConfig::max_state_message`](crate::NetConfig) |
//! | gossipsub `omega/MESH/status/1` | each node's [`NodeStatus`] (what it runs), signed by gossipsub with the node key | [`DispatchConfig::max_status_bytes`] |
//! | `/omega/image/1` | one chunk of an image by content id ([`ImageRequest`] → [`ImageResponse`]) | [`DispatchConfig::image_chunk`] |
//!
//! Every update, from gossip or anti-entropy, goes through
//! [`DesiredState::handle_update`](omega_gossip::DesiredState::handle_update):
//! an update with an invalid record is refused whole, the gossip message is
//! rejected (which costs the forwarder its gossipsub peer score) and the
//! sender gets a strike (three disconnect it). Accepted updates are handed to
//! the [`DesiredStore`] before anything else sees them, so a node that
//! acknowledged a write has it on disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use omega_gossip::desired::{Image, Manifest};
use omega_gossip::{Candidate, NodeId};
use omega_identity::ContentId;
use serde::{Deserialize, Serialize};

use crate::node::RefusalReport;

/// Durable storage of the desired-state document (the daemon's redb).
pub trait DesiredStore: Send {
    /// Appends an accepted update to the log. Called before the update is
    /// announced or acknowledged.
    fn append(&mut self, update: &[u8]) -> Result<(), String>;
    /// Replaces snapshot and log by one snapshot of the whole document.
    fn compact(&mut self, document: &[u8]) -> Result<(), String>;
}

/// Where a node reads the images it serves to peers.
pub trait BlobSource: Send + Sync {
    /// Up to `max` bytes of image `content` from `offset`, and its total
    /// size; `None` when this node does not hold it.
    fn read_chunk(
        &self,
        content: &ContentId,
        offset: u64,
        max: usize,
    ) -> Result<Option<(u64, Vec<u8>)>, String>;
}

/// The dispatch side of a node: its desired state and limits.
pub struct DispatchConfig {
    /// The desired-state document's limits and yrs client id.
    pub desired: omega_gossip::desired::Config,
    /// Stored updates to load at start (a snapshot, then the log), in order.
    pub initial: Vec<Vec<u8>>,
    /// Where accepted updates go (`None`: memory only).
    pub store: Option<Box<dyn DesiredStore>>,
    /// The images this node serves (`None`: it serves none).
    pub blobs: Option<Arc<dyn BlobSource>>,
    /// How often a random member is asked for what this node lacks. Default 1 s.
    pub anti_entropy_interval: Duration,
    /// Updates (gossip and anti-entropy together) accepted per peer per
    /// second; further ones are ignored, anti-entropy repairs later. Default 50.
    pub max_updates_per_peer_per_sec: u32,
    /// Log entries after which the store is compacted to one snapshot. Default 256.
    pub compact_every: u32,
    /// Largest image chunk served, bytes. Default 256 KiB.
    pub image_chunk: usize,
    /// Largest status message, bytes. Default 16 KiB; larger ones are rejected.
    pub max_status_bytes: usize,
    /// A node's unchanged status is announced again this often. Default 3 s.
    pub status_republish: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            desired: omega_gossip::desired::Config::default(),
            initial: Vec::new(),
            store: None,
            blobs: None,
            anti_entropy_interval: Duration::from_secs(1),
            max_updates_per_peer_per_sec: 50,
            compact_every: 256,
            image_chunk: 256 << 10,
            max_status_bytes: 16 << 10,
            status_republish: Duration::from_secs(3),
        }
    }
}

impl std::fmt::Debug for DispatchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchConfig")
            .field("desired", &self.desired)
            .field("initial", &self.initial.len())
            .field("anti_entropy_interval", &self.anti_entropy_interval)
            .finish_non_exhaustive()
    }
}

/// One brane a node runs (or tried to), as its status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BraneStatus {
    /// The manifest.
    pub manifest: String,
    /// The brane.
    pub brane: String,
    /// The plan hash it runs (hex).
    pub plan: String,
    /// Instances placed here.
    pub instances: u32,
    /// `running`, `starting`, or `failed: WHY`.
    pub state: String,
    /// Where an HTTP brane is served on its node (loopback only for now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What a node runs: its *actual* state, announced on the status topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Grows with every change (newer replaces older).
    pub seq: u64,
    /// Its branes.
    pub branes: Vec<BraneStatus>,
}

/// Most branes one status may list.
pub const MAX_STATUS_BRANES: usize = 1024;

impl NodeStatus {
    /// The wire form (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a status of at most `max` bytes.
    pub fn from_bytes(bytes: &[u8], max: usize) -> Result<Self, WireError> {
        if bytes.len() > max {
            return Err(WireError::TooLarge {
                what: "status",
                len: bytes.len(),
                max,
            });
        }
        let s: Self = serde_json::from_slice(bytes).map_err(|e| WireError::Malformed {
            what: "status",
            why: e.to_string(),
        })?;
        if s.branes.len() > MAX_STATUS_BRANES {
            return Err(WireError::TooLarge {
                what: "status branes",
                len: s.branes.len(),
                max: MAX_STATUS_BRANES,
            });
        }
        Ok(s)
    }
}

/// A malformed dispatch message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Too long.
    #[error("{what} of {len} exceeds the maximum of {max}")]
    TooLarge {
        /// Which message.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Does not decode.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// Why.
        why: String,
    },
}

/// `/omega/image/1` request: a chunk of `content` from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    /// The image.
    pub content: ContentId,
    /// Byte offset.
    pub offset: u64,
}

impl ImageRequest {
    /// `offset` (8 bytes, big-endian) ‖ content id text.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.offset.to_be_bytes().to_vec();
        b.extend_from_slice(self.content.to_string().as_bytes());
        b
    }

    /// Decodes a request.
    pub fn from_bytes(b: &[u8]) -> Result<Self, WireError> {
        let bad = |why: &str| WireError::Malformed {
            what: "image request",
            why: why.into(),
        };
        if b.len() > 8 + 128 {
            return Err(WireError::TooLarge {
                what: "image request",
                len: b.len(),
                max: 8 + 128,
            });
        }
        let (off, cid) = b.split_at_checked(8).ok_or_else(|| bad("truncated"))?;
        let offset = u64::from_be_bytes(off.try_into().map_err(|_| bad("truncated"))?);
        let content = std::str::from_utf8(cid)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("not a content id"))?;
        Ok(Self { content, offset })
    }
}

/// `/omega/image/1` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageResponse {
    /// A chunk and the image's total size.
    Chunk {
        /// Total size of the image.
        total: u64,
        /// The bytes from the requested offset.
        bytes: Vec<u8>,
    },
    /// This node does not hold the image.
    NotFound,
    /// The request was refused (not admitted, bad request, rate).
    Refused(String),
}

impl ImageResponse {
    /// `0 ‖ total (8 bytes BE) ‖ bytes`, `1`, or `2 ‖ reason`.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Chunk { total, bytes } => {
                let mut b = vec![0];
                b.extend_from_slice(&total.to_be_bytes());
                b.extend_from_slice(bytes);
                b
            }
            Self::NotFound => vec![1],
            Self::Refused(why) => {
                let mut b = vec![2];
                b.extend(why.bytes().take(256));
                b
            }
        }
    }

    /// Decodes a response.
    pub fn from_bytes(b: &[u8]) -> Result<Self, WireError> {
        let bad = || WireError::Malformed {
            what: "image response",
            why: "unknown tag or truncated".into(),
        };
        match b.split_first() {
            Some((0, rest)) if rest.len() >= 8 => {
                let (t, bytes) = rest.split_at(8);
                let total = u64::from_be_bytes(t.try_into().map_err(|_| bad())?);
                Ok(Self::Chunk {
                    total,
                    bytes: bytes.to_vec(),
                })
            }
            Some((1, [])) => Ok(Self::NotFound),
            Some((2, why)) => Ok(Self::Refused(String::from_utf8_lossy(why).into_owned())),
            _ => Err(bad()),
        }
    }
}

/// Everything the reconciler, `omega ps` and `omega describe` need, in one
/// consistent snapshot of the driver.
#[derive(Debug, Clone)]
pub struct DesiredView {
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
    /// Admitted peers with an open connection (image sources).
    pub peers: Vec<PeerId>,
    /// Recent refused desired-state writes and updates.
    pub refusals: Vec<RefusalReport>,
    /// The encoded document size, bytes.
    pub document_bytes: usize,
}

/// Dispatch counters, as `omega status` shows them.
#[derive(Debug, Clone, Default, Serialize)]
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
    /// The encoded document size, bytes.
    pub document_bytes: usize,
    /// Winning manifests.
    pub manifests: usize,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn image_messages_round_trip_and_garbage_is_refused() {
        let req = ImageRequest {
            content: ContentId::of(b"x"),
            offset: 77,
        };
        assert_eq!(ImageRequest::from_bytes(&req.to_bytes()).unwrap(), req);
        assert!(ImageRequest::from_bytes(&[1, 2]).is_err());
        assert!(ImageRequest::from_bytes(&[0; 300]).is_err());
        for r in [
            ImageResponse::Chunk {
                total: 9,
                bytes: vec![1, 2, 3],
            },
            ImageResponse::NotFound,
            ImageResponse::Refused("no".into()),
        ] {
            assert_eq!(ImageResponse::from_bytes(&r.to_bytes()).unwrap(), r);
        }
        assert!(ImageResponse::from_bytes(&[0, 1]).is_err());
        assert!(ImageResponse::from_bytes(&[]).is_err());
        assert!(NodeStatus::from_bytes(b"{", 100).is_err());
        assert!(NodeStatus::from_bytes(&[b' '; 200], 100).is_err());
        let s = NodeStatus {
            seq: 3,
            branes: vec![],
        };
        assert_eq!(NodeStatus::from_bytes(&s.to_bytes(), 100).unwrap(), s);
    }
}
