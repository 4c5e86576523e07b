//! `omega-node`: the wiring of an Omega host — the `omega` command-line tool,
//! the daemon (`omega node`: the p2p driver, the reconciler that runs what
//! placement puts on this node, durable state in redb) and its local API.
//! This crate is the only one that may depend on every other Omega crate.

pub mod api;
pub mod bounded;
pub mod cli;
pub mod daemon;
pub mod frontier;
pub mod keystore;

/// Wall-clock time now (the CLI's and the API's one clock reading).
pub fn unix_now() -> omega_gossip::Unix {
    omega_gossip::Unix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}
