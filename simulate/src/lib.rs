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

/// The scale benchmark's scenario for `nodes` nodes and `virtual_ms` of
/// virtual time: 1 % gaia, 29 % biome, 70 % habitat, joining over the
/// first fifth; one three-brane manifest applied after that; 100 events/s
/// from outside for the middle half; no faults. `omega bench simulate`
/// runs it at 100, 1,000 and 10,000 nodes.
pub fn scale_scenario(nodes: usize, virtual_ms: u64) -> Result<Loaded, ScenarioError> {
    let gaia = (nodes / 100).max(1);
    let biome = (nodes * 29 / 100).max(1);
    let habitat = nodes.saturating_sub(gaia + biome).max(1);
    let join = virtual_ms / 5;
    let apply = join + virtual_ms / 20;
    let (from, until) = (virtual_ms / 4 + apply / 2, virtual_ms * 9 / 10);
    let sense = (habitat / 100).clamp(1, 64);
    let aggregate = (biome / 100).clamp(1, 16);
    let text = format!(
        r#"name = "scale: {nodes} nodes"
duration = "{virtual_ms}ms"
join_over = "{join}ms"

[[nodes]]
class = "gaia"
count = {gaia}
substrate = "gaia"

[[nodes]]
class = "biome"
count = {biome}
substrate = "biome"

[[nodes]]
class = "habitat"
count = {habitat}
substrate = "habitat"

[[manifest]]
name = "telemetry"
at = "{apply}ms"
toml = '''
[brane.sense]
substrate = "habitat"
image = "sense:1.0"
replicas = {sense}

[brane.aggregate]
substrate = "biome"
image = "aggregate:1.0"
replicas = {aggregate}

[brane.warehouse]
substrate = "gaia"
image = "warehouse:1.0"

[graph]
edges = [
  {{ from = "sense", to = "aggregate", on = "reading" }},
  {{ from = "aggregate", to = "warehouse", on = "summary", ordered = true }},
]
'''

[[workload]]
manifest = "telemetry"
to = "sense"
type = "reading"
rate = 100
from = "{from}ms"
until = "{until}ms"
keys = 1000

[network]
latency_ms = [2, 40]

[check]
converge_within = "{converge}ms"
sample = 4
every = "5s"
"#,
        converge = virtual_ms / 2
    );
    Scenario::parse(&text, "scale")?.check("scale")
}
