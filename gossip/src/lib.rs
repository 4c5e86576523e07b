//! `omega-gossip`: the sans-IO brain of an Omega mesh node.
//!
//! [`node::Node`] is one state machine per node that decides everything
//! about the mesh: admission (the join handshake, [`join`]), membership and
//! liveness ([`Membership`], SWIM), the replicated desired state
//! ([`DesiredState`], a yrs document of signed records, [`desired`]) with
//! persistence ordering and anti-entropy, node statuses, revocations,
//! strikes, bans and rate limits, the address book, placement
//! ([`placement`]), the reconciler's decisions, and event delivery along
//! the manifests' edges ([`events`]: durable outboxes, credits, retries,
//! re-routes, dead letters, a processed window). It does no I/O: no
//! sockets, no tokio, no clock, no OS randomness. Time ([`time::Now`]:
//! monotonic and unix milliseconds, as distinct types) and a random seed
//! are inputs, so the same seed and inputs give the same outputs, byte for
//! byte. Three drivers run the same `Node`: the daemon (`omega-p2p` with
//! libp2p, `omega-node` with redb and the runtime), the deterministic
//! harness [`testkit::mesh`] (and the simulator built on it), and unit
//! tests with hand-written inputs.
//!
//! # Driver contract
//!
//! ```text
//! let mut node = Node::new(config, identity, &stored_updates, seed, now)?;
//! loop {
//!     // 1. one input: a network event, a local command, a completed effect,
//!     //    or Input::Timeout once node.poll_timeout() is reached
//!     node.handle_input(input, now);
//!     // 2. drain and execute every output before the next input
//!     while let Some(output) = node.poll_output() { execute(output) }
//!     // 3. sleep until the next input or node.poll_timeout()
//! }
//! ```
//!
//! - Every connection and message carries the transport-authenticated
//!   [`NodeId`] (the peer's Ed25519 key, which is also its `did:key` and its
//!   libp2p `PeerId`); the driver passes it in and decides nothing.
//! - [`node::Output::Persist`] is executed in order, off the network loop,
//!   and reported with [`node::Input::Persisted`]; what depends on a write
//!   (an announce, a reply, a gossip `Accept`) is released by the node only
//!   then. [`node::Output::ReadBlob`] and [`node::Output::Start`] likewise
//!   report back as inputs.
//! - Requests, gossip validations and commands are matched to their answers
//!   by ids ([`node::RequestId`], [`node::GossipRef`], [`node::CommandId`]).
//!
//! The [`node`] module documents every input and output and what the node
//! guarantees; `docs/src/architecture.md` has the diagram of which crate
//! decides what.
//!
//! # The machines inside
//!
//! [`Membership`] and [`DesiredState`] can also be driven on their own (the
//! membership harness [`testkit::Sim`] and benchmarks do):
//!
//! A [`Membership`] is one node's view of the mesh: a compact table of member
//! records, each signed by its member, and what this node believes about each
//! member's liveness ([`State`]). It implements SWIM (Das, Gupta, Motivala
//! 2002) with the Lifeguard refinements that matter most (suspicion timeouts
//! shortened by independent confirmations, the "buddy" hint to the suspect),
//! piggybacked dissemination with a bounded retransmit count, and push-pull
//! anti-entropy (full state to joiners, bounded pages periodically).
//!
//! It does no I/O: no sockets, no clock, no OS randomness. Time is an argument
//! (`now`, milliseconds of any monotonic or virtual clock), randomness comes from
//! a seed given at construction. Same seed and same inputs give the same outputs,
//! byte for byte, which is what lets [`testkit`] and the simulator run thousands
//! of members in one thread.
//!
//! ## Membership on its own
//!
//! A driver of a bare `Membership` does this:
//!
//! 1. **Create** it with [`Membership::new`]: the [`Config`] (mesh id, timers,
//!    limits), the [`LocalMember`] (node key, [`Profile`], starting
//!    incarnation — 0, or a persisted one plus one), an [`Admission`] check and
//!    a 32-byte rng seed (from the OS in production, fixed in tests).
//! 2. **Local commands**: [`Membership::join`] with the ids of a few seed members
//!    the driver can reach (retried until one answers, then [`Event::Joined`]);
//!    [`Membership::update_profile`] when addresses or resources change;
//!    [`Membership::leave`] on graceful shutdown (then keep driving it for a
//!    few gossip intervals, ~1 s, so the news spreads); [`Membership::remove`]
//!    after a revocation (the [`Admission`] check must refuse the member too).
//! 3. **Inputs**: every message a peer sends on the membership protocol goes to
//!    [`Membership::handle_message`]`(from, bytes, now)`, where `from` is the
//!    transport-authenticated sender (its libp2p `PeerId` is the same Ed25519
//!    key as its [`NodeId`]); when the time returned by
//!    [`Membership::poll_timeout`] is reached, call
//!    [`Membership::handle_timeout`]`(now)`. Calling `handle_timeout` early or
//!    late is harmless: it runs whatever is due.
//! 4. **Outputs**, drained after *every* input and command, in this order:
//!    - [`Membership::poll_transmit`] until `None`: send each
//!      [`Transmit`]`{to, bytes}` to `to` as one message (a request-response or
//!      stream frame; the bytes are at most `limits.max_message_size`). Delivery
//!      failures need not be reported: SWIM treats them as loss. The driver needs
//!      an address for `to`: the member's record lists them
//!      ([`Membership::member`]).
//!    - [`Membership::poll_event`] until `None`: membership changes
//!      ([`Event::Up`], [`Event::Alive`], [`Event::Updated`], [`Event::Suspect`],
//!      [`Event::Dead`], [`Event::Left`], [`Event::Removed`]) feed placement and
//!      connection management; [`Event::Refused`] with `penalty: true` means the
//!      peer sent garbage or forged/foreign records: lower its score and
//!      disconnect it on repeat.
//!    - [`Membership::poll_timeout`]: the next time to call `handle_timeout`
//!      (may already be past: then call it at once).
//!
//! Every queue is bounded ([`Config`] documents each limit and what happens when
//! it is hit), so a driver that drains late loses messages or old events, never
//! memory.
//!
//! ## Desired state and placement on their own
//!
//! The same driver also owns one [`DesiredState`] per node ([`desired`]): the
//! yrs document of signed manifests, image names and revocations.
//!
//! 1. **Create** it with [`DesiredState::new`]`(mesh_root, config)`; on
//!    restart feed the persisted snapshot ([`DesiredState::encode`]) back
//!    through `handle_update` (it is verified again) and use a fresh
//!    `config.client_id` if the snapshot may be older than the last write.
//! 2. **Local writes** (the local API's `apply`/`delete`/`image push`/`revoke`):
//!    get a timestamp from [`DesiredState::tick`]`(now_ms)` for the signer,
//!    then [`DesiredState::apply_local`] / [`desired::DesiredState::delete_local`] /
//!    [`desired::DesiredState::write_local`]; persist and announce (gossipsub)
//!    the returned update bytes.
//! 3. **Inputs**: an announced update or an anti-entropy reply goes to
//!    [`desired::DesiredState::handle_update`]`(from, bytes, now_ms)`. A
//!    [`desired::Refusal`] changed nothing; if `penalty()` lower the sender's
//!    score; on `MissingDependencies` ask the sender for
//!    `diff_since(our state_vector())`. Periodically (and after a partition
//!    heals) send [`desired::DesiredState::state_vector`] to a random member
//!    and answer with [`desired::DesiredState::diff_since`].
//! 4. **Outputs**: after every input drain
//!    [`desired::DesiredState::poll_update`] (repairs this node wrote) and
//!    announce it; persist the document; on any change recompute placement.
//!
//! `now_ms` here is **unix** milliseconds (records carry hybrid logical
//! timestamps checked against UCAN expiries), unlike membership's monotonic ms.
//! Placement is a pure function ([`placement::place`]) of the winning plans
//! ([`desired::DesiredState::manifests`]) and the members
//! ([`placement::Candidate::from_view`] over the membership table): start
//! what [`Placement::for_node`] lists for this node, stop the rest.
//!
//! ## Trust
//!
//! A record is accepted only if it is signed by the member it describes, names
//! this mesh, fits the [`Limits`], obeys the axis rules (no `frontier` on
//! `habitat`), and passes [`Admission`]. Only the member itself can raise its
//! incarnation, so only it can refute a suspicion or announce that it left.
//! Suspect and dead claims are not signed: any admitted member can make them,
//! and the subject refutes them. Messages from a peer that is not in the table
//! are refused ([`Refusal::UnknownSender`]) unless they carry the sender's own
//! valid record, and the peer is asked to announce itself.
//!
//! # Example
//!
//! ```
//! use omega_gossip::*;
//! use omega_identity::Keypair;
//!
//! let config = Config::new(MeshId([1; 16]));
//! let profile = |name: &str| Profile {
//!     name: name.into(),
//!     substrate: Substrate::Habitat,
//!     capabilities: Capabilities::STANDARD,
//!     resources: Resources { cpu_millis: 4000, memory_bytes: 4 << 30 },
//!     addresses: vec![],
//! };
//! let node = |seed: u8, name: &str| {
//!     let local = LocalMember { keypair: Keypair::from_seed([seed; 32]), profile: profile(name), incarnation: 0 };
//!     Membership::new(config.clone(), local, Box::new(AllowAll), [seed; 32], 0).unwrap()
//! };
//! let mut nodes = [node(1, "a"), node(2, "b")];
//! let ids = [nodes[0].id(), nodes[1].id()];
//! nodes[1].join(&[ids[0]], 0).unwrap();
//! // A tiny driver: a 10 ms tick, messages delivered within the tick.
//! for now in (0..1_000).step_by(10) {
//!     for i in 0..2 {
//!         nodes[i].handle_timeout(now);
//!         while let Some(t) = nodes[i].poll_transmit() {
//!             let to = if t.to == ids[0] { 0 } else { 1 };
//!             nodes[to].handle_message(ids[i], &t.bytes, now);
//!         }
//!         while let Some(event) = nodes[i].poll_event() {
//!             let _ = event; // placement, metrics, peer scoring…
//!         }
//!     }
//! }
//! assert_eq!(nodes[0].member(&ids[1]).unwrap().state, State::Alive);
//! assert_eq!(nodes[1].member(&ids[0]).unwrap().state, State::Alive);
//! ```
#![warn(missing_docs, unreachable_pub)]

mod admission;
mod broadcast;
mod config;
pub mod desired;
pub mod events;
pub mod hlc;
mod id;
pub mod join;
mod membership;
mod message;
pub mod node;
pub mod placement;
mod record;
pub mod testkit;
#[cfg(test)]
mod tests;
pub mod time;
pub mod wire;

pub use admission::{Admission, AllowAll, AllowSet};
pub use config::{Config, ConfigError, Limits};
pub use desired::DesiredState;
pub use hlc::{Hlc, Stamp};
pub use id::{MeshId, NodeId};
pub use membership::{
    CommandError, Event, LocalMember, MemberView, Membership, Refusal, State, Stats, Transmit,
};
pub use node::Node;
pub use placement::{BranePlacement, Candidate, Ineligible, Placement, place};
pub use record::{
    Capabilities, Ed25519Verifier, MemberRecord, Profile, RecordError, Resources, SignError,
    SignedRecord, Substrate, Verifier,
};
pub use time::{Mono, Now, Unix};
pub use wire::DecodeError;
