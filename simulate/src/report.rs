//! What a run reports: the verdict per invariant, the first violation with
//! its trace, convergence, events, coverage — as text or JSON. Nothing in
//! it depends on the machine (no wall-clock figures), so the same scenario
//! and seed give the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// One run's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The build that produced it (`omega-simulate VERSION (gossip wire N)`).
    pub tool: String,
    /// The scenario's name.
    pub scenario: String,
    /// The scenario file.
    pub file: String,
    /// The seed.
    pub seed: u64,
    /// The one command that reproduces this run.
    pub reproduce: String,
    /// Nodes at the start.
    pub nodes: usize,
    /// Nodes that ever ran (churn adds some).
    pub nodes_total: usize,
    /// Virtual time simulated, ms.
    pub virtual_ms: u64,
    /// The first violation.
    pub violation: Option<Violation>,
    /// Each invariant's verdict.
    pub invariants: Vec<Invariant>,
    /// When the mesh settled.
    pub convergence: Convergence,
    /// Events.
    pub events: EventsSummary,
    /// Time from each crash of a node that ran branes until one of its
    /// branes processed an event elsewhere, ms.
    pub reroute_ms: Vec<u64>,
    /// Faults and paths that actually happened.
    pub coverage: BTreeMap<String, u64>,
}

/// The first invariant that failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// The invariant.
    pub invariant: String,
    /// Virtual time, ms.
    pub at_ms: u64,
    /// What was wrong.
    pub detail: String,
    /// What happened just before (faults, applies, the violation).
    pub trace: Vec<String>,
}

/// One invariant's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invariant {
    /// Its name.
    pub name: String,
    /// `held`, `violated`, or why it was not judged.
    pub status: String,
}

/// When the mesh settled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Convergence {
    /// When the last fault (or join, or apply) ended, ms.
    pub quiet_at_ms: u64,
    /// When, after that, the checked nodes agreed on everything, ms.
    pub converged_at_ms: Option<u64>,
    /// Since when the checked nodes see every live node as alive, ms.
    pub members_agree_at_ms: Option<u64>,
}

/// Events, end to end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventsSummary {
    /// Emitted from outside.
    pub emitted: u64,
    /// Emits refused (busy, no brane yet).
    pub refused: u64,
    /// Acknowledged (outside emits and brane emits), the set the
    /// no-loss invariant checks.
    pub acknowledged: u64,
    /// Durable processings.
    pub processed: u64,
    /// Dead letters.
    pub dead_lettered: u64,
    /// Acknowledged but not yet processed at the end.
    pub pending: u64,
    /// Per edge: hop latency from the sender's commit to the receiver's.
    pub edges: Vec<EdgeSummary>,
}

/// One edge's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeSummary {
    /// `manifest: from → to (type)`.
    pub edge: String,
    /// Processed.
    pub processed: u64,
    /// Hop latency P50, ms.
    pub p50_ms: u64,
    /// P99, ms.
    pub p99_ms: u64,
    /// Largest, ms.
    pub max_ms: u64,
}

/// One point of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Virtual ms.
    pub t: u64,
    /// Live nodes (ground truth).
    pub live: usize,
    /// The fewest nodes a checked node sees alive (itself included).
    pub seeing: usize,
    /// Brane replicas running.
    pub running: usize,
    /// Whether a partition is in force.
    pub partitioned: bool,
    /// Processed since the previous sample, per edge.
    pub edges: BTreeMap<String, u64>,
    /// Hop latency P50 in the window, ms.
    pub p50: u64,
    /// P99, ms.
    pub p99: u64,
    /// Branes whose placement changed since the previous sample.
    pub moves: u64,
}

/// A fault (or an apply) on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    /// The fault kind, or `apply`.
    pub kind: String,
    /// What it hit.
    pub label: String,
    /// Start, ms.
    pub start: u64,
    /// End, ms (`None`: to the end; equal to start: a mark).
    pub end: Option<u64>,
}

impl Span {
    /// A fault from `start` to `end`.
    pub fn new(kind: &str, label: &str, start: u64, end: Option<u64>) -> Self {
        Self {
            kind: kind.into(),
            label: label.into(),
            start,
            end,
        }
    }

    /// A moment.
    pub fn mark(kind: &str, label: &str, at: u64) -> Self {
        Self::new(kind, label, at, Some(at))
    }
}

/// What the timeline draws.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// Its heading.
    pub title: String,
    /// The end, ms.
    pub end_ms: u64,
    /// Points.
    pub samples: Vec<Sample>,
    /// Faults and applies.
    pub spans: Vec<Span>,
    /// The first violation: when, which.
    pub violation: Option<(u64, String)>,
    /// Re-route times, ms.
    pub reroute_ms: Vec<u64>,
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs(ms: u64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

impl Report {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }

    /// The report as deterministic, pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The report for a terminal.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{} · seed {} · {}", self.scenario, self.seed, self.tool);
        let _ = writeln!(
            o,
            "{} nodes ({} over the run), {} virtual",
            self.nodes,
            self.nodes_total,
            secs(self.virtual_ms)
        );
        let _ = writeln!(
            o,
            "verdict: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        if let Some(v) = &self.violation {
            let _ = writeln!(o, "\nfirst violation: {} at {}", v.invariant, secs(v.at_ms));
            let _ = writeln!(o, "  {}", v.detail);
            let _ = writeln!(o, "trace (last {} lines):", v.trace.len());
            for l in &v.trace {
                let _ = writeln!(o, "  {l}");
            }
        }
        let _ = writeln!(o, "\ninvariants:");
        for i in &self.invariants {
            let _ = writeln!(o, "  {:<28} {}", i.name, i.status);
        }
        let c = &self.convergence;
        let _ = writeln!(o, "\nconvergence:");
        let _ = writeln!(o, "  last fault ended        {}", secs(c.quiet_at_ms));
        let _ = writeln!(
            o,
            "  converged               {}",
            c.converged_at_ms.map_or("no".into(), |t| format!(
                "{} ({} after)",
                secs(t),
                secs(t.saturating_sub(c.quiet_at_ms))
            ))
        );
        let _ = writeln!(
            o,
            "  members agree since     {}",
            c.members_agree_at_ms.map_or("no".into(), secs)
        );
        let e = &self.events;
        let _ = writeln!(o, "\nevents:");
        let _ = writeln!(
            o,
            "  emitted {} · refused {} · acknowledged {} · processed {} · dead-lettered {} · pending {}",
            e.emitted, e.refused, e.acknowledged, e.processed, e.dead_lettered, e.pending
        );
        if !e.edges.is_empty() {
            let _ = writeln!(
                o,
                "  {:<48} {:>9} {:>8} {:>8} {:>8}",
                "edge", "processed", "p50 ms", "p99 ms", "max ms"
            );
            for s in &e.edges {
                let _ = writeln!(
                    o,
                    "  {:<48} {:>9} {:>8} {:>8} {:>8}",
                    s.edge, s.processed, s.p50_ms, s.p99_ms, s.max_ms
                );
            }
        }
        if !self.reroute_ms.is_empty() {
            let mut r = self.reroute_ms.clone();
            r.sort_unstable();
            let _ = writeln!(
                o,
                "  re-route after a crash: {} times, P50 {} ms, max {} ms",
                r.len(),
                percentile(&r, 50.0),
                r.last().copied().unwrap_or(0)
            );
        }
        let _ = writeln!(o, "\ncoverage (what actually happened):");
        for (k, v) in &self.coverage {
            let _ = writeln!(o, "  {k:<28} {v}");
        }
        let _ = writeln!(o, "\nreproduce: {}", self.reproduce);
        o
    }
}
