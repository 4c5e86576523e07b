//! What a node runs — its *actual* state — as it announces it on the status
//! topic, and the table of every member's latest announcement.
//!
//! A status is small (one row per brane placed on the node, never per
//! instance or per event) and carries a sequence number that only grows
//! (wall milliseconds, or the last one plus one), so a receiver keeps only
//! the newest. The table holds statuses of members in the membership table
//! only, and forgets a member's the moment it is dead, left or removed: it
//! can never hold more entries than membership does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// Most branes one status may list.
pub const MAX_STATUS_BRANES: usize = 1024;

/// Where a brane stands on the node that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BraneState {
    /// Placed here; being fetched, compiled or booted.
    Starting,
    /// Ready for events (or serving HTTP).
    Running,
    /// The last start failed; it is retried with backoff.
    Failed {
        /// Why the last attempt failed.
        reason: String,
        /// Failed attempts in a row.
        attempts: u32,
    },
}

impl BraneState {
    /// `starting`, `running` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Failed { .. } => "failed",
        }
    }
}

impl std::fmt::Display for BraneState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Failed { reason, .. } => write!(f, "failed: {reason}"),
            other => f.write_str(other.name()),
        }
    }
}

/// One brane a node runs (or tries to), as its status reports it.
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
    /// Where it stands.
    #[serde(flatten)]
    pub state: BraneState,
    /// Where an HTTP brane is served on its node (loopback only for now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What a node runs, announced on the status topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Grows with every change (newer replaces older).
    pub seq: u64,
    /// Its branes.
    pub branes: Vec<BraneStatus>,
}

/// A malformed message of one of the node's protocols.
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

impl NodeStatus {
    /// The wire form (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain strings and integers cannot fail.
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

/// Every member's latest status (this node's included).
#[derive(Debug, Default)]
pub(crate) struct Statuses {
    by_node: BTreeMap<NodeId, NodeStatus>,
    /// Grows whenever the branes any node runs change.
    generation: u64,
}

impl Statuses {
    /// Keeps `status` if it is newer than what `node` said before; returns
    /// whether the branes it lists changed.
    pub(crate) fn offer(&mut self, node: NodeId, status: NodeStatus) -> bool {
        let old = self.by_node.get(&node);
        if old.is_some_and(|o| status.seq <= o.seq) {
            return false;
        }
        let changed = old.is_none_or(|o| o.branes != status.branes);
        self.by_node.insert(node, status);
        if changed {
            self.generation += 1;
        }
        changed
    }

    /// Forgets `node`'s status (dead, left, removed, revoked).
    pub(crate) fn forget(&mut self, node: &NodeId) -> bool {
        let gone = self.by_node.remove(node).is_some();
        if gone {
            self.generation += 1;
        }
        gone
    }

    /// Grows whenever the branes any node runs change.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    #[cfg(test)]
    pub(crate) fn get(&self, node: &NodeId) -> Option<&NodeStatus> {
        self.by_node.get(node)
    }

    pub(crate) fn all(&self) -> &BTreeMap<NodeId, NodeStatus> {
        &self.by_node
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_node.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn status(seq: u64, state: BraneState) -> NodeStatus {
        NodeStatus {
            seq,
            branes: vec![BraneStatus {
                manifest: "m".into(),
                brane: "b".into(),
                plan: "00".into(),
                instances: 1,
                state,
                url: None,
            }],
        }
    }

    #[test]
    fn wire_form_round_trips_and_garbage_is_refused() {
        let s = status(
            3,
            BraneState::Failed {
                reason: "no image".into(),
                attempts: 2,
            },
        );
        let bytes = s.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""state":"failed""#), "{text}");
        assert_eq!(NodeStatus::from_bytes(&bytes, 1000).unwrap(), s);
        assert!(NodeStatus::from_bytes(b"{", 100).is_err());
        assert!(NodeStatus::from_bytes(&[b' '; 200], 100).is_err());
    }

    #[test]
    fn only_newer_statuses_replace_older_ones() {
        let mut t = Statuses::default();
        let n = NodeId::from_bytes([1; 32]);
        assert!(t.offer(n, status(2, BraneState::Starting)));
        assert!(!t.offer(n, status(1, BraneState::Running)), "older");
        assert!(t.offer(n, status(3, BraneState::Running)));
        assert!(!t.offer(n, status(4, BraneState::Running)), "same branes");
        assert_eq!(t.get(&n).unwrap().seq, 4);
        assert!(t.forget(&n));
        assert_eq!(t.len(), 0);
    }
}
