//! `omega-p2p`: the libp2p driver of an Omega node.
//!
//! It owns the transports (QUIC and TCP with noise and yamux), the composed
//! behaviour (identify, ping, Kademlia, gossipsub with validation and peer
//! scoring, mDNS when asked, connection limits), mesh admission over
//! `/omega/join/1` ([`join`]), the membership protocol `/omega/swim/1` that
//! carries the sans-IO core of `omega-gossip`, leaderless dispatch
//! ([`dispatch`]: the desired-state document on a gossipsub topic and by
//! anti-entropy on `/omega/state/1`, node status, chunked image transfer on
//! `/omega/image/1`), and the discovery providers that feed one address book
//! ([`discovery`]).
//!
//! One Ed25519 key is a node's `did:key`, its gossip `NodeId` and its libp2p
//! `PeerId` ([`keys`]).

pub mod behaviour;
pub mod codec;
pub mod discovery;
pub mod dispatch;
pub mod http;
pub mod join;
pub mod keys;
pub mod node;

pub use behaviour::NetConfig;
pub use dispatch::{DesiredView, DispatchConfig, NodeStatus};
pub use node::{
    Command, DriverLimits, NodeConfig, NodeError, NodeHandle, PeerReport, RefusalReport,
    StatusReport, spawn,
};
