//! `omega-p2p`: the libp2p driver of an Omega node.
//!
//! It owns what is about libp2p and nothing else: the transports (QUIC and
//! TCP with noise and yamux), the composed behaviour ([`behaviour`]:
//! a block list for banned peers, connection and memory limits, identify,
//! ping, Kademlia, gossipsub with validation and peer scoring, mDNS when
//! asked, and one request-response behaviour per Omega protocol), the
//! discovery providers ([`discovery`]), and the [`driver`] that runs the
//! node brain (`omega_gossip::Node`) on the swarm: swarm events in as
//! inputs, outputs out as swarm calls, writes on a store thread, blob reads
//! on the blocking pool ([`host`]).
//!
//! Every mesh decision — admission, strikes and bans, rate limits,
//! anti-entropy, statuses, revocations, what runs where — is the node
//! brain's, where the simulator drives it too.
//!
//! One Ed25519 key is a node's `did:key`, its gossip `NodeId` and its libp2p
//! `PeerId` ([`keys`]).

pub mod behaviour;
pub mod codec;
pub mod discovery;
pub mod driver;
pub mod handle;
pub mod host;
pub mod http;
pub mod keys;

pub use behaviour::NetConfig;
pub use driver::{NodeConfig, NodeError, spawn};
pub use handle::{BraneEffect, NodeHandle, PeerReport, StatusReport};
