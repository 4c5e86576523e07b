//! `omega simulate`: many node brains — the very [`omega_gossip::Node`]
//! the daemon drives, no second implementation — in virtual time over a
//! seeded network, with scheduled faults, continuously checked invariants,
//! shrinking of failures, and a timeline.
//!
//! # The contract
//!
//! - **What runs.** Every simulated node is a `gossip::Node` driven through
//!   [`omega_gossip::testkit::mesh::MeshSim`]: its SWIM, admission, the
//!   desired-state CRDT, placement, the reconciler and the event delivery
//!   machine are the daemon's. What is modelled: the network (latency with
//!   a tail, loss, duplication, reordering, bandwidth, partitions), the
//!   disk (latency; `always` or interval sync, and what a power loss takes),
//!   brane start-up, and branes themselves (processing time, failure rate,
//!   emits per event; [`scenario::BraneSpec`]). Wasmtime does not run.
//! - **Determinism.** A run is a function of the scenario, the seed and the
//!   build: one thread, virtual time, every random choice from seeded
//!   ChaCha8, ordered maps only, no wall clock in the report. The same
//!   inputs give the same report and timeline, byte for byte; the report
//!   names the build ([`version`]) and the one command that reproduces it.
//! - **Invariants** ([`run::INVARIANTS`]), checked every `check.every` of
//!   virtual time on a rotating sample of `check.sample` nodes and at the
//!   end on every node (at most 512 of them, evenly spread):
//!   convergence after the last fault within `check.converge_within`;
//!   placement within every constraint (substrate, capability, frontier
//!   never on habitat, hosts, memory, replica count, only members);
//!   no acknowledged event lost; once per id per replica; per-key order on
//!   ordered edges; in-flight within the edge credits; liveness (every
//!   acknowledged event processed or dead-lettered, every placeable brane
//!   running); only authorized records in effect. The first violation
//!   stops the run and is reported with its virtual time and the last
//!   lines of what happened.
//! - **Coverage.** The report counts what actually happened — faults, drops,
//!   suspicions and refutations, refusals, retries, re-routes, dead letters —
//!   so a pass says what it survived.
//! - **Shrinking.** A failing run is shrunk ([`shrink::shrink`]) to a
//!   smaller scenario that fails the same invariant with the same seed.

pub mod report;
pub mod run;
pub mod scenario;
pub mod shrink;
pub mod timeline;

pub use report::Report;
pub use run::{Outcome, run};
pub use scenario::{Loaded, Scenario, ScenarioError};

/// The build, as stamped on every report.
pub fn version() -> String {
    format!(
        "omega-simulate {} (wire {})",
        env!("CARGO_PKG_VERSION"),
        omega_gossip::wire::WIRE_VERSION
    )
}

/// Runs `loaded` once per seed in `seeds`; returns each seed's outcome
/// report, in seed order.
pub fn sweep(loaded: &Loaded, seeds: std::ops::Range<u64>) -> Vec<Report> {
    seeds.map(|s| run(loaded, s).report).collect()
}
