//! `omega-resolvers`: how HTTP gets to branes — from the internet through a
//! node's gateway, and from one brane to another by manifest name — and the
//! drivers that expose a gateway publicly for a `[resolver.NAME]` block.
//!
//! # The gateway ([`gateway`])
//!
//! `omega node --gateway ADDR` serves HTTP/1.1 and HTTP/2 (cleartext, both
//! on one port) and routes each request by its `Host` header (port
//! stripped, case folded) to the brane of the resolver whose `host` it is
//! (or whose tunnel's public host it is): to a replica on this node when
//! one runs here, else over the mesh ([`mesh`]) to a node whose status
//! says the brane is running. Bodies stream both ways, with backpressure
//! (nothing is buffered whole except an idempotent request's body of at
//! most [`gateway::Limits::retry_body`] bytes, kept for its one retry).
//! Answers of the gateway itself are `text/plain` with one line naming
//! what happened and an `omega-gateway` header saying which rule fired:
//!
//! | status | when |
//! |---|---|
//! | 404 | no resolver has this host (or no `Host`) |
//! | 503 | the brane has no running replica anywhere, or every node tried was busy |
//! | 502 | the replica's node went away or broke the exchange (non-idempotent requests are not retried) |
//! | 504 | no response head within the timeout |
//! | 413 / 431 / 408 | body, header or request-head limits |
//!
//! A request whose replica's node fails before a response head arrives is
//! retried once on another replica when its method is idempotent (GET,
//! HEAD, OPTIONS, PUT, DELETE, TRACE) and its body, if any, fit the retry
//! buffer. A failure after the head went out ends the response abruptly
//! (the client sees a truncated body, never a different one).
//!
//! # Across the mesh ([`mesh`])
//!
//! One libp2p protocol, `/omega/http/1`: each stream carries one HTTP/2
//! connection (hyper), so requests between two nodes are multiplexed on
//! one stream and flow-controlled per request. A request carries the brane
//! it is for in `omega-brane: MANIFEST/BRANE` and, for a call from a
//! brane, the caller in `omega-caller: MANIFEST/BRANE`. The serving node
//! serves only admitted members, only branes running here (else `503` with
//! `omega-gateway: not-here`, which the sender treats as "try another"),
//! and checks authorization again from its own copy of the manifests: a
//! request without a caller must be for a brane some resolver routes to,
//! a request with one must be granted by the caller's `grants.call`.
//!
//! # Branes address branes
//!
//! A brane's outgoing `wasi:http` request to `http://NAME.brane/…` goes to
//! brane `NAME` of the caller's own manifest, `http://NAME.MANIFEST.brane/…`
//! to brane `NAME` of manifest `MANIFEST` — wherever a replica runs. It is
//! sent only when the caller's `[brane.X.grants] call` lists the target
//! (`"NAME"` for its own manifest, `"MANIFEST/NAME"` for another);
//! otherwise the guest gets `HTTP-request-denied` and the node logs which
//! grant is missing (`omega_runtime::calls`). Granted calls go through the
//! same [`gateway::Forwarder`] as the gateway's requests.
//!
//! # Drivers ([`driver`])
//!
//! One [`driver::Driver`] per `mode`; each exposes the gateway publicly for
//! a resolver, reports the public URL, and removes it on delete. Tested
//! against faithful local fakes ([`fake`]): the real services cannot be
//! reached from where Omega is tested.

pub mod client;
pub mod driver;
pub mod fake;
pub mod gateway;
pub mod mesh;
pub mod route;

pub use driver::{Driver, DriverError, DriversConfig, Exposure, Tunnel, TunnelState};
pub use gateway::{Forwarder, Gateway, Limits};
pub use mesh::{Client, MeshLimits};
pub use route::{Body, BraneName, Dialer, Directory, Io, LocalBrane, Replica};
